//! The `bramble` command line. STUB: to be completed.

use std::process::ExitCode;

/// Parse the command line and run the chosen subcommand.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
