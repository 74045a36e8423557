//! Revocation across replicas: two servers with separate caches on one
//! database, the change feed between them, failing closed, and the race
//! between a cache load and a revocation.

use std::time::Duration;

use keyward::proto::denial::Reason;

use crate::helpers::{Db, TestDatabase, eventually, reason, spawn_on, test_config};

/// Revoke on A; B must deny within the freshness bound (in practice, within
/// milliseconds; the benchmark measures it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_on_one_replica_is_seen_by_the_other() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), test_config()).await;
    let mut b = spawn_on(database.clone(), test_config()).await;
    let (key, secret) = a.create_key("acct_1", &["orders:read"]).await;
    // B caches the key as live.
    assert!(b.authenticate(&secret, &["orders:read"]).await.allowed);

    a.revoke("acct_1", &key.id).await;

    let denied = eventually(Duration::from_secs(2), async || {
        reason(&b.authenticate(&secret, &["orders:read"]).await) == Reason::Revoked
    })
    .await;
    assert!(denied, "replica B still accepts a revoked key");
    a.shutdown().await;
    b.shutdown().await;
}
