//! The store's errors: [`StoreError`] for operations on an open store and
//! [`OpenError`] for opening the file. Messages follow the house rules:
//! lowercase, no trailing period, and they say what to do.

use std::io;
use std::path::{Path, PathBuf};

use super::ObjectKey;

/// An error from an operation on an open [`Store`](super::Store).
///
/// The `Display` text of the first five variants is the message Kubernetes
/// puts in its `Status` object for the same failure, so the API can return it
/// as is.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object does not exist (HTTP 404).
    #[error("{} \"{}\" not found", key.kind.info().plural, key.name)]
    NotFound {
        /// The object that was looked for.
        key: ObjectKey,
    },
    /// An object with this key already exists (HTTP 409).
    #[error("{} \"{}\" already exists", key.kind.info().plural, key.name)]
    AlreadyExists {
        /// The object that already exists.
        key: ObjectKey,
    },
    /// A precondition failed: stale `resourceVersion` or a different uid
    /// (HTTP 409).
    #[error("{message}")]
    Conflict {
        /// The object the write was for.
        key: ObjectKey,
        /// Kubernetes' message for this conflict.
        message: String,
    },
    /// A watch asked for a revision older than the oldest event the store
    /// still keeps (HTTP 410): the client must list again.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        /// The revision the client asked to watch from.
        requested: u64,
        /// The oldest revision the event log still holds.
        oldest: u64,
    },
    /// The request cannot be applied as given (HTTP 400/422), for example a
    /// body naming a different object than the key.
    #[error("{message}")]
    Invalid {
        /// What is wrong, for the client.
        message: String,
    },
    /// The data disk is full; the write was not applied (HTTP 507).
    #[error("no space left on the master's data disk ({detail}): free space; nothing was written")]
    DiskFull {
        /// The underlying error, with the store's path.
        detail: String,
    },
    /// The database file is in use by a running master (from
    /// [`restore_snapshot`](super::restore_snapshot)).
    #[error("{} is in use by a running bramble master: stop the master first, then restore", path.display())]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The store has been shut down.
    #[error("the store is shut down; the master is stopping")]
    Closed,
    /// Any other failure of the storage layer (HTTP 500).
    #[error("store failure: {0}")]
    Storage(String),
}

impl StoreError {
    /// Builds a [`StoreError::Invalid`].
    pub(crate) fn invalid(message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            message: message.into(),
        }
    }
}

/// True for the io errors that mean "the disk is full".
pub(crate) fn is_disk_full(err: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(err.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
}

/// What a redb error means for the store, as a [`StoreError`].
pub(crate) fn storage_error(path: &Path, err: impl Into<redb::Error>) -> StoreError {
    let err: redb::Error = err.into();
    match &err {
        redb::Error::Io(io_err) if is_disk_full(io_err) => StoreError::DiskFull {
            detail: format!("{}: {io_err}", path.display()),
        },
        redb::Error::PreviousIo => StoreError::Storage(format!(
            "{}: an earlier write failed and the store is reopening the file; retry shortly",
            path.display()
        )),
        _ => StoreError::Storage(format!("{}: {err}", path.display())),
    }
}

/// True when a redb error leaves the database handle unusable until it is
/// closed and reopened (redb latches every io failure).
pub(crate) fn latches_io_failure(err: &redb::Error) -> bool {
    matches!(err, redb::Error::Io(_) | redb::Error::PreviousIo)
}

/// An error opening the store file. Nothing was written to the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file is a bramble store but cannot be read.
    #[error(
        "refusing to start: {} is a damaged bramble store ({reason}); restore a snapshot with `bramble restore` or move the file away",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not a bramble store (not a redb file, or a redb file without
    /// the bramble schema marker). It was left untouched.
    #[error(
        "refusing to start: {} is not a bramble store (no bramble-store/v1 marker); move it away or choose another --data-dir",
        path.display()
    )]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer bramble whose schema this one does
    /// not know.
    #[error(
        "refusing to start: {} holds store schema {found:?}, newer than this bramble understands (bramble-store/v1); run a newer bramble or restore a snapshot",
        path.display()
    )]
    UnsupportedSchema {
        /// The file.
        path: PathBuf,
        /// The schema marker found in the file.
        found: String,
    },
    /// Another master (or another store in this process) holds the file.
    #[error(
        "refusing to start: {} is in use by another bramble master; stop it first or choose another --data-dir",
        path.display()
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file or its directory cannot be read or written.
    #[error(
        "cannot open the store at {}: {source}; check that the data directory exists, is writable and has free space",
        path.display()
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}
