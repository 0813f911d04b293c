//! Taint-based eviction (Kubernetes' taint eviction controller, once the
//! `NoExecuteTaintManager`): a pod on a node with a `NoExecute` taint it
//! does not tolerate is deleted at once; one that tolerates it for
//! `tolerationSeconds` is deleted that long after the taint's `timeAdded`
//! (the 300 s the API server's `DefaultTolerationSeconds` gives every pod
//! for `not-ready` and `unreachable`); one that tolerates it without a
//! limit stays. The event is `TaintManagerEviction`: `Marking for deletion
//! Pod {namespace}/{name}`.
//!
//! The edge choice, as OpenYurt's node autonomy: a flaky uplink must not
//! empty a device. The annotation `bramble.io/autonomy-duration` on the
//! Node or on the pod's Namespace (`24h`, `90m`, `300s`, a number of
//! seconds; `0` = never) applies to the `unreachable` and `not-ready`
//! taints only: `0` on either means pods there are never evicted for
//! them; otherwise the longest of the annotation(s) and the pod's
//! `tolerationSeconds` counts. Other `NoExecute` taints (`kubectl taint`)
//! evict as in Kubernetes.
//!
//! Deleting the pod is graceful: a pod on an unreachable node stays
//! `Terminating` until the node comes back and stops it (or it is
//! force-deleted); its controller replaces it elsewhere at once, since a
//! pod being deleted no longer counts.

use std::time::Duration;

use bramble_common::api::{Taint, Toleration};
use bramble_common::Kind;
use serde_json::{json, Value};

use super::cache::{Cache, Change, PodInfo};
use super::node_taints::{TAINT_NOT_READY, TAINT_UNREACHABLE};
use super::runtime::{Action, Reconciler};
use super::{pods, ControllerError};
use crate::events::EventRecorder;
use crate::scheduler::filter::tolerates;
use crate::store::{ObjectKey, StoreError};

/// The controller's name (its event source).
pub const NAME: &str = "taint-eviction-controller";
/// Node or namespace annotation: how long pods there outlive an
/// unreachable or not-ready node (`0` = never evicted).
pub const AUTONOMY_ANNOTATION: &str = "bramble.io/autonomy-duration";

/// The taint eviction controller.
pub struct TaintEviction {
    store: crate::store::Store,
    cache: Cache,
    events: EventRecorder,
}

impl TaintEviction {
    /// The controller over `store`, reading `cache`.
    pub fn new(store: crate::store::Store, cache: Cache, events: EventRecorder) -> TaintEviction {
        TaintEviction {
            store,
            cache,
            events,
        }
    }
}

/// Parses an autonomy duration: `24h`, `90m`, `300s`, `1h30m`, or plain
/// seconds. `None` when it is not one.
pub fn parse_autonomy(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return (seconds >= 0).then_some(seconds);
    }
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            'd' => 86400,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

/// When (seconds since the epoch) the pod must go because of `taint`, or
/// `None` when it may stay. `autonomy` is the node's or namespace's
/// `bramble.io/autonomy-duration` (`Some(0)` = never for the lifecycle
/// taints).
fn eviction_time(
    tolerations: &[Toleration],
    taint: &Taint,
    autonomy: Option<i64>,
    now: i64,
) -> Option<i64> {
    let lifecycle = taint.key == TAINT_UNREACHABLE || taint.key == TAINT_NOT_READY;
    if lifecycle && autonomy == Some(0) {
        return None;
    }
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    let added = taint
        .time_added
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(now, |t| t.as_second());
    let mut seconds = if matching.is_empty() {
        Some(0)
    } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
        None
    } else {
        matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .map(|s| s.max(0))
    };
    if lifecycle {
        if let (Some(s), Some(a)) = (seconds, autonomy) {
            seconds = Some(s.max(a));
        }
    }
    seconds.map(|s| added + s)
}

fn annotation(object: Option<&Value>) -> Option<i64> {
    let text = object?["metadata"]["annotations"][AUTONOMY_ANNOTATION].as_str()?;
    let parsed = parse_autonomy(text);
    if parsed.is_none() {
        tracing::warn!(
            value = text,
            "{AUTONOMY_ANNOTATION}: not a duration (24h, 90m, 300s, 0); ignored"
        );
    }
    parsed
}

/// The stricter-for-eviction combination of the node's and the
/// namespace's autonomy: `0` on either wins, else the longer.
fn combined_autonomy(node: Option<i64>, namespace: Option<i64>) -> Option<i64> {
    match (node, namespace) {
        (Some(0), _) | (_, Some(0)) => Some(0),
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn no_execute_taints(node: &Value) -> Vec<Taint> {
    serde_json::from_value::<Vec<Taint>>(node["spec"]["taints"].clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect()
}

impl Reconciler for TaintEviction {
    fn name(&self) -> &'static str {
        NAME
    }

    fn primary(&self) -> Kind {
        Kind::Pod
    }

    fn resync_keys(&self, cache: &Cache) -> Vec<ObjectKey> {
        // Only the pods of tainted nodes.
        cache
            .list(Kind::Node, None)
            .iter()
            .filter(|n| !no_execute_taints(n).is_empty())
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .flat_map(|node| cache.pods_on_node(&node))
            .map(|p| p.key())
            .collect()
    }

    fn keys_for(&self, change: &Change, cache: &Cache) -> Vec<ObjectKey> {
        match change.key.kind {
            Kind::Node => {
                let taints = |c: Option<&super::cache::Cached>| {
                    c.and_then(|c| c.object()).map(|n| {
                        (
                            no_execute_taints(n),
                            n["metadata"]["annotations"][AUTONOMY_ANNOTATION].clone(),
                        )
                    })
                };
                let new = taints(change.new.as_ref());
                if new.as_ref().is_none_or(|(t, _)| t.is_empty())
                    || taints(change.old.as_ref()) == new
                {
                    return Vec::new();
                }
                cache
                    .pods_on_node(&change.key.name)
                    .iter()
                    .map(|p| p.key())
                    .collect()
            }
            Kind::Namespace => {
                let autonomy = |c: Option<&super::cache::Cached>| {
                    c.and_then(|c| c.object())
                        .map(|n| n["metadata"]["annotations"][AUTONOMY_ANNOTATION].clone())
                };
                if autonomy(change.old.as_ref()) == autonomy(change.new.as_ref()) {
                    return Vec::new();
                }
                cache
                    .pods_in(&change.key.name)
                    .iter()
                    .map(|p| p.key())
                    .collect()
            }
            Kind::Pod => match change.new.as_ref().and_then(|c| c.pod()) {
                Some(pod) if pod.is_active() && pod.node_name.is_some() => {
                    let node = pod.node_name.clone().unwrap_or_default();
                    let tainted = cache
                        .get(&ObjectKey::new(Kind::Node, "", node))
                        .is_some_and(|n| !no_execute_taints(&n).is_empty());
                    if tainted {
                        vec![change.key.clone()]
                    } else {
                        Vec::new()
                    }
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        let Some(pod) = self.cache.pod(&key.namespace, &key.name) else {
            return Ok(Action::AwaitChange);
        };
        if !pod.is_active() {
            return Ok(Action::AwaitChange);
        }
        let Some(node_name) = pod.node_name.clone() else {
            return Ok(Action::AwaitChange);
        };
        let Some(node) = self
            .cache
            .get(&ObjectKey::new(Kind::Node, "", node_name.clone()))
        else {
            return Ok(Action::AwaitChange);
        };
        let taints = no_execute_taints(&node);
        if taints.is_empty() {
            return Ok(Action::AwaitChange);
        }
        let namespace = self
            .cache
            .get(&ObjectKey::new(Kind::Namespace, "", key.namespace.clone()));
        let autonomy = combined_autonomy(annotation(Some(&node)), annotation(namespace.as_deref()));
        let now = super::now();
        let due = taints
            .iter()
            .filter_map(|t| eviction_time(&pod.no_execute_tolerations, t, autonomy, now))
            .min();
        let Some(due) = due else {
            return Ok(Action::AwaitChange);
        };
        if due > now {
            let wait = u64::try_from(due - now).unwrap_or(1);
            return Ok(Action::RequeueAfter(Duration::from_secs(wait)));
        }
        self.evict(&pod, &node_name).await?;
        Ok(Action::AwaitChange)
    }
}

impl TaintEviction {
    async fn evict(&self, pod: &PodInfo, node: &str) -> Result<(), ControllerError> {
        tracing::info!(pod = %pod.key(), node, "evicting: a NoExecute taint it no longer tolerates");
        let involved = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                "resourceVersion": pod.resource_version.to_string()},
        });
        match pods::delete(&self.store, pod).await {
            Ok(()) => {
                self.events.normal(
                    NAME,
                    &involved,
                    "TaintManagerEviction",
                    format!("Marking for deletion Pod {}/{}", pod.namespace, pod.name),
                );
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, added: &str) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: Some(added.into()),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            value: None,
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
        }
    }

    #[test]
    fn autonomy_durations_parse() {
        assert_eq!(parse_autonomy("24h"), Some(86400));
        assert_eq!(parse_autonomy("1h30m"), Some(5400));
        assert_eq!(parse_autonomy("300s"), Some(300));
        assert_eq!(parse_autonomy("0"), Some(0));
        assert_eq!(parse_autonomy("45"), Some(45));
        assert_eq!(parse_autonomy("soon"), None);
        assert_eq!(parse_autonomy("5x"), None);
        assert_eq!(combined_autonomy(Some(60), Some(0)), Some(0));
        assert_eq!(combined_autonomy(Some(60), Some(600)), Some(600));
        assert_eq!(combined_autonomy(None, Some(60)), Some(60));
    }

    #[test]
    fn eviction_follows_toleration_seconds_and_autonomy() {
        let t0 = "2026-01-01T00:00:00Z";
        let at = |s: i64| {
            "2026-01-01T00:00:00Z"
                .parse::<jiff::Timestamp>()
                .expect("t")
                .as_second()
                + s
        };
        let unreachable = taint(TAINT_UNREACHABLE, t0);
        let defaults = [toleration(TAINT_UNREACHABLE, Some(300))];
        assert_eq!(
            eviction_time(&defaults, &unreachable, None, 0),
            Some(at(300))
        );
        // Not tolerated at all: at once.
        assert_eq!(eviction_time(&[], &unreachable, None, 0), Some(at(0)));
        // Tolerated forever (daemon pods).
        assert_eq!(
            eviction_time(
                &[toleration(TAINT_UNREACHABLE, None)],
                &unreachable,
                None,
                0
            ),
            None
        );
        // Autonomy: never, or longer.
        assert_eq!(eviction_time(&defaults, &unreachable, Some(0), 0), None);
        assert_eq!(
            eviction_time(&defaults, &unreachable, Some(86400), 0),
            Some(at(86400))
        );
        assert_eq!(
            eviction_time(&defaults, &unreachable, Some(10), 0),
            Some(at(300))
        );
        // A user's NoExecute taint ignores autonomy.
        let user = taint("dedicated", t0);
        assert_eq!(eviction_time(&defaults, &user, Some(0), 0), Some(at(0)));
    }
}
