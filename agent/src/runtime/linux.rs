//! [`LinuxRuntime`]: pods as libcontainer containers started by per-container
//! shims, one worker thread per pod.
//!
//! Paths (`N` = node name, `U` = pod UID, `C` = container name):
//! - `{run}/netns/U`: the pod's network namespace;
//! - `{run}/N/pods/U/`: `pod.json` (desired pod), `record.json` (restart
//!   counts), `etc/` (hosts, hostname, resolv.conf), `volumes/` (configMap
//!   and secret projections), `containers/C/` (bundle: `config.json`,
//!   `rootfs`, `shim.json`, `status.json`, `shim.log`);
//! - `{run}/N/youki`: libcontainer state;
//! - `{state}/pods/U/`: writable layers (`containers/C/{upper,work}`) and
//!   emptyDirs; `{state}/logs/NS_NAME_U/C.log`: logs;
//! - cgroups: `/bramble/N/U/C` in every hierarchy.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use bramble_common::api::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodStatus,
};
use bramble_common::meta::Condition;
use serde::{Deserialize, Serialize};

use super::backoff::{Backoff, RestartPolicy};
use super::events::StatusEvents;
use super::logs;
use super::probes::{run_probe, ProbeOutcome, ProbeTarget, ProbeTracker};
use super::pulls::{pod_keyring, ImagePulls, PullPoll};
use super::security;
use super::shim::{ShimConfig, ShimState, ShimStatus};
use super::spec::{build_spec, parse_memory, MountSource, SpecInputs};
use super::{netns, PodDesired, PodSummary, Runtime, RuntimeConfig, RuntimeError};
use crate::events::{EventType, InvolvedPod};
use crate::images::{write_atomic, ImageError, ImageRecord, ImageStore};

/// Marks a back-off message whose pull found no registry reachable (an
/// `Always` pod with a local image then runs it during the back-off).
pub(super) const UNREACHABLE_MARK: &str = "(registry unreachable) ";

/// A duration as Go prints a `time.Duration` truncated to milliseconds
/// (`1.234s`, `850ms`, `2m3.5s`), as kubelet's pull events show them.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let trim = |s: String| {
        let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        s
    };
    let h = ms / 3_600_000;
    let m = (ms / 60_000) % 60;
    let sec = ms % 60_000;
    let secs = trim(format!("{}.{:03}", sec / 1000, sec % 1000));
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// How often a lasting reason to wait (a back-off, a missing image or
/// volume) is reported again as an event (the kubelet reports it on each
/// sync of the pod, about every ten seconds).
const WAITING_EVENT_INTERVAL: Duration = Duration::from_secs(10);

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// What the runtime persists per container across agent restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ContainerRecord {
    restart_count: i32,
    /// Instances started so far (the current one is `attempt`).
    attempt: u32,
    /// The exit of `attempt` was already handled.
    handled_attempt: u32,
    last_state: Option<ContainerStateTerminated>,
    backoff_secs: u64,
    image_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PodRecord {
    start_time: String,
    containers: BTreeMap<String, ContainerRecord>,
}

/// In-memory state of one container of a pod.
#[derive(Debug, Default)]
struct ContainerRuntimeState {
    backoff: Backoff,
    started: Option<Instant>,
    waiting: Option<(String, String)>,
    startup: Option<ProbeTracker>,
    liveness: Option<ProbeTracker>,
    readiness: Option<ProbeTracker>,
    probe_attempt: u32,
    /// The waiting reason and message last reported as an event, and when.
    waiting_event: Option<((String, String), Instant)>,
}

struct PodState {
    record: PodRecord,
    containers: BTreeMap<String, ContainerRuntimeState>,
    sandbox_ready: bool,
    sandbox_error: Option<String>,
    volume_hashes: BTreeMap<String, String>,
    /// Volumes that cannot be set up (a missing ConfigMap or Secret), with
    /// why and when it was last reported: containers wait for them.
    volume_errors: BTreeMap<String, (String, Instant)>,
    status: PodStatus,
}

struct PodHandle {
    uid: String,
    desired: Mutex<PodDesired>,
    state: Mutex<PodState>,
    wake: Condvar,
    wake_flag: Mutex<bool>,
    stop: std::sync::atomic::AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    cfg: RuntimeConfig,
    images: ImageStore,
    /// Image pulls in flight and their back-offs.
    pulls: ImagePulls,
    pods: Mutex<BTreeMap<String, Arc<PodHandle>>>,
    /// Wakes pod workers when a shim writes a status (None: inotify is
    /// unavailable, workers only tick).
    events: Option<Arc<StatusEvents>>,
    /// Bumped whenever a pod's status changes.
    status_changes: tokio::sync::watch::Sender<u64>,
}

/// The real runtime: containers with libcontainer through shims.
pub struct LinuxRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LinuxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxRuntime")
            .field("node", &self.inner.cfg.node_name)
            .finish()
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s != "."
        && s != ".."
}

impl LinuxRuntime {
    /// Opens the runtime (creating its directories and image store).
    pub fn new(cfg: RuntimeConfig) -> Result<LinuxRuntime, RuntimeError> {
        if !valid_name(&cfg.node_name) {
            return Err(RuntimeError::Config(format!(
                "node name {:?} cannot be used in paths",
                cfg.node_name
            )));
        }
        if cfg.seccomp && !cfg!(feature = "seccomp") {
            return Err(RuntimeError::Config(
                "seccomp was requested but bramble-agent was built without the `seccomp` feature; \
                 rebuild with it or set seccomp off explicitly"
                    .into(),
            ));
        }
        let images = ImageStore::open(&cfg.state_dir)?;
        for d in [
            cfg.run_dir.join(&cfg.node_name).join("pods"),
            cfg.run_dir.join("netns"),
        ] {
            fs::create_dir_all(&d).map_err(ioe(format!("create {}", d.display())))?;
        }
        let events = match StatusEvents::new() {
            Ok(events) => Some(Arc::new(events)),
            Err(e) => {
                tracing::warn!(error = %e, "inotify is unavailable: container exits are noticed at the next tick");
                None
            }
        };
        let puller = crate::images::pull::Puller::new(
            images.clone(),
            crate::images::distribution::ClientOptions {
                registries: cfg.registries.clone(),
                stall_timeout: cfg.pull_stall_timeout,
                ..Default::default()
            },
            cfg.image_platform.clone(),
        );
        let pulls = ImagePulls::new(Arc::new(puller), cfg.image_pull_backoff);
        let inner = Arc::new(Inner {
            cfg,
            images,
            pulls,
            pods: Mutex::new(BTreeMap::new()),
            events: events.clone(),
            status_changes: tokio::sync::watch::Sender::new(0),
        });
        {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("image-gc".into())
                .spawn(move || collect_images_periodically(&weak))
                .map_err(ioe("spawn the image garbage collector"))?;
        }
        if let Some(events) = events {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("status-events".into())
                .spawn(move || wake_on_status_changes(&weak, &events))
                .map_err(ioe("spawn the status watcher"))?;
        }
        Ok(LinuxRuntime { inner })
    }

    /// The image store the runtime uses.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// Stops the pod workers without touching the containers (what happens
    /// to them when the agent exits or is upgraded). Also done on drop.
    pub fn shutdown(&self) {
        self.inner.pulls.cancel_all();
        let pods: Vec<Arc<PodHandle>> = lock(&self.inner.pods).values().cloned().collect();
        for p in pods {
            p.stop_worker();
        }
    }

    /// The cgroup path of a container (`/bramble/{node}/{pod-uid}/{name}`).
    pub fn cgroups_path(&self, pod_uid: &str, container: &str) -> String {
        format!(
            "/bramble/{}/{pod_uid}/{container}",
            self.inner.cfg.node_name
        )
    }

    /// Host PID of a running container's init, if any.
    pub fn container_pid(&self, pod_uid: &str, container: &str) -> Option<i32> {
        let st = ShimStatus::read(
            &self
                .inner
                .container_dir(pod_uid, container)
                .join("status.json"),
        )?;
        (st.state == ShimState::Running).then_some(st.pid).flatten()
    }

    /// PID of a running container's shim, if any.
    pub fn shim_pid(&self, pod_uid: &str, container: &str) -> Option<i32> {
        let st = ShimStatus::read(
            &self
                .inner
                .container_dir(pod_uid, container)
                .join("status.json"),
        )?;
        (st.state == ShimState::Running).then_some(st.shim_pid)
    }

    fn handle(&self, desired: &PodDesired) -> Result<Arc<PodHandle>, RuntimeError> {
        let uid = desired.uid().to_string();
        let mut pods = lock(&self.inner.pods);
        if let Some(h) = pods.get(&uid) {
            return Ok(h.clone());
        }
        let pod_dir = self.inner.pod_dir(&uid);
        fs::create_dir_all(pod_dir.join("containers"))
            .map_err(ioe(format!("create {}", pod_dir.display())))?;
        let record: PodRecord =
            read_json(&pod_dir.join("record.json")).unwrap_or_else(|| PodRecord {
                start_time: now_rfc3339(),
                containers: BTreeMap::new(),
            });
        let h = Arc::new(PodHandle {
            uid: uid.clone(),
            desired: Mutex::new(desired.clone()),
            state: Mutex::new(PodState {
                record,
                containers: BTreeMap::new(),
                sandbox_ready: false,
                sandbox_error: None,
                volume_hashes: BTreeMap::new(),
                volume_errors: BTreeMap::new(),
                status: PodStatus {
                    phase: Some("Pending".into()),
                    ..Default::default()
                },
            }),
            wake: Condvar::new(),
            wake_flag: Mutex::new(false),
            stop: std::sync::atomic::AtomicBool::new(false),
            worker: Mutex::new(None),
        });
        self.inner.save_desired(&uid, desired)?;
        let inner = self.inner.clone();
        let h2 = h.clone();
        let worker = std::thread::Builder::new()
            .name(format!("pod-{}", &uid[..uid.len().min(8)]))
            .spawn(move || inner.worker(h2))
            .map_err(ioe("spawn pod worker"))?;
        *lock(&h.worker) = Some(worker);
        pods.insert(uid, h.clone());
        Ok(h)
    }
}

impl Drop for LinuxRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs image garbage collection every [`super::IMAGE_GC_PERIOD`] until the
/// runtime is gone.
fn collect_images_periodically(inner: &std::sync::Weak<Inner>) {
    loop {
        let deadline = Instant::now() + super::IMAGE_GC_PERIOD;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            if inner.strong_count() == 0 {
                return;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let root = inner.images.root().to_path_buf();
        match inner
            .images
            .collect_garbage(&inner.cfg.image_gc, || crate::images::gc::fs_usage(&root))
        {
            Ok(r) if !r.removed.is_empty() || r.partials_removed > 0 => tracing::info!(
                before = r.usage_before,
                after = r.usage_after,
                removed = ?r.removed,
                partials = r.partials_removed,
                "image garbage collection"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
        }
    }
}

/// Pokes the worker of each pod whose shim wrote a status, until the
/// runtime is gone.
fn wake_on_status_changes(inner: &std::sync::Weak<Inner>, events: &StatusEvents) {
    loop {
        let changed = events.wait(Duration::from_secs(1));
        let Some(inner) = inner.upgrade() else { return };
        for uid in changed {
            let handle = lock(&inner.pods).get(&uid).cloned();
            if let Some(handle) = handle {
                handle.poke();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(p).ok()?).ok()
}

fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<(), RuntimeError> {
    let data = serde_json::to_vec_pretty(v).map_err(|e| RuntimeError::Io {
        what: format!("encode {}", p.display()),
        source: io::Error::other(e),
    })?;
    write_atomic(p, &data).map_err(ioe(format!("write {}", p.display())))
}

impl PodHandle {
    fn poke(&self) {
        *lock(&self.wake_flag) = true;
        self.wake.notify_all();
    }

    fn stop_worker(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.poke();
        let w = lock(&self.worker).take();
        if let Some(w) = w {
            let _ = w.join();
        }
    }
}

impl Runtime for LinuxRuntime {
    fn sync_pod(&self, desired: &PodDesired) -> Result<PodStatus, RuntimeError> {
        let uid = desired.uid();
        if !valid_name(uid) {
            return Err(RuntimeError::InvalidUid(uid.to_string()));
        }
        let h = self.handle(desired)?;
        {
            let mut d = lock(&h.desired);
            if *d != *desired {
                *d = desired.clone();
                self.inner.save_desired(uid, desired)?;
            }
        }
        h.poke();
        let status = lock(&h.state).status.clone();
        Ok(status)
    }

    fn kill_pod(&self, pod_uid: &str, grace: Option<Duration>) -> Result<(), RuntimeError> {
        let h = lock(&self.inner.pods).get(pod_uid).cloned();
        let desired = match &h {
            Some(h) => {
                h.stop_worker();
                Some(lock(&h.desired).clone())
            }
            None => read_json::<Pod>(&self.inner.pod_dir(pod_uid).join("pod.json")).map(|pod| {
                PodDesired {
                    pod,
                    ..Default::default()
                }
            }),
        };
        let grace = grace.unwrap_or_else(|| {
            Duration::from_secs(
                desired
                    .as_ref()
                    .and_then(|d| d.pod.spec.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(0) as u64,
            )
        });
        self.inner.pulls.forget_pod(pod_uid);
        self.inner.terminate_pod(pod_uid, desired.as_ref(), grace)?;
        lock(&self.inner.pods).remove(pod_uid);
        Ok(())
    }

    fn pod_status(&self, pod_uid: &str) -> Option<PodStatus> {
        let h = lock(&self.inner.pods).get(pod_uid).cloned()?;
        let s = lock(&h.state).status.clone();
        Some(s)
    }

    fn list_pods(&self) -> Vec<PodSummary> {
        let pods: Vec<Arc<PodHandle>> = lock(&self.inner.pods).values().cloned().collect();
        pods.iter()
            .map(|h| {
                let d = lock(&h.desired);
                PodSummary {
                    uid: h.uid.clone(),
                    namespace: d
                        .pod
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    name: d.pod.metadata.name.clone().unwrap_or_default(),
                }
            })
            .collect()
    }

    fn adopt_existing(&self) -> Result<Vec<String>, RuntimeError> {
        let dir = self
            .inner
            .cfg
            .run_dir
            .join(&self.inner.cfg.node_name)
            .join("pods");
        let mut adopted = Vec::new();
        let rd = fs::read_dir(&dir).map_err(ioe(format!("read {}", dir.display())))?;
        for e in rd.flatten() {
            let uid = e.file_name().to_string_lossy().to_string();
            let Some(pod) = read_json::<Pod>(&e.path().join("pod.json")) else {
                continue;
            };
            let desired: PodDesired = read_json::<StoredDesired>(&e.path().join("desired.json"))
                .map(|s| s.into_desired(pod.clone()))
                .unwrap_or(PodDesired {
                    pod,
                    ..Default::default()
                });
            if lock(&self.inner.pods).contains_key(&uid) {
                continue;
            }
            self.handle(&desired)?;
            adopted.push(uid);
        }
        Ok(adopted)
    }

    fn remove_pod_logs(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        let logs = self.inner.cfg.state_dir.join("logs");
        if let Ok(rd) = fs::read_dir(&logs) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("_{pod_uid}"))
                {
                    fs::remove_dir_all(e.path()).map_err(ioe("remove logs"))?;
                }
            }
        }
        Ok(())
    }

    fn status_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.status_changes.subscribe())
    }

    fn health(&self) -> Option<String> {
        let pods = self.inner.node_dir().join("pods");
        if !pods.is_dir() {
            return Some(format!(
                "the runtime directory {} is missing (was {} cleared?): restart bramble-agent to recreate it",
                pods.display(),
                self.inner.cfg.run_dir.display()
            ));
        }
        if nix::unistd::access(&pods, nix::unistd::AccessFlags::W_OK).is_err() {
            return Some(format!(
                "the runtime directory {} is not writable",
                pods.display()
            ));
        }
        if !self.inner.cfg.shim_binary.is_file() {
            return Some(format!(
                "the container shim {} is missing: reinstall bramble-agent",
                self.inner.cfg.shim_binary.display()
            ));
        }
        None
    }

    fn exec_target(&self, pod_uid: &str, container: &str) -> Option<super::exec::ExecTarget> {
        if !valid_name(pod_uid) || !valid_name(container) {
            return None;
        }
        let pid = self.container_pid(pod_uid, container)?;
        let dir = self.inner.container_dir(pod_uid, container);
        let cwd = fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["process"]["cwd"].as_str().map(str::to_string))
            .unwrap_or_else(|| "/".to_string());
        Some(super::exec::ExecTarget {
            pid,
            cwd,
            shim_binary: self.inner.cfg.shim_binary.clone(),
        })
    }

    fn log_path(&self, pod_uid: &str, container: &str) -> Option<PathBuf> {
        let h = lock(&self.inner.pods).get(pod_uid).cloned()?;
        let d = lock(&h.desired);
        Some(self.inner.log_path(&d.pod, container))
    }
}

/// ConfigMaps and Secrets saved beside `pod.json` for re-adoption.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredDesired {
    config_maps: BTreeMap<String, bramble_common::api::ConfigMap>,
    secrets: BTreeMap<String, bramble_common::api::Secret>,
}

impl StoredDesired {
    fn into_desired(self, pod: Pod) -> PodDesired {
        PodDesired {
            pod,
            config_maps: self.config_maps,
            secrets: self.secrets,
        }
    }
}

enum Step {
    /// Nothing more to do this tick.
    Done,
}

impl Inner {
    fn node_dir(&self) -> PathBuf {
        self.cfg.run_dir.join(&self.cfg.node_name)
    }
    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.node_dir().join("pods").join(uid)
    }
    fn container_dir(&self, uid: &str, name: &str) -> PathBuf {
        self.pod_dir(uid).join("containers").join(name)
    }
    fn pod_state_dir(&self, uid: &str) -> PathBuf {
        self.cfg.state_dir.join("pods").join(uid)
    }
    fn youki_root(&self) -> PathBuf {
        self.node_dir().join("youki")
    }
    fn netns_path(&self, uid: &str) -> PathBuf {
        netns::netns_path(&self.cfg.run_dir, uid)
    }
    fn container_id(&self, uid: &str, name: &str) -> String {
        format!("{uid}-{name}")
    }
    fn cgroups_path(&self, uid: &str, name: &str) -> String {
        format!("/bramble/{}/{uid}/{name}", self.cfg.node_name)
    }
    fn log_path(&self, pod: &Pod, container: &str) -> PathBuf {
        let m = &pod.metadata;
        logs::container_log_path(
            &self.cfg.state_dir,
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or(""),
            m.uid.as_deref().unwrap_or(""),
            container,
        )
    }

    fn save_desired(&self, uid: &str, d: &PodDesired) -> Result<(), RuntimeError> {
        let dir = self.pod_dir(uid);
        fs::create_dir_all(&dir).map_err(ioe("create pod dir"))?;
        write_json(&dir.join("pod.json"), &d.pod)?;
        write_json(
            &dir.join("desired.json"),
            &StoredDesired {
                config_maps: d.config_maps.clone(),
                secrets: d.secrets.clone(),
            },
        )
    }

    fn worker(self: Arc<Self>, h: Arc<PodHandle>) {
        // What record.json holds, so an unchanged record is not rewritten.
        let mut saved: Option<Vec<u8>> = None;
        loop {
            if h.stop.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let desired = lock(&h.desired).clone();
            {
                let mut st = lock(&h.state);
                let _ = self.reconcile(&desired, &mut st, &h.stop);
                let status = self.compute_status(&desired, &st);
                if status != st.status {
                    st.status = status;
                    self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
                }
                let encoded = serde_json::to_vec_pretty(&st.record).ok();
                if encoded.is_some() && encoded != saved {
                    let _ = write_json(&self.pod_dir(&h.uid).join("record.json"), &st.record);
                    saved = encoded;
                }
            }
            let probed = desired
                .pod
                .spec
                .init_containers
                .iter()
                .chain(&desired.pod.spec.containers)
                .any(|c| {
                    c.liveness_probe.is_some()
                        || c.readiness_probe.is_some()
                        || c.startup_probe.is_some()
                });
            let interval = if probed || self.events.is_none() {
                self.cfg.sync_interval
            } else {
                self.cfg.idle_interval
            };
            let mut flag = lock(&h.wake_flag);
            if !*flag {
                flag = h
                    .wake
                    .wait_timeout(flag, interval)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            *flag = false;
        }
    }

    /// One pass over the pod: sandbox, init containers, app containers.
    fn reconcile(
        &self,
        d: &PodDesired,
        st: &mut PodState,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Step, RuntimeError> {
        let uid = d.uid().to_string();
        if !st.sandbox_ready {
            match self.create_sandbox(d) {
                Ok(()) => {
                    st.sandbox_ready = true;
                    st.sandbox_error = None;
                }
                Err(e) => {
                    st.sandbox_error = Some(e.to_string());
                    return Ok(Step::Done);
                }
            }
        }
        self.update_projected_volumes(d, st);
        if st
            .volume_errors
            .keys()
            .any(|volume| !st.volume_hashes.contains_key(volume))
        {
            // The kubelet starts no container before every volume is set up
            // (a volume set up before keeps its files when its source goes).
            return Ok(Step::Done);
        }
        let policy = RestartPolicy::parse(d.pod.spec.restart_policy.as_deref());
        // Init containers, in order.
        for c in &d.pod.spec.init_containers {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(Step::Done);
            }
            // Init containers restart on failure unless the policy is Never.
            let init_policy = if policy == RestartPolicy::Never {
                RestartPolicy::Never
            } else {
                RestartPolicy::OnFailure
            };
            let done = self.drive_container(d, st, c, init_policy, true);
            self.report_waiting(d, st, c, true);
            if !done {
                return Ok(Step::Done);
            }
        }
        for c in &d.pod.spec.containers {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(Step::Done);
            }
            self.drive_container(d, st, c, policy, false);
            self.report_waiting(d, st, c, false);
        }
        let _ = uid;
        Ok(Step::Done)
    }

    /// Records an event about container `c` of `d` (or the pod, for `None`).
    fn event(
        &self,
        d: &PodDesired,
        c: Option<(&str, bool)>,
        event_type: EventType,
        reason: &str,
        message: String,
    ) {
        let pod = InvolvedPod {
            uid: d.uid().to_string(),
            namespace: d.pod.metadata.namespace.clone().unwrap_or_default(),
            name: d.pod.metadata.name.clone().unwrap_or_default(),
            field_path: None,
        };
        let pod = match c {
            Some((name, init)) => pod.container(name, init),
            None => pod,
        };
        self.cfg.events.pod(&pod, event_type, reason, message);
    }

    /// Reports why container `c` waits, as the kubelet's events do: when
    /// the reason or message changes, and again every
    /// [`WAITING_EVENT_INTERVAL`] while it lasts (the kubelet reports on
    /// each sync of the pod; the event's `count` shows for how long).
    fn report_waiting(&self, d: &PodDesired, st: &mut PodState, c: &Container, init: bool) {
        let Some(rs) = st.containers.get_mut(&c.name) else {
            return;
        };
        let Some(waiting) = rs.waiting.clone() else {
            rs.waiting_event = None;
            return;
        };
        let now = Instant::now();
        if matches!(&rs.waiting_event, Some((last, at)) if *last == waiting && now.duration_since(*at) < WAITING_EVENT_INTERVAL)
        {
            return;
        }
        rs.waiting_event = Some((waiting.clone(), now));
        let (reason, message) = waiting;
        let pod_name = d.pod.metadata.name.as_deref().unwrap_or("");
        let namespace = d.pod.metadata.namespace.as_deref().unwrap_or("");
        let (event_reason, event_message) = match reason.as_str() {
            "CrashLoopBackOff" => (
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {pod_name}_{namespace}({})",
                    c.name,
                    d.uid()
                ),
            ),
            "ErrImageNeverPull" => ("ErrImageNeverPull", message),
            // Pulling: the kubelet shows ContainerCreating and no event.
            "ContainerCreating" => return,
            "ErrImagePull" => ("Failed", "Error: ErrImagePull".to_string()),
            "ImagePullBackOff" => {
                self.event(
                    d,
                    Some((&c.name, init)),
                    EventType::Normal,
                    "BackOff",
                    format!("Back-off pulling image \"{}\"", c.image),
                );
                ("Failed", "Error: ImagePullBackOff".to_string())
            }
            "InvalidImageName" | "ImageInspectError" => ("InspectFailed", message),
            // The shim's failure was reported when it happened.
            "RunContainerError" => return,
            _ => ("Failed", format!("Error: {message}")),
        };
        self.event(
            d,
            Some((&c.name, init)),
            EventType::Warning,
            event_reason,
            event_message,
        );
    }

    /// Advances one container; for init containers returns whether it has
    /// completed successfully.
    fn drive_container(
        &self,
        d: &PodDesired,
        st: &mut PodState,
        c: &Container,
        policy: RestartPolicy,
        init: bool,
    ) -> bool {
        let uid = d.uid().to_string();
        let now = Instant::now();
        let dir = self.container_dir(&uid, &c.name);
        let rec = st
            .record
            .containers
            .entry(c.name.clone())
            .or_default()
            .clone();
        let status = if rec.attempt > 0 {
            ShimStatus::read(&dir.join("status.json"))
        } else {
            None
        };
        let rs = st.containers.entry(c.name.clone()).or_default();
        match status.as_ref().map(|s| s.state) {
            Some(ShimState::Running) => {
                let s = status.clone();
                let pid = s.as_ref().and_then(|s| s.pid).unwrap_or(0);
                let shim_pid = s.as_ref().map(|s| s.shim_pid).unwrap_or(0);
                let still_running = || {
                    ShimStatus::read(&dir.join("status.json")).map(|s| s.state)
                        == Some(ShimState::Running)
                };
                if !pid_alive(shim_pid) && still_running() {
                    // The shim died with the container: treat as exited.
                    let fake = ShimStatus {
                        state: ShimState::Exited,
                        exit_code: Some(255),
                        finished_at: Some(now_rfc3339()),
                        message: Some("container vanished (its shim died)".into()),
                        ..s.unwrap_or(ShimStatus {
                            state: ShimState::Exited,
                            shim_pid: 0,
                            pid: None,
                            started_at: None,
                            finished_at: None,
                            exit_code: None,
                            signal: None,
                            oom_killed: false,
                            message: None,
                        })
                    };
                    let _ = write_json(&dir.join("status.json"), &fake);
                    return false;
                }
                if rs.started.is_none() || rs.probe_attempt != rec.attempt {
                    rs.started = Some(now);
                    rs.probe_attempt = rec.attempt;
                    rs.startup = c.startup_probe.as_ref().map(ProbeTracker::new);
                    rs.liveness = c.liveness_probe.as_ref().map(ProbeTracker::new);
                    rs.readiness = c.readiness_probe.as_ref().map(ProbeTracker::new);
                }
                rs.waiting = None;
                if !init {
                    self.run_probes(d, c, rs, pid, now);
                }
                false
            }
            Some(ShimState::Exited) | Some(ShimState::Failed)
                if rec.handled_attempt < rec.attempt =>
            {
                let s = status.unwrap_or_else(unreachable_status);
                let failed_to_start = s.state == ShimState::Failed;
                let term = terminated_from(&s);
                let exit_code = term.exit_code;
                let ran_for = rs
                    .started
                    .map(|t| now.saturating_duration_since(t))
                    .unwrap_or_default();
                rs.started = None;
                let recm = st.record.containers.entry(c.name.clone()).or_default();
                recm.handled_attempt = recm.attempt;
                recm.last_state = Some(term);
                self.release_rootfs(&uid, &c.name);
                if policy.should_restart(if failed_to_start { 1 } else { exit_code }) {
                    let delay = rs.backoff.on_exit(now, ran_for);
                    recm.backoff_secs = delay.as_secs();
                }
                init && exit_code == 0 && !failed_to_start
            }
            Some(ShimState::Exited) | Some(ShimState::Failed) => {
                // Exit already handled: restart when allowed.
                let last = rec.last_state.clone().unwrap_or_default();
                let failed_to_start = last.reason.as_deref() == Some("StartError");
                if init && last.exit_code == 0 && !failed_to_start {
                    return true;
                }
                if !policy.should_restart(if failed_to_start { 1 } else { last.exit_code }) {
                    return false;
                }
                if !rs.backoff.ready(now) {
                    let left = rs.backoff.remaining(now);
                    rs.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={} pod={}",
                            rs.backoff.current.as_secs(),
                            c.name,
                            d.pod.metadata.name.as_deref().unwrap_or("")
                        ),
                    ));
                    let _ = left;
                    return false;
                }
                let recm = st.record.containers.entry(c.name.clone()).or_default();
                recm.restart_count += 1;
                let log = self.log_path(&d.pod, &c.name);
                if let Err(e) = logs::archive_previous(&log) {
                    tracing::warn!(error = %e, log = %log.display(), "cannot keep the previous run's log; the new run appends to it");
                }
                self.start(d, st, c);
                false
            }
            None => {
                if rec.attempt == 0 || !dir.join("status.json").exists() {
                    if !rs.backoff.ready(now) {
                        return false;
                    }
                    self.start(d, st, c);
                }
                false
            }
        }
    }

    fn run_probes(
        &self,
        d: &PodDesired,
        c: &Container,
        rs: &mut ContainerRuntimeState,
        pid: i32,
        now: Instant,
    ) {
        let Some(started) = rs.started else { return };
        let target = ProbeTarget {
            pid,
            netns: (!d.pod.spec.host_network.unwrap_or(false)).then(|| self.netns_path(d.uid())),
            shim_binary: self.cfg.shim_binary.clone(),
        };
        let mut kill = None;
        let unhealthy = |kind: &str, out: &ProbeOutcome| {
            if let ProbeOutcome::Failure(why) = out {
                self.event(
                    d,
                    Some((&c.name, false)),
                    EventType::Warning,
                    "Unhealthy",
                    format!("{kind} probe failed: {why}"),
                );
            }
        };
        if let (Some(p), Some(t)) = (&c.startup_probe, rs.startup.as_mut()) {
            if t.verdict != Some(true) {
                if t.due(started, now) {
                    let out = run_probe(p, c, &target, t.timeout);
                    unhealthy("Startup", &out);
                    if t.record(now, out) == Some(false) {
                        kill = Some("startup");
                    }
                }
                if kill.is_none() {
                    return;
                }
            }
        }
        if kill.is_none() {
            if let (Some(p), Some(t)) = (&c.liveness_probe, rs.liveness.as_mut()) {
                if t.due(started, now) {
                    let out = run_probe(p, c, &target, t.timeout);
                    unhealthy("Liveness", &out);
                    if t.record(now, out) == Some(false) {
                        kill = Some("liveness");
                    }
                }
            }
            if let (Some(p), Some(t)) = (&c.readiness_probe, rs.readiness.as_mut()) {
                if t.due(started, now) {
                    let out = run_probe(p, c, &target, t.timeout);
                    unhealthy("Readiness", &out);
                    t.record(now, out);
                }
            }
        }
        if let Some(probe) = kill {
            tracing::info!(container = %c.name, probe, "killing container: its probe failed");
            self.event(
                d,
                Some((&c.name, false)),
                EventType::Normal,
                "Killing",
                format!(
                    "Container {} failed {probe} probe, will be restarted",
                    c.name
                ),
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            rs.liveness = None;
        }
    }

    fn create_sandbox(&self, d: &PodDesired) -> Result<(), RuntimeError> {
        let uid = d.uid();
        let pod_dir = self.pod_dir(uid);
        let etc = pod_dir.join("etc");
        fs::create_dir_all(&etc).map_err(ioe("create etc dir"))?;
        fs::create_dir_all(self.pod_state_dir(uid)).map_err(ioe("create pod state dir"))?;
        let host_network = d.pod.spec.host_network.unwrap_or(false);
        if !host_network {
            netns::create(&self.netns_path(uid)).map_err(ioe("create pod netns"))?;
        }
        let hostname = pod_hostname(&d.pod);
        write_atomic(&etc.join("hostname"), format!("{hostname}\n").as_bytes())
            .map_err(ioe("write hostname"))?;
        let hosts = if host_network {
            fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            format!(
                "# Kubernetes-managed hosts file (bramble).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
            )
        };
        write_atomic(&etc.join("hosts"), hosts.as_bytes()).map_err(ioe("write hosts"))?;
        let resolv = super::resolv::resolv_conf(
            d.pod.spec.dns_policy.as_deref(),
            host_network,
            d.pod.spec.dns_config.as_ref(),
            d.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.cfg.cluster_dns.as_deref(),
            &self.cfg.cluster_domain,
            &fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        );
        write_atomic(&etc.join("resolv.conf"), resolv.as_bytes())
            .map_err(ioe("write resolv.conf"))?;
        // emptyDirs.
        for v in &d.pod.spec.volumes {
            if v.empty_dir
                .as_ref()
                .map(|e| e.medium.as_deref() != Some("Memory"))
                .unwrap_or(false)
            {
                let p = self.pod_state_dir(uid).join("volumes").join(&v.name);
                fs::create_dir_all(&p).map_err(ioe("create emptyDir"))?;
            }
        }
        Ok(())
    }

    /// Projects configMap and secret volumes as files, atomically (kubelet's
    /// `..data` symlink swap), rewriting them when the objects change.
    fn update_projected_volumes(&self, d: &PodDesired, st: &mut PodState) {
        for v in &d.pod.spec.volumes {
            let files: Option<ProjectedFiles> = if let Some(cm) = &v.config_map {
                d.config_maps.get(&cm.name).map(|obj| {
                    let mut all: BTreeMap<String, Vec<u8>> = obj
                        .data
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                        .collect();
                    for (k, b) in &obj.binary_data {
                        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b) {
                            all.insert(k.clone(), bytes);
                        }
                    }
                    (select_items(all, &cm.items), cm.default_mode)
                })
            } else if let Some(s) = &v.secret {
                d.secrets.get(&s.secret_name).map(|obj| {
                    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                    for (k, b) in &obj.data {
                        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b) {
                            all.insert(k.clone(), bytes);
                        }
                    }
                    for (k, s) in &obj.string_data {
                        all.insert(k.clone(), s.as_bytes().to_vec());
                    }
                    (select_items(all, &s.items), s.default_mode)
                })
            } else {
                continue;
            };
            let Some((files, mode)) = files.or_else(|| {
                let optional = v
                    .config_map
                    .as_ref()
                    .map(|cm| cm.optional)
                    .or_else(|| v.secret.as_ref().map(|s| s.optional))
                    .flatten()
                    .unwrap_or(false);
                optional.then(Default::default)
            }) else {
                let missing = match (&v.config_map, &v.secret) {
                    (Some(cm), _) => format!("configmap \"{}\" not found", cm.name),
                    (None, Some(secret)) => format!("secret \"{}\" not found", secret.secret_name),
                    (None, None) => continue,
                };
                let now = Instant::now();
                let due = st.volume_errors.get(&v.name).is_none_or(|(why, at)| {
                    *why != missing || now.duration_since(*at) >= WAITING_EVENT_INTERVAL
                });
                if due {
                    self.event(
                        d,
                        None,
                        EventType::Warning,
                        "FailedMount",
                        format!(
                            "MountVolume.SetUp failed for volume \"{}\" : {missing}",
                            v.name
                        ),
                    );
                    st.volume_errors.insert(v.name.clone(), (missing, now));
                }
                continue;
            };
            st.volume_errors.remove(&v.name);
            let hash = format!("{files:?}{mode:?}");
            if st.volume_hashes.get(&v.name) == Some(&hash) {
                continue;
            }
            let dir = self.pod_dir(d.uid()).join("volumes").join(&v.name);
            if project_files(&dir, &files, mode.unwrap_or(0o644) as u32).is_ok() {
                st.volume_hashes.insert(v.name.clone(), hash);
            }
        }
    }

    /// Starts a new instance of container `c` (bumping its attempt).
    fn start(&self, d: &PodDesired, st: &mut PodState, c: &Container) {
        let uid = d.uid().to_string();
        let result = self.try_start(d, st, c);
        let init = d.pod.spec.init_containers.iter().any(|i| i.name == c.name);
        match &result {
            Ok(()) => {
                self.event(
                    d,
                    Some((&c.name, init)),
                    EventType::Normal,
                    "Created",
                    format!("Created container: {}", c.name),
                );
                self.event(
                    d,
                    Some((&c.name, init)),
                    EventType::Normal,
                    "Started",
                    format!("Started container {}", c.name),
                );
            }
            Err(StartError::Failed(message)) => self.event(
                d,
                Some((&c.name, init)),
                EventType::Warning,
                "Failed",
                format!("Error: {message}"),
            ),
            Err(StartError::Waiting(..)) => {}
        }
        let rec = st.record.containers.entry(c.name.clone()).or_default();
        let rs = st.containers.entry(c.name.clone()).or_default();
        match result {
            Ok(()) => {
                rs.waiting = None;
                rs.started = Some(Instant::now());
            }
            Err(StartError::Waiting(reason, message)) => {
                rs.waiting = Some((reason, message));
                // Retry later without burning an attempt.
                let _ = rec;
                self.release_rootfs(&uid, &c.name);
            }
            Err(StartError::Failed(message)) => {
                // The shim wrote a Failed status; the exit path handles backoff.
                rs.waiting = Some(("RunContainerError".into(), message));
            }
        }
    }

    /// Makes sure container `c`'s image is in the store as its
    /// `imagePullPolicy` asks, as the kubelet's image manager does: pulls
    /// in the background (the container waits as `ContainerCreating`),
    /// `Pulling`/`Pulled`/`Failed`/`BackOff` events, `ErrImagePull` then
    /// `ImagePullBackOff`. With `Always` and no registry reachable, a local
    /// copy runs (with an event saying so).
    fn ensure_image(&self, d: &PodDesired, c: &Container) -> Result<ImageRecord, StartError> {
        let init = d.pod.spec.init_containers.iter().any(|i| i.name == c.name);
        let event = |t: EventType, reason: &str, message: String| {
            self.event(d, Some((&c.name, init)), t, reason, message)
        };
        if crate::images::ImageRef::parse(&c.image).is_none() {
            return Err(StartError::Waiting(
                "InvalidImageName".into(),
                format!(
                    "Failed to apply default image tag \"{0}\": couldn't parse image name \"{0}\": invalid reference format",
                    c.image
                ),
            ));
        }
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let r = crate::images::ImageRef::parse(&c.image);
            match r {
                Some(r) if r.digest.is_none() && r.tag.as_deref() == Some("latest") => {
                    "Always".into()
                }
                _ => "IfNotPresent".into(),
            }
        });
        let local = match self.images.resolve(&c.image) {
            Ok(img) => Some(img),
            Err(ImageError::NotFound(_)) => None,
            Err(e) => {
                return Err(StartError::Waiting(
                    "ImageInspectError".into(),
                    e.to_string(),
                ))
            }
        };
        if self.pulls.has_job(&format!("{}_{}", d.uid(), c.image)) {
            // A pull of ours is running or just ended: report it first.
            return self.pull_image(d, c, local, &event);
        }
        match (policy.as_str(), local) {
            ("Never", Some(img)) => Ok(img),
            ("Never", None) => Err(StartError::Waiting(
                "ErrImageNeverPull".into(),
                format!(
                    "Container image \"{}\" is not present with pull policy of Never",
                    c.image
                ),
            )),
            ("Always", local) => self.pull_image(d, c, local, &event),
            (_, Some(img)) => {
                event(
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{}\" already present on machine", c.image),
                );
                Ok(img)
            }
            (_, None) => self.pull_image(d, c, None, &event),
        }
    }

    fn pull_image(
        &self,
        d: &PodDesired,
        c: &Container,
        local: Option<ImageRecord>,
        event: &dyn Fn(EventType, &str, String),
    ) -> Result<ImageRecord, StartError> {
        let key = format!("{}_{}", d.uid(), c.image);
        let names: Vec<String> = d
            .pod
            .spec
            .image_pull_secrets
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let (keyring, missing) = pod_keyring(&names, &d.secrets);
        let handle = lock(&self.pods).get(d.uid()).cloned();
        let poll = self.pulls.poll(&key, &c.image, keyring, move || {
            if let Some(h) = handle {
                h.poke();
            }
        });
        match poll {
            PullPoll::Started => {
                if !missing.is_empty() {
                    self.event(
                        d,
                        None,
                        EventType::Warning,
                        "FailedToRetrieveImagePullSecret",
                        format!(
                            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                            missing.join(", ")
                        ),
                    );
                }
                event(
                    EventType::Normal,
                    "Pulling",
                    format!("Pulling image \"{}\"", c.image),
                );
                Err(StartError::Waiting(
                    "ContainerCreating".into(),
                    String::new(),
                ))
            }
            PullPoll::Running => Err(StartError::Waiting(
                "ContainerCreating".into(),
                String::new(),
            )),
            PullPoll::BackOff(message) => {
                if let Some(img) = local.filter(|_| message.starts_with(UNREACHABLE_MARK)) {
                    return Ok(img);
                }
                Err(StartError::Waiting(
                    "ImagePullBackOff".into(),
                    format!(
                        "Back-off pulling image \"{}\": ErrImagePull: {message}",
                        c.image
                    ),
                ))
            }
            PullPoll::Finished { result, waited } => match *result {
                Ok(outcome) => {
                    event(
                        EventType::Normal,
                        "Pulled",
                        format!(
                            "Successfully pulled image \"{}\" in {} ({} including waiting). Image size: {} bytes.",
                            c.image,
                            go_duration(outcome.duration),
                            go_duration(waited),
                            outcome.size
                        ),
                    );
                    Ok(outcome.image)
                }
                Err(e) if e.is_unreachable() && local.is_some() => {
                    event(
                        EventType::Warning,
                        "Failed",
                        format!(
                            "Failed to pull image \"{}\": {e}; the registry is unreachable, so the image already on the node is used",
                            c.image
                        ),
                    );
                    self.pulls
                        .mark_unreachable(&format!("{}_{}", d.uid(), c.image));
                    local.ok_or_else(|| StartError::Waiting("ErrImagePull".into(), e.to_string()))
                }
                Err(e) => {
                    event(
                        EventType::Warning,
                        "Failed",
                        format!("Failed to pull image \"{}\": {e}", c.image),
                    );
                    Err(StartError::Waiting("ErrImagePull".into(), e.to_string()))
                }
            },
        }
    }

    fn try_start(
        &self,
        d: &PodDesired,
        st: &mut PodState,
        c: &Container,
    ) -> Result<(), StartError> {
        let uid = d.uid().to_string();
        let image = self.ensure_image(d, c)?;
        let node_platform = crate::images::node_platform();
        if !image.platform.starts_with(&node_platform) {
            return Err(StartError::Waiting(
                "ImageInspectError".into(),
                format!(
                    "image {} is for {}, but this node is {node_platform}",
                    c.image, image.platform
                ),
            ));
        }
        let env = super::env::resolve_env(d, c)
            .map_err(|m| StartError::Waiting("CreateContainerConfigError".into(), m))?;
        let dir = self.container_dir(&uid, &c.name);
        let _ = fs::remove_dir_all(dir.join("rootfs"));
        fs::create_dir_all(&dir)
            .map_err(|e| StartError::Waiting("CreateContainerError".into(), e.to_string()))?;
        let _ = fs::remove_file(dir.join("status.json"));
        self.images
            .add_lease(&format!("{uid}_{}", c.name), &image.id)
            .map_err(|e| StartError::Waiting("CreateContainerError".into(), e.to_string()))?;
        self.mount_rootfs(&uid, &c.name, &image).map_err(|e| {
            StartError::Waiting("CreateContainerError".into(), format!("mount rootfs: {e}"))
        })?;
        let rootfs = dir.join("rootfs");
        let mounts = self
            .container_mounts(d, c)
            .map_err(|m| StartError::Waiting("CreateContainerConfigError".into(), m))?;
        let host_network = d.pod.spec.host_network.unwrap_or(false);
        let pod_security = d.pod.spec.security_context.as_ref();
        let effective = Container {
            security_context: bramble_common::api::effective_security_context(
                pod_security,
                c.security_context.as_ref(),
            ),
            ..c.clone()
        };
        let seccomp = security::seccomp_for(
            effective
                .security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref()),
            self.cfg.seccomp,
            &self.cfg.state_dir.join("seccomp"),
        )
        .map_err(|m| StartError::Waiting("CreateContainerError".into(), m))?;
        security::verify_run_as_non_root(
            &d.pod,
            &c.name,
            effective.security_context.as_ref(),
            image.config.user.as_deref(),
        )
        .map_err(|m| StartError::Waiting("CreateContainerConfigError".into(), m))?;
        let supplemental_groups = pod_security
            .map(|s| {
                s.supplemental_groups
                    .iter()
                    .filter_map(|g| u32::try_from(*g).ok())
                    .collect()
            })
            .unwrap_or_default();
        let inputs = SpecInputs {
            container: &effective,
            image: &image.config,
            env,
            hostname: pod_hostname(&d.pod),
            netns: (!host_network).then(|| self.netns_path(&uid)),
            cgroups_path: self.cgroups_path(&uid, &c.name),
            mounts,
            pids_limit: self.cfg.pids_limit,
            seccomp,
            supplemental_groups,
            passwd: fs::read_to_string(rootfs.join("etc/passwd")).ok(),
            group: fs::read_to_string(rootfs.join("etc/group")).ok(),
        };
        let spec = build_spec(&inputs)
            .map_err(|e| StartError::Waiting("CreateContainerConfigError".into(), e.to_string()))?;
        let write = |name: &str, v: &serde_json::Value| {
            write_atomic(
                &dir.join(name),
                &serde_json::to_vec_pretty(v).unwrap_or_default(),
            )
            .map_err(|e| StartError::Waiting("CreateContainerError".into(), e.to_string()))
        };
        write("config.json", &spec)?;
        let shim_cfg = ShimConfig {
            id: self.container_id(&uid, &c.name),
            root: self.youki_root(),
            bundle: dir.clone(),
            status_file: dir.join("status.json"),
            log_path: self.log_path(&d.pod, &c.name),
            log_max_size: self.cfg.log_max_size,
            log_max_files: self.cfg.log_max_files,
            cgroups_path: self.cgroups_path(&uid, &c.name),
            shim_log: dir.join("shim.log"),
        };
        write(
            "shim.json",
            &serde_json::to_value(&shim_cfg).unwrap_or_default(),
        )?;
        if let Some(events) = &self.events {
            events.watch(&dir, &uid);
        }
        // A leftover libcontainer state (shim killed hard) blocks the ID.
        cleanup_libcontainer(&self.youki_root(), &shim_cfg.id);
        let rec = st.record.containers.entry(c.name.clone()).or_default();
        rec.attempt += 1;
        rec.image_id = image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone());
        let _ = write_json(&self.pod_dir(&uid).join("record.json"), &st.record);
        let out = std::process::Command::new(&self.cfg.shim_binary)
            .arg("shim")
            .arg("run")
            .arg(dir.join("shim.json"))
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => {
                let msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
                if !dir.join("status.json").exists() {
                    let _ = write_json(
                        &dir.join("status.json"),
                        &ShimStatus {
                            state: ShimState::Failed,
                            shim_pid: 0,
                            pid: None,
                            started_at: None,
                            finished_at: Some(now_rfc3339()),
                            exit_code: None,
                            signal: None,
                            oom_killed: false,
                            message: Some(msg.clone()),
                        },
                    );
                }
                Err(StartError::Failed(msg))
            }
            Err(e) => {
                let rec = st.record.containers.entry(c.name.clone()).or_default();
                rec.attempt -= 1;
                Err(StartError::Waiting(
                    "CreateContainerError".into(),
                    format!("cannot run shim {}: {e}", self.cfg.shim_binary.display()),
                ))
            }
        }
    }

    fn mount_rootfs(&self, uid: &str, name: &str, image: &ImageRecord) -> io::Result<()> {
        use nix::mount::{mount, MsFlags};
        let dir = self.container_dir(uid, name);
        let rootfs = dir.join("rootfs");
        let layer_dir = self.pod_state_dir(uid).join("containers").join(name);
        let upper = layer_dir.join("upper");
        let work = layer_dir.join("work");
        let _ = fs::remove_dir_all(&layer_dir);
        for p in [&rootfs, &upper, &work] {
            fs::create_dir_all(p)?;
        }
        let mut lowers: Vec<String> = image
            .layers
            .iter()
            .rev()
            .map(|l| self.images.layer_dir(l).display().to_string())
            .collect();
        if lowers.is_empty() {
            let empty = layer_dir.join("empty");
            fs::create_dir_all(&empty)?;
            lowers.push(empty.display().to_string());
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )?;
        Ok(())
    }

    fn release_rootfs(&self, uid: &str, name: &str) {
        let rootfs = self.container_dir(uid, name).join("rootfs");
        unmount_all_under(&rootfs);
        let _ = fs::remove_dir(&rootfs);
        let _ = fs::remove_dir_all(self.pod_state_dir(uid).join("containers").join(name));
    }

    fn container_mounts(
        &self,
        d: &PodDesired,
        c: &Container,
    ) -> Result<Vec<(String, MountSource)>, String> {
        let uid = d.uid();
        let etc = self.pod_dir(uid).join("etc");
        let mut out = Vec::new();
        for f in ["hosts", "hostname", "resolv.conf"] {
            out.push((
                format!("/etc/{f}"),
                MountSource::Bind {
                    source: etc.join(f),
                    read_only: false,
                },
            ));
        }
        for m in &c.volume_mounts {
            let v = d
                .pod
                .spec
                .volumes
                .iter()
                .find(|v| v.name == m.name)
                .ok_or_else(|| format!("volumeMount {} names no volume of the pod", m.name))?;
            let ro = m.read_only.unwrap_or(false);
            let mut src = if let Some(e) = &v.empty_dir {
                if e.medium.as_deref() == Some("Memory") {
                    out.push((
                        m.mount_path.clone(),
                        MountSource::Tmpfs {
                            size: e.size_limit.as_ref().and_then(|q| parse_memory(&q.0)),
                        },
                    ));
                    continue;
                }
                (self.pod_state_dir(uid).join("volumes").join(&v.name), ro)
            } else if let Some(h) = &v.host_path {
                let p = PathBuf::from(&h.path);
                match h.type_.as_deref() {
                    Some("DirectoryOrCreate") => {
                        let _ = fs::create_dir_all(&p);
                    }
                    Some("FileOrCreate") => {
                        if let Some(par) = p.parent() {
                            let _ = fs::create_dir_all(par);
                        }
                        let _ = fs::OpenOptions::new().create(true).append(true).open(&p);
                    }
                    _ => {}
                }
                if !p.exists() {
                    return Err(format!("hostPath {} does not exist on the node", h.path));
                }
                (p, ro)
            } else if v.config_map.is_some() || v.secret.is_some() {
                (self.pod_dir(uid).join("volumes").join(&v.name), true)
            } else {
                return Err(format!("volume {} has no supported source", v.name));
            };
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if Path::new(sub)
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(format!(
                        "subPath {sub:?} must be a relative path without .."
                    ));
                }
                let p = src.0.join(sub);
                if !p.exists() {
                    let _ = fs::create_dir_all(&p);
                }
                src.0 = p;
            }
            out.push((
                m.mount_path.clone(),
                MountSource::Bind {
                    source: src.0,
                    read_only: src.1,
                },
            ));
        }
        Ok(out)
    }

    fn compute_status(&self, d: &PodDesired, st: &PodState) -> PodStatus {
        let uid = d.uid();
        let policy = RestartPolicy::parse(d.pod.spec.restart_policy.as_deref());
        let status_of = |c: &Container, init: bool| -> ContainerStatus {
            let rec = st
                .record
                .containers
                .get(&c.name)
                .cloned()
                .unwrap_or_default();
            let rs = st.containers.get(&c.name);
            let shim = (rec.attempt > 0)
                .then(|| ShimStatus::read(&self.container_dir(uid, &c.name).join("status.json")))
                .flatten();
            let mut state = ContainerState::default();
            let mut ready = false;
            let mut started = Some(false);
            match (
                shim.as_ref().map(|s| s.state),
                rs.and_then(|r| r.waiting.clone()),
            ) {
                (Some(ShimState::Running), _) => {
                    state.running = Some(ContainerStateRunning {
                        started_at: shim.as_ref().and_then(|s| s.started_at.clone()),
                    });
                    let startup_ok = rs
                        .map(|r| {
                            r.startup
                                .as_ref()
                                .map(|t| t.verdict == Some(true))
                                .unwrap_or(true)
                        })
                        .unwrap_or(true);
                    started = Some(startup_ok);
                    ready = !init
                        && startup_ok
                        && rs
                            .map(|r| {
                                r.readiness
                                    .as_ref()
                                    .map(|t| t.verdict == Some(true))
                                    .unwrap_or(true)
                            })
                            .unwrap_or(false);
                }
                (_, Some((reason, message))) => {
                    state.waiting = Some(ContainerStateWaiting {
                        reason: Some(reason),
                        message: Some(message),
                    });
                }
                (Some(_), None) => {
                    let last = match &shim {
                        Some(sh) if rec.handled_attempt < rec.attempt => terminated_from(sh),
                        _ => rec.last_state.clone().unwrap_or_default(),
                    };
                    let restarting =
                        policy.should_restart(last.exit_code) && !(init && last.exit_code == 0);
                    if restarting && !init {
                        state.waiting = Some(ContainerStateWaiting {
                            reason: Some("CrashLoopBackOff".into()),
                            message: None,
                        });
                    } else {
                        state.terminated = Some(last);
                    }
                }
                (None, None) => {
                    state.waiting = Some(ContainerStateWaiting {
                        reason: Some(
                            if init {
                                "PodInitializing"
                            } else {
                                "ContainerCreating"
                            }
                            .into(),
                        ),
                        message: None,
                    });
                }
            }
            let last_state = if state.terminated.is_none() {
                rec.last_state.clone().map(|t| ContainerState {
                    terminated: Some(t),
                    ..Default::default()
                })
            } else {
                None
            };
            ContainerStatus {
                name: c.name.clone(),
                state,
                last_state,
                ready,
                restart_count: rec.restart_count,
                image: c.image.clone(),
                image_id: rec.image_id.clone(),
                container_id: (rec.attempt > 0)
                    .then(|| format!("bramble://{}", self.container_id(uid, &c.name))),
                started,
            }
        };
        let init_statuses: Vec<ContainerStatus> = d
            .pod
            .spec
            .init_containers
            .iter()
            .map(|c| status_of(c, true))
            .collect();
        let statuses: Vec<ContainerStatus> = d
            .pod
            .spec
            .containers
            .iter()
            .map(|c| status_of(c, false))
            .collect();
        let initialized = init_statuses.iter().all(|s| {
            s.state
                .terminated
                .as_ref()
                .map(|t| t.exit_code == 0)
                .unwrap_or(false)
                || s.last_state
                    .as_ref()
                    .and_then(|l| l.terminated.as_ref())
                    .map(|t| {
                        t.exit_code == 0 && s.state.running.is_none() && s.state.waiting.is_none()
                    })
                    .unwrap_or(false)
        });
        let init_failed = policy == RestartPolicy::Never
            && init_statuses.iter().any(|s| {
                s.state
                    .terminated
                    .as_ref()
                    .map(|t| t.exit_code != 0)
                    .unwrap_or(false)
            });
        let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
        let any_running = statuses.iter().any(|s| s.state.running.is_some());
        let all_terminated =
            !statuses.is_empty() && statuses.iter().all(|s| s.state.terminated.is_some());
        let phase = if init_failed {
            "Failed"
        } else if all_terminated {
            if statuses.iter().all(|s| {
                s.state
                    .terminated
                    .as_ref()
                    .map(|t| t.exit_code == 0)
                    .unwrap_or(false)
            }) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if any_running
            || statuses
                .iter()
                .any(|s| s.restart_count > 0 || s.last_state.is_some())
        {
            "Running"
        } else {
            "Pending"
        };
        let cond = |t: &str, ok: bool| Condition {
            type_: t.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: None,
            message: None,
            last_heartbeat_time: None,
            last_transition_time: None,
            last_probe_time: None,
        };
        let (reason, message) = match &st.sandbox_error {
            Some(e) => (Some("SandboxCreateFailed".to_string()), Some(e.clone())),
            None => (None, None),
        };
        PodStatus {
            phase: Some(phase.into()),
            conditions: vec![
                cond("Initialized", initialized),
                cond("ContainersReady", all_ready),
                cond("Ready", all_ready),
            ],
            message,
            reason,
            host_ip: None,
            pod_ip: None,
            pod_ips: Vec::new(),
            start_time: Some(st.record.start_time.clone()),
            init_container_statuses: init_statuses,
            container_statuses: statuses,
        }
    }

    /// SIGTERM, grace, SIGKILL, then remove everything but the logs.
    fn terminate_pod(
        &self,
        uid: &str,
        d: Option<&PodDesired>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let containers_dir = self.pod_dir(uid).join("containers");
        let names: Vec<String> = fs::read_dir(&containers_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let running = |names: &[String]| -> Vec<(String, i32, i32)> {
            names
                .iter()
                .filter_map(|n| {
                    let s = ShimStatus::read(&containers_dir.join(n).join("status.json"))?;
                    (s.state == ShimState::Running && s.pid.map(pid_alive).unwrap_or(false))
                        .then(|| (n.clone(), s.pid.unwrap_or(0), s.shim_pid))
                })
                .collect()
        };
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for (name, pid, _) in running(&names) {
            if let Some(d) = d {
                let init = d.pod.spec.init_containers.iter().any(|i| i.name == name);
                self.event(
                    d,
                    Some((&name, init)),
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {name}"),
                );
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while !running(&names).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (_, pid, _) in running(&names) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Wait for the shims to record the exits and delete the containers.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alive: Vec<i32> = names
                .iter()
                .filter_map(|n| ShimStatus::read(&containers_dir.join(n).join("status.json")))
                .filter(|s| pid_alive(s.shim_pid))
                .map(|s| s.shim_pid)
                .collect();
            if alive.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for n in &names {
            cleanup_libcontainer(&self.youki_root(), &self.container_id(uid, n));
            self.release_rootfs(uid, n);
            let _ = self.images.remove_lease(&format!("{uid}_{n}"));
        }
        // Projected volumes, pod cgroups, netns, dirs.
        unmount_all_under(&self.pod_dir(uid));
        remove_cgroup_tree(&format!("bramble/{}/{uid}", self.cfg.node_name));
        netns::remove(&self.netns_path(uid)).map_err(ioe("remove pod netns"))?;
        for p in [self.pod_dir(uid), self.pod_state_dir(uid)] {
            match fs::remove_dir_all(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(RuntimeError::Io {
                        what: format!("remove {}", p.display()),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Files of a configMap/secret volume and their mode.
type ProjectedFiles = (BTreeMap<String, Vec<u8>>, Option<i32>);

enum StartError {
    /// Not started; the container waits with this reason and message.
    Waiting(String, String),
    /// The shim ran and failed.
    Failed(String),
}

fn unreachable_status() -> ShimStatus {
    ShimStatus {
        state: ShimState::Failed,
        shim_pid: 0,
        pid: None,
        started_at: None,
        finished_at: None,
        exit_code: None,
        signal: None,
        oom_killed: false,
        message: None,
    }
}

fn terminated_from(s: &ShimStatus) -> ContainerStateTerminated {
    let failed_to_start = s.state == ShimState::Failed;
    let exit_code = s.exit_code.unwrap_or(128);
    let reason = if failed_to_start {
        "StartError"
    } else if s.oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code,
        signal: s.signal,
        reason: Some(reason.into()),
        message: s.message.clone(),
        started_at: s.started_at.clone(),
        finished_at: s.finished_at.clone(),
    }
}

fn pod_hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .hostname
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_else(|| "pod".into());
    h.chars().take(63).collect()
}

fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // A zombie still answers kill(0): look at its state too.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn select_items(
    all: BTreeMap<String, Vec<u8>>,
    items: &[bramble_common::api::KeyToPath],
) -> BTreeMap<String, Vec<u8>> {
    if items.is_empty() {
        return all;
    }
    items
        .iter()
        .filter_map(|i| all.get(&i.key).map(|v| (i.path.clone(), v.clone())))
        .collect()
}

/// Writes `files` into `dir` kubelet-style: the data goes to a new
/// timestamped directory, `..data` is swapped to it with a rename, and each
/// key is a symlink through `..data`. Readers never see a half update.
fn project_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}_{}",
        jiff::Timestamp::now().as_nanosecond(),
        std::process::id()
    );
    let data_dir = dir.join(&stamp);
    fs::create_dir_all(&data_dir)?;
    for (k, v) in files {
        if Path::new(k)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let p = data_dir.join(k);
        if let Some(par) = p.parent() {
            fs::create_dir_all(par)?;
        }
        fs::write(&p, v)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o777))?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link)?;
    let old = fs::read_link(dir.join("..data")).ok();
    fs::rename(&tmp_link, dir.join("..data"))?;
    for k in files.keys() {
        let top = k.split('/').next().unwrap_or(k);
        let link = dir.join(top);
        if link.symlink_metadata().is_err() {
            symlink(format!("..data/{top}"), &link)?;
        }
    }
    // Remove keys that disappeared and the previous data dir.
    for e in fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("..")
            && !files
                .keys()
                .any(|k| k.split('/').next() == Some(name.as_str()))
        {
            let _ = fs::remove_file(e.path());
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}
/// Unmounts every mount at or below `path` (deepest first).
pub(crate) fn unmount_all_under(path: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = path.display().to_string();
    let mut targets: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mount))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = nix::mount::umount2(Path::new(&t), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The root of every cgroup hierarchy: each v1 controller's mount, the v2
/// `unified` mount of a hybrid layout, and `/sys/fs/cgroup` itself (v2).
fn cgroup_roots() -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut roots: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
}

/// Removes `rel` (e.g. `bramble/node/uid`) and its children in every cgroup
/// hierarchy.
pub(crate) fn remove_cgroup_tree(rel: &str) {
    for root in cgroup_roots() {
        let p = root.join(rel);
        if p.is_dir() {
            remove_cgroup_dir(&p);
        }
    }
}

/// Removes what the runtime of node `node` made on the host and left empty:
/// the pod namespace directory `{run_dir}/netns` (once every namespace in it
/// is unmounted), the empty directories of `{run_dir}/{node}` (files are
/// kept, and so are the directories holding them), and in every cgroup
/// hierarchy the cgroups `bramble/{node}/...` that hold no process, then
/// the `bramble` parent when no other node's cgroup is left in it. What is
/// not empty (pods still running, another agent's cgroups) stays: nothing
/// is killed or unmounted here. Returns what was removed.
///
/// For `bramble-agent reset`, after the pod network is reset and with the
/// agent stopped.
pub fn remove_empty_leftovers(run_dir: &Path, node: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let netns_dir = run_dir.join("netns");
    if fs::remove_dir(&netns_dir).is_ok() {
        removed.push(netns_dir);
    }
    // A node name is a DNS-1123 subdomain: never empty, `.` or `..`, never
    // a path with `/`; check anyway before removing anything under it.
    if node.is_empty() || node.contains('/') || node == "." || node == ".." {
        return removed;
    }
    remove_empty_dirs(&run_dir.join(node), &mut removed);
    for root in cgroup_roots() {
        let parent = root.join("bramble");
        if !parent.is_dir() {
            continue;
        }
        // rmdir of a cgroup fails while it holds a process or a child cgroup:
        // exactly "only when empty".
        remove_empty_dirs(&parent.join(node), &mut removed);
        if fs::remove_dir(&parent).is_ok() {
            removed.push(parent);
        }
    }
    removed
}

/// Removes `dir` and the directories under it, deepest first, where they are
/// empty; never a file, never through a symbolic link.
fn remove_empty_dirs(dir: &Path, removed: &mut Vec<PathBuf>) {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        _ => return,
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path(), removed);
            }
        }
    }
    if fs::remove_dir(dir).is_ok() {
        removed.push(dir.to_path_buf());
    }
}

fn remove_cgroup_dir(p: &Path) {
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_dir(&e.path());
            }
        }
    }
    for _ in 0..50 {
        match fs::remove_dir(p) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn cleanup_libcontainer(root: &Path, id: &str) {
    let dir = root.join(id);
    if !dir.exists() {
        return;
    }
    if let Ok(mut c) = libcontainer::container::Container::load(dir.clone()) {
        let _ = c.delete(true);
    }
    let _ = fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(1234)), "1.234s");
        assert_eq!(go_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(123_500)), "2m3.5s");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
    }

    #[test]
    fn leftovers_removed_only_where_empty() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        // A node name no cgroup on this machine has.
        let node = format!("leftovers-test-{}", std::process::id());
        fs::create_dir_all(run.join("netns")).unwrap();
        fs::create_dir_all(run.join(&node).join("pods/u1/containers/main")).unwrap();
        fs::create_dir_all(run.join(&node).join("youki")).unwrap();
        fs::create_dir_all(run.join(&node).join("pods/u2")).unwrap();
        fs::write(run.join(&node).join("pods/u2/pod.json"), "{}").unwrap();
        fs::create_dir_all(run.join("other-node/pods")).unwrap();

        let removed = remove_empty_leftovers(run, &node);
        assert!(!run.join("netns").exists());
        assert!(!run.join(&node).join("youki").exists());
        assert!(!run.join(&node).join("pods/u1").exists());
        assert!(
            run.join(&node).join("pods/u2/pod.json").exists(),
            "files stay"
        );
        assert!(
            run.join("other-node/pods").exists(),
            "other nodes' dirs stay"
        );
        assert!(removed.contains(&run.join("netns")), "{removed:?}");

        fs::remove_file(run.join(&node).join("pods/u2/pod.json")).unwrap();
        remove_empty_leftovers(run, &node);
        assert!(!run.join(&node).exists());
        assert!(run.exists(), "the run dir itself stays");
        // A netns dir with something in it stays.
        fs::create_dir_all(run.join("netns")).unwrap();
        fs::write(run.join("netns/pod"), "").unwrap();
        remove_empty_leftovers(run, &node);
        assert!(run.join("netns/pod").exists());
        // Nothing outside the run dir is touched for a strange name.
        assert!(remove_empty_leftovers(run, "..").is_empty());
    }
}
