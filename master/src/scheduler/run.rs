//! The running scheduler: watches nodes and pods, binds pending pods, and
//! explains the ones that fit nowhere.
//!
//! How it works:
//! - One task owns an in-memory cache of nodes and pods fed by two store
//!   watches (re-listed from scratch when a watch ends). The watches are
//!   opened *before* the lists, so nothing falls between them; events the
//!   lists already reflect are dropped by revision.
//! - Level-triggered: a change that can matter (a pod waiting for a node, a
//!   node change, a bound pod leaving its node) requests a pass; passes are
//!   coalesced to at most one per [`SchedulerOptions::min_pass_interval`]. A
//!   pass builds a [`Snapshot`] once (O(nodes + pods)) and decides each
//!   waiting pod in O(nodes), oldest first, booking each binding before
//!   deciding the next pod.
//! - A pod is decided again only when it changed or the cluster changed in a
//!   way that can make it fit (the cache's `generation`), so an idle cluster
//!   with pods that fit nowhere costs no work and writes nothing.
//! - The writes of a pass run concurrently (the store commits them in
//!   groups): bind = update with `spec.nodeName` under a `resourceVersion`
//!   precondition, then the `PodScheduled=True` condition, then a `Scheduled`
//!   event. A conflict is left to the watch: the newer pod arrives and is
//!   decided again. Other store errors are retried with backoff.
//! - A pod that fits nowhere gets phase `Pending` and `PodScheduled=False`
//!   (written only when the message changed: flash wears out) and a
//!   `FailedScheduling` event, at most one write per pod per
//!   [`SchedulerOptions::event_interval`]; the same message again bumps the
//!   existing event's `count` instead of creating a new one. The event memory
//!   is in memory only: after a restart the first failure creates a new event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bramble_common::api::{Event, EventSource, Node, NodeSpec, ObjectReference, Pod};
use bramble_common::{Kind, ObjectMeta};
use futures_util::stream::{self, StreamExt};
use futures_util::FutureExt;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tracing::Instrument;

use super::resources::{Allocatable, PodRequests};
use super::score::controller_uid;
use super::{bound_node, is_ready, is_terminal, needs_scheduling, Snapshot, SCHEDULER_NAME};
use crate::store::{EventType, ObjectKey, Precondition, Store, StoreError, Watch, WatchEvent};

/// Tuning of the running scheduler. `Default` is what the master uses.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Shortest time between the starts of two passes: changes arriving
    /// closer together are handled by one pass (default 100 ms).
    pub min_pass_interval: Duration,
    /// Shortest time between two `FailedScheduling` event writes for one pod
    /// (default 30 s).
    pub event_interval: Duration,
    /// Pods decided per pass at most; the rest wait for the next pass, which
    /// follows at once, so that watch events are read in between (default
    /// 1000).
    pub max_pods_per_pass: usize,
    /// Pods whose writes run concurrently (default 64).
    pub max_writes_in_flight: usize,
    /// First delay before retrying after a store error; doubles up to
    /// `max_retry_delay` (default 1 s).
    pub retry_delay: Duration,
    /// Longest delay between retries after store errors (default 30 s).
    pub max_retry_delay: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            min_pass_interval: Duration::from_millis(100),
            event_interval: Duration::from_secs(30),
            max_pods_per_pass: 1000,
            max_writes_in_flight: 64,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(30),
        }
    }
}

/// Runs the scheduler against `store` with [`SchedulerOptions::default`]
/// until `shutdown` completes (or the store shuts down).
pub async fn run(store: Store, shutdown: impl Future<Output = ()>) {
    run_with_options(store, SchedulerOptions::default(), shutdown).await
}

/// Runs the scheduler against `store` with `options` until `shutdown`
/// completes (or the store shuts down).
pub async fn run_with_options(
    store: Store,
    options: SchedulerOptions,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut scheduler = Scheduler::new(store, options);
    let mut delay = scheduler.options.retry_delay;
    loop {
        let resynced = tokio::select! {
            biased;
            () = &mut shutdown => return,
            resynced = scheduler.resync() => resynced,
        };
        let (mut node_watch, mut pod_watch) = match resynced {
            Ok(watches) => watches,
            Err(StoreError::Closed) => {
                tracing::info!("store shut down; scheduler stopping");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, ?delay, "scheduler cannot list nodes and pods; retrying");
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(scheduler.options.max_retry_delay);
                continue;
            }
        };
        delay = scheduler.options.retry_delay;
        loop {
            let wake = earliest(scheduler.pass_due, scheduler.next_retry);
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = sleep_until(wake) => {
                    // Decide on what the watches already hold.
                    if !scheduler.drain(&mut node_watch) || !scheduler.drain(&mut pod_watch) {
                        break;
                    }
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return,
                        () = scheduler.pass() => {}
                    }
                }
                event = node_watch.next() => match event {
                    Some(event) => scheduler.apply(&event),
                    None => break,
                },
                event = pod_watch.next() => match event {
                    Some(event) => scheduler.apply(&event),
                    None => break,
                },
            }
        }
        tracing::debug!("scheduler watch ended; listing again");
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Most watch events applied right before a pass.
const DRAIN_BUDGET: usize = 10_000;

/// Namespace and name of a pod.
type PodKey = (String, String);

struct CachedNode {
    revision: u64,
    node: Node,
}

/// What the scheduler keeps of a pod: little for the many that are bound
/// (where they sit and what they take), the whole pod only while it waits
/// for a node.
struct CachedPod {
    revision: u64,
    uid: String,
    /// Where the pod takes resources, when bound and not finished.
    placement: Option<Placement>,
    /// The pod, while it waits for a node.
    waiting: Option<WaitingPod>,
}

/// A pod waiting for a node, as stored and decoded.
struct WaitingPod {
    raw: Arc<Value>,
    pod: Pod,
}

/// A bound, unfinished pod's place: its node, its requests and its
/// controller (for the spread score).
#[derive(Debug, Clone, PartialEq)]
struct Placement {
    node: String,
    requests: PodRequests,
    owner: Option<String>,
}

impl Placement {
    fn of(pod: &Pod) -> Option<Placement> {
        match bound_node(pod) {
            Some(node) if !is_terminal(pod) => Some(Placement {
                node: node.to_string(),
                requests: PodRequests::of(pod),
                owner: controller_uid(pod).map(str::to_string),
            }),
            _ => None,
        }
    }

    /// Whether a pod moving from `self` to `other` frees resources.
    fn frees(&self, other: Option<&Placement>) -> bool {
        other.is_none_or(|o| o.node != self.node || o.requests != self.requests)
    }
}

/// What the scheduler remembers of one waiting pod (by uid).
#[derive(Debug, Default)]
struct PodMemory {
    /// The pod revision and cluster generation of the last decision.
    attempted: Option<(u64, u64)>,
    /// Decide again at this time even if nothing changed (a deferred event,
    /// a retry after a store error).
    retry_at: Option<Instant>,
    /// The delay before the next retry after a store error.
    backoff: Option<Duration>,
    /// The last `FailedScheduling` event written for the pod.
    event: Option<RecordedEvent>,
}

/// A `FailedScheduling` event as last written.
#[derive(Debug, Clone)]
struct RecordedEvent {
    key: ObjectKey,
    object: Value,
    message: String,
    written_at: Instant,
}

/// What to do about the `FailedScheduling` event of a pod that fits nowhere.
#[derive(Debug, Clone, PartialEq)]
enum EventDecision {
    /// Write a new event.
    Create,
    /// Bump `count` and `lastTimestamp` of the recorded event.
    Bump,
    /// A different message within the interval: write it at this time.
    Defer(Instant),
    /// The recorded event already says this, recently enough.
    Nothing,
}

/// At most one event write per `interval`; the same message bumps the count.
fn event_decision(
    recorded: Option<&RecordedEvent>,
    message: &str,
    now: Instant,
    interval: Duration,
) -> EventDecision {
    let Some(recorded) = recorded else {
        return EventDecision::Create;
    };
    let same = recorded.message == message;
    let allowed_at = recorded.written_at + interval;
    if now < allowed_at {
        if same {
            EventDecision::Nothing
        } else {
            EventDecision::Defer(allowed_at)
        }
    } else if same {
        EventDecision::Bump
    } else {
        EventDecision::Create
    }
}

/// The facts of a node the filters look at: when they change, pods that fit
/// nowhere are decided again.
#[derive(Debug, PartialEq)]
struct NodeFacts {
    labels: BTreeMap<String, String>,
    spec: NodeSpec,
    allocatable: Allocatable,
    ready: bool,
    architecture: Option<String>,
    operating_system: Option<String>,
}

impl NodeFacts {
    fn of(node: &Node) -> NodeFacts {
        let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
        NodeFacts {
            labels: node.metadata.labels.clone(),
            spec: node.spec.clone(),
            allocatable: Allocatable::of(node),
            ready: is_ready(node),
            architecture: info.map(|i| i.architecture.clone()),
            operating_system: info.map(|i| i.operating_system.clone()),
        }
    }
}

/// A pod a write is about.
#[derive(Debug, Clone)]
struct PodRef {
    key: ObjectKey,
    uid: String,
    revision: u64,
}

/// A write to make after a decision.
enum Action {
    Bind {
        pod: PodRef,
        raw: Arc<Value>,
        node: String,
        event_name: String,
    },
    Unschedulable {
        pod: PodRef,
        message: String,
        status: Option<Value>,
        event: Option<EventWrite>,
    },
}

enum EventWrite {
    Create {
        name: String,
    },
    Bump {
        recorded: RecordedEvent,
        fallback_name: String,
    },
}

/// What came of an [`Action`].
enum Outcome {
    Bound {
        pod: PodRef,
        objects: Vec<Value>,
    },
    BindFailed {
        pod: PodRef,
        error: StoreError,
    },
    Unschedulable {
        pod: PodRef,
        status: Option<Result<Value, StoreError>>,
        event: Option<Result<RecordedEvent, StoreError>>,
    },
}

struct Scheduler {
    store: Store,
    options: SchedulerOptions,
    nodes: BTreeMap<String, CachedNode>,
    pods: HashMap<PodKey, CachedPod>,
    /// Pods waiting for this scheduler.
    pending: BTreeSet<PodKey>,
    /// Bumped by every change that can make a pod that fit nowhere fit.
    generation: u64,
    /// By pod uid.
    memory: HashMap<String, PodMemory>,
    pass_due: Option<Instant>,
    last_pass: Option<Instant>,
    next_retry: Option<Instant>,
    /// Keeps event names unique within this process.
    last_event_nanos: i128,
}

impl Scheduler {
    fn new(store: Store, options: SchedulerOptions) -> Scheduler {
        Scheduler {
            store,
            options,
            nodes: BTreeMap::new(),
            pods: HashMap::new(),
            pending: BTreeSet::new(),
            generation: 0,
            memory: HashMap::new(),
            pass_due: None,
            last_pass: None,
            next_retry: None,
            last_event_nanos: 0,
        }
    }

    /// Opens new watches, then lists nodes and pods into a fresh cache.
    async fn resync(&mut self) -> Result<(Watch, Watch), StoreError> {
        let node_watch = self.store.watch(Some(Kind::Node), None, 0)?;
        let pod_watch = self.store.watch(Some(Kind::Pod), None, 0)?;
        let (nodes, _) = self.store.list(Kind::Node, None).await?;
        let (pods, _) = self.store.list(Kind::Pod, None).await?;
        self.nodes.clear();
        self.pods.clear();
        self.pending.clear();
        for object in nodes {
            let revision = object_revision(&object);
            self.upsert_node(revision, &object);
        }
        for object in pods {
            let revision = object_revision(&object);
            self.upsert_pod(revision, Arc::new(object));
        }
        let uids: BTreeSet<&str> = self.pods.values().map(|p| p.uid.as_str()).collect();
        self.memory.retain(|uid, _| uids.contains(uid.as_str()));
        self.generation += 1;
        tracing::debug!(
            nodes = self.nodes.len(),
            pods = self.pods.len(),
            pending = self.pending.len(),
            "scheduler cache listed"
        );
        self.request_pass();
        Ok((node_watch, pod_watch))
    }

    /// Applies a watch event to the cache.
    fn apply(&mut self, event: &WatchEvent) {
        let deleted = event.event_type == EventType::Deleted;
        match event.key.kind {
            Kind::Node if deleted => {
                let stale = self
                    .nodes
                    .get(&event.key.name)
                    .is_some_and(|n| n.revision >= event.revision);
                if !stale && self.nodes.remove(&event.key.name).is_some() {
                    self.cluster_changed();
                }
            }
            Kind::Node => {
                let stale = self
                    .nodes
                    .get(&event.key.name)
                    .is_some_and(|n| n.revision >= event.revision);
                if !stale {
                    self.upsert_node(event.revision, &event.object);
                }
            }
            Kind::Pod if deleted => {
                let key = (event.key.namespace.clone(), event.key.name.clone());
                let stale = self
                    .pods
                    .get(&key)
                    .is_some_and(|p| p.revision >= event.revision);
                if stale {
                    return;
                }
                self.pending.remove(&key);
                if let Some(gone) = self.pods.remove(&key) {
                    self.memory.remove(&gone.uid);
                    if gone.placement.is_some() {
                        self.cluster_changed();
                    }
                }
            }
            Kind::Pod => {
                // Our own writes come back through the watch after the cache
                // already has them: skip them before parsing.
                let key = (event.key.namespace.clone(), event.key.name.clone());
                let stale = self
                    .pods
                    .get(&key)
                    .is_some_and(|p| p.revision >= event.revision);
                if !stale {
                    self.upsert_pod(event.revision, Arc::clone(&event.object));
                }
            }
            _ => {}
        }
    }

    /// Applies the events `watch` can deliver without waiting (at most
    /// [`DRAIN_BUDGET`]). False when the watch ended.
    fn drain(&mut self, watch: &mut Watch) -> bool {
        for _ in 0..DRAIN_BUDGET {
            match watch.next().now_or_never() {
                Some(Some(event)) => self.apply(&event),
                Some(None) => return false,
                None => break,
            }
        }
        true
    }

    fn upsert_node(&mut self, revision: u64, object: &Value) {
        let node: Node = match serde_json::from_value(object.clone()) {
            Ok(node) => node,
            Err(error) => {
                tracing::warn!(%error, "scheduler skips a node it cannot read");
                return;
            }
        };
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let changed = match self.nodes.get(&name) {
            Some(cached) if cached.revision >= revision => return,
            Some(cached) => NodeFacts::of(&cached.node) != NodeFacts::of(&node),
            None => true,
        };
        self.nodes.insert(name, CachedNode { revision, node });
        if changed {
            self.cluster_changed();
        }
    }

    fn upsert_pod(&mut self, revision: u64, raw: Arc<Value>) {
        let pod: Pod = match serde_json::from_value(Value::clone(&raw)) {
            Ok(pod) => pod,
            Err(error) => {
                tracing::warn!(%error, "scheduler skips a pod it cannot read");
                return;
            }
        };
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let placement = Placement::of(&pod);
        let freed = match self.pods.get(&key) {
            Some(cached) if cached.revision >= revision => return,
            Some(cached) => cached
                .placement
                .as_ref()
                .is_some_and(|before| before.frees(placement.as_ref())),
            None => false,
        };
        let waiting = needs_scheduling(&pod);
        if waiting {
            self.pending.insert(key.clone());
        } else {
            self.pending.remove(&key);
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let due = waiting && self.is_due(&uid, revision);
        self.pods.insert(
            key,
            CachedPod {
                revision,
                uid,
                placement,
                waiting: waiting.then_some(WaitingPod { raw, pod }),
            },
        );
        if freed {
            self.cluster_changed();
        }
        if due {
            self.request_pass();
        }
    }

    /// True when a waiting pod at `revision` has to be decided (again).
    fn is_due(&self, uid: &str, revision: u64) -> bool {
        self.memory
            .get(uid)
            .is_none_or(|memory| memory.attempted != Some((revision, self.generation)))
    }

    /// Something changed that can make a pod that fit nowhere fit.
    fn cluster_changed(&mut self) {
        self.generation += 1;
        if !self.pending.is_empty() {
            self.request_pass();
        }
    }

    fn request_pass(&mut self) {
        if self.pass_due.is_none() {
            let now = Instant::now();
            let earliest = self
                .last_pass
                .map_or(now, |last| last + self.options.min_pass_interval);
            self.pass_due = Some(earliest.max(now));
        }
    }

    /// Decides every waiting pod that is due, then makes the writes.
    async fn pass(&mut self) {
        let started = Instant::now();
        self.pass_due = None;
        self.last_pass = Some(started);
        let actions = self.plan(started);
        if !actions.is_empty() {
            let store = self.store.clone();
            let outcomes: Vec<Outcome> = stream::iter(actions)
                .map(|(action, span)| perform(store.clone(), action).instrument(span))
                .buffer_unordered(self.options.max_writes_in_flight.max(1))
                .collect()
                .await;
            let now = Instant::now();
            for outcome in outcomes {
                self.absorb(outcome, now);
            }
        }
        self.next_retry = self
            .pending
            .iter()
            .filter_map(|key| self.pods.get(key))
            .filter_map(|p| self.memory.get(&p.uid)?.retry_at)
            .min();
    }

    /// Decides the due pods (oldest first) against one snapshot.
    fn plan(&mut self, now: Instant) -> Vec<(Action, tracing::Span)> {
        let mut snapshot = Snapshot::new(self.nodes.values().map(|n| &n.node));
        for placement in self.pods.values().filter_map(|p| p.placement.as_ref()) {
            snapshot.place_requests(
                &placement.node,
                &placement.requests,
                placement.owner.as_deref(),
            );
        }
        let generation = self.generation;
        let mut due: Vec<(&CachedPod, &WaitingPod)> = self
            .pending
            .iter()
            .filter_map(|key| self.pods.get(key))
            .filter_map(|cached| Some((cached, cached.waiting.as_ref()?)))
            .filter(|(cached, _)| {
                let retry = self
                    .memory
                    .get(&cached.uid)
                    .and_then(|memory| memory.retry_at)
                    .is_some_and(|at| at <= now);
                retry || self.is_due(&cached.uid, cached.revision)
            })
            .collect();
        due.sort_by(|(_, a), (_, b)| {
            let meta = |p: &WaitingPod| {
                (
                    p.pod.metadata.creation_timestamp.clone(),
                    p.pod.metadata.namespace.clone(),
                    p.pod.metadata.name.clone(),
                )
            };
            meta(a).cmp(&meta(b))
        });
        if due.len() > self.options.max_pods_per_pass {
            due.truncate(self.options.max_pods_per_pass);
            // The rest in the next pass, after reading what the watches hold.
            self.pass_due = Some(now);
        }

        let timestamp = now_rfc3339();
        let mut actions = Vec::new();
        for (cached, waiting) in due {
            let namespace = waiting.pod.metadata.namespace.clone().unwrap_or_default();
            let name = waiting.pod.metadata.name.clone().unwrap_or_default();
            let uid = cached.uid.clone();
            let span = tracing::info_span!("schedule", pod = %name, namespace = %namespace);
            let _entered = span.enter();
            let memory = self.memory.entry(uid.clone()).or_default();
            memory.attempted = Some((cached.revision, generation));
            memory.retry_at = None;
            let pod = PodRef {
                key: ObjectKey::new(Kind::Pod, namespace, name),
                uid,
                revision: cached.revision,
            };
            match snapshot.schedule(&waiting.pod) {
                Ok(node) => {
                    snapshot.assume(&waiting.pod, &node);
                    tracing::debug!(%node, "binding");
                    let event_name = event_name(&mut self.last_event_nanos, &pod.key.name);
                    actions.push((
                        Action::Bind {
                            pod,
                            raw: Arc::clone(&waiting.raw),
                            node,
                            event_name,
                        },
                        span.clone(),
                    ));
                }
                Err(unschedulable) => {
                    let message = unschedulable.message;
                    tracing::debug!(%message, "no node fits");
                    let status = unschedulable_status(&waiting.raw, &message, &timestamp);
                    let decision = event_decision(
                        memory.event.as_ref(),
                        &message,
                        now,
                        self.options.event_interval,
                    );
                    let event = match decision {
                        EventDecision::Create => Some(EventWrite::Create {
                            name: event_name(&mut self.last_event_nanos, &pod.key.name),
                        }),
                        EventDecision::Bump => {
                            memory.event.clone().map(|recorded| EventWrite::Bump {
                                recorded,
                                fallback_name: event_name(
                                    &mut self.last_event_nanos,
                                    &pod.key.name,
                                ),
                            })
                        }
                        EventDecision::Defer(at) => {
                            memory.retry_at = Some(at);
                            None
                        }
                        EventDecision::Nothing => None,
                    };
                    if status.is_some() || event.is_some() {
                        actions.push((
                            Action::Unschedulable {
                                pod,
                                message,
                                status,
                                event,
                            },
                            span.clone(),
                        ));
                    }
                }
            }
        }
        actions
    }

    /// Takes in the result of a write.
    fn absorb(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Bound { pod, objects } => {
                for object in objects {
                    let revision = object_revision(&object);
                    self.upsert_pod(revision, Arc::new(object));
                }
                self.memory.remove(&pod.uid);
            }
            Outcome::BindFailed { pod, error } => self.write_failed(&pod, &error, now),
            Outcome::Unschedulable { pod, status, event } => {
                let mut failed = false;
                match status {
                    Some(Ok(object)) => {
                        // Our own write: the decision for the new revision is
                        // already made, do not make it again.
                        let revision = object_revision(&object);
                        if let Some(memory) = self.memory.get_mut(&pod.uid) {
                            if let Some((decided, generation)) = memory.attempted {
                                if decided == pod.revision {
                                    memory.attempted = Some((revision, generation));
                                }
                            }
                        }
                        self.upsert_pod(revision, Arc::new(object));
                    }
                    Some(Err(error)) => {
                        failed = true;
                        self.write_failed(&pod, &error, now);
                    }
                    None => {}
                }
                match event {
                    Some(Ok(recorded)) => {
                        if let Some(memory) = self.memory.get_mut(&pod.uid) {
                            memory.event = Some(recorded);
                        }
                    }
                    Some(Err(error)) => {
                        failed = true;
                        self.write_failed(&pod, &error, now);
                    }
                    None => {}
                }
                if !failed {
                    if let Some(memory) = self.memory.get_mut(&pod.uid) {
                        memory.backoff = None;
                    }
                }
            }
        }
    }

    /// A write for `pod` failed: a conflict waits for the watch to bring the
    /// newer pod; a deleted pod is forgotten; anything else is retried with
    /// backoff.
    fn write_failed(&mut self, pod: &PodRef, error: &StoreError, now: Instant) {
        let Some(memory) = self.memory.get_mut(&pod.uid) else {
            return;
        };
        memory.attempted = None;
        match error {
            StoreError::Conflict { .. } => {
                // The watch brings the newer pod, which requests a pass.
                tracing::debug!(pod = %pod.key, "conflict; the newer pod will be decided again");
            }
            StoreError::NotFound { .. } => {}
            error => {
                let delay = memory
                    .backoff
                    .map_or(self.options.retry_delay, |d| d * 2)
                    .min(self.options.max_retry_delay);
                memory.backoff = Some(delay);
                memory.retry_at = Some(now + delay);
                tracing::warn!(pod = %pod.key, %error, ?delay, "scheduler write failed; retrying");
            }
        }
    }
}

/// Makes the writes of one action.
async fn perform(store: Store, action: Action) -> Outcome {
    match action {
        Action::Bind {
            pod,
            raw,
            node,
            event_name,
        } => bind(&store, pod, &raw, &node, event_name).await,
        Action::Unschedulable {
            pod,
            message,
            status,
            event,
        } => {
            let status = match status {
                Some(status) => Some(
                    store
                        .update_status(&pod.key, status, precondition(&pod.uid, pod.revision))
                        .await,
                ),
                None => None,
            };
            let event = match event {
                Some(write) => Some(record_failure(&store, &pod, &message, write).await),
                None => None,
            };
            Outcome::Unschedulable { pod, status, event }
        }
    }
}

/// Binds: `spec.nodeName` and `PodScheduled=True` in one write (as
/// Kubernetes' Binding does), then a `Scheduled` event. Only the first
/// write decides the outcome; the event is reported but does not undo the
/// binding.
async fn bind(store: &Store, pod: PodRef, raw: &Value, node: &str, event_name: String) -> Outcome {
    let mut body = raw.clone();
    if let Some(object) = body.as_object_mut() {
        let spec = object
            .entry("spec")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("nodeName".into(), Value::String(node.to_string()));
        }
    }
    let precondition = precondition(&pod.uid, pod.revision);
    let written = match scheduled_status(raw, &now_rfc3339()) {
        Some(status) => {
            store
                .update_with_status(&pod.key, body, status, precondition)
                .await
        }
        None => store.update(&pod.key, body, precondition).await,
    };
    let bound = match written {
        Ok(bound) => bound,
        Err(error) => return Outcome::BindFailed { pod, error },
    };
    tracing::debug!(%node, "pod bound");
    let objects = vec![bound];
    let message = format!(
        "Successfully assigned {}/{} to {node}",
        pod.key.namespace, pod.key.name
    );
    let event = event_object(&pod, &event_name, "Scheduled", "Normal", &message);
    if let Err(error) = create_event(store, &pod, event_name, event).await {
        tracing::warn!(%error, "pod bound but its Scheduled event was not written");
    }
    Outcome::Bound { pod, objects }
}

/// Writes the `FailedScheduling` event: a new one, or the recorded one with
/// its count bumped (a new one if it is gone).
async fn record_failure(
    store: &Store,
    pod: &PodRef,
    message: &str,
    write: EventWrite,
) -> Result<RecordedEvent, StoreError> {
    let name = match write {
        EventWrite::Create { name } => name,
        EventWrite::Bump {
            recorded,
            fallback_name,
        } => {
            let mut object = recorded.object.clone();
            let count = object.get("count").and_then(Value::as_i64).unwrap_or(1);
            if let Some(fields) = object.as_object_mut() {
                fields.insert("count".into(), json!(count + 1));
                fields.insert("lastTimestamp".into(), json!(now_rfc3339()));
            }
            match store
                .update(&recorded.key, object, Precondition::default())
                .await
            {
                Ok(object) => {
                    return Ok(RecordedEvent {
                        object,
                        written_at: Instant::now(),
                        ..recorded
                    })
                }
                Err(StoreError::NotFound { .. }) => fallback_name,
                Err(error) => return Err(error),
            }
        }
    };
    let event = event_object(pod, &name, "FailedScheduling", "Warning", message);
    let (key, object) = create_event(store, pod, name, event).await?;
    Ok(RecordedEvent {
        key,
        object,
        message: message.to_string(),
        written_at: Instant::now(),
    })
}

async fn create_event(
    store: &Store,
    pod: &PodRef,
    name: String,
    event: Event,
) -> Result<(ObjectKey, Value), StoreError> {
    let key = ObjectKey::new(Kind::Event, pod.key.namespace.clone(), name);
    let body = serde_json::to_value(&event).map_err(|e| StoreError::Invalid {
        message: format!("cannot encode the event: {e}"),
    })?;
    let object = store.create(&key, body).await?;
    Ok((key, object))
}

/// An Event about `pod`, in core/v1 shape, from the default scheduler.
fn event_object(pod: &PodRef, name: &str, reason: &str, type_: &str, message: &str) -> Event {
    let now = now_rfc3339();
    Event {
        api_version: "v1".into(),
        kind: "Event".into(),
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(pod.key.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.key.name.clone()),
            namespace: Some(pod.key.namespace.clone()),
            uid: Some(pod.uid.clone()),
            field_path: None,
            resource_version: Some(pod.revision.to_string()),
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some(SCHEDULER_NAME.into()),
            host: None,
        }),
        reporting_component: Some(SCHEDULER_NAME.into()),
    }
}

fn precondition(uid: &str, revision: u64) -> Precondition {
    Precondition {
        resource_version: Some(revision),
        uid: (!uid.is_empty()).then(|| uid.to_string()),
    }
}

/// A unique event name for `pod`, as Kubernetes makes them:
/// `<pod>.<unix nanoseconds in hex>`; `last_nanos` keeps names unique when
/// the clock does not move between two calls.
fn event_name(last_nanos: &mut i128, pod: &str) -> String {
    let nanos = jiff::Timestamp::now().as_nanosecond().max(*last_nanos + 1);
    *last_nanos = nanos;
    format!("{pod}.{nanos:x}")
}

/// The `resourceVersion` of a stored object (0 if missing).
fn object_revision(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The current time as Kubernetes writes it: RFC 3339, UTC, whole seconds.
fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    match jiff::Timestamp::from_second(now.as_second()) {
        Ok(whole) => whole.to_string(),
        Err(_) => now.to_string(),
    }
}

/// The pod's status with `condition` replacing any condition of its type.
/// `None` when the status would not change.
fn with_condition(
    pod: &Value,
    phase: Option<&str>,
    condition: Map<String, Value>,
    now: &str,
) -> Option<Value> {
    let mut status = match pod.get("status") {
        Some(Value::Object(status)) => status.clone(),
        _ => Map::new(),
    };
    let type_ = condition.get("type").cloned().unwrap_or(Value::Null);
    let mut conditions: Vec<Value> = match status.get("conditions") {
        Some(Value::Array(conditions)) => conditions.clone(),
        _ => Vec::new(),
    };
    let existing = conditions
        .iter()
        .position(|c| c.get("type") == Some(&type_));
    let same_fields = |c: &Value| {
        ["status", "reason", "message"]
            .iter()
            .all(|field| c.get(field) == condition.get(*field))
    };
    let phase_ok = phase.is_none_or(|p| status.get("phase").and_then(Value::as_str) == Some(p));
    if phase_ok && existing.is_some_and(|i| same_fields(&conditions[i])) {
        return None;
    }
    let mut condition = condition;
    let transition = match existing.map(|i| &conditions[i]) {
        Some(old) if old.get("status") == condition.get("status") => old
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(now)),
        _ => json!(now),
    };
    condition.insert("lastTransitionTime".into(), transition);
    match existing {
        Some(i) => conditions[i] = Value::Object(condition),
        None => conditions.push(Value::Object(condition)),
    }
    status.insert("conditions".into(), Value::Array(conditions));
    if let Some(phase) = phase {
        status.insert("phase".into(), json!(phase));
    }
    Some(Value::Object(status))
}

/// The status of a pod that fits nowhere: phase `Pending`,
/// `PodScheduled=False` with reason `Unschedulable` and `message`. `None`
/// when the pod already says exactly that.
fn unschedulable_status(pod: &Value, message: &str, now: &str) -> Option<Value> {
    let mut condition = Map::new();
    condition.insert("type".into(), json!("PodScheduled"));
    condition.insert("status".into(), json!("False"));
    condition.insert("reason".into(), json!("Unschedulable"));
    condition.insert("message".into(), json!(message));
    with_condition(pod, Some("Pending"), condition, now)
}

/// The status of a pod just bound: `PodScheduled=True`, and phase `Pending`
/// if it has no phase yet (the agent takes it from there). `None` when it
/// already says so.
fn scheduled_status(pod: &Value, now: &str) -> Option<Value> {
    let mut condition = Map::new();
    condition.insert("type".into(), json!("PodScheduled"));
    condition.insert("status".into(), json!("True"));
    let has_phase = pod.pointer("/status/phase").is_some_and(Value::is_string);
    with_condition(pod, (!has_phase).then_some("Pending"), condition, now)
}

#[cfg(test)]
mod tests;
