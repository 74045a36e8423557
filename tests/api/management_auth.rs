//! Who may call what: service tokens and user JWTs on management RPCs, the
//! optional token on the hot path, and the open RPCs. Every refusal is
//! checked for its code and message, and for having changed nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyward::access_control::token_sha256_hex;
use keyward::config::Config;
use keyward::proto;
use rcgen::KeyPair;
use serde_json::json;
use tonic::Code;

use crate::helpers::{Db, TestApp, spawn_app_with, test_config};

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "keyward-test";
const DASHBOARD_TOKEN: &str = "kwt_dashboard_test_token";
const AUDITOR_TOKEN: &str = "kwt_auditor_test_token";
const BACKEND_TOKEN: &str = "kwt_backend_test_token";

/// Signing keys made for this test, and the files the server reads.
struct Signers {
    es256: KeyPair,
    ed25519: KeyPair,
    _dir: tempfile::TempDir,
    es256_public_pem: std::path::PathBuf,
    jwks: std::path::PathBuf,
}

fn signers() -> Signers {
    use base64::Engine;
    let es256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let es256_public_pem = dir.path().join("es256.pem");
    std::fs::write(&es256_public_pem, es256.public_key_pem()).unwrap();
    let jwks = dir.path().join("jwks.json");
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ed25519.public_key_raw());
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "ed-1", "use": "sig"}]})
            .to_string(),
    )
    .unwrap();
    Signers {
        es256,
        ed25519,
        _dir: dir,
        es256_public_pem,
        jwks,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(account: &str) -> serde_json::Value {
    json!({"sub": account, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 300})
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn rs256_jwt(claims: &serde_json::Value) -> String {
    let private = std::fs::read(fixture("rs256-test-private.pem")).unwrap();
    let encoding = EncodingKey::from_rsa_pem(&private).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &encoding).unwrap()
}

fn es256_jwt(key: &KeyPair, claims: &serde_json::Value) -> String {
    let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &encoding).unwrap()
}

fn eddsa_jwt(key: &KeyPair, kid: &str, claims: &serde_json::Value) -> String {
    let encoding = EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// The test config with an `[auth]` section (and its key files); user JWTs
/// may call every management RPC but UpdateKey. `hot_path_requires_token`
/// `None` leaves the key out (the default).
fn config_with_auth(signers: &Signers, hot_path_requires_token: Option<bool>) -> Config {
    config_with_jwt_rpcs(
        signers,
        hot_path_requires_token,
        r#"["CreateKey", "RevokeKey", "GetKey", "ListKeys"]"#,
    )
}

/// As `config_with_auth`, with `jwt_rpcs` (a TOML array) as what user JWTs
/// may call.
fn config_with_jwt_rpcs(
    signers: &Signers,
    hot_path_requires_token: Option<bool>,
    jwt_rpcs: &str,
) -> Config {
    let hot_path = hot_path_requires_token
        .map(|required| format!("hot_path_requires_token = {required}"))
        .unwrap_or_default();
    let text = format!(
        r#"
[auth]
{hot_path}

[[auth.service_tokens]]
name = "dashboard"
sha256 = "{dashboard}"
rpcs = ["CreateKey", "RevokeKey", "UpdateKey", "GetKey", "ListKeys"]

[[auth.service_tokens]]
name = "auditor"
sha256 = "{auditor}"
rpcs = ["ListKeys", "GetKey"]

[[auth.service_tokens]]
name = "backend"
sha256 = "{backend}"
rpcs = ["Authenticate", "CheckScope"]

[auth.jwt]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
public_key_files = ["{es256}", "{rs256}"]
jwks_file = "{jwks}"
leeway_seconds = 30
rpcs = {jwt_rpcs}
"#,
        dashboard = token_sha256_hex(DASHBOARD_TOKEN),
        auditor = token_sha256_hex(AUDITOR_TOKEN),
        backend = token_sha256_hex(BACKEND_TOKEN),
        es256 = signers.es256_public_pem.display(),
        rs256 = fixture("rs256-test-public.pem"),
        jwks = signers.jwks.display(),
    );
    let parsed = Config::parse(&text, "auth-test.toml").expect("valid auth config");
    let mut config = test_config();
    config.auth = parsed.auth;
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

fn list(account: &str) -> proto::ListKeysRequest {
    proto::ListKeysRequest {
        account_id: account.into(),
        include_revoked: true,
        ..Default::default()
    }
}

#[track_caller]
fn assert_refused(status: &tonic::Status, code: Code, says: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(says),
        "message should say {says:?}: {:?}",
        status.message()
    );
}

/// How many keys (revoked too) an account has, asked with the dashboard token.
async fn key_count(app: &mut TestApp, account: &str) -> usize {
    app.keys
        .list_keys(bearer(list(account), DASHBOARD_TOKEN))
        .await
        .expect("dashboard may list")
        .into_inner()
        .keys
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_calls_need_a_credential_allowed_that_rpc() {
    let signers = signers();
    let mut app = spawn_app_with(Db::Sqlite, config_with_auth(&signers, Some(false)))
        .await
        .unwrap();

    let missing = app.keys.create_key(create("acct_a")).await.unwrap_err();
    assert_refused(&missing, Code::Unauthenticated, "missing credentials");

    let unknown = app
        .keys
        .create_key(bearer(create("acct_a"), "kwt_not_a_configured_token"))
        .await
        .unwrap_err();
    assert_refused(
        &unknown,
        Code::Unauthenticated,
        "neither a known service token",
    );
    assert!(!unknown.message().contains("kwt_not_a_configured_token"));

    let wrong_rpc = app
        .keys
        .create_key(bearer(create("acct_a"), AUDITOR_TOKEN))
        .await
        .unwrap_err();
    assert_refused(
        &wrong_rpc,
        Code::PermissionDenied,
        "service token \"auditor\" may not call CreateKey",
    );
    assert_eq!(
        key_count(&mut app, "acct_a").await,
        0,
        "refusals wrote nothing"
    );

    let created = app
        .keys
        .create_key(bearer(create("acct_a"), DASHBOARD_TOKEN))
        .await
        .expect("the dashboard may create")
        .into_inner();
    let listed = app
        .keys
        .list_keys(bearer(list("acct_a"), AUDITOR_TOKEN))
        .await
        .expect("the auditor may list")
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    let revoke_by_auditor = app
        .keys
        .revoke_key(bearer(
            proto::RevokeKeyRequest {
                account_id: "acct_a".into(),
                key_id: created.key.unwrap().id,
            },
            AUDITOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_refused(
        &revoke_by_auditor,
        Code::PermissionDenied,
        "may not call RevokeKey",
    );
    // The key still works: the refused revocation changed nothing.
    assert!(
        app.authenticate(&created.secret, &["orders:read"])
            .await
            .allowed
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_jwt_manages_its_own_account_and_nothing_else() {
    let signers = signers();
    let mut app = spawn_app_with(Db::Sqlite, config_with_auth(&signers, Some(false)))
        .await
        .unwrap();
    let jwt = es256_jwt(&signers.es256, &claims("acct_user"));

    let own = app
        .keys
        .create_key(bearer(create("acct_user"), &jwt))
        .await
        .expect("a JWT may create keys in its own account")
        .into_inner();
    let listed = app
        .keys
        .list_keys(bearer(list("acct_user"), &jwt))
        .await
        .expect("and list them")
        .into_inner();
    assert_eq!(listed.keys.len(), 1);

    let elsewhere = app
        .keys
        .create_key(bearer(create("acct_other"), &jwt))
        .await
        .unwrap_err();
    assert_refused(&elsewhere, Code::PermissionDenied, "only its own account");
    let other_list = app
        .keys
        .list_keys(bearer(list("acct_other"), &jwt))
        .await
        .unwrap_err();
    assert_refused(&other_list, Code::PermissionDenied, "only its own account");
    assert_eq!(key_count(&mut app, "acct_other").await, 0);

    // A key of another account cannot be revoked through a JWT either.
    let (victim, victim_secret) = {
        let created = app
            .keys
            .create_key(bearer(create("acct_other"), DASHBOARD_TOKEN))
            .await
            .unwrap()
            .into_inner();
        (created.key.unwrap(), created.secret)
    };
    let revoke = app
        .keys
        .revoke_key(bearer(
            proto::RevokeKeyRequest {
                account_id: "acct_other".into(),
                key_id: victim.id.clone(),
            },
            &jwt,
        ))
        .await
        .unwrap_err();
    assert_refused(&revoke, Code::PermissionDenied, "only its own account");
    assert!(
        app.authenticate(&victim_secret, &["orders:read"])
            .await
            .allowed
    );

    // UpdateKey is not among the RPCs this deployment lets users call.
    let update = app
        .keys
        .update_key(bearer(
            proto::UpdateKeyRequest {
                account_id: "acct_user".into(),
                key_id: own.key.unwrap().id,
                name: "renamed".into(),
                ..Default::default()
            },
            &jwt,
        ))
        .await
        .unwrap_err();
    assert_refused(
        &update,
        Code::PermissionDenied,
        "user JWTs may not call UpdateKey",
    );
    app.shutdown().await;
}

/// GetKey and UpdateKey act inside the account they name, and a user JWT may
/// name only its own: naming another account (with that account's key id)
/// is PERMISSION_DENIED and shows or changes nothing, although the
/// deployment lets users call both RPCs; naming its own account with
/// another account's key id is NOT_FOUND. Its own keys it may read and
/// change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_jwt_cannot_get_or_update_another_accounts_key() {
    let signers = signers();
    let all_five = r#"["CreateKey", "RevokeKey", "UpdateKey", "GetKey", "ListKeys"]"#;
    let mut app = spawn_app_with(
        Db::Sqlite,
        config_with_jwt_rpcs(&signers, Some(false), all_five),
    )
    .await
    .unwrap();
    let jwt = es256_jwt(&signers.es256, &claims("acct_user"));
    let victim = app
        .keys
        .create_key(bearer(create("acct_other"), DASHBOARD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let (victim_key, victim_secret) = (victim.key.unwrap(), victim.secret);
    let get = |account: &str| proto::GetKeyRequest {
        account_id: account.into(),
        key_id: victim_key.id.clone(),
    };
    let update = |account: &str| proto::UpdateKeyRequest {
        account_id: account.into(),
        key_id: victim_key.id.clone(),
        name: "taken over".into(),
        scopes: vec!["orders:write".into()],
        ..Default::default()
    };

    let read = app
        .keys
        .get_key(bearer(get("acct_other"), &jwt))
        .await
        .unwrap_err();
    assert_refused(&read, Code::PermissionDenied, "only its own account");
    assert!(
        !read.message().contains(&victim_key.id) && !read.message().contains(&victim_key.start),
        "the refusal shows nothing of the key: {read:?}"
    );
    let changed = app
        .keys
        .update_key(bearer(update("acct_other"), &jwt))
        .await
        .unwrap_err();
    assert_refused(&changed, Code::PermissionDenied, "only its own account");
    // Its own account with another account's key id: not there.
    let read_as_own = app
        .keys
        .get_key(bearer(get("acct_user"), &jwt))
        .await
        .unwrap_err();
    assert_eq!(read_as_own.code(), Code::NotFound, "{read_as_own:?}");
    let changed_as_own = app
        .keys
        .update_key(bearer(update("acct_user"), &jwt))
        .await
        .unwrap_err();
    assert_eq!(changed_as_own.code(), Code::NotFound, "{changed_as_own:?}");

    // Nothing changed: as stored, and on the hot path.
    let stored = app
        .keys
        .get_key(bearer(get("acct_other"), DASHBOARD_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(stored, victim_key, "the refused UpdateKeys changed the key");
    assert!(
        app.authenticate(&victim_secret, &["orders:read"])
            .await
            .allowed
    );
    assert!(
        !app.authenticate(&victim_secret, &["orders:write"])
            .await
            .allowed,
        "the refused UpdateKey granted a scope"
    );

    // Its own key it may read and change.
    let own = app
        .keys
        .create_key(bearer(create("acct_user"), &jwt))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let got = app
        .keys
        .get_key(bearer(
            proto::GetKeyRequest {
                account_id: "acct_user".into(),
                key_id: own.id.clone(),
            },
            &jwt,
        ))
        .await
        .expect("a JWT may read its own account's key")
        .into_inner();
    assert_eq!(got.key.unwrap().id, own.id);
    let renamed = app
        .keys
        .update_key(bearer(
            proto::UpdateKeyRequest {
                account_id: "acct_user".into(),
                key_id: own.id.clone(),
                name: "renamed".into(),
                ..Default::default()
            },
            &jwt,
        ))
        .await
        .expect("a JWT may change its own account's key")
        .into_inner();
    assert_eq!(renamed.key.unwrap().name, "renamed");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwts_are_unauthenticated_and_change_nothing() {
    let signers = signers();
    let mut app = spawn_app_with(Db::Sqlite, config_with_auth(&signers, Some(false)))
        .await
        .unwrap();
    let stranger = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = claims("acct_user");
        change(&mut claims);
        claims
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("acct_user"),
        &EncodingKey::from_secret(b"shared secret"),
    )
    .unwrap();
    let cases = [
        (
            "expired beyond the leeway",
            es256_jwt(&signers.es256, &with(&|c| c["exp"] = json!(now() - 120))),
            "expired",
        ),
        (
            "signed by another key",
            es256_jwt(&stranger, &claims("acct_user")),
            "signature does not verify",
        ),
        (
            "wrong audience",
            es256_jwt(&signers.es256, &with(&|c| c["aud"] = json!("someone-else"))),
            "audience",
        ),
        (
            "wrong issuer",
            es256_jwt(
                &signers.es256,
                &with(&|c| c["iss"] = json!("https://evil.test")),
            ),
            "issuer",
        ),
        (
            "not valid yet",
            es256_jwt(&signers.es256, &with(&|c| c["nbf"] = json!(now() + 600))),
            "not valid yet",
        ),
        (
            "no subject",
            es256_jwt(
                &signers.es256,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
            "subject claim `sub`",
        ),
        ("symmetric algorithm", hs256, "not accepted"),
        (
            "unknown key id",
            eddsa_jwt(&stranger_ed25519(), "ed-1", &claims("acct_user")),
            "signature does not verify",
        ),
    ];
    for (case, jwt, says) in cases {
        let status = app
            .keys
            .create_key(bearer(create("acct_user"), &jwt))
            .await
            .expect_err(case);
        assert_refused(&status, Code::Unauthenticated, says);
        assert!(
            status.message().starts_with("invalid JWT"),
            "{case}: {status:?}"
        );
        assert!(
            !status.message().contains(&jwt),
            "{case}: the token is not echoed"
        );
    }
    // Within the leeway an expired token still passes (clock skew).
    let skewed = es256_jwt(&signers.es256, &with(&|c| c["exp"] = json!(now() - 5)));
    app.keys
        .list_keys(bearer(list("acct_user"), &skewed))
        .await
        .expect("30 s of leeway covers 5 s of skew");
    assert_eq!(key_count(&mut app, "acct_user").await, 0);
    app.shutdown().await;
}

fn stranger_ed25519() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_jwts_verify_against_the_jwks_file() {
    let signers = signers();
    let mut app = spawn_app_with(Db::Sqlite, config_with_auth(&signers, Some(false)))
        .await
        .unwrap();
    let jwt = eddsa_jwt(&signers.ed25519, "ed-1", &claims("acct_ed"));
    app.keys
        .create_key(bearer(create("acct_ed"), &jwt))
        .await
        .expect("an EdDSA JWT signed by the JWKS key is accepted");
    assert_eq!(key_count(&mut app, "acct_ed").await, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_jwts_verify_against_a_pem_public_key() {
    let signers = signers();
    let mut app = spawn_app_with(Db::Sqlite, config_with_auth(&signers, Some(false)))
        .await
        .unwrap();
    let jwt = rs256_jwt(&claims("acct_rsa"));
    app.keys
        .create_key(bearer(create("acct_rsa"), &jwt))
        .await
        .expect("an RS256 JWT signed by the configured RSA key is accepted");
    let other = app
        .keys
        .create_key(bearer(create("acct_other"), &jwt))
        .await
        .unwrap_err();
    assert_refused(&other, Code::PermissionDenied, "only its own account");
    assert_eq!(key_count(&mut app, "acct_rsa").await, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_path_needs_a_service_token_wherever_management_does_unless_opened() {
    let signers = signers();
    let mut open = spawn_app_with(Db::Sqlite, config_with_auth(&signers, Some(false)))
        .await
        .unwrap();
    let secret = open
        .keys
        .create_key(bearer(create("acct_a"), DASHBOARD_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert!(open.authenticate(&secret, &["orders:read"]).await.allowed);
    open.keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .expect("ListScopes is open");
    open.shutdown().await;

    // Management needs credentials, so by default the hot path does too.
    let mut locked = spawn_app_with(Db::Sqlite, config_with_auth(&signers, None))
        .await
        .unwrap();
    let secret = locked
        .keys
        .create_key(bearer(create("acct_a"), DASHBOARD_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let authenticate = || proto::AuthenticateRequest {
        credential: secret.clone(),
        required_scopes: vec!["orders:read".into()],
        client_ip: String::new(),
        ..Default::default()
    };
    let missing = locked.keys.authenticate(authenticate()).await.unwrap_err();
    assert_refused(&missing, Code::Unauthenticated, "missing credentials");
    let jwt = es256_jwt(&signers.es256, &claims("acct_a"));
    let user = locked
        .keys
        .authenticate(bearer(authenticate(), &jwt))
        .await
        .unwrap_err();
    assert_refused(
        &user,
        Code::PermissionDenied,
        "user JWTs may not call Authenticate",
    );
    let wrong = locked
        .keys
        .authenticate(bearer(authenticate(), AUDITOR_TOKEN))
        .await
        .unwrap_err();
    assert_refused(&wrong, Code::PermissionDenied, "may not call Authenticate");
    let allowed = locked
        .keys
        .authenticate(bearer(authenticate(), BACKEND_TOKEN))
        .await
        .expect("the backend token may authenticate")
        .into_inner();
    assert!(allowed.allowed);
    let watch = locked
        .keys
        .watch_revocations(bearer(
            proto::WatchRevocationsRequest::default(),
            BACKEND_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_refused(
        &watch,
        Code::PermissionDenied,
        "may not call WatchRevocations",
    );
    locked
        .keys
        .list_scopes(proto::ListScopesRequest {})
        .await
        .expect("ListScopes stays open");
    locked.shutdown().await;
}

/// A JWT claiming to live for years was minted by mistake or by someone
/// who should not have: refused beyond `auth.jwt.max_lifetime_seconds`
/// (default one day), measured from `iat` when there is one and from now
/// in any case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_living_longer_than_the_maximum_are_refused() {
    let signers = signers();
    let mut app = spawn_app_with(Db::Sqlite, config_with_auth(&signers, Some(false)))
        .await
        .unwrap();
    let now = now();
    let with = |iat: Option<i64>, exp: i64| {
        let mut claims = json!({"sub": "acct_life", "iss": ISSUER, "aud": AUDIENCE, "exp": exp});
        if let Some(iat) = iat {
            claims["iat"] = json!(iat);
        }
        es256_jwt(&signers.es256, &claims)
    };
    for (iat, exp) in [
        (Some(now), now + 1_000_000_000_000),
        (Some(now), now + 2 * 86_400),
        (None, now + 2 * 86_400),
        // An `iat` in the future cannot shorten the lifetime from now.
        (Some(now + 3 * 86_400), now + 3 * 86_400 + 60),
    ] {
        let refused = app
            .keys
            .create_key(bearer(create("acct_life"), &with(iat, exp)))
            .await
            .unwrap_err();
        assert_refused(
            &refused,
            Code::Unauthenticated,
            "lifetime exceeds the accepted maximum of 86400 seconds",
        );
    }
    assert_eq!(key_count(&mut app, "acct_life").await, 0);
    for (iat, exp) in [(Some(now), now + 3600), (None, now + 3600)] {
        app.keys
            .create_key(bearer(create("acct_life"), &with(iat, exp)))
            .await
            .expect("an hour is a sane lifetime");
    }
    app.shutdown().await;
}

/// The test config with user JWTs allowed CheckScope and WatchRevocations
/// (confined to their account) and a backend token for the rest.
fn config_with_jwt_hot_path(signers: &Signers) -> Config {
    let text = format!(
        r#"
[[auth.service_tokens]]
name = "dashboard"
sha256 = "{dashboard}"
rpcs = ["CreateKey", "RevokeKey"]

[[auth.service_tokens]]
name = "backend"
sha256 = "{backend}"
rpcs = ["Authenticate", "CheckScope", "WatchRevocations"]

[auth.jwt]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
public_key_files = ["{es256}"]
rpcs = ["ListKeys", "CheckScope", "WatchRevocations"]
"#,
        dashboard = token_sha256_hex(DASHBOARD_TOKEN),
        backend = token_sha256_hex(BACKEND_TOKEN),
        es256 = signers.es256_public_pem.display(),
    );
    let mut config = test_config();
    config.auth = Config::parse(&text, "auth-test.toml").unwrap().auth;
    config
}

/// A user JWT on WatchRevocations sees only its account's events (naming
/// another account is refused), and on CheckScope by key id only its
/// account's keys (another's is an unknown key, as in management).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_jwt_on_the_hot_path_sees_only_its_own_account() {
    use futures_util::StreamExt;
    let signers = signers();
    let mut app = spawn_app_with(Db::Sqlite, config_with_jwt_hot_path(&signers))
        .await
        .unwrap();
    let jwt = es256_jwt(&signers.es256, &claims("acct_mine"));
    let mut create_in = async |account: &str| {
        app.keys
            .create_key(bearer(create(account), DASHBOARD_TOKEN))
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
    };
    let mine = create_in("acct_mine").await;
    let theirs = create_in("acct_theirs").await;

    // WatchRevocations without naming an account: its own account only.
    let mut stream = app
        .keys
        .watch_revocations(bearer(proto::WatchRevocationsRequest::default(), &jwt))
        .await
        .expect("a JWT allowed WatchRevocations")
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.kind, "checkpoint");
    for (account, key) in [("acct_theirs", &theirs), ("acct_mine", &mine)] {
        app.keys
            .revoke_key(bearer(
                proto::RevokeKeyRequest {
                    account_id: account.into(),
                    key_id: key.id.clone(),
                },
                DASHBOARD_TOKEN,
            ))
            .await
            .unwrap();
    }
    let event = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            event.kind.as_str(),
            event.account_id.as_str(),
            event.key_id.as_str()
        ),
        ("revoked", "acct_mine", mine.id.as_str()),
        "the other account's revocation came first, or at all"
    );

    let other = app
        .keys
        .watch_revocations(bearer(
            proto::WatchRevocationsRequest {
                account_id: "acct_theirs".into(),
                ..Default::default()
            },
            &jwt,
        ))
        .await
        .unwrap_err();
    assert_refused(&other, Code::PermissionDenied, "only its own account");

    // CheckScope by key id: another account's key looks unknown.
    let check = |key_id: &str| {
        bearer(
            proto::CheckScopeRequest {
                key_id: key_id.into(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            &jwt,
        )
    };
    let probe = app
        .keys
        .check_scope(check(&theirs.id))
        .await
        .unwrap()
        .into_inner();
    assert!(!probe.allowed);
    assert_eq!(
        probe.denial.unwrap().reason(),
        proto::denial::Reason::UnknownKey
    );
    let own = app
        .keys
        .check_scope(check(&mine.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        own.denial.unwrap().reason(),
        proto::denial::Reason::Revoked,
        "its own key is seen as it is"
    );
    // The backend token sees every account.
    let backend = app
        .keys
        .check_scope(bearer(
            proto::CheckScopeRequest {
                key_id: theirs.id.clone(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            BACKEND_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        backend.denial.unwrap().reason(),
        proto::denial::Reason::Revoked
    );
    app.shutdown().await;
}
