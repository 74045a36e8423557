//! Revocations reach the verifier within the freshness bound, and
//! `verify_at` reads its own writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward_client::{DenialReason, Verdict};
use keyward_testkit::{Db, TestDatabase, on_both_databases, spawn_app, spawn_on, test_config};

use crate::helpers::{bearer, cache, client, create, current_verifier, revoke, verifier_config};

on_both_databases!(
    a_revoked_key_is_never_accepted_past_the_bound,
    verify_at_reads_its_own_writes_across_replicas,
);

/// Several tasks verify a cached key while it is revoked; every answer is
/// counted. None may be "allowed" once the bound has passed since the
/// revocation returned, and enough answers must fall after the bound for
/// that to mean something.
async fn a_revoked_key_is_never_accepted_past_the_bound(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let config = verifier_config();
    let bound = config.freshness_bound;
    let verifier = current_verifier(app.addr(), config).await;
    let (key, secret, created) = create(&keys, "acct_rev", &["orders:read"]).await;
    let credential = bearer(&secret);
    cache(&verifier, &credential, &["orders:read"], created).await;

    let revoked_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let allowed_after_bound = Arc::new(AtomicU64::new(0));
    let sampled_after_bound = Arc::new(AtomicU64::new(0));
    let first_denial = Arc::new(std::sync::Mutex::new(None::<Duration>));
    let stop_at = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let verifier = verifier.clone();
        let credential = credential.clone();
        let revoked_at = Arc::clone(&revoked_at);
        let allowed_after_bound = Arc::clone(&allowed_after_bound);
        let sampled_after_bound = Arc::clone(&sampled_after_bound);
        let first_denial = Arc::clone(&first_denial);
        tasks.push(tokio::spawn(async move {
            loop {
                // Read the time before the answer: an answer is "after the
                // bound" only if it began after it.
                let began = Instant::now();
                let verdict = verifier.verify(&credential, &["orders:read"]).await;
                let Some(revoked) = revoked_at.get() else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let since = began.saturating_duration_since(*revoked);
                if let Verdict::Denied(denial) = &verdict {
                    assert_eq!(denial.reason, DenialReason::Revoked, "{denial:?}");
                    let mut first = first_denial.lock().unwrap();
                    if first.is_none_or(|f| since < f) {
                        *first = Some(since);
                    }
                }
                if began > *revoked + bound {
                    sampled_after_bound.fetch_add(1, Ordering::Relaxed);
                    if verdict.is_allowed() {
                        allowed_after_bound.fetch_add(1, Ordering::Relaxed);
                    }
                    if sampled_after_bound.load(Ordering::Relaxed) >= 400
                        || Instant::now() > stop_at
                    {
                        return;
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    // Let the tasks run on the cached answer first: some local hits.
    let hits_before = verifier.stats().local_hits;
    let warm_until = Instant::now() + Duration::from_secs(30);
    while verifier.stats().local_hits < hits_before + 100 {
        assert!(
            Instant::now() < warm_until,
            "the tasks never answered locally"
        );
        tokio::task::yield_now().await;
    }
    revoke(&keys, &key).await;
    revoked_at.set(Instant::now()).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        sampled_after_bound.load(Ordering::Relaxed) >= 400,
        "too few answers after the bound to judge"
    );
    assert_eq!(
        allowed_after_bound.load(Ordering::Relaxed),
        0,
        "a revoked key was accepted after the bound"
    );
    let first = first_denial.lock().unwrap().expect("denied at all");
    assert!(
        first <= bound,
        "first denial {first:?} after the revocation, bound {bound:?}"
    );
    verifier.shutdown().await;
}

/// A write on replica B, then `verify_at(.., revision)` on a verifier
/// following replica A: the answer already reflects the write, although
/// A learns of it only through its own feed.
async fn verify_at_reads_its_own_writes_across_replicas(db: Db) {
    let Some(database) = TestDatabase::create(db).await else {
        return;
    };
    let a = spawn_on(Arc::clone(&database), test_config()).await;
    let b = spawn_on(Arc::clone(&database), test_config()).await;
    let on_b = client(b.addr());
    let verifier = current_verifier(a.addr(), verifier_config()).await;
    for round in 0..5 {
        let (key, secret, created) = create(&on_b, &format!("acct_ryw_{round}"), &[]).await;
        let credential = bearer(&secret);
        // Known at the creation's revision.
        let verdict = verifier
            .verify_at(&credential, &[] as &[&str], created)
            .await;
        assert!(verdict.is_allowed(), "{verdict:?}");
        cache(&verifier, &credential, &[], created).await;

        let revision = revoke(&on_b, &key).await;
        let verdict = verifier
            .verify_at(&credential, &[] as &[&str], revision)
            .await;
        match verdict {
            Verdict::Denied(denial) => assert_eq!(denial.reason, DenialReason::Revoked),
            Verdict::Allowed(_) => panic!("round {round}: allowed at the revocation's revision"),
        }
        assert!(verifier.applied_revision() >= revision || verifier.stats().remote_calls > 0);
    }
    verifier.shutdown().await;
}
