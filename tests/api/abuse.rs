//! Abuse protection and usage through gRPC: per-key rate limits,
//! failed-authentication bans per client address, and last-use tracking.

use std::time::Duration;

use keyward::domain::{RateLimit, UnixMillis};
use keyward::proto::{self, denial::Reason};

use crate::helpers::{
    Db, TestApp, assert_millis_left, eventually, reason, spawn_app_with, stored_last_used_at,
    test_config,
};
use crate::on_both_databases;

on_both_databases!(
    the_default_limit_applies_and_reports_its_state,
    limits_refill_over_time,
    a_key_override_beats_the_default_and_keys_are_independent,
    changing_a_keys_limit_takes_effect_at_once,
    extreme_limits_are_served,
    bans_follow_repeated_invalid_credentials_from_one_address,
    bans_expire,
    last_use_is_recorded_in_batches,
    last_use_pending_at_shutdown_is_written,
    check_scope_by_key_id_spends_no_rate_limit_and_counts_toward_no_ban,
    failures_older_than_the_window_do_not_count,
);

async fn authenticate_from(
    app: &mut TestApp,
    credential: &str,
    client_ip: &str,
) -> proto::AuthenticateResponse {
    app.keys
        .authenticate(proto::AuthenticateRequest {
            credential: credential.into(),
            required_scopes: vec![],
            client_ip: client_ip.into(),
            ..Default::default()
        })
        .await
        .expect("Authenticate")
        .into_inner()
}

async fn the_default_limit_applies_and_reports_its_state(db: Db) {
    let mut config = test_config();
    config.default_rate_limit = Some(RateLimit::new(3, 60).unwrap());
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &["orders:read"]).await;

    // The first call spends the token that comes back first, 20 s on.
    let first_spent = tokio::time::Instant::now();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app.authenticate(&secret, &["orders:read"]).await;
        assert!(response.allowed);
        let status = response.rate_limit.unwrap();
        assert_eq!(status.limit, 3);
        remaining.push(status.remaining);
    }
    let limited = app.authenticate(&secret, &["orders:read"]).await;

    assert_eq!(remaining, [2, 1, 0]);
    assert!(!limited.allowed);
    assert!(limited.key.is_some(), "the key was identified");
    let denial = limited.denial.unwrap();
    assert_eq!(denial.reason(), Reason::RateLimited);
    assert_eq!(
        (denial.code.as_str(), denial.http_status),
        ("rate_limit_exceeded", 429)
    );
    assert_millis_left(denial.retry_after_ms, Duration::from_secs(20), first_spent);
    let status = limited.rate_limit.unwrap();
    assert_eq!((status.limit, status.remaining), (3, 0));
    assert!(status.reset_ms > 0);

    // CheckScope draws on the same budget.
    let check = app
        .keys
        .check_scope(proto::CheckScopeRequest {
            credential: secret.clone(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.denial.unwrap().reason(), Reason::RateLimited);
    app.shutdown().await;
}

/// A limited key is allowed again once its bucket has refilled, not before
/// the wait it was told. (One request per 5 s, so that a descheduled thread
/// cannot let the bucket refill between the burst and the limited call.)
async fn limits_refill_over_time(db: Db) {
    let mut config = test_config();
    // One request per 5 s, burst 2.
    config.default_rate_limit = Some(RateLimit::new(2, 10).unwrap());
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &[]).await;
    assert!(app.authenticate(&secret, &[]).await.allowed);
    assert!(app.authenticate(&secret, &[]).await.allowed);
    let asked = tokio::time::Instant::now();
    let limited = app.authenticate(&secret, &[]).await;
    assert_eq!(reason(&limited), Reason::RateLimited);
    let wait = Duration::from_millis(limited.denial.unwrap().retry_after_ms);
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(5),
        "{wait:?}"
    );

    let refilled = eventually(wait + Duration::from_secs(20), async || {
        let answer = app.authenticate(&secret, &[]).await;
        if answer.allowed {
            // Decided after the limited call was asked, `wait` after its
            // decision at the earliest (to the millisecond).
            assert!(
                asked.elapsed() + Duration::from_millis(1) >= wait,
                "allowed {:?} after being told to wait {wait:?}",
                asked.elapsed()
            );
        } else {
            assert_eq!(reason(&answer), Reason::RateLimited, "{answer:?}");
        }
        answer.allowed
    })
    .await;
    assert!(refilled, "the bucket never refilled");
    app.shutdown().await;
}

async fn a_key_override_beats_the_default_and_keys_are_independent(db: Db) {
    let mut config = test_config();
    config.default_rate_limit = Some(RateLimit::new(1, 60).unwrap());
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let generous = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "generous".into(),
            rate_limit: Some(proto::RateLimit {
                requests: 5,
                per_seconds: 60,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let (_, plain) = app.create_key("acct_1", &[]).await;
    let (_, other) = app.create_key("acct_2", &[]).await;

    for _ in 0..5 {
        assert!(app.authenticate(&generous, &[]).await.allowed);
    }
    assert_eq!(
        reason(&app.authenticate(&generous, &[]).await),
        Reason::RateLimited
    );
    assert!(app.authenticate(&plain, &[]).await.allowed);
    assert_eq!(
        reason(&app.authenticate(&plain, &[]).await),
        Reason::RateLimited
    );
    assert!(
        app.authenticate(&other, &[]).await.allowed,
        "other keys are unaffected"
    );
    app.shutdown().await;
}

async fn changing_a_keys_limit_takes_effect_at_once(db: Db) {
    let Some(mut app) = spawn_app_with(db, test_config()).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &[]).await;
    for _ in 0..5 {
        assert!(
            app.authenticate(&secret, &[]).await.allowed,
            "no default limit"
        );
    }
    app.keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: key.id.clone(),
            rate_limit: Some(proto::RateLimit {
                requests: 1,
                per_seconds: 60,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(app.authenticate(&secret, &[]).await.allowed);
    assert_eq!(
        reason(&app.authenticate(&secret, &[]).await),
        Reason::RateLimited
    );
    app.shutdown().await;
}

/// The largest and slowest limits the API accepts work (the largest once
/// made the limiter's period round to zero).
async fn extreme_limits_are_served(db: Db) {
    let Some(mut app) = spawn_app_with(db, test_config()).await else {
        return;
    };
    for (requests, per_seconds, allowed_in_a_row) in [(u32::MAX, 1, 50), (1, 86_400, 1)] {
        let secret = app
            .keys
            .create_key(proto::CreateKeyRequest {
                account_id: "acct_1".into(),
                name: "extreme".into(),
                rate_limit: Some(proto::RateLimit {
                    requests,
                    per_seconds,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .secret;
        for _ in 0..allowed_in_a_row {
            assert!(app.authenticate(&secret, &[]).await.allowed);
        }
        if requests == 1 {
            assert_eq!(
                reason(&app.authenticate(&secret, &[]).await),
                Reason::RateLimited
            );
        }
    }
    app.shutdown().await;
}

async fn bans_follow_repeated_invalid_credentials_from_one_address(db: Db) {
    let mut config = test_config();
    config.bans.max_failures = 3;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &[]).await;
    let attacker = "203.0.113.9";

    let garbage = [
        format!("cc_{}", "0".repeat(64)),
        "cc_short".to_owned(),
        format!("Bearer cc_{}", "Z".repeat(64)),
    ];
    for credential in &garbage[..2] {
        let response = authenticate_from(&mut app, credential, attacker).await;
        assert_ne!(reason(&response), Reason::TooManyFailedAttempts);
    }
    assert!(
        authenticate_from(&mut app, &secret, attacker).await.allowed,
        "not banned before the threshold"
    );
    let ban_began = tokio::time::Instant::now();
    authenticate_from(&mut app, &garbage[2], attacker).await;

    let banned = authenticate_from(&mut app, &secret, attacker).await;
    let denial = banned.denial.clone().unwrap();
    assert_eq!(
        denial.reason(),
        Reason::TooManyFailedAttempts,
        "a valid key is refused too"
    );
    assert_eq!(
        (denial.code.as_str(), denial.http_status),
        ("too_many_failed_auth", 401)
    );
    // The default ban, 5 minutes, less what has passed since it began.
    assert_millis_left(denial.retry_after_ms, Duration::from_secs(300), ban_began);
    assert!(banned.key.is_none());

    // Credentials that are not ours (no key prefix) never count: a browser
    // sending its JWT along does not get its address banned.
    for _ in 0..10 {
        authenticate_from(
            &mut app,
            "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig",
            "198.51.100.2",
        )
        .await;
    }
    assert!(
        authenticate_from(&mut app, &secret, "198.51.100.2")
            .await
            .allowed
    );
    // Other addresses and callers without an address are unaffected.
    assert!(
        authenticate_from(&mut app, &secret, "198.51.100.1")
            .await
            .allowed
    );
    assert!(authenticate_from(&mut app, &secret, "").await.allowed);
    // CheckScope from the banned address is refused as well.
    let check = app
        .keys
        .check_scope(proto::CheckScopeRequest {
            credential: secret.clone(),
            scopes: vec!["orders:read".into()],
            client_ip: attacker.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        check.denial.unwrap().reason(),
        Reason::TooManyFailedAttempts
    );
    app.shutdown().await;
}

/// A ban ends when its time is over, not before. (5 s, so that the checks
/// that it is in force fit inside it on a loaded machine; the end is polled.)
async fn bans_expire(db: Db) {
    let ban = Duration::from_secs(5);
    let mut config = test_config();
    config.bans.max_failures = 2;
    config.bans.ban_duration = ban;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &[]).await;
    let attacker = "2001:db8::66";
    authenticate_from(&mut app, "cc_nope", attacker).await;
    // The ban starts with the second failure, not before this instant.
    let banned_from = tokio::time::Instant::now();
    authenticate_from(&mut app, "cc_nope", attacker).await;
    assert_eq!(
        reason(&authenticate_from(&mut app, &secret, attacker).await),
        Reason::TooManyFailedAttempts
    );
    // The same /64 is the same client.
    assert_eq!(
        reason(&authenticate_from(&mut app, &secret, "2001:db8::67").await),
        Reason::TooManyFailedAttempts
    );

    let lifted = eventually(ban + Duration::from_secs(20), async || {
        let answer = authenticate_from(&mut app, &secret, attacker).await;
        if answer.allowed {
            assert!(
                banned_from.elapsed() >= ban,
                "the ban lifted {:?} after it began, before its {ban:?}",
                banned_from.elapsed()
            );
        } else {
            assert_eq!(reason(&answer), Reason::TooManyFailedAttempts);
        }
        answer.allowed
    })
    .await;
    assert!(lifted, "ban expired");
    app.shutdown().await;
}

async fn get_key(app: &mut TestApp, account: &str, id: &str) -> proto::Key {
    app.keys
        .get_key(proto::GetKeyRequest {
            account_id: account.into(),
            key_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
}

/// Uses are noted in memory and written by the periodic flush, not by the
/// requests: with the first flush 5 s after startup, 20 uses made well
/// before it leave the column empty in the database, and the flush then
/// writes it (GetKey and ListKeys show it; an unused key stays empty).
async fn last_use_is_recorded_in_batches(db: Db) {
    let interval = Duration::from_secs(5);
    let mut config = test_config();
    config.last_used_flush_interval = interval;
    // The flusher's first tick is one interval after it starts, which is
    // after this instant.
    let started = tokio::time::Instant::now();
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &[]).await;
    let (unused, _) = app.create_key("acct_1", &[]).await;
    assert!(
        get_key(&mut app, "acct_1", &key.id)
            .await
            .last_used_at
            .is_none()
    );
    let before = std::time::SystemTime::now() - Duration::from_secs(1);

    for _ in 0..20 {
        assert!(app.authenticate(&secret, &[]).await.allowed);
    }
    let after_requests = stored_last_used_at(&app.database, &key.id).await;
    assert!(
        started.elapsed() < interval,
        "the 20 calls took longer than the flush interval ({:?}); the machine is too slow for this test",
        started.elapsed()
    );
    assert_eq!(
        after_requests, None,
        "a request wrote its use (no flush has run yet)"
    );

    let recorded = eventually(interval + Duration::from_secs(15), async || {
        stored_last_used_at(&app.database, &key.id).await.is_some()
    })
    .await;
    assert!(recorded, "last_used_at written by the periodic flush");
    assert!(
        started.elapsed() >= interval,
        "written before the first flush could run"
    );
    let at = get_key(&mut app, "acct_1", &key.id)
        .await
        .last_used_at
        .unwrap();
    assert!(std::time::SystemTime::try_from(at).unwrap() >= before);
    let listed = app
        .keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct_1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .keys
            .iter()
            .find(|k| k.id == key.id)
            .unwrap()
            .last_used_at
            .is_some()
    );
    assert!(
        get_key(&mut app, "acct_1", &unused.id)
            .await
            .last_used_at
            .is_none()
    );
    assert_eq!(stored_last_used_at(&app.database, &unused.id).await, None);
    app.shutdown().await;
}

/// A use that the periodic flush has not written yet (its first tick is an
/// hour after startup) is written by the flush at shutdown: the column is
/// still empty in the database just before shutdown, and set after it.
async fn last_use_pending_at_shutdown_is_written(db: Db) {
    let mut config = test_config();
    // Nothing would be flushed for an hour, except at shutdown.
    config.last_used_flush_interval = Duration::from_secs(3600);
    let Some(database) = crate::helpers::TestDatabase::create(db).await else {
        return;
    };
    let mut app = crate::helpers::spawn_on(database.clone(), config.clone()).await;
    let (key, secret) = app.create_key("acct_1", &[]).await;
    let used_from = UnixMillis::now();
    assert!(app.authenticate(&secret, &[]).await.allowed);
    assert_eq!(
        stored_last_used_at(&database, &key.id).await,
        None,
        "the use is still pending before shutdown (nothing else wrote it)"
    );

    app.shutdown().await;

    let stored = stored_last_used_at(&database, &key.id)
        .await
        .expect("the pending use was flushed at shutdown");
    assert!(stored >= used_from.0, "{stored} < {used_from:?}");
    let mut restarted = crate::helpers::spawn_on(database, config).await;
    let shown = get_key(&mut restarted, "acct_1", &key.id).await;
    assert!(shown.last_used_at.is_some(), "GetKey shows the stored use");
    restarted.shutdown().await;
}

async fn check_scope_by_id(
    app: &mut TestApp,
    key_id: &str,
    client_ip: &str,
) -> proto::CheckScopeResponse {
    app.keys
        .check_scope(proto::CheckScopeRequest {
            key_id: key_id.into(),
            scopes: vec!["orders:read".into()],
            client_ip: client_ip.into(),
            ..Default::default()
        })
        .await
        .expect("CheckScope")
        .into_inner()
}

/// CheckScope by `key_id` asks about a request the caller has already
/// authenticated: it spends none of the key's rate limit, and unknown key
/// ids from an address do not count toward banning it (a key id is not a
/// secret to guess). A banned address is still refused.
async fn check_scope_by_key_id_spends_no_rate_limit_and_counts_toward_no_ban(db: Db) {
    let mut config = test_config();
    config.bans.max_failures = 3;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let created = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "limited".into(),
            scopes: vec!["orders:read".into()],
            rate_limit: Some(proto::RateLimit {
                requests: 2,
                per_seconds: 3600,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (key, secret) = (created.key.unwrap(), created.secret);
    let asker = "198.51.100.7";

    for _ in 0..10 {
        let check = check_scope_by_id(&mut app, &key.id, asker).await;
        assert!(check.allowed, "{check:?}");
    }
    // The key's whole budget is left for its own requests.
    let remaining: Vec<u32> = {
        let mut remaining = Vec::new();
        for _ in 0..2 {
            let used = authenticate_from(&mut app, &secret, asker).await;
            assert!(used.allowed, "{used:?}");
            remaining.push(used.rate_limit.unwrap().remaining);
        }
        remaining
    };
    assert_eq!(remaining, [1, 0], "CheckScope by id spent the budget");
    assert_eq!(
        reason(&authenticate_from(&mut app, &secret, asker).await),
        Reason::RateLimited
    );

    // Unknown key ids, many more than the ban threshold, ban no one.
    for _ in 0..10 {
        let unknown = keyward::domain::KeyId::generate().to_string();
        let check = check_scope_by_id(&mut app, &unknown, asker).await;
        assert_eq!(
            check.denial.unwrap().reason(),
            Reason::UnknownKey,
            "{unknown}"
        );
    }
    let (_, other_secret) = app.create_key("acct_1", &[]).await;
    assert!(
        authenticate_from(&mut app, &other_secret, asker)
            .await
            .allowed,
        "unknown key ids banned the address"
    );

    // An address banned for bad credentials is refused by id as well.
    let banned = "203.0.113.66";
    for _ in 0..3 {
        authenticate_from(&mut app, "cc_nope", banned).await;
    }
    let refused = check_scope_by_id(&mut app, &key.id, banned).await;
    assert_eq!(
        refused.denial.unwrap().reason(),
        Reason::TooManyFailedAttempts
    );
    app.shutdown().await;
}

/// Failures count toward a ban only within `bans.window_seconds` of the
/// first one: two failures, then (once the window is over) two more, do not
/// reach a threshold of three; a third within the new window does.
async fn failures_older_than_the_window_do_not_count(db: Db) {
    let window = Duration::from_secs(5);
    let mut config = test_config();
    config.bans.max_failures = 3;
    config.bans.window = window;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &[]).await;
    let client = "192.0.2.44";

    let first_window = tokio::time::Instant::now();
    for _ in 0..2 {
        authenticate_from(&mut app, "cc_nope", client).await;
    }
    assert!(authenticate_from(&mut app, &secret, client).await.allowed);
    // The window counts from the first failure, which came after
    // `first_window`. (What is awaited is the passing of the window itself.)
    tokio::time::sleep_until(first_window + window + Duration::from_millis(500)).await;

    let second_window = tokio::time::Instant::now();
    for _ in 0..2 {
        let failed = authenticate_from(&mut app, "cc_nope", client).await;
        assert_eq!(reason(&failed), Reason::MalformedCredential);
    }
    let after_four = authenticate_from(&mut app, &secret, client).await;
    assert!(
        after_four.allowed,
        "failures from before the window counted: {after_four:?}"
    );
    authenticate_from(&mut app, "cc_nope", client).await;
    let banned = authenticate_from(&mut app, &secret, client).await;
    assert!(
        second_window.elapsed() < window,
        "the second window's failures took longer than the window ({:?})",
        second_window.elapsed()
    );
    assert_eq!(
        reason(&banned),
        Reason::TooManyFailedAttempts,
        "three failures within the window ban"
    );
    app.shutdown().await;
}
