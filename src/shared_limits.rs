//! Limits shared by all replicas (`[limits] backend = "redis"`): per-key
//! rate limits and failed-authentication bans kept in Redis (or Valkey), so
//! a key limited to N requests gets N across every replica, not N per
//! replica, and guesses spread over replicas are counted together.
//!
//! - **Rate limits (`mode = "exact"`)**: the key's GCRA state (its
//!   theoretical arrival time, in microseconds of the Redis server's clock)
//!   lives in Redis and is updated by one server-side script
//!   ([`RATE_SCRIPT`]), atomically: never more than the limit across
//!   replicas. One round trip per limited request (EVALSHA; the script is
//!   loaded again by itself after a Redis restart), on one multiplexed
//!   connection, so concurrent requests are pipelined.
//! - **Bans**: failures are counted per address in Redis ([`FAILURE_SCRIPT`]);
//!   the failure that reaches `bans.max_failures` sets the ban in a sorted
//!   set (address → end, Redis clock) and publishes it. Every replica keeps
//!   a local copy of the bans in force (the existing `FailedAuthBans` table),
//!   fed by that channel and by a full read of the set every
//!   [`BAN_SYNC_INTERVAL`], so the ban check stays in memory, before any
//!   hashing or lookup.
//!
//! Every call is cut off at `limits.redis_timeout_seconds`: a stalled Redis
//! costs a request at most that, and then the request is handled as
//! `limits.on_backend_error` says (see [`OnBackendError`]).
//!
//! Redis keys all start with `limits.redis_key_prefix`. The failure script
//! touches two keys, so a Redis Cluster is not supported (one server, or a
//! primary with replicas, is).

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;

use crate::domain::{KeyId, Quota, QuotaUsage, RateLimit, Refill};
use crate::failed_auth_bans::BanSettings;
use crate::rate_limits::{RateDecision, RateLimitStatus};
use crate::settings::{SettingError, seconds};

pub const DEFAULT_KEY_PREFIX: &str = "keyward:";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often each replica reads the whole set of bans in force, besides the
/// channel that announces each ban as it starts (which a replica misses
/// while its subscription is down).
pub const BAN_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The most bans a sync reads (the local table holds
/// `bans.max_tracked_addresses` at most anyway).
const MAX_SYNCED_BANS: u64 = 1_000_000;

/// A warning about Redis failing is logged at most this often per kind.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Where limits are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsBackend {
    /// In each replica's memory (the default): limits are per replica.
    Local,
    /// In Redis, shared by every replica.
    Redis,
}

/// How shared rate limits are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    /// Every limited request asks Redis: never more than the limit.
    Exact,
    /// Each replica takes tokens from Redis in batches (a lease, see
    /// [`lease_size`]) and spends them locally, asking Redis again when the
    /// lease is spent (or, after Redis had none, no sooner than the next
    /// token or `sync`). A token is taken from Redis before it is handed
    /// out, but a replica may spend it later than it took it: over any
    /// window at most one lease per replica more than the limit, and a
    /// replica may refuse while others hold at most a lease each, unspent.
    Approximate { sync: Duration },
}

pub const DEFAULT_APPROXIMATE_SYNC: Duration = Duration::from_millis(10);

/// The most tokens one lease takes.
pub const MAX_LEASE: u64 = 1_024;

/// How many tokens a replica takes at once in approximate mode: what the
/// limit earns in two sync intervals, at least 1, at most [`MAX_LEASE`]
/// (also the overshoot bound per replica).
pub fn lease_size(limit: RateLimit, sync: Duration) -> u64 {
    let per_second = f64::from(limit.requests()) / f64::from(limit.per_seconds());
    ((per_second * sync.as_secs_f64() * 2.0).ceil() as u64).clamp(1, MAX_LEASE)
}

/// What a request does when Redis cannot answer within the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendError {
    /// Fail closed: a request that needs Redis (a rate-limited key) is
    /// denied UNAVAILABLE (HTTP 503).
    Deny,
    /// Fall back to this replica's own limits (as `backend = "local"`)
    /// until Redis answers again.
    Local,
}

impl OnBackendError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Local => "local",
        }
    }
}

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub backend: Option<String>,
    pub redis_url: Option<String>,
    pub redis_key_prefix: Option<String>,
    pub redis_timeout_seconds: Option<f64>,
    pub redis_connect_timeout_seconds: Option<f64>,
    pub mode: Option<String>,
    pub approximate_sync_ms: Option<f64>,
    pub on_backend_error: Option<String>,
}

/// `[limits]`, validated. With `backend = "redis"`, `redis_url` may still
/// come from `--redis-url` / `KEYWARD_REDIS_URL`; [`SharedLimits::connect`]
/// names the setting if it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSettings {
    pub backend: LimitsBackend,
    /// Its `Debug` and `Display` hide the password.
    pub redis_url: Option<RedisUrl>,
    pub key_prefix: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub mode: LimitMode,
    pub on_backend_error: OnBackendError,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self::from_raw(RawLimits::default()).expect("the defaults are valid")
    }
}

impl LimitsSettings {
    /// Validates `[limits]`.
    pub fn from_raw(raw: RawLimits) -> Result<Self, SettingError> {
        let backend = match raw.backend.as_deref() {
            None | Some("local") => LimitsBackend::Local,
            Some("redis") => LimitsBackend::Redis,
            Some(other) => {
                return Err(SettingError::new(
                    "limits.backend",
                    format!("{other:?} is not a backend; use \"local\" or \"redis\""),
                ));
            }
        };
        let redis_url = raw
            .redis_url
            .as_deref()
            .map(RedisUrl::parse)
            .transpose()
            .map_err(SettingError::at("limits.redis_url"))?;
        let key_prefix = raw
            .redis_key_prefix
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || !key_prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(SettingError::new(
                "limits.redis_key_prefix",
                "must be 1 to 64 printable ASCII characters without spaces",
            ));
        }
        let timeout = match raw.redis_timeout_seconds {
            None => DEFAULT_TIMEOUT,
            Some(value) => seconds(value, 0.001, 10.0)
                .map_err(SettingError::at("limits.redis_timeout_seconds"))?,
        };
        let connect_timeout = match raw.redis_connect_timeout_seconds {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(value) => seconds(value, 0.01, 60.0)
                .map_err(SettingError::at("limits.redis_connect_timeout_seconds"))?,
        };
        let sync = match raw.approximate_sync_ms {
            None => DEFAULT_APPROXIMATE_SYNC,
            Some(ms) => seconds(ms / 1000.0, 0.001, 1.0).map_err(|_| {
                SettingError::new(
                    "limits.approximate_sync_ms",
                    format!("must be between 1 and 1000, got {ms}"),
                )
            })?,
        };
        let mode = match raw.mode.as_deref() {
            None | Some("exact") => LimitMode::Exact,
            Some("approximate") => LimitMode::Approximate { sync },
            Some(other) => {
                return Err(SettingError::new(
                    "limits.mode",
                    format!("{other:?} is not a mode; use \"exact\" or \"approximate\""),
                ));
            }
        };
        let on_backend_error = match raw.on_backend_error.as_deref() {
            None | Some("local") => OnBackendError::Local,
            Some("deny") => OnBackendError::Deny,
            Some(other) => {
                return Err(SettingError::new(
                    "limits.on_backend_error",
                    format!("{other:?} is not a choice; use \"deny\" or \"local\""),
                ));
            }
        };
        Ok(Self {
            backend,
            redis_url,
            key_prefix,
            timeout,
            connect_timeout,
            mode,
            on_backend_error,
        })
    }
}

/// A Redis URL (`redis://`, `rediss://`, `unix://`, `redis+unix://`) that
/// redis-rs can connect with. `Display` and `Debug` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the URL. Reasons never quote it, so a mistyped URL's password
    /// is not echoed.
    pub fn parse(url: &str) -> Result<Self, String> {
        let scheme = url.split("://").next().unwrap_or_default();
        if !url.contains("://") || !["redis", "rediss", "unix", "redis+unix"].contains(&scheme) {
            return Err(
                "not a Redis URL; use redis://[:PASSWORD@]HOST[:PORT][/DB] (or rediss://, unix://)"
                    .into(),
            );
        }
        if scheme == "rediss" {
            return Err("rediss:// (TLS) is not supported by this build; use redis://".into());
        }
        redis::Client::open(url).map_err(|error| {
            format!(
                "not a valid Redis URL ({})",
                error.detail().unwrap_or("cannot parse it")
            )
        })?;
        Ok(Self(url.to_owned()))
    }

    /// The URL as given, password included: for connecting, never output.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::storage::redact_password(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisUrl")
            .field(&crate::storage::redact_password(&self.0))
            .finish()
    }
}

/// Connecting at startup failed. The message names the setting and the URL
/// without its password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "`limits.redis_url` (or --redis-url / KEYWARD_REDIS_URL) must be set when \
         `limits.backend = \"redis\"`"
    )]
    MissingUrl,
    #[error("`limits.redis_url` {url}: cannot reach Redis: {reason}")]
    Unreachable { url: RedisUrl, reason: String },
}

/// Redis did not answer (in time, or at all). Never carries the URL.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(String);

impl From<redis::RedisError> for BackendError {
    fn from(error: redis::RedisError) -> Self {
        Self(describe(&error))
    }
}

/// A redis-rs error in words that cannot include the URL.
fn describe(error: &redis::RedisError) -> String {
    match (error.is_timeout(), error.is_connection_refusal()) {
        (true, _) => "timed out".into(),
        (_, true) => "connection refused".into(),
        _ => format!(
            "{:?}{}",
            error.kind(),
            error
                .detail()
                .map(|detail| format!(": {detail}"))
                .unwrap_or_default()
        ),
    }
}

/// GCRA in Redis. KEYS[1]: the key's state (its theoretical arrival time,
/// microseconds); ARGV[1]: the emission interval (microseconds, may be
/// fractional); ARGV[2]: the burst (the limit's requests). The Redis
/// server's clock is the only clock, so replicas' clocks do not matter.
/// Returns {allowed (0/1), remaining, retry_after_us, reset_us}.
const RATE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tau = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - tau > now then
  return {0, 0, math.ceil(new_tat - tau - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((now + tau - new_tat) / interval + 0.000001)
return {1, remaining, 0, math.ceil(new_tat - now)}
";

/// A lease of tokens from the GCRA state (approximate mode). KEYS[1]: the
/// key's state; ARGV: interval (us), burst, tokens wanted, tokens given back
/// (an expired lease's unspent ones, subtracted first). Returns {granted,
/// remaining after, retry_after_us (when none), reset_us}.
const LEASE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local tau = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
tat = tat - back * interval
if tat < now then tat = now end
local available = math.floor((now + tau - tat) / interval + 0.000001)
local granted = math.min(want, available)
if granted <= 0 then
  if back > 0 then
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  return {0, 0, math.ceil(tat + interval - tau - now), math.ceil(tat - now)}
end
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {granted, available - granted, 0, math.ceil(new_tat - now)}
";

/// One replica's lease of a key's tokens (approximate mode).
#[derive(Default)]
struct Lease {
    state: tokio::sync::Mutex<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    /// Leased and not yet spent.
    tokens: u64,
    /// What Redis had left after the lease, and until full.
    remaining: u64,
    reset: Duration,
    /// After a refusal: ask Redis again no sooner than `recheck_at`; the
    /// next token comes at `next_token_at`.
    recheck_at: Option<Instant>,
    next_token_at: Option<Instant>,
}

/// One invalid credential from an address. KEYS[1]: its failure count;
/// KEYS[2]: the bans in force (sorted set: address → end, milliseconds of
/// the Redis clock). ARGV: max_failures, window_ms, ban_ms, address,
/// channel. Returns {state, remaining_ms}: state 0 counted, 1 already
/// banned, 2 banned by this failure (and announced on the channel as
/// "ADDRESS REMAINING_MS").
const FAILURE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local banned_until = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[4]))
if banned_until and banned_until > now then
  return {1, banned_until - now}
end
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if count < tonumber(ARGV[1]) then return {0, 0} end
redis.call('DEL', KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local ban_ms = tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], now + ban_ms, ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4] .. ' ' .. ban_ms)
return {2, ban_ms}
";

/// The bans in force. KEYS[1]: the sorted set; ARGV[1]: how many at most.
/// Returns a flat list: address, remaining_ms, address, remaining_ms, ...
const BANS_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local bans = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for i = 1, #bans, 2 do
  out[#out + 1] = bans[i]
  out[#out + 1] = tostring(math.floor(tonumber(bans[i + 1]) - now))
end
return out
";

/// One request against a key's usage quota. KEYS[1]: its count (a hash:
/// p = period, u = used). ARGV: requests, the current period (from the
/// replica's clock), the period and use to start from when Redis has none
/// (what the database holds), and the expiry in ms (0: none). A period
/// earlier than the stored one (a replica's clock behind) changes nothing.
/// Returns {allowed (0/1), period, used}.
const QUOTA_SCRIPT: &str = r"
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'p', 'u')
local p = tonumber(state[1])
local u = tonumber(state[2])
if not p or not u then
  p = tonumber(ARGV[3])
  u = tonumber(ARGV[4])
end
if period > p then
  p = period
  u = 0
end
local allowed = 0
if u < limit then
  u = u + 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'p', string.format('%.0f', p), 'u', string.format('%.0f', u))
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return {allowed, p, u}
";

/// What a failure did in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedFailure {
    /// Counted; no ban yet.
    Counted,
    /// The address was already banned (another replica's ban this one had
    /// not heard of yet), for this much longer.
    AlreadyBanned(Duration),
    /// This failure started a ban of this length.
    Banned(Duration),
}

/// The connection to Redis and the scripts, shared by the hot path and the
/// ban follower of one replica.
pub struct SharedLimits {
    client: redis::Client,
    connection: ConnectionManager,
    settings: LimitsSettings,
    rate: redis::Script,
    failure: redis::Script,
    bans: redis::Script,
    quota: redis::Script,
    lease: redis::Script,
    /// Approximate mode's leases, by Redis key (bounded: the key cache's
    /// capacity; an evicted lease's unspent tokens come back with the
    /// bucket's refill).
    leases: moka::sync::Cache<String, std::sync::Arc<Lease>>,
    origin: Instant,
    /// Milliseconds after `origin` of the last warning (0: never), so an
    /// outage logs one line per `WARN_INTERVAL`.
    last_warning_ms: AtomicU64,
}

impl fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// Connects (within `limits.redis_connect_timeout_seconds`) and checks
    /// that Redis answers, so a wrong or unreachable URL stops startup with
    /// an error naming the setting. `None` for `backend = "local"`.
    pub async fn connect(settings: &LimitsSettings) -> Result<Option<Self>, ConnectError> {
        Self::connect_with(settings, 100_000).await
    }

    /// [`SharedLimits::connect`], keeping at most `lease_capacity` keys'
    /// leases (approximate mode).
    pub async fn connect_with(
        settings: &LimitsSettings,
        lease_capacity: u64,
    ) -> Result<Option<Self>, ConnectError> {
        if settings.backend == LimitsBackend::Local {
            return Ok(None);
        }
        let url = settings.redis_url.clone().ok_or(ConnectError::MissingUrl)?;
        let unreachable = |reason: String| ConnectError::Unreachable {
            url: url.clone(),
            reason,
        };
        let client = redis::Client::open(url.expose()).map_err(|e| unreachable(describe(&e)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.timeout))
            // Reconnects are retried quickly and without end: a request
            // that finds Redis down is handled by `on_backend_error`, and
            // the next one after Redis is back must find it back.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(usize::MAX);
        let mut connection = tokio::time::timeout(
            settings.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(describe(&e)))?;
        let pong: String = tokio::time::timeout(
            settings.connect_timeout,
            redis::cmd("PING").query_async(&mut connection),
        )
        .await
        .map_err(|_| unreachable("PING timed out".into()))?
        .map_err(|e| unreachable(describe(&e)))?;
        if pong != "PONG" {
            return Err(unreachable(format!("PING answered {pong:?}")));
        }
        tracing::info!(url = %url, prefix = %settings.key_prefix, "limits shared through Redis");
        Ok(Some(Self {
            client,
            connection,
            settings: settings.clone(),
            rate: redis::Script::new(RATE_SCRIPT),
            failure: redis::Script::new(FAILURE_SCRIPT),
            bans: redis::Script::new(BANS_SCRIPT),
            quota: redis::Script::new(QUOTA_SCRIPT),
            lease: redis::Script::new(LEASE_SCRIPT),
            leases: moka::sync::Cache::builder()
                .max_capacity(lease_capacity)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            origin: Instant::now(),
            last_warning_ms: AtomicU64::new(0),
        }))
    }

    pub fn settings(&self) -> &LimitsSettings {
        &self.settings
    }

    pub fn on_backend_error(&self) -> OnBackendError {
        self.settings.on_backend_error
    }

    /// Runs a script within the timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async(&mut connection),
        )
        .await
        {
            Ok(result) => result.map_err(BackendError::from),
            Err(_) => Err(BackendError("timed out".into())),
        }
    }

    /// Takes one request from the key's budget, for every replica at once.
    pub async fn check_rate(
        &self,
        id: &KeyId,
        limit: RateLimit,
    ) -> Result<RateDecision, BackendError> {
        let key = self.rate_key(id, limit);
        if let LimitMode::Approximate { sync } = self.settings.mode {
            return self.check_rate_leased(key, limit, sync).await;
        }
        let requests = u64::from(limit.requests());
        let interval_us = interval_us(limit);
        let mut invocation = self.rate.key(key);
        invocation.arg(format!("{interval_us:.6}")).arg(requests);
        let (allowed, remaining, retry_after_us, reset_us): (i64, i64, i64, i64) =
            self.run(invocation).await?;
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        let status = RateLimitStatus {
            limit: limit.requests(),
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            reset: micros(reset_us),
        };
        Ok(if allowed == 1 {
            RateDecision::Allowed(status)
        } else {
            RateDecision::Limited {
                status: RateLimitStatus {
                    remaining: 0,
                    ..status
                },
                retry_after: micros(retry_after_us).max(Duration::from_millis(1)),
            }
        })
    }

    /// Takes one request from a key's quota, for every replica at once.
    /// `start` is the use to begin from when Redis holds none (after a
    /// Redis restart, or a switch from the local backend). Returns whether
    /// it was allowed and the use after it.
    pub async fn take_quota(
        &self,
        id: &KeyId,
        quota: Quota,
        period: u64,
        start: QuotaUsage,
    ) -> Result<(bool, QuotaUsage), BackendError> {
        // Each quota has its own count: a changed quota starts afresh.
        let key = format!(
            "{}quota:{}:{}:{}",
            self.settings.key_prefix,
            id.as_str(),
            quota.requests(),
            quota.refill().as_str()
        );
        // Kept a period past its own, then dropped (`never`: kept).
        let expiry_ms: u64 = match quota.refill() {
            Refill::Never => 0,
            Refill::Daily => 2 * 86_400_000,
            Refill::Monthly => 62 * 86_400_000,
        };
        let mut invocation = self.quota.key(key);
        invocation
            .arg(quota.requests())
            .arg(period)
            .arg(start.period)
            .arg(start.used)
            .arg(expiry_ms);
        let (allowed, period, used): (i64, i64, i64) = self.run(invocation).await?;
        Ok((
            allowed == 1,
            QuotaUsage {
                period: u64::try_from(period).unwrap_or(0),
                used: u64::try_from(used).unwrap_or(0),
            },
        ))
    }

    /// Each limit has its own state: a changed limit starts a fresh
    /// bucket, as the local limiter does.
    fn rate_key(&self, id: &KeyId, limit: RateLimit) -> String {
        format!(
            "{}rl:{}:{}:{}",
            self.settings.key_prefix,
            id.as_str(),
            limit.requests(),
            limit.per_seconds()
        )
    }

    /// Approximate mode: spends a token of this replica's lease, or leases
    /// more (one round trip per lease), or, while Redis has none, refuses
    /// locally until the next token or the next sync, whichever is sooner.
    async fn check_rate_leased(
        &self,
        key: String,
        limit: RateLimit,
        sync: Duration,
    ) -> Result<RateDecision, BackendError> {
        let lease = self.leases.get_with_by_ref(&key, Default::default);
        let mut state = lease.state.lock().await;
        let now = Instant::now();
        let status = |remaining: u64, reset: Duration| RateLimitStatus {
            limit: limit.requests(),
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset,
        };
        if state.tokens > 0 {
            state.tokens -= 1;
            return Ok(RateDecision::Allowed(status(
                state.remaining + state.tokens,
                state.reset,
            )));
        }
        if state.tokens == 0
            && let (Some(recheck), Some(next)) = (state.recheck_at, state.next_token_at)
            && now < recheck
        {
            return Ok(RateDecision::Limited {
                status: status(0, state.reset),
                retry_after: next
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            });
        }
        // Nothing to give back (the lease is spent); the script can also
        // take tokens back, which this version does not use.
        let back = 0u64;
        let mut invocation = self.lease.key(&key);
        invocation
            .arg(format!("{:.6}", interval_us(limit)))
            .arg(limit.requests())
            .arg(lease_size(limit, sync))
            .arg(back);
        let (granted, remaining, retry_after_us, reset_us): (i64, i64, i64, i64) =
            self.run(invocation).await?;
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        let now = Instant::now();
        state.remaining = u64::try_from(remaining).unwrap_or(0);
        state.reset = micros(reset_us);
        let granted = u64::try_from(granted).unwrap_or(0);
        if granted == 0 {
            let retry_after = micros(retry_after_us).max(Duration::from_millis(1));
            state.recheck_at = Some(now + retry_after.min(sync));
            state.next_token_at = Some(now + retry_after);
            return Ok(RateDecision::Limited {
                status: status(0, state.reset),
                retry_after,
            });
        }
        state.recheck_at = None;
        state.next_token_at = None;
        state.tokens = granted - 1;
        Ok(RateDecision::Allowed(status(
            state.remaining + state.tokens,
            state.reset,
        )))
    }

    fn bans_key(&self) -> String {
        format!("{}bans", self.settings.key_prefix)
    }

    /// Counts one invalid credential from `address` (already reduced to
    /// what bans are keyed by) for every replica.
    pub async fn record_failure(
        &self,
        address: IpAddr,
        bans: &BanSettings,
    ) -> Result<SharedFailure, BackendError> {
        let member = address.to_string();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self
            .failure
            .key(format!("{}fail:{member}", self.settings.key_prefix));
        invocation
            .key(self.bans_key())
            .arg(bans.max_failures)
            .arg(millis(bans.window))
            .arg(millis(bans.ban_duration))
            .arg(&member)
            .arg(self.bans_key());
        let (state, remaining_ms): (i64, i64) = self.run(invocation).await?;
        let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
        Ok(match state {
            1 => SharedFailure::AlreadyBanned(remaining),
            2 => SharedFailure::Banned(remaining),
            _ => SharedFailure::Counted,
        })
    }

    /// Every ban in force, with how long it has left.
    pub async fn bans_in_force(&self) -> Result<Vec<(IpAddr, Duration)>, BackendError> {
        let mut invocation = self.bans.key(self.bans_key());
        invocation.arg(MAX_SYNCED_BANS);
        let flat: Vec<String> = self.run(invocation).await?;
        Ok(flat
            .chunks_exact(2)
            .filter_map(|pair| parse_ban(&pair[0], &pair[1]))
            .collect())
    }

    /// Feeds `impose` every ban in force and every ban announced, until
    /// `shutdown`: a subscription to the ban channel (re-established after
    /// any failure, with a full read each time), and a full read every
    /// [`BAN_SYNC_INTERVAL`]. `on_error` is told of each failure.
    pub async fn follow_bans(
        &self,
        impose: impl Fn(IpAddr, Duration),
        on_error: impl Fn(&BackendError),
        shutdown: impl Future<Output = ()>,
    ) {
        use tokio_stream::StreamExt as _;
        tokio::pin!(shutdown);
        let channel = self.bans_key();
        let sync = async || match self.bans_in_force().await {
            Ok(bans) => {
                for (address, remaining) in bans {
                    impose(address, remaining);
                }
            }
            Err(error) => on_error(&error),
        };
        loop {
            let subscribed = tokio::time::timeout(self.settings.connect_timeout, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            match subscribed {
                Ok(Ok(mut pubsub)) => {
                    // Whatever was announced while not subscribed.
                    sync().await;
                    let mut ticker = tokio::time::interval(BAN_SYNC_INTERVAL);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            () = &mut shutdown => return,
                            _ = ticker.tick() => sync().await,
                            message = messages.next() => match message {
                                Some(message) => {
                                    let payload: String =
                                        message.get_payload().unwrap_or_default();
                                    if let Some((address, remaining)) = payload
                                        .split_once(' ')
                                        .and_then(|(a, r)| parse_ban(a, r))
                                    {
                                        impose(address, remaining);
                                    }
                                }
                                None => break,
                            },
                        }
                    }
                    on_error(&BackendError("the ban subscription was closed".into()));
                }
                Ok(Err(error)) => on_error(&error.into()),
                Err(_) => on_error(&BackendError("subscribing timed out".into())),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Logs a Redis failure, at most once per `WARN_INTERVAL`.
    pub fn warn(&self, what: &str, error: &BackendError) {
        let now_ms = u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let seen = self.last_warning_ms.load(Ordering::Acquire);
        let due = seen == 0 || now_ms.saturating_sub(seen) >= WARN_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_warning_ms
                .compare_exchange(seen, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                %error,
                what,
                on_backend_error = self.settings.on_backend_error.as_str(),
                "Redis (shared limits) failed; further failures are counted in \
                 keyward_limits_backend_errors_total and logged at most every 10 s"
            );
        }
    }
}

/// Microseconds to earn back one request (fractional for fast limits).
fn interval_us(limit: RateLimit) -> f64 {
    f64::from(limit.per_seconds()) * 1_000_000.0 / f64::from(limit.requests())
}

fn parse_ban(address: &str, remaining_ms: &str) -> Option<(IpAddr, Duration)> {
    let address = address.parse().ok()?;
    let remaining = Duration::from_millis(remaining_ms.parse().ok()?);
    (!remaining.is_zero()).then_some((address, remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_local_and_exact_with_local_fallback() {
        let settings = LimitsSettings::default();
        assert_eq!(settings.backend, LimitsBackend::Local);
        assert_eq!(settings.mode, LimitMode::Exact);
        assert_eq!(settings.on_backend_error, OnBackendError::Local);
        assert_eq!(settings.key_prefix, "keyward:");
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = |raw: RawLimits| LimitsSettings::from_raw(raw).unwrap_err().key;
        assert_eq!(
            key(RawLimits {
                backend: Some("memcached".into()),
                ..Default::default()
            }),
            "limits.backend"
        );
        assert_eq!(
            key(RawLimits {
                redis_url: Some("http://example.com".into()),
                ..Default::default()
            }),
            "limits.redis_url"
        );
        assert_eq!(
            key(RawLimits {
                redis_key_prefix: Some("has space".into()),
                ..Default::default()
            }),
            "limits.redis_key_prefix"
        );
        assert_eq!(
            key(RawLimits {
                redis_timeout_seconds: Some(0.0),
                ..Default::default()
            }),
            "limits.redis_timeout_seconds"
        );
        assert_eq!(
            key(RawLimits {
                mode: Some("eventual".into()),
                ..Default::default()
            }),
            "limits.mode"
        );
        assert_eq!(
            key(RawLimits {
                approximate_sync_ms: Some(0.0),
                ..Default::default()
            }),
            "limits.approximate_sync_ms"
        );
        assert_eq!(
            key(RawLimits {
                on_backend_error: Some("allow".into()),
                ..Default::default()
            }),
            "limits.on_backend_error"
        );
    }

    #[test]
    fn a_lease_is_two_sync_intervals_of_the_limit() {
        let sync = Duration::from_millis(10);
        assert_eq!(lease_size(RateLimit::new(10, 3_600).unwrap(), sync), 1);
        assert_eq!(lease_size(RateLimit::new(1_000, 1).unwrap(), sync), 20);
        assert_eq!(
            lease_size(RateLimit::new(u32::MAX, 1).unwrap(), sync),
            MAX_LEASE
        );
    }

    #[test]
    fn the_password_never_shows() {
        let url = RedisUrl::parse("redis://:hunter2@cache:6379/0").unwrap();
        assert_eq!(url.to_string(), "redis://:***@cache:6379/0");
        assert!(!format!("{url:?}").contains("hunter2"));
        let settings = LimitsSettings::from_raw(RawLimits {
            redis_url: Some("redis://user:hunter2@cache".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        let error = RedisUrl::parse("redis://user:hunter2@cache:notaport").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        let error = RedisUrl::parse("http://user:hunter2@cache").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
