//! Configuration: a TOML file (a product profile) parsed in two steps, raw
//! (serde) then validated into [`Config`]. Each table belongs to the
//! subsystem it configures, which holds its `Raw*` struct, its defaults and
//! its validator (`[cache]` in `key_cache`, `[http]` in `ext_authz`, ...);
//! this module composes them and names the file in errors. A bad file fails
//! at startup with the file, the key and the reason.
//!
//! Layering for server settings: built-in defaults < config file <
//! environment < command-line flags (clap puts flags over the environment;
//! `cli::ServeArgs::override_file` puts both over the file, once).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::access_control::AccessSettings;
use crate::access_control::settings::RawAuth;
use crate::audit::{AuditSettings, RawAudit};
use crate::change_feed::{FeedSettings, RawFeed};
use crate::denial::{DenialCatalog, RawDenials};
use crate::domain::RateLimit;
use crate::ext_authz::settings::RawHttp;
use crate::ext_authz::{ExtAuthzSettings, RouteDefinition};
use crate::failed_auth_bans::{BanSettings, RawBans};
use crate::key_cache::{CacheSettings, RawCache};
use crate::key_format::{KeyFormat, KeySettings, RawKeys};
use crate::last_use::RawLastUsed;
use crate::management_api::settings::{ManagementApiSettings, RawManagementApi};
use crate::management_api::settings_page::settings::{RawSettingsPage, SettingsPageSettings};
use crate::quotas::WallClock;
use crate::rate_limits::RawRateLimit;
use crate::scope_catalog::{RawPreset, RawScope, ScopeCatalog};
use crate::settings::SettingError;
use crate::shared_limits::{LimitsSettings, RawLimits};

mod server;

pub use server::{DEFAULT_DATABASE_URL, DEFAULT_LISTEN, RawServer, ServerSettings, SettingOrigins};

/// A configuration problem: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: `{key}`: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    /// A table's complaint, in `file`.
    fn in_file(file: &str, error: SettingError) -> Self {
        Self {
            file: file.to_owned(),
            key: error.key,
            reason: error.reason,
        }
    }
}

/// The config file exactly as written: one table per subsystem. Every
/// table refuses unknown keys, so a typo is a startup error, not a silent
/// default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    keys: RawKeys,
    /// Absent: the built-in catalog, Carboncopy's.
    scopes: Option<Vec<RawScope>>,
    presets: Vec<RawPreset>,
    denials: RawDenials,
    cache: RawCache,
    feed: RawFeed,
    rate_limit: Option<RawRateLimit>,
    bans: RawBans,
    limits: RawLimits,
    last_used: RawLastUsed,
    auth: RawAuth,
    http: RawHttp,
    management_api: RawManagementApi,
    settings_page: RawSettingsPage,
    audit: RawAudit,
}

/// Validated configuration. Fields are public so tests and tools can adjust
/// a loaded profile; every value here has passed validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
    pub server: ServerSettings,
    pub key_format: KeyFormat,
    pub max_active_keys_per_account: u32,
    /// `keys.max_rotation_grace_seconds`: RotateKey's longest grace period.
    pub max_rotation_grace: Duration,
    pub catalog: Arc<ScopeCatalog>,
    pub denials: DenialCatalog,
    pub cache: CacheSettings,
    pub feed: FeedSettings,
    /// Per-key limit for keys without their own; `None`: unlimited.
    pub default_rate_limit: Option<RateLimit>,
    pub bans: BanSettings,
    /// `[limits]`: where rate limits and bans are kept (this replica, or
    /// Redis for all replicas).
    pub limits: LimitsSettings,
    pub last_used_flush_interval: Duration,
    /// Who may call which RPC (`[auth]`).
    pub auth: AccessSettings,
    /// `[http]`: the Envoy ext_authz surface.
    pub http: ExtAuthzSettings,
    /// The `[[http.routes]]` entries as written, in order, for
    /// `check-config` (`http.routes` is the compiled policy, which keeps
    /// only what matching needs).
    pub http_route_definitions: Arc<[RouteDefinition]>,
    /// `[management_api]`: the products' key-management HTTP API.
    pub management_api: ManagementApiSettings,
    /// `[settings_page]`: the API-keys page served beside that API.
    pub settings_page: SettingsPageSettings,
    /// `[audit]`: how long the audit trail is kept.
    pub audit: AuditSettings,
    /// The wall clock quota refills follow (not configurable: tests
    /// substitute one to cross a day or month boundary).
    pub clock: WallClock,
}

impl Default for Config {
    /// The built-in defaults: Carboncopy, from one source. The scope catalog
    /// is read from `profiles/carboncopy.toml`; every other value is its
    /// table's default, which is Carboncopy's (`cc_` and 64 hex digits, its
    /// denial texts). It differs from that profile in three settings, where
    /// the profile follows Carboncopy's documents to the letter and the
    /// default stays open to deployments that have no profile:
    /// - `keys.schemes`: `Bearer` and `ApiKey` (the profile: `Bearer`);
    /// - `http.require_scheme`: false, a bare key in the authorization
    ///   header is read (the profile: true, only `Bearer <key>`);
    /// - `[[http.routes]]`: none, so ext_authz denies every Check until
    ///   routes are configured (the profile: Carboncopy's HTTP API).
    ///
    /// `config_report`'s test `the_default_is_the_carboncopy_profile_but_for_three_settings`
    /// keeps this list true.
    fn default() -> Self {
        Self::from_raw(RawConfig::default(), "<built-in defaults>")
            .expect("built-in defaults are valid")
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: format!("cannot read: {error}"),
        })?;
        let mut config = Self::parse(&text, &file)?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let fail = |key: String, reason: String| ConfigError {
            file: file.to_owned(),
            key,
            reason,
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| fail("(syntax)".into(), e.to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            fail(
                if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                e.into_inner().message().trim().to_owned(),
            )
        })?;
        Self::from_raw(raw, file)
    }

    /// Each table by its owner's validator; `[http]` last, as it refers to
    /// the key format, the scopes and the denial texts.
    fn from_raw(raw: RawConfig, file: &str) -> Result<Self, ConfigError> {
        let in_file = |error| ConfigError::in_file(file, error);
        let server = ServerSettings::from_raw(raw.server, file).map_err(in_file)?;
        let keys = KeySettings::from_raw(raw.keys).map_err(in_file)?;
        let catalog = ScopeCatalog::from_raw(raw.scopes, raw.presets).map_err(in_file)?;
        let denials = DenialCatalog::from_raw(raw.denials).map_err(in_file)?;
        let cache = CacheSettings::from_raw(raw.cache).map_err(in_file)?;
        let feed = FeedSettings::from_raw(raw.feed).map_err(in_file)?;
        let default_rate_limit =
            crate::rate_limits::default_rate_limit_from_raw(raw.rate_limit).map_err(in_file)?;
        let bans = BanSettings::from_raw(raw.bans).map_err(in_file)?;
        let limits = LimitsSettings::from_raw(raw.limits).map_err(in_file)?;
        let last_used_flush_interval =
            crate::last_use::flush_interval_from_raw(raw.last_used).map_err(in_file)?;
        let auth = AccessSettings::from_raw(raw.auth).map_err(in_file)?;
        let management_api =
            ManagementApiSettings::from_raw(raw.management_api, &catalog).map_err(in_file)?;
        let settings_page =
            SettingsPageSettings::from_raw(raw.settings_page, &management_api, &catalog)
                .map_err(in_file)?;
        let audit = AuditSettings::from_raw(raw.audit).map_err(in_file)?;
        let http_route_definitions = raw.http.route_definitions();
        let http = ExtAuthzSettings::from_raw(raw.http, &keys.format, &catalog, &denials)
            .map_err(in_file)?;
        Ok(Self {
            source: None,
            server,
            key_format: keys.format,
            max_active_keys_per_account: keys.max_active_per_account,
            max_rotation_grace: keys.max_rotation_grace,
            catalog: Arc::new(catalog),
            denials,
            cache,
            feed,
            default_rate_limit,
            bans,
            limits,
            last_used_flush_interval,
            auth,
            http,
            http_route_definitions,
            management_api,
            settings_page,
            audit,
            clock: WallClock::system(),
        })
    }

    /// Where this config came from, for messages.
    pub fn source_name(&self) -> String {
        self.source
            .as_ref()
            .map_or_else(|| "<built-in defaults>".into(), |p| p.display().to_string())
    }
}

#[cfg(test)]
mod tests;
