//! The trading journal on `profiles/tradejournal.toml`: one test
//! per statement its scope reference makes, through keyward.v1.KeyService
//! (what its Settings -> API page calls) and the ext_authz Check (what Envoy
//! in front of its API sends); a backend asking keyward directly
//! (Authenticate, CheckScope) gets the same codes, messages, statuses and
//! required scopes. The README's "Products" table maps each statement to
//! its test.

use keyward::config::Config;
use keyward::proto;
use serde_json::{Value, json};

use crate::helpers::envoy::{
    Envoy, allowed, assert_same_denial, call, check_scope, denied, get, profile, upstream_headers,
};
use crate::helpers::{
    Db, TestApp, assert_invalid_argument, assert_shown_once_and_stored_as_sha256, spawn_app_with,
};
use crate::on_both_databases;

on_both_databases!(
    tradejournal_keys_are_tj_keys_shown_once_and_stored_as_sha256,
    tradejournal_presets_read_everything_and_read_write_everything,
);

const PREFIX: &str = "tj_";
const ACCOUNT: &str = "journal_user_1";

/// The resources with a read and a write scope, in the document's order.
const RESOURCES: [&str; 10] = [
    "trades",
    "accounts",
    "balance",
    "goals",
    "protocols",
    "tags",
    "strategies",
    "screenshots",
    "copy_groups",
    "autosync",
];

/// Every scope of the catalog, in the document's order.
fn every_scope() -> Vec<String> {
    let mut scopes = Vec::new();
    for resource in RESOURCES {
        scopes.push(format!("read:{resource}"));
        scopes.push(format!("write:{resource}"));
    }
    scopes.extend(["read:catalog", "read:settings", "write:settings"].map(String::from));
    scopes
}

fn tradejournal() -> Config {
    profile("tradejournal")
}

/// "you get HTTP 403 with error code forbidden_scope and the required scope
/// in error.details.required_scope" (the message is ours).
fn forbidden_scope(required_scope: &str) -> Value {
    json!({"error": {"code": "forbidden_scope",
                     "message": "This API key does not have the scope this request needs.",
                     "details": {"required_scope": required_scope}}})
}

fn unauthorized() -> Value {
    json!({"error": {"code": "unauthorized", "message": "Invalid or missing API key."}})
}

async fn create(app: &mut TestApp, scopes: &[String], preset: &str) -> (proto::Key, String) {
    let created = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: ACCOUNT.into(),
            name: "journal key".into(),
            scopes: scopes.to_vec(),
            preset: preset.into(),
            ..Default::default()
        })
        .await
        .expect("CreateKey")
        .into_inner();
    (created.key.expect("key"), created.secret)
}

/// The document does not describe the key itself; the profile chooses `tj_`
/// and 64 lowercase hex characters, shown once and stored as SHA-256.
async fn tradejournal_keys_are_tj_keys_shown_once_and_stored_as_sha256(db: Db) {
    let Some(mut app) = spawn_app_with(db, tradejournal()).await else {
        return;
    };
    let (key, secret) = app.create_key(ACCOUNT, &["read:trades"]).await;
    let body = secret.strip_prefix(PREFIX).expect("tj_ prefix");
    assert_eq!(body.len(), 64, "{secret}");
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{secret}"
    );
    assert_shown_once_and_stored_as_sha256(&mut app, &key, &secret, PREFIX).await;
    app.shutdown().await;
}

/// "read and write are independent — granting write does not imply read
/// (this lets you create write-only audit loggers)."
#[tokio::test]
async fn tradejournal_read_and_write_are_independent() {
    let mut app = spawn_app_with(Db::Sqlite, tradejournal()).await.unwrap();
    let (logger, logger_secret) = app.create_key(ACCOUNT, &["write:trades"]).await;
    assert_eq!(logger.effective_scopes, ["read:catalog", "write:trades"]);
    let (reader, reader_secret) = app.create_key(ACCOUNT, &["read:trades"]).await;
    assert_eq!(reader.effective_scopes, ["read:catalog", "read:trades"]);
    let mut envoy = Envoy::of(&app);

    allowed(
        &envoy
            .check(
                call("POST", "/api/v1/trades")
                    .bearer(&logger_secret)
                    .build(),
            )
            .await,
    );
    let cannot_read = denied(
        &envoy
            .check(get("/api/v1/trades").bearer(&logger_secret).build())
            .await,
    );
    assert_eq!(
        (cannot_read.status, &cannot_read.body),
        (403, &forbidden_scope("read:trades"))
    );

    allowed(
        &envoy
            .check(get("/api/v1/trades").bearer(&reader_secret).build())
            .await,
    );
    let cannot_write = denied(
        &envoy
            .check(
                call("POST", "/api/v1/trades")
                    .bearer(&reader_secret)
                    .build(),
            )
            .await,
    );
    assert_eq!(cannot_write.body, forbidden_scope("write:trades"));

    // The same independence for a backend asking keyward directly.
    let logger_credential = format!("Bearer {logger_secret}");
    assert!(
        check_scope(&mut app, &logger_credential, &["write:trades"])
            .await
            .allowed
    );
    let direct = check_scope(&mut app, &logger_credential, &["read:trades"]).await;
    assert_eq!(direct.missing_scopes, ["read:trades"]);
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &forbidden_scope("read:trades"),
        "read:trades",
    );
    let direct = app
        .authenticate(&format!("Bearer {reader_secret}"), &["write:trades"])
        .await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &forbidden_scope("write:trades"),
        "write:trades",
    );
    app.shutdown().await;
}

/// "The full scope catalog" and the routes `/api/v1/<resource>`: GET needs
/// `read:<resource>`, POST/PATCH/PUT/DELETE need `write:<resource>`; and
/// "Granular scope means a leaked key only exposes what you granted it".
#[tokio::test]
async fn tradejournal_each_resource_get_needs_read_and_writes_need_write() {
    let mut app = spawn_app_with(Db::Sqlite, tradejournal()).await.unwrap();
    let mut envoy = Envoy::of(&app);
    for resource in RESOURCES {
        let (read_scope, write_scope) = (format!("read:{resource}"), format!("write:{resource}"));
        let (read_key, read_secret) = app.create_key(ACCOUNT, &[&read_scope]).await;
        let (write_key, write_secret) = app.create_key(ACCOUNT, &[&write_scope]).await;
        let collection = format!("/api/v1/{resource}");
        let item = format!("/api/v1/{resource}/item_1");

        for target in [&collection, &item] {
            allowed(&envoy.check(get(target).bearer(&read_secret).build()).await);
            let refused = denied(&envoy.check(get(target).bearer(&write_secret).build()).await);
            assert_eq!(refused.body, forbidden_scope(&read_scope));
        }
        for (method, target) in [
            ("POST", &collection),
            ("PATCH", &item),
            ("PUT", &item),
            ("DELETE", &item),
        ] {
            allowed(
                &envoy
                    .check(call(method, target).bearer(&write_secret).build())
                    .await,
            );
            let refused = denied(
                &envoy
                    .check(call(method, target).bearer(&read_secret).build())
                    .await,
            );
            assert_eq!(
                (refused.status, &refused.body),
                (403, &forbidden_scope(&write_scope)),
                "{method} {target}"
            );
        }
        let direct = app
            .authenticate(&format!("Bearer {write_secret}"), &[&read_scope])
            .await;
        assert_same_denial(
            direct.denial.as_ref(),
            403,
            &forbidden_scope(&read_scope),
            &read_scope,
        );
        let direct = check_scope(&mut app, &format!("Bearer {read_secret}"), &[&write_scope]).await;
        assert_same_denial(
            direct.denial.as_ref(),
            403,
            &forbidden_scope(&write_scope),
            &write_scope,
        );
        // Another resource's scope opens nothing here.
        let other = if resource == "trades" {
            "goals"
        } else {
            "trades"
        };
        let other_scopes = [format!("read:{other}"), format!("write:{other}")];
        let (other_key, other_secret) = create(&mut app, &other_scopes, "").await;
        assert_eq!(
            denied(
                &envoy
                    .check(get(&collection).bearer(&other_secret).build())
                    .await
            )
            .status,
            403
        );
        for key in [read_key, write_key, other_key] {
            app.revoke(ACCOUNT, &key.id).await;
        }
    }
    app.shutdown().await;
}

/// Each row of the scope table, for what it covers below its resource
/// (executions, tags and confirmations on a trade, tag categories, balance
/// events and payouts, goal progress, protocol responses, strategy setups,
/// screenshot files, copy-group members, sync history and triggers, and
/// `PUT` of a trade's tag set needing `write:tags`): each request is allowed
/// with exactly its scope, and refused, naming that scope, with every other
/// scope of the catalog.
#[tokio::test]
async fn tradejournal_each_table_row_covers_its_sub_resources() {
    let mut app = spawn_app_with(Db::Sqlite, tradejournal()).await.unwrap();
    let mut envoy = Envoy::of(&app);
    let cases = [
        // "read:trades: List + read trades, executions, tags, confirmations on a trade."
        ("GET", "/api/v1/trades/t1/executions", "read:trades"),
        ("GET", "/api/v1/trades/t1/tags", "read:trades"),
        ("GET", "/api/v1/trades/t1/confirmations", "read:trades"),
        // "Write: POST / PATCH / DELETE on trades, PUT on per-trade confirmations."
        ("PUT", "/api/v1/trades/t1/confirmations", "write:trades"),
        // "write:tags: full CRUD on both, plus PUT the tag set on a trade."
        ("PUT", "/api/v1/trades/t1/tags", "write:tags"),
        // "read:tags: Tags + tag categories."
        ("GET", "/api/v1/tags/categories", "read:tags"),
        ("POST", "/api/v1/tags/categories", "write:tags"),
        ("DELETE", "/api/v1/tags/categories/c1", "write:tags"),
        // "read:accounts: List + read trading accounts. Write: POST + PATCH."
        ("POST", "/api/v1/accounts", "write:accounts"),
        ("PATCH", "/api/v1/accounts/a1", "write:accounts"),
        // "Balance status, events, payouts, daily snapshots. Write: POST
        // manual balance events and payout requests."
        ("GET", "/api/v1/balance/events", "read:balance"),
        ("GET", "/api/v1/balance/snapshots", "read:balance"),
        ("POST", "/api/v1/balance/events", "write:balance"),
        ("POST", "/api/v1/balance/payouts", "write:balance"),
        // "Goals + period progress history. Full CRUD on write."
        ("GET", "/api/v1/goals/g1/progress", "read:goals"),
        // "Protocol templates + responses. Write: full protocol CRUD plus
        // POST a recorded response."
        ("GET", "/api/v1/protocols/p1/responses", "read:protocols"),
        ("POST", "/api/v1/protocols/p1/responses", "write:protocols"),
        // "Strategies + setups + confirmation templates. Write:
        // POST/PATCH/DELETE strategy with embedded setups upsert."
        ("GET", "/api/v1/strategies/s1/setups", "read:strategies"),
        ("PATCH", "/api/v1/strategies/s1", "write:strategies"),
        // "Download screenshot files. Write: POST multipart upload, DELETE archive."
        ("GET", "/api/v1/screenshots/sc1/file", "read:screenshots"),
        ("POST", "/api/v1/screenshots", "write:screenshots"),
        ("DELETE", "/api/v1/screenshots/sc1", "write:screenshots"),
        // "Copy trading groups + members. Write: full CRUD on the group plus
        // PUT the member set."
        ("GET", "/api/v1/copy_groups/g1/members", "read:copy_groups"),
        ("PUT", "/api/v1/copy_groups/g1/members", "write:copy_groups"),
        // "Auto-sync connection status + sync history. Write: trigger a manual sync."
        ("GET", "/api/v1/autosync/history", "read:autosync"),
        ("POST", "/api/v1/autosync/sync", "write:autosync"),
    ];
    for (method, target, scope) in cases {
        let (only, only_secret) = app.create_key(ACCOUNT, &[scope]).await;
        allowed(
            &envoy
                .check(call(method, target).bearer(&only_secret).build())
                .await,
        );
        let all_but: Vec<String> = every_scope().into_iter().filter(|s| s != scope).collect();
        let (rest, rest_secret) = create(&mut app, &all_but, "").await;
        let refused = denied(
            &envoy
                .check(call(method, target).bearer(&rest_secret).build())
                .await,
        );
        assert_eq!(
            (refused.status, &refused.body),
            (403, &forbidden_scope(scope)),
            "{method} {target}"
        );
        let direct = app
            .authenticate(&format!("Bearer {rest_secret}"), &[scope])
            .await;
        assert_same_denial(direct.denial.as_ref(), 403, &forbidden_scope(scope), scope);
        app.revoke(ACCOUNT, &only.id).await;
        app.revoke(ACCOUNT, &rest.id).await;
    }
    app.shutdown().await;
}

/// "read:catalog ... Granted automatically to every key. There is no
/// write:catalog — catalog data is platform-managed."
#[tokio::test]
async fn tradejournal_every_key_reads_the_catalog_and_no_key_writes_it() {
    let mut app = spawn_app_with(Db::Sqlite, tradejournal()).await.unwrap();
    let (key, secret) = app.create_key(ACCOUNT, &[]).await;
    assert!(key.scopes.is_empty());
    assert_eq!(key.effective_scopes, ["read:catalog"]);
    let mut envoy = Envoy::of(&app);
    for target in [
        "/api/v1/catalog/brokers",
        "/api/v1/catalog/instruments?q=ES",
        "/api/v1/catalog/prop_firm_presets",
        "/api/v1/catalog/emotions",
    ] {
        let response = envoy.check(get(target).bearer(&secret).build()).await;
        assert_eq!(
            upstream_headers(allowed(&response))["x-keyward-scopes"],
            "read:catalog",
            "{target}"
        );
    }

    assert!(
        check_scope(&mut app, &format!("Bearer {secret}"), &["read:catalog"])
            .await
            .allowed,
        "granted automatically, for a backend asking directly too"
    );

    let no_write_scope = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: ACCOUNT.into(),
            name: "x".into(),
            scopes: vec!["write:catalog".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid_argument(&no_write_scope, "scopes");

    let (_, everything) = create(&mut app, &[], "read-write-everything").await;
    for method in ["POST", "PATCH", "PUT", "DELETE"] {
        let refused = denied(
            &envoy
                .check(
                    call(method, "/api/v1/catalog/brokers")
                        .bearer(&everything)
                        .build(),
                )
                .await,
        );
        assert_eq!(refused.status, 404, "{method}");
        assert_eq!(
            refused.body,
            json!({"error": {"code": "not_found", "message": "No such endpoint."}})
        );
    }
    app.shutdown().await;
}

/// "read:settings and write:settings are reserved in the scope catalog for
/// future-use settings endpoints ... They are grantable today so existing
/// keys can keep working when those endpoints land."
#[tokio::test]
async fn tradejournal_settings_scopes_are_reserved_but_grantable() {
    let mut app = spawn_app_with(Db::Sqlite, tradejournal()).await.unwrap();
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
    assert_eq!(reserved, ["read:settings", "write:settings"]);

    let (key, secret) = app
        .create_key(ACCOUNT, &["read:settings", "write:settings"])
        .await;
    assert_eq!(key.scopes, ["read:settings", "write:settings"]);
    let (_, without) = app.create_key(ACCOUNT, &["read:trades"]).await;
    let mut envoy = Envoy::of(&app);
    // The day the endpoints land, these keys work without a profile change.
    allowed(
        &envoy
            .check(get("/api/v1/settings/general").bearer(&secret).build())
            .await,
    );
    allowed(
        &envoy
            .check(
                call("PATCH", "/api/v1/settings/calculation")
                    .bearer(&secret)
                    .build(),
            )
            .await,
    );
    let refused = denied(
        &envoy
            .check(get("/api/v1/settings/grouping").bearer(&without).build())
            .await,
    );
    assert_eq!(refused.body, forbidden_scope("read:settings"));
    assert!(
        app.authenticate(&format!("Bearer {secret}"), &["write:settings"])
            .await
            .allowed
    );
    let direct = app
        .authenticate(&format!("Bearer {without}"), &["read:settings"])
        .await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &forbidden_scope("read:settings"),
        "read:settings",
    );
    app.shutdown().await;
}

/// "Read everything — all read:* scopes", "Read + Write everything — all
/// scopes", "Custom — pick exactly which read and write scopes to grant".
async fn tradejournal_presets_read_everything_and_read_write_everything(db: Db) {
    let Some(mut app) = spawn_app_with(db, tradejournal()).await else {
        return;
    };
    let catalog = app
        .keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .unwrap()
        .into_inner();
    let reads: Vec<String> = every_scope()
        .into_iter()
        .filter(|s| s.starts_with("read:"))
        .collect();
    let presets: Vec<(&str, &[String])> = catalog
        .presets
        .iter()
        .map(|p| (p.name.as_str(), p.scopes.as_slice()))
        .collect();
    assert_eq!(
        presets,
        [
            ("read-everything", reads.as_slice()),
            ("read-write-everything", every_scope().as_slice()),
        ]
    );

    let mut envoy = Envoy::of(&app);
    let (agent, agent_secret) = create(&mut app, &[], "read-everything").await;
    assert_eq!(agent.scopes, reads);
    for resource in RESOURCES {
        allowed(
            &envoy
                .check(
                    get(&format!("/api/v1/{resource}"))
                        .bearer(&agent_secret)
                        .build(),
                )
                .await,
        );
    }
    let refused = denied(
        &envoy
            .check(call("POST", "/api/v1/goals").bearer(&agent_secret).build())
            .await,
    );
    assert_eq!(refused.body, forbidden_scope("write:goals"));
    let direct = app
        .authenticate(&format!("Bearer {agent_secret}"), &["write:goals"])
        .await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &forbidden_scope("write:goals"),
        "write:goals",
    );

    let (automation, automation_secret) = create(&mut app, &[], "read-write-everything").await;
    assert_eq!(automation.scopes, every_scope());
    for resource in RESOURCES {
        for method in ["GET", "POST"] {
            allowed(
                &envoy
                    .check(
                        call(method, &format!("/api/v1/{resource}"))
                            .bearer(&automation_secret)
                            .build(),
                    )
                    .await,
            );
        }
    }

    // Custom: exactly the scopes picked, nothing else.
    let picked = ["read:goals".to_owned(), "write:tags".to_owned()];
    let (custom, _) = create(&mut app, &picked, "").await;
    assert_eq!(custom.scopes, picked);
    assert_eq!(
        custom.effective_scopes,
        ["read:catalog", "read:goals", "write:tags"]
    );

    let unknown = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: ACCOUNT.into(),
            name: "x".into(),
            preset: "Custom".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid_argument(&unknown, "preset");
    app.shutdown().await;
}

/// "If a request needs a scope your key does not have, you get HTTP 403
/// with error code forbidden_scope and the required scope in
/// error.details.required_scope." The 401 for a missing or bad key is not
/// documented; the profile uses the same shape without details.
#[tokio::test]
async fn tradejournal_missing_scope_is_403_forbidden_scope_naming_the_required_scope() {
    let mut app = spawn_app_with(Db::Sqlite, tradejournal()).await.unwrap();
    let (_, secret) = app.create_key(ACCOUNT, &["read:goals"]).await;
    let mut envoy = Envoy::of(&app);

    let refused = denied(
        &envoy
            .check(get("/api/v1/protocols").bearer(&secret).build())
            .await,
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, forbidden_scope("read:protocols"));
    assert_eq!(refused.headers["content-type"], "application/json");

    // A backend asking keyward directly gets the same code and scope.
    let direct = app
        .authenticate(&format!("Bearer {secret}"), &["write:goals"])
        .await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &forbidden_scope("write:goals"),
        "write:goals",
    );
    let direct = check_scope(&mut app, &format!("Bearer {secret}"), &["read:protocols"]).await;
    assert_same_denial(
        direct.denial.as_ref(),
        403,
        &forbidden_scope("read:protocols"),
        "read:protocols",
    );

    let unknown = format!("{PREFIX}{}", "0".repeat(64));
    for credential in [None, Some(&unknown)] {
        let request = match credential {
            Some(credential) => get("/api/v1/goals").bearer(credential),
            None => get("/api/v1/goals"),
        };
        let refused = denied(&envoy.check(request.build()).await);
        assert_eq!((refused.status, &refused.body), (401, &unauthorized()));
        let header = credential.map_or_else(String::new, |c| format!("Bearer {c}"));
        let direct = app.authenticate(&header, &["read:goals"]).await;
        assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");
    }
    app.shutdown().await;
}

/// "The live catalog is also available via GET /api/v1/scopes": any valid
/// key may call it (the upstream answers it from ListScopes, keyward's live
/// catalog), and ListScopes lists the document's table.
#[tokio::test]
async fn tradejournal_scopes_endpoint_and_list_scopes_show_the_live_catalog() {
    let mut app = spawn_app_with(Db::Sqlite, tradejournal()).await.unwrap();
    let (_, no_scopes) = app.create_key(ACCOUNT, &[]).await;
    let (revoked, revoked_secret) = app.create_key(ACCOUNT, &["write:trades"]).await;
    app.revoke(ACCOUNT, &revoked.id).await;
    let mut envoy = Envoy::of(&app);
    allowed(
        &envoy
            .check(get("/api/v1/scopes").bearer(&no_scopes).build())
            .await,
    );
    for request in [
        get("/api/v1/scopes"),
        get("/api/v1/scopes").bearer(&revoked_secret),
    ] {
        assert_eq!(denied(&envoy.check(request.build()).await).status, 401);
    }
    let direct = app
        .authenticate(&format!("Bearer {revoked_secret}"), &[])
        .await;
    assert_same_denial(direct.denial.as_ref(), 401, &unauthorized(), "");

    let catalog = app
        .keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = catalog.scopes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, every_scope());
    assert!(catalog.scopes.iter().all(|s| s.implies.is_empty()));
    let auto_granted: Vec<&str> = catalog
        .scopes
        .iter()
        .filter(|s| s.auto_grant)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(auto_granted, ["read:catalog"]);
    assert_eq!(catalog.key_prefix, PREFIX);
    app.shutdown().await;
}

/// "The live catalog is also available via GET /api/v1/scopes", served by
/// keyward's HTTP API from the profile's catalog without a credential, and
/// "you have three presets" in the create body.
#[tokio::test]
async fn tradejournal_scopes_route_and_presets_over_keywards_http_api() {
    use crate::helpers::http_api::send;
    const DASHBOARD: &str = "kwt_tradejournal_dashboard_test";
    let mut config = profile("tradejournal");
    config.auth = Config::parse(
        &format!(
            "[auth]\nhot_path_requires_token = false\n[[auth.service_tokens]]\nname = \"dashboard\"\nsha256 = \"{}\"\nrpcs = [\"CreateKey\", \"ListKeys\"]",
            keyward::access_control::token_sha256_hex(DASHBOARD)
        ),
        "tradejournal-auth.toml",
    )
    .unwrap()
    .auth;
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let http = app.http_addr().unwrap();

    let catalog = send(http, "GET", "/api/v1/scopes", &[], "").await;
    assert_eq!(catalog.status, 200, "{catalog:?}");
    let catalog = catalog.json();
    let names: Vec<&str> = catalog["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"read:trades") && names.contains(&"write:settings"),
        "{names:?}"
    );
    let presets: Vec<&str> = catalog["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(presets, ["read-everything", "read-write-everything"]);

    let bearer = format!("Bearer {DASHBOARD}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-keyward-account", "journal_user_1"),
    ];
    let created = send(
        http,
        "POST",
        "/api/v1/keys",
        &headers,
        r#"{"name": "agent", "preset": "read-everything"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let reads = app
        .authenticate(&format!("Bearer {secret}"), &["read:trades"])
        .await;
    assert!(reads.allowed, "{reads:?}");
    let writes = app
        .authenticate(&format!("Bearer {secret}"), &["write:trades"])
        .await;
    assert!(!writes.allowed, "read everything grants no write");
}
