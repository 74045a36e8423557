//! Metrics and the per-decision debug log line. Each server owns one
//! [`Telemetry`]: its own Prometheus registry (not the process-global
//! `metrics` recorder, so several servers in one process, as in the tests,
//! keep separate counts), served over HTTP by `telemetry/metrics_endpoint.rs`
//! when `--metrics-listen` is set.
//!
//! **Hot path rule:** recording is an atomic add on a handle registered in
//! advance, indexed by enums (static label values), so no allocation, no
//! string formatting, no registry lookup and no shared lock per request.
//! Histograms append `(value, Instant)` to a lock-free bucket that allocates
//! one block per 64 samples; it is drained into the buckets at every scrape
//! and by a periodic upkeep, so memory stays flat.
//! Gauges that describe state (cache sizes, feed lag, pool use, bans) are
//! sampled when `/metrics` is scraped, not maintained per request.
//!
//! When metrics are off, every handle is a no-op.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::access_control::Rpc;
use crate::denial::{PolicyDenial, Reason};

pub mod metrics_endpoint;

/// The request id header, read and echoed (gRPC) and logged (ext_authz).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Which entry point asked (a metrics and log label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Authenticate,
    CheckScope,
    ExtAuthzCheck,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Authenticate => "Authenticate",
            Surface::CheckScope => "CheckScope",
            Surface::ExtAuthzCheck => "Check",
        }
    }
}

const SURFACES: [Surface; 3] = [
    Surface::Authenticate,
    Surface::CheckScope,
    Surface::ExtAuthzCheck,
];
/// `allowed`, then one per denial reason.
const OUTCOMES: usize = 1 + Reason::ALL.len();
/// Every `Rpc`, then `other` (health, reflection, unknown paths).
const RPC_LABELS: usize = Rpc::ALL.len() + 1;
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
/// Latency buckets in seconds: 25 µs to 2.5 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
];
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Every metric's help text (and unit), registered when metrics are on.
const DESCRIPTIONS: [(&str, Option<Unit>, &str); 23] = [
    (
        "keyward_http_requests_total",
        None,
        "Key-management HTTP API requests by route (create, list, get, update, revoke, scopes) and HTTP status.",
    ),
    (
        "keyward_http_request_duration_seconds",
        Some(Unit::Seconds),
        "Key-management HTTP API latency, by route.",
    ),
    (
        "keyward_decisions_total",
        None,
        "Hot-path decisions by RPC and outcome (allowed, the denial reason, or for Check unmatched_route and malformed_request).",
    ),
    (
        "keyward_decision_duration_seconds",
        Some(Unit::Seconds),
        "Time the authenticator took to decide, by RPC.",
    ),
    (
        "keyward_grpc_requests_total",
        None,
        "gRPC requests by RPC and status code (anything but OK is an error).",
    ),
    (
        "keyward_grpc_request_duration_seconds",
        Some(Unit::Seconds),
        "gRPC request latency until response headers, by RPC.",
    ),
    (
        "keyward_key_cache_lookups_total",
        None,
        "Key cache lookups by result: hit, negative_hit (known unknown key), miss (database read).",
    ),
    (
        "keyward_key_cache_entries",
        None,
        "Keys in the cache (approximate).",
    ),
    (
        "keyward_negative_cache_entries",
        None,
        "Digests known to match no key (approximate).",
    ),
    (
        "keyward_bans_started_total",
        None,
        "Client addresses banned after repeated invalid credentials.",
    ),
    (
        "keyward_banned_addresses",
        None,
        "Client addresses currently banned (approximate).",
    ),
    (
        "keyward_ban_table_full",
        None,
        "1 while a ban table (table=\"failures\" or \"bans\") is full of live entries: new addresses are not admitted until entries expire.",
    ),
    (
        "keyward_ban_table_refusals_total",
        None,
        "Addresses not admitted to a ban table (table=\"failures\" or \"bans\") because it was full of live entries.",
    ),
    (
        "keyward_limits_backend_errors_total",
        None,
        "Calls to Redis (shared limits) that failed or timed out, by operation (rate_limit, failure, ban_sync, quota); each was handled as limits.on_backend_error says.",
    ),
    (
        "keyward_failing_addresses",
        None,
        "Client addresses with recent invalid credentials (approximate).",
    ),
    (
        "keyward_change_feed_applied_sequence",
        None,
        "Last event-log sequence applied to this replica's cache.",
    ),
    (
        "keyward_change_feed_latest_sequence",
        None,
        "Latest event-log sequence in the database at scrape time.",
    ),
    (
        "keyward_change_feed_sequence_lag",
        None,
        "Events in the database not yet applied here.",
    ),
    (
        "keyward_change_feed_seconds_since_catch_up",
        Some(Unit::Seconds),
        "Seconds since this replica last proved it was caught up.",
    ),
    (
        "keyward_change_feed_fresh",
        None,
        "1 while this replica can prove its cache is current, else 0 (failing closed).",
    ),
    (
        "keyward_database_reachable",
        None,
        "1 if the scrape's database query succeeded, else 0.",
    ),
    (
        "keyward_database_pool_connections",
        None,
        "Database pool connections by state (in_use, idle).",
    ),
    (
        "keyward_database_pool_max_connections",
        None,
        "Configured maximum pool size.",
    ),
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// What a key cache lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLookup {
    Hit,
    /// Found in the negative cache (known not to exist).
    NegativeHit,
    Miss,
}

/// What a failed call to the shared-limits backend (Redis) was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsOperation {
    RateLimit,
    Failure,
    BanSync,
    Quota,
}

impl LimitsOperation {
    pub const ALL: [LimitsOperation; 4] =
        [Self::RateLimit, Self::Failure, Self::BanSync, Self::Quota];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::Failure => "failure",
            Self::BanSync => "ban_sync",
            Self::Quota => "quota",
        }
    }
}

/// Gauges sampled at scrape time.
pub(crate) struct StateGauges {
    pub key_cache_entries: Gauge,
    pub negative_cache_entries: Gauge,
    pub failing_addresses: Gauge,
    pub banned_addresses: Gauge,
    pub failure_table_full: Gauge,
    pub ban_table_full: Gauge,
    pub failure_table_refusals: Counter,
    pub ban_table_refusals: Counter,
    pub feed_applied_sequence: Gauge,
    pub feed_latest_sequence: Gauge,
    pub feed_sequence_lag: Gauge,
    pub feed_seconds_since_catch_up: Gauge,
    pub feed_fresh: Gauge,
    pub database_reachable: Gauge,
    pub pool_in_use: Gauge,
    pub pool_idle: Gauge,
    pub pool_max: Gauge,
}

impl StateGauges {
    fn register(registry: &Registry<'_>) -> Self {
        let table = |name| vec![Label::from_static_parts("table", name)];
        let state = |name| vec![Label::from_static_parts("state", name)];
        Self {
            key_cache_entries: registry.gauge("keyward_key_cache_entries", vec![]),
            negative_cache_entries: registry.gauge("keyward_negative_cache_entries", vec![]),
            failing_addresses: registry.gauge("keyward_failing_addresses", vec![]),
            banned_addresses: registry.gauge("keyward_banned_addresses", vec![]),
            failure_table_full: registry.gauge("keyward_ban_table_full", table("failures")),
            ban_table_full: registry.gauge("keyward_ban_table_full", table("bans")),
            failure_table_refusals: registry
                .counter("keyward_ban_table_refusals_total", table("failures")),
            ban_table_refusals: registry.counter("keyward_ban_table_refusals_total", table("bans")),
            feed_applied_sequence: registry.gauge("keyward_change_feed_applied_sequence", vec![]),
            feed_latest_sequence: registry.gauge("keyward_change_feed_latest_sequence", vec![]),
            feed_sequence_lag: registry.gauge("keyward_change_feed_sequence_lag", vec![]),
            feed_seconds_since_catch_up: registry
                .gauge("keyward_change_feed_seconds_since_catch_up", vec![]),
            feed_fresh: registry.gauge("keyward_change_feed_fresh", vec![]),
            database_reachable: registry.gauge("keyward_database_reachable", vec![]),
            pool_in_use: registry.gauge("keyward_database_pool_connections", state("in_use")),
            pool_idle: registry.gauge("keyward_database_pool_connections", state("idle")),
            pool_max: registry.gauge("keyward_database_pool_max_connections", vec![]),
        }
    }
}

/// Registers handles in the recorder, or hands out no-op ones (metrics off).
struct Registry<'r>(Option<&'r PrometheusRecorder>);

impl Registry<'_> {
    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.0.map_or_else(Counter::noop, |recorder| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        })
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.0.map_or_else(Gauge::noop, |recorder| {
            recorder.register_gauge(&Key::from_parts(name, labels), &METADATA)
        })
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.0.map_or_else(Histogram::noop, |recorder| {
            recorder.register_histogram(&Key::from_parts(name, labels), &METADATA)
        })
    }
}

pub struct Telemetry {
    /// `None` when metrics are off.
    recorder: Option<PrometheusRecorder>,
    decisions: [[Counter; OUTCOMES]; SURFACES.len()],
    decision_seconds: [Histogram; SURFACES.len()],
    /// Check denials the route policy decides before the authenticator
    /// (`rpc="Check"`, outcome `unmatched_route` or `malformed_request`).
    policy_denials: [Counter; PolicyDenial::ALL.len()],
    cache_lookups: [Counter; 3],
    bans_started: Counter,
    limits_backend_errors: [Counter; LimitsOperation::ALL.len()],
    /// Registered on first use, then read without a lock.
    grpc_requests: [[OnceLock<Counter>; GRPC_CODES.len()]; RPC_LABELS],
    grpc_seconds: [OnceLock<Histogram>; RPC_LABELS],
    pub(crate) gauges: StateGauges,
}

impl Telemetry {
    /// A telemetry whose handles do nothing (metrics off).
    pub fn disabled() -> Self {
        Self::build(None)
    }

    /// A telemetry recording into its own Prometheus registry.
    pub fn enabled() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &LATENCY_BUCKETS)
            .expect("latency buckets are non-empty")
            .build_recorder();
        Self::build(Some(recorder))
    }

    fn build(recorder: Option<PrometheusRecorder>) -> Self {
        if let Some(recorder) = &recorder {
            for (name, unit, text) in DESCRIPTIONS {
                recorder.describe_counter(
                    KeyName::from_const_str(name),
                    unit,
                    SharedString::const_str(text),
                );
            }
        }
        let registry = Registry(recorder.as_ref());
        let rpc_label = |surface: Surface| Label::from_static_parts("rpc", surface.as_str());
        let decisions = SURFACES.map(|surface| {
            std::array::from_fn(|outcome| {
                let outcome = match outcome {
                    0 => "allowed",
                    n => Reason::ALL[n - 1].as_str(),
                };
                registry.counter(
                    "keyward_decisions_total",
                    vec![
                        rpc_label(surface),
                        Label::from_static_parts("outcome", outcome),
                    ],
                )
            })
        });
        let policy_denials = PolicyDenial::ALL.map(|denial| {
            registry.counter(
                "keyward_decisions_total",
                vec![
                    rpc_label(Surface::ExtAuthzCheck),
                    Label::from_static_parts("outcome", denial.as_str()),
                ],
            )
        });
        let decision_seconds = SURFACES.map(|surface| {
            registry.histogram(
                "keyward_decision_duration_seconds",
                vec![rpc_label(surface)],
            )
        });
        let cache_lookups = ["hit", "negative_hit", "miss"].map(|result| {
            registry.counter(
                "keyward_key_cache_lookups_total",
                vec![Label::from_static_parts("result", result)],
            )
        });
        Self {
            decisions,
            decision_seconds,
            policy_denials,
            cache_lookups,
            bans_started: registry.counter("keyward_bans_started_total", vec![]),
            limits_backend_errors: LimitsOperation::ALL.map(|operation| {
                registry.counter(
                    "keyward_limits_backend_errors_total",
                    vec![Label::from_static_parts("operation", operation.as_str())],
                )
            }),
            grpc_requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            grpc_seconds: std::array::from_fn(|_| OnceLock::new()),
            gauges: StateGauges::register(&registry),
            recorder,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.recorder.is_some()
    }

    /// The start of a timed step, or `None` when metrics are off: an
    /// unmeasured call then reads no clock (the two reads of a decision's
    /// timer were about 4% of a cached Authenticate in-process).
    pub fn start_timer(&self) -> Option<Instant> {
        self.is_enabled().then(Instant::now)
    }

    /// Records one decision of the hot path, and logs it at debug level when
    /// it is a denial (the reason and key id, never the credential).
    pub fn record_decision(
        &self,
        surface: Surface,
        denied: Option<Reason>,
        key_id: Option<&str>,
        elapsed: Duration,
    ) {
        let outcome = denied.map_or(0, |reason| 1 + reason as usize);
        self.decisions[surface as usize][outcome].increment(1);
        self.decision_seconds[surface as usize].record(elapsed.as_secs_f64());
        if let Some(reason) = denied {
            tracing::debug!(
                rpc = surface.as_str(),
                reason = reason.as_str(),
                key_id,
                "denied"
            );
        }
    }

    /// Counts a Check denied by the route policy, before any key is read
    /// (the caller logs it, with what was wrong).
    pub fn record_policy_denial(&self, denial: PolicyDenial) {
        self.policy_denials[denial as usize].increment(1);
    }

    pub fn record_cache_lookup(&self, lookup: CacheLookup) {
        self.cache_lookups[lookup as usize].increment(1);
    }

    pub fn record_ban_started(&self) {
        self.bans_started.increment(1);
    }

    pub fn record_limits_backend_error(&self, operation: LimitsOperation) {
        self.limits_backend_errors[operation as usize].increment(1);
    }

    /// Records a finished request of the key-management HTTP API, by route
    /// (`create`, `list`, ...) and status. Registered on first use: this is
    /// not the hot path.
    pub fn record_http(&self, route: &'static str, status: u16, elapsed: Duration) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let registry = Registry(Some(recorder));
        let route_label = Label::from_static_parts("route", route);
        registry
            .counter(
                "keyward_http_requests_total",
                vec![
                    route_label.clone(),
                    Label::new("status", status.to_string()),
                ],
            )
            .increment(1);
        registry
            .histogram("keyward_http_request_duration_seconds", vec![route_label])
            .record(elapsed.as_secs_f64());
    }

    /// Records a finished gRPC request (`rpc` `None`: any other method).
    pub fn record_grpc(&self, rpc: Option<Rpc>, code: tonic::Code, elapsed: Duration) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let rpc_index = rpc.map_or(Rpc::ALL.len(), |rpc| rpc as usize);
        let code_index = (code as usize).min(GRPC_CODES.len() - 1);
        let rpc_name = rpc.map_or("other", Rpc::as_str);
        self.grpc_requests[rpc_index][code_index]
            .get_or_init(|| {
                recorder.register_counter(
                    &Key::from_parts(
                        "keyward_grpc_requests_total",
                        vec![
                            Label::from_static_parts("rpc", rpc_name),
                            Label::from_static_parts("code", GRPC_CODES[code_index]),
                        ],
                    ),
                    &METADATA,
                )
            })
            .increment(1);
        self.grpc_seconds[rpc_index]
            .get_or_init(|| {
                recorder.register_histogram(
                    &Key::from_parts(
                        "keyward_grpc_request_duration_seconds",
                        vec![Label::from_static_parts("rpc", rpc_name)],
                    ),
                    &METADATA,
                )
            })
            .record(elapsed.as_secs_f64());
    }

    /// The exposition text (histograms drained as a side effect).
    pub fn render(&self) -> String {
        self.handle().map(|h| h.render()).unwrap_or_default()
    }

    fn handle(&self) -> Option<PrometheusHandle> {
        self.recorder.as_ref().map(PrometheusRecorder::handle)
    }

    /// Drains histogram samples into their buckets every few seconds, so
    /// memory stays flat when nobody scrapes.
    pub async fn run_upkeep(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let Some(handle) = self.handle() else {
            return;
        };
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => handle.run_upkeep(),
            }
        }
    }
}

/// Longest request id taken from a caller.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Time since [`Telemetry::start_timer`]; zero when metrics are off (the
/// recording it feeds then does nothing).
pub fn elapsed_since(started: Option<Instant>) -> Duration {
    started.map_or(Duration::ZERO, |started| started.elapsed())
}

/// The caller's `x-request-id` when it is 1 to 128 visible ASCII characters
/// (shared with the request, not copied), else a fresh one.
pub fn request_id(headers: &http::HeaderMap) -> http::HeaderValue {
    given_request_id(headers).unwrap_or_else(new_request_id)
}

/// The caller's `x-request-id` when it is 1 to 128 visible ASCII characters
/// (it then reads as text: `to_str` cannot fail).
pub fn given_request_id(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    headers
        .get(REQUEST_ID_HEADER)
        .filter(|given| {
            !given.is_empty()
                && given.len() <= MAX_REQUEST_ID_LEN
                && given.as_bytes().iter().all(u8::is_ascii_graphic)
        })
        .cloned()
}

/// Puts the request id on a response. Marked sensitive so HTTP/2 sends it
/// as a literal that is never indexed: a value unique to each response
/// would otherwise enter the connection's HPACK table on every reply and
/// evict the entries that do repeat (that churn was most of what the request
/// gate cost Health/Check over a bare tonic server; see BENCHMARKS.md).
pub fn echo_request_id(headers: &mut http::HeaderMap, mut request_id: http::HeaderValue) {
    request_id.set_sensitive(true);
    headers.insert(REQUEST_ID, request_id);
}

/// [`REQUEST_ID_HEADER`] as a header name, parsed once.
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);

thread_local! {
    /// Per-thread sequence from a random start: ids are unique with
    /// overwhelming probability without a counter shared by all requests.
    static NEXT_REQUEST_ID: Cell<u64> = Cell::new({
        let mut seed = [0u8; 8];
        // A failed CSPRNG only makes ids guessable, which they need not be.
        let _ = getrandom::fill(&mut seed);
        u64::from_le_bytes(seed)
    });
}

/// A fresh request id: `kw-` and 16 hex digits.
pub fn new_request_id() -> http::HeaderValue {
    let id = NEXT_REQUEST_ID.with(|next| {
        let id = next.get();
        next.set(id.wrapping_add(1));
        id
    });
    // Written out by hand: `format!` took a sixth of the request gate's
    // instructions on every call without an id (callgrind).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = *b"kw-0000000000000000";
    for (i, digit) in text[3..].iter_mut().enumerate() {
        *digit = HEX[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    http::HeaderValue::from_bytes(&text).expect("kw- and hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, http::HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        for bad in ["has space".to_owned(), "x".repeat(129), String::new()] {
            headers.insert(
                REQUEST_ID_HEADER,
                http::HeaderValue::from_str(&bad).unwrap(),
            );
            let made = request_id(&headers);
            assert_ne!(made, bad.as_str());
            assert!(made.to_str().unwrap().starts_with("kw-"), "{made:?}");
        }
        headers.insert(
            REQUEST_ID_HEADER,
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(request_id(&headers).to_str().unwrap().starts_with("kw-"));
    }

    #[test]
    fn made_request_ids_are_kw_and_sixteen_hex_digits_counting_up() {
        let empty = http::HeaderMap::new();
        let first = request_id(&empty);
        let second = request_id(&empty);
        for id in [&first, &second] {
            let text = id.to_str().unwrap();
            let digits = text.strip_prefix("kw-").expect("kw- prefix");
            assert_eq!(digits.len(), 16, "{text}");
            assert!(
                digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{text}"
            );
        }
        let number =
            |id: &http::HeaderValue| u64::from_str_radix(&id.to_str().unwrap()[3..], 16).unwrap();
        assert_eq!(number(&second), number(&first).wrapping_add(1));
    }

    #[test]
    fn echoed_request_ids_are_never_indexed() {
        let mut headers = http::HeaderMap::new();
        echo_request_id(&mut headers, http::HeaderValue::from_static("abc-123"));
        let echoed = &headers[REQUEST_ID_HEADER];
        assert_eq!(echoed, "abc-123");
        assert!(
            echoed.is_sensitive(),
            "sent as a literal HPACK never indexes"
        );
    }

    #[test]
    fn outcome_indices_follow_reason_order() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
        for (i, surface) in SURFACES.iter().enumerate() {
            assert_eq!(*surface as usize, i);
        }
        for (i, rpc) in Rpc::ALL.iter().enumerate() {
            assert_eq!(*rpc as usize, i);
        }
        for (i, denial) in PolicyDenial::ALL.iter().enumerate() {
            assert_eq!(*denial as usize, i);
        }
    }

    #[test]
    fn disabled_telemetry_renders_nothing_and_records_nothing() {
        let telemetry = Telemetry::disabled();
        telemetry.record_cache_lookup(CacheLookup::Hit);
        telemetry.record_grpc(
            Some(Rpc::CreateKey),
            tonic::Code::Ok,
            Duration::from_millis(1),
        );
        assert!(!telemetry.is_enabled());
        assert_eq!(telemetry.render(), "");
    }

    #[test]
    fn a_timer_reads_the_clock_only_when_metrics_are_on() {
        assert_eq!(Telemetry::disabled().start_timer(), None);
        assert_eq!(elapsed_since(None), Duration::ZERO);
        let started = Telemetry::enabled().start_timer();
        assert!(started.is_some());
        // A step that took time is recorded as taking it.
        std::thread::sleep(Duration::from_millis(2));
        assert!(elapsed_since(started) >= Duration::from_millis(2));
    }

    #[test]
    fn enabled_telemetry_renders_recorded_series() {
        let telemetry = Telemetry::enabled();
        telemetry.record_cache_lookup(CacheLookup::Miss);
        telemetry.record_cache_lookup(CacheLookup::Miss);
        telemetry.record_grpc(
            Some(Rpc::CreateKey),
            tonic::Code::PermissionDenied,
            Duration::from_millis(3),
        );
        let text = telemetry.render();
        assert!(
            text.contains("keyward_key_cache_lookups_total{result=\"miss\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "keyward_grpc_requests_total{rpc=\"CreateKey\",code=\"PERMISSION_DENIED\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "keyward_grpc_request_duration_seconds_bucket{rpc=\"CreateKey\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("keyward_decisions_total{rpc=\"Authenticate\",outcome=\"revoked\"} 0"),
            "{text}"
        );
    }
}
