//! Filters: can this pod run on this node at all?
//!
//! The filters run in Kubernetes' order and a node's check stops at the first
//! filter that fails (as Kubernetes' framework does), so each node contributes
//! the reasons of one filter to the explanation. Only the resource filter can
//! give several reasons at once (`Insufficient cpu` and `Insufficient memory`).
//!
//! 1. readiness: a `Ready=True` condition (Kubernetes expresses this with the
//!    `node.kubernetes.io/not-ready` taint; a pod tolerating that taint with
//!    effect `NoSchedule` passes, as DaemonSet pods do there),
//! 2. `NodeUnschedulable`: `spec.unschedulable` (cordon), unless the pod
//!    tolerates `node.kubernetes.io/unschedulable:NoSchedule`,
//! 3. `TaintToleration`: the first `NoSchedule`/`NoExecute` taint the pod does
//!    not tolerate,
//! 4. `NodeAffinity`: `spec.nodeSelector` against the node's labels,
//! 5. `NodeResourcesFit`: pod count, cpu and memory against allocatable minus
//!    what the pods already on the node request.

use std::collections::BTreeMap;

use bramble_common::api::{Node, Pod, Taint, Toleration};

use super::resources::PodRequests;
use super::snapshot::NodeInfo;

/// Reason of a node without a `Ready=True` condition.
pub const REASON_NOT_READY: &str = "node(s) were not ready";
/// Reason of a cordoned node (`spec.unschedulable`).
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// Reason of a node whose labels do not satisfy the pod's `nodeSelector`.
pub const REASON_NODE_SELECTOR: &str = "node(s) didn't match Pod's node affinity/selector";
/// Reason of a node without enough free cpu.
pub const REASON_INSUFFICIENT_CPU: &str = "Insufficient cpu";
/// Reason of a node without enough free memory.
pub const REASON_INSUFFICIENT_MEMORY: &str = "Insufficient memory";
/// Reason of a node already running its allocatable number of pods.
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// Taint key Kubernetes puts on nodes that are not ready.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint key Kubernetes puts on cordoned nodes.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Label holding the node's CPU architecture (`arm64`, `arm`, `amd64`).
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// Label holding the node's operating system (`linux`).
pub const LABEL_OS: &str = "kubernetes.io/os";

/// The reason Kubernetes gives for an untolerated taint.
pub fn untolerated_taint_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or("")
    )
}

/// Why `pod` (whose effective requests are `request`) cannot run on `node`:
/// empty when it can.
pub(crate) fn failure_reasons(pod: &Pod, request: &PodRequests, node: &NodeInfo) -> Vec<String> {
    let tolerations = &pod.spec.tolerations;
    if !node.ready && !tolerates_no_schedule_key(tolerations, TAINT_NOT_READY) {
        return vec![REASON_NOT_READY.to_string()];
    }
    if node.node.spec.unschedulable == Some(true)
        && !tolerates_no_schedule_key(tolerations, TAINT_UNSCHEDULABLE)
    {
        return vec![REASON_UNSCHEDULABLE.to_string()];
    }
    if let Some(taint) = first_untolerated_taint(&node.node.spec.taints, tolerations) {
        return vec![untolerated_taint_reason(taint)];
    }
    if !matches_node_selector(&pod.spec.node_selector, &node.node) {
        return vec![REASON_NODE_SELECTOR.to_string()];
    }
    resource_reasons(node, request)
}

/// Kubernetes' `NodeResourcesFit` filter. A request of 0 always fits; the pod
/// count is checked for every pod.
fn resource_reasons(node: &NodeInfo, request: &PodRequests) -> Vec<String> {
    let request = request.fit;
    let mut reasons = Vec::new();
    if i128::try_from(node.pod_count)
        .unwrap_or(i128::MAX)
        .saturating_add(1)
        > node.allocatable.pods
    {
        reasons.push(REASON_TOO_MANY_PODS.to_string());
    }
    let free_cpu = node.allocatable.resources.milli_cpu - node.requested.milli_cpu;
    if request.milli_cpu > 0 && request.milli_cpu > free_cpu {
        reasons.push(REASON_INSUFFICIENT_CPU.to_string());
    }
    let free_memory = node.allocatable.resources.memory - node.requested.memory;
    if request.memory > 0 && request.memory > free_memory {
        reasons.push(REASON_INSUFFICIENT_MEMORY.to_string());
    }
    reasons
}

/// True when `toleration` tolerates `taint`: exactly Kubernetes'
/// `Toleration.ToleratesTaint`. An empty effect matches every effect, an
/// empty key matches every key, and the operator is `Equal` (the default:
/// values must be equal) or `Exists` (any value). An unknown operator
/// tolerates nothing.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        "Exists" => true,
        _ => false,
    }
}

/// True when some toleration tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

fn tolerates_no_schedule_key(tolerations: &[Toleration], key: &str) -> bool {
    tolerated(
        tolerations,
        &Taint {
            key: key.to_string(),
            effect: "NoSchedule".to_string(),
            ..Taint::default()
        },
    )
}

/// The first `NoSchedule` or `NoExecute` taint not tolerated, as Kubernetes'
/// `FindMatchingUntoleratedTaint` with the do-not-schedule filter.
/// `PreferNoSchedule` taints never block (they only lower the score).
pub fn first_untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerated(tolerations, taint)
    })
}

/// True when every `nodeSelector` entry equals the node's label. A missing
/// `kubernetes.io/arch` (or `kubernetes.io/os`) label is taken from
/// `status.nodeInfo.architecture` (`operatingSystem`), so a node whose labels
/// were not set yet is still matched on the facts its agent reported.
pub fn matches_node_selector(selector: &BTreeMap<String, String>, node: &Node) -> bool {
    selector.iter().all(|(key, wanted)| {
        let labels = &node.metadata.labels;
        let value = labels.get(key).map(String::as_str).or_else(|| {
            let info = node.status.as_ref()?.node_info.as_ref()?;
            let fact = match key.as_str() {
                LABEL_ARCH => &info.architecture,
                LABEL_OS => &info.operating_system,
                _ => return None,
            };
            (!fact.is_empty()).then_some(fact.as_str())
        });
        value == Some(wanted.as_str())
    })
}

#[cfg(test)]
mod tests {
    use bramble_common::api::{NodeStatus, NodeSystemInfo};

    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(operator),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let gpu = taint("gpu", Some("yes"), "NoSchedule");
        // key + Equal + value
        assert!(tolerates(
            &toleration("gpu", "Equal", "yes", "NoSchedule"),
            &gpu
        ));
        assert!(tolerates(&toleration("gpu", "", "yes", "NoSchedule"), &gpu));
        assert!(!tolerates(
            &toleration("gpu", "Equal", "no", "NoSchedule"),
            &gpu
        ));
        assert!(!tolerates(
            &toleration("gpu", "Equal", "", "NoSchedule"),
            &gpu
        ));
        // Exists ignores the value
        assert!(tolerates(
            &toleration("gpu", "Exists", "", "NoSchedule"),
            &gpu
        ));
        // empty effect matches every effect; a different effect does not
        assert!(tolerates(&toleration("gpu", "Exists", "", ""), &gpu));
        assert!(!tolerates(
            &toleration("gpu", "Exists", "", "NoExecute"),
            &gpu
        ));
        // different key
        assert!(!tolerates(&toleration("tpu", "Exists", "", ""), &gpu));
        // empty key + Exists tolerates everything
        assert!(tolerates(&toleration("", "Exists", "", ""), &gpu));
        assert!(tolerates(
            &toleration("", "Exists", "", ""),
            &taint("x", None, "NoExecute")
        ));
        // empty key + Exists + effect tolerates every taint with that effect
        assert!(!tolerates(&toleration("", "Exists", "", "NoExecute"), &gpu));
        // a taint without a value is matched by Equal with an empty value
        let bare = taint("dedicated", None, "NoSchedule");
        assert!(tolerates(&toleration("dedicated", "Equal", "", ""), &bare));
        // unknown operator tolerates nothing
        assert!(!tolerates(&toleration("gpu", "Lt", "yes", ""), &gpu));
    }

    #[test]
    fn only_no_schedule_and_no_execute_taints_block() {
        let taints = vec![
            taint("soft", None, "PreferNoSchedule"),
            taint("hard", Some("1"), "NoExecute"),
            taint("other", None, "NoSchedule"),
        ];
        let found = first_untolerated_taint(&taints, &[]).map(|t| t.key.as_str());
        assert_eq!(found, Some("hard"));
        let tolerations = vec![toleration("hard", "Exists", "", "")];
        let found = first_untolerated_taint(&taints, &tolerations).map(|t| t.key.as_str());
        assert_eq!(found, Some("other"));
        assert_eq!(
            untolerated_taint_reason(&taints[1]),
            "node(s) had untolerated taint {hard: 1}"
        );
        assert_eq!(
            untolerated_taint_reason(&taints[2]),
            "node(s) had untolerated taint {other: }"
        );
    }

    #[test]
    fn node_selector_uses_labels_then_reported_architecture() {
        let selector: BTreeMap<String, String> = [
            (LABEL_ARCH.to_string(), "arm64".to_string()),
            ("disk".to_string(), "ssd".to_string()),
        ]
        .into_iter()
        .collect();
        let mut node = Node::default();
        node.metadata.labels.insert("disk".into(), "ssd".into());
        assert!(!matches_node_selector(&selector, &node));
        node.status = Some(NodeStatus {
            node_info: Some(NodeSystemInfo {
                architecture: "arm64".into(),
                operating_system: "linux".into(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        });
        assert!(
            matches_node_selector(&selector, &node),
            "arch from nodeInfo"
        );
        node.metadata.labels.insert(LABEL_ARCH.into(), "arm".into());
        assert!(!matches_node_selector(&selector, &node), "the label wins");
        let os: BTreeMap<String, String> = [(LABEL_OS.to_string(), "linux".to_string())]
            .into_iter()
            .collect();
        assert!(matches_node_selector(&os, &node));
        assert!(matches_node_selector(&BTreeMap::new(), &Node::default()));
    }
}
