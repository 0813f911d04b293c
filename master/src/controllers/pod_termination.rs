//! Finishes graceful pod deletion. Deleting a pod that a node runs only
//! marks it (`deletionTimestamp`, `deletionGracePeriodSeconds`: shown as
//! `Terminating`); dispatch sends the mark to the node, whose agent stops
//! the pod within the grace period and reports it `Succeeded` or `Failed`.
//! This controller then deletes the object, as kubelet does in Kubernetes.
//! A pod whose node never reports (the device is gone) stays `Terminating`
//! until it is deleted with `--grace-period=0 --force`, as in Kubernetes.

use std::future::Future;

use bramble_common::Kind;
use serde_json::Value;

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

fn key_of(pod: &Value) -> ObjectKey {
    ObjectKey {
        kind: Kind::Pod,
        namespace: pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        name: pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
    }
}

/// Delete `pod` (this very pod: same UID) when its node has stopped it.
async fn finish(store: &Store, pod: &Value) {
    if !is_stopped_and_deleting(pod) {
        return;
    }
    let key = key_of(pod);
    let precondition = Precondition {
        uid: pod["metadata"]["uid"].as_str().map(str::to_string),
        ..Precondition::default()
    };
    match store.delete(&key, precondition).await {
        Ok(_) => tracing::debug!(pod = %key, "pod stopped by its node: deleted"),
        Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
        Err(error) => {
            tracing::warn!(pod = %key, %error, "cannot delete a stopped pod; retrying on its next change")
        }
    }
}

/// Run until `shutdown`: list once, then follow the pods' changes (listing
/// again whenever the watch ends).
pub async fn run(store: Store, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let revision = store.current_revision();
        let mut watch = match store.watch(Some(Kind::Pod), None, revision) {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "cannot watch pods; retrying");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    () = &mut shutdown => return,
                }
            }
        };
        if let Ok((pods, _)) = store.list(Kind::Pod, None).await {
            for pod in pods.iter().filter(|p| is_stopped_and_deleting(p)) {
                finish(&store, pod).await;
            }
        }
        loop {
            let event = tokio::select! {
                event = watch.next() => event,
                () = &mut shutdown => return,
            };
            let Some(event) = event else { break };
            finish(&store, &event.object).await;
        }
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
