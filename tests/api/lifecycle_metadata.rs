//! Issue 17, metadata and per-key address allowlists: stored on both
//! databases, returned everywhere a key is, validated with the entry named,
//! forwarded by ext_authz, enforced on Authenticate, CheckScope and Check,
//! and carried to other replicas and WatchRevocations by the change feed.

use std::collections::HashMap;
use std::time::Duration;

use keyward::proto::{self, RevocationEvent};
use prost_types::FieldMask;
use tonic::Streaming;

use crate::helpers::envoy::{Envoy, allowed, config_from, denied, get, upstream_headers};
use crate::helpers::{
    Db, TestApp, TestDatabase, assert_invalid_argument, eventually, reason, spawn_app,
    spawn_app_with, spawn_on, test_config,
};
use crate::on_both_databases;

on_both_databases!(
    metadata_round_trips_through_every_read,
    bad_metadata_is_refused_naming_the_entry_and_nothing_is_written,
    metadata_and_network_changes_reach_watch_revocations,
    allowlists_admit_only_listed_addresses,
    allowlists_are_normalised_and_bad_networks_named,
    denials_from_the_wrong_address_never_ban,
    ext_authz_forwards_metadata_and_enforces_allowlists,
);

type Denial = proto::denial::Reason;

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: strings(paths),
    })
}

async fn create(
    app: &mut TestApp,
    metadata: HashMap<String, String>,
    networks: &[&str],
) -> Result<(proto::Key, String), tonic::Status> {
    let response = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "labelled".into(),
            scopes: strings(&["account:read"]),
            metadata,
            allowed_networks: strings(networks),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((response.key.expect("key"), response.secret))
}

async fn update(
    app: &mut TestApp,
    key_id: &str,
    request: proto::UpdateKeyRequest,
) -> Result<proto::Key, tonic::Status> {
    let response = app
        .keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: key_id.into(),
            ..request
        })
        .await?
        .into_inner();
    Ok(response.key.expect("key"))
}

async fn get_key(app: &mut TestApp, key_id: &str) -> proto::Key {
    app.keys
        .get_key(proto::GetKeyRequest {
            account_id: "acct_1".into(),
            key_id: key_id.into(),
        })
        .await
        .expect("GetKey")
        .into_inner()
        .key
        .expect("key")
}

async fn list_keys(app: &mut TestApp) -> Vec<proto::Key> {
    app.keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct_1".into(),
            include_revoked: true,
            ..Default::default()
        })
        .await
        .expect("ListKeys")
        .into_inner()
        .keys
}

async fn authenticate_from(
    app: &mut TestApp,
    secret: &str,
    client_ip: &str,
) -> proto::AuthenticateResponse {
    app.keys
        .authenticate(proto::AuthenticateRequest {
            credential: secret.into(),
            required_scopes: strings(&["account:read"]),
            client_ip: client_ip.into(),
            ..Default::default()
        })
        .await
        .expect("Authenticate")
        .into_inner()
}

async fn check_scope_from(
    app: &mut TestApp,
    key_id: &str,
    client_ip: &str,
) -> proto::CheckScopeResponse {
    app.keys
        .check_scope(proto::CheckScopeRequest {
            key_id: key_id.into(),
            scopes: strings(&["account:read"]),
            client_ip: client_ip.into(),
            ..Default::default()
        })
        .await
        .expect("CheckScope")
        .into_inner()
}

async fn metadata_round_trips_through_every_read(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let labels = map(&[
        ("plan", "pro"),
        ("region", "eu-west-1"),
        ("team.owner", "ünïcode ok"),
    ]);
    let (created, secret) = create(&mut app, labels.clone(), &[]).await.unwrap();
    assert_eq!(created.metadata, labels, "CreateKey returns it");
    assert_eq!(get_key(&mut app, &created.id).await.metadata, labels);
    assert_eq!(list_keys(&mut app).await[0].metadata, labels);
    let answer = app.authenticate(&secret, &[]).await;
    assert!(answer.allowed);
    assert_eq!(answer.key.unwrap().metadata, labels, "Authenticate's key");
    // Again, from the cache: the reply's key (encoded once per cached key,
    // its last use added per call) is the key GetKey shows, with this use.
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    let hit = app.authenticate(&secret, &[]).await.key.unwrap();
    assert_eq!(hit.metadata, labels, "a cache hit's key");
    let last_used = hit.last_used_at.expect("a cache hit's key shows its use");
    assert!(std::time::SystemTime::try_from(last_used).unwrap() >= before);
    assert_eq!(
        proto::Key {
            last_used_at: None,
            ..hit
        },
        proto::Key {
            last_used_at: None,
            ..get_key(&mut app, &created.id).await
        },
        "Authenticate's key is GetKey's"
    );

    // The mask path replaces the whole map.
    let replaced = map(&[("plan", "enterprise")]);
    let updated = update(
        &mut app,
        &created.id,
        proto::UpdateKeyRequest {
            metadata: replaced.clone(),
            update_mask: mask(&["metadata"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(updated.metadata, replaced);
    assert_eq!(get_key(&mut app, &created.id).await.metadata, replaced);
    let answer = app.authenticate(&secret, &[]).await;
    assert_eq!(
        answer.key.unwrap().metadata,
        replaced,
        "the cache dropped the old map"
    );

    // Without a mask, non-empty metadata counts as set; the name stays.
    let updated = update(
        &mut app,
        &created.id,
        proto::UpdateKeyRequest {
            metadata: map(&[("tier", "2")]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(updated.metadata, map(&[("tier", "2")]));
    assert_eq!(updated.name, "labelled");

    // The mask with an empty map clears it.
    let cleared = update(
        &mut app,
        &created.id,
        proto::UpdateKeyRequest {
            update_mask: mask(&["metadata"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(cleared.metadata.is_empty());
    assert!(get_key(&mut app, &created.id).await.metadata.is_empty());
    app.shutdown().await;
}

async fn bad_metadata_is_refused_naming_the_entry_and_nothing_is_written(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let seventeen: HashMap<String, String> =
        (0..17).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let long_name = "a".repeat(65);
    let long_value = "v".repeat(513);
    let cases: Vec<(HashMap<String, String>, String)> = vec![
        (seventeen, "metadata".into()),
        (map(&[("Plan", "pro")]), r#"metadata["Plan"]"#.into()),
        (map(&[("", "pro")]), r#"metadata[""]"#.into()),
        (map(&[("pl an", "pro")]), r#"metadata["pl an"]"#.into()),
        (map(&[("plan/x", "pro")]), r#"metadata["plan/x"]"#.into()),
        (
            map(&[(&long_name, "x")]),
            format!("metadata[{long_name:?}]"),
        ),
        (map(&[("plan", &long_value)]), r#"metadata["plan"]"#.into()),
        (map(&[("plan", "a\nb")]), r#"metadata["plan"]"#.into()),
        (map(&[("plan", "a\u{0}b")]), r#"metadata["plan"]"#.into()),
        (map(&[("plan", "a\u{9b}b")]), r#"metadata["plan"]"#.into()),
    ];
    for (metadata, field) in &cases {
        let status = create(&mut app, metadata.clone(), &[]).await.unwrap_err();
        assert_invalid_argument(&status, field);
    }
    assert!(list_keys(&mut app).await.is_empty(), "nothing was written");

    // The bounds themselves are fine.
    let sixteen: HashMap<String, String> = (0..16)
        .map(|i| (format!("k{i}"), "v".repeat(512)))
        .collect();
    let (key, _) = create(
        &mut app,
        {
            let mut m = sixteen.clone();
            m.remove("k0");
            m.insert("a".repeat(64), String::new());
            m
        },
        &[],
    )
    .await
    .unwrap();
    let before = get_key(&mut app, &key.id).await;

    for (metadata, field) in &cases {
        let status = update(
            &mut app,
            &key.id,
            proto::UpdateKeyRequest {
                metadata: metadata.clone(),
                update_mask: mask(&["metadata"]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_invalid_argument(&status, field);
    }
    // Mask combinations: a path twice, a sub-path, metadata with a bad name.
    for (paths, field) in [
        (vec!["metadata", "metadata"], "update_mask"),
        (vec!["metadata.plan"], "update_mask"),
        (vec!["allowed_networks", "allowed_networks"], "update_mask"),
        (vec!["name", "metadata"], "name"),
    ] {
        let status = update(
            &mut app,
            &key.id,
            proto::UpdateKeyRequest {
                metadata: map(&[("plan", "pro")]),
                update_mask: mask(&paths),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_invalid_argument(&status, field);
    }
    let after = get_key(&mut app, &key.id).await;
    assert_eq!(after, before, "nothing was written");
    app.shutdown().await;
}

async fn watch(app: &mut TestApp) -> Streaming<RevocationEvent> {
    app.keys
        .watch_revocations(proto::WatchRevocationsRequest {
            account_id: "acct_1".into(),
            ..Default::default()
        })
        .await
        .expect("WatchRevocations")
        .into_inner()
}

async fn next_event(stream: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("an event within 5 s")
            .expect("stream ok")
            .expect("stream open");
        if event.kind != "checkpoint" {
            return event;
        }
    }
}

async fn metadata_and_network_changes_reach_watch_revocations(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, _) = create(&mut app, map(&[("plan", "pro")]), &[])
        .await
        .unwrap();
    let mut stream = watch(&mut app).await;

    update(
        &mut app,
        &key.id,
        proto::UpdateKeyRequest {
            metadata: map(&[("plan", "free")]),
            update_mask: mask(&["metadata"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.kind.as_str(), event.key_id.as_str()),
        ("metadata_changed", &*key.id)
    );

    update(
        &mut app,
        &key.id,
        proto::UpdateKeyRequest {
            allowed_networks: strings(&["10.0.0.0/8"]),
            update_mask: mask(&["allowed_networks"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.kind.as_str(), event.key_id.as_str()),
        ("networks_changed", &*key.id)
    );

    // The same map again changes nothing and logs nothing: the next event
    // is the one after it.
    update(
        &mut app,
        &key.id,
        proto::UpdateKeyRequest {
            metadata: map(&[("plan", "free")]),
            update_mask: mask(&["metadata"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    app.revoke("acct_1", &key.id).await;
    assert_eq!(next_event(&mut stream).await.kind, "revoked");
    app.shutdown().await;
}

async fn allowlists_admit_only_listed_addresses(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = create(
        &mut app,
        HashMap::new(),
        &["203.0.113.0/24", "2001:db8::/32"],
    )
    .await
    .unwrap();
    for address in ["203.0.113.7", "2001:db8::42", "::ffff:203.0.113.9"] {
        let answer = authenticate_from(&mut app, &secret, address).await;
        assert!(answer.allowed, "{address}: {answer:?}");
        assert!(!answer.cacheable, "a key with an allowlist stays remote");
        assert_eq!(
            answer.key.unwrap().allowed_networks,
            strings(&["203.0.113.0/24", "2001:db8::/32"])
        );
        assert!(check_scope_from(&mut app, &key.id, address).await.allowed);
    }
    for address in ["198.51.100.1", "2001:db9::1", ""] {
        let answer = authenticate_from(&mut app, &secret, address).await;
        assert!(!answer.allowed, "{address:?}");
        assert_eq!(reason(&answer), Denial::IpNotAllowed, "{address:?}");
        let denial = answer.denial.unwrap();
        assert_eq!(
            (denial.code.as_str(), denial.http_status),
            ("forbidden", 403)
        );
        assert_eq!(
            denial.message,
            "This API key may not be used from this address."
        );
        let checked = check_scope_from(&mut app, &key.id, address).await;
        assert!(!checked.allowed);
        assert_eq!(checked.denial.unwrap().reason(), Denial::IpNotAllowed);
    }

    // Checked before scopes: the wrong address hears about the address.
    let answer = app
        .keys
        .authenticate(proto::AuthenticateRequest {
            credential: secret.clone(),
            required_scopes: strings(&["traders:write"]),
            client_ip: "198.51.100.1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&answer), Denial::IpNotAllowed);

    // A key without an allowlist is cacheable and works from anywhere.
    let (_, open_secret) = create(&mut app, HashMap::new(), &[]).await.unwrap();
    let answer = authenticate_from(&mut app, &open_secret, "").await;
    assert!(answer.allowed && answer.cacheable, "{answer:?}");

    // Clearing the list opens the key.
    update(
        &mut app,
        &key.id,
        proto::UpdateKeyRequest {
            update_mask: mask(&["allowed_networks"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let answer = authenticate_from(&mut app, &secret, "198.51.100.1").await;
    assert!(answer.allowed && answer.cacheable, "{answer:?}");
    app.shutdown().await;
}

async fn allowlists_are_normalised_and_bad_networks_named(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, _) = create(
        &mut app,
        HashMap::new(),
        &[
            "10.0.0.1",
            " 192.168.0.0/16 ",
            "2001:DB8:0::1",
            "2001:db8:1::/48",
        ],
    )
    .await
    .unwrap();
    let normalised = strings(&[
        "10.0.0.1/32",
        "192.168.0.0/16",
        "2001:db8::1/128",
        "2001:db8:1::/48",
    ]);
    assert_eq!(key.allowed_networks, normalised);
    assert_eq!(
        get_key(&mut app, &key.id).await.allowed_networks,
        normalised
    );

    let thirty_three: Vec<String> = (0..33).map(|i| format!("10.1.0.{i}")).collect();
    let thirty_three: Vec<&str> = thirty_three.iter().map(String::as_str).collect();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["10.0.0.1", "not-an-address"], "allowed_networks[1]"),
        (vec!["10.0.0.1/24"], "allowed_networks[0]"),
        (vec!["10.0.0.0/33"], "allowed_networks[0]"),
        (vec!["2001:db8::/129"], "allowed_networks[0]"),
        (vec!["10.0.0.1:443"], "allowed_networks[0]"),
        (vec![""], "allowed_networks[0]"),
        (vec!["10.0.0.0/8", "10.0.0.0/8"], "allowed_networks[1]"),
        (thirty_three, "allowed_networks"),
    ];
    let before = list_keys(&mut app).await;
    for (networks, field) in &cases {
        let status = create(&mut app, HashMap::new(), networks)
            .await
            .unwrap_err();
        assert_invalid_argument(&status, field);
        let status = update(
            &mut app,
            &key.id,
            proto::UpdateKeyRequest {
                allowed_networks: strings(networks),
                update_mask: mask(&["allowed_networks"]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_invalid_argument(&status, field);
    }
    let status = create(&mut app, HashMap::new(), &["10.0.0.1/24"])
        .await
        .unwrap_err();
    assert!(status.message().contains("10.0.0.0/24"), "{status:?}");
    assert_eq!(list_keys(&mut app).await, before, "nothing was written");
    let thirty_two: Vec<String> = (0..32).map(|i| format!("10.1.0.{i}")).collect();
    let thirty_two: Vec<&str> = thirty_two.iter().map(String::as_str).collect();
    create(&mut app, HashMap::new(), &thirty_two).await.unwrap();
    app.shutdown().await;
}

async fn denials_from_the_wrong_address_never_ban(db: Db) {
    let mut config = test_config();
    config.bans.max_failures = 3;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (_, fenced) = create(&mut app, HashMap::new(), &["10.0.0.0/8"])
        .await
        .unwrap();
    let (_, open) = create(&mut app, HashMap::new(), &[]).await.unwrap();
    for attempt in 0..10 {
        let answer = authenticate_from(&mut app, &fenced, "198.51.100.7").await;
        assert_eq!(reason(&answer), Denial::IpNotAllowed, "attempt {attempt}");
    }
    let answer = authenticate_from(&mut app, &open, "198.51.100.7").await;
    assert!(answer.allowed, "not banned: {answer:?}");
    // The ban itself still works there: three unknown keys start one.
    for attempt in 0..3 {
        let wrong = format!("cc_{:064x}", attempt + 1);
        let answer = authenticate_from(&mut app, &wrong, "198.51.100.7").await;
        assert!(!answer.allowed);
    }
    let answer = authenticate_from(&mut app, &open, "198.51.100.7").await;
    assert_eq!(reason(&answer), Denial::TooManyFailedAttempts);
    app.shutdown().await;
}

const FORWARDING: &str = r#"
    [http]
    forward_metadata = ["plan", "region"]

    [[http.routes]]
    methods = ["GET"]
    path = "/v1/health"
    public = true

    [[http.routes]]
    methods = ["GET"]
    path = "/api/v1/account..."
    scopes = ["account:read"]
"#;

async fn ext_authz_forwards_metadata_and_enforces_allowlists(db: Db) {
    let Some(mut app) = spawn_app_with(db, config_from(FORWARDING)).await else {
        return;
    };
    let (_, secret) = create(
        &mut app,
        map(&[("plan", "pro"), ("tier", "internal")]),
        &["203.0.113.0/24", "2001:db8::/32"],
    )
    .await
    .unwrap();
    let mut envoy = Envoy::of(&app);

    for peer in ["203.0.113.5", "2001:db8::5"] {
        let response = envoy
            .check(
                get("/api/v1/account")
                    .bearer(&secret)
                    .sent_by_peer(peer)
                    .header("x-keyward-meta-plan", "spoofed")
                    .header("x-keyward-meta-region", "spoofed")
                    .header("X-Keyward-Meta-Tier", "spoofed")
                    .build(),
            )
            .await;
        let ok = allowed(&response);
        let set = upstream_headers(ok);
        assert_eq!(set["x-keyward-meta-plan"], "pro", "{peer}");
        assert!(
            !set.contains_key("x-keyward-meta-region"),
            "absent entry: no header"
        );
        assert!(
            !set.contains_key("x-keyward-meta-tier"),
            "not configured: not forwarded"
        );
        let mut removed = ok.headers_to_remove.clone();
        removed.sort();
        assert_eq!(
            removed,
            [
                "authorization",
                "x-keyward-meta-region",
                "x-keyward-meta-tier"
            ],
            "spoofed headers removed; the forwarded one overwritten, not removed"
        );
    }

    // A public route strips them too.
    let response = envoy
        .check(
            get("/v1/health")
                .header("x-keyward-meta-plan", "spoofed")
                .build(),
        )
        .await;
    assert!(
        allowed(&response)
            .headers_to_remove
            .contains(&"x-keyward-meta-plan".to_owned())
    );

    // From elsewhere: 403 with the product's text.
    let response = envoy
        .check(
            get("/api/v1/account")
                .bearer(&secret)
                .sent_by_peer("198.51.100.20")
                .build(),
        )
        .await;
    let refused = denied(&response);
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body,
        serde_json::json!({"error": {"code": "forbidden", "message": "This API key may not be used from this address."}})
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forward_metadata_names_the_entry() {
    for (value, key) in [
        (r#"["plan", "Region"]"#, "http.forward_metadata[1]"),
        (r#"["plan", "plan"]"#, "http.forward_metadata[1]"),
        (r#"[""]"#, "http.forward_metadata[0]"),
    ] {
        let text = format!("[http]\nforward_metadata = {value}\n");
        let error = keyward::config::Config::parse(&text, "test.toml").unwrap_err();
        assert!(error.to_string().contains(key), "{value}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_not_allowed_text_is_configurable() {
    let text = r#"
        [denials.ip_not_allowed]
        code = "ip_blocked"
        message = "Not from here."
        http_status = 404
    "#;
    let mut config = config_from(text);
    config.feed = test_config().feed;
    let Some(mut app) = spawn_app_with(Db::Sqlite, config).await else {
        return;
    };
    let (_, secret) = create(&mut app, HashMap::new(), &["10.0.0.0/8"])
        .await
        .unwrap();
    let denial = authenticate_from(&mut app, &secret, "192.0.2.1")
        .await
        .denial
        .unwrap();
    assert_eq!(
        (
            denial.code.as_str(),
            denial.message.as_str(),
            denial.http_status
        ),
        ("ip_blocked", "Not from here.", 404)
    );
    let error = keyward::config::Config::parse(
        "[denials.ip_not_allowed]\nhttp_status = 429\n",
        "test.toml",
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("denials.ip_not_allowed.http_status"),
        "{error}"
    );
    app.shutdown().await;
}

/// An allowlist change on one replica reaches another that had the key
/// cached as allowed (PostgreSQL: two replicas share one database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_changes_reach_another_replica() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), test_config()).await;
    let mut b = spawn_on(database.clone(), test_config()).await;
    let (key, secret) = create(&mut a, map(&[("plan", "pro")]), &[]).await.unwrap();
    // B caches the key as allowed from anywhere.
    let answer = authenticate_from(&mut b, &secret, "198.51.100.1").await;
    assert!(answer.allowed);
    assert_eq!(answer.key.unwrap().metadata, map(&[("plan", "pro")]));

    update(
        &mut a,
        &key.id,
        proto::UpdateKeyRequest {
            allowed_networks: strings(&["10.0.0.0/8"]),
            metadata: map(&[("plan", "free")]),
            update_mask: mask(&["allowed_networks", "metadata"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || {
            reason(&authenticate_from(&mut b, &secret, "198.51.100.1").await)
                == Denial::IpNotAllowed
        })
        .await,
        "replica B learned of the allowlist"
    );
    let answer = authenticate_from(&mut b, &secret, "10.1.2.3").await;
    assert!(answer.allowed);
    assert_eq!(answer.key.unwrap().metadata, map(&[("plan", "free")]));
    a.shutdown().await;
    b.shutdown().await;
}

/// Runs `keyward keys ARGS --server <app> --json` (management is open on
/// loopback in the test config).
async fn cli_json(app: &TestApp, args: &[&str]) -> Result<serde_json::Value, String> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("keys")
        .args(args)
        .args(["--server", &format!("http://{}", app.addr()), "--json"])
        .env_remove("KEYWARD_TOKEN")
        .output()
        .await
        .unwrap();
    if !output.status.success() {
        return Err(String::from_utf8(output.stderr).unwrap());
    }
    Ok(serde_json::from_slice(&output.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_shows_and_clears_metadata_and_networks() {
    let Some(app) = spawn_app(Db::Sqlite).await else {
        return;
    };
    let created = cli_json(
        &app,
        &[
            "create",
            "--account",
            "acct_1",
            "--name",
            "cli",
            "--meta",
            "plan=pro",
            "--meta",
            "region=eu west",
            "--allow-network",
            "10.0.0.1",
            "--allow-network",
            "2001:db8::/32",
        ],
    )
    .await
    .unwrap();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["key"]["metadata"],
        serde_json::json!({"plan": "pro", "region": "eu west"})
    );
    assert_eq!(
        created["key"]["allowed_networks"],
        serde_json::json!(["10.0.0.1/32", "2001:db8::/32"])
    );
    let listed = cli_json(&app, &["list", "--account", "acct_1"])
        .await
        .unwrap();
    assert_eq!(listed[0]["metadata"]["plan"], "pro");

    let updated = cli_json(
        &app,
        &[
            "update",
            "--account",
            "acct_1",
            "--id",
            &id,
            "--meta",
            "plan=free",
        ],
    )
    .await
    .unwrap();
    assert_eq!(updated["metadata"], serde_json::json!({"plan": "free"}));
    assert_eq!(
        updated["allowed_networks"].as_array().unwrap().len(),
        2,
        "left alone"
    );

    let cleared = cli_json(
        &app,
        &[
            "update",
            "--account",
            "acct_1",
            "--id",
            &id,
            "--clear-meta",
            "--clear-networks",
        ],
    )
    .await
    .unwrap();
    assert_eq!(cleared["metadata"], serde_json::json!({}));
    assert_eq!(cleared["allowed_networks"], serde_json::json!([]));

    let refused = cli_json(
        &app,
        &[
            "update",
            "--account",
            "acct_1",
            "--id",
            &id,
            "--allow-network",
            "10.0.0.1/8",
        ],
    )
    .await
    .unwrap_err();
    assert!(refused.contains("allowed_networks[0]"), "{refused}");
    let refused = cli_json(
        &app,
        &[
            "create",
            "--account",
            "acct_1",
            "--name",
            "x",
            "--meta",
            "plan",
        ],
    )
    .await
    .unwrap_err();
    assert!(refused.contains("NAME=VALUE"), "{refused}");
    app.shutdown().await;
}
