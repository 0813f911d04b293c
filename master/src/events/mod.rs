//! Kubernetes Events: what controllers, the scheduler and the nodes' agents
//! report about objects (`kubectl get events`, `kubectl describe`).
//!
//! [`EventRecorder`] is the one way the master records an Event. It never
//! blocks its caller: occurrences go over a bounded channel to one task that
//! runs them through the [`correlator`] (aggregation, deduplication with
//! `count` and `lastTimestamp`, a spam filter, as client-go's
//! `EventCorrelator` does) and writes the results, several at once so the
//! store commits them together. [`ttl::run`] deletes Events an hour (the
//! `--event-ttl`) after their last change, as kube-apiserver's lease on
//! each Event does, so they never fill an SD card.

pub mod correlator;
pub mod ttl;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bramble_common::Kind;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::store::{ObjectKey, Precondition, Store, StoreError};
use correlator::{Correlator, Decision, EventKey, Lru, SimilarKey, CACHE_SIZE};

/// Occurrences queued for the writer before new ones are dropped.
const QUEUE_CAPACITY: usize = 4096;
/// Most events written in one round (they share one store commit).
const BATCH: usize = 256;

/// `Normal` or `Warning`, the two event types Kubernetes defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something a user should look at.
    Warning,
}

impl EventType {
    /// `Normal` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about (an `ObjectReference`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvolvedObject {
    /// `v1`, `apps/v1`, ...
    pub api_version: String,
    /// `Pod`, `Deployment`, ...
    pub kind: String,
    /// The object's namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The object's UID.
    pub uid: String,
    /// The object's `resourceVersion` when it happened (may be empty).
    pub resource_version: String,
    /// A field of the object (`spec.containers{web}`), may be empty.
    pub field_path: String,
}

impl InvolvedObject {
    /// The reference to a stored object (kind, apiVersion and metadata are
    /// read from it).
    pub fn of(object: &Value) -> InvolvedObject {
        let text = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        InvolvedObject {
            api_version: text("/apiVersion"),
            kind: text("/kind"),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            uid: text("/metadata/uid"),
            resource_version: text("/metadata/resourceVersion"),
            field_path: String::new(),
        }
    }
}

/// One or more occurrences of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// The reporting component (`deployment-controller`, `kubelet`).
    pub component: String,
    /// The node the component runs on (`""` for the master's controllers).
    pub host: String,
    /// What it is about.
    pub involved: InvolvedObject,
    /// Normal or Warning.
    pub event_type: EventType,
    /// One word, UpperCamelCase (`SuccessfulCreate`, `BackOff`).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
    /// How many times it happened (at least 1).
    pub count: u32,
    /// When it first happened.
    pub first: jiff::Timestamp,
    /// When it last happened.
    pub last: jiff::Timestamp,
    /// Apply the spam filter (false when the source already did, like an
    /// agent that rate-limits its node's events before they cross the link).
    pub rate_limited: bool,
}

struct Shared {
    queue: mpsc::Sender<Occurrence>,
    dropped: AtomicU64,
}

/// Records Events in the store (see the module documentation). Cheap to
/// clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct EventRecorder {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("enabled", &self.shared.is_some())
            .finish()
    }
}

impl EventRecorder {
    /// A recorder writing to `store`; starts its writer task (call it inside
    /// the tokio runtime). The task ends when the last clone is dropped.
    pub fn new(store: Store) -> EventRecorder {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_events(store, receiver));
        EventRecorder {
            shared: Some(Arc::new(Shared {
                queue,
                dropped: AtomicU64::new(0),
            })),
        }
    }

    /// A recorder that records nothing (unit tests).
    pub fn disabled() -> EventRecorder {
        EventRecorder { shared: None }
    }

    /// Records a `Normal` event about the stored `object`.
    pub fn normal(
        &self,
        component: &str,
        object: &Value,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.about(component, object, EventType::Normal, reason, message.into());
    }

    /// Records a `Warning` event about the stored `object`.
    pub fn warning(
        &self,
        component: &str,
        object: &Value,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.about(
            component,
            object,
            EventType::Warning,
            reason,
            message.into(),
        );
    }

    fn about(
        &self,
        component: &str,
        object: &Value,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        let now = jiff::Timestamp::now();
        self.record(Occurrence {
            component: component.to_string(),
            host: String::new(),
            involved: InvolvedObject::of(object),
            event_type,
            reason: reason.to_string(),
            message,
            count: 1,
            first: now,
            last: now,
            rate_limited: true,
        });
    }

    /// Records `occurrence` (for sources with their own involved objects
    /// and timestamps, such as the events a node's agent reports).
    pub fn record(&self, occurrence: Occurrence) {
        let Some(shared) = &self.shared else { return };
        if shared.queue.try_send(occurrence).is_err() {
            let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = dropped + 1,
                    "events are recorded faster than the store takes them; dropping some"
                );
            }
        }
    }

    /// Occurrences dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
    }
}

/// An event as stored: where it is and what it counted so far.
#[derive(Debug, Clone)]
struct Recorded {
    key: ObjectKey,
    count: u64,
    first: jiff::Timestamp,
}

/// What one round writes for one event key.
#[derive(Debug, Clone)]
struct Pending {
    occurrence: Occurrence,
    message: String,
}

async fn write_events(store: Store, mut queue: mpsc::Receiver<Occurrence>) {
    let mut correlator = Correlator::default();
    let mut recorded: Lru<EventKey, Recorded> = Lru::new(CACHE_SIZE);
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let mut order: Vec<EventKey> = Vec::new();
        let mut pending: std::collections::HashMap<EventKey, Pending> =
            std::collections::HashMap::new();
        for occurrence in batch {
            let similar = similar_key(&occurrence);
            let decision = correlator.decide(
                similar,
                occurrence.message.clone(),
                now,
                occurrence.rate_limited,
            );
            let Decision::Record { key, message } = decision else {
                continue;
            };
            match pending.get_mut(&key) {
                Some(merged) => {
                    merged.occurrence.count =
                        merged.occurrence.count.saturating_add(occurrence.count);
                    merged.occurrence.first = merged.occurrence.first.min(occurrence.first);
                    merged.occurrence.last = merged.occurrence.last.max(occurrence.last);
                    merged.occurrence.involved.resource_version =
                        occurrence.involved.resource_version.clone();
                    merged.message = message;
                }
                None => {
                    order.push(key.clone());
                    pending.insert(
                        key,
                        Pending {
                            occurrence,
                            message,
                        },
                    );
                }
            }
        }
        let writes = order.into_iter().filter_map(|key| {
            let write = pending.remove(&key)?;
            let previous = recorded.get_mut(&key).cloned();
            let store = store.clone();
            Some(async move {
                let result = write_one(&store, previous, &write).await;
                (key, result)
            })
        });
        for (key, result) in futures_util::future::join_all(writes).await {
            match result {
                Ok(stored) => {
                    let entry = recorded.get_mut_or_insert_with(&key, || stored.clone());
                    *entry = stored;
                }
                Err(error) => {
                    recorded.remove(&key);
                    tracing::warn!(%error, reason = %key.0.reason, object = %key.0.name, "cannot record an event");
                }
            }
        }
    }
}

fn similar_key(occurrence: &Occurrence) -> SimilarKey {
    let involved = &occurrence.involved;
    SimilarKey {
        component: occurrence.component.clone(),
        host: occurrence.host.clone(),
        kind: format!("{}/{}", involved.api_version, involved.kind),
        namespace: involved.namespace.clone(),
        name: involved.name.clone(),
        uid: involved.uid.clone(),
        field_path: involved.field_path.clone(),
        event_type: occurrence.event_type.as_str().to_string(),
        reason: occurrence.reason.clone(),
    }
}

/// Bumps the stored event, or creates it when it is not stored (any more).
async fn write_one(
    store: &Store,
    previous: Option<Recorded>,
    write: &Pending,
) -> Result<Recorded, StoreError> {
    if let Some(previous) = previous {
        let count = previous
            .count
            .saturating_add(u64::from(write.occurrence.count));
        let object = event_object(&previous.key, write, count, previous.first);
        match store
            .update(&previous.key, object, Precondition::default())
            .await
        {
            Ok(_) => {
                return Ok(Recorded {
                    key: previous.key,
                    count,
                    first: previous.first,
                })
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    let namespace = match write.occurrence.involved.namespace.as_str() {
        "" => "default".to_string(),
        namespace => namespace.to_string(),
    };
    let count = u64::from(write.occurrence.count.max(1));
    let mut attempt = 0u32;
    loop {
        let key = ObjectKey::new(Kind::Event, namespace.clone(), event_name(write, attempt));
        let object = event_object(&key, write, count, write.occurrence.first);
        match store.create(&key, object).await {
            Ok(_) => {
                return Ok(Recorded {
                    key,
                    count,
                    first: write.occurrence.first,
                })
            }
            Err(StoreError::AlreadyExists { .. }) if attempt < 3 => attempt += 1,
            Err(error) => return Err(error),
        }
    }
}

/// `{object}.{nanoseconds in hex}`, as client-go names events (an event
/// name must be a DNS subdomain: long object names are cut).
fn event_name(write: &Pending, attempt: u32) -> String {
    let nanos = jiff::Timestamp::now()
        .as_nanosecond()
        .unsigned_abs()
        .wrapping_add(u128::from(attempt));
    let suffix = format!(".{nanos:x}");
    let mut base = write.occurrence.involved.name.to_ascii_lowercase();
    base.retain(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let base = base.trim_matches(|c| c == '-' || c == '.');
    let base = if base.is_empty() { "event" } else { base };
    let keep = 253usize.saturating_sub(suffix.len()).min(base.len());
    format!("{}{suffix}", base[..keep].trim_end_matches(['-', '.']))
}

/// Kubernetes' time format: RFC 3339, UTC, whole seconds.
fn timestamp(at: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(at.as_second())
        .unwrap_or(at)
        .to_string()
}

fn event_object(key: &ObjectKey, write: &Pending, count: u64, first: jiff::Timestamp) -> Value {
    let occurrence = &write.occurrence;
    let involved = &occurrence.involved;
    let mut reference = Map::new();
    for (field, value) in [
        ("apiVersion", &involved.api_version),
        ("kind", &involved.kind),
        ("namespace", &involved.namespace),
        ("name", &involved.name),
        ("uid", &involved.uid),
        ("resourceVersion", &involved.resource_version),
        ("fieldPath", &involved.field_path),
    ] {
        if !value.is_empty() {
            reference.insert(field.into(), Value::String(value.clone()));
        }
    }
    let mut source = Map::new();
    source.insert("component".into(), json!(occurrence.component));
    if !occurrence.host.is_empty() {
        source.insert("host".into(), json!(occurrence.host));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "involvedObject": reference,
        "reason": occurrence.reason,
        "message": write.message,
        "type": occurrence.event_type.as_str(),
        "count": count.min(i32::MAX as u64),
        "firstTimestamp": timestamp(first),
        "lastTimestamp": timestamp(occurrence.last),
        "source": source,
        "reportingComponent": occurrence.component,
        "reportingInstance": occurrence.host,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pending(name: &str) -> Pending {
        let now = jiff::Timestamp::now();
        Pending {
            occurrence: Occurrence {
                component: "kubelet".into(),
                host: "pi-1".into(),
                involved: InvolvedObject {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    namespace: "shop".into(),
                    name: name.into(),
                    uid: "u1".into(),
                    resource_version: String::new(),
                    field_path: "spec.containers{web}".into(),
                },
                event_type: EventType::Warning,
                reason: "BackOff".into(),
                message: "Back-off restarting failed container web".into(),
                count: 1,
                first: now,
                last: now,
                rate_limited: false,
            },
            message: "Back-off restarting failed container web".into(),
        }
    }

    #[test]
    fn names_are_dns_subdomains() {
        let name = event_name(&pending("Web_Pod"), 0);
        assert!(name.starts_with("webpod."), "{name}");
        let long = event_name(&pending(&"a".repeat(300)), 0);
        assert!(long.len() <= 253);
        assert_eq!(
            event_name(&pending("--"), 0).split('.').next(),
            Some("event")
        );
    }

    #[test]
    fn the_object_has_kubectl_s_fields() {
        let key = ObjectKey::new(Kind::Event, "shop", "web.1");
        let object = event_object(&key, &pending("web"), 3, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(
            object["involvedObject"]["fieldPath"],
            "spec.containers{web}"
        );
        assert_eq!(object["involvedObject"].get("resourceVersion"), None);
        assert_eq!(object["count"], 3);
        assert_eq!(object["firstTimestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(object["source"]["host"], "pi-1");
        assert_eq!(object["type"], "Warning");
    }

    #[tokio::test]
    async fn repeats_bump_one_event_and_a_deleted_one_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("store.redb"),
            crate::store::StoreOptions::default(),
        )
        .unwrap();
        let recorder = EventRecorder::new(store.clone());
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"}});
        let events = || async { store.list(Kind::Event, Some("shop")).await.unwrap().0 };
        let wait_for = |count: u64| {
            let events = &events;
            async move {
                let deadline = Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    let list = events().await;
                    if list.len() == 1 && list[0]["count"] == count {
                        return list[0].clone();
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no event with count {count}: {list:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        recorder.warning("kubelet", &pod, "BackOff", "back-off");
        let first = wait_for(1).await;
        recorder.warning("kubelet", &pod, "BackOff", "back-off");
        recorder.warning("kubelet", &pod, "BackOff", "back-off");
        let bumped = wait_for(3).await;
        assert_eq!(first["metadata"]["name"], bumped["metadata"]["name"]);
        assert_eq!(bumped["involvedObject"]["uid"], "u1");
        let name = bumped["metadata"]["name"].as_str().unwrap().to_string();
        store
            .delete(
                &ObjectKey::new(Kind::Event, "shop", name.clone()),
                Precondition::default(),
            )
            .await
            .unwrap();
        recorder.warning("kubelet", &pod, "BackOff", "back-off");
        let again = wait_for(1).await;
        assert_ne!(again["metadata"]["name"], name.as_str());
    }
}
