//! Validated value types shared by every layer: account and key ids, key
//! names, digests, timestamps, rate limits. Parse, don't validate: holding one
//! of these means it is valid. No proto or database types here.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Why a value was rejected. `field` is filled in by the API layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(message: impl Into<String>) -> InvalidValue {
    InvalidValue(message.into())
}

/// An account id as the caller's own system names its accounts
/// (a user id, a Privy DID, a UUID...): 1 to 128 printable ASCII characters
/// other than space (`!` to `~`, bytes 0x21 to 0x7E). ASCII only, so two
/// ids that look alike are the same id: no Cyrillic `а` for a Latin `a`, no
/// fullwidth letters, no invisible or direction-changing characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(invalid(format!(
                "must be at most {} bytes, got {}",
                Self::MAX_LEN,
                raw.len()
            )));
        }
        if let Some(bad) = raw.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(invalid(format!(
                "must be printable ASCII without spaces (`!` to `~`); found {}",
                describe_char(bad)
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key's public identifier: `key_` and 32 lowercase hex digits (a UUIDv7,
/// so ids sort by creation time). Not derived from the secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    const PREFIX: &'static str = "key_";
    const HEX_LEN: usize = 32;

    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, uuid::Uuid::now_v7().simple()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() {
            return Err(invalid("must not be empty"));
        }
        let valid = raw
            .strip_prefix(Self::PREFIX)
            .is_some_and(|hex| hex.len() == Self::HEX_LEN && is_lower_hex(hex));
        if !valid {
            return Err(invalid(
                "must be `key_` followed by 32 lowercase hex digits, as returned by CreateKey",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id from text that was a `KeyId` (a cached key's own id, which
    /// keeps it as text): not checked again.
    pub(crate) fn trusted(text: &str) -> Self {
        Self(text.to_owned())
    }
}

/// Tables keyed by `KeyId` can be read with the id's text (a cached key
/// holds its id as text); `KeyId` hashes and compares as its `String` does.
impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A human label for a key: 1 to 100 characters, no control characters
/// and no Unicode format characters (bidirectional overrides that make
/// `safe\u{202e}gnp.exe` display as `safeexe.png`, zero-width characters
/// that make two names look the same), surrounding whitespace removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("must not be empty"));
        }
        let chars = trimmed.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(invalid(format!(
                "must be at most {} characters, got {chars}",
                Self::MAX_CHARS
            )));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        if let Some(bad) = trimmed.chars().find(|&c| is_format_char(c)) {
            return Err(invalid(format!(
                "must not contain invisible or text-direction characters; found {}",
                describe_char(bad)
            )));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `U+202E` style, so an error never echoes an invisible character raw.
fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("{c:?}")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// Whether `c` is a Unicode format character (general category Cf, as of
/// Unicode 15): bidirectional controls, zero-width joiners and spaces, the
/// byte-order mark, invisible operators, tag characters.
pub fn is_format_char(c: char) -> bool {
    const RANGES: [(u32, u32); 21] = [
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    let c = u32::from(c);
    RANGES.iter().any(|&(low, high)| (low..=high).contains(&c))
}

/// SHA-256 of a whole key secret: the only form of a secret keyward stores.
/// Ordered so that the key cache can keep digests sorted (`key_map.rs`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyDigest {
    // A digest is not secret, but there is no reason to spread it around either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

/// Milliseconds since the Unix epoch; the one time type of storage and domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    pub fn saturating_add_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// RFC 3339 in UTC (`2026-12-02T13:52:17.067Z`, fractions only when
    /// not zero), for messages that say what a caller sent. Before 1970 it
    /// is the raw count (`-5 ms since 1970-01-01T00:00:00Z`).
    pub fn rfc3339(self) -> String {
        match u64::try_from(self.0) {
            Ok(millis) => {
                let at = UNIX_EPOCH + std::time::Duration::from_millis(millis);
                if millis % 1000 == 0 {
                    humantime::format_rfc3339_seconds(at).to_string()
                } else {
                    humantime::format_rfc3339_millis(at).to_string()
                }
            }
            Err(_) => format!("{} ms since 1970-01-01T00:00:00Z", self.0),
        }
    }
}

/// At most `requests` requests per `per_seconds` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    requests: u32,
    per_seconds: u32,
}

impl RateLimit {
    /// One day; longer windows are almost certainly a unit mistake.
    pub const MAX_PER_SECONDS: u32 = 86_400;

    pub fn new(requests: u32, per_seconds: u32) -> Result<Self, InvalidValue> {
        if requests == 0 {
            return Err(invalid("requests must be at least 1"));
        }
        if per_seconds == 0 || per_seconds > Self::MAX_PER_SECONDS {
            return Err(invalid(format!(
                "per_seconds must be between 1 and {}, got {per_seconds}",
                Self::MAX_PER_SECONDS
            )));
        }
        Ok(Self {
            requests,
            per_seconds,
        })
    }

    pub fn requests(&self) -> u32 {
        self.requests
    }

    pub fn per_seconds(&self) -> u32 {
        self.per_seconds
    }
}

/// A key's usage quota: `requests` uses in all (`Refill::Never`), or per
/// UTC day or month, refilled at the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    requests: u64,
    refill: Refill,
}

/// When a quota is refilled: never, or at each UTC day or month boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refill {
    Never,
    Daily,
    Monthly,
}

const DAY_MILLIS: i64 = 86_400_000;

impl Refill {
    /// Stable lower-case name (storage, Redis keys, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Daily => "daily",
            Self::Monthly => "monthly",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "never" => Some(Self::Never),
            "daily" => Some(Self::Daily),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }

    /// The refill period `at` falls in: 0 for `Never`, else the UTC day or
    /// month counted from 1970-01 (so later periods are larger).
    pub fn period(self, at: UnixMillis) -> u64 {
        let day = at.0.div_euclid(DAY_MILLIS);
        let period = match self {
            Self::Never => 0,
            Self::Daily => day,
            Self::Monthly => {
                let (year, month) = civil_from_days(day);
                year * 12 + (month - 1) - 1970 * 12
            }
        };
        u64::try_from(period).unwrap_or(0)
    }

    /// When `period` ends (the next refill), or `None` for `Never`.
    pub fn period_end(self, period: u64) -> Option<UnixMillis> {
        let period = i64::try_from(period).unwrap_or(i64::MAX / DAY_MILLIS / 400);
        match self {
            Self::Never => None,
            Self::Daily => Some(UnixMillis(
                period.saturating_add(1).saturating_mul(DAY_MILLIS),
            )),
            Self::Monthly => {
                let next = period + 1 + 1970 * 12;
                let days = days_from_civil(next.div_euclid(12), next.rem_euclid(12) + 1);
                Some(UnixMillis(days.saturating_mul(DAY_MILLIS)))
            }
        }
    }
}

/// (year, month 1..=12) of a day counted from 1970-01-01 (H. Hinnant's
/// civil-from-days).
fn civil_from_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The day (from 1970-01-01) on which `year`-`month` begins.
fn days_from_civil(year: i64, month: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Quota {
    /// 10^15: counts stay exact in every store (Redis scripts count in
    /// doubles, exact to 2^53).
    pub const MAX_REQUESTS: u64 = 1_000_000_000_000_000;

    /// At least one request (a key with none left is revoked, not given
    /// an empty quota).
    pub fn new(requests: u64, refill: Refill) -> Result<Self, InvalidValue> {
        if requests == 0 {
            return Err(invalid("requests must be at least 1"));
        }
        if requests > Self::MAX_REQUESTS {
            return Err(invalid(format!(
                "requests must be at most {}",
                Self::MAX_REQUESTS
            )));
        }
        Ok(Self { requests, refill })
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn refill(&self) -> Refill {
        self.refill
    }
}

/// How much of a key's quota is used, in which refill period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    pub period: u64,
    pub used: u64,
}

#[cfg(test)]
mod tests;
