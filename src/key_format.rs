//! The shape of a key secret (prefix, body length, alphabet): generating new
//! secrets from the OS CSPRNG and recognising presented credentials before
//! any hashing or database access.

use std::fmt;

use serde::Deserialize;

use crate::domain::KeyDigest;
use crate::settings::{SettingError, in_range};

/// The longest key a format may define.
const MAX_CREDENTIAL_BYTES: usize = 512;

/// Characters a key body is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `0-9a-f`
    LowerHex,
    /// `0-9a-z`
    LowerAlphanumeric,
    /// `0-9A-Za-z`
    Base62,
}

impl Alphabet {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hex" => Some(Self::LowerHex),
            "lower_alphanumeric" => Some(Self::LowerAlphanumeric),
            "base62" => Some(Self::Base62),
            _ => None,
        }
    }

    pub const NAMES: &'static str = "hex, lower_alphanumeric, base62";

    pub fn name(self) -> &'static str {
        match self {
            Self::LowerHex => "hex",
            Self::LowerAlphanumeric => "lower_alphanumeric",
            Self::Base62 => "base62",
        }
    }

    fn symbols(self) -> &'static [u8] {
        match self {
            Self::LowerHex => b"0123456789abcdef",
            Self::LowerAlphanumeric => b"0123456789abcdefghijklmnopqrstuvwxyz",
            Self::Base62 => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        }
    }

    fn contains(self, byte: u8) -> bool {
        match self {
            Self::LowerHex => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
            Self::LowerAlphanumeric => byte.is_ascii_digit() || byte.is_ascii_lowercase(),
            Self::Base62 => byte.is_ascii_alphanumeric(),
        }
    }

    /// Bits of entropy per symbol.
    pub fn bits_per_symbol(self) -> f64 {
        (self.symbols().len() as f64).log2()
    }
}

/// A new secret. Exists only between generation and the CreateKey response.
pub struct KeySecret(String);

impl KeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(..)")
    }
}

/// What is wrong with a presented credential. Both are decided on shape alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialProblem {
    /// Empty, or not carrying this deployment's prefix.
    Missing,
    /// Carries the prefix, but the body has the wrong length or characters.
    Malformed,
}

/// Minimum entropy of a generated body, checked when the format is configured.
pub const MIN_ENTROPY_BITS: f64 = 128.0;

pub const DEFAULT_PREFIX: &str = "cc_";
pub const DEFAULT_BODY_LENGTH: usize = 64;
pub const DEFAULT_ALPHABET: Alphabet = Alphabet::LowerHex;
pub const DEFAULT_SCHEMES: [&str; 2] = ["Bearer", "ApiKey"];
pub const DEFAULT_DISPLAY_CHARS: usize = 6;
pub const DEFAULT_MAX_ACTIVE_PER_ACCOUNT: u32 = 10;
/// RotateKey's longest grace period by default: 7 days.
pub const DEFAULT_MAX_ROTATION_GRACE_SECONDS: u64 = 7 * 24 * 3600;
/// The longest grace period a deployment may allow: 365 days.
pub const MAX_ROTATION_GRACE_SECONDS: u64 = 365 * 24 * 3600;

/// `[keys]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKeys {
    pub prefix: Option<String>,
    pub body_length: Option<usize>,
    pub alphabet: Option<String>,
    pub display_chars: Option<usize>,
    pub schemes: Option<Vec<String>>,
    pub max_active_per_account: Option<u32>,
    pub max_rotation_grace_seconds: Option<u64>,
}

/// Validated `[keys]`: the key format, and how many active keys an account
/// may hold.
#[derive(Debug, Clone)]
pub struct KeySettings {
    pub format: KeyFormat,
    pub max_active_per_account: u32,
    /// RotateKey's longest grace period (whole seconds).
    pub max_rotation_grace: std::time::Duration,
}

impl KeySettings {
    pub fn from_raw(raw: RawKeys) -> Result<Self, SettingError> {
        let alphabet = match raw.alphabet.as_deref() {
            None => DEFAULT_ALPHABET,
            Some(name) => Alphabet::parse(name).ok_or_else(|| {
                SettingError::new(
                    "keys.alphabet",
                    format!("{name:?} is not one of: {}", Alphabet::NAMES),
                )
            })?,
        };
        let format = KeyFormat::new(
            raw.prefix.as_deref().unwrap_or(DEFAULT_PREFIX),
            raw.body_length.unwrap_or(DEFAULT_BODY_LENGTH),
            alphabet,
            raw.schemes
                .unwrap_or_else(|| DEFAULT_SCHEMES.map(String::from).to_vec()),
            raw.display_chars.unwrap_or(DEFAULT_DISPLAY_CHARS),
        )
        .map_err(|(field, reason)| SettingError::new(format!("keys.{field}"), reason))?;
        let max_active_per_account = in_range(
            raw.max_active_per_account
                .unwrap_or(DEFAULT_MAX_ACTIVE_PER_ACCOUNT),
            1,
            100_000,
        )
        .map_err(SettingError::at("keys.max_active_per_account"))?;
        let max_rotation_grace = in_range(
            raw.max_rotation_grace_seconds
                .unwrap_or(DEFAULT_MAX_ROTATION_GRACE_SECONDS),
            0,
            MAX_ROTATION_GRACE_SECONDS,
        )
        .map_err(SettingError::at("keys.max_rotation_grace_seconds"))?;
        Ok(Self {
            format,
            max_active_per_account,
            max_rotation_grace: std::time::Duration::from_secs(max_rotation_grace),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: String,
    body_length: usize,
    alphabet: Alphabet,
    /// Authorization schemes accepted in front of a key (`Bearer`, `ApiKey`).
    schemes: Vec<String>,
    /// How many body characters `start` shows.
    display_chars: usize,
}

impl KeyFormat {
    /// The built-in format, Carboncopy's: `cc_` and 64 lowercase hex
    /// digits (after `Bearer` or `ApiKey`).
    pub fn carboncopy() -> Self {
        Self::new(
            DEFAULT_PREFIX,
            DEFAULT_BODY_LENGTH,
            DEFAULT_ALPHABET,
            DEFAULT_SCHEMES.map(String::from).to_vec(),
            DEFAULT_DISPLAY_CHARS,
        )
        .expect("built-in key format is valid")
    }

    /// A format, or the setting that is wrong (`prefix`, `body_length`,
    /// `schemes`, `display_chars`) and why.
    pub fn new(
        prefix: &str,
        body_length: usize,
        alphabet: Alphabet,
        schemes: Vec<String>,
        display_chars: usize,
    ) -> Result<Self, (&'static str, String)> {
        if prefix.is_empty() || prefix.len() > 32 {
            return Err(("prefix", "must be 1 to 32 characters".into()));
        }
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err((
                "prefix",
                "may contain only ASCII letters, digits, `_` and `-`".into(),
            ));
        }
        let entropy = body_length as f64 * alphabet.bits_per_symbol();
        if entropy < MIN_ENTROPY_BITS {
            return Err((
                "body_length",
                format!(
                    "{body_length} {} characters carry {entropy:.0} bits; at least {MIN_ENTROPY_BITS:.0} are required",
                    alphabet.name()
                ),
            ));
        }
        if prefix.len() + body_length > MAX_CREDENTIAL_BYTES - 16 {
            return Err((
                "body_length",
                format!(
                    "prefix plus body must stay under {} characters",
                    MAX_CREDENTIAL_BYTES - 16
                ),
            ));
        }
        for scheme in &schemes {
            if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err((
                    "schemes",
                    format!("{scheme:?} must be a non-empty ASCII word like `Bearer`"),
                ));
            }
        }
        if display_chars > body_length / 4 {
            return Err((
                "display_chars",
                format!(
                    "must be at most a quarter of the body ({}), got {display_chars}",
                    body_length / 4
                ),
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            body_length,
            alphabet,
            schemes,
            display_chars,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn body_length(&self) -> usize {
        self.body_length
    }

    pub fn alphabet(&self) -> Alphabet {
        self.alphabet
    }

    pub fn schemes(&self) -> &[String] {
        &self.schemes
    }

    /// A fresh secret from the OS CSPRNG, its digest, and its display `start`.
    pub fn generate(&self) -> Result<(KeySecret, KeyDigest, String), getrandom::Error> {
        let symbols = self.alphabet.symbols();
        // Rejection sampling keeps every symbol equally likely.
        let limit = 256 - (256 % symbols.len());
        let mut secret = String::with_capacity(self.prefix.len() + self.body_length);
        secret.push_str(&self.prefix);
        let mut random = [0u8; 64];
        while secret.len() < self.prefix.len() + self.body_length {
            getrandom::fill(&mut random)?;
            for &byte in &random {
                if (byte as usize) < limit && secret.len() < self.prefix.len() + self.body_length {
                    secret.push(symbols[byte as usize % symbols.len()] as char);
                }
            }
        }
        let digest = KeyDigest::of(&secret);
        let start = secret[..self.prefix.len() + self.display_chars].to_owned();
        Ok((KeySecret(secret), digest, start))
    }

    /// Takes what a caller received (`<scheme> <key>` with one of
    /// `keys.schemes`, by default `Bearer` or `ApiKey`, or the bare key;
    /// scheme case-insensitive; surrounding whitespace ignored) and returns
    /// the key if it has this format.
    pub fn extract<'a>(&self, credential: &'a str) -> Result<&'a str, CredentialProblem> {
        let trimmed = credential.trim();
        if trimmed.is_empty() {
            return Err(CredentialProblem::Missing);
        }
        let key = match trimmed.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((scheme, rest)) if self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) => {
                rest.trim_start()
            }
            _ => trimmed,
        };
        self.check_key(key)?;
        Ok(key)
    }

    /// Checks a key with no scheme in front (from a header or query parameter).
    pub fn check_key(&self, key: &str) -> Result<(), CredentialProblem> {
        let Some(body) = key.strip_prefix(self.prefix.as_str()) else {
            return Err(CredentialProblem::Missing);
        };
        // Length before the alphabet check, so an oversized body is refused
        // without a scan of its characters.
        if body.len() != self.body_length || !body.bytes().all(|b| self.alphabet.contains(b)) {
            return Err(CredentialProblem::Malformed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
