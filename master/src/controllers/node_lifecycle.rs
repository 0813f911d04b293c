//! Node lifecycle: a node whose agent went offline (its MQTT last will) or
//! stopped reporting for a number of heartbeats is marked NotReady
//! (`Ready=Unknown`), within seconds. Dispatch marks it Ready again from the
//! next report.
//!
//! Liveness is kept in memory ([`NodeHealth`]): heartbeats are never written
//! to disk (flash wears out); only transitions are.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bramble_common::Kind;

use crate::dispatch::reports::not_ready_condition;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// What the master knows about one node's agent, in memory.
#[derive(Debug, Clone)]
struct Health {
    online: bool,
    last_report: Instant,
    marked_not_ready: bool,
}

/// Liveness of every node's agent, shared by dispatch (which records
/// presence and reports) and the lifecycle controller (which acts on it).
#[derive(Debug, Default)]
pub struct NodeHealth {
    nodes: Mutex<HashMap<String, Health>>,
}

impl NodeHealth {
    /// A report arrived from `node`.
    pub fn report(&self, node: &str) {
        if let Ok(mut nodes) = self.nodes.lock() {
            let entry = nodes.entry(node.to_string()).or_insert(Health {
                online: true,
                last_report: Instant::now(),
                marked_not_ready: false,
            });
            entry.online = true;
            entry.last_report = Instant::now();
        }
    }

    /// `node` announced itself online.
    pub fn online(&self, node: &str) {
        self.report(node);
    }

    /// The broker published `node`'s last will.
    pub fn offline(&self, node: &str) {
        if let Ok(mut nodes) = self.nodes.lock() {
            let entry = nodes.entry(node.to_string()).or_insert(Health {
                online: false,
                last_report: Instant::now(),
                marked_not_ready: false,
            });
            entry.online = false;
        }
    }

    /// Start watching `node` as if it had just reported (used at master
    /// start, so nodes that never come back are marked NotReady).
    pub fn expect(&self, node: &str) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.entry(node.to_string()).or_insert(Health {
                online: true,
                last_report: Instant::now(),
                marked_not_ready: false,
            });
        }
    }

    /// Forget `node` (removed).
    pub fn forget(&self, node: &str) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.remove(node);
        }
    }

    /// True when the lifecycle controller marked `node` NotReady since its
    /// last report: dispatch must write the next report's status.
    pub fn take_marked_not_ready(&self, node: &str) -> bool {
        self.nodes
            .lock()
            .ok()
            .and_then(|mut nodes| {
                nodes
                    .get_mut(node)
                    .map(|h| std::mem::take(&mut h.marked_not_ready))
            })
            .unwrap_or(false)
    }

    /// Nodes that should be marked NotReady now, with the reason.
    fn overdue(&self, silence: Duration) -> Vec<(String, String)> {
        let Ok(nodes) = self.nodes.lock() else {
            return Vec::new();
        };
        nodes
            .iter()
            .filter(|(_, h)| !h.marked_not_ready)
            .filter_map(|(name, h)| {
                if !h.online {
                    Some((name.clone(), "the agent went offline (its MQTT connection closed; the broker published its last will)".to_string()))
                } else if h.last_report.elapsed() > silence {
                    Some((
                        name.clone(),
                        format!("the agent stopped reporting: no report for {}s", h.last_report.elapsed().as_secs()),
                    ))
                } else {
                    None
                }
            })
            .collect()
    }

    fn set_marked(&self, node: &str) {
        if let Ok(mut nodes) = self.nodes.lock() {
            if let Some(h) = nodes.get_mut(node) {
                h.marked_not_ready = true;
            }
        }
    }
}

/// Run the controller until `shutdown`: every second, mark overdue nodes
/// NotReady (once per outage).
pub async fn run(
    store: Store,
    health: std::sync::Arc<NodeHealth>,
    silence: Duration,
    events: crate::events::EventRecorder,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => return,
        }
        for (node, reason) in health.overdue(silence) {
            match mark_not_ready(&store, &node, &reason).await {
                Ok(marked) => {
                    tracing::info!(%node, %reason, "node is NotReady");
                    health.set_marked(&node);
                    if let Some(object) = marked {
                        events.normal(
                            "node-controller",
                            &object,
                            "NodeNotReady",
                            format!("Node {node} status is now: NodeNotReady"),
                        );
                    }
                }
                Err(StoreError::NotFound { .. }) => health.forget(&node),
                Err(error) => tracing::warn!(%node, %error, "cannot mark node NotReady; retrying"),
            }
        }
    }
}

/// Marks `node` NotReady; the node as it was when it was marked, `None`
/// when it already was not ready.
async fn mark_not_ready(
    store: &Store,
    node: &str,
    reason: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let key = ObjectKey {
        kind: Kind::Node,
        namespace: String::new(),
        name: node.to_string(),
    };
    let Some(object) = store.get(&key).await? else {
        return Err(StoreError::NotFound { key });
    };
    let mut status = object
        .get("status")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string();
    let condition = serde_json::to_value(not_ready_condition(reason, &now)).unwrap_or_default();
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let mut replaced = false;
    let mut new_conditions: Vec<serde_json::Value> = Vec::new();
    for c in conditions {
        if c["type"] == "Ready" {
            if c["status"] == "Unknown" {
                // Already not ready (or never connected): nothing to write.
                return Ok(None);
            }
            new_conditions.push(condition.clone());
            replaced = true;
        } else {
            new_conditions.push(c);
        }
    }
    if !replaced {
        new_conditions.push(condition);
    }
    status["conditions"] = serde_json::Value::Array(new_conditions);
    store
        .update_status(&key, status, Precondition::default())
        .await?;
    Ok(Some(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_and_silent_nodes_are_overdue_once() {
        let health = NodeHealth::default();
        health.report("a");
        health.report("b");
        health.offline("b");
        let overdue = health.overdue(Duration::from_secs(30));
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].0, "b");
        health.set_marked("b");
        assert!(health.overdue(Duration::from_secs(30)).is_empty());
        let silent = health.overdue(Duration::ZERO);
        assert_eq!(
            silent.len(),
            1,
            "a has been silent longer than zero seconds"
        );
        assert!(health.take_marked_not_ready("b"));
        assert!(!health.take_marked_not_ready("b"));
    }
}
