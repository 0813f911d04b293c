//! `bramble`: the control-plane daemon (`bramble master`) and the CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    bramble_master::cli::main()
}
