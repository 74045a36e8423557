//! The one door to keyward's generated protobuf code. Only `api/`,
//! `server.rs` (which registers the generated services and descriptors),
//! and the operator CLI and benchmarks (gRPC clients) use these types.
//! Envoy's proto types come from the `envoy-types` crate; `ext_authz/` is
//! where they are handled (`server.rs` and the benchmarks use them too).
//! The domain, cache and storage see neither.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod keyward {
    pub mod v1 {
        tonic::include_proto!("keyward.v1");
    }
}

pub use keyward::v1::*;

/// The encoded file descriptor set of `proto/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keyward_descriptor.bin"));

/// The encoded file descriptor set of Envoy's `envoy.service.auth.v3`
/// (compiled by `build.rs` from the protos inside the `envoy-types` crate),
/// served by reflection. Empty when the build could not find them.
pub const ENVOY_EXT_AUTHZ_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_ext_authz_descriptor.bin"));
