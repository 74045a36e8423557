//! A tower layer that verifies every request with a [`Verifier`], for tonic
//! servers and axum routers alike.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::verifier::{Denial, DenialReason, Verdict, Verifier};

type ScopesFn = dyn Fn(&Parts) -> Vec<String> + Send + Sync;
type ClientIpFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// Where the layer looks for the credential, in order.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// The `authorization` header, whole (`Bearer <key>`; keyward strips
    /// the scheme).
    Authorization,
    /// Another header, whole (e.g. `x-api-key`).
    Header(HeaderName),
    /// A query parameter (its value, percent-decoding not applied).
    Query(String),
}

struct Settings {
    verifier: Verifier,
    scopes: Arc<ScopesFn>,
    sources: Vec<CredentialSource>,
    client_ip: Option<Arc<ClientIpFn>>,
}

/// Verifies each request; see the crate docs.
///
/// ```ignore
/// let layer = KeywardLayer::new(verifier)
///     .scopes(|parts| vec![format!("{}:read", parts.uri.path())]);
/// ```
#[derive(Clone)]
pub struct KeywardLayer {
    settings: Arc<Settings>,
}

impl fmt::Debug for KeywardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywardLayer")
            .field("sources", &self.settings.sources)
            .finish_non_exhaustive()
    }
}

impl KeywardLayer {
    /// Requires no scope, reads the `authorization` header.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            settings: Arc::new(Settings {
                verifier,
                scopes: Arc::new(|_| Vec::new()),
                sources: vec![CredentialSource::Authorization],
                client_ip: None,
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Settings)) -> Self {
        let settings = Arc::try_unwrap(self.settings).unwrap_or_else(|shared| Settings {
            verifier: shared.verifier.clone(),
            scopes: Arc::clone(&shared.scopes),
            sources: shared.sources.clone(),
            client_ip: shared.client_ip.clone(),
        });
        let mut settings = settings;
        change(&mut settings);
        Self {
            settings: Arc::new(settings),
        }
    }

    /// The scopes each request needs (all of them), from its method, path,
    /// headers.
    #[must_use]
    pub fn scopes(self, scopes: impl Fn(&Parts) -> Vec<String> + Send + Sync + 'static) -> Self {
        self.with(|s| s.scopes = Arc::new(scopes))
    }

    /// Where to look for the credential, in order (replaces the default,
    /// `authorization`).
    #[must_use]
    pub fn credential_sources(self, sources: Vec<CredentialSource>) -> Self {
        self.with(|s| s.sources = sources)
    }

    /// The end client's address for keyward's bans (needs a service token
    /// with `trust_client_ip`). By default, the peer address tonic records.
    #[must_use]
    pub fn client_ip(
        self,
        client_ip: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.with(|s| s.client_ip = Some(Arc::new(client_ip)))
    }
}

impl<S> Layer<S> for KeywardLayer {
    type Service = KeywardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeywardService {
            inner,
            settings: Arc::clone(&self.settings),
        }
    }
}

/// The service [`KeywardLayer`] makes.
#[derive(Clone)]
pub struct KeywardService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> fmt::Debug for KeywardService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywardService").finish_non_exhaustive()
    }
}

/// The body of a response through the layer: the service's own, or a
/// denial's.
pub type KeywardBody<B> = Either<B, Full<Bytes>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for KeywardService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<KeywardBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone is the one that was not made ready; take the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = Arc::clone(&self.settings);
        let (mut parts, body) = request.into_parts();
        let credential = find_credential(&settings.sources, &parts);
        let scopes = (settings.scopes)(&parts);
        let client_ip = match &settings.client_ip {
            Some(f) => f(&parts),
            None => parts
                .extensions
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|addr| addr.ip().to_string()),
        };
        let grpc = is_grpc(&parts);
        Box::pin(async move {
            let verdict = settings
                .verifier
                .verify_from(
                    credential.as_deref().unwrap_or(""),
                    &scopes,
                    0,
                    client_ip.as_deref(),
                )
                .await;
            match verdict {
                Verdict::Allowed(identity) => {
                    parts.extensions.insert(identity);
                    let response = inner.call(Request::from_parts(parts, body)).await?;
                    Ok(response.map(Either::Left))
                }
                Verdict::Denied(denial) => Ok(if grpc {
                    grpc_denial(&denial)
                } else {
                    http_denial(&denial)
                }
                .map(Either::Right)),
            }
        })
    }
}

fn find_credential(sources: &[CredentialSource], parts: &Parts) -> Option<String> {
    for source in sources {
        let found = match source {
            CredentialSource::Authorization => parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            CredentialSource::Header(name) => parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            CredentialSource::Query(param) => parts.uri.query().and_then(|query| {
                query.split('&').find_map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (name == param).then(|| value.to_owned())
                })
            }),
        };
        if let Some(found) = found.filter(|f| !f.trim().is_empty()) {
            return Some(found);
        }
    }
    None
}

fn is_grpc(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The gRPC status a denial is answered with.
pub fn grpc_code(reason: DenialReason) -> tonic::Code {
    match reason {
        DenialReason::InsufficientScope | DenialReason::IpNotAllowed => {
            tonic::Code::PermissionDenied
        }
        DenialReason::RateLimited
        | DenialReason::TooManyFailedAttempts
        | DenialReason::QuotaExceeded => tonic::Code::ResourceExhausted,
        DenialReason::Unavailable => tonic::Code::Unavailable,
        DenialReason::Unspecified
        | DenialReason::MissingCredential
        | DenialReason::MalformedCredential
        | DenialReason::UnknownKey
        | DenialReason::Revoked
        | DenialReason::Expired => tonic::Code::Unauthenticated,
    }
}

fn retry_after_seconds(denial: &Denial) -> Option<HeaderValue> {
    denial.retry_after.map(|after| {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        HeaderValue::from(secs)
    })
}

/// A trailers-only gRPC response.
fn grpc_denial(denial: &Denial) -> Response<Full<Bytes>> {
    let mut status = tonic::Status::new(grpc_code(denial.reason), denial.message.clone());
    if let Some(value) =
        retry_after_seconds(denial).and_then(|v| v.to_str().ok().map(str::to_owned))
        && let Ok(value) = value.parse()
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status.into_http()
}

/// The denial's status, a JSON body, and its headers.
fn http_denial(denial: &Denial) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "code": denial.code, "message": denial.message });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        StatusCode::from_u16(denial.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(www) = denial
        .www_authenticate
        .as_deref()
        .and_then(|w| HeaderValue::from_str(w).ok())
    {
        headers.insert(header::WWW_AUTHENTICATE, www);
    }
    if let Some(after) = retry_after_seconds(denial) {
        headers.insert(header::RETRY_AFTER, after);
    }
    response
}
