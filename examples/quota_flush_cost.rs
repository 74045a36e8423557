//! How long the last-use flusher takes to write one batch of quota use
//! (`KeyStore::record_quota_usage`, 10,000 keys with quotas, the flusher's
//! batch size) on SQLite, a temporary file. For BENCHMARKS.md's issue 19
//! section; each batch moves every key's count forward, so every row is
//! written.
//!
//! `cargo run --release --example quota_flush_cost`

use std::time::Instant;

use keyward::audit::Actor;
use keyward::domain::{
    AccountId, KeyDigest, KeyId, KeyName, Quota, QuotaUsage, Refill, UnixMillis,
};
use keyward::storage::{self, NewKey, PoolSettings, QuotaNote};

const KEYS: u64 = 10_000;
const ROUNDS: u64 = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("quota.db").display()).parse()?;
    let store = storage::open(&url, &PoolSettings::default()).await?;
    let quota = Quota::new(1_000_000, Refill::Daily)?;
    let mut ids = Vec::new();
    for i in 0..KEYS {
        let key = NewKey {
            id: KeyId::generate(),
            account_id: AccountId::parse(&format!("acct_{}", i / 10))?,
            name: KeyName::parse("quota")?,
            digest: KeyDigest::of(&format!("secret_{i}")),
            start: "kw_123456".into(),
            scopes: Vec::new(),
            rate_limit: None,
            quota: Some(quota),
            created_at: UnixMillis::now(),
            expires_at: None,
            metadata: Default::default(),
            allowed_networks: Vec::new(),
            rotated_from: None,
        };
        ids.push(
            store
                .create_key(key, 100, &Actor::in_process())
                .await?
                .record
                .id,
        );
    }
    for round in 1..=ROUNDS {
        let batch: Vec<QuotaNote> = ids
            .iter()
            .map(|id| QuotaNote {
                id: id.clone(),
                quota,
                usage: QuotaUsage {
                    period: 1,
                    used: round,
                },
            })
            .collect();
        let started = Instant::now();
        store.record_quota_usage(&batch).await?;
        println!(
            "round {round}: {KEYS} keys' quota use written in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let any = store
        .find_by_id(&ids[0])
        .await?
        .ok_or("the first key is gone")?;
    assert_eq!(any.quota_usage.used, ROUNDS, "the last batch was written");
    Ok(())
}
