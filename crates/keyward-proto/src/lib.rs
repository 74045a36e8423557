//! `keyward.v1`: the protobuf types and the gRPC client and server stubs of
//! `proto/keyward/v1/keyward.proto`, with the codec they use
//! ([`codec::ProtoCodec`]: an undecodable request is INVALID_ARGUMENT naming
//! the field) and the descriptor set served by reflection.
//!
//! The server re-exports this crate as `keyward::proto`; clients depend on it
//! directly and so never compile the server's database stack.

pub mod authenticate_reply;
pub mod codec;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod keyward {
    pub mod v1 {
        tonic::include_proto!("keyward.v1");
    }
}

pub use keyward::v1::*;

/// The `KeyService` server trait, whose Authenticate answers with an
/// [`authenticate_reply::AuthenticateReply`] (the wire format of
/// `AuthenticateResponse`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod server {
    include!(concat!(env!("OUT_DIR"), "/server/keyward.v1.rs"));
}
pub use server::key_service_server;

/// The encoded file descriptor set of `proto/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keyward_descriptor.bin"));
