//! `keyward.v1`: the protobuf types and the gRPC client and server stubs of
//! `proto/keyward/v1/keyward.proto`, with the codec they use
//! ([`codec::ProtoCodec`]: an undecodable request is INVALID_ARGUMENT naming
//! the field) and the descriptor set served by reflection.
//!
//! The server re-exports this crate as `keyward::proto`; clients depend on it
//! directly and so never compile the server's database stack.

pub mod codec;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod keyward {
    pub mod v1 {
        tonic::include_proto!("keyward.v1");
    }
}

pub use keyward::v1::*;

/// The encoded file descriptor set of `proto/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keyward_descriptor.bin"));
