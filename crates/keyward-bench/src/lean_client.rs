//! The load generator's own gRPC calls: requests encoded once, before the
//! run, and replies decoded only as far as the verdict (allowed or not).
//!
//! Why: client and server share this machine's cores, so whatever the
//! client spends per call is taken from the server. The generated clients
//! decode every reply in full (an Authenticate reply carries the whole key,
//! a Check reply its headers and a metadata map), which Health/Check's
//! two-byte reply does not, so the comparison would charge keyward for the
//! client's work. Here every target costs the client the same: copy a
//! prepared body, skip over the reply's fields. h2load (BENCHMARKS.md) is
//! the independent cross-check of the same idea.

use prost::bytes::{Buf, BufMut, Bytes};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// A message encoded ahead of time; encoding it copies the bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreEncoded(pub Bytes);

impl PreEncoded {
    pub fn of(message: &impl prost::Message) -> Self {
        Self(Bytes::from(message.encode_to_vec()))
    }
}

impl prost::Message for PreEncoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// `AuthenticateResponse.allowed` and nothing else.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthenticateVerdict {
    #[prost(bool, tag = "1")]
    pub allowed: bool,
}

/// An empty message: its fields are skipped, not decoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Skipped {}

/// Whether a `CheckResponse` is an OK response (field 3 of the
/// `http_response` oneof), without decoding it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckVerdict {
    #[prost(message, optional, tag = "3")]
    pub ok_response: Option<Skipped>,
}

/// `HealthCheckResponse.status` (1 is SERVING).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthVerdict {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

pub const AUTHENTICATE: &str = "/keyward.v1.KeyService/Authenticate";
pub const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
pub const HEALTH: &str = "/grpc.health.v1.Health/Check";

/// One unary call with a prepared body; `None` on any error.
pub async fn call<V>(channel: Channel, path: &'static str, body: PreEncoded) -> Option<V>
where
    V: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.ok()?;
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<PreEncoded, V>::default(),
    )
    .await
    .ok()
    .map(tonic::Response::into_inner)
}
