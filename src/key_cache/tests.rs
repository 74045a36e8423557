//! Unit tests for `key_cache`.

use std::sync::atomic::Ordering;

use super::*;
use crate::domain::{AccountId, KeyName, UnixMillis};
use crate::scope_catalog::ScopeCatalog;
use crate::storage::KeyRecord;

fn record(digest: KeyDigest) -> KeyRecord {
    KeyRecord {
        id: KeyId::generate(),
        account_id: AccountId::parse("acct").unwrap(),
        name: KeyName::parse("k").unwrap().as_str().to_owned(),
        digest,
        start: "cc_abcdef".into(),
        scopes: vec!["traders:write".into()],
        rate_limit: None,
        quota: None,
        quota_usage: Default::default(),
        created_at: UnixMillis(1),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        metadata: Default::default(),
        allowed_networks: Vec::new(),
        rotated_from: None,
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
    cache.invalidate(&key.key_id(), &digest);
    assert!(!cache.insert_by_digest(ticket, &key, digest));
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Miss(_)));
}

#[test]
fn a_change_after_the_insert_removes_the_entry() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_y");
    let key = cached(digest);
    assert!(cache.insert_by_digest(cache.ticket_for_digest(&digest), &key, digest));
    assert!(cache.insert_by_id(cache.ticket_for_id(&key.key_id()), &key));
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Hit(_)));
    cache.invalidate(&key.key_id(), &digest);
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Miss(_)));
    assert!(matches!(cache.lookup_id(&key.key_id()), Lookup::Miss(_)));
}

/// A reusable barrier for two threads that spins instead of sleeping, so
/// both leave it within nanoseconds of each other (a sleeping barrier's
/// wake-up takes microseconds and decides the order by itself). Each thread
/// passes the number of the meeting it has reached, 1, 2, 3, ...
struct SpinBarrier {
    arrived: std::sync::atomic::AtomicUsize,
}

impl SpinBarrier {
    fn wait(&self, meeting: usize) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut spins = 0u32;
        while self.arrived.load(Ordering::SeqCst) < 2 * meeting {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1 << 14) {
                // The other thread has been descheduled for a while; let it
                // run. (Yielding sooner would let the scheduler, not the
                // test, decide who leaves first.)
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Busy-waits until `delay` after `from`.
fn spin_until(from: std::time::Instant, delay: Duration) {
    while from.elapsed() < delay {
        std::hint::spin_loop();
    }
}

type Tickets = (crate::key_cache::LoadTicket, crate::key_cache::LoadTicket);

/// Inserts a key by digest and by id with tickets taken earlier: whether
/// each insert succeeded, and the nanoseconds both took.
fn timed_inserts(
    cache: &KeyCache,
    digest: &KeyDigest,
    key: &Arc<CachedKey>,
    (by_digest, by_id): Tickets,
) -> ([bool; 2], u64) {
    let started = std::time::Instant::now();
    let inserted = [
        cache.insert_by_digest(by_digest, key, *digest),
        cache.insert_by_id(by_id, key),
    ];
    let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    (inserted, took)
}

/// The median time of two successful inserts on this machine, now.
fn median_insert_nanos(cache: &KeyCache) -> u64 {
    let mut timings: Vec<u64> = (0..200)
        .map(|i| {
            let digest = KeyDigest::of(&format!("cc_timing_{i}"));
            let key = cached(digest);
            let tickets = (
                cache.ticket_for_digest(&digest),
                cache.ticket_for_id(&key.key_id()),
            );
            let (inserted, took) = timed_inserts(cache, &digest, &key, tickets);
            assert_eq!(inserted, [true, true]);
            cache.invalidate(&key.key_id(), &digest);
            took
        })
        .collect();
    timings.sort_unstable();
    timings[timings.len() / 2]
}

#[test]
fn racing_loads_and_changes_never_leave_a_stale_entry() {
    // Many rounds of: a loader with tickets from before the change inserts
    // the key (by digest, then by id) while the change invalidates it on
    // another thread. Both leave a spinning barrier together, and each round
    // delays one side, sweeping the start of the change from one insert
    // time before the loader's inserts to three after, in steps of 1/64 of
    // it: the change lands before, at every point inside, and after the
    // loader's critical sections. (The insert time is the loader's own:
    // timed before the rounds and then averaged over the rounds whose
    // inserts succeeded, so the sweep follows the machine's speed and load.)
    // After both finish the cache must not hold the key.
    // Both orders must happen often: the loader first (its insert succeeds
    // and the change removes the entry) and the change first (the insert
    // sees the new epoch and fails).
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    const ROUNDS: usize = 10_000;
    const STEPS_PER_INSERT: i64 = 64;
    const SWEEP: i64 = 4 * STEPS_PER_INSERT;
    let cache = KeyCache::new(&CacheSettings::default());
    let time_inserts = |digest: &KeyDigest, key: &Arc<CachedKey>, tickets| {
        timed_inserts(&cache, digest, key, tickets)
    };
    // Nanoseconds the loader's two inserts take when they succeed.
    let insert_nanos = AtomicU64::new(median_insert_nanos(&cache).max(STEPS_PER_INSERT as u64));
    // (loader's delay, change's delay) for a round.
    let delays = |round: usize| {
        let step = insert_nanos.load(Ordering::SeqCst) / STEPS_PER_INSERT as u64;
        let offset = (round as i64 % SWEEP) - STEPS_PER_INSERT;
        let later = |steps: i64| Duration::from_nanos(step * u64::try_from(steps.max(0)).unwrap());
        (later(-offset), later(offset))
    };
    let keys: Vec<(KeyDigest, Arc<CachedKey>)> = (0..ROUNDS)
        .map(|round| {
            let digest = KeyDigest::of(&format!("cc_{round}"));
            (digest, cached(digest))
        })
        .collect();
    let barrier = SpinBarrier {
        arrived: std::sync::atomic::AtomicUsize::new(0),
    };
    let (mut loader_first, mut change_first) = ([0usize; 2], [0usize; 2]);
    // Rounds whose entry survived (by digest, by id); collected rather than
    // asserted at once so that both threads always finish their rounds.
    let mut stale: Vec<(usize, &str)> = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (round, (digest, key)) in keys.iter().enumerate() {
                barrier.wait(2 * round + 1);
                spin_until(Instant::now(), delays(round).1);
                cache.invalidate(&key.key_id(), digest);
                barrier.wait(2 * round + 2);
            }
        });
        for (round, (digest, key)) in keys.iter().enumerate() {
            let tickets = (
                cache.ticket_for_digest(digest),
                cache.ticket_for_id(&key.key_id()),
            );
            barrier.wait(2 * round + 1);
            spin_until(Instant::now(), delays(round).0);
            let (inserted, took) = time_inserts(digest, key, tickets);
            barrier.wait(2 * round + 2);
            if inserted == [true, true] {
                // A moving average that one descheduled round cannot swamp.
                let average = insert_nanos.load(Ordering::SeqCst);
                insert_nanos.store(
                    (average * 15 + took.min(2 * average)) / 16,
                    Ordering::SeqCst,
                );
            }
            for (map, inserted) in inserted.into_iter().enumerate() {
                if inserted {
                    loader_first[map] += 1;
                } else {
                    change_first[map] += 1;
                }
            }
            if !matches!(cache.lookup_digest(digest), Lookup::Miss(_)) {
                stale.push((round, "by digest"));
            }
            if !matches!(cache.lookup_id(&key.key_id()), Lookup::Miss(_)) {
                stale.push((round, "by id"));
            }
        }
    });
    eprintln!(
        "inserts took {:?}; loader first {loader_first:?}, change first {change_first:?} \
         (by digest, by id); stale {}",
        Duration::from_nanos(insert_nanos.load(Ordering::SeqCst)),
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "{} stale entries survived a change, the first in round {}: {:?}",
        stale.len(),
        stale[0].0,
        &stale[..stale.len().min(10)]
    );
    for map in 0..2 {
        assert!(
            loader_first[map] >= ROUNDS / 10 && change_first[map] >= ROUNDS / 10,
            "both orders must happen often (map {map}): the loader went first {} times, \
             the change {} times",
            loader_first[map],
            change_first[map]
        );
    }
}

#[test]
fn a_change_to_a_key_in_another_stripe_does_not_disturb_a_load() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_mine");
    let key = cached(digest);
    let by_digest = cache.ticket_for_digest(&digest);
    let by_id = cache.ticket_for_id(&key.key_id());
    // Another key that shares neither of this key's stripes.
    let (other, other_digest) = (0..)
        .map(|i| {
            let digest = KeyDigest::of(&format!("cc_other_{i}"));
            (cached(digest), digest)
        })
        .find(|(other, other_digest)| {
            cache.digest_stripe(other_digest) != cache.digest_stripe(&digest)
                && cache.id_stripe(&other.key_id()) != cache.id_stripe(&key.key_id())
        })
        .unwrap();

    cache.invalidate(&other.key_id(), &other_digest);

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
    let by_id = cache.ticket_for_id(&key.key_id());

    cache.invalidate(&other.key_id(), &other_digest);

    assert!(!cache.insert_by_digest(by_digest, &key, digest));
    assert!(!cache.insert_by_id(by_id, &key));
}

#[test]
fn clearing_disturbs_every_load_in_flight() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_clear");
    let key = cached(digest);
    let by_digest = cache.ticket_for_digest(&digest);
    let by_id = cache.ticket_for_id(&key.key_id());

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
    assert!(!cache.insert_by_digest(cache.ticket_for_id(&key.key_id()), &key, digest));
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

#[test]
fn an_event_forgets_an_unknown_digest_and_a_load_that_raced_it_remembers_nothing() {
    let cache = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_imported");
    let id = KeyId::generate();
    let ticket = cache.ticket_for_digest(&digest);
    assert!(cache.insert_unknown_unless_changed(ticket, digest));
    assert!(matches!(cache.lookup_digest(&digest), Lookup::KnownUnknown));
    // The import's event, applied as the follower does: the digest is no
    // longer unknown.
    cache.invalidate(&id, &digest);
    cache.forget_unknown(&digest);
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Miss(_)));
    // A load that read "no such key" before the event cannot remember it after.
    let stale = cache.ticket_for_digest(&digest);
    cache.invalidate(&id, &digest);
    cache.forget_unknown(&digest);
    assert!(!cache.insert_unknown_unless_changed(stale, digest));
    assert!(matches!(cache.lookup_digest(&digest), Lookup::Miss(_)));
}

#[test]
fn an_entry_older_than_the_ttl_is_a_miss() {
    let aging = KeyCache::new(&CacheSettings {
        ttl: Duration::from_millis(20),
        ..CacheSettings::default()
    });
    let lasting = KeyCache::new(&CacheSettings::default());
    let digest = KeyDigest::of("cc_aging");
    let key = cached(digest);
    for cache in [&aging, &lasting] {
        assert!(cache.insert_by_digest(cache.ticket_for_digest(&digest), &key, digest));
        assert!(cache.insert_by_id(cache.ticket_for_id(&key.key_id()), &key));
    }
    // The safety net: once older than the ttl, the entry answers nothing
    // (polled: it ages on its own) ...
    let started = std::time::Instant::now();
    while matches!(aging.lookup_digest(&digest), Lookup::Hit(_))
        || matches!(aging.lookup_id(&key.key_id()), Lookup::Hit(_))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the entry never aged out"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(aging.lookup_digest(&digest), Lookup::Miss(_)));
    // ... while the same entry under the default ttl still does.
    assert!(matches!(lasting.lookup_digest(&digest), Lookup::Hit(_)));
    assert!(matches!(lasting.lookup_id(&key.key_id()), Lookup::Hit(_)));
}

/// Keys that share a bucket (one bucket here) are found, replaced and
/// removed one by one: a write to a bucket keeps its other keys.
#[test]
fn keys_sharing_a_bucket_are_kept_apart() {
    let map = key_map::KeyMap::<KeyDigest>::with_buckets(1_000, 1);
    let digests: Vec<_> = (0..50).map(|n| KeyDigest::of(&format!("cc_{n}"))).collect();
    let keys: Vec<_> = digests.iter().map(|digest| cached(*digest)).collect();
    for (digest, key) in digests.iter().zip(&keys) {
        map.insert(*digest, Arc::clone(key));
    }
    for (digest, key) in digests.iter().zip(&keys) {
        assert!(Arc::ptr_eq(&map.get(digest).unwrap(), key));
    }
    assert!(map.get(&KeyDigest::of("cc_absent")).is_none());

    // Replace one, remove another: the rest are untouched.
    let replacement = cached(digests[7]);
    map.insert(digests[7], Arc::clone(&replacement));
    map.remove(&digests[8]);
    map.remove(&KeyDigest::of("cc_absent"));
    for (n, (digest, key)) in digests.iter().zip(&keys).enumerate() {
        match n {
            7 => assert!(Arc::ptr_eq(&map.get(digest).unwrap(), &replacement)),
            8 => assert!(map.get(digest).is_none()),
            _ => assert!(Arc::ptr_eq(&map.get(digest).unwrap(), key)),
        }
    }
    map.run_pending_tasks();
    assert_eq!(map.len(), 49);

    // Removing the last key of a bucket drops the bucket.
    for digest in &digests {
        map.remove(digest);
    }
    map.run_pending_tasks();
    assert_eq!(map.len(), 0);
    assert!(map.get(&digests[0]).is_none());
}

/// The capacity counts keys, not buckets: a small cache filled far past
/// its capacity holds no more than it, and what it holds is still found.
#[test]
fn the_capacity_bounds_keys_not_buckets() {
    let capacity = 200;
    let cache = KeyCache::new(&CacheSettings {
        capacity,
        ..CacheSettings::default()
    });
    let digests: Vec<_> = (0..2_000)
        .map(|n| KeyDigest::of(&format!("cc_{n}")))
        .collect();
    for digest in &digests {
        let key = cached(*digest);
        assert!(cache.insert_by_digest(cache.ticket_for_digest(digest), &key, *digest));
    }
    cache.run_pending_tasks();
    let (held, _) = cache.sizes();
    let found = digests
        .iter()
        .filter(|digest| matches!(cache.lookup_digest(digest), Lookup::Hit(_)))
        .count() as u64;
    assert!(held <= capacity, "{held} keys held, capacity {capacity}");
    assert_eq!(found, held, "every key counted is found");
    assert!(found >= capacity / 2, "only {found} of {capacity} kept");
}
