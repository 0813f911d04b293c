//! Snapshot (online) and restore (offline) of the whole store.
//!
//! A snapshot copies every table as seen by one read transaction, so it is
//! consistent while writes go on, into a new redb file written as
//! `<dest>.tmp` and renamed into place once complete and synced. It is a
//! store file itself (same schema marker): restoring is validating it and
//! copying it into place, keeping the previous database beside it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::error::{is_disk_full, storage_error};
use super::open::{link_no_clobber, sync_parent, unique_sibling, verify_ours};
use super::schema::{self, EVENTS, META, OBJECTS, OWNERS};
use super::{Shared, StoreError};

/// What [`Store::snapshot`](super::Store::snapshot) wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The snapshot file.
    pub path: PathBuf,
    /// The store revision the snapshot holds.
    pub revision: u64,
    /// How many objects it holds.
    pub objects: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What [`restore_snapshot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreInfo {
    /// The store revision now in place.
    pub revision: u64,
    /// How many objects the restored store holds.
    pub objects: u64,
    /// Where the database that was replaced now is (`None` if there was
    /// none). It is never deleted.
    pub previous: Option<PathBuf>,
}

fn io_error(path: &Path, what: &str, err: io::Error) -> StoreError {
    if is_disk_full(&err) {
        StoreError::DiskFull {
            detail: format!("{}: {err}", path.display()),
        }
    } else {
        StoreError::Storage(format!("{what} {}: {err}", path.display()))
    }
}

/// `<path>.tmp`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes a snapshot of the store to `dest` (blocking).
pub(crate) fn write_snapshot(shared: &Shared, dest: &Path) -> Result<SnapshotInfo, StoreError> {
    if dest.exists() {
        return Err(StoreError::invalid(format!(
            "the snapshot destination {} exists; choose a new file name",
            dest.display()
        )));
    }
    let tmp = tmp_path(dest);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                StoreError::invalid(format!(
                    "{} exists (left by an interrupted snapshot?); remove it and retry",
                    tmp.display()
                ))
            } else {
                io_error(&tmp, "cannot create", e)
            }
        })?;
    let result = copy_store(shared, file, &tmp).and_then(|(revision, objects)| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&tmp, "cannot sync", e))?;
        link_no_clobber(&tmp, dest).map_err(|e| io_error(dest, "cannot create", e))?;
        let bytes = fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        Ok(SnapshotInfo {
            path: dest.to_path_buf(),
            revision,
            objects,
            bytes,
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies every table of the store into a new database in `file`. Returns
/// (revision, object count).
fn copy_store(shared: &Shared, file: File, tmp: &Path) -> Result<(u64, u64), StoreError> {
    let target_error = |e: redb::Error| storage_error(tmp, e);
    let db = shared.db()?;
    let source = db.begin_read().map_err(|e| shared.error(e))?;
    let revision = super::read_revision(shared, &source)?;
    let backend = FileBackend::new(file).map_err(|e| target_error(e.into()))?;
    let snapshot = redb::Builder::new()
        .create_with_backend(backend)
        .map_err(|e| target_error(e.into()))?;
    let target = snapshot.begin_write().map_err(|e| target_error(e.into()))?;
    let read_error = |e: redb::Error| shared.error(e);
    let objects = copy_table(&source, &target, OBJECTS, read_error, target_error)?;
    copy_table(&source, &target, META, read_error, target_error)?;
    copy_table(&source, &target, EVENTS, read_error, target_error)?;
    copy_table(&source, &target, OWNERS, read_error, target_error)?;
    drop(source);
    drop(db);
    target.commit().map_err(|e| target_error(e.into()))?;
    snapshot.close().map_err(|e| target_error(e.into()))?;
    Ok((revision, objects))
}

/// Copies one table; returns the number of rows.
fn copy_table<K, V>(
    source: &ReadTransaction,
    target: &WriteTransaction,
    table: TableDefinition<'static, K, V>,
    read_error: impl Fn(redb::Error) -> StoreError,
    write_error: impl Fn(redb::Error) -> StoreError,
) -> Result<u64, StoreError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let mut out = target
        .open_table(table)
        .map_err(|e| write_error(e.into()))?;
    let input = match source.open_table(table) {
        Ok(input) => input,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(read_error(e.into())),
    };
    let mut rows = 0;
    for entry in input.iter().map_err(|e| read_error(e.into()))? {
        let (key, value) = entry.map_err(|e| read_error(e.into()))?;
        out.insert(key.value(), value.value())
            .map_err(|e| write_error(e.into()))?;
        rows += 1;
    }
    Ok(rows)
}

/// Reads (revision, object count) of a verified store file.
fn describe(path: &Path) -> Result<(u64, u64), StoreError> {
    let invalid = |e: &dyn std::fmt::Display| {
        StoreError::invalid(format!("{} is not a usable snapshot: {e}", path.display()))
    };
    let db = redb::Builder::new()
        .open_read_only(path)
        .map_err(|e| invalid(&e))?;
    let txn = db.begin_read().map_err(|e| invalid(&e))?;
    let meta = txn.open_table(META).map_err(|e| invalid(&e))?;
    let revision = match meta.get(schema::META_REVISION).map_err(|e| invalid(&e))? {
        Some(bytes) => schema::decode_revision(bytes.value())
            .ok_or_else(|| invalid(&"its revision counter is malformed"))?,
        None => 0,
    };
    let objects = match txn.open_table(OBJECTS) {
        Ok(table) => table.len().map_err(|e| invalid(&e))?,
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(invalid(&e)),
    };
    Ok((revision, objects))
}

/// Replaces the store at `db_path` with the snapshot at `snapshot`
/// (offline).
///
/// Validates the snapshot (a bramble store that opens cleanly), refuses with
/// [`StoreError::Locked`] while a running master holds `db_path`, keeps the
/// current database as `<db>.before-restore-<unix time>` (never deleted),
/// and puts a synced copy of the snapshot in place atomically.
pub fn restore_snapshot(snapshot: &Path, db_path: &Path) -> Result<RestoreInfo, StoreError> {
    verify_ours(snapshot).map_err(|e| {
        StoreError::invalid(format!(
            "{} is not a usable snapshot: {e}",
            snapshot.display()
        ))
    })?;
    let (revision, objects) = describe(snapshot)?;

    // Holding a read-only handle keeps a master from opening the old file
    // until the new one is in place.
    let exists = match fs::symlink_metadata(db_path) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_error(db_path, "cannot inspect", e)),
    };
    let _guard = if exists {
        match redb::Builder::new().open_read_only(db_path) {
            Ok(db) => Some(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
            | Err(redb::DatabaseError::LockProtocolMismatch) => {
                return Err(StoreError::Locked {
                    path: db_path.to_path_buf(),
                })
            }
            // Not a clean redb file: no master can be running on it.
            Err(_) => None,
        }
    } else {
        None
    };

    if let Some(parent) = db_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io_error(parent, "cannot create", e))?;
    }
    let tmp = unique_sibling(db_path, "restore");
    let copied = fs::copy(snapshot, &tmp)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .map_err(|e| io_error(&tmp, "cannot write", e));
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }

    let previous = if exists {
        match keep_previous(db_path) {
            Ok(previous) => Some(previous),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
    } else {
        None
    };
    fs::rename(&tmp, db_path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(db_path, "cannot replace", e)
    })?;
    sync_parent(db_path).map_err(|e| io_error(db_path, "cannot sync the directory of", e))?;
    Ok(RestoreInfo {
        revision,
        objects,
        previous,
    })
}

/// Links the current database to `<db>.before-restore-<unix time>` (the
/// rename of the restored file then replaces only the name `db`).
fn keep_previous(db_path: &Path) -> Result<PathBuf, StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let mut name = db_path.as_os_str().to_os_string();
        name.push(format!(".before-restore-{now}"));
        if attempt > 0 {
            name.push(format!("-{attempt}"));
        }
        let backup = PathBuf::from(name);
        match fs::hard_link(db_path, &backup) {
            Ok(()) => return Ok(backup),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            // No hard links (vfat): copy instead.
            Err(_) if !backup.exists() => {
                fs::copy(db_path, &backup)
                    .and_then(|_| File::open(&backup)?.sync_all())
                    .map_err(|e| io_error(&backup, "cannot keep the previous database as", e))?;
                return Ok(backup);
            }
            Err(e) => return Err(io_error(&backup, "cannot create", e)),
        }
    }
    Err(StoreError::Storage(format!(
        "too many earlier restores next to {}; move the .before-restore files away",
        db_path.display()
    )))
}
