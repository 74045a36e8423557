//! Failed-authentication bans per client address: after `max_failures`
//! invalid credentials within `window`, an address is refused for
//! `ban_duration`, before any hashing or database access, even with a valid
//! key. Both tables are bounded moka caches, so millions of distinct
//! addresses cost at most `max_tracked_addresses` entries each.
//!
//! IPv6 clients are counted per /64 (one subscriber's usual allocation), and
//! IPv4-mapped IPv6 addresses as the IPv4 address, so an attacker cannot
//! escape a ban by walking the low bits of its own network.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanSettings {
    pub enabled: bool,
    pub max_failures: u32,
    pub window: Duration,
    pub ban_duration: Duration,
    pub max_tracked_addresses: u64,
}

impl Default for BanSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_failures: 10,
            window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(300),
            max_tracked_addresses: 100_000,
        }
    }
}

pub struct FailedAuthBans {
    settings: BanSettings,
    /// Failures per address; an entry lives `window` from the first failure.
    failures: Cache<IpAddr, Arc<AtomicU32>>,
    /// Banned addresses and when the ban began.
    bans: Cache<IpAddr, Instant>,
}

/// The address bans are keyed by.
fn ban_key(address: IpAddr) -> IpAddr {
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
            failures: Cache::builder()
                .max_capacity(settings.max_tracked_addresses)
                .time_to_live(settings.window)
                .build(),
            bans: Cache::builder()
                .max_capacity(settings.max_tracked_addresses)
                .time_to_live(settings.ban_duration)
                .build(),
            settings,
        }
    }

    /// If `address` is banned, how long until it may try again.
    pub fn banned_for(&self, address: IpAddr) -> Option<Duration> {
        if !self.settings.enabled {
            return None;
        }
        let since = self.bans.get(&ban_key(address))?;
        Some(
            self.settings
                .ban_duration
                .saturating_sub(since.elapsed())
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
        let count = self
            .failures
            .get_with(key, || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if count == self.settings.max_failures {
            self.bans.insert(key, Instant::now());
            self.failures.invalidate(&key);
            tracing::info!(client = %key, "address banned after repeated invalid credentials");
            return true;
        }
        false
    }

    /// Tracked (failing, banned) addresses, approximately, for metrics.
    pub fn sizes(&self) -> (u64, u64) {
        (self.failures.entry_count(), self.bans.entry_count())
    }

    /// Runs moka's pending maintenance (benchmarks measuring memory).
    pub fn run_pending_tasks(&self) {
        self.failures.run_pending_tasks();
        self.bans.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bans(max_failures: u32, ban: Duration) -> FailedAuthBans {
        FailedAuthBans::new(BanSettings {
            max_failures,
            ban_duration: ban,
            ..BanSettings::default()
        })
    }

    #[test]
    fn bans_after_the_threshold_and_not_before() {
        let bans = bans(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!bans.record_failure(ip));
        assert!(!bans.record_failure(ip));
        assert!(bans.banned_for(ip).is_none());
        assert!(bans.record_failure(ip));
        let left = bans.banned_for(ip).unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        assert!(bans.banned_for("192.0.2.2".parse().unwrap()).is_none());
    }

    #[test]
    fn bans_expire() {
        let bans = bans(1, Duration::from_millis(50));
        let ip: IpAddr = "192.0.2.3".parse().unwrap();
        bans.record_failure(ip);
        assert!(bans.banned_for(ip).is_some());
        std::thread::sleep(Duration::from_millis(120));
        assert!(bans.banned_for(ip).is_none());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_v4_as_v4() {
        let bans = bans(2, Duration::from_secs(60));
        bans.record_failure("2001:db8:1:2::1".parse().unwrap());
        bans.record_failure("2001:db8:1:2:ffff::9".parse().unwrap());
        assert!(
            bans.banned_for("2001:db8:1:2::77".parse().unwrap())
                .is_some()
        );
        assert!(
            bans.banned_for("2001:db8:1:3::1".parse().unwrap())
                .is_none()
        );

        bans.record_failure("::ffff:198.51.100.7".parse().unwrap());
        bans.record_failure("198.51.100.7".parse().unwrap());
        assert!(bans.banned_for("198.51.100.7".parse().unwrap()).is_some());
    }

    #[test]
    fn disabled_bans_never_ban() {
        let bans = FailedAuthBans::new(BanSettings {
            enabled: false,
            max_failures: 1,
            ..BanSettings::default()
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(!bans.record_failure(ip));
        assert!(bans.banned_for(ip).is_none());
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let bans = FailedAuthBans::new(BanSettings {
            max_tracked_addresses: 1_000,
            ..BanSettings::default()
        });
        for i in 0..50_000u32 {
            bans.record_failure(IpAddr::from(i.to_be_bytes()));
        }
        bans.run_pending_tasks();
        let (failing, _) = bans.sizes();
        assert!(failing <= 1_000, "tracked {failing}");
    }
}
