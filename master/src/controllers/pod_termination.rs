//! Finishes graceful pod deletion. Deleting a pod that a node runs only
//! marks it (`deletionTimestamp`, `deletionGracePeriodSeconds`: shown as
//! `Terminating`); dispatch sends the mark to the node, whose agent stops
//! the pod within the grace period and reports it `Succeeded` or `Failed`.
//! This controller then deletes the object, as kubelet does in Kubernetes.
//! A pod whose node never reports (the device is gone) stays `Terminating`
//! until it is deleted with `--grace-period=0 --force`, as in Kubernetes.
//! A level-triggered reconcile on the shared runtime: every pod change that
//! leaves a pod stopped and deleting queues it.

use bramble_common::Kind;
use serde_json::Value;

use super::cache::{Cache, Change, PodInfo};
use super::runtime::{Action, Reconciler};
use super::ControllerError;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// True for a pod that is being deleted and that its node has stopped.
pub fn is_stopped_and_deleting(pod: &Value) -> bool {
    let deleting = pod["metadata"]["deletionTimestamp"].is_string();
    let stopped = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    deleting && stopped
}

/// The pod-termination controller: a [`Reconciler`] of pods that are
/// being deleted and that their node has stopped.
pub struct PodTermination {
    store: Store,
    cache: Cache,
}

impl PodTermination {
    /// The controller over `store`, reading `cache`.
    pub fn new(store: Store, cache: Cache) -> PodTermination {
        PodTermination { store, cache }
    }
}

fn stopped_and_deleting(pod: &PodInfo) -> bool {
    pod.deleting.is_some() && matches!(pod.phase.as_str(), "Succeeded" | "Failed")
}

impl Reconciler for PodTermination {
    fn name(&self) -> &'static str {
        "pod-termination-controller"
    }

    fn primary(&self) -> Kind {
        Kind::Pod
    }

    fn keys_for(&self, change: &Change, _cache: &Cache) -> Vec<ObjectKey> {
        match change.new.as_ref().and_then(|c| c.pod()) {
            Some(pod) if stopped_and_deleting(pod) => vec![change.key.clone()],
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        let Some(pod) = self.cache.pod(&key.namespace, &key.name) else {
            return Ok(Action::AwaitChange);
        };
        if !stopped_and_deleting(&pod) {
            return Ok(Action::AwaitChange);
        }
        // This very pod (same UID): a new pod of the same name is not ours.
        match self
            .store
            .delete(key, Precondition::uid(pod.uid.clone()))
            .await
        {
            Ok(_) => tracing::debug!(pod = %key, "pod stopped by its node: deleted"),
            Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(Action::AwaitChange)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn only_stopped_pods_being_deleted_are_finished() {
        let pod = |deleting: bool, phase: &str| {
            let mut pod = json!({"metadata": {"name": "p"}, "status": {"phase": phase}});
            if deleting {
                pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            pod
        };
        assert!(is_stopped_and_deleting(&pod(true, "Failed")));
        assert!(is_stopped_and_deleting(&pod(true, "Succeeded")));
        assert!(!is_stopped_and_deleting(&pod(true, "Running")));
        assert!(!is_stopped_and_deleting(&pod(false, "Failed")));
    }
}
