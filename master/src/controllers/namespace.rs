//! The namespace controller (Kubernetes' `pkg/controller/namespace`): a
//! namespace being deleted (`Terminating`, the `kubernetes` finalizer in
//! `spec.finalizers`) is emptied, then the finalizer is removed and the
//! store removes the namespace.
//!
//! Deletion starts 5 s after the namespace was deleted, as
//! kube-controller-manager's `namespaceDeletionGracePeriod`. Each pass
//! deletes every object of every namespaced kind in it, owners
//! first (so a ReplicaSet does not recreate the pods just deleted), pods
//! gracefully as the API does; what is still there (pods their node is
//! stopping, objects with finalizers) is looked at again shortly, and the
//! `NamespaceContentRemaining` condition says what is left, as Kubernetes
//! writes it. A pod whose node never reports stays `Terminating`, and so
//! does its namespace, until the pod is force-deleted: as in Kubernetes.

use std::collections::BTreeMap;
use std::time::Duration;

use bramble_common::Kind;
use serde_json::{json, Value};

use super::cache::{Cache, PodInfo};
use super::runtime::{Action, Reconciler};
use super::{pods, ControllerError};
use crate::api::deletion::NAMESPACE_FINALIZER;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// The controller's name.
pub const NAME: &str = "namespace-controller";

/// How soon a namespace with content left is looked at again.
const RECHECK: Duration = Duration::from_secs(1);
/// How long after its deletion a namespace's content starts to be deleted
/// (kube-controller-manager's `namespaceDeletionGracePeriod`): the rest of
/// a `kubectl delete -f` that named the namespace first still finds its
/// objects.
const DELETION_GRACE: i64 = 5;

/// The namespace controller.
pub struct NamespaceController {
    store: Store,
    cache: Cache,
}

impl NamespaceController {
    /// The controller over `store`, reading `cache`.
    pub fn new(store: Store, cache: Cache) -> NamespaceController {
        NamespaceController { store, cache }
    }
}

/// The namespaced kinds in the order their objects are deleted: the
/// owners before what they make.
fn deletion_order() -> Vec<Kind> {
    let first = [Kind::Deployment, Kind::DaemonSet, Kind::ReplicaSet];
    let mut kinds: Vec<Kind> = first.to_vec();
    kinds.extend(
        Kind::all().iter().copied().filter(|k| {
            k.namespaced() && !first.contains(k) && *k != Kind::Pod && *k != Kind::Event
        }),
    );
    // Pods after their owners; Events last (deleting the rest records some).
    kinds.push(Kind::Pod);
    kinds.push(Kind::Event);
    kinds
}

impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn primary(&self) -> Kind {
        Kind::Namespace
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        let Some(namespace) = self.cache.get(key) else {
            return Ok(Action::AwaitChange);
        };
        if !namespace["metadata"]["deletionTimestamp"].is_string() {
            return Ok(Action::AwaitChange);
        }
        let has_finalizer = namespace["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == NAMESPACE_FINALIZER));
        if !has_finalizer {
            return Ok(Action::AwaitChange);
        }
        let now = super::now();
        if let Some(since) = super::parse_time(&namespace["metadata"]["deletionTimestamp"]) {
            if now < since + DELETION_GRACE {
                let wait = u64::try_from(since + DELETION_GRACE - now).unwrap_or(1);
                return Ok(Action::RequeueAfter(Duration::from_secs(wait)));
            }
        }
        let name = key.name.as_str();
        let mut remaining: BTreeMap<&'static str, usize> = BTreeMap::new();
        for kind in deletion_order() {
            let (objects, _) = self.store.list(kind, Some(name)).await?;
            for object in objects {
                if self.delete(kind, &object).await? {
                    *remaining.entry(kind.info().plural).or_default() += 1;
                }
            }
        }
        if remaining.is_empty() {
            tracing::info!(namespace = name, "namespace empty: removing its finalizer");
            self.finish(key).await?;
            return Ok(Action::AwaitChange);
        }
        self.report_remaining(key, &namespace, &remaining).await?;
        Ok(Action::RequeueAfter(RECHECK))
    }
}

impl NamespaceController {
    /// Deletes one object; true when it is still there after (its node
    /// stops it, or finalizers hold it).
    async fn delete(&self, kind: Kind, object: &Value) -> Result<bool, ControllerError> {
        let meta = &object["metadata"];
        if meta["deletionTimestamp"].is_string() {
            return Ok(true);
        }
        let key = ObjectKey::new(
            kind,
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or(""),
        );
        let uid = meta["uid"].as_str().unwrap_or("").to_string();
        if kind == Kind::Pod {
            let pod = PodInfo::from_value(object);
            return match pods::delete(&self.store, &pod).await {
                Ok(()) => Ok(pod.node_name.is_some() && pod.is_active() && pod.grace_seconds > 0),
                Err(StoreError::Conflict { .. }) => Ok(true),
                Err(error) => Err(error.into()),
            };
        }
        match self.store.delete(&key, Precondition::uid(uid)).await {
            Ok(crate::store::DeleteOutcome::Deleted(_)) | Err(StoreError::NotFound { .. }) => {
                Ok(false)
            }
            Ok(crate::store::DeleteOutcome::Finalizing(_)) | Err(StoreError::Conflict { .. }) => {
                Ok(true)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Removes the `kubernetes` finalizer: the store removes the namespace.
    async fn finish(&self, key: &ObjectKey) -> Result<(), ControllerError> {
        let Some(mut fresh) = self.store.get(key).await? else {
            return Ok(());
        };
        let rv = fresh["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        if let Some(list) = fresh["spec"]["finalizers"].as_array_mut() {
            list.retain(|f| f != NAMESPACE_FINALIZER);
        }
        match self
            .store
            .update(key, fresh, Precondition::resource_version(rv))
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Writes `status.phase: Terminating` and the
    /// `NamespaceContentRemaining` condition (only when they change).
    async fn report_remaining(
        &self,
        key: &ObjectKey,
        namespace: &Value,
        remaining: &BTreeMap<&'static str, usize>,
    ) -> Result<(), ControllerError> {
        let message = format!(
            "Some resources are remaining: {}",
            remaining
                .iter()
                .map(|(plural, n)| format!("{plural}. has {n} resource instances"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let old = namespace
            .get("status")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let previous = old["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "NamespaceContentRemaining"))
            .cloned();
        if old["phase"] == "Terminating"
            && previous
                .as_ref()
                .is_some_and(|c| c["message"] == message.as_str())
        {
            return Ok(());
        }
        let mut conditions: Vec<Value> = old["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "NamespaceContentRemaining")
            .collect();
        conditions.push(json!({
            "type": "NamespaceContentRemaining",
            "status": "True",
            "reason": "SomeResourcesRemain",
            "message": message,
            "lastTransitionTime": super::format_time(super::now()),
        }));
        let status = json!({"phase": "Terminating", "conditions": conditions});
        match self
            .store
            .update_status(key, status, Precondition::default())
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_deleted_before_pods_and_events_last() {
        let order = deletion_order();
        let at = |k: Kind| order.iter().position(|x| *x == k).expect("kind in order");
        assert!(at(Kind::Deployment) < at(Kind::ReplicaSet));
        assert!(at(Kind::ReplicaSet) < at(Kind::Pod));
        assert_eq!(order.last(), Some(&Kind::Event));
        assert!(!order.contains(&Kind::Namespace));
        assert!(!order.contains(&Kind::Node));
    }
}
