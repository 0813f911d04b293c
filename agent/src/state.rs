//! The agent's local copy of its desired state: `{state_dir}/desired.bin`,
//! the encoded envelope exactly as received from the master.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the
//! directory) *before* the agent acts on a new desired state, and read at
//! start, so a device that boots without its uplink still runs its pods.
//! These functions block: call them through `spawn_blocking` from async code.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bramble_common::wire::{self, DecodeError, Message, NodeDesired};

/// The file name of the desired state inside the state directory.
pub const DESIRED_FILE: &str = "desired.bin";

/// Errors of the local state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
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
    /// The file does not hold a valid desired state.
    #[error("{} is not a valid desired state ({source}); it is ignored until the master sends a new one", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it could not be decoded.
        #[source]
        source: DecodeError,
    },
    /// The file holds a valid message of another kind.
    #[error("{} holds a {kind} message, not a desired state; it is ignored until the master sends a new one", path.display())]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// The message's kind.
        kind: &'static str,
    },
}

/// The file holding the boot ID the agent last ran under.
pub const BOOT_ID_FILE: &str = "boot_id";

/// Remember `boot_id` in `{state_dir}/boot_id`; the previous one when it
/// differs (the device rebooted since the agent last ran), `None` on the
/// first run or the same boot. Writes only when the boot ID changed, so an
/// SD card sees one small write per boot.
pub fn note_boot_id(state_dir: &Path, boot_id: &str) -> Result<Option<String>, StateError> {
    let path = state_dir.join(BOOT_ID_FILE);
    let previous = match fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(StateError::Io {
                what: "read",
                path,
                source,
            })
        }
    };
    if previous.as_deref() == Some(boot_id) {
        return Ok(None);
    }
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { what, path, source }
    };
    fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
    fs::write(&path, format!("{boot_id}\n")).map_err(io("write", &path))?;
    Ok(previous.filter(|p| !p.is_empty()))
}

/// The path of the desired state file in `state_dir`.
pub fn desired_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DESIRED_FILE)
}

/// Write `payload` (an encoded desired-state envelope) to
/// `{state_dir}/desired.bin` atomically: a reader (or a reboot) sees the old
/// file or the new one, never a mix. Creates `state_dir` if missing.
pub fn save_desired(state_dir: &Path, payload: &[u8]) -> Result<(), StateError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { what, path, source }
    };
    fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
    let target = desired_path(state_dir);
    let tmp = state_dir.join(format!(".{DESIRED_FILE}.tmp"));
    {
        let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(payload).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, &target).map_err(io("rename into place", &target))?;
    File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("fsync", state_dir))?;
    Ok(())
}

/// Read `{state_dir}/desired.bin`. `Ok(None)` when there is none yet; an
/// error when it exists but cannot be read or decoded (the caller logs it and
/// starts empty: a corrupt file never stops the agent).
pub fn load_desired(state_dir: &Path) -> Result<Option<NodeDesired>, StateError> {
    let path = desired_path(state_dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                what: "read",
                path,
                source,
            })
        }
    };
    match wire::decode(&bytes) {
        Ok(Message::Desired(desired)) => Ok(Some(desired)),
        Ok(other) => Err(StateError::WrongKind {
            path,
            kind: other.kind(),
        }),
        Err(source) => Err(StateError::Corrupt { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_common::wire::DesiredPod;

    fn sample(generation: u64) -> NodeDesired {
        NodeDesired {
            generation,
            pods: vec![DesiredPod {
                uid: "u1".into(),
                namespace: "default".into(),
                name: "web".into(),
                spec_json: "{}".into(),
                ..DesiredPod::default()
            }],
            ..NodeDesired::default()
        }
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("nested");
        assert!(load_desired(&state).expect("missing is fine").is_none());
        for generation in [3, 4] {
            let payload = wire::encode(&Message::Desired(sample(generation))).expect("encode");
            save_desired(&state, &payload).expect("save");
            let loaded = load_desired(&state).expect("load").expect("present");
            assert_eq!(loaded.generation, generation);
        }
        let names: Vec<_> = fs::read_dir(&state)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(DESIRED_FILE)]);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(desired_path(dir.path()), b"BRMB\x01\x00\xff\xff\xff").expect("write");
        let err = load_desired(dir.path()).expect_err("corrupt");
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        let presence = wire::encode(&Message::Presence(wire::Presence::Offline)).expect("encode");
        fs::write(desired_path(dir.path()), presence).expect("write");
        assert!(matches!(
            load_desired(dir.path()),
            Err(StateError::WrongKind { .. })
        ));
    }
}
