//! Carboncopy (both documents) on `profiles/carboncopy.toml`: one test per
//! statement the documents make about keys, scopes and errors, through
//! keyward.v1.KeyService (what Settings -> API Keys and `/api/v1/keys` call)
//! and the ext_authz Check (what Envoy in front of `/api/v1` sends); a
//! backend asking keyward directly (Authenticate, CheckScope) gets the same
//! codes, messages, statuses and required scopes. The README's "Products"
//! table maps each statement to its test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward::config::Config;
use keyward::proto;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::envoy::{
    Envoy, allowed, assert_same_denial, call, check_scope, commented_example, denied, get, profile,
    upstream_headers,
};
use crate::helpers::{
    Db, TestApp, assert_invalid_argument, assert_shown_once_and_stored_as_sha256, eventually,
    spawn_app_with,
};
use crate::on_both_databases;

on_both_databases!(
    carboncopy_keys_are_cc_and_64_lowercase_hex_shown_once_and_stored_as_sha256,
    carboncopy_at_most_10_active_keys_per_account,
    carboncopy_keys_can_have_an_optional_expiry_timestamp,
    carboncopy_revoking_a_key_is_immediate_and_other_keys_keep_working,
);

const PREFIX: &str = "cc_";
const ACCOUNT: &str = "carboncopy_user_1";

fn carboncopy() -> Config {
    profile("carboncopy")
}

/// "If authentication fails, the API returns a 401 Unauthorized".
fn unauthorized() -> Value {
    json!({"error": {"code": "unauthorized", "message": "Invalid or missing API key."}})
}

/// "If you authenticate successfully but your key lacks the required scope,
/// you'll receive 403 Forbidden".
fn forbidden() -> Value {
    json!({"error": {"code": "forbidden", "message": "This key does not have the required scope."}})
}

fn create_request(scopes: &[&str]) -> proto::CreateKeyRequest {
    proto::CreateKeyRequest {
        account_id: ACCOUNT.into(),
        name: "my-bot".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// "API keys follow the format cc_ followed by 64 lowercase hexadecimal
/// characters"; "Copy the key — it's shown exactly once and cannot be
/// retrieved later" (000); "A key's secret is revealed exactly once at
/// creation — it cannot be retrieved later" (001); "Click Create Key, choose
/// a name and scopes" (CreateKey).
async fn carboncopy_keys_are_cc_and_64_lowercase_hex_shown_once_and_stored_as_sha256(db: Db) {
    let Some(mut app) = spawn_app_with(db, carboncopy()).await else {
        return;
    };
    let created = app
        .keys
        .create_key(create_request(&["portfolio:read"]))
        .await
        .expect("CreateKey")
        .into_inner();
    let (key, secret) = (created.key.expect("key"), created.secret);

    let body = secret.strip_prefix(PREFIX).expect("cc_ prefix");
    assert_eq!(body.len(), 64, "{secret}");
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{secret}"
    );
    assert_eq!(key.name, "my-bot");
    assert_eq!(key.scopes, ["portfolio:read"]);
    assert_shown_once_and_stored_as_sha256(&mut app, &key, &secret, PREFIX).await;
    app.shutdown().await;
}

/// "Pass your key as a Bearer token in the Authorization header." Nothing
/// else carries a key: not the `ApiKey` scheme, the bare key without a
/// scheme (`http.require_scheme`), another header or a query parameter; and
/// a body that is not 64 lowercase hex is no key.
#[tokio::test]
async fn carboncopy_key_is_a_bearer_token_in_the_authorization_header() {
    let mut app = spawn_app_with(Db::Sqlite, carboncopy()).await.unwrap();
    let (key, secret) = app.create_key(ACCOUNT, &["portfolio:read"]).await;
    let mut envoy = Envoy::of(&app);

    let response = envoy
        .check(get("/api/v1/portfolio").bearer(&secret).build())
        .await;
    let ok = allowed(&response);
    assert_eq!(upstream_headers(ok)["x-keyward-key-id"], key.id);
    assert_eq!(ok.headers_to_remove, ["authorization"]);

    let body = secret.strip_prefix(PREFIX).unwrap();
    for request in [
        get("/api/v1/portfolio").header("authorization", &format!("ApiKey {secret}")),
        get("/api/v1/portfolio").header("authorization", &secret),
        get("/api/v1/portfolio").header("x-api-key", &secret),
        get(&format!("/api/v1/portfolio?api_key={secret}")),
        get("/api/v1/portfolio").bearer(&format!("{PREFIX}{}", body.to_ascii_uppercase())),
        get("/api/v1/portfolio").bearer(&secret[..secret.len() - 1]),
        get("/api/v1/portfolio").bearer(&format!("{secret}0")),
    ] {
        let refused = denied(&envoy.check(request.build()).await);
        assert_eq!((refused.status, &refused.body), (401, &unauthorized()));
        assert_eq!(refused.headers["www-authenticate"], "Bearer");
    }

    // A backend passing the header's value to Authenticate.
    assert!(
        app.authenticate(&format!("Bearer {secret}"), &["portfolio:read"])
            .await
            .allowed
    );
    for credential in [
        format!("ApiKey {secret}"),
        format!("Bearer {PREFIX}{}", body.to_ascii_uppercase()),
        format!("Bearer {secret}0"),
    ] {
        let direct = app.authenticate(&credential, &["portfolio:read"]).await;
        assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");
    }
    // `require_scheme` is the HTTP surface's: the backend decides what it
    // passes, and a bare key is a key to Authenticate.
    assert!(app.authenticate(&secret, &["portfolio:read"]).await.allowed);
    app.shutdown().await;
}

/// 000: "All API endpoints are authenticated using API keys", with the
/// routes of the scope table: each route opens with a key holding its
/// scope (the upstream learns which key and account), is 401 without a key
/// and 403 with a key lacking the scope; paths and methods no route names
/// are refused (404). The key-management routes are the exception: public
/// for keyward, they carry a Privy JWT the upstream verifies (see
/// `carboncopy_key_management_routes_pass_the_privy_jwt_to_the_upstream`).
#[tokio::test]
async fn carboncopy_all_api_endpoints_need_a_key_with_the_routes_scope() {
    let mut app = spawn_app_with(Db::Sqlite, carboncopy()).await.unwrap();
    let mut envoy = Envoy::of(&app);
    let routes = [
        ("GET", "/api/v1/portfolio", "portfolio:read"),
        (
            "GET",
            "/api/v1/portfolio/history?from=2024-01-01",
            "portfolio:read",
        ),
        ("GET", "/api/v1/traders", "traders:read"),
        ("GET", "/api/v1/traders/0xabc/positions", "traders:read"),
        ("POST", "/api/v1/traders/0xabc/follow", "traders:write"),
        ("PUT", "/api/v1/traders/0xabc", "traders:write"),
        ("PATCH", "/api/v1/traders/0xabc", "traders:write"),
        ("DELETE", "/api/v1/traders/0xabc/follow", "traders:write"),
        ("GET", "/api/v1/orders", "orders:read"),
        ("GET", "/api/v1/orders/17", "orders:read"),
        ("POST", "/api/v1/orders", "orders:write"),
        ("DELETE", "/api/v1/orders/17", "orders:write"),
        ("GET", "/api/v1/markets/btc-usd", "markets:read"),
        ("GET", "/api/v1/account", "account:read"),
    ];
    // One key with nothing but account:read, to be refused everywhere else.
    let (_, account_only) = app.create_key("acct_other", &["account:read"]).await;
    for (method, target, scope) in routes {
        let (key, secret) = app.create_key("acct_1", &[scope]).await;
        let allowed_response = envoy
            .check(call(method, target).bearer(&secret).build())
            .await;
        let set = upstream_headers(allowed(&allowed_response));
        assert_eq!(set["x-keyward-key-id"], key.id, "{method} {target}");
        assert_eq!(set["x-keyward-account-id"], "acct_1");
        assert!(set["x-keyward-scopes"].split(' ').any(|s| s == scope));
        app.revoke("acct_1", &key.id).await;

        let anonymous = denied(&envoy.check(call(method, target).build()).await);
        assert_eq!(
            (anonymous.status, &anonymous.body),
            (401, &unauthorized()),
            "{method} {target}"
        );
        assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
        if scope != "account:read" {
            let refused = denied(
                &envoy
                    .check(call(method, target).bearer(&account_only).build())
                    .await,
            );
            assert_eq!(
                (refused.status, &refused.body),
                (403, &forbidden()),
                "{method} {target}"
            );
            // The route's scope, asked for directly.
            let direct = check_scope(&mut app, &format!("Bearer {account_only}"), &[scope]).await;
            assert_same_denial(direct.denial.as_ref(), 403, &forbidden(), scope);
        }
    }
    let direct = app.authenticate("", &["account:read"]).await;
    assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");

    // "write scope implies read for the same resource."
    let (_, writer) = app
        .create_key("acct_1", &["traders:write", "orders:write"])
        .await;
    for target in ["/api/v1/traders", "/api/v1/orders/17"] {
        allowed(&envoy.check(get(target).bearer(&writer).build()).await);
    }
    // Only `Bearer` is documented.
    let api_key_scheme = envoy
        .check(
            get("/api/v1/account")
                .header("authorization", &format!("ApiKey {account_only}"))
                .build(),
        )
        .await;
    assert_eq!(denied(&api_key_scheme).status, 401);
    // Paths no route names are refused.
    for (method, target) in [
        ("GET", "/api/v2/portfolio"),
        ("HEAD", "/api/v1/account"),
        ("POST", "/api/v1/portfolio"),
    ] {
        let refused = denied(
            &envoy
                .check(call(method, target).bearer(&account_only).build())
                .await,
        );
        assert_eq!(refused.status, 404, "{method} {target}");
    }
    // Key management carries a Privy JWT for the upstream to verify.
    for (method, target) in [
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/key_123"),
    ] {
        let response = envoy
            .check(
                call(method, target)
                    .bearer("eyJhbGciOiJFUzI1NiJ9.e30.sig")
                    .build(),
            )
            .await;
        let ok = allowed(&response);
        assert!(
            !ok.headers_to_remove.iter().any(|h| h == "authorization"),
            "{method} {target}"
        );
    }
    app.shutdown().await;
}

/// The scope table: "portfolio | none, read", "traders | none, read, write",
/// "orders | none, read, write", "markets | none, read", "account | none,
/// read"; "Every key is issued with a set of scopes that control what it can
/// access." `none` is a key without that resource's scope.
#[tokio::test]
async fn carboncopy_scope_table_none_read_write_per_resource() {
    let mut app = spawn_app_with(Db::Sqlite, carboncopy()).await.unwrap();
    let mut envoy = Envoy::of(&app);
    let (_, none) = app.create_key(ACCOUNT, &[]).await;
    for (resource, values) in [
        ("portfolio", &["read"][..]),
        ("traders", &["read", "write"][..]),
        ("orders", &["read", "write"][..]),
        ("markets", &["read"][..]),
        ("account", &["read"][..]),
    ] {
        let path = format!("/api/v1/{resource}");
        let read_scope = format!("{resource}:read");
        // none
        let refused = denied(&envoy.check(get(&path).bearer(&none).build()).await);
        assert_eq!(
            (refused.status, &refused.body),
            (403, &forbidden()),
            "{resource}"
        );
        let direct = app
            .authenticate(&format!("Bearer {none}"), &[&read_scope])
            .await;
        assert_same_denial(direct.denial.as_ref(), 403, &forbidden(), &read_scope);

        // read: GET only.
        let (read_key, read) = app.create_key(ACCOUNT, &[&read_scope]).await;
        allowed(&envoy.check(get(&path).bearer(&read).build()).await);
        assert!(
            check_scope(&mut app, &format!("Bearer {read}"), &[&read_scope])
                .await
                .allowed
        );
        let write_denied = denied(&envoy.check(call("POST", &path).bearer(&read).build()).await);
        if values.contains(&"write") {
            assert_eq!(
                (write_denied.status, &write_denied.body),
                (403, &forbidden())
            );
            let write_scope = format!("{resource}:write");
            let direct = check_scope(&mut app, &format!("Bearer {read}"), &[&write_scope]).await;
            assert_eq!(direct.missing_scopes, std::slice::from_ref(&write_scope));
            assert_same_denial(direct.denial.as_ref(), 403, &forbidden(), &write_scope);
        } else {
            // No write value: no write endpoint.
            assert_eq!(write_denied.status, 404, "{resource}");
        }
        app.revoke(ACCOUNT, &read_key.id).await;

        // write, where the table has it; refused as a scope where it does not.
        let write_scope = format!("{resource}:write");
        if values.contains(&"write") {
            let (write_key, write) = app.create_key(ACCOUNT, &[&write_scope]).await;
            for method in ["POST", "PUT", "PATCH", "DELETE"] {
                allowed(
                    &envoy
                        .check(call(method, &format!("{path}/x1")).bearer(&write).build())
                        .await,
                );
            }
            app.revoke(ACCOUNT, &write_key.id).await;
        } else {
            let status = app
                .keys
                .create_key(create_request(&[&write_scope]))
                .await
                .unwrap_err();
            assert_invalid_argument(&status, "scopes");
        }
    }
    app.shutdown().await;
}

/// "write scope implies read for the same resource. You don't need to grant
/// both." Only the same resource; and granting both is accepted too.
#[tokio::test]
async fn carboncopy_write_implies_read_for_the_same_resource_only() {
    let mut app = spawn_app_with(Db::Sqlite, carboncopy()).await.unwrap();
    let (key, secret) = app.create_key(ACCOUNT, &["traders:write"]).await;
    assert_eq!(key.scopes, ["traders:write"]);
    assert_eq!(key.effective_scopes, ["traders:read", "traders:write"]);
    let mut envoy = Envoy::of(&app);
    let response = envoy
        .check(get("/api/v1/traders/0xabc").bearer(&secret).build())
        .await;
    assert_eq!(
        upstream_headers(allowed(&response))["x-keyward-scopes"],
        "traders:read traders:write"
    );
    for target in ["/api/v1/orders", "/api/v1/portfolio"] {
        let refused = denied(&envoy.check(get(target).bearer(&secret).build()).await);
        assert_eq!(refused.body, forbidden(), "{target}");
    }
    let credential = format!("Bearer {secret}");
    assert!(
        check_scope(&mut app, &credential, &["traders:read"])
            .await
            .allowed
    );
    let direct = check_scope(&mut app, &credential, &["orders:read"]).await;
    assert_same_denial(direct.denial.as_ref(), 403, &forbidden(), "orders:read");

    let (both, _) = app
        .create_key(ACCOUNT, &["orders:read", "orders:write"])
        .await;
    assert_eq!(both.effective_scopes, ["orders:read", "orders:write"]);

    let catalog = app
        .keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .unwrap()
        .into_inner();
    let implications: Vec<(&str, &[String])> = catalog
        .scopes
        .iter()
        .filter(|s| !s.implies.is_empty())
        .map(|s| (s.name.as_str(), s.implies.as_slice()))
        .collect();
    assert_eq!(
        implications,
        [
            ("traders:write", &["traders:read".to_owned()][..]),
            ("orders:write", &["orders:read".to_owned()][..]),
        ]
    );
    app.shutdown().await;
}

/// "markets | none, read | Market data access (coming soon)": grantable
/// today, flagged reserved in the live catalog, and its route works.
#[tokio::test]
async fn carboncopy_markets_read_is_coming_soon_but_grantable() {
    let mut app = spawn_app_with(Db::Sqlite, carboncopy()).await.unwrap();
    let catalog = app
        .keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .unwrap()
        .into_inner();
    let reserved: Vec<&str> = catalog
        .scopes
        .iter()
        .filter(|s| s.reserved)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(reserved, ["markets:read"]);
    assert_eq!(catalog.key_prefix, PREFIX);
    let (_, secret) = app.create_key(ACCOUNT, &["markets:read"]).await;
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(get("/api/v1/markets/btc-usd").bearer(&secret).build())
            .await,
    );
    app.shutdown().await;
}

/// "Narrow scopes — monitoring bots only need portfolio:read; they don't
/// need traders:write."
#[tokio::test]
async fn carboncopy_monitoring_bot_with_portfolio_read_cannot_write_traders() {
    let mut app = spawn_app_with(Db::Sqlite, carboncopy()).await.unwrap();
    let (_, bot) = app.create_key(ACCOUNT, &["portfolio:read"]).await;
    let mut envoy = Envoy::of(&app);
    for target in [
        "/api/v1/portfolio",
        "/api/v1/portfolio/history",
        "/api/v1/portfolio/positions",
    ] {
        allowed(&envoy.check(get(target).bearer(&bot).build()).await);
    }
    let refused = denied(
        &envoy
            .check(
                call("POST", "/api/v1/traders/0xabc/follow")
                    .bearer(&bot)
                    .build(),
            )
            .await,
    );
    assert_eq!((refused.status, &refused.body), (403, &forbidden()));
    let direct = app
        .authenticate(&format!("Bearer {bot}"), &["traders:write"])
        .await;
    assert_same_denial(direct.denial.as_ref(), 403, &forbidden(), "traders:write");
    app.shutdown().await;
}

/// "Maximum 10 active keys per account." Revoked keys do not count, and
/// each account has its own ten.
async fn carboncopy_at_most_10_active_keys_per_account(db: Db) {
    let Some(mut app) = spawn_app_with(db, carboncopy()).await else {
        return;
    };
    let mut keys = Vec::new();
    for _ in 0..10 {
        keys.push(app.create_key(ACCOUNT, &["account:read"]).await.0);
    }
    let eleventh = app
        .keys
        .create_key(create_request(&["account:read"]))
        .await
        .unwrap_err();
    assert_eq!(eleventh.code(), Code::FailedPrecondition, "{eleventh:?}");

    app.create_key("carboncopy_user_2", &["account:read"]).await;
    app.revoke(ACCOUNT, &keys[0].id).await;
    app.create_key(ACCOUNT, &["account:read"]).await;
    app.shutdown().await;
}

/// "Keys can have an optional expiry timestamp (`expiresAt`)"; "Rotate
/// regularly — set an expiresAt and automate rotation". An expired key is
/// refused like an unknown one. (The expiry is five seconds away, so that the
/// first check surely comes before it, and the test polls until it passes.)
async fn carboncopy_keys_can_have_an_optional_expiry_timestamp(db: Db) {
    let Some(mut app) = spawn_app_with(db, carboncopy()).await else {
        return;
    };
    let (forever, _) = app.create_key(ACCOUNT, &["orders:read"]).await;
    assert!(forever.expires_at.is_none(), "expiry is optional");

    let expires_at = SystemTime::now() + Duration::from_secs(5);
    let created = app
        .keys
        .create_key(proto::CreateKeyRequest {
            expires_at: Some(prost_types::Timestamp::from(expires_at)),
            ..create_request(&["orders:read"])
        })
        .await
        .expect("CreateKey")
        .into_inner();
    let (key, secret) = (created.key.unwrap(), created.secret);
    let stored = SystemTime::try_from(key.expires_at.unwrap()).unwrap();
    let difference = stored
        .duration_since(expires_at)
        .unwrap_or_else(|e| e.duration());
    assert!(difference <= Duration::from_millis(1), "stored as given");
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(get("/api/v1/orders").bearer(&secret).build())
            .await,
    );

    let mut refused = None;
    let ended = eventually(Duration::from_secs(30), async || {
        let response = envoy
            .check(get("/api/v1/orders").bearer(&secret).build())
            .await;
        if response.status.as_ref().is_some_and(|s| s.code == 0) {
            return false;
        }
        // Decided no later than now; stored to the millisecond.
        assert!(
            SystemTime::now() + Duration::from_millis(1) >= expires_at,
            "refused before its expiry: {response:?}"
        );
        refused = Some(response);
        true
    })
    .await;
    assert!(ended, "the key never expired");
    let expired = denied(refused.as_ref().unwrap());
    assert_eq!((expired.status, &expired.body), (401, &unauthorized()));
    let direct = app
        .authenticate(&format!("Bearer {secret}"), &["orders:read"])
        .await;
    assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");

    let past = app
        .keys
        .create_key(proto::CreateKeyRequest {
            expires_at: Some(prost_types::Timestamp::from(
                SystemTime::now() - Duration::from_secs(60),
            )),
            ..create_request(&["orders:read"])
        })
        .await
        .unwrap_err();
    assert_invalid_argument(&past, "expires_at");
    app.shutdown().await;
}

/// "Revoke a key anytime" (000), "Revoke a key via the Dashboard or DELETE
/// /api/v1/keys/{keyId}" (001), "Revoke immediately if a key is exposed",
/// "One key per service — easier to audit, easier to revoke if compromised":
/// the next request with the revoked key is 401, other keys keep working,
/// and the upstream sees which key made each request.
async fn carboncopy_revoking_a_key_is_immediate_and_other_keys_keep_working(db: Db) {
    let Some(mut app) = spawn_app_with(db, carboncopy()).await else {
        return;
    };
    let (exposed, exposed_secret) = app.create_key(ACCOUNT, &["account:read"]).await;
    let (other, other_secret) = app.create_key(ACCOUNT, &["account:read"]).await;
    let mut envoy = Envoy::of(&app);
    for (key, secret) in [(&exposed, &exposed_secret), (&other, &other_secret)] {
        let response = envoy
            .check(get("/api/v1/account").bearer(secret).build())
            .await;
        assert_eq!(
            upstream_headers(allowed(&response))["x-keyward-key-id"],
            key.id
        );
    }

    app.revoke(ACCOUNT, &exposed.id).await;

    let refused = denied(
        &envoy
            .check(get("/api/v1/account").bearer(&exposed_secret).build())
            .await,
    );
    assert_eq!((refused.status, &refused.body), (401, &unauthorized()));
    let direct = app
        .authenticate(&format!("Bearer {exposed_secret}"), &["account:read"])
        .await;
    assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");
    allowed(
        &envoy
            .check(get("/api/v1/account").bearer(&other_secret).build())
            .await,
    );
    assert!(
        app.authenticate(&format!("Bearer {other_secret}"), &["account:read"])
            .await
            .allowed
    );
    app.shutdown().await;
}

/// The two documented error bodies, for every way authentication fails and
/// for a missing scope; a revoked key looks exactly like an unknown one.
#[tokio::test]
async fn carboncopy_errors_are_the_documented_401_and_403_bodies() {
    let mut app = spawn_app_with(Db::Sqlite, carboncopy()).await.unwrap();
    let (revoked, revoked_secret) = app.create_key(ACCOUNT, &["account:read"]).await;
    app.revoke(ACCOUNT, &revoked.id).await;
    let (_, secret) = app.create_key(ACCOUNT, &["account:read"]).await;
    let mut envoy = Envoy::of(&app);

    let mut shown = Vec::new();
    let unknown = format!("{PREFIX}{}", "a".repeat(64));
    for credential in [
        None,
        Some(&*unknown),
        Some(&*revoked_secret),
        Some("cc_not_a_key"),
    ] {
        let request = match credential {
            Some(credential) => get("/api/v1/account").bearer(credential),
            None => get("/api/v1/account"),
        };
        let refused = denied(&envoy.check(request.build()).await);
        assert_eq!((refused.status, &refused.body), (401, &unauthorized()));
        assert_eq!(refused.headers["content-type"], "application/json");
        shown.push(refused.headers);
        // A backend asking keyward directly gets the same texts.
        let header = credential.map_or_else(String::new, |c| format!("Bearer {c}"));
        let direct = app.authenticate(&header, &["account:read"]).await;
        assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");
    }
    assert!(shown.windows(2).all(|pair| pair[0] == pair[1]));

    let refused = denied(
        &envoy
            .check(get("/api/v1/orders").bearer(&secret).build())
            .await,
    );
    assert_eq!((refused.status, &refused.body), (403, &forbidden()));

    let direct = app
        .authenticate(&format!("Bearer {secret}"), &["orders:read"])
        .await;
    assert_same_denial(direct.denial.as_ref(), 403, &forbidden(), "orders:read");
    let direct = check_scope(&mut app, &format!("Bearer {secret}"), &["orders:read"]).await;
    assert_same_denial(direct.denial.as_ref(), 403, &forbidden(), "orders:read");
    app.shutdown().await;
}

/// 001: "Privy JWT | Creating and revoking API keys | Authorization: Bearer
/// <jwt>" and "Then pass it as a Bearer token, identical to an API key".
/// keyward's ext_authz does not verify JWTs (not yet), so the profile makes
/// POST/GET /api/v1/keys and DELETE /api/v1/keys/{keyId} public: the JWT
/// reaches the upstream untouched, an API key sent there does not.
#[tokio::test]
async fn carboncopy_key_management_routes_pass_the_privy_jwt_to_the_upstream() {
    let mut app = spawn_app_with(Db::Sqlite, carboncopy()).await.unwrap();
    let (_, secret) = app.create_key(ACCOUNT, &["account:read"]).await;
    let mut envoy = Envoy::of(&app);
    for (method, target) in [
        ("POST", "/api/v1/keys"),
        ("GET", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/key_123"),
    ] {
        let with_jwt = envoy
            .check(
                call(method, target)
                    .bearer("eyJhbGciOiJFUzI1NiJ9.e30.sig")
                    .build(),
            )
            .await;
        let ok = allowed(&with_jwt);
        assert!(!ok.headers_to_remove.iter().any(|h| h == "authorization"));
        assert!(
            ok.headers.is_empty(),
            "no key identity on {method} {target}"
        );

        let with_api_key = envoy
            .check(call(method, target).bearer(&secret).build())
            .await;
        assert!(
            allowed(&with_api_key)
                .headers_to_remove
                .iter()
                .any(|h| h == "authorization"),
            "{method} {target}"
        );
    }
    app.shutdown().await;
}

/// A request carrying `authorization: Bearer <token>` metadata.
fn with_jwt<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// 001: "Privy JWTs ... are required for the Key Management endpoints" and
/// "Privy JWTs are short-lived" (`exp` is required and checked). keyward
/// verifies them on its own gRPC management RPCs with `[auth.jwt]`. The
/// profile cannot name Privy's real verification key, so it carries a
/// commented example; this test reads that block out of the profile,
/// uncomments it and fills in a key of its own that plays Privy (ES256,
/// issuer `privy.io`, the user's Privy DID as subject).
#[tokio::test]
async fn carboncopy_privy_jwt_manages_only_its_own_accounts_keys() {
    const ENVOY_TOKEN: &str = "kwt_envoy_carboncopy_test";
    let privy = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public_key = dir.path().join("privy-verification-key.pem");
    std::fs::write(&public_key, privy.public_key_pem()).unwrap();
    let public_key = public_key.display().to_string();
    let jwt_settings = commented_example(
        "carboncopy",
        "auth.jwt",
        &[
            ("<your Privy app id>", "test-privy-app-id"),
            ("/etc/keyward/privy-verification-key.pem", &public_key),
            (
                "<SHA-256 of the token Envoy sends>",
                &keyward::access_control::token_sha256_hex(ENVOY_TOKEN),
            ),
        ],
    );
    let mut config = carboncopy();
    config.auth = Config::parse(&jwt_settings, "privy.toml")
        .expect("the profile's commented [auth.jwt] example, filled in")
        .auth;
    let mut app: TestApp = spawn_app_with(Db::Sqlite, config).await.unwrap();

    let user = "did:privy:cm0testuser000000000000000";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sign_claims = |claims: Value| {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(privy.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let sign = |subject: &str, expires: i64| {
        sign_claims(
            json!({"sub": subject, "iss": "privy.io", "aud": "test-privy-app-id",
                           "iat": now, "exp": expires}),
        )
    };
    let jwt = sign(user, now + 300);
    let create = |account: &str| proto::CreateKeyRequest {
        account_id: account.into(),
        name: "my-bot".into(),
        scopes: vec!["portfolio:read".into()],
        ..Default::default()
    };

    // POST /api/v1/keys
    let created = app
        .keys
        .create_key(with_jwt(create(user), &jwt))
        .await
        .expect("the user's own account")
        .into_inner();
    assert!(created.secret.starts_with(PREFIX));
    let key = created.key.unwrap();
    // GET /api/v1/keys
    let listed = app
        .keys
        .list_keys(with_jwt(
            proto::ListKeysRequest {
                account_id: user.into(),
                ..Default::default()
            },
            &jwt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    // DELETE /api/v1/keys/{keyId}
    let revoked = app
        .keys
        .revoke_key(with_jwt(
            proto::RevokeKeyRequest {
                account_id: user.into(),
                key_id: key.id.clone(),
            },
            &jwt,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.key.unwrap().revoked_at.is_some());

    let other_account = app
        .keys
        .create_key(with_jwt(create("did:privy:someoneelse"), &jwt))
        .await
        .unwrap_err();
    assert_eq!(other_account.code(), Code::PermissionDenied);
    let no_jwt = app.keys.create_key(create(user)).await.unwrap_err();
    assert_eq!(no_jwt.code(), Code::Unauthenticated);
    let expired = app
        .keys
        .create_key(with_jwt(create(user), &sign(user, now - 120)))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(expired.message().contains("expired"), "{expired:?}");
    // Short-lived means it says when it ends: a JWT without `exp` is refused.
    let without_exp = sign_claims(
        json!({"sub": user, "iss": "privy.io", "aud": "test-privy-app-id", "iat": now}),
    );
    let forever = app
        .keys
        .create_key(with_jwt(create(user), &without_exp))
        .await
        .unwrap_err();
    assert_eq!(forever.code(), Code::Unauthenticated);
    assert!(forever.message().contains("`exp`"), "{forever:?}");

    // The JWT is no API key: it opens no API route.
    let mut envoy = Envoy::with_token(app.channel.clone(), ENVOY_TOKEN);
    let refused = denied(
        &envoy
            .check(get("/api/v1/portfolio").bearer(&jwt).build())
            .await,
    );
    assert_eq!((refused.status, &refused.body), (401, &unauthorized()));
    app.shutdown().await;
}

/// 001's key-management session against keyward's HTTP API, verbatim:
/// `curl -X POST .../api/v1/keys -H "Authorization: Bearer <privy-jwt>"
/// -d '{ "name": "my-bot", "scopes": { "portfolio": "read" } }'`, then
/// `GET /api/v1/keys` and `DELETE /api/v1/keys/{keyId}`, after which the
/// key gets the documented 401.
#[tokio::test]
async fn carboncopy_documented_key_management_curl_session_runs_against_keyward() {
    use crate::helpers::http_api::send;
    const ENVOY_TOKEN: &str = "kwt_envoy_carboncopy_http_test";
    let privy = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public_key = dir.path().join("privy-verification-key.pem");
    std::fs::write(&public_key, privy.public_key_pem()).unwrap();
    let auth = commented_example(
        "carboncopy",
        "auth.jwt",
        &[
            ("<your Privy app id>", "test-privy-app-id"),
            (
                "/etc/keyward/privy-verification-key.pem",
                &public_key.display().to_string(),
            ),
            (
                "<SHA-256 of the token Envoy sends>",
                &keyward::access_control::token_sha256_hex(ENVOY_TOKEN),
            ),
        ],
    );
    let mut config = carboncopy();
    config.auth = Config::parse(&auth, "privy.toml").unwrap().auth;
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let http = app.http_addr().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let user = "did:privy:cm0httpuser00000000000000";
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"sub": user, "iss": "privy.io", "aud": "test-privy-app-id",
                "iat": now, "exp": now + 300}),
        &jsonwebtoken::EncodingKey::from_ec_pem(privy.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let bearer = format!("Bearer {jwt}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];

    let created = send(
        http,
        "POST",
        "/api/v1/keys",
        &headers,
        r#"{ "name": "my-bot", "scopes": { "portfolio": "read" } }"#,
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let body = created.json();
    assert_eq!(body["scopes"], json!({"portfolio": "read"}));
    assert_eq!(body["expiresAt"], Value::Null);
    let secret = body["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(PREFIX));
    let id = body["id"].as_str().unwrap().to_owned();

    let mut envoy = Envoy::with_token(app.channel.clone(), ENVOY_TOKEN);
    let portfolio = || get("/api/v1/portfolio").bearer(&secret).build();
    allowed(&envoy.check(portfolio()).await);

    let listed = send(http, "GET", "/api/v1/keys", &headers, "").await;
    assert_eq!(listed.json()[0]["id"], id.as_str());

    let revoked = send(http, "DELETE", &format!("/api/v1/keys/{id}"), &headers, "").await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    let refused = denied(&envoy.check(portfolio()).await);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["error"]["code"], "unauthorized");
}
