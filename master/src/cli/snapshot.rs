//! `bramble snapshot save FILE` (from a running master, consistent) and
//! `bramble snapshot restore FILE` (offline, into a data dir), the
//! equivalents of `etcdctl snapshot save/restore`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hyper::Method;

use super::client::{Client, ClientError};
use crate::store;

/// `bramble snapshot` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent copy of the running master's store to FILE.
    Save {
        /// Where to write the snapshot.
        file: PathBuf,
    },
    /// Replace a stopped master's store with the snapshot in FILE (the old store is kept beside it).
    Restore {
        /// The snapshot to restore.
        file: PathBuf,
        /// The master's data dir.
        #[arg(long, default_value = super::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

/// Run a snapshot subcommand.
pub async fn run(
    kubeconfig: Option<&Path>,
    command: SnapshotCommand,
) -> Result<ExitCode, ClientError> {
    match command {
        SnapshotCommand::Save { file } => {
            let client = Client::from_kubeconfig(kubeconfig)?;
            let bytes = client
                .bytes(
                    Method::GET,
                    "/bramble/v1/snapshot",
                    None,
                    Some("application/octet-stream"),
                    Vec::new(),
                )
                .await?;
            let tmp = file.with_extension("partial");
            let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &file));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                eprintln!("error: cannot write {}: {e}", file.display());
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "Snapshot saved at {} ({} bytes)",
                file.display(),
                bytes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Restore { file, data_dir } => {
            let db = data_dir.join("store.redb");
            let target = db.clone();
            match tokio::task::spawn_blocking(move || store::restore_snapshot(&file, &target)).await
            {
                Ok(Ok(info)) => {
                    println!(
                        "Restored {} objects at revision {} into {}",
                        info.objects,
                        info.revision,
                        db.display()
                    );
                    if let Some(previous) = info.previous {
                        println!("The previous store was kept at {}", previous.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Ok(Err(e)) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
