//! Usage quotas (`Key.quota`): requests allowed in all or per UTC day or
//! month, spent by allowed requests only, exact across replicas with Redis,
//! per process (and persisted with the last-use flush) without; refills at
//! the boundary of an injected clock; QUOTA_EXCEEDED as each product words
//! it; bad quotas refused naming the field, with nothing written.

use keyward::domain::UnixMillis;
use keyward::proto::{self, denial::Reason, quota::Refill};
use keyward::quotas::WallClock;
use keyward::shared_limits::OnBackendError;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::helpers::envoy::{Envoy, allowed, config_from, denied, get, response_headers};
use crate::helpers::redis::{shared_redis_or_skip, unique_prefix, with_redis_limits};
use crate::helpers::{
    Db, TestApp, TestDatabase, assert_invalid_argument, authenticate_spread, reason,
    spawn_app_with, spawn_on, stored_key_rows, test_config, two_replicas,
};
use crate::on_both_databases;

on_both_databases!(
    a_local_quota_runs_out_and_survives_a_restart,
    a_daily_quota_refills_at_midnight_utc,
    bad_quotas_are_refused_naming_the_field_and_nothing_is_written,
    update_mask_quota_sets_replaces_and_removes_it,
);

fn quota(requests: u64, refill: Refill) -> Option<proto::Quota> {
    Some(proto::Quota {
        requests,
        refill: refill as i32,
    })
}

async fn create_with_quota(
    app: &mut TestApp,
    quota: Option<proto::Quota>,
) -> Result<proto::CreateKeyResponse, tonic::Status> {
    app.keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "metered".into(),
            quota,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A settable clock for refills, starting at `start`.
fn settable_clock(start: UnixMillis) -> (WallClock, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(start.0));
    let read = Arc::clone(&now);
    (
        WallClock::from_fn(move || UnixMillis(read.load(Ordering::SeqCst))),
        now,
    )
}

const DAY: i64 = 86_400_000;

async fn a_local_quota_runs_out_and_survives_a_restart(db: Db) {
    let Some(database) = TestDatabase::create(db).await else {
        return;
    };
    let mut app = spawn_on(database.clone(), test_config()).await;
    let created = create_with_quota(&mut app, quota(3, Refill::Never))
        .await
        .unwrap();
    let secret = created.secret;
    assert_eq!(created.key.unwrap().quota, quota(3, Refill::Never));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app.authenticate(&secret, &[]).await;
        assert!(response.allowed);
        assert!(!response.cacheable, "every use must be counted here");
        remaining.push(response.quota_remaining.unwrap());
    }
    assert_eq!(remaining, [2, 1, 0]);
    let spent = app.authenticate(&secret, &[]).await;
    assert_eq!(reason(&spent), Reason::QuotaExceeded);
    assert_eq!(spent.quota_remaining, Some(0));
    let denial = spent.denial.unwrap();
    assert_eq!(
        (
            denial.code.as_str(),
            denial.http_status,
            denial.retry_after_ms
        ),
        ("quota_exceeded", 429, 0),
        "a quota that never refills has no retry time"
    );
    assert!(spent.key.is_some());
    // A key without a quota says nothing about one.
    let (_, plain) = app.create_key("acct_1", &[]).await;
    assert_eq!(app.authenticate(&plain, &[]).await.quota_remaining, None);

    // The count was written with the last-use flush (and at shutdown): a
    // new process on the same database starts from it.
    app.shutdown().await;
    let mut restarted = spawn_on(database, test_config()).await;
    assert_eq!(
        reason(&restarted.authenticate(&secret, &[]).await),
        Reason::QuotaExceeded
    );
}

async fn a_daily_quota_refills_at_midnight_utc(db: Db) {
    // 23:59:58 UTC on some day.
    let day = 20_800;
    let (clock, now) = settable_clock(UnixMillis(day * DAY + DAY - 2_000));
    let mut config = test_config();
    config.clock = clock;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let secret = create_with_quota(&mut app, quota(2, Refill::Daily))
        .await
        .unwrap()
        .secret;
    assert!(app.authenticate(&secret, &[]).await.allowed);
    assert!(app.authenticate(&secret, &[]).await.allowed);
    let spent = app.authenticate(&secret, &[]).await;
    assert_eq!(reason(&spent), Reason::QuotaExceeded);
    assert_eq!(
        spent.denial.unwrap().retry_after_ms,
        2_000,
        "until midnight"
    );
    // One millisecond before midnight: still spent.
    now.store((day + 1) * DAY - 1, Ordering::SeqCst);
    assert_eq!(
        reason(&app.authenticate(&secret, &[]).await),
        Reason::QuotaExceeded
    );
    now.store((day + 1) * DAY, Ordering::SeqCst);
    let refilled = app.authenticate(&secret, &[]).await;
    assert!(refilled.allowed, "{refilled:?}");
    assert_eq!(refilled.quota_remaining, Some(1));
}

async fn bad_quotas_are_refused_naming_the_field_and_nothing_is_written(db: Db) {
    let Some(mut app) = spawn_app_with(db, test_config()).await else {
        return;
    };
    let error = create_with_quota(&mut app, quota(0, Refill::Daily))
        .await
        .unwrap_err();
    assert_invalid_argument(&error, "quota.requests");
    let unknown = Some(proto::Quota {
        requests: 5,
        refill: 7,
    });
    let error = create_with_quota(&mut app, unknown).await.unwrap_err();
    assert_invalid_argument(&error, "quota.refill");
    let error = create_with_quota(&mut app, quota(5, Refill::Unspecified))
        .await
        .unwrap_err();
    assert_invalid_argument(&error, "quota.refill");
    let error = create_with_quota(&mut app, quota(u64::MAX, Refill::Never))
        .await
        .unwrap_err();
    assert_invalid_argument(&error, "quota.requests");
    assert!(stored_key_rows(&app).await.is_empty(), "nothing written");

    let (key, _) = app.create_key("acct_1", &[]).await;
    let error = app
        .keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: key.id.clone(),
            quota: unknown,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["quota".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid_argument(&error, "quota.refill");
    let stored = app
        .keys
        .get_key(proto::GetKeyRequest {
            account_id: "acct_1".into(),
            key_id: key.id,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(stored.quota, None, "the update wrote nothing");
}

async fn update_quota(app: &mut TestApp, id: &str, quota: Option<proto::Quota>) -> proto::Key {
    app.keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: id.into(),
            quota,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["quota".into()],
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateKey")
        .into_inner()
        .key
        .unwrap()
}

async fn update_mask_quota_sets_replaces_and_removes_it(db: Db) {
    let Some(mut app) = spawn_app_with(db, test_config()).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &[]).await;
    let updated = update_quota(&mut app, &key.id, quota(1, Refill::Monthly)).await;
    assert_eq!(updated.quota, quota(1, Refill::Monthly));
    assert!(app.authenticate(&secret, &[]).await.allowed);
    assert_eq!(
        reason(&app.authenticate(&secret, &[]).await),
        Reason::QuotaExceeded
    );
    // A new quota starts afresh.
    update_quota(&mut app, &key.id, quota(2, Refill::Monthly)).await;
    assert_eq!(
        app.authenticate(&secret, &[]).await.quota_remaining,
        Some(1)
    );
    // Unset under the mask: no quota.
    let cleared = update_quota(&mut app, &key.id, None).await;
    assert_eq!(cleared.quota, None);
    let free = app.authenticate(&secret, &[]).await;
    assert!(free.allowed);
    assert_eq!(free.quota_remaining, None);
    assert!(free.cacheable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_quota_is_exact_across_two_replicas_under_concurrent_load() {
    let test = "a_shared_quota_is_exact";
    let Some(url) = shared_redis_or_skip(test) else {
        return;
    };
    let prefix = unique_prefix(test);
    let config = with_redis_limits(test_config(), &url, &prefix, OnBackendError::Deny);
    let Some((mut a, b)) = two_replicas(config).await else {
        return;
    };
    let limit = 25;
    let secret = create_with_quota(&mut a, quota(limit, Refill::Monthly))
        .await
        .unwrap()
        .secret;
    let mut remaining = Vec::new();
    let mut exceeded = 0;
    for response in authenticate_spread(&a, &b, &secret, 3 * limit as usize).await {
        if response.allowed {
            remaining.push(response.quota_remaining.unwrap());
        } else {
            assert_eq!(reason(&response), Reason::QuotaExceeded, "{response:?}");
            assert_eq!(response.quota_remaining, Some(0));
            exceeded += 1;
        }
    }
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..limit).collect::<Vec<_>>(),
        "each unit of the quota spent exactly once, over both replicas"
    );
    assert_eq!(exceeded, 2 * limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_quota_refills_at_the_month_boundary_of_the_injected_clock() {
    let test = "a_shared_quota_refills";
    let Some(url) = shared_redis_or_skip(test) else {
        return;
    };
    // 2027-01-31 23:59:59 UTC, then 2027-02-01 00:00:00 UTC.
    // 2027-02-01T00:00:00Z: day 20850 since 1970-01-01.
    let february = 20_850 * DAY;
    let (clock, now) = settable_clock(UnixMillis(february - 1_000));
    let mut config = with_redis_limits(
        test_config(),
        &url,
        &unique_prefix(test),
        OnBackendError::Deny,
    );
    config.clock = clock;
    let Some((mut a, mut b)) = two_replicas(config).await else {
        return;
    };
    let secret = create_with_quota(&mut a, quota(1, Refill::Monthly))
        .await
        .unwrap()
        .secret;
    assert!(a.authenticate(&secret, &[]).await.allowed);
    let spent = b.authenticate(&secret, &[]).await;
    assert_eq!(reason(&spent), Reason::QuotaExceeded);
    assert_eq!(spent.denial.unwrap().retry_after_ms, 1_000);
    now.store(february, Ordering::SeqCst);
    assert!(b.authenticate(&secret, &[]).await.allowed);
    assert_eq!(
        reason(&a.authenticate(&secret, &[]).await),
        Reason::QuotaExceeded
    );
}

const METERED_ROUTES: &str = r#"
    [http]

    [[http.routes]]
    methods = ["GET"]
    path = "/api/v1/portfolio..."
    scopes = []

    [denials.quota_exceeded]
    code = "out_of_credits"
    message = "This key has no credits left this month."
    http_status = 402
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_through_ext_authz_is_worded_by_the_profile() {
    let Some(mut app) = spawn_app_with(Db::Sqlite, config_from(METERED_ROUTES)).await else {
        return;
    };
    let secret = create_with_quota(&mut app, quota(1, Refill::Never))
        .await
        .unwrap()
        .secret;
    let mut envoy = Envoy::of(&app);
    let first = envoy
        .check(get("/api/v1/portfolio").bearer(&secret).build())
        .await;
    assert_eq!(response_headers(allowed(&first))["x-quota-remaining"], "0");
    let spent = denied(
        &envoy
            .check(get("/api/v1/portfolio").bearer(&secret).build())
            .await,
    );
    assert_eq!(spent.status, 402);
    assert_eq!(spent.headers["x-quota-remaining"], "0");
    assert!(
        !spent.headers.contains_key("retry-after"),
        "it never refills"
    );
    assert_eq!(
        spent.body["error"]["code"], "out_of_credits",
        "{:?}",
        spent.body
    );
    assert_eq!(
        spent.body["error"]["message"],
        "This key has no credits left this month."
    );
    // The default words, and a refill time, without the profile's.
    let day = 20_800;
    let (clock, _) = settable_clock(UnixMillis(day * DAY + DAY - 90_000));
    let mut config = config_from(METERED_ROUTES.split("[denials").next().unwrap());
    config.clock = clock;
    let Some(mut app) = spawn_app_with(Db::Sqlite, config).await else {
        return;
    };
    let secret = create_with_quota(&mut app, quota(1, Refill::Daily))
        .await
        .unwrap()
        .secret;
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(get("/api/v1/portfolio").bearer(&secret).build())
            .await,
    );
    let spent = denied(
        &envoy
            .check(get("/api/v1/portfolio").bearer(&secret).build())
            .await,
    );
    assert_eq!(spent.status, 429);
    assert_eq!(spent.body["error"]["code"], "quota_exceeded");
    assert_eq!(spent.headers["retry-after"], "90");
}
