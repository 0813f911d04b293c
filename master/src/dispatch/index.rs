//! What desired states are built from, kept in memory and updated one
//! store event at a time: each node's pod CIDR and peer entry, the pods
//! bound to each node (already in their wire form), and the ConfigMaps and
//! Secrets. Every update says which nodes' desired states it can change,
//! so dispatch rebuilds only those. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use bramble_common::api::{ConfigMap, Node, Pod, PodSpec, Secret};
use bramble_common::wire::{ConfigData, DesiredPod, PeerNode};
use bramble_common::Kind;
use serde_json::Value;

/// `(namespace, name)`.
pub type NameKey = (String, String);

/// Which desired states an update can change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// These nodes' own content (pods, configs, pod CIDR).
    pub nodes: BTreeSet<String>,
    /// Every node's peer list.
    pub peers: bool,
}

impl Dirty {
    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && !self.peers
    }

    /// Adds `other` to this.
    pub fn merge(&mut self, other: Dirty) {
        self.nodes.extend(other.nodes);
        self.peers |= other.peers;
    }
}

/// One node, as far as desired states go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeEntry {
    pod_cidr: String,
    /// `None` until the node has an address.
    peer: Option<PeerNode>,
}

/// One pod bound to a node.
#[derive(Debug, Clone)]
struct PodEntry {
    node: String,
    /// What changes the node's desired state (see [`pod_signature`]).
    signature: u64,
    /// The wire form, or why the pod cannot be sent.
    desired: Result<DesiredPod, String>,
    /// ConfigMaps and Secrets it uses, in its namespace.
    config_maps: BTreeSet<String>,
    secrets: BTreeSet<String>,
}

/// Everything desired states are built from.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    nodes: BTreeMap<String, NodeEntry>,
    /// Bound pods by `(namespace, name)`.
    pods: HashMap<NameKey, PodEntry>,
    /// Bound pods of each node, sorted.
    pods_by_node: HashMap<String, BTreeSet<NameKey>>,
    config_maps: HashMap<NameKey, Result<ConfigData, String>>,
    secrets: HashMap<NameKey, Result<ConfigData, String>>,
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The parts of a pod that its node's desired state depends on (its spec
/// goes with `metadata.generation`); status writes leave it alone.
pub fn pod_signature(object: &Value) -> u64 {
    let meta = &object["metadata"];
    hash_of(&(
        object["spec"]["nodeName"].as_str().unwrap_or(""),
        meta["generation"].as_i64().unwrap_or(0),
        meta["uid"].as_str().unwrap_or(""),
        meta["labels"].to_string(),
        meta["annotations"].to_string(),
        meta["deletionTimestamp"].as_str().unwrap_or(""),
        meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(-1),
    ))
}

/// The names of the ConfigMaps and Secrets a pod spec refers to (volumes,
/// env, and `imagePullSecrets`: those travel, like the others, only in the
/// desired state of the node that runs the pod).
fn referenced_configs(spec: &PodSpec) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets: BTreeSet<String> = spec
        .image_pull_secrets
        .iter()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    for volume in &spec.volumes {
        if let Some(cm) = &volume.config_map {
            config_maps.insert(cm.name.clone());
        }
        if let Some(secret) = &volume.secret {
            secrets.insert(secret.secret_name.clone());
        }
    }
    for container in spec.init_containers.iter().chain(&spec.containers) {
        for source in &container.env_from {
            if let Some(r) = &source.config_map_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &source.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
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

fn name_key(object: &Value) -> NameKey {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl ClusterIndex {
    /// An index of the objects listed from the store.
    pub fn from_lists(
        nodes: &[Value],
        pods: &[Value],
        config_maps: &[Value],
        secrets: &[Value],
    ) -> ClusterIndex {
        let mut index = ClusterIndex::default();
        for node in nodes {
            index.apply(Kind::Node, &name_key(node), Some(node));
        }
        for pod in pods {
            index.apply(Kind::Pod, &name_key(pod), Some(pod));
        }
        for config_map in config_maps {
            index.apply(Kind::ConfigMap, &name_key(config_map), Some(config_map));
        }
        for secret in secrets {
            index.apply(Kind::Secret, &name_key(secret), Some(secret));
        }
        index
    }

    /// Applies the new state of one object (`None`: deleted) and says which
    /// desired states it can change. Other kinds change nothing.
    pub fn apply(&mut self, kind: Kind, key: &NameKey, object: Option<&Value>) -> Dirty {
        match kind {
            Kind::Pod => self.apply_pod(key, object),
            Kind::Node => self.apply_node(&key.1, object),
            Kind::ConfigMap => self.apply_config(false, key, object),
            Kind::Secret => self.apply_config(true, key, object),
            _ => Dirty::default(),
        }
    }

    fn apply_pod(&mut self, key: &NameKey, object: Option<&Value>) -> Dirty {
        let node = object
            .and_then(|o| o["spec"]["nodeName"].as_str())
            .filter(|n| !n.is_empty());
        let signature = object.map(pod_signature);
        if let (Some(old), Some(signature)) = (self.pods.get(key), signature) {
            if old.signature == signature {
                return Dirty::default();
            }
        }
        let mut dirty = Dirty::default();
        if let Some(old) = self.pods.remove(key) {
            if let Some(set) = self.pods_by_node.get_mut(&old.node) {
                set.remove(key);
                if set.is_empty() {
                    self.pods_by_node.remove(&old.node);
                }
            }
            dirty.nodes.insert(old.node);
        }
        let (Some(object), Some(node), Some(signature)) = (object, node, signature) else {
            return dirty;
        };
        let entry = match serde_json::from_value::<Pod>(object.clone()) {
            Ok(pod) => {
                let (config_maps, secrets) = referenced_configs(&pod.spec);
                let desired = DesiredPod::from_pod(&pod)
                    .map(|mut desired| {
                        // A pod's status writes change its resourceVersion but
                        // not what the node must run: send its generation
                        // (bumped by spec changes) instead, so status updates
                        // do not republish.
                        desired.resource_version =
                            pod.metadata.generation.unwrap_or(0).max(0) as u64;
                        desired
                    })
                    .map_err(|e| e.to_string());
                PodEntry {
                    node: node.to_string(),
                    signature,
                    desired,
                    config_maps,
                    secrets,
                }
            }
            Err(e) => PodEntry {
                node: node.to_string(),
                signature,
                desired: Err(format!("pod {}/{} cannot be read: {e}", key.0, key.1)),
                config_maps: BTreeSet::new(),
                secrets: BTreeSet::new(),
            },
        };
        self.pods_by_node
            .entry(node.to_string())
            .or_default()
            .insert(key.clone());
        self.pods.insert(key.clone(), entry);
        dirty.nodes.insert(node.to_string());
        dirty
    }

    fn apply_node(&mut self, name: &str, object: Option<&Value>) -> Dirty {
        let Some(object) = object else {
            return match self.nodes.remove(name) {
                Some(old) => Dirty {
                    nodes: BTreeSet::new(),
                    peers: old.peer.is_some(),
                },
                None => Dirty::default(),
            };
        };
        let node: Option<Node> = serde_json::from_value(object.clone()).ok();
        let entry = NodeEntry {
            pod_cidr: node
                .as_ref()
                .and_then(|n| n.spec.pod_cidr.clone())
                .unwrap_or_default(),
            peer: node.as_ref().and_then(|n| PeerNode::from_node(n).ok()),
        };
        let old = self.nodes.insert(name.to_string(), entry.clone());
        let mut dirty = Dirty::default();
        if old.as_ref().map(|o| &o.pod_cidr) != Some(&entry.pod_cidr) {
            dirty.nodes.insert(name.to_string());
        }
        if old.as_ref().and_then(|o| o.peer.as_ref()) != entry.peer.as_ref() {
            dirty.peers = true;
        }
        dirty
    }

    fn apply_config(&mut self, secret: bool, key: &NameKey, object: Option<&Value>) -> Dirty {
        let data = object.map(|object| {
            if secret {
                serde_json::from_value::<Secret>(object.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|s| ConfigData::from_secret(&s).map_err(|e| e.to_string()))
            } else {
                serde_json::from_value::<ConfigMap>(object.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|c| ConfigData::from_config_map(&c).map_err(|e| e.to_string()))
            }
        });
        let table = if secret {
            &mut self.secrets
        } else {
            &mut self.config_maps
        };
        let old = match data {
            Some(data) => {
                if table.get(key) == Some(&data) {
                    return Dirty::default();
                }
                table.insert(key.clone(), data)
            }
            None => table.remove(key),
        };
        if old.is_none() && object.is_none() {
            return Dirty::default();
        }
        // Rare: look through the bound pods for those that use it.
        let mut dirty = Dirty::default();
        for ((namespace, _), pod) in &self.pods {
            let uses = if secret {
                &pod.secrets
            } else {
                &pod.config_maps
            };
            if *namespace == key.0 && uses.contains(&key.1) {
                dirty.nodes.insert(pod.node.clone());
            }
        }
        dirty
    }

    /// Every registered node's name.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Whether `node` is registered.
    pub fn has_node(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// `node`'s pod CIDR (`""` when it has none or is unknown).
    pub fn pod_cidr(&self, node: &str) -> &str {
        self.nodes
            .get(node)
            .map(|n| n.pod_cidr.as_str())
            .unwrap_or("")
    }

    /// Every node's peer entry but `node`'s own, sorted by name.
    pub fn peers_of(&self, node: &str) -> Vec<PeerNode> {
        self.nodes
            .iter()
            .filter(|(name, _)| name.as_str() != node)
            .filter_map(|(_, entry)| entry.peer.clone())
            .collect()
    }

    /// The wire form of each pod bound to `node`, sorted by namespace and
    /// name (or why it cannot be sent), with the ConfigMaps and Secrets
    /// they use.
    pub fn pods_of(&self, node: &str) -> NodePods<'_> {
        let mut pods = Vec::new();
        let mut config_maps = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for key in self.pods_by_node.get(node).into_iter().flatten() {
            if let Some(entry) = self.pods.get(key) {
                pods.push(&entry.desired);
                config_maps.extend(entry.config_maps.iter().map(|n| (key.0.clone(), n.clone())));
                secrets.extend(entry.secrets.iter().map(|n| (key.0.clone(), n.clone())));
            }
        }
        let configs = config_maps
            .iter()
            .filter_map(|k| self.config_maps.get(k))
            .chain(secrets.iter().filter_map(|k| self.secrets.get(k)))
            .collect();
        NodePods { pods, configs }
    }

    /// Whether pod `namespace/name` with UID `uid` is bound to `node`.
    pub fn runs_pod(&self, node: &str, namespace: &str, name: &str, uid: &str) -> bool {
        let key = (namespace.to_string(), name.to_string());
        self.pods_by_node
            .get(node)
            .is_some_and(|pods| pods.contains(&key))
            && self
                .pods
                .get(&key)
                .is_some_and(|entry| entry.desired.as_ref().is_ok_and(|pod| pod.uid == uid))
    }

    /// How many pods are bound, over all nodes.
    pub fn bound_pods(&self) -> usize {
        self.pods.len()
    }

    /// Forgets nodes' pods whose pod keys are not in `keep` (after a
    /// resync): returns the nodes that changed.
    pub fn retain_pods(&mut self, keep: &HashSet<NameKey>) -> Dirty {
        let gone: Vec<NameKey> = self
            .pods
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        let mut dirty = Dirty::default();
        for key in gone {
            dirty.merge(self.apply_pod(&key, None));
        }
        dirty
    }
}

/// What [`ClusterIndex::pods_of`] returns.
#[derive(Debug)]
pub struct NodePods<'a> {
    /// Each pod's wire form (or why it cannot be sent), sorted.
    pub pods: Vec<&'a Result<DesiredPod, String>>,
    /// The ConfigMaps then the Secrets they use (or why each cannot be
    /// sent), sorted by namespace and name.
    pub configs: Vec<&'a Result<ConfigData, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "5", "generation": 1},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}}]}]},
        })
    }

    fn node(name: &str, cidr: &str, ip: Option<&str>) -> Value {
        let mut node = json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr}});
        if let Some(ip) = ip {
            node["status"] = json!({"addresses": [{"type": "InternalIP", "address": ip}]});
        }
        node
    }

    fn key(name: &str) -> NameKey {
        ("default".to_string(), name.to_string())
    }

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn each_change_dirties_only_the_nodes_it_concerns() {
        let mut index = ClusterIndex::from_lists(
            &[
                node("pi-1", "10.244.0.0/24", Some("192.168.1.10")),
                node("pi-2", "10.244.1.0/24", None),
            ],
            &[pod("web", "pi-1"), pod("pending", "")],
            &[
                json!({"metadata": {"name": "cfg", "namespace": "default", "resourceVersion": "3"}, "data": {"a": "1"}}),
            ],
            &[],
        );
        assert_eq!(index.bound_pods(), 1, "unbound pods are not kept");
        assert_eq!(index.peers_of("pi-2").len(), 1);
        assert!(index.peers_of("pi-1").is_empty(), "pi-2 has no address yet");
        assert_eq!(index.pods_of("pi-1").configs.len(), 1);

        // A status write (same signature) changes nothing.
        let mut running = pod("web", "pi-1");
        running["status"] = json!({"phase": "Running"});
        running["metadata"]["resourceVersion"] = json!("9");
        assert!(index
            .apply(Kind::Pod, &key("web"), Some(&running))
            .is_empty());
        // Binding a pod dirties its node; moving one dirties both.
        let bound = index.apply(Kind::Pod, &key("pending"), Some(&pod("pending", "pi-2")));
        assert_eq!(bound.nodes, nodes(&["pi-2"]));
        let mut moved = pod("web", "pi-2");
        moved["metadata"]["uid"] = json!("other");
        let dirty = index.apply(Kind::Pod, &key("web"), Some(&moved));
        assert_eq!(dirty.nodes, nodes(&["pi-1", "pi-2"]));
        assert!(!dirty.peers);
        assert_eq!(index.pods_of("pi-2").pods.len(), 2);
        // The ConfigMap the pods use dirties their node; an unused one nothing.
        let changed = json!({"metadata": {"name": "cfg", "namespace": "default", "resourceVersion": "7"}, "data": {"a": "2"}});
        assert_eq!(
            index
                .apply(Kind::ConfigMap, &key("cfg"), Some(&changed))
                .nodes,
            nodes(&["pi-2"])
        );
        let unused = json!({"metadata": {"name": "other", "namespace": "default", "resourceVersion": "8"}, "data": {}});
        assert!(index
            .apply(Kind::ConfigMap, &key("other"), Some(&unused))
            .is_empty());
        // A node getting its address changes every peer list.
        let dirty = index.apply(
            Kind::Node,
            &(String::new(), "pi-2".into()),
            Some(&node("pi-2", "10.244.1.0/24", Some("192.168.1.11"))),
        );
        assert!(dirty.peers && dirty.nodes.is_empty(), "{dirty:?}");
        assert_eq!(index.peers_of("pi-1")[0].name, "pi-2");
        // The same node again (a status write): nothing.
        assert!(index
            .apply(
                Kind::Node,
                &(String::new(), "pi-2".into()),
                Some(&node("pi-2", "10.244.1.0/24", Some("192.168.1.11")))
            )
            .is_empty());
        // Deleting a pod dirties its node.
        assert_eq!(
            index.apply(Kind::Pod, &key("pending"), None).nodes,
            nodes(&["pi-2"])
        );
        // Other kinds do nothing.
        assert!(index
            .apply(Kind::Event, &key("x"), Some(&json!({})))
            .is_empty());
        // A resync that no longer lists `web` forgets it.
        let dirty = index.retain_pods(&HashSet::new());
        assert_eq!(dirty.nodes, nodes(&["pi-2"]));
        assert_eq!(index.bound_pods(), 0);
    }

    #[test]
    fn pull_secrets_go_only_to_the_node_of_the_pod() {
        let mut with_secret = pod("private", "pi-1");
        with_secret["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
        let regcred = json!({"metadata": {"name": "regcred", "namespace": "default", "resourceVersion": "4"},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}});
        let mut index = ClusterIndex::from_lists(
            &[
                node("pi-1", "10.244.0.0/24", None),
                node("pi-2", "10.244.1.0/24", None),
            ],
            &[with_secret, pod("web", "pi-2")],
            &[],
            std::slice::from_ref(&regcred),
        );
        let names = |n: &str| -> Vec<String> {
            index
                .pods_of(n)
                .configs
                .iter()
                .filter_map(|c| c.as_ref().ok().map(|c| c.name.clone()))
                .collect()
        };
        assert_eq!(names("pi-1"), vec!["regcred".to_string()]);
        assert!(names("pi-2").is_empty(), "pi-2 runs no pod that uses it");
        // A change of the secret dirties only pi-1.
        let mut changed = regcred;
        changed["metadata"]["resourceVersion"] = json!("6");
        assert_eq!(
            index
                .apply(Kind::Secret, &key("regcred"), Some(&changed))
                .nodes,
            nodes(&["pi-1"])
        );
    }
}
