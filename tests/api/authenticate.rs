//! Authenticate and CheckScope: credential forms, denials and their texts,
//! scopes and implications, bad input.

use keyward::proto::{self, denial::Reason};

use crate::helpers::{
    Db, assert_invalid_argument, eventually, reason, spawn_app, spawn_app_with, test_config,
};
use crate::on_both_databases;

on_both_databases!(
    every_credential_form_is_accepted,
    shape_problems_are_denied_with_the_documented_texts,
    unknown_revoked_and_expired_look_alike,
    write_implies_read_and_missing_scopes_are_named,
    a_huge_credential_is_denied_and_the_server_keeps_serving,
    a_huge_check_scope_credential_is_denied_and_the_server_keeps_serving,
    bad_authenticate_input_is_invalid_argument,
    check_scope_by_id_and_by_credential,
    bad_check_scope_input_is_invalid_argument,
    an_unknown_required_scope_is_a_denial_naming_it,
);

async fn every_credential_form_is_accepted(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["portfolio:read"]).await;

    for credential in [
        secret.clone(),
        format!("Bearer {secret}"),
        format!("bearer {secret}"),
        format!("  BEARER\t{secret} \n"),
        format!("ApiKey {secret}"),
        format!("APIKEY {secret}"),
    ] {
        let response = app.authenticate(&credential, &["portfolio:read"]).await;
        assert!(response.allowed, "{credential:?}: {response:?}");
        assert_eq!(response.key.unwrap().id, key.id);
        assert!(response.denial.is_none());
    }
    app.shutdown().await;
}

async fn shape_problems_are_denied_with_the_documented_texts(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let cases = [
        ("", Reason::MissingCredential),
        ("Bearer ", Reason::MissingCredential),
        ("Basic dXNlcjpwYXNz", Reason::MissingCredential),
        (
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
            Reason::MissingCredential,
        ),
        ("Bearer cc_abc", Reason::MalformedCredential),
        (
            &format!("Bearer cc_{}", "A".repeat(64)),
            Reason::MalformedCredential,
        ),
        (
            &format!("Bearer cc_{}", "a".repeat(65)),
            Reason::MalformedCredential,
        ),
        (&format!("Bearer cc_{}", "0".repeat(64)), Reason::UnknownKey),
    ];
    for (credential, expected) in cases {
        let response = app.authenticate(credential, &[]).await;
        assert!(!response.allowed);
        assert!(response.key.is_none());
        let denial = response.denial.as_ref().unwrap();
        assert_eq!(denial.reason(), expected, "{credential:?}");
        // Carboncopy: 401 {"code":"unauthorized","message":"Invalid or missing API key."}
        assert_eq!(denial.http_status, 401);
        assert_eq!(denial.code, "unauthorized");
        assert_eq!(denial.message, "Invalid or missing API key.");
    }
    app.shutdown().await;
}

/// An unknown, a revoked and an expired key are told apart in `reason`
/// (for the caller's logs) and look alike to the caller's user: the same
/// code, message and HTTP status. The deployment gives a missing key its
/// own text, so an answer that took any text but the invalid one shows.
async fn unknown_revoked_and_expired_look_alike(db: Db) {
    use std::time::{Duration, SystemTime};
    let mut config = test_config();
    config.denials = keyward::config::Config::parse(
        "[denials.missing]\ncode = \"no_key\"\nmessage = \"Send a key.\"\nhttp_status = 400\n",
        "look-alike.toml",
    )
    .expect("valid denials")
    .denials;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &[]).await;
    app.revoke("acct_1", &key.id).await;
    let expires_at = SystemTime::now() + Duration::from_secs(3);
    let expiring = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "expiring".into(),
            expires_at: Some(prost_types::Timestamp::from(expires_at)),
            ..Default::default()
        })
        .await
        .expect("CreateKey")
        .into_inner()
        .secret;

    let revoked = app.authenticate(&secret, &[]).await;
    let unknown = app
        .authenticate(&format!("cc_{}", "f".repeat(64)), &[])
        .await;
    // Asked twice, the same answer (`hot_path.rs` shows that the second
    // comes from the negative cache, without a store read).
    let unknown_again = app
        .authenticate(&format!("cc_{}", "f".repeat(64)), &[])
        .await;
    // Until it expires, the expiring key is allowed (whatever a check
    // answered after expires_at is left to the server's clock); then EXPIRED.
    let mut expired = None;
    let ended = eventually(Duration::from_secs(30), async || {
        let answer = app.authenticate(&expiring, &[]).await;
        let received = SystemTime::now();
        if answer.allowed {
            return false;
        }
        // (Stored to the millisecond.)
        assert!(
            received + Duration::from_millis(1) >= expires_at,
            "denied before it expired: {answer:?}"
        );
        expired = Some(answer);
        true
    })
    .await;
    assert!(ended, "the key never expired");
    let expired = expired.unwrap();

    assert_eq!(reason(&revoked), Reason::Revoked);
    assert_eq!(reason(&unknown), Reason::UnknownKey);
    assert_eq!(reason(&unknown_again), Reason::UnknownKey);
    assert_eq!(reason(&expired), Reason::Expired);
    let shown = |r: &proto::AuthenticateResponse| {
        let d = r.denial.clone().unwrap();
        (d.code, d.message, d.http_status)
    };
    assert_eq!(
        shown(&unknown),
        (
            "unauthorized".to_owned(),
            "Invalid or missing API key.".to_owned(),
            401
        )
    );
    assert_eq!(shown(&revoked), shown(&unknown));
    assert_eq!(shown(&expired), shown(&unknown));
    assert!(revoked.key.is_none(), "a revoked key is not disclosed");
    assert!(expired.key.is_none(), "an expired key is not disclosed");
    app.shutdown().await;
}

async fn write_implies_read_and_missing_scopes_are_named(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &["traders:write"]).await;

    let read = app.authenticate(&secret, &["traders:read"]).await;
    let both = app
        .authenticate(&secret, &["traders:read", "traders:write"])
        .await;
    let denied = app
        .authenticate(&secret, &["traders:read", "orders:read", "portfolio:read"])
        .await;

    assert!(read.allowed && both.allowed);
    assert!(!denied.allowed);
    let denial = denied.denial.unwrap();
    assert_eq!(denial.reason(), Reason::InsufficientScope);
    assert_eq!(denial.http_status, 403);
    assert_eq!(denial.code, "forbidden");
    assert_eq!(denial.message, "This key does not have the required scope.");
    assert_eq!(
        denial.required_scope, "orders:read",
        "the first missing scope"
    );
    assert!(denied.key.is_some(), "the key was identified");
    app.shutdown().await;
}

async fn a_huge_credential_is_denied_and_the_server_keeps_serving(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &[]).await;
    let huge = format!("Bearer cc_{}", "a".repeat(1 << 20));

    let response = app.authenticate(&huge, &[]).await;
    let bare_huge = app.authenticate(&"x".repeat(1 << 20), &[]).await;

    assert_eq!(reason(&response), Reason::MalformedCredential);
    assert_eq!(reason(&bare_huge), Reason::MissingCredential);
    assert!(app.authenticate(&secret, &[]).await.allowed);
    app.shutdown().await;
}

async fn a_huge_check_scope_credential_is_denied_and_the_server_keeps_serving(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &["orders:read"]).await;
    let check = |credential: String| proto::CheckScopeRequest {
        key_id: String::new(),
        credential,
        scopes: vec!["orders:read".into()],
        client_ip: String::new(),
        ..Default::default()
    };

    let mut answers = Vec::new();
    for credential in [
        format!("Bearer cc_{}", "a".repeat(1 << 20)),
        "x".repeat(1 << 20),
    ] {
        let answer = app
            .keys
            .check_scope(check(credential))
            .await
            .expect("a denial is an answer")
            .into_inner();
        answers.push(answer);
    }

    for (answer, expected) in answers
        .iter()
        .zip([Reason::MalformedCredential, Reason::MissingCredential])
    {
        assert!(!answer.allowed);
        assert_eq!(answer.denial.as_ref().unwrap().reason(), expected);
    }
    let still = app
        .keys
        .check_scope(check(secret))
        .await
        .unwrap()
        .into_inner();
    assert!(still.allowed, "{still:?}");
    app.shutdown().await;
}

async fn bad_authenticate_input_is_invalid_argument(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (_, secret) = app.create_key("acct_1", &[]).await;
    let request = |scopes: Vec<String>, client_ip: &str| proto::AuthenticateRequest {
        credential: secret.clone(),
        required_scopes: scopes,
        client_ip: client_ip.into(),
        ..Default::default()
    };

    // Well-formed but not in the catalog is a denial (see
    // an_unknown_required_scope_is_a_denial_naming_it); a name no catalog
    // could hold is the caller's bug.
    let not_a_scope_name = app
        .keys
        .authenticate(request(
            vec!["orders:read".into(), "Orders Admin".into()],
            "",
        ))
        .await
        .unwrap_err();
    let too_many = app
        .keys
        .authenticate(request(vec!["orders:read".into(); 65], ""))
        .await
        .unwrap_err();
    let bad_ip = app
        .keys
        .authenticate(request(vec![], "10.0.0.1:443"))
        .await
        .unwrap_err();

    assert_invalid_argument(&not_a_scope_name, "required_scopes[1]");
    assert!(
        not_a_scope_name
            .message()
            .contains("\"Orders Admin\" is not a scope name"),
        "{}",
        not_a_scope_name.message()
    );
    assert_invalid_argument(&too_many, "required_scopes");
    assert_invalid_argument(&bad_ip, "client_ip");
    let ok = app
        .keys
        .authenticate(request(vec![], " 2001:db8::1 "))
        .await;
    assert!(ok.unwrap().into_inner().allowed);
    app.shutdown().await;
}

async fn check_scope_by_id_and_by_credential(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:write"]).await;
    let check = |key_id: &str, credential: &str, scopes: &[&str]| proto::CheckScopeRequest {
        key_id: key_id.into(),
        credential: credential.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        client_ip: String::new(),
        ..Default::default()
    };

    let by_id = app
        .keys
        .check_scope(check(&key.id, "", &["orders:read"]))
        .await
        .unwrap()
        .into_inner();
    let by_credential = app
        .keys
        .check_scope(check("", &format!("ApiKey {secret}"), &["orders:write"]))
        .await
        .unwrap()
        .into_inner();
    let missing = app
        .keys
        .check_scope(check(
            &key.id,
            "",
            &["portfolio:read", "orders:read", "account:read"],
        ))
        .await
        .unwrap()
        .into_inner();
    let unknown = app
        .keys
        .check_scope(check(
            &format!("key_{}", "0".repeat(32)),
            "",
            &["orders:read"],
        ))
        .await
        .unwrap()
        .into_inner();

    assert!(by_id.allowed && by_id.missing_scopes.is_empty());
    assert!(by_credential.allowed);
    assert!(!missing.allowed);
    assert_eq!(missing.missing_scopes, ["portfolio:read", "account:read"]);
    assert_eq!(missing.denial.unwrap().required_scope, "portfolio:read");
    assert_eq!(unknown.denial.unwrap().reason(), Reason::UnknownKey);

    app.revoke("acct_1", &key.id).await;
    let after_revoke = app
        .keys
        .check_scope(check(&key.id, "", &["orders:read"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after_revoke.denial.unwrap().reason(), Reason::Revoked);
    app.shutdown().await;
}

async fn bad_check_scope_input_is_invalid_argument(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (key, secret) = app.create_key("acct_1", &["orders:read"]).await;
    let cases = [
        (
            proto::CheckScopeRequest {
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            "key_id",
        ),
        (
            proto::CheckScopeRequest {
                key_id: key.id.clone(),
                credential: secret.clone(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            "key_id",
        ),
        (
            proto::CheckScopeRequest {
                key_id: "bogus".into(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            "key_id",
        ),
        (
            proto::CheckScopeRequest {
                key_id: key.id.clone(),
                ..Default::default()
            },
            "scopes",
        ),
        (
            proto::CheckScopeRequest {
                key_id: key.id.clone(),
                scopes: vec!["".into()],
                ..Default::default()
            },
            "scopes[0]",
        ),
        (
            proto::CheckScopeRequest {
                key_id: key.id.clone(),
                scopes: vec!["orders:read".into()],
                client_ip: "not-an-ip".into(),
                ..Default::default()
            },
            "client_ip",
        ),
        (
            proto::CheckScopeRequest {
                key_id: key.id.clone(),
                scopes: vec!["orders:read".into(); 65],
                ..Default::default()
            },
            "scopes",
        ),
    ];
    for (request, field) in cases {
        let status = app.keys.check_scope(request).await.unwrap_err();
        assert_invalid_argument(&status, field);
    }
    app.shutdown().await;
}

/// A service may require a scope this deployment's catalog does not know yet
/// (it shipped first): that is a denial naming the scope, as ext_authz
/// answers it, not an RPC error; and it spends none of the key's budget.
async fn an_unknown_required_scope_is_a_denial_naming_it(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let created = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "limited".into(),
            scopes: vec!["orders:read".into()],
            rate_limit: Some(proto::RateLimit {
                requests: 1,
                per_seconds: 3600,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (key, secret) = (created.key.unwrap(), created.secret);

    let denied = app
        .authenticate(&secret, &["orders:read", "orders:refund", "reports:read"])
        .await;
    let by_id = app
        .keys
        .check_scope(proto::CheckScopeRequest {
            key_id: key.id.clone(),
            scopes: vec![
                "portfolio:read".into(),
                "orders:refund".into(),
                "orders:read".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let last = if secret.ends_with('0') { '1' } else { '0' };
    let other_secret = format!("{}{last}", &secret[..secret.len() - 1]);
    let unknown_key = app.authenticate(&other_secret, &["orders:refund"]).await;
    let allowed = app.authenticate(&secret, &["orders:read"]).await;

    assert!(!denied.allowed);
    let denial = denied.denial.unwrap();
    assert_eq!(denial.reason(), Reason::InsufficientScope);
    assert_eq!(denial.http_status, 403);
    assert_eq!(denial.required_scope, "orders:refund");
    assert_eq!(denied.key.unwrap().id, key.id, "the key was identified");
    assert!(!by_id.allowed);
    assert_eq!(by_id.denial.unwrap().reason(), Reason::InsufficientScope);
    assert_eq!(
        by_id.missing_scopes,
        ["portfolio:read", "orders:refund"],
        "every missing scope, known or not, in the order asked"
    );
    assert_eq!(
        unknown_key.denial.unwrap().reason(),
        Reason::UnknownKey,
        "the credential is judged first"
    );
    assert!(
        allowed.allowed,
        "the denials spent none of the 1-per-hour budget: {allowed:?}"
    );
    app.shutdown().await;
}
