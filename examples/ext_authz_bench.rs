//! ext_authz Check on a cached key against `grpc.health.v1.Health/Check` on
//! the same server, with the same client, connections and concurrency: the
//! throughput ratio shows how close Check runs to the gRPC floor (goal: at
//! least 0.8). Results go in BENCHMARKS.md.
//!
//!     cargo run --release --example ext_authz_bench -- --seconds 10
//!
//! keyward runs in this process on its own Tokio runtime (a SQLite database
//! in a temporary directory, `profiles/carboncopy.toml`); the load runs on a
//! second runtime. Closed loop: each of `concurrency` workers sends its next
//! call when the previous one returns. Only successful replies count.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{self as core, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use keyward::config::Config;
use keyward::proto;
use keyward::proto::key_service_client::KeyServiceClient;
use keyward::server::{self, ServeOptions};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Parser)]
struct Args {
    /// Measured seconds per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per target (not measured).
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Calls in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Rounds of (Health, Authenticate, Check); the best run of each is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Serve with `http.dynamic_metadata = false`.
    #[arg(long)]
    no_dynamic_metadata: bool,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Health,
    Authenticate,
    Check,
}

struct Measurement {
    calls_per_second: f64,
    failures: u64,
    p50_us: u64,
    p99_us: u64,
}

fn main() {
    let args = Args::parse();
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("keyward-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("client runtime");

    let data = tempfile::tempdir().expect("temp dir");
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/carboncopy.toml");
    let mut text = std::fs::read_to_string(&profile).expect("the Carboncopy profile exists");
    if args.no_dynamic_metadata {
        text = text.replace("[http]\n", "[http]\ndynamic_metadata = false\n");
    }
    let config =
        Config::parse(&text, &profile.display().to_string()).expect("the Carboncopy profile loads");
    let running = server_runtime
        .block_on(server::start(ServeOptions {
            config,
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: format!("sqlite://{}", data.path().join("bench.db").display()),
        }))
        .expect("keyward starts");
    let addr = running.addr();

    client_runtime.block_on(async move {
        let mut channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            channels.push(
                Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .expect("connect"),
            );
        }
        let secret = KeyServiceClient::new(channels[0].clone())
            .create_key(proto::CreateKeyRequest {
                account_id: "bench".into(),
                name: "bench".into(),
                scopes: vec!["portfolio:read".into()],
                ..Default::default()
            })
            .await
            .expect("CreateKey")
            .into_inner()
            .secret;
        let check = Arc::new(check_request(&secret));
        let credential: Arc<str> = format!("Bearer {secret}").into();
        wait_until_serving(&channels[0]).await;

        println!(
            "keyward ext_authz bench: {}s per run after {}s warm-up, {} in flight over {} connections, {} rounds, dynamic metadata {}",
            args.seconds,
            args.warmup_seconds,
            args.concurrency,
            args.connections,
            args.rounds,
            if args.no_dynamic_metadata { "off" } else { "on" }
        );
        let mut best_health: Option<Measurement> = None;
        let mut best_authenticate: Option<Measurement> = None;
        let mut best_check: Option<Measurement> = None;
        for round in 1..=args.rounds {
            for target in [Target::Health, Target::Authenticate, Target::Check] {
                let load = Load { channels: &channels, check: &check, credential: &credential, target };
                load.run(&args, Duration::from_secs(args.warmup_seconds)).await;
                let measured = load.run(&args, Duration::from_secs(args.seconds)).await;
                println!(
                    "round {round} {target:?}: {:.0} calls/s, p50 {} us, p99 {} us, {} failed",
                    measured.calls_per_second, measured.p50_us, measured.p99_us, measured.failures
                );
                let best = match target {
                    Target::Health => &mut best_health,
                    Target::Authenticate => &mut best_authenticate,
                    Target::Check => &mut best_check,
                };
                if best
                    .as_ref()
                    .is_none_or(|b| b.calls_per_second < measured.calls_per_second)
                {
                    *best = Some(measured);
                }
            }
        }
        let (health, authenticate, check) = (
            best_health.unwrap(),
            best_authenticate.unwrap(),
            best_check.unwrap(),
        );
        println!();
        println!("| call | calls/s | p50 | p99 | failed |");
        println!("| --- | --- | --- | --- | --- |");
        for (name, m) in [
            ("Health/Check", &health),
            ("KeyService/Authenticate (cached key)", &authenticate),
            ("ext_authz Check (cached key)", &check),
        ] {
            println!(
                "| {name} | {:.0} | {} us | {} us | {} |",
                m.calls_per_second, m.p50_us, m.p99_us, m.failures
            );
        }
        println!(
            "\nthroughput ratio Check / Health: {:.2} (goal: at least 0.8)",
            check.calls_per_second / health.calls_per_second
        );
    });
    server_runtime
        .block_on(running.shutdown())
        .expect("keyward stops cleanly");
}

async fn wait_until_serving(channel: &Channel) {
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..200 {
        let reply = health
            .check(HealthCheckRequest {
                service: keyward::ext_authz::SERVICE_NAME.into(),
            })
            .await;
        if reply.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("keyward did not report serving");
}

/// `GET /api/v1/portfolio` with a Bearer key, as Envoy would send it.
fn check_request(secret: &str) -> CheckRequest {
    let peer = core::Address {
        address: Some(core::address::Address::SocketAddress(SocketAddress {
            address: "192.0.2.10".into(),
            ..Default::default()
        })),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(peer),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/api/v1/portfolio?page=1".into(),
                    // The headers curl and Envoy put on a plain GET.
                    headers: [
                        (":authority", "api.example.com"),
                        (":method", "GET"),
                        (":path", "/api/v1/portfolio?page=1"),
                        (":scheme", "http"),
                        ("accept", "*/*"),
                        ("user-agent", "curl/8.5.0"),
                        ("x-forwarded-proto", "http"),
                        ("x-request-id", "5b7e2a41-63b9-4d0e-9a59-1c1b7f0f2a10"),
                        ("authorization", &format!("Bearer {secret}")),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// One closed-loop load against one target.
struct Load<'a> {
    channels: &'a [Channel],
    check: &'a Arc<CheckRequest>,
    credential: &'a Arc<str>,
    target: Target,
}

impl Load<'_> {
    async fn run(&self, args: &Args, duration: Duration) -> Measurement {
        let Load {
            channels,
            check,
            credential,
            target,
        } = *self;
        measure(channels, check, credential, target, args, duration).await
    }
}

async fn measure(
    channels: &[Channel],
    check: &Arc<CheckRequest>,
    credential: &Arc<str>,
    target: Target,
    args: &Args,
    duration: Duration,
) -> Measurement {
    let deadline = Instant::now() + duration;
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let channel = channels[worker % channels.len()].clone();
        let check = Arc::clone(check);
        let credential = Arc::clone(credential);
        let failures = Arc::clone(&failures);
        workers.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut health = HealthClient::new(channel.clone());
            let mut keys = KeyServiceClient::new(channel.clone());
            let mut authz = AuthorizationClient::new(channel);
            while Instant::now() < deadline {
                let sent = Instant::now();
                let ok = match target {
                    Target::Health => health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving),
                    Target::Authenticate => keys
                        .authenticate(proto::AuthenticateRequest {
                            credential: credential.to_string(),
                            required_scopes: vec!["portfolio:read".into()],
                            client_ip: "192.0.2.10".into(),
                        })
                        .await
                        .is_ok_and(|r| r.into_inner().allowed),
                    Target::Check => authz.check((*check).clone()).await.is_ok_and(|r| {
                        matches!(
                            r.into_inner().http_response,
                            Some(HttpResponse::OkResponse(_))
                        )
                    }),
                };
                if ok {
                    latencies.saturating_record(sent.elapsed().as_micros() as u64);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for worker in workers {
        all.add(worker.await.expect("worker")).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Measurement {
        calls_per_second: all.len() as f64 / elapsed,
        failures: failures.load(Ordering::Relaxed),
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
    }
}
