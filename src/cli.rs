//! Command-line interface (clap). Every `serve` flag can also come from an
//! environment variable; flags win over the environment, which wins over the
//! config file, which wins over built-in defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Start keyward and measure it (see BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:50051, or `server.listen`].
    #[arg(long, env = "KEYWARD_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// sqlite://PATH or postgres://... [default: sqlite://keyward.db, or `server.database_url`].
    #[arg(long, env = "KEYWARD_DATABASE_URL")]
    pub database_url: Option<String>,

    /// TOML config file (a product profile); built-in Carboncopy defaults without one.
    #[arg(long, env = "KEYWARD_CONFIG")]
    pub config: Option<PathBuf>,
}
