//! Key management over gRPC: CreateKey, GetKey, ListKeys, UpdateKey,
//! RevokeKey, ListScopes; account rules; bad input.

use std::time::Duration;

use futures_util::StreamExt;
use keyward::proto::{self, denial::Reason};
use sha2::Digest;
use tonic::Code;

use crate::helpers::{
    Db, TestApp, assert_invalid_argument, reason, spawn_app, stored_hashes, stored_key_rows,
};
use crate::on_both_databases;

on_both_databases!(
    create_returns_the_secret_once_and_stores_only_its_hash,
    get_and_list_never_show_the_secret,
    list_hides_revoked_keys_and_pages,
    revoke_is_immediate_and_idempotent,
    another_accounts_key_is_not_found_and_unchanged,
    update_changes_scopes_for_the_very_next_call,
    update_rejects_bad_masks_and_revoked_keys,
    update_of_an_unknown_key_is_not_found_and_changes_nothing,
    list_page_size_above_1000_is_treated_as_1000,
    key_limit_holds_under_concurrency,
    revoked_and_expired_keys_do_not_count_toward_the_limit,
    expired_keys_are_denied,
    bad_create_input_is_refused_and_writes_nothing,
    bad_ids_and_tokens_are_refused,
    list_scopes_shows_the_catalog,
    rate_limit_is_stored_and_updatable,
    bad_update_revoke_and_get_input_is_refused_and_changes_nothing,
    a_key_without_scopes_or_preset_holds_only_the_auto_granted_scopes,
);

async fn count_keys(app: &mut TestApp, account: &str) -> usize {
    app.keys
        .list_keys(proto::ListKeysRequest {
            account_id: account.into(),
            include_revoked: true,
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("ListKeys")
        .into_inner()
        .keys
        .len()
}

async fn assert_still_serving(app: &mut TestApp) {
    let status = app
        .health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

async fn create_returns_the_secret_once_and_stores_only_its_hash(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };

    let (key, secret) = app.create_key("acct_1", &["traders:write"]).await;

    let body = secret.strip_prefix("cc_").expect("cc_ prefix");
    assert_eq!(body.len(), 64);
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert!(key.id.starts_with("key_") && !secret.contains(&key.id[4..]));
    assert_eq!(key.start, secret[..9]);
    assert_eq!(key.scopes, ["traders:write"]);
    assert_eq!(key.effective_scopes, ["traders:read", "traders:write"]);
    assert!(key.created_at.is_some() && key.revoked_at.is_none());

    let hashes = stored_hashes(&app).await;
    assert_eq!(
        hashes,
        vec![sha2::Sha256::digest(secret.as_bytes()).to_vec()]
    );
    for row in stored_key_rows(&app).await {
        assert!(
            !row.contains(body),
            "a stored column holds the secret: {row}"
        );
    }
    app.shutdown().await;
}

async fn get_and_list_never_show_the_secret(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["portfolio:read"]).await;

    let got = app
        .keys
        .get_key(proto::GetKeyRequest {
            account_id: "acct_1".into(),
            key_id: key.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = app
        .keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct_1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let authenticated = app.authenticate(&secret, &[]).await;

    assert_eq!(got.key.as_ref(), Some(&key));
    assert_eq!(listed.keys, vec![key.clone()]);
    for text in [
        format!("{got:?}"),
        format!("{listed:?}"),
        format!("{authenticated:?}"),
    ] {
        assert!(!text.contains(&secret[3..]), "secret leaked: {text}");
    }
    app.shutdown().await;
}

async fn list_hides_revoked_keys_and_pages(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_key("acct_1", &[]).await.0.id);
    }
    app.create_key("acct_other", &[]).await;
    app.revoke("acct_1", &ids[1]).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .keys
            .list_keys(proto::ListKeysRequest {
                account_id: "acct_1".into(),
                include_revoked: false,
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.keys.len() <= 2);
        seen.extend(page.keys.into_iter().map(|k| k.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let active: Vec<String> = ids.iter().filter(|id| **id != ids[1]).cloned().collect();
    assert_eq!(seen, active, "oldest first, revoked hidden, every key once");

    let all = app
        .keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct_1".into(),
            include_revoked: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert!(all.keys[1].revoked_at.is_some());
    app.shutdown().await;
}

async fn revoke_is_immediate_and_idempotent(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:read"]).await;
    assert!(app.authenticate(&secret, &["orders:read"]).await.allowed);

    let first = app.revoke("acct_1", &key.id).await;
    let after = app.authenticate(&secret, &["orders:read"]).await;
    let second = app.revoke("acct_1", &key.id).await;

    assert!(first.revoked_at.is_some());
    assert!(!after.allowed);
    assert_eq!(reason(&after), Reason::Revoked);
    assert_eq!(
        first.revoked_at, second.revoked_at,
        "second revoke changes nothing"
    );
    app.shutdown().await;
}

async fn another_accounts_key_is_not_found_and_unchanged(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_owner", &["orders:read"]).await;
    let intruder = "acct_intruder";

    let get = app
        .keys
        .get_key(proto::GetKeyRequest {
            account_id: intruder.into(),
            key_id: key.id.clone(),
        })
        .await
        .unwrap_err();
    let revoke = app
        .keys
        .revoke_key(proto::RevokeKeyRequest {
            account_id: intruder.into(),
            key_id: key.id.clone(),
        })
        .await
        .unwrap_err();
    let update = app
        .keys
        .update_key(proto::UpdateKeyRequest {
            account_id: intruder.into(),
            key_id: key.id.clone(),
            scopes: vec!["orders:write".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let listed = app
        .keys
        .list_keys(proto::ListKeysRequest {
            account_id: intruder.into(),
            include_revoked: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    for status in [get, revoke, update] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    assert!(listed.keys.is_empty());
    let still = app.authenticate(&secret, &["orders:read"]).await;
    assert!(still.allowed, "the owner's key still works");
    assert_eq!(
        still.key.unwrap().scopes,
        ["orders:read"],
        "and is unchanged"
    );
    app.shutdown().await;
}

async fn update_changes_scopes_for_the_very_next_call(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:read"]).await;
    // Warm the cache so the change has something to invalidate.
    assert!(!app.authenticate(&secret, &["orders:write"]).await.allowed);

    let updated = app
        .keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: key.id.clone(),
            name: "renamed".into(),
            scopes: vec!["orders:write".into()],
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["scopes".into(), "name".into()],
            }),
            rate_limit: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let granted = app.authenticate(&secret, &["orders:write"]).await;

    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.scopes, ["orders:write"]);
    assert!(granted.allowed, "{granted:?}");
    assert_eq!(granted.key.unwrap().name, "renamed");

    // Narrowing applies just as fast.
    app.keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: key.id.clone(),
            scopes: vec!["portfolio:read".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let narrowed = app.authenticate(&secret, &["orders:read"]).await;
    assert_eq!(reason(&narrowed), Reason::InsufficientScope);
    app.shutdown().await;
}

async fn update_rejects_bad_masks_and_revoked_keys(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:read"]).await;
    let update = |mask: Vec<&str>, scopes: Vec<&str>, name: &str| proto::UpdateKeyRequest {
        account_id: "acct_1".into(),
        key_id: key.id.clone(),
        name: name.into(),
        scopes: scopes.into_iter().map(Into::into).collect(),
        update_mask: Some(prost_types::FieldMask {
            paths: mask.into_iter().map(Into::into).collect(),
        }),
        rate_limit: None,
        ..Default::default()
    };

    let cases = [
        (update(vec!["secret"], vec![], ""), "update_mask"),
        (update(vec!["name", "name"], vec![], "x"), "update_mask"),
        (update(vec![], vec![], ""), "update_mask"),
        (update(vec!["name"], vec![], ""), "name"),
        (update(vec!["scopes"], vec!["orders:admin"], ""), "scopes"),
        (
            update(vec!["scopes"], vec!["orders:read", "orders:read"], ""),
            "scopes",
        ),
    ];
    for (request, field) in cases {
        let status = app.keys.update_key(request).await.unwrap_err();
        assert_invalid_argument(&status, field);
    }
    let unchanged = app.authenticate(&secret, &["orders:read"]).await;
    assert_eq!(unchanged.key.unwrap().scopes, ["orders:read"]);

    app.revoke("acct_1", &key.id).await;
    let status = app
        .keys
        .update_key(update(vec!["scopes"], vec!["orders:write"], ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        reason(&app.authenticate(&secret, &[]).await),
        Reason::Revoked
    );
    assert_still_serving(&mut app).await;
    app.create_key("acct_1", &[]).await;
    app.shutdown().await;
}

async fn update_of_an_unknown_key_is_not_found_and_changes_nothing(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:read"]).await;
    // Well-formed, and in no account.
    let unknown = keyward::domain::KeyId::generate().to_string();
    assert_ne!(unknown, key.id);

    let status = app
        .keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: unknown.clone(),
            name: "renamed".into(),
            scopes: vec!["orders:write".into()],
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into(), "scopes".into(), "rate_limit".into()],
            }),
            rate_limit: Some(proto::RateLimit {
                requests: 1,
                per_seconds: 60,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let get = app
        .keys
        .get_key(proto::GetKeyRequest {
            account_id: "acct_1".into(),
            key_id: unknown,
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound, "nothing was created");
    assert_eq!(count_keys(&mut app, "acct_1").await, 1);
    let still = app.authenticate(&secret, &["orders:read"]).await;
    assert!(still.allowed, "{still:?}");
    let still = still.key.unwrap();
    assert_eq!(
        (still.name.as_str(), still.scopes, still.rate_limit),
        ("test key", vec!["orders:read".to_owned()], None),
        "the account's key is unchanged"
    );
    assert_still_serving(&mut app).await;
    app.shutdown().await;
}

/// The documented bound: `page_size` above 1000 (up to i32::MAX) is served
/// as 1000, with a token for the rest.
async fn list_page_size_above_1000_is_treated_as_1000(db: Db) {
    let mut config = crate::helpers::test_config();
    config.max_active_keys_per_account = 2_000;
    let Some(mut app) = crate::helpers::spawn_app_with(db, config).await else {
        return;
    };
    let total = 1_001;
    let creates = futures_util::stream::iter(0..total).map(|i| {
        let mut client = app.keys.clone();
        async move {
            client
                .create_key(proto::CreateKeyRequest {
                    account_id: "acct_many".into(),
                    name: format!("key {i}"),
                    ..Default::default()
                })
                .await
                .expect("CreateKey")
        }
    });
    let created: Vec<_> = creates.buffer_unordered(8).collect().await;
    assert_eq!(created.len(), total);

    for page_size in [1_001, 5_000, i32::MAX] {
        let list = |page_token: String| proto::ListKeysRequest {
            account_id: "acct_many".into(),
            include_revoked: false,
            page_size,
            page_token,
        };
        let first = app
            .keys
            .list_keys(list(String::new()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.keys.len(), 1_000, "page_size {page_size}");
        assert!(!first.next_page_token.is_empty());
        let rest = app
            .keys
            .list_keys(list(first.next_page_token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.keys.len(), 1, "page_size {page_size}");
        assert!(rest.next_page_token.is_empty());
    }
    app.shutdown().await;
}

/// 20 concurrent CreateKey on an empty account, round after round on fresh
/// accounts: every round exactly 10 succeed and 10 are refused.
async fn key_limit_holds_under_concurrency(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    for round in 0..20 {
        let account = format!("acct_race_{round}");
        let creates = (0..20).map(|i| {
            let mut client = app.keys.clone();
            let account = account.clone();
            async move {
                client
                    .create_key(proto::CreateKeyRequest {
                        account_id: account,
                        name: format!("key {i}"),
                        ..Default::default()
                    })
                    .await
            }
        });
        let results = futures_util::future::join_all(creates).await;
        let created = results.iter().filter(|r| r.is_ok()).count();
        let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();

        assert_eq!(created, 10, "round {round}");
        assert_eq!(refused.len(), 10, "round {round}");
        for status in refused {
            assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "round {round}: {status:?}"
            );
            assert!(
                status.message().contains("10 active keys"),
                "round {round}: {}",
                status.message()
            );
        }
        assert_eq!(count_keys(&mut app, &account).await, 10, "round {round}");
    }
    app.shutdown().await;
}

async fn revoked_and_expired_keys_do_not_count_toward_the_limit(db: Db) {
    let mut config = crate::helpers::test_config();
    config.max_active_keys_per_account = 2;
    let Some(mut app) = crate::helpers::spawn_app_with(db, config).await else {
        return;
    };
    let (first, _) = app.create_key("acct_1", &[]).await;
    let expiring = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "short-lived".into(),
            // Long enough that the next create surely runs before it ends,
            // even on a busy machine (a descheduled CI thread included).
            expires_at: Some(in_future(Duration::from_secs(6))),
            ..Default::default()
        })
        .await
        .expect("CreateKey")
        .into_inner();
    let expires_at = expiring.key.unwrap().expires_at.unwrap();
    let full = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "third".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::FailedPrecondition);

    app.revoke("acct_1", &first.id).await;
    let expired =
        std::time::UNIX_EPOCH + Duration::new(expires_at.seconds as u64, expires_at.nanos as u32);
    while std::time::SystemTime::now() <= expired + Duration::from_millis(50) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for name in ["after revoke", "after expiry"] {
        app.keys
            .create_key(proto::CreateKeyRequest {
                account_id: "acct_1".into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("{name}: {s:?}"));
    }
    app.shutdown().await;
}

fn in_future(after: Duration) -> prost_types::Timestamp {
    let at = std::time::SystemTime::now() + after;
    prost_types::Timestamp::from(at)
}

/// A key is allowed until its expiry and denied (EXPIRED) from then on,
/// looking like an unknown key to the caller's user. The expiry is 5 s
/// away, so that the first call surely comes before it; its end is polled.
async fn expired_keys_are_denied(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let expires_at = std::time::SystemTime::now() + Duration::from_secs(5);
    let created = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "expiring".into(),
            scopes: vec!["orders:read".into()],
            expires_at: Some(prost_types::Timestamp::from(expires_at)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret;
    assert!(created.key.unwrap().expires_at.is_some());
    assert!(app.authenticate(&secret, &["orders:read"]).await.allowed);

    let mut expired = None;
    let ended = crate::helpers::eventually(Duration::from_secs(30), async || {
        let answer = app.authenticate(&secret, &["orders:read"]).await;
        if answer.allowed {
            return false;
        }
        // Decided no later than now; stored to the millisecond.
        assert!(
            std::time::SystemTime::now() + Duration::from_millis(1) >= expires_at,
            "denied before its expiry: {answer:?}"
        );
        expired = Some(answer);
        true
    })
    .await;
    assert!(ended, "the key never expired");
    let expired = expired.unwrap();
    let unknown = app
        .authenticate(&format!("cc_{}", "0".repeat(64)), &[])
        .await;

    assert_eq!(reason(&expired), Reason::Expired);
    let (e, u) = (expired.denial.unwrap(), unknown.denial.unwrap());
    assert_eq!(
        (e.code, e.message, e.http_status),
        (u.code, u.message, u.http_status),
        "expired must look like unknown to the caller's user"
    );
    app.shutdown().await;
}

async fn bad_create_input_is_refused_and_writes_nothing(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let base = || proto::CreateKeyRequest {
        account_id: "acct_1".into(),
        name: "ok".into(),
        scopes: vec!["orders:read".into()],
        ..Default::default()
    };
    let past = prost_types::Timestamp::from(std::time::SystemTime::now() - Duration::from_secs(60));
    let cases: Vec<(proto::CreateKeyRequest, &str)> = vec![
        (
            proto::CreateKeyRequest {
                account_id: String::new(),
                ..base()
            },
            "account_id",
        ),
        (
            proto::CreateKeyRequest {
                account_id: "a".repeat(129),
                ..base()
            },
            "account_id",
        ),
        (
            proto::CreateKeyRequest {
                account_id: "has space".into(),
                ..base()
            },
            "account_id",
        ),
        (
            proto::CreateKeyRequest {
                name: String::new(),
                ..base()
            },
            "name",
        ),
        (
            proto::CreateKeyRequest {
                name: "   ".into(),
                ..base()
            },
            "name",
        ),
        (
            proto::CreateKeyRequest {
                name: "n".repeat(101),
                ..base()
            },
            "name",
        ),
        (
            proto::CreateKeyRequest {
                name: "tab\there".into(),
                ..base()
            },
            "name",
        ),
        (
            proto::CreateKeyRequest {
                scopes: vec!["orders:admin".into()],
                ..base()
            },
            "scopes",
        ),
        (
            proto::CreateKeyRequest {
                scopes: vec!["orders:read".into(), "orders:read".into()],
                ..base()
            },
            "scopes",
        ),
        (
            proto::CreateKeyRequest {
                preset: "everything".into(),
                ..base()
            },
            "preset",
        ),
        (
            proto::CreateKeyRequest {
                expires_at: Some(past),
                ..base()
            },
            "expires_at",
        ),
        (
            proto::CreateKeyRequest {
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..base()
            },
            "expires_at",
        ),
        (
            proto::CreateKeyRequest {
                rate_limit: Some(proto::RateLimit {
                    requests: 0,
                    per_seconds: 1,
                }),
                ..base()
            },
            "rate_limit.requests",
        ),
        (
            proto::CreateKeyRequest {
                rate_limit: Some(proto::RateLimit {
                    requests: 5,
                    per_seconds: 0,
                }),
                ..base()
            },
            "rate_limit.per_seconds",
        ),
        (
            proto::CreateKeyRequest {
                rate_limit: Some(proto::RateLimit {
                    requests: 5,
                    per_seconds: 86_401,
                }),
                ..base()
            },
            "rate_limit.per_seconds",
        ),
    ];
    for (request, field) in cases {
        let status = app.keys.create_key(request).await.unwrap_err();
        assert_invalid_argument(&status, field);
    }
    let unknown_scope = app
        .keys
        .create_key(proto::CreateKeyRequest {
            scopes: vec!["orders:admin".into()],
            ..base()
        })
        .await
        .unwrap_err();
    assert!(
        unknown_scope.message().contains("portfolio:read"),
        "names the valid scopes: {}",
        unknown_scope.message()
    );
    // Timestamps are quoted back as received: an all-zero one is what a
    // JavaScript Date becomes through proto-loader, and says so.
    let create_expiring = |expires_at| proto::CreateKeyRequest {
        expires_at: Some(expires_at),
        ..base()
    };
    let zero = app
        .keys
        .create_key(create_expiring(prost_types::Timestamp::default()))
        .await
        .unwrap_err();
    assert_eq!(
        zero.message(),
        "expires_at: must lie in the future; got 1970-01-01T00:00:00Z \
         (an all-zero Timestamp: seconds and nanos were both 0 or unset)"
    );
    let an_hour_ago = prost_types::Timestamp {
        seconds: past.seconds - 3600,
        nanos: 250_000_000,
    };
    let stated = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::new(an_hour_ago.seconds as u64, 250_000_000),
    );
    let in_the_past = app
        .keys
        .create_key(create_expiring(an_hour_ago))
        .await
        .unwrap_err();
    assert_eq!(
        in_the_past.message(),
        format!("expires_at: must lie in the future; got {stated}")
    );
    let bad_nanos = app
        .keys
        .create_key(create_expiring(prost_types::Timestamp {
            seconds: 1,
            nanos: -5,
        }))
        .await
        .unwrap_err();
    assert!(
        bad_nanos.message().ends_with("; got -5"),
        "{}",
        bad_nanos.message()
    );

    assert_eq!(count_keys(&mut app, "acct_1").await, 0, "nothing written");
    assert!(stored_hashes(&app).await.is_empty());
    assert_still_serving(&mut app).await;
    app.shutdown().await;
}

async fn bad_ids_and_tokens_are_refused(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, _) = app.create_key("acct_1", &[]).await;
    let unknown_id = format!("key_{}", "0".repeat(32));

    let not_found = app
        .keys
        .get_key(proto::GetKeyRequest {
            account_id: "acct_1".into(),
            key_id: unknown_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);
    let revoke_unknown = app
        .keys
        .revoke_key(proto::RevokeKeyRequest {
            account_id: "acct_1".into(),
            key_id: unknown_id,
        })
        .await
        .unwrap_err();
    assert_eq!(revoke_unknown.code(), Code::NotFound);

    for bad in ["", "key_", "nope", &"k".repeat(10_000)] {
        let status = app
            .keys
            .get_key(proto::GetKeyRequest {
                account_id: "acct_1".into(),
                key_id: bad.into(),
            })
            .await
            .unwrap_err();
        assert_invalid_argument(&status, "key_id");
        let status = app
            .keys
            .revoke_key(proto::RevokeKeyRequest {
                account_id: "acct_1".into(),
                key_id: bad.into(),
            })
            .await
            .unwrap_err();
        assert_invalid_argument(&status, "key_id");
    }
    for token in ["garbage!", "Zm9v", &"A".repeat(5000)] {
        let status = app
            .keys
            .list_keys(proto::ListKeysRequest {
                account_id: "acct_1".into(),
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid_argument(&status, "page_token");
    }
    let negative = app
        .keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct_1".into(),
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid_argument(&negative, "page_size");
    let no_account = app
        .keys
        .list_keys(proto::ListKeysRequest::default())
        .await
        .unwrap_err();
    assert_invalid_argument(&no_account, "account_id");

    let got = app
        .keys
        .get_key(proto::GetKeyRequest {
            account_id: "acct_1".into(),
            key_id: key.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.key.unwrap().revoked_at, None, "nothing changed");
    assert_still_serving(&mut app).await;
    app.shutdown().await;
}

async fn list_scopes_shows_the_catalog(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
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
            "portfolio:read",
            "traders:read",
            "traders:write",
            "orders:read",
            "orders:write",
            "markets:read",
            "account:read"
        ]
    );
    let traders_write = &catalog.scopes[2];
    assert_eq!(traders_write.implies, ["traders:read"]);
    assert!(catalog.scopes[5].reserved, "markets is coming soon");
    assert_eq!(catalog.key_prefix, "cc_");
    app.shutdown().await;
}

async fn rate_limit_is_stored_and_updatable(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let created = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "limited".into(),
            rate_limit: Some(proto::RateLimit {
                requests: 100,
                per_seconds: 60,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(
        created.rate_limit,
        Some(proto::RateLimit {
            requests: 100,
            per_seconds: 60
        })
    );
    let cleared = app
        .keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: created.id.clone(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rate_limit".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(cleared.rate_limit, None, "back to the default");
    app.shutdown().await;
}

async fn bad_update_revoke_and_get_input_is_refused_and_changes_nothing(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:read"]).await;
    let update = |account: &str,
                  id: &str,
                  name: &str,
                  mask: &[&str],
                  rate_limit: Option<proto::RateLimit>| {
        proto::UpdateKeyRequest {
            account_id: account.into(),
            key_id: id.into(),
            name: name.into(),
            scopes: vec![],
            update_mask: Some(prost_types::FieldMask {
                paths: mask.iter().map(|p| (*p).to_owned()).collect(),
            }),
            rate_limit,
            ..Default::default()
        }
    };
    let limit = |requests, per_seconds| {
        Some(proto::RateLimit {
            requests,
            per_seconds,
        })
    };
    let cases = [
        (update("", &key.id, "x", &["name"], None), "account_id"),
        (
            update("has space", &key.id, "x", &["name"], None),
            "account_id",
        ),
        (update("acct_1", "key_nope", "x", &["name"], None), "key_id"),
        (update("acct_1", "", "x", &["name"], None), "key_id"),
        (
            update("acct_1", &key.id, &"n".repeat(101), &["name"], None),
            "name",
        ),
        (
            update("acct_1", &key.id, "bell\u{7}", &["name"], None),
            "name",
        ),
        (
            update("acct_1", &key.id, "", &["rate_limit"], limit(0, 60)),
            "rate_limit.requests",
        ),
        (
            update("acct_1", &key.id, "", &["rate_limit"], limit(10, 0)),
            "rate_limit.per_seconds",
        ),
        (
            update("acct_1", &key.id, "", &["rate_limit"], limit(10, 86_401)),
            "rate_limit.per_seconds",
        ),
    ];
    for (request, field) in cases {
        let status = app.keys.update_key(request).await.unwrap_err();
        assert_invalid_argument(&status, field);
    }
    for account in ["", "has space", &"a".repeat(129)] {
        let revoke = app
            .keys
            .revoke_key(proto::RevokeKeyRequest {
                account_id: account.into(),
                key_id: key.id.clone(),
            })
            .await
            .unwrap_err();
        assert_invalid_argument(&revoke, "account_id");
        let get = app
            .keys
            .get_key(proto::GetKeyRequest {
                account_id: account.into(),
                key_id: key.id.clone(),
            })
            .await
            .unwrap_err();
        assert_invalid_argument(&get, "account_id");
    }

    let unchanged = app.authenticate(&secret, &["orders:read"]).await;
    assert!(unchanged.allowed, "not revoked");
    let unchanged = unchanged.key.unwrap();
    assert_eq!(
        (unchanged.name.as_str(), unchanged.rate_limit),
        ("test key", None)
    );
    assert_still_serving(&mut app).await;
    app.shutdown().await;
}

/// CreateKey needs neither scopes nor a preset (proto and docs/api.md say
/// so): such a key holds only the catalog's auto-granted scopes. CSBoard
/// grants `read` to every key.
async fn a_key_without_scopes_or_preset_holds_only_the_auto_granted_scopes(db: Db) {
    let Some(mut app) =
        crate::helpers::spawn_app_with(db, crate::helpers::envoy::profile("csboard")).await
    else {
        return;
    };
    let created = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "identity only".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();

    let read = app.authenticate(&created.secret, &["read"]).await;
    let trading = app.authenticate(&created.secret, &["trading"]).await;

    assert!(key.scopes.is_empty(), "{key:?}");
    assert_eq!(key.effective_scopes, ["read"]);
    assert!(read.allowed, "{read:?}");
    assert_eq!(trading.denial.unwrap().reason(), Reason::InsufficientScope);
    app.shutdown().await;
}
