//! Limits shared by replicas through Redis (`[limits] backend = "redis"`):
//! two replicas on one PostgreSQL database and one Redis hold a key to its
//! limit together, ban an address together, and keep serving as
//! `limits.on_backend_error` says while Redis is down.
//!
//! Tests against the machine's Redis (127.0.0.1:6379) use a key prefix of
//! their own; tests that kill Redis start their own `redis-server`.

use std::time::Duration;

use keyward::domain::RateLimit;
use keyward::proto::{self, denial::Reason};
use keyward::shared_limits::{LimitMode, OnBackendError, lease_size};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::redis::{
    ThrowawayRedis, shared_redis_or_skip, unique_prefix, with_redis_limits,
};
use crate::helpers::{
    Db, TestApp, TestDatabase, authenticate_spread, eventually, reason, spawn_on, test_config,
    two_replicas,
};

async fn authenticate_from(
    app: &mut TestApp,
    credential: &str,
    client_ip: &str,
) -> proto::AuthenticateResponse {
    app.keys
        .authenticate(proto::AuthenticateRequest {
            credential: credential.into(),
            client_ip: client_ip.into(),
            ..Default::default()
        })
        .await
        .expect("Authenticate")
        .into_inner()
}

/// A key of its own limit, created through `app`.
async fn limited_key(app: &mut TestApp, requests: u32, per_seconds: u32) -> String {
    app.keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "limited".into(),
            rate_limit: Some(proto::RateLimit {
                requests,
                per_seconds,
            }),
            ..Default::default()
        })
        .await
        .expect("CreateKey")
        .into_inner()
        .secret
}

async fn spread(a: &TestApp, b: &TestApp, secret: &str, total: usize) -> (usize, usize) {
    let mut allowed = 0;
    let mut limited = 0;
    for response in authenticate_spread(a, b, secret, total).await {
        if response.allowed {
            allowed += 1;
        } else {
            assert_eq!(reason(&response), Reason::RateLimited, "{response:?}");
            limited += 1;
        }
    }
    (allowed, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_limits_hold_across_two_replicas() {
    let test = "exact_limits_hold_across_two_replicas";
    let Some(url) = shared_redis_or_skip(test) else {
        return;
    };
    let prefix = unique_prefix(test);
    let config = with_redis_limits(test_config(), &url, &prefix, OnBackendError::Deny);
    let Some((mut a, b)) = two_replicas(config).await else {
        return;
    };
    // 10 per hour: nothing refills while the test runs.
    let limit = 10;
    let secret = limited_key(&mut a, limit, 3_600).await;
    let (allowed, limited) = spread(&a, &b, &secret, 2 * limit as usize).await;
    assert_eq!(
        (allowed, limited),
        (limit as usize, limit as usize),
        "2N requests over two replicas: exactly N allowed"
    );
    // The budget shows the same on both, and a limited answer says when
    // to retry.
    let mut b = b;
    let denied = b.authenticate(&secret, &[]).await;
    assert_eq!(reason(&denied), Reason::RateLimited);
    let status = denied.rate_limit.expect("rate-limit state");
    assert_eq!((status.limit, status.remaining), (limit, 0));
    let retry = denied.denial.unwrap().retry_after_ms;
    assert!(
        retry > 300_000 && retry <= 360_000,
        "one request back after 360 s: {retry} ms"
    );

    // The same on the local backend lets each replica grant the full
    // budget: what the shared limit is for.
    let local = test_config();
    let Some((mut c, d)) = two_replicas(local).await else {
        return;
    };
    let secret = limited_key(&mut c, limit, 3_600).await;
    let (allowed, _) = spread(&c, &d, &secret, 2 * limit as usize).await;
    assert_eq!(allowed, 2 * limit as usize, "local limits are per replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_limit_takes_effect_at_once_on_every_replica() {
    let test = "a_changed_limit_takes_effect";
    let Some(url) = shared_redis_or_skip(test) else {
        return;
    };
    let prefix = unique_prefix(test);
    let config = with_redis_limits(test_config(), &url, &prefix, OnBackendError::Deny);
    let Some((mut a, mut b)) = two_replicas(config).await else {
        return;
    };
    let response = a
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "limited".into(),
            rate_limit: Some(proto::RateLimit {
                requests: 1,
                per_seconds: 3_600,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (id, secret) = (response.key.unwrap().id, response.secret);
    assert!(a.authenticate(&secret, &[]).await.allowed);
    assert_eq!(
        reason(&b.authenticate(&secret, &[]).await),
        Reason::RateLimited
    );
    let update = a
        .keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: id,
            rate_limit: Some(proto::RateLimit {
                requests: 3,
                per_seconds: 3_600,
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rate_limit".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // B answers with the new limit once it has applied the change.
    let mut allowed = 0;
    for i in 0..4 {
        let app = if i % 2 == 0 { &mut a } else { &mut b };
        let response = app
            .keys
            .authenticate(proto::AuthenticateRequest {
                credential: secret.clone(),
                min_revision: update.revision,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        allowed += usize::from(response.allowed);
    }
    assert_eq!(allowed, 3, "a fresh bucket of the new limit, shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_over_two_replicas_ban_the_address_on_both() {
    let test = "failures_over_two_replicas_ban";
    let Some(url) = shared_redis_or_skip(test) else {
        return;
    };
    let prefix = unique_prefix(test);
    let mut config = with_redis_limits(test_config(), &url, &prefix, OnBackendError::Deny);
    config.bans.max_failures = 4;
    let Some((mut a, mut b)) = two_replicas(config).await else {
        return;
    };
    let (_, secret) = a.create_key("acct_1", &[]).await;
    let attacker = "203.0.113.7";
    let guess = |i: usize| format!("cc_{:064x}", i + 1);

    // Three failures spread over both replicas: no ban yet, on either.
    for i in 0..3 {
        let app = if i % 2 == 0 { &mut a } else { &mut b };
        let response = authenticate_from(app, &guess(i), attacker).await;
        assert_eq!(reason(&response), Reason::UnknownKey);
    }
    assert!(authenticate_from(&mut a, &secret, attacker).await.allowed);
    assert!(authenticate_from(&mut b, &secret, attacker).await.allowed);

    // The fourth, on B, bans the address on B at once, and on A as soon
    // as A hears of it (the ban channel; a valid key polls, which counts
    // toward nothing).
    let response = authenticate_from(&mut b, &guess(3), attacker).await;
    assert_eq!(reason(&response), Reason::UnknownKey);
    let on_b = authenticate_from(&mut b, &secret, attacker).await;
    assert_eq!(reason(&on_b), Reason::TooManyFailedAttempts);
    let mut on_a = None;
    assert!(
        eventually(Duration::from_secs(5), async || {
            let response = authenticate_from(&mut a, &secret, attacker).await;
            let banned = reason(&response) == Reason::TooManyFailedAttempts;
            on_a = Some(response);
            banned
        })
        .await,
        "A never applied B's ban"
    );
    // One ban: the same time left on both (within the time between the
    // two answers and the channel's delay).
    let retry_b = on_b.denial.unwrap().retry_after_ms;
    let retry_a = on_a.unwrap().denial.unwrap().retry_after_ms;
    assert!(
        retry_b.abs_diff(retry_a) < 1_000 && retry_b > 290_000,
        "A: {retry_a} ms, B: {retry_b} ms"
    );
    // Other addresses are unaffected.
    assert!(
        authenticate_from(&mut a, &secret, "198.51.100.1")
            .await
            .allowed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_after_a_ban_learns_it_at_startup() {
    let test = "a_replica_started_after_a_ban";
    let Some(url) = shared_redis_or_skip(test) else {
        return;
    };
    let prefix = unique_prefix(test);
    let mut config = with_redis_limits(test_config(), &url, &prefix, OnBackendError::Deny);
    config.bans.max_failures = 2;
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), config.clone()).await;
    let (_, secret) = a.create_key("acct_1", &[]).await;
    let attacker = "2001:db8::1";
    for i in 0..2 {
        authenticate_from(&mut a, &format!("cc_{:064x}", i + 1), attacker).await;
    }
    // A new replica, after the announcement: the sync at subscription
    // finds the ban (and for the address's whole /64).
    let mut late = spawn_on(database, config).await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            reason(&authenticate_from(&mut late, &secret, "2001:db8::2").await)
                == Reason::TooManyFailedAttempts
        })
        .await,
        "the late replica never learned the ban"
    );
}

async fn health(app: &mut TestApp) -> ServingStatus {
    app.health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner()
        .status()
}

/// Redis killed mid-run and started again, for one `on_backend_error`.
async fn redis_outage(on_error: OnBackendError) {
    let test = "redis_outage";
    let Some(redis) = ThrowawayRedis::start_or_skip(test) else {
        return;
    };
    let mut config = with_redis_limits(test_config(), &redis.url(), "keyward:", on_error);
    config.limits.timeout = Duration::from_millis(200);
    config.bans.max_failures = 3;
    let Some((mut a, mut b)) = two_replicas(config).await else {
        return;
    };
    let secret = limited_key(&mut a, 2, 3_600).await;
    let (_, unlimited) = a.create_key("acct_1", &[]).await;
    let metered = a
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "metered".into(),
            quota: Some(proto::Quota {
                requests: 5,
                refill: proto::quota::Refill::Never as i32,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert!(a.authenticate(&secret, &[]).await.allowed);
    assert_eq!(a.authenticate(&metered, &[]).await.quota_remaining, Some(4));

    redis.stop();
    let during = a.authenticate(&secret, &[]).await;
    match on_error {
        // Fail closed: a limited key cannot be checked.
        OnBackendError::Deny => {
            assert_eq!(reason(&during), Reason::Unavailable, "{during:?}");
            assert_eq!(during.denial.unwrap().http_status, 503);
            assert_eq!(
                reason(&a.authenticate(&metered, &[]).await),
                Reason::Unavailable
            );
        }
        // This replica's own limit (2, its bucket still full).
        OnBackendError::Local => {
            // The quota goes on from the count Redis last reported.
            assert_eq!(a.authenticate(&metered, &[]).await.quota_remaining, Some(3));
            assert!(during.allowed, "{during:?}");
            assert!(a.authenticate(&secret, &[]).await.allowed);
            assert_eq!(
                reason(&a.authenticate(&secret, &[]).await),
                Reason::RateLimited,
                "the local limit holds"
            );
        }
    }
    // A key without a limit needs no Redis either way.
    assert!(b.authenticate(&unlimited, &[]).await.allowed);
    // Failures still count (here, per replica), and ban.
    let attacker = "203.0.113.50";
    for i in 0..3 {
        authenticate_from(&mut b, &format!("cc_{:064x}", i + 1), attacker).await;
    }
    assert_eq!(
        reason(&authenticate_from(&mut b, &unlimited, attacker).await),
        Reason::TooManyFailedAttempts
    );
    // Health is about the database and the event log, not Redis.
    assert_eq!(health(&mut a).await, ServingStatus::Serving);
    assert_eq!(health(&mut b).await, ServingStatus::Serving);

    // Redis back (empty, as after a crash): shared limits resume by
    // themselves, without a restart.
    redis.start_again().expect("redis-server starts again");
    let fresh = limited_key(&mut a, 1, 3_600).await;
    assert!(
        eventually(Duration::from_secs(15), async || {
            a.authenticate(&fresh, &[]).await.allowed
        })
        .await,
        "Redis never came back for A"
    );
    // The one request of `fresh` was spent on A: B, sharing it, is refused.
    assert!(
        eventually(Duration::from_secs(15), async || {
            reason(&b.authenticate(&fresh, &[]).await) == Reason::RateLimited
        })
        .await,
        "B never shared A's budget again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_deny_fails_closed_and_recovers() {
    redis_outage(OnBackendError::Deny).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_local_falls_back_and_recovers() {
    redis_outage(OnBackendError::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_missing_redis_url_stops_startup_naming_the_setting() {
    let Some(database) = TestDatabase::create(Db::Sqlite).await else {
        return;
    };
    let port = crate::helpers::free_port("127.0.0.1");
    let mut config = with_redis_limits(
        test_config(),
        &format!("redis://:hunter2@127.0.0.1:{port}"),
        "keyward:",
        OnBackendError::Local,
    );
    config.limits.connect_timeout = Duration::from_secs(1);
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.database_url = database.database_url();
    let error = keyward::server::start(config.clone())
        .await
        .err()
        .expect("no Redis there")
        .to_string();
    assert!(error.contains("limits.redis_url"), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(!error.contains("hunter2"), "{error}");

    config.limits.redis_url = None;
    let error = keyward::server::start(config)
        .await
        .err()
        .expect("no URL")
        .to_string();
    assert!(error.contains("limits.redis_url"), "{error}");
}

/// Approximate mode: replicas spend leased tokens locally. At most a lease
/// per replica over what GCRA allows, at most a lease per other replica
/// under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_limits_stay_within_the_stated_bound_across_two_replicas() {
    let test = "approximate_limits_stay_within_the_bound";
    let Some(url) = shared_redis_or_skip(test) else {
        return;
    };
    // A 100 ms sync, so that a lease of 2 comes with a refill slow enough
    // (10/s) that 3N requests reach the limit however slow the machine is
    // (at 100/s a loaded machine once served all 600 before it was hit).
    let sync = Duration::from_millis(100);
    let mut config = with_redis_limits(
        test_config(),
        &url,
        &unique_prefix(test),
        OnBackendError::Deny,
    );
    config.limits.mode = LimitMode::Approximate { sync };
    let Some((mut a, b)) = two_replicas(config).await else {
        return;
    };

    // A slow limit (a lease of 1): exactly N of 2N.
    let limit = 10;
    let secret = limited_key(&mut a, limit, 3_600).await;
    assert_eq!(lease_size(RateLimit::new(limit, 3_600).unwrap(), sync), 1);
    let (allowed, _) = spread(&a, &b, &secret, 2 * limit as usize).await;
    assert_eq!(allowed, limit as usize);

    // A faster one (10/s, leases of 2): at most N plus what refilled while
    // the requests ran plus a lease per replica, at least N less a lease
    // held by the other replica.
    let (requests, per_seconds) = (200u32, 20u32);
    let lease = lease_size(RateLimit::new(requests, per_seconds).unwrap(), sync);
    assert_eq!(lease, 2);
    let secret = limited_key(&mut a, requests, per_seconds).await;
    let started = std::time::Instant::now();
    let (allowed, limited) = spread(&a, &b, &secret, 3 * requests as usize).await;
    let refilled = (started.elapsed().as_secs_f64() * f64::from(requests / per_seconds)).ceil();
    assert!(limited > 0, "the limit was reached");
    assert!(
        allowed as f64 <= f64::from(requests) + refilled + 2.0 * lease as f64,
        "{allowed} allowed: over {requests} + {refilled} refilled + two leases"
    );
    assert!(
        allowed as u64 + lease >= u64::from(requests),
        "{allowed} allowed: more than a lease under {requests}"
    );
}
