//! The one door to keyward's generated protobuf code, which lives in the
//! `keyward-proto` crate (so clients get it without the server's database
//! stack). Only `grpc/`, `server.rs` (which registers the generated services
//! and descriptors) and the operator CLI (a gRPC client) use these types.
//! Envoy's proto types come from the `envoy-types` crate; `ext_authz/` is
//! where they are handled. The domain, cache and storage see neither.

pub use keyward_proto::*;

/// The encoded file descriptor set of Envoy's `envoy.service.auth.v3`
/// (compiled by `build.rs` from the protos inside the `envoy-types` crate),
/// served by reflection. Empty when the build could not find them.
pub const ENVOY_EXT_AUTHZ_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_ext_authz_descriptor.bin"));
