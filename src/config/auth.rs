//! Validates the `[auth]` table into [`AccessSettings`]: service tokens as
//! SHA-256 hashes with the RPCs each may call, and the user-JWT verifier
//! (keys are read from their files here, so a bad key file fails at startup
//! and in `check-config`).

use std::collections::HashSet;

use super::raw::{RawAuth, RawJwt};
use crate::access_control::jwt::{self, DEFAULT_ALGORITHMS, JwtSettings};
use crate::access_control::{
    AccessSettings, Rpc, RpcClass, RpcSet, ServiceToken, parse_sha256_hex,
};

const MAX_LEEWAY_SECONDS: u64 = 300;
/// Longest JWT lifetime that may be configured: 30 days.
const MAX_JWT_LIFETIME_SECONDS: u64 = 30 * 86_400;
/// Hot-path RPCs a user JWT may be allowed: both confine it to its account
/// (CheckScope answers only for its keys, WatchRevocations streams only its
/// events). Authenticate and Check are for services, never for users.
const JWT_HOT_PATH_RPCS: [Rpc; 2] = [Rpc::CheckScope, Rpc::WatchRevocations];

/// `fail(key, reason)` builds the caller's `ConfigError`.
pub(super) fn access_settings<E>(
    raw: RawAuth,
    fail: &impl Fn(&str, String) -> E,
) -> Result<AccessSettings, E> {
    let mut names = HashSet::new();
    let mut hashes = HashSet::new();
    let mut service_tokens = Vec::new();
    for (i, token) in raw.service_tokens.into_iter().enumerate() {
        let at = |field: &str| format!("auth.service_tokens[{i}].{field}");
        if token.name.trim().is_empty() || token.name.len() > 64 {
            return Err(fail(&at("name"), "must be 1 to 64 characters".into()));
        }
        if !names.insert(token.name.clone()) {
            return Err(fail(
                &at("name"),
                format!("{:?} is used by two tokens", token.name),
            ));
        }
        let sha256 = parse_sha256_hex(&token.sha256).map_err(|r| fail(&at("sha256"), r))?;
        if !hashes.insert(sha256) {
            return Err(fail(
                &at("sha256"),
                "the same token is configured twice".into(),
            ));
        }
        let rpcs = rpc_set(&token.rpcs, |_| Ok(())).map_err(|r| fail(&at("rpcs"), r))?;
        let trust_client_ip = token.trust_client_ip.unwrap_or(false);
        if trust_client_ip && !rpcs.iter().any(|rpc| rpc.class() == RpcClass::HotPath) {
            return Err(fail(
                &at("trust_client_ip"),
                "only matters for hot-path RPCs (Authenticate, CheckScope, Check), and this token lists none".into(),
            ));
        }
        service_tokens.push(ServiceToken {
            name: token.name.into(),
            sha256,
            rpcs,
            trust_client_ip,
        });
    }
    let jwt = raw.jwt.map(|raw| jwt_settings(raw, fail)).transpose()?;
    let settings = AccessSettings {
        service_tokens,
        jwt,
        hot_path_requires_token: raw.hot_path_requires_token,
    };
    if settings.hot_path_requires_token == Some(true) && !settings.any_hot_path_credential() {
        // Every Authenticate and Check would be refused: surely a mistake.
        return Err(fail(
            "auth.hot_path_requires_token",
            "no service token lists a hot-path RPC (Authenticate, CheckScope, WatchRevocations, Check), so every one would be refused".into(),
        ));
    }
    Ok(settings)
}

fn rpc_set(
    names: &[String],
    allowed: impl Fn(Rpc) -> Result<(), String>,
) -> Result<RpcSet, String> {
    if names.is_empty() {
        return Err(format!("list at least one RPC of: {}", Rpc::names()));
    }
    let mut set = RpcSet::default();
    for name in names {
        let rpc = Rpc::from_name(name)
            .ok_or_else(|| format!("unknown RPC {name:?}; use some of: {}", Rpc::names()))?;
        allowed(rpc)?;
        set.insert(rpc);
    }
    Ok(set)
}

fn jwt_settings<E>(raw: RawJwt, fail: &impl Fn(&str, String) -> E) -> Result<JwtSettings, E> {
    let non_empty = |key: &str, values: &[String], what: &str| {
        if values.is_empty() || values.iter().any(|v| v.trim().is_empty()) {
            Err(fail(
                key,
                format!("list the accepted {what} (non-empty strings)"),
            ))
        } else {
            Ok(())
        }
    };
    non_empty("auth.jwt.issuers", &raw.issuers, "`iss` values")?;
    non_empty("auth.jwt.audiences", &raw.audiences, "`aud` values")?;
    let algorithms = match raw.algorithms {
        Some(names) if names.is_empty() => {
            return Err(fail(
                "auth.jwt.algorithms",
                "list at least one algorithm, or leave it out for ES256, RS256, EdDSA".into(),
            ));
        }
        Some(names) => names
            .iter()
            .map(|name| jwt::parse_algorithm(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| fail("auth.jwt.algorithms", r))?,
        None => DEFAULT_ALGORITHMS.to_vec(),
    };
    if raw.public_key_files.is_empty() && raw.jwks_file.is_none() {
        return Err(fail(
            "auth.jwt",
            "set public_key_files or jwks_file: the keys that verify user JWTs".into(),
        ));
    }
    let mut keys = Vec::new();
    for (i, path) in raw.public_key_files.iter().enumerate() {
        keys.push(
            jwt::load_pem_key(path)
                .map_err(|r| fail(&format!("auth.jwt.public_key_files[{i}]"), r))?,
        );
    }
    if let Some(path) = &raw.jwks_file {
        keys.extend(jwt::load_jwks(path).map_err(|r| fail("auth.jwt.jwks_file", r))?);
    }
    if let Some(unusable) = keys
        .iter()
        .find(|k| !algorithms.iter().any(|a| a.family() == k.key.family()))
    {
        return Err(fail(
            "auth.jwt.algorithms",
            format!(
                "the key from {} fits none of the accepted algorithms",
                unusable.source
            ),
        ));
    }
    let subject_claim = raw.subject_claim.unwrap_or_else(|| "sub".into());
    if subject_claim.trim().is_empty() {
        return Err(fail("auth.jwt.subject_claim", "must not be empty".into()));
    }
    let leeway_seconds = raw.leeway_seconds.unwrap_or(30);
    if leeway_seconds > MAX_LEEWAY_SECONDS {
        return Err(fail(
            "auth.jwt.leeway_seconds",
            format!("must be between 0 and {MAX_LEEWAY_SECONDS}, got {leeway_seconds}"),
        ));
    }
    let rpcs = match raw.rpcs {
        Some(names) => rpc_set(&names, |rpc| {
            if rpc.class() == RpcClass::Management || JWT_HOT_PATH_RPCS.contains(&rpc) {
                Ok(())
            } else {
                Err(format!(
                    "user JWTs may call only {}, {}, not {rpc}",
                    Rpc::MANAGEMENT.map(Rpc::as_str).join(", "),
                    JWT_HOT_PATH_RPCS.map(Rpc::as_str).join(", ")
                ))
            }
        })
        .map_err(|r| fail("auth.jwt.rpcs", r))?,
        None => Rpc::MANAGEMENT.into_iter().collect(),
    };
    let max_lifetime_seconds = raw
        .max_lifetime_seconds
        .unwrap_or(jwt::DEFAULT_MAX_LIFETIME_SECONDS);
    if !(60..=MAX_JWT_LIFETIME_SECONDS).contains(&max_lifetime_seconds) {
        return Err(fail(
            "auth.jwt.max_lifetime_seconds",
            format!(
                "must be between 60 and {MAX_JWT_LIFETIME_SECONDS} (30 days), got {max_lifetime_seconds}"
            ),
        ));
    }
    Ok(JwtSettings {
        issuers: raw.issuers,
        audiences: raw.audiences,
        algorithms,
        keys,
        subject_claim,
        leeway_seconds,
        max_lifetime_seconds,
        rpcs,
    })
}
