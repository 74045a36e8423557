//! Prometheus metrics scraped over HTTP from the server's own `/metrics`
//! listener after real traffic: decisions by outcome, cache lookups, gRPC
//! codes, latency histograms, bans, rate limits, the revocation feed and the
//! database pool. Each server has its own registry, so counts are exact.

use std::net::SocketAddr;
use std::time::Duration;

use keyward::proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Db, TestApp, eventually, spawn_app_with, test_config};
use crate::on_both_databases;

on_both_databases!(metrics_follow_the_traffic);

/// GET /metrics over plain HTTP/1.1; returns the body.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: keyward\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.to_owned()
}

/// The value of one series (`name{labels}`), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

#[track_caller]
fn assert_series(text: &str, series: &str, expected: f64) {
    assert_eq!(value(text, series), Some(expected), "{series} in:\n{text}");
}

fn decisions(outcome: &str) -> String {
    format!("keyward_decisions_total{{rpc=\"Authenticate\",outcome=\"{outcome}\"}}")
}

async fn authenticate_from(app: &mut TestApp, credential: &str, scopes: &[&str], ip: &str) {
    app.keys
        .authenticate(proto::AuthenticateRequest {
            credential: credential.into(),
            required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            client_ip: ip.into(),
            ..Default::default()
        })
        .await
        .expect("Authenticate answers");
}

async fn metrics_follow_the_traffic(db: Db) {
    let mut config = test_config();
    config.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.bans.max_failures = 2;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let metrics = app.metrics_addr().expect("metrics listener");

    let before = scrape(metrics).await;
    assert_series(&before, &decisions("allowed"), 0.0);
    assert_series(&before, &decisions("revoked"), 0.0);
    assert_series(&before, "keyward_change_feed_fresh", 1.0);
    assert_series(&before, "keyward_database_reachable", 1.0);
    assert_series(&before, "keyward_database_pool_max_connections", 10.0);

    let (key, secret) = app.create_key("acct_m", &["orders:read"]).await;
    // Miss (database read), then a hit.
    assert!(app.authenticate(&secret, &["orders:read"]).await.allowed);
    assert!(app.authenticate(&secret, &["orders:read"]).await.allowed);
    // A hit, denied for scope.
    assert!(!app.authenticate(&secret, &["orders:write"]).await.allowed);
    // An unknown key: a miss, then a negative-cache hit.
    let unknown = format!("cc_{}", "ab".repeat(32));
    app.authenticate(&unknown, &[]).await;
    app.authenticate(&unknown, &[]).await;
    app.authenticate("", &[]).await;
    // Two malformed keys from one address ban it; its next try is refused.
    authenticate_from(&mut app, "cc_short", &[], "203.0.113.9").await;
    authenticate_from(&mut app, "cc_short", &[], "203.0.113.9").await;
    authenticate_from(&mut app, &secret, &[], "203.0.113.9").await;
    // A key limited to one request a minute.
    let limited = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_m".into(),
            name: "limited".into(),
            scopes: vec!["orders:read".into()],
            rate_limit: Some(proto::RateLimit {
                requests: 1,
                per_seconds: 60,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert!(app.authenticate(&limited, &[]).await.allowed);
    assert!(!app.authenticate(&limited, &[]).await.allowed);
    // A request error.
    app.keys
        .list_keys(proto::ListKeysRequest::default())
        .await
        .unwrap_err();

    let after = scrape(metrics).await;
    assert_series(&after, &decisions("allowed"), 3.0);
    assert_series(&after, &decisions("insufficient_scope"), 1.0);
    assert_series(&after, &decisions("unknown_key"), 2.0);
    assert_series(&after, &decisions("missing_credential"), 1.0);
    assert_series(&after, &decisions("malformed_credential"), 2.0);
    assert_series(&after, &decisions("too_many_failed_attempts"), 1.0);
    assert_series(&after, &decisions("rate_limited"), 1.0);
    assert_series(&after, &decisions("revoked"), 0.0);
    assert_series(
        &after,
        "keyward_decision_duration_seconds_count{rpc=\"Authenticate\"}",
        11.0,
    );
    assert_series(
        &after,
        "keyward_key_cache_lookups_total{result=\"miss\"}",
        3.0,
    );
    assert_series(
        &after,
        "keyward_key_cache_lookups_total{result=\"hit\"}",
        3.0,
    );
    assert_series(
        &after,
        "keyward_key_cache_lookups_total{result=\"negative_hit\"}",
        1.0,
    );
    assert_series(&after, "keyward_bans_started_total", 1.0);
    assert_series(
        &after,
        "keyward_grpc_requests_total{rpc=\"Authenticate\",code=\"OK\"}",
        11.0,
    );
    assert_series(
        &after,
        "keyward_grpc_requests_total{rpc=\"CreateKey\",code=\"OK\"}",
        2.0,
    );
    assert_series(
        &after,
        "keyward_grpc_requests_total{rpc=\"ListKeys\",code=\"INVALID_ARGUMENT\"}",
        1.0,
    );
    assert_series(
        &after,
        "keyward_grpc_request_duration_seconds_count{rpc=\"CreateKey\"}",
        2.0,
    );
    assert!(value(&after, "keyward_banned_addresses").is_some());
    assert!(value(&after, "keyward_key_cache_entries").is_some());
    assert!(value(&after, "keyward_database_pool_connections{state=\"idle\"}").is_some());
    assert_series(&after, "keyward_change_feed_applied_sequence", 0.0);

    // A revocation lands in the event log; the feed applies it.
    let revision = app
        .keys
        .revoke_key(keyward::proto::RevokeKeyRequest {
            account_id: "acct_m".into(),
            key_id: key.id.clone(),
        })
        .await
        .expect("RevokeKey")
        .into_inner()
        .revision as f64;
    assert!(!app.authenticate(&secret, &["orders:read"]).await.allowed);
    let caught_up = eventually(Duration::from_secs(5), async || {
        let text = scrape(metrics).await;
        value(&text, "keyward_change_feed_applied_sequence") == Some(revision)
            && value(&text, "keyward_change_feed_latest_sequence") == Some(revision)
            && value(&text, "keyward_change_feed_sequence_lag") == Some(0.0)
    })
    .await;
    assert!(caught_up, "the feed gauges show the applied revocation");
    let last = scrape(metrics).await;
    assert_series(&last, &decisions("revoked"), 1.0);
    let age = value(&last, "keyward_change_feed_seconds_since_catch_up").unwrap();
    assert!((0.0..=2.0).contains(&age), "{age}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_unless_asked_for() {
    let app = spawn_app_with(Db::Sqlite, test_config()).await.unwrap();
    assert_eq!(app.metrics_addr(), None);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_in_use_stops_startup_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.server.metrics_listen = Some(address);
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.database_url = format!("sqlite://{}", dir.path().join("k.db").display())
        .parse()
        .unwrap();
    let error = keyward::server::start(config)
        .await
        .err()
        .expect("the port is taken")
        .to_string();
    assert!(
        error.starts_with(&format!("--metrics-listen {address}: cannot listen")),
        "{error}"
    );
    assert!(
        !dir.path().join("k.db").exists(),
        "the database is not created"
    );
}

/// ext_authz Check decisions, including the denials the route policy makes
/// before any key is read (no route; a request keyward cannot read), which
/// never reach the authenticator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_decisions_count_route_policy_denials_too() {
    use crate::helpers::envoy::{Envoy, allowed, denied, get, profile};
    let check =
        |outcome: &str| format!("keyward_decisions_total{{rpc=\"Check\",outcome=\"{outcome}\"}}");
    let mut config = profile("carboncopy");
    config.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let metrics = app.metrics_addr().expect("metrics listener");
    let before = scrape(metrics).await;
    for outcome in ["allowed", "unmatched_route", "malformed_request"] {
        assert_series(&before, &check(outcome), 0.0);
    }

    let (_, secret) = app.create_key("acct_m", &["account:read"]).await;
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(get("/api/v1/account").bearer(&secret).build())
            .await,
    );
    denied(&envoy.check(get("/api/v1/account").build()).await);
    denied(
        &envoy
            .check(get("/api/v2/account").bearer(&secret).build())
            .await,
    );
    denied(
        &envoy
            .check(get("/api/v1/portfolio/../account").bearer(&secret).build())
            .await,
    );
    denied(
        &envoy
            .check(envoy_types::ext_authz::v3::pb::CheckRequest::default())
            .await,
    );

    let after = scrape(metrics).await;
    assert_series(&after, &check("allowed"), 1.0);
    assert_series(&after, &check("missing_credential"), 1.0);
    assert_series(&after, &check("unmatched_route"), 1.0);
    assert_series(&after, &check("malformed_request"), 2.0);
    assert_series(
        &after,
        "keyward_grpc_requests_total{rpc=\"Check\",code=\"OK\"}",
        5.0,
    );
    app.shutdown().await;
}
