//! One replica's core, wired in one place for the server, the benchmark and
//! the tests: the key cache, the change feed that keeps it honest (and
//! proves freshness), the last-use recorder and its flusher, the
//! authenticator (the hot path) and the key manager.
//!
//! The surfaces (KeyService, ext_authz, the watch stream) are built on top
//! by `server.rs`; this module knows none of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::authenticator::{Authenticator, AuthenticatorSettings};
use crate::change_feed::{ChangeFeed, Freshness};
use crate::config::Config;
use crate::domain::RateLimit;
use crate::key_cache::KeyCache;
use crate::key_management::{KeyManager, ManagementSettings};
use crate::last_use::{LastUseRecorder, last_use_channel};
use crate::shared_limits::SharedLimits;
use crate::storage::{KeyStore, StoreError};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics_endpoint::{StateSample, StateSource};

/// A metrics scrape waits at most this long for the database's latest
/// sequence.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The hot path's settings as a config describes them.
pub fn authenticator_settings(config: &Config) -> AuthenticatorSettings {
    AuthenticatorSettings {
        key_format: config.key_format.clone(),
        catalog: Arc::clone(&config.catalog),
        denials: config.denials.clone(),
        bans: config.bans.clone(),
        default_rate_limit: config.default_rate_limit,
        limiter_capacity: config.cache.capacity,
        shared_limits: None,
        clock: config.clock.clone(),
    }
}

/// Key management's settings as a config describes them.
pub fn management_settings(config: &Config) -> ManagementSettings {
    ManagementSettings {
        catalog: Arc::clone(&config.catalog),
        key_format: config.key_format.clone(),
        max_active_keys_per_account: config.max_active_keys_per_account,
        max_rotation_grace: config.max_rotation_grace,
    }
}

/// A running replica: its core parts and the background work that keeps
/// them current (the follower, the event-log pruner, the last-use flusher).
pub struct Replica {
    config: Config,
    store: Arc<dyn KeyStore>,
    cache: Arc<KeyCache>,
    feed: Arc<ChangeFeed>,
    last_use: LastUseRecorder,
    authenticator: Arc<Authenticator>,
    shared_limits: Option<Arc<SharedLimits>>,
    manager: Arc<KeyManager>,
    telemetry: Arc<Telemetry>,
    background: CancellationToken,
    /// The follower, pruner and metrics upkeep, then the flusher (last, so
    /// that it writes what the others' final moments recorded).
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Replica {
    /// Catches up with the event log (so the replica starts out able to
    /// prove it is current), then starts following it. `follower_store` is
    /// the store the feed reads the log through (its own connection pool).
    /// `shared_limits`: the Redis connection when `[limits] backend =
    /// "redis"` (see `SharedLimits::connect`), else `None`.
    pub async fn start(
        config: Config,
        store: Arc<dyn KeyStore>,
        follower_store: Arc<dyn KeyStore>,
        telemetry: Arc<Telemetry>,
        shared_limits: Option<Arc<SharedLimits>>,
    ) -> Result<Self, StoreError> {
        let cache = Arc::new(KeyCache::new(&config.cache));
        let feed = ChangeFeed::start(
            Arc::clone(&store),
            follower_store,
            Arc::clone(&cache),
            config.feed.clone(),
        )
        .await?;
        let wakeups = store.subscribe_wakeups().await?;
        let (last_use, flusher) = last_use_channel(Arc::clone(&store));
        let authenticator = Arc::new(Authenticator::new(
            AuthenticatorSettings {
                shared_limits: shared_limits.clone(),
                ..authenticator_settings(&config)
            },
            Arc::clone(&cache),
            Arc::clone(&store),
            Arc::clone(feed.freshness()),
            Arc::clone(feed.revision()),
            last_use.clone(),
            Arc::clone(&telemetry),
        ));
        let manager = Arc::new(KeyManager::new(
            management_settings(&config),
            Arc::clone(&store),
            Arc::clone(&cache),
        ));

        let background = CancellationToken::new();
        let stopped = || background.clone().cancelled_owned();
        let tasks = vec![
            tokio::spawn(Arc::clone(&feed).run(wakeups, stopped())),
            tokio::spawn(Arc::clone(&feed).run_pruner(stopped())),
            // The audit trail's own retention, not the event log's.
            tokio::spawn(run_audit_pruner(
                Arc::clone(&store),
                config.audit.clone(),
                stopped(),
            )),
            tokio::spawn(Arc::clone(&telemetry).run_upkeep(stopped())),
            tokio::spawn(Arc::clone(&authenticator).follow_shared_bans(stopped())),
            tokio::spawn(flusher.run(config.last_used_flush_interval, stopped())),
        ];
        Ok(Self {
            config,
            store,
            cache,
            feed,
            last_use,
            authenticator,
            shared_limits,
            manager,
            telemetry,
            background,
            tasks: Mutex::new(tasks),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.authenticator
    }

    pub fn manager(&self) -> &Arc<KeyManager> {
        &self.manager
    }

    pub fn feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    pub fn freshness(&self) -> &Arc<Freshness> {
        self.feed.freshness()
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Another hot path over this replica's cache, store and freshness,
    /// with its own default rate limit and metrics (the benchmark compares
    /// such variants on one warm cache).
    pub fn authenticator_variant(
        &self,
        default_rate_limit: Option<RateLimit>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Authenticator> {
        Arc::new(Authenticator::new(
            AuthenticatorSettings {
                default_rate_limit,
                shared_limits: self.shared_limits.clone(),
                ..authenticator_settings(&self.config)
            },
            Arc::clone(&self.cache),
            Arc::clone(&self.store),
            Arc::clone(self.feed.freshness()),
            Arc::clone(self.feed.revision()),
            self.last_use.clone(),
            telemetry,
        ))
    }

    /// Stops the background work and waits for it; the flusher writes the
    /// last uses still pending before it returns.
    pub async fn stop(&self) {
        self.background.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("not poisoned"));
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Not stopped explicitly (a test that ends early): stop following.
        self.background.cancel();
    }
}

#[async_trait::async_trait]
impl StateSource for Replica {
    async fn sample(&self) -> StateSample {
        let (keys, unknown) = self.cache.sizes();
        let freshness = self.feed.freshness();
        let store = self.feed.store();
        let latest = tokio::time::timeout(DATABASE_PROBE_TIMEOUT, store.latest_seq()).await;
        StateSample {
            key_cache_entries: keys,
            negative_cache_entries: unknown,
            bans: self.authenticator.ban_stats(),
            feed_applied_seq: self.feed.applied_seq(),
            since_catch_up: freshness.age(),
            fresh: freshness.is_fresh(),
            database_latest_seq: latest.ok().and_then(Result::ok),
            pool: store.pool_stats(),
        }
    }
}

/// Prunes the audit trail (`key_audit`) of rows older than
/// `audit.retention_days`, at start and then daily, independently of the
/// change feed's pruning of the event log.
async fn run_audit_pruner(
    store: Arc<dyn KeyStore>,
    settings: crate::audit::AuditSettings,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(crate::audit::PRUNE_INTERVAL);
    let retention_ms = i64::try_from(settings.retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let cutoff = crate::domain::UnixMillis::now().saturating_add_millis(-retention_ms);
        match store.prune_audit(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned old audit rows"),
            Err(error) => tracing::warn!(%error, "could not prune old audit rows"),
        }
    }
}
