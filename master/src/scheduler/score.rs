//! Scores: among the nodes a pod fits on, which is best?
//!
//! Three scores of 0..=100 each (Kubernetes' `MaxNodeScore`), summed with
//! Kubernetes' default plugin weights into [`NodeScore::total`]:
//!
//! - least allocated (weight 1, `NodeResourcesFit` with `LeastAllocated`): the
//!   free fraction of cpu and of memory after placing the pod, averaged. Pods
//!   without requests count 100m / 200Mi per container here.
//! - spread (weight 2, the idea of Kubernetes' `SelectorSpread`, which
//!   `PodTopologySpread` replaced with the same weight): pods with the same
//!   controller owner (`ownerReferences[controller=true].uid`) already on the
//!   node. 100 on the nodes with the fewest, down to 0 on the node with the
//!   most; 100 everywhere for a pod without a controller.
//! - taints (weight 3, `TaintToleration`): `PreferNoSchedule` taints the pod
//!   does not tolerate. 100 without any, down to 0 on the node with the most.
//!
//! The highest total wins. Kubernetes picks at random among equal totals;
//! bramble picks the node whose name sorts first, so that the same cluster
//! state always gives the same placement (tests and replays rely on it).

use bramble_common::api::{Pod, Toleration};

use super::filter::tolerates;
use super::resources::PodRequests;
use super::snapshot::NodeInfo;

/// The highest score of one scoring function.
pub const MAX_NODE_SCORE: i64 = 100;
/// Weight of the least-allocated score in the total.
pub const WEIGHT_LEAST_ALLOCATED: i64 = 1;
/// Weight of the spread score in the total.
pub const WEIGHT_SPREAD: i64 = 2;
/// Weight of the `PreferNoSchedule` taint score in the total.
pub const WEIGHT_TAINTS: i64 = 3;

/// The scores of one feasible node for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeScore {
    /// The node's name.
    pub node: String,
    /// Free cpu and memory after placing the pod, 0..=100.
    pub least_allocated: i64,
    /// Fewer pods of the same controller is better, 0..=100.
    pub spread: i64,
    /// Fewer untolerated `PreferNoSchedule` taints is better, 0..=100.
    pub taints: i64,
    /// The weighted sum of the three (0..=600).
    pub total: i64,
}

/// The uid of the pod's controlling owner (`controller: true`), if any.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .iter()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| owner.uid.as_str())
}

/// Scores every node of `feasible` for `pod`, in the same order.
pub(crate) fn score_nodes(
    pod: &Pod,
    request: &PodRequests,
    feasible: &[&NodeInfo],
) -> Vec<NodeScore> {
    let owner = controller_uid(pod);
    let same_owner: Vec<usize> = feasible
        .iter()
        .map(|node| {
            owner
                .and_then(|uid| node.owners.get(uid))
                .copied()
                .unwrap_or(0)
        })
        .collect();
    let max_same_owner = same_owner.iter().copied().max().unwrap_or(0);

    let soft_tolerations: Vec<&Toleration> = pod
        .spec
        .tolerations
        .iter()
        .filter(|t| matches!(t.effect.as_deref().unwrap_or(""), "" | "PreferNoSchedule"))
        .collect();
    let soft_taints: Vec<usize> = feasible
        .iter()
        .map(|node| {
            node.node
                .spec
                .taints
                .iter()
                .filter(|taint| taint.effect == "PreferNoSchedule")
                .filter(|taint| !soft_tolerations.iter().any(|t| tolerates(t, taint)))
                .count()
        })
        .collect();
    let max_soft_taints = soft_taints.iter().copied().max().unwrap_or(0);

    feasible
        .iter()
        .zip(same_owner)
        .zip(soft_taints)
        .map(|((node, same), taints)| {
            let least_allocated = least_allocated(node, request);
            let spread = reverse_normalized(same, max_same_owner);
            let taints = reverse_normalized(taints, max_soft_taints);
            NodeScore {
                node: node.name.clone(),
                least_allocated,
                spread,
                taints,
                total: least_allocated * WEIGHT_LEAST_ALLOCATED
                    + spread * WEIGHT_SPREAD
                    + taints * WEIGHT_TAINTS,
            }
        })
        .collect()
}

/// The node to bind to: the highest total, ties to the name that sorts first.
pub(crate) fn best(scores: &[NodeScore]) -> Option<&NodeScore> {
    scores
        .iter()
        .min_by(|a, b| b.total.cmp(&a.total).then_with(|| a.node.cmp(&b.node)))
}

/// Kubernetes' `DefaultNormalizeScore` with `reverse`: 100 for a count of 0
/// (and everywhere when the largest count is 0), 0 for the largest count.
fn reverse_normalized(count: usize, max: usize) -> i64 {
    if max == 0 {
        return MAX_NODE_SCORE;
    }
    let scaled = i64::try_from(count.saturating_mul(100) / max).unwrap_or(MAX_NODE_SCORE);
    MAX_NODE_SCORE - scaled
}

/// Kubernetes' least-allocated score with cpu and memory weighted equally.
fn least_allocated(node: &NodeInfo, request: &PodRequests) -> i64 {
    let requested = node.requested_for_score.plus(request.score);
    let allocatable = node.allocatable.resources;
    let free_fraction = |requested: i128, capacity: i128| -> i64 {
        if capacity <= 0 || requested > capacity {
            return 0;
        }
        i64::try_from((capacity - requested.max(0)) * 100 / capacity).unwrap_or(0)
    };
    (free_fraction(requested.milli_cpu, allocatable.milli_cpu)
        + free_fraction(requested.memory, allocatable.memory))
        / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_normalization_matches_kubernetes() {
        assert_eq!(reverse_normalized(0, 0), 100);
        assert_eq!(reverse_normalized(0, 4), 100);
        assert_eq!(reverse_normalized(1, 4), 75);
        assert_eq!(reverse_normalized(4, 4), 0);
    }

    #[test]
    fn best_prefers_the_highest_total_then_the_first_name() {
        let score = |node: &str, total| NodeScore {
            node: node.into(),
            least_allocated: 0,
            spread: 0,
            taints: 0,
            total,
        };
        let scores = vec![score("c", 5), score("b", 7), score("a", 7)];
        assert_eq!(best(&scores).map(|s| s.node.as_str()), Some("a"));
        assert_eq!(best(&[]), None);
    }
}
