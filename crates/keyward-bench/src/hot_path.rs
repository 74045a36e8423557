//! Server-side cost of a cache hit, without transport: the Authenticate
//! handler called in-process, including protobuf decoding of the request and
//! encoding of the response, on a warmed cache. This is what a request costs
//! keyward once HTTP/2 has delivered it.
//!
//! Three variants share one store, cache and set of keys: plain (the
//! default: no rate limit, metrics off), with a default per-key rate limit
//! (that never trips, so every call pays for the limiter), and with metrics
//! on. A fourth runs Envoy's ext_authz Check on the same keys, with the
//! Carboncopy profile's routes. They run in alternating rounds and the best
//! round of each counts, so a busy moment on a shared machine does not land
//! on one variant only. A sixth runs plain Authenticate on keys that carry 4
//! metadata entries and 2 allowed networks (issue 17), from an allowed
//! client address, against the same number of plain keys.

use keyward::audit::Actor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::Request;

use envoy_types::ext_authz::v3::pb::CheckRequest;

use keyward::config::Config;
use keyward::domain::{AccountId, KeyName, RateLimit};
use keyward::ext_authz::ExtAuthzApi;
use keyward::grpc::KeyServiceApi;
use keyward::key_management::CreateKey;
use keyward::proto;
use keyward::proto::key_service_server::KeyService;
use keyward::replica::Replica;
use keyward::storage::{self, PoolSettings};
use keyward::telemetry::Telemetry;

use super::BenchError;

/// Nanoseconds per cached Authenticate, by variant.
#[derive(Debug, Clone, Copy)]
pub struct HotPathCosts {
    pub plain: f64,
    pub rate_limited: f64,
    pub metrics_on: f64,
    /// ext_authz Check (decode the CheckRequest, route, authenticate,
    /// render the OK response with its headers and metadata, encode).
    pub check: f64,
    /// The same, with the headers as Envoy's `encode_raw_headers` sends them.
    pub check_raw_headers: f64,
    /// Plain keys, the request stating the same `client_ip` as the two
    /// below: their baseline (stating an address costs its parse and a ban
    /// table lookup, whatever the key).
    pub plain_from_address: f64,
    /// Plain Authenticate on keys with 4 metadata entries and 2 allowed
    /// networks, from a listed `client_ip`.
    pub restricted: f64,
    /// Its allowed reply's size (the metadata and networks are in it).
    pub restricted_reply_bytes: usize,
    /// The same with the 2 allowed networks only (no metadata): the
    /// address check without the metadata's share of the reply.
    pub networks_only: f64,
    /// Encoded sizes of one allowed reply (gRPC message bytes): HTTP/2
    /// writes a DATA frame of 256 bytes or more on its own, without
    /// coalescing it with other replies, so the size matters.
    pub authenticate_reply_bytes: usize,
    pub check_reply_bytes: usize,
}

const ROUNDS: usize = 3;

/// Calls per turn where variants take turns (see `measure`).
const BLOCK: u64 = 1_000;

fn setup_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(error.to_string())
}

/// Measures `calls` cached Authenticate calls per variant and round over
/// `keys` keys.
pub async fn measure(keys: u64, calls: u64) -> Result<HotPathCosts, BenchError> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("hot_path.db").display())
        .parse()
        .map_err(setup_error)?;
    let mut config = Config::default();
    // Under a profiler (valgrind runs code about 50 times slower) the event
    // log poll can outlast the default bound, and a replica that cannot
    // prove it is current denies everything: measure cache hits, not that.
    config.feed.freshness_bound = Duration::from_secs(3600);
    let store = storage::open(&url, &PoolSettings::default())
        .await
        .map_err(setup_error)?;
    let replica = Replica::start(
        config,
        Arc::clone(&store),
        store,
        Arc::new(Telemetry::disabled()),
        None,
    )
    .await
    .map_err(setup_error)?;
    let manager = replica.manager();
    let variant = |rate_limit: Option<RateLimit>, telemetry: Telemetry| {
        KeyServiceApi::new(
            replica.authenticator_variant(rate_limit, Arc::new(telemetry)),
            Arc::clone(manager),
            Arc::clone(replica.feed()),
        )
    };
    // The Carboncopy profile for its routes; same key format as the default.
    let profile =
        Config::parse(super::CARBONCOPY_PROFILE, "carboncopy.toml").map_err(setup_error)?;
    let check_api = ExtAuthzApi::new(Arc::clone(replica.authenticator()), profile.http.clone());
    let never_trips = RateLimit::new(u32::MAX, 1).expect("valid limit");
    let plain = variant(None, Telemetry::disabled());
    let rate_limited = variant(Some(never_trips), Telemetry::disabled());
    let metrics_on = variant(None, Telemetry::enabled());

    let mut requests = Vec::new();
    let mut checks = Vec::new();
    let mut raw_checks = Vec::new();
    let mut restricted_requests = Vec::new();
    let mut networks_only_requests = Vec::new();
    let mut from_address_requests = Vec::new();
    for i in 0..keys {
        let (_, secret) = manager
            .create(
                CreateKey {
                    account_id: AccountId::parse(&format!("hot_{}", i / 10))
                        .map_err(setup_error)?,
                    name: KeyName::parse("hot path").map_err(setup_error)?,
                    scopes: vec!["portfolio:read".into(), "orders:write".into()],
                    preset: None,
                    expires_at: None,
                    rate_limit: None,
                    quota: None,
                    metadata: Default::default(),
                    allowed_networks: Vec::new(),
                },
                &Actor::in_process(),
            )
            .await
            .map_err(setup_error)?;
        checks.push(super::check_request(secret.expose()).encode_to_vec());
        raw_checks.push(super::check_request_raw_headers(secret.expose()).encode_to_vec());
        requests.push(
            proto::AuthenticateRequest {
                credential: format!("Bearer {}", secret.expose()),
                required_scopes: vec!["portfolio:read".into()],
                client_ip: String::new(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        from_address_requests.push(
            proto::AuthenticateRequest {
                credential: format!("Bearer {}", secret.expose()),
                required_scopes: vec!["portfolio:read".into()],
                client_ip: "10.1.2.3".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let (_, restricted_secret) = manager
            .create(
                CreateKey {
                    account_id: AccountId::parse(&format!("hot_restricted_{}", i / 10))
                        .map_err(setup_error)?,
                    name: KeyName::parse("hot path, restricted").map_err(setup_error)?,
                    scopes: vec!["portfolio:read".into(), "orders:write".into()],
                    preset: None,
                    expires_at: None,
                    rate_limit: None,
                    quota: None,
                    metadata: [
                        ("plan", "pro"),
                        ("region", "eu-west-1"),
                        ("customer", "cus_8f3a2c91"),
                        ("team", "trading-desk"),
                    ]
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
                    allowed_networks: vec!["203.0.113.0/24".into(), "10.0.0.0/8".into()],
                },
                &Actor::in_process(),
            )
            .await
            .map_err(setup_error)?;
        let (_, fenced_secret) = manager
            .create(
                CreateKey {
                    account_id: AccountId::parse(&format!("hot_fenced_{}", i / 10))
                        .map_err(setup_error)?,
                    name: KeyName::parse("hot path, fenced").map_err(setup_error)?,
                    scopes: vec!["portfolio:read".into(), "orders:write".into()],
                    preset: None,
                    expires_at: None,
                    rate_limit: None,
                    quota: None,
                    metadata: Default::default(),
                    allowed_networks: vec!["203.0.113.0/24".into(), "10.0.0.0/8".into()],
                },
                &Actor::in_process(),
            )
            .await
            .map_err(setup_error)?;
        networks_only_requests.push(
            proto::AuthenticateRequest {
                credential: format!("Bearer {}", fenced_secret.expose()),
                required_scopes: vec!["portfolio:read".into()],
                client_ip: "10.1.2.3".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        restricted_requests.push(
            proto::AuthenticateRequest {
                credential: format!("Bearer {}", restricted_secret.expose()),
                required_scopes: vec!["portfolio:read".into()],
                client_ip: "10.1.2.3".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    // Warm the shared cache: every key once.
    for request in requests
        .iter()
        .chain(&restricted_requests)
        .chain(&networks_only_requests)
    {
        if !handle(&plain, request).await? {
            return Err(BenchError::Setup("a fresh key was refused".into()));
        }
    }
    if !handle_check(&check_api, &checks[0]).await?
        || !handle_check(&check_api, &raw_checks[0]).await?
    {
        return Err(BenchError::Setup("ext_authz refused a fresh key".into()));
    }
    let authenticate_reply_bytes = plain
        .authenticate(Request::new(
            proto::AuthenticateRequest::decode(&requests[0][..]).map_err(setup_error)?,
        ))
        .await?
        .into_inner()
        .encoded_len();
    let restricted_reply_bytes = plain
        .authenticate(Request::new(
            proto::AuthenticateRequest::decode(&restricted_requests[0][..]).map_err(setup_error)?,
        ))
        .await?
        .into_inner()
        .encoded_len();
    let check_reply_bytes = check_api
        .check(CheckRequest::decode(&checks[0][..]).map_err(setup_error)?)
        .await
        .encoded_len();
    let mut best = [f64::INFINITY; 8];
    for _ in 0..ROUNDS {
        for (slot, api) in [&plain, &rate_limited, &metrics_on].into_iter().enumerate() {
            let started = Instant::now();
            let mut denied = 0u64;
            for i in 0..calls {
                denied += u64::from(!handle(api, &requests[i as usize % requests.len()]).await?);
            }
            refuse_denials(denied)?;
            let nanos = started.elapsed().as_nanos() as f64 / calls as f64;
            best[slot] = best[slot].min(nanos);
        }
        for (slot, bodies) in [(3, &checks), (4, &raw_checks)] {
            let started = Instant::now();
            let mut denied = 0u64;
            for i in 0..calls {
                denied +=
                    u64::from(!handle_check(&check_api, &bodies[i as usize % bodies.len()]).await?);
            }
            refuse_denials(denied)?;
            best[slot] = best[slot].min(started.elapsed().as_nanos() as f64 / calls as f64);
        }
        // These three are compared with each other within 5%, finer than
        // this machine's drift over a whole loop: they take turns in
        // blocks of BLOCK calls, each block timed, so all three see the
        // same moments of the machine.
        let variants = [
            (7, &from_address_requests),
            (5, &restricted_requests),
            (6, &networks_only_requests),
        ];
        let mut spent = [Duration::ZERO; 3];
        let mut denied = 0u64;
        for block in 0..calls.div_ceil(BLOCK) {
            for (turn, (_, bodies)) in variants.iter().enumerate() {
                let started = Instant::now();
                for i in block * BLOCK..((block + 1) * BLOCK).min(calls) {
                    denied += u64::from(!handle(&plain, &bodies[i as usize % bodies.len()]).await?);
                }
                spent[turn] += started.elapsed();
            }
        }
        refuse_denials(denied)?;
        for (turn, (slot, _)) in variants.iter().enumerate() {
            best[*slot] = best[*slot].min(spent[turn].as_nanos() as f64 / calls as f64);
        }
    }
    replica.stop().await;
    Ok(HotPathCosts {
        plain: best[0],
        rate_limited: best[1],
        metrics_on: best[2],
        check: best[3],
        check_raw_headers: best[4],
        plain_from_address: best[7],
        restricted: best[5],
        restricted_reply_bytes,
        networks_only: best[6],
        authenticate_reply_bytes,
        check_reply_bytes,
    })
}

/// Decode, handle, encode: one request as the server sees it after HTTP/2.
async fn handle(api: &KeyServiceApi, encoded: &[u8]) -> Result<bool, BenchError> {
    let request = proto::AuthenticateRequest::decode(encoded).map_err(setup_error)?;
    let response = api.authenticate(Request::new(request)).await?.into_inner();
    let allowed = response.allowed;
    std::hint::black_box(response.encode_to_vec());
    Ok(allowed)
}

/// The same for ext_authz Check: decode (keyward's own decoder, from the
/// bytes, as the server does), route and decide, encode.
async fn handle_check(api: &ExtAuthzApi, encoded: &[u8]) -> Result<bool, BenchError> {
    let reply = api
        .check_encoded(prost::bytes::Bytes::copy_from_slice(encoded))
        .await;
    let allowed = reply.is_allowed();
    std::hint::black_box(reply.encode_to_vec());
    Ok(allowed)
}

/// Only allowed replies count: a measurement that saw a denial measured
/// something else.
fn refuse_denials(denied: u64) -> Result<(), BenchError> {
    if denied == 0 {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "{denied} cached-key calls were denied during the measurement"
        )))
    }
}
