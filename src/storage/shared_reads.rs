//! The `KeyStore` methods both backends implement alike: the same
//! statement (`statements.rs`), binds and row conversion, on the backend's
//! own pool. A backend's `impl KeyStore` is written through
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

            fn pool_stats(&self) -> $crate::storage::PoolStats {
                $crate::storage::PoolStats::of(&self.pool)
            }
        }
    };
}
pub(super) use impl_key_store;
