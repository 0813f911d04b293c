//! The ReplicaSet controller (Kubernetes' `pkg/controller/replicaset`):
//! keeps `spec.replicas` pods of `spec.template` running.
//!
//! - Pods are named `{rs}-{5 random characters}` and carry a controller
//!   reference (`controller: true`, `blockOwnerDeletion: true`).
//! - Claiming, as Kubernetes' `PodControllerRefManager`: a pod without a
//!   controller whose labels match the selector is adopted (unless the
//!   ReplicaSet is being deleted); an owned pod whose labels stop matching
//!   is released (its reference removed).
//! - Too few: creates in slow-start batches (1, 2, 4, ...), at most
//!   [`pods::BURST`] per reconcile. Too many: deletes in Kubernetes' order
//!   (unscheduled, pending, not ready, doubled up on a node, ready for a
//!   shorter time, more restarts, newer first).
//! - [`Expectations`] keep a slow cache from making it create or delete
//!   twice.
//! - Status `replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//!   `availableReplicas` (ready for `minReadySeconds`), `observedGeneration`
//!   and the `ReplicaFailure` condition when pods cannot be created; events
//!   `SuccessfulCreate`, `SuccessfulDelete`, `FailedCreate`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bramble_common::api::ReplicaSet;
use bramble_common::Kind;
use futures_util::future::join_all;
use serde_json::{json, Value};

use super::cache::{Cache, Change, PodInfo};
use super::runtime::{Action, Expectations, Reconciler};
use super::{pods, ControllerError};
use crate::events::EventRecorder;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// The event source of this controller.
pub const NAME: &str = "replicaset-controller";

/// The ReplicaSet controller.
pub struct ReplicaSetController {
    store: Store,
    cache: Cache,
    events: EventRecorder,
    expectations: Expectations,
}

impl ReplicaSetController {
    /// The controller over `store`, reading `cache`.
    pub fn new(store: Store, cache: Cache, events: EventRecorder) -> ReplicaSetController {
        ReplicaSetController {
            store,
            cache,
            events,
            expectations: Expectations::default(),
        }
    }
}

impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn primary(&self) -> Kind {
        Kind::ReplicaSet
    }

    fn keys_for(&self, change: &Change, cache: &Cache) -> Vec<ObjectKey> {
        if change.key.kind == Kind::ReplicaSet {
            if change.new.is_none() {
                if let Some(old) = &change.old {
                    self.expectations.forget(&old.uid());
                }
            }
            return vec![change.key.clone()];
        }
        if change.key.kind != Kind::Pod {
            return Vec::new();
        }
        let old = change.old.as_ref().and_then(|c| c.pod());
        let new = change.new.as_ref().and_then(|c| c.pod());
        // Expectations: a creation or a deletion this controller asked for.
        pods::observe_change(&self.expectations, old.map(|p| &**p), new.map(|p| &**p));
        let mut keys =
            pods::controller_keys(old.map(|p| &**p), new.map(|p| &**p), Kind::ReplicaSet);
        // An orphan: the ReplicaSets that may adopt it.
        if let Some(pod) = new.filter(|p| p.controller().is_none() && p.is_active()) {
            for rs in cache.list(Kind::ReplicaSet, Some(&pod.namespace)) {
                if pods::selects(&pods::selector_of(&rs), &pod.labels) {
                    keys.push(ObjectKey::new(
                        Kind::ReplicaSet,
                        pod.namespace.clone(),
                        rs["metadata"]["name"].as_str().unwrap_or(""),
                    ));
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        let Some(raw) = self.cache.get(key) else {
            return Ok(Action::AwaitChange);
        };
        let rs: ReplicaSet =
            serde_json::from_value((*raw).clone()).map_err(|e| ControllerError::Malformed {
                object: key.to_string(),
                reason: e.to_string(),
            })?;
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        let pods = self.claim(&raw, &rs, &uid, deleting).await?;
        let active: Vec<Arc<PodInfo>> = pods.iter().filter(|p| p.is_active()).cloned().collect();
        let mut failure = None;
        if self.expectations.satisfied(&uid) && !deleting {
            failure = self.manage(&raw, &rs, &uid, &active).await;
        }
        self.update_status(key, &raw, &rs, &pods, failure.as_deref())
            .await
            .map(|next| match failure {
                // A failed creation is retried with the runtime's backoff.
                Some(_) => Action::RequeueAfter(Duration::from_secs(10)).min(next),
                None => next,
            })
    }
}

impl ReplicaSetController {
    /// Adopts matching orphans, releases owned pods that stopped matching;
    /// returns the pods owned after that.
    async fn claim(
        &self,
        raw: &Value,
        rs: &ReplicaSet,
        uid: &str,
        deleting: bool,
    ) -> Result<Vec<Arc<PodInfo>>, ControllerError> {
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let mut owned = Vec::new();
        for pod in self.cache.pods_controlled_by(uid) {
            if pods::selects(&rs.spec.selector, &pod.labels) {
                owned.push(pod);
            } else if pod.deleting.is_none() {
                release(&self.store, &pod, uid).await?;
            }
        }
        if !deleting {
            for pod in self.cache.orphan_pods_in(&namespace) {
                if pod.is_active() && pods::selects(&rs.spec.selector, &pod.labels) {
                    if let Some(adopted) = adopt(&self.store, &pod, raw).await? {
                        owned.push(adopted);
                    }
                }
            }
        }
        Ok(owned)
    }

    /// Creates or deletes pods; returns the creation error, if any.
    async fn manage(
        &self,
        raw: &Value,
        rs: &ReplicaSet,
        uid: &str,
        active: &[Arc<PodInfo>],
    ) -> Option<String> {
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let want = usize::try_from(rs.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        if active.len() < want {
            let count = (want - active.len()).min(pods::BURST);
            self.expectations.expect_creations(uid, count);
            let prefix = format!("{name}-");
            let empty = BTreeMap::new();
            let created = pods::create_in_batches(&self.store, &namespace, count, |_| {
                pods::from_template(raw, &rs.spec.template, &prefix, &empty, &empty)
            })
            .await;
            for pod in &created.pods {
                self.events.normal(
                    NAME,
                    raw,
                    "SuccessfulCreate",
                    format!(
                        "Created pod: {}",
                        pod["metadata"]["name"].as_str().unwrap_or("")
                    ),
                );
            }
            if let Some(error) = created.error {
                // The failed and the skipped creations will never be seen.
                let not_created = count - created.pods.len();
                for _ in 0..not_created {
                    self.expectations.creation_observed(uid);
                }
                let message = format!("Error creating: {error}");
                self.events
                    .warning(NAME, raw, "FailedCreate", message.clone());
                return Some(message);
            }
        } else if active.len() > want {
            let count = (active.len() - want).min(pods::BURST);
            let doomed = pods_to_delete(active, count);
            self.expectations
                .expect_deletions(uid, doomed.iter().map(|p| p.uid.clone()));
            let results = join_all(doomed.iter().map(|pod| pods::delete(&self.store, pod))).await;
            for (pod, result) in doomed.iter().zip(results) {
                match result {
                    Ok(()) => self.events.normal(
                        NAME,
                        raw,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pod.name),
                    ),
                    Err(error) => {
                        self.expectations.deletion_observed(uid, &pod.uid);
                        self.events.warning(
                            NAME,
                            raw,
                            "FailedDelete",
                            format!("Error deleting: {error}"),
                        );
                    }
                }
            }
        }
        None
    }

    /// Writes the status when it changed; returns when to look again (a
    /// ready pod becomes available after minReadySeconds).
    async fn update_status(
        &self,
        key: &ObjectKey,
        raw: &Value,
        rs: &ReplicaSet,
        owned: &[Arc<PodInfo>],
        failure: Option<&str>,
    ) -> Result<Action, ControllerError> {
        let now = super::now();
        let min_ready = i64::from(rs.spec.min_ready_seconds.unwrap_or(0));
        let active: Vec<&Arc<PodInfo>> = owned.iter().filter(|p| p.is_active()).collect();
        let template_labels = &rs.spec.template.metadata.labels;
        let fully_labeled = active
            .iter()
            .filter(|p| {
                template_labels
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .count();
        let ready = active.iter().filter(|p| p.ready).count();
        let available = active
            .iter()
            .filter(|p| p.is_available(min_ready, now))
            .count();
        let mut next = Action::AwaitChange;
        if min_ready > 0 {
            for pod in active
                .iter()
                .filter(|p| p.ready && !p.is_available(min_ready, now))
            {
                let at = pod.ready_since.unwrap_or(now) + min_ready;
                let wait = u64::try_from((at - now).max(1)).unwrap_or(1);
                next = next.min(Action::RequeueAfter(Duration::from_secs(wait)));
            }
        }
        let old_status = raw.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut conditions: Vec<Value> = old_status["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "ReplicaFailure")
            .collect();
        if let Some(message) = failure {
            let previous = old_status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "ReplicaFailure"))
                .cloned();
            let since = previous
                .as_ref()
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
                .unwrap_or_else(|| super::format_time(now));
            conditions.push(json!({
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": message, "lastTransitionTime": since,
            }));
        }
        let mut status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs.metadata.generation.unwrap_or(1),
        });
        if !conditions.is_empty() {
            status["conditions"] = Value::Array(conditions);
        }
        if status != old_status {
            let precondition = Precondition::resource_version(
                rs.metadata
                    .resource_version
                    .as_deref()
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0),
            );
            match self.store.update_status(key, status, precondition).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(next)
    }
}

/// Sets the controller reference of an orphan pod (after reading it fresh);
/// returns it as owned, or `None` when it changed meanwhile.
pub(crate) async fn adopt(
    store: &Store,
    pod: &PodInfo,
    owner: &Value,
) -> Result<Option<Arc<PodInfo>>, ControllerError> {
    let key = pod.key();
    let Some(mut fresh) = store.get(&key).await? else {
        return Ok(None);
    };
    if super::controller_uid(&fresh).is_some() || fresh["metadata"]["uid"] != pod.uid.as_str() {
        return Ok(None);
    }
    let reference = super::controller_ref(owner);
    match fresh["metadata"]["ownerReferences"].as_array_mut() {
        Some(refs) => refs.push(reference),
        None => fresh["metadata"]["ownerReferences"] = json!([reference]),
    }
    let precondition = Precondition::resource_version(pod.resource_version);
    match store.update(&key, fresh, precondition).await {
        Ok(stored) => Ok(Some(Arc::new(PodInfo::from_value(&stored)))),
        Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Removes `owner_uid`'s reference from a pod whose labels stopped
/// matching.
pub(crate) async fn release(
    store: &Store,
    pod: &PodInfo,
    owner_uid: &str,
) -> Result<(), ControllerError> {
    let key = pod.key();
    let Some(mut fresh) = store.get(&key).await? else {
        return Ok(());
    };
    if let Some(refs) = fresh["metadata"]["ownerReferences"].as_array_mut() {
        refs.retain(|r| r["uid"] != owner_uid);
    }
    match store
        .update(
            &key,
            fresh,
            Precondition::resource_version(pod.resource_version),
        )
        .await
    {
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn phase_rank(phase: &str) -> u8 {
    match phase {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// Kubernetes' `ActivePodsWithRanks.Less`: which of two pods to delete
/// first (`Less` = delete sooner). `rank` is the number of the owner's
/// pods on the same node.
fn delete_first(a: &PodInfo, rank_a: usize, b: &PodInfo, rank_b: usize) -> Ordering {
    // 1. Unassigned before assigned.
    let assigned = |p: &PodInfo| p.node_name.is_some();
    assigned(a)
        .cmp(&assigned(b))
        // 2. Pending < Unknown < Running.
        .then_with(|| phase_rank(&a.phase).cmp(&phase_rank(&b.phase)))
        // 3. Not ready before ready.
        .then_with(|| a.ready.cmp(&b.ready))
        // 4. Doubled up on a node before alone.
        .then_with(|| rank_b.cmp(&rank_a))
        // 5. Ready for a shorter time before longer.
        .then_with(
            || match (a.ready && b.ready, a.ready_since, b.ready_since) {
                (true, Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            },
        )
        // 6. More restarts first.
        .then_with(|| b.restarts.cmp(&a.restarts))
        // 7. Newer first.
        .then_with(|| b.created.cmp(&a.created))
}

/// The `count` pods to delete first among `active`.
pub(crate) fn pods_to_delete(active: &[Arc<PodInfo>], count: usize) -> Vec<Arc<PodInfo>> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for pod in active {
        if let Some(node) = &pod.node_name {
            *per_node.entry(node.as_str()).or_default() += 1;
        }
    }
    let rank = |p: &PodInfo| p.node_name.as_deref().map_or(0, |n| per_node[n]);
    let mut ranked: Vec<(usize, &Arc<PodInfo>)> = active.iter().map(|p| (rank(p), p)).collect();
    ranked.sort_by(|(ra, a), (rb, b)| delete_first(a, *ra, b, *rb));
    ranked
        .into_iter()
        .take(count)
        .map(|(_, p)| p.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            namespace: "default".into(),
            name: name.into(),
            uid: name.into(),
            resource_version: 1,
            labels: BTreeMap::new(),
            owners: Vec::new(),
            created,
            deleting: None,
            node_name: node.map(str::to_string),
            phase: phase.into(),
            ready,
            ready_since: ready.then_some(created + 5),
            restarts: 0,
            no_execute_tolerations: Vec::new(),
            completion_index: None,
            exit_code: None,
            grace_seconds: 30,
        })
    }

    #[test]
    fn scale_down_deletes_in_kubernetes_order() {
        let pods = vec![
            pod("ready-old", Some("a"), "Running", true, 100),
            pod("ready-new", Some("b"), "Running", true, 200),
            pod("running-not-ready", Some("c"), "Running", false, 50),
            pod("pending", Some("d"), "Pending", false, 10),
            pod("unscheduled", None, "Pending", false, 5),
        ];
        let order: Vec<String> = pods_to_delete(&pods, 5)
            .iter()
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "running-not-ready",
                "ready-new",
                "ready-old"
            ]
        );
        // Two on one node: one of them goes before a pod alone on its node.
        let doubled = vec![
            pod("alone", Some("a"), "Running", true, 300),
            pod("twin-1", Some("b"), "Running", true, 100),
            pod("twin-2", Some("b"), "Running", true, 100),
        ];
        let first = &pods_to_delete(&doubled, 1)[0];
        assert!(first.name.starts_with("twin"), "{}", first.name);
    }
}
