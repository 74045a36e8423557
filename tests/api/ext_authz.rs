//! Envoy ext_authz: `envoy.service.auth.v3.Authorization/Check` against the
//! real server, with CheckRequests built the way Envoy builds them (the
//! lower-case header map including pseudo-headers, the request target with
//! its query string, the method, the peer address).

use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf::value::Kind;
use serde_json::json;

use crate::helpers::envoy::{
    Envoy, allowed, assert_secret_absent, call, config_from, denied, get, response_headers,
    upstream_headers,
};
use crate::helpers::{Db, spawn_app_with};
use crate::on_both_databases;

mod envoy_example;

on_both_databases!(
    an_allowed_request_carries_identity_and_loses_its_credential,
    revoked_and_unknown_keys_are_denied_alike,
    failed_keys_through_ext_authz_ban_the_address,
    rate_limits_through_ext_authz_answer_429,
);

/// Routes for most tests: Carboncopy's shape plus CryptoRobot-style
/// templates, and a public health check.
const ROUTES: &str = r#"
    [http]
    key_header = "x-api-key"
    key_query_parameter = "api_key"
    www_authenticate = 'Bearer realm="test"'

    [[http.routes]]
    methods = ["GET"]
    path = "/v1/health"
    public = true

    [[http.routes]]
    methods = ["GET"]
    path = "/api/v1/portfolio..."
    scopes = ["portfolio:read"]

    [[http.routes]]
    methods = ["POST", "PUT", "PATCH", "DELETE"]
    path = "/api/v1/traders..."
    scopes = ["traders:write"]

    [[http.routes]]
    methods = ["GET"]
    path = "/api/v1/traders..."
    scopes = ["traders:read"]

    [[http.routes]]
    methods = ["GET"]
    path = "/restricted"
    scopes = ["{query.resource}:read"]

    [[http.routes]]
    methods = ["GET"]
    path = "/v2/{resource}..."
    scopes = ["{path.resource}:read"]

    [[http.routes]]
    methods = ["GET"]
    path = "/api/v1/account..."
    scopes = ["account:read"]
"#;

const IDENTITY_HEADERS: [&str; 3] = [
    "x-keyward-key-id",
    "x-keyward-account-id",
    "x-keyward-scopes",
];

fn unauthorized() -> serde_json::Value {
    json!({"error": {"code": "unauthorized", "message": "Invalid or missing API key."}})
}

fn forbidden() -> serde_json::Value {
    json!({"error": {"code": "forbidden", "message": "This key does not have the required scope."}})
}

async fn an_allowed_request_carries_identity_and_loses_its_credential(db: Db) {
    let Some(mut app) = spawn_app_with(db, config_from(ROUTES)).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["traders:write"]).await;
    let mut envoy = Envoy::of(&app);

    let response = envoy
        .check(
            get("/api/v1/traders/42?page=2")
                .bearer(&secret)
                .header("x-keyward-key-id", "key_spoofed")
                .header("x-keyward-account-id", "acct_admin")
                .header("x-keyward-scopes", "everything")
                .build(),
        )
        .await;

    let ok = allowed(&response);
    let set = upstream_headers(ok);
    assert_eq!(set["x-keyward-key-id"], key.id);
    assert_eq!(set["x-keyward-account-id"], "acct_1");
    assert_eq!(set["x-keyward-scopes"], "traders:read traders:write");
    assert_eq!(ok.headers_to_remove, ["authorization"]);
    assert!(
        ok.headers_to_remove
            .iter()
            .all(|h| !IDENTITY_HEADERS.contains(&h.as_str())),
        "Envoy removes after it sets: removing identity headers would drop keyward's own"
    );
    assert!(
        ok.query_parameters_to_remove.is_empty(),
        "no key in the query"
    );
    assert!(
        ok.response_headers_to_add.is_empty(),
        "no rate limit applies"
    );
    let metadata = &response.dynamic_metadata.as_ref().expect("metadata").fields;
    let text = |name: &str| match &metadata[name].kind {
        Some(Kind::StringValue(value)) => value.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(text("key_id"), key.id);
    assert_eq!(text("account_id"), "acct_1");
    assert_eq!(text("scopes"), "traders:read traders:write");
    assert_secret_absent(&response, &secret);

    // The same key through the named header and the query parameter.
    let by_header = envoy
        .check(get("/api/v1/traders").header("X-Api-Key", &secret).build())
        .await;
    assert_eq!(allowed(&by_header).headers_to_remove, ["x-api-key"]);
    let by_query = envoy
        .check(get(&format!("/api/v1/traders?sort=name&api_key={secret}")).build())
        .await;
    let ok = allowed(&by_query);
    assert_eq!(ok.query_parameters_to_remove, ["api_key"]);
    assert!(ok.headers_to_remove.is_empty());
    assert_eq!(upstream_headers(ok)["x-keyward-key-id"], key.id);
    assert_secret_absent(&by_query, &secret);

    // Write implies read; the write route needs write.
    let write = envoy
        .check(call("DELETE", "/api/v1/traders/42").bearer(&secret).build())
        .await;
    allowed(&write);
    app.shutdown().await;
}

async fn revoked_and_unknown_keys_are_denied_alike(db: Db) {
    let Some(mut app) = spawn_app_with(db, config_from(ROUTES)).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["portfolio:read"]).await;
    let mut envoy = Envoy::of(&app);
    let before = envoy
        .check(get("/api/v1/portfolio").bearer(&secret).build())
        .await;
    allowed(&before);

    app.revoke("acct_1", &key.id).await;
    let revoked = denied(
        &envoy
            .check(get("/api/v1/portfolio").bearer(&secret).build())
            .await,
    );
    let unknown = denied(
        &envoy
            .check(
                get("/api/v1/portfolio")
                    .bearer(&format!("cc_{}", "e".repeat(64)))
                    .build(),
            )
            .await,
    );
    assert_eq!(revoked.status, 401);
    assert_eq!(revoked.body, unauthorized());
    assert_eq!(
        (revoked.status, &revoked.body, &revoked.headers),
        (unknown.status, &unknown.body, &unknown.headers),
        "a revoked key looks exactly like an unknown one"
    );
    assert_eq!(
        revoked.headers["www-authenticate"],
        r#"Bearer realm="test""#
    );
    app.shutdown().await;
}

async fn failed_keys_through_ext_authz_ban_the_address(db: Db) {
    let text = format!("{ROUTES}\n[bans]\nmax_failures = 10\nban_seconds = 300\n");
    let Some(mut app) = spawn_app_with(db, config_from(&text)).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &["account:read"]).await;
    let mut envoy = Envoy::of(&app);

    let mut ban_began = tokio::time::Instant::now();
    for attempt in 0..10 {
        let wrong = format!("cc_{:064x}", attempt + 1);
        // The tenth failure starts the ban.
        ban_began = tokio::time::Instant::now();
        let response = envoy
            .check(
                get("/api/v1/account")
                    .bearer(&wrong)
                    .sent_by_peer("203.0.113.9")
                    .build(),
            )
            .await;
        assert_eq!(denied(&response).body, unauthorized(), "attempt {attempt}");
    }
    let banned = denied(
        &envoy
            .check(
                get("/api/v1/account")
                    .bearer(&secret)
                    .sent_by_peer("203.0.113.9")
                    .build(),
            )
            .await,
    );
    assert_eq!(banned.status, 401);
    assert_eq!(banned.body["error"]["code"], "too_many_failed_auth");
    let retry_after: u64 = banned.headers["retry-after"].parse().unwrap();
    crate::helpers::assert_seconds_left(retry_after, Duration::from_secs(300), ban_began);
    assert!(banned.headers.contains_key("www-authenticate"));

    let elsewhere = envoy
        .check(
            get("/api/v1/account")
                .bearer(&secret)
                .sent_by_peer("203.0.113.10")
                .build(),
        )
        .await;
    allowed(&elsewhere);
    app.shutdown().await;
}

async fn rate_limits_through_ext_authz_answer_429(db: Db) {
    let text = format!("{ROUTES}\n[rate_limit]\nrequests = 2\nper_seconds = 60\n");
    let Some(mut app) = spawn_app_with(db, config_from(&text)).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &["account:read"]).await;
    let mut envoy = Envoy::of(&app);

    let first = envoy
        .check(get("/api/v1/account").bearer(&secret).build())
        .await;
    let limits = response_headers(allowed(&first));
    assert_eq!(limits["x-ratelimit-limit"], "2");
    assert_eq!(limits["x-ratelimit-remaining"], "1");
    let reset: u64 = limits["x-ratelimit-reset"].parse().unwrap();
    assert!((1..=30).contains(&reset), "{reset}");
    let second = envoy
        .check(get("/api/v1/account").bearer(&secret).build())
        .await;
    assert_eq!(
        response_headers(allowed(&second))["x-ratelimit-remaining"],
        "0"
    );

    let limited = denied(
        &envoy
            .check(get("/api/v1/account").bearer(&secret).build())
            .await,
    );
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.body,
        json!({"error": {"code": "rate_limit_exceeded", "message": "Rate limit exceeded for this key; retry later."}})
    );
    let retry_after: u64 = limited.headers["retry-after"].parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.headers["x-ratelimit-limit"], "2");
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
    assert!(!limited.headers.contains_key("www-authenticate"));
    assert_eq!(limited.headers["content-type"], "application/json");
    app.shutdown().await;
}

// HTTP-shape tests: they do not depend on the database, so SQLite only.

#[tokio::test]
async fn missing_keys_and_insufficient_scopes_get_the_documented_bodies() {
    let mut app = spawn_app_with(Db::Sqlite, config_from(ROUTES))
        .await
        .unwrap();
    let (_, secret) = app.create_key("acct_1", &["portfolio:read"]).await;
    let mut envoy = Envoy::of(&app);

    let missing = denied(&envoy.check(get("/api/v1/portfolio").build()).await);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body, unauthorized());
    assert_eq!(missing.headers["content-type"], "application/json");
    assert_eq!(
        missing.headers["www-authenticate"],
        r#"Bearer realm="test""#
    );
    assert!(!missing.headers.contains_key("retry-after"));

    let jwt = denied(
        &envoy
            .check(
                get("/api/v1/portfolio")
                    .bearer("eyJhbGciOiJFUzI1NiJ9.e30.sig")
                    .build(),
            )
            .await,
    );
    assert_eq!((jwt.status, &jwt.body), (401, &unauthorized()));

    let scope = envoy
        .check(
            call("POST", "/api/v1/traders/42/follow")
                .bearer(&secret)
                .build(),
        )
        .await;
    assert_secret_absent(&scope, &secret);
    let scope = denied(&scope);
    assert_eq!(scope.status, 403);
    assert_eq!(scope.body, forbidden());
    assert!(!scope.headers.contains_key("www-authenticate"));
    for name in IDENTITY_HEADERS {
        assert!(
            !scope.headers.contains_key(name),
            "a denial names no identity"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn each_error_style_shapes_the_body() {
    // error_object_with_details (the trading journal): the missing scope is named.
    let details = format!(
        "{}\n{ROUTES}",
        "[denials.insufficient_scope]\ncode = \"forbidden_scope\"\nmessage = \"Missing scope.\""
    )
    .replace(
        "[http]\n",
        "[http]\nerror_style = \"error_object_with_details\"\n",
    );
    let mut app = spawn_app_with(Db::Sqlite, config_from(&details))
        .await
        .unwrap();
    let (_, secret) = app.create_key("acct_1", &["portfolio:read"]).await;
    let mut envoy = Envoy::of(&app);
    let denial = denied(
        &envoy
            .check(get("/api/v1/account").bearer(&secret).build())
            .await,
    );
    assert_eq!(
        denial.body,
        json!({"error": {"code": "forbidden_scope", "message": "Missing scope.",
                         "details": {"required_scope": "account:read"}}})
    );
    let missing = denied(&envoy.check(get("/api/v1/account").build()).await);
    assert_eq!(
        missing.body,
        unauthorized(),
        "details only where there are some"
    );
    app.shutdown().await;

    // code_detail (CSBoard).
    let code_detail = format!(
        "{}\n{ROUTES}",
        "[denials.invalid]\ncode = \"invalid_api_key\"\nmessage = \"Unknown or revoked API key.\"\n\
         [denials.missing]\ncode = \"missing_api_key\"\nmessage = \"No API key.\""
    )
    .replace("[http]\n", "[http]\nerror_style = \"code_detail\"\n");
    let app = spawn_app_with(Db::Sqlite, config_from(&code_detail))
        .await
        .unwrap();
    let mut envoy = Envoy::of(&app);
    let unknown = denied(
        &envoy
            .check(
                get("/api/v1/account")
                    .bearer(&format!("cc_{}", "1".repeat(64)))
                    .build(),
            )
            .await,
    );
    assert_eq!(
        unknown.body,
        json!({"code": "invalid_api_key", "detail": "Unknown or revoked API key."})
    );
    let missing = denied(&envoy.check(get("/api/v1/account").build()).await);
    assert_eq!(
        missing.body,
        json!({"code": "missing_api_key", "detail": "No API key."})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn templated_scopes_come_from_the_query_and_the_path() {
    let details = ROUTES.replace(
        "[http]\n",
        "[http]\nerror_style = \"error_object_with_details\"\n",
    );
    let mut app = spawn_app_with(Db::Sqlite, config_from(&details))
        .await
        .unwrap();
    let (_, secret) = app
        .create_key("acct_1", &["orders:read", "account:read"])
        .await;
    let mut envoy = Envoy::of(&app);

    allowed(
        &envoy
            .check(get("/restricted?resource=orders").bearer(&secret).build())
            .await,
    );
    allowed(
        &envoy
            .check(get("/v2/account/summary").bearer(&secret).build())
            .await,
    );

    let other = denied(
        &envoy
            .check(
                get("/restricted?resource=portfolio")
                    .bearer(&secret)
                    .build(),
            )
            .await,
    );
    assert_eq!(other.status, 403);
    assert_eq!(
        other.body["error"]["details"]["required_scope"],
        "portfolio:read"
    );
    let by_path = denied(
        &envoy
            .check(get("/v2/traders/7").bearer(&secret).build())
            .await,
    );
    assert_eq!(
        by_path.body["error"]["details"]["required_scope"],
        "traders:read"
    );

    // A resource the catalog does not have: no key can hold it.
    let unknown = denied(
        &envoy
            .check(
                get("/restricted?resource=strategies")
                    .bearer(&secret)
                    .build(),
            )
            .await,
    );
    assert_eq!(unknown.status, 403);
    assert_eq!(
        unknown.body["error"]["details"]["required_scope"],
        "strategies:read"
    );
    let no_resource = denied(
        &envoy
            .check(get("/restricted").bearer(&secret).build())
            .await,
    );
    assert_eq!(
        no_resource.body["error"]["details"]["required_scope"],
        "{query.resource}:read"
    );
    // Authentication comes first: without a key it is 401, not 403.
    let anonymous = denied(
        &envoy
            .check(get("/restricted?resource=strategies").build())
            .await,
    );
    assert_eq!(anonymous.status, 401);

    // Twice the same parameter: keyward and the upstream could read different ones.
    let ambiguous = denied(
        &envoy
            .check(
                get("/restricted?resource=orders&resource=portfolio")
                    .bearer(&secret)
                    .build(),
            )
            .await,
    );
    assert_eq!(ambiguous.status, 400);

    // A second copy under an encoded name: the upstream decodes names and
    // might read `portfolio`, so it is refused rather than ignored.
    for target in [
        "/restricted?resource=orders&resourc%65=portfolio",
        "/restricted?%72esource=portfolio",
    ] {
        let encoded = denied(&envoy.check(get(target).bearer(&secret).build()).await);
        assert_eq!(encoded.status, 400, "{target}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn public_routes_need_no_key_and_strip_spoofed_identity() {
    let mut app = spawn_app_with(Db::Sqlite, config_from(ROUTES))
        .await
        .unwrap();
    let (_, secret) = app.create_key("acct_1", &[]).await;
    let mut envoy = Envoy::of(&app);

    let anonymous = envoy
        .check(
            get("/v1/health")
                .header("x-keyward-key-id", "key_spoofed")
                .header("x-keyward-scopes", "admin")
                .build(),
        )
        .await;
    let ok = allowed(&anonymous);
    assert!(ok.headers.is_empty(), "no identity on a public route");
    for name in IDENTITY_HEADERS {
        assert!(ok.headers_to_remove.iter().any(|h| h == name), "{name}");
    }
    assert!(anonymous.dynamic_metadata.is_none());

    // A key sent to a public route is not checked, but never goes upstream.
    let with_key = envoy
        .check(
            get(&format!("/v1/health?api_key={secret}"))
                .bearer(&secret)
                .build(),
        )
        .await;
    let ok = allowed(&with_key);
    assert!(ok.headers_to_remove.iter().any(|h| h == "authorization"));
    assert_eq!(ok.query_parameters_to_remove, ["api_key"]);
    // A foreign credential (a JWT for the upstream itself) passes through.
    let with_jwt = envoy
        .check(
            get("/v1/health")
                .bearer("eyJhbGciOiJFUzI1NiJ9.e30.sig")
                .build(),
        )
        .await;
    assert!(
        !allowed(&with_jwt)
            .headers_to_remove
            .iter()
            .any(|h| h == "authorization")
    );
    // Even a garbage key: public means public.
    allowed(
        &envoy
            .check(get("/v1/health").bearer("cc_nonsense").build())
            .await,
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unmatched_routes_follow_the_configured_behaviour() {
    let mut app = spawn_app_with(Db::Sqlite, config_from(ROUTES))
        .await
        .unwrap();
    let (_, secret) = app.create_key("acct_1", &["portfolio:read"]).await;
    let mut envoy = Envoy::of(&app);
    for request in [
        get("/api/v2/portfolio").bearer(&secret),
        get("/api/v1/portfolios").bearer(&secret),
        call("HEAD", "/api/v1/portfolio").bearer(&secret),
        get("/"),
    ] {
        let denial = denied(&envoy.check(request.build()).await);
        assert_eq!(denial.status, 404);
        assert_eq!(
            denial.body,
            json!({"error": {"code": "not_found", "message": "No such endpoint."}})
        );
    }
    app.shutdown().await;

    let any_key = ROUTES.replace("[http]\n", "[http]\nunmatched_route = \"any_key\"\n");
    let mut app = spawn_app_with(Db::Sqlite, config_from(&any_key))
        .await
        .unwrap();
    let (_, secret) = app.create_key("acct_1", &[]).await;
    let mut envoy = Envoy::of(&app);
    allowed(&envoy.check(get("/elsewhere").bearer(&secret).build()).await);
    assert_eq!(
        denied(&envoy.check(get("/elsewhere").build()).await).status,
        401
    );
    app.shutdown().await;

    let public = ROUTES.replace("[http]\n", "[http]\nunmatched_route = \"public\"\n");
    let app = spawn_app_with(Db::Sqlite, config_from(&public))
        .await
        .unwrap();
    let mut envoy = Envoy::of(&app);
    allowed(&envoy.check(get("/elsewhere").build()).await);
    assert_eq!(
        denied(&envoy.check(get("/api/v1/portfolio").build()).await).status,
        401,
        "matched routes still need their key"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_are_denied_with_400() {
    let mut app = spawn_app_with(Db::Sqlite, config_from(ROUTES))
        .await
        .unwrap();
    let (_, secret) = app
        .create_key("acct_1", &["portfolio:read", "account:read"])
        .await;
    let mut envoy = Envoy::of(&app);
    let bad_request =
        json!({"error": {"code": "bad_request", "message": "The request could not be read."}});
    for target in [
        "/api/v1/portfolio/../account",
        "/api/v1/portfolio/..;/account",
        "/api/v1/portfolio/%2e%2e/account",
        "/api/v1/portfolio%2Fx",
        "/api/v1//portfolio",
        "/api/v1/portfolio/%zz",
        "api/v1/portfolio",
        "",
    ] {
        let denial = denied(&envoy.check(get(target).bearer(&secret).build()).await);
        assert_eq!(denial.status, 400, "{target:?}");
        assert_eq!(denial.body, bad_request, "{target:?}");
    }
    let too_long = format!("/api/v1/portfolio/{}", "a".repeat(8 * 1024));
    let denial = denied(&envoy.check(get(&too_long).bearer(&secret).build()).await);
    assert_eq!((denial.status, &denial.body), (400, &bad_request));
    let twice = denied(
        &envoy
            .check(
                get(&format!(
                    "/api/v1/account?api_key={secret}&api_key={secret}"
                ))
                .build(),
            )
            .await,
    );
    assert_eq!(twice.status, 400);
    let undecodable = denied(
        &envoy
            .check(get("/api/v1/account?api_key=%zz").build())
            .await,
    );
    assert_eq!(undecodable.status, 400);

    // Structurally empty checks are answered, not failed.
    let empty = denied(&envoy.check(CheckRequest::default()).await);
    assert_eq!((empty.status, &empty.body), (400, &bad_request));
    let mut no_http = get("/api/v1/account").build();
    no_http.attributes.as_mut().unwrap().request = None;
    assert_eq!(denied(&envoy.check(no_http).await).status, 400);

    // Percent-encoded but unambiguous paths are read decoded.
    allowed(
        &envoy
            .check(get("/api/v1/%70ortfolio").bearer(&secret).build())
            .await,
    );
    app.shutdown().await;
}

/// One load balancer (10.0.0.1) in front of Envoy: Envoy's
/// `xff_num_trusted_hops: 1` and keyward's `trusted_proxy_hops = 1`. The
/// load balancer appends the client's address; Envoy appends its peer, the
/// load balancer, before ext_authz runs; the client is the entry before it.
#[tokio::test]
async fn trusted_proxy_hops_pick_the_client_from_x_forwarded_for() {
    let text = ROUTES.replace("[http]\n", "[http]\ntrusted_proxy_hops = 1\n")
        + "\n[bans]\nmax_failures = 3\n";
    let mut app = spawn_app_with(Db::Sqlite, config_from(&text))
        .await
        .unwrap();
    let (_, secret) = app.create_key("acct_1", &["account:read"]).await;
    let mut envoy = Envoy::of(&app);
    let load_balancer = "10.0.0.1";
    let via_load_balancer = |received: &str| {
        get("/api/v1/account")
            .sent_by_peer(load_balancer)
            .forwarded_for(received)
    };
    for _ in 0..3 {
        // The client writes anything on the left; the load balancer appends the truth.
        let request = via_load_balancer("1.2.3.4, 198.51.100.7")
            .bearer("cc_wrong")
            .build();
        assert_eq!(denied(&envoy.check(request).await).status, 401);
    }
    let banned = denied(
        &envoy
            .check(
                via_load_balancer("5.6.7.8, 198.51.100.7")
                    .bearer(&secret)
                    .build(),
            )
            .await,
    );
    assert_eq!(banned.body["error"]["code"], "too_many_failed_auth");
    // Another client behind the same load balancer is not affected: the ban
    // is not the load balancer's, which Envoy appended last.
    allowed(
        &envoy
            .check(via_load_balancer("198.51.100.8").bearer(&secret).build())
            .await,
    );
    // Requests that reach Envoy without passing the load balancer carry only
    // Envoy's own entry: no client address, and their failures are not
    // pinned on the peer, which would ban everyone behind it.
    for _ in 0..5 {
        let request = get("/api/v1/account")
            .sent_by_peer(load_balancer)
            .bearer("cc_wrong")
            .build();
        assert_eq!(denied(&envoy.check(request).await).status, 401);
    }
    allowed(
        &envoy
            .check(
                get("/api/v1/account")
                    .sent_by_peer(load_balancer)
                    .bearer(&secret)
                    .build(),
            )
            .await,
    );
    allowed(
        &envoy
            .check(via_load_balancer("198.51.100.9").bearer(&secret).build())
            .await,
    );
    app.shutdown().await;
}

#[tokio::test]
async fn dynamic_metadata_can_be_turned_off() {
    let text = ROUTES.replace("[http]\n", "[http]\ndynamic_metadata = false\n");
    let mut app = spawn_app_with(Db::Sqlite, config_from(&text))
        .await
        .unwrap();
    let (key, secret) = app.create_key("acct_1", &["account:read"]).await;
    let mut envoy = Envoy::of(&app);
    let response = envoy
        .check(get("/api/v1/account").bearer(&secret).build())
        .await;
    assert_eq!(
        upstream_headers(allowed(&response))["x-keyward-key-id"],
        key.id
    );
    assert_eq!(response.dynamic_metadata, None);
    app.shutdown().await;
}

#[tokio::test]
async fn raw_header_encoding_reads_like_the_header_map() {
    let mut app = spawn_app_with(Db::Sqlite, config_from(ROUTES))
        .await
        .unwrap();
    let (key, secret) = app.create_key("acct_1", &["account:read"]).await;
    let mut envoy = Envoy::of(&app);
    // Envoy with `encode_raw_headers: true` sends `header_map` instead.
    let mut request = get("/api/v1/account").build();
    let http = request
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.headers.clear();
    http.header_map = Some(core::HeaderMap {
        headers: vec![core::HeaderValue {
            key: "authorization".into(),
            value: String::new(),
            raw_value: format!("Bearer {secret}").into_bytes(),
        }],
    });
    let response = envoy.check(request).await;
    assert_eq!(
        upstream_headers(allowed(&response))["x-keyward-key-id"],
        key.id
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_replica_that_cannot_prove_it_is_current_answers_503() {
    // Dropping the test's own PostgreSQL database cuts the replica off.
    let Some(mut app) = spawn_app_with(Db::Postgres, config_from(ROUTES)).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &["account:read"]).await;
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(get("/api/v1/account").bearer(&secret).build())
            .await,
    );

    let admin = crate::helpers::postgres::admin_url().expect("PostgreSQL is set up");
    let database = app.database.url.rsplit('/').next().unwrap().to_owned();
    let mut admin_connection = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {database} WITH (FORCE)"
    )))
    .execute(&mut admin_connection)
    .await
    .unwrap();

    let mut last = None;
    let unavailable = crate::helpers::eventually(Duration::from_secs(10), async || {
        let response = envoy
            .check(get("/api/v1/account").bearer(&secret).build())
            .await;
        let is_503 = matches!(
            &response.http_response,
            Some(HttpResponse::DeniedResponse(d)) if d.status.as_ref().is_some_and(|s| s.code == 503)
        );
        last = Some(response);
        is_503
    })
    .await;
    assert!(unavailable, "still answering: {last:?}");
    let denial = denied(last.as_ref().unwrap());
    assert_eq!(
        denial.body,
        json!({"error": {"code": "unavailable", "message": "Authorization is temporarily unavailable; retry shortly."}})
    );
    assert_eq!(
        last.unwrap().status.unwrap().code,
        tonic::Code::Unavailable as i32
    );
    // The server cannot flush usage to a dropped database; do not wait for it.
    drop(app);
}

#[tokio::test]
async fn health_and_reflection_know_the_authorization_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let app = spawn_app_with(Db::Sqlite, config_from(ROUTES))
        .await
        .unwrap();
    // The health watchdog publishes statuses just after startup.
    let mut health = app.health.clone();
    let serving = crate::helpers::eventually(Duration::from_secs(5), async || {
        health
            .check(HealthCheckRequest {
                service: "envoy.service.auth.v3.Authorization".into(),
            })
            .await
            .is_ok_and(|reply| reply.into_inner().status() == ServingStatus::Serving)
    })
    .await;
    assert!(
        serving,
        "health reports the Authorization service as serving"
    );

    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let ask = |request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "envoy.service.auth.v3.Authorization".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("unexpected reflection reply");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "envoy.service.auth.v3.Authorization"),
        "{list:?}"
    );
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("the Authorization service's file is served");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    drop(replies);
    app.shutdown().await;
}

/// `keyward serve --log-format json` as an operator runs it: the debug
/// "denied" line of every Check carries the HTTP request's `x-request-id`
/// (what Envoy's access log prints), not the gRPC call's id, for the
/// authenticator's denials and for the route policy's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_log_lines_carry_the_http_request_id() {
    use std::process::Stdio;
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port("127.0.0.1");
    let profile = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/carboncopy.toml");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "json", "--config"])
        .arg(&profile)
        .env(
            "KEYWARD_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("k.db").display()),
        )
        .env("RUST_LOG", "keyward=debug")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listening = crate::helpers::eventually(Duration::from_secs(10), async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(listening, "keyward serve did not start listening");

    let mut envoy = Envoy::on(crate::helpers::connect(addr).await);
    let unknown_key = format!("cc_{}", "d".repeat(64));
    for (request, expected) in [
        (
            get("/api/v1/account")
                .bearer(&unknown_key)
                .request_id("envoy-req-unknown"),
            401,
        ),
        (
            get("/api/v2/account").request_id("envoy-req-unmatched"),
            404,
        ),
        (
            get("/api/v1/portfolio/../account").request_id("envoy-req-malformed"),
            400,
        ),
    ] {
        assert_eq!(denied(&envoy.check(request.build()).await).status, expected);
    }

    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}: {stderr}");

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let denied_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["message"] == "denied")
        .collect();
    assert_eq!(denied_lines.len(), 3, "one line per denial:\n{stderr}");
    for (line, (reason, request_id)) in denied_lines.iter().zip([
        ("unknown_key", "envoy-req-unknown"),
        ("unmatched_route", "envoy-req-unmatched"),
        ("malformed_request", "envoy-req-malformed"),
    ]) {
        assert_eq!(line["reason"], reason, "{line}");
        assert_eq!(line["span"]["name"], "check", "{line}");
        assert_eq!(line["span"]["request_id"], request_id, "{line}");
        // The gRPC call's own id is still there, one span up.
        let grpc = &line["spans"][0];
        assert_eq!(grpc["rpc"], "Check", "{line}");
        assert_ne!(grpc["request_id"], request_id, "{line}");
    }
    assert!(!stderr.contains(&unknown_key), "the key reached the logs");
}
