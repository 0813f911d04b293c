//! The controllers' shared cache of the store (client-go's shared
//! informers): one task lists the kinds the controllers read, follows one
//! store watch of them, keeps the objects in memory and tells every
//! subscribed controller about each change.
//!
//! - Owners (Deployments, ReplicaSets, Nodes, ...) are kept whole. Pods,
//!   by far the most numerous, are kept as a [`PodInfo`]: the few fields the
//!   controllers decide on (a 10,000-pod cluster must not hold 10,000 full
//!   pods twice: the scheduler keeps its own placements). A controller that
//!   must rewrite a pod reads it from the store.
//! - Indexes: pods by namespace, by controller owner uid and by node.
//! - The watch is opened before the lists, so nothing falls between them;
//!   when it ends (the store compacted what this cache had not read) the
//!   cache lists again and reports what changed meanwhile, as an informer's
//!   relist does.
//! - Reads take a short `std::sync::RwLock` (never held across an await).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bramble_common::api::Toleration;
use bramble_common::meta::OwnerReference;
use bramble_common::Kind;
use serde_json::Value;
use tokio::sync::watch;

use crate::store::{EventType, ObjectKey, Store, StoreError};

/// What the controllers know of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion` as a number.
    pub resource_version: u64,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.ownerReferences`.
    pub owners: Vec<OwnerReference>,
    /// `metadata.creationTimestamp`, seconds since the epoch.
    pub created: i64,
    /// `metadata.deletionTimestamp`, seconds since the epoch.
    pub deleting: Option<i64>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `status.phase` (`Pending` when absent).
    pub phase: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// When the `Ready` condition last changed (seconds since the epoch).
    pub ready_since: Option<i64>,
    /// Container restarts, summed.
    pub restarts: i64,
    /// `spec.tolerations` with effect `NoExecute` (or none): what taint
    /// eviction needs.
    pub no_execute_tolerations: Vec<Toleration>,
    /// The `batch.kubernetes.io/job-completion-index` annotation.
    pub completion_index: Option<i64>,
    /// The first container's exit code when the pod finished.
    pub exit_code: Option<i64>,
    /// Seconds its node gets to stop it when it is deleted
    /// (`spec.terminationGracePeriodSeconds`, 30 by default).
    pub grace_seconds: i64,
}

impl PodInfo {
    /// Reads the fields from a stored pod.
    pub fn from_value(pod: &Value) -> PodInfo {
        let meta = &pod["metadata"];
        let status = &pod["status"];
        let ready_condition = status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
        let str_map = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let restarts = status["containerStatuses"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
            .unwrap_or(0);
        let exit_code = status["containerStatuses"]
            .as_array()
            .and_then(|c| c.first())
            .and_then(|c| c["state"]["terminated"]["exitCode"].as_i64());
        PodInfo {
            namespace: meta["namespace"].as_str().unwrap_or("").to_string(),
            name: meta["name"].as_str().unwrap_or("").to_string(),
            uid: meta["uid"].as_str().unwrap_or("").to_string(),
            resource_version: meta["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0),
            labels: str_map(&meta["labels"]),
            owners: serde_json::from_value(meta["ownerReferences"].clone()).unwrap_or_default(),
            created: super::parse_time(&meta["creationTimestamp"]).unwrap_or(0),
            deleting: super::parse_time(&meta["deletionTimestamp"]),
            node_name: pod["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            phase: status["phase"].as_str().unwrap_or("Pending").to_string(),
            ready: ready_condition.is_some_and(|c| c["status"] == "True"),
            ready_since: ready_condition.and_then(|c| super::parse_time(&c["lastTransitionTime"])),
            restarts,
            no_execute_tolerations: serde_json::from_value::<Vec<Toleration>>(
                pod["spec"]["tolerations"].clone(),
            )
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "NoExecute")
            })
            .collect(),
            completion_index: meta["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .and_then(|i| i.parse().ok()),
            exit_code,
            grace_seconds: pod["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
                .max(0),
        }
    }

    /// The owner reference with `controller: true`, if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.owners.iter().find(|o| o.controller == Some(true))
    }

    /// The pod's store key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(Kind::Pod, self.namespace.clone(), self.name.clone())
    }

    /// Not finished and not being deleted (Kubernetes' `IsPodActive`).
    pub fn is_active(&self) -> bool {
        self.deleting.is_none() && self.phase != "Succeeded" && self.phase != "Failed"
    }

    /// Ready for at least `min_ready_seconds` at `now` (Kubernetes'
    /// `IsPodAvailable`).
    pub fn is_available(&self, min_ready_seconds: i64, now: i64) -> bool {
        if !self.ready {
            return false;
        }
        min_ready_seconds <= 0
            || self
                .ready_since
                .is_some_and(|since| since + min_ready_seconds <= now)
    }
}

/// One object as the cache holds it.
#[derive(Debug, Clone)]
pub enum Cached {
    /// A whole object.
    Object(Arc<Value>),
    /// A pod's [`PodInfo`].
    Pod(Arc<PodInfo>),
}

impl Cached {
    /// The whole object, for kinds kept whole.
    pub fn object(&self) -> Option<&Arc<Value>> {
        match self {
            Cached::Object(object) => Some(object),
            Cached::Pod(_) => None,
        }
    }

    /// The pod, for pods.
    pub fn pod(&self) -> Option<&Arc<PodInfo>> {
        match self {
            Cached::Pod(pod) => Some(pod),
            Cached::Object(_) => None,
        }
    }

    /// `metadata.ownerReferences` of the object.
    pub fn owners(&self) -> Vec<OwnerReference> {
        match self {
            Cached::Pod(pod) => pod.owners.clone(),
            Cached::Object(object) => {
                serde_json::from_value(object["metadata"]["ownerReferences"].clone())
                    .unwrap_or_default()
            }
        }
    }

    /// `metadata.labels` of the object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        match self {
            Cached::Pod(pod) => pod.labels.clone(),
            Cached::Object(object) => super::labels_of(object),
        }
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> String {
        match self {
            Cached::Pod(pod) => pod.uid.clone(),
            Cached::Object(object) => object["metadata"]["uid"].as_str().unwrap_or("").into(),
        }
    }

    fn resource_version(&self) -> u64 {
        match self {
            Cached::Pod(pod) => pod.resource_version,
            Cached::Object(object) => object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// A change the cache saw: the object before and after (`None` when it did
/// not exist).
#[derive(Debug, Clone)]
pub struct Change {
    /// The object's key.
    pub key: ObjectKey,
    /// Before the change.
    pub old: Option<Cached>,
    /// After the change.
    pub new: Option<Cached>,
}

impl Change {
    /// The newest state: `new`, or `old` for a deletion.
    pub fn latest(&self) -> Option<&Cached> {
        self.new.as_ref().or(self.old.as_ref())
    }
}

/// Told about every change, in order, from the cache's task. Must be quick
/// (queue keys, nothing more): every subscriber waits for the slowest.
pub trait Subscriber: Send + Sync {
    /// A change happened; the cache already holds the new state.
    fn changed(&self, change: &Change, cache: &Cache);
    /// The cache listed everything again (after its watch ended): queue
    /// everything.
    fn relisted(&self, cache: &Cache);
}

#[derive(Default)]
struct State {
    objects: HashMap<Kind, BTreeMap<(String, String), Cached>>,
    pods_by_namespace: HashMap<String, HashSet<String>>,
    pods_by_controller: HashMap<String, HashSet<(String, String)>>,
    pods_by_node: HashMap<String, HashSet<(String, String)>>,
    /// Whole objects by the uid of their controller owner.
    objects_by_controller: HashMap<String, HashSet<ObjectKey>>,
    /// Pods without a controller, by namespace (candidates for adoption).
    orphan_pods: HashMap<String, HashSet<String>>,
    /// uid -> key, for owner lookups by uid.
    by_uid: HashMap<String, ObjectKey>,
}

impl State {
    fn insert(&mut self, key: &ObjectKey, value: Cached) -> Option<Cached> {
        let old = self.remove(key);
        if let Cached::Pod(pod) = &value {
            let id = (pod.namespace.clone(), pod.name.clone());
            self.pods_by_namespace
                .entry(pod.namespace.clone())
                .or_default()
                .insert(pod.name.clone());
            if let Some(owner) = pod.controller() {
                self.pods_by_controller
                    .entry(owner.uid.clone())
                    .or_default()
                    .insert(id.clone());
            } else {
                self.orphan_pods
                    .entry(pod.namespace.clone())
                    .or_default()
                    .insert(pod.name.clone());
            }
            if let Some(node) = &pod.node_name {
                self.pods_by_node
                    .entry(node.clone())
                    .or_default()
                    .insert(id);
            }
        }
        if let Cached::Object(object) = &value {
            if let Some(owner) = super::controller_uid(object) {
                self.objects_by_controller
                    .entry(owner.to_string())
                    .or_default()
                    .insert(key.clone());
            }
        }
        let uid = value.uid();
        if !uid.is_empty() {
            self.by_uid.insert(uid, key.clone());
        }
        self.objects
            .entry(key.kind)
            .or_default()
            .insert((key.namespace.clone(), key.name.clone()), value);
        old
    }

    fn get(&self, key: &ObjectKey) -> Option<&Cached> {
        self.objects
            .get(&key.kind)?
            .get(&(key.namespace.clone(), key.name.clone()))
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Cached> {
        let old = self
            .objects
            .get_mut(&key.kind)?
            .remove(&(key.namespace.clone(), key.name.clone()))?;
        if let Cached::Pod(pod) = &old {
            let id = (pod.namespace.clone(), pod.name.clone());
            remove_from(&mut self.pods_by_namespace, &pod.namespace, &pod.name);
            if let Some(owner) = pod.controller() {
                remove_from(&mut self.pods_by_controller, &owner.uid, &id);
            } else {
                remove_from(&mut self.orphan_pods, &pod.namespace, &pod.name);
            }
            if let Some(node) = &pod.node_name {
                remove_from(&mut self.pods_by_node, node, &id);
            }
        }
        if let Cached::Object(object) = &old {
            if let Some(owner) = super::controller_uid(object) {
                remove_from(&mut self.objects_by_controller, owner, key);
            }
        }
        let uid = old.uid();
        if self.by_uid.get(&uid) == Some(key) {
            self.by_uid.remove(&uid);
        }
        Some(old)
    }

    fn pods<'a>(&'a self, ids: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<Arc<PodInfo>> {
        let Some(pods) = self.objects.get(&Kind::Pod) else {
            return Vec::new();
        };
        ids.filter_map(|(ns, name)| pods.get(&(ns.to_string(), name.to_string())))
            .filter_map(|c| c.pod().cloned())
            .collect()
    }
}

fn remove_from<K: std::hash::Hash + Eq>(
    index: &mut HashMap<String, HashSet<K>>,
    bucket: &str,
    item: &K,
) {
    if let Some(set) = index.get_mut(bucket) {
        set.remove(item);
        if set.is_empty() {
            index.remove(bucket);
        }
    }
}

/// The shared cache; cheap to clone.
#[derive(Clone)]
pub struct Cache {
    state: Arc<RwLock<State>>,
    synced: watch::Receiver<bool>,
    kinds: Arc<Vec<Kind>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("kinds", &self.kinds).finish()
    }
}

/// Feeds a [`Cache`]; see [`Cache::new`].
pub struct Feeder {
    state: Arc<RwLock<State>>,
    synced: watch::Sender<bool>,
    kinds: Arc<Vec<Kind>>,
}

impl Cache {
    /// A cache of `kinds` and the feeder that fills it ([`Feeder::run`]).
    pub fn new(kinds: &[Kind]) -> (Cache, Feeder) {
        let state = Arc::new(RwLock::new(State::default()));
        let (tx, rx) = watch::channel(false);
        let kinds = Arc::new(kinds.to_vec());
        (
            Cache {
                state: state.clone(),
                synced: rx,
                kinds: kinds.clone(),
            },
            Feeder {
                state,
                synced: tx,
                kinds,
            },
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the first list is in.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// The cached object (whole kinds only; pods: [`Cache::pod`]).
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.read()
            .objects
            .get(&key.kind)?
            .get(&(key.namespace.clone(), key.name.clone()))?
            .object()
            .cloned()
    }

    /// The cached object of any kind, whole or as a [`PodInfo`].
    pub fn cached(&self, key: &ObjectKey) -> Option<Cached> {
        self.read().get(key).cloned()
    }

    /// True when this cache holds `kind`.
    pub fn holds(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }

    /// The keys of every cached object, of any kind, that names an owner
    /// or that is being deleted with finalizers: what the garbage
    /// collector looks at on each resync.
    pub fn keys_with_owners_or_finalizers(&self) -> Vec<ObjectKey> {
        let state = self.read();
        let mut keys = Vec::new();
        for (kind, objects) in &state.objects {
            for ((ns, name), cached) in objects {
                let interesting = match cached {
                    Cached::Pod(pod) => !pod.owners.is_empty(),
                    Cached::Object(object) => {
                        let meta = &object["metadata"];
                        meta["ownerReferences"]
                            .as_array()
                            .is_some_and(|r| !r.is_empty())
                            || (meta["deletionTimestamp"].is_string()
                                && meta["finalizers"].as_array().is_some_and(|f| !f.is_empty()))
                    }
                };
                if interesting {
                    keys.push(ObjectKey::new(*kind, ns.clone(), name.clone()));
                }
            }
        }
        keys
    }

    /// The cached pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        self.read()
            .objects
            .get(&Kind::Pod)?
            .get(&(namespace.to_string(), name.to_string()))?
            .pod()
            .cloned()
    }

    /// The key of the cached object with `uid`.
    pub fn key_of_uid(&self, uid: &str) -> Option<ObjectKey> {
        self.read().by_uid.get(uid).cloned()
    }

    /// The cached objects of `kind` (whole kinds), in `namespace` if given.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let state = self.read();
        let Some(objects) = state.objects.get(&kind) else {
            return Vec::new();
        };
        match namespace {
            Some(ns) => objects
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .filter_map(|(_, c)| c.object().cloned())
                .collect(),
            None => objects
                .values()
                .filter_map(|c| c.object().cloned())
                .collect(),
        }
    }

    /// Every cached key of `kind`.
    pub fn keys(&self, kind: Kind) -> Vec<ObjectKey> {
        self.read()
            .objects
            .get(&kind)
            .map(|objects| {
                objects
                    .keys()
                    .map(|(ns, name)| ObjectKey::new(kind, ns.clone(), name.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of cached objects of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.read().objects.get(&kind).map_or(0, BTreeMap::len)
    }

    /// The pods of `namespace`.
    pub fn pods_in(&self, namespace: &str) -> Vec<Arc<PodInfo>> {
        let state = self.read();
        let Some(names) = state.pods_by_namespace.get(namespace) else {
            return Vec::new();
        };
        state.pods(names.iter().map(|n| (namespace, n.as_str())))
    }

    /// The whole objects of `kind` whose controller owner has `uid`.
    pub fn controlled_by(&self, kind: Kind, uid: &str) -> Vec<Arc<Value>> {
        let state = self.read();
        let Some(keys) = state.objects_by_controller.get(uid) else {
            return Vec::new();
        };
        keys.iter()
            .filter(|k| k.kind == kind)
            .filter_map(|k| state.get(k))
            .filter_map(|c| c.object().cloned())
            .collect()
    }

    /// The pods of `namespace` without a controller.
    pub fn orphan_pods_in(&self, namespace: &str) -> Vec<Arc<PodInfo>> {
        let state = self.read();
        let Some(names) = state.orphan_pods.get(namespace) else {
            return Vec::new();
        };
        state.pods(names.iter().map(|n| (namespace, n.as_str())))
    }

    /// The pods whose controller owner has `uid`.
    pub fn pods_controlled_by(&self, uid: &str) -> Vec<Arc<PodInfo>> {
        let state = self.read();
        let Some(ids) = state.pods_by_controller.get(uid) else {
            return Vec::new();
        };
        state.pods(ids.iter().map(|(ns, n)| (ns.as_str(), n.as_str())))
    }

    /// The pods bound to `node`.
    pub fn pods_on_node(&self, node: &str) -> Vec<Arc<PodInfo>> {
        let state = self.read();
        let Some(ids) = state.pods_by_node.get(node) else {
            return Vec::new();
        };
        state.pods(ids.iter().map(|(ns, n)| (ns.as_str(), n.as_str())))
    }

    /// Inserts what a test set up, without a store.
    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, key: &ObjectKey, object: Value) {
        let cached = to_cached(key.kind, Arc::new(object));
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, cached);
    }
}

fn to_cached(kind: Kind, object: Arc<Value>) -> Cached {
    if kind == Kind::Pod {
        Cached::Pod(Arc::new(PodInfo::from_value(&object)))
    } else {
        Cached::Object(object)
    }
}

impl Feeder {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn cache(&self) -> Cache {
        Cache {
            state: self.state.clone(),
            synced: self.synced.subscribe(),
            kinds: self.kinds.clone(),
        }
    }

    /// Lists and follows the store until `shutdown`, telling `subscribers`
    /// about every change.
    pub async fn run(
        self,
        store: Store,
        subscribers: Vec<Arc<dyn Subscriber>>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let cache = self.cache();
        let mut delay = Duration::from_millis(200);
        let mut first = true;
        loop {
            let listed = tokio::select! {
                biased;
                () = &mut shutdown => return,
                listed = self.list(&store) => listed,
            };
            let mut watch = match listed {
                Ok((watch, changes)) => {
                    delay = Duration::from_millis(200);
                    if first {
                        first = false;
                        let _ = self.synced.send(true);
                    } else {
                        for change in &changes {
                            for subscriber in &subscribers {
                                subscriber.changed(change, &cache);
                            }
                        }
                        for subscriber in &subscribers {
                            subscriber.relisted(&cache);
                        }
                    }
                    watch
                }
                Err(StoreError::Closed) => return,
                Err(error) => {
                    tracing::warn!(%error, ?delay, "controllers cannot list the store; retrying");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            loop {
                let event = tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    event = watch.next() => event,
                };
                let Some(event) = event else { break };
                let change = {
                    let mut state = self.write();
                    match event.event_type {
                        EventType::Deleted => Change {
                            key: event.key.clone(),
                            old: state.remove(&event.key),
                            new: None,
                        },
                        EventType::Added | EventType::Modified
                            if state
                                .get(&event.key)
                                .is_some_and(|c| c.resource_version() >= event.revision) =>
                        {
                            // The list already read this or a newer state.
                            continue;
                        }
                        EventType::Added | EventType::Modified => {
                            let cached = to_cached(event.key.kind, event.object.clone());
                            let old = state.insert(&event.key, cached.clone());
                            Change {
                                key: event.key.clone(),
                                old,
                                new: Some(cached),
                            }
                        }
                    }
                };
                for subscriber in &subscribers {
                    subscriber.changed(&change, &cache);
                }
            }
            tracing::debug!("controllers' watch ended; listing again");
        }
    }

    /// Opens the watch, lists every kind, replaces the cache's contents and
    /// returns what differs from what it held.
    async fn list(&self, store: &Store) -> Result<(crate::store::Watch, Vec<Change>), StoreError> {
        let revision = store.current_revision();
        let watch = store.watch_kinds(&self.kinds, revision)?;
        let mut listed: Vec<(ObjectKey, Cached)> = Vec::new();
        for kind in self.kinds.iter() {
            let (objects, _) = store.list(*kind, None).await?;
            for object in objects {
                let key = ObjectKey::new(
                    *kind,
                    object["metadata"]["namespace"].as_str().unwrap_or(""),
                    object["metadata"]["name"].as_str().unwrap_or(""),
                );
                listed.push((key, to_cached(*kind, Arc::new(object))));
            }
        }
        let mut changes = Vec::new();
        let mut state = self.write();
        let mut seen = HashSet::new();
        for (key, cached) in listed {
            seen.insert(key.clone());
            let version = cached.resource_version();
            let old = state.insert(&key, cached.clone());
            if old.as_ref().map(Cached::resource_version) != Some(version) {
                changes.push(Change {
                    key,
                    old,
                    new: Some(cached),
                });
            }
        }
        let gone: Vec<ObjectKey> = state
            .objects
            .iter()
            .flat_map(|(kind, objects)| {
                objects
                    .keys()
                    .map(|(ns, name)| ObjectKey::new(*kind, ns.clone(), name.clone()))
            })
            .filter(|key| !seen.contains(key))
            .collect();
        for key in gone {
            let old = state.remove(&key);
            changes.push(Change {
                key,
                old,
                new: None,
            });
        }
        Ok((watch, changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_are_indexed_by_namespace_controller_and_node() {
        let (cache, _feeder) = Cache::new(&[Kind::Pod]);
        let pod = |name: &str, node: Option<&str>| {
            json!({"metadata": {"name": name, "namespace": "shop", "uid": format!("u-{name}"),
                "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                    "uid": "rs-1", "controller": true}]},
                "spec": {"nodeName": node, "tolerations": [
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "x", "effect": "NoSchedule"}]},
                "status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"}]}})
        };
        cache.insert_for_test(
            &ObjectKey::new(Kind::Pod, "shop", "a"),
            pod("a", Some("pi-1")),
        );
        cache.insert_for_test(&ObjectKey::new(Kind::Pod, "shop", "b"), pod("b", None));
        assert_eq!(cache.pods_in("shop").len(), 2);
        assert_eq!(cache.pods_controlled_by("rs-1").len(), 2);
        let on_node = cache.pods_on_node("pi-1");
        assert_eq!(on_node.len(), 1);
        let a = &on_node[0];
        assert_eq!(a.resource_version, 7);
        assert!(a.is_active());
        assert_eq!(a.no_execute_tolerations.len(), 1);
        let ready_at = a.ready_since.expect("ready since");
        assert!(a.is_available(10, ready_at + 10));
        assert!(!a.is_available(10, ready_at + 9));
        // Moving a pod to another node moves it in the index.
        cache.insert_for_test(
            &ObjectKey::new(Kind::Pod, "shop", "a"),
            pod("a", Some("pi-2")),
        );
        assert!(cache.pods_on_node("pi-1").is_empty());
        assert_eq!(cache.pods_on_node("pi-2").len(), 1);
        assert_eq!(
            cache.key_of_uid("u-b"),
            Some(ObjectKey::new(Kind::Pod, "shop", "b"))
        );
    }
}
