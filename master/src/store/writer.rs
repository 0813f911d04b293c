//! The writer thread: the only place that opens write transactions.
//!
//! Group commit: take one request, drain what else is queued (up to
//! `max_batch`), apply them in order in one transaction (each sees the effects
//! of the ones before it), commit once with fsync, then publish the events in
//! revision order and reply to every caller. A request that is rejected
//! (not found, conflict, ...) writes nothing and does not affect the others;
//! a storage failure or a failed commit fails the whole batch and applies
//! nothing.
//!
//! redb latches an io failure (a full disk, say): every later operation on
//! that handle fails until it is closed. The writer then reopens the file,
//! at once and every [`REOPEN_RETRY`] until it succeeds, so the store
//! recovers by itself once space is freed.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{ReadableTable, Table, WriteTransaction};
use serde_json::Value;
use tokio::sync::oneshot;

use super::object::{self, Change, NameSource};
use super::schema::{self, EVENTS, META, OBJECTS, OWNERS};
use super::{DeleteOutcome, EventType, ObjectKey, Precondition, Shared, StoreError, WatchEvent};

/// How often the writer retries reopening the file after an io failure.
const REOPEN_RETRY: Duration = Duration::from_millis(250);
/// How long a reopen waits for readers to let go of the failed handle.
const REOPEN_DRAIN: Duration = Duration::from_secs(5);
/// Attempts at a generated name before giving up.
const GENERATE_NAME_ATTEMPTS: usize = 16;

/// A write, as sent to the writer thread.
#[derive(Debug)]
pub(crate) enum Op {
    /// [`Store::create`](super::Store::create).
    Create { key: ObjectKey, object: Value },
    /// [`Store::update`](super::Store::update).
    Update {
        key: ObjectKey,
        object: Value,
        precondition: Precondition,
    },
    /// [`Store::update_with_status`](super::Store::update_with_status).
    UpdateWithStatus {
        key: ObjectKey,
        object: Value,
        status: Value,
        precondition: Precondition,
    },
    /// [`Store::update_status`](super::Store::update_status).
    UpdateStatus {
        key: ObjectKey,
        status: Value,
        precondition: Precondition,
    },
    /// [`Store::delete`](super::Store::delete).
    Delete {
        key: ObjectKey,
        precondition: Precondition,
    },
    /// [`Store::delete_gracefully`](super::Store::delete_gracefully).
    DeleteGracefully {
        key: ObjectKey,
        precondition: Precondition,
        grace_seconds: i64,
    },
}

/// The result of a write.
#[derive(Debug)]
pub(crate) enum OpOutput {
    /// The object as stored.
    Object(Value),
    /// The result of a delete.
    Delete(DeleteOutcome),
}

/// A write and where to send its result.
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<OpOutput, StoreError>>,
}

/// Starts the writer thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("bramble-store-writer".to_string())
        .spawn(move || Writer::new(shared).run(&requests))
}

/// Why an op failed.
enum Failure {
    /// The op was refused; nothing was written; the batch goes on.
    Rejected(StoreError),
    /// The storage failed; the batch is abandoned.
    Storage(redb::Error),
}

impl From<redb::StorageError> for Failure {
    fn from(err: redb::StorageError) -> Self {
        Failure::Storage(err.into())
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure::Rejected(err)
    }
}

struct Writer {
    shared: Arc<Shared>,
    /// The handle hit an io failure and must be reopened.
    needs_reopen: bool,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Writer {
        Writer {
            shared,
            needs_reopen: false,
        }
    }

    fn run(mut self, requests: &mpsc::Receiver<Request>) {
        let max_batch = self.shared.options.max_batch.max(1);
        loop {
            let first = if self.needs_reopen {
                match requests.recv_timeout(REOPEN_RETRY) {
                    Ok(request) => request,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.try_reopen();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match requests.recv() {
                    Ok(request) => request,
                    Err(mpsc::RecvError) => return,
                }
            };
            #[cfg(test)]
            let paused = self
                .shared
                .test_pause
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            #[cfg(test)]
            drop(paused);
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
            if self.needs_reopen {
                self.try_reopen();
            }
        }
    }

    /// Maps a storage error, noting when the handle must be reopened.
    fn storage(&mut self, err: impl Into<redb::Error>) -> StoreError {
        let err: redb::Error = err.into();
        if super::error::latches_io_failure(&err) {
            self.needs_reopen = true;
        }
        self.shared.error(err)
    }

    fn run_batch(&mut self, batch: Vec<Request>) {
        if self.needs_reopen {
            self.try_reopen();
        }
        // A bug that panics on some input must fail its batch, not stop the
        // writer (and with it every later write).
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply_batch(&batch)))
                .unwrap_or_else(|_| {
                    Err(StoreError::Storage(
                "internal error while writing (a bug; see the master's log); nothing was written"
                    .to_string(),
            ))
                });
        match outcome {
            Ok(applied) => {
                if let Some((revision, oldest)) = applied.committed {
                    self.shared.oldest_event.store(oldest, Ordering::Release);
                    // Before the broadcast: a watch "from now" that reads
                    // this revision already receives every later event.
                    self.shared.revision.store(revision, Ordering::Release);
                }
                for event in applied.events {
                    // No receivers is fine: nobody is watching.
                    let _ = self.shared.events.send(event);
                }
                for (request, result) in batch.into_iter().zip(applied.results) {
                    let _ = request.reply.send(result);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "store write batch failed; nothing was written");
                for request in batch {
                    let _ = request.reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Applies a batch in one transaction and commits it.
    fn apply_batch(&mut self, batch: &[Request]) -> Result<Applied, StoreError> {
        let db = self.shared.db()?;
        let txn = db.begin_write().map_err(|e| self.storage(e))?;
        // Dropping `txn` without commit rolls everything back.
        let mut batch_txn = match BatchTxn::open(&txn) {
            Ok(batch_txn) => batch_txn,
            Err(e) => return Err(self.storage(e)),
        };
        let start_revision = batch_txn.revision;
        let mut results = Vec::with_capacity(batch.len());
        for request in batch {
            match batch_txn.apply(&request.op) {
                Ok(output) => results.push(Ok(output)),
                Err(Failure::Rejected(err)) => results.push(Err(err)),
                Err(Failure::Storage(err)) => return Err(self.storage(err)),
            }
        }
        if batch_txn.revision == start_revision {
            // Nothing changed: no commit, no disk write.
            return Ok(Applied {
                results,
                events: Vec::new(),
                committed: None,
            });
        }
        let capacity =
            u64::try_from(self.shared.options.event_log_capacity.max(1)).unwrap_or(u64::MAX);
        let counters = match batch_txn.finish(capacity) {
            Ok(counters) => counters,
            Err(e) => return Err(self.storage(e)),
        };
        let events = std::mem::take(&mut batch_txn.events);
        drop(batch_txn);
        txn.commit().map_err(|e| self.storage(e))?;
        self.shared.commits.fetch_add(1, Ordering::AcqRel);
        Ok(Applied {
            results,
            events,
            committed: Some(counters),
        })
    }

    /// Closes the failed handle and opens the file again.
    fn try_reopen(&mut self) {
        let mut slot = self
            .shared
            .db
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = slot.take() {
            // Readers hold clones only for the length of one read.
            let deadline = Instant::now() + REOPEN_DRAIN;
            let mut old = old;
            let db = loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => break Some(db),
                    Err(still_shared) if Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still_shared) => {
                        tracing::error!("store readers did not release the failed handle; retrying the reopen later");
                        *slot = Some(still_shared);
                        return;
                    }
                }
            };
            if let Some(db) = db {
                // Its close may fail too (the disk is still full): the next
                // open recovers the file either way.
                if let Err(e) = db.close() {
                    tracing::warn!(error = %e, "closing the failed store handle");
                }
            }
        }
        match (self.shared.opener)(&self.shared.path) {
            Ok(db) => match super::open::load_counters(&db) {
                Ok((revision, oldest)) => {
                    self.shared.revision.store(revision, Ordering::Release);
                    self.shared.oldest_event.store(oldest, Ordering::Release);
                    *slot = Some(Arc::new(db));
                    self.needs_reopen = false;
                    tracing::info!(path = %self.shared.path.display(), "store file reopened after an io failure");
                }
                Err(reason) => {
                    tracing::error!(%reason, "reopened store file is unreadable; retrying");
                }
            },
            Err(e) => {
                tracing::error!(error = %e, path = %self.shared.path.display(), "cannot reopen the store file; retrying");
            }
        }
    }
}

/// What a batch did.
struct Applied {
    /// Each op's result, in order.
    results: Vec<Result<OpOutput, StoreError>>,
    /// The events to publish, in revision order.
    events: Vec<WatchEvent>,
    /// (new revision, oldest logged revision) if anything was committed.
    committed: Option<(u64, u64)>,
}

/// The tables of one write transaction and the batch's running state.
struct BatchTxn<'txn> {
    objects: Table<'txn, &'static str, &'static [u8]>,
    events_table: Table<'txn, u64, &'static [u8]>,
    owners: Table<'txn, &'static str, ()>,
    meta: Table<'txn, &'static str, &'static [u8]>,
    /// The revision of the last change applied in this batch.
    revision: u64,
    /// Events of the changes applied so far, in revision order.
    events: Vec<WatchEvent>,
}

impl<'txn> BatchTxn<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        let meta = txn.open_table(META)?;
        // The counter as this transaction sees it is the only truth.
        let revision = match meta.get(schema::META_REVISION)? {
            Some(bytes) => schema::decode_revision(bytes.value()).ok_or_else(|| {
                redb::Error::Corrupted("the store's revision counter is malformed".to_string())
            })?,
            None => 0,
        };
        Ok(BatchTxn {
            objects: txn.open_table(OBJECTS)?,
            events_table: txn.open_table(EVENTS)?,
            owners: txn.open_table(OWNERS)?,
            meta,
            revision,
            events: Vec::new(),
        })
    }

    fn apply(&mut self, op: &Op) -> Result<OpOutput, Failure> {
        match op {
            Op::Create { key, object } => self.create(key, object.clone()).map(OpOutput::Object),
            Op::Update {
                key,
                object,
                precondition,
            } => self
                .update(key, object.clone(), precondition)
                .map(|outcome| match outcome {
                    Updated::Object(object) => OpOutput::Object(object),
                    Updated::Deleted(object) => OpOutput::Object(object),
                }),
            Op::UpdateWithStatus {
                key,
                object,
                status,
                precondition,
            } => self
                .update_with(key, precondition, |stored| {
                    object::prepare_update_with_status(key, stored, object.clone(), status.clone())
                })
                .map(|outcome| match outcome {
                    Updated::Object(object) => OpOutput::Object(object),
                    Updated::Deleted(object) => OpOutput::Object(object),
                }),
            Op::UpdateStatus {
                key,
                status,
                precondition,
            } => self
                .update_status(key, status.clone(), precondition)
                .map(OpOutput::Object),
            Op::Delete { key, precondition } => {
                self.delete(key, precondition).map(OpOutput::Delete)
            }
            Op::DeleteGracefully {
                key,
                precondition,
                grace_seconds,
            } => self
                .delete_gracefully(key, precondition, *grace_seconds)
                .map(OpOutput::Delete),
        }
    }

    fn read_object(&self, key: &ObjectKey) -> Result<Option<Value>, Failure> {
        let table_key = schema::object_key(key);
        match self.objects.get(table_key.as_str())? {
            // A damaged object fails only the ops on it.
            Some(bytes) => Ok(Some(super::parse_object(&table_key, bytes.value())?)),
            None => Ok(None),
        }
    }

    fn exists(&self, key: &ObjectKey) -> Result<bool, Failure> {
        let table_key = schema::object_key(key);
        Ok(self.objects.get(table_key.as_str())?.is_some())
    }

    fn load(&self, key: &ObjectKey, precondition: &Precondition) -> Result<Value, Failure> {
        object::validate_key(key, false)?;
        let stored = self
            .read_object(key)?
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        check_precondition(key, &stored, precondition)?;
        Ok(stored)
    }

    /// Writes `object` at the next revision (setting its resourceVersion),
    /// maintains the owner index and logs the event. Nothing is written if
    /// the object cannot be encoded.
    fn put(
        &mut self,
        event_type: EventType,
        key: &ObjectKey,
        mut object: Value,
        old_owners: &BTreeSet<String>,
    ) -> Result<Value, Failure> {
        let revision = self.revision + 1;
        object::set_resource_version(&mut object, revision);
        let json = serde_json::to_vec(&object)
            .map_err(|e| StoreError::invalid(format!("the object cannot be encoded: {e}")))?;
        self.revision = revision;
        let table_key = schema::object_key(key);
        let new_owners = match event_type {
            EventType::Deleted => BTreeSet::new(),
            _ => object::owner_uids(&object),
        };
        match event_type {
            EventType::Deleted => {
                self.objects.remove(table_key.as_str())?;
            }
            _ => {
                self.objects.insert(table_key.as_str(), json.as_slice())?;
            }
        }
        for uid in old_owners.difference(&new_owners) {
            self.owners.remove(schema::owner_key(uid, key).as_str())?;
        }
        for uid in new_owners.difference(old_owners) {
            self.owners
                .insert(schema::owner_key(uid, key).as_str(), ())?;
        }
        let record = schema::encode_event(event_type, key, &json);
        self.events_table.insert(revision, record.as_slice())?;
        let object = Arc::new(object);
        self.events.push(WatchEvent {
            event_type,
            revision,
            key: key.clone(),
            object: object.clone(),
        });
        Ok(Arc::unwrap_or_clone(object))
    }

    fn create(&mut self, key: &ObjectKey, object: Value) -> Result<Value, Failure> {
        let (mut object, source) = object::prepare_create(key, object)?;
        let name = match source {
            NameSource::Fixed(name) => {
                let fixed = ObjectKey::new(key.kind, key.namespace.clone(), name.clone());
                if self.exists(&fixed)? {
                    return Err(StoreError::AlreadyExists { key: fixed }.into());
                }
                name
            }
            NameSource::Generate(prefix) => {
                let mut chosen = None;
                for _ in 0..GENERATE_NAME_ATTEMPTS {
                    let candidate = object::generate_name(&prefix);
                    let candidate_key =
                        ObjectKey::new(key.kind, key.namespace.clone(), candidate.clone());
                    if !self.exists(&candidate_key)? {
                        chosen = Some(candidate);
                        break;
                    }
                }
                chosen.ok_or_else(|| StoreError::AlreadyExists {
                    key: ObjectKey::new(key.kind, key.namespace.clone(), prefix.clone()),
                })?
            }
        };
        let final_key = ObjectKey::new(key.kind, key.namespace.clone(), name.clone());
        object::finish_create(&mut object, &name);
        self.put(EventType::Added, &final_key, object, &BTreeSet::new())
    }

    fn update(
        &mut self,
        key: &ObjectKey,
        object: Value,
        precondition: &Precondition,
    ) -> Result<Updated, Failure> {
        self.update_with(key, precondition, |stored| {
            object::prepare_update(key, stored, object)
        })
    }

    /// An update whose new object `prepare` makes from the stored one.
    fn update_with(
        &mut self,
        key: &ObjectKey,
        precondition: &Precondition,
        prepare: impl FnOnce(&Value) -> Result<Change, StoreError>,
    ) -> Result<Updated, Failure> {
        let stored = self.load(key, precondition)?;
        let new = match prepare(&stored)? {
            Change::Unchanged => return Ok(Updated::Object(stored)),
            Change::Changed(new) => new,
        };
        let old_owners = object::owner_uids(&stored);
        if object::is_being_deleted(&stored) && !object::has_finalizers(&new) {
            // The last finalizer is gone: the deletion completes.
            return self
                .put(EventType::Deleted, key, new, &old_owners)
                .map(Updated::Deleted);
        }
        self.put(EventType::Modified, key, new, &old_owners)
            .map(Updated::Object)
    }

    fn update_status(
        &mut self,
        key: &ObjectKey,
        status: Value,
        precondition: &Precondition,
    ) -> Result<Value, Failure> {
        let stored = self.load(key, precondition)?;
        let new = match object::prepare_status_update(key, &stored, status)? {
            Change::Unchanged => return Ok(stored),
            Change::Changed(new) => new,
        };
        let old_owners = object::owner_uids(&stored);
        self.put(EventType::Modified, key, new, &old_owners)
    }

    fn delete(
        &mut self,
        key: &ObjectKey,
        precondition: &Precondition,
    ) -> Result<DeleteOutcome, Failure> {
        let stored = self.load(key, precondition)?;
        let old_owners = object::owner_uids(&stored);
        if object::has_finalizers(&stored) {
            if object::is_being_deleted(&stored) {
                // Already marked: nothing to write.
                return Ok(DeleteOutcome::Finalizing(stored));
            }
            let marked = object::mark_deleting(&stored, 0);
            return self
                .put(EventType::Modified, key, marked, &old_owners)
                .map(DeleteOutcome::Finalizing);
        }
        self.put(EventType::Deleted, key, stored, &old_owners)
            .map(DeleteOutcome::Deleted)
    }

    /// Marks the object as being deleted with `grace_seconds` to finish
    /// (its node stops it, then removes it). A second call may only
    /// shorten the grace period; with 0 it is an ordinary delete.
    fn delete_gracefully(
        &mut self,
        key: &ObjectKey,
        precondition: &Precondition,
        grace_seconds: i64,
    ) -> Result<DeleteOutcome, Failure> {
        if grace_seconds <= 0 {
            return self.delete(key, precondition);
        }
        let stored = self.load(key, precondition)?;
        let current = stored["metadata"]["deletionGracePeriodSeconds"].as_i64();
        if object::is_being_deleted(&stored) && current.is_some_and(|c| c <= grace_seconds) {
            return Ok(DeleteOutcome::Finalizing(stored));
        }
        let old_owners = object::owner_uids(&stored);
        let marked = object::mark_deleting(&stored, grace_seconds);
        self.put(EventType::Modified, key, marked, &old_owners)
            .map(DeleteOutcome::Finalizing)
    }

    /// Records the revision counter and compacts the event log to
    /// `capacity` entries. Returns (revision, oldest logged revision).
    fn finish(&mut self, capacity: u64) -> Result<(u64, u64), redb::Error> {
        self.meta.insert(
            schema::META_REVISION,
            schema::encode_revision(self.revision).as_slice(),
        )?;
        // Revisions in the log are contiguous: keep the last `capacity`.
        let keep_from = self.revision.saturating_sub(capacity - 1).max(1);
        self.events_table.retain_in(..keep_from, |_, _| false)?;
        let oldest = match self.events_table.first()? {
            Some((key, _)) => key.value(),
            None => 0,
        };
        Ok((self.revision, oldest))
    }
}

/// The result of an update.
enum Updated {
    /// The object as stored.
    Object(Value),
    /// The update removed the last finalizer of an object being deleted.
    Deleted(Value),
}

/// Checks a write's precondition against the stored object, with
/// Kubernetes' messages.
fn check_precondition(
    key: &ObjectKey,
    stored: &Value,
    precondition: &Precondition,
) -> Result<(), StoreError> {
    if let Some(uid) = &precondition.uid {
        let stored_uid = object::meta_str(stored, "uid");
        if uid != stored_uid {
            return Err(StoreError::Conflict {
                key: key.clone(),
                message: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored_uid}"
                ),
            });
        }
    }
    if let Some(expected) = precondition.resource_version {
        if expected != object::resource_version(stored) {
            return Err(StoreError::Conflict {
                key: key.clone(),
                message: format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.kind.info().plural,
                    key.name
                ),
            });
        }
    }
    Ok(())
}

/// Runs `ops` as one batch on the calling thread (tests of batch semantics).
#[cfg(test)]
pub(crate) fn run_batch_for_test(
    shared: Arc<Shared>,
    ops: Vec<Op>,
) -> Vec<Result<OpOutput, StoreError>> {
    let mut responses = Vec::new();
    let batch = ops
        .into_iter()
        .map(|op| {
            let (reply, response) = oneshot::channel();
            responses.push(response);
            Request { op, reply }
        })
        .collect();
    Writer::new(shared).run_batch(batch);
    responses
        .into_iter()
        .map(|mut response| response.try_recv().unwrap_or(Err(StoreError::Closed)))
        .collect()
}
