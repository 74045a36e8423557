//! Key management: create, revoke, update, get, list. Validates against the
//! catalog and the account rules, writes through the store, and applies each
//! change to this replica's cache before returning (other replicas learn of
//! it from the event log). No proto types here.

use std::sync::Arc;

use crate::domain::{AccountId, KeyId, KeyName, RateLimit, UnixMillis};
use crate::key_cache::KeyCache;
use crate::key_format::{KeyFormat, KeySecret};
use crate::scope_catalog::{GrantError, ScopeCatalog};
use crate::storage::{KeyRecord, KeyStore, KeyUpdate, Metadata, NewKey, StoreError, Written};

/// Why a management call was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("key not found in this account")]
    NotFound,
    #[error("the account already has {limit} active keys; revoke one first")]
    KeyLimitReached { limit: u32 },
    #[error("the key is revoked and cannot be changed")]
    KeyRevoked,
    #[error("storage failed: {0}")]
    Storage(StoreError),
    #[error("the OS random number generator failed: {0}")]
    Random(getrandom::Error),
}

impl From<StoreError> for ManagementError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound,
            StoreError::KeyLimitReached { limit } => Self::KeyLimitReached { limit },
            StoreError::KeyRevoked => Self::KeyRevoked,
            other => Self::Storage(other),
        }
    }
}

fn grant_error(error: GrantError) -> ManagementError {
    let field = match error {
        GrantError::UnknownPreset { .. } => "preset",
        GrantError::UnknownScope { .. } | GrantError::DuplicateScope(_) => "scopes",
    };
    ManagementError::Invalid {
        field,
        reason: error.to_string(),
    }
}

/// A validated CreateKey.
#[derive(Debug, Clone)]
pub struct CreateKey {
    pub account_id: AccountId,
    pub name: KeyName,
    pub scopes: Vec<String>,
    pub preset: Option<String>,
    pub expires_at: Option<UnixMillis>,
    pub rate_limit: Option<RateLimit>,
    /// Validated (`key_metadata::parse`).
    pub metadata: Metadata,
    /// Normalised (`allowed_networks::parse`); empty: any address.
    pub allowed_networks: Vec<String>,
}

/// A validated UpdateKey; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct ChangeKey {
    pub name: Option<KeyName>,
    pub scopes: Option<Vec<String>>,
    pub rate_limit: Option<Option<RateLimit>>,
    /// Replaces the whole map (validated).
    pub metadata: Option<Metadata>,
    /// Replaces the whole list (normalised).
    pub allowed_networks: Option<Vec<String>>,
}

/// One page of ListKeys.
#[derive(Debug)]
pub struct KeyPage {
    pub keys: Vec<KeyRecord>,
    /// The last key id of this page, when more may follow.
    pub next_after: Option<KeyId>,
}

/// What key management is configured with (`[key_format]`, `[scopes]`,
/// `max_active_keys_per_account`).
#[derive(Debug, Clone)]
pub struct ManagementSettings {
    pub catalog: Arc<ScopeCatalog>,
    pub key_format: KeyFormat,
    pub max_active_keys_per_account: u32,
}

pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    cache: Arc<KeyCache>,
    catalog: Arc<ScopeCatalog>,
    key_format: KeyFormat,
    max_active_keys_per_account: u32,
}

impl KeyManager {
    /// Key management as `settings` describe it, over one replica's store
    /// and cache (see `replica.rs`, which wires them).
    pub fn new(
        settings: ManagementSettings,
        store: Arc<dyn KeyStore>,
        cache: Arc<KeyCache>,
    ) -> Self {
        Self {
            store,
            cache,
            catalog: settings.catalog,
            key_format: settings.key_format,
            max_active_keys_per_account: settings.max_active_keys_per_account,
        }
    }

    pub fn catalog(&self) -> &Arc<ScopeCatalog> {
        &self.catalog
    }

    pub fn key_format(&self) -> &KeyFormat {
        &self.key_format
    }

    /// Scope names in catalog order, so stored grants are canonical.
    fn canonical_scopes(
        &self,
        names: &[String],
        preset: Option<&str>,
    ) -> Result<Vec<String>, ManagementError> {
        let granted = self
            .catalog
            .resolve_grant(names, preset)
            .map_err(grant_error)?;
        Ok(self.catalog.names(granted).map(str::to_owned).collect())
    }

    pub async fn create(
        &self,
        request: CreateKey,
    ) -> Result<(Written, KeySecret), ManagementError> {
        let scopes = self.canonical_scopes(&request.scopes, request.preset.as_deref())?;
        let now = UnixMillis::now();
        if let Some(expires_at) = request.expires_at
            && expires_at <= now
        {
            return Err(ManagementError::Invalid {
                field: "expires_at",
                reason: "must lie in the future".into(),
            });
        }
        let (secret, digest, start) = self
            .key_format
            .generate()
            .map_err(ManagementError::Random)?;
        let written = self
            .store
            .create_key(
                NewKey {
                    id: KeyId::generate(),
                    account_id: request.account_id,
                    name: request.name,
                    digest,
                    start,
                    scopes,
                    rate_limit: request.rate_limit,
                    created_at: now,
                    expires_at: request.expires_at,
                    metadata: request.metadata,
                    allowed_networks: request.allowed_networks,
                    rotated_from: None,
                },
                self.max_active_keys_per_account,
            )
            .await?;
        self.cache.forget_unknown(&digest);
        let record = &written.record;
        tracing::info!(key_id = %record.id, account_id = %record.account_id, start = %record.start, revision = written.revision, "key created");
        Ok((written, secret))
    }

    pub async fn revoke(
        &self,
        account_id: &AccountId,
        key_id: &KeyId,
    ) -> Result<Written, ManagementError> {
        let written = self
            .store
            .revoke_key(account_id, key_id, UnixMillis::now())
            .await?;
        let record = &written.record;
        // Before returning: this replica never answers "allowed" for it again.
        self.cache.invalidate(&record.id, &record.digest);
        tracing::info!(key_id = %record.id, account_id = %record.account_id, revision = written.revision, "key revoked");
        Ok(written)
    }

    pub async fn update(
        &self,
        account_id: &AccountId,
        key_id: &KeyId,
        change: ChangeKey,
    ) -> Result<Written, ManagementError> {
        let scopes = change
            .scopes
            .as_deref()
            .map(|names| self.canonical_scopes(names, None))
            .transpose()?;
        let written = self
            .store
            .update_key(
                account_id,
                key_id,
                KeyUpdate {
                    name: change.name,
                    scopes,
                    rate_limit: change.rate_limit,
                    metadata: change.metadata,
                    allowed_networks: change.allowed_networks,
                },
                UnixMillis::now(),
            )
            .await?;
        let record = &written.record;
        self.cache.invalidate(&record.id, &record.digest);
        tracing::info!(key_id = %record.id, account_id = %record.account_id, revision = written.revision, "key updated");
        Ok(written)
    }

    /// Records uses of keys verified outside this server (RecordUsage):
    /// one batched write, never moving a time backwards; unknown ids are
    /// ignored.
    pub async fn record_uses(&self, uses: &[(KeyId, UnixMillis)]) -> Result<(), ManagementError> {
        Ok(self.store.record_last_used(uses).await?)
    }

    pub async fn get(
        &self,
        account_id: &AccountId,
        key_id: &KeyId,
    ) -> Result<KeyRecord, ManagementError> {
        Ok(self.store.get_key(account_id, key_id).await?)
    }

    pub async fn list(
        &self,
        account_id: &AccountId,
        include_revoked: bool,
        after: Option<&KeyId>,
        page_size: u32,
    ) -> Result<KeyPage, ManagementError> {
        // One extra row tells whether another page exists.
        let mut keys = self
            .store
            .list_keys(account_id, include_revoked, after, page_size + 1)
            .await?;
        let next_after = if keys.len() > page_size as usize {
            keys.truncate(page_size as usize);
            keys.last().map(|k| k.id.clone())
        } else {
            None
        };
        Ok(KeyPage { keys, next_after })
    }
}
