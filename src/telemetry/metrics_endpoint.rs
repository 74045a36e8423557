//! The `/metrics` HTTP listener (`--metrics-listen`): a separate port from
//! gRPC, so it can stay off the public network. Each scrape first samples
//! the state gauges (cache sizes, bans, change feed lag, database pool) from
//! a [`StateSource`] the server supplies, and then renders the Prometheus
//! text exposition.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::Telemetry;
use crate::failed_auth_bans::BanTableStats;
use crate::storage::PoolStats;

/// The live state the gauges show, as of one scrape.
#[derive(Debug, Clone, Copy)]
pub struct StateSample {
    pub key_cache_entries: u64,
    pub negative_cache_entries: u64,
    pub bans: BanTableStats,
    pub feed_applied_seq: u64,
    /// Since the feed last proved it was current (`None`: never).
    pub since_catch_up: Option<Duration>,
    pub fresh: bool,
    /// The database's latest event sequence (`None`: it did not answer).
    pub database_latest_seq: Option<u64>,
    pub pool: PoolStats,
}

/// Where a scrape samples the state from (the replica).
#[async_trait::async_trait]
pub trait StateSource: Send + Sync + 'static {
    async fn sample(&self) -> StateSample;
}

impl Telemetry {
    /// Sets every state gauge from a sample.
    pub fn show_state(&self, sample: &StateSample) {
        let gauges = &self.gauges;
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        gauges
            .key_cache_entries
            .set(sample.key_cache_entries as f64);
        gauges
            .negative_cache_entries
            .set(sample.negative_cache_entries as f64);
        let bans = &sample.bans;
        gauges.failing_addresses.set(bans.failing as f64);
        gauges.banned_addresses.set(bans.banned as f64);
        gauges.failure_table_full.set(flag(bans.failures_full));
        gauges.ban_table_full.set(flag(bans.bans_full));
        gauges
            .failure_table_refusals
            .absolute(bans.failures_refused);
        gauges.ban_table_refusals.absolute(bans.bans_refused);

        let applied = sample.feed_applied_seq;
        gauges.feed_applied_sequence.set(applied as f64);
        gauges.feed_seconds_since_catch_up.set(
            sample
                .since_catch_up
                .map_or(f64::INFINITY, |age| age.as_secs_f64()),
        );
        gauges.feed_fresh.set(flag(sample.fresh));
        match sample.database_latest_seq {
            Some(latest) => {
                gauges.database_reachable.set(1.0);
                gauges.feed_latest_sequence.set(latest as f64);
                gauges
                    .feed_sequence_lag
                    .set(latest.saturating_sub(applied) as f64);
            }
            None => gauges.database_reachable.set(0.0),
        }
        let pool = &sample.pool;
        gauges
            .pool_in_use
            .set(f64::from(pool.size.saturating_sub(pool.idle)));
        gauges.pool_idle.set(f64::from(pool.idle));
        gauges.pool_max.set(f64::from(pool.max_connections));
    }
}

#[derive(Clone)]
struct Scrape {
    telemetry: Arc<Telemetry>,
    source: Arc<dyn StateSource>,
}

async fn metrics(State(scrape): State<Scrape>) -> impl IntoResponse {
    scrape.telemetry.show_state(&scrape.source.sample().await);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        scrape.telemetry.render(),
    )
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    source: Arc<dyn StateSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Scrape { telemetry, source });
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "metrics listener failed");
    }
}
