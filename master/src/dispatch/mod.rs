//! Dispatch: each node's whole desired state goes out over MQTT (retained,
//! QoS 1, with a generation); the agents' reports and presence come back
//! and become Node and Pod status in the store.
//!
//! Level-triggered: on any relevant store change the desired state of every
//! node is recomputed (debounced) and published only where its content
//! changed. The generation is the store revision at which the content last
//! changed, so it only grows, across master restarts too. After a (re)connect
//! everything is published again: an embedded broker keeps nothing across
//! restarts. Dispatch knows nothing about which broker it talks to.

pub mod desired;
pub mod reports;
pub mod session;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bramble_common::api::{ConfigMap, Node, Pod, PodStatus, Secret};
use bramble_common::wire::{self, Message, NodeReport, Presence, Topic};
use bramble_common::Kind;
use rumqttc::{AsyncClient, QoS};
use serde_json::Value;

use crate::controllers::node_lifecycle::NodeHealth;
use crate::store::{ObjectKey, Precondition, Store, WatchEvent};
pub use desired::ClusterSettings;
pub use session::MqttEndpoint;

/// How dispatch runs.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Settings sent to every node.
    pub settings: ClusterSettings,
    /// The broker.
    pub endpoint: MqttEndpoint,
    /// Quiet time after a store change before desired states are recomputed.
    pub debounce: Duration,
}

#[derive(Debug, Default)]
struct NodeState {
    /// Hash of the content last published (generation excluded).
    published_hash: Option<u64>,
    /// Generation last published.
    generation: u64,
    /// The encoded message last published, for republishing.
    payload: Vec<u8>,
    /// Generation the agent last said it applied.
    applied_generation: u64,
    /// Node status last written, to skip unchanged reports.
    last_status: Option<Value>,
    /// Pod status JSON last written, by pod uid.
    pod_status: HashMap<String, String>,
    /// The node's InternalIP from its last report.
    internal_ip: Option<String>,
}

struct Dispatcher {
    store: Store,
    client: AsyncClient,
    settings: ClusterSettings,
    health: Arc<NodeHealth>,
    nodes: HashMap<String, NodeState>,
    /// (node, reason) pairs already logged, so bad input is logged once.
    warned: HashSet<(String, String)>,
    /// What makes each pod relevant to desired state, by store key.
    pod_signatures: HashMap<String, u64>,
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The parts of a pod that its node's desired state depends on.
fn pod_signature(object: &Value) -> u64 {
    let meta = &object["metadata"];
    hash_of(&(
        object["spec"]["nodeName"].as_str().unwrap_or(""),
        meta["generation"].as_i64().unwrap_or(0),
        meta["uid"].as_str().unwrap_or(""),
        meta["labels"].to_string(),
        meta["annotations"].to_string(),
        meta["deletionTimestamp"].as_str().unwrap_or(""),
    ))
}

fn decode_all<T: serde::de::DeserializeOwned>(values: Vec<Value>) -> Vec<T> {
    values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

impl Dispatcher {
    fn warn_once(&mut self, node: &str, reason: String) {
        if self.warned.insert((node.to_string(), reason.clone())) {
            tracing::warn!(%node, %reason, "dropped a message from the node (logged once per reason)");
        }
    }

    /// True when a store event can change some node's desired state.
    fn is_relevant(&mut self, event: &WatchEvent) -> bool {
        match event.key.kind {
            Kind::Pod => {
                let id = event.key.to_string();
                if matches!(event.event_type, crate::store::EventType::Deleted) {
                    return self.pod_signatures.remove(&id).is_some()
                        || event.object["spec"]["nodeName"]
                            .as_str()
                            .is_some_and(|n| !n.is_empty());
                }
                let signature = pod_signature(&event.object);
                let changed = self.pod_signatures.insert(id, signature) != Some(signature);
                changed
                    && event.object["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| !n.is_empty())
            }
            Kind::Node | Kind::ConfigMap | Kind::Secret => true,
            _ => false,
        }
    }

    async fn recompute(&mut self) {
        let lists = async {
            let (nodes, _) = self.store.list(Kind::Node, None).await?;
            let (pods, _) = self.store.list(Kind::Pod, None).await?;
            let (config_maps, _) = self.store.list(Kind::ConfigMap, None).await?;
            let (secrets, _) = self.store.list(Kind::Secret, None).await?;
            Ok::<_, crate::store::StoreError>((nodes, pods, config_maps, secrets))
        };
        let (nodes, pods, config_maps, secrets) = match lists.await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "cannot read the store to compute desired states; retrying on the next change");
                return;
            }
        };
        for pod in &pods {
            let key = format!(
                "{}/{}/{}",
                Kind::Pod.info().plural,
                pod["metadata"]["namespace"].as_str().unwrap_or(""),
                pod["metadata"]["name"].as_str().unwrap_or("")
            );
            self.pod_signatures.insert(key, pod_signature(pod));
        }
        let nodes: Vec<Node> = decode_all(nodes);
        let pods: Vec<Pod> = decode_all(pods);
        let config_maps: Vec<ConfigMap> = decode_all(config_maps);
        let secrets: Vec<Secret> = decode_all(secrets);
        let view = desired::ClusterView::new(nodes, pods, config_maps, secrets);
        let revision = self.store.current_revision();
        let mut seen = HashSet::new();
        for node in &view.nodes {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            seen.insert(name.clone());
            let (mut desired, problems) = desired::build(node, &view, &self.settings);
            for problem in problems {
                self.warn_once(&name, problem);
            }
            let content_hash = match wire::encode(&Message::Desired(desired.clone())) {
                Ok(bytes) => hash_of(&bytes),
                Err(error) => {
                    tracing::error!(node = %name, %error, "the node's desired state does not fit in one MQTT message; it was NOT sent (move pods to other nodes or shrink their ConfigMaps/Secrets)");
                    continue;
                }
            };
            let state = self.nodes.entry(name.clone()).or_default();
            if state.published_hash == Some(content_hash) {
                continue;
            }
            let generation = revision.max(state.generation + 1);
            desired.generation = generation;
            match wire::encode(&Message::Desired(desired)) {
                Ok(payload) => {
                    state.published_hash = Some(content_hash);
                    state.generation = generation;
                    state.payload = payload;
                    self.publish(&name).await;
                }
                Err(error) => {
                    tracing::error!(node = %name, %error, "cannot encode the desired state")
                }
            }
        }
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.nodes.remove(&name);
            self.health.forget(&name);
            // An empty retained message clears the node's desired state.
            if let Ok(topic) = wire::desired_topic(&self.settings.cluster_name, &name) {
                let _ = self
                    .client
                    .publish(topic, QoS::AtLeastOnce, true, Vec::new())
                    .await;
            }
            tracing::info!(node = %name, "node removed: its desired state was cleared");
        }
    }

    async fn publish(&self, node: &str) {
        let Some(state) = self.nodes.get(node) else {
            return;
        };
        if state.payload.is_empty() {
            return;
        }
        let topic = match wire::desired_topic(&self.settings.cluster_name, node) {
            Ok(t) => t,
            Err(error) => {
                tracing::error!(%node, %error, "cannot publish to this node");
                return;
            }
        };
        match self
            .client
            .publish(topic, QoS::AtLeastOnce, true, state.payload.clone())
            .await
        {
            Ok(()) => {
                tracing::debug!(%node, generation = state.generation, bytes = state.payload.len(), "published desired state")
            }
            Err(error) => {
                tracing::warn!(%node, %error, "cannot publish desired state; it is sent again on reconnect")
            }
        }
    }

    async fn republish_all(&self) {
        for node in self.nodes.keys() {
            self.publish(node).await;
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
                self.handle_presence(&node, presence).await
            }
            (_, other) => self.warn_once(&node, format!("a {} message on {topic}", other.kind())),
        }
    }

    async fn handle_presence(&mut self, node: &str, presence: Presence) {
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
                    self.publish(node).await;
                }
            }
            Presence::Offline => {
                tracing::info!(%node, "node offline (last will)");
                self.health.offline(node);
            }
        }
    }

    async fn handle_report(&mut self, node: &str, report: NodeReport) {
        let node_key = ObjectKey {
            kind: Kind::Node,
            namespace: String::new(),
            name: node.to_string(),
        };
        self.health.report(node);
        let force = self.health.take_marked_not_ready(node);
        let status = reports::node_status(node, &report.node_status);
        let status_json = serde_json::to_value(&status).unwrap_or_default();
        let internal_ip = status
            .addresses
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone());
        let state = self.nodes.entry(node.to_string()).or_default();
        state.applied_generation = report.applied_generation;
        state.internal_ip = internal_ip.clone();
        if force || state.last_status.as_ref() != Some(&status_json) {
            match self
                .write_node(&node_key, &report, status_json.clone())
                .await
            {
                Ok(()) => {
                    if let Some(state) = self.nodes.get_mut(node) {
                        state.last_status = Some(status_json);
                    }
                }
                Err(reason) => self.warn_once(node, reason),
            }
        }
        for pod_status in &report.pod_statuses {
            let cached = self
                .nodes
                .get(node)
                .and_then(|s| s.pod_status.get(&pod_status.uid))
                .is_some_and(|json| *json == pod_status.status_json);
            if cached {
                continue;
            }
            let reported = match pod_status.status() {
                Ok(s) => s,
                Err(error) => {
                    self.warn_once(node, error.to_string());
                    continue;
                }
            };
            let key = ObjectKey {
                kind: Kind::Pod,
                namespace: pod_status.namespace.clone(),
                name: pod_status.name.clone(),
            };
            let stored = match self.store.get(&key).await {
                Ok(Some(pod)) => pod,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, pod = %key, "cannot read pod");
                    continue;
                }
            };
            if stored["metadata"]["uid"].as_str() != Some(pod_status.uid.as_str())
                || stored["spec"]["nodeName"].as_str() != Some(node)
            {
                continue;
            }
            let stored_status: Option<PodStatus> =
                serde_json::from_value(stored["status"].clone()).ok();
            let merged =
                reports::merge_pod_status(stored_status.as_ref(), reported, internal_ip.as_deref());
            let merged_json = serde_json::to_value(&merged).unwrap_or_default();
            if merged_json != stored["status"] {
                let precondition = Precondition {
                    uid: Some(pod_status.uid.clone()),
                    ..Precondition::default()
                };
                if let Err(error) = self
                    .store
                    .update_status(&key, merged_json, precondition)
                    .await
                {
                    tracing::warn!(%error, pod = %key, "cannot write pod status");
                    continue;
                }
            }
            if let Some(state) = self.nodes.get_mut(node) {
                state
                    .pod_status
                    .insert(pod_status.uid.clone(), pod_status.status_json.clone());
            }
        }
    }

    async fn write_node(
        &self,
        key: &ObjectKey,
        report: &NodeReport,
        status: Value,
    ) -> Result<(), String> {
        let node = match self.store.get(key).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                return Err(
                    "a report from a node that is not registered (bramble node add NAME)".into(),
                )
            }
            Err(e) => return Err(format!("cannot read the node: {e}")),
        };
        let labels = reports::node_labels(&key.name, &report.node_status);
        let missing = labels
            .iter()
            .any(|(k, v)| node["metadata"]["labels"][k].as_str() != Some(v.as_str()));
        if missing {
            let mut updated = node.clone();
            for (k, v) in &labels {
                updated["metadata"]["labels"][k] = Value::String(v.clone());
            }
            self.store
                .update(key, updated, Precondition::default())
                .await
                .map_err(|e| format!("cannot write the node's labels: {e}"))?;
        }
        if node["status"] != status {
            self.store
                .update_status(key, status, Precondition::default())
                .await
                .map_err(|e| format!("cannot write the node's status: {e}"))?;
        }
        Ok(())
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
    let mut dispatcher = Dispatcher {
        store: store.clone(),
        client,
        settings: options.settings.clone(),
        health: health.clone(),
        nodes: HashMap::new(),
        warned: HashSet::new(),
        pod_signatures: HashMap::new(),
    };
    let mut watch = store.watch(None, None, store.current_revision());
    if let Ok((nodes, _)) = store.list(Kind::Node, None).await {
        for node in nodes {
            if let Some(name) = node["metadata"]["name"].as_str() {
                health.expect(name);
            }
        }
    }
    dispatcher.recompute().await;
    tokio::pin!(shutdown);
    let mut dirty = false;
    let debounce = tokio::time::sleep(options.debounce);
    tokio::pin!(debounce);
    loop {
        tokio::select! {
            event = async {
                match &mut watch {
                    Ok(w) => w.next().await,
                    Err(_) => std::future::pending().await,
                }
            } => match event {
                Some(event) => {
                    if dispatcher.is_relevant(&event) && !dirty {
                        dirty = true;
                        debounce.as_mut().reset(tokio::time::Instant::now() + options.debounce);
                    }
                }
                None => {
                    watch = store.watch(None, None, store.current_revision());
                    dirty = true;
                    debounce.as_mut().reset(tokio::time::Instant::now() + options.debounce);
                }
            },
            message = incoming.recv() => match message {
                Some(session::Incoming::Connected) => dispatcher.republish_all().await,
                Some(session::Incoming::Message { topic, payload }) => dispatcher.handle(&topic, &payload).await,
                None => return,
            },
            () = &mut debounce, if dirty => {
                dirty = false;
                dispatcher.recompute().await;
            }
            () = &mut shutdown => return,
        }
    }
}
