//! `bramble-agent`: the device daemon. The MQTT link, sync loop and runtimes
//! arrive with their issues; for now it parses its configuration.

use clap::Parser;

/// Command-line arguments of `bramble-agent`.
#[derive(Debug, Parser)]
#[command(name = "bramble-agent", version, about = "bramble device agent")]
struct Args {}

fn main() -> anyhow::Result<()> {
    // Hidden: the per-container shim. Dispatched before anything starts a
    // thread, because the shim forks.
    if std::env::args_os().nth(1).is_some_and(|a| a == "shim") {
        std::process::exit(bramble_agent::runtime::shim::shim_main(
            std::env::args_os().skip(2).collect(),
        ));
    }
    let _args = Args::parse();
    Ok(())
}
