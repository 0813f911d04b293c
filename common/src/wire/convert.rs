//! Between the API objects and the wire types: building wire types from
//! what the master stores, and reading the JSON that wire types carry.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::message::{
    ConfigData, ConfigKind, DesiredPod, NodeDesired, NodeFacts, PeerNode, PodStatusReport,
};
use crate::api::{ConfigMap, Node, NodeSystemInfo, Pod, PodSpec, PodStatus, Secret};
use crate::meta::ObjectMeta;

/// Seconds between SIGTERM and SIGKILL when neither the deletion nor the
/// pod spec says (Kubernetes' default).
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;

/// Why an API object could not be turned into a wire type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FromApiError {
    /// A field the wire type needs is not set; objects read back from the
    /// store always have it.
    #[error("{kind} {object}: {field} is not set; only objects read back from the store can be sent to a node")]
    MissingField {
        /// `pod`, `configmap`, `secret` or `node`.
        kind: &'static str,
        /// `namespace/name`, or the name alone.
        object: String,
        /// The field's path, e.g. `metadata.uid`.
        field: &'static str,
    },
    /// `metadata.resourceVersion` is not a decimal number.
    #[error("{kind} {object}: metadata.resourceVersion {value:?} is not a decimal number")]
    BadResourceVersion {
        /// `pod`, `configmap` or `secret`.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        /// The offending value.
        value: String,
    },
    /// A value that must be base64 is not.
    #[error("{kind} {object}: {field}[{key:?}] is not valid base64: {message}")]
    BadBase64 {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        /// `data` or `binaryData`.
        field: &'static str,
        /// The key whose value is wrong.
        key: String,
        /// The decoder's explanation.
        message: String,
    },
    /// The spec or status could not be written as JSON.
    #[error("pod {object}: {field} could not be written as json: {message}")]
    Json {
        /// `namespace/name`.
        object: String,
        /// `spec` or `status`.
        field: &'static str,
        /// serde_json's explanation.
        message: String,
    },
}

/// JSON carried by a wire type (`spec_json`, `status_json`) that does not
/// decode into the API type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {object}: {field} is not a valid {type_name} at `{path}`: {message}")]
pub struct EmbeddedJsonError {
    /// `namespace/name` of the pod.
    pub object: String,
    /// `spec_json` or `status_json`.
    pub field: &'static str,
    /// `PodSpec` or `PodStatus`.
    pub type_name: &'static str,
    /// Where in the JSON the problem is (`.` for the whole document).
    pub path: String,
    /// serde_json's explanation.
    pub message: String,
}

fn object_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Name, namespace and numeric resource version of a namespaced object.
struct Identity {
    namespace: String,
    name: String,
    resource_version: u64,
}

fn identity(kind: &'static str, metadata: &ObjectMeta) -> Result<Identity, FromApiError> {
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let name = metadata.name.clone().unwrap_or_default();
    let object = object_name(&namespace, &name);
    let missing = |field| FromApiError::MissingField {
        kind,
        object: object.clone(),
        field,
    };
    if name.is_empty() {
        return Err(missing("metadata.name"));
    }
    if namespace.is_empty() {
        return Err(missing("metadata.namespace"));
    }
    let value = metadata
        .resource_version
        .as_deref()
        .ok_or_else(|| missing("metadata.resourceVersion"))?;
    let resource_version = value
        .parse::<u64>()
        .map_err(|_| FromApiError::BadResourceVersion {
            kind,
            object: object.clone(),
            value: value.to_owned(),
        })?;
    Ok(Identity {
        namespace,
        name,
        resource_version,
    })
}

fn to_json(
    object: &str,
    field: &'static str,
    value: &impl Serialize,
) -> Result<String, FromApiError> {
    serde_json::to_string(value).map_err(|error| FromApiError::Json {
        object: object.to_owned(),
        field,
        message: error.to_string(),
    })
}

fn from_json<T: DeserializeOwned>(
    object: String,
    field: &'static str,
    type_name: &'static str,
    json: &str,
) -> Result<T, EmbeddedJsonError> {
    let deserializer = &mut serde_json::Deserializer::from_str(json);
    let value: T =
        serde_path_to_error::deserialize(deserializer).map_err(|error| EmbeddedJsonError {
            object: object.clone(),
            field,
            type_name,
            path: error.path().to_string(),
            message: error.inner().to_string(),
        })?;
    Ok(value)
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl DesiredPod {
    /// The wire form of a pod read from the store. Fails when the pod lacks
    /// its name, namespace, UID or a numeric resource version.
    pub fn from_pod(pod: &Pod) -> Result<DesiredPod, FromApiError> {
        let Identity {
            namespace,
            name,
            resource_version,
        } = identity("pod", &pod.metadata)?;
        let object = object_name(&namespace, &name);
        let uid = match pod.metadata.uid.as_deref() {
            Some(uid) if !uid.is_empty() => uid.to_owned(),
            _ => {
                return Err(FromApiError::MissingField {
                    kind: "pod",
                    object,
                    field: "metadata.uid",
                })
            }
        };
        let deletion_grace_seconds = pod.metadata.deletion_timestamp.as_ref().map(|_| {
            pod.metadata
                .deletion_grace_period_seconds
                .or(pod.spec.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS)
        });
        Ok(DesiredPod {
            uid,
            spec_json: to_json(&object, "spec", &pod.spec)?,
            namespace,
            name,
            resource_version,
            labels: pairs(&pod.metadata.labels),
            annotations: pairs(&pod.metadata.annotations),
            deletion_grace_seconds,
        })
    }

    /// The pod's spec, decoded from [`DesiredPod::spec_json`]. Fields this
    /// build does not know are ignored.
    pub fn spec(&self) -> Result<PodSpec, EmbeddedJsonError> {
        from_json(
            object_name(&self.namespace, &self.name),
            "spec_json",
            "PodSpec",
            &self.spec_json,
        )
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        lookup(&self.labels, key)
    }

    /// The value of annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        lookup(&self.annotations, key)
    }

    /// True when the pod is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.deletion_grace_seconds.is_some()
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl NodeDesired {
    /// The pod with `uid`.
    pub fn pod(&self, uid: &str) -> Option<&DesiredPod> {
        self.pods.iter().find(|pod| pod.uid == uid)
    }

    /// The spec of the pod at `index` in [`NodeDesired::pods`], or `None`
    /// when there is no such pod.
    pub fn pod_spec(&self, index: usize) -> Option<Result<PodSpec, EmbeddedJsonError>> {
        self.pods.get(index).map(DesiredPod::spec)
    }

    /// The ConfigMap or Secret `namespace/name`.
    pub fn config(&self, kind: ConfigKind, namespace: &str, name: &str) -> Option<&ConfigData> {
        self.configs
            .iter()
            .find(|c| c.kind == kind && c.namespace == namespace && c.name == name)
    }
}

fn decode_base64(
    kind: &'static str,
    object: &str,
    field: &'static str,
    key: &str,
    value: &str,
) -> Result<Vec<u8>, FromApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|error| FromApiError::BadBase64 {
            kind,
            object: object.to_owned(),
            field,
            key: key.to_owned(),
            message: error.to_string(),
        })
}

impl ConfigData {
    /// The wire form of a ConfigMap: `data` as UTF-8 bytes and `binaryData`
    /// decoded from base64.
    pub fn from_config_map(config_map: &ConfigMap) -> Result<ConfigData, FromApiError> {
        let id = identity("configmap", &config_map.metadata)?;
        let object = object_name(&id.namespace, &id.name);
        let mut data: BTreeMap<String, Vec<u8>> = config_map
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (key, value) in &config_map.binary_data {
            let bytes = decode_base64("configmap", &object, "binaryData", key, value)?;
            data.insert(key.clone(), bytes);
        }
        Ok(ConfigData {
            kind: ConfigKind::ConfigMap,
            namespace: id.namespace,
            name: id.name,
            resource_version: id.resource_version,
            data: data.into_iter().collect(),
        })
    }

    /// The wire form of a Secret: `data` decoded from base64, then
    /// `stringData` on top (as the API server merges them).
    pub fn from_secret(secret: &Secret) -> Result<ConfigData, FromApiError> {
        let id = identity("secret", &secret.metadata)?;
        let object = object_name(&id.namespace, &id.name);
        let mut data = BTreeMap::new();
        for (key, value) in &secret.data {
            let bytes = decode_base64("secret", &object, "data", key, value)?;
            data.insert(key.clone(), bytes);
        }
        for (key, value) in &secret.string_data {
            data.insert(key.clone(), value.clone().into_bytes());
        }
        Ok(ConfigData {
            kind: ConfigKind::Secret,
            namespace: id.namespace,
            name: id.name,
            resource_version: id.resource_version,
            data: data.into_iter().collect(),
        })
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

impl PeerNode {
    /// The routing facts of a node: its name, its first `InternalIP` (else
    /// its first address of any type) and its pod CIDR. Fails while the node
    /// has not reported an address or has no pod CIDR yet.
    pub fn from_node(node: &Node) -> Result<PeerNode, FromApiError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let missing = |field| FromApiError::MissingField {
            kind: "node",
            object: name.clone(),
            field,
        };
        if name.is_empty() {
            return Err(missing("metadata.name"));
        }
        let addresses = node
            .status
            .as_ref()
            .map(|status| status.addresses.as_slice())
            .unwrap_or_default();
        let address = addresses
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .or_else(|| addresses.first())
            .map(|a| a.address.clone())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| missing("status.addresses"))?;
        let pod_cidr = node
            .spec
            .pod_cidr
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| missing("spec.podCIDR"))?;
        Ok(PeerNode {
            name,
            address,
            pod_cidr,
        })
    }
}

impl PodStatusReport {
    /// The report of one pod's status.
    pub fn from_status(
        uid: &str,
        namespace: &str,
        name: &str,
        observed_resource_version: u64,
        status: &PodStatus,
    ) -> Result<PodStatusReport, FromApiError> {
        Ok(PodStatusReport {
            uid: uid.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            status_json: to_json(&object_name(namespace, name), "status", status)?,
            observed_resource_version,
        })
    }

    /// The pod's status, decoded from [`PodStatusReport::status_json`].
    /// Fields this build does not know are ignored.
    pub fn status(&self) -> Result<PodStatus, EmbeddedJsonError> {
        from_json(
            object_name(&self.namespace, &self.name),
            "status_json",
            "PodStatus",
            &self.status_json,
        )
    }
}

impl NodeFacts {
    /// The facts in the shape of a Node's `status.nodeInfo`.
    pub fn node_system_info(&self) -> NodeSystemInfo {
        NodeSystemInfo {
            machine_id: self.machine_id.clone(),
            boot_id: self.boot_id.clone(),
            kernel_version: self.kernel_version.clone(),
            os_image: self.os_image.clone(),
            operating_system: self.os.clone(),
            architecture: self.architecture.clone(),
            container_runtime_version: format!("bramble://{}", self.agent_version),
            kubelet_version: self.agent_version.clone(),
            kube_proxy_version: String::new(),
            system_uuid: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Container, NodeAddress, NodeSpec, NodeStatus};

    fn pod() -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("0d5c".into());
        pod.metadata.resource_version = Some("42".into());
        pod.metadata.labels.insert("tier".into(), "front".into());
        pod.metadata.labels.insert("app".into(), "web".into());
        pod.metadata
            .annotations
            .insert("note".into(), "hello".into());
        pod.spec.containers.push(Container {
            name: "nginx".into(),
            image: "nginx:1.27".into(),
            ..Container::default()
        });
        pod.spec.termination_grace_period_seconds = Some(10);
        pod
    }

    #[test]
    fn pod_round_trips_through_desired_pod() {
        let pod = pod();
        let desired = DesiredPod::from_pod(&pod).expect("converts");
        assert_eq!(desired.uid, "0d5c");
        assert_eq!(desired.resource_version, 42);
        assert_eq!(
            desired.labels,
            vec![
                ("app".into(), "web".into()),
                ("tier".into(), "front".into())
            ]
        );
        assert_eq!(desired.label("tier"), Some("front"));
        assert_eq!(desired.annotation("note"), Some("hello"));
        assert_eq!(desired.deletion_grace_seconds, None);
        assert_eq!(desired.spec().expect("spec"), pod.spec);
        let node = NodeDesired {
            pods: vec![desired.clone()],
            ..NodeDesired::default()
        };
        assert_eq!(node.pod("0d5c"), Some(&desired));
        assert_eq!(node.pod_spec(0).expect("exists").expect("spec"), pod.spec);
        assert!(node.pod_spec(1).is_none());
    }

    #[test]
    fn deletion_grace_comes_from_metadata_then_spec_then_default() {
        let mut pod = pod();
        pod.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(
            DesiredPod::from_pod(&pod)
                .expect("ok")
                .deletion_grace_seconds,
            Some(10)
        );
        pod.metadata.deletion_grace_period_seconds = Some(0);
        let desired = DesiredPod::from_pod(&pod).expect("ok");
        assert_eq!(desired.deletion_grace_seconds, Some(0));
        assert!(desired.is_deleting());
        pod.metadata.deletion_grace_period_seconds = None;
        pod.spec.termination_grace_period_seconds = None;
        assert_eq!(
            DesiredPod::from_pod(&pod)
                .expect("ok")
                .deletion_grace_seconds,
            Some(30)
        );
    }

    #[test]
    fn pods_not_from_the_store_are_refused() {
        let mut no_uid = pod();
        no_uid.metadata.uid = None;
        assert_eq!(
            DesiredPod::from_pod(&no_uid)
                .expect_err("no uid")
                .to_string(),
            "pod default/web: metadata.uid is not set; only objects read back from the store \
             can be sent to a node"
        );
        let mut bad_rv = pod();
        bad_rv.metadata.resource_version = Some("abc".into());
        assert!(matches!(
            DesiredPod::from_pod(&bad_rv),
            Err(FromApiError::BadResourceVersion { .. })
        ));
        let mut no_ns = pod();
        no_ns.metadata.namespace = None;
        assert!(matches!(
            DesiredPod::from_pod(&no_ns),
            Err(FromApiError::MissingField {
                field: "metadata.namespace",
                ..
            })
        ));
    }

    #[test]
    fn newer_spec_fields_are_ignored_and_bad_json_says_where() {
        let mut desired = DesiredPod::from_pod(&pod()).expect("ok");
        desired.spec_json =
            r#"{"containers":[{"name":"a","image":"b","fieldFromTheFuture":1}],"alsoNew":true}"#
                .into();
        assert_eq!(desired.spec().expect("lenient").containers[0].image, "b");
        desired.spec_json = r#"{"containers":[{"name":"a","image":7}]}"#.into();
        let error = desired.spec().expect_err("bad type");
        assert_eq!(error.path, "containers[0].image");
        assert!(error
            .to_string()
            .starts_with("pod default/web: spec_json is not a valid PodSpec at `containers[0].image`: invalid type"));
    }

    #[test]
    fn pod_status_round_trips() {
        let status = PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.244.1.7".into()),
            ..PodStatus::default()
        };
        let report =
            PodStatusReport::from_status("0d5c", "default", "web", 42, &status).expect("ok");
        assert_eq!(report.status().expect("decodes"), status);
        let broken = PodStatusReport {
            status_json: "{".into(),
            ..report
        };
        assert_eq!(broken.status().expect_err("eof").field, "status_json");
    }

    #[test]
    fn config_maps_and_secrets_become_raw_bytes() {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("settings".into());
        cm.metadata.namespace = Some("default".into());
        cm.metadata.resource_version = Some("7".into());
        cm.data.insert("b.conf".into(), "x=1".into());
        cm.binary_data.insert("a.bin".into(), "AAEC".into());
        let data = ConfigData::from_config_map(&cm).expect("ok");
        assert_eq!(data.kind, ConfigKind::ConfigMap);
        assert_eq!(data.resource_version, 7);
        assert_eq!(
            data.data,
            vec![
                ("a.bin".into(), vec![0, 1, 2]),
                ("b.conf".into(), b"x=1".to_vec())
            ]
        );
        assert_eq!(data.get("b.conf"), Some(&b"x=1"[..]));

        let mut secret = Secret {
            metadata: cm.metadata.clone(),
            ..Secret::default()
        };
        secret.data.insert("password".into(), "aHVudGVyMg==".into());
        secret.data.insert("user".into(), "YWRtaW4=".into());
        secret.string_data.insert("user".into(), "root".into());
        let data = ConfigData::from_secret(&secret).expect("ok");
        assert_eq!(data.kind, ConfigKind::Secret);
        assert_eq!(data.get("password"), Some(&b"hunter2"[..]));
        assert_eq!(data.get("user"), Some(&b"root"[..]));
        let node = NodeDesired {
            configs: vec![data.clone()],
            ..NodeDesired::default()
        };
        assert_eq!(
            node.config(ConfigKind::Secret, "default", "settings"),
            Some(&data)
        );
        assert_eq!(
            node.config(ConfigKind::ConfigMap, "default", "settings"),
            None
        );

        secret.data.insert("broken".into(), "not base64!".into());
        let error = ConfigData::from_secret(&secret).expect_err("bad base64");
        assert!(error
            .to_string()
            .starts_with("secret default/settings: data[\"broken\"] is not valid base64"));
    }

    #[test]
    fn peers_need_an_address_and_a_pod_cidr() {
        let mut node = Node::default();
        node.metadata.name = Some("pi-2".into());
        assert!(matches!(
            PeerNode::from_node(&node),
            Err(FromApiError::MissingField {
                field: "status.addresses",
                ..
            })
        ));
        node.status = Some(NodeStatus {
            addresses: vec![
                NodeAddress {
                    type_: "Hostname".into(),
                    address: "pi-2".into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.168.1.12".into(),
                },
            ],
            ..NodeStatus::default()
        });
        assert!(matches!(
            PeerNode::from_node(&node),
            Err(FromApiError::MissingField {
                field: "spec.podCIDR",
                ..
            })
        ));
        node.spec = NodeSpec {
            pod_cidr: Some("10.244.2.0/24".into()),
            ..NodeSpec::default()
        };
        assert_eq!(
            PeerNode::from_node(&node).expect("ok"),
            PeerNode {
                name: "pi-2".into(),
                address: "192.168.1.12".into(),
                pod_cidr: "10.244.2.0/24".into(),
            }
        );
    }

    #[test]
    fn facts_fill_node_info() {
        let facts = NodeFacts {
            architecture: "arm64".into(),
            agent_version: "0.1.0".into(),
            machine_id: "m".into(),
            ..NodeFacts::default()
        };
        let info = facts.node_system_info();
        assert_eq!(info.architecture, "arm64");
        assert_eq!(info.kubelet_version, "0.1.0");
        assert_eq!(info.container_runtime_version, "bramble://0.1.0");
        assert_eq!(info.machine_id, "m");
    }
}
