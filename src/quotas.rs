//! Usage quotas on this replica (`[limits] backend = "local"`, and the
//! fallback of `on_backend_error = "local"`): one counter per key with a
//! quota, in a bounded table, started from the use stored with the key
//! and written back by the last-use flusher. With Redis the count lives in
//! Redis (`shared_limits`), and the counter here only keeps its last known
//! value for the flusher.
//!
//! A counter is found through the cached key's [`QuotaSlot`], like a rate
//! limiter, so a reloaded cache entry finds the same counter (and no use
//! counted since the last flush is lost to a reload). A counter evicted
//! from a full table starts again from the use stored with the key: at most
//! what one flush interval counted is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use moka::sync::Cache;

use crate::domain::{KeyId, Quota, QuotaUsage, UnixMillis};

/// The wall clock that refills follow (UTC day and month boundaries).
/// Tests substitute their own; everything else uses the system's.
#[derive(Clone, Default)]
pub struct WallClock(Option<Arc<dyn Fn() -> UnixMillis + Send + Sync>>);

impl WallClock {
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that reads `now` (for tests that cross a boundary without
    /// waiting for it).
    pub fn from_fn(now: impl Fn() -> UnixMillis + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(now)))
    }

    pub fn now(&self) -> UnixMillis {
        match &self.0 {
            None => UnixMillis::now(),
            Some(now) => now(),
        }
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_none() {
            "WallClock(system)"
        } else {
            "WallClock(substituted)"
        })
    }
}

/// One key's count against one quota.
pub struct QuotaCounter {
    quota: Quota,
    usage: Mutex<QuotaUsage>,
    /// Counted since the flusher last took it.
    dirty: AtomicBool,
}

impl QuotaCounter {
    fn usage(&self) -> std::sync::MutexGuard<'_, QuotaUsage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The quota and its use, if counted since the last call.
    pub fn take_pending(&self) -> Option<(Quota, QuotaUsage)> {
        self.dirty
            .swap(false, Ordering::AcqRel)
            .then(|| (self.quota, *self.usage()))
    }

    /// The use so far, moved to `period` (a later period starts unused; an
    /// earlier one, from a clock that went back, changes nothing).
    pub fn usage_at(&self, period: u64) -> QuotaUsage {
        let usage = *self.usage();
        if period > usage.period {
            QuotaUsage { period, used: 0 }
        } else {
            usage
        }
    }
}

/// A cached key's reference to its quota counter.
#[derive(Default)]
pub struct QuotaSlot(OnceLock<Arc<QuotaCounter>>);

impl std::fmt::Debug for QuotaSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("QuotaSlot")
            .field(&self.0.get().map(|c| c.quota))
            .finish()
    }
}

impl QuotaSlot {
    pub fn counter(&self) -> Option<&Arc<QuotaCounter>> {
        self.0.get()
    }
}

/// What the quota table needs of a key.
#[derive(Debug, Clone, Copy)]
pub struct QuotaKey<'k> {
    pub id: &'k str,
    pub quota: Quota,
    /// The use stored with the key when its cache entry was loaded.
    pub stored: QuotaUsage,
    pub slot: &'k QuotaSlot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDecision {
    /// One request taken; this much is left.
    Allowed { remaining: u64 },
    /// Used up; refilled after this long (`None`: never).
    Exceeded { refill_in: Option<Duration> },
}

impl QuotaDecision {
    /// The decision for `used` of `quota` in `period` (after this request,
    /// when it was allowed).
    pub fn of(quota: Quota, usage: QuotaUsage, allowed: bool, now: UnixMillis) -> Self {
        if allowed {
            Self::Allowed {
                remaining: quota.requests().saturating_sub(usage.used),
            }
        } else {
            Self::Exceeded {
                refill_in: quota.refill().period_end(usage.period).map(|end| {
                    Duration::from_millis(u64::try_from(end.0 - now.0).unwrap_or(0).max(1))
                }),
            }
        }
    }
}

pub struct KeyQuotas {
    counters: Cache<KeyId, Arc<QuotaCounter>>,
}

impl KeyQuotas {
    pub fn new(capacity: u64) -> Self {
        Self {
            counters: Cache::builder().max_capacity(capacity).build(),
        }
    }

    /// The key's counter for its current quota: the one its cache entry
    /// holds, else the table's, else a new one from the stored use.
    pub fn counter(&self, key: &QuotaKey<'_>) -> Arc<QuotaCounter> {
        if let Some(held) = key.slot.0.get().filter(|c| c.quota == key.quota) {
            return Arc::clone(held);
        }
        let counter = self
            .counters
            .entry(KeyId::trusted(key.id))
            .and_compute_with(|current| match current {
                Some(entry) if entry.value().quota == key.quota => moka::ops::compute::Op::Nop,
                _ => moka::ops::compute::Op::Put(Arc::new(QuotaCounter {
                    quota: key.quota,
                    usage: Mutex::new(key.stored),
                    dirty: AtomicBool::new(false),
                })),
            });
        let counter = match counter {
            moka::ops::compute::CompResult::Inserted(entry)
            | moka::ops::compute::CompResult::ReplacedWith(entry)
            | moka::ops::compute::CompResult::Unchanged(entry) => entry.into_value(),
            moka::ops::compute::CompResult::StillNone(_)
            | moka::ops::compute::CompResult::Removed(_) => Arc::new(QuotaCounter {
                quota: key.quota,
                usage: Mutex::new(key.stored),
                dirty: AtomicBool::new(false),
            }),
        };
        let _ = key.slot.0.set(Arc::clone(&counter));
        counter
    }

    /// Takes one request from the key's quota, on this replica.
    pub fn take(&self, key: &QuotaKey<'_>, now: UnixMillis) -> QuotaDecision {
        let counter = self.counter(key);
        let period = key.quota.refill().period(now);
        let mut usage = counter.usage();
        if period > usage.period {
            *usage = QuotaUsage { period, used: 0 };
        }
        let allowed = usage.used < key.quota.requests();
        if allowed {
            usage.used += 1;
            counter.dirty.store(true, Ordering::Release);
        }
        QuotaDecision::of(key.quota, *usage, allowed, now)
    }

    /// Records the use Redis reported, for the flusher (and as the place
    /// a fallback to local counting starts from).
    pub fn note_shared(&self, key: &QuotaKey<'_>, reported: QuotaUsage) {
        let counter = self.counter(key);
        let mut usage = counter.usage();
        if (reported.period, reported.used) > (usage.period, usage.used) {
            *usage = reported;
            counter.dirty.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Refill;

    fn key<'k>(id: &'k KeyId, quota: Quota, slot: &'k QuotaSlot) -> QuotaKey<'k> {
        QuotaKey {
            id: id.as_str(),
            quota,
            stored: QuotaUsage::default(),
            slot,
        }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_daily_quota_runs_out_and_refills_at_midnight_utc() {
        let quotas = KeyQuotas::new(100);
        let id = KeyId::generate();
        let slot = QuotaSlot::default();
        let quota = Quota::new(2, Refill::Daily).unwrap();
        let evening = UnixMillis(20_000 * DAY + DAY - 60_000);
        let key = key(&id, quota, &slot);
        assert_eq!(
            quotas.take(&key, evening),
            QuotaDecision::Allowed { remaining: 1 }
        );
        assert_eq!(
            quotas.take(&key, evening),
            QuotaDecision::Allowed { remaining: 0 }
        );
        assert_eq!(
            quotas.take(&key, evening),
            QuotaDecision::Exceeded {
                refill_in: Some(Duration::from_secs(60))
            }
        );
        let midnight = UnixMillis(20_001 * DAY);
        assert_eq!(
            quotas.take(&key, midnight),
            QuotaDecision::Allowed { remaining: 1 }
        );
        // A clock that goes back does not refill it again.
        assert_eq!(
            quotas.take(&key, evening),
            QuotaDecision::Allowed { remaining: 0 }
        );
        assert!(matches!(
            quotas.take(&key, evening),
            QuotaDecision::Exceeded { .. }
        ));
    }

    #[test]
    fn a_reloaded_cache_entry_keeps_the_count_and_a_new_quota_starts_afresh() {
        let quotas = KeyQuotas::new(100);
        let id = KeyId::generate();
        let quota = Quota::new(1, Refill::Never).unwrap();
        let now = UnixMillis(1);
        let first = QuotaSlot::default();
        assert!(matches!(
            quotas.take(&key(&id, quota, &first), now),
            QuotaDecision::Allowed { .. }
        ));
        let reloaded = QuotaSlot::default();
        assert_eq!(
            quotas.take(&key(&id, quota, &reloaded), now),
            QuotaDecision::Exceeded { refill_in: None }
        );
        let bigger = Quota::new(3, Refill::Never).unwrap();
        assert_eq!(
            quotas.take(&key(&id, bigger, &reloaded), now),
            QuotaDecision::Allowed { remaining: 2 }
        );
        // The flusher sees the new quota's use once.
        let counter = quotas.counter(&key(&id, bigger, &reloaded));
        assert_eq!(
            counter.take_pending(),
            Some((bigger, QuotaUsage { period: 0, used: 1 }))
        );
        assert_eq!(counter.take_pending(), None);
    }
}
