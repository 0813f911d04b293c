//! Turning an agent's report into what the store holds: the Node's status
//! and labels, and each pod's status. Pure functions.

use std::collections::BTreeMap;

use bramble_common::api::{NodeAddress, NodeStatus, PodStatus};
use bramble_common::meta::Condition;
use bramble_common::wire::{ConditionReport, NodeStatusReport};
use bramble_common::Quantity;

fn rfc3339(unix: i64) -> Option<String> {
    if unix <= 0 {
        return None;
    }
    jiff::Timestamp::from_second(unix)
        .ok()
        .map(|t| t.to_string())
}

fn condition(report: &ConditionReport) -> Condition {
    Condition {
        type_: report.type_.clone(),
        status: report.status.clone(),
        reason: Some(report.reason.clone()).filter(|r| !r.is_empty()),
        message: Some(report.message.clone()).filter(|m| !m.is_empty()),
        last_heartbeat_time: None,
        last_transition_time: rfc3339(report.last_transition_unix),
        last_probe_time: None,
    }
}

/// The Node status a report describes. Heartbeat times are left out on
/// purpose: they would make every heartbeat a disk write.
pub fn node_status(node_name: &str, report: &NodeStatusReport) -> NodeStatus {
    let facts = &report.facts;
    let mut capacity = BTreeMap::new();
    capacity.insert(
        "cpu".to_string(),
        Quantity::from_units(i128::from(facts.cpus)),
    );
    capacity.insert(
        "memory".to_string(),
        Quantity::new(format!("{}Ki", facts.memory_bytes / 1024)),
    );
    capacity.insert(
        "pods".to_string(),
        Quantity::from_units(i128::from(facts.max_pods)),
    );
    let mut addresses: Vec<NodeAddress> = report
        .addresses
        .iter()
        .map(|(type_, address)| NodeAddress {
            type_: type_.clone(),
            address: address.clone(),
        })
        .collect();
    if !addresses.iter().any(|a| a.type_ == "Hostname") {
        addresses.push(NodeAddress {
            type_: "Hostname".into(),
            address: if facts.hostname.is_empty() {
                node_name.to_string()
            } else {
                facts.hostname.clone()
            },
        });
    }
    NodeStatus {
        allocatable: capacity.clone(),
        capacity,
        conditions: report.conditions.iter().map(condition).collect(),
        addresses,
        node_info: Some(facts.node_system_info()),
        phase: None,
    }
}

/// The labels the master keeps on a node from its facts.
pub fn node_labels(node_name: &str, report: &NodeStatusReport) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), node_name.to_string());
    if !report.facts.architecture.is_empty() {
        labels.insert(
            "kubernetes.io/arch".to_string(),
            report.facts.architecture.clone(),
        );
    }
    if !report.facts.os.is_empty() {
        labels.insert("kubernetes.io/os".to_string(), report.facts.os.clone());
    }
    labels
}

/// A pod's new status: what the agent reports, keeping the scheduler's
/// `PodScheduled` condition and filling in the node's address.
pub fn merge_pod_status(
    stored: Option<&PodStatus>,
    mut reported: PodStatus,
    host_ip: Option<&str>,
) -> PodStatus {
    if let Some(scheduled) = stored
        .into_iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == "PodScheduled")
    {
        if !reported
            .conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled")
        {
            reported.conditions.insert(0, scheduled.clone());
        }
    }
    if reported.host_ip.as_deref().unwrap_or("").is_empty() {
        reported.host_ip = host_ip.map(str::to_string);
    }
    reported
}

/// A Node's Ready condition saying the agent is unreachable.
pub fn not_ready_condition(message: &str, now_rfc3339: &str) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: "Unknown".into(),
        reason: Some("NodeStatusUnknown".into()),
        message: Some(message.to_string()),
        last_heartbeat_time: None,
        last_transition_time: Some(now_rfc3339.to_string()),
        last_probe_time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_common::wire::NodeFacts;

    #[test]
    fn node_status_and_labels_come_from_facts() {
        let report = NodeStatusReport {
            facts: NodeFacts {
                architecture: "arm64".into(),
                os: "linux".into(),
                cpus: 4,
                memory_bytes: 4 * 1024 * 1024 * 1024,
                max_pods: 110,
                agent_version: "0.1.0".into(),
                hostname: "pi-1".into(),
                ..Default::default()
            },
            conditions: vec![ConditionReport {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "AgentReady".into(),
                message: String::new(),
                last_transition_unix: 1_700_000_000,
            }],
            addresses: vec![("InternalIP".into(), "192.168.1.10".into())],
        };
        let status = node_status("pi-1", &report);
        assert_eq!(status.capacity["cpu"].0, "4");
        assert_eq!(status.capacity["memory"].0, "4194304Ki");
        assert_eq!(status.capacity["pods"].0, "110");
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(
            status.conditions[0].last_transition_time.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert!(status.conditions[0].last_heartbeat_time.is_none());
        assert_eq!(status.addresses.len(), 2);
        assert_eq!(
            status
                .node_info
                .as_ref()
                .map(|i| i.kubelet_version.as_str()),
            Some("0.1.0")
        );
        let labels = node_labels("pi-1", &report);
        assert_eq!(labels["kubernetes.io/arch"], "arm64");
    }

    #[test]
    fn pod_status_keeps_pod_scheduled_and_gets_the_host_ip() {
        let stored = PodStatus {
            conditions: vec![Condition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let reported = PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        };
        let merged = merge_pod_status(Some(&stored), reported, Some("192.168.1.10"));
        assert_eq!(merged.conditions[0].type_, "PodScheduled");
        assert_eq!(merged.host_ip.as_deref(), Some("192.168.1.10"));
        assert_eq!(merged.phase.as_deref(), Some("Running"));
    }
}
