//! The cluster as the scheduler sees it during one pass: every node with the
//! requests, pod count and owners of the pods already bound to it.
//!
//! Building a [`Snapshot`] costs O(nodes + pods) once; after that each
//! [`Snapshot::schedule`] costs O(nodes) (plus the pod's own containers), and
//! [`Snapshot::assume`] books a decision at once, so that a pass over 10,000
//! pending pods is linear in the pods, not quadratic.

use std::collections::{BTreeMap, HashMap};

use bramble_common::api::{Node, Pod};

use super::explain::Unschedulable;
use super::filter::failure_reasons;
use super::resources::{Allocatable, PodRequests, Resources};
use super::score::{best, controller_uid, score_nodes, NodeScore};

/// One node and what the pods bound to it already take.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    /// The node's name.
    pub(crate) name: String,
    /// The node.
    pub(crate) node: Node,
    /// True when the node has a `Ready=True` condition.
    pub(crate) ready: bool,
    /// What the node offers.
    pub(crate) allocatable: Allocatable,
    /// Sum of the bound pods' requests for fit (missing requests are 0).
    pub(crate) requested: Resources,
    /// Sum of the bound pods' requests for scoring (with defaults).
    pub(crate) requested_for_score: Resources,
    /// Pods bound to the node and not finished.
    pub(crate) pod_count: usize,
    /// Bound pods per controller uid.
    pub(crate) owners: HashMap<String, usize>,
}

impl NodeInfo {
    fn new(name: String, node: &Node) -> NodeInfo {
        NodeInfo {
            ready: is_ready(node),
            allocatable: Allocatable::of(node),
            node: node.clone(),
            name,
            requested: Resources::default(),
            requested_for_score: Resources::default(),
            pod_count: 0,
            owners: HashMap::new(),
        }
    }

    fn add(&mut self, pod: &Pod) {
        self.add_requests(&PodRequests::of(pod), controller_uid(pod));
    }

    fn add_requests(&mut self, request: &PodRequests, owner: Option<&str>) {
        self.requested = self.requested.plus(request.fit);
        self.requested_for_score = self.requested_for_score.plus(request.score);
        self.pod_count += 1;
        if let Some(uid) = owner {
            *self.owners.entry(uid.to_string()).or_insert(0) += 1;
        }
    }
}

/// True when `node` has a `Ready` condition with status `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// True when `pod` has finished (`Succeeded` or `Failed`): it no longer takes
/// resources on its node.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The node a pod is bound to: a non-empty `spec.nodeName`.
pub fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .node_name
        .as_deref()
        .filter(|name| !name.is_empty())
}

/// The nodes of the cluster and what is already placed on them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Sorted by name.
    nodes: Vec<NodeInfo>,
    /// Index into `nodes` by name.
    by_name: HashMap<String, usize>,
}

impl Snapshot {
    /// A snapshot of `nodes`, with no pods placed yet. Nodes without a name
    /// are ignored; of two nodes with the same name the first is kept.
    pub fn new<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Snapshot {
        let mut infos: BTreeMap<String, NodeInfo> = BTreeMap::new();
        for node in nodes {
            let Some(name) = node.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            infos
                .entry(name.to_string())
                .or_insert_with(|| NodeInfo::new(name.to_string(), node));
        }
        let nodes: Vec<NodeInfo> = infos.into_values().collect();
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Snapshot { nodes, by_name }
    }

    /// Counts `pod` against the node it is bound to. Does nothing (and
    /// returns false) for a pod that is not bound, has finished, or is bound
    /// to a node not in the snapshot.
    pub fn add_pod(&mut self, pod: &Pod) -> bool {
        match bound_node(pod) {
            Some(node) if !is_terminal(pod) => self.place(pod, node),
            _ => false,
        }
    }

    /// Counts a bound pod by what it takes (`requests`) and its controller
    /// (`owner`) against `node`, without the pod itself (the scheduler keeps
    /// only that of bound pods). Returns false when the node is not in the
    /// snapshot.
    pub(crate) fn place_requests(
        &mut self,
        node: &str,
        requests: &PodRequests,
        owner: Option<&str>,
    ) -> bool {
        match self.by_name.get(node) {
            Some(&index) => {
                self.nodes[index].add_requests(requests, owner);
                true
            }
            None => false,
        }
    }

    /// Books `pod` on `node` as if it were bound there (after a scheduling
    /// decision, before the binding is written). Returns false when the node
    /// is not in the snapshot.
    pub fn assume(&mut self, pod: &Pod, node: &str) -> bool {
        self.place(pod, node)
    }

    fn place(&mut self, pod: &Pod, node: &str) -> bool {
        match self.by_name.get(node) {
            Some(&index) => {
                self.nodes[index].add(pod);
                true
            }
            None => false,
        }
    }

    /// The number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Picks the node for `pod`: filters every node, scores the ones that
    /// pass, returns the best one's name. When none passes, returns
    /// Kubernetes' explanation. The pod's own `spec.nodeName` is not looked
    /// at: the caller schedules pods that have none.
    pub fn schedule(&self, pod: &Pod) -> Result<String, Unschedulable> {
        let evaluation = self.evaluate(pod)?;
        best(&evaluation)
            .map(|score| score.node.clone())
            .ok_or_else(Unschedulable::no_nodes)
    }

    /// The scores of every node `pod` fits on (sorted by node name), or why
    /// it fits on none.
    pub fn evaluate(&self, pod: &Pod) -> Result<Vec<NodeScore>, Unschedulable> {
        if self.nodes.is_empty() {
            return Err(Unschedulable::no_nodes());
        }
        let request = PodRequests::of(pod);
        let mut feasible = Vec::with_capacity(self.nodes.len());
        let mut failures = BTreeMap::new();
        for node in &self.nodes {
            let reasons = failure_reasons(pod, &request, node);
            if reasons.is_empty() {
                feasible.push(node);
            } else {
                failures.insert(node.name.clone(), reasons);
            }
        }
        if feasible.is_empty() {
            return Err(Unschedulable::from_node_reasons(self.nodes.len(), failures));
        }
        Ok(score_nodes(pod, &request, &feasible))
    }
}
