//! Configuration: a TOML file (a product profile) parsed in two steps, raw
//! (`config/raw.rs`, serde) then validated into [`Config`]. A bad file fails
//! at startup with the file, the key and the reason.
//!
//! Layering for server settings: built-in defaults < config file <
//! environment < command-line flags (the last two are resolved by clap in
//! `cli.rs`; see [`ServerSettings::resolve`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::access_control::AccessSettings;
use crate::change_feed::FeedSettings;
use crate::denial::{DenialCatalog, DenialText};
use crate::domain::RateLimit;
use crate::ext_authz::RouteDefinition;
use crate::failed_auth_bans::BanSettings;
use crate::key_cache::CacheSettings;
use crate::key_format::{Alphabet, KeyFormat};
use crate::scope_catalog::{PresetDefinition, ScopeCatalog, ScopeDefinition, ScopeDenialText};

mod auth;
mod http;
mod raw;

pub use http::ExtAuthzSettings;

use raw::{RawConfig, RawDenialText};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://keyward.db";

/// A configuration problem: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: `{key}`: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
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
    pub catalog: Arc<ScopeCatalog>,
    pub denials: DenialCatalog,
    pub cache: CacheSettings,
    pub feed: FeedSettings,
    /// Per-key limit for keys without their own; `None`: unlimited.
    pub default_rate_limit: Option<RateLimit>,
    pub bans: BanSettings,
    pub last_used_flush_interval: Duration,
    /// Who may call which RPC (`[auth]`).
    pub auth: AccessSettings,
    /// `[http]`: the Envoy ext_authz surface.
    pub http: ExtAuthzSettings,
    /// The `[[http.routes]]` entries as written, in order, for
    /// `check-config` (`http.routes` is the compiled policy, which keeps
    /// only what matching needs).
    pub http_route_definitions: Arc<[RouteDefinition]>,
}

/// Server settings as the file gives them (each may be overridden).
/// `Debug` hides the database URL's password.
#[derive(Clone, Default)]
pub struct ServerSettings {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub max_connections: u32,
    pub shutdown_grace: Duration,
    /// TLS for the gRPC port: certificate chain and private key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// With this CA (PEM), clients must present a certificate it signed.
    pub tls_client_ca: Option<PathBuf>,
    /// Which of these settings the config file set (rather than a flag,
    /// the environment, a caller or the default), so errors about them
    /// name the file and key.
    pub origins: SettingOrigins,
    /// Where `/metrics` is served; `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Management RPCs without credentials on a non-loopback address
    /// (`--insecure-open-management`; never from the file).
    pub insecure_open_management: bool,
    /// The hot path without a service token where the default requires one
    /// (`--insecure-open-hot-path`; the file says it with
    /// `auth.hot_path_requires_token = false`).
    pub insecure_open_hot_path: bool,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so a new field cannot be left out unnoticed.
        let Self {
            listen,
            database_url,
            max_connections,
            shutdown_grace,
            tls_cert,
            tls_key,
            tls_client_ca,
            origins,
            metrics_listen,
            insecure_open_management,
            insecure_open_hot_path,
        } = self;
        f.debug_struct("ServerSettings")
            .field("listen", listen)
            .field(
                "database_url",
                &database_url
                    .as_deref()
                    .map(crate::config_report::redact_url),
            )
            .field("max_connections", max_connections)
            .field("shutdown_grace", shutdown_grace)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("tls_client_ca", tls_client_ca)
            .field("origins", origins)
            .field("metrics_listen", metrics_listen)
            .field("insecure_open_management", insecure_open_management)
            .field("insecure_open_hot_path", insecure_open_hot_path)
            .finish()
    }
}

/// The config file that set each setting, when one did; `None` means a
/// flag, its environment variable, a caller or the default set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingOrigins {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub metrics_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_client_ca: Option<String>,
}

impl SettingOrigins {
    /// How an error names a setting, before the value it is about:
    /// "FILE: `KEY`:" when the file set it (`from_file`), the flag otherwise.
    pub fn name(from_file: Option<&str>, key: &str, flag: &str) -> String {
        match from_file {
            Some(file) => format!("{file}: `{key}`:"),
            None => flag.to_owned(),
        }
    }
}

impl ServerSettings {
    /// Flag or environment value (already merged by clap) over the file's
    /// value over the built-in default.
    pub fn resolve(
        &self,
        listen: Option<SocketAddr>,
        database_url: Option<String>,
    ) -> (SocketAddr, String) {
        (
            listen
                .or(self.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            database_url
                .or_else(|| self.database_url.clone())
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
        )
    }
}

impl Default for Config {
    /// The built-in defaults: Carboncopy (seeds 000/001).
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

    fn from_raw(raw: RawConfig, file: &str) -> Result<Self, ConfigError> {
        let fail = |key: &str, reason: String| ConfigError {
            file: file.to_owned(),
            key: key.to_owned(),
            reason,
        };

        let listen = raw
            .server
            .listen
            .as_deref()
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    fail(
                        "server.listen",
                        format!("{text:?} is not an address like 127.0.0.1:50051"),
                    )
                })
            })
            .transpose()?;
        if let Some(url) = &raw.server.database_url {
            crate::storage::check_database_url(url).map_err(|r| fail("server.database_url", r))?;
        }
        let metrics_listen = raw
            .server
            .metrics_listen
            .as_deref()
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    fail(
                        "server.metrics_listen",
                        format!("{text:?} is not an address like 127.0.0.1:9090"),
                    )
                })
            })
            .transpose()?;
        let path = |key: &str, value: Option<String>| match value {
            Some(text) if text.trim().is_empty() => {
                Err(fail(key, "must be a file path, not empty".into()))
            }
            other => Ok(other.map(PathBuf::from)),
        };
        let tls_cert = path("server.tls_cert", raw.server.tls_cert)?;
        let tls_key = path("server.tls_key", raw.server.tls_key)?;
        let tls_client_ca = path("server.tls_client_ca", raw.server.tls_client_ca)?;
        fn set_here<T>(file: &str, value: &Option<T>) -> Option<String> {
            value.as_ref().map(|_| file.to_owned())
        }
        let server = ServerSettings {
            origins: SettingOrigins {
                listen: set_here(file, &listen),
                database_url: set_here(file, &raw.server.database_url),
                metrics_listen: set_here(file, &metrics_listen),
                tls_cert: set_here(file, &tls_cert),
                tls_key: set_here(file, &tls_key),
                tls_client_ca: set_here(file, &tls_client_ca),
            },
            tls_cert,
            tls_key,
            tls_client_ca,
            metrics_listen,
            insecure_open_management: false,
            insecure_open_hot_path: false,
            listen,
            database_url: raw.server.database_url,
            max_connections: in_range(raw.server.max_connections.unwrap_or(10), 1, 1_000)
                .map_err(|r| fail("server.max_connections", r))?,
            shutdown_grace: seconds(
                raw.server.shutdown_grace_seconds.unwrap_or(10.0),
                0.0,
                3600.0,
            )
            .map_err(|r| fail("server.shutdown_grace_seconds", r))?,
        };

        let keys = raw.keys;
        let alphabet_name = keys.alphabet.as_deref().unwrap_or("hex");
        let alphabet = Alphabet::parse(alphabet_name).ok_or_else(|| {
            fail(
                "keys.alphabet",
                format!("{alphabet_name:?} is not one of: {}", Alphabet::NAMES),
            )
        })?;
        let key_format = KeyFormat::new(
            keys.prefix.as_deref().unwrap_or("cc_"),
            keys.body_length.unwrap_or(64),
            alphabet,
            keys.schemes
                .unwrap_or_else(|| vec!["Bearer".into(), "ApiKey".into()]),
            keys.display_chars.unwrap_or(6),
        )
        .map_err(|(key, reason)| fail(&format!("keys.{key}"), reason))?;
        let max_active_keys_per_account =
            in_range(keys.max_active_per_account.unwrap_or(10), 1, 100_000)
                .map_err(|r| fail("keys.max_active_per_account", r))?;

        let catalog = match raw.scopes {
            None if raw.presets.is_empty() => ScopeCatalog::carboncopy(),
            scopes => {
                let definitions = match scopes {
                    Some(scopes) => scopes
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| {
                            let at = |field: &str| format!("scopes[{i}].{field}");
                            description(&s.description).map_err(|r| fail(&at("description"), r))?;
                            let denial = match (s.denial_code, s.denial_message) {
                                (None, None) => None,
                                (Some(code), Some(message)) => {
                                    denial_code(&code).map_err(|r| fail(&at("denial_code"), r))?;
                                    denial_message(&message)
                                        .map_err(|r| fail(&at("denial_message"), r))?;
                                    Some(ScopeDenialText { code, message })
                                }
                                _ => {
                                    return Err(fail(
                                        &format!("scopes[{i}]"),
                                        "denial_code and denial_message go together".into(),
                                    ));
                                }
                            };
                            Ok(ScopeDefinition {
                                name: s.name,
                                description: s.description,
                                implies: s.implies,
                                auto_grant: s.auto_grant,
                                reserved: s.reserved,
                                denial,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    None => ScopeCatalog::carboncopy().definitions().to_vec(),
                };
                let presets = raw
                    .presets
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| {
                        description(&p.description)
                            .map_err(|r| fail(&format!("presets[{i}].description"), r))?;
                        Ok(PresetDefinition {
                            name: p.name,
                            description: p.description,
                            scopes: p.scopes,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                ScopeCatalog::new(definitions, presets).map_err(|e| fail(&e.path, e.reason))?
            }
        };

        let defaults = DenialCatalog::default();
        let text =
            |key: &str, raw: Option<RawDenialText>, default: DenialText, statuses: &[u16]| {
                denial_text(raw, default, statuses)
                    .map_err(|(field, r)| fail(&format!("{key}.{field}"), r))
            };
        let denials = DenialCatalog {
            missing: text(
                "denials.missing",
                raw.denials.missing,
                defaults.missing,
                &[400, 401],
            )?,
            invalid: text(
                "denials.invalid",
                raw.denials.invalid,
                defaults.invalid,
                &[401, 403],
            )?,
            insufficient_scope: text(
                "denials.insufficient_scope",
                raw.denials.insufficient_scope,
                defaults.insufficient_scope,
                &[403, 404],
            )?,
            rate_limited: text(
                "denials.rate_limited",
                raw.denials.rate_limited,
                defaults.rate_limited,
                &[429, 503],
            )?,
            too_many_failed_attempts: text(
                "denials.too_many_failed_attempts",
                raw.denials.too_many_failed_attempts,
                defaults.too_many_failed_attempts,
                &[401, 403, 429],
            )?,
            unavailable: text(
                "denials.unavailable",
                raw.denials.unavailable,
                defaults.unavailable,
                &[503],
            )?,
        };

        let cache_defaults = CacheSettings::default();
        let cache = CacheSettings {
            capacity: in_range(
                raw.cache.capacity.unwrap_or(cache_defaults.capacity),
                1,
                100_000_000,
            )
            .map_err(|r| fail("cache.capacity", r))?,
            ttl: match raw.cache.ttl_seconds {
                Some(value) => {
                    seconds(value, 0.01, 86_400.0).map_err(|r| fail("cache.ttl_seconds", r))?
                }
                None => cache_defaults.ttl,
            },
            negative_capacity: in_range(
                raw.cache
                    .negative_capacity
                    .unwrap_or(cache_defaults.negative_capacity),
                1,
                100_000_000,
            )
            .map_err(|r| fail("cache.negative_capacity", r))?,
            negative_ttl: match raw.cache.negative_ttl_seconds {
                Some(value) => seconds(value, 0.01, 3_600.0)
                    .map_err(|r| fail("cache.negative_ttl_seconds", r))?,
                None => cache_defaults.negative_ttl,
            },
        };

        let feed_defaults = FeedSettings::default();
        let poll_interval = Duration::from_millis(
            in_range(
                raw.feed
                    .poll_interval_ms
                    .unwrap_or(feed_defaults.poll_interval.as_millis() as u64),
                5,
                60_000,
            )
            .map_err(|r| fail("feed.poll_interval_ms", r))?,
        );
        let freshness_bound = Duration::from_millis(
            in_range(
                raw.feed
                    .freshness_bound_ms
                    .unwrap_or(feed_defaults.freshness_bound.as_millis() as u64),
                20,
                600_000,
            )
            .map_err(|r| fail("feed.freshness_bound_ms", r))?,
        );
        if freshness_bound < poll_interval * 2 {
            return Err(fail(
                "feed.freshness_bound_ms",
                format!(
                    "must be at least twice feed.poll_interval_ms ({} ms), or every missed poll fails requests",
                    poll_interval.as_millis()
                ),
            ));
        }
        let feed = FeedSettings {
            poll_interval,
            freshness_bound,
            retention: match raw.feed.retention_hours {
                Some(hours) => seconds(hours * 3600.0, 60.0, 8_760.0 * 3600.0).map_err(|_| {
                    fail(
                        "feed.retention_hours",
                        format!("must be between 1/60 and 8760 hours, got {hours}"),
                    )
                })?,
                None => feed_defaults.retention,
            },
            prune_interval: match raw.feed.prune_interval_seconds {
                Some(value) => seconds(value, 0.1, 86_400.0)
                    .map_err(|r| fail("feed.prune_interval_seconds", r))?,
                None => feed_defaults.prune_interval,
            },
            watch_buffer: in_range(
                raw.feed.watch_buffer.unwrap_or(feed_defaults.watch_buffer),
                1,
                1_000_000,
            )
            .map_err(|r| fail("feed.watch_buffer", r))?,
            checkpoint_interval: match raw.feed.checkpoint_interval_seconds {
                Some(value) => seconds(value, 0.05, 3_600.0)
                    .map_err(|r| fail("feed.checkpoint_interval_seconds", r))?,
                None => feed_defaults.checkpoint_interval,
            },
            max_watchers: in_range(
                raw.feed.max_watchers.unwrap_or(feed_defaults.max_watchers),
                1,
                1_000_000,
            )
            .map_err(|r| fail("feed.max_watchers", r))?,
            max_watchers_per_caller: in_range(
                raw.feed
                    .max_watchers_per_caller
                    .unwrap_or(feed_defaults.max_watchers_per_caller),
                1,
                1_000_000,
            )
            .map_err(|r| fail("feed.max_watchers_per_caller", r))?,
        };

        let default_rate_limit = raw
            .rate_limit
            .map(|r| {
                RateLimit::new(r.requests, r.per_seconds).map_err(|e| {
                    // RateLimit checks `requests` first.
                    let key = if r.requests == 0 {
                        "rate_limit.requests"
                    } else {
                        "rate_limit.per_seconds"
                    };
                    fail(key, e.0)
                })
            })
            .transpose()?;

        let ban_defaults = BanSettings::default();
        let bans =
            BanSettings {
                enabled: raw.bans.enabled.unwrap_or(ban_defaults.enabled),
                max_failures: in_range(
                    raw.bans.max_failures.unwrap_or(ban_defaults.max_failures),
                    1,
                    1_000_000,
                )
                .map_err(|r| fail("bans.max_failures", r))?,
                window: match raw.bans.window_seconds {
                    Some(value) => seconds(value, 0.01, 86_400.0)
                        .map_err(|r| fail("bans.window_seconds", r))?,
                    None => ban_defaults.window,
                },
                ban_duration: match raw.bans.ban_seconds {
                    Some(value) => seconds(value, 0.01, 7.0 * 86_400.0)
                        .map_err(|r| fail("bans.ban_seconds", r))?,
                    None => ban_defaults.ban_duration,
                },
                max_tracked_addresses: in_range(
                    raw.bans
                        .max_tracked_addresses
                        .unwrap_or(ban_defaults.max_tracked_addresses),
                    1,
                    100_000_000,
                )
                .map_err(|r| fail("bans.max_tracked_addresses", r))?,
            };

        let last_used_flush_interval = seconds(
            raw.last_used.flush_interval_seconds.unwrap_or(5.0),
            0.01,
            3_600.0,
        )
        .map_err(|r| fail("last_used.flush_interval_seconds", r))?;

        let auth = auth::access_settings(raw.auth, &|key: &str, reason| fail(key, reason))?;
        let http_route_definitions = raw
            .http
            .routes
            .iter()
            .map(|route| RouteDefinition {
                methods: route.methods.clone(),
                path: route.path.clone(),
                scopes: route.scopes.clone(),
                public: route.public,
            })
            .collect();
        let http = ExtAuthzSettings::from_raw(raw.http, file, &key_format, &catalog, &denials)?;

        Ok(Self {
            source: None,
            server,
            key_format,
            max_active_keys_per_account,
            catalog: Arc::new(catalog),
            denials,
            cache,
            feed,
            default_rate_limit,
            bans,
            last_used_flush_interval,
            auth,
            http,
            http_route_definitions,
        })
    }

    /// Where this config came from, for messages.
    pub fn source_name(&self) -> String {
        self.source
            .as_ref()
            .map_or_else(|| "<built-in defaults>".into(), |p| p.display().to_string())
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    value: T,
    min: T,
    max: T,
) -> Result<T, String> {
    if value < min || value > max {
        return Err(format!("must be between {min} and {max}, got {value}"));
    }
    Ok(value)
}

fn seconds(value: f64, min: f64, max: f64) -> Result<Duration, String> {
    if !value.is_finite() || value < min || value > max {
        return Err(format!(
            "must be between {min} and {max} seconds, got {value}"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

/// Longest scope or preset description (shown by ListScopes).
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Longest denial message (sent in every denial of its kind).
const MAX_DENIAL_MESSAGE_CHARS: usize = 500;

fn description(text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(format!(
            "at most {MAX_DESCRIPTION_CHARS} characters, got {chars}"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("must be one line of text without control characters".into());
    }
    Ok(())
}

/// A denial code as clients match on it, e.g. `trading_not_enabled`.
fn denial_code(code: &str) -> Result<(), String> {
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        return Err(format!(
            "code {code:?} must be 1 to 64 characters of a-z A-Z 0-9 _ . -"
        ));
    }
    Ok(())
}

fn denial_message(message: &str) -> Result<(), String> {
    let chars = message.chars().count();
    if message.trim().is_empty() || chars > MAX_DENIAL_MESSAGE_CHARS {
        return Err(format!(
            "message must be 1 to {MAX_DENIAL_MESSAGE_CHARS} characters"
        ));
    }
    Ok(())
}

/// A denial's text with the file's overrides; an error names the field
/// (`code`, `message` or `http_status`) it is about.
fn denial_text(
    raw: Option<RawDenialText>,
    default: DenialText,
    statuses: &[u16],
) -> Result<DenialText, (&'static str, String)> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let code = raw.code.unwrap_or_else(|| default.code.to_string());
    denial_code(&code).map_err(|r| ("code", r))?;
    let message = raw.message.unwrap_or_else(|| default.message.to_string());
    denial_message(&message).map_err(|r| ("message", r))?;
    let http_status = raw.http_status.unwrap_or(default.http_status);
    if !statuses.contains(&http_status) {
        return Err((
            "http_status",
            format!("http_status {http_status} is not allowed here; use one of {statuses:?}"),
        ));
    }
    Ok(DenialText::new(&code, &message, http_status))
}

#[cfg(test)]
mod tests;
