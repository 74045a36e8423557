//! The `keyward` binary: parses the command line, sets up logging, and runs
//! the chosen command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use keyward::cli::{Cli, Command, LogFormat, ServeArgs};
use keyward::config::Config;
use keyward::server;
use tracing_subscriber::EnvFilter;

/// `RUST_LOG` when set (a filter it cannot parse stops the command rather
/// than being ignored), `default_level` otherwise.
fn init_logging(format: LogFormat, default_level: &str) -> Result<(), String> {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::builder()
            .parse(&directives)
            .map_err(|e| format!("RUST_LOG {directives:?}: {e}"))?,
        _ => EnvFilter::new(default_level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its life at info; tools only warn.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    if let Err(message) = init_logging(cli.log_format, default_level) {
        eprintln!("keyward: {message}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::CheckConfig { file } => check_config(&file),
        Command::Keys(command) => keyward::operator_cli::run(command)
            .await
            .map(|output| print!("{output}"))
            .map_err(|e| e.to_string()),
        Command::ServiceToken { name } => service_token(&name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keyward: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = load_config(args.config.as_deref())?;
    args.override_file(&mut config.server)?;
    args.override_limits(&mut config.limits)?;
    tracing::info!(config = %config.source_name(), "configuration loaded");
    let running = server::start(config).await.map_err(|e| e.to_string())?;
    let stop = running.stop_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    running.wait().await.map_err(|e| e.to_string())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("signal received");
}

fn check_config(file: &std::path::Path) -> Result<(), String> {
    let config = Config::load(file).map_err(|e| e.to_string())?;
    // TLS files named in the profile are checked as `serve` would.
    keyward::server::tls::server_tls_config(&config.server).map_err(|e| e.to_string())?;
    print!("{}", keyward::config_report::describe(&config));
    Ok(())
}

fn service_token(name: &str) -> Result<(), String> {
    let token = keyward::access_control::generate_service_token()
        .map_err(|e| format!("the OS random number generator failed: {e}"))?;
    println!("token (give it to the caller; keyward keeps only the hash):\n{token}\n");
    println!(
        "config entry:\n[[auth.service_tokens]]\nname = {name:?}\nsha256 = \"{}\"\nrpcs = [\"ListKeys\", \"GetKey\"]",
        keyward::access_control::token_sha256_hex(&token)
    );
    Ok(())
}
