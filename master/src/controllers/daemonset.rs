//! The DaemonSet controller (Kubernetes' `pkg/controller/daemon`): one pod
//! of `spec.template` on every eligible node.
//!
//! - Eligible (Kubernetes' `NodeShouldRunDaemonPod`): the node's labels
//!   satisfy the template's `nodeSelector`, and the pod tolerates the
//!   node's `NoSchedule` and `NoExecute` taints. A pod already there stays
//!   while it tolerates the `NoExecute` ones (`shouldContinueRunning`).
//! - Daemon pods get the tolerations Kubernetes adds to them
//!   (`AddOrUpdateDaemonPodTolerations`): `not-ready` and `unreachable`
//!   `NoExecute` without a time limit; `disk-pressure`, `memory-pressure`,
//!   `pid-pressure` and `unschedulable` `NoSchedule`;
//!   `network-unavailable` for host-network pods. So a cordoned node
//!   still runs its daemons and a node that goes offline never loses them.
//! - Bound directly: the pod is created with `spec.nodeName` (the scheduler
//!   leaves bound pods alone), labelled `controller-revision-hash` and
//!   `pod-template-generation` as Kubernetes labels daemon pods.
//! - Follows the nodes: a node that joins gets a pod, one whose labels or
//!   taints stop matching loses it, a removed node's pod is deleted. A
//!   failed daemon pod is deleted and replaced. More than one on a node:
//!   the extra ones go.
//! - Updates: `RollingUpdate` (the default) replaces old pods node by node
//!   within `maxUnavailable` (default 1) or, with `maxSurge`, starts the
//!   new pod first and deletes the old one once the new one is available;
//!   percentages of the desired count round up, as Kubernetes'. `OnDelete`
//!   only replaces pods the user deletes.
//! - Status `desiredNumberScheduled`, `currentNumberScheduled`,
//!   `numberMisscheduled`, `numberReady`, `numberAvailable`,
//!   `numberUnavailable`, `updatedNumberScheduled`, `observedGeneration`
//!   (what `kubectl rollout status daemonset/x` reads); events
//!   `SuccessfulCreate`, `SuccessfulDelete`, `FailedCreate`,
//!   `FailedDaemonPod`.
//! - History: a `ControllerRevision` per template (`{ds}-{hash}`, the
//!   patch that restores it, `revision` 1, 2, ...; a rollback renumbers the
//!   old one as the newest), at most `revisionHistoryLimit` old ones kept:
//!   what `kubectl rollout history|undo daemonset/x` read and apply.
//! - [`Expectations`] keep a slow cache from making it create twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bramble_common::api::{DaemonSet, Node, PodTemplateSpec, Taint, Toleration};
use bramble_common::meta::IntOrString;
use bramble_common::Kind;
use futures_util::future::join_all;
use serde_json::{json, Value};

use super::cache::{Cache, Change, PodInfo};
use super::runtime::{Action, Expectations, Reconciler};
use super::{deployment, pods, ControllerError};
use crate::events::EventRecorder;
use crate::scheduler::filter::tolerated;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// The event source of this controller.
pub const NAME: &str = "daemonset-controller";
/// The label with the hash of the template a daemon pod was made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The label with the DaemonSet generation a daemon pod was made at.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// The DaemonSet controller.
pub struct DaemonSetController {
    store: Store,
    cache: Cache,
    events: EventRecorder,
    expectations: Expectations,
}

impl DaemonSetController {
    /// The controller over `store`, reading `cache`.
    pub fn new(store: Store, cache: Cache, events: EventRecorder) -> DaemonSetController {
        DaemonSetController {
            store,
            cache,
            events,
            expectations: Expectations::default(),
        }
    }
}

/// The tolerations Kubernetes adds to every daemon pod.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let toleration = |key: &str, effect: &str| Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        value: None,
        effect: Some(effect.to_string()),
        toleration_seconds: None,
    };
    let mut list = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        list.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    list
}

/// The template with the daemon tolerations added (Kubernetes'
/// `AddOrUpdateTolerationInPodSpec`: one of the same key and effect is
/// replaced).
fn daemon_template(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    let host_network = template.spec.host_network == Some(true);
    for toleration in daemon_tolerations(host_network) {
        template
            .spec
            .tolerations
            .retain(|t| !(t.key == toleration.key && t.effect == toleration.effect));
        template.spec.tolerations.push(toleration);
    }
    template
}

/// Whether a daemon pod should run on `node` and whether one there may
/// stay (Kubernetes' `NodeShouldRunDaemonPod`).
fn node_should_run(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let labels = &node.metadata.labels;
    let selected = template
        .spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !selected {
        return (false, false);
    }
    let tolerations = &template.spec.tolerations;
    let untolerated = |effect: &str| -> bool {
        node.spec
            .taints
            .iter()
            .any(|t: &Taint| t.effect == effect && !tolerated(tolerations, t))
    };
    let may_stay = !untolerated("NoExecute");
    (may_stay && !untolerated("NoSchedule"), may_stay)
}

/// What a node's labels, taints or existence say to the DaemonSets.
fn node_fingerprint(node: Option<&Value>) -> Option<(Value, Value)> {
    node.map(|n| (n["metadata"]["labels"].clone(), n["spec"]["taints"].clone()))
}

/// The revision hash of a DaemonSet's template.
pub fn revision_hash(ds: &Value) -> String {
    let collisions = ds["status"]["collisionCount"].as_i64();
    deployment::template_hash(&ds["spec"]["template"], collisions)
}

/// What one reconcile decided for one node.
#[derive(Default)]
struct Plan {
    create_on: Vec<String>,
    delete: Vec<Arc<PodInfo>>,
}

impl Reconciler for DaemonSetController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn primary(&self) -> Kind {
        Kind::DaemonSet
    }

    fn keys_for(&self, change: &Change, cache: &Cache) -> Vec<ObjectKey> {
        match change.key.kind {
            Kind::DaemonSet => {
                if change.new.is_none() {
                    if let Some(old) = &change.old {
                        self.expectations.forget(&old.uid());
                    }
                }
                vec![change.key.clone()]
            }
            Kind::ControllerRevision => change
                .latest()
                .and_then(|c| c.object())
                .and_then(|r| {
                    r["metadata"]["ownerReferences"]
                        .as_array()?
                        .iter()
                        .find(|o| o["controller"] == true && o["kind"] == "DaemonSet")
                        .and_then(|o| o["name"].as_str())
                        .map(|name| {
                            ObjectKey::new(Kind::DaemonSet, change.key.namespace.clone(), name)
                        })
                })
                .into_iter()
                .collect(),
            Kind::Node => {
                let old =
                    node_fingerprint(change.old.as_ref().and_then(|c| c.object()).map(|v| &**v));
                let new =
                    node_fingerprint(change.new.as_ref().and_then(|c| c.object()).map(|v| &**v));
                if old == new {
                    return Vec::new();
                }
                cache.keys(Kind::DaemonSet)
            }
            Kind::Pod => {
                let old = change.old.as_ref().and_then(|c| c.pod());
                let new = change.new.as_ref().and_then(|c| c.pod());
                super::pods::observe_change(
                    &self.expectations,
                    old.map(|p| &**p),
                    new.map(|p| &**p),
                );
                super::pods::controller_keys(old.map(|p| &**p), new.map(|p| &**p), Kind::DaemonSet)
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        let Some(raw) = self.cache.get(key) else {
            return Ok(Action::AwaitChange);
        };
        let ds: DaemonSet =
            serde_json::from_value((*raw).clone()).map_err(|e| ControllerError::Malformed {
                object: key.to_string(),
                reason: e.to_string(),
            })?;
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let hash = revision_hash(&raw);
        let template = daemon_template(&ds.spec.template);
        let nodes: Vec<Node> = self
            .cache
            .list(Kind::Node, None)
            .iter()
            .filter_map(|n| serde_json::from_value((**n).clone()).ok())
            .collect();
        self.sync_history(&raw, &ds, &uid, &hash).await?;
        let owned = self.claim(&raw, &ds, &uid).await?;
        let mut by_node: HashMap<String, Vec<Arc<PodInfo>>> = HashMap::new();
        let mut unbound = Vec::new();
        for pod in &owned {
            match &pod.node_name {
                Some(node) => by_node.entry(node.clone()).or_default().push(pod.clone()),
                None => unbound.push(pod.clone()),
            }
        }
        let now = super::now();
        let min_ready = i64::from(ds.spec.min_ready_seconds.unwrap_or(0));
        let mut failure = None;
        if self.expectations.satisfied(&uid) {
            let mut plan = self.plan(&nodes, &template, &by_node, &hash);
            // A pod nobody bound, or on a node that is gone.
            plan.delete
                .extend(unbound.into_iter().filter(|p| p.deleting.is_none()));
            let known: std::collections::HashSet<&str> = nodes
                .iter()
                .filter_map(|n| n.metadata.name.as_deref())
                .collect();
            for (node, pods) in &by_node {
                if !known.contains(node.as_str()) {
                    plan.delete
                        .extend(pods.iter().filter(|p| p.deleting.is_none()).cloned());
                }
            }
            if plan.create_on.is_empty() && plan.delete.is_empty() {
                plan = self.rolling_update(&ds, &nodes, &template, &by_node, &hash, min_ready, now);
            }
            failure = self.execute(&raw, &ds, &uid, &hash, &template, plan).await;
        }
        let next = self
            .update_status(
                key, &raw, &ds, &nodes, &template, &by_node, &hash, min_ready, now,
            )
            .await?;
        Ok(match failure {
            Some(_) => Action::RequeueAfter(Duration::from_secs(10)).min(next),
            None => next,
        })
    }
}

/// The `revision` of a ControllerRevision.
fn revision_number(revision: &Value) -> i64 {
    revision["revision"].as_i64().unwrap_or(0)
}

/// The ControllerRevision of `ds`'s current template (Kubernetes'
/// `controller.history`): named `{ds}-{hash}`, labelled with the template's
/// labels and the hash, owned by the DaemonSet, holding the patch that puts
/// the template back (what `kubectl rollout undo` applies).
pub fn new_revision(ds: &Value, hash: &str, revision: i64) -> Value {
    let mut template = ds["spec"]["template"].clone();
    if let Some(map) = template.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    let mut labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), json!(hash));
    json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": format!("{}-{hash}", ds["metadata"]["name"].as_str().unwrap_or("")),
            "namespace": ds["metadata"]["namespace"],
            "labels": labels,
            "annotations": ds["metadata"]["annotations"]
                .get("kubernetes.io/change-cause")
                .map(|cause| json!({"kubernetes.io/change-cause": cause}))
                .unwrap_or_else(|| json!({})),
            "ownerReferences": [super::controller_ref(ds)],
        },
        "data": {"spec": {"template": template}},
        "revision": revision,
    })
}

impl DaemonSetController {
    /// Keeps the history: a ControllerRevision for the current template
    /// (created, or renumbered as the newest when a rollback went back to
    /// it), and at most `revisionHistoryLimit` (default 10) old ones that
    /// no pod uses.
    async fn sync_history(
        &self,
        raw: &Value,
        ds: &DaemonSet,
        uid: &str,
        hash: &str,
    ) -> Result<(), ControllerError> {
        let namespace = ds.metadata.namespace.clone().unwrap_or_default();
        let mut revisions = self.cache.controlled_by(Kind::ControllerRevision, uid);
        revisions.sort_by_key(|r| revision_number(r));
        let newest = revisions.last().map_or(0, |r| revision_number(r));
        let current = revisions
            .iter()
            .find(|r| r["metadata"]["labels"][REVISION_HASH_LABEL] == hash)
            .cloned();
        match current {
            None => {
                let revision = new_revision(raw, hash, newest + 1);
                let key = ObjectKey::new(
                    Kind::ControllerRevision,
                    namespace.clone(),
                    revision["metadata"]["name"].as_str().unwrap_or(""),
                );
                match self.store.create(&key, revision).await {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Some(revision) if revision_number(&revision) < newest => {
                // Rolled back to an old template: it becomes the newest.
                let mut renumbered = (*revision).clone();
                renumbered["revision"] = json!(newest + 1);
                let key = ObjectKey::new(
                    Kind::ControllerRevision,
                    namespace.clone(),
                    revision["metadata"]["name"].as_str().unwrap_or(""),
                );
                let rv = revision["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                match self
                    .store
                    .update(&key, renumbered, Precondition::resource_version(rv))
                    .await
                {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Some(_) => {}
        }
        // Prune: old revisions no live pod uses, beyond the limit.
        let limit =
            usize::try_from(ds.spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
        let in_use: std::collections::HashSet<String> = self
            .cache
            .pods_controlled_by(uid)
            .iter()
            .filter_map(|p| p.labels.get(REVISION_HASH_LABEL).cloned())
            .collect();
        let old: Vec<&Arc<Value>> = revisions
            .iter()
            .filter(|r| {
                let h = r["metadata"]["labels"][REVISION_HASH_LABEL]
                    .as_str()
                    .unwrap_or("");
                h != hash && !in_use.contains(h)
            })
            .collect();
        if old.len() > limit {
            for revision in &old[..old.len() - limit] {
                let key = ObjectKey::new(
                    Kind::ControllerRevision,
                    namespace.clone(),
                    revision["metadata"]["name"].as_str().unwrap_or(""),
                );
                let uid = revision["metadata"]["uid"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                match self.store.delete(&key, Precondition::uid(uid)).await {
                    Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    /// Adopts matching orphans, releases owned pods that stopped matching;
    /// returns the owned pods.
    async fn claim(
        &self,
        raw: &Value,
        ds: &DaemonSet,
        uid: &str,
    ) -> Result<Vec<Arc<PodInfo>>, ControllerError> {
        let namespace = ds.metadata.namespace.clone().unwrap_or_default();
        let mut owned = Vec::new();
        for pod in self.cache.pods_controlled_by(uid) {
            if pods::selects(&ds.spec.selector, &pod.labels) {
                owned.push(pod);
            } else if pod.deleting.is_none() {
                super::replicaset::release(&self.store, &pod, uid).await?;
            }
        }
        for pod in self.cache.orphan_pods_in(&namespace) {
            if pod.is_active() && pods::selects(&ds.spec.selector, &pod.labels) {
                if let Some(adopted) = super::replicaset::adopt(&self.store, &pod, raw).await? {
                    owned.push(adopted);
                }
            }
        }
        Ok(owned)
    }

    /// Kubernetes' `podsShouldBeOnNode` over every node: which nodes need
    /// a pod, which pods must go.
    fn plan(
        &self,
        nodes: &[Node],
        template: &PodTemplateSpec,
        by_node: &HashMap<String, Vec<Arc<PodInfo>>>,
        hash: &str,
    ) -> Plan {
        let mut plan = Plan::default();
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let (should_run, may_stay) = node_should_run(template, node);
            let pods: Vec<&Arc<PodInfo>> = by_node
                .get(&name)
                .map(|p| p.iter().collect())
                .unwrap_or_default();
            let live: Vec<&Arc<PodInfo>> = pods
                .iter()
                .copied()
                .filter(|p| p.deleting.is_none())
                .collect();
            if should_run {
                // A failed daemon pod is replaced (the next pass creates).
                let failed: Vec<&Arc<PodInfo>> = live
                    .iter()
                    .copied()
                    .filter(|p| p.phase == "Failed")
                    .collect();
                if !failed.is_empty() {
                    plan.delete.extend(failed.into_iter().cloned());
                    continue;
                }
                let running: Vec<&Arc<PodInfo>> = live
                    .iter()
                    .copied()
                    .filter(|p| p.phase != "Succeeded")
                    .collect();
                if running.is_empty() {
                    // Wait for a pod still being deleted before creating.
                    if pods
                        .iter()
                        .all(|p| p.deleting.is_none() || p.phase == "Succeeded")
                    {
                        plan.create_on.push(name);
                    }
                } else if running.len() > 1 {
                    // Keep one: a new-template one if any, the oldest first.
                    let mut sorted = running.clone();
                    sorted.sort_by_key(|p| {
                        (
                            p.labels.get(REVISION_HASH_LABEL).map(String::as_str) != Some(hash),
                            !p.ready,
                            p.created,
                        )
                    });
                    // With maxSurge an old and a new pod coexist on purpose:
                    // the rolling update decides about those.
                    let new_count = sorted
                        .iter()
                        .filter(|p| {
                            p.labels.get(REVISION_HASH_LABEL).map(String::as_str) == Some(hash)
                        })
                        .count();
                    let old_count = sorted.len() - new_count;
                    if new_count > 1 || old_count > 1 {
                        plan.delete.extend(sorted.into_iter().skip(1).cloned());
                    }
                }
            } else if !may_stay {
                plan.delete.extend(live.into_iter().cloned());
            }
        }
        plan
    }

    /// One step of the rolling update (Kubernetes' `rollingUpdate`).
    #[allow(clippy::too_many_arguments)]
    fn rolling_update(
        &self,
        ds: &DaemonSet,
        nodes: &[Node],
        template: &PodTemplateSpec,
        by_node: &HashMap<String, Vec<Arc<PodInfo>>>,
        hash: &str,
        min_ready: i64,
        now: i64,
    ) -> Plan {
        let mut plan = Plan::default();
        let strategy = ds.spec.update_strategy.clone().unwrap_or_default();
        if strategy.type_.as_deref() == Some("OnDelete") {
            return plan;
        }
        let desired: Vec<String> = nodes
            .iter()
            .filter(|n| node_should_run(template, n).0)
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let total = i64::try_from(desired.len()).unwrap_or(i64::MAX);
        let rolling = strategy.rolling_update.unwrap_or_default();
        let surge = deployment::scaled_value(rolling.max_surge.as_ref(), total, true);
        let default_unavailable = IntOrString::Int(1);
        let max_unavailable = match (rolling.max_unavailable.as_ref(), surge) {
            (Some(v), _) => deployment::scaled_value(Some(v), total, true),
            (None, 0) => deployment::scaled_value(Some(&default_unavailable), total, true),
            (None, _) => 0,
        };
        let max_unavailable = if max_unavailable == 0 && surge == 0 {
            1
        } else {
            max_unavailable
        };
        let is_new =
            |p: &PodInfo| p.labels.get(REVISION_HASH_LABEL).map(String::as_str) == Some(hash);
        let mut unavailable = 0i64;
        let mut old_available = Vec::new();
        let mut old_unavailable = Vec::new();
        let mut surging = 0i64;
        let mut surge_candidates = Vec::new();
        for name in &desired {
            let live: Vec<&Arc<PodInfo>> = by_node
                .get(name)
                .map(|p| p.iter().filter(|p| p.deleting.is_none()).collect())
                .unwrap_or_default();
            let new = live.iter().find(|p| is_new(p));
            let old = live.iter().find(|p| !is_new(p));
            match (old, new) {
                (None, None) => unavailable += 1,
                (None, Some(new)) => {
                    if !new.is_available(min_ready, now) {
                        unavailable += 1;
                    }
                }
                (Some(old), None) => {
                    if old.is_available(min_ready, now) {
                        old_available.push((*old).clone());
                        surge_candidates.push(name.clone());
                    } else {
                        unavailable += 1;
                        old_unavailable.push((*old).clone());
                    }
                }
                (Some(old), Some(new)) => {
                    surging += 1;
                    if new.is_available(min_ready, now) {
                        // The new pod took over: the old one goes.
                        plan.delete.push((*old).clone());
                    }
                }
            }
        }
        if surge > 0 {
            // New pods next to old ones, within the surge budget; old
            // unavailable pods are replaced at once.
            plan.delete.extend(old_unavailable);
            let budget = usize::try_from((surge - surging).max(0)).unwrap_or(0);
            plan.create_on
                .extend(surge_candidates.into_iter().take(budget));
            return plan;
        }
        // Old pods that are not available anyway go first, then available
        // ones within maxUnavailable.
        plan.delete.extend(old_unavailable);
        let budget = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
        old_available.sort_by_key(|p| p.node_name.clone());
        plan.delete.extend(old_available.into_iter().take(budget));
        plan
    }

    /// Creates and deletes what `plan` says; returns the creation error.
    async fn execute(
        &self,
        raw: &Value,
        ds: &DaemonSet,
        uid: &str,
        hash: &str,
        template: &PodTemplateSpec,
        plan: Plan,
    ) -> Option<String> {
        let namespace = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let mut failure = None;
        if !plan.create_on.is_empty() {
            let count = plan.create_on.len().min(pods::BURST);
            self.expectations.expect_creations(uid, count);
            let prefix = format!("{name}-");
            let labels = BTreeMap::from([
                (REVISION_HASH_LABEL.to_string(), hash.to_string()),
                (
                    TEMPLATE_GENERATION_LABEL.to_string(),
                    ds.metadata.generation.unwrap_or(1).to_string(),
                ),
            ]);
            let empty = BTreeMap::new();
            let created = pods::create_in_batches(&self.store, &namespace, count, |i| {
                let mut pod = pods::from_template(raw, template, &prefix, &labels, &empty);
                pod["spec"]["nodeName"] = json!(plan.create_on[i]);
                pod
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
                for _ in 0..count - created.pods.len() {
                    self.expectations.creation_observed(uid);
                }
                let message = format!("Error creating: {error}");
                self.events
                    .warning(NAME, raw, "FailedCreate", message.clone());
                failure = Some(message);
            }
        }
        if !plan.delete.is_empty() {
            let mut doomed = plan.delete;
            doomed.sort_by(|a, b| a.uid.cmp(&b.uid));
            doomed.dedup_by(|a, b| a.uid == b.uid);
            doomed.truncate(pods::BURST);
            self.expectations
                .expect_deletions(uid, doomed.iter().map(|p| p.uid.clone()));
            let results = join_all(doomed.iter().map(|pod| pods::delete(&self.store, pod))).await;
            for (pod, result) in doomed.iter().zip(results) {
                match result {
                    Ok(()) => {
                        if pod.phase == "Failed" {
                            self.events.warning(
                                NAME,
                                raw,
                                "FailedDaemonPod",
                                format!(
                                    "Found failed daemon pod {}/{} on node {}, will try to kill it",
                                    pod.namespace,
                                    pod.name,
                                    pod.node_name.as_deref().unwrap_or("")
                                ),
                            );
                        }
                        self.events.normal(
                            NAME,
                            raw,
                            "SuccessfulDelete",
                            format!("Deleted pod: {}", pod.name),
                        );
                    }
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
        failure
    }

    /// Writes the status when it changed; returns when to look again (a
    /// ready pod becomes available after minReadySeconds).
    #[allow(clippy::too_many_arguments)]
    async fn update_status(
        &self,
        key: &ObjectKey,
        raw: &Value,
        ds: &DaemonSet,
        nodes: &[Node],
        template: &PodTemplateSpec,
        by_node: &HashMap<String, Vec<Arc<PodInfo>>>,
        hash: &str,
        min_ready: i64,
        now: i64,
    ) -> Result<Action, ControllerError> {
        let mut desired = 0;
        let mut current = 0;
        let mut misscheduled = 0;
        let mut ready = 0;
        let mut available = 0;
        let mut updated = 0;
        let mut next = Action::AwaitChange;
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let (should_run, _) = node_should_run(template, node);
            let live: Vec<&Arc<PodInfo>> = by_node
                .get(&name)
                .map(|p| p.iter().filter(|p| p.deleting.is_none()).collect())
                .unwrap_or_default();
            if should_run {
                desired += 1;
                if !live.is_empty() {
                    current += 1;
                }
                // The newest pod of the node counts.
                if let Some(pod) = live.iter().max_by_key(|p| p.created) {
                    if pod.ready {
                        ready += 1;
                    }
                    if pod.is_available(min_ready, now) {
                        available += 1;
                    } else if pod.ready && min_ready > 0 {
                        let at = pod.ready_since.unwrap_or(now) + min_ready;
                        let wait = u64::try_from((at - now).max(1)).unwrap_or(1);
                        next = next.min(Action::RequeueAfter(Duration::from_secs(wait)));
                    }
                    if pod.labels.get(REVISION_HASH_LABEL).map(String::as_str) == Some(hash) {
                        updated += 1;
                    }
                }
            } else if !live.is_empty() {
                misscheduled += 1;
            }
        }
        let old_status = raw.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut status = json!({
            "currentNumberScheduled": current,
            "desiredNumberScheduled": desired,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": available,
            "updatedNumberScheduled": updated,
            "observedGeneration": ds.metadata.generation.unwrap_or(1),
        });
        if desired - available > 0 {
            status["numberUnavailable"] = json!(desired - available);
        }
        if let Some(count) = old_status.get("collisionCount").filter(|c| !c.is_null()) {
            status["collisionCount"] = count.clone();
        }
        if status != old_status {
            let precondition = Precondition::resource_version(
                ds.metadata
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)], taints: Value) -> Node {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "pi", "labels": labels},
            "spec": {"taints": taints}}))
        .expect("node")
    }

    fn template(spec: Value) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "agent"}}, "spec": spec}))
            .expect("template")
    }

    #[test]
    fn daemon_pods_follow_node_selectors_and_taints_with_the_kubernetes_tolerations() {
        let plain = daemon_template(&template(
            json!({"containers": [{"name": "c", "image": "i"}]}),
        ));
        let keys: Vec<(String, String)> = plain
            .spec
            .tolerations
            .iter()
            .map(|t| {
                (
                    t.key.clone().unwrap_or_default(),
                    t.effect.clone().unwrap_or_default(),
                )
            })
            .collect();
        for (key, effect) in [
            ("node.kubernetes.io/not-ready", "NoExecute"),
            ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ] {
            assert!(
                keys.contains(&(key.to_string(), effect.to_string())),
                "{key}"
            );
        }
        assert!(plain
            .spec
            .tolerations
            .iter()
            .all(|t| t.toleration_seconds.is_none()));
        // A cordoned or offline node keeps its daemons.
        let unreachable = node(
            &[],
            json!([
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert_eq!(node_should_run(&plain, &unreachable), (true, true));
        // Another NoSchedule taint: no new pod, an old one may stay.
        let dedicated = node(
            &[],
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        );
        assert_eq!(node_should_run(&plain, &dedicated), (false, true));
        let evicting = node(&[], json!([{"key": "dedicated", "effect": "NoExecute"}]));
        assert_eq!(node_should_run(&plain, &evicting), (false, false));
        // nodeSelector.
        let picky = daemon_template(&template(json!({"nodeSelector": {"sensor": "yes"},
            "containers": [{"name": "c", "image": "i"}]})));
        assert_eq!(
            node_should_run(&picky, &node(&[], json!([]))),
            (false, false)
        );
        assert_eq!(
            node_should_run(&picky, &node(&[("sensor", "yes")], json!([]))),
            (true, true)
        );
        // The template's own toleration of a NoSchedule taint.
        let tolerant = daemon_template(&template(json!({"tolerations": [
            {"key": "dedicated", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "i"}]})));
        assert_eq!(node_should_run(&tolerant, &dedicated), (true, true));
    }
}
