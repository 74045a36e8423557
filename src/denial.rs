//! Denials: the exact reason for the caller's logs, and the code, message and
//! HTTP status a product shows its users. The texts are configuration (per
//! product), grouped so that unknown, revoked, expired and malformed keys can
//! only ever look the same to a client.

use std::sync::Arc;

use serde::Deserialize;

use crate::settings::SettingError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingCredential,
    MalformedCredential,
    UnknownKey,
    Revoked,
    Expired,
    InsufficientScope,
    RateLimited,
    TooManyFailedAttempts,
    Unavailable,
    /// The key has allowed networks and the client is not in them.
    IpNotAllowed,
    /// The key's usage quota is used up until its next refill.
    QuotaExceeded,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::MissingCredential,
        Reason::MalformedCredential,
        Reason::UnknownKey,
        Reason::Revoked,
        Reason::Expired,
        Reason::InsufficientScope,
        Reason::RateLimited,
        Reason::TooManyFailedAttempts,
        Reason::Unavailable,
        Reason::IpNotAllowed,
        Reason::QuotaExceeded,
    ];

    /// Stable lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingCredential => "missing_credential",
            Reason::MalformedCredential => "malformed_credential",
            Reason::UnknownKey => "unknown_key",
            Reason::Revoked => "revoked",
            Reason::Expired => "expired",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::RateLimited => "rate_limited",
            Reason::TooManyFailedAttempts => "too_many_failed_attempts",
            Reason::Unavailable => "unavailable",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::QuotaExceeded => "quota_exceeded",
        }
    }

    /// Whether this reason counts as an invalid credential toward a ban:
    /// a credential in this product's key namespace that is not a live key.
    /// A credential without the prefix (say, a JWT meant for the upstream)
    /// is not an attempt at one of our keys, and is not counted.
    pub fn is_invalid_credential(self) -> bool {
        matches!(
            self,
            Reason::MalformedCredential | Reason::UnknownKey | Reason::Revoked | Reason::Expired
        )
    }
}

/// The user-facing text of one group of reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialText {
    pub code: Arc<str>,
    pub message: Arc<str>,
    pub http_status: u16,
}

impl DenialText {
    pub fn new(code: &str, message: &str, http_status: u16) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            http_status,
        }
    }
}

/// The configured texts, one per group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialCatalog {
    /// No credential, or not in this product's key namespace.
    pub missing: DenialText,
    /// Malformed, unknown, revoked or expired: deliberately indistinguishable.
    pub invalid: DenialText,
    pub insufficient_scope: DenialText,
    pub rate_limited: DenialText,
    pub too_many_failed_attempts: DenialText,
    pub unavailable: DenialText,
    /// The key may not be used from the client's address.
    pub ip_not_allowed: DenialText,
    /// The key's usage quota is used up.
    pub quota_exceeded: DenialText,
}

impl Default for DenialCatalog {
    /// Carboncopy's texts, and plain ones in its style for the rest.
    fn default() -> Self {
        let unauthorized = DenialText::new("unauthorized", "Invalid or missing API key.", 401);
        Self {
            missing: unauthorized.clone(),
            invalid: unauthorized,
            insufficient_scope: DenialText::new(
                "forbidden",
                "This key does not have the required scope.",
                403,
            ),
            rate_limited: DenialText::new(
                "rate_limit_exceeded",
                "Rate limit exceeded for this key; retry later.",
                429,
            ),
            too_many_failed_attempts: DenialText::new(
                "too_many_failed_auth",
                "Too many invalid API keys from this address; retry later.",
                401,
            ),
            unavailable: DenialText::new(
                "unavailable",
                "Authorization is temporarily unavailable; retry shortly.",
                503,
            ),
            ip_not_allowed: DenialText::new(
                "forbidden",
                "This API key may not be used from this address.",
                403,
            ),
            quota_exceeded: DenialText::new(
                "quota_exceeded",
                "This key's usage quota is used up.",
                429,
            ),
        }
    }
}

/// `[denials]` as written: a table per group, each overriding the
/// default's fields it sets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDenials {
    pub missing: Option<RawDenialText>,
    pub invalid: Option<RawDenialText>,
    pub insufficient_scope: Option<RawDenialText>,
    pub rate_limited: Option<RawDenialText>,
    pub too_many_failed_attempts: Option<RawDenialText>,
    pub unavailable: Option<RawDenialText>,
    pub ip_not_allowed: Option<RawDenialText>,
    pub quota_exceeded: Option<RawDenialText>,
}

/// One denial's text as written (in `[denials]` and in `[http.denials]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDenialText {
    pub code: Option<String>,
    pub message: Option<String>,
    pub http_status: Option<u16>,
}

impl DenialCatalog {
    /// Validates `[denials]`. Each group may use only the HTTP statuses that
    /// mean what it means.
    pub fn from_raw(raw: RawDenials) -> Result<Self, SettingError> {
        let defaults = Self::default();
        Ok(Self {
            missing: denial_text_from_raw(
                "denials.missing",
                raw.missing,
                defaults.missing,
                &[400, 401],
            )?,
            invalid: denial_text_from_raw(
                "denials.invalid",
                raw.invalid,
                defaults.invalid,
                &[401, 403],
            )?,
            insufficient_scope: denial_text_from_raw(
                "denials.insufficient_scope",
                raw.insufficient_scope,
                defaults.insufficient_scope,
                &[403, 404],
            )?,
            rate_limited: denial_text_from_raw(
                "denials.rate_limited",
                raw.rate_limited,
                defaults.rate_limited,
                &[429, 503],
            )?,
            too_many_failed_attempts: denial_text_from_raw(
                "denials.too_many_failed_attempts",
                raw.too_many_failed_attempts,
                defaults.too_many_failed_attempts,
                &[401, 403, 429],
            )?,
            unavailable: denial_text_from_raw(
                "denials.unavailable",
                raw.unavailable,
                defaults.unavailable,
                &[503],
            )?,
            ip_not_allowed: denial_text_from_raw(
                "denials.ip_not_allowed",
                raw.ip_not_allowed,
                defaults.ip_not_allowed,
                &[401, 403, 404],
            )?,
            quota_exceeded: denial_text_from_raw(
                "denials.quota_exceeded",
                raw.quota_exceeded,
                defaults.quota_exceeded,
                &[402, 403, 429],
            )?,
        })
    }

    pub fn text(&self, reason: Reason) -> &DenialText {
        match reason {
            Reason::MissingCredential => &self.missing,
            Reason::MalformedCredential
            | Reason::UnknownKey
            | Reason::Revoked
            | Reason::Expired => &self.invalid,
            Reason::InsufficientScope => &self.insufficient_scope,
            Reason::RateLimited => &self.rate_limited,
            Reason::TooManyFailedAttempts => &self.too_many_failed_attempts,
            Reason::Unavailable => &self.unavailable,
            Reason::IpNotAllowed => &self.ip_not_allowed,
            Reason::QuotaExceeded => &self.quota_exceeded,
        }
    }

    pub fn deny(&self, reason: Reason) -> Denial {
        let text = self.text(reason);
        Denial {
            reason,
            code: text.code.clone(),
            message: text.message.clone(),
            http_status: text.http_status,
            required_scope: None,
            retry_after_ms: 0,
        }
    }
}

/// Longest denial message (sent in every denial of its kind).
const MAX_DENIAL_MESSAGE_CHARS: usize = 500;

/// A denial code as clients match on it, e.g. `trading_not_enabled`.
pub fn check_denial_code(code: &str) -> Result<(), String> {
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        return Err(format!(
            "code {code:?} must be 1 to 64 characters of a-z A-Z 0-9 _ . -"
        ));
    }
    Ok(())
}

pub fn check_denial_message(message: &str) -> Result<(), String> {
    let chars = message.chars().count();
    if message.trim().is_empty() || chars > MAX_DENIAL_MESSAGE_CHARS {
        return Err(format!(
            "message must be 1 to {MAX_DENIAL_MESSAGE_CHARS} characters"
        ));
    }
    Ok(())
}

/// A denial's text: `default` with the file's overrides, if any. `key`
/// names the table (`denials.missing`); an error names the field in it.
pub fn denial_text_from_raw(
    key: &str,
    raw: Option<RawDenialText>,
    default: DenialText,
    statuses: &[u16],
) -> Result<DenialText, SettingError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let code = raw.code.unwrap_or_else(|| default.code.to_string());
    check_denial_code(&code).map_err(|r| SettingError::new(format!("{key}.code"), r))?;
    let message = raw.message.unwrap_or_else(|| default.message.to_string());
    check_denial_message(&message).map_err(|r| SettingError::new(format!("{key}.message"), r))?;
    let http_status = raw.http_status.unwrap_or(default.http_status);
    if !statuses.contains(&http_status) {
        return Err(SettingError::new(
            format!("{key}.http_status"),
            format!("http_status {http_status} is not allowed here; use one of {statuses:?}"),
        ));
    }
    Ok(DenialText::new(&code, &message, http_status))
}

/// A decided denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub code: Arc<str>,
    pub message: Arc<str>,
    pub http_status: u16,
    /// The first missing scope, for `InsufficientScope`.
    pub required_scope: Option<String>,
    pub retry_after_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_carboncopy_documents() {
        let denials = DenialCatalog::default();
        let invalid = denials.deny(Reason::UnknownKey);
        assert_eq!(
            (&*invalid.code, &*invalid.message, invalid.http_status),
            ("unauthorized", "Invalid or missing API key.", 401)
        );
        let scope = denials.deny(Reason::InsufficientScope);
        assert_eq!(
            (&*scope.code, &*scope.message, scope.http_status),
            (
                "forbidden",
                "This key does not have the required scope.",
                403
            )
        );
    }

    #[test]
    fn unknown_revoked_expired_and_malformed_look_the_same() {
        let denials = DenialCatalog::default();
        let shown = |reason| {
            let d = denials.deny(reason);
            (d.code, d.message, d.http_status)
        };
        assert_eq!(shown(Reason::UnknownKey), shown(Reason::Revoked));
        assert_eq!(shown(Reason::UnknownKey), shown(Reason::Expired));
        assert_eq!(
            shown(Reason::UnknownKey),
            shown(Reason::MalformedCredential)
        );
    }
}

/// A denial the route policy decides before any key is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDenial {
    /// No route matched and `unmatched_route = "deny"`.
    UnmatchedRoute,
    /// The path or a query parameter keyward reads could not be read
    /// unambiguously, or the check carried no HTTP request.
    MalformedRequest,
}

impl PolicyDenial {
    pub const ALL: [PolicyDenial; 2] = [Self::UnmatchedRoute, Self::MalformedRequest];

    /// The log reason, metrics outcome and gRPC status message.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnmatchedRoute => "unmatched_route",
            Self::MalformedRequest => "malformed_request",
        }
    }
}
