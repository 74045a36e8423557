//! Per-key rate limits (GCRA, via governor): the key's own limit if it has
//! one, else the configured default, else none. One limiter per key, in a
//! bounded moka cache whose entries expire after the key has been idle for a
//! full refill period: by then its bucket is full again, so dropping it loses
//! nothing. Limits are per replica.
//!
//! The cached key also holds its limiter ([`LimiterSlot`]), so a request on
//! a cached key finds its bucket without a second cache lookup; it touches
//! the table at most twice per refill period to keep the entry alive, so a
//! reloaded cache entry finds the same bucket and no reload refills it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use moka::Expiry;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use once_cell::race::OnceBox;
use serde::Deserialize;

use crate::domain::{KeyId, RateLimit};
use crate::settings::SettingError;

/// `[rate_limit]` as written: both fields or neither.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// Validates `[rate_limit]`: the limit of keys without their own; none
/// when the table is absent.
pub fn default_rate_limit_from_raw(
    raw: Option<RawRateLimit>,
) -> Result<Option<RateLimit>, SettingError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    RateLimit::new(raw.requests, raw.per_seconds)
        .map(Some)
        .map_err(|error| {
            // RateLimit checks `requests` first.
            let key = if raw.requests == 0 {
                "rate_limit.requests"
            } else {
                "rate_limit.per_seconds"
            };
            SettingError::new(key, error.0)
        })
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

pub struct KeyLimiter {
    limit: RateLimit,
    limiter: DirectLimiter,
    /// When the table entry was last read or written (milliseconds since
    /// [`KeyRateLimits`] began), to keep it from idling out while in use.
    touched_ms: AtomicU64,
}

/// A cached key's own reference to its limiter (empty until its first
/// limited request). A `OnceBox`, one pointer, rather than a `OnceLock`
/// (a pointer and a state word): every cached key carries one (issue 19).
#[derive(Default)]
pub struct LimiterSlot(OnceBox<Arc<KeyLimiter>>);

/// What the limiter needs of a key: its id, its own limit (if any), and the
/// slot its cache entry keeps the limiter in.
#[derive(Debug, Clone, Copy)]
pub struct LimitedKey<'k> {
    pub id: &'k str,
    pub rate_limit: Option<RateLimit>,
    pub slot: &'k LimiterSlot,
}

impl std::fmt::Debug for LimiterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LimiterSlot")
            .field(&self.0.get().map(|l| l.limit))
            .finish()
    }
}

/// Where a key stands after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u32,
    pub remaining: u32,
    /// Until the full burst is available again.
    pub reset: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Unlimited,
    Allowed(RateLimitStatus),
    Limited {
        status: RateLimitStatus,
        retry_after: Duration,
    },
}

/// Idle expiry: one full refill period of the key's limit.
struct IdleForRefill;

impl Expiry<KeyId, Arc<KeyLimiter>> for IdleForRefill {
    fn expire_after_create(
        &self,
        _key: &KeyId,
        value: &Arc<KeyLimiter>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(refill_period(value.limit))
    }

    fn expire_after_read(
        &self,
        _key: &KeyId,
        value: &Arc<KeyLimiter>,
        _read_at: Instant,
        _duration_until_expiry: Option<Duration>,
        _last_modified_at: Instant,
    ) -> Option<Duration> {
        Some(refill_period(value.limit))
    }

    /// A changed limit replaces the entry: its expiry is the new limit's
    /// period, not what was left of the old one (moka's default), or a
    /// tightened bucket would be dropped, full again, after the old period.
    fn expire_after_update(
        &self,
        _key: &KeyId,
        value: &Arc<KeyLimiter>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(refill_period(value.limit))
    }
}

fn refill_period(limit: RateLimit) -> Duration {
    Duration::from_secs(u64::from(limit.per_seconds()))
}

/// Time to earn back one request. At least a nanosecond: `requests` may be
/// up to `u32::MAX` per second, which would otherwise round to zero.
fn per_request(limit: RateLimit) -> Duration {
    (refill_period(limit) / limit.requests()).max(Duration::from_nanos(1))
}

fn quota(limit: RateLimit) -> Quota {
    let burst = std::num::NonZeroU32::new(limit.requests()).unwrap_or(std::num::NonZeroU32::MIN);
    Quota::with_period(per_request(limit))
        .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MAX))
        .allow_burst(burst)
}

pub struct KeyRateLimits {
    default: Option<RateLimit>,
    limiters: Cache<KeyId, Arc<KeyLimiter>>,
    clock: DefaultClock,
    started: Instant,
}

impl KeyRateLimits {
    pub fn new(default: Option<RateLimit>, capacity: u64) -> Self {
        Self {
            default,
            limiters: Cache::builder()
                .max_capacity(capacity)
                .expire_after(IdleForRefill)
                .build(),
            clock: DefaultClock::default(),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The limiter the key's cache entry holds, if it has one for `limit`.
    fn held<'k>(&self, key: &LimitedKey<'k>, limit: RateLimit) -> Option<&'k KeyLimiter> {
        let held = key.slot.0.get().filter(|held| held.limit == limit)?;
        // Reading the table renews its idle expiry; twice per refill period
        // is enough for it never to lapse while the key is in use.
        let now = self.now_ms();
        let half_period = u64::try_from(refill_period(limit).as_millis() / 2).unwrap_or(u64::MAX);
        if now.saturating_sub(held.touched_ms.load(Ordering::Relaxed)) >= half_period {
            held.touched_ms.store(now, Ordering::Relaxed);
            // Put back if it was evicted meanwhile (capacity), so a
            // reloaded entry still shares this bucket.
            self.limiters
                .entry(KeyId::trusted(key.id))
                .or_insert_with(|| Arc::clone(held));
        }
        Some(held)
    }

    /// The table's limiter for the key, or a fresh one if it has none or
    /// one for another limit.
    fn table_limiter(&self, key: &LimitedKey<'_>, limit: RateLimit) -> Arc<KeyLimiter> {
        match self.limiters.get(key.id) {
            Some(existing) if existing.limit == limit => existing,
            // New key, or its limit changed: one fresh bucket, created under
            // moka's per-key lock so concurrent first requests share it
            // (separate buckets would each grant a full burst).
            _ => {
                let fresh = || {
                    Arc::new(KeyLimiter {
                        limit,
                        limiter: RateLimiter::direct_with_clock(quota(limit), self.clock.clone())
                            .with_middleware::<StateInformationMiddleware>(),
                        touched_ms: AtomicU64::new(self.now_ms()),
                    })
                };
                let result = self
                    .limiters
                    .entry(KeyId::trusted(key.id))
                    .and_compute_with(|current| match current {
                        Some(entry) if entry.value().limit == limit => Op::Nop,
                        _ => Op::Put(fresh()),
                    });
                match result {
                    CompResult::Inserted(entry)
                    | CompResult::ReplacedWith(entry)
                    | CompResult::Unchanged(entry) => entry.into_value(),
                    // The closure never removes; keep serving with a bucket.
                    CompResult::StillNone(_) | CompResult::Removed(_) => fresh(),
                }
            }
        }
    }

    /// The limit that applies to the key: its own, else the default.
    pub fn limit_for(&self, key: &LimitedKey<'_>) -> Option<RateLimit> {
        key.rate_limit.or(self.default)
    }

    /// Takes one request from the key's budget.
    pub fn check(&self, key: LimitedKey<'_>) -> RateDecision {
        let Some(limit) = key.rate_limit.or(self.default) else {
            return RateDecision::Unlimited;
        };
        let fetched;
        let limiter = match self.held(&key, limit) {
            Some(held) => held,
            None => {
                fetched = self.table_limiter(&key, limit);
                // Already set only by a racing request, which got the same
                // bucket from the table.
                let _ = key.slot.0.set(Box::new(Arc::clone(&fetched)));
                &*fetched
            }
        };
        let per_request = per_request(limit);
        match limiter.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateDecision::Allowed(RateLimitStatus {
                    limit: limit.requests(),
                    remaining,
                    reset: per_request * (limit.requests() - remaining.min(limit.requests())),
                })
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.clock.now());
                RateDecision::Limited {
                    status: RateLimitStatus {
                        limit: limit.requests(),
                        remaining: 0,
                        reset: per_request * limit.requests(),
                    },
                    retry_after: retry_after.max(Duration::from_millis(1)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A cache entry's part that the limiter sees.
    struct TestKey {
        id: KeyId,
        rate_limit: Option<RateLimit>,
        slot: LimiterSlot,
    }

    impl TestKey {
        fn limited(&self) -> LimitedKey<'_> {
            LimitedKey {
                id: self.id.as_str(),
                rate_limit: self.rate_limit,
                slot: &self.slot,
            }
        }
    }

    fn key(rate_limit: Option<RateLimit>) -> TestKey {
        key_with_id(KeyId::generate(), rate_limit)
    }

    /// A new cache entry (empty slot) for a key id.
    fn key_with_id(id: KeyId, rate_limit: Option<RateLimit>) -> TestKey {
        TestKey {
            id,
            rate_limit,
            slot: LimiterSlot::default(),
        }
    }

    #[test]
    fn no_limit_configured_means_unlimited() {
        let limits = KeyRateLimits::new(None, 100);
        assert_eq!(limits.check(key(None).limited()), RateDecision::Unlimited);
    }

    #[test]
    fn burst_then_limited_with_retry_after() {
        let limits = KeyRateLimits::new(Some(RateLimit::new(3, 60).unwrap()), 100);
        let key = key(None);
        let remaining: Vec<u32> = (0..3)
            .map(|_| match limits.check(key.limited()) {
                RateDecision::Allowed(status) => status.remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        match limits.check(key.limited()) {
            RateDecision::Limited {
                status,
                retry_after,
            } => {
                assert_eq!((status.limit, status.remaining), (3, 0));
                assert!(
                    retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn concurrent_first_requests_share_one_bucket() {
        let limits = Arc::new(KeyRateLimits::new(
            Some(RateLimit::new(1, 60).unwrap()),
            1_000,
        ));
        for round in 0..200 {
            let key = Arc::new(key(None));
            let racers: Vec<_> = (0..4)
                .map(|_| {
                    let limits = Arc::clone(&limits);
                    let key = Arc::clone(&key);
                    std::thread::spawn(move || {
                        matches!(limits.check(key.limited()), RateDecision::Allowed(_))
                    })
                })
                .collect();
            let allowed = racers
                .into_iter()
                .map(|r| r.join().unwrap())
                .filter(|&a| a)
                .count();
            assert_eq!(
                allowed, 1,
                "round {round}: a limit of 1 let {allowed} through"
            );
        }
    }

    #[test]
    fn the_largest_limits_do_not_break_the_limiter() {
        let limits = KeyRateLimits::new(Some(RateLimit::new(u32::MAX, 1).unwrap()), 100);
        let key = key(None);
        for _ in 0..1_000 {
            assert!(matches!(
                limits.check(key.limited()),
                RateDecision::Allowed(_)
            ));
        }
        let slow = KeyRateLimits::new(
            Some(RateLimit::new(1, RateLimit::MAX_PER_SECONDS).unwrap()),
            100,
        );
        assert!(matches!(
            slow.check(key.limited()),
            RateDecision::Allowed(_)
        ));
        assert!(matches!(
            slow.check(key.limited()),
            RateDecision::Limited { .. }
        ));
    }

    #[test]
    fn the_key_override_beats_the_default_and_keys_are_separate() {
        let limits = KeyRateLimits::new(Some(RateLimit::new(1, 60).unwrap()), 100);
        let generous = key(Some(RateLimit::new(5, 60).unwrap()));
        let plain = key(None);
        for _ in 0..5 {
            assert!(matches!(
                limits.check(generous.limited()),
                RateDecision::Allowed(_)
            ));
        }
        assert!(matches!(
            limits.check(plain.limited()),
            RateDecision::Allowed(_)
        ));
        assert!(matches!(
            limits.check(plain.limited()),
            RateDecision::Limited { .. }
        ));
        assert!(matches!(
            limits.check(generous.limited()),
            RateDecision::Limited { .. }
        ));
    }

    #[test]
    fn a_tightened_limit_keeps_its_bucket_for_its_own_refill_period() {
        let limits = KeyRateLimits::new(None, 100);
        let loose = key(Some(RateLimit::new(10, 1).unwrap()));
        assert!(matches!(
            limits.check(loose.limited()),
            RateDecision::Allowed(_)
        ));
        // UpdateKey to 1 per minute: the new bucket replaces the old entry,
        // whose expiry (1 s) must not carry over.
        let tight = key_with_id(loose.id.clone(), Some(RateLimit::new(1, 60).unwrap()));
        assert!(matches!(
            limits.check(tight.limited()),
            RateDecision::Allowed(_)
        ));

        std::thread::sleep(Duration::from_millis(1_500));

        assert!(
            matches!(limits.check(tight.limited()), RateDecision::Limited { .. }),
            "the tightened bucket expired after the old limit's period and refilled"
        );
    }

    #[test]
    fn a_reloaded_cache_entry_keeps_the_bucket_its_key_was_using() {
        // 5 per 2 s: one request earned back every 0.4 s.
        let limit = RateLimit::new(5, 2).unwrap();
        let limits = KeyRateLimits::new(None, 100);
        let first = key(Some(limit));
        for _ in 0..5 {
            assert!(matches!(
                limits.check(first.limited()),
                RateDecision::Allowed(_)
            ));
        }
        // Keep using it, longer than the table's idle expiry (2 s): the
        // entry answers from the limiter it holds and keeps the table's alive.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(300));
            limits.check(first.limited());
        }
        // The cache entry is reloaded (TTL, eviction): the new one must find
        // the same, nearly empty bucket, not a fresh burst of 5.
        let reloaded = key_with_id(first.id.clone(), Some(limit));
        let allowed = (0..5)
            .filter(|_| matches!(limits.check(reloaded.limited()), RateDecision::Allowed(_)))
            .count();
        assert!(
            allowed <= 1,
            "a reload refilled the bucket: {allowed} of 5 allowed"
        );
    }

    #[test]
    fn idle_limiters_are_reclaimed_after_one_refill_period() {
        let limits = KeyRateLimits::new(Some(RateLimit::new(1, 1).unwrap()), 100);
        for _ in 0..3 {
            limits.check(key(None).limited());
        }
        limits.limiters.run_pending_tasks();
        assert_eq!(limits.limiters.entry_count(), 3);

        std::thread::sleep(Duration::from_millis(1_500));
        limits.limiters.run_pending_tasks();

        assert_eq!(limits.limiters.entry_count(), 0);
    }
}
