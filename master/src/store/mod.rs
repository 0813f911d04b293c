//! The master's whole cluster state in one redb file.
//!
//! Objects are JSON in Kubernetes' shape, keyed by [`ObjectKey`]. The store
//! owns metadata and revisions (uid, timestamps, `generation`,
//! `resourceVersion`, finalizers, owner index) and does not look at specs: the
//! API validates those before writing.
//!
//! How it works:
//! - One writer OS thread owns every write transaction (`writer.rs`). Async
//!   callers send requests over a channel and await a oneshot reply. The writer
//!   takes one request, drains whatever else is queued (group commit), applies
//!   them in order in one transaction, commits once with fsync, then publishes
//!   the events in revision order and replies. A rejected request does not
//!   fail the others in its batch; a failed commit fails all of them and
//!   applies none.
//! - Reads are redb read transactions on the blocking pool.
//! - Every change takes the next cluster-wide revision and appends an event to
//!   a bounded log in the same transaction; [`Watch`] replays the log, then
//!   follows a broadcast channel fed after each commit (`watch.rs`).
//! - Opening never modifies a file that is not a bramble store (`open.rs`).
//! - [`Store::snapshot`] and [`restore_snapshot`] copy the whole store
//!   (`snapshot.rs`).
//!
//! The table layout is in `schema.rs`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;

use bramble_common::Kind;
use redb::{Database, ReadTransaction, ReadableDatabase};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

mod error;
mod object;
mod open;
mod schema;
mod snapshot;
#[cfg(test)]
mod tests;
mod watch;
mod writer;

pub use error::{OpenError, StoreError};
pub use schema::SCHEMA_MARKER;
pub use snapshot::{restore_snapshot, RestoreInfo, SnapshotInfo};
pub use watch::Watch;

use writer::{Op, OpOutput, Request};

/// Identifies one object: kind, namespace (`""` for cluster-scoped kinds)
/// and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The object's kind.
    pub kind: Kind,
    /// The namespace, `""` for cluster-scoped kinds.
    pub namespace: String,
    /// The name (may be `""` on create when `metadata.generateName` is set).
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind.info().plural, self.name)
        } else {
            write!(
                f,
                "{}/{}/{}",
                self.kind.info().plural,
                self.namespace,
                self.name
            )
        }
    }
}

/// What happened to an object, as in a Kubernetes watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed (including "deletion requested").
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// The Kubernetes name of the event type: `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One change, as delivered by a [`Watch`].
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// What happened.
    pub event_type: EventType,
    /// The revision of the change (the object's `resourceVersion`).
    pub revision: u64,
    /// The object's key.
    pub key: ObjectKey,
    /// The object after the change (for `Deleted`: the final object, with
    /// the deletion's revision).
    pub object: Arc<Value>,
}

/// Conditions a write requires of the stored object. `Default` is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precondition {
    /// The stored `resourceVersion` must be this one.
    pub resource_version: Option<u64>,
    /// The stored `metadata.uid` must be this one.
    pub uid: Option<String>,
}

impl Precondition {
    /// Requires the stored `resourceVersion` to be `revision`.
    pub fn resource_version(revision: u64) -> Precondition {
        Precondition {
            resource_version: Some(revision),
            uid: None,
        }
    }

    /// Requires the stored `metadata.uid` to be `uid`.
    pub fn uid(uid: impl Into<String>) -> Precondition {
        Precondition {
            resource_version: None,
            uid: Some(uid.into()),
        }
    }
}

/// The result of [`Store::delete`].
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// The object is gone; this is its final state.
    Deleted(Value),
    /// The object has finalizers: `deletionTimestamp` is set and the object
    /// is removed when the last finalizer is.
    Finalizing(Value),
}

impl DeleteOutcome {
    /// The object, in either case.
    pub fn object(&self) -> &Value {
        match self {
            DeleteOutcome::Deleted(object) | DeleteOutcome::Finalizing(object) => object,
        }
    }
}

/// Tuning of a [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Events kept for watches; older ones are compacted (default 10 000).
    pub event_log_capacity: usize,
    /// Events buffered per live watcher before it must catch up from the
    /// log (default 1 024).
    pub watch_channel_capacity: usize,
    /// Most writes committed in one transaction (default 256).
    pub max_batch: usize,
    /// redb page cache in bytes (default 16 MiB: the master runs on a Pi).
    pub cache_size_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            event_log_capacity: 10_000,
            watch_channel_capacity: 1024,
            max_batch: 256,
            cache_size_bytes: 16 * 1024 * 1024,
        }
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::event_log_capacity`].
    pub fn with_event_log_capacity(mut self, capacity: usize) -> Self {
        self.event_log_capacity = capacity;
        self
    }

    /// Sets [`StoreOptions::watch_channel_capacity`].
    pub fn with_watch_channel_capacity(mut self, capacity: usize) -> Self {
        self.watch_channel_capacity = capacity;
        self
    }

    /// Sets [`StoreOptions::max_batch`].
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Sets [`StoreOptions::cache_size_bytes`].
    pub fn with_cache_size_bytes(mut self, bytes: usize) -> Self {
        self.cache_size_bytes = bytes;
        self
    }
}

/// Opens the database file (after it was checked to be ours). Replaceable in
/// tests to inject io failures.
pub(crate) type Opener =
    Arc<dyn Fn(&Path) -> Result<Database, redb::DatabaseError> + Send + Sync + 'static>;

/// State shared by the handles, the writer thread and the readers.
pub(crate) struct Shared {
    /// The database file.
    pub(crate) path: PathBuf,
    /// The open database; `None` while the writer reopens it after an io
    /// failure. Readers clone the `Arc` and release the lock at once.
    pub(crate) db: RwLock<Option<Arc<Database>>>,
    /// The revision of the last committed change (0 for an empty store).
    pub(crate) revision: AtomicU64,
    /// The oldest revision in the event log (0 when the log is empty).
    pub(crate) oldest_event: AtomicU64,
    /// Live events, sent after each commit in revision order.
    pub(crate) events: broadcast::Sender<WatchEvent>,
    /// The options the store was opened with.
    pub(crate) options: StoreOptions,
    /// Opens the file again after an io failure.
    pub(crate) opener: Opener,
    /// Write transactions committed since open.
    pub(crate) commits: AtomicU64,
    /// Tests hold this to keep the writer from assembling a batch.
    #[cfg(test)]
    pub(crate) test_pause: std::sync::Mutex<()>,
    /// Requests sent to the writer (tests wait on it).
    #[cfg(test)]
    pub(crate) test_submitted: AtomicU64,
}

impl Shared {
    /// The open database.
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        let guard = self
            .db
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.clone().ok_or_else(|| {
            StoreError::Storage(format!(
                "{}: the store file is being reopened after a write error; retry shortly",
                self.path.display()
            ))
        })
    }

    /// The oldest revision a watch can still start after (see
    /// [`Store::watch`]): the oldest logged event, or the next revision when
    /// the log is empty.
    pub(crate) fn oldest_available(&self) -> u64 {
        match self.oldest_event.load(Ordering::Acquire) {
            0 => self.revision.load(Ordering::Acquire).saturating_add(1),
            oldest => oldest,
        }
    }

    /// Maps a redb error to a [`StoreError`] naming this store's file.
    pub(crate) fn error(&self, err: impl Into<redb::Error>) -> StoreError {
        error::storage_error(&self.path, err)
    }
}

struct Inner {
    shared: Arc<Shared>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the writer after its current batch;
        // joining it makes the file free to open again once the last handle
        // is gone.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

/// The cluster state. Cheap to clone; every clone is the same store. The
/// file is closed when the last clone (and the last [`Watch`]) is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.shared.path)
            .field("revision", &self.current_revision())
            .finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it if the file does not exist.
    ///
    /// Refuses, without modifying it, a file that is not a bramble store, and
    /// a file another master holds. Blocking: call it before serving, or on
    /// the blocking pool.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, OpenError> {
        let cache_size = options.cache_size_bytes;
        let opener: Opener =
            Arc::new(move |path: &Path| redb::Builder::new().set_cache_size(cache_size).open(path));
        Store::open_with(path, options, opener)
    }

    /// Opens the store with a custom way to open the redb file.
    pub(crate) fn open_with(
        path: &Path,
        options: StoreOptions,
        opener: Opener,
    ) -> Result<Store, OpenError> {
        let db = open::open_database(path, &opener)?;
        let (revision, oldest_event) =
            open::load_counters(&db).map_err(|reason| OpenError::Corrupt {
                path: path.to_path_buf(),
                reason,
            })?;
        let (events, _) = broadcast::channel(options.watch_channel_capacity.max(1));
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
            revision: AtomicU64::new(revision),
            oldest_event: AtomicU64::new(oldest_event),
            events,
            options,
            opener,
            commits: AtomicU64::new(0),
            #[cfg(test)]
            test_pause: std::sync::Mutex::new(()),
            #[cfg(test)]
            test_submitted: AtomicU64::new(0),
        });
        let (requests, receiver) = mpsc::channel();
        let writer = writer::spawn(shared.clone(), receiver).map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                requests: Some(requests),
                writer: Some(writer),
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    async fn submit(&self, op: Op) -> Result<OpOutput, StoreError> {
        let (reply, response) = oneshot::channel();
        let requests = self.inner.requests.as_ref().ok_or(StoreError::Closed)?;
        requests
            .send(Request { op, reply })
            .map_err(|_| StoreError::Closed)?;
        #[cfg(test)]
        self.inner
            .shared
            .test_submitted
            .fetch_add(1, Ordering::AcqRel);
        response.await.map_err(|_| StoreError::Closed)?
    }

    async fn submit_object(&self, op: Op) -> Result<Value, StoreError> {
        match self.submit(op).await? {
            OpOutput::Object(object) => Ok(object),
            OpOutput::Delete(outcome) => Ok(match outcome {
                DeleteOutcome::Deleted(object) | DeleteOutcome::Finalizing(object) => object,
            }),
        }
    }

    /// Runs `read` in a read transaction on the blocking pool.
    pub(crate) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared, &ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || {
            let db = shared.db()?;
            let txn = db.begin_read().map_err(|e| shared.error(e))?;
            read(&shared, &txn)
        })
        .await
        .map_err(|e| StoreError::Storage(format!("a store read task failed: {e}")))?
    }

    /// Creates an object. Fails with [`StoreError::AlreadyExists`] if the key
    /// is taken. An empty name with `metadata.generateName` gets a generated
    /// name. Sets `uid`, `creationTimestamp`, `generation: 1` and
    /// `resourceVersion`; returns the stored object.
    pub async fn create(&self, key: &ObjectKey, object: Value) -> Result<Value, StoreError> {
        self.submit_object(Op::Create {
            key: key.clone(),
            object,
        })
        .await
    }

    /// Replaces an object (its `status` is kept for kinds that have one).
    /// A write that changes nothing is not written and returns the stored
    /// object with its old `resourceVersion`.
    pub async fn update(
        &self,
        key: &ObjectKey,
        object: Value,
        precondition: Precondition,
    ) -> Result<Value, StoreError> {
        self.submit_object(Op::Update {
            key: key.clone(),
            object,
            precondition,
        })
        .await
    }

    /// Replaces an object and its `status` in one write (as Kubernetes'
    /// pod binding sets `spec.nodeName` and the `PodScheduled` condition
    /// together): one revision, one event. No-op writes are skipped.
    pub async fn update_with_status(
        &self,
        key: &ObjectKey,
        object: Value,
        status: Value,
        precondition: Precondition,
    ) -> Result<Value, StoreError> {
        self.submit_object(Op::UpdateWithStatus {
            key: key.clone(),
            object,
            status,
            precondition,
        })
        .await
    }

    /// Replaces only `status` (`null` removes it). No-op writes are skipped.
    pub async fn update_status(
        &self,
        key: &ObjectKey,
        status: Value,
        precondition: Precondition,
    ) -> Result<Value, StoreError> {
        self.submit_object(Op::UpdateStatus {
            key: key.clone(),
            status,
            precondition,
        })
        .await
    }

    /// Deletes an object, or marks it for deletion if it has finalizers.
    pub async fn delete(
        &self,
        key: &ObjectKey,
        precondition: Precondition,
    ) -> Result<DeleteOutcome, StoreError> {
        match self
            .submit(Op::Delete {
                key: key.clone(),
                precondition,
            })
            .await?
        {
            OpOutput::Delete(outcome) => Ok(outcome),
            OpOutput::Object(object) => Ok(DeleteOutcome::Finalizing(object)),
        }
    }

    /// Deletes gracefully: marks the object as being deleted with
    /// `grace_seconds` (Kubernetes' graceful pod deletion: the pod's node
    /// stops it within that time, then it is deleted). A later call may
    /// only shorten the grace period; `grace_seconds <= 0` deletes at once.
    pub async fn delete_gracefully(
        &self,
        key: &ObjectKey,
        precondition: Precondition,
        grace_seconds: i64,
    ) -> Result<DeleteOutcome, StoreError> {
        match self
            .submit(Op::DeleteGracefully {
                key: key.clone(),
                precondition,
                grace_seconds,
            })
            .await?
        {
            OpOutput::Delete(outcome) => Ok(outcome),
            OpOutput::Object(object) => Ok(DeleteOutcome::Finalizing(object)),
        }
    }

    /// Reads one object.
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, StoreError> {
        object::validate_key(key, false)?;
        let table_key = schema::object_key(key);
        self.read(move |shared, txn| {
            let table = match txn.open_table(schema::OBJECTS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(shared.error(e)),
            };
            match table.get(table_key.as_str()).map_err(|e| shared.error(e))? {
                Some(bytes) => Ok(Some(parse_object(&table_key, bytes.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Lists the objects of `kind` (in `namespace` when given), sorted by
    /// namespace and name, with the revision the list was read at.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        let (start, end) = schema::object_range(kind, namespace);
        self.read(move |shared, txn| {
            let revision = read_revision(shared, txn)?;
            let table = match txn.open_table(schema::OBJECTS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), revision)),
                Err(e) => return Err(shared.error(e)),
            };
            let mut objects = Vec::new();
            for entry in table
                .range(start.as_str()..end.as_str())
                .map_err(|e| shared.error(e))?
            {
                let (key, value) = entry.map_err(|e| shared.error(e))?;
                objects.push(parse_object(key.value(), value.value())?);
            }
            Ok((objects, revision))
        })
        .await
    }

    /// The keys of the objects whose `metadata.ownerReferences` name
    /// `owner_uid`, for the garbage collector.
    pub async fn dependents(&self, owner_uid: &str) -> Result<Vec<ObjectKey>, StoreError> {
        let owner_uid = owner_uid.to_string();
        self.read(move |shared, txn| {
            let table = match txn.open_table(schema::OWNERS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(shared.error(e)),
            };
            let (start, end) = schema::owner_range(&owner_uid);
            let mut keys = Vec::new();
            for entry in table
                .range(start.as_str()..end.as_str())
                .map_err(|e| shared.error(e))?
            {
                let (key, _) = entry.map_err(|e| shared.error(e))?;
                match schema::parse_owner_key(key.value()) {
                    Some((uid, dependent)) if uid == owner_uid => keys.push(dependent),
                    Some(_) => {}
                    None => tracing::warn!(key = key.value(), "malformed owner index entry"),
                }
            }
            Ok(keys)
        })
        .await
    }

    /// Watches changes of `kind` (all kinds when `None`) in `namespace` (all
    /// when `None`) after `since_revision`; `0` means from now.
    ///
    /// Fails with [`StoreError::Gone`] when events after `since_revision`
    /// were already compacted: the client must list again.
    pub fn watch(
        &self,
        kind: Option<Kind>,
        namespace: Option<&str>,
        since_revision: u64,
    ) -> Result<Watch, StoreError> {
        Watch::start(
            self.clone(),
            kind.into_iter().collect(),
            namespace,
            since_revision,
        )
    }

    /// Watches changes of any of `kinds` in every namespace after
    /// `since_revision` (`0`: from now); like [`Store::watch`]. One watch
    /// instead of one per kind: a catch-up reads the log once.
    pub fn watch_kinds(&self, kinds: &[Kind], since_revision: u64) -> Result<Watch, StoreError> {
        if kinds.is_empty() {
            return Err(StoreError::invalid("watch_kinds needs at least one kind"));
        }
        Watch::start(self.clone(), kinds.to_vec(), None, since_revision)
    }

    /// The revision of the last committed change (0 for an empty store).
    pub fn current_revision(&self) -> u64 {
        self.inner.shared.revision.load(Ordering::Acquire)
    }

    /// Write transactions committed since the store was opened (each one
    /// fsync; for metrics of flash wear).
    pub fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Acquire)
    }

    /// The oldest revision a watch can start after without
    /// [`StoreError::Gone`], minus one (see [`Store::watch`]).
    pub fn oldest_watchable_revision(&self) -> u64 {
        self.inner.shared.oldest_available().saturating_sub(1)
    }

    /// Writes a consistent copy of the whole store to `dest` while the store
    /// keeps serving. `dest` must not exist.
    pub async fn snapshot(&self, dest: &Path) -> Result<SnapshotInfo, StoreError> {
        let shared = self.inner.shared.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || snapshot::write_snapshot(&shared, &dest))
            .await
            .map_err(|e| StoreError::Storage(format!("the snapshot task failed: {e}")))?
    }
}

/// Parses a stored object.
pub(crate) fn parse_object(key: &str, bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Storage(format!(
            "the stored object {key} is not valid JSON ({e}); restore a snapshot"
        ))
    })
}

/// The revision counter as seen by `txn`.
pub(crate) fn read_revision(shared: &Shared, txn: &ReadTransaction) -> Result<u64, StoreError> {
    let table = match txn.open_table(schema::META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(shared.error(e)),
    };
    match table
        .get(schema::META_REVISION)
        .map_err(|e| shared.error(e))?
    {
        Some(bytes) => schema::decode_revision(bytes.value()).ok_or_else(|| {
            StoreError::Storage("the stored revision counter is malformed".to_string())
        }),
        None => Ok(0),
    }
}
