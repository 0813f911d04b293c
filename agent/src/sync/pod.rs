//! Pure helpers of the sync loop: a wire [`DesiredPod`] to the API objects a
//! runtime takes, and the statuses the loop makes up itself (a pod not
//! started yet, a pod with an invalid spec, a pod that was stopped).

use std::collections::BTreeMap;

use base64::Engine as _;
use bramble_common::api::{
    ConfigMap, ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodSpec, PodStatus, Secret,
};
use bramble_common::meta::{Condition, ObjectMeta};
use bramble_common::wire::{ConfigKind, DesiredPod, EmbeddedJsonError, NodeDesired};

use super::runtime::PodDesired;

/// The API pod (metadata and spec) and the configs of its namespace, as a
/// runtime takes them.
pub fn pod_desired(node: &NodeDesired, pod: &DesiredPod) -> Result<PodDesired, EmbeddedJsonError> {
    let spec = pod.spec()?;
    let metadata = ObjectMeta {
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()),
        resource_version: Some(pod.resource_version.to_string()),
        deletion_grace_period_seconds: pod.deletion_grace_seconds,
        labels: pod.labels.iter().cloned().collect(),
        annotations: pod.annotations.iter().cloned().collect(),
        ..ObjectMeta::default()
    };
    let mut config_maps = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    for config in node.configs.iter().filter(|c| c.namespace == pod.namespace) {
        let metadata = ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            resource_version: Some(config.resource_version.to_string()),
            ..ObjectMeta::default()
        };
        match config.kind {
            ConfigKind::ConfigMap => {
                let mut map = ConfigMap {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    metadata,
                    ..ConfigMap::default()
                };
                for (key, value) in &config.data {
                    match std::str::from_utf8(value) {
                        Ok(text) => map.data.insert(key.clone(), text.to_owned()),
                        Err(_) => map.binary_data.insert(key.clone(), b64.encode(value)),
                    };
                }
                config_maps.insert(config.name.clone(), map);
            }
            ConfigKind::Secret => {
                let secret = Secret {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    metadata,
                    data: config
                        .data
                        .iter()
                        .map(|(k, v)| (k.clone(), b64.encode(v)))
                        .collect(),
                    ..Secret::default()
                };
                secrets.insert(config.name.clone(), secret);
            }
        }
    }
    Ok(PodDesired {
        pod: Pod {
            api_version: "v1".into(),
            kind: "Pod".into(),
            metadata,
            spec,
            status: None,
        },
        config_maps,
        secrets,
    })
}

/// What makes the sync loop call `sync_pod` again: the pod's resource
/// version and those of the configs of its namespace.
pub fn pod_fingerprint(node: &NodeDesired, pod: &DesiredPod) -> Vec<(String, u64)> {
    let mut print = vec![(String::new(), pod.resource_version)];
    print.extend(
        node.configs
            .iter()
            .filter(|c| c.namespace == pod.namespace)
            .map(|c| (format!("{:?}/{}", c.kind, c.name), c.resource_version)),
    );
    print
}

fn condition(type_: &str, status: bool, time: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: None,
        message: None,
        last_heartbeat_time: None,
        last_transition_time: Some(time.to_owned()),
        last_probe_time: None,
    }
}

/// The status of a pod the runtime does not run yet: `Pending`, every
/// container waiting in `ContainerCreating` (or `reason`/`message` if given).
pub fn pending_status(
    spec: Option<&PodSpec>,
    since: &str,
    reason: &str,
    message: Option<String>,
) -> PodStatus {
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    PodStatus {
        phase: Some("Pending".into()),
        conditions: vec![
            condition("Initialized", false, since),
            condition("ContainersReady", false, since),
            condition("Ready", false, since),
        ],
        message: message.clone(),
        reason: None,
        start_time: Some(since.to_owned()),
        container_statuses: containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.to_owned()),
                        message: message.clone(),
                    }),
                    ..ContainerState::default()
                },
                image: c.image.clone(),
                started: Some(false),
                ..ContainerStatus::default()
            })
            .collect(),
        ..PodStatus::default()
    }
}

/// The status of a pod whose spec the agent cannot use: `Failed`, reason
/// `InvalidSpec`, the error as message.
pub fn invalid_status(message: String, since: &str) -> PodStatus {
    PodStatus {
        phase: Some("Failed".into()),
        reason: Some("InvalidSpec".into()),
        message: Some(message),
        start_time: Some(since.to_owned()),
        conditions: vec![condition("Ready", false, since)],
        ..PodStatus::default()
    }
}

/// Exit code reported for a container the agent stopped (128 + SIGTERM).
pub const KILLED_EXIT_CODE: i32 = 143;

/// The status of a pod after `kill_pod`: every container not already
/// terminated is terminated with reason `Killed` and exit code
/// [`KILLED_EXIT_CODE`]; the phase is `Succeeded` when every container
/// exited 0, `Failed` otherwise (as the kubelet does for deleted pods).
pub fn killed_status(last: Option<PodStatus>, spec: Option<&PodSpec>, now: &str) -> PodStatus {
    let mut status = last.unwrap_or_else(|| pending_status(spec, now, "ContainerCreating", None));
    for container in &mut status.container_statuses {
        if container.state.terminated.is_none() {
            let started_at = container
                .state
                .running
                .as_ref()
                .and_then(|r| r.started_at.clone());
            container.state = ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: KILLED_EXIT_CODE,
                    reason: Some("Killed".into()),
                    message: Some("stopped by bramble-agent: the pod is being deleted".into()),
                    started_at,
                    finished_at: Some(now.to_owned()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            };
        }
        container.ready = false;
        container.started = Some(false);
    }
    let all_succeeded = status.container_statuses.iter().all(|c| {
        c.state
            .terminated
            .as_ref()
            .is_some_and(|t| t.exit_code == 0)
    });
    status.phase = Some(if all_succeeded && !status.container_statuses.is_empty() {
        "Succeeded".into()
    } else {
        "Failed".into()
    });
    for c in &mut status.conditions {
        if (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status != "False" {
            c.status = "False".into();
            c.last_transition_time = Some(now.to_owned());
        }
    }
    status
}

/// Add what the node knows to a runtime's status: `hostIP`, `startTime`
/// when missing, and `PodScheduled` first among the conditions.
pub fn decorate(status: &mut PodStatus, host_ip: Option<&str>, accepted_at: &str) {
    if let Some(ip) = host_ip {
        status.host_ip = Some(ip.to_owned());
    }
    if status.start_time.is_none() {
        status.start_time = Some(accepted_at.to_owned());
    }
    if !status.conditions.iter().any(|c| c.type_ == "PodScheduled") {
        status
            .conditions
            .insert(0, condition("PodScheduled", true, accepted_at));
    }
}

/// `t` as RFC 3339 with second precision, as Kubernetes writes times.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .ok()
        .and_then(|ts| jiff::Timestamp::from_second(ts.as_second()).ok())
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_common::api::Container;
    use bramble_common::wire::ConfigData;

    fn spec() -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: "busybox".into(),
                ..Container::default()
            }],
            ..PodSpec::default()
        }
    }

    #[test]
    fn desired_pod_becomes_api_objects() {
        let pod = DesiredPod {
            uid: "u".into(),
            namespace: "default".into(),
            name: "web".into(),
            resource_version: 9,
            spec_json: serde_json::to_string(&spec()).expect("json"),
            labels: vec![("app".into(), "web".into())],
            ..DesiredPod::default()
        };
        let node = NodeDesired {
            pods: vec![pod.clone()],
            configs: vec![
                ConfigData {
                    kind: ConfigKind::ConfigMap,
                    namespace: "default".into(),
                    name: "cm".into(),
                    resource_version: 3,
                    data: vec![("a".into(), b"x".to_vec()), ("b".into(), vec![0xff])],
                },
                ConfigData {
                    kind: ConfigKind::Secret,
                    namespace: "other".into(),
                    name: "s".into(),
                    ..ConfigData::default()
                },
            ],
            ..NodeDesired::default()
        };
        let desired = pod_desired(&node, &pod).expect("valid");
        assert_eq!(desired.uid(), "u");
        assert_eq!(desired.pod.spec, spec());
        assert_eq!(desired.pod.metadata.resource_version.as_deref(), Some("9"));
        assert_eq!(
            desired.pod.metadata.labels.get("app").map(String::as_str),
            Some("web")
        );
        let cm = &desired.config_maps["cm"];
        assert_eq!(cm.data["a"], "x");
        assert_eq!(cm.binary_data["b"], "/w==");
        assert!(desired.secrets.is_empty(), "other namespace leaked");
        assert_eq!(pod_fingerprint(&node, &pod).len(), 2);
        let bad = DesiredPod {
            spec_json: "{\"containers\": 3}".into(),
            ..pod
        };
        assert!(pod_desired(&node, &bad).is_err());
    }

    #[test]
    fn killed_pod_is_terminal() {
        let now = "2025-01-01T00:00:00Z";
        let mut running = pending_status(Some(&spec()), now, "ContainerCreating", None);
        running.container_statuses[0].state = ContainerState {
            running: Some(Default::default()),
            ..ContainerState::default()
        };
        let killed = killed_status(Some(running), None, now);
        assert_eq!(killed.phase.as_deref(), Some("Failed"));
        let t = killed.container_statuses[0]
            .state
            .terminated
            .as_ref()
            .expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (143, Some("Killed")));
    }

    #[test]
    fn decorate_adds_node_facts() {
        let mut status = PodStatus::default();
        decorate(&mut status, Some("10.0.0.2"), "2025-01-01T00:00:00Z");
        assert_eq!(status.host_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(status.conditions[0].type_, "PodScheduled");
        decorate(&mut status, None, "later");
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.start_time.as_deref(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1500)),
            "1970-01-01T00:00:01Z"
        );
    }
}
