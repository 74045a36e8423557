//! The in-process [`Verifier`]: answers repeat credentials from memory,
//! follows `WatchRevocations` to forget them, and sends everything else to
//! keyward.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyward_proto as proto;
use moka::sync::Cache;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Error};

pub use keyward_proto::denial::Reason as DenialReason;

/// Metric names (see `docs/client.md`).
pub mod metric_names {
    /// Counter: verifications answered from the local cache.
    pub const LOCAL_HITS: &str = "keyward_client_local_hits_total";
    /// Counter: Authenticate calls made by the verifier (label `result`:
    /// `allowed`, `denied`, `error`).
    pub const REMOTE_CALLS: &str = "keyward_client_remote_calls_total";
    /// Counter: verifications refused locally because the verifier could
    /// not prove it is current (or keyward could not be reached).
    pub const FAIL_CLOSED: &str = "keyward_client_fail_closed_total";
    /// Gauge: age of the last proof of currency (a checkpoint, dated by
    /// the replica's own proof); updated every flush interval.
    pub const STREAM_LAG: &str = "keyward_client_stream_lag_seconds";
    /// Counter: WatchRevocations streams opened after the first.
    pub const RECONNECTS: &str = "keyward_client_stream_reconnects_total";
    /// Counter: caches emptied because the stream said OUT_OF_RANGE.
    pub const RESYNCS: &str = "keyward_client_resyncs_total";
    /// Counter: RecordUsage calls (label `result`: `ok`, `error`).
    pub const USAGE_FLUSHES: &str = "keyward_client_usage_flushes_total";
    /// Gauge: answers held in the cache.
    pub const CACHE_ENTRIES: &str = "keyward_client_cache_entries";
}

/// What to do when the verifier cannot prove it is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StalePolicy {
    /// Deny with a local UNAVAILABLE verdict (the default).
    #[default]
    FailClosed,
    /// Ask keyward for every verification (no cache) while it answers;
    /// deny with UNAVAILABLE when it does not.
    Remote,
}

/// How the verifier behaves.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// How old the last proof of currency (a checkpoint from
    /// WatchRevocations, dated by the replica's own proof) may be before
    /// the cache is no longer used.
    /// Default 2 s.
    pub freshness_bound: Duration,
    /// Past the bound: fail closed (default) or go remote.
    pub stale_policy: StalePolicy,
    /// Most answers kept. Default 100,000.
    pub max_entries: u64,
    /// How long `verify_at` waits for the stream to reach a revision before
    /// asking keyward with `min_revision`. Default 1 s.
    pub min_revision_wait: Duration,
    /// At most one RecordUsage call per this interval. Default 1 s.
    pub usage_flush_interval: Duration,
    /// Checkpoint interval asked of the server; default a quarter of the
    /// freshness bound (at least 100 ms). Must be below the bound.
    pub checkpoint_interval: Option<Duration>,
    /// Longest wait between reconnection attempts (the wait starts at
    /// 50 ms and doubles). Default 1 s.
    pub max_backoff: Duration,
    /// The `www-authenticate` value put on 401 denials. Default `Bearer`.
    pub www_authenticate: Option<String>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            freshness_bound: Duration::from_secs(2),
            stale_policy: StalePolicy::FailClosed,
            max_entries: 100_000,
            min_revision_wait: Duration::from_secs(1),
            usage_flush_interval: Duration::from_secs(1),
            checkpoint_interval: None,
            max_backoff: Duration::from_secs(1),
            www_authenticate: Some("Bearer".into()),
        }
    }
}

impl VerifierConfig {
    fn checked_checkpoint_interval(&self) -> Result<Duration, Error> {
        let bad = |m: String| Err(Error::Config(m));
        if self.freshness_bound.is_zero() {
            return bad("freshness_bound: must be more than zero".into());
        }
        if self.max_entries == 0 {
            return bad("max_entries: must be more than zero".into());
        }
        if self.usage_flush_interval.is_zero() {
            return bad("usage_flush_interval: must be more than zero".into());
        }
        if self.max_backoff < Duration::from_millis(50) {
            return bad("max_backoff: at least 50 ms".into());
        }
        let interval = self
            .checkpoint_interval
            .unwrap_or((self.freshness_bound / 4).max(Duration::from_millis(100)));
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return bad(format!(
                "checkpoint_interval: {interval:?} is outside 100 ms to 1 h (the server's range)"
            ));
        }
        if interval >= self.freshness_bound {
            return bad(format!(
                "freshness_bound: {:?} must be longer than the checkpoint interval ({interval:?}); \
                 the smallest workable bound is a little over 100 ms",
                self.freshness_bound
            ));
        }
        Ok(interval)
    }
}

/// Who a credential belongs to: cheap to clone, put in request extensions
/// by the layer.
#[derive(Clone)]
pub struct Identity(Arc<IdentityData>);

struct IdentityData {
    key_id: String,
    account_id: String,
    scopes: HashSet<String>,
}

impl Identity {
    fn from_key(key: &proto::Key) -> Self {
        Self(Arc::new(IdentityData {
            key_id: key.id.clone(),
            account_id: key.account_id.clone(),
            scopes: key.effective_scopes.iter().cloned().collect(),
        }))
    }

    /// The key's public id.
    pub fn key_id(&self) -> &str {
        &self.0.key_id
    }

    /// The account that owns the key.
    pub fn account_id(&self) -> &str {
        &self.0.account_id
    }

    /// The key's effective scopes (granted, implied and auto-granted).
    pub fn scopes(&self) -> &HashSet<String> {
        &self.0.scopes
    }

    /// Whether the key holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.contains(scope)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut scopes: Vec<&String> = self.0.scopes.iter().collect();
        scopes.sort();
        f.debug_struct("Identity")
            .field("key_id", &self.0.key_id)
            .field("account_id", &self.0.account_id)
            .field("scopes", &scopes)
            .finish()
    }
}

/// Why a request was refused, as keyward said it (or, for
/// [`DenialReason::Unavailable`] decided here, as keyward would say it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Exact reason, for logs.
    pub reason: DenialReason,
    /// What to show the caller: a short code, a message, an HTTP status.
    pub code: String,
    pub message: String,
    pub http_status: u16,
    /// For INSUFFICIENT_SCOPE: the first missing scope.
    pub required_scope: Option<String>,
    /// For RATE_LIMITED and TOO_MANY_FAILED_ATTEMPTS: when to try again.
    pub retry_after: Option<Duration>,
    /// For 401 answers: the `www-authenticate` challenge to send.
    pub www_authenticate: Option<String>,
    /// Decided by this process (fail closed), not by keyward.
    pub local: bool,
}

impl Denial {
    fn unavailable(message: &str) -> Self {
        Self {
            reason: DenialReason::Unavailable,
            code: "unavailable".into(),
            message: message.into(),
            http_status: 503,
            required_scope: None,
            retry_after: None,
            www_authenticate: None,
            local: true,
        }
    }

    fn from_proto(denial: Option<proto::Denial>, www: Option<&String>) -> Self {
        let Some(d) = denial else {
            return Self::unavailable("keyward denied the request without saying why.");
        };
        let http_status = u16::try_from(d.http_status).unwrap_or(500);
        Self {
            reason: d.reason(),
            code: d.code,
            message: d.message,
            http_status,
            required_scope: (!d.required_scope.is_empty()).then_some(d.required_scope),
            retry_after: (d.retry_after_ms > 0).then(|| Duration::from_millis(d.retry_after_ms)),
            www_authenticate: if http_status == 401 {
                www.cloned()
            } else {
                None
            },
            local: false,
        }
    }
}

/// The answer to "may this credential do this?".
#[derive(Debug, Clone)]
pub enum Verdict {
    Allowed(Identity),
    Denied(Denial),
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed(_))
    }

    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Verdict::Allowed(identity) => Some(identity),
            Verdict::Denied(_) => None,
        }
    }

    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Verdict::Allowed(_) => None,
            Verdict::Denied(denial) => Some(denial),
        }
    }
}

type Digest = [u8; 32];

/// A kept answer. Holds no secret: it is found by the credential's SHA-256.
struct Entry {
    identity: Identity,
    expires_at: Option<SystemTime>,
    /// Latest local use, Unix milliseconds.
    last_used_ms: AtomicU64,
    /// In the pending-usage list.
    queued: AtomicBool,
}

/// What the race guard and the stream share (one lock, never held across
/// an await).
#[derive(Default)]
struct Guard {
    /// Which cached digests belong to which key id.
    index: HashMap<String, Vec<Digest>>,
    /// key id → sequence and arrival of the latest event about it, kept
    /// for `RECENT_RETENTION`.
    recent: HashMap<String, (u64, Instant)>,
    /// Every event with a sequence at most this has been forgotten from
    /// `recent`: an answer that started before it is not kept.
    floor: u64,
    /// Bumped by each resync (the cache emptied).
    epoch: u64,
}

/// Counts kept by one verifier since it started (the metrics are the
/// process-wide view of the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Verifications answered from the cache.
    pub local_hits: u64,
    /// Authenticate calls made.
    pub remote_calls: u64,
    /// Verifications refused locally (not current, or keyward unreachable).
    pub fail_closed: u64,
    /// RecordUsage calls made (successful or not).
    pub usage_flushes: u64,
    /// Key uses sent with RecordUsage.
    pub uses_reported: u64,
    /// Caches emptied after OUT_OF_RANGE.
    pub resyncs: u64,
    /// WatchRevocations streams opened.
    pub streams_opened: u64,
}

#[derive(Default)]
struct Counters {
    local_hits: AtomicU64,
    remote_calls: AtomicU64,
    fail_closed: AtomicU64,
    usage_flushes: AtomicU64,
    uses_reported: AtomicU64,
    resyncs: AtomicU64,
    streams_opened: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

const RECENT_RETENTION: Duration = Duration::from_secs(60);
const RECENT_MAX: usize = 100_000;

struct Shared {
    client: Client,
    config: VerifierConfig,
    checkpoint_interval: Duration,
    cache: Cache<Digest, Arc<Entry>>,
    guard: Mutex<Guard>,
    /// The stream position applied (published after the cache changes).
    applied: watch::Sender<u64>,
    /// Time base for `proof_ms`.
    base: Instant,
    /// When the last proof of currency was, as milliseconds since `base`
    /// plus `PROOF_SHIFT_MS`; 0 = none yet.
    proof_ms: AtomicU64,
    /// Entries used locally since the last RecordUsage.
    usage: Mutex<Vec<Arc<Entry>>>,
    counters: Counters,
}

/// Verifies credentials in-process; cheap to clone. See the crate docs for
/// what it guarantees.
#[derive(Clone)]
pub struct Verifier {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

struct Tasks {
    stop: CancellationToken,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("client", &self.shared.client)
            .field("config", &self.shared.config)
            .field("cached_answers", &self.cached_answers())
            .field("applied_revision", &*self.shared.applied.borrow())
            .field("current", &self.is_current())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Proofs are stored as milliseconds after `base` plus this, so that one
/// dated before the verifier started (a checkpoint's proof is older than
/// its arrival) still fits; 0 means none yet.
const PROOF_SHIFT_MS: u64 = 1 << 40;

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn timestamp_to_system(ts: &prost_types::Timestamp) -> SystemTime {
    let secs = Duration::from_secs(u64::try_from(ts.seconds).unwrap_or(0));
    let nanos = Duration::from_nanos(u64::try_from(ts.nanos).unwrap_or(0));
    UNIX_EPOCH + secs + nanos
}

/// The cache key of a credential: SHA-256 of the credential with
/// surrounding whitespace removed. `Bearer k` and `k` are different
/// entries for the same key (both dropped by its events).
fn digest(credential: &str) -> Digest {
    Sha256::digest(credential.trim().as_bytes()).into()
}

impl Verifier {
    /// Starts a verifier over `client`: opens WatchRevocations and the
    /// usage flusher in the current tokio runtime. It fails closed until
    /// the first checkpoint arrives.
    pub fn new(client: Client, config: VerifierConfig) -> Result<Self, Error> {
        let checkpoint_interval = config.checked_checkpoint_interval()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("Verifier::new must run inside a tokio runtime".into()))?;
        let cache = Cache::builder().max_capacity(config.max_entries).build();
        let (applied, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            client,
            config,
            checkpoint_interval,
            cache,
            guard: Mutex::new(Guard::default()),
            applied,
            base: Instant::now(),
            proof_ms: AtomicU64::new(0),
            usage: Mutex::new(Vec::new()),
            counters: Counters::default(),
        });
        let stop = CancellationToken::new();
        let handles = vec![
            runtime.spawn(follow_stream(Arc::clone(&shared), stop.clone())),
            runtime.spawn(maintain(Arc::clone(&shared), stop.clone())),
        ];
        Ok(Self {
            shared,
            tasks: Arc::new(Tasks {
                stop,
                handles: Mutex::new(handles),
            }),
        })
    }

    /// The client this verifier calls.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The last stream position (revision) applied to the cache.
    pub fn applied_revision(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// Whether the verifier has had proof of currency within the bound.
    pub fn is_current(&self) -> bool {
        self.shared.is_current()
    }

    /// Waits until the verifier is current, up to `timeout`.
    pub async fn wait_current(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_current() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the stream has applied `revision` (a write's), up to
    /// `timeout`; returns whether it did.
    pub async fn wait_for_revision(&self, revision: u64, timeout: Duration) -> bool {
        let mut receiver = self.shared.applied.subscribe();
        matches!(
            tokio::time::timeout(timeout, receiver.wait_for(|applied| *applied >= revision)).await,
            Ok(Ok(_))
        )
    }

    /// This verifier's counts so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            local_hits: get(&c.local_hits),
            remote_calls: get(&c.remote_calls),
            fail_closed: get(&c.fail_closed),
            usage_flushes: get(&c.usage_flushes),
            uses_reported: get(&c.uses_reported),
            resyncs: get(&c.resyncs),
            streams_opened: get(&c.streams_opened),
        }
    }

    /// Answers kept right now (approximate).
    pub fn cached_answers(&self) -> u64 {
        self.shared.cache.run_pending_tasks();
        self.shared.cache.entry_count()
    }

    /// May `credential` use all of `required_scopes`?
    pub async fn verify<S: AsRef<str>>(&self, credential: &str, required_scopes: &[S]) -> Verdict {
        self.shared
            .verify(credential, required_scopes, 0, None)
            .await
    }

    /// As [`Verifier::verify`], with an answer at least as current as
    /// `min_revision` (a revision returned by a write).
    pub async fn verify_at<S: AsRef<str>>(
        &self,
        credential: &str,
        required_scopes: &[S],
        min_revision: u64,
    ) -> Verdict {
        self.shared
            .verify(credential, required_scopes, min_revision, None)
            .await
    }

    /// As [`Verifier::verify_at`], naming the end client's address for
    /// keyward's failed-authentication bans (believed only from a service
    /// token with `trust_client_ip`).
    pub async fn verify_from<S: AsRef<str>>(
        &self,
        credential: &str,
        required_scopes: &[S],
        min_revision: u64,
        client_ip: Option<&str>,
    ) -> Verdict {
        self.shared
            .verify(credential, required_scopes, min_revision, client_ip)
            .await
    }

    /// Stops following the stream and sends the uses not yet reported.
    pub async fn shutdown(&self) {
        self.tasks.stop.cancel();
        let handles = std::mem::take(&mut *lock(&self.tasks.handles));
        for handle in handles {
            let _ = handle.await;
        }
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Time since the last proof of currency (`None`: never had one).
    fn lag(&self) -> Option<Duration> {
        let proof = self.proof_ms.load(Ordering::Acquire);
        (proof != 0)
            .then(|| Duration::from_millis((self.now_ms() + PROOF_SHIFT_MS).saturating_sub(proof)))
    }

    fn is_current(&self) -> bool {
        self.lag()
            .is_some_and(|lag| lag <= self.config.freshness_bound)
    }

    /// Records a checkpoint that arrived now, dated `at` by the replica
    /// (when it last proved itself current). The proof is as old as that
    /// date says; a clock here behind the server's counts it from arrival,
    /// never later.
    fn mark_proof(&self, at: Option<&prost_types::Timestamp>) {
        let age = at
            .and_then(|at| {
                SystemTime::now()
                    .duration_since(timestamp_to_system(at))
                    .ok()
            })
            .map_or(0, |age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        let proved = (self.now_ms() + PROOF_SHIFT_MS).saturating_sub(age).max(1);
        self.proof_ms.fetch_max(proved, Ordering::AcqRel);
    }

    fn fail_closed(&self, message: &str) -> Verdict {
        bump(&self.counters.fail_closed, 1);
        metrics::counter!(metric_names::FAIL_CLOSED).increment(1);
        Verdict::Denied(Denial::unavailable(message))
    }

    async fn verify<S: AsRef<str>>(
        &self,
        credential: &str,
        scopes: &[S],
        min_revision: u64,
        client_ip: Option<&str>,
    ) -> Verdict {
        let mut applied = *self.applied.borrow();
        if min_revision > applied {
            applied = self.wait_for(min_revision).await;
        }
        let revision_reached = applied >= min_revision;
        let current = self.is_current();
        if !current && self.config.stale_policy == StalePolicy::FailClosed {
            return self.fail_closed(
                "Authorization is temporarily unavailable (cannot prove revocations are current); retry shortly.",
            );
        }
        let digest = digest(credential);
        if current
            && revision_reached
            && let Some(entry) = self.cache.get(&digest)
        {
            let now = SystemTime::now();
            let unexpired = entry.expires_at.is_none_or(|at| now < at);
            if unexpired
                && scopes
                    .iter()
                    .all(|s| entry.identity.0.scopes.contains(s.as_ref()))
            {
                self.record_use(&entry, now);
                bump(&self.counters.local_hits, 1);
                metrics::counter!(metric_names::LOCAL_HITS).increment(1);
                return Verdict::Allowed(entry.identity.clone());
            }
        }
        self.remote(credential, digest, scopes, min_revision, client_ip, current)
            .await
    }

    /// Waits (bounded) for the stream to apply `revision`; returns the
    /// position reached.
    async fn wait_for(&self, revision: u64) -> u64 {
        let mut receiver = self.applied.subscribe();
        let reached = tokio::time::timeout(
            self.config.min_revision_wait,
            receiver.wait_for(|applied| *applied >= revision),
        )
        .await;
        match reached {
            Ok(Ok(applied)) => *applied,
            _ => *self.applied.borrow(),
        }
    }

    fn record_use(&self, entry: &Arc<Entry>, now: SystemTime) {
        let ms = unix_millis(now);
        if entry.last_used_ms.load(Ordering::SeqCst) < ms {
            entry.last_used_ms.fetch_max(ms, Ordering::SeqCst);
        }
        // SeqCst pairs with the flusher's `queued.store(false)` then
        // `last_used_ms.load()`: either it sees this use, or this sees
        // `queued == false` and queues the entry again.
        if !entry.queued.load(Ordering::SeqCst) && !entry.queued.swap(true, Ordering::SeqCst) {
            lock(&self.usage).push(Arc::clone(entry));
        }
    }

    async fn remote<S: AsRef<str>>(
        &self,
        credential: &str,
        digest: Digest,
        scopes: &[S],
        min_revision: u64,
        client_ip: Option<&str>,
        current: bool,
    ) -> Verdict {
        // The race guard's starting point: the stream position and epoch
        // before the call. The server answers at least as currently.
        let (start, epoch) = {
            let guard = lock(&self.guard);
            (*self.applied.borrow(), guard.epoch)
        };
        let request = proto::AuthenticateRequest {
            credential: credential.to_owned(),
            required_scopes: scopes.iter().map(|s| s.as_ref().to_owned()).collect(),
            client_ip: client_ip.unwrap_or_default().to_owned(),
            min_revision: start.max(min_revision),
        };
        bump(&self.counters.remote_calls, 1);
        let response = match self.shared_client().authenticate(request).await {
            Ok(response) => response,
            Err(error) => {
                metrics::counter!(metric_names::REMOTE_CALLS, "result" => "error").increment(1);
                tracing::warn!(%error, "keyward Authenticate failed; failing closed");
                return self
                    .fail_closed("Authorization is temporarily unavailable; retry shortly.");
            }
        };
        if !response.allowed {
            metrics::counter!(metric_names::REMOTE_CALLS, "result" => "denied").increment(1);
            return Verdict::Denied(Denial::from_proto(
                response.denial,
                self.config.www_authenticate.as_ref(),
            ));
        }
        metrics::counter!(metric_names::REMOTE_CALLS, "result" => "allowed").increment(1);
        let Some(key) = response.key else {
            return self.fail_closed("keyward allowed the request without naming the key.");
        };
        let identity = Identity::from_key(&key);
        if response.cacheable && current {
            let entry = Arc::new(Entry {
                identity: identity.clone(),
                expires_at: key.expires_at.as_ref().map(timestamp_to_system),
                last_used_ms: AtomicU64::new(0),
                queued: AtomicBool::new(false),
            });
            self.keep(digest, entry, start, epoch);
        }
        Verdict::Allowed(identity)
    }

    fn shared_client(&self) -> &Client {
        &self.client
    }

    /// Keeps an answer that started at stream position `start` in `epoch`,
    /// unless an event about its key (or a resync) was applied since.
    fn keep(&self, digest: Digest, entry: Arc<Entry>, start: u64, epoch: u64) {
        let key_id = entry.identity.key_id();
        let mut guard = lock(&self.guard);
        if guard.epoch != epoch || start < guard.floor {
            return;
        }
        if guard
            .recent
            .get(key_id)
            .is_some_and(|(seq, _)| *seq > start)
        {
            return;
        }
        let digests = guard.index.entry(key_id.to_owned()).or_default();
        if !digests.contains(&digest) {
            digests.push(digest);
        }
        self.cache.insert(digest, entry);
    }

    /// Applies one stream message. Returns whether it was a checkpoint.
    fn apply(&self, event: &proto::RevocationEvent) -> bool {
        let checkpoint = event.kind == "checkpoint";
        {
            let mut guard = lock(&self.guard);
            if !checkpoint {
                if event.key_id.is_empty() {
                    // An event about no key that is not a checkpoint: a
                    // kind this version does not know. Forget everything.
                    Self::forget_all(&mut guard, &self.cache);
                } else {
                    guard
                        .recent
                        .insert(event.key_id.clone(), (event.seq, Instant::now()));
                    if let Some(digests) = guard.index.remove(&event.key_id) {
                        for digest in digests {
                            self.cache.invalidate(&digest);
                        }
                    }
                }
            }
            // Published under the lock, so a remote call that reads this
            // position also reads the matching epoch.
            self.applied.send_replace(event.seq);
        }
        checkpoint
    }

    fn forget_all(guard: &mut Guard, cache: &Cache<Digest, Arc<Entry>>) {
        guard.epoch += 1;
        guard.index.clear();
        guard.recent.clear();
        guard.floor = 0;
        cache.invalidate_all();
    }

    /// OUT_OF_RANGE: empty the cache and start again from 0.
    fn resync(&self) {
        bump(&self.counters.resyncs, 1);
        metrics::counter!(metric_names::RESYNCS).increment(1);
        let mut guard = lock(&self.guard);
        Self::forget_all(&mut guard, &self.cache);
        self.applied.send_replace(0);
    }

    /// Drops index and `recent` entries that no longer matter.
    fn tidy(&self) {
        let now = Instant::now();
        let mut guard = lock(&self.guard);
        let mut floor = guard.floor;
        guard.recent.retain(|_, (seq, at)| {
            let keep = now.duration_since(*at) < RECENT_RETENTION;
            if !keep {
                floor = floor.max(*seq);
            }
            keep
        });
        if guard.recent.len() > RECENT_MAX {
            for (seq, _) in guard.recent.values() {
                floor = floor.max(*seq);
            }
            guard.recent.clear();
        }
        guard.floor = floor;
        let cache = &self.cache;
        guard.index.retain(|_, digests| {
            digests.retain(|d| cache.contains_key(d));
            !digests.is_empty()
        });
    }

    /// Sends the uses recorded since the last flush (one per key, latest).
    async fn flush_usage(&self) {
        let pending = std::mem::take(&mut *lock(&self.usage));
        if pending.is_empty() {
            return;
        }
        let mut latest: HashMap<&str, u64> = HashMap::with_capacity(pending.len());
        for entry in &pending {
            entry.queued.store(false, Ordering::SeqCst);
            let ms = entry.last_used_ms.load(Ordering::SeqCst);
            let slot = latest.entry(entry.identity.key_id()).or_insert(0);
            *slot = (*slot).max(ms);
        }
        let uses: Vec<proto::KeyUse> = latest
            .into_iter()
            .map(|(key_id, ms)| proto::KeyUse {
                key_id: key_id.to_owned(),
                used_at: Some(prost_types::Timestamp {
                    seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
                    nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
                }),
            })
            .collect();
        let mut failed = false;
        for chunk in uses.chunks(10_000) {
            let request = proto::RecordUsageRequest {
                uses: chunk.to_vec(),
            };
            bump(&self.counters.usage_flushes, 1);
            match self.client.record_usage(request).await {
                Ok(_) => {
                    bump(&self.counters.uses_reported, chunk.len() as u64);
                    metrics::counter!(metric_names::USAGE_FLUSHES, "result" => "ok").increment(1);
                }
                Err(error) => {
                    metrics::counter!(metric_names::USAGE_FLUSHES, "result" => "error")
                        .increment(1);
                    tracing::warn!(%error, "keyward RecordUsage failed; will retry");
                    failed = true;
                }
            }
        }
        if failed {
            // Try again next time (an entry already queued again is skipped).
            let mut usage = lock(&self.usage);
            for entry in pending {
                if !entry.queued.swap(true, Ordering::SeqCst) {
                    usage.push(entry);
                }
            }
        }
    }
}

/// Follows WatchRevocations for the verifier's life: resumes after the last
/// sequence received, restarts from 0 after OUT_OF_RANGE.
async fn follow_stream(shared: Arc<Shared>, stop: CancellationToken) {
    let mut after_seq = 0_u64;
    let mut backoff = Duration::from_millis(50);
    let mut opened = 0_u64;
    // A stream that says nothing for this long is presumed dead.
    let idle_limit = shared.config.freshness_bound * 2;
    let interval_ms = u32::try_from(shared.checkpoint_interval.as_millis()).unwrap_or(u32::MAX);
    loop {
        let request = proto::WatchRevocationsRequest {
            after_seq,
            account_id: String::new(),
            checkpoint_interval_ms: interval_ms,
        };
        let opening = tokio::select! {
            () = stop.cancelled() => return,
            opening = shared.client.watch_revocations(request) => opening,
        };
        let mut ended: Option<tonic::Status> = None;
        match opening {
            Ok(mut stream) => {
                opened += 1;
                bump(&shared.counters.streams_opened, 1);
                if opened > 1 {
                    metrics::counter!(metric_names::RECONNECTS).increment(1);
                }
                // Only checkpoints prove currency: an event says how far the
                // stream has got, not that nothing newer exists (a resumed
                // stream replays history first).
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        message = tokio::time::timeout(idle_limit, stream.message()) => message,
                    };
                    match message {
                        Ok(Ok(Some(event))) => {
                            let checkpoint = shared.apply(&event);
                            after_seq = event.seq;
                            if checkpoint {
                                shared.mark_proof(event.at.as_ref());
                                backoff = Duration::from_millis(50);
                            }
                        }
                        Ok(Ok(None)) => break,
                        Ok(Err(status)) => {
                            ended = Some(status);
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(
                                "keyward WatchRevocations silent for {idle_limit:?}; reconnecting"
                            );
                            break;
                        }
                    }
                }
            }
            Err(Error::Status(status)) => ended = Some(status),
            Err(error) => tracing::warn!(%error, "cannot open WatchRevocations"),
        }
        if let Some(status) = ended {
            if status.code() == tonic::Code::OutOfRange {
                tracing::warn!(
                    message = status.message(),
                    "WatchRevocations out of range; emptying the cache and restarting"
                );
                shared.resync();
                after_seq = 0;
            } else {
                tracing::warn!(code = ?status.code(), message = status.message(), "WatchRevocations ended; resuming after {after_seq}");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(shared.config.max_backoff);
    }
}

/// Every flush interval: RecordUsage, the lag gauge, tidying. A last flush
/// at shutdown.
async fn maintain(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.usage_flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                shared.flush_usage().await;
                return;
            }
            _ = tick.tick() => {}
        }
        shared.flush_usage().await;
        let lag = shared.lag().map_or(f64::INFINITY, |lag| lag.as_secs_f64());
        metrics::gauge!(metric_names::STREAM_LAG).set(lag);
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(metric_names::CACHE_ENTRIES).set(shared.cache.entry_count() as f64);
        shared.tidy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientConfig;

    fn ago(age: Duration) -> prost_types::Timestamp {
        let at = SystemTime::now() - age;
        let since = at.duration_since(UNIX_EPOCH).unwrap();
        prost_types::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap(),
            nanos: i32::try_from(since.subsec_nanos()).unwrap(),
        }
    }

    /// A checkpoint is as old as the replica's proof it carries, not as
    /// old as its arrival: one dated past the bound proves nothing, one
    /// dated in the future (a clock here behind keyward's) counts from now.
    #[tokio::test]
    async fn a_checkpoint_proves_currency_as_of_its_date() {
        // Nothing listens there: the stream never opens, so only the
        // proofs marked below count.
        let client = Client::connect_lazy(ClientConfig::new("http://127.0.0.1:9")).unwrap();
        let verifier = Verifier::new(client, VerifierConfig::default()).unwrap();
        let shared = &verifier.shared;
        assert!(!shared.is_current(), "current before any checkpoint");

        shared.mark_proof(Some(&ago(Duration::from_secs(5))));
        assert!(!shared.is_current(), "a proof 5 s old passed a 2 s bound");

        shared.mark_proof(Some(&ago(Duration::from_millis(100))));
        assert!(shared.is_current());
        let lag = shared.lag().unwrap();
        assert!(lag >= Duration::from_millis(100), "{lag:?}");

        // An older proof never replaces a newer one.
        shared.mark_proof(Some(&ago(Duration::from_secs(60))));
        assert!(shared.is_current());

        let future = prost_types::Timestamp {
            seconds: ago(Duration::ZERO).seconds + 3_600,
            nanos: 0,
        };
        shared.mark_proof(Some(&future));
        assert!(shared.lag().unwrap() < Duration::from_secs(1));
        verifier.shutdown().await;
    }
}
