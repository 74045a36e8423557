//! How much resident memory one moka entry costs beyond its key and value,
//! for BENCHMARKS.md's "memory per cached key": one million entries shaped
//! like the key cache's (a 32-byte digest and an `Arc` to a value), with
//! and without a TTL, against the values alone.
//!
//! `cargo run --release --example moka_entry_overhead`

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

const ENTRIES: u64 = 1_000_000;

/// About the size of a cached key with its strings.
struct Value {
    _bytes: [u8; 160],
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm");
    pages * 4096
}

fn digest(i: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&i.to_le_bytes());
    key
}

fn per_entry(label: &str, fill: impl FnOnce() -> Box<dyn std::any::Any>) {
    let before = resident_bytes();
    let kept = fill();
    let after = resident_bytes();
    println!("{label}: {} B per entry", (after - before) / ENTRIES);
    drop(kept);
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    // One measurement per process, so freed memory of one does not hide
    // the cost of the next.
    match mode.as_str() {
        "" => {
            let exe = std::env::current_exe().expect("own path");
            for mode in ["values", "moka", "moka-ttl"] {
                let status = std::process::Command::new(&exe).arg(mode).status();
                assert!(status.is_ok_and(|s| s.success()), "{mode} failed");
            }
        }
        "values" => per_entry("values alone (Arc<160 B>)", || {
            let values: Vec<Arc<Value>> = (0..ENTRIES)
                .map(|_| Arc::new(Value { _bytes: [0; 160] }))
                .collect();
            Box::new(values)
        }),
        "moka" | "moka-ttl" => per_entry(&format!("{mode} (same values)"), || {
            let mut builder = Cache::builder().max_capacity(ENTRIES);
            if mode == "moka-ttl" {
                builder = builder.time_to_live(Duration::from_secs(300));
            }
            let cache: Cache<[u8; 32], Arc<Value>> = builder.build();
            for i in 0..ENTRIES {
                cache.insert(digest(i), Arc::new(Value { _bytes: [0; 160] }));
            }
            cache.run_pending_tasks();
            Box::new(cache)
        }),
        other => panic!("unknown mode {other:?}"),
    }
}
