//! CryptoRobot on `profiles/cryptorobot.toml`: one test per
//! statement the document makes about keys, scopes and errors, through
//! keyward.v1.KeyService (what CryptoRobot's `/keys` endpoints call) and the
//! ext_authz Check (what Envoy in front of api.cryptorobot.ai sends); a
//! backend asking keyward directly (Authenticate, CheckScope) gets the same
//! codes, messages, statuses and required scopes. The README's "Products"
//! table maps each statement to its test.

use std::time::Duration;

use keyward::config::Config;
use keyward::proto;
use serde_json::{Value, json};

use crate::helpers::envoy::{
    Envoy, HttpCall, allowed, assert_same_denial, call, check_scope, commented_example, denied,
    get, profile, upstream_headers,
};
use crate::helpers::{
    Db, TestApp, assert_shown_once_and_stored_as_sha256, eventually, spawn_app_with,
};
use crate::on_both_databases;

on_both_databases!(
    cryptorobot_keys_start_cr_live_and_are_shown_once_and_stored_as_sha256,
    cryptorobot_revoking_a_key_is_immediate_and_then_401,
    cryptorobot_last_used_shows_which_keys_are_unused,
);

const PREFIX: &str = "cr_live_";
const ACCOUNT: &str = "cryptorobot_user_1";

fn cryptorobot() -> Config {
    profile("cryptorobot")
}

/// `Authorization: ApiKey <key>`, as the document sends it.
fn with_key(request: HttpCall, secret: &str) -> HttpCall {
    request.header("authorization", &format!("ApiKey {secret}"))
}

fn unauthorized() -> Value {
    json!({"error": {"code": "unauthorized", "message": "Invalid or missing API key."}})
}

fn forbidden(required_scope: &str) -> Value {
    json!({"error": {"code": "forbidden", "message": "This API key does not have the required scope.",
                     "details": {"required_scope": required_scope}}})
}

async fn create(app: &mut TestApp, request: proto::CreateKeyRequest) -> (proto::Key, String) {
    let created = app
        .keys
        .create_key(request)
        .await
        .expect("CreateKey")
        .into_inner();
    (created.key.expect("key"), created.secret)
}

/// "Creating an API Key" and its response: the key (`cr_live_...`) is
/// returned with its id, name, scopes, `lastUsed: null` and `createdAt`;
/// "The full API key (key field) is only returned once at creation time ...
/// it cannot be retrieved again"; "Unlike JWT tokens, API keys don't expire
/// automatically"; "Use descriptive names". The body after `cr_live_` is
/// our choice (64 lowercase hex; the document elides it).
async fn cryptorobot_keys_start_cr_live_and_are_shown_once_and_stored_as_sha256(db: Db) {
    let Some(mut app) = spawn_app_with(db, cryptorobot()).await else {
        return;
    };
    let (key, secret) = create(
        &mut app,
        proto::CreateKeyRequest {
            account_id: ACCOUNT.into(),
            name: "My Trading Bot".into(),
            scopes: vec![
                "read:strategies".into(),
                "read:exchanges".into(),
                "write:traders".into(),
            ],
            ..Default::default()
        },
    )
    .await;

    let body = secret.strip_prefix(PREFIX).expect("cr_live_ prefix");
    assert_eq!(body.len(), 64, "{secret}");
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{secret}"
    );
    assert!(key.id.starts_with("key_"));
    assert_eq!(key.name, "My Trading Bot");
    assert_eq!(
        key.scopes,
        ["read:strategies", "read:exchanges", "write:traders"]
    );
    assert!(key.last_used_at.is_none(), "lastUsed: null");
    assert!(key.created_at.is_some());
    assert!(key.expires_at.is_none(), "no automatic expiry");
    assert_shown_once_and_stored_as_sha256(&mut app, &key, &secret, PREFIX).await;
    app.shutdown().await;
}

/// "Include the key in the Authorization header with the ApiKey prefix."
/// Without the prefix it is no key (`http.require_scheme`), and `Bearer`
/// carries the user's JWT on this API, not a key.
#[tokio::test]
async fn cryptorobot_key_is_sent_as_authorization_apikey() {
    let mut app = spawn_app_with(Db::Sqlite, cryptorobot()).await.unwrap();
    let (key, secret) = app.create_key(ACCOUNT, &["read:strategies"]).await;
    let mut envoy = Envoy::of(&app);

    let response = envoy
        .check(with_key(get("/strategies"), &secret).build())
        .await;
    let ok = allowed(&response);
    assert_eq!(upstream_headers(ok)["x-keyward-key-id"], key.id);
    assert_eq!(ok.headers_to_remove, ["authorization"]);

    // `Bearer` carries the user's JWT on this API, not a key.
    let bearer = denied(
        &envoy
            .check(get("/strategies").bearer(&secret).build())
            .await,
    );
    assert_eq!((bearer.status, &bearer.body), (401, &unauthorized()));
    let bare = denied(
        &envoy
            .check(get("/strategies").header("authorization", &secret).build())
            .await,
    );
    assert_eq!((bare.status, &bare.body), (401, &unauthorized()));
    let anonymous = denied(&envoy.check(get("/strategies").build()).await);
    assert_eq!((anonymous.status, &anonymous.body), (401, &unauthorized()));
    assert_eq!(anonymous.headers["www-authenticate"], "ApiKey");

    // A backend asking keyward directly sends the header's value.
    let direct = app
        .authenticate(&format!("ApiKey {secret}"), &["read:strategies"])
        .await;
    assert!(direct.allowed, "{direct:?}");
    for credential in [format!("Bearer {secret}"), String::new()] {
        let direct = app.authenticate(&credential, &["read:strategies"]).await;
        assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");
    }
    app.shutdown().await;
}

/// "Available Scopes", and the routes they open: GET on a resource needs
/// `read:<resource>`; POST, PUT, PATCH and DELETE need `write:<resource>`
/// where the table has one. Portfolio and insights have no write scope, so
/// no key writes there.
#[tokio::test]
async fn cryptorobot_each_scope_opens_exactly_its_resource() {
    let mut app = spawn_app_with(Db::Sqlite, cryptorobot()).await.unwrap();
    let mut envoy = Envoy::of(&app);
    let cases = [
        ("GET", "/strategies", "read:strategies"),
        ("GET", "/strategies/templates", "read:strategies"),
        ("GET", "/strategies/indicators/rsi", "read:strategies"),
        ("POST", "/strategies", "write:strategies"),
        ("PUT", "/strategies/s1", "write:strategies"),
        ("PATCH", "/strategies/s1", "write:strategies"),
        ("DELETE", "/strategies/s1", "write:strategies"),
        ("GET", "/exchanges", "read:exchanges"),
        ("GET", "/exchanges/binance/balances", "read:exchanges"),
        ("POST", "/exchanges", "write:exchanges"),
        ("DELETE", "/exchanges/binance", "write:exchanges"),
        ("GET", "/traders", "read:traders"),
        ("GET", "/traders/t1/pod", "read:traders"),
        ("POST", "/traders", "write:traders"),
        ("POST", "/traders/t1/start", "write:traders"),
        ("POST", "/traders/t1/stop", "write:traders"),
        ("GET", "/portfolio", "read:portfolio"),
        ("GET", "/portfolio/snapshots", "read:portfolio"),
        ("GET", "/insights", "read:insights"),
        ("GET", "/insights/signals", "read:insights"),
        ("GET", "/models", "read:models"),
        ("GET", "/models/m1/subscriptions", "read:models"),
        ("POST", "/models/m1/subscribe", "write:models"),
        ("DELETE", "/models/m1/subscription", "write:models"),
    ];
    for (method, target, scope) in cases {
        let (key, secret) = app.create_key(ACCOUNT, &[scope]).await;
        let response = envoy
            .check(with_key(call(method, target), &secret).build())
            .await;
        assert_eq!(
            upstream_headers(allowed(&response))["x-keyward-scopes"],
            scope,
            "{method} {target}"
        );
        app.revoke(ACCOUNT, &key.id).await;
    }

    // Every other scope of the catalog is refused, naming the one needed.
    let (_, everything_else) = app
        .create_key(ACCOUNT, &["read:insights", "read:models", "write:models"])
        .await;
    for (method, target, scope) in [
        ("GET", "/strategies", "read:strategies"),
        ("POST", "/traders", "write:traders"),
        ("GET", "/portfolio", "read:portfolio"),
    ] {
        let refused = denied(
            &envoy
                .check(with_key(call(method, target), &everything_else).build())
                .await,
        );
        assert_eq!(
            (refused.status, &refused.body),
            (403, &forbidden(scope)),
            "{method} {target}"
        );
        let direct = app
            .authenticate(&format!("ApiKey {everything_else}"), &[scope])
            .await;
        assert_same_denial(direct.denial.as_ref(), 403, &forbidden(scope), scope);
    }

    // No write scope for portfolio and insights: no route, for any key.
    let mut all: Vec<&str> = cases.iter().map(|(_, _, scope)| *scope).collect();
    all.sort_unstable();
    all.dedup();
    let (_, every_scope) = app.create_key(ACCOUNT, &all).await;
    for (method, target) in [
        ("POST", "/portfolio"),
        ("DELETE", "/insights/i1"),
        ("GET", "/account"),
    ] {
        let refused = denied(
            &envoy
                .check(with_key(call(method, target), &every_scope).build())
                .await,
        );
        assert_eq!(refused.status, 404, "{method} {target}");
        assert_eq!(
            refused.body,
            json!({"error": {"code": "not_found", "message": "No such endpoint."}})
        );
    }
    app.shutdown().await;
}

/// The document never says a write scope implies its read scope (its own
/// example grants write:traders alone), so a key holds exactly what it was
/// granted.
#[tokio::test]
async fn cryptorobot_write_scopes_do_not_imply_read() {
    let mut app = spawn_app_with(Db::Sqlite, cryptorobot()).await.unwrap();
    let (key, secret) = app.create_key(ACCOUNT, &["write:traders"]).await;
    assert_eq!(key.effective_scopes, ["write:traders"]);
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(with_key(call("POST", "/traders/t1/start"), &secret).build())
            .await,
    );
    let refused = denied(
        &envoy
            .check(with_key(get("/traders"), &secret).build())
            .await,
    );
    assert_eq!(
        (refused.status, &refused.body),
        (403, &forbidden("read:traders"))
    );
    let credential = format!("ApiKey {secret}");
    assert!(
        check_scope(&mut app, &credential, &["write:traders"])
            .await
            .allowed
    );
    let direct = check_scope(&mut app, &credential, &["read:traders"]).await;
    assert_eq!(direct.missing_scopes, ["read:traders"]);
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &forbidden("read:traders"),
        "read:traders",
    );
    app.shutdown().await;
}

/// "The restricted endpoint validates that your API key has the required
/// scope for the requested resource": `/restricted?resource=strategies`
/// needs read:strategies.
#[tokio::test]
async fn cryptorobot_restricted_endpoint_needs_read_of_the_requested_resource() {
    let mut app = spawn_app_with(Db::Sqlite, cryptorobot()).await.unwrap();
    let (_, secret) = app
        .create_key(ACCOUNT, &["read:strategies", "write:exchanges"])
        .await;
    let mut envoy = Envoy::of(&app);

    allowed(
        &envoy
            .check(with_key(get("/restricted?resource=strategies"), &secret).build())
            .await,
    );
    for (resource, required) in [
        ("exchanges", "read:exchanges"),
        ("portfolio", "read:portfolio"),
        // Not a resource of the catalog: no key can hold it.
        ("wallets", "read:wallets"),
    ] {
        let refused = denied(
            &envoy
                .check(with_key(get(&format!("/restricted?resource={resource}")), &secret).build())
                .await,
        );
        assert_eq!(
            (refused.status, &refused.body),
            (403, &forbidden(required)),
            "{resource}"
        );
        if resource != "wallets" {
            // A backend checking the resource's scope itself.
            let direct = app
                .authenticate(&format!("ApiKey {secret}"), &[required])
                .await;
            assert_same_denial(direct.denial.as_ref(), 403, &forbidden(required), required);
        }
    }
    let anonymous = denied(
        &envoy
            .check(get("/restricted?resource=strategies").build())
            .await,
    );
    assert_eq!((anonymous.status, &anonymous.body), (401, &unauthorized()));
    app.shutdown().await;
}

/// "Revoking an API key is immediate. Any requests using that key will
/// receive a 401 error."
async fn cryptorobot_revoking_a_key_is_immediate_and_then_401(db: Db) {
    let Some(mut app) = spawn_app_with(db, cryptorobot()).await else {
        return;
    };
    let (key, secret) = app.create_key(ACCOUNT, &["read:strategies"]).await;
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(with_key(get("/strategies"), &secret).build())
            .await,
    );

    let revoked = app.revoke(ACCOUNT, &key.id).await;
    assert!(revoked.revoked_at.is_some());

    let refused = denied(
        &envoy
            .check(with_key(get("/strategies"), &secret).build())
            .await,
    );
    assert_eq!((refused.status, &refused.body), (401, &unauthorized()));
    let direct = app.authenticate(&format!("ApiKey {secret}"), &[]).await;
    assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");
    app.shutdown().await;
}

/// "Rotate keys periodically: Create a new key, update your integration,
/// then revoke the old key."
#[tokio::test]
async fn cryptorobot_rotating_a_key_keeps_the_integration_working() {
    let mut app = spawn_app_with(Db::Sqlite, cryptorobot()).await.unwrap();
    let (old, old_secret) = app.create_key(ACCOUNT, &["read:portfolio"]).await;
    let mut envoy = Envoy::of(&app);

    let (_, new_secret) = app.create_key(ACCOUNT, &["read:portfolio"]).await;
    for secret in [&old_secret, &new_secret] {
        allowed(
            &envoy
                .check(with_key(get("/portfolio"), secret).build())
                .await,
        );
    }
    app.revoke(ACCOUNT, &old.id).await;
    assert_eq!(
        denied(
            &envoy
                .check(with_key(get("/portfolio"), &old_secret).build())
                .await
        )
        .status,
        401
    );
    allowed(
        &envoy
            .check(with_key(get("/portfolio"), &new_secret).build())
            .await,
    );
    app.shutdown().await;
}

/// "Monitor usage: Check the lastUsed field to identify unused keys that
/// should be revoked." Uses through Envoy are recorded; unused keys stay
/// without one.
async fn cryptorobot_last_used_shows_which_keys_are_unused(db: Db) {
    let Some(mut app) = spawn_app_with(db, cryptorobot()).await else {
        return;
    };
    let (used, secret) = app.create_key(ACCOUNT, &["read:insights"]).await;
    let (unused, _) = app.create_key(ACCOUNT, &["read:insights"]).await;
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(with_key(get("/insights"), &secret).build())
            .await,
    );

    let list = async |app: &mut TestApp| {
        app.keys
            .list_keys(proto::ListKeysRequest {
                account_id: ACCOUNT.into(),
                ..Default::default()
            })
            .await
            .expect("ListKeys")
            .into_inner()
            .keys
    };
    let recorded = eventually(Duration::from_secs(5), async || {
        list(&mut app)
            .await
            .iter()
            .any(|k| k.id == used.id && k.last_used_at.is_some())
    })
    .await;
    assert!(recorded, "the use reached lastUsed");
    let keys = list(&mut app).await;
    let last_used = |id: &str| keys.iter().find(|k| k.id == id).unwrap().last_used_at;
    let at = std::time::SystemTime::try_from(last_used(&used.id).unwrap()).unwrap();
    assert!(at >= before);
    assert_eq!(
        last_used(&unused.id),
        None,
        "never used: a revocation candidate"
    );
    app.shutdown().await;
}

/// "A monitoring dashboard only needs read:* scopes." The profile names
/// that advice as the preset `read-only`.
#[tokio::test]
async fn cryptorobot_read_only_preset_grants_every_read_scope_and_no_write() {
    let mut app = spawn_app_with(Db::Sqlite, cryptorobot()).await.unwrap();
    let (key, secret) = create(
        &mut app,
        proto::CreateKeyRequest {
            account_id: ACCOUNT.into(),
            name: "Portfolio Dashboard".into(),
            preset: "read-only".into(),
            ..Default::default()
        },
    )
    .await;
    let reads = [
        "read:strategies",
        "read:exchanges",
        "read:traders",
        "read:portfolio",
        "read:insights",
        "read:models",
    ];
    assert_eq!(key.scopes, reads);
    let mut envoy = Envoy::of(&app);
    for resource in [
        "strategies",
        "exchanges",
        "traders",
        "portfolio",
        "insights",
        "models",
    ] {
        allowed(
            &envoy
                .check(with_key(get(&format!("/{resource}")), &secret).build())
                .await,
        );
    }
    let refused = denied(
        &envoy
            .check(with_key(call("POST", "/traders"), &secret).build())
            .await,
    );
    assert_eq!(refused.body, forbidden("write:traders"));
    let direct = app
        .authenticate(&format!("ApiKey {secret}"), &["write:traders"])
        .await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &forbidden("write:traders"),
        "write:traders",
    );
    app.shutdown().await;
}

/// "Available Scopes": the live catalog holds exactly the ten scopes of the
/// table, none implying another and none granted to every key.
#[tokio::test]
async fn cryptorobot_catalog_lists_the_ten_documented_scopes() {
    let mut app = spawn_app_with(Db::Sqlite, cryptorobot()).await.unwrap();
    let catalog = app
        .keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = catalog.scopes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "read:strategies",
            "write:strategies",
            "read:exchanges",
            "write:exchanges",
            "read:traders",
            "write:traders",
            "read:portfolio",
            "read:insights",
            "read:models",
            "write:models",
        ]
    );
    assert!(
        catalog
            .scopes
            .iter()
            .all(|s| s.implies.is_empty() && !s.auto_grant && !s.reserved)
    );
    assert_eq!(catalog.key_prefix, PREFIX);
    let unknown = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: ACCOUNT.into(),
            name: "x".into(),
            scopes: vec!["write:portfolio".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    crate::helpers::assert_invalid_argument(&unknown, "scopes");
    app.shutdown().await;
}

/// Key management ("curl -X POST https://api.cryptorobot.ai/keys -H
/// 'Authorization: Bearer eyJ...'", list, revoke) carries the user's JWT.
/// keyward's ext_authz does not verify JWTs (not yet), so the profile makes
/// these routes public: the JWT reaches the upstream untouched, and an API
/// key sent there by mistake does not.
#[tokio::test]
async fn cryptorobot_key_management_routes_pass_the_users_jwt_to_the_upstream() {
    let mut app = spawn_app_with(Db::Sqlite, cryptorobot()).await.unwrap();
    let (_, secret) = app.create_key(ACCOUNT, &[]).await;
    let mut envoy = Envoy::of(&app);
    for (method, target) in [
        ("POST", "/keys"),
        ("GET", "/keys"),
        ("DELETE", "/keys/key-id-123"),
    ] {
        let with_jwt = envoy
            .check(
                call(method, target)
                    .bearer("eyJhbGciOiJSUzI1NiJ9.e30.sig")
                    .build(),
            )
            .await;
        let ok = allowed(&with_jwt);
        assert!(
            !ok.headers_to_remove.iter().any(|h| h == "authorization"),
            "{method} {target}"
        );
        assert!(
            ok.headers.is_empty(),
            "no key identity on {method} {target}"
        );

        let with_key_by_mistake = envoy
            .check(with_key(call(method, target), &secret).build())
            .await;
        assert!(
            allowed(&with_key_by_mistake)
                .headers_to_remove
                .iter()
                .any(|h| h == "authorization"),
            "{method} {target}"
        );
    }
    app.shutdown().await;
}

/// The profile's commented `[auth.jwt]` example, for a dashboard backend
/// that calls keyward's management RPCs with the user's session JWT: read
/// out of the profile, uncommented, filled in with a key that plays
/// CryptoRobot's issuer. The JWT's subject is the one account it manages.
#[tokio::test]
async fn cryptorobot_commented_jwt_example_lets_a_user_manage_only_their_own_keys() {
    let issuer_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public_key = dir.path().join("cryptorobot-jwt-public.pem");
    std::fs::write(&public_key, issuer_key.public_key_pem()).unwrap();
    let public_key = public_key.display().to_string();
    let example = commented_example(
        "cryptorobot",
        "auth.jwt",
        &[
            (
                "<the issuer of CryptoRobot's session JWTs>",
                "https://auth.cryptorobot.test",
            ),
            ("<their audience>", "cryptorobot-dashboard"),
            ("/etc/keyward/cryptorobot-jwt-public.pem", &public_key),
            (
                "<SHA-256 of the token Envoy sends>",
                &keyward::access_control::token_sha256_hex("kwt_envoy_cryptorobot_test"),
            ),
        ],
    );
    let mut config = cryptorobot();
    config.auth = Config::parse(&example, "cryptorobot-jwt.toml")
        .expect("the profile's commented [auth.jwt] example, filled in")
        .auth;
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": ACCOUNT, "iss": "https://auth.cryptorobot.test",
                        "aud": "cryptorobot-dashboard", "iat": now, "exp": now + 300});
    let signing =
        jsonwebtoken::EncodingKey::from_ec_pem(issuer_key.serialize_pem().as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &signing,
    )
    .unwrap();
    let with_jwt = |account: &str| {
        let mut request = tonic::Request::new(proto::CreateKeyRequest {
            account_id: account.into(),
            name: "My Trading Bot".into(),
            scopes: vec!["read:strategies".into()],
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {jwt}").parse().unwrap());
        request
    };
    let created = app
        .keys
        .create_key(with_jwt(ACCOUNT))
        .await
        .expect("the user's own account")
        .into_inner();
    assert!(created.secret.starts_with(PREFIX));
    let other = app
        .keys
        .create_key(with_jwt("cryptorobot_user_2"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    let anonymous = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: ACCOUNT.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    app.shutdown().await;
}

/// "Creating an API Key", "List Keys" and "Revoke a Key", sent verbatim to
/// keyward's key-management HTTP API with the user's JWT (the profile's
/// commented `[auth.jwt]`, filled in with a test key): the documented
/// response shape, the key working through Envoy, and "Revoking an API key
/// is immediate. Any requests using that key will receive a 401 error."
#[tokio::test]
async fn cryptorobot_documented_key_management_curl_session_runs_against_keyward() {
    use crate::helpers::http_api::send;
    const ENVOY_TOKEN: &str = "kwt_envoy_cryptorobot_test";
    let fixture = |name: &str| format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let auth = commented_example(
        "cryptorobot",
        "auth.jwt",
        &[
            (
                "<the issuer of CryptoRobot's session JWTs>",
                "cryptorobot-test",
            ),
            ("<their audience>", "cryptorobot-api"),
            (
                "/etc/keyward/cryptorobot-jwt-public.pem",
                &fixture("rs256-test-public.pem"),
            ),
            (
                "<SHA-256 of the token Envoy sends>",
                &keyward::access_control::token_sha256_hex(ENVOY_TOKEN),
            ),
        ],
    );
    let mut config = cryptorobot();
    config.auth = Config::parse(&auth, "cryptorobot-auth.toml")
        .expect("the profile's commented [auth.jwt] example, filled in")
        .auth;
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let http = app.http_addr().expect("the HTTP API is on");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": ACCOUNT, "iss": "cryptorobot-test", "aud": "cryptorobot-api",
                        "iat": now, "exp": now + 300});
    let private = std::fs::read(fixture("rs256-test-private.pem")).unwrap();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let bearer = format!("Bearer {jwt}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];

    // The document's request body, verbatim.
    let created = send(
        http,
        "POST",
        "/keys",
        &headers,
        r#"{
    "name": "My Trading Bot",
    "scopes": ["read:strategies", "read:exchanges", "write:traders"]
  }"#,
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
    assert_eq!(body["name"], "My Trading Bot");
    assert_eq!(body["lastUsed"], Value::Null);
    let secret = body["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(PREFIX), "{secret}");
    let granted: Vec<&str> = body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for scope in ["read:strategies", "read:exchanges", "write:traders"] {
        assert!(granted.contains(&scope), "{granted:?}");
    }
    let id = body["_id"].as_str().unwrap().to_owned();

    let mut envoy = Envoy::with_token(app.channel.clone(), ENVOY_TOKEN);
    allowed(
        &envoy
            .check(with_key(get("/strategies"), &secret).build())
            .await,
    );

    let listed = send(http, "GET", "/keys", &headers, "").await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.json()[0]["_id"], id.as_str());
    assert!(!listed.body.contains(&secret), "shown only at creation");

    let revoked = send(http, "DELETE", &format!("/keys/{id}"), &headers, "").await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    let refused = denied(
        &envoy
            .check(with_key(get("/strategies"), &secret).build())
            .await,
    );
    assert_eq!((refused.status, &refused.body), (401, &unauthorized()));
}
