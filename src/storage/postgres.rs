//! The PostgreSQL backend, for several replicas sharing one database.
//! CreateKey serializes per account by locking the account's row; the event
//! log's trigger (see the migration) keeps sequence order equal to commit
//! order and sends a NOTIFY that followers receive through `PgListener`.
//!
//! Statements the backends share are in `statements.rs`; what is spelled out
//! here is what PostgreSQL does differently: row locks, the one-statement
//! revoke, GREATEST, the batched last-use update, session limits and the
//! listener.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};
use tokio::sync::mpsc;

use super::shared::{
    append_audit_fn, append_event_fn, delete_events_before, furthest_quota_usage, impl_key_store,
    import_locked_keys, insert_key_within_limit, rotate_locked_key, update_locked_key,
};
use super::statements::{INSERT_ACCOUNT, KEY_IN_ACCOUNT, key_columns, key_in_account};
use super::{
    EventKind, Imported, KeyRecord, KeyRow, KeyUpdate, NewKey, PoolSettings, Rotated, StoreError,
    Successor, Wakeup, Written, to_u64,
};
use crate::audit::{Actor, AuditKind};
use crate::domain::{AccountId, KeyId, UnixMillis};
use crate::storage::Backend;

/// The NOTIFY channel the event-log trigger signals.
pub const EVENTS_CHANNEL: &str = "keyward_key_events";
/// `application_name` of keyward's sessions, unless the database URL names
/// another (`?application_name=...`, to tell replicas apart).
pub const APPLICATION_NAME: &str = "keyward";
/// Appended to the application name for the listener connection, so
/// operators (and tests) can find it in `pg_stat_activity`.
pub const LISTENER_SUFFIX: &str = "-listener";

pub struct PostgresStore {
    pool: PgPool,
    options: PgConnectOptions,
}

impl PostgresStore {
    /// Connects and runs the migrations.
    pub async fn open(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        // On a connection of its own, without the session limits below: a
        // replica waiting for another one's migration must not give up.
        // sqlx takes an advisory lock here, so replicas starting together
        // migrate once.
        let mut conn = PgConnection::connect_with(&Self::connect_options(url)?).await?;
        sqlx::migrate!("migrations/postgres").run(&mut conn).await?;
        conn.close().await?;
        Self::connect(url, settings).await
    }

    fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        Ok(match options.get_application_name() {
            Some(_) => options,
            None => options.application_name(APPLICATION_NAME),
        })
    }

    /// Connects to a database whose schema is already in place. Every
    /// session gets `lock_timeout` and `idle_in_transaction_session_timeout`
    /// (see `PoolSettings`): writers of the event log commit one at a time
    /// under one lock, so without them a replica that stalls inside a write
    /// would stop every replica's writes until TCP gives up, for minutes.
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        let options = Self::connect_options(url)?;
        let limits: Arc<str> = format!(
            "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
            settings.lock_timeout.as_millis().max(1),
            settings.idle_in_transaction_timeout.as_millis().max(1),
        )
        .into();
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _| {
                let limits = Arc::clone(&limits);
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(&*limits)).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        Ok(Self { pool, options })
    }

    async fn key_in_account(
        conn: &mut sqlx::PgConnection,
        account: &AccountId,
        id: &KeyId,
        lock: bool,
    ) -> Result<KeyRecord, StoreError> {
        // A writer locks the key's row until it commits. (SQLite needs no
        // row lock: its writers hold the one database write lock.)
        let query = if lock {
            concat!(key_in_account!(), " FOR UPDATE")
        } else {
            KEY_IN_ACCOUNT
        };
        let row: Option<KeyRow> = sqlx::query_as(query)
            .bind(id.as_str())
            .bind(account.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        row.ok_or(StoreError::NotFound)?.try_into()
    }

    append_event_fn!(sqlx::PgConnection);
    append_audit_fn!(sqlx::PgConnection);
}

/// The highest sequence ever assigned (events may have been pruned since),
/// as `conn` sees the log.
async fn latest_seq_in(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let seq: i64 = sqlx::query_scalar(
        "SELECT GREATEST(COALESCE((SELECT MAX(seq) FROM key_events), 0), \
         (SELECT pruned_through FROM feed_state WHERE id = 1))",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(to_u64(seq))
}

/// The one-statement revoke's row: the key and its event's sequence.
#[derive(sqlx::FromRow)]
struct RevokedRow {
    #[sqlx(flatten)]
    key: KeyRow,
    revision: i64,
}

impl_key_store!(PostgresStore, {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn create_key(
        &self,
        key: NewKey,
        max_active: u32,
        actor: &Actor,
    ) -> Result<Written, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(INSERT_ACCOUNT)
            .bind(key.account_id.as_str())
            .execute(&mut *tx)
            .await?;
        // Concurrent creates for one account queue here, so the count below
        // cannot be overtaken. (On SQLite, `BEGIN IMMEDIATE` already holds
        // the one write lock.)
        sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
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
        // One autocommit statement: the event log's ordering lock (taken by
        // the insert's trigger) is then held only inside the server, from
        // the insert to the commit, never across a round trip to this
        // process. Only a live key matches, so revoking twice logs once.
        let revoked: Option<RevokedRow> = sqlx::query_as(concat!(
            "WITH revoked AS (UPDATE api_keys SET revoked_at = $1 \
             WHERE id = $2 AND account_id = $3 AND revoked_at IS NULL RETURNING ",
            key_columns!(),
            "), logged AS (INSERT INTO key_events (key_id, account_id, key_hash, kind, at) \
             SELECT id, account_id, key_hash, $4, $1 FROM revoked RETURNING seq), \
             audited AS (INSERT INTO key_audit (key_id, account_id, kind, at, actor, peer) \
             SELECT id, account_id, $4, $1, $5, $6 FROM revoked) \
             SELECT ",
            key_columns!(),
            ", (SELECT seq FROM logged) AS revision FROM revoked"
        ))
        .bind(now.0)
        .bind(id.as_str())
        .bind(account.as_str())
        .bind(EventKind::Revoked.as_str())
        .bind(&actor.actor)
        .bind(&actor.peer)
        .fetch_optional(&self.pool)
        .await?;
        match revoked {
            Some(RevokedRow { key, revision }) => Ok(Written {
                record: key.try_into()?,
                revision: to_u64(revision),
            }),
            // Already revoked (returned unchanged), or not this account's
            // key. The latest sequence, read after the key, is past its
            // revocation.
            None => {
                let record = self.get_key(account, id).await?;
                let revision = self.latest_seq().await?;
                Ok(Written { record, revision })
            }
        }
    }

    async fn update_key(
        &self,
        account: &AccountId,
        id: &KeyId,
        update: KeyUpdate,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Written, StoreError> {
        let mut tx = self.pool.begin().await?;
        let before = Self::key_in_account(&mut tx, account, id, true).await?;
        let (record, revision) = update_locked_key!(self, tx, before, id, update, now, actor);
        tx.commit().await?;
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
        let mut tx = self.pool.begin().await?;
        // The account's lock first, as CreateKey takes it (its count sees
        // the old key and its successor change places at once), then the
        // old key's row: a second rotation of the key waits here and then
        // finds the first one's successor.
        sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(account.as_str())
            .execute(&mut *tx)
            .await?;
        let old = Self::key_in_account(&mut tx, account, id, true).await?;
        let rotated = rotate_locked_key!(tx, old, successor, grace_until, actor);
        tx.commit().await?;
        Ok(rotated)
    }

    async fn import_keys(
        &self,
        keys: Vec<NewKey>,
        max_active: u32,
        now: UnixMillis,
        actor: &Actor,
    ) -> Result<Imported, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Every account's lock, in one order (so concurrent imports cannot
        // deadlock), as CreateKey takes one: the counts below hold.
        let accounts: std::collections::BTreeSet<&AccountId> =
            keys.iter().map(|key| &key.account_id).collect();
        for account in accounts {
            sqlx::query(INSERT_ACCOUNT)
                .bind(account.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(account.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let imported = import_locked_keys!(tx, keys, max_active, now, actor);
        tx.commit().await?;
        Ok(imported)
    }

    async fn get_key(&self, account: &AccountId, id: &KeyId) -> Result<KeyRecord, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::key_in_account(&mut conn, account, id, false).await
    }

    async fn latest_seq(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        latest_seq_in(&mut conn).await
    }

    async fn prune_events(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Only one pruner at a time (replicas each run one).
        sqlx::query("SELECT pruned_through FROM feed_state WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        let (through, deleted) = delete_events_before!(tx, before);
        sqlx::query(
            "UPDATE feed_state SET pruned_through = GREATEST(pruned_through, $1) WHERE id = 1",
        )
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
        let ids: Vec<&str> = uses.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<i64> = uses.iter().map(|(_, at)| at.0).collect();
        // One statement for the whole batch; a key listed twice counts its
        // latest time (UPDATE ... FROM would pick one row of the two).
        sqlx::query(
            "UPDATE api_keys AS k SET last_used_at = u.at \
             FROM (SELECT id, MAX(at) AS at FROM UNNEST($1::text[], $2::bigint[]) AS u(id, at) \
                   GROUP BY id) AS u \
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_quota_usage(&self, usage: &[super::QuotaNote]) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        // One statement for the batch, as for last-use times.
        let rows = furthest_quota_usage(usage);
        let ids: Vec<&str> = rows.iter().map(|row| row.id).collect();
        let requests: Vec<i64> = rows.iter().map(|row| row.requests).collect();
        let refills: Vec<&str> = rows.iter().map(|row| row.refill).collect();
        let periods: Vec<i64> = rows.iter().map(|row| row.period).collect();
        let used: Vec<i64> = rows.iter().map(|row| row.used).collect();
        sqlx::query(
            "UPDATE api_keys AS k SET quota_period = u.period, quota_used = u.used \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[]) \
                  AS u(id, requests, refill, period, used) \
             WHERE k.id = u.id AND k.quota_requests = u.requests AND k.quota_refill = u.refill \
             AND (k.quota_period < u.period OR (k.quota_period = u.period AND k.quota_used < u.used))",
        )
        .bind(ids)
        .bind(requests)
        .bind(refills)
        .bind(periods)
        .bind(used)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn subscribe_wakeups(&self) -> Result<mpsc::Receiver<Wakeup>, StoreError> {
        let name = format!(
            "{}{LISTENER_SUFFIX}",
            self.options
                .get_application_name()
                .unwrap_or(APPLICATION_NAME)
        );
        // Two: a dropped listener hands its connection back in the
        // background, and a half-dead one must not block its replacement.
        let listener_pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(self.options.clone().application_name(&name));
        let listener = listen(&listener_pool).await?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(forward_notifications(listener_pool, listener, tx));
        Ok(rx)
    }
});

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(EVENTS_CHANNEL).await?;
    Ok(listener)
}

/// Turns notifications into wake-ups until the follower goes away. When the
/// connection drops, the listener is re-established (`PgListener` does it by
/// itself for a clean loss; after an error a new one is made, with backoff),
/// and only then is the follower told `Resubscribed`: its replay from the
/// last applied sequence then starts after the new LISTEN, so no change
/// falls between the two. Notifications sent while disconnected are lost;
/// that replay (and the poll interval) covers them.
async fn forward_notifications(
    pool: PgPool,
    mut listener: PgListener,
    wakeups: mpsc::Sender<Wakeup>,
) {
    loop {
        let next = tokio::select! {
            next = listener.try_recv() => next,
            () = wakeups.closed() => return,
        };
        let wakeup = match next {
            Ok(Some(_)) => Wakeup::Changed,
            // Lost and already listening again (PgListener reconnects eagerly).
            Ok(None) => {
                tracing::warn!("event listener connection lost; reconnected");
                Wakeup::Resubscribed
            }
            Err(error) => {
                tracing::warn!(%error, "event listener failed; reconnecting");
                drop(listener);
                match relisten(&pool, &wakeups).await {
                    Some(again) => listener = again,
                    None => return,
                }
                tracing::info!("event listener reconnected");
                Wakeup::Resubscribed
            }
        };
        match wakeups.try_send(wakeup) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// A new listener, retried with backoff; `None` once the follower is gone.
async fn relisten(pool: &PgPool, wakeups: &mpsc::Sender<Wakeup>) -> Option<PgListener> {
    let mut backoff = Duration::from_millis(50);
    loop {
        tokio::select! {
            attempt = listen(pool) => match attempt {
                Ok(listener) => return Some(listener),
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "event listener cannot reconnect; retrying");
                }
            },
            () = wakeups.closed() => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = wakeups.closed() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
