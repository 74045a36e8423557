//! The per-replica key cache: keys by digest (Authenticate) and by id
//! (CheckScope by id), plus bounded negative caches of digests and of ids
//! that matched no key. All four are moka caches with a TTL as a safety net;
//! the event log keeps them honest.
//!
//! **Invariant:** a load that raced with a change never inserts the old
//! state. Keys hash to stripes (by digest for the digest map, by id for the
//! id map); each stripe holds an epoch under a lock. A change bumps the
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

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use moka::sync::Cache;
use serde::Deserialize;

use crate::allowed_networks::AllowedNetworks;
use crate::domain::{AccountId, KeyDigest, KeyId, Quota, QuotaUsage, RateLimit, UnixMillis};
use crate::key_metadata::{self, SharedMetadata};
use crate::quotas::{QuotaKey, QuotaSlot};
use crate::rate_limits::{LimitedKey, LimiterSlot};
use crate::scope_catalog::{ScopeCatalog, ScopeSet};
use crate::settings::{SettingError, in_range, seconds_or};
use crate::storage::KeyRecord;

/// Stripes per map. Many, so that unrelated changes seldom share a stripe
/// with a load in flight; each is one small lock.
const STRIPES: usize = 1024;

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
    pub quota: Option<Quota>,
    /// The quota's use as stored when this entry was loaded.
    pub stored_quota_usage: QuotaUsage,
    /// Its quota counter, once it has needed one (see `quotas`).
    pub quota_slot: QuotaSlot,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    /// The key this one replaced (RotateKey).
    pub rotated_from: Option<KeyId>,
    /// The last-use time as stored when this entry was loaded.
    pub stored_last_used_at: Option<UnixMillis>,
    /// Unix millis of the last use seen by this replica (0: none).
    last_used_ms: AtomicI64,
    /// Set while this key waits in the usage flusher's queue.
    usage_queued: AtomicBool,
    /// Its rate limiter, once it has needed one (see `rate_limits`).
    pub limiter: LimiterSlot,
    /// The owner's labels, in name order; shared, never copied per request.
    pub metadata: SharedMetadata,
    /// Parsed once here; empty: any address (see `allowed_networks`).
    pub allowed_networks: AllowedNetworks,
    /// Its metadata and allowed networks as Authenticate's reply encodes
    /// them: made on the key's first answer (only for a key that has
    /// either), so a hit copies bytes instead of building a string per
    /// entry (`grpc/convert.rs`). Opaque here; an event replaces the whole
    /// entry, so it never goes stale.
    pub encoded_labels: OnceLock<Arc<[u8]>>,
}

impl CachedKey {
    /// The key as its rate limiter sees it.
    pub fn limited(&self) -> LimitedKey<'_> {
        LimitedKey {
            id: &self.id,
            rate_limit: self.rate_limit,
            slot: &self.limiter,
        }
    }

    /// The key as the quota table sees it, when it has a quota.
    pub fn quota_key(&self) -> Option<QuotaKey<'_>> {
        self.quota.map(|quota| QuotaKey {
            id: &self.id,
            quota,
            stored: self.stored_quota_usage,
            slot: &self.quota_slot,
        })
    }

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
            allowed_networks: AllowedNetworks::from_stored(&record.allowed_networks),
            metadata: key_metadata::shared(record.metadata),
            effective: catalog.effective(granted),
            granted,
            name: record.name.into_boxed_str(),
            start: record.start.into_boxed_str(),
            rate_limit: record.rate_limit,
            quota: record.quota,
            stored_quota_usage: record.quota_usage,
            quota_slot: QuotaSlot::default(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            rotated_from: record.rotated_from,
            stored_last_used_at: record.last_used_at,
            last_used_ms: AtomicI64::new(0),
            usage_queued: AtomicBool::new(false),
            limiter: LimiterSlot::default(),
            encoded_labels: OnceLock::new(),
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
    by_digest: Cache<KeyDigest, Arc<CachedKey>>,
    by_id: Cache<KeyId, Arc<CachedKey>>,
    unknown: Cache<KeyDigest, ()>,
    /// Key ids recently looked up (CheckScope by id) and not found.
    unknown_ids: Cache<KeyId, ()>,
    digest_stripes: Box<[Stripe]>,
    id_stripes: Box<[Stripe]>,
    stripe_hasher: std::hash::RandomState,
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
            digest_stripes: new_stripes(),
            id_stripes: new_stripes(),
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
        Lookup::Miss(self.ticket_for_digest(digest))
    }

    pub fn lookup_id(&self, id: &KeyId) -> Lookup {
        if let Some(key) = self.by_id.get(id) {
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
        self.stripe_hasher.hash_one(digest) as usize % self.digest_stripes.len()
    }

    fn id_stripe(&self, id: &KeyId) -> usize {
        self.stripe_hasher.hash_one(id) as usize % self.id_stripes.len()
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
        let stripe = self.id_stripe(&key.id);
        if ticket.map != Map::ById || ticket.stripe != stripe {
            return false;
        }
        let epoch = self.id_stripes[stripe].lock();
        if *epoch != ticket.epoch {
            return false;
        }
        self.by_id.insert(key.id.clone(), Arc::clone(key));
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
            self.by_digest.invalidate(digest);
        }
        let mut epoch = self.id_stripes[self.id_stripe(id)].lock();
        *epoch += 1;
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
