//! The `bramble` command line: `bramble master` runs the control plane; the
//! other subcommands talk to it over HTTPS with a kubeconfig, like kubectl.

mod apply;
pub mod client;
mod exec;
mod get;
mod local_agent;
mod logs;
mod master;
mod node;
mod output;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Default data directory of the master.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/bramble/master";

/// The `bramble` command line.
#[derive(Debug, Parser)]
#[command(
    name = "bramble",
    version,
    about = "bramble: a tiny Kubernetes-style orchestrator for Raspberry Pi clusters"
)]
pub struct Cli {
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, then /var/lib/bramble/master/admin.kubeconfig).
    #[arg(long, global = true, env = "BRAMBLE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Namespace flags shared by the object commands.
#[derive(Debug, Clone, clap::Args)]
pub struct NamespaceArgs {
    /// Namespace (default: the kubeconfig context's, usually `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (API server and store).
    Master(master::MasterArgs),
    /// Create or update objects from files (YAML or JSON, multi-document; `-` for stdin).
    Apply(apply::ApplyArgs),
    /// List objects or show one.
    Get(get::GetArgs),
    /// Show an object in detail, with its events.
    Describe(get::DescribeArgs),
    /// Delete objects by name or from files.
    Delete(get::DeleteArgs),
    /// Print a container's log, fetched from its node (`-f` to follow).
    Logs(logs::LogsArgs),
    /// Run a command in a container, as `kubectl exec` (`-i` for stdin).
    Exec(exec::ExecArgs),
    /// Build flashable device images (agent, enabled unit, config baked in).
    #[command(name = "device-image", subcommand)]
    DeviceImage(crate::device_image::DeviceImageCommand),
    /// Register devices as nodes, or revoke them.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Save or restore the whole store.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Print the client and server versions.
    Version,
}

/// Parse the command line and run the chosen subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Master(_)) {
        // Not for the daemon: a closed log pipe must not kill it.
        restore_default_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Store reads and watch catch-ups run on the blocking pool; an
        // unbounded pool (tokio allows 512 threads) grew to gigabytes under
        // load on a 2-core machine. Queue the work instead.
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Master(args) => return master::main(&runtime, args),
        Command::DeviceImage(crate::device_image::DeviceImageCommand::Build(args)) => {
            return match crate::device_image::run(&args) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Apply(args) => runtime.block_on(apply::run(cli.kubeconfig.as_deref(), args)),
        Command::Get(args) => runtime.block_on(get::get(cli.kubeconfig.as_deref(), args)),
        Command::Describe(args) => runtime.block_on(get::describe(cli.kubeconfig.as_deref(), args)),
        Command::Delete(args) => runtime.block_on(get::delete(cli.kubeconfig.as_deref(), args)),
        Command::Logs(args) => runtime.block_on(logs::run(cli.kubeconfig.as_deref(), args)),
        Command::Exec(args) => runtime.block_on(exec::run(cli.kubeconfig.as_deref(), args)),
        Command::Node(cmd) => runtime.block_on(node::run(cli.kubeconfig.as_deref(), cmd)),
        Command::Snapshot(cmd) => runtime.block_on(snapshot::run(cli.kubeconfig.as_deref(), cmd)),
        Command::Version => runtime.block_on(version(cli.kubeconfig.as_deref())),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Let `bramble get ... | head` end quietly when the reader goes away, as
/// Unix tools do (Rust ignores SIGPIPE, so `println!` would panic instead).
#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    // SAFETY: called at the start of main, before any thread exists; setting
    // the disposition of SIGPIPE to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn version(kubeconfig: Option<&std::path::Path>) -> Result<ExitCode, client::ClientError> {
    println!("Client Version: bramble {}", env!("CARGO_PKG_VERSION"));
    let client = client::Client::from_kubeconfig(kubeconfig)?;
    let server = client.get("/version").await?;
    println!(
        "Server Version: {}",
        server["gitVersion"].as_str().unwrap_or("unknown")
    );
    Ok(ExitCode::SUCCESS)
}
