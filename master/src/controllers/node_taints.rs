//! Node taints from the node's `Ready` condition, as Kubernetes' node
//! lifecycle controller writes them (`TaintNodesByCondition` and the
//! `NoExecute` taints of taint-based eviction):
//! - `Ready=Unknown` (the agent went offline or stopped reporting):
//!   `node.kubernetes.io/unreachable` with effects `NoSchedule` and
//!   `NoExecute`;
//! - `Ready=False`: `node.kubernetes.io/not-ready`, both effects;
//! - `Ready=True`: neither.
//!
//! `NoExecute` taints carry `timeAdded`, from which
//! [`super::taint_eviction`] counts each pod's `tolerationSeconds`. A
//! level-triggered reconcile of Nodes: only a change of the condition
//! writes.

use bramble_common::api::{Node, Taint};
use bramble_common::Kind;
use serde_json::Value;

use super::cache::{Cache, Change};
use super::runtime::{Action, Reconciler};
use super::ControllerError;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// The controller's name (Kubernetes' node lifecycle controller).
pub const NAME: &str = "node-controller";
/// Taint of a node whose agent cannot be reached (`Ready=Unknown`).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node that says it is not ready (`Ready=False`).
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The node-taint controller.
pub struct NodeTaints {
    store: Store,
    cache: Cache,
}

impl NodeTaints {
    /// The controller over `store`, reading `cache`.
    pub fn new(store: Store, cache: Cache) -> NodeTaints {
        NodeTaints { store, cache }
    }
}

/// The `status` of the node's `Ready` condition (`Unknown` when absent).
pub fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown")
        .to_string()
}

/// The taints `node` should carry: its own, without the lifecycle ones
/// that no longer apply, with the ones that do (a `NoExecute` one keeps
/// its `timeAdded` while it stays).
fn wanted_taints(node: &Node, ready: &str, now: &str) -> Vec<Taint> {
    let key = match ready {
        "True" => None,
        "False" => Some(TAINT_NOT_READY),
        _ => Some(TAINT_UNREACHABLE),
    };
    let lifecycle = |t: &Taint| {
        (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY)
            && (t.effect == "NoExecute" || t.effect == "NoSchedule")
    };
    let mut taints: Vec<Taint> = node
        .spec
        .taints
        .iter()
        .filter(|t| !lifecycle(t) || Some(t.key.as_str()) == key)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.to_string(),
                    value: None,
                    effect: effect.to_string(),
                    time_added: (effect == "NoExecute").then(|| now.to_string()),
                });
            }
        }
    }
    taints
}

impl Reconciler for NodeTaints {
    fn name(&self) -> &'static str {
        NAME
    }

    fn primary(&self) -> Kind {
        Kind::Node
    }

    fn keys_for(&self, change: &Change, _cache: &Cache) -> Vec<ObjectKey> {
        if change.key.kind != Kind::Node {
            return Vec::new();
        }
        let status = |c: Option<&super::cache::Cached>| {
            c.and_then(|c| c.object())
                .map(|n| (ready_status(n), n["spec"]["taints"].clone()))
        };
        if status(change.old.as_ref()) == status(change.new.as_ref()) {
            return Vec::new();
        }
        vec![change.key.clone()]
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        let Some(raw) = self.cache.get(key) else {
            return Ok(Action::AwaitChange);
        };
        let node: Node =
            serde_json::from_value((*raw).clone()).map_err(|e| ControllerError::Malformed {
                object: key.to_string(),
                reason: e.to_string(),
            })?;
        let ready = ready_status(&raw);
        let wanted = wanted_taints(&node, &ready, &super::format_time(super::now()));
        if wanted == node.spec.taints {
            return Ok(Action::AwaitChange);
        }
        // Read fresh: the node's spec may have changed since the cache saw it.
        let Some(mut fresh) = self.store.get(key).await? else {
            return Ok(Action::AwaitChange);
        };
        let fresh_node: Node =
            serde_json::from_value(fresh.clone()).map_err(|e| ControllerError::Malformed {
                object: key.to_string(),
                reason: e.to_string(),
            })?;
        let wanted = wanted_taints(
            &fresh_node,
            &ready_status(&fresh),
            &super::format_time(super::now()),
        );
        let rv = fresh["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        fresh["spec"]["taints"] = serde_json::to_value(&wanted).unwrap_or(Value::Null);
        if wanted.is_empty() {
            if let Some(spec) = fresh["spec"].as_object_mut() {
                spec.remove("taints");
            }
        }
        tracing::info!(node = %key.name, ready = %ready, "node taints follow its Ready condition");
        match self
            .store
            .update(key, fresh, Precondition::resource_version(rv))
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(Action::AwaitChange),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(taints: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "pi"}, "spec": {"taints": taints}}))
            .expect("node")
    }

    #[test]
    fn taints_follow_the_ready_condition_and_keep_the_users() {
        let own = json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"});
        let unknown = wanted_taints(&node(json!([own])), "Unknown", "2026-01-01T00:00:00Z");
        let keys: Vec<(String, String, Option<String>)> = unknown
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone(), t.time_added.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated".into(), "NoSchedule".into(), None),
                (TAINT_UNREACHABLE.into(), "NoSchedule".into(), None),
                (
                    TAINT_UNREACHABLE.into(),
                    "NoExecute".into(),
                    Some("2026-01-01T00:00:00Z".into())
                ),
            ]
        );
        // Still unknown later: the time the taint was added stays.
        let tainted = node(serde_json::to_value(&unknown).expect("taints"));
        assert_eq!(
            wanted_taints(&tainted, "Unknown", "2026-01-01T01:00:00Z"),
            unknown
        );
        // Not ready: the other key.
        let not_ready = wanted_taints(&tainted, "False", "2026-01-01T01:00:00Z");
        assert!(not_ready.iter().all(|t| t.key != TAINT_UNREACHABLE));
        assert_eq!(
            not_ready
                .iter()
                .filter(|t| t.key == TAINT_NOT_READY)
                .count(),
            2
        );
        // Ready again: only the user's taint.
        assert_eq!(wanted_taints(&tainted, "True", "x").len(), 1);
    }
}
