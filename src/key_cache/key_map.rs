//! `KeyMap`, one of the key cache's two maps (by digest, by id): a moka
//! cache of small buckets of keys rather than of keys (issue 19's memory
//! goal). moka's own bookkeeping is about 345 bytes per entry (an `Arc` of
//! the key, entry info, value entry, a deque node, the hash table's slots),
//! which alone is most of a 400-byte budget per cached key; a bucket of
//! up to about 64 keys pays it once, so a key costs its 40-byte slot in a
//! bucket plus a small share of an entry.
//!
//! moka still bounds the map and evicts: each bucket weighs as many keys
//! as it holds, the capacity counts keys, and the least recently used
//! bucket goes first. A bucket is used whenever any of its keys is, so
//! what goes is a set of keys none of which was used recently.
//!
//! Buckets are copied on write (insert or remove builds a new one), so a
//! lookup never waits for a writer. The caller serialises writers to a
//! bucket: `KeyCache` writes only under the stripe lock of the key's
//! bucket (`stripe_of` maps every bucket to one stripe), the same lock its
//! race invariant already takes. moka's own eviction may drop a bucket
//! between a writer's read and its write; the write then puts back keys
//! that were current under that lock, so an eviction is undone, never a
//! change.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use moka::sync::Cache;

use super::CachedKey;
use crate::domain::{KeyDigest, KeyId};

/// How a map's keys spread over its buckets.
pub(super) trait BucketKey: Ord + Clone + Send + Sync + 'static {
    fn spread(&self, hasher: &RandomState) -> u64;
}

/// A digest is SHA-256 output, already uniform, and only keys that exist
/// are ever placed (created with random secrets, or imported by an
/// operator), so nobody chooses where they land: its first 8 bytes are the
/// spread, without hashing the 32 bytes again on every lookup.
impl BucketKey for KeyDigest {
    fn spread(&self, _: &RandomState) -> u64 {
        let bytes = self.as_bytes();
        u64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ])
    }
}

/// Ids are UUIDv7 (time first), far from uniform: hashed, with a key.
impl BucketKey for KeyId {
    fn spread(&self, hasher: &RandomState) -> u64 {
        hasher.hash_one(self)
    }
}

/// moka's hasher for bucket numbers: they are dense small integers, and
/// multiplying by an odd constant spreads them over every bit (a keyed
/// SipHash per lookup bought nothing here).
#[derive(Default)]
struct BucketNumberHasher(u64);

impl Hasher for BucketNumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, number: u32) {
        self.0 = (self.0 ^ u64::from(number)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Keys per bucket when the map is full. Lookups binary-search a bucket,
/// so this is about six comparisons; writes copy one bucket (2.5 KB).
const KEYS_PER_BUCKET: u64 = 64;

/// Buckets at least, up to the capacity: a small cache keeps about one key
/// per bucket, so a bucket never outweighs a whole small cache.
const MIN_BUCKETS: u64 = 1024;

/// A bucket: `(key, cached key)` pairs sorted by key.
type Bucket<K> = Arc<[(K, Arc<CachedKey>)]>;

pub(super) struct KeyMap<K> {
    buckets: Cache<u32, Bucket<K>, BuildHasherDefault<BucketNumberHasher>>,
    /// A power of two.
    bucket_count: u64,
    hasher: RandomState,
}

impl<K: BucketKey> KeyMap<K> {
    /// A map of at most about `capacity` keys. Eviction is LRU over
    /// buckets, with no expiry in moka (the ttl is checked at lookup, see
    /// `KeyCache::fresh`).
    pub(super) fn new(capacity: u64) -> Self {
        let bucket_count = (capacity / KEYS_PER_BUCKET).max(capacity.min(MIN_BUCKETS));
        Self::with_buckets(capacity, bucket_count)
    }

    /// A map of `bucket_count` buckets (rounded up to a power of two);
    /// tests use few, to make keys share them.
    pub(super) fn with_buckets(capacity: u64, bucket_count: u64) -> Self {
        let bucket_count = bucket_count.clamp(1, 1 << 31).next_power_of_two();
        Self {
            buckets: Cache::builder()
                .max_capacity(capacity)
                .weigher(|_, bucket: &Bucket<K>| u32::try_from(bucket.len()).unwrap_or(u32::MAX))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build_with_hasher(BuildHasherDefault::default()),
            bucket_count,
            hasher: RandomState::new(),
        }
    }

    fn bucket_of(&self, key: &K) -> u32 {
        (key.spread(&self.hasher) & (self.bucket_count - 1)) as u32
    }

    /// The stripe (of `stripes`) whose lock guards writes to `key`'s bucket.
    pub(super) fn stripe_of(&self, key: &K, stripes: usize) -> usize {
        self.bucket_of(key) as usize % stripes
    }

    pub(super) fn get(&self, key: &K) -> Option<Arc<CachedKey>> {
        let bucket = self.buckets.get(&self.bucket_of(key))?;
        let at = bucket
            .binary_search_by(|(candidate, _)| candidate.cmp(key))
            .ok()?;
        Some(Arc::clone(&bucket[at].1))
    }

    /// Inserts or replaces; hold the key's stripe lock.
    pub(super) fn insert(&self, key: K, value: Arc<CachedKey>) {
        let index = self.bucket_of(&key);
        let old = self.buckets.get(&index);
        let old: &[(K, Arc<CachedKey>)] = old.as_deref().unwrap_or(&[]);
        let mut new = Vec::with_capacity(old.len() + 1);
        match old.binary_search_by(|(candidate, _)| candidate.cmp(&key)) {
            Ok(at) => {
                new.extend_from_slice(old);
                new[at].1 = value;
            }
            Err(at) => {
                new.extend_from_slice(&old[..at]);
                new.push((key, value));
                new.extend_from_slice(&old[at..]);
            }
        }
        self.buckets.insert(index, new.into());
        self.settle();
    }

    /// Removes `key` if present; hold the key's stripe lock.
    pub(super) fn remove(&self, key: &K) {
        let index = self.bucket_of(key);
        let Some(old) = self.buckets.get(&index) else {
            return;
        };
        let Ok(at) = old.binary_search_by(|(candidate, _)| candidate.cmp(key)) else {
            return;
        };
        if old.len() == 1 {
            self.buckets.invalidate(&index);
        } else {
            let new: Bucket<K> = old[..at].iter().chain(&old[at + 1..]).cloned().collect();
            self.buckets.insert(index, new);
        }
        self.settle();
    }

    /// Applies moka's pending writes now. moka 0.12 lost weight when many
    /// replacements of one entry were still pending at its removal (99
    /// replacements then a removal left 35 keys' weight counted with no
    /// entry; `keys_sharing_a_bucket_are_kept_apart` caught it), and lost
    /// weight would shrink the capacity for good. Settled after each write
    /// (under the stripe lock), a bucket never has two writes pending.
    /// Writes are cache misses and changes, so this is off the hit path.
    fn settle(&self) {
        self.buckets.run_pending_tasks();
    }

    /// Drops every bucket (lazily in moka; see `run_pending_tasks`).
    pub(super) fn clear(&self) {
        self.buckets.invalidate_all();
    }

    /// Keys held, approximately (moka's weighted size).
    pub(super) fn len(&self) -> u64 {
        self.buckets.weighted_size()
    }

    pub(super) fn run_pending_tasks(&self) {
        self.buckets.run_pending_tasks();
    }
}
