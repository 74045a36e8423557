//! `keyward-bench`: starts keyward (`keyward serve`, as child processes:
//! the binary beside this one, or `--keyward PATH`), creates keys, and measures the hot path against the floor of the
//! same server answering `grpc.health.v1.Health/Check`, plus cache misses,
//! CreateKey and RevokeKey rates, revocation propagation between two
//! replicas (PostgreSQL), and resident memory. Prints a table of each figure
//! beside its goal. `--smoke` runs everything small and fast, for CI.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::Channel;

use keyward::proto;
use keyward::proto::key_service_client::KeyServiceClient;
use keyward_testkit::TestDatabase;

/// The benchmark serves the Carboncopy profile (it carries ext_authz routes).
pub(crate) const CARBONCOPY_PROFILE: &str = include_str!("../../../profiles/carboncopy.toml");

mod against_floor;
mod hot_path;
mod http_api;
mod lean_client;
mod load;
mod placement;
mod seed;
mod server_process;
mod shared_limits_bench;
mod verifier_bench;

pub(crate) use against_floor::{
    SATURATION_ROUNDS, best_round, check_request, check_request_raw_headers,
};
use lean_client::{AuthenticateVerdict, PreEncoded};
use load::{LoadStats, closed_loop_count};
use placement::Placement;
use server_process::{ServerProcess, connect};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = <BenchArgs as clap::Parser>::parse();
    match run(&args).await {
        Ok(rows) => {
            print!("{}", render(&rows));
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keyward-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("benchmark setup failed: {0}")]
    Setup(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC call failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Measures keyward's hot path, cache misses, writes, revocation
/// propagation and memory against the goals in BENCHMARKS.md.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "keyward-bench", version)]
pub struct BenchArgs {
    /// PostgreSQL admin URL; the benchmark creates its own databases there
    /// and drops them afterwards. Without it: temporary SQLite files.
    #[arg(long, env = "KEYWARD_BENCH_POSTGRES", hide_env_values = true)]
    pub postgres: Option<String>,
    /// Keys to create and spread Authenticate calls over.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// HTTP/2 connections from the load generator.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Calls in flight in closed-loop runs.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Open-loop rates (calls per second).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 10_000, 20_000])]
    pub rates: Vec<u64>,
    /// Revocations timed between two replicas (PostgreSQL only).
    #[arg(long, default_value_t = 1_000)]
    pub propagation_samples: u64,
    /// Keys cached for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_keys: u64,
    /// Small and fast: checks the tool works, not the figures.
    #[arg(long)]
    pub smoke: bool,
    /// Only the memory measurement.
    #[arg(long)]
    pub only_memory: bool,
    /// Only the keyward-client section (Verifier cache hit, axum with
    /// KeywardLayer against without, revocations reaching a Verifier).
    #[arg(long)]
    pub only_client: bool,
    /// Only the comparison with the floor (closed loop, open-loop latency,
    /// and h2load with --h2load), on --keys cached keys.
    #[arg(long)]
    pub only_floor: bool,
    /// Only the shared-limits section (needs --redis; the overshoot row
    /// needs --postgres).
    #[arg(long)]
    pub only_shared_limits: bool,
    /// Only the in-process cache-hit measurement (for profilers such as
    /// `valgrind --tool=callgrind`), with this many calls.
    #[arg(long, value_name = "CALLS")]
    pub only_hot_path: Option<u64>,
    /// Also compare Authenticate with Health/Check using h2load (Debian
    /// package nghttp2-client), as an independent cross-check.
    #[arg(long)]
    pub h2load: bool,
    /// Redis URL for the shared-limits section (`[limits] backend =
    /// "redis"`); without it that section is skipped. Keys are written
    /// under a prefix of this run's own.
    #[arg(long, env = "KEYWARD_BENCH_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// The keyward binary to start as the server under test. Default: the
    /// `keyward` next to this tool (same Cargo target directory).
    #[arg(long, value_name = "PATH")]
    pub keyward: Option<std::path::PathBuf>,
    /// The floor: a bare tonic Health server. Default: the `keyward-floor`
    /// next to this tool.
    #[arg(long, value_name = "PATH")]
    pub floor: Option<std::path::PathBuf>,
    /// Leave every process where the scheduler puts it, instead of the
    /// servers on the last CPU and the load generator on the others while
    /// the hot path is compared with the floor (see `placement.rs`).
    #[arg(long)]
    pub no_pin: bool,
}

impl BenchArgs {
    fn effective(&self) -> Self {
        if !self.smoke {
            return self.clone();
        }
        Self {
            keys: self.keys.min(200),
            seconds: self.seconds.min(0.5),
            rates: vec![200],
            propagation_samples: self.propagation_samples.min(20),
            memory_keys: self.memory_keys.min(2_000),
            ..self.clone()
        }
    }

    /// `--keyward`, or the `keyward` beside this executable.
    fn keyward_binary(&self) -> Result<std::path::PathBuf, BenchError> {
        beside_this(self.keyward.as_ref(), "keyward", "-p keyward", "--keyward")
    }

    /// `--floor`, or the `keyward-floor` beside this executable.
    fn floor_binary(&self) -> Result<std::path::PathBuf, BenchError> {
        beside_this(
            self.floor.as_ref(),
            "keyward-floor",
            "-p keyward-bench",
            "--floor",
        )
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.max(0.1))
    }
}

/// `chosen`, or the binary `name` in this executable's directory.
fn beside_this(
    chosen: Option<&std::path::PathBuf>,
    name: &str,
    package: &str,
    flag: &str,
) -> Result<std::path::PathBuf, BenchError> {
    let path = match chosen {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name(name),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchError::Setup(format!(
            "no {name} binary at {}: build it (`cargo build --release {package}`) or pass {flag} PATH",
            path.display()
        )))
    }
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub value: String,
    /// Throughput as a share of the floor's (bare tonic Health/Check) in
    /// the same run, for the figures compared with it.
    pub floor: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

impl Row {
    fn vs_floor(self, ratio: f64) -> Self {
        Self {
            floor: Some(ratio),
            ..self
        }
    }
}

fn row(measure: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        measure: measure.into(),
        value: value.into(),
        floor: None,
        goal: String::new(),
        met: None,
    }
}

fn goal_row(
    measure: impl Into<String>,
    value: impl Into<String>,
    goal: impl Into<String>,
    met: bool,
) -> Row {
    Row {
        measure: measure.into(),
        value: value.into(),
        floor: None,
        goal: goal.into(),
        met: Some(met),
    }
}

fn latency(stats: &LoadStats) -> String {
    format!(
        "{:.0}/s, p50 {} µs, p99 {} µs",
        stats.throughput(),
        stats.p50_us(),
        stats.p99_us()
    )
}

/// One created key: secret, account, id.
type CreatedSlot = (String, String, String);

/// Keys created for the run: secret and id, by index.
struct CreatedKeys {
    secrets: Vec<String>,
    ids: Vec<(String, String)>,
}

/// A fresh database for the servers: a SQLite file, or a new database on
/// `--postgres` (dropped when the value is).
async fn bench_database(args: &BenchArgs) -> Result<TestDatabase, BenchError> {
    match &args.postgres {
        None => Ok(TestDatabase::sqlite()?),
        Some(admin) => Ok(TestDatabase::try_create_postgres(admin).await?),
    }
}

/// Runs every measurement and returns the table.
pub async fn run(args: &BenchArgs) -> Result<Vec<Row>, BenchError> {
    let args = args.effective();
    let work = tempfile::tempdir()?;
    // The Carboncopy profile (it has the ext_authz routes), with a cache
    // large enough for the memory run.
    let base = format!(
        "{CARBONCOPY_PROFILE}\n[cache]\ncapacity = {}\n",
        (args.memory_keys.max(args.keys) * 2).max(1_000)
    );
    let config = work.path().join("bench.toml");
    std::fs::write(&config, &base)?;
    let backend = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let mut rows = vec![row("database", backend)];

    if args.only_memory {
        rows.push(memory_per_key(&config, &args).await?);
        return Ok(rows);
    }
    if args.only_shared_limits {
        rows.extend(shared_limits_bench::run(&args, &base).await?);
        return Ok(rows);
    }
    if args.only_client {
        let database = bench_database(&args).await?;
        rows.extend(verifier_bench::run(&args, &args.keyward_binary()?, &config, &database).await?);
        return Ok(rows);
    }
    if !args.only_floor {
        rows.extend(in_process(&args).await?);
    }
    if args.only_hot_path.is_some() {
        return Ok(rows);
    }

    let database = bench_database(&args).await?;
    let server = ServerProcess::start(&args.keyward_binary()?, &config, &database.url).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.resident_bytes()?;
    rows.push(goal_row(
        "idle resident memory",
        format!("{:.1} MiB", idle as f64 / 1_048_576.0),
        "≤ 20 MiB",
        idle <= 20 * 1_048_576,
    ));

    let channels = open_channels(&server, args.connections).await?;
    let (created, create_stats) = create_keys(&channels, &args).await?;
    rows.push(row(
        format!("CreateKey ({} keys)", args.keys),
        latency(&create_stats),
    ));
    rows.extend(http_api::create_over_http_and_grpc(&server, &channels, &args).await?);

    let keys = Arc::new(created.secrets.clone());
    let miss_stats = authenticate_each_once(&channels, &keys, args.concurrency).await;
    rows.push(row(
        format!("Authenticate, cache miss ({backend})"),
        latency(&miss_stats),
    ));

    let limited = Arc::new(create_rate_limited_keys(&channels, &args).await?);
    // Their first lookups, so the saturation runs hit the cache.
    authenticate_each_once(&channels, &limited, args.concurrency).await;
    rows.extend(against_the_floor(&server, &channels, &keys, &limited, &args).await?);
    if args.only_floor {
        server.stop().await?;
        return Ok(rows);
    }

    let revoke_stats = revoke_half(&channels, &created, args.concurrency).await;
    rows.push(row("RevokeKey", latency(&revoke_stats)));
    let garbage = if args.smoke { 2_000 } else { 1_000_000 };
    rows.push(garbage_addresses(&server, &channels, garbage, args.concurrency).await?);

    if args.postgres.is_some() {
        rows.push(propagation(&server, &config, &database, &args).await?);
    } else {
        rows.push(row(
            "revocation propagation between replicas",
            "needs PostgreSQL (--postgres URL); SQLite is one process",
        ));
    }
    server.stop().await?;
    drop(database);

    // keyward-client, on a server and database of its own (also in smoke
    // mode, so CI keeps the section working).
    let database = bench_database(&args).await?;
    rows.extend(verifier_bench::run(&args, &args.keyward_binary()?, &config, &database).await?);
    drop(database);

    rows.extend(shared_limits_bench::run(&args, &base).await?);

    if args.memory_keys > 0 {
        rows.push(memory_per_key(&config, &args).await?);
    }
    Ok(rows)
}

/// Starts the floor and compares keyward's hot path with it and with
/// keyward's own Health (`against_floor.rs`), with the servers and the load
/// generator on CPUs of their own where the machine allows.
async fn against_the_floor(
    server: &ServerProcess,
    channels: &[Channel],
    keys: &Arc<Vec<String>>,
    limited: &Arc<Vec<String>>,
    args: &BenchArgs,
) -> Result<Vec<Row>, BenchError> {
    let floor = ServerProcess::start_floor(&args.floor_binary()?).await?;
    let targets = against_floor::Targets {
        floor: open_channels(&floor, args.connections).await?,
        keyward: channels.to_vec(),
        keys: Arc::clone(keys),
        limited: Arc::clone(limited),
    };
    let placement = Placement::decide(!args.no_pin).await;
    let servers = [server.pid()?, floor.pid()?];
    let mut rows = vec![row(
        "CPU placement during the comparison with the floor",
        placement
            .as_ref()
            .map_or("unpinned".into(), Placement::describe),
    )];
    if let Some(placement) = &placement {
        placement.pin(&servers).await?;
    }
    rows.extend(against_floor::saturation(&targets, args).await);
    if args.h2load {
        rows.extend(
            against_floor::h2load(&floor, server, &keys[0], args, placement.as_ref()).await?,
        );
    }
    rows.extend(against_floor::latency_table(&targets, args).await);
    if let Some(placement) = &placement {
        placement.unpin(&servers).await?;
    }
    floor.stop().await?;
    Ok(rows)
}

/// The in-process cache-hit costs (`hot_path.rs`).
async fn in_process(args: &BenchArgs) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    let calls = match args.only_hot_path {
        Some(calls) => calls.max(1),
        None if args.smoke => 10_000,
        None => 300_000,
    };
    let costs = hot_path::measure(args.keys.min(10_000), calls).await?;
    let micros = |nanos: f64| format!("{:.2} µs", nanos / 1000.0);
    rows.push(goal_row(
        "server-side cache hit, in-process (decode, handler, encode)",
        micros(costs.plain),
        "≤ 5 µs",
        costs.plain <= 5_000.0,
    ));
    rows.push(row(
        "server-side ext_authz Check on a cached key, in-process",
        micros(costs.check),
    ));
    rows.push(row(
        "… the same Check with encode_raw_headers (header_map)",
        micros(costs.check_raw_headers),
    ));
    rows.push(row(
        "reply size, Authenticate / ext_authz Check (allowed)",
        format!(
            "{} B / {} B",
            costs.authenticate_reply_bytes, costs.check_reply_bytes
        ),
    ));
    rows.push(goal_row(
        "… with a per-key rate limit: throughput on / off",
        format!(
            "{} ({:.2})",
            micros(costs.rate_limited),
            costs.plain / costs.rate_limited
        ),
        "≥ 0.90",
        costs.plain / costs.rate_limited >= 0.9,
    ));
    rows.push(goal_row(
        "… with metrics on: throughput on / off",
        format!(
            "{} ({:.2})",
            micros(costs.metrics_on),
            costs.plain / costs.metrics_on
        ),
        "≥ 0.95",
        costs.plain / costs.metrics_on >= 0.95,
    ));
    rows.push(row(
        "… a plain key, the request stating a client_ip",
        micros(costs.plain_from_address),
    ));
    // Against plain keys asked from the same stated address: the key's
    // allowlist and metadata are what differs, not the request.
    rows.push(goal_row(
        "… a key with 4 metadata entries and 2 allowed networks: cost with / without (same client_ip)",
        format!(
            "{} ({:.3}; reply {} B)",
            micros(costs.restricted),
            costs.restricted / costs.plain_from_address,
            costs.restricted_reply_bytes
        ),
        "≤ 1.05",
        costs.restricted / costs.plain_from_address <= 1.05,
    ));
    rows.push(row(
        "… a key with the 2 allowed networks only: cost with / without (same client_ip)",
        format!(
            "{} ({:.3})",
            micros(costs.networks_only),
            costs.networks_only / costs.plain_from_address
        ),
    ));
    Ok(rows)
}

async fn open_channels(server: &ServerProcess, count: usize) -> Result<Vec<Channel>, BenchError> {
    let mut channels = Vec::new();
    for _ in 0..count.max(1) {
        channels.push(connect(server.addr).await?);
    }
    Ok(channels)
}

fn client(channels: &[Channel], i: u64) -> KeyServiceClient<Channel> {
    KeyServiceClient::new(channels[i as usize % channels.len()].clone())
}

async fn create_keys(
    channels: &[Channel],
    args: &BenchArgs,
) -> Result<(CreatedKeys, LoadStats), BenchError> {
    let slots: Arc<Mutex<Vec<Option<CreatedSlot>>>> =
        Arc::new(Mutex::new(vec![None; args.keys as usize]));
    let channels = channels.to_vec();
    let stats = {
        let slots = Arc::clone(&slots);
        closed_loop_count(args.concurrency, args.keys, move |i| {
            let mut client = client(&channels, i);
            let slots = Arc::clone(&slots);
            async move {
                let account = format!("bench_{}", i / 10);
                let reply = client
                    .create_key(proto::CreateKeyRequest {
                        account_id: account.clone(),
                        name: format!("bench {i}"),
                        scopes: vec!["portfolio:read".into(), "orders:write".into()],
                        ..Default::default()
                    })
                    .await;
                match reply {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        let id = reply.key.map(|k| k.id).unwrap_or_default();
                        slots.lock().expect("slots")[i as usize] =
                            Some((reply.secret, account, id));
                        true
                    }
                    Err(_) => false,
                }
            }
        })
        .await
    };
    let slots = Arc::try_unwrap(slots)
        .map_err(|_| BenchError::Setup("key slots still shared".into()))?
        .into_inner()
        .expect("slots");
    let mut secrets = Vec::new();
    let mut ids = Vec::new();
    for (secret, account, id) in slots.into_iter().flatten() {
        secrets.push(secret);
        ids.push((account, id));
    }
    if secrets.is_empty() {
        return Err(BenchError::Setup("no key could be created".into()));
    }
    Ok((CreatedKeys { secrets, ids }, stats))
}

/// Authenticate on `keys` in turn, through the lean client (see
/// `lean_client.rs`): the bodies are encoded here, once per run.
fn authenticate_call(
    channels: Vec<Channel>,
    keys: Arc<Vec<String>>,
) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync + 'static {
    let bodies: Arc<Vec<PreEncoded>> = Arc::new(
        keys.iter()
            .map(|secret| {
                PreEncoded::of(&proto::AuthenticateRequest {
                    credential: format!("Bearer {secret}"),
                    required_scopes: vec!["portfolio:read".into()],
                    client_ip: String::new(),
                    ..Default::default()
                })
            })
            .collect(),
    );
    move |i| {
        let channel = channels[i as usize % channels.len()].clone();
        let body = bodies[i as usize % bodies.len()].clone();
        Box::pin(async move {
            lean_client::call::<AuthenticateVerdict>(channel, lean_client::AUTHENTICATE, body)
                .await
                .is_some_and(|verdict| verdict.allowed)
        })
    }
}

async fn authenticate_each_once(
    channels: &[Channel],
    keys: &Arc<Vec<String>>,
    concurrency: usize,
) -> LoadStats {
    closed_loop_count(
        concurrency,
        keys.len() as u64,
        authenticate_call(channels.to_vec(), Arc::clone(keys)),
    )
    .await
}

/// As many keys again, each with a per-key rate limit that never trips
/// (4,294,967,295 a second), so Authenticate on them pays for the limiter
/// on every call: the same server and the same number of keys, A/B against
/// the keys without one.
async fn create_rate_limited_keys(
    channels: &[Channel],
    args: &BenchArgs,
) -> Result<Vec<String>, BenchError> {
    let count = args.keys;
    let secrets: Arc<Mutex<Vec<String>>> = Arc::default();
    let channels = channels.to_vec();
    {
        let secrets = Arc::clone(&secrets);
        closed_loop_count(args.concurrency, count, move |i| {
            let mut client = client(&channels, i);
            let secrets = Arc::clone(&secrets);
            async move {
                let reply = client
                    .create_key(proto::CreateKeyRequest {
                        account_id: format!("bench_limited_{}", i / 10),
                        name: format!("limited {i}"),
                        scopes: vec!["portfolio:read".into(), "orders:write".into()],
                        rate_limit: Some(proto::RateLimit {
                            requests: u32::MAX,
                            per_seconds: 1,
                        }),
                        ..Default::default()
                    })
                    .await;
                match reply {
                    Ok(reply) => {
                        secrets
                            .lock()
                            .expect("secrets")
                            .push(reply.into_inner().secret);
                        true
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
    }
    let secrets = std::mem::take(&mut *secrets.lock().expect("secrets"));
    if secrets.is_empty() {
        return Err(BenchError::Setup(
            "no rate-limited key could be created".into(),
        ));
    }
    Ok(secrets)
}

/// Resident memory after `count` invalid credentials, each from a different
/// client address: the ban tables must stay bounded.
async fn garbage_addresses(
    server: &ServerProcess,
    channels: &[Channel],
    count: u64,
    concurrency: usize,
) -> Result<Row, BenchError> {
    let before = server.resident_bytes()?;
    let channels = channels.to_vec();
    let stats = closed_loop_count(concurrency.max(64), count, move |i| {
        let mut client = client(&channels, i);
        let address = std::net::Ipv4Addr::from(0x0a00_0000u32 + i as u32).to_string();
        async move {
            client
                .authenticate(proto::AuthenticateRequest {
                    credential: format!("Bearer cc_{i:x}"),
                    required_scopes: vec![],
                    client_ip: address,
                    ..Default::default()
                })
                .await
                .is_ok_and(|reply| !reply.into_inner().allowed)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.resident_bytes()?;
    Ok(row(
        format!(
            "resident memory after {} distinct garbage-sending addresses",
            stats.succeeded
        ),
        format!(
            "{:.1} → {:.1} MiB ({:.0}/s)",
            before as f64 / 1_048_576.0,
            after as f64 / 1_048_576.0,
            stats.throughput()
        ),
    ))
}

async fn revoke_half(channels: &[Channel], created: &CreatedKeys, concurrency: usize) -> LoadStats {
    let ids = Arc::new(created.ids.clone());
    let channels = channels.to_vec();
    let count = (ids.len() / 2) as u64;
    closed_loop_count(concurrency, count, move |i| {
        let mut client = client(&channels, i);
        let (account, id) = ids[i as usize].clone();
        async move {
            client
                .revoke_key(proto::RevokeKeyRequest {
                    account_id: account,
                    key_id: id,
                })
                .await
                .is_ok()
        }
    })
    .await
}

/// RevokeKey returns on A; how long until B's first denial.
async fn propagation(
    a: &ServerProcess,
    config: &std::path::Path,
    database: &TestDatabase,
    args: &BenchArgs,
) -> Result<Row, BenchError> {
    let b = ServerProcess::start(&args.keyward_binary()?, config, &database.url).await?;
    let mut on_a = KeyServiceClient::new(connect(a.addr).await?);
    let mut on_b = KeyServiceClient::new(connect(b.addr).await?);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut slowest = Duration::ZERO;
    for i in 0..args.propagation_samples {
        let account = format!("propagation_{i}");
        let created = on_a
            .create_key(proto::CreateKeyRequest {
                account_id: account.clone(),
                name: "propagation".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let request = proto::AuthenticateRequest {
            credential: created.secret,
            ..Default::default()
        };
        if !on_b
            .authenticate(request.clone())
            .await?
            .into_inner()
            .allowed
        {
            return Err(BenchError::Setup("replica B refused a fresh key".into()));
        }
        on_a.revoke_key(proto::RevokeKeyRequest {
            account_id: account,
            key_id: created.key.map(|k| k.id).unwrap_or_default(),
        })
        .await?;
        let revoked_at = Instant::now();
        loop {
            // Only REVOKED shows the revocation arrived; any other denial
            // (UNAVAILABLE, RATE_LIMITED) is B not knowing yet.
            let answer = on_b.authenticate(request.clone()).await?.into_inner();
            if answer
                .denial
                .as_ref()
                .is_some_and(|denial| denial.reason() == proto::denial::Reason::Revoked)
            {
                break;
            }
            if revoked_at.elapsed() > Duration::from_secs(10) {
                return Err(BenchError::Setup(
                    "revocation never reached replica B".into(),
                ));
            }
        }
        let took = revoked_at.elapsed();
        slowest = slowest.max(took);
        let _ = histogram.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
    }
    b.stop().await?;
    let p99 = histogram.value_at_quantile(0.99);
    Ok(goal_row(
        format!("revocation propagation A→B ({} samples)", histogram.len()),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            p99 as f64 / 1000.0,
            slowest.as_secs_f64() * 1000.0
        ),
        "p99 ≤ 10 ms",
        p99 <= 10_000,
    ))
}

/// Resident memory per cached key: a server over `memory_keys` keys, before
/// and after every key has been looked up once.
async fn memory_per_key(config: &std::path::Path, args: &BenchArgs) -> Result<Row, BenchError> {
    let database = bench_database(args).await?;
    let secrets = Arc::new(seed::insert_keys(&database.url, args.memory_keys).await?);
    // No periodic last-use flush during the measurement: its transient
    // buffers are not what a cached key costs (the shutdown flush still runs).
    let memory_config = config.with_file_name("bench-memory.toml");
    std::fs::write(
        &memory_config,
        format!(
            "{}\n[last_used]\nflush_interval_seconds = 3600\n",
            std::fs::read_to_string(config)?
        ),
    )?;
    let server =
        ServerProcess::start(&args.keyward_binary()?, &memory_config, &database.url).await?;
    let channels = open_channels(&server, args.connections).await?;
    // Settle the connections and the runtime before the baseline.
    authenticate_each_once(&channels, &Arc::new(secrets[..1].to_vec()), 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.resident_bytes()?;
    let warmed = authenticate_each_once(&channels, &secrets, args.concurrency.max(64)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.resident_bytes()?;
    if let Err(error) = server.stop().await {
        eprintln!("warning: the memory-run server did not stop cleanly: {error}");
    }
    drop(database);
    let per_key = after.saturating_sub(before) as f64 / warmed.succeeded.max(1) as f64;
    Ok(goal_row(
        format!("resident memory per cached key ({} keys)", warmed.succeeded),
        format!(
            "{per_key:.0} B ({:.1} → {:.1} MiB)",
            before as f64 / 1_048_576.0,
            after as f64 / 1_048_576.0
        ),
        "≤ 400 B",
        per_key <= 400.0,
    ))
}

/// Renders the table as Markdown.
pub fn render(rows: &[Row]) -> String {
    let mut out =
        String::from("| measure | result | × floor | goal | met |\n|---|---|---|---|---|\n");
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let floor = row
            .floor
            .map_or(String::new(), |ratio| format!("{ratio:.2}"));
        out.push_str(&format!(
            "| {} | {} | {floor} | {} | {met} |\n",
            row.measure, row.value, row.goal
        ));
    }
    out
}
