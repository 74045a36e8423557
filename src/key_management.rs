//! Key management: create, revoke, update, get, list, rotate, import. Validates against the
//! catalog and the account rules, writes through the store, and applies each
//! change to this replica's cache before returning (other replicas learn of
//! it from the event log). No proto types here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Actor, AuditEntry};
use crate::domain::{AccountId, KeyDigest, KeyId, KeyName, Quota, RateLimit, UnixMillis};
use crate::key_cache::KeyCache;
use crate::key_format::{KeyFormat, KeySecret};
use crate::scope_catalog::{GrantError, ScopeCatalog};
use crate::storage::{
    Imported, KeyRecord, KeyStore, KeyUpdate, Metadata, NewKey, Rotated, StoreError, Successor,
    Written,
};

/// The most keys one ImportKeys call may carry.
pub const MAX_IMPORT_KEYS: usize = 1_000;
/// The longest `start` an imported key may show.
const MAX_IMPORTED_START_BYTES: usize = 64;

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
    /// A field named at run time (`keys[3].sha256_hex`).
    #[error("{field}: {reason}")]
    InvalidAt { field: String, reason: String },
    #[error("the key has expired and cannot be rotated")]
    KeyExpired,
    #[error("the key is already rotated; its successor is {successor}")]
    AlreadyRotated { successor: KeyId },
    #[error("{field}: {reason}")]
    AlreadyExists { field: String, reason: String },
    #[error(
        "account {account} would have more than {limit} active keys after the import; nothing was imported"
    )]
    ImportLimitReached { account: AccountId, limit: u32 },
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
            StoreError::KeyExpired => Self::KeyExpired,
            StoreError::AlreadyRotated { successor } => Self::AlreadyRotated { successor },
            StoreError::DigestExists { index } => Self::AlreadyExists {
                field: format!("keys[{index}]"),
                reason: "a key with this digest already exists".into(),
            },
            StoreError::ImportLimitReached { account, limit } => {
                Self::ImportLimitReached { account, limit }
            }
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

/// Why an expiry was refused, with what was received: an all-zero
/// Timestamp is what a client sends when its language's date did not
/// become `{seconds, nanos}` (a JavaScript `Date` through proto-loader).
fn not_in_future(expires_at: UnixMillis) -> String {
    let hint = if expires_at.0 == 0 {
        " (an all-zero Timestamp: seconds and nanos were both 0 or unset)"
    } else {
        ""
    };
    format!("must lie in the future; got {}{hint}", expires_at.rfc3339())
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
    pub quota: Option<Quota>,
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
    /// `Some(None)` removes the quota; a changed quota starts unused.
    pub quota: Option<Option<Quota>>,
    /// Replaces the whole map (validated).
    pub metadata: Option<Metadata>,
    /// Replaces the whole list (normalised).
    pub allowed_networks: Option<Vec<String>>,
}

/// One ImportKeys entry, its fields parsed (the rest is checked by
/// [`KeyManager::import`]).
#[derive(Debug, Clone)]
pub struct ImportKey {
    pub account_id: AccountId,
    pub name: KeyName,
    pub digest: KeyDigest,
    pub start: String,
    pub scopes: Vec<String>,
    /// `None`: now.
    pub created_at: Option<UnixMillis>,
    pub expires_at: Option<UnixMillis>,
    pub rate_limit: Option<RateLimit>,
    pub metadata: Metadata,
}

/// One page of ListKeys.
#[derive(Debug)]
pub struct KeyPage {
    pub keys: Vec<KeyRecord>,
    /// The last key id of this page, when more may follow.
    pub next_after: Option<KeyId>,
}

/// One page of ListKeyEvents.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<AuditEntry>,
    /// The last sequence of this page, when more may follow.
    pub next_after: Option<u64>,
}

/// What key management is configured with (`[key_format]`, `[scopes]`,
/// `max_active_keys_per_account`).
#[derive(Debug, Clone)]
pub struct ManagementSettings {
    pub catalog: Arc<ScopeCatalog>,
    pub key_format: KeyFormat,
    pub max_active_keys_per_account: u32,
    /// RotateKey's longest grace period (`keys.max_rotation_grace_seconds`).
    pub max_rotation_grace: Duration,
}

pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    cache: Arc<KeyCache>,
    catalog: Arc<ScopeCatalog>,
    key_format: KeyFormat,
    max_active_keys_per_account: u32,
    max_rotation_grace: Duration,
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
            max_rotation_grace: settings.max_rotation_grace,
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
        actor: &Actor,
    ) -> Result<(Written, KeySecret), ManagementError> {
        let scopes = self.canonical_scopes(&request.scopes, request.preset.as_deref())?;
        let now = UnixMillis::now();
        if let Some(expires_at) = request.expires_at
            && expires_at <= now
        {
            return Err(ManagementError::Invalid {
                field: "expires_at",
                reason: not_in_future(expires_at),
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
                    quota: request.quota,
                    created_at: now,
                    expires_at: request.expires_at,
                    metadata: request.metadata,
                    allowed_networks: request.allowed_networks,
                    rotated_from: None,
                },
                self.max_active_keys_per_account,
                actor,
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
        actor: &Actor,
    ) -> Result<Written, ManagementError> {
        let written = self
            .store
            .revoke_key(account_id, key_id, UnixMillis::now(), actor)
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
        actor: &Actor,
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
                    quota: change.quota,
                    metadata: change.metadata,
                    allowed_networks: change.allowed_networks,
                },
                UnixMillis::now(),
                actor,
            )
            .await?;
        let record = &written.record;
        self.cache.invalidate(&record.id, &record.digest);
        tracing::info!(key_id = %record.id, account_id = %record.account_id, revision = written.revision, "key updated");
        Ok(written)
    }

    /// Replaces a key with a new one that inherits it (RotateKey). The old
    /// key keeps working for `grace` (never past its own expiry); `None` or
    /// zero revokes it at once. Applied to this replica's cache before
    /// returning, like a revocation.
    pub async fn rotate(
        &self,
        account_id: &AccountId,
        key_id: &KeyId,
        grace: Option<Duration>,
        actor: &Actor,
    ) -> Result<(Rotated, KeySecret), ManagementError> {
        let grace = grace.filter(|grace| !grace.is_zero());
        if let Some(grace) = grace
            && grace > self.max_rotation_grace
        {
            return Err(ManagementError::Invalid {
                field: "grace_period",
                reason: format!(
                    "at most {}s (keys.max_rotation_grace_seconds), got {}s",
                    self.max_rotation_grace.as_secs(),
                    grace.as_secs_f64()
                ),
            });
        }
        let now = UnixMillis::now();
        // Whole milliseconds, rounded up: a grace period is never cut short.
        let grace_until = grace.map(|grace| {
            let millis = i64::try_from(grace.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX);
            UnixMillis(now.0.saturating_add(millis))
        });
        let (secret, digest, start) = self
            .key_format
            .generate()
            .map_err(ManagementError::Random)?;
        let rotated = self
            .store
            .rotate_key(
                account_id,
                key_id,
                Successor {
                    id: KeyId::generate(),
                    digest,
                    start,
                    created_at: now,
                },
                grace_until,
                actor,
            )
            .await?;
        let previous = &rotated.previous;
        // Before returning: this replica sees the old key's new expiry (or
        // revocation) from now on.
        self.cache.invalidate(&previous.id, &previous.digest);
        self.cache.forget_unknown(&digest);
        tracing::info!(
            key_id = %rotated.key.id,
            rotated_from = %previous.id,
            account_id = %previous.account_id,
            start = %rotated.key.start,
            revision = rotated.revision,
            "key rotated"
        );
        Ok((rotated, secret))
    }

    /// Imports keys whose secrets another system holds as SHA-256 digests,
    /// all or nothing: every entry is checked first (fields named
    /// `keys[i].<field>`), then one store transaction inserts them all.
    pub async fn import(
        &self,
        keys: Vec<ImportKey>,
        actor: &Actor,
    ) -> Result<Imported, ManagementError> {
        if keys.is_empty() || keys.len() > MAX_IMPORT_KEYS {
            return Err(ManagementError::Invalid {
                field: "keys",
                reason: format!("1 to {MAX_IMPORT_KEYS} keys, got {}", keys.len()),
            });
        }
        let now = UnixMillis::now();
        let prefix = self.key_format.prefix();
        let mut seen: HashMap<KeyDigest, usize> = HashMap::with_capacity(keys.len());
        let mut new_keys = Vec::with_capacity(keys.len());
        for (index, key) in keys.into_iter().enumerate() {
            let invalid = |field: &str, reason: String| ManagementError::InvalidAt {
                field: format!("keys[{index}].{field}"),
                reason,
            };
            if !key.start.starts_with(prefix)
                || key.start.len() > MAX_IMPORTED_START_BYTES
                || !key.start.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    "start",
                    format!(
                        "must begin with this deployment's key prefix {prefix:?} and be at most \
                         {MAX_IMPORTED_START_BYTES} printable ASCII characters"
                    ),
                ));
            }
            let scopes = self
                .canonical_scopes(&key.scopes, None)
                .map_err(|error| match error {
                    ManagementError::Invalid { reason, .. } => invalid("scopes", reason),
                    other => other,
                })?;
            let created_at = key.created_at.unwrap_or(now);
            if created_at > now {
                return Err(invalid(
                    "created_at",
                    format!("must not lie in the future; got {}", created_at.rfc3339()),
                ));
            }
            if let Some(expires_at) = key.expires_at
                && expires_at <= now
            {
                return Err(invalid("expires_at", not_in_future(expires_at)));
            }
            // `key.metadata` was validated with the request (convert.rs).
            if let Some(first) = seen.insert(key.digest, index) {
                return Err(ManagementError::AlreadyExists {
                    field: format!("keys[{index}]"),
                    reason: format!("has the same digest as keys[{first}]"),
                });
            }
            new_keys.push(NewKey {
                id: KeyId::generate(),
                account_id: key.account_id,
                name: key.name,
                digest: key.digest,
                start: key.start,
                scopes,
                rate_limit: key.rate_limit,
                quota: None,
                created_at,
                expires_at: key.expires_at,
                metadata: key.metadata,
                allowed_networks: Vec::new(),
                rotated_from: None,
            });
        }
        let imported = self
            .store
            .import_keys(new_keys, self.max_active_keys_per_account, now, actor)
            .await?;
        for record in &imported.keys {
            // This replica may remember the digest as unknown (other
            // replicas forget it on the `imported` event).
            self.cache.invalidate(&record.id, &record.digest);
            self.cache.forget_unknown(&record.digest);
        }
        tracing::info!(
            keys = imported.keys.len(),
            revision = imported.revision,
            "keys imported"
        );
        Ok(imported)
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

    /// A page of an account's audit trail (ListKeyEvents), oldest first,
    /// of one key if `key_id` is given: a key of another account is
    /// `NotFound`, as everywhere in management.
    pub async fn list_events(
        &self,
        account_id: &AccountId,
        key_id: Option<&KeyId>,
        after: u64,
        page_size: u32,
    ) -> Result<EventPage, ManagementError> {
        if let Some(key_id) = key_id {
            self.store.get_key(account_id, key_id).await?;
        }
        // One extra row tells whether another page exists.
        let mut events = self
            .store
            .list_audit(account_id, key_id, after, page_size + 1)
            .await?;
        let next_after = if events.len() > page_size as usize {
            events.truncate(page_size as usize);
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(EventPage { events, next_after })
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
