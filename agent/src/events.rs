//! The node's Events (`kubectl get events`, `kubectl describe pod`): what the
//! runtime and the agent did, recorded the way the kubelet's event recorder
//! does and sent to the master frugally.
//!
//! [`EventRecorder`] never blocks and never fails: the runtime's threads and
//! the async agent call it freely. Occurrences go through, in order:
//!
//! 1. a **spam filter**: a token bucket per involved object (burst
//!    [`SPAM_BURST`], one token every [`SPAM_REFILL`]), client-go's
//!    `EventSourceObjectSpamFilter`, so a crash-looping pod costs at most a
//!    dozen events an hour once its burst is spent;
//! 2. **coalescing**: an occurrence equal to one still waiting to be sent
//!    (same object, field, type, reason and message) only bumps its count;
//!    the master adds the counts to the stored Event's `count`;
//! 3. a **bounded queue** ([`MAX_PENDING`] distinct events) that outlives a
//!    lost link: what does not fit is dropped and counted, never buffered
//!    without bound on a device with little memory.
//!
//! The node's agent takes [`EventRecorder::take_batch`] once
//! [`EventRecorder::due`] says so ([`FLUSH_DELAY`] after the first waiting
//! occurrence, so a burst travels as one MQTT message) and publishes it as a
//! [`NodeEvents`] message on its report topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_common::wire::{NodeEvent, NodeEvents};
use tokio::sync::Notify;

/// Events one involved object may produce at once.
pub const SPAM_BURST: f64 = 25.0;
/// Time for one more token of the spam filter (client-go: qps 1/300).
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Distinct events kept waiting for the link; more are dropped.
pub const MAX_PENDING: usize = 512;
/// How long the first waiting occurrence waits for company.
pub const FLUSH_DELAY: Duration = Duration::from_secs(1);
/// Most events in one MQTT message.
pub const MAX_BATCH: usize = 64;
/// Longest message kept (longer ones are cut at a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Objects whose spam-filter buckets are remembered.
const MAX_BUCKETS: usize = 1024;

/// `Normal` or `Warning`, the two event types Kubernetes defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something a user should look at.
    Warning,
}

/// The pod (and optionally the container) an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvolvedPod {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The container, as the kubelet names it: `spec.containers{web}` or
    /// `spec.initContainers{init}`.
    pub field_path: Option<String>,
}

impl InvolvedPod {
    /// The same pod, about one of its containers.
    pub fn container(&self, name: &str, init: bool) -> InvolvedPod {
        let list = if init { "initContainers" } else { "containers" };
        InvolvedPod {
            field_path: Some(format!("spec.{list}{{{name}}}")),
            ..self.clone()
        }
    }
}

/// Records the node's events (see the module documentation). Cheap to
/// clone; every clone feeds the same queue.
#[derive(Clone, Default)]
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

struct Shared {
    node: String,
    queue: Mutex<Queue>,
    wake: Notify,
}

/// What identifies one waiting event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: &'static str,
    namespace: String,
    name: String,
    uid: String,
    field_path: String,
    warning: bool,
    reason: String,
    message: String,
}

#[derive(Debug, Clone)]
struct Waiting {
    count: u32,
    first: Instant,
    last: Instant,
    /// Arrival order, so batches go out oldest first.
    order: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Queue {
    waiting: HashMap<Key, Waiting>,
    buckets: HashMap<String, Bucket>,
    next_order: u64,
    next_seq: u64,
    /// When the oldest waiting occurrence arrived.
    since: Option<Instant>,
    dropped: u64,
    limited: u64,
}

impl EventRecorder {
    /// A recorder for the events of node `node`.
    pub fn new(node: &str) -> EventRecorder {
        EventRecorder {
            shared: Some(Arc::new(Shared {
                node: node.to_string(),
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
            })),
        }
    }

    /// A recorder that records nothing.
    pub fn disabled() -> EventRecorder {
        EventRecorder { shared: None }
    }

    /// Record an event about a pod (or one of its containers).
    pub fn pod(
        &self,
        pod: &InvolvedPod,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.record(
            Key {
                kind: "Pod",
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                field_path: pod.field_path.clone().unwrap_or_default(),
                warning: event_type == EventType::Warning,
                reason: reason.to_string(),
                message: message.into(),
            },
            Instant::now(),
        );
    }

    /// Record an event about the node itself.
    pub fn node(&self, event_type: EventType, reason: &str, message: impl Into<String>) {
        let Some(shared) = &self.shared else { return };
        self.record(
            Key {
                kind: "Node",
                namespace: String::new(),
                name: shared.node.clone(),
                // The kubelet uses the node's name as the UID of its
                // references to the node.
                uid: shared.node.clone(),
                field_path: String::new(),
                warning: event_type == EventType::Warning,
                reason: reason.to_string(),
                message: message.into(),
            },
            Instant::now(),
        );
    }

    fn record(&self, mut key: Key, now: Instant) {
        let Some(shared) = &self.shared else { return };
        truncate(&mut key.message, MAX_MESSAGE_BYTES);
        let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if !queue.take_token(&key.uid, now) {
            queue.limited += 1;
            return;
        }
        if let Some(waiting) = queue.waiting.get_mut(&key) {
            waiting.count = waiting.count.saturating_add(1);
            waiting.last = now;
            return;
        }
        if queue.waiting.len() >= MAX_PENDING {
            queue.dropped += 1;
            if queue.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = queue.dropped,
                    "more distinct events than the agent keeps while they cannot be sent; dropping some"
                );
            }
            return;
        }
        let order = queue.next_order;
        queue.next_order += 1;
        queue.since.get_or_insert(now);
        queue.waiting.insert(
            key,
            Waiting {
                count: 1,
                first: now,
                last: now,
                order,
            },
        );
        drop(queue);
        shared.wake.notify_one();
    }

    /// Waits until a batch is due: [`FLUSH_DELAY`] after the oldest waiting
    /// occurrence. Never resolves for a disabled recorder. Cancel-safe.
    pub async fn due(&self) {
        let Some(shared) = &self.shared else {
            return std::future::pending().await;
        };
        loop {
            let since = shared.queue.lock().unwrap_or_else(|p| p.into_inner()).since;
            match since {
                Some(since) => {
                    let at = since + FLUSH_DELAY;
                    if Instant::now() >= at {
                        return;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                None => shared.wake.notified().await,
            }
        }
    }

    /// The oldest waiting events (at most [`MAX_BATCH`]), removed from the
    /// queue; `None` when nothing waits. Hand them back with
    /// [`EventRecorder::put_back`] if they could not be sent.
    pub fn take_batch(&self) -> Option<NodeEvents> {
        let shared = self.shared.as_ref()?;
        let now = Instant::now();
        let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.waiting.is_empty() {
            queue.since = None;
            return None;
        }
        let mut oldest: Vec<(Key, Waiting)> = queue.waiting.drain().collect();
        oldest.sort_by_key(|(_, w)| w.order);
        let rest = oldest.split_off(oldest.len().min(MAX_BATCH));
        queue.since = rest.iter().map(|(_, w)| w.first).min();
        queue.waiting.extend(rest);
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let age = |at: Instant| u32::try_from(now.duration_since(at).as_secs()).unwrap_or(u32::MAX);
        let events = oldest
            .into_iter()
            .map(|(key, waiting)| NodeEvent {
                kind: key.kind.to_string(),
                namespace: key.namespace,
                name: key.name,
                uid: key.uid,
                field_path: key.field_path,
                warning: key.warning,
                reason: key.reason,
                message: key.message,
                count: waiting.count,
                first_seconds_ago: age(waiting.first),
                last_seconds_ago: age(waiting.last),
            })
            .collect();
        Some(NodeEvents { seq, events })
    }

    /// Put back a batch that could not be sent (it goes out with the next).
    pub fn put_back(&self, batch: NodeEvents) {
        let Some(shared) = &self.shared else { return };
        let now = Instant::now();
        let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        let ago = |secs: u32| {
            now.checked_sub(Duration::from_secs(u64::from(secs)))
                .unwrap_or(now)
        };
        for event in batch.events {
            let kind = if event.kind == "Node" { "Node" } else { "Pod" };
            let key = Key {
                kind,
                namespace: event.namespace,
                name: event.name,
                uid: event.uid,
                field_path: event.field_path,
                warning: event.warning,
                reason: event.reason,
                message: event.message,
            };
            let (first, last) = (ago(event.first_seconds_ago), ago(event.last_seconds_ago));
            // Older than anything queued since: keep them first.
            let order = queue.waiting.values().map(|w| w.order).min().unwrap_or(0);
            let entry = queue.waiting.entry(key).or_insert(Waiting {
                count: 0,
                first,
                last,
                order: order.saturating_sub(1),
            });
            entry.count = entry.count.saturating_add(event.count);
            entry.first = entry.first.min(first);
            entry.last = entry.last.max(last);
            queue.since = Some(queue.since.map_or(first, |s| s.min(first)));
        }
        drop(queue);
        shared.wake.notify_one();
    }

    /// Occurrences dropped by the spam filter and for want of room.
    pub fn discarded(&self) -> (u64, u64) {
        self.shared.as_ref().map_or((0, 0), |shared| {
            let queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            (queue.limited, queue.dropped)
        })
    }
}

impl Queue {
    fn take_token(&mut self, uid: &str, now: Instant) -> bool {
        if !self.buckets.contains_key(uid) && self.buckets.len() >= MAX_BUCKETS {
            // Forget the object heard of longest ago (its bucket is the
            // fullest anyway).
            if let Some(stale) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(uid, _)| uid.clone())
            {
                self.buckets.remove(&stale);
            }
        }
        let bucket = self.buckets.entry(uid.to_string()).or_insert(Bucket {
            tokens: SPAM_BURST,
            at: now,
        });
        let refilled =
            now.saturating_duration_since(bucket.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        bucket.tokens = (bucket.tokens + refilled).min(SPAM_BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn truncate(message: &mut String, max: usize) {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> InvolvedPod {
        InvolvedPod {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            field_path: None,
        }
    }

    #[test]
    fn equal_events_coalesce_into_one_with_a_count() {
        let r = EventRecorder::new("n1");
        let c = pod().container("app", false);
        for _ in 0..3 {
            r.pod(&c, EventType::Warning, "BackOff", "back-off");
        }
        r.pod(&c, EventType::Normal, "Started", "Started container app");
        let batch = r.take_batch().expect("a batch");
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].reason, "BackOff");
        assert_eq!(batch.events[0].count, 3);
        assert!(batch.events[0].warning);
        assert_eq!(batch.events[0].field_path, "spec.containers{app}");
        assert_eq!(batch.events[1].count, 1);
        assert!(r.take_batch().is_none());
    }

    #[test]
    fn the_spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let r = EventRecorder::new("n1");
        let now = Instant::now();
        let key = |i: usize| Key {
            kind: "Pod",
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            field_path: String::new(),
            warning: true,
            reason: "BackOff".into(),
            message: format!("m{i}"),
        };
        for i in 0..100 {
            r.record(key(i), now);
        }
        assert_eq!(r.discarded(), (75, 0));
        r.record(key(100), now + Duration::from_secs(299));
        assert_eq!(r.discarded(), (76, 0));
        r.record(key(101), now + Duration::from_secs(301));
        assert_eq!(r.discarded(), (76, 0));
        // Another object has its own bucket.
        r.record(
            Key {
                uid: "u2".into(),
                ..key(0)
            },
            now,
        );
        assert_eq!(r.discarded(), (76, 0));
        let total: usize = std::iter::from_fn(|| r.take_batch())
            .map(|b| b.events.len())
            .sum();
        assert_eq!(total, 27);
    }

    #[test]
    fn the_queue_is_bounded_and_batches_are_bounded() {
        let r = EventRecorder::new("n1");
        for i in 0..(MAX_PENDING + 10) {
            let p = InvolvedPod {
                uid: format!("u{i}"),
                ..pod()
            };
            r.pod(&p, EventType::Normal, "Created", "c");
        }
        assert_eq!(r.discarded(), (0, 10));
        let first = r.take_batch().expect("a batch");
        assert_eq!(first.events.len(), MAX_BATCH);
        assert_eq!(first.events[0].uid, "u0");
        let second = r.take_batch().expect("a second batch");
        assert_eq!(second.seq, first.seq + 1);
        assert_eq!(second.events[0].uid, format!("u{MAX_BATCH}"));
    }

    #[test]
    fn a_batch_put_back_merges_with_what_came_since() {
        let r = EventRecorder::new("n1");
        r.pod(&pod(), EventType::Warning, "FailedMount", "m");
        let batch = r.take_batch().expect("a batch");
        r.pod(&pod(), EventType::Warning, "FailedMount", "m");
        r.pod(&pod(), EventType::Normal, "Other", "o");
        r.put_back(batch);
        let again = r.take_batch().expect("a batch");
        assert_eq!(again.events.len(), 2);
        assert_eq!(again.events[0].reason, "FailedMount");
        assert_eq!(again.events[0].count, 2);
    }

    #[test]
    fn node_events_name_the_node_and_long_messages_are_cut() {
        let r = EventRecorder::new("pi-1");
        r.node(
            EventType::Normal,
            "NodeReady",
            "é".repeat(MAX_MESSAGE_BYTES),
        );
        let batch = r.take_batch().expect("a batch");
        let e = &batch.events[0];
        assert_eq!(
            (e.kind.as_str(), e.name.as_str(), e.uid.as_str()),
            ("Node", "pi-1", "pi-1")
        );
        assert!(e.message.len() <= MAX_MESSAGE_BYTES && e.message.len() > MAX_MESSAGE_BYTES - 2);
        assert!(EventRecorder::disabled().take_batch().is_none());
    }

    #[tokio::test]
    async fn a_batch_is_due_a_moment_after_the_first_event() {
        let r = EventRecorder::new("n1");
        let due = {
            let r = r.clone();
            tokio::spawn(async move { r.due().await })
        };
        tokio::task::yield_now().await;
        assert!(!due.is_finished());
        r.pod(&pod(), EventType::Normal, "Created", "c");
        tokio::time::timeout(FLUSH_DELAY * 10, due)
            .await
            .expect("due within the flush delay")
            .expect("the task ran");
    }
}
