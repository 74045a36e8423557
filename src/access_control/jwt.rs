//! User JWTs for key management (Carboncopy's "Privy JWT"): verified with the
//! `jsonwebtoken` crate against public keys loaded at startup from PEM files
//! or a JWKS file. Only asymmetric algorithms are accepted (ES256, ES384,
//! RS256..RS512, PS256..PS512, EdDSA; never HS* or `none`), so keyward never
//! holds anything that could mint a token.
//!
//! A token is accepted when its signature verifies with a configured key of
//! its algorithm's family (the key named by `kid` when the token names one
//! that is configured), `exp` lies in the future and `nbf` (if present) in
//! the past, both within the configured leeway, `iss` and `aud` are among the
//! configured values, and the subject claim is a valid account id.

use std::fmt;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::RpcSet;
use crate::domain::AccountId;

/// The algorithms accepted when the config does not list any.
pub const DEFAULT_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA];

/// Algorithms that may be configured (asymmetric only).
pub const ALLOWED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// One public key and where it came from (for check-config and errors).
#[derive(Clone)]
pub struct VerificationKey {
    pub key_id: Option<String>,
    pub source: String,
    pub key: DecodingKey,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("key_id", &self.key_id)
            .field("source", &self.source)
            .field("family", &self.key.family())
            .finish()
    }
}

/// The validated `[auth.jwt]` table.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: Vec<VerificationKey>,
    /// The claim that names the account the caller may manage.
    pub subject_claim: String,
    pub leeway_seconds: u64,
    /// The longest lifetime a token may claim: `exp - iat`, or `exp - now`
    /// for a token without `iat`.
    pub max_lifetime_seconds: u64,
    /// Which RPCs a user JWT may call (management ones, and CheckScope and
    /// WatchRevocations confined to its account).
    pub rpcs: RpcSet,
}

/// `auth.jwt.max_lifetime_seconds` when not set: one day. Products' user
/// tokens live minutes to hours ("Privy JWTs are short-lived"); a token that
/// claims years was minted by mistake or by someone who should not have.
pub const DEFAULT_MAX_LIFETIME_SECONDS: u64 = 86_400;

/// Why a JWT was refused. Says what failed, never the token or its claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtProblem {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    #[error("no configured key matches the token's algorithm and key id")]
    NoKey,
    #[error("the signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the issuer is not accepted")]
    Issuer,
    #[error("the audience is not accepted")]
    Audience,
    #[error("the required claim `{0}` is missing")]
    MissingClaim(String),
    #[error("the subject claim `{0}` is missing or not a string")]
    Subject(String),
    #[error("the subject is not a valid account id: {0}")]
    Account(String),
    #[error("the token's lifetime exceeds the accepted maximum of {0} seconds")]
    Lifetime(u64),
}

/// Verifies tokens with [`JwtSettings`].
pub struct JwtVerifier {
    settings: JwtSettings,
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Self {
        Self { settings }
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// The account a valid token may act for.
    pub fn verify(&self, token: &str) -> Result<AccountId, JwtProblem> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtProblem::Malformed)?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(JwtProblem::Algorithm(header.alg));
        }
        let family = header.alg.family();
        let of_family = || {
            self.settings
                .keys
                .iter()
                .filter(move |k| k.key.family() == family)
        };
        let named: Vec<&VerificationKey> = match &header.kid {
            Some(kid) => of_family()
                .filter(|k| k.key_id.as_deref() == Some(kid.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&VerificationKey> = if named.is_empty() {
            of_family().collect()
        } else {
            named
        };
        if candidates.is_empty() {
            return Err(JwtProblem::NoKey);
        }

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_issuer(&self.settings.issuers);
        validation.set_audience(&self.settings.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);

        let mut last = JwtProblem::Signature;
        for candidate in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &candidate.key, &validation) {
                Ok(data) => {
                    self.check_lifetime(&data.claims)?;
                    return self.account(&data.claims);
                }
                Err(error) => match error.kind() {
                    // Another key of the family may be the signer.
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::Provider(_) => last = JwtProblem::Signature,
                    ErrorKind::ExpiredSignature => return Err(JwtProblem::Expired),
                    ErrorKind::ImmatureSignature => return Err(JwtProblem::NotYetValid),
                    ErrorKind::InvalidIssuer => return Err(JwtProblem::Issuer),
                    ErrorKind::InvalidAudience => return Err(JwtProblem::Audience),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        return Err(JwtProblem::MissingClaim(claim.clone()));
                    }
                    _ => return Err(JwtProblem::Malformed),
                },
            }
        }
        Err(last)
    }

    /// `exp` at most `max_lifetime_seconds` after `iat` (when the token
    /// has one) and after now (leeway allowed on the latter, as for `exp`).
    fn check_lifetime(&self, claims: &Map<String, Value>) -> Result<(), JwtProblem> {
        let max = self.settings.max_lifetime_seconds;
        let seconds = |name: &str| claims.get(name).and_then(Value::as_f64);
        // `exp` is required and validated as a number by the decoder.
        let exp = seconds("exp").ok_or_else(|| JwtProblem::MissingClaim("exp".into()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let too_long = match claims.get("iat") {
            Some(iat) => {
                let iat = iat.as_f64().ok_or(JwtProblem::Malformed)?;
                exp - iat > max as f64
            }
            None => false,
        } || exp - now > (max + self.settings.leeway_seconds) as f64;
        if too_long {
            return Err(JwtProblem::Lifetime(max));
        }
        Ok(())
    }

    fn account(&self, claims: &Map<String, Value>) -> Result<AccountId, JwtProblem> {
        let claim = &self.settings.subject_claim;
        let subject = claims
            .get(claim)
            .and_then(Value::as_str)
            .ok_or_else(|| JwtProblem::Subject(claim.clone()))?;
        AccountId::parse(subject).map_err(|e| JwtProblem::Account(e.to_string()))
    }
}

/// Parses an algorithm name from the config.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let names = || {
        ALLOWED_ALGORITHMS
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let algorithm: Algorithm = name
        .parse()
        .map_err(|_| format!("{name:?} is not an algorithm; use one of {}", names()))?;
    if !ALLOWED_ALGORITHMS.contains(&algorithm) {
        return Err(format!(
            "{name:?} is not accepted (only asymmetric algorithms: {})",
            names()
        ));
    }
    Ok(algorithm)
}

/// Loads a PEM public key of any supported family (EC, RSA, Ed25519).
pub fn load_pem_key(path: &str) -> Result<VerificationKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let key = DecodingKey::from_ec_pem(&pem)
        .or_else(|_| DecodingKey::from_rsa_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map_err(|_| format!("{path:?} holds no EC, RSA or Ed25519 public key in PEM form"))?;
    Ok(VerificationKey {
        key_id: None,
        source: path.to_owned(),
        key,
    })
}

/// Loads every key of a JWKS file (`{"keys": [...]}`).
pub fn load_jwks(path: &str) -> Result<Vec<VerificationKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let set: JwkSet =
        serde_json::from_str(&text).map_err(|e| format!("{path:?} is not a JWKS: {e}"))?;
    if set.keys.is_empty() {
        return Err(format!("{path:?} holds no keys"));
    }
    set.keys
        .iter()
        .enumerate()
        .map(|(i, jwk)| {
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("{path:?}: keys[{i}] is not a usable public key: {e}"))?;
            if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                return Err(format!(
                    "{path:?}: keys[{i}] is a symmetric key; only public keys are accepted"
                ));
            }
            Ok(VerificationKey {
                key_id: jwk.common.key_id.clone(),
                source: format!("{path}#{}", jwk.common.key_id.as_deref().unwrap_or("?")),
                key,
            })
        })
        .collect()
}
