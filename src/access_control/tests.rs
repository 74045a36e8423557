//! Unit tests for `access_control`.

use super::*;

fn token(name: &str, secret: &str, rpcs: &[Rpc]) -> ServiceToken {
    ServiceToken {
        name: name.into(),
        sha256: Sha256::digest(secret.as_bytes()).into(),
        rpcs: rpcs.iter().copied().collect(),
    }
}

fn policy(hot_path_requires_token: bool) -> AccessPolicy {
    AccessPolicy::new(&AccessSettings {
        service_tokens: vec![
            token("dashboard", "dash-secret", &Rpc::MANAGEMENT),
            token("auditor", "audit-secret", &[Rpc::ListKeys, Rpc::GetKey]),
            token(
                "backend",
                "backend-secret",
                &[Rpc::Authenticate, Rpc::Check],
            ),
        ],
        jwt: None,
        hot_path_requires_token,
    })
}

fn unauthenticated(result: Result<Caller, Refusal>) -> String {
    match result {
        Err(Refusal::Unauthenticated(message)) => message,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

fn permission_denied(result: Result<Caller, Refusal>) -> String {
    match result {
        Err(Refusal::PermissionDenied(message)) => message,
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}

#[test]
fn paths_map_to_rpcs_and_classes() {
    assert_eq!(
        Rpc::from_path("/keyward.v1.KeyService/CreateKey"),
        Some(Rpc::CreateKey)
    );
    assert_eq!(
        Rpc::from_path("/envoy.service.auth.v3.Authorization/Check"),
        Some(Rpc::Check)
    );
    assert_eq!(Rpc::from_path("/keyward.v1.KeyService/Check"), None);
    assert_eq!(Rpc::from_path("/grpc.health.v1.Health/Check"), None);
    assert_eq!(Rpc::Check.class(), RpcClass::HotPath);
    assert_eq!(Rpc::ListScopes.class(), RpcClass::Open);
    for rpc in Rpc::MANAGEMENT {
        assert_eq!(rpc.class(), RpcClass::Management);
    }
}

#[test]
fn management_needs_a_token_allowed_that_rpc() {
    let policy = policy(false);
    let message = unauthenticated(policy.check(Some(Rpc::CreateKey), None));
    assert!(message.contains("missing credentials"), "{message}");
    let message = unauthenticated(policy.check(Some(Rpc::CreateKey), Some(b"Bearer nope")));
    assert!(
        message.contains("neither a known service token"),
        "{message}"
    );
    let message = unauthenticated(policy.check(Some(Rpc::CreateKey), Some(b"Basic abc")));
    assert!(message.contains("Bearer"), "{message}");
    let message =
        permission_denied(policy.check(Some(Rpc::CreateKey), Some(b"Bearer audit-secret")));
    assert_eq!(message, "service token \"auditor\" may not call CreateKey");
    assert_eq!(
        policy.check(Some(Rpc::ListKeys), Some(b"bearer  audit-secret ")),
        Ok(Caller::Service {
            name: "auditor".into()
        })
    );
}

#[test]
fn open_rpcs_and_the_hot_path_by_default_need_nothing() {
    let policy = policy(false);
    for rpc in [
        Some(Rpc::ListScopes),
        Some(Rpc::Authenticate),
        Some(Rpc::Check),
        None,
    ] {
        assert!(!policy.needs_credential(rpc), "{rpc:?}");
        assert_eq!(policy.check(rpc, None), Ok(Caller::Anonymous));
    }
}

#[test]
fn the_hot_path_can_require_a_service_token() {
    let policy = policy(true);
    unauthenticated(policy.check(Some(Rpc::Authenticate), None));
    assert!(
        policy
            .check(Some(Rpc::Check), Some(b"Bearer backend-secret"))
            .is_ok()
    );
    let message =
        permission_denied(policy.check(Some(Rpc::CheckScope), Some(b"Bearer backend-secret")));
    assert!(message.contains("CheckScope"), "{message}");
    // ListScopes stays open.
    assert_eq!(
        policy.check(Some(Rpc::ListScopes), None),
        Ok(Caller::Anonymous)
    );
}

#[test]
fn without_management_credentials_management_is_open() {
    let settings = AccessSettings {
        service_tokens: vec![token("backend", "b", &[Rpc::Authenticate])],
        jwt: None,
        hot_path_requires_token: false,
    };
    assert!(!settings.management_locked());
    let policy = AccessPolicy::new(&settings);
    assert_eq!(
        policy.check(Some(Rpc::CreateKey), None),
        Ok(Caller::Anonymous)
    );
}

#[test]
fn a_user_may_act_only_for_its_own_account() {
    let own = AccountId::parse("acct_a").unwrap();
    let other = AccountId::parse("acct_b").unwrap();
    let user = Caller::User {
        account: own.clone(),
    };
    assert!(user.may_act_for(&own).is_ok());
    assert!(matches!(
        user.may_act_for(&other),
        Err(Refusal::PermissionDenied(_))
    ));
    let service = Caller::Service { name: "x".into() };
    assert!(service.may_act_for(&other).is_ok());
}

#[test]
fn configured_hashes_must_be_sha256_hex() {
    let hash = token_sha256_hex("abc");
    assert_eq!(
        hash,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(parse_sha256_hex(&hash).is_ok());
    for bad in [
        "abc",
        &hash.to_uppercase(),
        &format!("{hash}0"),
        "kwt_secret",
    ] {
        let reason = parse_sha256_hex(bad).unwrap_err();
        assert!(reason.contains("never the token itself"), "{reason}");
    }
    let generated = generate_service_token().unwrap();
    assert!(generated.starts_with("kwt_") && generated.len() == 68);
}
