//! Writing what agents report into the store: Node status and labels, and
//! pod statuses. Its own task, so that dispatch keeps reading MQTT while
//! the store commits.
//!
//! - Only changes are written: the last status written (or found equal in
//!   the store) is remembered per node and per pod, as a hash; heartbeats
//!   and unchanged reports never reach the disk.
//! - Updates for the same pod or node are coalesced: only the latest one
//!   still waiting is written.
//! - Up to [`MAX_WRITES_IN_FLIGHT`] writes run at once, so the store commits
//!   them in groups (one fsync for many) instead of one after the other.
//! - A write that fails is not remembered: the next report (at the latest
//!   the agent's heartbeat) tries again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use bramble_common::api::PodStatus;
use bramble_common::wire::{NodeStatusReport, PodStatusReport};
use bramble_common::Kind;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::reports;
use crate::store::{ObjectKey, Precondition, Store};

/// Most store writes in flight at once.
pub const MAX_WRITES_IN_FLIGHT: usize = 64;

/// Updates queued between dispatch and the writer.
pub const QUEUE: usize = 1024;

/// What dispatch hands to the writer.
#[derive(Debug)]
pub enum StatusUpdate {
    /// The node's own status from a report.
    Node {
        /// The node.
        node: String,
        /// What it reported.
        status: Box<NodeStatusReport>,
        /// Write even if it equals the last status written (the node
        /// lifecycle controller wrote NotReady in between).
        force: bool,
    },
    /// Pod statuses from a report.
    Pods {
        /// The node.
        node: String,
        /// Its InternalIP, for `status.hostIP`.
        host_ip: Option<String>,
        /// The pods' statuses.
        pods: Vec<PodStatusReport>,
        /// `pods` lists every pod of the node.
        full: bool,
    },
    /// The node was removed: forget what was written for it.
    ForgetNode(String),
}

/// A problem worth logging once per node and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The node.
    pub node: String,
    /// What went wrong.
    pub reason: String,
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What is written, one at a time per target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Node(String),
    Pod(String),
}

enum Job {
    Node {
        node: String,
        status: Box<NodeStatusReport>,
        hash: u64,
    },
    Pod {
        node: String,
        host_ip: Option<String>,
        report: PodStatusReport,
        hash: u64,
    },
}

/// How a write ended.
enum Outcome {
    /// The store holds the status (written now or already).
    Stored { node: String, hash: u64 },
    /// The pod is gone or elsewhere: nothing to remember.
    Gone { node: String },
    /// Failed; logged by the writer or reported.
    Failed { problem: Option<Problem> },
}

#[derive(Default)]
struct Written {
    /// Hash of the node status last stored, by node.
    nodes: HashMap<String, u64>,
    /// Hash of the reported pod status JSON last stored, by node and uid.
    pods: HashMap<String, HashMap<String, u64>>,
}

/// Runs the writer until `updates` closes. Problems worth a log line (once
/// per node and reason, which dispatch decides) go to `problems`.
pub async fn run(
    store: Store,
    mut updates: mpsc::Receiver<StatusUpdate>,
    problems: mpsc::UnboundedSender<Problem>,
) {
    let mut written = Written::default();
    let mut pending: HashMap<Target, Job> = HashMap::new();
    let mut order: VecDeque<Target> = VecDeque::new();
    let mut busy: HashSet<Target> = HashSet::new();
    let mut in_flight: FuturesUnordered<BoxFuture<'static, (Target, Outcome)>> =
        FuturesUnordered::new();
    let mut open = true;
    loop {
        // Start what may start: one write per target at a time.
        let mut skipped = VecDeque::new();
        while in_flight.len() < MAX_WRITES_IN_FLIGHT {
            let Some(target) = order.pop_front() else {
                break;
            };
            if busy.contains(&target) {
                skipped.push_back(target);
                continue;
            }
            let Some(job) = pending.remove(&target) else {
                continue;
            };
            busy.insert(target.clone());
            in_flight.push(write(store.clone(), target, job).boxed());
        }
        skipped.extend(order.drain(..));
        order = skipped;
        if !open && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            update = updates.recv(), if open => match update {
                Some(update) => {
                    for (target, job) in written.jobs(update) {
                        if pending.insert(target.clone(), job).is_none() {
                            order.push_back(target);
                        }
                    }
                }
                None => open = false,
            },
            Some((target, outcome)) = in_flight.next() => {
                busy.remove(&target);
                match (target, outcome) {
                    (Target::Node(node), Outcome::Stored { hash, .. }) => {
                        written.nodes.insert(node, hash);
                    }
                    (Target::Pod(uid), Outcome::Stored { node, hash }) => {
                        written.pods.entry(node).or_default().insert(uid, hash);
                    }
                    (Target::Pod(uid), Outcome::Gone { node }) => {
                        if let Some(pods) = written.pods.get_mut(&node) {
                            pods.remove(&uid);
                        }
                    }
                    (_, Outcome::Gone { .. }) => {}
                    (_, Outcome::Failed { problem }) => {
                        if let Some(problem) = problem {
                            let _ = problems.send(problem);
                        }
                    }
                }
            }
        }
    }
}

impl Written {
    /// The writes an update asks for: what differs from what was stored.
    fn jobs(&mut self, update: StatusUpdate) -> Vec<(Target, Job)> {
        match update {
            StatusUpdate::Node {
                node,
                status,
                force,
            } => {
                let stored = serde_json::to_string(&reports::node_status(&node, &status))
                    .unwrap_or_default();
                let hash = hash_of(&stored);
                if !force && self.nodes.get(&node) == Some(&hash) {
                    return Vec::new();
                }
                if force {
                    self.nodes.remove(&node);
                }
                vec![(Target::Node(node.clone()), Job::Node { node, status, hash })]
            }
            StatusUpdate::Pods {
                node,
                host_ip,
                pods,
                full,
            } => {
                let known = self.pods.entry(node.clone()).or_default();
                if full {
                    let listed: HashSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
                    known.retain(|uid, _| listed.contains(uid.as_str()));
                }
                pods.into_iter()
                    .filter_map(|report| {
                        let hash = hash_of(&(&report.status_json, &host_ip));
                        if known.get(&report.uid) == Some(&hash) {
                            return None;
                        }
                        Some((
                            Target::Pod(report.uid.clone()),
                            Job::Pod {
                                node: node.clone(),
                                host_ip: host_ip.clone(),
                                report,
                                hash,
                            },
                        ))
                    })
                    .collect()
            }
            StatusUpdate::ForgetNode(node) => {
                self.nodes.remove(&node);
                self.pods.remove(&node);
                Vec::new()
            }
        }
    }
}

async fn write(store: Store, target: Target, job: Job) -> (Target, Outcome) {
    let outcome = match job {
        Job::Node { node, status, hash } => match write_node(&store, &node, &status).await {
            Ok(()) => Outcome::Stored { node, hash },
            Err(reason) => Outcome::Failed {
                problem: Some(Problem { node, reason }),
            },
        },
        Job::Pod {
            node,
            host_ip,
            report,
            hash,
        } => write_pod(&store, node, host_ip, report, hash).await,
    };
    (target, outcome)
}

async fn write_node(store: &Store, name: &str, report: &NodeStatusReport) -> Result<(), String> {
    let key = ObjectKey {
        kind: Kind::Node,
        namespace: String::new(),
        name: name.to_string(),
    };
    let status = reports::node_status(name, report);
    let status = serde_json::to_value(&status)
        .map_err(|e| format!("cannot encode the node's status: {e}"))?;
    let node = match store.get(&key).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(
                "a report from a node that is not registered (bramble node add NAME)".into(),
            )
        }
        Err(e) => return Err(format!("cannot read the node: {e}")),
    };
    let labels = reports::node_labels(name, report);
    let missing = labels
        .iter()
        .any(|(k, v)| node["metadata"]["labels"][k].as_str() != Some(v.as_str()));
    if missing {
        let mut updated = node.clone();
        for (k, v) in &labels {
            updated["metadata"]["labels"][k] = Value::String(v.clone());
        }
        store
            .update(&key, updated, Precondition::default())
            .await
            .map_err(|e| format!("cannot write the node's labels: {e}"))?;
    }
    if node["status"] != status {
        store
            .update_status(&key, status, Precondition::default())
            .await
            .map_err(|e| format!("cannot write the node's status: {e}"))?;
    }
    Ok(())
}

async fn write_pod(
    store: &Store,
    node: String,
    host_ip: Option<String>,
    report: PodStatusReport,
    hash: u64,
) -> Outcome {
    let reported = match report.status() {
        Ok(s) => s,
        Err(error) => {
            return Outcome::Failed {
                problem: Some(Problem {
                    node,
                    reason: error.to_string(),
                }),
            }
        }
    };
    let key = ObjectKey {
        kind: Kind::Pod,
        namespace: report.namespace.clone(),
        name: report.name.clone(),
    };
    let stored = match store.get(&key).await {
        Ok(Some(pod)) => pod,
        Ok(None) => return Outcome::Gone { node },
        Err(error) => {
            tracing::warn!(%error, pod = %key, "cannot read pod");
            return Outcome::Failed { problem: None };
        }
    };
    if stored["metadata"]["uid"].as_str() != Some(report.uid.as_str())
        || stored["spec"]["nodeName"].as_str() != Some(node.as_str())
    {
        return Outcome::Gone { node };
    }
    let stored_status: Option<PodStatus> = serde_json::from_value(stored["status"].clone()).ok();
    let merged = reports::merge_pod_status(stored_status.as_ref(), reported, host_ip.as_deref());
    let merged_json = match serde_json::to_value(&merged) {
        Ok(v) => v,
        Err(error) => {
            tracing::warn!(%error, pod = %key, "cannot encode pod status");
            return Outcome::Failed { problem: None };
        }
    };
    if merged_json != stored["status"] {
        let precondition = Precondition {
            uid: Some(report.uid.clone()),
            ..Precondition::default()
        };
        if let Err(error) = store.update_status(&key, merged_json, precondition).await {
            tracing::warn!(%error, pod = %key, "cannot write pod status");
            return Outcome::Failed { problem: None };
        }
    }
    Outcome::Stored { node, hash }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(uid: &str, phase: &str) -> PodStatusReport {
        PodStatusReport {
            uid: uid.into(),
            namespace: "default".into(),
            name: uid.into(),
            status_json: format!("{{\"phase\":\"{phase}\"}}"),
            observed_resource_version: 1,
        }
    }

    fn pods(node: &str, list: Vec<PodStatusReport>, full: bool) -> StatusUpdate {
        StatusUpdate::Pods {
            node: node.into(),
            host_ip: Some("192.168.1.10".into()),
            pods: list,
            full,
        }
    }

    #[test]
    fn only_what_differs_from_the_stored_status_is_written() {
        let mut written = Written::default();
        let jobs = written.jobs(pods(
            "pi-1",
            vec![report("a", "Pending"), report("b", "Running")],
            true,
        ));
        assert_eq!(jobs.len(), 2);
        // As if both were stored.
        for (target, job) in jobs {
            if let (Target::Pod(uid), Job::Pod { hash, .. }) = (target, job) {
                written
                    .pods
                    .entry("pi-1".into())
                    .or_default()
                    .insert(uid, hash);
            }
        }
        // A heartbeat with the same statuses asks for nothing.
        let again = written.jobs(pods(
            "pi-1",
            vec![report("a", "Pending"), report("b", "Running")],
            true,
        ));
        assert!(again.is_empty());
        // A change asks for that pod only.
        let changed = written.jobs(pods("pi-1", vec![report("a", "Running")], false));
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0, Target::Pod("a".into()));
        // A full report without `b` forgets it.
        let _ = written.jobs(pods("pi-1", vec![report("a", "Pending")], true));
        assert!(!written.pods["pi-1"].contains_key("b"));
        // A node status is written once, again when forced.
        let node = |force| StatusUpdate::Node {
            node: "pi-1".into(),
            status: Box::default(),
            force,
        };
        let jobs = written.jobs(node(false));
        assert_eq!(jobs.len(), 1);
        if let (Target::Node(name), Job::Node { hash, .. }) = &jobs[0] {
            written.nodes.insert(name.clone(), *hash);
        }
        assert!(written.jobs(node(false)).is_empty());
        assert_eq!(written.jobs(node(true)).len(), 1);
        written.jobs(StatusUpdate::ForgetNode("pi-1".into()));
        assert!(written.pods.is_empty() && written.nodes.is_empty());
    }
}
