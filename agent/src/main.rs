//! `bramble-agent`: the device daemon. The MQTT link, sync loop and runtimes
//! arrive with their issues; for now it parses its configuration.

use clap::Parser;

/// Command-line arguments of `bramble-agent`.
#[derive(Debug, Parser)]
#[command(name = "bramble-agent", version, about = "bramble device agent")]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}
