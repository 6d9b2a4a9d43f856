//! `natter`: the one binary of the Natter messaging and calls backend.
//!
//! `natter serve [all|auth|chat|media|signaling|turn]` runs services, `natter migrate` applies database
//! migrations, `natter config print` shows the effective configuration, `natter health` asks the
//! local server whether it is ready (a container HEALTHCHECK).

mod avatar_refs;
mod config;
#[cfg(test)]
mod config_fuzz;
mod health;
mod serve;
mod smoke;
mod supervise;
mod writer_lock;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use config::Config;
use natter_common::telemetry::LogFormat;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "natter",
    version,
    about = "Self-hostable messaging and calls backend"
)]
struct Cli {
    /// TOML configuration file (environment variables NATTER_<SECTION>__<KEY> override it).
    #[arg(long, global = true, env = "NATTER_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for embedded state (SQLite, media, secrets, outboxes). Env: NATTER_DATA_DIR.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run services (default: all of them in one process).
    Serve {
        /// Which service to run.
        #[arg(value_enum, default_value = "all")]
        service: Service,
    },
    /// Apply every service's database migrations, then exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Ask the `natter serve` on this host (at `http.listen`) whether it is
    /// ready (`/readyz`), or with `--live` alive (`/healthz`). Exit 0 when it
    /// answers 200, 1 otherwise: for a container HEALTHCHECK.
    Health {
        /// Check liveness instead of readiness.
        #[arg(long)]
        live: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Check a running release end to end: two numbers from the server's
    /// `auth.test_numbers` register with `auth.test_code`, the first sends the
    /// second a message over the WebSocket, and its delivery receipt comes
    /// back. Exit 0 when it does (the chart's `helm test`).
    Smoke {
        /// Base URL of the release (the Ingress, or the one embedded pod).
        #[arg(
            long,
            env = "NATTER_SMOKE_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        url: String,
        /// Base URL of the auth service, when it differs from --url.
        #[arg(long, env = "NATTER_SMOKE_AUTH_URL")]
        auth_url: Option<String>,
        /// Base URL of the chat service, when it differs from --url.
        #[arg(long, env = "NATTER_SMOKE_CHAT_URL")]
        chat_url: Option<String>,
        /// The two test numbers (comma-separated in the environment).
        #[arg(
            long = "number",
            env = "NATTER_SMOKE_NUMBERS",
            value_delimiter = ',',
            required = true
        )]
        numbers: Vec<String>,
        /// Their code (`auth.test_code`).
        #[arg(long, env = "NATTER_SMOKE_CODE", hide_env_values = true)]
        code: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Print,
}

/// A service `natter serve` can run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub(crate) enum Service {
    /// Every service in one process.
    All,
    /// Registration, accounts, devices, tokens, keys.
    Auth,
    /// Media: uploads, thumbnails, downloads, references and their collection.
    Media,
    /// Chat: the WebSocket gateway, messages, receipts, groups, presence (and
    /// the call state machine, whose frames ride the chat socket).
    Chat,
    /// Calls: ICE servers with TURN credentials, the call log.
    Signaling,
    /// The STUN/TURN server (UDP, TCP, TLS), with health endpoints on HTTP.
    Turn,
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = Config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(dir) = &cli.data_dir {
        cfg.data_dir = dir.clone();
    }
    if let Some(format) = cli.log_format {
        cfg.log.format = format;
    }
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = match load(&cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("natter: {e}");
            std::process::exit(2);
        }
    };
    match cli.command {
        Command::Config {
            command: ConfigCommand::Print,
        } => match cfg.to_toml() {
            Ok(text) => {
                print!("{text}");
                Ok(())
            }
            Err(e) => {
                eprintln!("natter: {e}");
                std::process::exit(2);
            }
        },
        Command::Health { live, timeout_secs } => {
            let addr = health::probe_addr(cfg.http.listen);
            let path = if live { "/healthz" } else { "/readyz" };
            let timeout = std::time::Duration::from_secs(timeout_secs.max(1));
            match health::status(addr, path, timeout) {
                Ok(200) => {
                    println!("{path}: 200");
                    Ok(())
                }
                Ok(code) => {
                    eprintln!("natter health: {path} answered {code}");
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!("natter health: {path}: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Smoke {
            url,
            auth_url,
            chat_url,
            numbers,
            code,
            timeout_secs,
        } => {
            let [a, b]: [String; 2] = numbers
                .try_into()
                .map_err(|_| anyhow::anyhow!("natter smoke: give exactly two numbers"))?;
            let url = url.trim_end_matches('/').to_owned();
            let args = smoke::SmokeArgs {
                auth_url: auth_url
                    .map_or_else(|| url.clone(), |u| u.trim_end_matches('/').to_owned()),
                chat_url: chat_url
                    .map_or_else(|| url.clone(), |u| u.trim_end_matches('/').to_owned()),
                numbers: [a, b],
                code,
                timeout: std::time::Duration::from_secs(timeout_secs.max(1)),
            };
            if let Err(e) = runtime()?.block_on(smoke::run(args)) {
                eprintln!("natter smoke: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Migrate => {
            natter_common::telemetry::init(&cfg.log);
            runtime()?.block_on(serve::migrate(&cfg))
        }
        Command::Serve { service } => {
            natter_common::telemetry::init(&cfg.log);
            runtime()?.block_on(serve::serve(cfg, service))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")
}
