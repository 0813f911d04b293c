//! [`PodRuntime`]: what the sync loop needs from a container runtime.
//!
//! The trait is level-triggered and pod-granular, the same shape as the real
//! libcontainer runtime's blocking `runtime::Runtime` trait (branch
//! `h-runtime`), so that runtime plugs in through a thin adapter that runs
//! each call in `spawn_blocking`:
//!
//! | sync loop calls | when | the runtime |
//! |---|---|---|
//! | [`sync_pod`](PodRuntime::sync_pod) | a pod that should run is new or changed (resource version, referenced configs) | creates or updates the pod and from then on drives it on its own: starts containers, restarts them per `restartPolicy`; returns the status now |
//! | [`pod_status`](PodRuntime::pod_status) | every pass, for every desired pod | the pod's current status, `None` if unknown |
//! | [`kill_pod`](PodRuntime::kill_pod) | a pod is marked deleting, or is gone from the desired state | SIGTERM, wait up to the grace period, SIGKILL; removes processes, cgroups, mounts and netns but keeps logs; forgets the pod; unknown pods are not an error |
//! | [`forget_pod`](PodRuntime::forget_pod) | a pod's object is gone from the desired state (after `kill_pod`) | drops what was kept (logs) |
//! | [`sync_node`](PodRuntime::sync_node) | every pass with a desired state, before its pods | sets up or repairs the node (pod network, routes); must be cheap when nothing changed |
//! | [`list_pods`](PodRuntime::list_pods) | every pass | the UIDs of every pod it knows, including pods a previous agent process left running and the runtime re-adopted at construction |
//!
//! The runtime computes each pod's `PodStatus` itself (phase, conditions,
//! container states); the sync loop only adds what the node knows (`hostIP`,
//! `startTime` when missing, `PodScheduled`).
//!
//! Every method may be called concurrently from several tasks; a `kill_pod`
//! may take the whole grace period, so the sync loop runs it in a task of
//! its own. Implementations must not block the async worker: blocking work
//! goes to `spawn_blocking` or a thread of the runtime's own.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use bramble_common::api::PodStatus;
use bramble_common::wire::NodeDesired;

/// The desired state of one pod, with the ConfigMaps and Secrets it may
/// reference: the real runtime's type, shared by every runtime.
pub use crate::runtime::PodDesired;

/// Why a runtime call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The runtime cannot run this pod as specified (the message says why
    /// and what to change). The sync loop reports the pod `Failed`.
    #[error("{0}")]
    InvalidPod(String),
    /// The call failed; the sync loop retries on its next pass.
    #[error("{0}")]
    Failed(String),
}

/// Where a runtime keeps a container's log (see [`PodRuntime::container_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    /// This runtime keeps no container logs (the simulated runtime).
    NotKept,
    /// The runtime does not know the pod yet (it has not started it).
    NotStarted,
    /// The live log file of the container's current run (CRI records,
    /// rotated to `PATH.1`, ...; see [`crate::runtime::logs`]).
    At(PathBuf),
}

/// What the sync loop needs from a container runtime; see the module
/// documentation for when each method is called.
pub trait PodRuntime: Send + Sync + 'static {
    /// Make the runtime run `desired` (create it, or update it to a new
    /// resource version) and return its status now. Idempotent.
    fn sync_pod(
        &self,
        desired: &PodDesired,
    ) -> impl Future<Output = Result<PodStatus, RuntimeError>> + Send;

    /// The current status of pod `uid`, or `None` when the runtime does not
    /// know it.
    fn pod_status(&self, uid: &str) -> impl Future<Output = Option<PodStatus>> + Send;

    /// Stop pod `uid`: SIGTERM, up to `grace` (`None`: the pod's
    /// `terminationGracePeriodSeconds`, default 30 s), then SIGKILL, and
    /// remove everything but its logs. Unknown pods are not an error.
    fn kill_pod(
        &self,
        uid: &str,
        grace: Option<Duration>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Drop what is left of pod `uid` after [`PodRuntime::kill_pod`] (its
    /// logs): the pod object is gone. Unknown pods are not an error.
    fn forget_pod(&self, uid: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The UIDs of every pod the runtime knows.
    fn list_pods(&self) -> impl Future<Output = Vec<String>> + Send;

    /// Set up what the node needs before its pods (the pod network, routes
    /// to `peers`) from the node-wide part of `desired`. Called on every
    /// pass with a desired state, before any `sync_pod` of the pass: cheap
    /// when nothing changed, and retries what failed before. Does nothing
    /// by default.
    fn sync_node(&self, desired: &NodeDesired) -> impl Future<Output = ()> + Send {
        let _ = desired;
        async {}
    }

    /// A counter that grows whenever a pod's status changes: the sync loop
    /// then reads statuses at once instead of at its next resync. `None`
    /// (the default): statuses are read every resync only.
    fn status_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Whether the runtime and its pod network can run pods now, for the
    /// node's `Ready` condition. Cheap. Healthy by default.
    fn health(&self) -> crate::health::RuntimeHealth {
        crate::health::RuntimeHealth::default()
    }

    /// Where container `container` of pod `uid` logs. Called by the log
    /// requests of `bramble logs`; must be cheap. [`LogLocation::NotKept`]
    /// by default.
    fn container_log(&self, uid: &str, container: &str) -> LogLocation {
        let _ = (uid, container);
        LogLocation::NotKept
    }

    /// Where to run `kubectl exec` in container `container` of pod `uid`;
    /// `None` when it does not run or the runtime cannot exec (the
    /// default). Must be cheap.
    fn exec_target(&self, uid: &str, container: &str) -> Option<crate::runtime::exec::ExecTarget> {
        let _ = (uid, container);
        None
    }
}
