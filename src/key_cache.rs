//! The per-replica key cache: keys by digest (Authenticate) and by id
//! (CheckScope by id), plus bounded negative caches of digests and of ids
//! that matched no key. All four are moka caches with a TTL as a safety net
//! (the key maps check it at lookup, see `with_stripes`); the event log
//! keeps them honest. The cached key's compact layout is `cached_key.rs`;
//! the key maps hold buckets of keys, not keys (`key_map.rs`).
//!
//! **Invariant:** a load that raced with a change never inserts the old
//! state. Keys hash to stripes (by digest for the digest map, by id for the
//! id map; a key's stripe is its bucket's, so the stripe lock also orders
//! the writes to a bucket); each stripe holds an epoch under a lock. A change bumps the
//! epoch of its key's stripes and removes the entries under the same locks;
//! a loader takes a ticket (the stripe's epoch) before its database read and
//! inserts, under the stripe lock, only if the epoch has not moved. Either
//! the loader inserts first (and the change removes the entry after), or the
//! change came first (and the loader sees the new epoch and does not
//! insert). A failed insert tells the loader its row may predate a change:
//! it must not answer from it either (see `authenticator.rs`).
//!
//! Epochs are per stripe so that changes to other keys (a backlog replay, a
//! busy management API) rarely disturb a load: only a key that shares the
//! stripe does.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use serde::Deserialize;

use crate::domain::{KeyDigest, KeyId};
use crate::settings::{SettingError, in_range, seconds_or};

mod cached_key;
mod key_map;

pub use cached_key::CachedKey;
use key_map::KeyMap;

/// Stripes per map. Many, so that unrelated changes seldom share a stripe
/// with a load in flight; each is one small lock.
const STRIPES: usize = 1024;

/// Milliseconds on the cache's own clock (monotonic, from the first call):
/// when a cached key was built, to age it against the ttl.
pub(crate) fn cache_clock_ms() -> u64 {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    u64::try_from(STARTED.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a lookup found.
pub enum Lookup {
    Hit(Arc<CachedKey>),
    /// Recently looked up and not in the database.
    KnownUnknown,
    /// Not cached: load it, starting with this ticket.
    Miss(LoadTicket),
}

/// Proof of when a load started, for the insert-if-unchanged check: the
/// epoch of the stripe the load will insert into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadTicket {
    map: Map,
    stripe: usize,
    epoch: u64,
}

/// Which map a ticket is for (a digest ticket cannot vouch for an id insert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    ByDigest,
    ById,
}

/// One stripe: the count of changes to its keys, behind the lock that orders
/// inserts against those changes.
struct Stripe {
    epoch: Mutex<u64>,
}

impl Stripe {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.epoch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub const DEFAULT_CAPACITY: u64 = 1_000_000;
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_NEGATIVE_CAPACITY: u64 = 100_000;
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub capacity: u64,
    pub ttl: Duration,
    pub negative_capacity: u64,
    pub negative_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            ttl: DEFAULT_TTL,
            negative_capacity: DEFAULT_NEGATIVE_CAPACITY,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        }
    }
}

/// `[cache]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub capacity: Option<u64>,
    pub ttl_seconds: Option<f64>,
    pub negative_capacity: Option<u64>,
    pub negative_ttl_seconds: Option<f64>,
}

impl CacheSettings {
    /// Validates `[cache]`.
    pub fn from_raw(raw: RawCache) -> Result<Self, SettingError> {
        Ok(Self {
            capacity: in_range(raw.capacity.unwrap_or(DEFAULT_CAPACITY), 1, 100_000_000)
                .map_err(SettingError::at("cache.capacity"))?,
            ttl: seconds_or(raw.ttl_seconds, DEFAULT_TTL, 0.01, 86_400.0)
                .map_err(SettingError::at("cache.ttl_seconds"))?,
            negative_capacity: in_range(
                raw.negative_capacity.unwrap_or(DEFAULT_NEGATIVE_CAPACITY),
                1,
                100_000_000,
            )
            .map_err(SettingError::at("cache.negative_capacity"))?,
            negative_ttl: seconds_or(
                raw.negative_ttl_seconds,
                DEFAULT_NEGATIVE_TTL,
                0.01,
                3_600.0,
            )
            .map_err(SettingError::at("cache.negative_ttl_seconds"))?,
        })
    }
}

pub struct KeyCache {
    by_digest: KeyMap<KeyDigest>,
    by_id: KeyMap<KeyId>,
    unknown: Cache<KeyDigest, ()>,
    /// Key ids recently looked up (CheckScope by id) and not found.
    unknown_ids: Cache<KeyId, ()>,
    /// The key maps' safety-net ttl, checked at lookup (see `fresh`).
    ttl_ms: u64,
    digest_stripes: Box<[Stripe]>,
    id_stripes: Box<[Stripe]>,
}

impl KeyCache {
    pub fn new(settings: &CacheSettings) -> Self {
        Self::with_stripes(settings, STRIPES)
    }

    /// A cache with `stripes` stripes per map. Fewer stripes make unrelated
    /// keys share epochs (one stripe: any change disturbs every load), which
    /// tests use to make such interference certain.
    pub fn with_stripes(settings: &CacheSettings, stripes: usize) -> Self {
        let stripes = stripes.max(1);
        let new_stripes = || {
            (0..stripes)
                .map(|_| Stripe {
                    epoch: Mutex::new(0),
                })
                .collect()
        };
        // The key maps: bounded, least recently used out first, and no moka
        // expiry. moka's `time_to_live` keeps a write-order node per entry;
        // the ttl is a safety net only (events keep entries current), so a
        // lookup checks the entry's age instead (`fresh`), which answers
        // exactly as moka's expiry did. LRU rather than TinyLFU: only keys
        // that exist are ever cached, a miss costs one indexed read, and
        // TinyLFU's frequency sketch costs 8 bytes per slot of capacity plus
        // an update per read. See `key_map.rs` for the buckets.
        Self {
            by_digest: KeyMap::new(settings.capacity),
            by_id: KeyMap::new(settings.capacity),
            unknown: Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build(),
            unknown_ids: Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build(),
            ttl_ms: u64::try_from(settings.ttl.as_millis()).unwrap_or(u64::MAX),
            digest_stripes: new_stripes(),
            id_stripes: new_stripes(),
        }
    }

    /// Whether an entry is young enough to answer from: built less than the
    /// ttl ago (an older one is a miss, and its reload replaces it).
    fn fresh(&self, key: Arc<CachedKey>) -> Option<Arc<CachedKey>> {
        (cache_clock_ms().saturating_sub(key.loaded_ms) < self.ttl_ms).then_some(key)
    }

    pub fn lookup_digest(&self, digest: &KeyDigest) -> Lookup {
        if let Some(key) = self.by_digest.get(digest).and_then(|key| self.fresh(key)) {
            return Lookup::Hit(key);
        }
        if self.unknown.contains_key(digest) {
            return Lookup::KnownUnknown;
        }
        Lookup::Miss(self.ticket_for_digest(digest))
    }

    pub fn lookup_id(&self, id: &KeyId) -> Lookup {
        if let Some(key) = self.by_id.get(id).and_then(|key| self.fresh(key)) {
            return Lookup::Hit(key);
        }
        if self.unknown_ids.contains_key(id) {
            return Lookup::KnownUnknown;
        }
        Lookup::Miss(self.ticket_for_id(id))
    }

    /// A ticket for a load by digest that starts now (take it before the
    /// database read).
    pub fn ticket_for_digest(&self, digest: &KeyDigest) -> LoadTicket {
        let stripe = self.digest_stripe(digest);
        LoadTicket {
            map: Map::ByDigest,
            stripe,
            epoch: *self.digest_stripes[stripe].lock(),
        }
    }

    /// A ticket for a load by id that starts now.
    pub fn ticket_for_id(&self, id: &KeyId) -> LoadTicket {
        let stripe = self.id_stripe(id);
        LoadTicket {
            map: Map::ById,
            stripe,
            epoch: *self.id_stripes[stripe].lock(),
        }
    }

    fn digest_stripe(&self, digest: &KeyDigest) -> usize {
        self.by_digest.stripe_of(digest, self.digest_stripes.len())
    }

    fn id_stripe(&self, id: &KeyId) -> usize {
        self.by_id.stripe_of(id, self.id_stripes.len())
    }

    /// Caches a loaded key under its digest unless something changed since
    /// `ticket`. Returns whether it was cached.
    pub fn insert_by_digest(
        &self,
        ticket: LoadTicket,
        key: &Arc<CachedKey>,
        digest: KeyDigest,
    ) -> bool {
        let stripe = self.digest_stripe(&digest);
        if ticket.map != Map::ByDigest || ticket.stripe != stripe {
            return false;
        }
        let epoch = self.digest_stripes[stripe].lock();
        if *epoch != ticket.epoch {
            return false;
        }
        self.by_digest.insert(digest, Arc::clone(key));
        true
    }

    /// Caches a loaded key under its id unless something changed since `ticket`.
    pub fn insert_by_id(&self, ticket: LoadTicket, key: &Arc<CachedKey>) -> bool {
        let id = key.key_id();
        let stripe = self.id_stripe(&id);
        if ticket.map != Map::ById || ticket.stripe != stripe {
            return false;
        }
        let epoch = self.id_stripes[stripe].lock();
        if *epoch != ticket.epoch {
            return false;
        }
        self.by_id.insert(id, Arc::clone(key));
        true
    }

    /// Remembers that no key has this digest. Created keys have fresh
    /// random secrets, but an imported key's digest may well have been
    /// presented before its import (callers moving over), so this is
    /// guarded like a key's insert: a load whose ticket predates a change
    /// to the digest remembers nothing. (Whoever applies a change calls
    /// [`invalidate`](Self::invalidate), which bumps the epoch, and then
    /// [`forget_unknown`](Self::forget_unknown): a guarded insert either
    /// came before the bump and is forgotten, or sees the new epoch.)
    pub fn insert_unknown_unless_changed(&self, ticket: LoadTicket, digest: KeyDigest) -> bool {
        let stripe = self.digest_stripe(&digest);
        if ticket.map != Map::ByDigest || ticket.stripe != stripe {
            return false;
        }
        let epoch = self.digest_stripes[stripe].lock();
        if *epoch != ticket.epoch {
            return false;
        }
        self.unknown.insert(digest, ());
        true
    }

    /// Remembers that no key has this digest, unguarded (tests).
    pub fn insert_unknown(&self, digest: KeyDigest) {
        self.unknown.insert(digest, ());
    }

    /// Forgets a key after a change; see the module invariant.
    pub fn invalidate(&self, id: &KeyId, digest: &KeyDigest) {
        {
            let mut epoch = self.digest_stripes[self.digest_stripe(digest)].lock();
            *epoch += 1;
            self.by_digest.remove(digest);
        }
        let mut epoch = self.id_stripes[self.id_stripe(id)].lock();
        *epoch += 1;
        self.by_id.remove(id);
    }

    pub fn forget_unknown(&self, digest: &KeyDigest) {
        self.unknown.invalidate(digest);
    }

    /// Remembers that no key has this id. Ids are generated at creation and
    /// first seen by anyone in the CreateKey response, after the commit, so
    /// an id cannot be looked up before its key exists.
    pub fn insert_unknown_id(&self, id: KeyId) {
        self.unknown_ids.insert(id, ());
    }

    /// Entries (keys by digest, negative), approximately, for metrics.
    pub fn sizes(&self) -> (u64, u64) {
        (self.by_digest.len(), self.unknown.entry_count())
    }

    /// Drops everything (used when a follower finds a gap it cannot replay).
    /// Bumps every stripe and holds every lock while it empties the maps, as
    /// a per-key change does for its stripes: a loader is then either done
    /// inserting (and removed here) or not yet checked (and sees the new
    /// epoch). Locks are taken in one fixed order; nothing else holds two.
    pub fn clear(&self) {
        let mut held: Vec<_> = self
            .digest_stripes
            .iter()
            .chain(self.id_stripes.iter())
            .map(Stripe::lock)
            .collect();
        for epoch in &mut held {
            **epoch += 1;
        }
        self.by_digest.clear();
        self.by_id.clear();
        // `invalidate_all` is lazy; make it take effect while the locks are held.
        self.by_digest.run_pending_tasks();
        self.by_id.run_pending_tasks();
    }

    /// Runs moka's pending maintenance now (tests and benchmarks measuring size).
    pub fn run_pending_tasks(&self) {
        self.by_digest.run_pending_tasks();
        self.by_id.run_pending_tasks();
        self.unknown.run_pending_tasks();
        self.unknown_ids.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests;
