//! Container runtimes: the [`Runtime`] trait the agent's sync loop drives, and
//! [`LinuxRuntime`], the real implementation with youki's libcontainer.
//!
//! # How the sync loop uses a runtime
//!
//! The trait is level-triggered, like everything in the agent:
//! - [`Runtime::sync_pod`] hands over the whole desired state of one pod (the
//!   Pod plus the ConfigMaps and Secrets it references) and returns the pod's
//!   observed status. Call it whenever the desired pod changes; calling it
//!   again with the same pod is cheap and changes nothing. The runtime drives
//!   the pod on its own from then on (a worker thread per pod: sandbox, image
//!   checks, init containers in order, app containers, restarts with
//!   kubelet's backoff, probes), so the loop does not need to call it
//!   periodically, only to read [`Runtime::pod_status`] for its reports.
//! - [`Runtime::kill_pod`] stops a pod (SIGTERM, the grace period, SIGKILL)
//!   and removes everything it had except its logs; [`Runtime::remove_pod_logs`]
//!   drops those once the pod object is gone.
//! - [`Runtime::adopt_existing`] is called once at start: it finds the pods
//!   a previous agent process left running and manages them again without
//!   restarting or duplicating their containers.
//!
//! Every method may block (file system, waiting for a grace period): from
//! async code call them through `tokio::task::spawn_blocking` on an
//! `Arc<dyn Runtime>`, as [`adapter::LinuxPodRuntime`] does for the sync
//! loop (it also wires each pod into the pod network). The trait is object safe so a simulated runtime can
//! implement it too.

pub mod adapter;
mod backoff;
mod env;
mod events;
pub mod exec;
pub mod hostcheck;
mod linux;
pub mod logs;
pub mod netns;
mod probes;
pub mod pulls;
pub mod resolv;
mod security;
pub mod shim;
pub mod spec;
#[doc(hidden)]
pub mod sys;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bramble_common::api::{ConfigMap, Pod, PodStatus, Secret};

pub use adapter::LinuxPodRuntime;
pub use backoff::{Backoff, RestartPolicy, INITIAL_BACKOFF, MAX_BACKOFF, RESET_AFTER};
pub use linux::{remove_empty_leftovers, LinuxRuntime};
pub use probes::{ProbeOutcome, ProbeTracker};

/// The desired state of one pod, with the objects it references.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodDesired {
    /// The pod (its `metadata.uid` identifies it).
    pub pod: Pod,
    /// ConfigMaps of the pod's namespace it references, by name.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets of the pod's namespace it references, by name.
    pub secrets: BTreeMap<String, Secret>,
}

impl PodDesired {
    /// The pod's UID (empty if unset).
    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or("")
    }
}

/// A pod the runtime knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    /// `metadata.uid`.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Errors of a runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The pod has no `metadata.uid` or a malformed one.
    #[error("pod {0:?} has no valid metadata.uid")]
    InvalidUid(String),
    /// The runtime does not know the pod.
    #[error("pod {0} is not known to the runtime")]
    UnknownPod(String),
    /// A file system or kernel call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// The runtime is not configured right.
    #[error("runtime configuration: {0}")]
    Config(String),
}

/// The interface between the agent's sync loop and a container runtime.
/// See the module documentation for how it is meant to be called.
pub trait Runtime: Send + Sync {
    /// Makes the runtime run `desired` (creating or updating the pod) and
    /// returns its status now.
    fn sync_pod(&self, desired: &PodDesired) -> Result<PodStatus, RuntimeError>;
    /// Stops the pod's containers (SIGTERM, `grace` or the pod's
    /// `terminationGracePeriodSeconds` (default 30 s), then SIGKILL) and
    /// removes its processes, cgroups, mounts, netns, state and bundles.
    /// Logs are kept. Unknown pods are not an error.
    fn kill_pod(&self, pod_uid: &str, grace: Option<Duration>) -> Result<(), RuntimeError>;
    /// The pod's current status, if the runtime knows it.
    fn pod_status(&self, pod_uid: &str) -> Option<PodStatus>;
    /// Every pod the runtime knows about.
    fn list_pods(&self) -> Vec<PodSummary>;
    /// Re-adopts pods left by a previous agent process; returns their UIDs.
    fn adopt_existing(&self) -> Result<Vec<String>, RuntimeError>;
    /// Deletes the logs of a pod whose object is gone.
    fn remove_pod_logs(&self, pod_uid: &str) -> Result<(), RuntimeError>;
    /// Path of a container's current log file, if the pod is known.
    fn log_path(&self, pod_uid: &str, container: &str) -> Option<PathBuf>;
    /// A counter that grows whenever some pod's status changes, for
    /// callers that want to look at once rather than at their next tick.
    fn status_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Why the runtime cannot start containers now (`None`: it can). Cheap:
    /// called at every node health check.
    fn health(&self) -> Option<String> {
        None
    }
    /// Where to run a command in a running container (`kubectl exec`);
    /// `None` when the container does not run (or the runtime cannot exec).
    fn exec_target(&self, pod_uid: &str, container: &str) -> Option<exec::ExecTarget> {
        let _ = (pod_uid, container);
        None
    }
}

/// Settings of the real runtime. Paths carry the node's identity so two
/// agents on one machine never collide.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The node's name (part of cgroup paths).
    pub node_name: String,
    /// Persistent state (`/var/lib/bramble/agent`): images, writable layers,
    /// emptyDirs, logs.
    pub state_dir: PathBuf,
    /// Runtime state (`/run/bramble`): netns, bundles, shim status files.
    pub run_dir: PathBuf,
    /// The `bramble-agent` binary run as the shim.
    pub shim_binary: PathBuf,
    /// Log rotation size.
    pub log_max_size: u64,
    /// Log files kept per container.
    pub log_max_files: u32,
    /// pids cgroup limit per container.
    pub pids_limit: i64,
    /// Run containers without a `seccompProfile` under the default filter
    /// (needs the `seccomp` feature).
    pub seccomp: bool,
    /// How often a pod worker looks at a pod with probes.
    pub sync_interval: Duration,
    /// How often a pod worker looks at a pod without probes (container
    /// starts and exits wake it at once; this paces restarts after
    /// back-off and volume refreshes).
    pub idle_interval: Duration,
    /// Cluster DNS server written to `resolv.conf` for `ClusterFirst` pods
    /// (the host's `resolv.conf` is used while this is `None`).
    pub cluster_dns: Option<String>,
    /// Cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Where the runtime records what it does to pods (the kubelet's
    /// events: `Created`, `Started`, `Killing`, `BackOff`, ...).
    pub events: crate::events::EventRecorder,
    /// Mirrors, credentials and TLS for registries (`registries.yaml`).
    pub registries: crate::images::registries::RegistriesConfig,
    /// The platform images are pulled for (the node's own).
    pub image_platform: crate::images::platform::Platform,
    /// The first back-off after a failed pull (the kubelet's 10 s).
    pub image_pull_backoff: Duration,
    /// A pull whose connection brings no byte for this long is cut and
    /// resumed.
    pub pull_stall_timeout: Duration,
    /// Image garbage collection (the kubelet's thresholds and minimum age);
    /// it runs every [`IMAGE_GC_PERIOD`].
    pub image_gc: crate::images::gc::GcPolicy,
}

/// How often image garbage collection runs (the kubelet's `ImageGCPeriod`).
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

impl RuntimeConfig {
    /// Defaults for a node named `node_name` with the given directories.
    pub fn new(node_name: &str, state_dir: PathBuf, run_dir: PathBuf) -> RuntimeConfig {
        RuntimeConfig {
            node_name: node_name.to_string(),
            state_dir,
            run_dir,
            shim_binary: std::env::current_exe().unwrap_or_else(|_| "bramble-agent".into()),
            log_max_size: logs::DEFAULT_MAX_SIZE,
            log_max_files: logs::DEFAULT_MAX_FILES,
            pids_limit: 4096,
            seccomp: cfg!(feature = "seccomp"),
            sync_interval: Duration::from_millis(200),
            idle_interval: Duration::from_secs(1),
            cluster_dns: None,
            cluster_domain: "cluster.local".into(),
            events: crate::events::EventRecorder::disabled(),
            registries: Default::default(),
            image_platform: crate::images::platform::Platform::host(),
            image_pull_backoff: pulls::IMAGE_BACKOFF_INITIAL,
            pull_stall_timeout: Duration::from_secs(30),
            image_gc: Default::default(),
        }
    }
}

pub mod sim;
