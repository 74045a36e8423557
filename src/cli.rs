//! Command-line interface (clap). Every `serve` flag can also come from an
//! environment variable; flags win over the environment, which wins over the
//! config file, which wins over built-in defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ServerSettings;
use crate::shared_limits::{LimitsSettings, RedisUrl};
use crate::storage::DatabaseUrl;

#[derive(Debug, Parser)]
#[command(name = "keyward", version, about = "API-key authorization service")]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, env = "KEYWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Validate a config file (profile) and print what it means, without starting.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Create, list, show, change and revoke keys on a running server.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print a new random service token and the `[[auth.service_tokens]]`
    /// entry (with its SHA-256) to put in the config.
    ServiceToken {
        /// The name the config entry gets (shown in logs and refusals).
        #[arg(long, default_value = "my-service")]
        name: String,
    },
}

// `Debug` hides the database URL's password, and `--help` the
// environment's value of it (`hide_env_values`). Not a doc comment: clap
// would make it the command's description.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:50051, or `server.listen`].
    #[arg(long, env = "KEYWARD_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// sqlite://PATH or postgres://... [default: sqlite://keyward.db, or `server.database_url`].
    #[arg(long, env = "KEYWARD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// redis://[:PASSWORD@]HOST[:PORT][/DB] for limits shared by replicas [or `limits.redis_url`; used with `limits.backend = "redis"`].
    #[arg(long, env = "KEYWARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// TOML config file (a product profile); built-in Carboncopy defaults without one.
    #[arg(long, env = "KEYWARD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Serve gRPC over TLS with this certificate chain (PEM) [or `server.tls_cert`].
    #[arg(long, env = "KEYWARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --tls-cert [or `server.tls_key`].
    #[arg(long, env = "KEYWARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS [or `server.tls_client_ca`].
    #[arg(long, env = "KEYWARD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDRESS/metrics [default: off, or `server.metrics_listen`].
    #[arg(long, env = "KEYWARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve the key-management HTTP API (`[management_api]`) here [default: off, or `server.http_listen`].
    #[arg(long, env = "KEYWARD_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// Allow management RPCs without credentials on a non-loopback address.
    #[arg(long, env = "KEYWARD_INSECURE_OPEN_MANAGEMENT")]
    pub insecure_open_management: bool,

    /// Serve Authenticate, CheckScope, WatchRevocations and Check without a
    /// service token even where the default requires one (management needs
    /// credentials, or a non-loopback address) [or `auth.hot_path_requires_token = false`].
    #[arg(long, env = "KEYWARD_INSECURE_OPEN_HOT_PATH")]
    pub insecure_open_hot_path: bool,
}

impl ServeArgs {
    /// Puts `--redis-url` (or `KEYWARD_REDIS_URL`) over `limits.redis_url`.
    pub fn override_limits(&self, limits: &mut LimitsSettings) -> Result<(), String> {
        if let Some(url) = &self.redis_url {
            limits.redis_url =
                Some(RedisUrl::parse(url).map_err(|reason| format!("--redis-url: {reason}"))?);
        }
        Ok(())
    }

    /// Puts the flags (and the environment variables, which clap has put
    /// under the flags) over the config file's server settings: the one
    /// place they meet. A setting a flag gives is no longer the file's, so
    /// errors about it name the flag.
    pub fn override_file(&self, server: &mut ServerSettings) -> Result<(), String> {
        let origins = &mut server.origins;
        if let Some(listen) = self.listen {
            server.listen = listen;
            origins.listen = None;
        }
        if let Some(url) = &self.database_url {
            server.database_url =
                DatabaseUrl::parse(url).map_err(|reason| format!("--database-url: {reason}"))?;
            origins.database_url = None;
        }
        if let Some(address) = self.metrics_listen {
            server.metrics_listen = Some(address);
            origins.metrics_listen = None;
        }
        if let Some(address) = self.http_listen {
            server.http_listen = Some(address);
            origins.http_listen = None;
        }
        for (flag, path, from_file) in [
            (&self.tls_cert, &mut server.tls_cert, &mut origins.tls_cert),
            (&self.tls_key, &mut server.tls_key, &mut origins.tls_key),
            (
                &self.tls_client_ca,
                &mut server.tls_client_ca,
                &mut origins.tls_client_ca,
            ),
        ] {
            if flag.is_some() {
                path.clone_from(flag);
                *from_file = None;
            }
        }
        server.insecure_open_management = self.insecure_open_management;
        server.insecure_open_hot_path = self.insecure_open_hot_path;
        Ok(())
    }
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so a new field cannot be left out unnoticed.
        let Self {
            listen,
            database_url,
            redis_url,
            config,
            tls_cert,
            tls_key,
            tls_client_ca,
            metrics_listen,
            http_listen,
            insecure_open_management,
            insecure_open_hot_path,
        } = self;
        f.debug_struct("ServeArgs")
            .field("listen", listen)
            .field(
                "database_url",
                &database_url.as_deref().map(crate::storage::redact_password),
            )
            .field(
                "redis_url",
                &redis_url.as_deref().map(crate::storage::redact_password),
            )
            .field("config", config)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("tls_client_ca", tls_client_ca)
            .field("metrics_listen", metrics_listen)
            .field("http_listen", http_listen)
            .field("insecure_open_management", insecure_open_management)
            .field("insecure_open_hot_path", insecure_open_hot_path)
            .finish()
    }
}

/// How the operator CLI reaches a server.
// `Debug` hides the token; so does `--help` (`hide_env_values`).
#[derive(Clone, clap::Args)]
pub struct ConnectionArgs {
    /// The server: http://HOST:PORT, or https://HOST:PORT with --tls-ca.
    #[arg(long, env = "KEYWARD_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,

    /// Service token or user JWT, sent as `authorization: Bearer ...`.
    #[arg(long, env = "KEYWARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// CA certificate (PEM) that signed the server's certificate (for https://).
    #[arg(long, env = "KEYWARD_CLIENT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for servers that require mutual TLS.
    #[arg(long, env = "KEYWARD_CLIENT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "KEYWARD_CLIENT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// The name to expect in the server's certificate [default: the host of --server].
    #[arg(long)]
    pub tls_domain: Option<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl std::fmt::Debug for ConnectionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            server,
            token,
            tls_ca,
            tls_cert,
            tls_key,
            tls_domain,
            json,
        } = self;
        f.debug_struct("ConnectionArgs")
            .field("server", server)
            .field("token", &token.as_ref().map(|_| ".."))
            .field("tls_ca", tls_ca)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("tls_domain", tls_domain)
            .field("json", json)
            .finish()
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown this once).
    Create {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[arg(long)]
        account: String,
        /// Comma-separated scopes, e.g. `orders:read,traders:write`.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// A preset from the catalog; its scopes are added.
        #[arg(long)]
        preset: Option<String>,
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. `30d`, `12h`, `90m`.
        #[arg(long, value_parser = parse_lifetime)]
        expires_in: Option<std::time::Duration>,
        /// The key's own rate limit, REQUESTS/PERIOD: `100/60s`, `10/1m`,
        /// `5/1` (seconds) [default: the server's `[rate_limit]`].
        #[arg(long, value_parser = parse_rate_limit)]
        rate_limit: Option<RateLimitArg>,
        /// A metadata entry, NAME=VALUE (repeat for more).
        #[arg(long = "meta", value_name = "NAME=VALUE", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// An address or CIDR the key may be used from (repeat for more;
        /// none: any address).
        #[arg(long = "allow-network", value_name = "CIDR")]
        allow_network: Vec<String>,
    },
    /// List an account's keys.
    List {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[arg(long)]
        account: String,
        /// Show revoked keys too.
        #[arg(long)]
        include_revoked: bool,
    },
    /// Show one key.
    Get {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[arg(long)]
        account: String,
        /// The key id.
        #[arg(long)]
        id: String,
    },
    /// Rename a key or replace its scopes.
    Update {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[arg(long)]
        account: String,
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// The new full scope list, comma-separated.
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// A new rate limit, REQUESTS/PERIOD (`100/60s`), or `default` to
        /// drop the key's own limit.
        #[arg(long, value_parser = parse_rate_limit_change)]
        rate_limit: Option<RateLimitChange>,
        /// Replaces the key's whole metadata with these entries, NAME=VALUE
        /// (repeat for more).
        #[arg(long = "meta", value_name = "NAME=VALUE", value_parser = parse_meta, conflicts_with = "clear_meta")]
        meta: Vec<(String, String)>,
        /// Removes every metadata entry.
        #[arg(long)]
        clear_meta: bool,
        /// Replaces the key's allowed networks with these (repeat for more).
        #[arg(
            long = "allow-network",
            value_name = "CIDR",
            conflicts_with = "clear_networks"
        )]
        allow_network: Vec<String>,
        /// Removes the allowlist: the key works from any address again.
        #[arg(long)]
        clear_networks: bool,
    },
    /// Revoke a key (at once, on every replica).
    Revoke {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[arg(long)]
        account: String,
        #[arg(long)]
        id: String,
    },
    /// Replace a key with a new one that inherits it, and print the new
    /// secret (shown this once). The old key keeps working for `--grace`.
    Rotate {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[arg(long)]
        account: String,
        /// How long the old key keeps working, e.g. `24h`, `7d`
        /// [default: 0, revoked at once].
        #[arg(long, value_parser = parse_grace)]
        grace: Option<std::time::Duration>,
        /// The key to rotate.
        key_id: String,
    },
    /// Import keys another system holds as SHA-256 digests, from a file of
    /// JSON lines (one ImportedKey each), in batches of up to 1,000.
    Import {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// JSON lines: account_id, name, sha256_hex, start, scopes,
        /// created_at, expires_at (RFC 3339), rate_limit {requests,
        /// per_seconds}, metadata.
        file: std::path::PathBuf,
    },
    /// Show an account's audit trail (ListKeyEvents), oldest first: who
    /// created, changed and revoked which key, when, from where.
    Events {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[arg(long)]
        account: String,
        /// Only this key's events.
        key_id: Option<String>,
    },
}

/// `24h`, `7d`, `0s`: a grace period (zero revokes at once).
fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}; use a duration like 24h or 7d"))
}

/// `plan=pro`: a metadata entry (the server checks names and values).
fn parse_meta(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE, e.g. plan=pro"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// `30d`, `12h`, `90m`, `1h30m`: a positive duration.
fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; use a duration like 30d, 12h or 90m"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// A rate limit as typed: at most `requests` per `per_seconds` seconds
/// (the server checks the ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitArg {
    pub requests: u32,
    pub per_seconds: u32,
}

/// `100/60s`, `10/1m`, `5/1`: requests, a slash, and whole seconds (a bare
/// number, or a duration like `60s`, `1m`, `1h`).
fn parse_rate_limit(text: &str) -> Result<RateLimitArg, String> {
    let usage = "use REQUESTS/PERIOD, like 100/60s, 10/1m or 5/1";
    let (requests, period) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: {usage}"))?;
    let requests = requests
        .trim()
        .parse()
        .map_err(|_| format!("{requests:?} is not a number of requests; {usage}"))?;
    let period = period.trim();
    let per_seconds = match period.parse::<u32>() {
        Ok(seconds) => seconds,
        Err(_) => {
            let duration = humantime::parse_duration(period)
                .map_err(|e| format!("{period:?}: {e}; {usage}"))?;
            if duration.subsec_nanos() != 0 {
                return Err(format!("{period:?}: the period is whole seconds"));
            }
            u32::try_from(duration.as_secs())
                .map_err(|_| format!("{period:?} is too long a period"))?
        }
    };
    Ok(RateLimitArg {
        requests,
        per_seconds,
    })
}

/// What `keys update --rate-limit` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitChange {
    Set(RateLimitArg),
    /// Drop the key's own limit: the server's default applies again.
    Default,
}

fn parse_rate_limit_change(text: &str) -> Result<RateLimitChange, String> {
    if text.trim() == "default" {
        return Ok(RateLimitChange::Default);
    }
    parse_rate_limit(text).map(RateLimitChange::Set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_holds_no_password_or_token() {
        let cli = Cli::parse_from([
            "keyward",
            "serve",
            "--database-url",
            "postgres://kw:s3cret@db/kw?password=s3cret",
        ]);
        let shown = format!("{cli:?}");
        assert!(shown.contains("postgres://kw:***@db/kw"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");

        let cli = Cli::parse_from([
            "keyward",
            "keys",
            "list",
            "--account",
            "a",
            "--token",
            "kwt_s3cret",
        ]);
        let shown = format!("{cli:?}");
        assert!(shown.contains("token: Some(\"..\")"), "{shown}");
        assert!(!shown.contains("kwt_s3cret"), "{shown}");
    }

    #[test]
    fn flags_override_the_file_and_are_named_in_errors() {
        let file = "[server]\nlisten = \"127.0.0.1:7000\"\ntls_cert = \"file.pem\"";
        let serve = |flags: &[&str]| {
            let mut config = crate::config::Config::parse(file, "p.toml").unwrap();
            let cli = Cli::parse_from([&["keyward", "serve"], flags].concat());
            let Command::Serve(args) = cli.command else {
                unreachable!()
            };
            args.override_file(&mut config.server)
                .map(|()| config.server)
        };

        let server = serve(&[]).unwrap();
        assert_eq!(server.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(server.origins.listen.as_deref(), Some("p.toml"));
        assert_eq!(server.tls_cert, Some("file.pem".into()));
        assert_eq!(server.origins.tls_cert.as_deref(), Some("p.toml"));

        let server = serve(&[
            "--listen",
            "127.0.0.1:8000",
            "--database-url",
            "sqlite://x.db",
            "--tls-cert",
            "flag.pem",
            "--metrics-listen",
            "127.0.0.1:9000",
        ])
        .unwrap();
        assert_eq!(server.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(server.database_url.expose(), "sqlite://x.db");
        assert_eq!(server.tls_cert, Some("flag.pem".into()));
        assert_eq!(
            server.metrics_listen,
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(server.origins, crate::config::SettingOrigins::default());

        let error = serve(&["--database-url", "mysql://kw:s3cret@db/kw"]).unwrap_err();
        assert!(error.starts_with("--database-url: unsupported"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn rate_limits_read_as_requests_per_period() {
        let limit = |requests, per_seconds| RateLimitArg {
            requests,
            per_seconds,
        };
        assert_eq!(parse_rate_limit("100/60s"), Ok(limit(100, 60)));
        assert_eq!(parse_rate_limit("10/1m"), Ok(limit(10, 60)));
        assert_eq!(parse_rate_limit("5/1"), Ok(limit(5, 1)));
        assert_eq!(parse_rate_limit("1/1h"), Ok(limit(1, 3600)));
        for bad in ["100", "x/60s", "10/soon", "10/1.5s", "-1/60s"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_rate_limit_change("default"),
            Ok(RateLimitChange::Default)
        );
        assert_eq!(
            parse_rate_limit_change("2/1s"),
            Ok(RateLimitChange::Set(limit(2, 1)))
        );
    }

    #[test]
    fn redis_url_flag_overrides_the_file_and_hides_its_password() {
        let file = "[limits]\nbackend = \"redis\"\nredis_url = \"redis://file:6379\"";
        let serve = |flags: &[&str]| {
            let mut config = crate::config::Config::parse(file, "p.toml").unwrap();
            let cli = Cli::parse_from([&["keyward", "serve"], flags].concat());
            let shown = format!("{cli:?}");
            let Command::Serve(args) = cli.command else {
                unreachable!()
            };
            args.override_limits(&mut config.limits)
                .map(|()| (config.limits, shown))
        };
        let (limits, shown) = serve(&["--redis-url", "redis://:s3cret@flag:6380/1"]).unwrap();
        assert_eq!(
            limits.redis_url.unwrap().expose(),
            "redis://:s3cret@flag:6380/1"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        let (limits, _) = serve(&[]).unwrap();
        assert_eq!(limits.redis_url.unwrap().expose(), "redis://file:6379");
        let error = serve(&["--redis-url", "http://:s3cret@flag"]).unwrap_err();
        assert!(error.starts_with("--redis-url: "), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }
}
