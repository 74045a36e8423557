//! Keeps this replica's key cache in step with the event log, and proves it.
//!
//! The follower reads the log after the last sequence it applied, on every
//! wake-up hint (PostgreSQL NOTIFY, or the SQLite store's in-process signal)
//! and on a short poll interval, so a lost hint costs latency, never
//! correctness. Each event invalidates the key's cache entries and is
//! broadcast to `WatchRevocations` streams.
//!
//! **Invariant (fail closed):** a poll that started at time T and found no
//! more events proves every change committed before T is applied. The hot
//! path answers from the cache only while the last such proof is younger
//! than `freshness_bound`; otherwise it denies with `UNAVAILABLE`.
//!
//! **Invariant (no silent gaps):** the follower never moves past events it
//! did not apply. If retention pruned them, or the log no longer holds the
//! last event it applied (a restore or failover rewound it), it clears the
//! cache, starts over at the log's end and ends every watch stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::UnixMillis;
use crate::key_cache::KeyCache;
use crate::settings::{SettingError, in_range, seconds, seconds_or};
use crate::storage::{KeyEvent, KeyStore, StoreError, Wakeup};

/// Events read per query while catching up.
const PAGE: u32 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSettings {
    pub poll_interval: Duration,
    pub freshness_bound: Duration,
    pub retention: Duration,
    pub prune_interval: Duration,
    pub watch_buffer: usize,
    pub checkpoint_interval: Duration,
    /// Open WatchRevocations streams allowed on this replica.
    pub max_watchers: usize,
    /// Open WatchRevocations streams allowed to one caller (a service token,
    /// a JWT's account, or an anonymous caller's address), so that no
    /// caller can take every place.
    pub max_watchers_per_caller: usize,
    /// How long a request with `min_revision` waits for this replica to
    /// apply that revision before it is denied UNAVAILABLE.
    pub min_revision_wait: Duration,
}

pub const DEFAULT_POLL_INTERVAL_MS: u64 = 200;
pub const DEFAULT_FRESHNESS_BOUND_MS: u64 = 2_000;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(600);
pub const DEFAULT_WATCH_BUFFER: usize = 1024;
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_WATCHERS: usize = 1024;
pub const DEFAULT_MAX_WATCHERS_PER_CALLER: usize = 64;
pub const DEFAULT_MIN_REVISION_WAIT_MS: u64 = 1_000;

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(DEFAULT_POLL_INTERVAL_MS),
            freshness_bound: Duration::from_millis(DEFAULT_FRESHNESS_BOUND_MS),
            retention: DEFAULT_RETENTION,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
            watch_buffer: DEFAULT_WATCH_BUFFER,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            max_watchers: DEFAULT_MAX_WATCHERS,
            max_watchers_per_caller: DEFAULT_MAX_WATCHERS_PER_CALLER,
            min_revision_wait: Duration::from_millis(DEFAULT_MIN_REVISION_WAIT_MS),
        }
    }
}

/// `[feed]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFeed {
    pub poll_interval_ms: Option<u64>,
    pub freshness_bound_ms: Option<u64>,
    pub retention_hours: Option<f64>,
    pub prune_interval_seconds: Option<f64>,
    pub watch_buffer: Option<usize>,
    pub checkpoint_interval_seconds: Option<f64>,
    pub max_watchers: Option<usize>,
    pub max_watchers_per_caller: Option<usize>,
    pub min_revision_wait_ms: Option<u64>,
}

impl FeedSettings {
    /// Validates `[feed]`.
    pub fn from_raw(raw: RawFeed) -> Result<Self, SettingError> {
        let poll_interval = Duration::from_millis(
            in_range(
                raw.poll_interval_ms.unwrap_or(DEFAULT_POLL_INTERVAL_MS),
                5,
                60_000,
            )
            .map_err(SettingError::at("feed.poll_interval_ms"))?,
        );
        let freshness_bound = Duration::from_millis(
            in_range(
                raw.freshness_bound_ms.unwrap_or(DEFAULT_FRESHNESS_BOUND_MS),
                20,
                600_000,
            )
            .map_err(SettingError::at("feed.freshness_bound_ms"))?,
        );
        if freshness_bound < poll_interval * 2 {
            return Err(SettingError::new(
                "feed.freshness_bound_ms",
                format!(
                    "must be at least twice feed.poll_interval_ms ({} ms), or every missed poll fails requests",
                    poll_interval.as_millis()
                ),
            ));
        }
        let retention = match raw.retention_hours {
            Some(hours) => seconds(hours * 3600.0, 60.0, 8_760.0 * 3600.0).map_err(|_| {
                SettingError::new(
                    "feed.retention_hours",
                    format!("must be between 1/60 and 8760 hours, got {hours}"),
                )
            })?,
            None => DEFAULT_RETENTION,
        };
        let count = |value: Option<usize>, default: usize, key: &str| {
            in_range(value.unwrap_or(default), 1, 1_000_000).map_err(SettingError::at(key))
        };
        Ok(Self {
            poll_interval,
            freshness_bound,
            retention,
            prune_interval: seconds_or(
                raw.prune_interval_seconds,
                DEFAULT_PRUNE_INTERVAL,
                0.1,
                86_400.0,
            )
            .map_err(SettingError::at("feed.prune_interval_seconds"))?,
            watch_buffer: count(raw.watch_buffer, DEFAULT_WATCH_BUFFER, "feed.watch_buffer")?,
            checkpoint_interval: {
                let default = DEFAULT_CHECKPOINT_INTERVAL;
                seconds_or(raw.checkpoint_interval_seconds, default, 0.05, 3_600.0)
                    .map_err(SettingError::at("feed.checkpoint_interval_seconds"))?
            },
            max_watchers: count(raw.max_watchers, DEFAULT_MAX_WATCHERS, "feed.max_watchers")?,
            max_watchers_per_caller: count(
                raw.max_watchers_per_caller,
                DEFAULT_MAX_WATCHERS_PER_CALLER,
                "feed.max_watchers_per_caller",
            )?,
            min_revision_wait: Duration::from_millis(
                in_range(
                    raw.min_revision_wait_ms
                        .unwrap_or(DEFAULT_MIN_REVISION_WAIT_MS),
                    1,
                    60_000,
                )
                .map_err(SettingError::at("feed.min_revision_wait_ms"))?,
            ),
        })
    }
}

/// When this replica last proved it was caught up.
pub struct Freshness {
    origin: Instant,
    /// Milliseconds after `origin` at which the last successful poll began,
    /// plus one (0: never).
    confirmed_at: AtomicU64,
    bound: Duration,
}

impl Freshness {
    pub fn new(bound: Duration) -> Self {
        Self {
            origin: Instant::now(),
            confirmed_at: AtomicU64::new(0),
            bound,
        }
    }

    fn ticks(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX) + 1
    }

    /// Records that everything committed before `poll_started` is applied.
    pub fn confirm(&self, poll_started: Instant) {
        self.confirmed_at
            .fetch_max(self.ticks(poll_started), Ordering::Release);
    }

    /// How long ago the last proof was, or `None` if there never was one.
    pub fn age(&self) -> Option<Duration> {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        (confirmed > 0)
            .then(|| Duration::from_millis(self.ticks(Instant::now()).saturating_sub(confirmed)))
    }

    pub fn is_fresh(&self) -> bool {
        self.age().is_some_and(|age| age <= self.bound)
    }

    pub fn bound(&self) -> Duration {
        self.bound
    }
}

/// How far this replica has applied the event log, for requests that carry
/// `min_revision` (read-your-writes across replicas): they wait until the
/// follower passes their revision, and nudge it to read the log at once
/// instead of at its next poll (a lost NOTIFY costs them nothing).
pub struct AppliedRevision {
    applied: watch::Sender<u64>,
    /// Wakes the follower; permits coalesce, so a burst of waiting
    /// requests costs one extra read.
    nudge: Notify,
    wait: Duration,
}

impl AppliedRevision {
    pub fn new(applied: u64, wait: Duration) -> Self {
        Self {
            applied: watch::Sender::new(applied),
            nudge: Notify::new(),
            wait,
        }
    }

    /// The last sequence applied to this replica's cache.
    pub fn get(&self) -> u64 {
        *self.applied.borrow()
    }

    fn set(&self, seq: u64) {
        self.applied.send_replace(seq);
    }

    /// Whether the log is applied through `revision`, waiting up to the
    /// configured bound for it to be.
    pub async fn reached(&self, revision: u64) -> bool {
        if self.get() >= revision {
            return true;
        }
        let mut applied = self.applied.subscribe();
        self.nudge.notify_one();
        matches!(
            tokio::time::timeout(self.wait, applied.wait_for(|seq| *seq >= revision)).await,
            Ok(Ok(_))
        )
    }
}

/// What the feed broadcasts to `WatchRevocations` streams.
#[derive(Debug, Clone)]
pub enum FeedItem {
    Event(Arc<KeyEvent>),
    /// This replica could not follow the log past a point and started over
    /// at this sequence (cache cleared): streams that relied on it have a gap.
    Gap {
        resumed_at: u64,
        cause: GapCause,
    },
}

/// Why the follower had to start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapCause {
    /// Retention pruned events this replica never applied.
    Pruned,
    /// The log no longer holds what this replica applied: it ends before,
    /// or differs at, the last applied event (the database was restored
    /// from a backup or failed over to a standby that was behind).
    Rewound,
}
pub struct ChangeFeed {
    /// The follower's own small pool (see `storage::open_follower`).
    reader: Arc<dyn KeyStore>,
    /// The shared pool, for watch streams' history reads.
    store: Arc<dyn KeyStore>,
    cache: Arc<KeyCache>,
    freshness: Arc<Freshness>,
    events: broadcast::Sender<FeedItem>,
    revision: Arc<AppliedRevision>,
    /// The last event applied, as read, to check on every poll that the log
    /// still holds it (see `poll_once`). Also serializes polls.
    last_applied: tokio::sync::Mutex<Option<KeyEvent>>,
    settings: FeedSettings,
    /// Cancelled when the server begins to shut down; watch streams end.
    closing: CancellationToken,
    /// One permit per open watch stream.
    watchers: Arc<Semaphore>,
    /// Open watch streams per caller (entries at zero are removed).
    watchers_per_caller: Arc<Mutex<HashMap<String, usize>>>,
}

/// A place among the watch streams, given back when dropped.
pub struct WatcherPermit {
    _replica: OwnedSemaphorePermit,
    caller: String,
    per_caller: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for WatcherPermit {
    fn drop(&mut self) {
        let mut counts = lock(&self.per_caller);
        if let Some(count) = counts.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

/// Why a watch stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchRefusal {
    /// The replica serves `max_watchers` streams.
    ReplicaFull(usize),
    /// This caller has `max_watchers_per_caller` streams open.
    CallerFull(usize),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ChangeFeed {
    /// Starts at the log's current end: the cache is empty, so there is
    /// nothing older to apply.
    pub async fn start(
        store: Arc<dyn KeyStore>,
        reader: Arc<dyn KeyStore>,
        cache: Arc<KeyCache>,
        settings: FeedSettings,
    ) -> Result<Arc<Self>, StoreError> {
        let poll_started = Instant::now();
        let latest = reader.latest_seq().await?;
        let freshness = Arc::new(Freshness::new(settings.freshness_bound));
        freshness.confirm(poll_started);
        let (events, _) = broadcast::channel(settings.watch_buffer.max(1));
        Ok(Arc::new(Self {
            reader,
            store,
            cache,
            freshness,
            events,
            revision: Arc::new(AppliedRevision::new(latest, settings.min_revision_wait)),
            last_applied: tokio::sync::Mutex::new(None),
            watchers: Arc::new(Semaphore::new(settings.max_watchers)),
            watchers_per_caller: Arc::default(),
            settings,
            closing: CancellationToken::new(),
        }))
    }

    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }

    pub fn settings(&self) -> &FeedSettings {
        &self.settings
    }

    /// The last sequence applied to this replica's cache.
    pub fn applied_seq(&self) -> u64 {
        self.revision.get()
    }

    /// The applied sequence, for requests that wait on it.
    pub fn revision(&self) -> &Arc<AppliedRevision> {
        &self.revision
    }

    /// Live events, in sequence order, from the moment of subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.events.subscribe()
    }

    /// The shared store (watch history reads).
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// A place for one more watch stream of `caller` (who it is, as
    /// per-caller limits count it), if both bounds allow.
    pub fn admit_watcher(&self, caller: String) -> Result<WatcherPermit, WatchRefusal> {
        let mut counts = lock(&self.watchers_per_caller);
        let count = counts.get(&caller).copied().unwrap_or(0);
        if count >= self.settings.max_watchers_per_caller {
            return Err(WatchRefusal::CallerFull(
                self.settings.max_watchers_per_caller,
            ));
        }
        let replica = Arc::clone(&self.watchers)
            .try_acquire_owned()
            .map_err(|_| WatchRefusal::ReplicaFull(self.settings.max_watchers))?;
        counts.insert(caller.clone(), count + 1);
        Ok(WatcherPermit {
            _replica: replica,
            caller,
            per_caller: Arc::clone(&self.watchers_per_caller),
        })
    }

    /// Resolves when the server begins to shut down.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Tells watch streams the server is shutting down.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Reads and applies everything after the last applied sequence.
    /// Returns how many events were applied.
    ///
    /// Each read starts at the last applied event itself, to check that the
    /// log still holds it: a log that ends before it, or holds a different
    /// event at its sequence, was restored or failed over, and new events
    /// may reuse sequence numbers this replica has already passed. That, and
    /// pruning past this replica, are gaps: the cache is cleared, the
    /// follower starts over at the log's end, and streams are told.
    pub async fn poll_once(&self) -> Result<usize, StoreError> {
        let started = Instant::now();
        let mut last_applied = self.last_applied.lock().await;
        let mut applied_now = 0;
        loop {
            let after = self.applied_seq();
            let from = last_applied
                .as_ref()
                .map_or(after, |last| last.seq.saturating_sub(1));
            let mut events = self.reader.events_after(from, PAGE + 1).await?;
            // Checked after the page, so pruning that raced the read is seen:
            // if events after `after` may be gone, this page may have a hole.
            let pruned = self.reader.pruned_through().await?;
            if after < pruned {
                // Retention removed events this replica never applied (it was
                // cut off longer than the retention period).
                tracing::warn!(
                    after,
                    pruned,
                    "event log pruned past this replica; clearing the cache"
                );
                self.start_over(GapCause::Pruned).await?;
                *last_applied = None;
                continue;
            }
            if let Some(last) = last_applied.as_ref() {
                if events.first() == Some(last) {
                    events.remove(0);
                } else if pruned >= last.seq {
                    // Retention took it; nothing left to compare against.
                    *last_applied = None;
                } else {
                    tracing::error!(
                        applied = after,
                        found = ?events.first().map(|e| e.seq),
                        "the event log no longer holds the last event this replica applied \
                         (database restored or failed over?); clearing the cache"
                    );
                    self.start_over(GapCause::Rewound).await?;
                    *last_applied = None;
                    continue;
                }
            }
            if events.is_empty() {
                // Without a remembered event (just started, or it was pruned)
                // a log that went backwards shows as one that ends early.
                let latest = self.reader.latest_seq().await?;
                if latest < after {
                    tracing::error!(
                        applied = after,
                        latest,
                        "the event log ends before what this replica applied \
                         (database restored or failed over?); clearing the cache"
                    );
                    self.start_over(GapCause::Rewound).await?;
                    continue;
                }
            }
            let full_page = events.len() >= PAGE as usize;
            for event in events {
                self.cache.invalidate(&event.key_id, &event.digest);
                // After the epoch bump: a digest remembered as unknown may
                // now be a key (`imported`); see `insert_unknown_unless_changed`.
                self.cache.forget_unknown(&event.digest);
                self.revision.set(event.seq);
                let event = Arc::new(event);
                *last_applied = Some(KeyEvent::clone(&event));
                // No receivers is fine.
                let _ = self.events.send(FeedItem::Event(event));
                applied_now += 1;
            }
            if !full_page {
                break;
            }
        }
        self.freshness.confirm(started);
        Ok(applied_now)
    }

    /// Drops the cache and resumes at the log's current end.
    async fn start_over(&self, cause: GapCause) -> Result<(), StoreError> {
        let latest = self.reader.latest_seq().await?;
        self.cache.clear();
        self.revision.set(latest);
        let _ = self.events.send(FeedItem::Gap {
            resumed_at: latest,
            cause,
        });
        Ok(())
    }

    /// Follows the log until `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        mut wakeups: mpsc::Receiver<Wakeup>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hints_open = true;
        let mut failing = false;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
                () = self.revision.nudge.notified() => {}
                wakeup = wakeups.recv(), if hints_open => match wakeup {
                    Some(Wakeup::Resubscribed) => tracing::info!("event hints resubscribed; replaying from last sequence"),
                    Some(Wakeup::Changed) => {}
                    None => {
                        tracing::warn!("event hints ended; following by polling only");
                        hints_open = false;
                    }
                },
            }
            // A poll that hangs must not hold up the proof of freshness.
            match tokio::time::timeout(self.settings.freshness_bound, self.poll_once()).await {
                Ok(Ok(_)) => {
                    if failing {
                        tracing::info!("event log reachable again; caught up");
                        failing = false;
                    }
                }
                Ok(Err(error)) => {
                    if !failing {
                        tracing::warn!(%error, "cannot read the event log");
                        failing = true;
                    }
                }
                Err(_) => {
                    if !failing {
                        tracing::warn!("reading the event log timed out");
                        failing = true;
                    }
                }
            }
        }
    }

    /// Deletes events older than the retention period, every prune interval.
    pub async fn run_pruner(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.settings.prune_interval);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let retention_ms =
                i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
            let cutoff = UnixMillis::now().saturating_add_millis(-retention_ms);
            match self.reader.prune_events(cutoff).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned old events"),
                Err(error) => tracing::warn!(%error, "could not prune old events"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_needs_a_recent_proof() {
        // A bound no descheduled thread outlasts: fresh right after a proof.
        let lasting = Freshness::new(Duration::from_secs(3600));
        assert!(!lasting.is_fresh(), "no proof yet");
        lasting.confirm(Instant::now());
        assert!(lasting.is_fresh());

        // A short bound goes stale by itself, not before the bound: polled.
        let bound = Duration::from_millis(100);
        let short = Freshness::new(bound);
        let proved = Instant::now();
        short.confirm(proved);
        while short.is_fresh() {
            assert!(
                proved.elapsed() < Duration::from_secs(30),
                "still fresh 30 s after a proof, with a {bound:?} bound"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // (Ages are counted in whole milliseconds.)
        assert!(
            proved.elapsed() + Duration::from_millis(1) >= bound,
            "stale {:?} after the proof, before the bound",
            proved.elapsed()
        );
    }

    #[test]
    fn an_older_proof_never_replaces_a_newer_one() {
        let freshness = Freshness::new(Duration::from_secs(3600));
        let older = Instant::now();
        // Only to set the two proofs apart.
        std::thread::sleep(Duration::from_millis(200));
        let newer = Instant::now();
        freshness.confirm(newer);
        freshness.confirm(older);
        let age = freshness.age().expect("proved");
        let since_newer = newer.elapsed();
        assert!(
            age <= since_newer + Duration::from_millis(1),
            "the age {age:?} counts from the older proof, not the newer one ({since_newer:?} ago)"
        );
    }
}
