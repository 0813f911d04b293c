//! What the workload controllers share about pods: making one from a
//! template (Kubernetes' `GetPodFromTemplate`, with the defaults and the
//! default tolerations the API server's admission would add), deleting one
//! the way the API does (gracefully when a node runs it), creating many in
//! Kubernetes' slow-start batches, the owner's selector, and what a pod's
//! change means to its controller (expectations met, the owner to look at).

use std::collections::BTreeMap;

use bramble_common::api::PodTemplateSpec;
use bramble_common::kinds::AnyObject;
use bramble_common::meta::LabelSelector;
use bramble_common::{defaults, Kind};
use futures_util::future::join_all;
use serde_json::{json, Value};

use super::cache::PodInfo;
use super::runtime::Expectations;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// Marks the creation or deletion a controller expected as seen, from a
/// pod's change from `old` to `new` (a pod that starts terminating counts
/// as deleted, as in Kubernetes' controllers).
pub fn observe_change(expectations: &Expectations, old: Option<&PodInfo>, new: Option<&PodInfo>) {
    match (old, new) {
        (None, Some(pod)) => {
            if let Some(owner) = pod.controller() {
                expectations.creation_observed(&owner.uid);
            }
        }
        (Some(pod), None) => {
            if let Some(owner) = pod.controller() {
                expectations.deletion_observed(&owner.uid, &pod.uid);
            }
        }
        (Some(before), Some(after)) if before.deleting.is_none() && after.deleting.is_some() => {
            if let Some(owner) = after.controller() {
                expectations.deletion_observed(&owner.uid, &after.uid);
            }
        }
        _ => {}
    }
}

/// The `kind` object that controls `pod`, if its controller is one.
pub fn controller_key(pod: &PodInfo, kind: Kind) -> Option<ObjectKey> {
    let owner = pod.controller()?;
    (owner.kind == kind.name() && owner.api_version == kind.api_version())
        .then(|| ObjectKey::new(kind, pod.namespace.clone(), owner.name.clone()))
}

/// The `kind` objects controlling the pod before or after a change, sorted,
/// without duplicates.
pub fn controller_keys(old: Option<&PodInfo>, new: Option<&PodInfo>, kind: Kind) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = old
        .into_iter()
        .chain(new)
        .filter_map(|p| controller_key(p, kind))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Most pods one reconcile creates or deletes (kube-controller-manager's
/// `BurstReplicas`).
pub const BURST: usize = 500;

/// A new pod from `template`, owned by `owner` (controller reference),
/// named `{prefix}{5 random characters}`, with `extra_labels` and
/// `extra_annotations` on top of the template's, defaults applied.
pub fn from_template(
    owner: &Value,
    template: &PodTemplateSpec,
    prefix: &str,
    extra_labels: &BTreeMap<String, String>,
    extra_annotations: &BTreeMap<String, String>,
) -> Value {
    let mut pod = bramble_common::api::Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: template.metadata.clone(),
        spec: template.spec.clone(),
        status: None,
    };
    pod.metadata.name = None;
    pod.metadata.generate_name = Some(prefix.to_string());
    pod.metadata.namespace = owner["metadata"]["namespace"].as_str().map(str::to_string);
    pod.metadata
        .labels
        .extend(extra_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    pod.metadata.annotations.extend(
        extra_annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    pod.metadata.owner_references =
        serde_json::from_value(json!([super::controller_ref(owner)])).unwrap_or_default();
    let mut object = AnyObject::Pod(pod);
    defaults::apply_defaults(&mut object);
    object.to_value()
}

/// Deletes `pod` as the API would: gracefully (its node stops it first)
/// when a node runs it, at once otherwise. Only this very pod (its uid).
pub async fn delete(store: &Store, pod: &PodInfo) -> Result<(), StoreError> {
    let key = pod.key();
    let precondition = Precondition::uid(pod.uid.clone());
    let finished = matches!(pod.phase.as_str(), "Succeeded" | "Failed");
    let result = if pod.node_name.is_some() && !finished && pod.grace_seconds > 0 {
        store
            .delete_gracefully(&key, precondition, pod.grace_seconds)
            .await
    } else {
        store.delete(&key, precondition).await
    };
    match result {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The result of [`create_in_batches`].
#[derive(Debug, Default)]
pub struct Created {
    /// The pods created, as stored.
    pub pods: Vec<Value>,
    /// The first error, if a batch failed (the batches after it were not tried).
    pub error: Option<StoreError>,
    /// Pods not even tried after the failure.
    pub skipped: usize,
}

/// Creates `count` pods made by `make` in Kubernetes' slow-start batches
/// (1, 2, 4, ...): a template that cannot be created fails one pod, not a
/// thousand. Stops at the first batch with an error.
pub async fn create_in_batches(
    store: &Store,
    namespace: &str,
    count: usize,
    make: impl Fn(usize) -> Value,
) -> Created {
    let mut created = Created::default();
    let mut batch = 1usize;
    let mut done = 0usize;
    while done < count {
        let size = batch.min(count - done);
        let key = ObjectKey::new(Kind::Pod, namespace, "");
        let results = join_all((done..done + size).map(|i| {
            let pod = make(i);
            let key = key.clone();
            async move { store.create(&key, pod).await }
        }))
        .await;
        done += size;
        let mut failed = false;
        for result in results {
            match result {
                Ok(pod) => created.pods.push(pod),
                Err(error) => {
                    failed = true;
                    created.error.get_or_insert(error);
                }
            }
        }
        if failed {
            created.skipped = count - done;
            break;
        }
        batch = batch.saturating_mul(2);
    }
    created
}

/// The owner's `spec.selector`, typed.
pub fn selector_of(owner: &Value) -> LabelSelector {
    serde_json::from_value(owner["spec"]["selector"].clone()).unwrap_or_default()
}

/// True when `selector` selects something and matches `labels`: an empty
/// selector selects nothing here, as for workload controllers.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = selector.match_labels.is_empty() && selector.match_expressions.is_empty();
    !empty && selector.matches(labels)
}

/// A label selector as a string (`app=web,tier in (a,b)`), as the Scale
/// subresource and kubectl show it.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in &selector.match_expressions {
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({})", req.key, req.values.join(",")),
            "NotIn" => format!("{} notin ({})", req.key, req.values.join(",")),
            "Exists" => req.key.clone(),
            "DoesNotExist" => format!("!{}", req.key),
            other => format!("{} {other}", req.key),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_from_a_template_is_owned_defaulted_and_tolerates_unreachable_nodes() {
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-abc", "namespace": "shop", "uid": "rs-1"}});
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}))
        .expect("template");
        let extra = BTreeMap::from([("pod-template-hash".to_string(), "abc".to_string())]);
        let pod = from_template(&owner, &template, "web-abc-", &extra, &BTreeMap::new());
        assert_eq!(pod["metadata"]["generateName"], "web-abc-");
        assert_eq!(pod["metadata"]["namespace"], "shop");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], "abc");
        let owner_ref = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner_ref["uid"], "rs-1");
        assert_eq!(owner_ref["controller"], true);
        assert_eq!(owner_ref["blockOwnerDeletion"], true);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        let tolerations = pod["spec"]["tolerations"].as_array().expect("tolerations");
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            assert!(
                tolerations.iter().any(|t| t["key"] == key
                    && t["effect"] == "NoExecute"
                    && t["tolerationSeconds"] == 300),
                "{key}: {tolerations:?}"
            );
        }
    }

    #[test]
    fn selectors_print_like_kubernetes() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}))
        .expect("selector");
        assert_eq!(selector_string(&selector), "app=web,tier in (a,b)");
        assert!(!selects(&LabelSelector::default(), &BTreeMap::new()));
    }
}
