//! Unit tests for `access_control`.

use super::*;

fn token(name: &str, secret: &str, rpcs: &[Rpc]) -> ServiceToken {
    ServiceToken {
        name: name.into(),
        sha256: Sha256::digest(secret.as_bytes()).into(),
        rpcs: rpcs.iter().copied().collect(),
        trust_client_ip: false,
    }
}

fn settings() -> AccessSettings {
    AccessSettings {
        service_tokens: vec![
            token("dashboard", "dash-secret", &Rpc::MANAGEMENT),
            token("auditor", "audit-secret", &[Rpc::ListKeys, Rpc::GetKey]),
            ServiceToken {
                trust_client_ip: true,
                ..token(
                    "backend",
                    "backend-secret",
                    &[Rpc::Authenticate, Rpc::Check],
                )
            },
        ],
        jwt: None,
        hot_path_requires_token: None,
    }
}

fn policy(hot_path_locked: bool) -> AccessPolicy {
    let hot_path = if hot_path_locked {
        HotPathAccess::Locked
    } else {
        HotPathAccess::Open {
            against_default: false,
        }
    };
    AccessPolicy::new(&settings(), hot_path)
}

const LOOPBACK: &str = "127.0.0.1:50051";
const PUBLIC: &str = "0.0.0.0:50051";

#[test]
fn the_hot_path_is_locked_wherever_management_is_or_off_loopback() {
    let open = |against_default| HotPathAccess::Open { against_default };
    let decide = |requires: Option<bool>, locked_management: bool, listen: &str, flag: bool| {
        let mut settings = settings();
        if !locked_management {
            settings.service_tokens.retain(|t| !t.rpcs.any_management());
        }
        settings.hot_path_requires_token = requires;
        HotPathAccess::decide(&settings, listen.parse().unwrap(), flag)
    };
    // Unset: locked when management is, or off loopback.
    assert_eq!(decide(None, true, LOOPBACK, false), HotPathAccess::Locked);
    assert_eq!(decide(None, false, PUBLIC, false), HotPathAccess::Locked);
    assert_eq!(decide(None, false, LOOPBACK, false), open(false));
    // Opting out, by the file or the flag, is remembered as against the default.
    assert_eq!(decide(Some(false), true, LOOPBACK, false), open(true));
    assert_eq!(decide(None, false, PUBLIC, true), open(true));
    assert_eq!(decide(Some(true), false, LOOPBACK, true), open(false));
    // Asked for explicitly.
    assert_eq!(
        decide(Some(true), false, LOOPBACK, false),
        HotPathAccess::Locked
    );
}

#[test]
fn only_trusted_callers_state_the_client_address() {
    let stated: Option<IpAddr> = Some("198.51.100.9".parse().unwrap());
    let peer: SocketAddr = "203.0.113.5:40000".parse().unwrap();
    let loopback_peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let policy = policy(true);

    let trusted = policy.hot_path_caller(
        policy
            .check(Some(Rpc::Authenticate), Some(b"Bearer backend-secret"))
            .unwrap(),
        Some(peer),
    );
    assert_eq!(trusted.client(stated), stated);
    assert_eq!(trusted.identity, CallerIdentity::Token("backend".into()));

    let untrusted = policy.hot_path_caller(
        Caller::Service {
            name: "other".into(),
            trust_client_ip: false,
        },
        Some(peer),
    );
    assert_eq!(untrusted.client(stated), Some(peer.ip()));

    // Anonymous callers: with service tokens configured, never trusted, even
    // on loopback; their own address counts.
    let anonymous = policy.hot_path_caller(Caller::Anonymous, Some(loopback_peer));
    assert_eq!(anonymous.client(stated), Some(loopback_peer.ip()));
    assert_eq!(
        anonymous.identity,
        CallerIdentity::Address(loopback_peer.ip())
    );

    // Without service tokens, loopback callers are trusted and others not.
    let tokenless = AccessPolicy::new(
        &AccessSettings::default(),
        HotPathAccess::Open {
            against_default: false,
        },
    );
    let local = tokenless.hot_path_caller(Caller::Anonymous, Some(loopback_peer));
    assert_eq!(local.client(stated), stated);
    let remote = tokenless.hot_path_caller(Caller::Anonymous, Some(peer));
    assert_eq!(remote.client(stated), Some(peer.ip()));

    // A user JWT is confined to its account and never states addresses.
    let account = AccountId::parse("acct_a").unwrap();
    let user = tokenless.hot_path_caller(
        Caller::User {
            account: account.clone(),
        },
        Some(loopback_peer),
    );
    assert_eq!(user.account, Some(account));
    assert_eq!(user.client(stated), Some(loopback_peer.ip()));
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
            name: "auditor".into(),
            trust_client_ip: false,
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
        hot_path_requires_token: None,
    };
    assert!(!settings.management_locked());
    let policy = AccessPolicy::new(
        &settings,
        HotPathAccess::Open {
            against_default: false,
        },
    );
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
    let service = Caller::Service {
        name: "x".into(),
        trust_client_ip: false,
    };
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

#[test]
fn audit_actors_name_the_credential() {
    let peer: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let token = Caller::Service {
        name: "billing".into(),
        trust_client_ip: false,
    };
    assert_eq!(token.actor(Some(peer)).actor, "token:billing");
    let user = Caller::User {
        account: AccountId::parse("acct_1").unwrap(),
    };
    assert_eq!(user.actor(None).actor, "jwt:acct_1");
    assert_eq!(user.actor(None).peer, "");
    let open = Caller::Anonymous.actor(Some(peer));
    assert_eq!(
        (open.actor.as_str(), open.peer.as_str()),
        ("local", "127.0.0.1")
    );
}
