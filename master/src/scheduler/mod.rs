//! The scheduler: picks a node for every pod that has none and binds it by
//! writing `spec.nodeName`.
//!
//! Two layers:
//! - pure logic, no I/O: [`schedule`] / [`Snapshot`] filter the nodes in
//!   Kubernetes' order ([`filter`]), score the ones that pass ([`score`]),
//!   and explain a pod that fits nowhere in Kubernetes' words ([`explain`]);
//!   quantities and requests are in [`resources`].
//! - the running scheduler, [`run()`] (in [`mod@run`]): a cache of nodes and pods fed by
//!   store watches, coalesced scheduling passes, bindings, the
//!   `PodScheduled` condition and `Scheduled` / `FailedScheduling` events.

pub mod explain;
pub mod filter;
pub mod resources;
pub mod run;
pub mod score;
mod snapshot;
#[cfg(test)]
mod tests;

use bramble_common::api::{Node, Pod};

pub use explain::Unschedulable;
pub use run::{run, run_with_options, SchedulerOptions};
pub use score::NodeScore;
pub use snapshot::{bound_node, is_ready, is_terminal, Snapshot};

/// The only `spec.schedulerName` this scheduler serves (an empty name means
/// it too).
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Picks the node for `pod` among `nodes`, counting `bound_pods` (every pod
/// with a `spec.nodeName`, finished ones are skipped) against the nodes they
/// are bound to. Returns the node's name, or Kubernetes' explanation of why
/// the pod fits nowhere.
///
/// Builds a [`Snapshot`] each call (O(nodes + pods)); to place many pods,
/// build one [`Snapshot`] and use [`Snapshot::schedule`] and
/// [`Snapshot::assume`].
pub fn schedule(pod: &Pod, nodes: &[Node], bound_pods: &[Pod]) -> Result<String, Unschedulable> {
    let mut snapshot = Snapshot::new(nodes);
    for bound in bound_pods {
        snapshot.add_pod(bound);
    }
    snapshot.schedule(pod)
}

/// True when this scheduler is responsible for `pod`: `spec.schedulerName`
/// empty or [`SCHEDULER_NAME`].
pub fn is_ours(pod: &Pod) -> bool {
    pod.spec
        .scheduler_name
        .as_deref()
        .is_none_or(|name| name.is_empty() || name == SCHEDULER_NAME)
}

/// True when `pod` waits for this scheduler: no node, ours, not being deleted
/// and not finished.
pub fn needs_scheduling(pod: &Pod) -> bool {
    bound_node(pod).is_none()
        && is_ours(pod)
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
}
