//! The per-replica key cache: keys by digest (Authenticate) and by id
//! (CheckScope by id), plus a bounded negative cache of digests that matched
//! no key. All three are moka caches with a TTL as a safety net; the event
//! log keeps them honest.
//!
//! **Invariant:** a load that raced with a change never re-inserts the old
//! state. Every change bumps `epoch` and then removes the key under its stripe
//! lock; a loader notes the epoch before its database read and inserts under
//! the same stripe lock only if the epoch has not moved. Either the loader
//! inserts first (and the change removes the entry after), or the change
//! bumped the epoch first (and the loader sees it and does not insert).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;

use crate::domain::{AccountId, KeyDigest, KeyId, RateLimit, UnixMillis};
use crate::scope_catalog::{ScopeCatalog, ScopeSet};
use crate::storage::KeyRecord;

const STRIPES: usize = 64;

/// A key as the hot path needs it: scopes resolved to bit sets, and the
/// in-memory last-use time that the usage flusher writes back.
#[derive(Debug)]
pub struct CachedKey {
    pub id: KeyId,
    pub account_id: AccountId,
    pub name: Box<str>,
    pub start: Box<str>,
    pub granted: ScopeSet,
    pub effective: ScopeSet,
    pub rate_limit: Option<RateLimit>,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    /// The last-use time as stored when this entry was loaded.
    pub stored_last_used_at: Option<UnixMillis>,
    /// Unix millis of the last use seen by this replica (0: none).
    last_used_ms: AtomicI64,
    /// Set while this key waits in the usage flusher's queue.
    usage_queued: AtomicBool,
}

impl CachedKey {
    pub fn from_record(record: KeyRecord, catalog: &ScopeCatalog) -> Self {
        let (granted, unknown) =
            catalog.granted_from_names(record.scopes.iter().map(String::as_str));
        if !unknown.is_empty() {
            tracing::warn!(
                key_id = %record.id,
                scopes = ?unknown,
                "stored key holds scopes that are no longer in the catalog; ignoring them"
            );
        }
        Self {
            effective: catalog.effective(granted),
            granted,
            name: record.name.into_boxed_str(),
            start: record.start.into_boxed_str(),
            rate_limit: record.rate_limit,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            stored_last_used_at: record.last_used_at,
            last_used_ms: AtomicI64::new(0),
            usage_queued: AtomicBool::new(false),
            id: record.id,
            account_id: record.account_id,
        }
    }

    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Notes a use. Returns true when the key was not yet queued for the
    /// usage flusher (the caller then queues it). Writes the shared time at
    /// most once per second per key, to keep hot keys' cache lines quiet.
    pub fn note_use(&self, now: UnixMillis) -> bool {
        if now.0 - self.last_used_ms.load(Ordering::Relaxed) >= 1000 {
            self.last_used_ms.fetch_max(now.0, Ordering::Relaxed);
        }
        !self.usage_queued.load(Ordering::Relaxed)
            && !self.usage_queued.swap(true, Ordering::AcqRel)
    }

    /// Takes the pending last-use time and lets the key be queued again.
    pub fn take_use(&self) -> Option<UnixMillis> {
        self.usage_queued.store(false, Ordering::Release);
        let at = self.last_used_ms.load(Ordering::Relaxed);
        (at > 0).then_some(UnixMillis(at))
    }

    /// The freshest last-use time this replica knows.
    pub fn last_used_at(&self) -> Option<UnixMillis> {
        let seen = self.last_used_ms.load(Ordering::Relaxed);
        match self.stored_last_used_at {
            Some(stored) if stored.0 >= seen => Some(stored),
            _ if seen > 0 => Some(UnixMillis(seen)),
            _ => None,
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    Hit(Arc<CachedKey>),
    /// Recently looked up and not in the database.
    KnownUnknown,
    /// Not cached: load it, starting with this ticket.
    Miss(LoadTicket),
}

/// Proof of when a load started, for the insert-if-unchanged check.
#[derive(Debug, Clone, Copy)]
pub struct LoadTicket {
    epoch: u64,
}

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
            capacity: 1_000_000,
            ttl: Duration::from_secs(300),
            negative_capacity: 100_000,
            negative_ttl: Duration::from_secs(30),
        }
    }
}

pub struct KeyCache {
    by_digest: Cache<KeyDigest, Arc<CachedKey>>,
    by_id: Cache<KeyId, Arc<CachedKey>>,
    unknown: Cache<KeyDigest, ()>,
    /// Key ids recently looked up (CheckScope by id) and not found.
    unknown_ids: Cache<KeyId, ()>,
    epoch: AtomicU64,
    stripes: [Mutex<()>; STRIPES],
    stripe_hasher: std::hash::RandomState,
}

impl KeyCache {
    pub fn new(settings: &CacheSettings) -> Self {
        Self {
            by_digest: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(settings.ttl)
                .build(),
            by_id: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(settings.ttl)
                .build(),
            unknown: Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build(),
            unknown_ids: Cache::builder()
                .max_capacity(settings.negative_capacity)
                .time_to_live(settings.negative_ttl)
                .build(),
            epoch: AtomicU64::new(0),
            stripes: std::array::from_fn(|_| Mutex::new(())),
            stripe_hasher: std::hash::RandomState::new(),
        }
    }

    pub fn lookup_digest(&self, digest: &KeyDigest) -> Lookup {
        if let Some(key) = self.by_digest.get(digest) {
            return Lookup::Hit(key);
        }
        if self.unknown.contains_key(digest) {
            return Lookup::KnownUnknown;
        }
        Lookup::Miss(self.ticket())
    }

    pub fn lookup_id(&self, id: &KeyId) -> Lookup {
        if let Some(key) = self.by_id.get(id) {
            return Lookup::Hit(key);
        }
        if self.unknown_ids.contains_key(id) {
            return Lookup::KnownUnknown;
        }
        Lookup::Miss(self.ticket())
    }

    /// A ticket for a load that starts now (take it before the database read).
    pub fn ticket(&self) -> LoadTicket {
        LoadTicket {
            epoch: self.epoch.load(Ordering::SeqCst),
        }
    }

    fn stripe(&self, id: &KeyId) -> std::sync::MutexGuard<'_, ()> {
        let index = self.stripe_hasher.hash_one(id) as usize % STRIPES;
        self.stripes[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Caches a loaded key under its digest unless something changed since
    /// `ticket`. Returns whether it was cached.
    pub fn insert_by_digest(
        &self,
        ticket: LoadTicket,
        key: &Arc<CachedKey>,
        digest: KeyDigest,
    ) -> bool {
        let _stripe = self.stripe(&key.id);
        if self.epoch.load(Ordering::SeqCst) != ticket.epoch {
            return false;
        }
        self.by_digest.insert(digest, Arc::clone(key));
        true
    }

    /// Caches a loaded key under its id unless something changed since `ticket`.
    pub fn insert_by_id(&self, ticket: LoadTicket, key: &Arc<CachedKey>) -> bool {
        let _stripe = self.stripe(&key.id);
        if self.epoch.load(Ordering::SeqCst) != ticket.epoch {
            return false;
        }
        self.by_id.insert(key.id.clone(), Arc::clone(key));
        true
    }

    /// Remembers that no key has this digest. Keys are created with fresh
    /// random secrets, so a digest seen before its key exists is not a case
    /// worth guarding; CreateKey still clears it.
    pub fn insert_unknown(&self, digest: KeyDigest) {
        self.unknown.insert(digest, ());
    }

    /// Forgets a key after a change; see the module invariant.
    pub fn invalidate(&self, id: &KeyId, digest: &KeyDigest) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let _stripe = self.stripe(id);
        self.by_digest.invalidate(digest);
        self.by_id.invalidate(id);
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

    /// Entries (by digest, negative), approximately, for metrics.
    pub fn sizes(&self) -> (u64, u64) {
        (self.by_digest.entry_count(), self.unknown.entry_count())
    }

    /// Drops everything (used when a follower finds a gap it cannot replay).
    /// Holds every stripe lock, as a per-key change holds one: a loader that
    /// passed its epoch check is then either done inserting (and removed
    /// here) or still waiting (and sees the new epoch).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let _stripes: Vec<_> = self
            .stripes
            .iter()
            .map(|stripe| {
                stripe
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            })
            .collect();
        self.by_digest.invalidate_all();
        self.by_id.invalidate_all();
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
