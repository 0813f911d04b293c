//! Dispatch: each node's whole desired state goes out over MQTT (retained,
//! QoS 1, with a generation); the agents' reports and presence come back
//! and become Node and Pod status in the store.
//!
//! How it works:
//! - An in-memory [`index::ClusterIndex`] of what desired states are built
//!   from (nodes, bound pods in their wire form, ConfigMaps, Secrets) is
//!   listed once, then kept up to date by one store watch. Each change says
//!   which nodes it concerns; only those are rebuilt, after a short quiet
//!   time ([`DispatchOptions::debounce`]), and published only when the
//!   content changed. Pod status writes change nothing and cost nothing.
//! - A change of any node's address or pod CIDR changes every node's peer
//!   list: those are rebuilt at most once per
//!   [`DispatchOptions::peer_interval`] (1,000 nodes joining would
//!   otherwise republish 1,000 peer lists many times a second).
//! - The generation is the store revision at which the content last
//!   changed, so it only grows, across master restarts too.
//! - Publishing never blocks dispatch ([`publish::Publisher`]): a payload
//!   still waiting for the broker is replaced by the newer one. Nothing is
//!   cached per node but a hash: a republish (after a reconnect: an
//!   embedded broker keeps nothing across restarts; or to a node that comes
//!   online behind) builds the desired state again from the index.
//! - Reports go to the status writer ([`status`]), which writes only
//!   changes, several at once.
//!
//! Dispatch knows nothing about which broker it talks to.

pub mod desired;
pub mod index;
pub mod node_events;
pub mod publish;
pub mod reports;
pub mod services;
pub mod session;
pub mod status;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bramble_common::wire::{self, Message, NodeReport, Presence, Topic};
use bramble_common::Kind;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::controllers::node_lifecycle::NodeHealth;
use crate::store::{EventType, Store, StoreError, WatchEvent};
pub use desired::ClusterSettings;
use index::{ClusterIndex, Dirty};
pub use session::MqttEndpoint;
use status::StatusUpdate;

/// The kinds desired states and service shards are built from.
const WATCHED: [Kind; 6] = [
    Kind::Node,
    Kind::Pod,
    Kind::ConfigMap,
    Kind::Secret,
    Kind::Service,
    Kind::EndpointSlice,
];

/// How dispatch runs.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Settings sent to every node.
    pub settings: ClusterSettings,
    /// The broker.
    pub endpoint: MqttEndpoint,
    /// Quiet time after a store change before the desired states it
    /// concerns are rebuilt.
    pub debounce: Duration,
    /// Shortest time between two rebuilds of every node's peer list.
    pub peer_interval: Duration,
    /// Where the events the nodes report are recorded.
    pub events: crate::events::EventRecorder,
}

/// What dispatch remembers of one node.
#[derive(Debug, Default)]
struct NodeState {
    /// Hash of the content last published (generation excluded).
    published_hash: Option<u64>,
    /// Generation last published.
    generation: u64,
    /// Generation the agent last said it applied.
    applied_generation: u64,
    /// The node's InternalIP from its last report.
    internal_ip: Option<String>,
    /// The sequence number of the node's last batch of events.
    events_seq: Option<u64>,
}

struct Dispatcher {
    store: Store,
    settings: ClusterSettings,
    health: Arc<NodeHealth>,
    index: ClusterIndex,
    nodes: HashMap<String, NodeState>,
    /// (node, reason) pairs already logged, so bad input is logged once.
    warned: HashSet<(String, String)>,
    publisher: publish::Publisher,
    status: mpsc::Sender<StatusUpdate>,
    /// Nodes whose desired state must be rebuilt.
    dirty: BTreeSet<String>,
    /// Every node's peer list must be rebuilt.
    peers_dirty: bool,
    /// Records the events nodes report.
    events: crate::events::EventRecorder,
    /// The Services and EndpointSlices the service shards are built from.
    services: services::ServiceIndex,
    /// Service shards that must be rebuilt.
    dirty_shards: BTreeSet<u32>,
    /// Per shard: hash of the content last published and its revision.
    shards: HashMap<u32, (u64, u64)>,
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Lists of every watched kind and the revision each was read at.
struct Lists {
    nodes: (Vec<serde_json::Value>, u64),
    pods: (Vec<serde_json::Value>, u64),
    config_maps: (Vec<serde_json::Value>, u64),
    secrets: (Vec<serde_json::Value>, u64),
    services: (Vec<serde_json::Value>, u64),
    endpoint_slices: (Vec<serde_json::Value>, u64),
}

impl Lists {
    async fn read(store: &Store) -> Result<Lists, StoreError> {
        Ok(Lists {
            nodes: store.list(Kind::Node, None).await?,
            pods: store.list(Kind::Pod, None).await?,
            config_maps: store.list(Kind::ConfigMap, None).await?,
            secrets: store.list(Kind::Secret, None).await?,
            services: store.list(Kind::Service, None).await?,
            endpoint_slices: store.list(Kind::EndpointSlice, None).await?,
        })
    }

    /// The revision `kind`'s list was read at (events up to it are in it).
    fn revision(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Node => self.nodes.1,
            Kind::Pod => self.pods.1,
            Kind::ConfigMap => self.config_maps.1,
            Kind::Secret => self.secrets.1,
            Kind::Service => self.services.1,
            Kind::EndpointSlice => self.endpoint_slices.1,
            _ => 0,
        }
    }
}

impl Dispatcher {
    fn warn_once(&mut self, node: &str, reason: String) {
        if self.warned.insert((node.to_string(), reason.clone())) {
            tracing::warn!(%node, %reason, "dropped a message from the node (logged once per reason)");
        }
    }

    fn mark(&mut self, dirty: Dirty) {
        self.dirty.extend(dirty.nodes);
        self.peers_dirty |= dirty.peers;
    }

    /// Rebuild the index from fresh lists; every node is rebuilt.
    fn resync(&mut self, lists: &Lists) {
        self.index = ClusterIndex::from_lists(
            &lists.nodes.0,
            &lists.pods.0,
            &lists.config_maps.0,
            &lists.secrets.0,
        );
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !self.index.has_node(n))
            .cloned()
            .collect();
        for name in gone {
            self.node_removed(&name);
        }
        self.dirty
            .extend(self.index.node_names().map(str::to_string));
        self.peers_dirty = false;
        self.services =
            services::ServiceIndex::from_lists(&lists.services.0, &lists.endpoint_slices.0);
        self.dirty_shards.extend(0..wire::SERVICE_SHARDS);
    }

    /// A store event: update the index and note what it dirties.
    fn apply(&mut self, event: &WatchEvent) {
        let key = (event.key.namespace.clone(), event.key.name.clone());
        let object = match event.event_type {
            EventType::Deleted => None,
            EventType::Added | EventType::Modified => Some(event.object.as_ref()),
        };
        if matches!(event.key.kind, Kind::Service | Kind::EndpointSlice) {
            let shards = self.services.apply(event.key.kind, &key, object);
            self.dirty_shards.extend(shards);
            return;
        }
        let dirty = self.index.apply(event.key.kind, &key, object);
        if event.key.kind == Kind::Node && object.is_none() && self.nodes.contains_key(&key.1) {
            self.node_removed(&key.1);
        }
        self.mark(dirty);
    }

    fn node_removed(&mut self, name: &str) {
        self.nodes.remove(name);
        self.dirty.remove(name);
        self.health.forget(name);
        let _ = self
            .status
            .try_send(StatusUpdate::ForgetNode(name.to_string()));
        // An empty retained message clears the node's desired state.
        if let Ok(topic) = wire::desired_topic(&self.settings.cluster_name, name) {
            self.publisher.publish(topic, Vec::new());
        }
        tracing::info!(node = %name, "node removed: its desired state was cleared");
    }

    /// Rebuild the dirty service shards and publish those whose content
    /// changed (all of them, with `republish`).
    fn rebuild_shards(&mut self, republish: bool) {
        let shards: Vec<u32> = if republish {
            self.dirty_shards.clear();
            (0..wire::SERVICE_SHARDS).collect()
        } else {
            std::mem::take(&mut self.dirty_shards).into_iter().collect()
        };
        let revision = self.store.current_revision();
        for shard in shards {
            let mut built = self.services.build_shard(shard);
            // The content without its revision decides whether it changed.
            let content_hash = match wire::encode(&Message::Services(built.clone())) {
                Ok(bytes) => hash_of(&bytes),
                Err(_) => 0,
            };
            let (old_hash, old_revision) = self.shards.get(&shard).copied().unwrap_or((0, 0));
            let changed = old_revision == 0 || old_hash != content_hash;
            if !changed && !republish {
                continue;
            }
            built.revision = if changed {
                revision.max(old_revision + 1)
            } else {
                old_revision
            };
            let topic = match wire::services_topic(&self.settings.cluster_name, shard) {
                Ok(t) => t,
                Err(error) => {
                    tracing::error!(shard, %error, "cannot publish the service shard");
                    continue;
                }
            };
            let services = built.services.len();
            let shard_revision = built.revision;
            match wire::encode(&Message::Services(built)) {
                Ok(payload) => {
                    self.shards.insert(shard, (content_hash, shard_revision));
                    tracing::debug!(
                        shard,
                        services,
                        revision = shard_revision,
                        bytes = payload.len(),
                        "service shard published"
                    );
                    self.publisher.publish(topic, payload);
                }
                Err(error) => {
                    tracing::error!(shard, services, %error, "the service shard does not fit in one MQTT message; it was NOT sent (fewer endpoints per Service or fewer Services)");
                }
            }
        }
    }

    /// Rebuild the dirty nodes' desired states (every node's when the
    /// peers changed) and publish those whose content changed.
    fn rebuild_dirty(&mut self, peers: bool) {
        let names: Vec<String> = if peers {
            self.peers_dirty = false;
            self.dirty.clear();
            self.index.node_names().map(str::to_string).collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        let revision = self.store.current_revision();
        let started = std::time::Instant::now();
        let mut published = 0;
        for name in &names {
            if self.rebuild(name, revision, false) {
                published += 1;
            }
        }
        tracing::debug!(
            nodes = names.len(),
            published,
            peers,
            waiting = self.publisher.waiting(),
            took_ms = started.elapsed().as_millis() as u64,
            "desired states rebuilt"
        );
    }

    /// Build `name`'s desired state and publish it if its content changed
    /// (or always, with `republish`). Returns whether it was published.
    fn rebuild(&mut self, name: &str, revision: u64, republish: bool) -> bool {
        if !self.index.has_node(name) {
            return false;
        }
        let (desired, problems) = desired::build(name, &self.index, &self.settings);
        for problem in problems {
            self.warn_once(name, problem);
        }
        let mut message = Message::Desired(desired);
        let content_hash = match wire::encode(&message) {
            Ok(bytes) => hash_of(&bytes),
            Err(error) => {
                tracing::error!(node = %name, %error, "the node's desired state does not fit in one MQTT message; it was NOT sent (move pods to other nodes or shrink their ConfigMaps/Secrets)");
                return false;
            }
        };
        let state = self.nodes.entry(name.to_string()).or_default();
        let changed = state.published_hash != Some(content_hash);
        if !changed && !republish {
            return false;
        }
        let generation = if changed {
            revision.max(state.generation + 1)
        } else {
            state.generation
        };
        if let Message::Desired(desired) = &mut message {
            desired.generation = generation;
        }
        let topic = match wire::desired_topic(&self.settings.cluster_name, name) {
            Ok(t) => t,
            Err(error) => {
                tracing::error!(node = %name, %error, "cannot publish to this node");
                return false;
            }
        };
        match wire::encode(&message) {
            Ok(payload) => {
                state.published_hash = Some(content_hash);
                state.generation = generation;
                self.publisher.publish(topic, payload);
                true
            }
            Err(error) => {
                tracing::error!(node = %name, %error, "cannot encode the desired state");
                false
            }
        }
    }

    fn republish_all(&mut self) {
        self.rebuild_shards(true);
        let revision = self.store.current_revision();
        let names: Vec<String> = self.index.node_names().map(str::to_string).collect();
        for name in names {
            self.rebuild(&name, revision, true);
        }
    }

    async fn handle(&mut self, topic: &str, payload: &[u8]) {
        let Some(parsed) = wire::parse_topic(topic) else {
            self.warn_once("?", format!("message on an unexpected topic {topic:?}"));
            return;
        };
        if parsed.cluster() != self.settings.cluster_name {
            return;
        }
        let Some(node) = parsed.node().map(str::to_string) else {
            return;
        };
        if payload.is_empty() {
            // A cleared retained message.
            return;
        }
        let message = match wire::decode(payload) {
            Ok(m) => m,
            Err(error) => {
                self.warn_once(&node, format!("undecodable payload on {topic}: {error}"));
                return;
            }
        };
        match (parsed, message) {
            (Topic::Report { .. }, Message::Report(report)) => {
                self.handle_report(&node, report).await
            }
            (Topic::Presence { .. }, Message::Presence(presence)) => {
                self.handle_presence(&node, presence)
            }
            (Topic::Report { .. }, Message::Events(batch)) => self.handle_events(&node, batch),
            (_, other) => self.warn_once(&node, format!("a {} message on {topic}", other.kind())),
        }
    }

    fn handle_events(&mut self, node: &str, batch: wire::NodeEvents) {
        let state = self.nodes.entry(node.to_string()).or_default();
        if state.events_seq == Some(batch.seq) {
            // QoS 1 delivered the same batch again.
            return;
        }
        state.events_seq = Some(batch.seq);
        let now = jiff::Timestamp::now();
        let mut refused = Vec::new();
        for event in batch.events {
            let index = &self.index;
            match node_events::occurrence(node, event, now, |namespace, name, uid| {
                index.runs_pod(node, namespace, name, uid)
            }) {
                Ok(occurrence) => self.events.record(occurrence),
                Err(why) => refused.push(why),
            }
        }
        for why in refused {
            self.warn_once(node, why.to_string());
        }
    }

    fn handle_presence(&mut self, node: &str, presence: Presence) {
        match presence {
            Presence::Online {
                applied_generation,
                agent_version,
                ..
            } => {
                self.health.online(node);
                let state = self.nodes.entry(node.to_string()).or_default();
                state.applied_generation = applied_generation;
                tracing::info!(%node, %agent_version, applied_generation, "node online");
                if applied_generation < state.generation {
                    let revision = self.store.current_revision();
                    self.rebuild(node, revision, true);
                }
            }
            Presence::Offline => {
                tracing::info!(%node, "node offline (last will)");
                self.health.offline(node);
            }
        }
    }

    async fn handle_report(&mut self, node: &str, report: NodeReport) {
        self.health.report(node);
        let force = self.health.take_marked_not_ready(node);
        let internal_ip = report
            .node_status
            .addresses
            .iter()
            .find(|(type_, _)| type_ == "InternalIP")
            .map(|(_, address)| address.clone());
        let state = self.nodes.entry(node.to_string()).or_default();
        state.applied_generation = report.applied_generation;
        state.internal_ip = internal_ip.clone();
        let updates = [
            StatusUpdate::Node {
                node: node.to_string(),
                status: Box::new(report.node_status),
                force,
            },
            StatusUpdate::Pods {
                node: node.to_string(),
                host_ip: internal_ip,
                pods: report.pod_statuses,
                full: report.full,
            },
        ];
        for update in updates {
            // Waits when the writer is behind: MQTT then waits too.
            if self.status.send(update).await.is_err() {
                tracing::error!("the status writer stopped; reports are not written");
            }
        }
    }
}

/// Run dispatch until `shutdown`.
pub async fn run(
    store: Store,
    options: DispatchOptions,
    health: Arc<NodeHealth>,
    shutdown: impl Future<Output = ()>,
) {
    let cluster = options.settings.cluster_name.clone();
    let filters = match (
        wire::report_filter(&cluster),
        wire::presence_filter(&cluster),
    ) {
        (Ok(r), Ok(p)) => vec![r, p],
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "the cluster name cannot be used in MQTT topics; dispatch is not running");
            return;
        }
    };
    let (client, mut incoming) = session::start(&options.endpoint, filters);
    let (status_tx, status_rx) = mpsc::channel(status::QUEUE);
    let (problem_tx, mut problems) = mpsc::unbounded_channel();
    tokio::spawn(status::run(store.clone(), status_rx, problem_tx));
    let mut dispatcher = Dispatcher {
        store: store.clone(),
        settings: options.settings.clone(),
        health: health.clone(),
        index: ClusterIndex::default(),
        nodes: HashMap::new(),
        warned: HashSet::new(),
        publisher: publish::Publisher::start(client),
        status: status_tx,
        dirty: BTreeSet::new(),
        peers_dirty: false,
        events: options.events.clone(),
        services: services::ServiceIndex::default(),
        dirty_shards: BTreeSet::new(),
        shards: HashMap::new(),
    };
    tokio::pin!(shutdown);
    let mut first = true;
    let mut retry = Duration::from_millis(200);
    let mut last_peer_pass = Instant::now();
    loop {
        // Watch first, then list: nothing falls between them; events the
        // lists already hold are skipped by revision.
        let watch = store.watch_kinds(&WATCHED, 0);
        let lists = Lists::read(&store).await;
        let (mut watch, lists) = match (watch, lists) {
            (Ok(w), Ok(l)) => (w, l),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot read the store to compute desired states; retrying");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = &mut shutdown => return,
                }
                retry = (retry * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        retry = Duration::from_millis(200);
        if first {
            for node in &lists.nodes.0 {
                if let Some(name) = node["metadata"]["name"].as_str() {
                    health.expect(name);
                }
            }
            first = false;
        }
        dispatcher.resync(&lists);
        dispatcher.rebuild_dirty(false);
        dispatcher.rebuild_shards(false);
        let debounce = tokio::time::sleep(options.debounce);
        tokio::pin!(debounce);
        let peer_timer = tokio::time::sleep(options.peer_interval);
        tokio::pin!(peer_timer);
        loop {
            let was_dirty = !dispatcher.dirty.is_empty() || !dispatcher.dirty_shards.is_empty();
            let had_peers = dispatcher.peers_dirty;
            tokio::select! {
                event = watch.next() => match event {
                    Some(event) => {
                        if event.revision > lists.revision(event.key.kind) {
                            dispatcher.apply(&event);
                        }
                    }
                    None => break,
                },
                message = incoming.recv() => match message {
                    Some(session::Incoming::Connected) => dispatcher.republish_all(),
                    Some(session::Incoming::Message { topic, payload }) => dispatcher.handle(&topic, &payload).await,
                    None => return,
                },
                Some(problem) = problems.recv() => dispatcher.warn_once(&problem.node, problem.reason),
                () = &mut debounce, if was_dirty => {
                    dispatcher.rebuild_dirty(false);
                    dispatcher.rebuild_shards(false);
                }
                () = &mut peer_timer, if had_peers => {
                    last_peer_pass = Instant::now();
                    dispatcher.rebuild_dirty(true);
                }
                () = &mut shutdown => return,
            }
            if !was_dirty && (!dispatcher.dirty.is_empty() || !dispatcher.dirty_shards.is_empty()) {
                debounce.as_mut().reset(Instant::now() + options.debounce);
            }
            if !had_peers && dispatcher.peers_dirty {
                let at =
                    (Instant::now() + options.debounce).max(last_peer_pass + options.peer_interval);
                peer_timer.as_mut().reset(at);
            }
        }
        tracing::info!("dispatch's store watch ended; listing again");
    }
}
