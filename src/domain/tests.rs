//! Unit tests for `domain`.

use super::*;

#[test]
fn account_id_rejects_empty_long_and_whitespace() {
    assert!(AccountId::parse("acct_1").is_ok());
    assert!(AccountId::parse("did:privy:cm3x9").is_ok());
    assert!(AccountId::parse("").is_err());
    assert!(AccountId::parse(&"a".repeat(129)).is_err());
    assert!(AccountId::parse("a b").is_err());
    assert!(AccountId::parse("a\nb").is_err());
}

#[test]
fn account_id_is_printable_ascii_only() {
    assert!(AccountId::parse("!~user@example.com#42").is_ok());
    // The look-alike: Cyrillic а, fullwidth Ａ, zero-width space,
    // right-to-left override.
    for lookalike in [
        "аcct",
        "acct_Ａ",
        "acct\u{200b}",
        "acct\u{202e}",
        "acct\u{7f}",
        "café",
    ] {
        let error = AccountId::parse(lookalike).unwrap_err();
        assert!(
            error.0.contains("printable ASCII"),
            "{lookalike:?}: {error}"
        );
        assert!(error.0.contains("U+"), "names the character: {error}");
    }
}

#[test]
fn key_names_refuse_format_characters() {
    assert!(KeyName::parse("Production Trading Bot — ünïcödé 🚀").is_ok());
    for sneaky in [
        "safe\u{202e}gnp.exe",
        "bot\u{200b}",
        "\u{feff}bot",
        "a\u{2066}b\u{2069}",
        "tag\u{e0041}",
        "soft\u{ad}hyphen",
    ] {
        let error = KeyName::parse(sneaky).unwrap_err();
        assert!(error.0.contains("text-direction"), "{sneaky:?}: {error}");
    }
}

#[test]
fn key_id_round_trips_and_rejects_other_shapes() {
    let id = KeyId::generate();
    assert_eq!(KeyId::parse(id.as_str()).unwrap(), id);
    assert!(KeyId::parse("").is_err());
    assert!(KeyId::parse("key_123").is_err());
    assert!(KeyId::parse(&format!("key_{}", "A".repeat(32))).is_err());
    assert!(KeyId::parse(&format!("kex_{}", "a".repeat(32))).is_err());
}

#[test]
fn key_ids_sort_by_creation() {
    let first = KeyId::generate();
    let second = KeyId::generate();
    assert!(first < second);
}

#[test]
fn key_name_is_trimmed_and_bounded() {
    assert_eq!(KeyName::parse("  bot  ").unwrap().as_str(), "bot");
    assert!(KeyName::parse("   ").is_err());
    assert!(KeyName::parse(&"é".repeat(100)).is_ok());
    assert!(KeyName::parse(&"é".repeat(101)).is_err());
    assert!(KeyName::parse("a\u{0}b").is_err());
}

#[test]
fn rate_limit_bounds() {
    assert!(RateLimit::new(10, 1).is_ok());
    assert!(RateLimit::new(0, 1).is_err());
    assert!(RateLimit::new(1, 0).is_err());
    assert!(RateLimit::new(1, RateLimit::MAX_PER_SECONDS + 1).is_err());
}

#[test]
fn digest_debug_does_not_print_bytes() {
    let digest = KeyDigest::of("cc_secret");
    assert_eq!(format!("{digest:?}"), "KeyDigest(..)");
}

#[test]
fn quota_bounds() {
    assert!(Quota::new(0, Refill::Daily).is_err());
    assert!(Quota::new(1, Refill::Never).is_ok());
    assert!(Quota::new(u64::MAX, Refill::Monthly).is_err());
}

/// Milliseconds of a UTC date and time.
fn utc(year: i64, month: i64, day: i64, hour: i64) -> UnixMillis {
    UnixMillis(((days_from_civil(year, month) + day - 1) * 24 + hour) * 3_600_000)
}

#[test]
fn refill_periods_turn_over_at_utc_day_and_month_boundaries() {
    let just_before = |at: UnixMillis| UnixMillis(at.0 - 1);
    // Days.
    let midnight = utc(2026, 12, 7, 0);
    assert_eq!(
        Refill::Daily.period(just_before(midnight)) + 1,
        Refill::Daily.period(midnight)
    );
    assert_eq!(
        Refill::Daily.period_end(Refill::Daily.period(just_before(midnight))),
        Some(midnight)
    );
    // Months, across a year and a leap February.
    for (year, month) in [(2027, 1), (2028, 3), (2028, 2), (1970, 2)] {
        let first = utc(year, month, 1, 0);
        let before = Refill::Monthly.period(just_before(first));
        assert_eq!(before + 1, Refill::Monthly.period(first), "{year}-{month}");
        assert_eq!(
            Refill::Monthly.period_end(before),
            Some(first),
            "{year}-{month}"
        );
        assert_eq!(
            Refill::Monthly.period(utc(year, month, 28, 23)),
            Refill::Monthly.period(first)
        );
    }
    assert_eq!(Refill::Monthly.period(UnixMillis(0)), 0);
    assert_eq!(Refill::Never.period(utc(2030, 5, 5, 5)), 0);
    assert_eq!(Refill::Never.period_end(0), None);
}
