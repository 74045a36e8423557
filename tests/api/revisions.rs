//! Read-your-writes across replicas: every write returns its `revision`
//! (the event log's sequence of the change), and a hot-path request that
//! carries `min_revision` is answered only by a replica that has applied the
//! log that far (it waits, nudging its follower, and otherwise answers
//! UNAVAILABLE). Also the other pieces keyward-client builds on: `cacheable`
//! answers, `RecordUsage`, and checkpoints at the interval a stream asks for.

use std::time::Duration;

use keyward::proto::{self, denial::Reason};
use prost_types::Timestamp;
use tonic::Code;

use crate::faults::{Replica, server_address};
use crate::helpers::envoy::{Envoy, allowed, config_from, denied, get};
use crate::helpers::stalling_proxy::{Hold, StallingProxy};
use crate::helpers::{
    Db, TestApp, TestDatabase, assert_invalid_argument, eventually, reason, spawn_app,
    spawn_app_with, spawn_on, stored_last_used_at, test_config,
};
use crate::on_both_databases;

on_both_databases!(
    writes_return_revisions_in_log_order,
    a_revision_this_replica_has_not_reached_is_unavailable_and_no_failure,
    check_reads_the_revision_from_its_header,
    cacheable_marks_the_answers_a_caller_may_keep,
    record_usage_moves_last_used_at_forward_and_refuses_bad_reports,
    checkpoints_come_at_the_interval_a_stream_asks_for,
);

async fn authenticate_at(
    keys: &mut proto::key_service_client::KeyServiceClient<tonic::transport::Channel>,
    secret: &str,
    min_revision: u64,
) -> proto::AuthenticateResponse {
    keys.authenticate(proto::AuthenticateRequest {
        credential: secret.into(),
        min_revision,
        ..Default::default()
    })
    .await
    .expect("Authenticate")
    .into_inner()
}

async fn revoke(app: &mut TestApp, account: &str, key_id: &str) -> u64 {
    app.keys
        .revoke_key(proto::RevokeKeyRequest {
            account_id: account.into(),
            key_id: key_id.into(),
        })
        .await
        .expect("RevokeKey")
        .into_inner()
        .revision
}

async fn latest_revision(app: &mut TestApp) -> u64 {
    let response = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_probe".into(),
            name: "probe".into(),
            ..Default::default()
        })
        .await
        .expect("CreateKey")
        .into_inner();
    response.revision
}

async fn writes_return_revisions_in_log_order(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    // Something in the log first, so that the cursor below is not 0 ("now").
    let (earlier, _) = app.create_key("acct_0", &[]).await;
    let first_revision = revoke(&mut app, "acct_0", &earlier.id).await;
    let (first, _) = app.create_key("acct_1", &["orders:read"]).await;
    let (second, _) = app.create_key("acct_1", &["orders:read"]).await;
    let created = latest_revision(&mut app).await;
    assert_eq!(created, first_revision, "a creation logs nothing");

    let revoked = revoke(&mut app, "acct_1", &first.id).await;
    let update = |name: &str| proto::UpdateKeyRequest {
        account_id: "acct_1".into(),
        key_id: second.id.clone(),
        name: name.into(),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    let renamed = app
        .keys
        .update_key(update("renamed"))
        .await
        .unwrap()
        .into_inner()
        .revision;
    let again = revoke(&mut app, "acct_1", &first.id).await;
    let unchanged = app
        .keys
        .update_key(update("renamed"))
        .await
        .unwrap()
        .into_inner()
        .revision;

    assert!(
        created < revoked && revoked < renamed,
        "{created} {revoked} {renamed}"
    );
    assert_eq!(
        again, renamed,
        "a repeated revoke logs nothing: the log's position"
    );
    assert_eq!(
        unchanged, renamed,
        "an update that changes nothing logs nothing"
    );
    // The revisions are the sequences the watch stream shows for the changes.
    let mut stream = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: created,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the changes' events within 10 s")
            .unwrap()
            .expect("an event");
        if event.kind != "checkpoint" {
            seen.push((event.seq, event.kind, event.key_id));
        }
    }
    assert_eq!(
        seen,
        [
            (revoked, "revoked".to_owned(), first.id.clone()),
            (renamed, "renamed".to_owned(), second.id.clone()),
        ]
    );
    app.shutdown().await;
}

/// A revision ahead of everything this replica has applied (ahead of the
/// log itself, so no wait can reach it): Authenticate and CheckScope answer
/// UNAVAILABLE after the configured wait, and, not being a wrong key, it
/// counts toward no ban even when the key is wrong.
async fn a_revision_this_replica_has_not_reached_is_unavailable_and_no_failure(db: Db) {
    let mut config = test_config();
    config.feed.min_revision_wait = Duration::from_millis(100);
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:read"]).await;
    let ahead = latest_revision(&mut app).await + 1_000;

    let answer = authenticate_at(&mut app.keys, &secret, ahead).await;
    assert!(!answer.allowed);
    assert_eq!(reason(&answer), Reason::Unavailable);
    let by_id = app
        .keys
        .check_scope(proto::CheckScopeRequest {
            key_id: key.id.clone(),
            scopes: vec!["orders:read".into()],
            min_revision: ahead,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!by_id.allowed);
    assert_eq!(by_id.denial.unwrap().reason(), Reason::Unavailable);

    for _ in 0..15 {
        let answer = app
            .keys
            .authenticate(proto::AuthenticateRequest {
                credential: "cc_not_a_key_at_all_000000000000".into(),
                client_ip: "203.0.113.9".into(),
                min_revision: ahead,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reason(&answer), Reason::Unavailable);
    }
    let after = app
        .keys
        .authenticate(proto::AuthenticateRequest {
            credential: secret.clone(),
            client_ip: "203.0.113.9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(after.allowed, "the address was banned: {after:?}");
    // A revision already reached is no obstacle.
    let reached = latest_revision(&mut app).await;
    assert!(
        authenticate_at(&mut app.keys, &secret, reached)
            .await
            .allowed
    );
    app.shutdown().await;
}

async fn check_reads_the_revision_from_its_header(db: Db) {
    let mut config = config_from(
        r#"
        [[http.routes]]
        methods = ["GET"]
        path = "/orders"
        scopes = ["orders:read"]
        "#,
    );
    config.feed.min_revision_wait = Duration::from_millis(100);
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &["orders:read"]).await;
    let reached = latest_revision(&mut app).await;
    let mut envoy = Envoy::of(&app);

    let at = |revision: &str| {
        get("/orders")
            .bearer(&secret)
            .header("x-keyward-min-revision", revision)
            .build()
    };
    allowed(&envoy.check(at(&reached.to_string())).await);
    let ahead = denied(&envoy.check(at(&(reached + 1_000).to_string())).await);
    assert_eq!(ahead.status, 503, "{ahead:?}");
    let garbage = denied(&envoy.check(at("soon")).await);
    assert_eq!(garbage.status, 400, "{garbage:?}");
    app.shutdown().await;
}

async fn cacheable_marks_the_answers_a_caller_may_keep(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (_, plain) = app.create_key("acct_1", &["orders:read"]).await;
    let limited = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "limited".into(),
            scopes: vec!["orders:read".into()],
            rate_limit: Some(proto::RateLimit {
                requests: 100,
                per_seconds: 60,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;

    let kept = app.authenticate(&plain, &["orders:read"]).await;
    assert!(kept.allowed && kept.cacheable, "{kept:?}");
    let counted = app.authenticate(&limited, &["orders:read"]).await;
    assert!(counted.allowed && !counted.cacheable, "{counted:?}");
    let missing_scope = app.authenticate(&plain, &["orders:write"]).await;
    assert!(!missing_scope.allowed && !missing_scope.cacheable);
    let unknown = app.authenticate("cc_unknown", &[]).await;
    assert!(!unknown.cacheable);
    app.shutdown().await;
}

async fn record_usage_moves_last_used_at_forward_and_refuses_bad_reports(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, _) = app.create_key("acct_1", &[]).await;
    let (other, _) = app.create_key("acct_1", &[]).await;
    let at = |seconds: i64| Some(Timestamp { seconds, nanos: 0 });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let report = |uses: Vec<(String, Option<Timestamp>)>| proto::RecordUsageRequest {
        uses: uses
            .into_iter()
            .map(|(key_id, used_at)| proto::KeyUse { key_id, used_at })
            .collect(),
    };

    // Bad reports write nothing, not even their good entries.
    let too_late = now + 3_600;
    let refusals = [
        (
            report(vec![
                (key.id.clone(), at(now)),
                ("not an id".into(), at(now)),
            ]),
            "uses[1].key_id",
        ),
        (
            report(vec![
                (key.id.clone(), at(now)),
                (other.id.clone(), at(too_late)),
            ]),
            "uses[1].used_at",
        ),
        (
            report(vec![(
                key.id.clone(),
                Some(Timestamp {
                    seconds: now,
                    nanos: -1,
                }),
            )]),
            "uses[0].used_at",
        ),
        (report(vec![(key.id.clone(), at(now)); 10_001]), "uses"),
    ];
    for (request, field) in refusals {
        let status = app.keys.record_usage(request).await.unwrap_err();
        assert_invalid_argument(&status, field);
    }
    assert_eq!(stored_last_used_at(&app.database, &key.id).await, None);

    // A report is written at once; an older one never moves it back; an
    // unknown (well-formed) id is ignored.
    let unknown = keyward::domain::KeyId::generate().to_string();
    app.keys
        .record_usage(report(vec![
            (key.id.clone(), at(now - 10)),
            (unknown, at(now)),
        ]))
        .await
        .expect("RecordUsage");
    assert_eq!(
        stored_last_used_at(&app.database, &key.id).await,
        Some((now - 10) * 1000)
    );
    app.keys
        .record_usage(report(vec![(key.id.clone(), at(now - 100))]))
        .await
        .unwrap();
    assert_eq!(
        stored_last_used_at(&app.database, &key.id).await,
        Some((now - 10) * 1000)
    );
    // Unset means now.
    app.keys
        .record_usage(report(vec![(other.id.clone(), None)]))
        .await
        .unwrap();
    let stored = stored_last_used_at(&app.database, &other.id).await.unwrap();
    assert!((stored / 1000 - now).abs() <= 60, "{stored} vs {now}");
    app.shutdown().await;
}

async fn checkpoints_come_at_the_interval_a_stream_asks_for(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    for bad in [1, 99, 3_600_001] {
        let status = app
            .keys
            .watch_revocations(proto::WatchRevocationsRequest {
                checkpoint_interval_ms: bad,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid_argument(&status, "checkpoint_interval_ms");
    }
    // The server's own interval is 30 s: a stream asking for 200 ms gets
    // checkpoints that often, each dated by the replica's last proof of
    // being current (within the freshness bound of now).
    let mut stream = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest {
            checkpoint_interval_ms: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bound = test_config().feed.freshness_bound;
    for _ in 0..5 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a checkpoint within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(message.kind, "checkpoint");
        let at = message.at.unwrap();
        let age_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - (at.seconds * 1000 + i64::from(at.nanos / 1_000_000));
        assert!(
            (-100..=bound.as_millis() as i64 + 100).contains(&age_ms),
            "checkpoint dated {age_ms} ms ago"
        );
    }
    app.shutdown().await;
}

/// The guarantee: once RevokeKey has returned revision R on replica A,
/// `Authenticate{min_revision: R}` on replica B never answers "allowed" for
/// that key, however far behind B's feed is. B reaches PostgreSQL through a
/// proxy; its freshness bound is long, so without `min_revision` it keeps
/// answering from its cache while stalled (which is what the bound allows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_read_on_another_replica_is_never_answered_from_before_it() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let proxy = StallingProxy::start(server_address(&database.url)).await;
    let mut a = spawn_on(database.clone(), test_config()).await;
    let mut b_config = test_config();
    b_config.feed.freshness_bound = Duration::from_secs(20);
    // Polls far apart and its NOTIFY listener held: B learns of a change
    // only when a request that needs it nudges its follower.
    b_config.feed.poll_interval = Duration::from_secs(8);
    let b = Replica::start(proxy.url_for(&database.url), b_config).await;
    let mut b_keys = b.keys.clone();

    // A stall: B cannot read the log at all.
    let (key, secret) = a.create_key("acct_1", &[]).await;
    assert!(authenticate_at(&mut b_keys, &secret, 0).await.allowed);
    proxy.hold(Hold::All);
    let revision = revoke(&mut a, "acct_1", &key.id).await;
    let stale = authenticate_at(&mut b_keys, &secret, 0).await;
    assert!(
        stale.allowed,
        "B should still answer from its cache: {stale:?}"
    );
    let insisted = authenticate_at(&mut b_keys, &secret, revision).await;
    assert!(!insisted.allowed);
    assert_eq!(reason(&insisted), Reason::Unavailable);
    proxy.release();
    proxy.hold(Hold::Listener);
    let caught_up = eventually(Duration::from_secs(20), async || {
        reason(&authenticate_at(&mut b_keys, &secret, revision).await) == Reason::Revoked
    })
    .await;
    assert!(caught_up, "B never caught up after the stall");

    // No stall, but no NOTIFY either: each revision is applied on demand.
    let mut answers = 0;
    for round in 0..20 {
        let account = format!("acct_round_{round}");
        let (key, secret) = a.create_key(&account, &[]).await;
        assert!(authenticate_at(&mut b_keys, &secret, 0).await.allowed);
        let revision = revoke(&mut a, &account, &key.id).await;
        let answer = authenticate_at(&mut b_keys, &secret, revision).await;
        assert!(
            !answer.allowed,
            "round {round}: allowed after revision {revision}"
        );
        assert_eq!(reason(&answer), Reason::Revoked, "round {round}");
        answers += 1;
    }
    assert_eq!(answers, 20);
    drop(b);
    a.shutdown().await;
}

/// RecordUsage is a hot-path RPC: a service token needs it in its `rpcs`
/// (that user JWTs can never be given it is in `config_checks.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_usage_needs_a_token_allowed_it() {
    use keyward::access_control::token_sha256_hex;
    let text = format!(
        r#"
[[auth.service_tokens]]
name = "verifier"
sha256 = "{verifier}"
rpcs = ["Authenticate", "WatchRevocations", "RecordUsage"]

[[auth.service_tokens]]
name = "backend"
sha256 = "{backend}"
rpcs = ["Authenticate", "CheckScope"]

[[auth.service_tokens]]
name = "dashboard"
sha256 = "{dashboard}"
rpcs = ["CreateKey"]
"#,
        verifier = token_sha256_hex("verifier-token"),
        backend = token_sha256_hex("backend-token"),
        dashboard = token_sha256_hex("dashboard-token"),
    );
    let parsed = keyward::config::Config::parse(&text, "tokens.toml").expect("valid");
    let mut config = test_config();
    config.auth = parsed.auth;
    let Some(mut app) = spawn_app_with(Db::Sqlite, config).await else {
        return;
    };
    let bearer = |token: &str, key_id: &str| {
        let mut request = tonic::Request::new(proto::RecordUsageRequest {
            uses: vec![proto::KeyUse {
                key_id: key_id.into(),
                used_at: None,
            }],
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let created = app
        .keys
        .create_key(bearer_create("dashboard-token"))
        .await
        .expect("CreateKey")
        .into_inner();
    let key_id = created.key.unwrap().id;

    let anonymous = app
        .keys
        .record_usage(proto::RecordUsageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let backend = app
        .keys
        .record_usage(bearer("backend-token", &key_id))
        .await
        .unwrap_err();
    assert_eq!(backend.code(), Code::PermissionDenied, "{backend:?}");
    assert_eq!(stored_last_used_at(&app.database, &key_id).await, None);
    app.keys
        .record_usage(bearer("verifier-token", &key_id))
        .await
        .expect("the verifier's token may");
    assert!(stored_last_used_at(&app.database, &key_id).await.is_some());

    app.shutdown().await;
}

fn bearer_create(token: &str) -> tonic::Request<proto::CreateKeyRequest> {
    let mut request = tonic::Request::new(proto::CreateKeyRequest {
        account_id: "acct_1".into(),
        name: "k".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
