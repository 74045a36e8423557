//! keyward from a Rust service.
//!
//! - [`Client`]: a typed gRPC client for every RPC of `keyward.v1`, with
//!   TLS/mTLS and a service token. Depends on `keyward-proto`, not on the
//!   server (no sqlx).
//! - [`Verifier`]: answers repeat credentials in-process from answers
//!   keyward marked `cacheable`, forgets them on any WatchRevocations event
//!   about their key, and fails closed when it cannot prove it is current.
//!   Everything else (unknown or malformed credentials, missing scopes,
//!   expired or rate-limited keys) is asked of keyward, which gives the
//!   exact denial and counts failures toward bans.
//! - [`KeywardLayer`]: a tower layer for tonic and axum servers.
//!
//! See `docs/client.md` in the repository for the guarantees in full.

mod client;
mod layer;
mod verifier;

pub use client::{Client, ClientConfig, Error, TlsConfig, TokenInterceptor};
pub use keyward_proto as proto;
pub use layer::{CredentialSource, KeywardBody, KeywardLayer, KeywardService, grpc_code};
pub use verifier::{
    Denial, DenialReason, Identity, StalePolicy, Stats, Verdict, Verifier, VerifierConfig,
    metric_names,
};
