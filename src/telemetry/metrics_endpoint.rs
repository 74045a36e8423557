//! The `/metrics` HTTP listener (`--metrics-listen`): a separate port from
//! gRPC, so it can stay off the public network. Each scrape first samples
//! the state gauges (cache sizes, bans, revocation feed lag, database pool)
//! and then renders the Prometheus text exposition.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::Telemetry;
use crate::authenticator::Authenticator;
use crate::key_cache::KeyCache;
use crate::revocation_feed::RevocationFeed;

/// A scrape waits at most this long for the database's latest sequence.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the state gauges are sampled from.
#[derive(Clone)]
pub struct ScrapeSources {
    pub telemetry: Arc<Telemetry>,
    pub cache: Arc<KeyCache>,
    pub feed: Arc<RevocationFeed>,
    pub authenticator: Arc<Authenticator>,
}

impl ScrapeSources {
    /// Sets every state gauge from the live state.
    pub async fn sample(&self) {
        let gauges = &self.telemetry.gauges;
        let (keys, unknown) = self.cache.sizes();
        gauges.key_cache_entries.set(keys as f64);
        gauges.negative_cache_entries.set(unknown as f64);
        let bans = self.authenticator.bans.stats();
        gauges.failing_addresses.set(bans.failing as f64);
        gauges.banned_addresses.set(bans.banned as f64);
        gauges
            .failure_table_full
            .set(if bans.failures_full { 1.0 } else { 0.0 });
        gauges
            .ban_table_full
            .set(if bans.bans_full { 1.0 } else { 0.0 });
        gauges
            .failure_table_refusals
            .absolute(bans.failures_refused);
        gauges.ban_table_refusals.absolute(bans.bans_refused);

        let applied = self.feed.applied_seq();
        gauges.feed_applied_sequence.set(applied as f64);
        let freshness = self.feed.freshness();
        gauges.feed_seconds_since_catch_up.set(
            freshness
                .age()
                .map_or(f64::INFINITY, |age| age.as_secs_f64()),
        );
        gauges
            .feed_fresh
            .set(if freshness.is_fresh() { 1.0 } else { 0.0 });

        let store = self.feed.store();
        match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, store.latest_seq()).await {
            Ok(Ok(latest)) => {
                gauges.database_reachable.set(1.0);
                gauges.feed_latest_sequence.set(latest as f64);
                gauges
                    .feed_sequence_lag
                    .set(latest.saturating_sub(applied) as f64);
            }
            Ok(Err(_)) | Err(_) => gauges.database_reachable.set(0.0),
        }
        let pool = store.pool_stats();
        gauges
            .pool_in_use
            .set(f64::from(pool.size.saturating_sub(pool.idle)));
        gauges.pool_idle.set(f64::from(pool.idle));
        gauges.pool_max.set(f64::from(pool.max_connections));
    }
}

async fn metrics(State(sources): State<ScrapeSources>) -> impl IntoResponse {
    sources.sample().await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        sources.telemetry.render(),
    )
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    sources: ScrapeSources,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .with_state(sources);
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "metrics listener failed");
    }
}
