//! The sync loop: level-triggered reconcile of the desired pods against what
//! the runtime runs.
//!
//! Every pass recomputes from the whole desired state: pods that should run
//! are handed to the runtime ([`PodRuntime::sync_pod`]) when new or changed,
//! pods marked deleting are stopped with their grace period, pods gone from
//! the desired state (or unknown pods the runtime still has) are stopped
//! and forgotten. Then every desired pod's status is read and published as
//! a [`SyncSnapshot`] for the reports. A pass runs when the desired state
//! changes, when a stop finishes, and every `resync` interval.

pub mod pod;
pub mod runtime;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bramble_common::api::PodStatus;
use bramble_common::wire::{NodeDesired, PodStatusReport};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

pub use runtime::{LogLocation, PodDesired, PodRuntime, RuntimeError};

use crate::shutdown::Shutdown;

/// Pods handed to the runtime at once in a pass.
const PARALLEL_SYNCS: usize = 4;

/// The default interval between two passes when nothing happens.
pub const DEFAULT_RESYNC: Duration = Duration::from_millis(500);

/// What the sync loop last observed: the input of the reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSnapshot {
    /// The generation of the desired state the last pass applied (0: none).
    pub applied_generation: u64,
    /// One status per desired pod, sorted by UID.
    pub pods: Vec<PodStatusReport>,
    /// Passes run so far (0 until the first pass).
    pub passes: u64,
}

/// Settings of a sync loop.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// The node's name (for logs).
    pub node: String,
    /// The node's address, reported as every pod's `hostIP`.
    pub host_ip: Option<String>,
    /// The interval between two passes when nothing happens.
    pub resync: Duration,
}

/// The state the loop keeps between passes.
struct SyncState {
    /// Fingerprint of what was last handed to `sync_pod`, per UID.
    synced: BTreeMap<String, Vec<(String, u64)>>,
    /// When the agent first saw each pod (RFC 3339).
    accepted_at: BTreeMap<String, String>,
    /// Pods being stopped.
    killing: BTreeSet<String>,
    /// Pods stopped because they are being deleted, with their last status.
    killed: BTreeMap<String, PodStatus>,
    /// Last status read per pod, kept for `killed_status`.
    last_status: BTreeMap<String, PodStatus>,
    /// Errors already logged per pod, so a failing pod logs once per error.
    logged_errors: BTreeMap<String, String>,
    /// Last phase logged per pod.
    phases: BTreeMap<String, String>,
}

/// Run the sync loop until `shutdown`. `desired` carries the current desired
/// state (`None`: nothing received or loaded yet, which runs no pods but
/// does not stop unknown ones either); each pass's result goes to
/// `snapshots`. Logs `bramble-agent ready node=NAME` after the first pass.
pub async fn run<R: PodRuntime>(
    settings: SyncSettings,
    runtime: Arc<R>,
    mut desired: watch::Receiver<Option<Arc<NodeDesired>>>,
    snapshots: watch::Sender<SyncSnapshot>,
    mut shutdown: Shutdown,
) {
    let (killed_tx, mut killed_rx) =
        mpsc::unbounded_channel::<(String, Result<(), RuntimeError>)>();
    let mut state = SyncState {
        synced: BTreeMap::new(),
        accepted_at: BTreeMap::new(),
        killing: BTreeSet::new(),
        killed: BTreeMap::new(),
        last_status: BTreeMap::new(),
        logged_errors: BTreeMap::new(),
        phases: BTreeMap::new(),
    };
    let mut passes = 0u64;
    let mut desired_open = true;
    let mut status_changes = runtime.status_changes();
    loop {
        let current = desired.borrow_and_update().clone();
        pass(&runtime, current.as_deref(), &mut state, &killed_tx).await;
        passes += 1;
        let pods = statuses(&settings, &runtime, current.as_deref(), &mut state).await;
        let snapshot = SyncSnapshot {
            applied_generation: current.as_ref().map_or(0, |d| d.generation),
            pods,
            passes,
        };
        snapshots.send_if_modified(|old| {
            let changed = old.applied_generation != snapshot.applied_generation
                || old.pods != snapshot.pods
                || old.passes == 0;
            *old = snapshot;
            changed
        });
        if passes == 1 {
            info!("bramble-agent ready node={}", settings.node);
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            changed = desired.changed(), if desired_open => {
                if changed.is_err() {
                    desired_open = false;
                }
            }
            Some((uid, result)) = killed_rx.recv() => {
                state.killing.remove(&uid);
                match result {
                    Ok(()) => {
                        let last = state.last_status.remove(&uid);
                        let spec = current.as_ref().and_then(|d| d.pod(&uid)).and_then(|p| p.spec().ok());
                        let now = pod::rfc3339(SystemTime::now());
                        state.killed.insert(uid, pod::killed_status(last, spec.as_ref(), &now));
                    }
                    Err(e) => warn!(pod_uid = %uid, error = %e, "cannot stop pod; retrying"),
                }
            }
            changed = changed_opt(&mut status_changes) => {
                if changed.is_err() {
                    status_changes = None;
                }
            }
            _ = tokio::time::sleep(settings.resync) => {}
        }
    }
    debug!("sync loop stopped");
}

/// The next change of an optional watch; pending forever without one.
async fn changed_opt(
    receiver: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match receiver {
        Some(receiver) => receiver.changed().await,
        None => std::future::pending().await,
    }
}

/// One reconcile pass (everything but reading statuses).
async fn pass<R: PodRuntime>(
    runtime: &Arc<R>,
    desired: Option<&NodeDesired>,
    state: &mut SyncState,
    killed_tx: &mpsc::UnboundedSender<(String, Result<(), RuntimeError>)>,
) {
    let Some(desired) = desired else {
        return;
    };
    runtime.sync_node(desired).await;
    let now = pod::rfc3339(SystemTime::now());
    let desired_uids: BTreeSet<&str> = desired.pods.iter().map(|p| p.uid.as_str()).collect();
    // Pods to hand to the runtime in this pass: (uid, object, fingerprint, pod).
    let mut to_sync = Vec::new();
    for desired_pod in &desired.pods {
        let uid = desired_pod.uid.clone();
        state
            .accepted_at
            .entry(uid.clone())
            .or_insert_with(|| now.clone());
        if let Some(grace) = desired_pod.deletion_grace_seconds {
            if !state.killing.contains(&uid) && !state.killed.contains_key(&uid) {
                let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
                info!(pod = %format!("{}/{}", desired_pod.namespace, desired_pod.name), grace_seconds = grace.as_secs(), "stopping pod: it is being deleted");
                spawn_kill(runtime, &uid, Some(grace), killed_tx);
                state.killing.insert(uid.clone());
                state.synced.remove(&uid);
            }
            continue;
        }
        let fingerprint = pod::pod_fingerprint(desired, desired_pod);
        if state.synced.get(&uid) == Some(&fingerprint) {
            continue;
        }
        let object = format!("{}/{}", desired_pod.namespace, desired_pod.name);
        match pod::pod_desired(desired, desired_pod) {
            Err(e) => {
                log_pod_error(state, &uid, &object, &e.to_string());
                state
                    .last_status
                    .insert(uid.clone(), pod::invalid_status(e.to_string(), &now));
                state.synced.insert(uid, fingerprint);
            }
            Ok(pod_desired) => to_sync.push((uid, object, fingerprint, pod_desired)),
        }
    }
    // Several at once: a pod's network setup or image lookup must not hold
    // up the others (a burst of new pods starts in parallel).
    let results: Vec<_> = futures::stream::iter(to_sync)
        .map(|(uid, object, fingerprint, pod_desired)| async move {
            let result = runtime.sync_pod(&pod_desired).await;
            (uid, object, fingerprint, result)
        })
        .buffer_unordered(PARALLEL_SYNCS)
        .collect()
        .await;
    for (uid, object, fingerprint, result) in results {
        match result {
            Ok(status) => {
                debug!(pod = %object, "pod handed to the runtime");
                state.logged_errors.remove(&uid);
                state.last_status.insert(uid.clone(), status);
                state.synced.insert(uid, fingerprint);
            }
            Err(RuntimeError::InvalidPod(message)) => {
                log_pod_error(state, &uid, &object, &message);
                state
                    .last_status
                    .insert(uid.clone(), pod::invalid_status(message, &now));
                state.synced.insert(uid, fingerprint);
            }
            Err(e) => log_pod_error(state, &uid, &object, &e.to_string()),
        }
    }
    // Pods the runtime has that are not desired at all: stop and forget.
    for uid in runtime.list_pods().await {
        if !desired_uids.contains(uid.as_str()) && !state.killing.contains(&uid) {
            info!(pod_uid = %uid, "stopping pod: it is no longer assigned to this node");
            spawn_kill(runtime, &uid, None, killed_tx);
            state.killing.insert(uid);
        }
    }
    // Forget every trace of pods gone from the desired state.
    let gone: Vec<String> = state
        .accepted_at
        .keys()
        .filter(|uid| !desired_uids.contains(uid.as_str()) && !state.killing.contains(*uid))
        .cloned()
        .collect();
    for uid in gone {
        if let Err(e) = runtime.forget_pod(&uid).await {
            warn!(pod_uid = %uid, error = %e, "cannot remove what is left of a deleted pod");
        }
        state.accepted_at.remove(&uid);
        state.synced.remove(&uid);
        state.killed.remove(&uid);
        state.last_status.remove(&uid);
        state.logged_errors.remove(&uid);
        state.phases.remove(&uid);
    }
}

fn log_pod_error(state: &mut SyncState, uid: &str, object: &str, message: &str) {
    if state.logged_errors.get(uid).map(String::as_str) != Some(message) {
        warn!(pod = %object, error = %message, "cannot run pod");
        state
            .logged_errors
            .insert(uid.to_owned(), message.to_owned());
    }
}

fn spawn_kill<R: PodRuntime>(
    runtime: &Arc<R>,
    uid: &str,
    grace: Option<Duration>,
    done: &mpsc::UnboundedSender<(String, Result<(), RuntimeError>)>,
) {
    let runtime = Arc::clone(runtime);
    let done = done.clone();
    let uid = uid.to_owned();
    tokio::spawn(async move {
        let result = runtime.kill_pod(&uid, grace).await;
        // The loop may be gone at shutdown: nothing to tell then.
        let _ = done.send((uid, result));
    });
}

/// The status of every desired pod, sorted by UID.
async fn statuses<R: PodRuntime>(
    settings: &SyncSettings,
    runtime: &Arc<R>,
    desired: Option<&NodeDesired>,
    state: &mut SyncState,
) -> Vec<PodStatusReport> {
    let Some(desired) = desired else {
        return Vec::new();
    };
    let mut reports = Vec::with_capacity(desired.pods.len());
    for desired_pod in &desired.pods {
        let uid = &desired_pod.uid;
        let accepted_at = state
            .accepted_at
            .get(uid)
            .cloned()
            .unwrap_or_else(|| pod::rfc3339(SystemTime::now()));
        let mut status = if let Some(killed) = state.killed.get(uid) {
            killed.clone()
        } else if let Some(status) = runtime.pod_status(uid).await {
            state.last_status.insert(uid.clone(), status.clone());
            status
        } else if let Some(last) = state.last_status.get(uid) {
            // Invalid specs and pods being stopped keep their last status.
            last.clone()
        } else {
            let spec = desired_pod.spec().ok();
            let message = state.logged_errors.get(uid).cloned();
            pod::pending_status(spec.as_ref(), &accepted_at, "ContainerCreating", message)
        };
        pod::decorate(&mut status, settings.host_ip.as_deref(), &accepted_at);
        let phase = status.phase.clone().unwrap_or_default();
        if state.phases.get(uid) != Some(&phase) {
            info!(
                pod_uid = %uid,
                "pod {}/{} is {phase}",
                desired_pod.namespace,
                desired_pod.name
            );
            state.phases.insert(uid.clone(), phase);
        }
        match PodStatusReport::from_status(
            uid,
            &desired_pod.namespace,
            &desired_pod.name,
            desired_pod.resource_version,
            &status,
        ) {
            Ok(report) => reports.push(report),
            Err(e) => warn!(pod_uid = %uid, error = %e, "cannot encode pod status"),
        }
    }
    reports.sort_by(|a, b| a.uid.cmp(&b.uid));
    reports
}
