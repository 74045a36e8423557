//! Limits shared through Redis (`[limits] backend = "redis"`): Authenticate
//! on rate-limited keys (limits that never trip, so every call pays for
//! the limit) with the local backend, Redis exact and Redis approximate,
//! one server at a time, alternating over rounds, each on a fresh database;
//! and approximate mode's overshoot across two replicas on PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::proto;

use super::{
    BenchArgs, BenchError, Row, SATURATION_ROUNDS, authenticate_call, authenticate_each_once,
    bench_database, best_round, client, create_rate_limited_keys, goal_row, latency, open_channels,
    row,
};
use crate::load::{LoadStats, closed_loop, closed_loop_count};
use crate::server_process::ServerProcess;

/// The `[limits]` table of each variant; `prefix` keeps runs apart in Redis.
fn limits_table(redis: &str, variant: &str, prefix: &str) -> String {
    match variant {
        "local" => String::new(),
        mode => format!(
            "\n[limits]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nredis_key_prefix = \"{prefix}\"\nmode = \"{mode}\"\non_backend_error = \"deny\"\n"
        ),
    }
}

pub async fn run(args: &BenchArgs, base: &str) -> Result<Vec<Row>, BenchError> {
    let Some(redis) = &args.redis else {
        return Ok(vec![row(
            "limits shared through Redis",
            "needs Redis (--redis URL)",
        )]);
    };
    let work = tempfile::tempdir()?;
    let run_id = format!("keyward-bench:{}:", std::process::id());
    let variants = ["local", "exact", "approximate"];
    let mut runs: [Vec<LoadStats>; 3] = Default::default();
    let mut servers = Vec::new();
    for variant in variants {
        let path = work.path().join(format!("{variant}.toml"));
        std::fs::write(
            &path,
            format!(
                "{base}{}",
                limits_table(redis, variant, &format!("{run_id}{variant}:"))
            ),
        )?;
        let database = bench_database(args).await?;
        let server = ServerProcess::start(&args.keyward_binary()?, &path, &database.url).await?;
        let channels = open_channels(&server, args.connections).await?;
        let limited = Arc::new(create_rate_limited_keys(&channels, args).await?);
        authenticate_each_once(&channels, &limited, args.concurrency).await;
        servers.push((server, database, channels, limited));
    }
    for _ in 0..SATURATION_ROUNDS {
        for (slot, (_, _, channels, limited)) in servers.iter().enumerate() {
            runs[slot].push(
                closed_loop(
                    args.concurrency,
                    args.duration(),
                    authenticate_call(channels.clone(), Arc::clone(limited)),
                )
                .await,
            );
        }
    }
    for (server, database, _, _) in servers {
        server.stop().await?;
        drop(database);
    }
    let [local, exact, approximate] = runs.map(best_round);
    let ratio = |a: &LoadStats| a.throughput() / local.throughput();
    let mut rows = vec![
        row(
            format!(
                "Authenticate, rate-limited keys, local limits, closed loop ({} in flight)",
                args.concurrency
            ),
            latency(&local),
        ),
        row(
            "… limits in Redis, exact (one round trip per call)",
            latency(&exact),
        ),
        goal_row(
            "Authenticate throughput, Redis exact / local",
            format!("{:.2}", ratio(&exact)),
            "≥ 0.80",
            ratio(&exact) >= 0.8,
        ),
        row(
            "… limits in Redis, approximate (leases, 10 ms)",
            latency(&approximate),
        ),
        goal_row(
            "Authenticate throughput, Redis approximate / local",
            format!("{:.2}", ratio(&approximate)),
            "≥ 0.95",
            ratio(&approximate) >= 0.95,
        ),
    ];
    rows.push(overshoot(args, base, redis, &run_id, work.path()).await?);
    Ok(rows)
}

/// Two approximate replicas on one PostgreSQL database, one key limited to
/// `limit` per second, three times the limit sent over both as fast as
/// they answer: allowed calls against what GCRA allows in that time (the
/// burst plus what refilled).
async fn overshoot(
    args: &BenchArgs,
    base: &str,
    redis: &str,
    run_id: &str,
    work: &std::path::Path,
) -> Result<Row, BenchError> {
    let what = "approximate mode across two replicas: allowed − (limit + refilled)";
    if args.postgres.is_none() {
        return Ok(row(what, "needs PostgreSQL (--postgres URL)"));
    }
    let path = work.join("overshoot.toml");
    std::fs::write(
        &path,
        format!(
            "{base}{}",
            limits_table(redis, "approximate", &format!("{run_id}overshoot:"))
        ),
    )?;
    let database = bench_database(args).await?;
    let binary = args.keyward_binary()?;
    let a = ServerProcess::start(&binary, &path, &database.url).await?;
    let b = ServerProcess::start(&binary, &path, &database.url).await?;
    let mut channels = open_channels(&a, 1).await?;
    channels.extend(open_channels(&b, 1).await?);
    let limit: u32 = if args.smoke { 500 } else { 20_000 };
    let secret = client(&channels, 0)
        .create_key(proto::CreateKeyRequest {
            account_id: "bench_overshoot".into(),
            name: "overshoot".into(),
            // What `authenticate_call` asks for.
            scopes: vec!["portfolio:read".into()],
            rate_limit: Some(proto::RateLimit {
                requests: limit,
                per_seconds: 1,
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .secret;
    // One call first, so a cache miss is not in the measured loop (it is
    // in the count and the time below).
    let keys = Arc::new(vec![secret]);
    let started = Instant::now();
    let warm = authenticate_each_once(&channels, &keys, 2).await;
    let calls = u64::from(limit) * 3;
    let stats = closed_loop_count(
        args.concurrency,
        calls,
        authenticate_call(channels.clone(), Arc::clone(&keys)),
    )
    .await;
    let elapsed = started.elapsed() + Duration::from_millis(1);
    a.stop().await?;
    b.stop().await?;
    drop(database);
    let allowed = stats.succeeded + warm.succeeded;
    let bound = f64::from(limit) * (1.0 + elapsed.as_secs_f64());
    Ok(row(
        what,
        format!(
            "{:+.0} ({allowed} allowed of {} calls in {:.2} s; GCRA allows {bound:.0})",
            allowed as f64 - bound,
            calls + warm.succeeded + warm.failed,
            elapsed.as_secs_f64()
        ),
    ))
}
