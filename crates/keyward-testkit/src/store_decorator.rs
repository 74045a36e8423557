//! The real store (SQLite or PostgreSQL) behind one decorator, for the tests
//! that must see or steer what the hot path and the revocation feed ask of
//! it: each test supplies only the hooks it needs, every other call passes
//! straight through. Also the hot path and key management of one replica
//! built in this process over such a store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyward::audit::{Actor, AuditEntry};
use keyward::authenticator::Authenticator;
use keyward::change_feed::{AppliedRevision, Freshness};
use keyward::config::Config;
use keyward::domain::{AccountId, KeyDigest, KeyId, UnixMillis};
use keyward::key_cache::KeyCache;
use keyward::key_management::KeyManager;
use keyward::last_use::{LastUseFlusher, last_use_channel};
use keyward::replica;
use keyward::storage::{
    Backend, Imported, KeyEvent, KeyRecord, KeyStore, KeyUpdate, NewKey, PoolStats, Rotated,
    StoreError, Successor, Wakeup, Written,
};
use keyward::telemetry::Telemetry;
use tokio::sync::mpsc;

/// Which store call is about to be made, as `StoreHooks::before` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    FindByDigest,
    FindById,
    /// Writing the last uses of `rows` keys.
    RecordLastUsed {
        rows: usize,
    },
    /// Any other call that reaches the database.
    Other,
}

/// What a test does around the real store's calls; every hook defaults to
/// doing nothing.
#[async_trait]
pub trait StoreHooks: Send + Sync + 'static {
    /// Before every call that reaches the database (`backend` and
    /// `pool_stats` do not).
    fn before(&self, _call: Call) {}

    /// After a key read (by digest or by id) has read its row, before the
    /// row is returned to the caller.
    async fn after_key_read(&self) {}

    /// A history read; by default the real one.
    async fn events_after(
        &self,
        store: &dyn KeyStore,
        after: u64,
        limit: u32,
    ) -> Result<Vec<KeyEvent>, StoreError> {
        store.events_after(after, limit).await
    }
}

/// The real store with a test's hooks around it.
pub struct Decorated<H> {
    inner: Arc<dyn KeyStore>,
    pub hooks: H,
}

impl<H: StoreHooks> Decorated<H> {
    pub fn new(inner: Arc<dyn KeyStore>, hooks: H) -> Arc<Self> {
        Arc::new(Self { inner, hooks })
    }
}

#[async_trait]
impl<H: StoreHooks> KeyStore for Decorated<H> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    async fn create_key(
        &self,
        key: NewKey,
        max_active: u32,
        actor: &Actor,
    ) -> Result<Written, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.create_key(key, max_active, actor).await
    }
    async fn revoke_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Written, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.revoke_key(account, id, now, actor).await
    }
    async fn update_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        update: KeyUpdate,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Written, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.update_key(account, id, update, now, actor).await
    }
    async fn list_audit(
        &self,
        account: &AccountId,
        key: Option<&KeyId>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.list_audit(account, key, after, limit).await
    }
    async fn prune_audit(&self, before: UnixMillis) -> Result<u64, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.prune_audit(before).await
    }
    async fn rotate_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        successor: Successor,
        grace_until: Option<UnixMillis>,
        actor: &Actor,
    ) -> Result<Rotated, StoreError> {
        self.hooks.before(Call::Other);
        self.inner
            .rotate_key(account, id, successor, grace_until, actor)
            .await
    }
    async fn import_keys(
        &self,
        keys: Vec<NewKey>,
        max_active: u32,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Imported, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.import_keys(keys, max_active, now, actor).await
    }
    async fn get_key(&self, account: &AccountId, id: &KeyId) -> Result<KeyRecord, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.get_key(account, id).await
    }
    async fn list_keys(
        &self,
        account: &AccountId,
        include_revoked: bool,
        after: Option<&KeyId>,
        limit: u32,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.hooks.before(Call::Other);
        self.inner
            .list_keys(account, include_revoked, after, limit)
            .await
    }
    async fn find_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, StoreError> {
        self.hooks.before(Call::FindByDigest);
        let row = self.inner.find_by_digest(digest).await;
        self.hooks.after_key_read().await;
        row
    }
    async fn find_by_id(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.hooks.before(Call::FindById);
        let row = self.inner.find_by_id(id).await;
        self.hooks.after_key_read().await;
        row
    }
    async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<KeyEvent>, StoreError> {
        self.hooks.before(Call::Other);
        self.hooks
            .events_after(self.inner.as_ref(), after, limit)
            .await
    }
    async fn latest_seq(&self) -> Result<u64, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.latest_seq().await
    }
    async fn pruned_through(&self) -> Result<u64, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.pruned_through().await
    }
    async fn prune_events(&self, before: UnixMillis) -> Result<u64, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.prune_events(before).await
    }
    async fn record_last_used(&self, uses: &[(KeyId, UnixMillis)]) -> Result<(), StoreError> {
        self.hooks.before(Call::RecordLastUsed { rows: uses.len() });
        self.inner.record_last_used(uses).await
    }
    async fn record_quota_usage(
        &self,
        usage: &[keyward::storage::QuotaNote],
    ) -> Result<(), StoreError> {
        self.hooks.before(Call::Other);
        self.inner.record_quota_usage(usage).await
    }
    fn pool_stats(&self) -> PoolStats {
        self.inner.pool_stats()
    }
    async fn subscribe_wakeups(&self) -> Result<mpsc::Receiver<Wakeup>, StoreError> {
        self.hooks.before(Call::Other);
        self.inner.subscribe_wakeups().await
    }
}

/// The hot path and key management of one replica, in this process.
pub struct InProcess {
    pub authenticator: Authenticator,
    pub manager: KeyManager,
    /// Writes the recorded last uses when flushed; dropping it drops them.
    pub flusher: LastUseFlusher,
}

/// One replica over `store` (typically a `Decorated` real store) and
/// `cache`, with the default config (no rate limits).
pub fn in_process(
    store: Arc<dyn KeyStore>,
    cache: Arc<KeyCache>,
    freshness: Arc<Freshness>,
) -> InProcess {
    in_process_with(&Config::default(), store, cache, freshness)
}

/// [`in_process`] with `config` (its key format, catalog, bans...).
pub fn in_process_with(
    config: &Config,
    store: Arc<dyn KeyStore>,
    cache: Arc<KeyCache>,
    freshness: Arc<Freshness>,
) -> InProcess {
    let (usage, flusher) = last_use_channel(Arc::clone(&store));
    let authenticator = Authenticator::new(
        replica::authenticator_settings(config),
        Arc::clone(&cache),
        Arc::clone(&store),
        freshness,
        // No follower here: a request with a min_revision waits and fails.
        Arc::new(AppliedRevision::new(0, Duration::from_millis(100))),
        usage,
        Arc::new(Telemetry::disabled()),
    );
    let manager = KeyManager::new(replica::management_settings(config), store, cache);
    InProcess {
        authenticator,
        manager,
        flusher,
    }
}
