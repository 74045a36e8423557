//! keyward-client against a `keyward serve` child process: the Verifier's
//! cache hit in-process, an axum service with KeywardLayer against the same
//! service without it, and revocations reaching the Verifier (another
//! process than the server's).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use keyward_client::{Client, ClientConfig, KeywardLayer, Verifier, VerifierConfig, proto};
use keyward_testkit::TestDatabase;

use super::load::closed_loop;
use super::server_process::ServerProcess;
use super::{BenchArgs, BenchError, Row, goal_row, latency, row};

fn setup(what: &str) -> impl Fn(keyward_client::Error) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

async fn create(client: &Client, account: &str) -> Result<(proto::Key, String), BenchError> {
    let created = client
        .create_key(proto::CreateKeyRequest {
            account_id: account.into(),
            name: "client bench".into(),
            scopes: vec!["portfolio:read".into()],
            ..Default::default()
        })
        .await
        .map_err(setup("CreateKey"))?;
    Ok((created.key.expect("a key"), created.secret))
}

pub async fn run(
    args: &BenchArgs,
    binary: &Path,
    config: &Path,
    database: &TestDatabase,
) -> Result<Vec<Row>, BenchError> {
    let server = ServerProcess::start(binary, config, &database.url).await?;
    let client = Client::connect(ClientConfig::new(format!("http://{}", server.addr)))
        .await
        .map_err(setup("connect"))?;
    let verifier =
        Verifier::new(client.clone(), VerifierConfig::default()).map_err(setup("Verifier"))?;
    if !verifier.wait_current(Duration::from_secs(10)).await {
        return Err(BenchError::Setup(
            "the verifier never became current".into(),
        ));
    }
    let mut rows = Vec::new();

    // 1. Cache hit, in-process.
    let (_, secret) = create(&client, "client_bench").await?;
    let credential = format!("Bearer {secret}");
    while !(verifier
        .verify(&credential, &["portfolio:read"])
        .await
        .is_allowed()
        && verifier.cached_answers() > 0)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls: u32 = if args.smoke { 100_000 } else { 2_000_000 };
    let hits_before = verifier.stats().local_hits;
    let started = Instant::now();
    for _ in 0..calls {
        let verdict = verifier.verify(&credential, &["portfolio:read"]).await;
        std::hint::black_box(&verdict);
    }
    let per_call = started.elapsed() / calls;
    let local = verifier.stats().local_hits - hits_before;
    rows.push(goal_row(
        "keyward-client Verifier cache hit, in-process",
        format!(
            "{:.3} µs ({local} of {calls} local)",
            per_call.as_secs_f64() * 1e6
        ),
        "≤ 1 µs",
        per_call <= Duration::from_micros(1) && local == u64::from(calls),
    ));

    // 2. axum with the layer against the same service without it.
    let layer = KeywardLayer::new(verifier.clone()).scopes(|_| vec!["portfolio:read".into()]);
    let plain = Router::new().route("/", get(|| async { "ok" }));
    let layered = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let plain_addr = serve(plain).await?;
    let layered_addr = serve(layered).await?;
    let mut plain_rps = Vec::new();
    let mut layered_rps = Vec::new();
    let duration = args.duration();
    for _ in 0..2 {
        for (addr, results) in [
            (plain_addr, &mut plain_rps),
            (layered_addr, &mut layered_rps),
        ] {
            let pool = connections(addr, args.concurrency).await?;
            let credential = credential.clone();
            let stats = closed_loop(args.concurrency, duration, move |_| {
                http_get(Arc::clone(&pool), credential.clone())
            })
            .await;
            results.push(stats);
        }
    }
    let best = |runs: &Vec<super::load::LoadStats>| {
        runs.iter()
            .max_by(|a, b| a.throughput().total_cmp(&b.throughput()))
            .cloned()
            .expect("runs")
    };
    let (plain_best, layered_best) = (best(&plain_rps), best(&layered_rps));
    let ratio = layered_best.throughput() / plain_best.throughput();
    rows.push(row(
        "axum GET without the layer (HTTP/1.1, closed loop)",
        latency(&plain_best),
    ));
    rows.push(goal_row(
        "… with KeywardLayer: throughput with / without",
        format!("{} ({ratio:.2})", latency(&layered_best)),
        "≥ 0.90",
        ratio >= 0.9,
    ));

    // 3. Revocations reaching the verifier: from sending RevokeKey until
    // the verifier has applied the revocation's event (its answer dropped).
    let samples = args.propagation_samples.max(1);
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut failures = 0;
    for i in 0..samples {
        let (key, secret) = create(&client, &format!("client_rev_{}", i % 100)).await?;
        let credential = format!("Bearer {secret}");
        let _ = verifier.verify(&credential, &["portfolio:read"]).await;
        let sent = Instant::now();
        let revoked = client
            .revoke_key(proto::RevokeKeyRequest {
                account_id: key.account_id.clone(),
                key_id: key.id.clone(),
            })
            .await
            .map_err(setup("RevokeKey"))?;
        if verifier
            .wait_for_revision(revoked.revision, Duration::from_secs(5))
            .await
        {
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = histogram.record(micros.max(1));
        } else {
            failures += 1;
        }
    }
    let p99 = histogram.value_at_quantile(0.99);
    rows.push(goal_row(
        format!("revocation reaching a Verifier in another process ({samples} samples)"),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {failures} not within 5 s",
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            p99 as f64 / 1000.0,
            histogram.max() as f64 / 1000.0
        ),
        "p99 ≤ 10 ms",
        p99 <= 10_000 && failures == 0,
    ));

    verifier.shutdown().await;
    server.stop().await?;
    Ok(rows)
}

async fn serve(router: Router) -> Result<SocketAddr, BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

type Pool = Arc<Mutex<Vec<SendRequest<Empty<Bytes>>>>>;

async fn connections(addr: SocketAddr, count: usize) -> Result<Pool, BenchError> {
    let mut pool = Vec::new();
    for _ in 0..count {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Setup(format!("HTTP handshake: {e}")))?;
        tokio::spawn(connection);
        pool.push(sender);
    }
    Ok(Arc::new(Mutex::new(pool)))
}

async fn http_get(pool: Pool, credential: String) -> bool {
    let Some(mut sender) = pool.lock().expect("pool").pop() else {
        return false;
    };
    let request = hyper::Request::get("/")
        .header("host", "bench")
        .header("authorization", credential)
        .body(Empty::new())
        .expect("a valid request");
    let ok = sender.ready().await.is_ok()
        && match sender.send_request(request).await {
            Ok(response) => {
                response.status() == hyper::StatusCode::OK
                    && response.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        };
    pool.lock().expect("pool").push(sender);
    ok
}
