//! keyward: an API-key authorization service. See ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub mod access_control;
pub mod allowed_networks;
pub mod audit;
pub mod authenticator;
pub mod change_feed;
pub mod cli;
pub mod config;
pub mod config_report;
pub mod denial;
pub mod domain;
pub mod ext_authz;
pub mod failed_auth_bans;
pub mod grpc;
pub mod key_cache;
pub mod key_format;
pub mod key_management;
pub mod key_metadata;
pub mod last_use;
pub mod management_api;
pub mod operator_cli;
pub mod proto;
pub mod quotas;
pub mod rate_limits;
pub mod replica;
pub mod scope_catalog;
pub mod server;
pub mod settings;
pub mod shared_limits;
pub mod storage;
pub mod telemetry;
