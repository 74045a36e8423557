//! Unit tests for `cached_key`: every field of the compact layout reads
//! back as the record held it, and its wire bytes are the `Key` fields
//! they stand for.

use std::collections::BTreeMap;
use std::net::IpAddr;

use prost::Message;

use super::*;
use crate::domain::{AccountId, KeyDigest, KeyName, Refill};
use crate::proto;

fn plain_record() -> KeyRecord {
    KeyRecord {
        id: KeyId::generate(),
        account_id: AccountId::parse("a").unwrap(),
        name: KeyName::parse("k").unwrap().as_str().to_owned(),
        digest: KeyDigest::of("cc_plain"),
        start: "cc_abcdef".into(),
        scopes: Vec::new(),
        rate_limit: None,
        quota: None,
        quota_usage: Default::default(),
        created_at: UnixMillis(0),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        metadata: Default::default(),
        allowed_networks: Vec::new(),
        rotated_from: None,
    }
}

/// A key at the limits validation allows: the longest account id, a
/// 100-character name outside ASCII, 16 metadata entries of 64-byte names
/// and 512-byte values (non-ASCII, one empty), 32 networks of both
/// families, every optional field set.
fn full_record() -> KeyRecord {
    let metadata: Metadata = (0..16)
        .map(|i| {
            let name = format!("{i:02}{}", "n".repeat(62));
            let value = match i {
                0 => String::new(),
                // 2-byte and 4-byte characters, 512 bytes in all.
                1 => "é".repeat(256),
                2 => "🔑".repeat(128),
                _ => format!("{i}{}", "v".repeat(511 - i.to_string().len())),
            };
            (name, value)
        })
        .collect();
    let allowed_networks = (0..32)
        .map(|i| {
            if i % 2 == 0 {
                format!("10.{i}.0.0/16")
            } else {
                format!("2001:db8:{i:x}::/48")
            }
        })
        .collect();
    KeyRecord {
        id: KeyId::generate(),
        account_id: AccountId::parse(&"A~".repeat(64)).unwrap(),
        name: KeyName::parse(&"ключ".repeat(25))
            .unwrap()
            .as_str()
            .to_owned(),
        digest: KeyDigest::of("cc_full"),
        start: "cc_0123456789".into(),
        scopes: vec!["traders:write".into(), "portfolio:read".into()],
        rate_limit: Some(RateLimit::new(100, 60).unwrap()),
        quota: Some(Quota::new(1000, Refill::Daily).unwrap()),
        quota_usage: QuotaUsage { period: 7, used: 3 },
        created_at: UnixMillis(1_700_000_000_123),
        expires_at: Some(UnixMillis(1_800_000_000_000)),
        revoked_at: Some(UnixMillis(-5)),
        last_used_at: Some(UnixMillis(1_750_000_000_000)),
        metadata,
        allowed_networks,
        rotated_from: Some(KeyId::generate()),
    }
}

fn cached(record: &KeyRecord) -> CachedKey {
    CachedKey::from_record(record.clone(), &ScopeCatalog::carboncopy())
}

/// The `Key` fields a cached key's bytes carry, decoded as a client would.
fn wire_fields(key: &CachedKey) -> proto::Key {
    let (bytes, head, end) = key.encoded_fields();
    assert!(head <= end && end <= bytes.len());
    proto::Key::decode(&bytes[..end]).unwrap()
}

fn assert_round_trips(record: &KeyRecord) {
    let key = cached(record);
    assert_eq!(key.id(), record.id.as_str());
    assert_eq!(key.key_id(), record.id);
    assert_eq!(key.account_id(), record.account_id.as_str());
    assert_eq!(key.name(), record.name);
    assert_eq!(key.start(), record.start);
    assert_eq!(
        key.rotated_from(),
        record.rotated_from.as_ref().map(KeyId::as_str)
    );
    assert_eq!(key.created_at, record.created_at);
    assert_eq!(key.expires_at(), record.expires_at);
    assert_eq!(key.revoked_at(), record.revoked_at);
    assert_eq!(key.last_used_at(), record.last_used_at);
    assert_eq!(key.rate_limit(), record.rate_limit);
    assert_eq!(key.limited().rate_limit, record.rate_limit);
    assert_eq!(key.quota(), record.quota);
    let quota_key = key.quota_key();
    assert_eq!(quota_key.map(|q| q.quota), record.quota);
    assert_eq!(
        quota_key.map(|q| q.id),
        record.quota.map(|_| record.id.as_str())
    );
    if record.quota.is_some() {
        assert_eq!(quota_key.unwrap().stored, record.quota_usage);
    }
    assert_eq!(key.limited().id, record.id.as_str());
    let catalog = ScopeCatalog::carboncopy();
    assert_eq!(
        catalog.names(key.granted).collect::<Vec<_>>().len(),
        record.scopes.len()
    );
    assert!(
        record
            .scopes
            .iter()
            .all(|name| key.granted.contains(catalog.lookup(name).unwrap()))
    );
    assert_eq!(
        key.metadata().collect::<Vec<_>>(),
        record
            .metadata
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect::<Vec<_>>()
    );
    for (name, value) in &record.metadata {
        assert_eq!(key.metadata_value(name), Some(value.as_str()), "{name}");
        assert_eq!(key.metadata_value(&format!("{name}x")), None);
    }
    assert_eq!(key.metadata_value(""), None);
    assert_eq!(key.metadata_value("~"), None);
    assert_eq!(
        key.allowed_networks().collect::<Vec<_>>(),
        record.allowed_networks
    );
    assert_eq!(
        key.has_allowed_networks(),
        !record.allowed_networks.is_empty()
    );
    // The bytes Authenticate's reply copies are exactly those fields.
    let wire = wire_fields(&key);
    assert_eq!(
        wire,
        proto::Key {
            id: record.id.to_string(),
            account_id: record.account_id.to_string(),
            name: record.name.clone(),
            start: record.start.clone(),
            rotated_from: record
                .rotated_from
                .as_ref()
                .map(KeyId::to_string)
                .unwrap_or_default(),
            metadata: record.metadata.clone().into_iter().collect(),
            allowed_networks: record.allowed_networks.clone(),
            ..Default::default()
        }
    );
    let (bytes, head, _) = key.encoded_fields();
    let head_only = proto::Key::decode(&bytes[..head]).unwrap();
    assert_eq!(head_only.id, record.id.as_str());
    assert!(head_only.metadata.is_empty() && head_only.rotated_from.is_empty());
}

#[test]
fn every_field_of_a_full_key_round_trips() {
    assert_round_trips(&full_record());
}

#[test]
fn every_field_of_a_plain_key_round_trips() {
    assert_round_trips(&plain_record());
    let key = cached(&plain_record());
    assert!(key.allows(None));
    assert!(key.quota_key().is_none() && key.quota_slot().is_none());
}

#[test]
fn absent_strings_read_as_empty_and_a_plain_key_keeps_no_index() {
    let mut record = plain_record();
    record.name = String::new();
    record.start = String::new();
    let key = cached(&record);
    assert_eq!(key.id(), record.id.as_str());
    assert_eq!(key.account_id(), "a");
    assert_eq!(
        (key.name(), key.start(), key.rotated_from()),
        ("", "", None)
    );
    let mut record = plain_record();
    record.account_id = AccountId::parse(&"b".repeat(128)).unwrap();
    record.start = String::new();
    record.rotated_from = Some(KeyId::generate());
    assert_round_trips(&record);
    // The strings are walked to, not indexed: a plain key's text is its
    // wire bytes alone (an index entry per string was 16 B a key at a
    // million keys).
    let key = cached(&plain_record());
    let (bytes, _, end) = key.encoded_fields();
    assert_eq!(bytes.len(), end);
}

#[test]
fn few_metadata_entries_and_networks_round_trip() {
    let mut record = plain_record();
    record.metadata = BTreeMap::from([
        ("b".to_owned(), "2".to_owned()),
        ("a".to_owned(), "1".to_owned()),
        ("c".to_owned(), "3".to_owned()),
    ]);
    record.allowed_networks = vec!["2001:db8::1/128".into()];
    record.expires_at = Some(UnixMillis(0));
    // A rate limit alone: the rarely-set part without a quota.
    record.rate_limit = Some(RateLimit::new(5, 1).unwrap());
    assert_round_trips(&record);
    let key = cached(&record);
    assert_eq!(key.metadata_value("a"), Some("1"));
    assert_eq!(key.metadata_value("c"), Some("3"));
    assert_eq!(key.metadata_value("d"), None);
    assert_eq!(key.expires_at(), Some(UnixMillis(0)));
}

#[test]
fn the_parsed_networks_decide_as_the_allowlist_does() {
    let record = full_record();
    let key = cached(&record);
    let listed = AllowedNetworks::from_stored(&record.allowed_networks);
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    for client in [
        ip("10.0.1.2"),
        ip("10.30.255.255"),
        ip("::ffff:10.2.3.4"),
        ip("2001:db8:1::7"),
        ip("2001:db8:1f:ffff::1"),
        ip("10.1.0.1"),
        ip("10.32.0.1"),
        ip("2001:db8:2::1"),
        ip("2001:db9::1"),
        ip("0.0.0.0"),
        None,
    ] {
        assert_eq!(key.allows(client), listed.allows(client), "{client:?}");
    }
    assert!(key.allows(ip("10.0.1.2")) && key.allows(ip("2001:db8:1f::1")));
    assert!(!key.allows(ip("10.1.0.1")) && !key.allows(None));
}

#[test]
fn an_unreadable_allowlist_keeps_the_key_closed() {
    let mut record = plain_record();
    record.allowed_networks = vec!["garbage".into()];
    let key = cached(&record);
    assert!(key.has_allowed_networks());
    assert!(!key.allows(Some("0.0.0.1".parse().unwrap())));
    assert!(!key.allows(None));
}

#[test]
fn the_cached_key_stays_small() {
    // A million of these are cached: see BENCHMARKS.md (issue 19) before
    // letting this grow. 120 bytes and the `Arc`'s 16 fit glibc's 144-byte
    // chunk; 121 would take 160.
    assert!(
        std::mem::size_of::<CachedKey>() <= 120,
        "{}",
        std::mem::size_of::<CachedKey>()
    );
}
