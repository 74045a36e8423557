//! UpdateKey reaches the verifier: new scopes apply, and a key given a rate
//! limit is no longer answered locally.

use std::time::Duration;

use keyward_client::{DenialReason, proto};
use keyward_testkit::{Db, eventually, on_both_databases, spawn_app};

use crate::helpers::{bearer, cache, client, create, current_verifier, verifier_config};

on_both_databases!(
    scope_changes_take_effect,
    a_key_given_a_rate_limit_is_no_longer_cached
);

async fn scope_changes_take_effect(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let verifier = current_verifier(app.addr(), verifier_config()).await;
    let (key, secret, created) = create(&keys, "acct_scopes", &["orders:read"]).await;
    let credential = bearer(&secret);
    cache(&verifier, &credential, &["orders:read"], created).await;

    // A scope the cached answer lacks goes to keyward, which says why.
    let remote_before = verifier.stats().remote_calls;
    let verdict = verifier.verify(&credential, &["portfolio:read"]).await;
    let denial = verdict.denial().expect("denied").clone();
    assert_eq!(denial.reason, DenialReason::InsufficientScope);
    assert_eq!(denial.http_status, 403);
    assert_eq!(denial.required_scope.as_deref(), Some("portfolio:read"));
    assert_eq!(verifier.stats().remote_calls, remote_before + 1);

    let updated = keys
        .update_key(proto::UpdateKeyRequest {
            account_id: key.account_id.clone(),
            key_id: key.id.clone(),
            scopes: vec!["portfolio:read".into()],
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["scopes".into()],
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateKey");
    assert!(
        eventually(Duration::from_secs(5), async || verifier
            .verify(&credential, &["orders:read"])
            .await
            .denial()
            .is_some_and(|d| d.reason == DenialReason::InsufficientScope))
        .await,
        "the removed scope is refused"
    );
    let verdict = verifier.verify(&credential, &["portfolio:read"]).await;
    assert!(verdict.is_allowed(), "{verdict:?}");
    assert!(verdict.identity().unwrap().has_scope("portfolio:read"));
    cache(
        &verifier,
        &credential,
        &["portfolio:read"],
        updated.revision,
    )
    .await;
    verifier.shutdown().await;
}

async fn a_key_given_a_rate_limit_is_no_longer_cached(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let verifier = current_verifier(app.addr(), verifier_config()).await;
    let (key, secret, created) = create(&keys, "acct_limit", &[]).await;
    let credential = bearer(&secret);
    cache(&verifier, &credential, &[], created).await;

    keys.update_key(proto::UpdateKeyRequest {
        account_id: key.account_id.clone(),
        key_id: key.id.clone(),
        rate_limit: Some(proto::RateLimit {
            requests: 3,
            per_seconds: 3600,
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["rate_limit".into()],
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateKey");
    // Every use now counts at keyward: within a few calls it says RATE_LIMITED.
    assert!(
        eventually(Duration::from_secs(5), async || verifier
            .verify(&credential, &[] as &[&str])
            .await
            .denial()
            .is_some_and(|d| d.reason == DenialReason::RateLimited
                && d.http_status == 429
                && d.retry_after.is_some()))
        .await,
        "{:?}",
        verifier.stats()
    );
    let hits = verifier.stats().local_hits;
    for _ in 0..5 {
        assert!(
            !verifier
                .verify(&credential, &[] as &[&str])
                .await
                .is_allowed()
        );
    }
    assert_eq!(verifier.stats().local_hits, hits);
    assert_eq!(verifier.cached_answers(), 0);
    verifier.shutdown().await;
}
