//! The config file exactly as written (serde), before validation. Every
//! table refuses unknown keys, so a typo is a startup error, not a silent
//! default.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub keys: RawKeys,
    /// Absent: the built-in Carboncopy catalog.
    pub scopes: Option<Vec<RawScope>>,
    pub presets: Vec<RawPreset>,
    pub denials: RawDenials,
    pub cache: RawCache,
    pub feed: RawFeed,
    pub rate_limit: Option<RawRateLimit>,
    pub bans: RawBans,
    pub last_used: RawLastUsed,
    pub auth: RawAuth,
    pub http: RawHttp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub max_connections: Option<u32>,
    pub shutdown_grace_seconds: Option<f64>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_client_ca: Option<String>,
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKeys {
    pub prefix: Option<String>,
    pub body_length: Option<usize>,
    pub alphabet: Option<String>,
    pub display_chars: Option<usize>,
    pub schemes: Option<Vec<String>>,
    pub max_active_per_account: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub implies: Vec<String>,
    #[serde(default)]
    pub auto_grant: bool,
    #[serde(default)]
    pub reserved: bool,
    pub denial_code: Option<String>,
    pub denial_message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreset {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDenials {
    pub missing: Option<RawDenialText>,
    pub invalid: Option<RawDenialText>,
    pub insufficient_scope: Option<RawDenialText>,
    pub rate_limited: Option<RawDenialText>,
    pub too_many_failed_attempts: Option<RawDenialText>,
    pub unavailable: Option<RawDenialText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDenialText {
    pub code: Option<String>,
    pub message: Option<String>,
    pub http_status: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub capacity: Option<u64>,
    pub ttl_seconds: Option<f64>,
    pub negative_capacity: Option<u64>,
    pub negative_ttl_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFeed {
    pub poll_interval_ms: Option<u64>,
    pub freshness_bound_ms: Option<u64>,
    pub retention_hours: Option<f64>,
    pub prune_interval_seconds: Option<f64>,
    pub watch_buffer: Option<usize>,
    pub checkpoint_interval_seconds: Option<f64>,
    pub max_watchers: Option<usize>,
    pub max_watchers_per_caller: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBans {
    pub enabled: Option<bool>,
    pub max_failures: Option<u32>,
    pub window_seconds: Option<f64>,
    pub ban_seconds: Option<f64>,
    pub max_tracked_addresses: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLastUsed {
    pub flush_interval_seconds: Option<f64>,
}

/// `[auth]`: who may call management (and optionally hot-path) RPCs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub hot_path_requires_token: Option<bool>,
    pub service_tokens: Vec<RawServiceToken>,
    pub jwt: Option<RawJwt>,
}

/// `[http]`: the Envoy ext_authz surface (validated in `config/http.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub authorization_header: Option<bool>,
    pub require_scheme: Option<bool>,
    pub key_header: Option<String>,
    pub key_query_parameter: Option<String>,
    pub error_style: Option<String>,
    pub identity_headers: RawIdentityHeaders,
    pub strip_credential: Option<bool>,
    pub dynamic_metadata: Option<bool>,
    pub unmatched_route: Option<String>,
    pub trusted_proxy_hops: Option<u32>,
    pub www_authenticate: Option<String>,
    pub denials: RawHttpDenials,
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentityHeaders {
    pub key_id: Option<String>,
    pub account_id: Option<String>,
    pub scopes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttpDenials {
    pub unmatched_route: Option<RawDenialText>,
    pub malformed_request: Option<RawDenialText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceToken {
    pub name: String,
    pub sha256: String,
    pub rpcs: Vec<String>,
    pub trust_client_ip: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJwt {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub algorithms: Option<Vec<String>>,
    pub public_key_files: Vec<String>,
    pub jwks_file: Option<String>,
    pub subject_claim: Option<String>,
    pub leeway_seconds: Option<u64>,
    pub max_lifetime_seconds: Option<u64>,
    pub rpcs: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub methods: Vec<String>,
    pub path: String,
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub public: bool,
}
