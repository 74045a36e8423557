//! Assembles keyward from its parts and runs it: storage, cache, event-log
//! follower, usage flusher, the gRPC services (KeyService, Envoy's ext_authz
//! Authorization, health, reflection) behind the request gate (access
//! control, request ids, metrics), optional TLS (`server/tls.rs`), the
//! optional `/metrics` listener, and graceful shutdown.
//!
//! Startup refuses to serve management RPCs without credentials on a
//! non-loopback address unless `insecure_open_management` is set.
//!
//! Shutdown order: health goes NOT_SERVING, the gRPC server stops accepting
//! and drains in-flight calls (up to the grace period), background tasks
//! stop, and the usage flusher writes what is pending.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::access_control::{AccessPolicy, HotPathAccess};
use crate::change_feed::Freshness;
use crate::config::{Config, SettingOrigins};
use crate::ext_authz::{self, AuthorizationService, ExtAuthzApi};
use crate::grpc::KeyServiceApi;
use crate::grpc::request_gate::RequestGateLayer;
use crate::management_api;
use crate::proto;
use crate::proto::key_service_server::KeyServiceServer;
use crate::replica::Replica;
use crate::shared_limits::SharedLimits;
use crate::storage::{self, DatabaseUrl, KeyStore, PoolSettings, StoreError};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics_endpoint::{self, StateSource};

mod connection;
pub mod tls;

/// Services whose health follows the replica's freshness: the server as a
/// whole (`""`) and each service by its generated name.
const HEALTH_SERVICES: [&str; 3] = [
    "",
    <KeyServiceServer<KeyServiceApi> as NamedService>::NAME,
    <AuthorizationService as NamedService>::NAME,
];

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `setting`: the flag, or the config file and key, that chose `address`.
    #[error("{setting} {address}: cannot listen: {source}")]
    Bind {
        setting: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "management RPCs have no credentials configured ([auth] service tokens or jwt), \
         so they may only be served on a loopback address, not {address}; configure \
         credentials, listen on 127.0.0.1, or pass --insecure-open-management"
    )]
    OpenManagement { address: SocketAddr },
    #[error(
        "Authenticate, CheckScope, WatchRevocations and Check need a service token here \
         (management requires credentials, or {address} is not a loopback address), but no \
         service token lists a hot-path RPC; add one to [[auth.service_tokens]] (rpcs = \
         [\"Authenticate\", \"CheckScope\", \"Check\", \"WatchRevocations\"]), or open the \
         hot path on purpose with auth.hot_path_requires_token = false or --insecure-open-hot-path"
    )]
    HotPathWithoutCredentials { address: SocketAddr },
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// `setting`: the flag, or the config file and key, that chose `url`
    /// (shown without its password).
    #[error("{setting} {url}: cannot open the database: {source}")]
    OpenDatabase {
        setting: String,
        url: DatabaseUrl,
        source: StoreError,
    },
    /// Already names `limits.redis_url` and shows it without its password.
    #[error("{0}")]
    Limits(#[from] crate::shared_limits::ConnectError),
    #[error("database error while starting: {0}")]
    Storage(#[from] StoreError),
    #[error("reflection descriptors are invalid: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound `/metrics` address, when metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The bound key-management HTTP API address, when it is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Asks the server to stop, as SIGTERM does, and waits until it has.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.cancel();
        self.task.await.expect("server task panicked")
    }

    /// Waits until the server stops by itself (after a signal).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await.expect("server task panicked")
    }

    /// A token that stops the server when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Binds the listeners, opens storage and starts serving in the background,
/// all as `config` says (flags already over the file, see
/// `cli::ServeArgs::override_file`).
pub async fn start(config: Config) -> Result<RunningServer, ServeError> {
    let hot_path = check_exposure(&config)?;
    let tls = tls::server_tls_config(&config.server)?;
    let origins = &config.server.origins;
    let database_url = &config.server.database_url;

    // Both ports are taken before the database is opened, so a port in use
    // stops startup before anything is created or migrated.
    let (listener, addr) = bind(
        config.server.listen,
        SettingOrigins::name(origins.listen.as_deref(), "server.listen", "--listen"),
    )
    .await?;
    let (metrics_listener, metrics_addr) = match config.server.metrics_listen {
        Some(address) => {
            let setting = SettingOrigins::name(
                origins.metrics_listen.as_deref(),
                "server.metrics_listen",
                "--metrics-listen",
            );
            let (listener, addr) = bind(address, setting).await?;
            (Some(listener), Some(addr))
        }
        None => (None, None),
    };
    let (http_listener, http_addr) = match config.server.http_listen {
        Some(address) => {
            let setting = SettingOrigins::name(
                origins.http_listen.as_deref(),
                "server.http_listen",
                "--http-listen",
            );
            let (listener, addr) = bind(address, setting).await?;
            (Some(listener), Some(addr))
        }
        None => (None, None),
    };

    // Redis (when limits are shared) before the database, so a wrong URL
    // stops startup before anything is created or migrated.
    let shared_limits = SharedLimits::connect_with(&config.limits, config.cache.capacity)
        .await?
        .map(Arc::new);

    let store = storage::open(
        database_url,
        &PoolSettings {
            max_connections: config.server.max_connections,
            ..PoolSettings::default()
        },
    )
    .await
    .map_err(|source| ServeError::OpenDatabase {
        setting: SettingOrigins::name(
            origins.database_url.as_deref(),
            "server.database_url",
            "--database-url",
        ),
        url: database_url.clone(),
        source,
    })?;
    let follower_store = storage::open_follower(database_url, &store).await?;
    tracing::info!(backend = %store.backend(), "storage ready");

    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        config,
        store,
        follower_store,
        listener,
        Prepared {
            shared_limits,
            tls,
            metrics: metrics_listener,
            http: http_listener,
            hot_path,
        },
        stop.clone(),
    ));
    tracing::info!(%addr, ?metrics_addr, ?http_addr, "keyward listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        http_addr,
        stop,
        task,
    })
}

/// A listener on `address`; `setting` names who chose it, for the error.
async fn bind(
    address: SocketAddr,
    setting: String,
) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bound = TcpListener::bind(address).await;
    bound
        .and_then(|listener| listener.local_addr().map(|addr| (listener, addr)))
        .map_err(|source| ServeError::Bind {
            setting,
            address,
            source,
        })
}

/// Management without credentials is only for loopback (or on request);
/// the hot path needs a credential wherever management does, or off
/// loopback, unless the operator opts out (loudly).
fn check_exposure(config: &Config) -> Result<HotPathAccess, ServeError> {
    let auth = &config.auth;
    let listen = config.server.listen;
    if auth.management_locked() {
        tracing::info!(
            service_tokens = auth.service_tokens.len(),
            user_jwts = auth.jwt.is_some(),
            "management RPCs require credentials"
        );
    } else if config.server.insecure_open_management {
        tracing::warn!(%listen, "management RPCs are open to anyone who can reach this address (--insecure-open-management)");
    } else if let Some(address) = [Some(listen), config.server.http_listen]
        .into_iter()
        .flatten()
        .find(|address| !address.ip().is_loopback())
    {
        return Err(ServeError::OpenManagement { address });
    } else {
        tracing::warn!(%listen, "no management credentials configured: management RPCs are open to local callers only");
    }

    let hot_path = HotPathAccess::decide(auth, listen, config.server.insecure_open_hot_path);
    match hot_path {
        HotPathAccess::Locked if !auth.any_hot_path_credential() => {
            return Err(ServeError::HotPathWithoutCredentials { address: listen });
        }
        HotPathAccess::Locked => {
            tracing::info!("hot-path RPCs require a service token");
        }
        HotPathAccess::Open {
            against_default: true,
        } => tracing::warn!(
            %listen,
            "INSECURE: Authenticate, CheckScope, WatchRevocations and Check are open to anyone \
             who can reach this address, although management needs credentials or the address \
             is not loopback (auth.hot_path_requires_token = false or --insecure-open-hot-path): \
             anyone can probe keys, read every account's key events and take watch slots"
        ),
        HotPathAccess::Open {
            against_default: false,
        } => tracing::info!(%listen, "hot-path RPCs are open to local callers"),
    }
    Ok(hot_path)
}

/// What `start` checked, decided and bound for `run`, besides the gRPC
/// listener.
struct Prepared {
    /// Redis, when `[limits] backend = "redis"`.
    shared_limits: Option<Arc<SharedLimits>>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    metrics: Option<TcpListener>,
    /// The key-management HTTP API's listener, when `http_listen` is set.
    http: Option<TcpListener>,
    hot_path: HotPathAccess,
}

async fn run(
    config: Config,
    store: Arc<dyn KeyStore>,
    follower_store: Arc<dyn KeyStore>,
    listener: TcpListener,
    prepared: Prepared,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let telemetry = Arc::new(if prepared.metrics.is_some() {
        Telemetry::enabled()
    } else {
        Telemetry::disabled()
    });
    let replica = Arc::new(
        Replica::start(
            config,
            store,
            follower_store,
            Arc::clone(&telemetry),
            prepared.shared_limits,
        )
        .await?,
    );
    let config = replica.config();

    // The listeners stop when `background` is cancelled, after the gRPC
    // server has drained.
    let background = CancellationToken::new();
    let metrics_server = prepared.metrics.map(|metrics_listener| {
        tokio::spawn(metrics_endpoint::serve(
            metrics_listener,
            Arc::clone(&telemetry),
            Arc::clone(&replica) as Arc<dyn StateSource>,
            background.clone().cancelled_owned(),
        ))
    });

    let http_server = prepared.http.map(|http_listener| {
        let page = config.settings_page.enabled.then(|| {
            management_api::settings_page::router(
                &config.settings_page,
                &management_api::settings_page::PageContext {
                    api: &config.management_api,
                    catalog: &config.catalog,
                    key_format: &config.key_format,
                    max_active_per_account: config.max_active_keys_per_account,
                    max_rotation_grace: config.max_rotation_grace,
                },
            )
        });
        tokio::spawn(management_api::serve(
            http_listener,
            management_api::router(
                Arc::clone(replica.manager()),
                Arc::new(AccessPolicy::new(&config.auth, prepared.hot_path)),
                config.management_api.clone(),
                config.http.responses.style(),
                Arc::clone(&telemetry),
                page,
            ),
            stop.clone().cancelled_owned(),
        ))
    });

    let (health_service, health) = publish_health(&replica, &stop).await;
    // Both reflection versions: grpcurl 1.8 and many tools still speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Empty when build.rs could not find Envoy's protos.
            .register_encoded_file_descriptor_set(proto::ENVOY_EXT_AUTHZ_FILE_DESCRIPTOR_SET)
    };

    let grace = config.server.shutdown_grace;
    let shutdown_signal = {
        let stop = stop.clone();
        let feed = Arc::clone(replica.feed());
        let health_down = health.down.clone();
        async move {
            stop.cancelled().await;
            tracing::info!("shutting down: draining in-flight calls");
            // Watch streams would otherwise hold the drain for the whole
            // grace period; they end with the position to resume from.
            feed.close();
            health_down.cancelled().await;
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = prepared.tls {
        // Checked in `start`; building it again cannot fail differently.
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(RequestGateLayer::new(
            AccessPolicy::new(&config.auth, prepared.hot_path),
            Arc::clone(&telemetry),
        ))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(KeyServiceServer::new(KeyServiceApi::new(
            Arc::clone(replica.authenticator()),
            Arc::clone(replica.manager()),
            Arc::clone(replica.feed()),
        )))
        .add_service(ext_authz_service(&replica))
        // TCP_NODELAY set on the accepted sockets themselves: the builder's
        // `tcp_nodelay` is ignored for a caller-supplied listener, and
        // without it Nagle's algorithm held ext_authz Check replies for a
        // delayed ACK (about 40 ms each). `CoalescingStream`: see
        // `connection.rs`.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(|accepted| accepted.map(connection::CoalescingStream)),
            shutdown_signal,
        );

    // Stop waiting for in-flight calls after the grace period.
    let result = tokio::select! {
        result = server => result,
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "grace period over; dropping remaining calls");
            Ok(())
        }
    };

    if let Some(http_server) = http_server {
        // It drains with the gRPC server (same stop signal); bounded by the
        // same grace period.
        let _ = tokio::time::timeout(grace, http_server).await;
    }
    background.cancel();
    let _ = health.watchdog.await;
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    // The replica's flusher writes pending last-use times before it stops.
    replica.stop().await;
    tracing::info!("stopped");
    result.map_err(ServeError::from)
}

/// Envoy's Authorization service over the replica's hot path.
fn ext_authz_service(replica: &Replica) -> AuthorizationService {
    let settings = &replica.config().http;
    if settings.routes.is_empty() && settings.unmatched_route == ext_authz::UnmatchedRoute::Deny {
        tracing::info!("no [[http.routes]] configured: every ext_authz Check is denied");
    }
    AuthorizationService::new(ExtAuthzApi::new(
        Arc::clone(replica.authenticator()),
        settings.clone(),
    ))
}

/// The watchdog that keeps health in step with the replica's freshness.
struct HealthWatch {
    watchdog: JoinHandle<()>,
    /// Cancelled once health says NOT_SERVING at shutdown.
    down: CancellationToken,
}

/// The health service, its services published as SERVING before the first
/// request can arrive (the feed has just proved it is current, so no early
/// health check finds them unregistered), and the watchdog, the only writer
/// of health from here on: at shutdown its last write is NOT_SERVING, then it
/// cancels `down`.
async fn publish_health(
    replica: &Replica,
    stop: &CancellationToken,
) -> (HealthServer<impl Health + use<>>, HealthWatch) {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in HEALTH_SERVICES {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let down = CancellationToken::new();
    let watchdog = tokio::spawn(health_watchdog(
        reporter,
        Arc::clone(replica.freshness()),
        stop.clone(),
        down.clone(),
    ));
    (service, HealthWatch { watchdog, down })
}

/// Keeps health in step with freshness: NOT_SERVING while this replica cannot
/// prove it is caught up (which includes the database being unreachable).
async fn health_watchdog(
    reporter: HealthReporter,
    freshness: Arc<Freshness>,
    stop: CancellationToken,
    health_down: CancellationToken,
) {
    let mut serving = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                for service in HEALTH_SERVICES {
                    reporter.set_service_status(service, ServingStatus::NotServing).await;
                }
                health_down.cancel();
                return;
            }
            _ = ticker.tick() => {}
        }
        let fresh = freshness.is_fresh();
        if serving == Some(fresh) {
            continue;
        }
        let status = if fresh {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if serving.is_some() {
            if fresh {
                tracing::info!("caught up with the event log; serving");
            } else {
                tracing::warn!(bound = ?freshness.bound(), "cannot prove the cache is current; failing closed");
            }
        }
        for service in HEALTH_SERVICES {
            reporter.set_service_status(service, status).await;
        }
        serving = Some(fresh);
    }
}
