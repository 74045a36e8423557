//! `[server]`: where and how the server runs. Its table stays with `config`
//! because the server is assembled above `config`. `serve`'s flags and
//! environment variables override these values once, in `cli.rs`
//! (`ServeArgs::override_file`), before the server sees them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::{SettingError, in_range, seconds};
use crate::storage::DatabaseUrl;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://keyward.db";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: f64 = 10.0;

/// `[server]` as written.
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
    pub http_listen: Option<String>,
}

/// Server settings: the file's over the defaults, and for `serve` the
/// flags' over both.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Its `Debug` hides the password.
    pub database_url: DatabaseUrl,
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
    /// Where the key-management HTTP API (`[management_api]`) is served;
    /// `None`: not served.
    pub http_listen: Option<SocketAddr>,
    /// Management RPCs without credentials on a non-loopback address
    /// (`--insecure-open-management`; never from the file).
    pub insecure_open_management: bool,
    /// The hot path without a service token where the default requires one
    /// (`--insecure-open-hot-path`; the file says it with
    /// `auth.hot_path_requires_token = false`).
    pub insecure_open_hot_path: bool,
}

/// The config file that set each setting, when one did; `None` means a
/// flag, its environment variable, a caller or the default set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingOrigins {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub metrics_listen: Option<String>,
    pub http_listen: Option<String>,
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
    /// Validates `[server]` of `file` (named as the origin of what it sets),
    /// with the built-in defaults for what it leaves out.
    pub fn from_raw(raw: RawServer, file: &str) -> Result<Self, SettingError> {
        let listen = address(raw.listen, "server.listen", DEFAULT_LISTEN)?;
        let database_url = raw
            .database_url
            .as_deref()
            .map(DatabaseUrl::parse)
            .transpose()
            .map_err(SettingError::at("server.database_url"))?;
        let metrics_listen = address(
            raw.metrics_listen,
            "server.metrics_listen",
            "127.0.0.1:9090",
        )?;
        let http_listen = address(raw.http_listen, "server.http_listen", "127.0.0.1:8080")?;
        let tls_cert = path(raw.tls_cert, "server.tls_cert")?;
        let tls_key = path(raw.tls_key, "server.tls_key")?;
        let tls_client_ca = path(raw.tls_client_ca, "server.tls_client_ca")?;
        let set_here = |set: bool| set.then(|| file.to_owned());
        Ok(Self {
            origins: SettingOrigins {
                listen: set_here(listen.is_some()),
                database_url: set_here(database_url.is_some()),
                metrics_listen: set_here(metrics_listen.is_some()),
                http_listen: set_here(http_listen.is_some()),
                tls_cert: set_here(tls_cert.is_some()),
                tls_key: set_here(tls_key.is_some()),
                tls_client_ca: set_here(tls_client_ca.is_some()),
            },
            listen: listen.unwrap_or_else(default_listen),
            database_url: database_url.unwrap_or_else(default_database_url),
            tls_cert,
            tls_key,
            tls_client_ca,
            metrics_listen,
            http_listen,
            insecure_open_management: false,
            insecure_open_hot_path: false,
            max_connections: in_range(
                raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
                1,
                1_000,
            )
            .map_err(SettingError::at("server.max_connections"))?,
            shutdown_grace: seconds(
                raw.shutdown_grace_seconds
                    .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS),
                0.0,
                3600.0,
            )
            .map_err(SettingError::at("server.shutdown_grace_seconds"))?,
        })
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default")
}

fn default_database_url() -> DatabaseUrl {
    DEFAULT_DATABASE_URL.parse().expect("valid default")
}

/// A socket address; `example` shows the form in the error.
fn address(
    text: Option<String>,
    key: &str,
    example: &str,
) -> Result<Option<SocketAddr>, SettingError> {
    text.map(|text| {
        text.parse::<SocketAddr>().map_err(|_| {
            SettingError::new(key, format!("{text:?} is not an address like {example}"))
        })
    })
    .transpose()
}

fn path(value: Option<String>, key: &str) -> Result<Option<PathBuf>, SettingError> {
    match value {
        Some(text) if text.trim().is_empty() => {
            Err(SettingError::new(key, "must be a file path, not empty"))
        }
        other => Ok(other.map(PathBuf::from)),
    }
}
