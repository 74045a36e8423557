//! Measures what metrics cost the hot path, two ways:
//!
//! 1. the recording calls of one decision (verdict, cache lookup, gRPC
//!    request), with metrics on and off, in a tight loop on one thread and
//!    on two (every thread on the same series: the worst case for sharing);
//! 2. Authenticate over gRPC against an in-process server (SQLite, cache
//!    hits), with `--metrics-listen` on and off, alternating runs.
//!
//! Run with `cargo run --release --example telemetry_overhead`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keyward::access_control::Rpc;
use keyward::authenticator::{Surface, Verdict};
use keyward::config::Config;
use keyward::proto;
use keyward::proto::key_service_client::KeyServiceClient;
use keyward::server::{self, ServeOptions};
use keyward::telemetry::{CacheLookup, Telemetry};

const RECORDINGS_PER_THREAD: u32 = 5_000_000;
const CALLS_PER_RUN: usize = 20_000;
const CONCURRENT_CALLERS: usize = 8;

fn record_loop(telemetry: Arc<Telemetry>, thread_count: usize) -> Duration {
    let started = Instant::now();
    let threads: Vec<_> = (0..thread_count)
        .map(|_| {
            let telemetry = Arc::clone(&telemetry);
            std::thread::spawn(move || {
                let verdict = Verdict {
                    key: None,
                    denial: None,
                    rate_limit: None,
                };
                for _ in 0..RECORDINGS_PER_THREAD {
                    telemetry.record_cache_lookup(CacheLookup::Hit);
                    telemetry.record_verdict(
                        Surface::Authenticate,
                        &verdict,
                        Duration::from_micros(3),
                    );
                    telemetry.record_grpc(
                        Some(Rpc::Authenticate),
                        tonic::Code::Ok,
                        Duration::from_micros(40),
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    started.elapsed()
}

async fn grpc_run(metrics: bool, dir: &std::path::Path) -> (f64, Histogram<u64>) {
    let mut config = Config::default();
    if metrics {
        config.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    }
    let running = server::start(ServeOptions {
        config,
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!(
            "sqlite://{}",
            dir.join(format!("bench-{metrics}.db")).display()
        ),
    })
    .await
    .unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut keys = KeyServiceClient::new(channel);
    let secret = keys
        .create_key(proto::CreateKeyRequest {
            account_id: "bench".into(),
            name: "bench".into(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let request = proto::AuthenticateRequest {
        credential: format!("Bearer {secret}"),
        required_scopes: vec!["orders:read".into()],
        client_ip: String::new(),
    };
    // Warm the cache and the connection.
    for _ in 0..1_000 {
        keys.authenticate(request.clone()).await.unwrap();
    }
    let started = Instant::now();
    let callers: Vec<_> = (0..CONCURRENT_CALLERS)
        .map(|_| {
            let mut keys = keys.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).unwrap();
                for _ in 0..CALLS_PER_RUN / CONCURRENT_CALLERS {
                    let call = Instant::now();
                    let answer = keys.authenticate(request.clone()).await.unwrap();
                    assert!(answer.into_inner().allowed);
                    latencies.record(call.elapsed().as_micros() as u64).unwrap();
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    for caller in callers {
        latencies.add(caller.await.unwrap()).unwrap();
    }
    let per_second = CALLS_PER_RUN as f64 / started.elapsed().as_secs_f64();
    running.shutdown().await.unwrap();
    (per_second, latencies)
}

#[tokio::main]
async fn main() {
    for (name, telemetry) in [("off", Telemetry::disabled()), ("on", Telemetry::enabled())] {
        let telemetry = Arc::new(telemetry);
        for thread_count in [1, 2] {
            let elapsed = record_loop(Arc::clone(&telemetry), thread_count);
            let per_decision = elapsed.as_nanos() as f64 / f64::from(RECORDINGS_PER_THREAD);
            println!(
                "recording, metrics {name:>3}, {thread_count} thread(s): {per_decision:6.1} ns per decision"
            );
            // Drain the histograms, as the upkeep task would.
            let _ = telemetry.render();
        }
    }

    let dir = tempfile::tempdir().unwrap();
    for round in 1..=3 {
        for metrics in [false, true] {
            let (per_second, latencies) = grpc_run(metrics, dir.path()).await;
            println!(
                "round {round}, Authenticate over gRPC, metrics {:>3}: {per_second:8.0} calls/s, p50 {} µs, p99 {} µs",
                if metrics { "on" } else { "off" },
                latencies.value_at_quantile(0.5),
                latencies.value_at_quantile(0.99)
            );
        }
    }
}
