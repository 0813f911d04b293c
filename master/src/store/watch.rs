//! Watches: replay from the event log, then follow the live broadcast.
//!
//! A [`Watch`] subscribes to the broadcast before it reads anything, so no
//! event falls between the log and the live stream; events it already has
//! are dropped by revision. It counts every revision it sees (whether or not
//! it matches the filter): a gap means it fell behind (the broadcast lagged),
//! and it catches up from the log. Only when the log no longer holds what it
//! missed does the watch end (`next` returns `None`): the client must list
//! again.
//!
//! A catch-up reads the log in pages of at most [`CATCH_UP_PAGE`] matching
//! events: a watcher far behind holds one page of objects at a time, not
//! the whole log (10 000 full objects per lagging watcher, each parsed from
//! JSON, were most of the master's memory under load).

use std::collections::VecDeque;
use std::sync::Arc;

use bramble_common::Kind;
use redb::ReadableTable;
use tokio::sync::broadcast;

use super::schema::{self, EVENTS};
use super::{Store, StoreError, WatchEvent};

/// Most matching events one read of the log returns.
pub(crate) const CATCH_UP_PAGE: usize = 256;

/// Whether `kind` is one of `kinds` (empty: every kind).
fn kind_wanted(kinds: &[Kind], kind: Kind) -> bool {
    kinds.is_empty() || kinds.contains(&kind)
}

/// A stream of changes; see [`Store::watch`].
pub struct Watch {
    store: Store,
    /// The kinds watched; empty for all.
    kinds: Vec<Kind>,
    namespace: Option<String>,
    live: broadcast::Receiver<WatchEvent>,
    /// Deliver only events after this revision.
    since: u64,
    /// Every revision up to this one has been seen (delivered or filtered).
    seen: u64,
    /// Read the log after `seen` before taking live events.
    catch_up: bool,
    /// Events read from the log, not yet delivered.
    pending: VecDeque<WatchEvent>,
    ended: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("kinds", &self.kinds)
            .field("namespace", &self.namespace)
            .field("since", &self.since)
            .field("seen", &self.seen)
            .finish()
    }
}

/// What one read of the event log found.
struct LogRead {
    /// The matching events after the requested revision, in order.
    events: Vec<WatchEvent>,
    /// The store revision the read saw: every event up to it was in the log.
    revision: u64,
    /// The oldest revision in the log (0 if empty).
    oldest: u64,
    /// `Some(last revision looked at)` when the page filled up before the
    /// end of the log: read again after it.
    truncated_at: Option<u64>,
}

impl Watch {
    pub(crate) fn start(
        store: Store,
        kinds: Vec<Kind>,
        namespace: Option<&str>,
        since_revision: u64,
    ) -> Result<Watch, StoreError> {
        // Subscribe first: everything committed after this point reaches us.
        let live = store.shared().events.subscribe();
        let current = store.current_revision();
        let (since, seen, catch_up) = if since_revision == 0 || since_revision >= current {
            let since = if since_revision == 0 {
                current
            } else {
                since_revision
            };
            (since, current, false)
        } else {
            let oldest = store.shared().oldest_available();
            if since_revision.saturating_add(1) < oldest {
                return Err(StoreError::Gone {
                    requested: since_revision,
                    oldest,
                });
            }
            (since_revision, since_revision, true)
        };
        Ok(Watch {
            store,
            kinds,
            namespace: namespace.map(str::to_string),
            live,
            since,
            seen,
            catch_up,
            pending: VecDeque::new(),
            ended: false,
        })
    }

    /// The next change, in revision order; `None` when the watch ended (the
    /// store shut down, or this watcher fell further behind than the event
    /// log reaches): list again and start a new watch.
    ///
    /// Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            if self.catch_up {
                match self.read_log().await {
                    Ok(read) => {
                        if read.revision > self.seen
                            && (read.oldest == 0 || read.oldest > self.seen + 1)
                        {
                            tracing::debug!(
                                seen = self.seen,
                                oldest = read.oldest,
                                "watch fell behind the event log; ending it"
                            );
                            self.ended = true;
                            return None;
                        }
                        self.pending.extend(read.events);
                        match read.truncated_at {
                            // More to read: after this page is delivered.
                            Some(last) => self.seen = self.seen.max(last),
                            None => {
                                self.seen = self.seen.max(read.revision);
                                self.catch_up = false;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watch cannot read the event log; ending it");
                        self.ended = true;
                        return None;
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) => {
                    if event.revision <= self.seen {
                        continue;
                    }
                    if event.revision > self.seen + 1 {
                        // Missed something: the log has it (and this one).
                        self.catch_up = true;
                        continue;
                    }
                    self.seen = event.revision;
                    if self.matches(&event) {
                        return Some(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up = true,
                Err(broadcast::error::RecvError::Closed) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// Events read from the log and not yet delivered.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.pending.len()
    }

    fn matches(&self, event: &WatchEvent) -> bool {
        event.revision > self.since
            && kind_wanted(&self.kinds, event.key.kind)
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == event.key.namespace)
    }

    /// Reads the log after `seen` on the blocking pool, at most
    /// [`CATCH_UP_PAGE`] matching events.
    async fn read_log(&self) -> Result<LogRead, StoreError> {
        let after = self.seen;
        let since = self.since;
        let kinds = self.kinds.clone();
        let namespace = self.namespace.clone();
        self.store
            .read(move |shared, txn| {
                let revision = super::read_revision(shared, txn)?;
                let table = match txn.open_table(EVENTS) {
                    Ok(table) => table,
                    Err(redb::TableError::TableDoesNotExist(_)) => {
                        return Ok(LogRead {
                            events: Vec::new(),
                            revision,
                            oldest: 0,
                            truncated_at: None,
                        })
                    }
                    Err(e) => return Err(shared.error(e)),
                };
                let oldest = match table.first().map_err(|e| shared.error(e))? {
                    Some((key, _)) => key.value(),
                    None => 0,
                };
                let mut events = Vec::new();
                let mut truncated_at = None;
                let start = after.saturating_add(1);
                for entry in table.range(start..).map_err(|e| shared.error(e))? {
                    let (key, value) = entry.map_err(|e| shared.error(e))?;
                    let event_revision = key.value();
                    if events.len() >= CATCH_UP_PAGE {
                        truncated_at = Some(event_revision - 1);
                        break;
                    }
                    if event_revision <= since {
                        continue;
                    }
                    let record = value.value();
                    let header = schema::decode_event(record).ok_or_else(|| {
                        StoreError::Storage(format!(
                            "event {event_revision} in the log is malformed"
                        ))
                    })?;
                    let wanted = kind_wanted(&kinds, header.key.kind)
                        && namespace
                            .as_deref()
                            .is_none_or(|ns| ns == header.key.namespace);
                    if !wanted {
                        continue;
                    }
                    let object =
                        super::parse_object(&schema::object_key(&header.key), header.object_json)?;
                    events.push(WatchEvent {
                        event_type: header.event_type,
                        revision: event_revision,
                        key: header.key,
                        object: Arc::new(object),
                    });
                }
                Ok(LogRead {
                    events,
                    revision,
                    oldest,
                    truncated_at,
                })
            })
            .await
    }
}
