//! The stream is cut or stalled: the verifier fails closed after the bound
//! and recovers by itself; `StalePolicy::Remote` asks keyward instead.

use std::time::{Duration, Instant};

use keyward_client::{DenialReason, StalePolicy, Verdict, Verifier, VerifierConfig, proto};
use keyward_testkit::stalling_proxy::{Hold, StallingProxy};
use keyward_testkit::{Db, eventually, on_both_databases, spawn_app, spawn_app_with, test_config};

use crate::helpers::{bearer, cache, client, create, current_verifier, revoke, verifier_config};

on_both_databases!(
    a_stalled_or_cut_stream_fails_closed_then_recovers,
    stale_policy_remote_asks_keyward,
);

fn unavailable(verdict: &Verdict) -> bool {
    verdict
        .denial()
        .is_some_and(|d| d.reason == DenialReason::Unavailable && d.local && d.http_status == 503)
}

async fn a_stalled_or_cut_stream_fails_closed_then_recovers(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let proxy = StallingProxy::start(app.addr()).await;
    let config = verifier_config();
    let bound = config.freshness_bound;
    let verifier = current_verifier(proxy.addr(), config).await;
    let (_, secret, created) = create(&keys, "acct_stall", &[]).await;
    let credential = bearer(&secret);
    cache(&verifier, &credential, &[], created).await;

    // Stalled: nothing arrives. Allowed from the cache at most until the
    // bound, then a local UNAVAILABLE.
    proxy.hold(Hold::All);
    let held_at = Instant::now();
    let mut allowed_late = 0;
    let mut samples_late = 0;
    loop {
        let began = Instant::now();
        let verdict = verifier.verify(&credential, &[] as &[&str]).await;
        if began > held_at + bound + Duration::from_millis(50) {
            samples_late += 1;
            if verdict.is_allowed() {
                allowed_late += 1;
            }
            assert!(unavailable(&verdict), "{verdict:?}");
        }
        if samples_late >= 200 || held_at.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(allowed_late, 0);
    assert!(samples_late >= 200);
    assert!(!verifier.is_current());

    // The network recovers: so does the verifier, by itself.
    proxy.release();
    assert!(
        eventually(Duration::from_secs(20), async || verifier
            .verify(&credential, &[] as &[&str])
            .await
            .is_allowed())
        .await,
        "recovers after a stall: {verifier:?}"
    );

    // Cut: every connection closes; the verifier reconnects.
    let opened = verifier.stats().streams_opened;
    proxy.cut();
    assert!(
        eventually(Duration::from_secs(20), async || verifier
            .stats()
            .streams_opened
            > opened
            && verifier.is_current())
        .await,
        "reconnects after a cut: {verifier:?}"
    );
    assert!(
        verifier
            .verify(&credential, &[] as &[&str])
            .await
            .is_allowed()
    );
    verifier.shutdown().await;
}

/// The replica serves one watcher and a test holds it: a verifier cannot
/// follow the stream. Failing closed, it refuses everything (before any
/// checkpoint too); with `StalePolicy::Remote` it asks keyward for every
/// answer and keeps none. Once the place frees up, it becomes current.
async fn stale_policy_remote_asks_keyward(db: Db) {
    let mut config = test_config();
    config.feed.max_watchers = 1;
    let Some(app) = spawn_app_with(db, config).await else {
        return;
    };
    let keys = client(app.addr());
    let occupier = keys
        .watch_revocations(proto::WatchRevocationsRequest {
            checkpoint_interval_ms: 100,
            ..Default::default()
        })
        .await
        .expect("the one watcher place");
    let (key, secret, _) = create(&keys, "acct_remote", &[]).await;
    let credential = bearer(&secret);

    let closed = Verifier::new(client(app.addr()), verifier_config()).unwrap();
    let remote = Verifier::new(
        client(app.addr()),
        VerifierConfig {
            stale_policy: StalePolicy::Remote,
            ..verifier_config()
        },
    )
    .unwrap();
    for _ in 0..3 {
        let verdict = closed.verify(&credential, &[] as &[&str]).await;
        assert!(unavailable(&verdict), "{verdict:?}");
        let verdict = remote.verify(&credential, &[] as &[&str]).await;
        assert!(verdict.is_allowed(), "{verdict:?}");
    }
    assert_eq!(closed.stats().remote_calls, 0);
    assert_eq!(remote.stats().local_hits, 0);
    assert_eq!(remote.stats().remote_calls, 3);
    assert!(!remote.is_current());

    revoke(&keys, &key).await;
    let verdict = remote.verify(&credential, &[] as &[&str]).await;
    assert_eq!(
        verdict.denial().map(|d| d.reason),
        Some(DenialReason::Revoked)
    );

    // The place frees up: the verifier follows the stream again by itself
    // and keeps answers again.
    closed.shutdown().await;
    drop(occupier);
    let (_, secret, created) = create(&keys, "acct_remote", &[]).await;
    let credential = bearer(&secret);
    assert!(
        eventually(Duration::from_secs(30), async || remote.is_current()).await,
        "{remote:?}"
    );
    cache(&remote, &credential, &[], created).await;
    remote.shutdown().await;
}
