//! The agent's local copy of the cluster's Services: one file per shard,
//! `{state_dir}/services/shard-{n}.bin`, the encoded envelope exactly as
//! received from the master.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the
//! directory) before the proxy and the DNS server use a new shard, and read
//! at start, so a device that boots without its uplink still routes its
//! Services and answers cluster names. These functions block: call them
//! through `spawn_blocking` from async code.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bramble_common::wire::{self, Message, ServiceShard};

/// The directory of the shards inside the state directory.
pub const SERVICES_DIR: &str = "services";

/// Errors of the local copy of the Services.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceStoreError {
    /// A file system call failed.
    #[error("cannot {what} {}: {source}; check that the state directory is writable (--state-dir)", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The file of shard `shard` in `state_dir`.
pub fn shard_path(state_dir: &Path, shard: u32) -> PathBuf {
    state_dir
        .join(SERVICES_DIR)
        .join(format!("shard-{shard}.bin"))
}

/// Writes `payload` (an encoded [`Message::Services`]) as shard `shard`,
/// atomically.
pub fn save_shard(state_dir: &Path, shard: u32, payload: &[u8]) -> Result<(), ServiceStoreError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| ServiceStoreError::Io { what, path, source }
    };
    let dir = state_dir.join(SERVICES_DIR);
    fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let target = shard_path(state_dir, shard);
    let tmp = dir.join(format!(".shard-{shard}.bin.tmp"));
    {
        let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(payload).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, &target).map_err(io("rename into place", &target))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", &dir))?;
    Ok(())
}

/// Every shard saved in `state_dir` that decodes, with its payload; files
/// that are missing, unreadable or corrupt are skipped and returned as
/// warnings (the master sends them again), never an error that stops the
/// agent.
pub fn load_shards(state_dir: &Path) -> (Vec<(Vec<u8>, ServiceShard)>, Vec<String>) {
    let mut shards = Vec::new();
    let mut warnings = Vec::new();
    let dir = state_dir.join(SERVICES_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (shards, warnings),
        Err(e) => {
            warnings.push(format!("cannot read {}: {e}", dir.display()));
            return (shards, warnings);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".bin"))
        })
        .collect();
    paths.sort();
    for path in paths {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                warnings.push(format!("cannot read {}: {e}", path.display()));
                continue;
            }
        };
        match wire::decode(&bytes) {
            Ok(Message::Services(shard)) => shards.push((bytes, shard)),
            Ok(other) => warnings.push(format!(
                "{} holds a {} message, not a service shard; ignored",
                path.display(),
                other.kind()
            )),
            Err(e) => warnings.push(format!(
                "{} is not a valid service shard ({e}); ignored until the master sends it again",
                path.display()
            )),
        }
    }
    (shards, warnings)
}

/// Removes the saved shards (for `bramble-agent reset`).
pub fn remove_all(state_dir: &Path) -> Result<(), ServiceStoreError> {
    let dir = state_dir.join(SERVICES_DIR);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ServiceStoreError::Io {
            what: "remove",
            path: dir,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bramble_common::wire::{WireService, SERVICE_SHARDS};

    #[test]
    fn shards_survive_a_restart_and_corrupt_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let shard = ServiceShard {
            shard: 3,
            shard_count: SERVICE_SHARDS,
            revision: 42,
            services: vec![WireService {
                namespace: "default".into(),
                name: "web".into(),
                cluster_ip: "10.96.0.20".into(),
                ..WireService::default()
            }],
        };
        let payload = wire::encode(&Message::Services(shard.clone())).unwrap();
        save_shard(dir.path(), 3, &payload).unwrap();
        fs::write(shard_path(dir.path(), 4), b"garbage").unwrap();
        let (loaded, warnings) = load_shards(dir.path());
        assert_eq!(loaded, vec![(payload, shard)]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("shard-4.bin"), "{warnings:?}");
        remove_all(dir.path()).unwrap();
        assert!(load_shards(dir.path()).0.is_empty());
        remove_all(dir.path()).unwrap();
    }
}
