//! The SQLite backend: the embedded default for a single process. Writes run
//! in `BEGIN IMMEDIATE` transactions, so SQLite's one writer lock serializes
//! them (which also keeps event sequence order equal to commit order). Wake-up
//! hints go to followers in this process only.
//!
//! Statements the backends share are in `statements.rs`; what is spelled out
//! here is what SQLite does differently, each with the reason.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::mpsc;

use super::shared::{
    append_audit_fn, append_event_fn, delete_events_before, furthest_quota_usage, impl_key_store,
    import_locked_keys, insert_key_within_limit, rotate_locked_key, update_locked_key,
};
use super::statements::{INSERT_ACCOUNT, KEY_IN_ACCOUNT};
use super::{
    EventKind, Imported, KeyRecord, KeyRow, KeyUpdate, NewKey, PoolSettings, Rotated, StoreError,
    Successor, Wakeup, Written, to_u64,
};
use crate::audit::{Actor, AuditKind};
use crate::domain::{AccountId, KeyId, UnixMillis};
use crate::storage::Backend;

pub struct SqliteStore {
    pool: SqlitePool,
    subscribers: Mutex<Vec<mpsc::Sender<Wakeup>>>,
}

impl SqliteStore {
    /// Connects and runs the migrations.
    pub async fn open(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let store = Self::connect(url, settings).await?;
        sqlx::migrate!("migrations/sqlite").run(&store.pool).await?;
        Ok(store)
    }

    /// Connects to a database whose schema is already in place.
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // An in-memory database exists per connection, so it gets exactly one.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory {
                1
            } else {
                settings.max_connections
            })
            .min_connections(u32::from(in_memory))
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(None)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            subscribers: Mutex::new(Vec::new()),
        })
    }

    fn wake_followers(&self) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        // A full channel already holds a pending wake-up; a closed one is gone.
        subscribers.retain(|tx| {
            !matches!(
                tx.try_send(Wakeup::Changed),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }

    async fn key_in_account(
        tx: &mut sqlx::SqliteConnection,
        account: &AccountId,
        id: &KeyId,
    ) -> Result<KeyRecord, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(KEY_IN_ACCOUNT)
            .bind(id.as_str())
            .bind(account.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    append_event_fn!(sqlx::SqliteConnection);
    append_audit_fn!(sqlx::SqliteConnection);
}

/// The highest sequence ever assigned (events may have been pruned since),
/// as `conn` sees the log.
async fn latest_seq_in(conn: &mut sqlx::SqliteConnection) -> Result<u64, StoreError> {
    // SQLite has no GREATEST; its MAX with two arguments is the same.
    let seq: i64 = sqlx::query_scalar(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM key_events), 0), \
         (SELECT pruned_through FROM feed_state WHERE id = 1))",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(to_u64(seq))
}

impl_key_store!(SqliteStore, {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn create_key(
        &self,
        key: NewKey,
        max_active: u32,
        actor: &Actor,
    ) -> Result<Written, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(INSERT_ACCOUNT)
            .bind(key.account_id.as_str())
            .execute(&mut *tx)
            .await?;
        insert_key_within_limit!(tx, key, max_active);
        let record = key.into_record();
        Self::append_audit(
            &mut tx,
            &record,
            AuditKind::Created,
            record.created_at,
            actor,
        )
        .await?;
        let revision = latest_seq_in(&mut tx).await?;
        tx.commit().await?;
        Ok(Written { record, revision })
    }

    async fn revoke_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Written, StoreError> {
        // Read, then write, under the write lock: SQLite has no
        // data-modifying CTE for PostgreSQL's one-statement revoke.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut record = Self::key_in_account(&mut tx, account, id).await?;
        if record.revoked_at.is_some() {
            drop(tx);
            // Read after the key, so past its revocation.
            let revision = self.latest_seq().await?;
            return Ok(Written { record, revision });
        }
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
            .bind(now.0)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let revision = Self::append_event(&mut tx, &record, EventKind::Revoked, now).await?;
        Self::append_audit(&mut tx, &record, AuditKind::Revoked, now, actor).await?;
        tx.commit().await?;
        self.wake_followers();
        record.revoked_at = Some(now);
        Ok(Written { record, revision })
    }

    async fn update_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        update: KeyUpdate,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Written, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let before = Self::key_in_account(&mut tx, account, id).await?;
        let (record, revision) = update_locked_key!(self, tx, before, id, update, now, actor);
        tx.commit().await?;
        self.wake_followers();
        Ok(Written { record, revision })
    }

    async fn rotate_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        successor: Successor,
        grace_until: Option<UnixMillis>,
        actor: &Actor,
    ) -> Result<Rotated, StoreError> {
        // `BEGIN IMMEDIATE` holds the one write lock: nothing changes the
        // key, its successors or the account's count meanwhile.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let old = Self::key_in_account(&mut tx, account, id).await?;
        let rotated = rotate_locked_key!(tx, old, successor, grace_until, actor);
        tx.commit().await?;
        self.wake_followers();
        Ok(rotated)
    }

    async fn import_keys(
        &self,
        keys: Vec<NewKey>,
        max_active: u32,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Imported, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let accounts: std::collections::BTreeSet<&AccountId> =
            keys.iter().map(|key| &key.account_id).collect();
        for account in accounts {
            sqlx::query(INSERT_ACCOUNT)
                .bind(account.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let imported = import_locked_keys!(tx, keys, max_active, now, actor);
        tx.commit().await?;
        self.wake_followers();
        Ok(imported)
    }

    async fn get_key(&self, account: &AccountId, id: &KeyId) -> Result<KeyRecord, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::key_in_account(&mut conn, account, id).await
    }

    async fn latest_seq(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        latest_seq_in(&mut conn).await
    }

    async fn prune_events(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Prune a prefix of the log: everything up to the last event older
        // than the cutoff.
        let (through, deleted) = delete_events_before!(tx, before);
        // MAX for PostgreSQL's GREATEST, as in `latest_seq`.
        sqlx::query("UPDATE feed_state SET pruned_through = MAX(pruned_through, $1) WHERE id = 1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn record_last_used(&self, uses: &[(KeyId, UnixMillis)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // One statement for the batch: SQLite has no arrays to UNNEST, so
        // the uses go in as one JSON object of id to time (a key listed
        // twice keeps its latest time, as on PostgreSQL). A statement per
        // key cost a round trip to sqlx's SQLite thread each: flushing
        // 30,000 keys kept most of a core busy, taken from the hot path on
        // a small machine (BENCHMARKS.md).
        let mut latest = serde_json::Map::new();
        for (id, at) in uses {
            let slot = latest
                .entry(id.as_str())
                .or_insert(serde_json::Value::from(at.0));
            if slot.as_i64() < Some(at.0) {
                *slot = serde_json::Value::from(at.0);
            }
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE api_keys SET last_used_at = u.value \
             FROM json_each($1) AS u \
             WHERE api_keys.id = u.key \
             AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < u.value)",
        )
        .bind(serde_json::Value::Object(latest).to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_quota_usage(&self, usage: &[super::QuotaNote]) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        // One statement for the batch, as for last-use times: a JSON array
        // of [id, requests, refill, period, used], one per key and quota.
        let rows: Vec<serde_json::Value> = furthest_quota_usage(usage)
            .into_iter()
            .map(|row| serde_json::json!([row.id, row.requests, row.refill, row.period, row.used]))
            .collect();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE api_keys SET quota_period = u.period, quota_used = u.used \
             FROM (SELECT json_extract(value, '$[0]') AS id, \
                          json_extract(value, '$[1]') AS requests, \
                          json_extract(value, '$[2]') AS refill, \
                          json_extract(value, '$[3]') AS period, \
                          json_extract(value, '$[4]') AS used \
                   FROM json_each($1)) AS u \
             WHERE api_keys.id = u.id \
             AND api_keys.quota_requests = u.requests AND api_keys.quota_refill = u.refill \
             AND (api_keys.quota_period < u.period \
                  OR (api_keys.quota_period = u.period AND api_keys.quota_used < u.used))",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn subscribe_wakeups(&self) -> Result<mpsc::Receiver<Wakeup>, StoreError> {
        let (tx, rx) = mpsc::channel(1);
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        Ok(rx)
    }
});
