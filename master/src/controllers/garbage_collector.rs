//! The garbage collector (Kubernetes' `pkg/controller/garbagecollector`):
//! deletes what lost its owners, as `metadata.ownerReferences` say.
//!
//! - Background (the default `propagationPolicy`): the owner is already
//!   gone; each dependent whose owners are all gone is deleted (a pod
//!   gracefully, as the API deletes it), and a dependent that still has a
//!   live owner only loses its references to the gone ones.
//! - Foreground: the owner is marked and keeps the `foregroundDeletion`
//!   finalizer; its dependents are deleted (in the foreground themselves
//!   when they have dependents), and the finalizer is removed once no
//!   dependent with `blockOwnerDeletion: true` is left.
//! - Orphan: the owner keeps the `orphan` finalizer until every dependent's
//!   reference to it is removed; the dependents stay.
//!
//! Dependents are found through the store's owner index
//! ([`Store::dependents`]), so objects of every kind are collected, not
//! only the kinds the controllers cache. A deleted owner's uid is kept as a
//! tombstone until its dependents are handled; the periodic resync looks at
//! every cached object that names an owner, so a dependent whose owner
//! vanished while the master was down is collected too.
//!
//! Owners are looked up in the cache first; an owner the cache does not
//! show is read from the store before anything is deleted (a slow watch
//! never makes the collector delete a live owner's dependents).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_common::meta::OwnerReference;
use bramble_common::Kind;
use serde_json::Value;

use super::cache::{Cache, Cached, Change, PodInfo};
use super::runtime::{Action, Reconciler, WorkQueue};
use super::{pods, ControllerError};
use crate::api::deletion::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use crate::store::{EventType, ObjectKey, Precondition, Store, StoreError};

/// The controller's name.
pub const NAME: &str = "garbage-collector-controller";

/// How often an owner in foreground deletion looks at its dependents again
/// while some still block it (their deletions also wake it).
const FOREGROUND_RECHECK: Duration = Duration::from_secs(2);

/// The garbage collector.
pub struct GarbageCollector {
    store: Store,
    cache: Cache,
    /// Deleted owners whose dependents are still to be handled: key -> uids.
    tombstones: Mutex<HashMap<ObjectKey, Vec<String>>>,
}

/// What an owner reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner is gone (or another object of that name took its place).
    Dangling,
    /// The owner exists, in foreground deletion.
    Waiting,
}

impl GarbageCollector {
    /// The collector over `store`, reading `cache`.
    pub fn new(store: Store, cache: Cache) -> GarbageCollector {
        GarbageCollector {
            store,
            cache,
            tombstones: Mutex::new(HashMap::new()),
        }
    }

    fn take_tombstones(&self, key: &ObjectKey) -> Vec<String> {
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .unwrap_or_default()
    }

    fn put_tombstones(&self, key: &ObjectKey, uids: Vec<String>) {
        if uids.is_empty() {
            return;
        }
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .extend(uids);
    }
}

/// The store key of the owner `reference` of an object in `namespace`;
/// `None` for a kind bramble does not serve.
fn owner_key(reference: &OwnerReference, namespace: &str) -> Option<ObjectKey> {
    let kind = Kind::from_api_version_kind(&reference.api_version, &reference.kind)?;
    let namespace = if kind.namespaced() { namespace } else { "" };
    Some(ObjectKey::new(kind, namespace, reference.name.clone()))
}

fn finalizers_of(object: &Value) -> Vec<&str> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn is_deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

fn uid_of(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or("")
}

fn resource_version_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

fn references_of(object: &Value) -> Vec<OwnerReference> {
    serde_json::from_value(object["metadata"]["ownerReferences"].clone()).unwrap_or_default()
}

impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn primary(&self) -> Kind {
        Kind::Pod
    }

    fn resync_keys(&self, cache: &Cache) -> Vec<ObjectKey> {
        cache.keys_with_owners_or_finalizers()
    }

    fn keys_for(&self, change: &Change, cache: &Cache) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        match (&change.old, &change.new) {
            (Some(old), None) => {
                // An owner went: its dependents are looked at; owners
                // waiting for this dependent are woken.
                self.put_tombstones(&change.key, vec![old.uid()]);
                keys.push(change.key.clone());
                for owner in old.owners() {
                    if let Some(key) = cache.key_of_uid(&owner.uid) {
                        keys.push(key);
                    }
                }
            }
            (old, Some(new)) => {
                let owners = new.owners();
                let changed = old.as_ref().is_none_or(|o| o.owners() != owners);
                if !owners.is_empty() && changed {
                    keys.push(change.key.clone());
                }
                if let Cached::Object(object) = new {
                    let finalizers = finalizers_of(object);
                    if is_deleting(object)
                        && (finalizers.contains(&ORPHAN_FINALIZER)
                            || finalizers.contains(&FOREGROUND_FINALIZER))
                    {
                        keys.push(change.key.clone());
                    }
                }
            }
            (None, None) => {}
        }
        keys.sort();
        keys.dedup();
        keys
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        // Dependents of a deleted owner (of this key).
        let tombstones = self.take_tombstones(key);
        for (i, uid) in tombstones.iter().enumerate() {
            if let Err(error) = self.collect_dependents_of_gone(uid).await {
                self.put_tombstones(key, tombstones[i..].to_vec());
                return Err(error);
            }
        }
        let mut action = Action::AwaitChange;
        if !self.cache.holds(key.kind) {
            // A kind the cache does not hold ([`follow_uncached`] queued it):
            // read from the store.
            self.attempt_to_delete(key).await?;
            return Ok(action);
        }
        match self.cache.cached(key) {
            None => {}
            Some(Cached::Pod(pod))
                if !pod.owners.is_empty()
                    && pod.deleting.is_none()
                    && !self.owners_solid(&pod.owners, &pod.namespace) =>
            {
                self.attempt_to_delete(key).await?;
            }
            Some(Cached::Pod(_)) => {}
            Some(Cached::Object(object)) => {
                if is_deleting(&object) {
                    let finalizers = finalizers_of(&object);
                    if finalizers.contains(&ORPHAN_FINALIZER) {
                        self.orphan_dependents(key, uid_of(&object)).await?;
                    }
                    if finalizers.contains(&FOREGROUND_FINALIZER) {
                        action = self.delete_dependents_first(key, uid_of(&object)).await?;
                    }
                } else if !references_of(&object).is_empty()
                    && !self.owners_solid(&references_of(&object), &key.namespace)
                {
                    self.attempt_to_delete(key).await?;
                }
            }
        }
        Ok(action)
    }
}

impl GarbageCollector {
    /// True when the cache shows every owner alive and not waiting (the
    /// common case: nothing to read from the store).
    fn owners_solid(&self, owners: &[OwnerReference], namespace: &str) -> bool {
        owners.iter().all(|reference| {
            let Some(key) = owner_key(reference, namespace) else {
                // A kind bramble does not serve: never collected.
                return true;
            };
            if !self.cache.holds(key.kind) {
                return false;
            }
            match self.cache.cached(&key) {
                Some(Cached::Object(owner)) => {
                    uid_of(&owner) == reference.uid
                        && !(is_deleting(&owner)
                            && finalizers_of(&owner).contains(&FOREGROUND_FINALIZER))
                }
                Some(Cached::Pod(pod)) => pod.uid == reference.uid,
                None => false,
            }
        })
    }

    /// Where the owner `reference` of an object in `namespace` stands,
    /// read from the store.
    async fn owner_state(
        &self,
        reference: &OwnerReference,
        namespace: &str,
    ) -> Result<OwnerState, ControllerError> {
        let Some(key) = owner_key(reference, namespace) else {
            return Ok(OwnerState::Solid);
        };
        let Some(owner) = self.store.get(&key).await? else {
            return Ok(OwnerState::Dangling);
        };
        if uid_of(&owner) != reference.uid {
            return Ok(OwnerState::Dangling);
        }
        if is_deleting(&owner) && finalizers_of(&owner).contains(&FOREGROUND_FINALIZER) {
            return Ok(OwnerState::Waiting);
        }
        Ok(OwnerState::Solid)
    }

    /// The dependents of the owner `uid`, which is gone: each is looked at
    /// (deleted when it has no live owner left).
    async fn collect_dependents_of_gone(&self, uid: &str) -> Result<(), ControllerError> {
        for dependent in self.store.dependents(uid).await? {
            self.attempt_to_delete(&dependent).await?;
        }
        Ok(())
    }

    /// Kubernetes' `attemptToDeleteItem`: reads the object and its owners
    /// from the store; with a live owner it only drops its references to
    /// the gone (and the waiting) ones; with none it is deleted: in the
    /// foreground when an owner waits for it and it has dependents itself,
    /// else in the background.
    async fn attempt_to_delete(&self, key: &ObjectKey) -> Result<(), ControllerError> {
        let Some(object) = self.store.get(key).await? else {
            return Ok(());
        };
        if is_deleting(&object) {
            return Ok(());
        }
        let references = references_of(&object);
        if references.is_empty() {
            return Ok(());
        }
        let mut solid = 0;
        let mut gone = Vec::new();
        let mut waiting = 0;
        for reference in &references {
            match self.owner_state(reference, &key.namespace).await? {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => gone.push(reference.uid.clone()),
                OwnerState::Waiting => {
                    waiting += 1;
                    gone.push(reference.uid.clone());
                }
            }
        }
        if solid > 0 {
            if gone.is_empty() {
                return Ok(());
            }
            tracing::info!(object = %key, owners = ?gone, "removing references to owners that are gone");
            return self.remove_references(key, &object, &gone).await;
        }
        let foreground = waiting > 0 && !self.store.dependents(uid_of(&object)).await?.is_empty();
        tracing::info!(object = %key, foreground, "deleting: its owners are gone");
        self.delete_object(key, object, foreground).await
    }

    /// Deletes `object` as the API would (a pod gracefully); in the
    /// foreground (after its own dependents) when `foreground`.
    async fn delete_object(
        &self,
        key: &ObjectKey,
        mut object: Value,
        foreground: bool,
    ) -> Result<(), ControllerError> {
        let uid = uid_of(&object).to_string();
        if key.kind == Kind::Pod {
            return match pods::delete(&self.store, &PodInfo::from_value(&object)).await {
                Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
                Err(error) => Err(error.into()),
            };
        }
        if foreground && !finalizers_of(&object).contains(&FOREGROUND_FINALIZER) {
            let rv = resource_version_of(&object);
            let mut finalizers: Vec<Value> = object["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            finalizers.push(Value::from(FOREGROUND_FINALIZER));
            object["metadata"]["finalizers"] = Value::Array(finalizers);
            match self
                .store
                .update(key, object, Precondition::resource_version(rv))
                .await
            {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
        match self.store.delete(key, Precondition::uid(uid)).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes the references to the owners `uids` from `object`.
    async fn remove_references(
        &self,
        key: &ObjectKey,
        object: &Value,
        uids: &[String],
    ) -> Result<(), ControllerError> {
        let mut fresh = object.clone();
        let rv = resource_version_of(object);
        if let Some(refs) = fresh["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|r| !uids.iter().any(|u| r["uid"] == u.as_str()));
            if refs.is_empty() {
                if let Some(meta) = fresh["metadata"].as_object_mut() {
                    meta.remove("ownerReferences");
                }
            }
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

    /// Orphan deletion: every dependent of `uid` loses its reference to it,
    /// then the owner loses the `orphan` finalizer.
    async fn orphan_dependents(&self, key: &ObjectKey, uid: &str) -> Result<(), ControllerError> {
        for dependent in self.store.dependents(uid).await? {
            let Some(object) = self.store.get(&dependent).await? else {
                continue;
            };
            tracing::info!(object = %dependent, owner = %key, "orphaning");
            self.remove_references(&dependent, &object, &[uid.to_string()])
                .await?;
        }
        self.remove_finalizer(key, uid, ORPHAN_FINALIZER).await
    }

    /// Foreground deletion: deletes the dependents of `uid`; removes the
    /// `foregroundDeletion` finalizer once none blocks it.
    async fn delete_dependents_first(
        &self,
        key: &ObjectKey,
        uid: &str,
    ) -> Result<Action, ControllerError> {
        let mut blocking = 0usize;
        for dependent in self.store.dependents(uid).await? {
            let Some(object) = self.store.get(&dependent).await? else {
                continue;
            };
            let blocks = references_of(&object)
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if !is_deleting(&object) {
                self.attempt_to_delete(&dependent).await?;
            }
        }
        if blocking > 0 {
            return Ok(Action::RequeueAfter(FOREGROUND_RECHECK));
        }
        self.remove_finalizer(key, uid, FOREGROUND_FINALIZER)
            .await?;
        Ok(Action::AwaitChange)
    }

    /// Removes `finalizer` from the object `uid` at `key` (the store
    /// deletes it when it was the last one).
    async fn remove_finalizer(
        &self,
        key: &ObjectKey,
        uid: &str,
        finalizer: &str,
    ) -> Result<(), ControllerError> {
        let Some(mut object) = self.store.get(key).await? else {
            return Ok(());
        };
        if uid_of(&object) != uid {
            return Ok(());
        }
        let rv = resource_version_of(&object);
        if let Some(list) = object["metadata"]["finalizers"].as_array_mut() {
            list.retain(|f| f != finalizer);
        }
        match self
            .store
            .update(key, object, Precondition::resource_version(rv))
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// The kinds the collector follows outside the shared cache (Events own
/// nothing and are not owned).
pub fn uncached_kinds(cache: &Cache) -> Vec<Kind> {
    Kind::all()
        .iter()
        .copied()
        .filter(|k| !cache.holds(*k) && *k != Kind::Event)
        .collect()
}

/// Follows the objects of `kinds` (those the shared cache does not hold:
/// ConfigMaps, Secrets, Services, ...) and queues into the collector's
/// `queue` each that names an owner, at start (what vanished while the
/// master was down) and on every change; a deleted one's dependents are
/// looked at as for a cached owner. Runs until `shutdown`; only metadata is
/// looked at, nothing is kept.
pub async fn follow_uncached(
    collector: Arc<GarbageCollector>,
    queue: Arc<WorkQueue>,
    kinds: Vec<Kind>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let store = collector.store.clone();
    let mut delay = Duration::from_millis(200);
    loop {
        let revision = store.current_revision();
        let mut watch = match store.watch_kinds(&kinds, revision) {
            Ok(watch) => watch,
            Err(StoreError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, "the garbage collector cannot watch the store; retrying");
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        for kind in &kinds {
            match store.list(*kind, None).await {
                Ok((objects, _)) => {
                    for object in objects.iter().filter(|o| !references_of(o).is_empty()) {
                        queue.add(ObjectKey::new(
                            *kind,
                            object["metadata"]["namespace"].as_str().unwrap_or(""),
                            object["metadata"]["name"].as_str().unwrap_or(""),
                        ));
                    }
                }
                Err(StoreError::Closed) => return,
                Err(error) => tracing::warn!(%error, %kind, "the garbage collector cannot list"),
            }
        }
        delay = Duration::from_millis(200);
        loop {
            let event = tokio::select! {
                biased;
                () = &mut shutdown => return,
                event = watch.next() => event,
            };
            let Some(event) = event else { break };
            if event.event_type == EventType::Deleted {
                // An owner of this kind went: its dependents are looked at.
                let uid = uid_of(&event.object).to_string();
                if !uid.is_empty() {
                    collector.put_tombstones(&event.key, vec![uid]);
                    queue.add(event.key);
                }
            } else if !references_of(&event.object).is_empty() {
                queue.add(event.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_keys_follow_the_owners_scope() {
        let reference = |api: &str, kind: &str| OwnerReference {
            api_version: api.into(),
            kind: kind.into(),
            name: "x".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        assert_eq!(
            owner_key(&reference("apps/v1", "ReplicaSet"), "shop"),
            Some(ObjectKey::new(Kind::ReplicaSet, "shop", "x"))
        );
        assert_eq!(
            owner_key(&reference("v1", "Node"), "shop"),
            Some(ObjectKey::new(Kind::Node, "", "x"))
        );
        assert_eq!(
            owner_key(&reference("example.com/v1", "Widget"), "shop"),
            None
        );
    }
}
