//! `[auth]`: the table as written and its validation into
//! [`AccessSettings`]: service tokens as SHA-256 hashes with the RPCs each
//! may call, and the user-JWT verifier (keys are read from their files
//! here, so a bad key file fails at startup and in `check-config`).

use std::collections::HashSet;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::jwt::{self, DEFAULT_ALGORITHMS, JwtSettings, VerificationKey};
use super::{AccessSettings, Rpc, RpcClass, RpcSet, ServiceToken, parse_sha256_hex};
use crate::settings::SettingError;

const MAX_LEEWAY_SECONDS: u64 = 300;
/// Longest JWT lifetime that may be configured: 30 days.
const MAX_JWT_LIFETIME_SECONDS: u64 = 30 * 86_400;
/// Hot-path RPCs a user JWT may be allowed: both confine it to its account
/// (CheckScope answers only for its keys, WatchRevocations streams only its
/// events). Authenticate and Check are for services, never for users.
const JWT_HOT_PATH_RPCS: [Rpc; 2] = [Rpc::CheckScope, Rpc::WatchRevocations];

pub const DEFAULT_TRUST_CLIENT_IP: bool = false;
pub const DEFAULT_SUBJECT_CLAIM: &str = "sub";
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;

/// `[auth]` as written: who may call management (and optionally hot-path)
/// RPCs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub hot_path_requires_token: Option<bool>,
    pub service_tokens: Vec<RawServiceToken>,
    pub jwt: Option<RawJwt>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceToken {
    pub name: String,
    pub sha256: String,
    pub rpcs: Vec<String>,
    pub trust_client_ip: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJwt {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub algorithms: Option<Vec<String>>,
    pub public_key_files: Vec<String>,
    pub jwks_file: Option<String>,
    pub subject_claim: Option<String>,
    pub leeway_seconds: Option<u64>,
    pub max_lifetime_seconds: Option<u64>,
    pub rpcs: Option<Vec<String>>,
}

impl AccessSettings {
    /// Validates `[auth]`.
    pub fn from_raw(raw: RawAuth) -> Result<Self, SettingError> {
        let service_tokens = service_tokens(raw.service_tokens)?;
        let jwt = raw.jwt.map(jwt_settings).transpose()?;
        let settings = Self {
            service_tokens,
            jwt,
            hot_path_requires_token: raw.hot_path_requires_token,
        };
        if settings.hot_path_requires_token == Some(true) && !settings.any_hot_path_credential() {
            // Every Authenticate and Check would be refused: surely a mistake.
            return Err(SettingError::new(
                "auth.hot_path_requires_token",
                "no service token lists a hot-path RPC (Authenticate, CheckScope, WatchRevocations, Check), so every one would be refused",
            ));
        }
        Ok(settings)
    }
}

fn service_tokens(raw: Vec<RawServiceToken>) -> Result<Vec<ServiceToken>, SettingError> {
    let mut names = HashSet::new();
    let mut hashes = HashSet::new();
    let mut service_tokens = Vec::new();
    for (i, token) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("auth.service_tokens[{i}].{field}");
        if token.name.trim().is_empty() || token.name.len() > 64 {
            return Err(SettingError::new(at("name"), "must be 1 to 64 characters"));
        }
        if !names.insert(token.name.clone()) {
            return Err(SettingError::new(
                at("name"),
                format!("{:?} is used by two tokens", token.name),
            ));
        }
        let sha256 = parse_sha256_hex(&token.sha256).map_err(SettingError::at(&at("sha256")))?;
        if !hashes.insert(sha256) {
            return Err(SettingError::new(
                at("sha256"),
                "the same token is configured twice",
            ));
        }
        let rpcs = rpc_set(&token.rpcs, |_| Ok(())).map_err(SettingError::at(&at("rpcs")))?;
        let trust_client_ip = token.trust_client_ip.unwrap_or(DEFAULT_TRUST_CLIENT_IP);
        if trust_client_ip && !rpcs.iter().any(|rpc| rpc.class() == RpcClass::HotPath) {
            return Err(SettingError::new(
                at("trust_client_ip"),
                "only matters for hot-path RPCs (Authenticate, CheckScope, Check), and this token lists none",
            ));
        }
        service_tokens.push(ServiceToken {
            name: token.name.into(),
            sha256,
            rpcs,
            trust_client_ip,
        });
    }
    Ok(service_tokens)
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

fn jwt_settings(raw: RawJwt) -> Result<JwtSettings, SettingError> {
    let non_empty = |key: &str, values: &[String], what: &str| {
        if values.is_empty() || values.iter().any(|v| v.trim().is_empty()) {
            Err(SettingError::new(
                key,
                format!("list the accepted {what} (non-empty strings)"),
            ))
        } else {
            Ok(())
        }
    };
    non_empty("auth.jwt.issuers", &raw.issuers, "`iss` values")?;
    non_empty("auth.jwt.audiences", &raw.audiences, "`aud` values")?;
    let algorithms = jwt_algorithms(raw.algorithms)?;
    let keys = jwt_keys(&raw.public_key_files, raw.jwks_file.as_deref())?;
    if let Some(unusable) = keys
        .iter()
        .find(|k| !algorithms.iter().any(|a| a.family() == k.key.family()))
    {
        return Err(SettingError::new(
            "auth.jwt.algorithms",
            format!(
                "the key from {} fits none of the accepted algorithms",
                unusable.source
            ),
        ));
    }
    let subject_claim = raw
        .subject_claim
        .unwrap_or_else(|| DEFAULT_SUBJECT_CLAIM.into());
    if subject_claim.trim().is_empty() {
        return Err(SettingError::new(
            "auth.jwt.subject_claim",
            "must not be empty",
        ));
    }
    let leeway_seconds = raw.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS);
    if leeway_seconds > MAX_LEEWAY_SECONDS {
        return Err(SettingError::new(
            "auth.jwt.leeway_seconds",
            format!("must be between 0 and {MAX_LEEWAY_SECONDS}, got {leeway_seconds}"),
        ));
    }
    let rpcs = jwt_rpcs(raw.rpcs)?;
    let max_lifetime_seconds = raw
        .max_lifetime_seconds
        .unwrap_or(jwt::DEFAULT_MAX_LIFETIME_SECONDS);
    if !(60..=MAX_JWT_LIFETIME_SECONDS).contains(&max_lifetime_seconds) {
        return Err(SettingError::new(
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

fn jwt_algorithms(names: Option<Vec<String>>) -> Result<Vec<Algorithm>, SettingError> {
    match names {
        Some(names) if names.is_empty() => Err(SettingError::new(
            "auth.jwt.algorithms",
            "list at least one algorithm, or leave it out for ES256, RS256, EdDSA",
        )),
        Some(names) => names
            .iter()
            .map(|name| jwt::parse_algorithm(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SettingError::at("auth.jwt.algorithms")),
        None => Ok(DEFAULT_ALGORITHMS.to_vec()),
    }
}

/// The verification keys, read from their files now.
fn jwt_keys(
    public_key_files: &[String],
    jwks_file: Option<&str>,
) -> Result<Vec<VerificationKey>, SettingError> {
    if public_key_files.is_empty() && jwks_file.is_none() {
        return Err(SettingError::new(
            "auth.jwt",
            "set public_key_files or jwks_file: the keys that verify user JWTs",
        ));
    }
    let mut keys = Vec::new();
    for (i, path) in public_key_files.iter().enumerate() {
        keys.push(
            jwt::load_pem_key(path)
                .map_err(SettingError::at(&format!("auth.jwt.public_key_files[{i}]")))?,
        );
    }
    if let Some(path) = jwks_file {
        keys.extend(jwt::load_jwks(path).map_err(SettingError::at("auth.jwt.jwks_file"))?);
    }
    Ok(keys)
}

fn jwt_rpcs(names: Option<Vec<String>>) -> Result<RpcSet, SettingError> {
    let Some(names) = names else {
        return Ok(Rpc::MANAGEMENT.into_iter().collect());
    };
    rpc_set(&names, |rpc| {
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
    .map_err(SettingError::at("auth.jwt.rpcs"))
}
