//! CSBoard on `profiles/csboard.toml`: one test per statement the
//! document makes about keys, scopes and errors, through keyward.v1.KeyService
//! (what CSBoard's profile page calls) and the ext_authz Check (what Envoy in
//! front of csboard.com sends); a backend asking keyward directly
//! (Authenticate, CheckScope) gets the same codes, details, statuses and
//! required scopes. The README's "Products" table maps each statement to its
//! test.

use std::sync::Arc;
use std::time::Duration;

use keyward::config::Config;
use keyward::proto;
use serde_json::{Value, json};

use crate::helpers::envoy::{
    Denied, Envoy, allowed, assert_same_denial, call, check_scope, denied, get, profile,
    upstream_headers,
};
use crate::helpers::postgres::ThrowawayCluster;
use crate::helpers::{
    Db, TestApp, TestDatabase, assert_millis_left, assert_seconds_left,
    assert_shown_once_and_stored_as_sha256, eventually, reason, spawn_app_with, spawn_on,
};
use crate::on_both_databases;

on_both_databases!(
    csboard_keys_are_csb_pub_keys_shown_once_and_stored_as_sha256,
    csboard_trading_switched_on_later_with_update_key_applies_to_the_next_call,
    csboard_revoking_one_key_is_instant_and_leaves_the_others_working,
);

const PREFIX: &str = "csb_pub_";
const BODY_LENGTH: usize = 43;

fn csboard() -> Config {
    profile("csboard")
}

/// A well-formed key that was never issued.
fn unissued_key(seed: char) -> String {
    format!("{PREFIX}{}", seed.to_string().repeat(BODY_LENGTH))
}

fn missing_api_key() -> Value {
    json!({"code": "missing_api_key", "detail": "No API key provided, or the key does not start with csb_pub_."})
}

fn invalid_api_key() -> Value {
    json!({"code": "invalid_api_key", "detail": "Unknown or revoked API key."})
}

fn trading_not_enabled() -> Value {
    json!({"code": "trading_not_enabled", "detail": "Trading has not been enabled for this API key."})
}

async fn set_scopes(app: &mut TestApp, key: &proto::Key, scopes: &[&str]) -> proto::Key {
    app.keys
        .update_key(proto::UpdateKeyRequest {
            account_id: key.account_id.clone(),
            key_id: key.id.clone(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["scopes".into()],
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateKey")
        .into_inner()
        .key
        .expect("key")
}

/// "Keys belong to the `csb_pub_` namespace ... The server stores only the
/// SHA-256 hash of each key — the raw secret is shown once at creation and
/// never again"; "there is no 'reveal key' option". The body after the
/// prefix is our choice (43 base62 characters; the document elides it).
async fn csboard_keys_are_csb_pub_keys_shown_once_and_stored_as_sha256(db: Db) {
    let Some(mut app) = spawn_app_with(db, csboard()).await else {
        return;
    };
    let created = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "csboard_user_1".into(),
            name: "price-tracker-prod".into(),
            ..Default::default()
        })
        .await
        .expect("CreateKey")
        .into_inner();
    let (key, secret) = (created.key.expect("key"), created.secret);

    let body = secret.strip_prefix(PREFIX).expect("csb_pub_ prefix");
    assert_eq!(body.len(), BODY_LENGTH, "{secret}");
    assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()), "{secret}");
    assert_eq!(key.name, "price-tracker-prod");
    assert_eq!(key.start, secret[..PREFIX.len() + 6]);
    assert_shown_once_and_stored_as_sha256(&mut app, &key, &secret, PREFIX).await;
    // The catalog names the namespace too.
    let catalog = app
        .keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(catalog.key_prefix, PREFIX);
    app.shutdown().await;
}

/// "Every CSBoard API request (except `GET /v1/health`) must include a valid
/// API key."
#[tokio::test]
async fn csboard_health_needs_no_key_and_every_other_request_does() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let mut envoy = Envoy::of(&app);

    let health = envoy.check(get("/v1/health").build()).await;
    let ok = allowed(&health);
    assert!(ok.headers.is_empty(), "no identity on a public route");

    for (method, target) in [
        ("GET", "/v1/listings"),
        ("GET", "/v1/health/details"),
        ("POST", "/v1/orders"),
    ] {
        let refused = denied(&envoy.check(call(method, target).build()).await);
        assert_eq!(
            (refused.status, &refused.body),
            (401, &missing_api_key()),
            "{method} {target}"
        );
        assert_eq!(refused.headers["www-authenticate"], "Bearer");
    }
    let direct = app.authenticate("", &["read"]).await;
    assert_same_denial(direct.denial.as_ref(), 401, &missing_api_key(), "");
    app.shutdown().await;
}

/// "Send the key as a Bearer token in the `Authorization` header" and "you
/// can also pass the key as the `api_key` query parameter"; "query
/// parameters are more likely to appear in server logs", so the key is
/// removed before the request goes upstream.
#[tokio::test]
async fn csboard_key_is_read_from_a_bearer_header_or_the_api_key_query_parameter() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let (key, secret) = app.create_key("csboard_user_1", &[]).await;
    let mut envoy = Envoy::of(&app);

    let by_header = envoy
        .check(get("/v1/listings").bearer(&secret).build())
        .await;
    let ok = allowed(&by_header);
    assert_eq!(upstream_headers(ok)["x-keyward-key-id"], key.id);
    // "tied to your CSBoard account": the upstream learns whose key it is.
    assert_eq!(
        upstream_headers(ok)["x-keyward-account-id"],
        "csboard_user_1"
    );
    assert_eq!(ok.headers_to_remove, ["authorization"]);

    let by_query = envoy
        .check(get(&format!("/v1/listings?game=cs2&api_key={secret}")).build())
        .await;
    let ok = allowed(&by_query);
    assert_eq!(upstream_headers(ok)["x-keyward-key-id"], key.id);
    assert_eq!(ok.query_parameters_to_remove, ["api_key"]);
    assert!(
        !format!("{by_query:?}").contains(&secret),
        "the answer never repeats the key"
    );

    // Both present: the header is the key; the parameter goes too.
    let both = envoy
        .check(
            get(&format!("/v1/listings?api_key={}", unissued_key('q')))
                .bearer(&secret)
                .build(),
        )
        .await;
    let ok = allowed(&both);
    assert_eq!(ok.headers_to_remove, ["authorization"]);
    assert_eq!(ok.query_parameters_to_remove, ["api_key"]);

    // Only Bearer is documented for the header: not another scheme, nor the
    // bare key (`http.require_scheme`).
    for value in [format!("ApiKey {secret}"), secret.clone()] {
        let refused = envoy
            .check(get("/v1/listings").header("authorization", &value).build())
            .await;
        assert_eq!(denied(&refused).body, missing_api_key());
    }
    let direct = app.authenticate(&format!("ApiKey {secret}"), &[]).await;
    assert_same_denial(direct.denial.as_ref(), 401, &missing_api_key(), "");
    app.shutdown().await;
}

/// "| All `GET` endpoints | ✅ | ✅ |": `read` is granted to every key, and
/// a read key reaches every GET endpoint. Other methods than GET and
/// `POST /v1/orders` are not documented; the profile refuses them (404).
#[tokio::test]
async fn csboard_every_key_reads_every_get_endpoint() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let (key, secret) = app.create_key("csboard_user_1", &[]).await;
    assert!(key.scopes.is_empty(), "nothing was granted explicitly");
    assert_eq!(key.effective_scopes, ["read"], "read comes with every key");
    let mut envoy = Envoy::of(&app);

    for target in [
        "/v1/listings",
        "/v1/listings/ak-47-redline?wear=ft",
        "/v1/orders",
        "/v1/orders/ord_1",
        "/v1/account/balance",
    ] {
        let response = envoy.check(get(target).bearer(&secret).build()).await;
        assert_eq!(
            upstream_headers(allowed(&response))["x-keyward-scopes"],
            "read",
            "{target}"
        );
    }
    for (method, target) in [("DELETE", "/v1/orders/ord_1"), ("PUT", "/v1/listings/1")] {
        let refused = denied(
            &envoy
                .check(call(method, target).bearer(&secret).build())
                .await,
        );
        assert_eq!(
            (refused.status, &refused.body),
            (
                404,
                &json!({"code": "not_found", "detail": "No such endpoint."})
            ),
            "{method} {target}"
        );
    }
    app.shutdown().await;
}

/// "A key without trading enabled will return `403 trading_not_enabled` when
/// it attempts to call `POST /v1/orders`"; "| `POST /v1/orders` | ❌ | ✅ |".
#[tokio::test]
async fn csboard_key_without_trading_gets_403_trading_not_enabled_on_post_orders() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let (_, read_key) = app.create_key("csboard_user_1", &[]).await;
    let (trading, trading_key) = app.create_key("csboard_user_1", &["trading"]).await;
    let mut envoy = Envoy::of(&app);

    let refused = denied(
        &envoy
            .check(call("POST", "/v1/orders").bearer(&read_key).build())
            .await,
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, trading_not_enabled());
    assert!(!refused.headers.contains_key("www-authenticate"));

    let placed = envoy
        .check(call("POST", "/v1/orders").bearer(&trading_key).build())
        .await;
    assert_eq!(
        upstream_headers(allowed(&placed))["x-keyward-key-id"],
        trading.id
    );
    // A trading key reads as well.
    allowed(
        &envoy
            .check(get("/v1/listings").bearer(&trading_key).build())
            .await,
    );

    // A backend asking keyward directly gets the same code.
    let direct = app
        .authenticate(&format!("Bearer {read_key}"), &["trading"])
        .await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &trading_not_enabled(),
        "trading",
    );
    let direct = check_scope(&mut app, &format!("Bearer {read_key}"), &["trading"]).await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &trading_not_enabled(),
        "trading",
    );
    assert!(
        check_scope(&mut app, &format!("Bearer {trading_key}"), &["trading"])
            .await
            .allowed
    );
    app.shutdown().await;
}

/// "Trading capability is separate from read access and must be explicitly
/// enabled per key on your profile page": the toggle is UpdateKey, and it
/// applies to the very next request (off again, too).
async fn csboard_trading_switched_on_later_with_update_key_applies_to_the_next_call(db: Db) {
    let Some(mut app) = spawn_app_with(db, csboard()).await else {
        return;
    };
    let (key, secret) = app.create_key("csboard_user_1", &[]).await;
    let mut envoy = Envoy::of(&app);
    let place_order = || call("POST", "/v1/orders").bearer(&secret).build();

    assert_eq!(
        denied(&envoy.check(place_order()).await).body,
        trading_not_enabled()
    );

    let credential = format!("Bearer {secret}");
    let direct = check_scope(&mut app, &credential, &["trading"]).await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &trading_not_enabled(),
        "trading",
    );

    let enabled = set_scopes(&mut app, &key, &["trading"]).await;
    assert_eq!(enabled.effective_scopes, ["read", "trading"]);
    assert!(
        check_scope(&mut app, &credential, &["trading"])
            .await
            .allowed
    );
    let placed = envoy.check(place_order()).await;
    assert_eq!(
        upstream_headers(allowed(&placed))["x-keyward-scopes"],
        "read trading"
    );

    set_scopes(&mut app, &key, &[]).await;
    assert_eq!(
        denied(&envoy.check(place_order()).await).body,
        trading_not_enabled()
    );
    allowed(
        &envoy
            .check(get("/v1/listings").bearer(&secret).build())
            .await,
    );
    app.shutdown().await;
}

/// "401 `missing_api_key`: No key provided or key does not start with
/// `csb_pub_`".
#[tokio::test]
async fn csboard_no_key_or_a_key_outside_csb_pub_is_401_missing_api_key() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let mut envoy = Envoy::of(&app);
    let without_prefix = [
        format!("cc_{}", "a".repeat(64)),
        format!("csb_live_{}", "a".repeat(BODY_LENGTH)),
        format!("CSB_PUB_{}", "a".repeat(BODY_LENGTH)),
        "eyJhbGciOiJFUzI1NiJ9.e30.sig".to_owned(),
    ];
    let mut requests = vec![get("/v1/listings"), get("/v1/listings?api_key=")];
    for credential in &without_prefix {
        requests.push(get("/v1/listings").bearer(credential));
        requests.push(get(&format!("/v1/listings?api_key={credential}")));
    }
    for request in requests {
        let refused = denied(&envoy.check(request.build()).await);
        assert_eq!((refused.status, &refused.body), (401, &missing_api_key()));
    }
    let mut direct_credentials = vec![String::new()];
    direct_credentials.extend(without_prefix.iter().map(|c| format!("Bearer {c}")));
    for credential in direct_credentials {
        let direct = app.authenticate(&credential, &["read"]).await;
        assert_same_denial(direct.denial.as_ref(), 401, &missing_api_key(), "");
    }
    app.shutdown().await;
}

/// "401 `invalid_api_key`: Key is not recognised or has been revoked", with
/// the document's own example body. A `csb_pub_` key of the wrong shape is
/// not recognised either.
#[tokio::test]
async fn csboard_unknown_or_revoked_key_is_401_invalid_api_key() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let (key, secret) = app.create_key("csboard_user_1", &[]).await;
    app.revoke("csboard_user_1", &key.id).await;
    let mut envoy = Envoy::of(&app);

    for credential in [
        secret.clone(),
        unissued_key('a'),
        format!("{PREFIX}short"),
        format!("{PREFIX}{}", "-".repeat(BODY_LENGTH)),
    ] {
        let by_header = denied(
            &envoy
                .check(get("/v1/listings").bearer(&credential).build())
                .await,
        );
        assert_eq!(
            (by_header.status, &by_header.body),
            (401, &invalid_api_key())
        );
        let by_query = denied(
            &envoy
                .check(get(&format!("/v1/listings?api_key={credential}")).build())
                .await,
        );
        assert_eq!((by_query.status, &by_query.body), (401, &invalid_api_key()));
        let direct = app
            .authenticate(&format!("Bearer {credential}"), &["read"])
            .await;
        assert_same_denial(direct.denial.as_ref(), 401, &invalid_api_key(), "");
    }
    app.shutdown().await;
}

/// "A compromised key can be revoked instantly from your profile without
/// affecting other keys"; "Create separate keys for separate workloads ...
/// so you can revoke them independently".
async fn csboard_revoking_one_key_is_instant_and_leaves_the_others_working(db: Db) {
    let Some(mut app) = spawn_app_with(db, csboard()).await else {
        return;
    };
    let (dashboard, dashboard_key) = app.create_key("csboard_user_1", &[]).await;
    let (_, buy_bot_key) = app.create_key("csboard_user_1", &["trading"]).await;
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(get("/v1/listings").bearer(&dashboard_key).build())
            .await,
    );

    app.revoke("csboard_user_1", &dashboard.id).await;

    let revoked = denied(
        &envoy
            .check(get("/v1/listings").bearer(&dashboard_key).build())
            .await,
    );
    assert_eq!((revoked.status, &revoked.body), (401, &invalid_api_key()));
    let direct = app
        .authenticate(&format!("Bearer {dashboard_key}"), &["read"])
        .await;
    assert_same_denial(direct.denial.as_ref(), 401, &invalid_api_key(), "");
    assert!(
        app.authenticate(&format!("Bearer {buy_bot_key}"), &["trading"])
            .await
            .allowed
    );
    allowed(
        &envoy
            .check(get("/v1/listings").bearer(&buy_bot_key).build())
            .await,
    );
    allowed(
        &envoy
            .check(call("POST", "/v1/orders").bearer(&buy_bot_key).build())
            .await,
    );
    app.shutdown().await;
}

/// "401 `too_many_failed_auth`: Too many invalid keys from your IP — 5-minute
/// ban applied." How many is too many is not documented; the profile keeps
/// keyward's 10 within a minute.
#[tokio::test]
async fn csboard_too_many_invalid_keys_from_an_ip_ban_it_for_5_minutes() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let (_, secret) = app.create_key("csboard_user_1", &[]).await;
    let mut envoy = Envoy::of(&app);
    let attacker = "203.0.113.9";

    let mut ban_began = tokio::time::Instant::now();
    for attempt in 0u8..10 {
        let guess = unissued_key(char::from(b'a' + attempt));
        // The tenth failure starts the ban.
        ban_began = tokio::time::Instant::now();
        let refused = denied(
            &envoy
                .check(
                    get("/v1/listings")
                        .bearer(&guess)
                        .sent_by_peer(attacker)
                        .build(),
                )
                .await,
        );
        assert_eq!(refused.body, invalid_api_key(), "attempt {attempt}");
    }
    let banned = denied(
        &envoy
            .check(
                get("/v1/listings")
                    .bearer(&secret)
                    .sent_by_peer(attacker)
                    .build(),
            )
            .await,
    );
    assert_eq!(banned.status, 401);
    assert_eq!(
        banned.body,
        json!({"code": "too_many_failed_auth", "detail": "Too many invalid API keys from your IP; try again in 5 minutes."})
    );
    let retry_after: u64 = banned.headers["retry-after"].parse().unwrap();
    // 5 minutes, less what has passed since the ban began.
    assert_seconds_left(retry_after, Duration::from_secs(300), ban_began);
    // A backend passing the client's IP to keyward sees the same ban.
    let direct = app
        .keys
        .authenticate(proto::AuthenticateRequest {
            credential: format!("Bearer {secret}"),
            required_scopes: vec![],
            client_ip: attacker.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_same_denial(direct.denial.as_ref(), 401, &banned.body, "");
    assert_millis_left(
        direct.denial.unwrap().retry_after_ms,
        Duration::from_secs(300),
        ban_began,
    );
    // The ban is the IP's, not the key's.
    allowed(
        &envoy
            .check(
                get("/v1/listings")
                    .bearer(&secret)
                    .sent_by_peer("203.0.113.10")
                    .build(),
            )
            .await,
    );
    // Keys outside the namespace are not attempts at a CSBoard key.
    let other = "203.0.113.11";
    for _ in 0..20 {
        let refused = denied(
            &envoy
                .check(
                    get("/v1/listings")
                        .bearer("not-a-csboard-key")
                        .sent_by_peer(other)
                        .build(),
                )
                .await,
        );
        assert_eq!(refused.body, missing_api_key());
    }
    allowed(
        &envoy
            .check(
                get("/v1/listings")
                    .bearer(&secret)
                    .sent_by_peer(other)
                    .build(),
            )
            .await,
    );
    app.shutdown().await;
}

/// The ban ends, not before its time. Adjusted for the test: the profile's
/// 5 minutes become 5 seconds, so that the test need not wait 5 minutes (and
/// the check that the ban is in force fits inside it on a loaded machine).
#[tokio::test]
async fn csboard_the_ban_lifts_when_its_time_is_over() {
    let ban = Duration::from_secs(5);
    let mut config = csboard();
    config.bans.ban_duration = ban;
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let (_, secret) = app.create_key("csboard_user_1", &[]).await;
    let attacker = "198.51.100.20";
    let from_attacker = async |app: &mut TestApp, credential: &str| {
        app.keys
            .authenticate(proto::AuthenticateRequest {
                credential: format!("Bearer {credential}"),
                required_scopes: vec![],
                client_ip: attacker.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    };
    let mut banned_from = tokio::time::Instant::now();
    for attempt in 0u8..10 {
        // The tenth failure starts the ban.
        banned_from = tokio::time::Instant::now();
        from_attacker(&mut app, &unissued_key(char::from(b'a' + attempt))).await;
    }
    let banned = from_attacker(&mut app, &secret).await;
    assert_eq!(
        reason(&banned),
        proto::denial::Reason::TooManyFailedAttempts
    );
    assert_eq!(banned.denial.unwrap().code, "too_many_failed_auth");

    let lifted = eventually(ban + Duration::from_secs(20), async || {
        let answer = from_attacker(&mut app, &secret).await;
        if answer.allowed {
            assert!(
                banned_from.elapsed() >= ban,
                "the ban lifted {:?} after it began, before its {ban:?}",
                banned_from.elapsed()
            );
        } else {
            assert_eq!(
                reason(&answer),
                proto::denial::Reason::TooManyFailedAttempts
            );
        }
        answer.allowed
    })
    .await;
    assert!(lifted, "the ban is over");
    app.shutdown().await;
}

/// "429 `rate_limit_exceeded`: You have exceeded your per-key request
/// limit." The limit itself is on a page the document links to, not in it;
/// the profile's placeholder is 60 a minute.
#[tokio::test]
async fn csboard_per_key_request_limit_answers_429_rate_limit_exceeded() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let (_, busy_key) = app.create_key("csboard_user_1", &[]).await;
    let (_, quiet_key) = app.create_key("csboard_user_1", &[]).await;
    let mut envoy = Envoy::of(&app);

    let first = envoy
        .check(get("/v1/listings").bearer(&busy_key).build())
        .await;
    let limits = crate::helpers::envoy::response_headers(allowed(&first));
    assert_eq!(limits["x-ratelimit-limit"], "60");
    assert_eq!(limits["x-ratelimit-remaining"], "59");

    // The whole burst passes; then the key is refused. (GCRA refills one
    // request a second, so a slow machine may see a few more pass first;
    // the bound only keeps a broken limit from looping forever.)
    let mut allowed_count = 1;
    let limited = loop {
        let response = envoy
            .check(get("/v1/listings").bearer(&busy_key).build())
            .await;
        if !matches!(
            &response.http_response,
            Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(_))
        ) {
            allowed_count += 1;
            assert!(
                allowed_count <= 120,
                "no limit after {allowed_count} requests"
            );
            continue;
        }
        break denied(&response);
    };
    assert!(allowed_count >= 60, "only {allowed_count} passed");
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.body,
        json!({"code": "rate_limit_exceeded", "detail": "You have exceeded your per-key request limit."})
    );
    let retry_after: u64 = limited.headers["retry-after"].parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
    let direct = app.authenticate(&format!("Bearer {busy_key}"), &[]).await;
    assert_same_denial(direct.denial.as_ref(), 429, &limited.body, "");
    // Per key: another key of the same account is not affected.
    allowed(
        &envoy
            .check(get("/v1/listings").bearer(&quiet_key).build())
            .await,
    );
    app.shutdown().await;
}

/// "Keys ... are scoped to either read-only or trading access": the live
/// catalog has exactly those two, `read` for every key.
#[tokio::test]
async fn csboard_catalog_has_read_for_every_key_and_trading_on_request() {
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let catalog = app
        .keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<(&str, bool, bool)> = catalog
        .scopes
        .iter()
        .map(|s| (s.name.as_str(), s.auto_grant, s.implies.is_empty()))
        .collect();
    assert_eq!(shown, [("read", true, true), ("trading", false, true)]);
    assert!(catalog.presets.is_empty());
    app.shutdown().await;
}

/// A CSBoard replica on a throwaway PostgreSQL that the test stops: once it
/// can no longer prove its view of revocations is current it fails closed,
/// and Envoy's Check for a key it had cached answers 503 in the profile's
/// style (as Authenticate answers UNAVAILABLE with the same text). Returns
/// that denial.
async fn check_during_an_outage(cluster: &ThrowawayCluster) -> Denied {
    let database = Arc::new(TestDatabase::create_postgres(&cluster.admin_url()).await);
    let mut app = spawn_on(database, csboard()).await;
    // Asked until the outage shows: a limit that polling cannot exhaust.
    let key = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "csboard_user_1".into(),
            name: "polled".into(),
            rate_limit: Some(proto::RateLimit {
                requests: u32::MAX,
                per_seconds: 1,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let mut envoy = Envoy::of(&app);
    allowed(&envoy.check(get("/v1/listings").bearer(&key).build()).await);

    cluster.stop();

    let mut refused = None;
    let failed_closed = eventually(Duration::from_secs(40), async || {
        let response = envoy.check(get("/v1/listings").bearer(&key).build()).await;
        if response.status.as_ref().is_some_and(|s| s.code == 0) {
            return false;
        }
        refused = Some(response);
        true
    })
    .await;
    assert!(
        failed_closed,
        "the replica kept allowing without its database"
    );
    let outage = denied(refused.as_ref().unwrap());
    assert_eq!(outage.status, 503, "{outage:?}");
    assert_eq!(
        outage.body,
        json!({"code": "unavailable", "detail": "Authorization is temporarily unavailable; retry shortly."})
    );
    let direct = app.authenticate(&format!("Bearer {key}"), &[]).await;
    assert_eq!(reason(&direct), proto::denial::Reason::Unavailable);
    assert_same_denial(direct.denial.as_ref(), 503, &outage.body, "");
    outage
}

/// "Every error from the API returns a JSON body in this format: { "code":
/// "invalid_api_key", "detail": "Unknown or revoked API key." }": each error
/// keyward answers for CSBoard is exactly `{"code", "detail"}`, the
/// documented ones (401 x3, 403, 429) and keyward's own (400 for a request
/// it cannot read, 404 for an endpoint no route names, 503 when it cannot
/// prove its view of revocations is current: a real outage, through Check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csboard_every_error_is_a_code_detail_json_body() {
    let outage = match ThrowawayCluster::start_or_skip(
        "csboard_every_error_is_a_code_detail_json_body (its 503)",
    ) {
        Some(cluster) => Some(check_during_an_outage(&cluster).await),
        None => None,
    };
    let mut app = spawn_app_with(Db::Sqlite, csboard()).await.unwrap();
    let (_, read_key) = app.create_key("csboard_user_1", &[]).await;
    let limited_key = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "csboard_user_1".into(),
            name: "limited".into(),
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
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(get("/v1/listings").bearer(&limited_key).build())
            .await,
    );
    let attacker = "203.0.113.50";
    for attempt in 0u8..10 {
        let guess = unissued_key(char::from(b'a' + attempt));
        let request = get("/v1/listings").bearer(&guess).sent_by_peer(attacker);
        denied(&envoy.check(request.build()).await);
    }

    let mut errors = Vec::new();
    for (request, status, code) in [
        (
            get("/v1/listings/../orders").bearer(&read_key),
            400,
            "bad_request",
        ),
        (
            call("DELETE", "/v1/listings/1").bearer(&read_key),
            404,
            "not_found",
        ),
        (get("/v1/listings"), 401, "missing_api_key"),
        (
            get("/v1/listings").bearer(&unissued_key('z')),
            401,
            "invalid_api_key",
        ),
        (
            get("/v1/listings").bearer(&read_key).sent_by_peer(attacker),
            401,
            "too_many_failed_auth",
        ),
        (
            call("POST", "/v1/orders").bearer(&read_key),
            403,
            "trading_not_enabled",
        ),
        (
            get("/v1/listings").bearer(&limited_key),
            429,
            "rate_limit_exceeded",
        ),
    ] {
        let error = denied(&envoy.check(request.build()).await);
        assert_eq!(
            (error.status, error.body["code"].as_str()),
            (status, Some(code))
        );
        errors.push(error);
    }
    if let Some(outage) = outage {
        errors.push(outage);
    }
    for error in errors {
        let fields: Vec<&str> = error
            .body
            .as_object()
            .expect("a JSON object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["code", "detail"],
            "{}: {}",
            error.status,
            error.body
        );
        assert!(error.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(error.headers["content-type"], "application/json");
    }
    app.shutdown().await;
}

/// The profile page's key actions over keyward's HTTP API (the routes are
/// keyward's choice, the document names none): "Generate key" with a label,
/// the key list, "toggle Trading enabled" (a boolean field granting
/// `trading`), and revoking, each taking effect on the very next request
/// through Envoy. The dashboard backend calls with a service token naming
/// the user's account.
#[tokio::test]
async fn csboard_profile_page_actions_over_keywards_http_api() {
    use crate::helpers::http_api::send;
    const DASHBOARD: &str = "kwt_csboard_dashboard_test";
    let mut config = csboard();
    config.auth = Config::parse(
        &format!(
            "[auth]\nhot_path_requires_token = false\n[[auth.service_tokens]]\nname = \"dashboard\"\nsha256 = \"{}\"\nrpcs = [\"CreateKey\", \"ListKeys\", \"GetKey\", \"UpdateKey\", \"RevokeKey\"]",
            keyward::access_control::token_sha256_hex(DASHBOARD)
        ),
        "csboard-auth.toml",
    )
    .unwrap()
    .auth;
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let http = app.http_addr().unwrap();
    let bearer = format!("Bearer {DASHBOARD}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-keyward-account", "csboard_user_1"),
    ];

    let created = send(
        http,
        "POST",
        "/v1/keys",
        &headers,
        r#"{"label": "price-tracker-prod"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let body = created.json();
    assert_eq!(body["label"], "price-tracker-prod");
    assert_eq!(body["tradingEnabled"], false);
    let secret = body["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(PREFIX));
    let id = body["id"].as_str().unwrap().to_owned();

    let mut envoy = Envoy::of(&app);
    let order = || call("POST", "/v1/orders").bearer(&secret).build();
    let refused = denied(&envoy.check(order()).await);
    assert_eq!(
        (refused.status, &refused.body),
        (403, &trading_not_enabled())
    );

    let toggled = send(
        http,
        "PATCH",
        &format!("/v1/keys/{id}"),
        &headers,
        r#"{"tradingEnabled": true}"#,
    )
    .await;
    assert_eq!(toggled.status, 200, "{toggled:?}");
    assert_eq!(toggled.json()["tradingEnabled"], true);
    allowed(&envoy.check(order()).await);

    let listed = send(http, "GET", "/v1/keys", &headers, "").await;
    assert_eq!(listed.json()[0]["tradingEnabled"], true);

    let revoked = send(http, "DELETE", &format!("/v1/keys/{id}"), &headers, "").await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    let refused = denied(
        &envoy
            .check(get("/v1/listings").bearer(&secret).build())
            .await,
    );
    assert_eq!((refused.status, &refused.body), (401, &invalid_api_key()));

    // Every error of the HTTP API is the same code/detail body.
    let error = send(
        http,
        "PATCH",
        &format!("/v1/keys/{id}"),
        &headers,
        r#"{"trading": 1}"#,
    )
    .await;
    assert_eq!(error.status, 400, "{error:?}");
    assert!(
        error.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("trading: "),
        "{error:?}"
    );
}
