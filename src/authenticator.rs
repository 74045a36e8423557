//! The hot path shared by Authenticate, CheckScope and ext_authz Check:
//!
//! ban check -> min_revision -> credential shape -> freshness -> SHA-256 ->
//! cache (on a miss,
//! one indexed read, then cache) -> revoked / expired -> scopes -> rate limit
//! -> note the use in memory -> answer.
//!
//! **Invariant:** on a cache hit there is no database call, no write and no
//! lock shared by all requests. Denials are values, never errors.
//!
//! **Invariant (fail closed):** an answer rests either on the cache, while
//! the feed's last proof of being current is within the freshness bound, or
//! on a database read that began within the bound of the answer; reads are
//! cut off at the bound. Anything older is `UNAVAILABLE`.

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use crate::change_feed::{AppliedRevision, Freshness};
use crate::denial::{Denial, DenialCatalog, Reason};
use crate::domain::RateLimit;
use crate::domain::{AccountId, KeyDigest, KeyId, UnixMillis};
use crate::failed_auth_bans::{BanSettings, BanTableStats, FailedAuthBans, ban_key};
use crate::key_cache::{CachedKey, KeyCache, LoadTicket, Lookup};
use crate::key_format::{CredentialProblem, KeyFormat};
use crate::last_use::LastUseRecorder;
use crate::quotas::{KeyQuotas, QuotaDecision, WallClock};
use crate::rate_limits::{KeyRateLimits, RateDecision, RateLimitStatus};
use crate::scope_catalog::{ScopeCatalog, ScopeIndex};
use crate::shared_limits::{OnBackendError, SharedFailure, SharedLimits};
use crate::storage::{KeyRecord, KeyStore, StoreError};
use crate::telemetry::{CacheLookup, LimitsOperation, Surface, Telemetry, elapsed_since};

/// How many reads a cache miss makes when changes to keys of its stripe keep
/// landing mid-read, before it gives up and fails closed.
const LOAD_ATTEMPTS: usize = 4;

/// Who is asking, and for what.
pub struct Presented<'a> {
    pub surface: Surface,
    pub key: PresentedKey<'a>,
    pub required: Required<'a>,
    /// Where failed attempts count (already decided by whether the caller
    /// may state the end client's address).
    pub client: Option<IpAddr>,
    /// A caller confined to one account (a user JWT): another account's key
    /// is answered as unknown, as management answers it NOT_FOUND.
    pub account: Option<&'a AccountId>,
    /// 0, or the revision this replica must have applied before it
    /// answers (read-your-writes; see `AppliedRevision`).
    pub min_revision: u64,
}

/// The scopes a request needs.
#[derive(Debug, Clone, Copy)]
pub enum Required<'a> {
    /// Scopes of the catalog (possibly none).
    Scopes(&'a [ScopeIndex]),
    /// A scope that is not in the catalog (an ext_authz template filled in
    /// from the request): no key holds it, so a live key is denied
    /// INSUFFICIENT_SCOPE naming it, before any budget is spent.
    Unknown(&'a str),
}

pub enum PresentedKey<'a> {
    /// No credential at all (ext_authz found none where the route looks).
    Absent,
    /// A credential as received (`Bearer ...`, `ApiKey ...`, or bare).
    Credential(&'a str),
    /// A key with no scheme (from a named header or a query parameter).
    BareKey(&'a str),
    /// A key id (CheckScope by id): no secret, so no ban accounting.
    Id(&'a KeyId),
}

/// The answer. An allowed verdict always names its key; a denial names one
/// only when the credential identified a live key (a missing scope, a spent
/// budget), and carries the budget when that was the reason.
#[derive(Debug)]
pub enum Verdict {
    Allowed {
        key: Arc<CachedKey>,
        rate_limit: Option<RateLimitStatus>,
        /// What is left of the key's quota, when it has one.
        quota_remaining: Option<u64>,
    },
    Denied {
        denial: Denial,
        key: Option<Arc<CachedKey>>,
        rate_limit: Option<RateLimitStatus>,
        /// `Some(0)` on QUOTA_EXCEEDED.
        quota_remaining: Option<u64>,
    },
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }

    /// The key the credential identified, when it identified a live one.
    pub fn key(&self) -> Option<&Arc<CachedKey>> {
        match self {
            Self::Allowed { key, .. } => Some(key),
            Self::Denied { key, .. } => key.as_ref(),
        }
    }

    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Self::Allowed { .. } => None,
            Self::Denied { denial, .. } => Some(denial),
        }
    }

    pub fn rate_limit(&self) -> Option<RateLimitStatus> {
        match self {
            Self::Allowed { rate_limit, .. } | Self::Denied { rate_limit, .. } => *rate_limit,
        }
    }

    /// What is left of the key's usage quota, when one applied.
    pub fn quota_remaining(&self) -> Option<u64> {
        match self {
            Self::Allowed {
                quota_remaining, ..
            }
            | Self::Denied {
                quota_remaining, ..
            } => *quota_remaining,
        }
    }

    fn deny(denial: Denial) -> Self {
        Self::Denied {
            denial,
            key: None,
            rate_limit: None,
            quota_remaining: None,
        }
    }

    fn deny_key(denial: Denial, key: Arc<CachedKey>) -> Self {
        Self::Denied {
            denial,
            key: Some(key),
            rate_limit: None,
            quota_remaining: None,
        }
    }
}

/// What the hot path is configured with (from `[key_format]`, `[scopes]`,
/// `[denials]`, `[bans]`, `[rate_limit]` and the cache size).
#[derive(Debug, Clone)]
pub struct AuthenticatorSettings {
    pub key_format: KeyFormat,
    pub catalog: Arc<ScopeCatalog>,
    pub denials: DenialCatalog,
    pub bans: BanSettings,
    pub default_rate_limit: Option<RateLimit>,
    /// How many keys' limiters to keep (the key cache's capacity).
    pub limiter_capacity: u64,
    /// Redis, when `[limits] backend = "redis"`: rate limits and failure
    /// counts shared by all replicas (the local ones stay as the fallback of
    /// `on_backend_error = "local"`).
    pub shared_limits: Option<Arc<SharedLimits>>,
    /// The wall clock quota refills follow.
    pub clock: WallClock,
}

pub struct Authenticator {
    key_format: KeyFormat,
    catalog: Arc<ScopeCatalog>,
    denials: DenialCatalog,
    cache: Arc<KeyCache>,
    store: Arc<dyn KeyStore>,
    freshness: Arc<Freshness>,
    revision: Arc<AppliedRevision>,
    bans: FailedAuthBans,
    rate_limits: KeyRateLimits,
    quotas: KeyQuotas,
    clock: WallClock,
    shared_limits: Option<Arc<SharedLimits>>,
    last_use: LastUseRecorder,
    /// Decision, cache and ban metrics (no-op handles when metrics are off).
    telemetry: Arc<Telemetry>,
}

enum Loaded {
    Found(Arc<CachedKey>),
    /// No such key, as of the read that `LoadTicket` was taken before.
    NotFound(LoadTicket),
}

impl Authenticator {
    /// The hot path as `settings` describe it, over one replica's cache,
    /// store and freshness (see `replica.rs`, which wires them).
    pub fn new(
        settings: AuthenticatorSettings,
        cache: Arc<KeyCache>,
        store: Arc<dyn KeyStore>,
        freshness: Arc<Freshness>,
        revision: Arc<AppliedRevision>,
        last_use: LastUseRecorder,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            key_format: settings.key_format,
            catalog: settings.catalog,
            denials: settings.denials,
            cache,
            store,
            freshness,
            revision,
            bans: FailedAuthBans::new(settings.bans),
            rate_limits: KeyRateLimits::new(settings.default_rate_limit, settings.limiter_capacity),
            quotas: KeyQuotas::new(settings.limiter_capacity),
            clock: settings.clock,
            shared_limits: settings.shared_limits,
            last_use,
            telemetry,
        }
    }

    pub fn key_format(&self) -> &KeyFormat {
        &self.key_format
    }

    pub fn catalog(&self) -> &Arc<ScopeCatalog> {
        &self.catalog
    }

    pub fn denials(&self) -> &DenialCatalog {
        &self.denials
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The failed-auth tables' sizes (a metrics scrape).
    pub fn ban_stats(&self) -> BanTableStats {
        self.bans.stats()
    }

    pub async fn authenticate(&self, request: Presented<'_>) -> Verdict {
        let started = self.telemetry.start_timer();
        let verdict = self.decide(&request).await;
        self.telemetry.record_decision(
            request.surface,
            verdict.denial().map(|denial| denial.reason),
            // Only a denial's log line names the key.
            verdict.denial().and(verdict.key()).map(|key| key.id()),
            elapsed_since(started),
        );
        verdict
    }

    async fn decide(&self, request: &Presented<'_>) -> Verdict {
        if let Some(client) = request.client
            && let Some(wait) = self.bans.banned_for(client)
        {
            let mut denial = self.denials.deny(Reason::TooManyFailedAttempts);
            denial.retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            return Verdict::deny(denial);
        }
        // Not a failed attempt: the caller's own write has not reached this
        // replica yet, and a retry (here or elsewhere) may succeed.
        if request.min_revision > 0 && !self.revision.reached(request.min_revision).await {
            return Verdict::deny(self.denials.deny(Reason::Unavailable));
        }

        let found = match request.key {
            PresentedKey::Absent => Err(Reason::MissingCredential),
            PresentedKey::Id(id) => self.find_by_id(id).await,
            PresentedKey::Credential(credential) => match self.key_format.extract(credential) {
                Ok(key) => self.find_by_secret(key).await,
                Err(problem) => Err(shape_reason(problem)),
            },
            PresentedKey::BareKey(key) => match self.key_format.check_key(key) {
                Ok(()) => self.find_by_secret(key).await,
                Err(problem) => Err(shape_reason(problem)),
            },
        };
        let key = match found {
            Ok(key) => key,
            Err(reason) => return self.refuse(reason, request).await,
        };
        if let Some(account) = request.account
            && key.account_id() != account.as_str()
        {
            // Not a guess at a secret (the key exists): no ban accounting.
            return Verdict::deny(self.denials.deny(Reason::UnknownKey));
        }

        let now = UnixMillis::now();
        if key.revoked_at().is_some() {
            return self.refuse(Reason::Revoked, request).await;
        }
        if key.is_expired(now) {
            return self.refuse(Reason::Expired, request).await;
        }
        // After the key is known to be live, before scopes. Not a failed
        // credential (the key is real): no ban accounting. The check scans
        // the few networks parsed into the cached key; nothing allocates.
        if !key.allows(request.client) {
            return Verdict::deny_key(self.denials.deny(Reason::IpNotAllowed), key);
        }

        if let Some(denial) = self.missing_scope(&key, request.required) {
            return Verdict::deny_key(denial, key);
        }

        // A lookup by id names a key the caller has already authenticated
        // (and paid for): it neither spends the key's budget nor counts as a
        // use, so knowing a public key id gives no handle on either.
        if let PresentedKey::Id(_) = request.key {
            return Verdict::Allowed {
                key,
                rate_limit: None,
                quota_remaining: None,
            };
        }

        let decision = match self.rate_decision(&key).await {
            Some(decision) => decision,
            // Redis failed and `on_backend_error = "deny"`.
            None => return Verdict::deny_key(self.denials.deny(Reason::Unavailable), key),
        };
        let rate_limit = match decision {
            RateDecision::Unlimited => None,
            RateDecision::Allowed(status) => Some(status),
            RateDecision::Limited {
                status,
                retry_after,
            } => {
                let mut denial = self.denials.deny(Reason::RateLimited);
                denial.retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
                return Verdict::Denied {
                    denial,
                    key: Some(key),
                    rate_limit: Some(status),
                    quota_remaining: None,
                };
            }
        };

        // After the rate limit: a rate-limited request spends no quota.
        let quota_remaining = match self.quota_decision(&key).await {
            Ok(None) => None,
            Ok(Some(QuotaDecision::Allowed { remaining })) => Some(remaining),
            Ok(Some(QuotaDecision::Exceeded { refill_in })) => {
                let mut denial = self.denials.deny(Reason::QuotaExceeded);
                denial.retry_after_ms = refill_in.map_or(0, |wait| {
                    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
                });
                return Verdict::Denied {
                    denial,
                    key: Some(key),
                    rate_limit,
                    quota_remaining: Some(0),
                };
            }
            // Redis failed and `on_backend_error = "deny"`.
            Err(()) => return Verdict::deny_key(self.denials.deny(Reason::Unavailable), key),
        };

        self.last_use.record(&key, now);
        Verdict::Allowed {
            key,
            rate_limit,
            quota_remaining,
        }
    }

    /// Takes one request from the key's budget: in Redis when limits are
    /// shared (a key without a limit costs no call), else (or when Redis
    /// fails and `on_backend_error = "local"`) this replica's own. `None`:
    /// Redis failed and `on_backend_error = "deny"`.
    async fn rate_decision(&self, key: &CachedKey) -> Option<RateDecision> {
        let limited = key.limited();
        if let Some(shared) = &self.shared_limits
            && let Some(limit) = self.rate_limits.limit_for(&limited)
        {
            match shared.check_rate(&key.key_id(), limit).await {
                Ok(decision) => return Some(decision),
                Err(error) => {
                    self.telemetry
                        .record_limits_backend_error(LimitsOperation::RateLimit);
                    shared.warn("rate limit", &error);
                    if shared.on_backend_error() == OnBackendError::Deny {
                        return None;
                    }
                }
            }
        }
        Some(self.rate_limits.check(limited))
    }

    /// Takes one request from the key's usage quota, if it has one: in
    /// Redis when limits are shared, else (or when Redis fails and
    /// `on_backend_error = "local"`) on this replica. Refill boundaries
    /// follow `clock`. `Err`: Redis failed and `on_backend_error = "deny"`.
    async fn quota_decision(&self, key: &CachedKey) -> Result<Option<QuotaDecision>, ()> {
        let Some(quota_key) = key.quota_key() else {
            return Ok(None);
        };
        let now = self.clock.now();
        if let Some(shared) = &self.shared_limits {
            let period = quota_key.quota.refill().period(now);
            let start = self.quotas.counter(&quota_key).usage_at(0);
            match shared
                .take_quota(&key.key_id(), quota_key.quota, period, start)
                .await
            {
                Ok((allowed, usage)) => {
                    self.quotas.note_shared(&quota_key, usage);
                    return Ok(Some(QuotaDecision::of(
                        quota_key.quota,
                        usage,
                        allowed,
                        now,
                    )));
                }
                Err(error) => {
                    self.telemetry
                        .record_limits_backend_error(LimitsOperation::Quota);
                    shared.warn("quota", &error);
                    if shared.on_backend_error() == OnBackendError::Deny {
                        return Err(());
                    }
                }
            }
        }
        Ok(Some(self.quotas.take(&quota_key, now)))
    }

    /// Counts an invalid credential from `client` toward a ban: in Redis
    /// when limits are shared, else (or when Redis fails, whatever
    /// `on_backend_error` says: counting here is never less strict) in
    /// this replica's table. Returns whether this failure started a ban.
    async fn record_failure(&self, client: IpAddr) -> bool {
        let settings = self.bans.settings();
        if !settings.enabled {
            return false;
        }
        if let Some(shared) = &self.shared_limits {
            let address = ban_key(client);
            match shared.record_failure(address, settings).await {
                Ok(SharedFailure::Counted) => return false,
                Ok(SharedFailure::AlreadyBanned(remaining)) => {
                    self.bans.impose(address, remaining);
                    return false;
                }
                Ok(SharedFailure::Banned(remaining)) => {
                    self.bans.impose(address, remaining);
                    tracing::info!(
                        client = %address,
                        "address banned on every replica after repeated invalid credentials"
                    );
                    return true;
                }
                Err(error) => {
                    self.telemetry
                        .record_limits_backend_error(LimitsOperation::Failure);
                    shared.warn("failed-attempt count", &error);
                }
            }
        }
        self.bans.record_failure(client)
    }

    /// Keeps this replica's copy of the shared bans current (the channel
    /// that announces each ban, and a full read every second) until
    /// `shutdown`; returns at once when limits are not shared.
    pub async fn follow_shared_bans(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let Some(shared) = &self.shared_limits else {
            return;
        };
        shared
            .follow_bans(
                |address, remaining| {
                    self.bans.impose(address, remaining);
                },
                |error| {
                    self.telemetry
                        .record_limits_backend_error(LimitsOperation::BanSync);
                    shared.warn("ban sync", error);
                },
                shutdown,
            )
            .await;
    }

    /// The INSUFFICIENT_SCOPE denial for the first required scope the key
    /// lacks, in the scope's own words when the catalog has them.
    fn missing_scope(&self, key: &CachedKey, required: Required<'_>) -> Option<Denial> {
        let mut denial = self.denials.deny(Reason::InsufficientScope);
        match required {
            Required::Unknown(name) => denial.required_scope = Some(name.to_owned()),
            Required::Scopes(scopes) => {
                let &missing = scopes
                    .iter()
                    .find(|&&scope| !key.effective.contains(scope))?;
                if let Some(text) = self.catalog.denial_text(missing) {
                    denial.code = text.code.as_str().into();
                    denial.message = text.message.as_str().into();
                }
                denial.required_scope = Some(self.catalog.name(missing).to_owned());
            }
        }
        Some(denial)
    }

    /// A denial for a credential that identified no live key; counts toward
    /// a ban when it was an attempt with some credential.
    async fn refuse(&self, reason: Reason, request: &Presented<'_>) -> Verdict {
        let attempted = match request.key {
            PresentedKey::Credential(text) | PresentedKey::BareKey(text) => !text.trim().is_empty(),
            PresentedKey::Absent | PresentedKey::Id(_) => false,
        };
        if attempted
            && reason.is_invalid_credential()
            && let Some(client) = request.client
            && self.record_failure(client).await
        {
            self.telemetry.record_ban_started();
        }
        Verdict::deny(self.denials.deny(reason))
    }

    async fn find_by_secret(&self, secret: &str) -> Result<Arc<CachedKey>, Reason> {
        if !self.freshness.is_fresh() {
            return Err(Reason::Unavailable);
        }
        let digest = KeyDigest::of(secret);
        let ticket = match self.answer_from_cache(self.cache.lookup_digest(&digest)) {
            ControlFlow::Break(answer) => return answer,
            ControlFlow::Continue(ticket) => ticket,
        };
        let loaded = self
            .load(
                ticket,
                |cache| cache.ticket_for_digest(&digest),
                |store| {
                    let store = Arc::clone(store);
                    async move { store.find_by_digest(&digest).await }
                },
                |cache, ticket, key| cache.insert_by_digest(ticket, key, digest),
            )
            .await?;
        match loaded {
            Loaded::Found(key) => Ok(key),
            Loaded::NotFound(ticket) => {
                // Not if an event about the digest (an import) landed
                // while reading.
                self.cache.insert_unknown_unless_changed(ticket, digest);
                Err(Reason::UnknownKey)
            }
        }
    }

    async fn find_by_id(&self, id: &KeyId) -> Result<Arc<CachedKey>, Reason> {
        if !self.freshness.is_fresh() {
            return Err(Reason::Unavailable);
        }
        let ticket = match self.answer_from_cache(self.cache.lookup_id(id)) {
            ControlFlow::Break(answer) => return answer,
            ControlFlow::Continue(ticket) => ticket,
        };
        let loaded = self
            .load(
                ticket,
                |cache| cache.ticket_for_id(id),
                |store| {
                    let store = Arc::clone(store);
                    let id = id.clone();
                    async move { store.find_by_id(&id).await }
                },
                KeyCache::insert_by_id,
            )
            .await?;
        match loaded {
            Loaded::Found(key) => Ok(key),
            Loaded::NotFound(_) => {
                self.cache.insert_unknown_id(id.clone());
                Err(Reason::UnknownKey)
            }
        }
    }

    /// The answer a cache lookup gives by itself (a hit, or a known unknown
    /// key), or the ticket to load the key with.
    fn answer_from_cache(
        &self,
        lookup: Lookup,
    ) -> ControlFlow<Result<Arc<CachedKey>, Reason>, LoadTicket> {
        let (counted, flow) = match lookup {
            Lookup::Hit(key) => (CacheLookup::Hit, ControlFlow::Break(Ok(key))),
            Lookup::KnownUnknown => (
                CacheLookup::NegativeHit,
                ControlFlow::Break(Err(Reason::UnknownKey)),
            ),
            Lookup::Miss(ticket) => (CacheLookup::Miss, ControlFlow::Continue(ticket)),
        };
        self.telemetry.record_cache_lookup(counted);
        flow
    }

    /// Reads a key and caches it unless a change landed while reading, in
    /// which case it reads again: a read that starts after the change's
    /// epoch bump sees the change.
    ///
    /// Every read is bounded by the freshness bound, and its row is used only
    /// if the read began within the bound of now (otherwise `Unavailable`):
    /// a stalled database or network cannot turn into a stale "allowed".
    ///
    /// A row whose insert failed may predate a change that has already been
    /// applied (RevokeKey may have returned), so it is never the answer,
    /// except a revoked row: revocation is final, so a revoked row cannot be
    /// stale in a way that matters. If changes keep landing on the stripe
    /// for `LOAD_ATTEMPTS` reads, the lookup fails closed (`Unavailable`).
    async fn load<F, Fut>(
        &self,
        mut ticket: LoadTicket,
        next_ticket: impl Fn(&KeyCache) -> LoadTicket,
        read: F,
        insert: impl Fn(&KeyCache, LoadTicket, &Arc<CachedKey>) -> bool,
    ) -> Result<Loaded, Reason>
    where
        F: Fn(&Arc<dyn KeyStore>) -> Fut,
        Fut: Future<Output = Result<Option<KeyRecord>, StoreError>>,
    {
        let bound = self.freshness.bound();
        for _ in 0..LOAD_ATTEMPTS {
            // The row is current as of (at least) the moment the read began;
            // an answer may rest on it only while that moment is within the
            // freshness bound, as a cache hit may rest on the feed's proof
            // only while that is. A read that stalls is given up at the
            // bound: it could not be answered from anyway.
            let read_started = Instant::now();
            let record = match tokio::time::timeout(bound, read(&self.store)).await {
                Ok(Ok(_)) if read_started.elapsed() > bound => {
                    tracing::warn!(
                        ?bound,
                        "key lookup returned after the freshness bound; failing closed"
                    );
                    return Err(Reason::Unavailable);
                }
                Ok(Ok(Some(record))) => record,
                Ok(Ok(None)) => return Ok(Loaded::NotFound(ticket)),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "key lookup failed");
                    return Err(Reason::Unavailable);
                }
                Err(_) => {
                    tracing::warn!(
                        ?bound,
                        "key lookup timed out at the freshness bound; failing closed"
                    );
                    return Err(Reason::Unavailable);
                }
            };
            let key = Arc::new(CachedKey::from_record(record, &self.catalog));
            if insert(&self.cache, ticket, &key) || key.revoked_at().is_some() {
                return Ok(Loaded::Found(key));
            }
            ticket = next_ticket(&self.cache);
        }
        tracing::warn!(
            attempts = LOAD_ATTEMPTS,
            "key lookup raced a change on every read; failing closed"
        );
        Err(Reason::Unavailable)
    }
}

fn shape_reason(problem: CredentialProblem) -> Reason {
    match problem {
        CredentialProblem::Missing => Reason::MissingCredential,
        CredentialProblem::Malformed => Reason::MalformedCredential,
    }
}
