//! The tower layer in front of every gRPC service the server hosts (keyward's
//! own, Envoy's ext_authz, health, reflection). Per request, by method path:
//!
//! 1. takes the request id from `x-request-id` (or makes one where a log
//!    line could carry it), opens a span carrying it so every log line of
//!    the request shows it, and echoes it in the response metadata;
//! 2. applies the [`AccessPolicy`] (missing or unknown credentials:
//!    UNAUTHENTICATED; known but not allowed: PERMISSION_DENIED), and hands
//!    the proven [`Caller`] to the handler in the request extensions (for a
//!    hot-path RPC, a [`HotPathCaller`](crate::access_control::HotPathCaller):
//!    the caller with its connection's address, whether it may state client
//!    addresses, and the account a JWT confines it to);
//! 3. records the request's RPC, status code and latency.
//!
//! Working on the HTTP request (not on decoded messages) is what lets it
//! cover services it does not know the types of. The span of a hot-path RPC
//! or a health check is at debug level, so at the default `info` level they
//! pay for no span; management RPCs get an info span.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::access_control::{AccessPolicy, Caller, Refusal, Rpc, RpcClass};
use crate::telemetry::{
    Telemetry, echo_request_id, elapsed_since, given_request_id, new_request_id,
};

struct Shared {
    policy: AccessPolicy,
    telemetry: Arc<Telemetry>,
}

/// Builds [`RequestGate`] around the server's routes.
#[derive(Clone)]
pub struct RequestGateLayer {
    shared: Arc<Shared>,
}

impl RequestGateLayer {
    pub fn new(policy: AccessPolicy, telemetry: Arc<Telemetry>) -> Self {
        Self {
            shared: Arc::new(Shared { policy, telemetry }),
        }
    }
}

impl<S> Layer<S> for RequestGateLayer {
    type Service = RequestGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestGate {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Clone)]
pub struct RequestGate<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for RequestGate<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RequestBody: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let started = self.shared.telemetry.start_timer();
        let rpc = Rpc::from_path(request.uri().path());
        let rpc_name = rpc.map_or("other", Rpc::as_str);
        // Management RPCs get an info span; the hot path and health checks
        // (asked every few seconds by every load balancer) a debug one: an
        // info span per Health/Check cost it a fifth of its throughput.
        let quiet = matches!(rpc.map(Rpc::class), Some(RpcClass::HotPath) | None);
        // A caller's id is always echoed. One is made only where a log line
        // can carry it: at the default level nothing logs a quiet call, and
        // making and sending an id nobody can look up cost Health/Check 4%.
        let request_id = match given_request_id(request.headers()) {
            Some(given) => Some(given),
            None if quiet && !tracing::enabled!(tracing::Level::DEBUG) => None,
            None => Some(new_request_id()),
        };
        let id_text = request_id
            .as_ref()
            .map_or("", |id| id.to_str().unwrap_or_default());
        let span = if quiet {
            tracing::debug_span!("grpc", rpc = rpc_name, request_id = %id_text)
        } else {
            tracing::info_span!("grpc", rpc = rpc_name, request_id = %id_text)
        };
        let shared = Arc::clone(&self.shared);

        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let caller = if shared.policy.reads_credential(rpc, authorization.is_some()) {
            match shared.policy.check(rpc, authorization) {
                Ok(caller) => caller,
                Err(refusal) => {
                    let status = match refusal {
                        Refusal::Unauthenticated(message) => Status::unauthenticated(message),
                        Refusal::PermissionDenied(message) => Status::permission_denied(message),
                    };
                    span.in_scope(|| {
                        tracing::info!(code = ?status.code(), reason = status.message(), "refused");
                    });
                    shared
                        .telemetry
                        .record_grpc(rpc, status.code(), elapsed_since(started));
                    let mut response = status.into_http::<ResponseBody>();
                    if let Some(request_id) = request_id {
                        echo_request_id(response.headers_mut(), request_id);
                    }
                    return Box::pin(std::future::ready(Ok(response)));
                }
            }
        } else {
            Caller::Anonymous
        };
        if rpc.map(Rpc::class) == Some(RpcClass::HotPath) {
            let peer = peer_address(request.extensions());
            let hot_path_caller = shared.policy.hot_path_caller(caller, peer);
            request.extensions_mut().insert(hot_path_caller);
        } else if caller != Caller::Anonymous {
            request.extensions_mut().insert(caller);
        }

        // The service that was polled ready is the one to call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(
            async move {
                let mut result = inner.call(request).await;
                let code = match &mut result {
                    Ok(response) => {
                        if let Some(request_id) = request_id {
                            echo_request_id(response.headers_mut(), request_id);
                        }
                        grpc_code(response.headers())
                    }
                    Err(_) => tonic::Code::Unknown,
                };
                shared
                    .telemetry
                    .record_grpc(rpc, code, elapsed_since(started));
                result
            }
            .instrument(span),
        )
    }
}

/// The address of the connection a request came on (plain TCP or TLS).
fn peer_address(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The status of a trailers-only (error) response is in its headers; a
/// response without one started normally (OK; a stream that fails later
/// reports in its trailers, which this does not wait for).
fn grpc_code(headers: &HeaderMap) -> tonic::Code {
    headers
        .get(GRPC_STATUS)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_code_reads_trailers_only_errors() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_code(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", HeaderValue::from_static("16"));
        assert_eq!(grpc_code(&headers), tonic::Code::Unauthenticated);
    }
}
