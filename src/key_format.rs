//! The shape of a key secret (prefix, body length, alphabet, optional
//! checksum): generating new secrets from the OS CSPRNG and recognising
//! presented credentials before any hashing or database access.
//!
//! With `keys.checksum = true` the body is the random part followed by a
//! 6-character base62 CRC32 of it (as GitHub's tokens carry): secret
//! scanners can tell a real key from look-alikes offline, and a mistyped
//! or truncated key is MALFORMED_CREDENTIAL without a SHA-256 or a lookup.
//! `body_length` stays the whole body's length (what a scanner's regex and
//! a caller see); the random part is 6 characters shorter.

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
    pub checksum: Option<bool>,
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
        .and_then(|format| format.with_checksum(raw.checksum.unwrap_or(false)))
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
    /// Whether the body ends in [`CHECKSUM_CHARS`] base62 characters of the
    /// CRC32 of the random part before them.
    checksum: bool,
}

/// Characters of a key body's checksum (`keys.checksum`).
pub const CHECKSUM_CHARS: usize = 6;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The checksum of a random part: its CRC32 (IEEE), in base62, most
/// significant digit first, padded with `0` to six characters (62^6 > 2^32,
/// so six always suffice). On the stack: the hot path checks it without
/// allocating.
fn checksum_of(random: &[u8]) -> [u8; CHECKSUM_CHARS] {
    let mut value = crc32fast::hash(random);
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits
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
            checksum: false,
        })
    }

    /// This format with the checksum on or off (`keys.checksum`). With it
    /// on, the body keeps its length and its random part loses six
    /// characters, which must still carry [`MIN_ENTROPY_BITS`].
    pub fn with_checksum(mut self, on: bool) -> Result<Self, (&'static str, String)> {
        if on {
            let random = self.body_length.saturating_sub(CHECKSUM_CHARS);
            let entropy = random as f64 * self.alphabet.bits_per_symbol();
            if entropy < MIN_ENTROPY_BITS {
                return Err((
                    "checksum",
                    format!(
                        "the checksum takes {CHECKSUM_CHARS} of body_length's {} characters, leaving {random} random {} characters that carry {entropy:.0} bits; at least {MIN_ENTROPY_BITS:.0} are required (raise body_length)",
                        self.body_length,
                        self.alphabet.name()
                    ),
                ));
            }
        }
        self.checksum = on;
        Ok(self)
    }

    /// Whether keys carry a checksum (`keys.checksum`).
    pub fn checksum(&self) -> bool {
        self.checksum
    }

    /// Random characters in a body (the body less its checksum).
    fn random_length(&self) -> usize {
        if self.checksum {
            self.body_length - CHECKSUM_CHARS
        } else {
            self.body_length
        }
    }

    /// The regular expression a secret scanner should search for to find
    /// this format's keys (README, "Checksummed keys"; no anchors, as
    /// scanners search text). With the checksum on, a scanner then confirms
    /// a match offline with the CRC32 of its random part.
    pub fn scanner_regex(&self) -> String {
        let mut regex = String::new();
        for c in self.prefix.chars() {
            if !c.is_ascii_alphanumeric() && c != '_' {
                regex.push('\\');
            }
            regex.push(c);
        }
        let class = match self.alphabet {
            Alphabet::LowerHex => "[0-9a-f]",
            Alphabet::LowerAlphanumeric => "[0-9a-z]",
            Alphabet::Base62 => "[0-9A-Za-z]",
        };
        regex.push_str(&format!("{class}{{{}}}", self.random_length()));
        if self.checksum {
            regex.push_str(&format!("[0-9A-Za-z]{{{CHECKSUM_CHARS}}}"));
        }
        regex
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
        let random_end = self.prefix.len() + self.random_length();
        let mut random = [0u8; 64];
        while secret.len() < random_end {
            getrandom::fill(&mut random)?;
            for &byte in &random {
                if (byte as usize) < limit && secret.len() < random_end {
                    secret.push(symbols[byte as usize % symbols.len()] as char);
                }
            }
        }
        if self.checksum {
            let digits = checksum_of(&secret.as_bytes()[self.prefix.len()..]);
            secret.extend(digits.iter().map(|&digit| digit as char));
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
        if body.len() != self.body_length {
            return Err(CredentialProblem::Malformed);
        }
        let (random, checksum) = body.as_bytes().split_at(self.random_length());
        if !random.iter().all(|&b| self.alphabet.contains(b)) {
            return Err(CredentialProblem::Malformed);
        }
        // Before any hashing or lookup: a key whose checksum does not match
        // was never issued (a typo, a truncation, a guess).
        if self.checksum && checksum != checksum_of(random) {
            return Err(CredentialProblem::Malformed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
