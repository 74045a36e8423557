//! The gRPC surface: `keyward.v1.KeyService`. Converts proto messages to
//! domain requests at the boundary (`convert`), maps every domain and storage
//! error to a `tonic::Status` in one place (`status`), and streams the event
//! log (`watch`). `request_gate` is the tower layer in front of every hosted
//! service: access control, request ids and per-RPC metrics.
//!
//! **Architecture invariant:** only `api/`, `ext_authz/`, the operator CLI,
//! the benchmark tool and `server.rs` (which registers the generated services
//! and descriptors) know proto types; the domain, cache and storage never see
//! them.

mod convert;
mod key_service;
pub mod request_gate;
pub mod status;
mod watch;

pub use key_service::KeyServiceApi;
