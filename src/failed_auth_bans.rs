//! Failed-authentication bans per client address: after `max_failures`
//! invalid credentials within `window`, an address is refused for
//! `ban_duration`, before any hashing or database access, even with a valid
//! key.
//!
//! Both tables (failures being counted, bans in force) are bounded by
//! `max_tracked_addresses` entries each, and **never evict a live entry**:
//! an entry leaves only when it expires. (A cache that evicted under
//! pressure let an attacker who banned itself flood the table with other
//! addresses until its own ban fell out.) When a table is full, expired
//! entries are swept out; if it is still full, the new address is not
//! admitted: a failure from an address that is not yet counted is not
//! counted, and an address that reaches the threshold while the ban table
//! is full stays at the threshold and is banned at its next failure once
//! room frees. Memory stays bounded, no ban in force is ever lifted early,
//! and a full table shows in `keyward_ban_table_full` and a warning.
//!
//! IPv6 clients are counted per /64 (one subscriber's usual allocation), and
//! IPv4-mapped IPv6 addresses as the IPv4 address, so an attacker cannot
//! escape a ban by walking the low bits of its own network.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::settings::{SettingError, in_range, seconds_or};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanSettings {
    pub enabled: bool,
    pub max_failures: u32,
    pub window: Duration,
    pub ban_duration: Duration,
    pub max_tracked_addresses: u64,
}

pub const DEFAULT_ENABLED: bool = true;
pub const DEFAULT_MAX_FAILURES: u32 = 10;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_BAN_DURATION: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_TRACKED_ADDRESSES: u64 = 100_000;

impl Default for BanSettings {
    fn default() -> Self {
        Self {
            enabled: DEFAULT_ENABLED,
            max_failures: DEFAULT_MAX_FAILURES,
            window: DEFAULT_WINDOW,
            ban_duration: DEFAULT_BAN_DURATION,
            max_tracked_addresses: DEFAULT_MAX_TRACKED_ADDRESSES,
        }
    }
}

/// `[bans]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBans {
    pub enabled: Option<bool>,
    pub max_failures: Option<u32>,
    pub window_seconds: Option<f64>,
    pub ban_seconds: Option<f64>,
    pub max_tracked_addresses: Option<u64>,
}

impl BanSettings {
    /// Validates `[bans]`.
    pub fn from_raw(raw: RawBans) -> Result<Self, SettingError> {
        Ok(Self {
            enabled: raw.enabled.unwrap_or(DEFAULT_ENABLED),
            max_failures: in_range(
                raw.max_failures.unwrap_or(DEFAULT_MAX_FAILURES),
                1,
                1_000_000,
            )
            .map_err(SettingError::at("bans.max_failures"))?,
            window: seconds_or(raw.window_seconds, DEFAULT_WINDOW, 0.01, 86_400.0)
                .map_err(SettingError::at("bans.window_seconds"))?,
            ban_duration: seconds_or(raw.ban_seconds, DEFAULT_BAN_DURATION, 0.01, 7.0 * 86_400.0)
                .map_err(SettingError::at("bans.ban_seconds"))?,
            max_tracked_addresses: in_range(
                raw.max_tracked_addresses
                    .unwrap_or(DEFAULT_MAX_TRACKED_ADDRESSES),
                1,
                100_000_000,
            )
            .map_err(SettingError::at("bans.max_tracked_addresses"))?,
        })
    }
}

/// Shards per table: each is one small lock, so concurrent requests from
/// different addresses seldom wait on each other.
const SHARDS: usize = 64;

/// A full table sweeps out expired entries at most this often (a sweep
/// visits every shard).
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// One lock's share of a table: each address with its expiry.
type Shard<V> = Mutex<HashMap<IpAddr, (Instant, V)>>;

/// One table of addresses with an expiry each, bounded, never evicting an
/// entry before it expires.
struct AddressTable<V> {
    shards: Box<[Shard<V>]>,
    hasher: std::hash::RandomState,
    /// Entries in all shards, expired ones included until swept.
    len: AtomicUsize,
    capacity: usize,
    origin: Instant,
    /// Milliseconds after `origin` of the last sweep.
    last_sweep_ms: AtomicU64,
    /// Addresses not admitted because the table was full.
    refusals: AtomicU64,
    /// Milliseconds after `origin` of the last warning about a full table
    /// (0: never), so a flood logs one line per `WARN_INTERVAL`.
    last_warning_ms: AtomicU64,
}

/// A full table says so in the log at most this often.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// An address was not admitted: the table is full of live entries.
struct Full;

impl<V> AddressTable<V> {
    fn new(capacity: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::hash::RandomState::new(),
            len: AtomicUsize::new(0),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            origin: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(0),
        }
    }

    fn shard(&self, address: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, (Instant, V)>> {
        let index = self.hasher.hash_one(address) as usize % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// When the live entry for `address` expires, if there is one.
    fn live_until(&self, address: &IpAddr, now: Instant) -> Option<Instant> {
        match self.shard(address).get(address) {
            Some((expires, _)) if *expires > now => Some(*expires),
            _ => None,
        }
    }

    /// Under the shard's lock: `update` the live entry for `address`, or
    /// put `(expires, new)` in place of an expired or absent one, unless
    /// that would take the table past its capacity (after sweeping out what
    /// has expired). Returns what `update` returned, or `None` for a new
    /// entry.
    fn upsert<R>(
        &self,
        address: IpAddr,
        now: Instant,
        expires: Instant,
        new: impl Fn() -> V,
        update: impl FnOnce(&mut V) -> R,
    ) -> Result<Option<R>, Full> {
        let mut update = Some(update);
        for attempt in 0..2 {
            if attempt == 1 {
                self.sweep(now);
            }
            let mut shard = self.shard(&address);
            match shard.get_mut(&address) {
                Some((until, value)) if *until > now => {
                    let update = update.take().expect("runs once");
                    return Ok(Some(update(value)));
                }
                Some(entry) => {
                    *entry = (expires, new());
                    return Ok(None);
                }
                None if self.reserve() => {
                    shard.insert(address, (expires, new()));
                    return Ok(None);
                }
                None => {}
            }
        }
        self.refusals.fetch_add(1, Ordering::Relaxed);
        Err(Full)
    }

    /// Takes one place if there is one.
    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |len| {
                (len < self.capacity).then_some(len + 1)
            })
            .is_ok()
    }

    fn remove(&self, address: &IpAddr) {
        if self.shard(address).remove(address).is_some() {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether `interval` has passed since `last` (0: never) and this
    /// caller is the one to act on it.
    fn due(&self, last: &AtomicU64, interval: Duration, now: Instant) -> bool {
        let now_ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let seen = last.load(Ordering::Acquire);
        let due = seen == 0 || now_ms.saturating_sub(seen) >= interval.as_millis() as u64;
        due && last
            .compare_exchange(seen, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether to log a refusal now (one line per `WARN_INTERVAL`).
    fn should_warn(&self, now: Instant) -> bool {
        self.due(&self.last_warning_ms, WARN_INTERVAL, now)
    }

    /// Removes expired entries from every shard, at most once per
    /// `SWEEP_INTERVAL` (callers that find the table full come here).
    fn sweep(&self, now: Instant) {
        if !self.due(&self.last_sweep_ms, SWEEP_INTERVAL, now) {
            return;
        }
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let before = shard.len();
            shard.retain(|_, (expires, _)| *expires > now);
            self.len.fetch_sub(before - shard.len(), Ordering::AcqRel);
        }
    }

    /// Live entries (expired ones not yet swept are not counted).
    fn live(&self, now: Instant) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                shard.values().filter(|(expires, _)| *expires > now).count() as u64
            })
            .sum()
    }
}

pub struct FailedAuthBans {
    settings: BanSettings,
    /// Failures counted per address; an entry lives `window` from the first
    /// failure.
    failures: AddressTable<u32>,
    /// Bans in force, until their expiry.
    bans: AddressTable<()>,
}

/// The state of both tables, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BanTableStats {
    pub failing: u64,
    pub banned: u64,
    pub failures_full: bool,
    pub bans_full: bool,
    /// Addresses not admitted to each table because it was full, ever.
    pub failures_refused: u64,
    pub bans_refused: u64,
}

/// The address bans are keyed by (an IPv6 address's /64, an IPv4-mapped
/// address's IPv4 address).
pub fn ban_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

impl FailedAuthBans {
    pub fn new(settings: BanSettings) -> Self {
        Self {
            failures: AddressTable::new(settings.max_tracked_addresses),
            bans: AddressTable::new(settings.max_tracked_addresses),
            settings,
        }
    }

    /// If `address` is banned, how long until it may try again.
    pub fn banned_for(&self, address: IpAddr) -> Option<Duration> {
        // No ban anywhere (the usual case): no lock, no hashing.
        if !self.settings.enabled || self.bans.is_empty() {
            return None;
        }
        let now = Instant::now();
        let until = self.bans.live_until(&ban_key(address), now)?;
        Some(
            until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        )
    }

    /// Counts an invalid credential from `address`; returns true if this
    /// failure started a ban.
    pub fn record_failure(&self, address: IpAddr) -> bool {
        if !self.settings.enabled {
            return false;
        }
        let key = ban_key(address);
        let now = Instant::now();
        let counted = self.failures.upsert(
            key,
            now,
            now + self.settings.window,
            || 1,
            |count| {
                *count = count.saturating_add(1);
                *count
            },
        );
        let count = match counted {
            Ok(count) => count.unwrap_or(1),
            Err(Full) => {
                if self.failures.should_warn(now) {
                    tracing::warn!(
                        capacity = self.settings.max_tracked_addresses,
                        "the failed-attempt table is full of live entries; \
                         failures from new addresses are not counted until entries expire"
                    );
                }
                return false;
            }
        };
        if count < self.settings.max_failures {
            return false;
        }
        // A ban in force is never shortened: a second one cannot start
        // while it lasts (the address is refused before it can fail).
        let banned = self
            .bans
            .upsert(key, now, now + self.settings.ban_duration, || (), |()| ());
        if banned.is_err() {
            // The count stays at the threshold: the next failure tries again.
            if self.bans.should_warn(now) {
                tracing::warn!(
                    client = %key,
                    capacity = self.settings.max_tracked_addresses,
                    "the ban table is full of bans in force; addresses reaching the \
                     threshold are banned at their next failure once bans expire"
                );
            }
            return false;
        }
        self.failures.remove(&key);
        tracing::info!(client = %key, "address banned after repeated invalid credentials");
        true
    }

    /// Puts in force a ban decided elsewhere (another replica, through the
    /// shared limits), for `remaining`; a ban already in force here is kept
    /// as it is. `address` is already a [`ban_key`]. Returns whether it was
    /// new here.
    pub fn impose(&self, address: IpAddr, remaining: Duration) -> bool {
        if !self.settings.enabled {
            return false;
        }
        let now = Instant::now();
        match self
            .bans
            .upsert(address, now, now + remaining, || (), |()| ())
        {
            Ok(None) => {
                self.failures.remove(&address);
                true
            }
            Ok(Some(())) => false,
            Err(Full) => {
                if self.bans.should_warn(now) {
                    tracing::warn!(
                        client = %address,
                        capacity = self.settings.max_tracked_addresses,
                        "the ban table is full of bans in force; a ban set by another \
                         replica is not applied here until bans expire"
                    );
                }
                false
            }
        }
    }

    pub fn settings(&self) -> &BanSettings {
        &self.settings
    }

    /// Both tables' sizes and fullness, for metrics (visits every shard).
    pub fn stats(&self) -> BanTableStats {
        let now = Instant::now();
        let failing = self.failures.live(now);
        let banned = self.bans.live(now);
        let capacity = self.settings.max_tracked_addresses;
        BanTableStats {
            failing,
            banned,
            failures_full: failing >= capacity,
            bans_full: banned >= capacity,
            failures_refused: self.failures.refusals.load(Ordering::Relaxed),
            bans_refused: self.bans.refusals.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
