//! Persistent state behind one trait, [`KeyStore`], with a SQLite backend
//! (embedded default, one process) and a PostgreSQL backend (several
//! replicas). Both pass the same conformance suite
//! (`tests/api/storage_conformance.rs`).
//!
//! Every write that removes or alters access appends to the event log
//! (`key_events`) in the same transaction; the log is what replicas follow,
//! and an event's sequence is the write's revision (read-your-writes across
//! replicas).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::audit::{Actor, AuditEntry, AuditKind};
use crate::domain::{
    AccountId, KeyDigest, KeyId, KeyName, Quota, QuotaUsage, RateLimit, Refill, UnixMillis,
};

mod database_url;
pub mod postgres;
mod shared;
pub mod sqlite;
mod statements;

pub use database_url::{DatabaseUrl, redact_password};

/// A key about to be inserted.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: KeyId,
    pub account_id: AccountId,
    pub name: KeyName,
    pub digest: KeyDigest,
    pub start: String,
    /// Granted scope names, after preset expansion, in catalog order.
    pub scopes: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    /// Already validated (see `KeyRecord::metadata`).
    pub metadata: Metadata,
    /// Normalised CIDRs (see `KeyRecord::allowed_networks`).
    pub allowed_networks: Vec<String>,
    /// The key this one replaces (RotateKey).
    pub rotated_from: Option<KeyId>,
}

/// How much of its quota a key has used, for [`KeyStore::record_quota_usage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaNote {
    pub id: KeyId,
    pub quota: Quota,
    pub usage: QuotaUsage,
}

/// A key's metadata: validated names to values, in name order.
pub type Metadata = BTreeMap<String, String>;

impl NewKey {
    /// The record this key is once inserted.
    pub(crate) fn into_record(self) -> KeyRecord {
        KeyRecord {
            id: self.id,
            account_id: self.account_id,
            name: self.name.as_str().to_owned(),
            digest: self.digest,
            start: self.start,
            scopes: self.scopes,
            rate_limit: self.rate_limit,
            quota: self.quota,
            quota_usage: QuotaUsage::default(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: None,
            last_used_at: None,
            metadata: self.metadata,
            allowed_networks: self.allowed_networks,
            rotated_from: self.rotated_from,
        }
    }
}

/// A stored key. Holds the digest (needed to find cache entries) but never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub account_id: AccountId,
    pub name: String,
    pub digest: KeyDigest,
    pub start: String,
    pub scopes: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    /// The quota's use as last written (see `KeyStore::record_quota_usage`).
    pub quota_usage: QuotaUsage,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
    /// The owner's labels (stored as a JSON object).
    pub metadata: Metadata,
    /// Normalised CIDRs (`10.0.0.1/32`); empty: any address.
    pub allowed_networks: Vec<String>,
    /// The key this one replaced (RotateKey).
    pub rotated_from: Option<KeyId>,
}

/// A key as a write left it, and the write's revision: the sequence of the
/// last event it logged or, for a write that logged nothing (a creation,
/// revoking a revoked key, an update that changed nothing), the log's latest
/// sequence when the write read the key, which is past every event about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub record: KeyRecord,
    pub revision: u64,
}

/// The new key of a rotation; everything else it inherits from the old key
/// (name, scopes, rate limit, metadata, allowed networks, expiry).
#[derive(Debug, Clone)]
pub struct Successor {
    pub id: KeyId,
    pub digest: KeyDigest,
    pub start: String,
    /// Also the moment of the rotation.
    pub created_at: UnixMillis,
}

/// What a rotation left: the new key, the old key as the rotation left it
/// (expiring or revoked), and the revision (the old key's event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub key: KeyRecord,
    pub previous: KeyRecord,
    pub revision: u64,
}

/// Keys an import inserted, in request order, and the revision (the last
/// `imported` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub keys: Vec<KeyRecord>,
    pub revision: u64,
}

/// What UpdateKey changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    pub name: Option<KeyName>,
    pub scopes: Option<Vec<String>>,
    /// `Some(None)` returns the key to the configured default limit.
    pub rate_limit: Option<Option<RateLimit>>,
    /// `Some(None)` removes the quota; a new quota starts unused.
    pub quota: Option<Option<Quota>>,
    /// Replaces the whole map.
    pub metadata: Option<Metadata>,
    /// Replaces the whole list (normalised CIDRs; empty: any address).
    pub allowed_networks: Option<Vec<String>>,
}

/// What a logged change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Revoked,
    ScopesChanged,
    RateLimitChanged,
    QuotaChanged,
    Renamed,
    MetadataChanged,
    NetworksChanged,
    /// The key now expires at the end of a rotation's grace period.
    Rotated,
    /// The key was imported (its digest may be remembered as unknown).
    Imported,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Revoked => "revoked",
            EventKind::ScopesChanged => "scopes_changed",
            EventKind::RateLimitChanged => "rate_limit_changed",
            EventKind::QuotaChanged => "quota_changed",
            EventKind::Renamed => "renamed",
            EventKind::MetadataChanged => "metadata_changed",
            EventKind::NetworksChanged => "networks_changed",
            EventKind::Rotated => "rotated",
            EventKind::Imported => "imported",
        }
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "revoked" => Ok(EventKind::Revoked),
            "scopes_changed" => Ok(EventKind::ScopesChanged),
            "rate_limit_changed" => Ok(EventKind::RateLimitChanged),
            "quota_changed" => Ok(EventKind::QuotaChanged),
            "renamed" => Ok(EventKind::Renamed),
            "metadata_changed" => Ok(EventKind::MetadataChanged),
            "networks_changed" => Ok(EventKind::NetworksChanged),
            "rotated" => Ok(EventKind::Rotated),
            "imported" => Ok(EventKind::Imported),
            other => Err(format!("unknown event kind {other:?}")),
        }
    }
}

/// A logged change's row in the audit trail.
impl From<EventKind> for AuditKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Revoked => AuditKind::Revoked,
            EventKind::ScopesChanged => AuditKind::ScopesChanged,
            EventKind::RateLimitChanged => AuditKind::RateLimitChanged,
            EventKind::QuotaChanged => AuditKind::QuotaChanged,
            EventKind::Renamed => AuditKind::Renamed,
            EventKind::MetadataChanged => AuditKind::MetadataChanged,
            EventKind::NetworksChanged => AuditKind::NetworksChanged,
            EventKind::Rotated => AuditKind::Rotated,
            EventKind::Imported => AuditKind::Imported,
        }
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    pub seq: u64,
    pub key_id: KeyId,
    pub account_id: AccountId,
    pub digest: KeyDigest,
    pub kind: EventKind,
    pub at: UnixMillis,
}

/// A hint that the event log may have grown. Hints can be lost; followers
/// also poll, so a lost hint costs latency, never correctness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// Something was appended.
    Changed,
    /// The notification channel was lost and re-established; hints may have
    /// been missed in between.
    Resubscribed,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the account already has {limit} active keys")]
    KeyLimitReached { limit: u32 },
    #[error("the key is revoked")]
    KeyRevoked,
    #[error("the key has expired")]
    KeyExpired,
    #[error("the key is already rotated; its successor is {successor}")]
    AlreadyRotated { successor: KeyId },
    /// An imported key's digest is already stored (position in the request).
    #[error("keys[{index}]: a key with this digest already exists")]
    DigestExists { index: usize },
    #[error("account {account} would have more than {limit} active keys")]
    ImportLimitReached { account: AccountId, limit: u32 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Inserts a key unless the account already has `max_active` active keys.
    /// Holds under concurrency: the check and the insert are one transaction
    /// serialized per account. Logs no event (nothing to revoke from any
    /// cache); its revision is the log's latest sequence. Appends a
    /// `created` row to the audit trail, by `actor`.
    async fn create_key(
        &self,
        key: NewKey,
        max_active: u32,
        actor: &Actor,
    ) -> Result<Written, StoreError>;

    /// Revokes a key of `account`, logging a `revoked` event and its audit
    /// row. Revoking a revoked key returns it unchanged and logs nothing.
    async fn revoke_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Written, StoreError>;

    /// Applies `update` to a key of `account`, logging one event (and one
    /// audit row) per changed aspect. Revoked keys cannot be changed
    /// (`KeyRevoked`).
    async fn update_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        update: KeyUpdate,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Written, StoreError>;

    /// A page of an account's audit trail (of one key, if given) with
    /// `seq > after`, oldest first, at most `limit`.
    async fn list_audit(
        &self,
        account: &AccountId,
        key: Option<&KeyId>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes audit rows older than `before`; returns how many went.
    async fn prune_audit(&self, before: UnixMillis) -> Result<u64, StoreError>;

    async fn get_key(&self, account: &AccountId, id: &KeyId) -> Result<KeyRecord, StoreError>;

    /// Replaces a key of `account` with `successor`, which inherits the
    /// rest, in one transaction: the old key then expires at `grace_until`
    /// (or stays earlier; a `rotated` event) or, with `None`, is revoked
    /// (a `revoked` event); the event's sequence is the revision. A revoked
    /// (`KeyRevoked`) or expired (`KeyExpired`) key, or one that already
    /// has a successor (`AlreadyRotated`), is refused with nothing written.
    /// No key-limit check: the new key takes the old one's place (a rotated
    /// key does not count as active). The audit trail gets `rotated` for the
    /// old key and `created` for the new one, by `actor`.
    async fn rotate_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        successor: Successor,
        grace_until: Option<UnixMillis>,
        actor: &Actor,
    ) -> Result<Rotated, StoreError>;

    /// Inserts validated keys all or nothing, logging an `imported` event
    /// for each (other replicas may remember their digests as unknown). A
    /// digest already stored is `DigestExists`; an account that would hold
    /// more than `max_active` active keys is `ImportLimitReached`. Each key
    /// gets an `imported` audit row, by `actor`.
    async fn import_keys(
        &self,
        keys: Vec<NewKey>,
        max_active: u32,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Imported, StoreError>;

    /// Keys of `account` in id (creation) order, after `after` if given.
    async fn list_keys(
        &self,
        account: &AccountId,
        include_revoked: bool,
        after: Option<&KeyId>,
        limit: u32,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// The hot path's only query, on a cache miss.
    async fn find_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, StoreError>;

    async fn find_by_id(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Events with `seq > after`, in order, at most `limit`.
    async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<KeyEvent>, StoreError>;

    /// The highest sequence ever assigned (0 when none).
    async fn latest_seq(&self) -> Result<u64, StoreError>;

    /// Events up to and including this sequence have been pruned.
    async fn pruned_through(&self) -> Result<u64, StoreError>;

    /// Deletes events older than `before`; returns how many went.
    async fn prune_events(&self, before: UnixMillis) -> Result<u64, StoreError>;

    /// Writes a batch of last-use times (never moving one backwards).
    async fn record_last_used(&self, uses: &[(KeyId, UnixMillis)]) -> Result<(), StoreError>;

    /// Writes how much of their quotas keys have used (a batch, by the
    /// last-use flusher). A row moves only forward (a later period, or more
    /// used in the same one), and only while it still has `quota` (a key
    /// whose quota changed meanwhile started afresh).
    async fn record_quota_usage(&self, usage: &[QuotaNote]) -> Result<(), StoreError>;

    /// The connection pool's current use, for metrics (no database call).
    fn pool_stats(&self) -> PoolStats;

    /// Wake-up hints for event-log followers.
    async fn subscribe_wakeups(&self) -> Result<mpsc::Receiver<Wakeup>, StoreError>;
}

/// Opens the store a database URL names and runs its migrations.
pub async fn open(
    database_url: &DatabaseUrl,
    settings: &PoolSettings,
) -> Result<Arc<dyn KeyStore>, StoreError> {
    let url = database_url.expose();
    Ok(match database_url.backend() {
        Backend::Postgres => Arc::new(postgres::PostgresStore::open(url, settings).await?),
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::open(url, settings).await?),
    })
}

/// A second, small pool on the same database for the event-log follower.
/// Cache misses, watch history and management share the main pool; load
/// there (even a flood of unknown keys) must never starve the follower of
/// the reads that prove this replica is current, or the replica would fail
/// closed for everyone. An in-memory SQLite database exists once per
/// connection, so it shares the main store.
pub async fn open_follower(
    database_url: &DatabaseUrl,
    main: &Arc<dyn KeyStore>,
) -> Result<Arc<dyn KeyStore>, StoreError> {
    let settings = PoolSettings {
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(2),
        ..PoolSettings::default()
    };
    let url = database_url.expose();
    Ok(match database_url.backend() {
        Backend::Postgres => Arc::new(postgres::PostgresStore::connect(url, &settings).await?),
        Backend::Sqlite if database_url.is_in_memory() => Arc::clone(main),
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::connect(url, &settings).await?),
    })
}

/// A connection pool's use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (idle or in use).
    pub size: u32,
    pub idle: u32,
    pub max_connections: u32,
}

impl PoolStats {
    fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> Self {
        Self {
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max_connections: pool.options().get_max_connections(),
        }
    }
}

/// Connection pool sizing, and (PostgreSQL) limits on how long one session
/// can hold up others.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: std::time::Duration,
    /// PostgreSQL `lock_timeout`: a statement waiting longer than this for
    /// a lock (a key row, the event log's ordering lock) fails instead.
    pub lock_timeout: std::time::Duration,
    /// PostgreSQL `idle_in_transaction_session_timeout`: a session that sits
    /// inside a transaction without sending anything for this long (a
    /// stalled or partitioned replica) is ended by the server, releasing its
    /// locks, the ordering lock among them.
    pub idle_in_transaction_timeout: std::time::Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: std::time::Duration::from_secs(3),
            lock_timeout: std::time::Duration::from_secs(10),
            idle_in_transaction_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// A key row as both backends return it (same column names and types; the
/// column list is `statements::key_columns!`).
#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    account_id: String,
    name: String,
    key_hash: Vec<u8>,
    start: String,
    scopes: String,
    rate_limit_requests: Option<i64>,
    rate_limit_per_seconds: Option<i64>,
    quota_requests: Option<i64>,
    quota_refill: Option<String>,
    quota_period: i64,
    quota_used: i64,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    metadata: String,
    allowed_networks: String,
    rotated_from: Option<String>,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of key {}", row.id));
        let rate_limit = match (row.rate_limit_requests, row.rate_limit_per_seconds) {
            (Some(requests), Some(per_seconds)) => Some(
                u32::try_from(requests)
                    .ok()
                    .zip(u32::try_from(per_seconds).ok())
                    .and_then(|(r, p)| RateLimit::new(r, p).ok())
                    .ok_or_else(|| corrupt("rate limit"))?,
            ),
            (None, None) => None,
            _ => return Err(corrupt("rate limit")),
        };
        let quota = match (row.quota_requests, row.quota_refill.as_deref()) {
            (Some(requests), Some(refill)) => Some(
                u64::try_from(requests)
                    .ok()
                    .zip(Refill::parse(refill))
                    .and_then(|(r, f)| Quota::new(r, f).ok())
                    .ok_or_else(|| corrupt("quota"))?,
            ),
            (None, None) => None,
            _ => return Err(corrupt("quota")),
        };
        let quota_usage = QuotaUsage {
            period: to_u64(row.quota_period),
            used: to_u64(row.quota_used),
        };
        let id = KeyId::parse(&row.id).map_err(|_| corrupt("id"))?;
        let account_id = AccountId::parse(&row.account_id).map_err(|_| corrupt("account id"))?;
        let digest = KeyDigest::from_bytes(&row.key_hash).ok_or_else(|| corrupt("hash"))?;
        let metadata: Metadata =
            serde_json::from_str(&row.metadata).map_err(|_| corrupt("metadata"))?;
        let rotated_from = row
            .rotated_from
            .as_deref()
            .map(KeyId::parse)
            .transpose()
            .map_err(|_| corrupt("rotated_from"))?;
        Ok(KeyRecord {
            id,
            account_id,
            digest,
            scopes: split_scopes(&row.scopes),
            name: row.name,
            start: row.start,
            rate_limit,
            quota,
            quota_usage,
            created_at: UnixMillis(row.created_at),
            expires_at: row.expires_at.map(UnixMillis),
            revoked_at: row.revoked_at.map(UnixMillis),
            last_used_at: row.last_used_at.map(UnixMillis),
            metadata,
            allowed_networks: split_scopes(&row.allowed_networks),
            rotated_from,
        })
    }
}

/// Metadata is stored as a JSON object.
fn metadata_column(metadata: &Metadata) -> String {
    serde_json::to_string(metadata).expect("a map of strings serializes")
}

/// Scopes (and allowed networks) are stored as one space-separated column
/// (neither scope names nor CIDRs hold spaces).
fn join_scopes(scopes: &[String]) -> String {
    scopes.join(" ")
}

fn split_scopes(column: &str) -> Vec<String> {
    column.split_whitespace().map(str::to_owned).collect()
}

/// An event row as both backends return it (columns:
/// `statements::event_columns!`).
#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    key_id: String,
    account_id: String,
    key_hash: Vec<u8>,
    kind: String,
    at: i64,
}

impl TryFrom<EventRow> for KeyEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of event {}", row.seq));
        Ok(KeyEvent {
            seq: u64::try_from(row.seq).map_err(|_| corrupt("sequence"))?,
            key_id: KeyId::parse(&row.key_id).map_err(|_| corrupt("key id"))?,
            account_id: AccountId::parse(&row.account_id).map_err(|_| corrupt("account id"))?,
            digest: KeyDigest::from_bytes(&row.key_hash).ok_or_else(|| corrupt("hash"))?,
            kind: row.kind.parse().map_err(|_| corrupt("kind"))?,
            at: UnixMillis(row.at),
        })
    }
}

/// The events an update produces, in a fixed order.
fn events_for_update(update: &KeyUpdate, before: &KeyRecord) -> Vec<EventKind> {
    let mut kinds = Vec::new();
    if update.scopes.as_ref().is_some_and(|s| *s != before.scopes) {
        kinds.push(EventKind::ScopesChanged);
    }
    if update.rate_limit.is_some_and(|r| r != before.rate_limit) {
        kinds.push(EventKind::RateLimitChanged);
    }
    if update.quota.is_some_and(|q| q != before.quota) {
        kinds.push(EventKind::QuotaChanged);
    }
    if update
        .name
        .as_ref()
        .is_some_and(|n| n.as_str() != before.name)
    {
        kinds.push(EventKind::Renamed);
    }
    if update
        .metadata
        .as_ref()
        .is_some_and(|m| *m != before.metadata)
    {
        kinds.push(EventKind::MetadataChanged);
    }
    if update
        .allowed_networks
        .as_ref()
        .is_some_and(|n| *n != before.allowed_networks)
    {
        kinds.push(EventKind::NetworksChanged);
    }
    kinds
}

/// Applies an update to a record in memory (what the row becomes).
fn apply_update(mut record: KeyRecord, update: KeyUpdate) -> KeyRecord {
    if let Some(name) = update.name {
        record.name = name.as_str().to_owned();
    }
    if let Some(scopes) = update.scopes {
        record.scopes = scopes;
    }
    if let Some(rate_limit) = update.rate_limit {
        record.rate_limit = rate_limit;
    }
    // A changed quota starts unused (the same quota keeps its use).
    if let Some(quota) = update.quota
        && quota != record.quota
    {
        record.quota = quota;
        record.quota_usage = QuotaUsage::default();
    }
    if let Some(metadata) = update.metadata {
        record.metadata = metadata;
    }
    if let Some(networks) = update.allowed_networks {
        record.allowed_networks = networks;
    }
    record
}

fn rate_limit_columns(rate_limit: Option<RateLimit>) -> (Option<i64>, Option<i64>) {
    match rate_limit {
        Some(limit) => (
            Some(i64::from(limit.requests())),
            Some(i64::from(limit.per_seconds())),
        ),
        None => (None, None),
    }
}

fn quota_columns(quota: Option<Quota>) -> (Option<i64>, Option<&'static str>) {
    match quota {
        Some(quota) => (
            Some(i64::try_from(quota.requests()).unwrap_or(i64::MAX)),
            Some(quota.refill().as_str()),
        ),
        None => (None, None),
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// An audit row as both backends return it (see `statements::AUDIT_PAGE`).
#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    key_id: String,
    account_id: String,
    kind: String,
    at: i64,
    actor: String,
    peer: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of audit row {}", row.seq));
        Ok(AuditEntry {
            seq: u64::try_from(row.seq).map_err(|_| corrupt("sequence"))?,
            key_id: KeyId::parse(&row.key_id).map_err(|_| corrupt("key id"))?,
            account_id: AccountId::parse(&row.account_id).map_err(|_| corrupt("account id"))?,
            kind: row.kind,
            at: UnixMillis(row.at),
            actor: row.actor,
            peer: row.peer,
        })
    }
}
