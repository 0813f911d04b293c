//! The messages of protocol v1, exactly as they travel inside the envelope.
//!
//! These types are encoded with postcard, which is not self-describing: the
//! bytes carry no field names and no lengths for structs, only values in
//! declaration order. Hence the rules for every type in this file:
//!
//! - never reorder, remove, rename-the-type-of or retype a field;
//! - never add a field to an existing struct (that is a new protocol version);
//! - add enum variants only at the end;
//! - no `#[serde(skip_serializing_if)]`, `flatten`, `untagged`, `default` or
//!   any other serde attribute: plain structs, enums, `Option`, `Vec`,
//!   `String` and integers only.
//!
//! The golden samples in `common/tests/golden/` fail the moment one of these
//! rules is broken. Things that evolve faster than the wire format (the pod
//! spec, the pod status) travel as JSON strings inside these types, so old
//! agents can read new fields they simply ignore.
//!
//! The enums are deliberately *not* `#[non_exhaustive]`: master and agent live
//! in this workspace, and an exhaustive `match` makes the compiler point at
//! every place that must handle a new variant.

use serde::{Deserialize, Serialize};

/// One message of protocol v1. Each MQTT payload carries exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The whole desired state of one node (master -> agent, retained).
    Desired(NodeDesired),
    /// What one node runs and how it is (agent -> master).
    Report(NodeReport),
    /// Whether a node's agent is connected (agent, and its last will).
    Presence(Presence),
    /// A request to an agent, such as streaming logs (master -> agent).
    RpcRequest(RpcRequest),
    /// One part of the answer to an [`RpcRequest`] (agent -> master).
    RpcResponse(RpcResponse),
    /// What happened on a node, for `kubectl get events` (agent -> master,
    /// on the node's report topic).
    Events(NodeEvents),
    /// One shard of the cluster's Services and their endpoints (master ->
    /// every agent, retained on `bramble/{cluster}/services/{shard}`).
    Services(super::services::ServiceShard),
}

impl Message {
    /// A short lowercase name of the message's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Desired(_) => "desired",
            Message::Report(_) => "report",
            Message::Presence(_) => "presence",
            Message::RpcRequest(_) => "rpc request",
            Message::RpcResponse(_) => "rpc response",
            Message::Events(_) => "events",
            Message::Services(_) => "services",
        }
    }
}

/// The whole desired state of one node: not a diff. Published retained, so an
/// agent that reconnects gets the latest at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDesired {
    /// Bumped by the master every time anything below changes; the agent
    /// reports the last generation it applied.
    pub generation: u64,
    /// Every pod bound to the node, including those being deleted.
    pub pods: Vec<DesiredPod>,
    /// Node-wide settings assigned by the master.
    pub node_config: NodeConfig,
    /// The ConfigMaps and Secrets that the pods reference.
    pub configs: Vec<ConfigData>,
    /// Every other node's name, address and pod CIDR, for routes.
    pub peers: Vec<PeerNode>,
}

/// One pod bound to the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPod {
    /// `metadata.uid`: the pod's identity on the node.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.resourceVersion`, as a number.
    pub resource_version: u64,
    /// The `PodSpec` as JSON. The pod spec evolves faster than the wire
    /// format, and JSON keeps old agents able to read new fields they ignore.
    /// Read it with [`DesiredPod::spec`].
    pub spec_json: String,
    /// `metadata.labels`, sorted by key.
    pub labels: Vec<(String, String)>,
    /// `metadata.annotations`, sorted by key.
    pub annotations: Vec<(String, String)>,
    /// `Some(grace period in seconds)` when the pod is being deleted.
    pub deletion_grace_seconds: Option<i64>,
}

/// Node-wide settings assigned by the master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The node's pod CIDR, e.g. `10.244.3.0/24`.
    pub pod_cidr: String,
    /// The cluster DNS server address, e.g. `10.96.0.10`.
    pub cluster_dns: String,
    /// The service CIDR, e.g. `10.96.0.0/16`.
    pub service_cidr: String,
    /// Seconds between two heartbeat reports when nothing changes.
    pub heartbeat_seconds: u32,
    /// The cluster's name, as in the topics.
    pub cluster_name: String,
}

/// Which kind of object a [`ConfigData`] comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfigKind {
    /// A ConfigMap.
    #[default]
    ConfigMap,
    /// A Secret.
    Secret,
}

/// The content of a ConfigMap or Secret referenced by a pod, with every value
/// decoded to raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigData {
    /// ConfigMap or Secret.
    pub kind: ConfigKind,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.resourceVersion`, as a number.
    pub resource_version: u64,
    /// Every key with its raw value, sorted by key.
    pub data: Vec<(String, Vec<u8>)>,
}

/// Another node of the cluster, for pod routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// The node's name.
    pub name: String,
    /// The address other nodes reach it at.
    pub address: String,
    /// The node's pod CIDR.
    pub pod_cidr: String,
}

/// What a node runs and how it is, sent on change and as a slow heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Increases with every report the agent sends (resets when the agent restarts).
    pub seq: u64,
    /// The last [`NodeDesired::generation`] the agent applied.
    pub applied_generation: u64,
    /// The node itself.
    pub node_status: NodeStatusReport,
    /// The pods: all of them when `full`, only the changed ones otherwise.
    pub pod_statuses: Vec<PodStatusReport>,
    /// True when `pod_statuses` lists every pod of the node.
    pub full: bool,
}

/// The observed state of the node itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatusReport {
    /// Facts about the device and its software.
    pub facts: NodeFacts,
    /// `Ready`, `MemoryPressure`, `DiskPressure`, `PIDPressure`, ...
    pub conditions: Vec<ConditionReport>,
    /// `(type, address)` pairs, type being `InternalIP`, `ExternalIP` or `Hostname`.
    pub addresses: Vec<(String, String)>,
}

/// Facts about the device and its software.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// `arm64`, `arm` or `amd64`.
    pub architecture: String,
    /// `v6`, `v7`, `v8` or empty.
    pub arch_variant: String,
    /// `linux`.
    pub os: String,
    /// `PRETTY_NAME` of os-release.
    pub os_image: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// Number of CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Version of `bramble-agent`.
    pub agent_version: String,
    /// 1 or 2.
    pub cgroup_version: u8,
    /// The cgroup controllers available to the agent (`cpu`, `memory`, `pids`, ...).
    pub cgroup_controllers: Vec<String>,
    /// The device's hostname.
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: changes on every boot.
    pub boot_id: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// The most pods the agent accepts.
    pub max_pods: u32,
}

/// One node condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionReport {
    /// `Ready`, `MemoryPressure`, ...
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One-word reason.
    pub reason: String,
    /// Human-readable message (for a broken node: the exact fix).
    pub message: String,
    /// Unix time, in seconds, of the last change of `status`.
    pub last_transition_unix: i64,
}

/// The observed state of one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatusReport {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The `PodStatus` as JSON, for the same reason as [`DesiredPod::spec_json`].
    /// Read it with [`PodStatusReport::status`].
    pub status_json: String,
    /// The pod's resource version the agent last acted on.
    pub observed_resource_version: u64,
}

/// Whether a node's agent is connected. Retained; the broker publishes
/// `Offline` as the agent's last will when the device vanishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    /// The agent is connected.
    Online {
        /// Version of `bramble-agent`.
        agent_version: String,
        /// The device's boot ID: a new one means the node rebooted.
        boot_id: String,
        /// The last desired generation the agent applied; the master
        /// republishes the desired state when it is older.
        applied_generation: u64,
    },
    /// The agent disconnected or vanished.
    Offline,
}

/// A request from the master to one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Unique ID of the request, repeated in every response.
    pub id: String,
    /// The topic the agent publishes its responses on (see
    /// [`crate::wire::rpc_response_topic`]).
    pub reply_topic: String,
    /// What is asked.
    pub call: RpcCall,
}

/// What an [`RpcRequest`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcCall {
    /// The logs of one container.
    Logs {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The container's name.
        container: String,
        /// Only the last lines.
        tail_lines: Option<u64>,
        /// The logs of the previous run of the container.
        previous: bool,
        /// Keep streaming new lines.
        follow: bool,
        /// Only the last bytes.
        since_bytes: Option<u64>,
    },
    /// Stop answering request `id` (the master's client went away, e.g. a
    /// `bramble logs -f` that was interrupted). Unknown IDs are ignored.
    Cancel {
        /// The ID of the request to stop.
        id: String,
    },
    /// Open or drive an interactive stream session (exec); see
    /// [`super::stream`].
    Stream(super::stream::StreamCall),
}

/// One part of the answer to an [`RpcRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcResponse {
    /// The request's ID.
    pub id: String,
    /// 0, 1, 2, ... so the master can reorder and notice gaps.
    pub seq: u32,
    /// True on the last part of the answer.
    pub last: bool,
    /// The content of this part.
    pub body: RpcBody,
}

/// The content of one [`RpcResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcBody {
    /// A chunk of log output; keep it at most [`crate::wire::MAX_RPC_CHUNK_BYTES`].
    LogChunk {
        /// Log records as the agent stores them (CRI format, one per line:
        /// `TIMESTAMP STREAM F|P MESSAGE`); a chunk may end mid-record, the
        /// next one continues it. The master turns them into plain text.
        data: Vec<u8>,
    },
    /// The request failed.
    Error {
        /// What went wrong, lowercase, saying what to do.
        message: String,
    },
    /// A part of an interactive stream session; see [`super::stream`].
    Stream(super::stream::StreamBody),
}

/// A batch of what happened on one node: the kubelet's Events, already
/// deduplicated and rate-limited by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvents {
    /// Grows by one per batch the agent sends; a batch repeated by QoS 1
    /// redelivery carries the same number and is recorded once.
    pub seq: u64,
    /// The events, oldest first.
    pub events: Vec<NodeEvent>,
}

/// One event, seen `count` times on the node since the last batch.
///
/// Times are ages in seconds at the moment the batch was sent, not
/// timestamps: a device without a real-time clock boots with a wrong clock,
/// and the master dates each event by its own clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// `Pod` or `Node`.
    pub kind: String,
    /// The pod's namespace (empty for the node).
    pub namespace: String,
    /// The pod's or the node's name.
    pub name: String,
    /// The pod's UID (the node's name for the node, as the kubelet does).
    pub uid: String,
    /// The part of the object, `spec.containers{web}` (may be empty).
    pub field_path: String,
    /// A `Warning` rather than a `Normal` event.
    pub warning: bool,
    /// One word, UpperCamelCase (`Started`, `BackOff`).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
    /// Occurrences in this batch (at least 1).
    pub count: u32,
    /// Seconds since the first of them.
    pub first_seconds_ago: u32,
    /// Seconds since the last of them.
    pub last_seconds_ago: u32,
}
