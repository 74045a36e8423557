//! The gRPC service `envoy.service.auth.v3.Authorization`, written out here
//! instead of using envoy-types' generated `AuthorizationServer` for one
//! reason: a Check whose bytes do not decode (invalid UTF-8 in a header
//! value or the path, garbage) must still be answered with a denied
//! `CheckResponse` (the product's 400), because Envoy treats a gRPC error as
//! an authorization-server failure, and one configured with
//! `failure_mode_allow: true` would let the request through. So the codec
//! decodes into [`CheckMessage`], which carries the failure to the handler
//! instead of failing the call.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb;
use prost::bytes::Buf;
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::{Body as HttpBody, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::ExtAuthzApi;
use super::check_reply::CheckReply;
use super::check_request::{CheckRequest, CheckRequestError};

/// The only method of the service.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A Check as it arrived: decoded, or the reason it could not be.
#[derive(Debug)]
pub enum CheckMessage {
    Decoded(CheckRequest),
    Undecodable(CheckRequestError),
}

/// The service tonic hosts; every Check goes to [`ExtAuthzApi`].
#[derive(Clone)]
pub struct AuthorizationService {
    api: Arc<ExtAuthzApi>,
}

impl AuthorizationService {
    pub fn new(api: ExtAuthzApi) -> Self {
        Self { api: Arc::new(api) }
    }
}

impl NamedService for AuthorizationService {
    const NAME: &'static str = super::SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for AuthorizationService
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = CheckMethod(Arc::clone(&self.api));
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(CheckCodec);
            Ok(grpc.unary(method, request).await)
        })
    }
}

struct CheckMethod(Arc<ExtAuthzApi>);

impl UnaryService<CheckMessage> for CheckMethod {
    type Response = CheckReply;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<CheckReply>, Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<CheckMessage>) -> Self::Future {
        let api = Arc::clone(&self.0);
        Box::pin(async move { Ok(tonic::Response::new(api.respond(request).await)) })
    }
}

/// Encodes [`CheckReply`]s (as `CheckResponse`s) and decodes
/// [`CheckMessage`]s.
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckReply;
    type Decode = CheckMessage;
    type Encoder = ProstEncoder<CheckReply>;
    type Decoder = CheckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckDecoder(PhantomData)
    }
}

/// Decodes with keyward's own [`CheckRequest`] decoder, which reads only
/// what keyward uses, borrowing it from the message's bytes.
struct CheckDecoder(PhantomData<pb::CheckRequest>);

impl Decoder for CheckDecoder {
    type Item = CheckMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<CheckMessage>, Status> {
        // The whole message, taken from tonic's buffer without a copy. All
        // of it is consumed, so the bytes of one that does not decode are
        // not read as the next frame either.
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(match CheckRequest::decode(bytes) {
            Ok(request) => CheckMessage::Decoded(request),
            Err(error) => CheckMessage::Undecodable(error),
        }))
    }

    fn buffer_settings(&self) -> BufferSettings {
        ProstDecoder::<pb::CheckRequest>::default().buffer_settings()
    }
}
