//! Unit tests for `failed_auth_bans`.

use super::*;

fn bans(max_failures: u32, ban: Duration) -> FailedAuthBans {
    FailedAuthBans::new(BanSettings {
        max_failures,
        ban_duration: ban,
        ..BanSettings::default()
    })
}

fn address(i: u32) -> IpAddr {
    IpAddr::from(i.to_be_bytes())
}

/// Polls until `check` holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

#[test]
fn bans_after_the_threshold_and_not_before() {
    let bans = bans(3, Duration::from_secs(60));
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(!bans.record_failure(ip));
    assert!(!bans.record_failure(ip));
    assert!(bans.banned_for(ip).is_none());
    let before = Instant::now();
    assert!(bans.record_failure(ip));
    let left = bans.banned_for(ip).unwrap();
    assert!(left <= Duration::from_secs(60));
    assert!(left >= Duration::from_secs(60).saturating_sub(before.elapsed()));
    assert!(bans.banned_for("192.0.2.2".parse().unwrap()).is_none());
}

#[test]
fn bans_expire() {
    let bans = bans(1, Duration::from_millis(200));
    let ip: IpAddr = "192.0.2.3".parse().unwrap();
    bans.record_failure(ip);
    assert!(bans.banned_for(ip).is_some());
    assert!(eventually(Duration::from_secs(10), || bans
        .banned_for(ip)
        .is_none()));
}

#[test]
fn failures_older_than_the_window_do_not_count() {
    let bans = FailedAuthBans::new(BanSettings {
        max_failures: 2,
        window: Duration::from_millis(200),
        ..BanSettings::default()
    });
    let ip: IpAddr = "192.0.2.4".parse().unwrap();
    assert!(!bans.record_failure(ip));
    assert!(eventually(Duration::from_secs(10), || bans.stats().failing == 0));
    // The first failure has left the window: this one starts a new count.
    assert!(!bans.record_failure(ip));
    assert!(bans.banned_for(ip).is_none());
    // Within the window the second one bans.
    assert!(bans.record_failure(ip));
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
        bans.record_failure(address(i));
    }
    let stats = bans.stats();
    assert!(stats.failing <= 1_000, "tracked {}", stats.failing);
    assert!(stats.failures_full);
    assert_eq!(stats.failures_refused, 49_000);
}

/// The attack of the issue: the attacker gets itself banned, then bans
/// thousands of other addresses (more than the table holds) to push its own
/// ban out. A ban in force is never evicted.
#[test]
fn a_flood_of_new_bans_never_frees_a_banned_address() {
    let bans = FailedAuthBans::new(BanSettings {
        max_failures: 1,
        max_tracked_addresses: 1_000,
        ..BanSettings::default()
    });
    let attacker: IpAddr = "203.0.113.66".parse().unwrap();
    assert!(bans.record_failure(attacker));
    for i in 0..5_000u32 {
        bans.record_failure(address(i));
    }
    assert!(
        bans.banned_for(attacker).is_some(),
        "the attacker's ban was evicted by newer traffic"
    );
    let stats = bans.stats();
    assert_eq!(stats.banned, 1_000);
    assert!(stats.bans_full);
    assert!(stats.bans_refused > 0);
}

/// An address that reaches the threshold while the ban table is full is
/// banned at its next failure once a ban has expired.
#[test]
fn a_full_ban_table_bans_newcomers_once_room_frees() {
    let bans = FailedAuthBans::new(BanSettings {
        max_failures: 1,
        max_tracked_addresses: 2,
        ban_duration: Duration::from_millis(300),
        ..BanSettings::default()
    });
    assert!(bans.record_failure(address(1)));
    assert!(bans.record_failure(address(2)));
    let newcomer = address(3);
    assert!(!bans.record_failure(newcomer), "no room: not banned yet");
    assert!(bans.banned_for(newcomer).is_none());
    // Once the first two bans have run out, the next failure bans it.
    assert!(eventually(Duration::from_secs(10), || {
        bans.banned_for(address(1)).is_none() && bans.banned_for(address(2)).is_none()
    }));
    assert!(bans.record_failure(newcomer));
    assert!(bans.banned_for(newcomer).is_some());
}
