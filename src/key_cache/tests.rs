//! Unit tests for `key_cache`.

use super::*;
use crate::domain::KeyName;

fn record(digest: KeyDigest) -> KeyRecord {
    KeyRecord {
        id: KeyId::generate(),
        account_id: AccountId::parse("acct").unwrap(),
        name: KeyName::parse("k").unwrap().as_str().to_owned(),
        digest,
        start: "cc_abcdef".into(),
        scopes: vec!["traders:write".into()],
        rate_limit: None,
        created_at: UnixMillis(1),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

fn cached(digest: KeyDigest) -> Arc<CachedKey> {
    Arc::new(CachedKey::from_record(
        record(digest),
        &ScopeCatalog::carboncopy(),
    ))
}

#[test]
fn a_load_that_overlaps_a_change_is_not_cached() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_x");
    let key = cached(digest);
    let Lookup::Miss(ticket) = cache.lookup_digest(&digest) else {
        panic!("expected a miss");
    };
    // The change commits and is applied while the load is in flight.
    cache.invalidate(&key.id, &digest);
    assert!(!cache.insert_by_digest(ticket, &key, digest));
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Miss(_)));
}

#[test]
fn a_change_after_the_insert_removes_the_entry() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_y");
    let key = cached(digest);
    let ticket = cache.ticket();
    assert!(cache.insert_by_digest(ticket, &key, digest));
    assert!(cache.insert_by_id(ticket, &key));
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Hit(_)));
    cache.invalidate(&key.id, &digest);
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Miss(_)));
    assert!(matches!(cache.lookup_id(&key.id), Lookup::Miss(_)));
}

#[test]
fn racing_loads_and_changes_never_leave_a_stale_entry() {
    // Many rounds of: a loader thread with a ticket from before the change,
    // racing the change on another thread. After both finish, the cache must
    // not hold the pre-change entry.
    let cache = Arc::new(KeyCache::new(&CacheSettings::default()));
    for round in 0..2_000 {
        let digest = KeyDigest::of(&format!("cc_{round}"));
        let key = cached(digest);
        let ticket = cache.ticket();
        let loader = {
            let cache = Arc::clone(&cache);
            let key = Arc::clone(&key);
            std::thread::spawn(move || {
                cache.insert_by_digest(ticket, &key, digest);
            })
        };
        cache.invalidate(&key.id, &digest);
        loader.join().unwrap();
        assert!(
            matches!(cache.lookup_digest(&digest), Lookup::Miss(_)),
            "round {round}: stale entry survived"
        );
    }
}

#[test]
fn negative_entries_are_remembered_and_forgotten() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_z");
    cache.insert_unknown(digest);
    assert!(matches!(cache.lookup_digest(&digest), Lookup::KnownUnknown));
    cache.forget_unknown(&digest);
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Miss(_)));
}

#[test]
fn use_is_queued_once_until_taken() {
    let key = cached(KeyDigest::of("cc_u"));
    assert!(key.note_use(UnixMillis(10_000)));
    assert!(!key.note_use(UnixMillis(10_500)));
    assert_eq!(key.take_use(), Some(UnixMillis(10_000)));
    assert!(key.note_use(UnixMillis(12_000)));
    assert_eq!(key.last_used_at(), Some(UnixMillis(12_000)));
}

#[test]
fn effective_scopes_include_implied_ones() {
    let key = cached(KeyDigest::of("cc_s"));
    let catalog = ScopeCatalog::carboncopy();
    assert!(
        key.effective
            .contains(catalog.lookup("traders:read").unwrap())
    );
    assert!(
        !key.granted
            .contains(catalog.lookup("traders:read").unwrap())
    );
}
