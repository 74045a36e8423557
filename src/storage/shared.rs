//! What both backends run alike: the `KeyStore` methods with the same
//! statement (`statements.rs`), binds and row conversion on the backend's
//! own pool, and the counted insert of a new key inside a backend's own
//! transaction. A backend's `impl KeyStore` is written through
//! [`impl_key_store!`], which adds these to the methods it passes (those
//! whose SQL, locking or notification differ), so each shared method is
//! written once. (A function generic over `sqlx::Database` would need a
//! dozen trait bounds repeated on every function; the macro expands to the
//! same concrete code each backend had.)

/// `impl KeyStore for $store` (a type with a `pool` field) with the shared
/// methods below plus the backend's own `$($own)*`.
macro_rules! impl_key_store {
    ($store:ty, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::storage::KeyStore for $store {
            $($own)*

            async fn list_keys(
                &self,
                account: &$crate::domain::AccountId,
                include_revoked: bool,
                after: Option<&$crate::domain::KeyId>,
                limit: u32,
            ) -> Result<Vec<$crate::storage::KeyRecord>, $crate::storage::StoreError> {
                let rows: Vec<$crate::storage::KeyRow> = sqlx::query_as($crate::storage::statements::LIST_KEYS)
                    .bind(account.as_str())
                    .bind(include_revoked)
                    .bind(after.map_or("", $crate::domain::KeyId::as_str))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map($crate::storage::KeyRecord::try_from).collect()
            }

            async fn find_by_digest(&self, digest: &$crate::domain::KeyDigest) -> Result<Option<$crate::storage::KeyRecord>, $crate::storage::StoreError> {
                let row: Option<$crate::storage::KeyRow> = sqlx::query_as($crate::storage::statements::KEY_BY_DIGEST)
                    .bind(digest.as_bytes().as_slice())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map($crate::storage::KeyRecord::try_from).transpose()
            }

            async fn find_by_id(&self, id: &$crate::domain::KeyId) -> Result<Option<$crate::storage::KeyRecord>, $crate::storage::StoreError> {
                let row: Option<$crate::storage::KeyRow> = sqlx::query_as($crate::storage::statements::KEY_BY_ID)
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map($crate::storage::KeyRecord::try_from).transpose()
            }

            async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<$crate::storage::KeyEvent>, $crate::storage::StoreError> {
                let rows: Vec<$crate::storage::EventRow> = sqlx::query_as($crate::storage::statements::EVENTS_AFTER)
                    .bind(i64::try_from(after).unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map($crate::storage::KeyEvent::try_from).collect()
            }

            async fn pruned_through(&self) -> Result<u64, $crate::storage::StoreError> {
                let seq: i64 = sqlx::query_scalar($crate::storage::statements::PRUNED_THROUGH)
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::storage::to_u64(seq))
            }

            async fn list_audit(
                &self,
                account: &$crate::domain::AccountId,
                key: Option<&$crate::domain::KeyId>,
                after: u64,
                limit: u32,
            ) -> Result<Vec<$crate::audit::AuditEntry>, $crate::storage::StoreError> {
                let rows: Vec<$crate::storage::AuditRow> = sqlx::query_as($crate::storage::statements::AUDIT_PAGE)
                    .bind(account.as_str())
                    .bind(key.map_or("", $crate::domain::KeyId::as_str))
                    .bind(i64::try_from(after).unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map($crate::audit::AuditEntry::try_from).collect()
            }

            async fn prune_audit(&self, before: $crate::domain::UnixMillis) -> Result<u64, $crate::storage::StoreError> {
                Ok(sqlx::query($crate::storage::statements::DELETE_AUDIT_BEFORE)
                    .bind(before.0)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }

            fn pool_stats(&self) -> $crate::storage::PoolStats {
                $crate::storage::PoolStats::of(&self.pool)
            }
        }
    };
}
pub(super) use impl_key_store;

/// Inside `$tx` (a transaction that already holds the account's lock, by
/// `FOR UPDATE` or `BEGIN IMMEDIATE`): counts the account's active keys,
/// returns `KeyLimitReached` at `$max_active`, and inserts `$key` (its
/// `created` event is the caller's to log).
macro_rules! insert_key_within_limit {
    ($tx:ident, $key:ident, $max_active:ident) => {
        let active: i64 = sqlx::query_scalar($crate::storage::statements::COUNT_ACTIVE_KEYS)
            .bind($key.account_id.as_str())
            .bind($key.created_at.0)
            .fetch_one(&mut *$tx)
            .await?;
        if active >= i64::from($max_active) {
            return Err($crate::storage::StoreError::KeyLimitReached { limit: $max_active });
        }
        $crate::storage::shared::insert_key!($tx, $key);
    };
}
pub(super) use insert_key_within_limit;

/// Inside `$tx`: inserts `$key` as it is (no limit check).
macro_rules! insert_key {
    ($tx:ident, $key:ident) => {
        let (requests, per_seconds) = $crate::storage::rate_limit_columns($key.rate_limit);
        let (quota_requests, quota_refill) = $crate::storage::quota_columns($key.quota);
        sqlx::query($crate::storage::statements::INSERT_KEY)
            .bind($key.id.as_str())
            .bind($key.account_id.as_str())
            .bind($key.name.as_str())
            .bind($key.digest.as_bytes().as_slice())
            .bind(&$key.start)
            .bind($crate::storage::join_scopes(&$key.scopes))
            .bind(requests)
            .bind(per_seconds)
            .bind($key.created_at.0)
            .bind($key.expires_at.map(|t| t.0))
            .bind($crate::storage::metadata_column(&$key.metadata))
            .bind($crate::storage::join_scopes(&$key.allowed_networks))
            .bind(
                $key.rotated_from
                    .as_ref()
                    .map($crate::domain::KeyId::as_str),
            )
            .bind(quota_requests)
            .bind(quota_refill)
            .execute(&mut *$tx)
            .await?;
    };
}
pub(super) use insert_key;

/// In a transaction holding the account's and the old key's locks
/// (`$old`, read under them): refuses a revoked, expired or already
/// rotated key, inserts `$successor` with what it inherits, and expires
/// (`$grace_until`) or revokes (`None`) the old key with its event.
/// Evaluates to a `Rotated`.
macro_rules! rotate_locked_key {
    ($tx:ident, $old:ident, $successor:ident, $grace_until:ident, $actor:ident) => {{
        let now = $successor.created_at;
        // A successor first: a key rotated without grace is also revoked,
        // and its successor is what the caller needs to hear of.
        let successor: Option<String> =
            sqlx::query_scalar($crate::storage::statements::SUCCESSOR_OF)
                .bind($old.account_id.as_str())
                .bind($old.id.as_str())
                .fetch_optional(&mut *$tx)
                .await?;
        if let Some(successor) = successor {
            let successor = $crate::domain::KeyId::parse(&successor).map_err(|_| {
                $crate::storage::StoreError::Corrupt(format!("successor of key {}", $old.id))
            })?;
            return Err($crate::storage::StoreError::AlreadyRotated { successor });
        }
        if $old.revoked_at.is_some() {
            return Err($crate::storage::StoreError::KeyRevoked);
        }
        if $old.expires_at.is_some_and(|at| at <= now) {
            return Err($crate::storage::StoreError::KeyExpired);
        }
        let name = $crate::domain::KeyName::parse(&$old.name).map_err(|_| {
            $crate::storage::StoreError::Corrupt(format!("name of key {}", $old.id))
        })?;
        let new_key = $crate::storage::NewKey {
            id: $successor.id,
            account_id: $old.account_id.clone(),
            name,
            digest: $successor.digest,
            start: $successor.start,
            scopes: $old.scopes.clone(),
            rate_limit: $old.rate_limit,
            // The quota, not its use: the successor starts unused.
            quota: $old.quota,
            created_at: now,
            expires_at: $old.expires_at,
            metadata: $old.metadata.clone(),
            allowed_networks: $old.allowed_networks.clone(),
            rotated_from: Some($old.id.clone()),
        };
        $crate::storage::shared::insert_key!($tx, new_key);
        let mut previous = $old;
        let kind = match $grace_until {
            None => {
                sqlx::query($crate::storage::statements::SET_REVOKED_AT)
                    .bind(now.0)
                    .bind(previous.id.as_str())
                    .execute(&mut *$tx)
                    .await?;
                previous.revoked_at = Some(now);
                $crate::storage::EventKind::Revoked
            }
            Some(until) => {
                let until = previous.expires_at.map_or(until, |at| at.min(until));
                sqlx::query($crate::storage::statements::SET_EXPIRES_AT)
                    .bind(until.0)
                    .bind(previous.id.as_str())
                    .execute(&mut *$tx)
                    .await?;
                previous.expires_at = Some(until);
                $crate::storage::EventKind::Rotated
            }
        };
        let revision = Self::append_event(&mut $tx, &previous, kind, now).await?;
        let key = new_key.into_record();
        Self::append_audit(
            &mut $tx,
            &previous,
            $crate::audit::AuditKind::Rotated,
            now,
            $actor,
        )
        .await?;
        Self::append_audit(
            &mut $tx,
            &key,
            $crate::audit::AuditKind::Created,
            now,
            $actor,
        )
        .await?;
        $crate::storage::Rotated {
            key,
            previous,
            revision,
        }
    }};
}
pub(super) use rotate_locked_key;

/// In a transaction holding the locks of every account in `$keys`:
/// refuses a stored digest (`DigestExists`) or an account the import would
/// take past `$max_active` active keys (`ImportLimitReached`), then inserts
/// every key with its `imported` event. Evaluates to an `Imported`.
macro_rules! import_locked_keys {
    ($tx:ident, $keys:ident, $max_active:ident, $now:ident, $actor:ident) => {{
        let mut per_account: std::collections::BTreeMap<&$crate::domain::AccountId, i64> =
            std::collections::BTreeMap::new();
        for (index, key) in $keys.iter().enumerate() {
            let stored: i64 = sqlx::query_scalar($crate::storage::statements::DIGEST_EXISTS)
                .bind(key.digest.as_bytes().as_slice())
                .fetch_one(&mut *$tx)
                .await?;
            if stored > 0 {
                return Err($crate::storage::StoreError::DigestExists { index });
            }
            *per_account.entry(&key.account_id).or_default() += 1;
        }
        for (account, adding) in per_account {
            let active: i64 = sqlx::query_scalar($crate::storage::statements::COUNT_ACTIVE_KEYS)
                .bind(account.as_str())
                .bind($now.0)
                .fetch_one(&mut *$tx)
                .await?;
            if active + adding > i64::from($max_active) {
                return Err($crate::storage::StoreError::ImportLimitReached {
                    account: account.clone(),
                    limit: $max_active,
                });
            }
        }
        // Every key first, then every event: on PostgreSQL the first event
        // takes the log's ordering lock until commit, and an insert that
        // waits on another transaction's row (the same digest imported
        // concurrently) must not wait while holding it.
        let mut records = Vec::with_capacity($keys.len());
        for (index, key) in $keys.into_iter().enumerate() {
            let inserted: Result<(), sqlx::Error> = async {
                $crate::storage::shared::insert_key!($tx, key);
                Ok(())
            }
            .await;
            match inserted {
                // The digest was stored by an import that committed after
                // the check above (ids are generated, so the digest is the
                // only unique column a new key can collide on).
                Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                    return Err($crate::storage::StoreError::DigestExists { index });
                }
                other => other?,
            }
            records.push(key.into_record());
        }
        let mut revision = 0;
        for record in &records {
            revision =
                Self::append_event(&mut $tx, record, $crate::storage::EventKind::Imported, $now)
                    .await?;
            Self::append_audit(
                &mut $tx,
                record,
                $crate::audit::AuditKind::Imported,
                $now,
                $actor,
            )
            .await?;
        }
        $crate::storage::Imported {
            keys: records,
            revision,
        }
    }};
}
pub(super) use import_locked_keys;

/// In a transaction holding the key's row (`$before`, read under the lock):
/// refuses a revoked key, applies `$update`, writes it and logs one event
/// per changed aspect, evaluating to the record after and the last event's
/// sequence. Each event also gets its audit row, by `$actor`. An update
/// that changes nothing returns early, writing nothing, with the log's
/// latest sequence as its revision.
macro_rules! update_locked_key {
    ($store:expr, $tx:ident, $before:ident, $id:ident, $update:ident, $now:ident, $actor:ident) => {{
        if $before.revoked_at.is_some() {
            return Err($crate::storage::StoreError::KeyRevoked);
        }
        let kinds = $crate::storage::events_for_update(&$update, &$before);
        let after = $crate::storage::apply_update($before, $update);
        if kinds.is_empty() {
            drop($tx);
            let revision = $store.latest_seq().await?;
            return Ok($crate::storage::Written {
                record: after,
                revision,
            });
        }
        let (requests, per_seconds) = $crate::storage::rate_limit_columns(after.rate_limit);
        let (quota_requests, quota_refill) = $crate::storage::quota_columns(after.quota);
        sqlx::query($crate::storage::statements::UPDATE_KEY)
            .bind(&after.name)
            .bind($crate::storage::join_scopes(&after.scopes))
            .bind(requests)
            .bind(per_seconds)
            .bind($crate::storage::metadata_column(&after.metadata))
            .bind($crate::storage::join_scopes(&after.allowed_networks))
            .bind($id.as_str())
            .bind(quota_requests)
            .bind(quota_refill)
            .bind(i64::try_from(after.quota_usage.period).unwrap_or(i64::MAX))
            .bind(i64::try_from(after.quota_usage.used).unwrap_or(i64::MAX))
            .execute(&mut *$tx)
            .await?;
        let mut revision = 0;
        for kind in kinds {
            revision = Self::append_event(&mut $tx, &after, kind, $now).await?;
            Self::append_audit(
                &mut $tx,
                &after,
                $crate::audit::AuditKind::from(kind),
                $now,
                $actor,
            )
            .await?;
        }
        (after, revision)
    }};
}
pub(super) use update_locked_key;

/// Deletes the prefix of the event log older than `$before` (up to its last
/// such event), evaluating to (the last deleted sequence, rows deleted); a
/// log with nothing that old returns `Ok(0)` early.
macro_rules! delete_events_before {
    ($tx:ident, $before:ident) => {{
        let through: Option<i64> =
            sqlx::query_scalar($crate::storage::statements::LAST_EVENT_BEFORE)
                .bind($before.0)
                .fetch_one(&mut *$tx)
                .await?;
        let Some(through) = through else {
            return Ok(0);
        };
        let deleted = sqlx::query($crate::storage::statements::DELETE_EVENTS_THROUGH)
            .bind(through)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        (through, deleted)
    }};
}
pub(super) use delete_events_before;

/// A batch of quota notes as both backends write it: one row per key and
/// quota, in id order, each the furthest use noted (a later period, or
/// more used in the same one). `UPDATE ... FROM` applies one arbitrary row
/// of several that match, so a key noted twice must be one row.
pub(super) fn furthest_quota_usage(usage: &[crate::storage::QuotaNote]) -> Vec<QuotaRow<'_>> {
    let mut furthest: std::collections::BTreeMap<(&str, i64, &'static str), (i64, i64)> =
        std::collections::BTreeMap::new();
    for note in usage {
        let requests = i64::try_from(note.quota.requests()).unwrap_or(i64::MAX);
        let used = (
            i64::try_from(note.usage.period).unwrap_or(i64::MAX),
            i64::try_from(note.usage.used).unwrap_or(i64::MAX),
        );
        let slot = furthest
            .entry((note.id.as_str(), requests, note.quota.refill().as_str()))
            .or_insert(used);
        *slot = (*slot).max(used);
    }
    furthest
        .into_iter()
        .map(|((id, requests, refill), (period, used))| QuotaRow {
            id,
            requests,
            refill,
            period,
            used,
        })
        .collect()
}

/// One row of [`furthest_quota_usage`]: the key, the quota the use counts
/// against (written only while the key still has it), and the use.
pub(super) struct QuotaRow<'a> {
    pub id: &'a str,
    pub requests: i64,
    pub refill: &'static str,
    pub period: i64,
    pub used: i64,
}

/// `async fn append_event(conn, record, kind, at) -> seq` on a backend's
/// connection type: one row of the event log (on PostgreSQL its `seq` is
/// assigned by the trigger, under its ordering lock).
macro_rules! append_event_fn {
    ($connection:ty) => {
        async fn append_event(
            conn: &mut $connection,
            record: &$crate::storage::KeyRecord,
            kind: $crate::storage::EventKind,
            at: $crate::domain::UnixMillis,
        ) -> Result<u64, $crate::storage::StoreError> {
            let seq: i64 = sqlx::query_scalar($crate::storage::statements::INSERT_EVENT)
                .bind(record.id.as_str())
                .bind(record.account_id.as_str())
                .bind(record.digest.as_bytes().as_slice())
                .bind(kind.as_str())
                .bind(at.0)
                .fetch_one(&mut *conn)
                .await?;
            Ok($crate::storage::to_u64(seq))
        }
    };
}
pub(super) use append_event_fn;

/// `async fn append_audit(conn, record, kind, at, actor)` on a backend's
/// connection type: one row of the audit trail (`key_audit`), to be called
/// inside the transaction of the write it records, so the row exists if and
/// only if the change does. Records the key's id and account, never its
/// digest.
macro_rules! append_audit_fn {
    ($connection:ty) => {
        async fn append_audit(
            conn: &mut $connection,
            record: &$crate::storage::KeyRecord,
            kind: $crate::audit::AuditKind,
            at: $crate::domain::UnixMillis,
            actor: &$crate::audit::Actor,
        ) -> Result<(), $crate::storage::StoreError> {
            sqlx::query($crate::storage::statements::INSERT_AUDIT)
                .bind(record.id.as_str())
                .bind(record.account_id.as_str())
                .bind(kind.as_str())
                .bind(at.0)
                .bind(&actor.actor)
                .bind(&actor.peer)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    };
}
pub(super) use append_audit_fn;
