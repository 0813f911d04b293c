//! What each node should run: the pods bound to it, the ConfigMaps and
//! Secrets they use, and every other node's address and pod CIDR (for
//! routes). Pure: built from objects read from the store.

use std::collections::{BTreeMap, BTreeSet};

use bramble_common::api::{ConfigMap, Node, Pod, PodSpec, Secret};
use bramble_common::wire::{ConfigData, DesiredPod, NodeConfig, NodeDesired, PeerNode};

/// Cluster-wide settings sent to every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The cluster's name (MQTT topics).
    pub cluster_name: String,
    /// Cluster DNS address.
    pub cluster_dns: String,
    /// Service address range.
    pub service_cidr: String,
    /// Seconds between the agent's heartbeat reports.
    pub heartbeat_seconds: u32,
}

/// Everything desired states are built from.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Every node.
    pub nodes: Vec<Node>,
    /// Every pod bound to a node, by node name.
    pub pods_by_node: BTreeMap<String, Vec<Pod>>,
    /// ConfigMaps by (namespace, name).
    pub config_maps: BTreeMap<(String, String), ConfigMap>,
    /// Secrets by (namespace, name).
    pub secrets: BTreeMap<(String, String), Secret>,
}

impl ClusterView {
    /// Index objects read from the store.
    pub fn new(
        nodes: Vec<Node>,
        pods: Vec<Pod>,
        config_maps: Vec<ConfigMap>,
        secrets: Vec<Secret>,
    ) -> ClusterView {
        let mut pods_by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for pod in pods {
            if let Some(node) = pod.spec.node_name.clone().filter(|n| !n.is_empty()) {
                pods_by_node.entry(node).or_default().push(pod);
            }
        }
        let key = |m: &bramble_common::ObjectMeta| {
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        ClusterView {
            nodes,
            pods_by_node,
            config_maps: config_maps
                .into_iter()
                .map(|c| (key(&c.metadata), c))
                .collect(),
            secrets: secrets.into_iter().map(|s| (key(&s.metadata), s)).collect(),
        }
    }
}

/// The names of the ConfigMaps and Secrets a pod spec refers to.
fn referenced_configs(spec: &PodSpec) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for volume in &spec.volumes {
        if let Some(cm) = &volume.config_map {
            config_maps.insert(cm.name.clone());
        }
        if let Some(secret) = &volume.secret {
            secrets.insert(secret.secret_name.clone());
        }
    }
    for container in spec.init_containers.iter().chain(&spec.containers) {
        for env in &container.env {
            if let Some(source) = &env.value_from {
                if let Some(r) = &source.config_map_key_ref {
                    config_maps.insert(r.name.clone());
                }
                if let Some(r) = &source.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
    }
    (config_maps, secrets)
}

/// The desired state of `node` (generation 0: the caller sets it). Pods
/// that cannot be encoded are skipped and reported in the second value.
pub fn build(
    node: &Node,
    view: &ClusterView,
    settings: &ClusterSettings,
) -> (NodeDesired, Vec<String>) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let mut pods = Vec::new();
    let mut wanted_cm = BTreeSet::new();
    let mut wanted_secret = BTreeSet::new();
    for pod in view.pods_by_node.get(&name).into_iter().flatten() {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        match DesiredPod::from_pod(pod) {
            Ok(mut desired) => {
                // A pod's status writes change its resourceVersion but not
                // what the node must run: send its generation (bumped by spec
                // changes) instead, so status updates do not republish.
                desired.resource_version = pod.metadata.generation.unwrap_or(0).max(0) as u64;
                pods.push(desired);
            }
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        }
        let (cms, secrets) = referenced_configs(&pod.spec);
        wanted_cm.extend(cms.into_iter().map(|n| (namespace.clone(), n)));
        wanted_secret.extend(secrets.into_iter().map(|n| (namespace.clone(), n)));
    }
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut configs = Vec::new();
    for key in &wanted_cm {
        if let Some(cm) = view.config_maps.get(key) {
            match ConfigData::from_config_map(cm) {
                Ok(c) => configs.push(c),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    for key in &wanted_secret {
        if let Some(secret) = view.secrets.get(key) {
            match ConfigData::from_secret(secret) {
                Ok(c) => configs.push(c),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    let mut peers: Vec<PeerNode> = view
        .nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(name.as_str()))
        .filter_map(|n| PeerNode::from_node(n).ok())
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    let desired = NodeDesired {
        generation: 0,
        pods,
        node_config: NodeConfig {
            pod_cidr: node.spec.pod_cidr.clone().unwrap_or_default(),
            cluster_dns: settings.cluster_dns.clone(),
            service_cidr: settings.service_cidr.clone(),
            heartbeat_seconds: settings.heartbeat_seconds,
            cluster_name: settings.cluster_name.clone(),
        },
        configs,
        peers,
    };
    (desired, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, extra: serde_json::Value) -> Pod {
        let mut value = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "5", "generation": 2},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        });
        if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(value).expect("pod")
    }

    fn node(name: &str, cidr: &str, ip: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }))
        .expect("node")
    }

    #[test]
    fn a_node_gets_its_pods_their_configs_and_its_peers() {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg", "namespace": "default", "resourceVersion": "3"}, "data": {"a": "1"}})).expect("cm");
        let other_cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "unused", "namespace": "default", "resourceVersion": "4"}}),
        )
        .expect("cm");
        let view = ClusterView::new(
            vec![
                node("pi-1", "10.244.0.0/24", "192.168.1.10"),
                node("pi-2", "10.244.1.0/24", "192.168.1.11"),
            ],
            vec![
                pod(
                    "web",
                    "pi-1",
                    json!({"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}),
                ),
                pod("db", "pi-2", json!({})),
            ],
            vec![cm, other_cm],
            vec![],
        );
        let settings = ClusterSettings {
            cluster_name: "bramble".into(),
            cluster_dns: "10.96.0.10".into(),
            service_cidr: "10.96.0.0/16".into(),
            heartbeat_seconds: 10,
        };
        let (desired, problems) = build(&view.nodes[0], &view, &settings);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(desired.pods.len(), 1);
        assert_eq!(desired.pods[0].name, "web");
        assert_eq!(
            desired.pods[0].resource_version, 2,
            "the generation, not the resourceVersion"
        );
        assert_eq!(desired.configs.len(), 1);
        assert_eq!(desired.configs[0].name, "cfg");
        assert_eq!(desired.peers.len(), 1);
        assert_eq!(desired.peers[0].name, "pi-2");
        assert_eq!(desired.node_config.pod_cidr, "10.244.0.0/24");
    }
}
