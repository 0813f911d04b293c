//! `bramble-agent`: the device daemon.
//!
//! `bramble-agent check-config` validates the configuration and prints it
//! (token redacted). Without a subcommand the agent runs: configuration,
//! facts, local desired state, then the MQTT link and the sync loop, until
//! SIGINT or SIGTERM (a second signal forces the exit).
//!
//! The real runtime (libcontainer, the default) checks the host, imports
//! the images in `{state-dir}/preload`, re-adopts the containers a previous
//! agent left running, and wires pods into the pod network once the master
//! assigned the node a pod CIDR (`--no-network` leaves pods with only `lo`).
//! `bramble-agent image import FILE | ls | rm REF` manage the local image
//! store; `bramble-agent reset` removes the pod network from the host, then
//! the run directories and cgroups the agent left empty.
//!
//! `--runtime sim` selects the simulated runtime. `--sim-nodes N --sim-credentials FILE` runs N simulated nodes in
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
use bramble_agent::config::{
    AgentConfig, ConfigOverrides, DEFAULT_CONFIG_PATH, DEFAULT_RUN_DIR, DEFAULT_STATE_DIR,
};
use bramble_agent::facts::Facts;
use bramble_agent::images::ImageStore;
use bramble_agent::network::{NetlinkNetwork, NetworkOptions, PodNetwork, DEFAULT_BRIDGE};
use bramble_agent::node::{self, NodeSettings};
use bramble_agent::runtime::hostcheck::check_host;
use bramble_agent::runtime::sim::SimRuntime;
use bramble_agent::runtime::{LinuxPodRuntime, LinuxRuntime, Runtime as _, RuntimeConfig};
use bramble_agent::shutdown;
use clap::{Parser, Subcommand, ValueEnum};

/// Exit status when the configuration cannot be loaded or is invalid.
const EXIT_CONFIG: u8 = 1;
/// Exit status of a failed subcommand (image, reset).
const EXIT_COMMAND_FAILED: u8 = 2;
/// Exit status when the agent fails while running.
const EXIT_RUN_FAILED: u8 = 3;
/// Exit status after a second signal forced the exit (128 + SIGINT).
const EXIT_FORCED: i32 = 130;

/// Which container runtime runs the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// Containers through libcontainer.
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
    /// MQTT broker of the master, mqtt://HOST:PORT (this release speaks plain MQTT only).
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
    /// No pod network: pods without hostNetwork get only a loopback interface.
    #[arg(long)]
    no_network: bool,
    /// This node's InternalIP [default: the address of the default route's interface].
    #[arg(long, value_name = "IPV4")]
    node_address: Option<String>,
    /// The pod bridge [default: bramble0]; agents sharing a network namespace need one each.
    #[arg(long, global = true, value_name = "NAME")]
    bridge: Option<String>,
    /// Registry mirrors, credentials and TLS: a k3s registries.yaml [default: /etc/bramble/registries.yaml if it exists].
    #[arg(long, global = true, value_name = "FILE")]
    registries: Option<PathBuf>,
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
    /// Manage the local image store ({state-dir}/images).
    Image {
        /// What to do with the image store.
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Remove the pod network from the host: pod veths, bridge, routes,
    /// nftables table, netns mounts; then the run directories and cgroups
    /// the agent made, where they are empty. Stop the agent first.
    Reset,
}

/// `bramble-agent image ...`.
#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import an OCI layout directory, OCI archive or `docker save` archive.
    Import {
        /// The directory or archive (.tar, .tar.gz).
        file: PathBuf,
    },
    /// Pull an image from its registry (through the mirrors of registries.yaml).
    Pull {
        /// The image reference (`nginx:1.25`, `ghcr.io/o/r@sha256:...`).
        reference: String,
        /// Pull for another platform than this node's (`linux/arm/v6`).
        #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
        platform: Option<String>,
    },
    /// List the images.
    Ls,
    /// Remove an image (by name or ID).
    Rm {
        /// The image reference.
        reference: String,
    },
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
        node_address: cli.node_address,
        network: cli.no_network.then_some(false),
        bridge: cli.bridge,
        registries: cli.registries,
    };
    if let Some(command @ (Command::Image { .. } | Command::Reset)) = &cli.command {
        return match local_command(command, cli.config.as_deref(), &overrides) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bramble-agent: {e:#}");
                ExitCode::from(EXIT_COMMAND_FAILED)
            }
        };
    }
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
        Some(Command::Image { .. } | Command::Reset) => ExitCode::SUCCESS,
        None => {
            let runtime = cli.runtime.unwrap_or(if sim_nodes.is_some() {
                RuntimeKind::Sim
            } else {
                RuntimeKind::Real
            });
            if runtime == RuntimeKind::Real && sim_nodes.is_some() {
                eprintln!("bramble-agent: --sim-nodes runs simulated nodes only; leave out --runtime real");
                return ExitCode::from(EXIT_CONFIG);
            }
            init_tracing();
            match run(config, sim_nodes, runtime) {
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

/// What the subcommands that work on this machine only need to know.
struct LocalSettings {
    state_dir: PathBuf,
    run_dir: PathBuf,
    node: Option<String>,
    bridge: String,
    registries: Result<bramble_agent::images::registries::RegistriesConfig, String>,
}

/// The settings of the subcommands that work on this machine only: from the
/// configuration when it loads, else from the flags and defaults (no master
/// or token needed).
fn local_settings(config_path: Option<&Path>, overrides: &ConfigOverrides) -> LocalSettings {
    match AgentConfig::load(config_path, overrides) {
        Ok(config) => LocalSettings {
            state_dir: config.state_dir,
            run_dir: config.run_dir,
            node: Some(config.node),
            bridge: config.bridge,
            registries: Ok(config.registries),
        },
        Err(e) => LocalSettings {
            registries: local_registries(overrides, &e),
            state_dir: overrides
                .state_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            run_dir: overrides
                .run_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_RUN_DIR.into()),
            node: overrides.node.clone(),
            bridge: overrides
                .bridge
                .clone()
                .unwrap_or_else(|| DEFAULT_BRIDGE.into()),
        },
    }
}

/// `registries.yaml` for the local subcommands when the whole configuration
/// does not load (no master or token on this machine, say).
fn local_registries(
    overrides: &ConfigOverrides,
    config_error: &bramble_agent::config::ConfigError,
) -> Result<bramble_agent::images::registries::RegistriesConfig, String> {
    use bramble_agent::images::registries::RegistriesConfig;
    if let bramble_agent::config::ConfigError::Invalid {
        key: "registries", ..
    } = config_error
    {
        return Err(config_error.to_string());
    }
    let path = overrides.registries.clone().or_else(|| {
        let p = PathBuf::from(bramble_agent::config::DEFAULT_REGISTRIES_PATH);
        p.is_file().then_some(p)
    });
    match path {
        Some(p) => RegistriesConfig::load(&p).map_err(|e| e.to_string()),
        None => Ok(RegistriesConfig::default()),
    }
}

/// `image ...` and `reset`.
fn local_command(
    command: &Command,
    config_path: Option<&Path>,
    overrides: &ConfigOverrides,
) -> anyhow::Result<()> {
    let LocalSettings {
        state_dir,
        run_dir,
        node,
        bridge,
        registries,
    } = local_settings(config_path, overrides);
    match command {
        Command::Image { command } => {
            let store = ImageStore::open(&state_dir).with_context(|| {
                format!("cannot open the image store in {}", state_dir.display())
            })?;
            match command {
                ImageCommand::Import { file } => {
                    let images = store
                        .import(file)
                        .with_context(|| format!("cannot import {}", file.display()))?;
                    for image in images {
                        println!("imported {} {}", image.short_id(), image.names.join(" "));
                    }
                }
                ImageCommand::Pull {
                    reference,
                    platform,
                } => {
                    use bramble_agent::images::platform::Platform;
                    // Progress (bytes, rate, resumes) goes to stderr.
                    init_tracing();
                    let registries = registries.map_err(anyhow::Error::msg)?;
                    let platform = match platform {
                        Some(p) => Platform::parse(p).map_err(anyhow::Error::msg)?,
                        None => Platform::host(),
                    };
                    let puller = bramble_agent::images::pull::Puller::new(
                        store.clone(),
                        bramble_agent::images::distribution::ClientOptions {
                            registries,
                            ..Default::default()
                        },
                        platform,
                    );
                    let cancel = std::sync::atomic::AtomicBool::new(false);
                    let out = puller
                        .pull(
                            reference,
                            &bramble_agent::images::auth::Keyring::default(),
                            &cancel,
                        )
                        .with_context(|| format!("cannot pull {reference}"))?;
                    println!(
                        "pulled {} {} {} ({} bytes; {} received, {} resumed from an earlier attempt; {:.1}s)",
                        out.image.short_id(),
                        out.image.platform,
                        out.image
                            .repo_digests
                            .first()
                            .cloned()
                            .unwrap_or_default(),
                        out.size,
                        out.received,
                        out.resumed,
                        out.duration.as_secs_f64()
                    );
                }
                ImageCommand::Ls => {
                    println!("{:<14} {:<14} {:>10}  NAMES", "ID", "PLATFORM", "SIZE");
                    for image in store.list()? {
                        println!(
                            "{:<14} {:<14} {:>10}  {}",
                            image.short_id(),
                            image.platform,
                            image.size,
                            image.names.join(" ")
                        );
                    }
                }
                ImageCommand::Rm { reference } => {
                    let image = store
                        .remove(reference)
                        .with_context(|| format!("cannot remove image {reference}"))?;
                    println!("removed {} {}", image.short_id(), image.names.join(" "));
                }
            }
        }
        Command::Reset => {
            let node = node.context(
                "`bramble-agent reset` needs the node name: pass --node NAME or --config FILE",
            )?;
            let network = network_for(&node, &state_dir, &run_dir, &bridge)?;
            network.reset().context("cannot reset the pod network")?;
            println!("pod network of node {node} removed");
            let table = bramble_agent::network::proxy::table_name(&node);
            bramble_agent::services::reset(&state_dir, "nft", &table)
                .map_err(anyhow::Error::msg)
                .context("cannot remove the service proxy")?;
            println!("service proxy table {table} and saved services removed");
            for path in bramble_agent::runtime::remove_empty_leftovers(&run_dir, &node) {
                println!("removed empty {}", path.display());
            }
        }
        Command::CheckConfig => {}
    }
    Ok(())
}

/// The pod network of node `node` (state in `{state_dir}/network`, netns in
/// `{run_dir}/netns`, pods on `bridge`).
fn network_for(
    node: &str,
    state_dir: &Path,
    run_dir: &Path,
    bridge: &str,
) -> anyhow::Result<NetlinkNetwork> {
    let mut options = NetworkOptions::new(state_dir.join("network"), node);
    options.netns_dir = Some(run_dir.join("netns"));
    options.bridge_name = bridge.to_owned();
    NetlinkNetwork::new(options).context("invalid pod network settings")
}

/// Everything the real runtime needs before the node runs: host checks,
/// preloaded images, re-adopted containers, the pod network.
fn real_runtime(
    config: &AgentConfig,
    node_address: Option<std::net::Ipv4Addr>,
    events: bramble_agent::events::EventRecorder,
) -> anyhow::Result<LinuxPodRuntime> {
    let host = check_host();
    for problem in host
        .problems
        .iter()
        .filter(|p| p.as_str() != bramble_agent::runtime::hostcheck::MEMORY_CGROUP_FIX)
    {
        tracing::warn!("host check: {problem}");
    }
    let mut runtime_config = RuntimeConfig::new(
        &config.node,
        config.state_dir.clone(),
        config.run_dir.clone(),
    );
    runtime_config.events = events;
    runtime_config.registries = config.registries.clone();
    if config.network {
        // ClusterFirst pods ask the cluster DNS Service, which the service
        // proxy sends to this node's own DNS server.
        runtime_config.cluster_dns = Some(bramble_agent::dns::DEFAULT_CLUSTER_DNS.into());
    }
    let runtime =
        LinuxRuntime::new(runtime_config).context("cannot start the container runtime")?;
    let preload = config.state_dir.join("preload");
    let imported = runtime.images().import_preload(&preload);
    if imported > 0 {
        tracing::info!(images = imported, dir = %preload.display(), "imported preloaded images");
    }
    let adopted = runtime
        .adopt_existing()
        .context("cannot re-adopt the pods of the previous agent")?;
    if !adopted.is_empty() {
        tracing::info!(pods = adopted.len(), "re-adopted running pods");
    }
    let network: Option<Arc<dyn PodNetwork>> = if config.network {
        Some(Arc::new(network_for(
            &config.node,
            &config.state_dir,
            &config.run_dir,
            &config.bridge,
        )?))
    } else {
        tracing::info!("pod network off: pods without hostNetwork get only a loopback interface");
        None
    };
    Ok(LinuxPodRuntime::new(
        Arc::new(runtime),
        network,
        node_address,
        config.run_dir.clone(),
    ))
}

/// Sends `WATCHDOG=1` at half the service's watchdog interval, if systemd
/// enabled one.
async fn watchdog(mut shutdown: shutdown::Shutdown) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {
                if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                    tracing::debug!(error = %e, "cannot notify the systemd watchdog");
                }
            }
        }
    }
}

/// The run path: facts, then every node's agent until a signal.
fn run(
    config: AgentConfig,
    sim_nodes: Option<Vec<(String, String)>>,
    kind: RuntimeKind,
) -> anyhow::Result<()> {
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
                    settings.events = bramble_agent::events::EventRecorder::new(&name);
                    settings.node = name;
                    settings.token = token;
                    settings
                })
                .collect(),
        };
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = Vec::new();
        if kind == RuntimeKind::Real {
            let node_address = match nodes.first() {
                Some(settings) => node::node_address(settings).await,
                None => None,
            };
            let config = config.clone();
            let events = nodes
                .first()
                .map(|settings| settings.events.clone())
                .unwrap_or_default();
            let runtime =
                tokio::task::spawn_blocking(move || real_runtime(&config, node_address, events))
                    .await
                    .context("starting the runtime failed")??;
            let runtime = Arc::new(runtime);
            for mut settings in nodes {
                settings.node_address = node_address;
                tasks.push(tokio::spawn(node::run(
                    settings,
                    Arc::clone(&runtime),
                    shutdown.clone(),
                )));
            }
        } else {
            for mut settings in nodes {
                // Simulated nodes have no pod network to proxy for.
                settings.service_proxy = false;
                let runtime = Arc::new(SimRuntime::new());
                tasks.push(tokio::spawn(node::run(settings, runtime, shutdown.clone())));
            }
        }
        tokio::spawn(watchdog(shutdown.clone()));
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
