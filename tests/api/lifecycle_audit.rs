//! The audit trail (ListKeyEvents, `key_audit`): every management write
//! leaves its row, with the kind, the actor (`local`, `token:<name>`,
//! `jwt:<subject>`) and the peer, in the same transaction; pages, the key
//! filter and access; retention apart from the event log's; and no secret
//! or digest in the table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyward::access_control::token_sha256_hex;
use keyward::config::Config;
use keyward::proto;
use keyward::storage::{self, KeyStore, PoolSettings};
use serde_json::json;
use sha2::Digest as _;
use tonic::Code;

use crate::helpers::http_api::send;
use crate::helpers::{
    Db, TestApp, TestDatabase, assert_invalid_argument, eventually, spawn_app, spawn_app_with,
    spawn_on, test_config,
};
use crate::on_both_databases;

on_both_databases!(
    every_management_write_is_in_the_trail_oldest_first,
    pages_and_the_key_filter_walk_the_trail,
    the_trail_outlives_the_event_log_and_is_pruned_after_its_retention,
);

fn list(
    account: &str,
    key_id: &str,
    page_size: i32,
    page_token: &str,
) -> proto::ListKeyEventsRequest {
    proto::ListKeyEventsRequest {
        account_id: account.into(),
        key_id: key_id.into(),
        page_size,
        page_token: page_token.into(),
    }
}

async fn events(app: &mut TestApp, account: &str, key_id: &str) -> Vec<proto::KeyEvent> {
    app.keys
        .list_key_events(list(account, key_id, 0, ""))
        .await
        .expect("ListKeyEvents")
        .into_inner()
        .events
}

fn kinds(events: &[proto::KeyEvent]) -> Vec<&str> {
    events.iter().map(|event| event.kind.as_str()).collect()
}

async fn update(app: &mut TestApp, account: &str, key_id: &str, paths: &[&str]) {
    app.keys
        .update_key(proto::UpdateKeyRequest {
            account_id: account.into(),
            key_id: key_id.into(),
            name: "renamed".into(),
            scopes: vec!["orders:read".into(), "orders:write".into()],
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
            rate_limit: Some(proto::RateLimit {
                requests: 10,
                per_seconds: 60,
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateKey");
}

/// Every text in `key_audit`, column by column, read from the database.
async fn raw_audit_rows(database: &TestDatabase) -> Vec<String> {
    let query = "SELECT CAST(seq AS TEXT) || '|' || key_id || '|' || account_id || '|' || kind \
                 || '|' || CAST(at AS TEXT) || '|' || actor || '|' || peer FROM key_audit ORDER BY seq";
    match database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            sqlx::query_scalar(query).fetch_all(&pool).await.unwrap()
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            sqlx::query_scalar(query).fetch_all(&pool).await.unwrap()
        }
    }
}

async fn raw_audit_columns(database: &TestDatabase) -> Vec<String> {
    match database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            sqlx::query_scalar("SELECT name FROM pragma_table_info('key_audit') ORDER BY cid")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_name = 'key_audit' ORDER BY ordinal_position",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    }
}

async fn every_management_write_is_in_the_trail_oldest_first(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:read"]).await;
    update(
        &mut app,
        "acct_1",
        &key.id,
        &["scopes", "name", "rate_limit"],
    )
    .await;
    // Changing nothing logs nothing.
    update(&mut app, "acct_1", &key.id, &["name"]).await;
    app.revoke("acct_1", &key.id).await;
    // Revoking a revoked key changes nothing, so logs nothing.
    app.revoke("acct_1", &key.id).await;

    let trail = events(&mut app, "acct_1", "").await;
    assert_eq!(
        kinds(&trail),
        [
            "created",
            "scopes_changed",
            "rate_limit_changed",
            "renamed",
            "revoked"
        ]
    );
    for event in &trail {
        assert_eq!(event.key_id, key.id);
        assert_eq!(event.account_id, "acct_1");
        // Management is open (loopback): the actor is `local`.
        assert_eq!(event.actor, "local", "{event:?}");
        assert_eq!(event.peer, "127.0.0.1", "{event:?}");
        assert!(event.at.is_some());
    }
    assert!(trail.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    assert!(events(&mut app, "acct_2", "").await.is_empty());

    // Never a secret or a digest: no such column, and no such text.
    assert_eq!(
        raw_audit_columns(&app.database).await,
        ["seq", "key_id", "account_id", "kind", "at", "actor", "peer"]
    );
    let digest: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let body = secret.strip_prefix("cc_").unwrap();
    let rows = raw_audit_rows(&app.database).await;
    assert_eq!(rows.len(), 5);
    for row in rows {
        assert!(!row.contains(body), "{row}");
        assert!(!row.contains(&digest), "{row}");
    }
    app.shutdown().await;
}

async fn pages_and_the_key_filter_walk_the_trail(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (first, _) = app.create_key("acct_1", &["orders:read"]).await;
    let (second, _) = app.create_key("acct_1", &["orders:read"]).await;
    update(&mut app, "acct_1", &first.id, &["name"]).await;
    app.revoke("acct_1", &second.id).await;
    app.revoke("acct_1", &first.id).await;
    let (other, _) = app.create_key("acct_2", &["orders:read"]).await;

    let all = events(&mut app, "acct_1", "").await;
    assert_eq!(all.len(), 5);
    // Pages of two: 2 + 2 + 1, the same rows in the same order.
    let mut walked = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .keys
            .list_key_events(list("acct_1", "", 2, &token))
            .await
            .expect("a page")
            .into_inner();
        assert!(page.events.len() <= 2);
        walked.extend(page.events);
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(walked, all);

    // One key's rows only.
    let of_first = events(&mut app, "acct_1", &first.id).await;
    assert_eq!(kinds(&of_first), ["created", "renamed", "revoked"]);
    assert!(of_first.iter().all(|event| event.key_id == first.id));

    // Another account's key is not found, as everywhere in management.
    let status = app
        .keys
        .list_key_events(list("acct_1", &other.id, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Bad input names its field.
    for (request, field) in [
        (list("acct_1", "", -1, ""), "page_size"),
        (list("acct_1", "", 0, "not-a-token"), "page_token"),
        (list("", "", 0, ""), "account_id"),
        (list("acct_1", "bad id", 0, ""), "key_id"),
    ] {
        let status = app.keys.list_key_events(request).await.unwrap_err();
        assert_invalid_argument(&status, field);
    }
    // A ListKeys token is not a ListKeyEvents token.
    let keys_token = app
        .keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct_1".into(),
            include_revoked: true,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let status = app
        .keys
        .list_key_events(list("acct_1", "", 0, &keys_token))
        .await
        .unwrap_err();
    assert_invalid_argument(&status, "page_token");
    // Over the maximum is clamped, not refused.
    let clamped = app
        .keys
        .list_key_events(list("acct_1", "", 5_000, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clamped.events.len(), 5);
    app.shutdown().await;
}

async fn open_store(database: &TestDatabase) -> std::sync::Arc<dyn KeyStore> {
    storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .expect("store opens")
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn insert_old_audit_row(database: &TestDatabase, at: i64) {
    let statement = "INSERT INTO key_audit (key_id, account_id, kind, at, actor, peer) \
                     VALUES ('key_old', 'acct_1', 'created', $1, 'local', '127.0.0.1')";
    match database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            sqlx::query(statement)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            sqlx::query(statement)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

async fn the_trail_outlives_the_event_log_and_is_pruned_after_its_retention(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, _) = app.create_key("acct_1", &["orders:read"]).await;
    app.revoke("acct_1", &key.id).await;
    let store = open_store(&app.database).await;

    // The change feed prunes its whole log; the trail stays.
    let deleted = store
        .prune_events(keyward::domain::UnixMillis(now_millis() + 60_000))
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the revocation's event was in the log");
    assert!(store.events_after(0, 100).await.unwrap().is_empty());
    assert_eq!(
        kinds(&events(&mut app, "acct_1", "").await),
        ["created", "revoked"]
    );

    // A row older than the retention (a day, here) goes when a replica's
    // pruner runs (once at start, then daily); recent ones stay.
    let two_days = 2 * 24 * 3600 * 1000;
    insert_old_audit_row(&app.database, now_millis() - two_days).await;
    assert_eq!(raw_audit_rows(&app.database).await.len(), 3);
    let mut config = test_config();
    config.audit = Config::parse("[audit]\nretention_days = 1\n", "audit-test.toml")
        .unwrap()
        .audit;
    let replica = spawn_on(app.database.clone(), config).await;
    let pruned = eventually(Duration::from_secs(10), async || {
        raw_audit_rows(&app.database).await.len() == 2
    })
    .await;
    assert!(pruned, "{:?}", raw_audit_rows(&app.database).await);
    assert_eq!(
        kinds(&events(&mut app, "acct_1", "").await),
        ["created", "revoked"]
    );
    replica.shutdown().await;
    app.shutdown().await;
}

// Who the actor is, by credential.

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "keyward-test";
const DASHBOARD_TOKEN: &str = "kwt_audit_dashboard_token";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn jwt(account: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims =
        json!({"sub": account, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300});
    let private = std::fs::read(fixture("rs256-test-private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

/// A dashboard service token and user JWTs, both allowed ListKeyEvents,
/// and the HTTP API on a free loopback port.
fn config_with_credentials() -> Config {
    let text = format!(
        r#"
[auth]
hot_path_requires_token = false

[[auth.service_tokens]]
name = "dashboard"
sha256 = "{dashboard}"
rpcs = ["CreateKey", "RevokeKey", "UpdateKey", "GetKey", "ListKeys", "ListKeyEvents"]

[auth.jwt]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
public_key_files = ["{rs256}"]
rpcs = ["CreateKey", "RevokeKey", "UpdateKey", "GetKey", "ListKeys", "ListKeyEvents"]
"#,
        dashboard = token_sha256_hex(DASHBOARD_TOKEN),
        rs256 = fixture("rs256-test-public.pem"),
    );
    let parsed = Config::parse(&text, "audit-auth-test.toml").expect("valid test config");
    let mut config = test_config();
    config.auth = parsed.auth;
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn create(account: &str) -> proto::CreateKeyRequest {
    proto::CreateKeyRequest {
        account_id: account.into(),
        name: "bot".into(),
        scopes: vec!["orders:read".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_is_the_token_or_the_jwt_over_grpc_and_http() {
    let mut app = spawn_app_with(Db::Sqlite, config_with_credentials())
        .await
        .expect("SQLite always runs");
    let by_token = app
        .keys
        .create_key(bearer(create("acct_1"), DASHBOARD_TOKEN))
        .await
        .expect("the dashboard may create")
        .into_inner()
        .key
        .unwrap();
    let user = jwt("acct_1");
    app.keys
        .revoke_key(bearer(
            proto::RevokeKeyRequest {
                account_id: "acct_1".into(),
                key_id: by_token.id.clone(),
            },
            &user,
        ))
        .await
        .expect("the account's JWT may revoke");
    // Over the HTTP API, with the token naming the account.
    let reply = send(
        app.http_addr().unwrap(),
        "POST",
        "/v1/keys",
        &[
            ("authorization", &format!("Bearer {DASHBOARD_TOKEN}")),
            ("x-keyward-account", "acct_1"),
            ("content-type", "application/json"),
        ],
        r#"{ "name": "over-http", "scopes": ["orders:read"] }"#,
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");

    let trail = app
        .keys
        .list_key_events(bearer(list("acct_1", "", 0, ""), &user))
        .await
        .expect("a JWT lists its own account's trail")
        .into_inner()
        .events;
    let seen: Vec<(&str, &str, &str)> = trail
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_str(), e.peer.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("created", "token:dashboard", "127.0.0.1"),
            ("revoked", "jwt:acct_1", "127.0.0.1"),
            ("created", "token:dashboard", "127.0.0.1"),
        ]
    );

    // A JWT sees only its own account's trail.
    let status = app
        .keys
        .list_key_events(bearer(list("acct_2", "", 0, ""), &user))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // And the call needs a credential once management has any.
    let status = app
        .keys
        .list_key_events(list("acct_1", "", 0, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    app.shutdown().await;
}

/// Runs `keyward keys events ARGS --server <app>` (management open).
async fn cli_events(app: &TestApp, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["keys", "events"])
        .args(args)
        .args(["--server", &format!("http://{}", app.addr())])
        .env_remove("KEYWARD_TOKEN")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "keys events {args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_trail_oldest_first() {
    let mut app = spawn_app(Db::Sqlite).await.expect("SQLite always runs");
    let (first, _) = app.create_key("acct_1", &["orders:read"]).await;
    let (second, _) = app.create_key("acct_1", &["orders:read"]).await;
    app.revoke("acct_1", &first.id).await;

    let table = cli_events(&app, &["--account", "acct_1"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SEQ  AT"), "{table}");
    assert!(
        lines[0].contains("KIND") && lines[0].contains("PEER"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    for (line, (kind, key)) in lines[1..].iter().zip([
        ("created", &first.id),
        ("created", &second.id),
        ("revoked", &first.id),
    ]) {
        assert!(
            line.contains(kind) && line.contains(key.as_str()) && line.contains("local"),
            "{table}"
        );
        assert!(line.trim_end().ends_with("127.0.0.1"), "{table}");
    }

    let json = cli_events(&app, &["--account", "acct_1", &first.id, "--json"]).await;
    let events: serde_json::Value = serde_json::from_str(&json).unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "revoked"]);
    assert_eq!(events[0]["actor"], "local");
    assert_eq!(events[0]["peer"], "127.0.0.1");
    assert!(events[0]["at"].is_string());

    let none = cli_events(&app, &["--account", "acct_empty"]).await;
    assert!(none.contains("(no events)"), "{none}");
    app.shutdown().await;
}
