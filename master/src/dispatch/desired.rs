//! What each node should run: the pods bound to it, the ConfigMaps and
//! Secrets they use, and every other node's address and pod CIDR (for
//! routes). Pure: built from the in-memory [`ClusterIndex`].

use bramble_common::wire::{NodeConfig, NodeDesired};

use super::index::ClusterIndex;

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

/// The desired state of `node` (generation 0: the caller sets it). Pods
/// and configs that cannot be encoded are left out and reported in the
/// second value.
pub fn build(
    node: &str,
    index: &ClusterIndex,
    settings: &ClusterSettings,
) -> (NodeDesired, Vec<String>) {
    let mut problems = Vec::new();
    let of_node = index.pods_of(node);
    let mut pods = Vec::with_capacity(of_node.pods.len());
    for pod in of_node.pods {
        match pod {
            Ok(desired) => pods.push(desired.clone()),
            Err(problem) => problems.push(problem.clone()),
        }
    }
    let mut configs = Vec::with_capacity(of_node.configs.len());
    for config in of_node.configs {
        match config {
            Ok(data) => configs.push(data.clone()),
            Err(problem) => problems.push(problem.clone()),
        }
    }
    let desired = NodeDesired {
        generation: 0,
        pods,
        node_config: NodeConfig {
            pod_cidr: index.pod_cidr(node).to_string(),
            cluster_dns: settings.cluster_dns.clone(),
            service_cidr: settings.service_cidr.clone(),
            heartbeat_seconds: settings.heartbeat_seconds,
            cluster_name: settings.cluster_name.clone(),
        },
        configs,
        peers: index.peers_of(node),
    };
    (desired, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut value = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "5", "generation": 2},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        });
        if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        value
    }

    fn node(name: &str, cidr: &str, ip: &str) -> serde_json::Value {
        json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        })
    }

    #[test]
    fn a_node_gets_its_pods_their_configs_and_its_peers() {
        let cm = json!({"metadata": {"name": "cfg", "namespace": "default", "resourceVersion": "3"}, "data": {"a": "1"}});
        let other_cm =
            json!({"metadata": {"name": "unused", "namespace": "default", "resourceVersion": "4"}});
        let index = ClusterIndex::from_lists(
            &[
                node("pi-1", "10.244.0.0/24", "192.168.1.10"),
                node("pi-2", "10.244.1.0/24", "192.168.1.11"),
            ],
            &[
                pod(
                    "web",
                    "pi-1",
                    json!({"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}),
                ),
                pod("db", "pi-2", json!({})),
                pod("api", "pi-1", json!({})),
            ],
            &[cm, other_cm],
            &[],
        );
        let settings = ClusterSettings {
            cluster_name: "bramble".into(),
            cluster_dns: "10.96.0.10".into(),
            service_cidr: "10.96.0.0/16".into(),
            heartbeat_seconds: 10,
        };
        let (desired, problems) = build("pi-1", &index, &settings);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = desired.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["api", "web"], "sorted by namespace and name");
        assert_eq!(
            desired.pods[1].resource_version, 2,
            "the generation, not the resourceVersion"
        );
        assert_eq!(desired.configs.len(), 1);
        assert_eq!(desired.configs[0].name, "cfg");
        assert_eq!(desired.peers.len(), 1);
        assert_eq!(desired.peers[0].name, "pi-2");
        assert_eq!(desired.node_config.pod_cidr, "10.244.0.0/24");
    }
}
