//! The Deployment controller (Kubernetes' `pkg/controller/deployment`):
//! rolls a Deployment's pods from one template to the next through
//! ReplicaSets.
//!
//! - The ReplicaSet of the current template is `{deployment}-{hash}` with
//!   the `pod-template-hash` label (in its selector and template) and the
//!   `deployment.kubernetes.io/revision`, `desired-replicas` and
//!   `max-replicas` annotations; the Deployment carries the revision too.
//!   A rollback to an older template reuses its ReplicaSet with a new
//!   revision, as Kubernetes does (so `kubectl rollout undo` works).
//! - `RollingUpdate`: `maxSurge` rounded up, `maxUnavailable` rounded down
//!   (both 0 makes unavailable 1), the new ReplicaSet scaled up within the
//!   surge, old ones down within the unavailability, unhealthy old pods
//!   first. `Recreate`: old to 0, wait until their pods are gone, new to
//!   the full count. A change of `spec.replicas` alone scales the
//!   ReplicaSets proportionally.
//! - `paused` stops the rollout (scaling still applies); old ReplicaSets
//!   past `revisionHistoryLimit` are deleted, oldest revision first.
//! - Status exactly as `kubectl rollout status` reads it, with the
//!   `Available` and `Progressing` conditions (`NewReplicaSetCreated`,
//!   `FoundNewReplicaSet`, `ReplicaSetUpdated`, `NewReplicaSetAvailable`,
//!   `ProgressDeadlineExceeded`, `DeploymentPaused`, `DeploymentResumed`);
//!   events `ScalingReplicaSet`.

use std::collections::BTreeMap;
use std::time::Duration;

use bramble_common::api::Deployment;
use bramble_common::meta::IntOrString;
use bramble_common::Kind;
use serde_json::{json, Value};

use super::cache::{Cache, Change};
use super::runtime::{Action, Reconciler};
use super::ControllerError;
use crate::events::EventRecorder;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// The event source of this controller.
pub const NAME: &str = "deployment-controller";
/// The label that tells a Deployment's ReplicaSets apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Revisions a ReplicaSet had before (a template rolled back to).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last sized the ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment then.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations of a Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// The Deployment controller.
pub struct DeploymentController {
    store: Store,
    cache: Cache,
    events: EventRecorder,
}

impl DeploymentController {
    /// The controller over `store`, reading `cache`.
    pub fn new(store: Store, cache: Cache, events: EventRecorder) -> DeploymentController {
        DeploymentController {
            store,
            cache,
            events,
        }
    }
}

/// One of the Deployment's ReplicaSets, as the rollout sees it.
#[derive(Debug, Clone)]
struct Rs {
    key: ObjectKey,
    raw: Value,
    name: String,
    uid: String,
    replicas: i64,
    status_replicas: i64,
    ready: i64,
    available: i64,
    revision: i64,
    created: i64,
}

impl Rs {
    fn from_value(raw: &Value) -> Rs {
        let meta = &raw["metadata"];
        let name = meta["name"].as_str().unwrap_or("").to_string();
        Rs {
            key: ObjectKey::new(
                Kind::ReplicaSet,
                meta["namespace"].as_str().unwrap_or(""),
                name.clone(),
            ),
            raw: raw.clone(),
            name,
            uid: meta["uid"].as_str().unwrap_or("").to_string(),
            replicas: raw["spec"]["replicas"].as_i64().unwrap_or(1),
            status_replicas: raw["status"]["replicas"].as_i64().unwrap_or(0),
            ready: raw["status"]["readyReplicas"].as_i64().unwrap_or(0),
            available: raw["status"]["availableReplicas"].as_i64().unwrap_or(0),
            revision: revision_of(raw),
            created: super::parse_time(&meta["creationTimestamp"]).unwrap_or(0),
        }
    }

    fn annotation(&self, name: &str) -> Option<&str> {
        self.raw["metadata"]["annotations"][name].as_str()
    }
}

fn revision_of(object: &Value) -> i64 {
    object["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template without the `pod-template-hash` label, to compare a
/// ReplicaSet's with the Deployment's (Kubernetes' `EqualIgnoreHash`).
fn template_ignoring_hash(template: &Value) -> Value {
    let mut template = without_empty(template);
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(meta) = template["metadata"].as_object_mut() {
                meta.remove("labels");
            }
        }
    }
    template
}

/// `value` without nulls, empty objects and empty lists in its objects:
/// Kubernetes compares templates as Go structs, where `resources: {}` and no
/// `resources` are the same (kubectl's `rollout undo` sends the former).
fn without_empty(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), without_empty(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Object(m) => !m.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_empty).collect()),
        other => other.clone(),
    }
}

/// FNV-1a, 32 bits (Kubernetes hashes templates with it).
fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The `pod-template-hash` of a template: FNV-1a of the template and the
/// collision count, written as Kubernetes' `SafeEncodeString` of its
/// decimal form (consonants and digits only, never a word).
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut bytes = serde_json::to_vec(&without_empty(template)).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&u32::try_from(count).unwrap_or(0).to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    fnv32a(&bytes)
        .to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// Kubernetes' `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(value: Option<&IntOrString>, total: i64, round_up: bool) -> i64 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let product = percent * total;
            if round_up {
                (product + 99) / 100
            } else {
                product / 100
            }
        }
    }
}

/// (maxSurge, maxUnavailable) of a Deployment: Kubernetes'
/// `ResolveFenceposts`, 0 and 0 for `Recreate`.
pub fn surge_and_unavailable(d: &Deployment) -> (i64, i64) {
    let replicas = i64::from(d.spec.replicas.unwrap_or(1));
    let strategy = d.spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, 0);
    }
    let default = IntOrString::String("25%".into());
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = scaled_value(
        Some(
            rolling
                .and_then(|r| r.max_surge.as_ref())
                .unwrap_or(&default),
        ),
        replicas,
        true,
    );
    let mut unavailable = scaled_value(
        Some(
            rolling
                .and_then(|r| r.max_unavailable.as_ref())
                .unwrap_or(&default),
        ),
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// A deployment condition as Kubernetes' `NewDeploymentCondition` makes it.
fn condition(type_: &str, status: &str, reason: &str, message: String, now: &str) -> Value {
    json!({
        "type": type_, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
        "reason": reason, "message": message,
    })
}

/// Kubernetes' `SetDeploymentCondition`: nothing when status and reason
/// are the same; the transition time kept when only the reason changed.
fn set_condition(conditions: &mut Vec<Value>, mut new: Value) {
    if let Some(current) = conditions.iter().find(|c| c["type"] == new["type"]) {
        if current["status"] == new["status"] && current["reason"] == new["reason"] {
            return;
        }
        if current["status"] == new["status"] {
            new["lastTransitionTime"] = current["lastTransitionTime"].clone();
        }
    }
    conditions.retain(|c| c["type"] != new["type"]);
    conditions.push(new);
}

fn get_condition<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| c["type"] == type_)
}

/// One reconcile's view of a Deployment and its ReplicaSets.
struct Rollout {
    d: Deployment,
    raw: Value,
    key: ObjectKey,
    new_rs: Option<Rs>,
    old: Vec<Rs>,
    /// The Deployment's object (metadata) changed: annotations to write.
    object_changed: bool,
    /// Conditions carried into the status write (set while creating the
    /// new ReplicaSet, before the status is computed).
    conditions: Vec<Value>,
    collision_count: Option<i64>,
    now: String,
}

impl Rollout {
    fn replicas(&self) -> i64 {
        i64::from(self.d.spec.replicas.unwrap_or(1))
    }

    fn all(&self) -> impl Iterator<Item = &Rs> {
        self.old.iter().chain(self.new_rs.iter())
    }
}

impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn primary(&self) -> Kind {
        Kind::Deployment
    }

    fn keys_for(&self, change: &Change, cache: &Cache) -> Vec<ObjectKey> {
        match change.key.kind {
            Kind::Deployment => vec![change.key.clone()],
            Kind::ReplicaSet => {
                let mut keys = Vec::new();
                for cached in change.old.iter().chain(change.new.iter()) {
                    let Some(rs) = cached.object() else { continue };
                    match deployment_of(rs) {
                        Some(name) => keys.push(ObjectKey::new(
                            Kind::Deployment,
                            change.key.namespace.clone(),
                            name,
                        )),
                        None if super::controller_uid(rs).is_none() => {
                            // An orphan: the Deployments that may adopt it.
                            let labels = super::labels_of(rs);
                            for d in cache.list(Kind::Deployment, Some(&change.key.namespace)) {
                                if super::pods::selects(&super::pods::selector_of(&d), &labels) {
                                    keys.push(ObjectKey::new(
                                        Kind::Deployment,
                                        change.key.namespace.clone(),
                                        d["metadata"]["name"].as_str().unwrap_or(""),
                                    ));
                                }
                            }
                        }
                        None => {}
                    }
                }
                keys.sort();
                keys.dedup();
                keys
            }
            // Recreate waits for the old pods to be gone.
            Kind::Pod => {
                let gone = change
                    .new
                    .as_ref()
                    .and_then(|c| c.pod())
                    .is_none_or(|p| !p.is_active());
                let Some(pod) = change.old.as_ref().and_then(|c| c.pod()) else {
                    return Vec::new();
                };
                let Some(owner) = pod.controller().filter(|o| o.kind == "ReplicaSet") else {
                    return Vec::new();
                };
                if !gone {
                    return Vec::new();
                }
                cache
                    .get(&ObjectKey::new(
                        Kind::ReplicaSet,
                        pod.namespace.clone(),
                        owner.name.clone(),
                    ))
                    .and_then(|rs| deployment_of(&rs))
                    .map(|d| vec![ObjectKey::new(Kind::Deployment, pod.namespace.clone(), d)])
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        let Some(raw) = self.cache.get(key) else {
            return Ok(Action::AwaitChange);
        };
        let d: Deployment =
            serde_json::from_value((*raw).clone()).map_err(|e| ControllerError::Malformed {
                object: key.to_string(),
                reason: e.to_string(),
            })?;
        let mut rollout = self.load(key, &raw, d).await?;
        if rollout.d.metadata.deletion_timestamp.is_some() {
            return self.sync_status(&mut rollout, false).await;
        }
        self.check_paused(&mut rollout);
        let paused = rollout.d.spec.paused == Some(true);
        if paused || self.is_scaling_event(&rollout) {
            // Scale only: proportionally, no rollout.
            self.find_new(&mut rollout, false).await?;
            self.scale(&mut rollout).await?;
            if paused {
                self.cleanup(&rollout).await?;
            }
            return self.sync_status(&mut rollout, false).await;
        }
        if is_recreate(&rollout.d) {
            self.recreate(&mut rollout).await
        } else {
            self.rolling(&mut rollout).await
        }
    }
}

/// The name of the Deployment controlling `rs`, if one does.
fn deployment_of(rs: &Value) -> Option<String> {
    rs["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| {
            r["controller"] == true && r["kind"] == "Deployment" && r["apiVersion"] == "apps/v1"
        })
        .and_then(|r| r["name"].as_str())
        .map(str::to_string)
}

impl DeploymentController {
    /// Reads the Deployment's ReplicaSets (adopting matching orphans,
    /// releasing those that stopped matching) and splits them into the
    /// new one and the old ones.
    async fn load(
        &self,
        key: &ObjectKey,
        raw: &Value,
        d: Deployment,
    ) -> Result<Rollout, ControllerError> {
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let selector = d.spec.selector.clone();
        let mut sets: Vec<Rs> = Vec::new();
        for rs in self.cache.controlled_by(Kind::ReplicaSet, &uid) {
            if super::pods::selects(&selector, &super::labels_of(&rs)) {
                sets.push(Rs::from_value(&rs));
            } else if rs["metadata"]["deletionTimestamp"].is_null() {
                let mut released = (*rs).clone();
                if let Some(refs) = released["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid.as_str());
                }
                self.write_rs(&Rs::from_value(&rs), released).await?;
            }
        }
        if d.metadata.deletion_timestamp.is_none() {
            for rs in self.cache.list(Kind::ReplicaSet, Some(&key.namespace)) {
                if super::controller_uid(&rs).is_none()
                    && rs["metadata"]["deletionTimestamp"].is_null()
                    && super::pods::selects(&selector, &super::labels_of(&rs))
                {
                    let mut adopted = (*rs).clone();
                    let reference = super::controller_ref(raw);
                    match adopted["metadata"]["ownerReferences"].as_array_mut() {
                        Some(refs) => refs.push(reference),
                        None => adopted["metadata"]["ownerReferences"] = json!([reference]),
                    }
                    let stored = self.write_rs(&Rs::from_value(&rs), adopted).await?;
                    sets.push(Rs::from_value(&stored));
                }
            }
        }
        let template = template_ignoring_hash(&raw["spec"]["template"]);
        // The oldest ReplicaSet with the current template is the new one.
        sets.sort_by_key(|rs| (rs.created, rs.name.clone()));
        let new_index = sets
            .iter()
            .position(|rs| template_ignoring_hash(&rs.raw["spec"]["template"]) == template);
        let new_rs = new_index.map(|i| sets.remove(i));
        let collision_count = raw["status"]["collisionCount"].as_i64();
        let conditions = raw["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(Rollout {
            d,
            raw: raw.clone(),
            key: key.clone(),
            new_rs,
            old: sets,
            object_changed: false,
            conditions,
            collision_count,
            now: super::format_time(super::now()),
        })
    }

    /// Writes a ReplicaSet under a resourceVersion precondition.
    async fn write_rs(&self, rs: &Rs, object: Value) -> Result<Value, ControllerError> {
        let precondition = Precondition::resource_version(
            rs.raw["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        );
        Ok(self.store.update(&rs.key, object, precondition).await?)
    }

    /// Kubernetes' `checkPausedConditions`.
    fn check_paused(&self, rollout: &mut Rollout) {
        if !has_progress_deadline(&rollout.d) {
            return;
        }
        let current = get_condition(&rollout.conditions, "Progressing");
        if current.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
            return;
        }
        let paused_condition = current.is_some_and(|c| c["reason"] == "DeploymentPaused");
        let paused = rollout.d.spec.paused == Some(true);
        let now = rollout.now.clone();
        if paused && !paused_condition {
            set_condition(
                &mut rollout.conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                    &now,
                ),
            );
        } else if !paused && paused_condition {
            set_condition(
                &mut rollout.conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                    &now,
                ),
            );
        }
    }

    /// Kubernetes' `isScalingEvent`: an active ReplicaSet was sized for
    /// another `spec.replicas`.
    fn is_scaling_event(&self, rollout: &Rollout) -> bool {
        let replicas = rollout.replicas().to_string();
        rollout.all().filter(|rs| rs.replicas > 0).any(|rs| {
            rs.annotation(DESIRED_REPLICAS)
                .is_some_and(|d| d != replicas)
        })
    }

    /// Finds (and annotates) the new ReplicaSet, creating it when `create`
    /// and there is none (Kubernetes' `getNewReplicaSet`).
    async fn find_new(&self, rollout: &mut Rollout, create: bool) -> Result<(), ControllerError> {
        let max_old = rollout.old.iter().map(|rs| rs.revision).max().unwrap_or(0);
        let new_revision = max_old + 1;
        let (surge, _) = surge_and_unavailable(&rollout.d);
        let replicas = rollout.replicas();
        if let Some(rs) = rollout.new_rs.clone() {
            let mut updated = rs.raw.clone();
            let mut changed = copy_annotations(&rollout.raw, &mut updated);
            changed |= set_revision(&mut updated, new_revision);
            let min_ready = rollout.raw["spec"]["minReadySeconds"].clone();
            if updated["spec"]["minReadySeconds"] != min_ready {
                set_or_remove(&mut updated["spec"], "minReadySeconds", min_ready);
                changed = true;
            }
            if changed {
                let stored = self.write_rs(&rs, updated).await?;
                rollout.new_rs = Some(Rs::from_value(&stored));
            }
            let revision = rollout
                .new_rs
                .as_ref()
                .map_or(new_revision, |rs| rs.revision);
            self.set_deployment_revision(rollout, revision);
            if has_progress_deadline(&rollout.d)
                && get_condition(&rollout.conditions, "Progressing").is_none()
            {
                let now = rollout.now.clone();
                set_condition(
                    &mut rollout.conditions,
                    condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set {:?}", rs.name),
                        &now,
                    ),
                );
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let template = rollout.raw["spec"]["template"].clone();
        let hash = template_hash(&template, rollout.collision_count);
        let name = format!("{}-{hash}", rollout.key.name);
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = rollout.raw["spec"]["selector"].clone();
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        // Sized as Kubernetes' NewRSNewReplicas with the new set at 0.
        let count = if is_recreate(&rollout.d) {
            replicas
        } else {
            let current: i64 = rollout.old.iter().map(|rs| rs.replicas).sum();
            let room = (replicas + surge - current).max(0);
            room.min(replicas)
        };
        let mut rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": rollout.key.namespace,
                "labels": rs_template["metadata"]["labels"],
                "ownerReferences": [super::controller_ref(&rollout.raw)],
            },
            "spec": {
                "replicas": count,
                "selector": selector,
                "template": rs_template,
            },
        });
        if let Some(min_ready) = rollout.raw["spec"]["minReadySeconds"].as_i64() {
            rs["spec"]["minReadySeconds"] = json!(min_ready);
        }
        copy_annotations(&rollout.raw, &mut rs);
        set_revision(&mut rs, new_revision);
        set_replica_annotations(&mut rs, replicas, replicas + surge);
        let key = ObjectKey::new(
            Kind::ReplicaSet,
            rollout.key.namespace.clone(),
            name.clone(),
        );
        let created = match self.store.create(&key, rs).await {
            Ok(created) => {
                if count > 0 {
                    self.events.normal(
                        NAME,
                        &rollout.raw,
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {count}"),
                    );
                }
                if has_progress_deadline(&rollout.d) {
                    let now = rollout.now.clone();
                    set_condition(
                        &mut rollout.conditions,
                        condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetCreated",
                            format!("Created new replica set {name:?}"),
                            &now,
                        ),
                    );
                }
                created
            }
            Err(StoreError::AlreadyExists { .. }) => {
                let existing = self.store.get(&key).await?;
                match existing {
                    Some(existing)
                        if template_ignoring_hash(&existing["spec"]["template"])
                            == template_ignoring_hash(&template)
                            && super::controller_uid(&existing)
                                == rollout.d.metadata.uid.as_deref() =>
                    {
                        existing
                    }
                    _ => {
                        // A hash collision: the next name.
                        rollout.collision_count = Some(rollout.collision_count.unwrap_or(0) + 1);
                        self.sync_status(rollout, false).await?;
                        return Err(ControllerError::Store(StoreError::AlreadyExists { key }));
                    }
                }
            }
            Err(error) => return Err(error.into()),
        };
        let rs = Rs::from_value(&created);
        self.set_deployment_revision(rollout, rs.revision);
        rollout.new_rs = Some(rs);
        Ok(())
    }

    fn set_deployment_revision(&self, rollout: &mut Rollout, revision: i64) {
        let revision = revision.to_string();
        if rollout.raw["metadata"]["annotations"][REVISION].as_str() != Some(revision.as_str()) {
            if !rollout.raw["metadata"]["annotations"].is_object() {
                rollout.raw["metadata"]["annotations"] = json!({});
            }
            rollout.raw["metadata"]["annotations"][REVISION] = json!(revision);
            rollout.object_changed = true;
        }
    }

    /// Sets a ReplicaSet's size (and its replica annotations); returns
    /// whether the size changed.
    async fn scale_rs(
        &self,
        rollout: &mut Rollout,
        rs: &Rs,
        size: i64,
    ) -> Result<bool, ControllerError> {
        let size = size.max(0);
        let (surge, _) = surge_and_unavailable(&rollout.d);
        let replicas = rollout.replicas();
        let mut updated = rs.raw.clone();
        let annotations_changed = set_replica_annotations(&mut updated, replicas, replicas + surge);
        let size_changed = rs.replicas != size;
        if !size_changed && !annotations_changed {
            return Ok(false);
        }
        updated["spec"]["replicas"] = json!(size);
        let stored = Rs::from_value(&self.write_rs(rs, updated).await?);
        if size_changed {
            let direction = if size > rs.replicas { "up" } else { "down" };
            self.events.normal(
                NAME,
                &rollout.raw,
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {} to {size}",
                    rs.name, rs.replicas
                ),
            );
        }
        if rollout.new_rs.as_ref().is_some_and(|n| n.uid == stored.uid) {
            rollout.new_rs = Some(stored);
        } else if let Some(old) = rollout.old.iter_mut().find(|o| o.uid == stored.uid) {
            *old = stored;
        }
        Ok(size_changed)
    }

    /// Kubernetes' `scale`: one active ReplicaSet takes the whole count;
    /// several share a change of `spec.replicas` in proportion to their size.
    async fn scale(&self, rollout: &mut Rollout) -> Result<(), ControllerError> {
        let replicas = rollout.replicas();
        let mut all: Vec<Rs> = rollout.all().cloned().collect();
        if all.is_empty() {
            return Ok(());
        }
        let active: Vec<Rs> = all.iter().filter(|rs| rs.replicas > 0).cloned().collect();
        let single = match active.len() {
            0 => rollout.new_rs.clone().or_else(|| {
                all.sort_by_key(|rs| std::cmp::Reverse(rs.created));
                all.first().cloned()
            }),
            1 => active.first().cloned(),
            _ => None,
        };
        if let Some(rs) = single {
            if rs.replicas != replicas {
                self.scale_rs(rollout, &rs, replicas).await?;
            }
            return Ok(());
        }
        let saturated = rollout.new_rs.as_ref().is_some_and(|rs| {
            rs.annotation(DESIRED_REPLICAS) == Some(replicas.to_string().as_str())
                && rs.replicas == replicas
                && rs.available == replicas
        });
        if saturated {
            for rs in rollout.old.clone().iter().filter(|rs| rs.replicas > 0) {
                self.scale_rs(rollout, rs, 0).await?;
            }
            return Ok(());
        }
        if is_recreate(&rollout.d) {
            return Ok(());
        }
        let (surge, _) = surge_and_unavailable(&rollout.d);
        let allowed = if replicas > 0 { replicas + surge } else { 0 };
        let mut active = active;
        let total: i64 = active.iter().map(|rs| rs.replicas).sum();
        let to_add = allowed - total;
        if to_add > 0 {
            active.sort_by(|a, b| b.replicas.cmp(&a.replicas).then(b.created.cmp(&a.created)));
        } else {
            active.sort_by(|a, b| b.replicas.cmp(&a.replicas).then(a.created.cmp(&b.created)));
        }
        let mut added = 0;
        let mut sizes: Vec<i64> = Vec::new();
        for rs in &active {
            let proportion = if to_add == 0 || to_add == added {
                0
            } else {
                let annotated = rs
                    .annotation(MAX_REPLICAS)
                    .and_then(|m| m.parse::<i64>().ok())
                    .unwrap_or_else(|| rollout.raw["status"]["replicas"].as_i64().unwrap_or(0));
                let fraction = if replicas == 0 {
                    -rs.replicas
                } else if annotated == 0 {
                    0
                } else {
                    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
                    let size = ((rs.replicas * allowed) as f64 / annotated as f64).round() as i64;
                    size - rs.replicas
                };
                let left = to_add - added;
                if to_add > 0 {
                    fraction.min(left)
                } else {
                    fraction.max(left)
                }
            };
            sizes.push(rs.replicas + proportion);
            added += proportion;
        }
        if to_add != 0 {
            if let Some(first) = sizes.first_mut() {
                *first = (*first + to_add - added).max(0);
            }
        }
        for (rs, size) in active.iter().zip(sizes) {
            self.scale_rs(rollout, rs, size).await?;
        }
        Ok(())
    }

    /// Kubernetes' `rolloutRolling`.
    async fn rolling(&self, rollout: &mut Rollout) -> Result<Action, ControllerError> {
        self.find_new(rollout, true).await?;
        let replicas = rollout.replicas();
        let (surge, unavailable) = surge_and_unavailable(&rollout.d);
        // Scale the new ReplicaSet up within the surge.
        if let Some(new_rs) = rollout.new_rs.clone() {
            let target = if new_rs.replicas > replicas {
                Some(replicas)
            } else if new_rs.replicas < replicas {
                let current: i64 = rollout.all().map(|rs| rs.replicas).sum();
                let max_total = replicas + surge;
                (current < max_total).then(|| {
                    new_rs.replicas + (max_total - current).min(replicas - new_rs.replicas)
                })
            } else {
                None
            };
            if let Some(target) = target.filter(|t| *t != new_rs.replicas) {
                self.scale_rs(rollout, &new_rs, target).await?;
                return self.sync_status(rollout, true).await;
            }
        }
        // Scale the old ones down within the unavailability.
        let old_count: i64 = rollout.old.iter().map(|rs| rs.replicas).sum();
        if old_count > 0 {
            let all_count: i64 = rollout.all().map(|rs| rs.replicas).sum();
            let min_available = replicas - unavailable;
            let new_unavailable = rollout
                .new_rs
                .as_ref()
                .map_or(0, |rs| rs.replicas - rs.available);
            let max_scaled_down = all_count - min_available - new_unavailable;
            if max_scaled_down > 0 {
                let mut scaled = 0;
                let mut old = rollout.old.clone();
                old.sort_by_key(|rs| (rs.created, rs.name.clone()));
                // Unhealthy replicas first.
                for rs in &old {
                    if scaled >= max_scaled_down {
                        break;
                    }
                    if rs.replicas == 0 || rs.replicas == rs.available {
                        continue;
                    }
                    let down = (max_scaled_down - scaled).min(rs.replicas - rs.available);
                    self.scale_rs(rollout, rs, rs.replicas - down).await?;
                    scaled += down;
                }
                // Then available ones, oldest first, keeping minAvailable.
                let available: i64 = rollout.all().map(|rs| rs.available.min(rs.replicas)).sum();
                if available > min_available {
                    let total = available - min_available;
                    let mut done = 0;
                    let mut old = rollout.old.clone();
                    old.sort_by_key(|rs| (rs.created, rs.name.clone()));
                    for rs in &old {
                        if done >= total {
                            break;
                        }
                        if rs.replicas == 0 {
                            continue;
                        }
                        let down = rs.replicas.min(total - done);
                        self.scale_rs(rollout, rs, rs.replicas - down).await?;
                        done += down;
                    }
                    scaled += done;
                }
                if scaled > 0 {
                    return self.sync_status(rollout, true).await;
                }
            }
        }
        self.cleanup_if_complete(rollout).await?;
        self.sync_status(rollout, true).await
    }

    /// Kubernetes' `rolloutRecreate`.
    async fn recreate(&self, rollout: &mut Rollout) -> Result<Action, ControllerError> {
        self.find_new(rollout, false).await?;
        let mut scaled_down = false;
        for rs in rollout.old.clone().iter().filter(|rs| rs.replicas > 0) {
            scaled_down |= self.scale_rs(rollout, rs, 0).await?;
        }
        if scaled_down {
            return self.sync_status(rollout, true).await;
        }
        let old_running = rollout.old.iter().any(|rs| {
            rs.status_replicas > 0
                || self
                    .cache
                    .pods_controlled_by(&rs.uid)
                    .iter()
                    .any(|p| p.phase != "Succeeded" && p.phase != "Failed")
        });
        if old_running {
            return self.sync_status(rollout, true).await;
        }
        if rollout.new_rs.is_none() {
            self.find_new(rollout, true).await?;
        }
        if let Some(new_rs) = rollout.new_rs.clone() {
            let replicas = rollout.replicas();
            self.scale_rs(rollout, &new_rs, replicas).await?;
        }
        self.cleanup_if_complete(rollout).await?;
        self.sync_status(rollout, true).await
    }

    async fn cleanup_if_complete(&self, rollout: &Rollout) -> Result<(), ControllerError> {
        let replicas = rollout.replicas();
        let complete = rollout
            .new_rs
            .as_ref()
            .is_some_and(|rs| rs.status_replicas == replicas && rs.available == replicas)
            && rollout.old.iter().all(|rs| rs.status_replicas == 0);
        if complete {
            self.cleanup(rollout).await?;
        }
        Ok(())
    }

    /// Deletes old ReplicaSets past `revisionHistoryLimit`, oldest revision
    /// first, only those with no pods left.
    async fn cleanup(&self, rollout: &Rollout) -> Result<(), ControllerError> {
        let limit = i64::from(rollout.d.spec.revision_history_limit.unwrap_or(10));
        let mut cleanable: Vec<&Rs> = rollout
            .old
            .iter()
            .filter(|rs| rs.raw["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let excess = i64::try_from(cleanable.len()).unwrap_or(0) - limit;
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| (rs.revision, rs.created));
        for rs in cleanable
            .into_iter()
            .take(usize::try_from(excess).unwrap_or(0))
        {
            let observed = rs.raw["status"]["observedGeneration"].as_i64().unwrap_or(0);
            let generation = rs.raw["metadata"]["generation"].as_i64().unwrap_or(1);
            if rs.status_replicas != 0 || rs.replicas != 0 || generation > observed {
                continue;
            }
            match self
                .store
                .delete(&rs.key, Precondition::uid(rs.uid.clone()))
                .await
            {
                Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Computes the status (Kubernetes' `calculateStatus`, plus the
    /// progress conditions of `syncRolloutStatus` when `rolling_out`) and
    /// writes it, with the Deployment's annotations, when it changed.
    async fn sync_status(
        &self,
        rollout: &mut Rollout,
        rolling_out: bool,
    ) -> Result<Action, ControllerError> {
        let replicas = rollout.replicas();
        let (_, unavailable) = surge_and_unavailable(&rollout.d);
        let total: i64 = rollout.all().map(|rs| rs.replicas).sum();
        let actual: i64 = rollout.all().map(|rs| rs.status_replicas).sum();
        let ready: i64 = rollout.all().map(|rs| rs.ready).sum();
        let available: i64 = rollout.all().map(|rs| rs.available).sum();
        let updated = rollout.new_rs.as_ref().map_or(0, |rs| rs.status_replicas);
        let generation = rollout.d.metadata.generation.unwrap_or(1);
        let now = rollout.now.clone();
        let mut conditions = rollout.conditions.clone();
        let max_unavailable = if is_recreate(&rollout.d) {
            0
        } else {
            unavailable
        };
        if available >= replicas - max_unavailable {
            set_condition(
                &mut conditions,
                condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                    &now,
                ),
            );
        } else {
            set_condition(
                &mut conditions,
                condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                    &now,
                ),
            );
        }
        let mut next = Action::AwaitChange;
        let old_status = rollout.raw["status"].clone();
        let field = |name: &str| old_status[name].as_i64().unwrap_or(0);
        if rolling_out && has_progress_deadline(&rollout.d) {
            let current = get_condition(&conditions, "Progressing").cloned();
            let complete_before = actual == updated
                && current
                    .as_ref()
                    .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
            let new_name = rollout
                .new_rs
                .as_ref()
                .map_or_else(|| rollout.key.name.clone(), |rs| rs.name.clone());
            let what = if rollout.new_rs.is_some() {
                "ReplicaSet"
            } else {
                "Deployment"
            };
            if !complete_before {
                let complete = updated == replicas && actual == replicas && available == replicas;
                let progressing = updated > field("updatedReplicas")
                    || (actual - updated) < (field("replicas") - field("updatedReplicas"))
                    || ready > field("readyReplicas")
                    || available > field("availableReplicas");
                let deadline = i64::from(rollout.d.spec.progress_deadline_seconds.unwrap_or(600));
                if complete {
                    set_condition(
                        &mut conditions,
                        condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetAvailable",
                            format!("{what} {new_name:?} has successfully progressed."),
                            &now,
                        ),
                    );
                } else if progressing {
                    let mut new = condition(
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        format!("{what} {new_name:?} is progressing."),
                        &now,
                    );
                    if let Some(current) = &current {
                        if current["status"] == "True" {
                            new["lastTransitionTime"] = current["lastTransitionTime"].clone();
                        }
                    }
                    conditions.retain(|c| c["type"] != "Progressing");
                    conditions.push(new);
                } else if let Some(current) = current
                    .as_ref()
                    .filter(|c| c["reason"] != "ProgressDeadlineExceeded")
                {
                    let since =
                        super::parse_time(&current["lastUpdateTime"]).unwrap_or_else(super::now);
                    let left = since + deadline - super::now();
                    if left <= 0 {
                        set_condition(
                            &mut conditions,
                            condition(
                                "Progressing",
                                "False",
                                "ProgressDeadlineExceeded",
                                format!("{what} {new_name:?} has timed out progressing."),
                                &now,
                            ),
                        );
                        self.events.warning(
                            NAME,
                            &rollout.raw,
                            "ProgressDeadlineExceeded",
                            format!(
                                "Deployment {:?} has timed out progressing.",
                                rollout.key.name
                            ),
                        );
                    } else {
                        next = Action::RequeueAfter(Duration::from_secs(
                            u64::try_from(left).unwrap_or(1),
                        ));
                    }
                }
            }
        }
        // The new ReplicaSet's failure to create pods.
        let failure = rollout
            .new_rs
            .iter()
            .chain(rollout.old.iter())
            .find_map(|rs| {
                rs.raw["status"]["conditions"]
                    .as_array()
                    .and_then(|c| {
                        c.iter()
                            .find(|c| c["type"] == "ReplicaFailure" && c["status"] == "True")
                    })
                    .cloned()
            });
        match failure {
            Some(f) => set_condition(
                &mut conditions,
                condition(
                    "ReplicaFailure",
                    "True",
                    f["reason"].as_str().unwrap_or("FailedCreate"),
                    f["message"].as_str().unwrap_or("").to_string(),
                    &now,
                ),
            ),
            None => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        }
        let mut status = serde_json::Map::new();
        status.insert("observedGeneration".into(), json!(generation));
        for (name, value) in [
            ("replicas", actual),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", (total - available).max(0)),
        ] {
            if value != 0 {
                status.insert(name.into(), json!(value));
            }
        }
        if !conditions.is_empty() {
            status.insert("conditions".into(), Value::Array(conditions));
        }
        if let Some(count) = rollout.collision_count {
            status.insert("collisionCount".into(), json!(count));
        }
        let status = Value::Object(status);
        if status == old_status && !rollout.object_changed {
            return Ok(next);
        }
        let precondition = Precondition::resource_version(
            rollout
                .d
                .metadata
                .resource_version
                .as_deref()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0),
        );
        let result = if rollout.object_changed {
            let mut object = rollout.raw.clone();
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
            self.store
                .update_with_status(&rollout.key, object, status, precondition)
                .await
        } else {
            self.store
                .update_status(&rollout.key, status, precondition)
                .await
        };
        match result {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(next),
            Err(error) => Err(error.into()),
        }
    }
}

fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .progress_deadline_seconds
        .is_none_or(|s| s != i32::MAX)
}

fn set_or_remove(map: &mut Value, field: &str, value: Value) {
    if let Some(map) = map.as_object_mut() {
        if value.is_null() {
            map.remove(field);
        } else {
            map.insert(field.to_string(), value);
        }
    }
}

/// Copies the Deployment's annotations to a ReplicaSet (Kubernetes'
/// `copyDeploymentAnnotationsToReplicaSet`); returns whether any changed.
fn copy_annotations(deployment: &Value, rs: &mut Value) -> bool {
    let Some(source) = deployment["metadata"]["annotations"].as_object() else {
        return false;
    };
    if !rs["metadata"]["annotations"].is_object() {
        rs["metadata"]["annotations"] = json!({});
    }
    let mut changed = false;
    for (k, v) in source {
        if NOT_COPIED.contains(&k.as_str()) || rs["metadata"]["annotations"][k] == *v {
            continue;
        }
        rs["metadata"]["annotations"][k] = v.clone();
        changed = true;
    }
    if rs["metadata"]["annotations"]
        .as_object()
        .is_some_and(serde_json::Map::is_empty)
    {
        if let Some(meta) = rs["metadata"].as_object_mut() {
            meta.remove("annotations");
        }
    }
    changed
}

/// Raises a ReplicaSet's revision to `revision` (keeping the old one in the
/// revision history); returns whether it changed.
fn set_revision(rs: &mut Value, revision: i64) -> bool {
    let old = revision_of(rs);
    if old >= revision {
        return false;
    }
    if !rs["metadata"]["annotations"].is_object() {
        rs["metadata"]["annotations"] = json!({});
    }
    let annotations = &mut rs["metadata"]["annotations"];
    if old > 0 {
        let history = annotations[REVISION_HISTORY]
            .as_str()
            .unwrap_or("")
            .to_string();
        let history = if history.is_empty() {
            old.to_string()
        } else {
            format!("{history},{old}")
        };
        annotations[REVISION_HISTORY] = json!(history);
    }
    annotations[REVISION] = json!(revision.to_string());
    true
}

/// Sets `desired-replicas` and `max-replicas`; returns whether they changed.
fn set_replica_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    if !rs["metadata"]["annotations"].is_object() {
        rs["metadata"]["annotations"] = json!({});
    }
    let annotations = &mut rs["metadata"]["annotations"];
    let (desired, max) = (desired.to_string(), max.to_string());
    let changed = annotations[DESIRED_REPLICAS].as_str() != Some(desired.as_str())
        || annotations[MAX_REPLICAS].as_str() != Some(max.as_str());
    annotations[DESIRED_REPLICAS] = json!(desired);
    annotations[MAX_REPLICAS] = json!(max);
    changed
}

/// The `deployment.kubernetes.io/revision` of every ReplicaSet, for
/// tests and `rollout history`.
pub fn revisions(sets: &[Value]) -> BTreeMap<i64, String> {
    sets.iter()
        .map(|rs| {
            (
                revision_of(rs),
                rs["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let d = |replicas: i32, surge: IntOrString, unavailable: IntOrString| {
            let mut d = Deployment::default();
            d.spec.replicas = Some(replicas);
            d.spec.strategy = Some(bramble_common::api::DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(bramble_common::api::RollingUpdate {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            });
            d
        };
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(
            surge_and_unavailable(&d(10, pct("25%"), pct("25%"))),
            (3, 2)
        );
        assert_eq!(surge_and_unavailable(&d(3, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(
            surge_and_unavailable(&d(3, IntOrString::Int(0), pct("10%"))),
            (0, 1),
            "both zero after rounding: one may be unavailable"
        );
        assert_eq!(
            surge_and_unavailable(&d(2, IntOrString::Int(1), IntOrString::Int(5))),
            (1, 2)
        );
    }

    #[test]
    fn template_hashes_are_stable_safe_and_ignore_the_hash_label() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let hash = template_hash(&template, None);
        assert_eq!(hash, template_hash(&template, None));
        assert_ne!(hash, template_hash(&template, Some(1)));
        assert!(
            hash.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{hash}"
        );
        let mut labelled = template.clone();
        labelled["metadata"]["labels"][HASH_LABEL] = json!(hash);
        assert_eq!(
            template_ignoring_hash(&labelled),
            template_ignoring_hash(&template)
        );
    }

    #[test]
    fn revisions_only_move_up_and_keep_history() {
        let mut rs = json!({"metadata": {"annotations": {REVISION: "1"}}});
        assert!(!set_revision(&mut rs, 1));
        assert!(set_revision(&mut rs, 3));
        assert_eq!(rs["metadata"]["annotations"][REVISION], "3");
        assert_eq!(rs["metadata"]["annotations"][REVISION_HISTORY], "1");
        assert!(set_revision(&mut rs, 5));
        assert_eq!(rs["metadata"]["annotations"][REVISION_HISTORY], "1,3");
    }
}
