//! Opening the store file without ever harming a file that is not ours.
//!
//! - A missing file is created complete (schema marker and all) under a
//!   temporary name, then linked into place, so a crash never leaves a
//!   half-made store that the next start would refuse.
//! - An existing file is checked before anything may write to it: it must
//!   start with redb's magic bytes, open read-only and hold our schema
//!   marker. A redb file that needs crash recovery cannot be opened read-only;
//!   its marker is then checked on a repaired copy in memory. Only then is the
//!   file opened for writing (which runs redb's recovery).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use redb::backends::InMemoryBackend;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, StorageBackend};

use super::schema::{self, META, SCHEMA_MARKER, SCHEMA_PREFIX};
use super::{object, OpenError, Opener};

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Opens (creating if missing) the store database at `path`.
pub(crate) fn open_database(path: &Path, opener: &Opener) -> Result<Database, OpenError> {
    let io_error = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error)?;
    }
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(OpenError::Foreign {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_store_file(path)?,
        Err(e) => return Err(io_error(e)),
    }
    verify_ours(path)?;
    opener(path).map_err(|e| database_error(path, e))
}

/// Maps an error of opening the (verified) file for writing.
fn database_error(path: &Path, err: DatabaseError) -> OpenError {
    match err {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            OpenError::Locked {
                path: path.to_path_buf(),
            }
        }
        DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() != io::ErrorKind::InvalidData =>
        {
            OpenError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
        other => OpenError::Corrupt {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Checks, without writing to it, that `path` is a bramble store.
pub(crate) fn verify_ours(path: &Path) -> Result<(), OpenError> {
    let mut magic = [0u8; REDB_MAGIC.len()];
    let mut file = File::open(path).map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let read = read_up_to(&mut file, &mut magic).map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    drop(file);
    if read < magic.len() || magic != REDB_MAGIC {
        return Err(OpenError::Foreign {
            path: path.to_path_buf(),
        });
    }
    match redb::Builder::new().open_read_only(path) {
        Ok(db) => check_marker(path, &db),
        Err(DatabaseError::RepairAborted) => verify_repaired_copy(path),
        Err(e) => Err(database_error(path, e)),
    }
}

/// Reads as many bytes as fit in `buf` (fewer at end of file).
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A redb file that was not closed cleanly (a crashed master, or anyone
/// else's) needs recovery before it can be read. Recover a copy in memory and
/// look for the marker there: the file itself is only written once we know
/// it is ours.
fn verify_repaired_copy(path: &Path) -> Result<(), OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let backend = InMemoryBackend::new();
    let len = u64::try_from(bytes.len()).map_err(|e| corrupt(e.to_string()))?;
    backend
        .set_len(len)
        .and_then(|()| backend.write(0, &bytes))
        .map_err(|e| corrupt(format!("cannot load a copy for recovery: {e}")))?;
    drop(bytes);
    let db = redb::Builder::new()
        .create_with_backend(backend)
        .map_err(|e| database_error(path, e))?;
    check_marker(path, &db)
}

/// Checks the schema marker of an opened database.
fn check_marker(path: &Path, db: &impl ReadableDatabase) -> Result<(), OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let foreign = || OpenError::Foreign {
        path: path.to_path_buf(),
    };
    let txn = db.begin_read().map_err(|e| corrupt(e.to_string()))?;
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_))
        | Err(redb::TableError::TableTypeMismatch { .. })
        | Err(redb::TableError::TableIsMultimap(_)) => return Err(foreign()),
        Err(e) => return Err(corrupt(e.to_string())),
    };
    let marker = table
        .get(schema::META_SCHEMA)
        .map_err(|e| corrupt(e.to_string()))?
        .map(|v| v.value().to_vec());
    match marker {
        Some(marker) if marker == SCHEMA_MARKER.as_bytes() => Ok(()),
        Some(marker) if marker.starts_with(SCHEMA_PREFIX.as_bytes()) => {
            Err(OpenError::UnsupportedSchema {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(&marker).into_owned(),
            })
        }
        _ => Err(foreign()),
    }
}

/// Creates a new, complete store file at `path` (which did not exist).
fn create_store_file(path: &Path) -> Result<(), OpenError> {
    let tmp = unique_sibling(path, "new");
    let result = write_new_store(&tmp).and_then(|()| link_no_clobber(&tmp, path));
    match result {
        Ok(()) => Ok(()),
        // Someone else created it meanwhile: theirs is checked like any file.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            Ok(())
        }
        Err(source) => {
            let _ = fs::remove_file(&tmp);
            Err(OpenError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// Writes an empty store (tables, marker, revision 0) to the new file `tmp`.
fn write_new_store(tmp: &Path) -> io::Result<()> {
    let db = redb::Builder::new().create(tmp).map_err(io::Error::other)?;
    let txn = db.begin_write().map_err(io::Error::other)?;
    {
        let mut meta = txn.open_table(META).map_err(io::Error::other)?;
        meta.insert(schema::META_SCHEMA, SCHEMA_MARKER.as_bytes())
            .map_err(io::Error::other)?;
        meta.insert(schema::META_REVISION, schema::encode_revision(0).as_slice())
            .map_err(io::Error::other)?;
        meta.insert(schema::META_CREATED, object::now_rfc3339().as_bytes())
            .map_err(io::Error::other)?;
        txn.open_table(schema::OBJECTS).map_err(io::Error::other)?;
        txn.open_table(schema::EVENTS).map_err(io::Error::other)?;
        txn.open_table(schema::OWNERS).map_err(io::Error::other)?;
    }
    txn.commit().map_err(io::Error::other)?;
    db.close().map_err(io::Error::other)?;
    File::open(tmp)?.sync_all()
}

/// A path next to `path` that no one else uses: `<name>.<tag>-<pid>-<nanos>`.
pub(crate) fn unique_sibling(path: &Path, tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{tag}-{}-{nanos}", std::process::id()));
    path.with_file_name(name)
}

/// Moves the complete file `src` to `dst` unless `dst` exists (then
/// `AlreadyExists`), and makes the move durable.
pub(crate) fn link_no_clobber(src: &Path, dst: &Path) -> io::Result<()> {
    match fs::hard_link(src, dst) {
        Ok(()) => {
            fs::remove_file(src)?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        // File systems without hard links (vfat): rename after a check.
        Err(_) if !dst.exists() => fs::rename(src, dst)?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", dst.display()),
            ))
        }
    }
    sync_parent(dst)
}

/// Makes a new directory entry of `path` durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

/// Reads the revision counter and the oldest logged revision (0 if none).
pub(crate) fn load_counters(db: &Database) -> Result<(u64, u64), String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let revision = match txn.open_table(META) {
        Ok(meta) => match meta.get(schema::META_REVISION).map_err(|e| e.to_string())? {
            Some(bytes) => schema::decode_revision(bytes.value())
                .ok_or_else(|| "the revision counter is malformed".to_string())?,
            None => 0,
        },
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.to_string()),
    };
    let oldest = match txn.open_table(schema::EVENTS) {
        Ok(events) => match events.first().map_err(|e| e.to_string())? {
            Some((key, _)) => key.value(),
            None => 0,
        },
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.to_string()),
    };
    Ok((revision, oldest))
}
