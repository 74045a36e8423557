//! The key-management HTTP API (`--http-listen`, `[management_api]`): the
//! real server on port 0, real HTTP/1.1 requests, JWTs signed by a test key,
//! and the hot path checked over gRPC afterwards.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyward::access_control::token_sha256_hex;
use keyward::config::Config;
use keyward::proto;
use serde_json::json;

use crate::helpers::http_api::{HttpReply, send};
use crate::helpers::{Db, TestApp, reason, spawn_app_with, test_config};

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "keyward-test";
const DASHBOARD_TOKEN: &str = "kwt_http_dashboard_token";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A user JWT for `account`, living from `iat` to `exp` (Unix seconds).
fn jwt_for(account: &str, iat: i64, exp: i64, audience: &str) -> String {
    let claims = json!({"sub": account, "iss": ISSUER, "aud": audience, "iat": iat, "exp": exp});
    let private = std::fs::read(fixture("rs256-test-private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

fn jwt(account: &str) -> String {
    jwt_for(account, now(), now() + 300, AUDIENCE)
}

/// The test config with user JWTs and a dashboard service token, the HTTP
/// API on a free loopback port, shaped by `management_api` (TOML lines of
/// the `[management_api]` table and below).
fn config(management_api: &str) -> Config {
    let text = format!(
        r#"
[auth]
# The hot path is checked over gRPC here without a token.
hot_path_requires_token = false

[[auth.service_tokens]]
name = "dashboard"
sha256 = "{dashboard}"
rpcs = ["CreateKey", "RevokeKey", "UpdateKey", "GetKey", "ListKeys", "RotateKey"]

[auth.jwt]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
public_key_files = ["{rs256}"]
rpcs = ["CreateKey", "RevokeKey", "UpdateKey", "GetKey", "ListKeys", "RotateKey"]

[management_api]
{management_api}
"#,
        dashboard = token_sha256_hex(DASHBOARD_TOKEN),
        rs256 = fixture("rs256-test-public.pem"),
    );
    let parsed = Config::parse(&text, "http-api-test.toml").expect("valid test config");
    let mut config = test_config();
    config.auth = parsed.auth;
    config.management_api = parsed.management_api;
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// CryptoRobot's documented shape: `POST /keys` answering exactly
/// `_id, name, key, scopes, lastUsed, createdAt`.
const CRYPTOROBOT_SHAPE: &str = r#"
create = "POST /keys"
list = "GET /keys"
revoke = "DELETE /keys/{key_id}"
get = ""
update = ""
scopes = ""
[management_api.fields]
id = "_id"
secret = "key"
last_used_at = "lastUsed"
created_at = "createdAt"
start = ""
preset = ""
expires_at = ""
revoked_at = ""
"#;

async fn app(management_api: &str) -> TestApp {
    spawn_app_with(Db::Sqlite, config(management_api))
        .await
        .expect("SQLite always runs")
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> HttpReply {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    send(
        app.http_addr().expect("HTTP API on"),
        method,
        path,
        &headers,
        body,
    )
    .await
}

async fn authenticate(app: &mut TestApp, secret: &str) -> proto::AuthenticateResponse {
    app.keys
        .authenticate(proto::AuthenticateRequest {
            credential: format!("ApiKey {secret}"),
            ..Default::default()
        })
        .await
        .expect("Authenticate")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_over_http_works_until_deleted_over_http() {
    let mut app = app(CRYPTOROBOT_SHAPE).await;
    let user = jwt("user_1");
    let created = call(
        &app,
        "POST",
        "/keys",
        Some(&user),
        r#"{"name": "My Trading Bot", "scopes": ["orders:read", "portfolio:read"]}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let body = created.json();
    let fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        ["_id", "name", "key", "scopes", "lastUsed", "createdAt"]
    );
    assert_eq!(body["lastUsed"], serde_json::Value::Null);
    assert_eq!(body["name"], "My Trading Bot");
    let created_at = body["createdAt"].as_str().unwrap();
    assert!(
        created_at.len() == 20 && created_at.ends_with('Z'),
        "RFC 3339 UTC to the second: {created_at}"
    );
    let secret = body["key"].as_str().unwrap().to_owned();
    let id = body["_id"].as_str().unwrap().to_owned();
    assert!(authenticate(&mut app, &secret).await.allowed);

    let listed = call(&app, "GET", "/keys", Some(&user), "").await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let keys = listed.json();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(
        keys[0].get("key").is_none(),
        "the secret is shown once: {keys}"
    );
    assert!(!listed.body.contains(&secret));

    let deleted = call(&app, "DELETE", &format!("/keys/{id}"), Some(&user), "").await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    let denied = authenticate(&mut app, &secret).await;
    assert!(!denied.allowed);
    assert_eq!(reason(&denied), proto::denial::Reason::Revoked);

    // Writes carry their revision (reads do not), for read-your-writes on
    // any replica: the revocation's is ahead of the creation's.
    let revision = |reply: &HttpReply| -> Option<u64> {
        reply
            .headers
            .get("x-keyward-revision")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    };
    let (created_at, revoked_at) = (revision(&created).unwrap(), revision(&deleted).unwrap());
    assert!(revoked_at > created_at, "{created_at} then {revoked_at}");
    assert_eq!(revision(&listed), None);
    let answer = app
        .keys
        .authenticate(proto::AuthenticateRequest {
            credential: format!("ApiKey {secret}"),
            min_revision: revoked_at,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&answer), proto::denial::Reason::Revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_credential_get_401_and_change_nothing() {
    let app = app(CRYPTOROBOT_SHAPE).await;
    let body = r#"{"name": "bot", "scopes": []}"#;
    let cases = [
        ("no credential", None),
        ("garbage", Some("not-a-token".to_owned())),
        (
            "expired",
            Some(jwt_for("user_1", now() - 900, now() - 600, AUDIENCE)),
        ),
        (
            "wrong audience",
            Some(jwt_for("user_1", now(), now() + 300, "someone-else")),
        ),
    ];
    for (case, token) in cases {
        let reply = call(&app, "POST", "/keys", token.as_deref(), body).await;
        assert_eq!(reply.status, 401, "{case}: {reply:?}");
        assert_eq!(
            reply.json()["error"]["code"],
            "unauthorized",
            "{case}: {reply:?}"
        );
    }
    let listed = call(&app, "GET", "/keys", Some(&jwt("user_1")), "").await;
    assert_eq!(listed.json(), json!([]), "a refused create wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_key_is_404_and_stays_live() {
    let mut app = app(CRYPTOROBOT_SHAPE).await;
    let owner = jwt("owner");
    let created = call(
        &app,
        "POST",
        "/keys",
        Some(&owner),
        r#"{"name": "k", "scopes": []}"#,
    )
    .await;
    let id = created.json()["_id"].as_str().unwrap().to_owned();
    let secret = created.json()["key"].as_str().unwrap().to_owned();
    let stranger = jwt("stranger");
    let reply = call(&app, "DELETE", &format!("/keys/{id}"), Some(&stranger), "").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(
        authenticate(&mut app, &secret).await.allowed,
        "the key still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_400_naming_the_field_and_write_nothing() {
    let app = app(CRYPTOROBOT_SHAPE).await;
    let user = jwt("user_1");
    let cases = [
        ("{", "body"),
        ("[]", "body"),
        (r#"{"scopes": []}"#, "name"),
        (r#"{"name": 7}"#, "name"),
        (r#"{"name": "", "scopes": []}"#, "name"),
        (r#"{"name": "k", "scopes": "orders:read"}"#, "scopes"),
        (r#"{"name": "k", "scopes": [1]}"#, "scopes[0]"),
        (r#"{"name": "k", "scopes": ["orders:admin"]}"#, "scopes"),
        (
            r#"{"name": "k", "expiresAt": "2030-01-01T00:00:00Z"}"#,
            "expiresAt",
        ),
        (r#"{"name": "k", "_id": "key_x"}"#, "_id"),
    ];
    for (body, field) in cases {
        let reply = call(&app, "POST", "/keys", Some(&user), body).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.starts_with(&format!("{field}: ")),
            "{body}: {message}"
        );
    }
    let listed = call(&app, "GET", "/keys", Some(&user), "").await;
    assert_eq!(listed.json(), json!([]), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_as_levels_and_a_service_token_naming_the_account() {
    let mut app = app("scopes_shape = \"levels\"\n[management_api.fields]\nsecret = \"key\"").await;
    let reply = send(
        app.http_addr().unwrap(),
        "POST",
        "/v1/keys",
        &[
            ("authorization", &format!("Bearer {DASHBOARD_TOKEN}")),
            ("x-keyward-account", "acct_7"),
        ],
        r#"{ "name": "my-bot", "scopes": { "portfolio": "read", "traders": "none" } }"#,
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["scopes"], json!({"portfolio": "read"}));
    let secret = body["key"].as_str().unwrap().to_owned();
    let allowed = authenticate(&mut app, &secret).await;
    assert!(allowed.allowed);
    assert_eq!(allowed.key.unwrap().account_id, "acct_7");

    // Without the header a service token names no account.
    let reply = send(
        app.http_addr().unwrap(),
        "GET",
        "/v1/keys",
        &[("authorization", &format!("Bearer {DASHBOARD_TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("x-keyward-account"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_configured_origins_pass_the_cors_preflight_and_others_do_not() {
    let app = app("cors_allowed_origins = [\"https://app.example.com\"]").await;
    let preflight = |origin: &'static str| {
        let addr = app.http_addr().unwrap();
        async move {
            send(
                addr,
                "OPTIONS",
                "/v1/keys",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                "",
            )
            .await
        }
    };
    let allowed = preflight("https://app.example.com").await;
    assert_eq!(
        allowed
            .headers
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://app.example.com"),
        "{allowed:?}"
    );
    let methods = allowed.headers["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let other = preflight("https://evil.example").await;
    assert!(
        other.headers.get("access-control-allow-origin").is_none(),
        "{other:?}"
    );

    // Without configured origins no CORS header is ever sent.
    let closed = self::app("").await;
    let reply = send(
        closed.http_addr().unwrap(),
        "OPTIONS",
        "/v1/keys",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert!(
        reply.headers.get("access-control-allow-origin").is_none(),
        "{reply:?}"
    );
}

/// keyward's rotate route (`POST /v1/keys/{key_id}/rotate` unless the
/// profile moves it): the successor with its secret once, the old key
/// kept for the grace period asked for, or revoked at once; bad bodies are
/// 400 naming the field, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_over_http_shows_the_new_secret_once_and_retires_the_old_key() {
    let mut app = app("").await;
    let user = jwt("user_1");
    let created = call(
        &app,
        "POST",
        "/v1/keys",
        Some(&user),
        r#"{"name": "deploy bot", "scopes": ["orders:read"]}"#,
    )
    .await
    .json();
    let (old_id, old_secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let rotate_path = format!("/v1/keys/{old_id}/rotate");

    let too_long = format!(
        r#"{{"grace_period_seconds": {}}}"#,
        test_config().max_rotation_grace.as_secs() + 1
    );
    for (body, field) in [
        ("{", "body"),
        ("[]", "body"),
        (r#"{"grace": 60}"#, "grace"),
        (r#"{"grace_period_seconds": -1}"#, "grace_period_seconds"),
        (r#"{"grace_period_seconds": 1.5}"#, "grace_period_seconds"),
        (r#"{"grace_period_seconds": "60"}"#, "grace_period_seconds"),
        (too_long.as_str(), "grace_period_seconds"),
    ] {
        let reply = call(&app, "POST", &rotate_path, Some(&user), body).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.starts_with(&format!("{field}: ")),
            "{body}: {message}"
        );
    }
    let listed = call(&app, "GET", "/v1/keys", Some(&user), "").await.json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "nothing was written: {listed}"
    );
    assert!(authenticate(&mut app, &old_secret).await.allowed);

    // With an hour's grace: both keys work; the new one is shown once.
    let rotated = call(
        &app,
        "POST",
        &rotate_path,
        Some(&user),
        r#"{"grace_period_seconds": 3600}"#,
    )
    .await;
    assert_eq!(rotated.status, 201, "{rotated:?}");
    assert!(rotated.headers.contains_key("x-keyward-revision"));
    let successor = rotated.json();
    let new_secret = successor["secret"].as_str().unwrap().to_owned();
    assert_ne!(successor["id"], created["id"]);
    assert_eq!(successor["name"], "deploy bot");
    assert_eq!(successor["scopes"], json!(["orders:read"]));
    assert!(authenticate(&mut app, &new_secret).await.allowed);
    assert!(
        authenticate(&mut app, &old_secret).await.allowed,
        "within its grace"
    );
    let listed = call(&app, "GET", "/v1/keys", Some(&user), "").await;
    assert!(!listed.body.contains(&new_secret), "shown once");

    // A key is rotated once; another account's key is 404.
    let again = call(&app, "POST", &rotate_path, Some(&user), "").await;
    assert_eq!(again.status, 409, "{again:?}");
    let new_id = successor["id"].as_str().unwrap();
    let stranger = call(
        &app,
        "POST",
        &format!("/v1/keys/{new_id}/rotate"),
        Some(&jwt("user_2")),
        "",
    )
    .await;
    assert_eq!(stranger.status, 404, "{stranger:?}");

    // No body: the old key is revoked at once.
    let at_once = call(
        &app,
        "POST",
        &format!("/v1/keys/{new_id}/rotate"),
        Some(&user),
        "",
    )
    .await;
    assert_eq!(at_once.status, 201, "{at_once:?}");
    let refused = authenticate(&mut app, &new_secret).await;
    assert!(!refused.allowed, "{refused:?}");
    let newest = at_once.json()["secret"].as_str().unwrap().to_owned();
    assert!(authenticate(&mut app, &newest).await.allowed);
}
