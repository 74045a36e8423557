//! Server-side cost of a cache hit, without transport: the Authenticate
//! handler called in-process, including protobuf decoding of the request and
//! encoding of the response, on a warmed cache. This is what a request costs
//! keyward once HTTP/2 has delivered it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Request;

use crate::api::KeyServiceApi;
use crate::authenticator::Authenticator;
use crate::config::Config;
use crate::domain::{AccountId, KeyName};
use crate::failed_auth_bans::FailedAuthBans;
use crate::key_cache::KeyCache;
use crate::key_management::{CreateKey, KeyManager};
use crate::proto;
use crate::proto::key_service_server::KeyService;
use crate::rate_limits::KeyRateLimits;
use crate::revocation_feed::RevocationFeed;
use crate::storage::{self, PoolSettings};
use crate::telemetry::Telemetry;
use crate::usage::usage_channel;

use super::BenchError;

/// Nanoseconds per Authenticate handled in-process over `keys` cached keys.
pub async fn nanos_per_cached_authenticate(keys: u64, calls: u64) -> Result<f64, BenchError> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("hot_path.db").display());
    let config = Config::default();
    let store = storage::open(&url, &PoolSettings::default())
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let cache = Arc::new(KeyCache::new(&config.cache));
    let feed = RevocationFeed::start(
        Arc::clone(&store),
        Arc::clone(&store),
        Arc::clone(&cache),
        config.feed.clone(),
    )
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))?;
    let stop = CancellationToken::new();
    let wakeups = store
        .subscribe_wakeups()
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    tokio::spawn(Arc::clone(&feed).run(wakeups, stop.clone().cancelled_owned()));
    let (usage, flusher) = usage_channel(Arc::clone(&store));
    tokio::spawn(flusher.run(
        config.last_used_flush_interval,
        stop.clone().cancelled_owned(),
    ));
    let authenticator = Arc::new(Authenticator {
        key_format: config.key_format.clone(),
        catalog: Arc::clone(&config.catalog),
        denials: config.denials.clone(),
        cache: Arc::clone(&cache),
        store: Arc::clone(&store),
        freshness: Arc::clone(feed.freshness()),
        bans: FailedAuthBans::new(config.bans.clone()),
        rate_limits: KeyRateLimits::new(None, config.cache.capacity),
        usage,
        // What production pays with metrics off (the default).
        telemetry: Arc::new(Telemetry::disabled()),
    });
    let manager = Arc::new(KeyManager {
        store: Arc::clone(&store),
        cache,
        catalog: Arc::clone(&config.catalog),
        key_format: config.key_format.clone(),
        max_active_keys_per_account: config.max_active_keys_per_account,
    });
    let api = KeyServiceApi::new(authenticator, Arc::clone(&manager), feed);

    let mut requests = Vec::new();
    for i in 0..keys {
        let (_, secret) = manager
            .create(CreateKey {
                account_id: AccountId::parse(&format!("hot_{}", i / 10)).expect("valid"),
                name: KeyName::parse("hot path").expect("valid"),
                scopes: vec!["portfolio:read".into(), "orders:write".into()],
                preset: None,
                expires_at: None,
                rate_limit: None,
            })
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        requests.push(
            proto::AuthenticateRequest {
                credential: format!("Bearer {}", secret.expose()),
                required_scopes: vec!["portfolio:read".into()],
                client_ip: String::new(),
            }
            .encode_to_vec(),
        );
    }
    let handle = async |encoded: &[u8]| -> Result<bool, BenchError> {
        let request = proto::AuthenticateRequest::decode(encoded)
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let response = api.authenticate(Request::new(request)).await?.into_inner();
        let allowed = response.allowed;
        std::hint::black_box(response.encode_to_vec());
        Ok(allowed)
    };
    // Warm the cache: every key once.
    for request in &requests {
        if !handle(request).await? {
            return Err(BenchError::Setup("a fresh key was refused".into()));
        }
    }
    let started = Instant::now();
    for i in 0..calls {
        handle(&requests[i as usize % requests.len()]).await?;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(elapsed.as_nanos() as f64 / calls as f64)
}
