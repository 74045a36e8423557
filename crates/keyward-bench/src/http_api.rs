//! CreateKey over the key-management HTTP API against CreateKey over gRPC,
//! on the same server, alternated: the HTTP surface should cost no more than
//! the gRPC one (the write dominates both).

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tonic::transport::Channel;

use keyward::proto;

use super::load::{LoadStats, closed_loop_count};
use super::server_process::ServerProcess;
use super::{BenchArgs, BenchError, Row, client, goal_row, latency, row};

const ROUNDS: usize = 2;

/// Kept-alive HTTP/1.1 connections, one per caller in flight.
type Pool = Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>;

async fn connections(server: &ServerProcess, count: usize) -> Result<Pool, BenchError> {
    let mut pool = Vec::new();
    for _ in 0..count {
        let stream = tokio::net::TcpStream::connect(server.http_addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Setup(format!("HTTP handshake: {e}")))?;
        tokio::spawn(connection);
        pool.push(sender);
    }
    Ok(Arc::new(Mutex::new(pool)))
}

async fn http_create(pool: Pool, addr: String, i: u64) -> bool {
    let Some(mut sender) = pool.lock().expect("pool").pop() else {
        return false;
    };
    // The bench serves the Carboncopy profile: its route, and its scopes as
    // resource -> level (the same grant as the gRPC calls). The server has
    // no management credentials (loopback), so the caller names the account.
    let body =
        format!(r#"{{"name": "bench {i}", "scopes": {{"portfolio": "read", "orders": "write"}}}}"#);
    let request = hyper::Request::post("/api/v1/keys")
        .header("host", addr)
        .header("content-type", "application/json")
        .header("x-keyward-account", format!("http_{}", i / 10))
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    if sender.ready().await.is_err() {
        return false;
    }
    let created = match sender.send_request(request).await {
        Ok(response) => {
            let ok = response.status() == hyper::StatusCode::CREATED;
            ok && response.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    };
    pool.lock().expect("pool").push(sender);
    created
}

/// The rates of both, alternated, and their ratio.
pub async fn create_over_http_and_grpc(
    server: &ServerProcess,
    channels: &[Channel],
    args: &BenchArgs,
) -> Result<Vec<Row>, BenchError> {
    let count = args.keys.clamp(100, 2_000);
    let pool = connections(server, args.concurrency).await?;
    let addr = server.http_addr.to_string();
    let (mut best_http, mut best_grpc): (Option<LoadStats>, Option<LoadStats>) = (None, None);
    for round in 0..ROUNDS as u64 {
        let offset = round * count;
        let http = {
            let pool = Arc::clone(&pool);
            let addr = addr.clone();
            closed_loop_count(args.concurrency, count, move |i| {
                http_create(Arc::clone(&pool), addr.clone(), offset + i)
            })
            .await
        };
        let grpc = {
            let channels = channels.to_vec();
            closed_loop_count(args.concurrency, count, move |i| {
                let mut client = client(&channels, i);
                async move {
                    client
                        .create_key(proto::CreateKeyRequest {
                            account_id: format!("grpc_{}", (offset + i) / 10),
                            name: format!("bench {i}"),
                            scopes: vec!["portfolio:read".into(), "orders:write".into()],
                            ..Default::default()
                        })
                        .await
                        .is_ok()
                }
            })
            .await
        };
        if http.failed > 0 || grpc.failed > 0 {
            return Err(BenchError::Setup(format!(
                "CreateKey failed: {} over HTTP, {} over gRPC",
                http.failed, grpc.failed
            )));
        }
        if best_http
            .as_ref()
            .is_none_or(|b| http.throughput() > b.throughput())
        {
            best_http = Some(http);
        }
        if best_grpc
            .as_ref()
            .is_none_or(|b| grpc.throughput() > b.throughput())
        {
            best_grpc = Some(grpc);
        }
    }
    let (http, grpc) = (
        best_http.expect("rounds ran"),
        best_grpc.expect("rounds ran"),
    );
    let ratio = http.throughput() / grpc.throughput();
    Ok(vec![
        row(
            format!("CreateKey over HTTP ({count} keys, best of {ROUNDS})"),
            latency(&http),
        ),
        row(
            format!("CreateKey over gRPC ({count} keys, best of {ROUNDS})"),
            latency(&grpc),
        ),
        goal_row(
            "CreateKey throughput, HTTP / gRPC",
            format!("{ratio:.2}"),
            "≥ 0.90",
            ratio >= 0.9,
        ),
    ])
}
