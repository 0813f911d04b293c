//! `bramble-agent`: the device daemon.
//!
//! `bramble-agent check-config` validates the configuration and prints it
//! (token redacted). Without a subcommand the agent runs: configuration,
//! facts, local desired state, then the MQTT link and the sync loop, until
//! SIGINT or SIGTERM (a second signal forces the exit).
//!
//! `--runtime sim` selects the simulated runtime; the real one is not built
//! in yet. `--sim-nodes N --sim-credentials FILE` runs N simulated nodes in
//! one process (like kubemark or kwok), a test and benchmark tool: each node
//! has its own MQTT session, with the name and token of one line `NAME TOKEN`
//! of FILE (what `bramble node add --count N --prefix sim-` prints), and its
//! own state directory `{state-dir}/{NAME}`.
//!
//! Logs go to stderr, filtered by `BRAMBLE_LOG` (default
//! `info,rumqttc=warn`), without colours when stderr is not a terminal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bramble_agent::config::{AgentConfig, ConfigOverrides, DEFAULT_CONFIG_PATH};
use bramble_agent::facts::Facts;
use bramble_agent::node::{self, NodeSettings};
use bramble_agent::runtime::sim::SimRuntime;
use bramble_agent::shutdown;
use clap::{Parser, Subcommand, ValueEnum};

/// Exit status when the configuration cannot be loaded or is invalid.
const EXIT_CONFIG: u8 = 1;
/// Exit status while this build has no real device runtime.
const EXIT_NOT_BUILT: u8 = 2;
/// Exit status when the agent fails while running.
const EXIT_RUN_FAILED: u8 = 3;
/// Exit status after a second signal forced the exit (128 + SIGINT).
const EXIT_FORCED: i32 = 130;

/// Which container runtime runs the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// Containers through libcontainer (not built into this agent yet).
    Real,
    /// Simulated pods in memory, for tests and benchmarks.
    Sim,
}

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
    /// Cluster name, as in the MQTT topics [default: bramble].
    #[arg(long, global = true, value_name = "NAME")]
    cluster: Option<String>,
    /// Container runtime [default: real; sim with --sim-nodes].
    #[arg(long, value_enum)]
    runtime: Option<RuntimeKind>,
    /// Test and benchmark tool: run N simulated nodes in this process.
    #[arg(long, value_name = "N", requires = "sim_credentials")]
    sim_nodes: Option<usize>,
    /// Names and tokens of the simulated nodes: lines `NAME TOKEN`.
    #[arg(long, value_name = "FILE", requires = "sim_nodes")]
    sim_credentials: Option<PathBuf>,
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
    // Hidden: the per-container shim. Dispatched before anything starts a
    // thread, because the shim forks.
    if std::env::args_os().nth(1).is_some_and(|a| a == "shim") {
        std::process::exit(bramble_agent::runtime::shim::shim_main(
            std::env::args_os().skip(2).collect(),
        ));
    }
    let cli = Cli::parse();
    let sim_nodes = match (&cli.sim_nodes, &cli.sim_credentials) {
        (Some(count), Some(file)) => match read_sim_credentials(file, *count) {
            Ok(nodes) => Some(nodes),
            Err(e) => {
                eprintln!("bramble-agent: {e:#}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        _ => None,
    };
    // Simulated nodes bring their own names and tokens.
    let first = sim_nodes.as_ref().and_then(|n| n.first()).cloned();
    let overrides = ConfigOverrides {
        master: cli.master,
        node: cli.node.or_else(|| first.as_ref().map(|f| f.0.clone())),
        token: cli.token.or_else(|| first.as_ref().map(|f| f.1.clone())),
        state_dir: cli.state_dir,
        run_dir: cli.run_dir,
        cluster: cli.cluster,
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
            let runtime = cli.runtime.unwrap_or(if sim_nodes.is_some() {
                RuntimeKind::Sim
            } else {
                RuntimeKind::Real
            });
            if runtime == RuntimeKind::Real {
                eprintln!(
                    "bramble-agent: the real runtime is not built into this agent yet; use --runtime sim"
                );
                return ExitCode::from(EXIT_NOT_BUILT);
            }
            init_tracing();
            match run(config, sim_nodes) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::from(EXIT_RUN_FAILED)
                }
            }
        }
    }
}

/// Logs to stderr, filtered by `BRAMBLE_LOG`, no colours unless a terminal.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BRAMBLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttc=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `NAME TOKEN` lines of a credentials file (blank lines and `#` comments
/// skipped); exactly `count` are used.
fn read_sim_credentials(path: &Path, count: usize) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --sim-credentials {}", path.display()))?;
    let mut nodes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(name), Some(token), None) => nodes.push((name.to_owned(), token.to_owned())),
            _ => anyhow::bail!(
                "{}:{}: expected `NAME TOKEN` (the output of `bramble node add --count N --prefix sim-`)",
                path.display(),
                i + 1
            ),
        }
    }
    if nodes.len() < count {
        anyhow::bail!(
            "--sim-nodes {count} needs {count} lines `NAME TOKEN` in {}, it has {}: add nodes with `bramble node add --count {count} --prefix sim-`",
            path.display(),
            nodes.len()
        );
    }
    nodes.truncate(count);
    Ok(nodes)
}

/// The run path: facts, then every node's agent until a signal.
fn run(config: AgentConfig, sim_nodes: Option<Vec<(String, String)>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let facts = Arc::new(Facts::gather());
        let started_unix = jiff::Timestamp::now().as_second();
        tracing::info!(
            node = %config.node,
            master = %config.master,
            cluster = %config.cluster,
            architecture = %facts.node.architecture,
            cgroup_version = facts.node.cgroup_version,
            "bramble-agent {} starting",
            bramble_agent::facts::AGENT_VERSION
        );
        if !facts.has_memory_cgroup() {
            tracing::warn!("{}", bramble_agent::facts::MESSAGE_MEMORY_CGROUP_MISSING);
        }
        let base = NodeSettings::from_config(&config, Arc::clone(&facts), started_unix)?;
        let nodes: Vec<NodeSettings> = match sim_nodes {
            None => vec![base],
            Some(list) => list
                .into_iter()
                .map(|(name, token)| {
                    let mut settings = base.clone();
                    settings.state_dir = config.state_dir.join(&name);
                    settings.node = name;
                    settings.token = token;
                    settings
                })
                .collect(),
        };
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = Vec::new();
        for settings in nodes {
            let runtime = Arc::new(SimRuntime::new());
            tasks.push(tokio::spawn(node::run(settings, runtime, shutdown.clone())));
        }
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping (send the signal again to force)");
            trigger.trigger();
            wait_for_signal().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(EXIT_FORCED);
        });
        let mut result = Ok(());
        for task in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(anyhow::Error::new(e)),
                Err(e) => result = Err(anyhow::anyhow!("a node task failed: {e}")),
            }
        }
        result
    })
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
