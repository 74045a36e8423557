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
    assert!(cache.insert_by_digest(cache.ticket_for_digest(&digest), &key, digest));
    assert!(cache.insert_by_id(cache.ticket_for_id(&key.id), &key));
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
        let by_digest = cache.ticket_for_digest(&digest);
        let by_id = cache.ticket_for_id(&key.id);
        let loader = {
            let cache = Arc::clone(&cache);
            let key = Arc::clone(&key);
            std::thread::spawn(move || {
                cache.insert_by_digest(by_digest, &key, digest);
                cache.insert_by_id(by_id, &key);
            })
        };
        cache.invalidate(&key.id, &digest);
        loader.join().unwrap();
        assert!(
            matches!(cache.lookup_digest(&digest), Lookup::Miss(_)),
            "round {round}: stale entry survived (by digest)"
        );
        assert!(
            matches!(cache.lookup_id(&key.id), Lookup::Miss(_)),
            "round {round}: stale entry survived (by id)"
        );
    }
}

#[test]
fn a_change_to_a_key_in_another_stripe_does_not_disturb_a_load() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_mine");
    let key = cached(digest);
    let by_digest = cache.ticket_for_digest(&digest);
    let by_id = cache.ticket_for_id(&key.id);
    // Another key that shares neither of this key's stripes.
    let (other, other_digest) = (0..)
        .map(|i| {
            let digest = KeyDigest::of(&format!("cc_other_{i}"));
            (cached(digest), digest)
        })
        .find(|(other, other_digest)| {
            cache.digest_stripe(other_digest) != cache.digest_stripe(&digest)
                && cache.id_stripe(&other.id) != cache.id_stripe(&key.id)
        })
        .unwrap();

    cache.invalidate(&other.id, &other_digest);

    assert!(cache.insert_by_digest(by_digest, &key, digest));
    assert!(cache.insert_by_id(by_id, &key));
}

#[test]
fn a_change_to_a_key_in_the_same_stripe_disturbs_a_load() {
    // One stripe: every key shares it.
    let cache = KeyCache::with_stripes(&CacheSettings::default(), 1);
    let digest = KeyDigest::of("cc_mine");
    let key = cached(digest);
    let other_digest = KeyDigest::of("cc_other");
    let other = cached(other_digest);
    let by_digest = cache.ticket_for_digest(&digest);
    let by_id = cache.ticket_for_id(&key.id);

    cache.invalidate(&other.id, &other_digest);

    assert!(!cache.insert_by_digest(by_digest, &key, digest));
    assert!(!cache.insert_by_id(by_id, &key));
}

#[test]
fn clearing_disturbs_every_load_in_flight() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_clear");
    let key = cached(digest);
    let by_digest = cache.ticket_for_digest(&digest);
    let by_id = cache.ticket_for_id(&key.id);

    cache.clear();

    assert!(!cache.insert_by_digest(by_digest, &key, digest));
    assert!(!cache.insert_by_id(by_id, &key));
}

#[test]
fn a_ticket_vouches_only_for_its_own_map_and_stripe() {
    let cache = KeyCache::with_stripes(&CacheSettings::default(), 1);
    let digest = KeyDigest::of("cc_t");
    let key = cached(digest);
    assert!(!cache.insert_by_id(cache.ticket_for_digest(&digest), &key));
    assert!(!cache.insert_by_digest(cache.ticket_for_id(&key.id), &key, digest));
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
