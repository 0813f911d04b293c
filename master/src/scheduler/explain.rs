//! Why a pod fits nowhere, worded the way Kubernetes words it, so that people
//! and tools that know `kubectl describe pod` read bramble's the same way.

use std::collections::BTreeMap;
use std::fmt;

/// Kubernetes' message when the cluster has no nodes at all.
pub const NO_NODES_MESSAGE: &str = "no nodes available to schedule pods";

/// A pod that fits on no node, with Kubernetes' explanation.
///
/// The message is Kubernetes' `FitError` text: `0/3 nodes are available: 1
/// node(s) were not ready, 2 Insufficient memory.`, each reason prefixed with
/// the number of nodes that gave it, the entries sorted as strings (as
/// Kubernetes sorts them, count included) and joined with `, `. The trailing
/// period is Kubernetes'; the house rule against it yields to compatibility
/// here. A node failing the resource filter for several resources counts once
/// under each, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// The explanation, e.g. `0/3 nodes are available: 1 node(s) were not
    /// ready, 2 Insufficient memory.`
    pub message: String,
    /// How many nodes gave each reason.
    pub reasons: BTreeMap<String, usize>,
    /// The reasons of each node, by node name.
    pub nodes: BTreeMap<String, Vec<String>>,
}

impl Unschedulable {
    /// The explanation when the cluster has no nodes.
    pub fn no_nodes() -> Unschedulable {
        Unschedulable {
            message: NO_NODES_MESSAGE.to_string(),
            reasons: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    /// The explanation for `total_nodes` nodes that each failed with the
    /// reasons in `nodes`.
    pub fn from_node_reasons(
        total_nodes: usize,
        nodes: BTreeMap<String, Vec<String>>,
    ) -> Unschedulable {
        let mut reasons = BTreeMap::new();
        for reason in nodes.values().flatten() {
            *reasons.entry(reason.clone()).or_insert(0) += 1;
        }
        Unschedulable {
            message: fit_error_message(total_nodes, &reasons),
            reasons,
            nodes,
        }
    }
}

/// Kubernetes' `FitError.Error()`: `0/N nodes are available: ` then the
/// histogram entries `"{count} {reason}"` sorted as strings, then `.`.
pub fn fit_error_message(total_nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut entries: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    entries.sort();
    format!(
        "0/{total_nodes} nodes are available: {}.",
        entries.join(", ")
    )
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Unschedulable {}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_reasons(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(node, reasons)| {
                (
                    node.to_string(),
                    reasons.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn message_is_kubernetes_fit_error() {
        let u = Unschedulable::from_node_reasons(
            3,
            node_reasons(&[
                ("a", &["Insufficient memory"]),
                ("b", &["node(s) were not ready"]),
                ("c", &["Insufficient memory"]),
            ]),
        );
        assert_eq!(
            u.to_string(),
            "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient memory."
        );
        assert_eq!(u.reasons.get("Insufficient memory"), Some(&2));
        assert_eq!(u.nodes.len(), 3);
    }

    #[test]
    fn one_node_can_give_several_resource_reasons() {
        let u = Unschedulable::from_node_reasons(
            1,
            node_reasons(&[("a", &["Insufficient cpu", "Insufficient memory"])]),
        );
        assert_eq!(
            u.message,
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );
    }

    #[test]
    fn entries_sort_as_strings_with_their_counts_like_kubernetes() {
        let mut nodes = BTreeMap::new();
        for i in 0..10 {
            nodes.insert(format!("n{i}"), vec!["Too many pods".to_string()]);
        }
        nodes.insert("x".into(), vec!["Insufficient cpu".to_string()]);
        nodes.insert("y".into(), vec!["Insufficient cpu".to_string()]);
        let u = Unschedulable::from_node_reasons(12, nodes);
        // "10 ..." sorts before "2 ..." as a string, as in Kubernetes.
        assert_eq!(
            u.message,
            "0/12 nodes are available: 10 Too many pods, 2 Insufficient cpu."
        );
    }

    #[test]
    fn no_nodes_says_so() {
        let u = Unschedulable::no_nodes();
        assert_eq!(u.to_string(), "no nodes available to schedule pods");
        assert!(u.reasons.is_empty());
    }
}
