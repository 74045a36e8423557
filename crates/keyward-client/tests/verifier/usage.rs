//! Local uses reach `last_used_at` through batched RecordUsage calls.

use std::time::{Duration, Instant};

use keyward_client::VerifierConfig;
use keyward_testkit::{Db, eventually, on_both_databases, spawn_app, stored_last_used_at};

use crate::helpers::{bearer, cache, client, create, current_verifier, verifier_config};

on_both_databases!(
    local_uses_reach_last_used_at_in_batches,
    shutdown_reports_the_last_uses
);

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn local_uses_reach_last_used_at_in_batches(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let interval = Duration::from_millis(300);
    let verifier = current_verifier(
        app.addr(),
        VerifierConfig {
            usage_flush_interval: interval,
            ..verifier_config()
        },
    )
    .await;
    let mut credentials = Vec::new();
    let mut ids = Vec::new();
    let mut latest = 0;
    for i in 0..3 {
        let (key, secret, created) = create(&keys, &format!("acct_use_{i}"), &[]).await;
        credentials.push(bearer(&secret));
        ids.push(key.id);
        latest = created;
    }
    for credential in &credentials {
        cache(&verifier, credential, &[], latest).await;
    }
    let flushes_before = verifier.stats().usage_flushes;
    let hits_before = verifier.stats().local_hits;
    let remote_before = verifier.stats().remote_calls;

    // Many local uses of each key over a few flush intervals.
    let began = Instant::now();
    let start_ms = now_ms();
    while began.elapsed() < interval * 5 {
        for credential in &credentials {
            assert!(
                verifier
                    .verify(credential, &[] as &[&str])
                    .await
                    .is_allowed()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = began.elapsed();
    let stats = verifier.stats();
    let hits = stats.local_hits - hits_before;
    assert!(hits >= 300, "{stats:?}");
    assert_eq!(stats.remote_calls, remote_before, "all local: {stats:?}");

    // Every key's stored last use moves to the period of local uses.
    for id in &ids {
        let database = &app.database;
        assert!(
            eventually(Duration::from_secs(10), async || {
                stored_last_used_at(database, id)
                    .await
                    .is_some_and(|at| at >= start_ms + 500)
            })
            .await,
            "last_used_at of {id} advances: {:?}",
            stored_last_used_at(database, id).await
        );
    }
    // Batched: at most one call per interval (plus the one in flight at
    // each end), one use per key per call.
    let stats = verifier.stats();
    let flushes = stats.usage_flushes - flushes_before;
    let most = u64::try_from(elapsed.as_millis() / interval.as_millis()).unwrap() + 3;
    assert!(
        flushes >= 1 && flushes <= most,
        "{flushes} calls in {elapsed:?}: {stats:?}"
    );
    assert!(
        stats.uses_reported <= 3 * stats.usage_flushes,
        "one use per key per call: {stats:?}"
    );
    assert!(stats.uses_reported < hits, "{stats:?}");
    verifier.shutdown().await;
}

/// Uses not yet flushed when the verifier shuts down are reported then.
async fn shutdown_reports_the_last_uses(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let verifier = current_verifier(
        app.addr(),
        VerifierConfig {
            usage_flush_interval: Duration::from_secs(3600),
            ..verifier_config()
        },
    )
    .await;
    let (key, secret, created) = create(&keys, "acct_shutdown", &[]).await;
    let credential = bearer(&secret);
    cache(&verifier, &credential, &[], created).await;
    let database = &app.database;
    // The remote answer's own use, stored by the server.
    assert!(
        eventually(Duration::from_secs(10), async || stored_last_used_at(
            database, &key.id
        )
        .await
        .is_some())
        .await
    );
    let remote_use = stored_last_used_at(database, &key.id).await.unwrap();
    // A later local use: wait for the clock to move on first.
    while now_ms() <= remote_use + 20 {
        tokio::task::yield_now().await;
    }
    let local_use = now_ms();
    let hits = verifier.stats().local_hits;
    let verdict = verifier.verify(&credential, &[] as &[&str]).await;
    assert!(verdict.is_allowed());
    assert_eq!(verifier.stats().local_hits, hits + 1, "a local use");
    assert_eq!(verifier.stats().usage_flushes, 0);
    verifier.shutdown().await;
    assert_eq!(verifier.stats().usage_flushes, 1);
    assert!(
        eventually(Duration::from_secs(10), async || stored_last_used_at(
            database, &key.id
        )
        .await
        .is_some_and(|at| at >= local_use))
        .await,
        "the last local use is stored: {:?} < {local_use}",
        stored_last_used_at(database, &key.id).await
    );
}
