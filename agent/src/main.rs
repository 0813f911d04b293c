//! `bramble-agent`: the device daemon. The MQTT link, sync loop and runtimes
//! arrive with their issues; for now it loads and checks its configuration.
//!
//! `bramble-agent check-config` validates the configuration and prints it
//! (token redacted). Without a subcommand the agent loads its configuration
//! and, until the device runtime lands, exits with status 2.

mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{AgentConfig, ConfigOverrides, DEFAULT_CONFIG_PATH};

/// Exit status when the configuration cannot be loaded or is invalid.
const EXIT_CONFIG: u8 = 1;
/// Exit status while this build has no device runtime.
const EXIT_NOT_BUILT: u8 = 2;

/// Command-line arguments of `bramble-agent`.
#[derive(Debug, Parser)]
#[command(name = "bramble-agent", version, about = "bramble device agent")]
struct Cli {
    /// Configuration file (TOML). A missing file at the default path is not an error.
    #[arg(long, global = true, value_name = "FILE", help = format!("Configuration file [default: {DEFAULT_CONFIG_PATH}]"))]
    config: Option<PathBuf>,
    /// MQTT broker of the master, mqtt://HOST:PORT or mqtts://HOST:PORT.
    #[arg(long, global = true, value_name = "URL")]
    master: Option<String>,
    /// This node's name (a DNS-1123 subdomain).
    #[arg(long, global = true, value_name = "NAME")]
    node: Option<String>,
    /// Join token issued by `bramble node add`.
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Persistent state directory [default: /var/lib/bramble/agent].
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Runtime state directory [default: /run/bramble].
    #[arg(long, global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// What to do; without a subcommand the agent runs.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Subcommands of `bramble-agent`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate the configuration, print it with the token redacted.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = ConfigOverrides {
        master: cli.master,
        node: cli.node,
        token: cli.token,
        state_dir: cli.state_dir,
        run_dir: cli.run_dir,
    };
    let config = match AgentConfig::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bramble-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            print!("{}", config.to_redacted_toml());
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "bramble-agent: the device runtime is not available in this build yet (see issue tracker)"
            );
            ExitCode::from(EXIT_NOT_BUILT)
        }
    }
}
