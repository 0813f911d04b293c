//! The simulated runtime (`bramble-agent --runtime sim`): pods live in memory
//! only, no process is started. For tests, demos and `--sim-nodes`
//! benchmarks of the control plane.
//!
//! # The rule
//!
//! A pod handed to the runtime is `Pending` (containers waiting in
//! `ContainerCreating`) for [`SIM_START_DELAY`], then its containers run.
//! A container runs forever unless its exit is explicit:
//!
//! - its `command` + `args` is `true` (exit 0), `false` (exit 1),
//!   `exit N`, or `sh -c "exit N"` / `sh -c true` / `sh -c false`
//!   (`/bin/sh`, `/bin/true` ... count the same);
//! - or the pod has the annotation `bramble.io/sim-exit-code: "N"`, which
//!   applies to every container of the pod.
//!
//! Such a container exits with that code `bramble.io/sim-run-seconds`
//! (pod annotation, decimal seconds, default 0) after it started. Then the
//! pod's `restartPolicy` decides: `Always` (default) restarts it, and
//! `OnFailure` does when the code is not 0, each time
//! [`SIM_RESTART_DELAY`] after the exit (waiting in `CrashLoopBackOff`
//! meanwhile) with `restartCount` + 1; otherwise it stays terminated. The
//! phase follows Kubernetes' rules: `Succeeded` when every container exited
//! 0 and none will restart, `Failed` when one failed and none will restart,
//! `Running` otherwise. `kill_pod` stops a pod at once (its grace period is
//! not waited for: simulated processes honour SIGTERM immediately).
//!
//! Times are wall-clock (`SystemTime`); the state machine is a pure
//! function of the time ([`SimPod::advance`]), unit-tested with explicit
//! times.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bramble_common::api::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodSpec, PodStatus,
};
use bramble_common::meta::Condition;

use crate::sync::pod::rfc3339;
use crate::sync::{PodDesired, PodRuntime, RuntimeError};

/// How long a new pod stays `Pending` before its containers run.
pub const SIM_START_DELAY: Duration = Duration::from_millis(100);
/// How long an exited container waits before it restarts.
pub const SIM_RESTART_DELAY: Duration = Duration::from_secs(1);
/// Pod annotation: every container exits with this code.
pub const ANNOTATION_EXIT_CODE: &str = "bramble.io/sim-exit-code";
/// Pod annotation: seconds a container with an exit runs before it exits.
pub const ANNOTATION_RUN_SECONDS: &str = "bramble.io/sim-run-seconds";
/// At most this many exits/restarts are replayed in one [`SimPod::advance`].
const MAX_STEPS: usize = 10_000;

/// What a simulated container does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimBehaviour {
    /// Runs until stopped.
    RunForever,
    /// Exits with `code` after `after`.
    Exit {
        /// The exit code.
        code: i32,
        /// How long it runs first.
        after: Duration,
    },
}

/// The exit code the container's `command` + `args` state, per the rule in
/// the module documentation.
pub fn command_exit_code(container: &Container) -> Option<i32> {
    let argv: Vec<&str> = container
        .command
        .iter()
        .chain(&container.args)
        .map(String::as_str)
        .collect();
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let script_code = |script: &str| -> Option<i32> {
        let words: Vec<&str> = script.split_whitespace().collect();
        match words.as_slice() {
            ["true"] => Some(0),
            ["false"] => Some(1),
            ["exit"] => Some(0),
            ["exit", n] => n.parse().ok(),
            _ => None,
        }
    };
    match argv.as_slice() {
        [cmd] if base(cmd) == "true" => Some(0),
        [cmd] if base(cmd) == "false" => Some(1),
        ["exit", n] => n.parse().ok(),
        [shell, "-c", script] if matches!(base(shell).as_str(), "sh" | "bash" | "ash") => {
            script_code(script)
        }
        _ => None,
    }
}

/// The behaviour of `container` in a pod with `annotations`, per the rule in
/// the module documentation.
pub fn behaviour(container: &Container, annotations: &BTreeMap<String, String>) -> SimBehaviour {
    let annotated = annotations
        .get(ANNOTATION_EXIT_CODE)
        .and_then(|v| v.trim().parse::<i32>().ok());
    let after = annotations
        .get(ANNOTATION_RUN_SECONDS)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(Duration::ZERO);
    match annotated.or_else(|| command_exit_code(container)) {
        Some(code) => SimBehaviour::Exit { code, after },
        None => SimBehaviour::RunForever,
    }
}

/// Whether an exit with `code` is followed by a restart under `policy`.
pub fn restarts(policy: Option<&str>, code: i32) -> bool {
    match policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// One run of a container that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimExit {
    /// The exit code.
    pub code: i32,
    /// When it started.
    pub started: SystemTime,
    /// When it ended.
    pub finished: SystemTime,
}

/// The state of a simulated container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimState {
    /// Not started yet; runs at the given time.
    Creating {
        /// When it starts.
        start_at: SystemTime,
    },
    /// Running since the given time.
    Running {
        /// When it started.
        since: SystemTime,
    },
    /// Ended; restarts at `restart_at` if that is set.
    Exited {
        /// The run that ended.
        exit: SimExit,
        /// When it runs again, per the restart policy.
        restart_at: Option<SystemTime>,
    },
}

/// A simulated container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimContainer {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// What it does.
    pub behaviour: SimBehaviour,
    /// Where it is.
    pub state: SimState,
    /// Restarts so far.
    pub restart_count: i32,
    /// The previous run, once it restarted.
    pub last_exit: Option<SimExit>,
}

/// A simulated pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPod {
    /// The pod's UID.
    pub uid: String,
    /// The resource version last synced.
    pub resource_version: Option<String>,
    /// `spec.restartPolicy`.
    pub restart_policy: Option<String>,
    /// When the runtime got the pod.
    pub created: SystemTime,
    /// Its containers, in spec order.
    pub containers: Vec<SimContainer>,
}

impl SimPod {
    /// A pod received at `now`.
    pub fn new(desired: &PodDesired, now: SystemTime) -> SimPod {
        let spec: &PodSpec = &desired.pod.spec;
        SimPod {
            uid: desired.uid().to_owned(),
            resource_version: desired.pod.metadata.resource_version.clone(),
            restart_policy: spec.restart_policy.clone(),
            created: now,
            containers: spec
                .containers
                .iter()
                .map(|c| SimContainer {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    behaviour: behaviour(c, &desired.pod.metadata.annotations),
                    state: SimState::Creating {
                        start_at: now + SIM_START_DELAY,
                    },
                    restart_count: 0,
                    last_exit: None,
                })
                .collect(),
        }
    }

    /// Move every container's state forward to `now`.
    pub fn advance(&mut self, now: SystemTime) {
        let policy = self.restart_policy.clone();
        for container in &mut self.containers {
            for _ in 0..MAX_STEPS {
                let next = match container.state {
                    SimState::Creating { start_at } if now >= start_at => {
                        SimState::Running { since: start_at }
                    }
                    SimState::Running { since } => match container.behaviour {
                        SimBehaviour::Exit { code, after } if now >= since + after => {
                            let finished = since + after;
                            SimState::Exited {
                                exit: SimExit {
                                    code,
                                    started: since,
                                    finished,
                                },
                                restart_at: restarts(policy.as_deref(), code)
                                    .then(|| finished + SIM_RESTART_DELAY),
                            }
                        }
                        _ => break,
                    },
                    SimState::Exited {
                        exit,
                        restart_at: Some(at),
                    } if now >= at => {
                        container.restart_count = container.restart_count.saturating_add(1);
                        container.last_exit = Some(exit);
                        SimState::Running { since: at }
                    }
                    _ => break,
                };
                container.state = next;
            }
        }
    }

    /// The pod's status as of its last [`SimPod::advance`].
    pub fn status(&self) -> PodStatus {
        let created = rfc3339(self.created);
        let mut all_running = !self.containers.is_empty();
        let mut ready_since = self.created;
        let mut not_ready_since: Option<SystemTime> = None;
        let (mut waiting, mut running, mut stopped, mut succeeded, mut will_restart) =
            (0, 0, 0, 0, 0);
        let statuses = self
            .containers
            .iter()
            .map(|c| {
                let mut status = ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: String::new(),
                    container_id: Some(format!("sim://{}/{}", self.uid, c.name)),
                    restart_count: c.restart_count,
                    last_state: c.last_exit.map(|e| terminated(&e)),
                    ..ContainerStatus::default()
                };
                match c.state {
                    SimState::Creating { .. } => {
                        waiting += 1;
                        all_running = false;
                        not_ready_since = Some(self.created);
                        status.state.waiting = Some(ContainerStateWaiting {
                            reason: Some("ContainerCreating".into()),
                            message: None,
                        });
                        status.started = Some(false);
                    }
                    SimState::Running { since } => {
                        running += 1;
                        ready_since = ready_since.max(since);
                        status.state.running = Some(ContainerStateRunning {
                            started_at: Some(rfc3339(since)),
                        });
                        status.ready = true;
                        status.started = Some(true);
                    }
                    SimState::Exited { exit, restart_at } => {
                        all_running = false;
                        let since = not_ready_since.map_or(exit.finished, |t| t.min(exit.finished));
                        not_ready_since = Some(since);
                        status.started = Some(false);
                        if restart_at.is_some() {
                            stopped += 1;
                            will_restart += 1;
                            status.last_state = Some(terminated(&exit));
                            status.state.waiting = Some(ContainerStateWaiting {
                                reason: Some("CrashLoopBackOff".into()),
                                message: Some(format!(
                                    "back-off {}s restarting failed container={} pod={}",
                                    SIM_RESTART_DELAY.as_secs(),
                                    c.name,
                                    self.uid
                                )),
                            });
                        } else {
                            stopped += 1;
                            if exit.code == 0 {
                                succeeded += 1;
                            }
                            status.state = terminated(&exit);
                        }
                    }
                }
                status
            })
            .collect::<Vec<_>>();
        let phase = if waiting > 0 {
            "Pending"
        } else if running > 0 || will_restart > 0 {
            "Running"
        } else if stopped > 0 && succeeded == stopped {
            "Succeeded"
        } else {
            "Failed"
        };
        let ready_time = if all_running {
            rfc3339(ready_since)
        } else {
            rfc3339(not_ready_since.unwrap_or(self.created))
        };
        let ready_status = if all_running { "True" } else { "False" };
        let condition = |type_: &str, status: &str, time: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: None,
            message: None,
            last_heartbeat_time: None,
            last_transition_time: Some(time.to_owned()),
            last_probe_time: None,
        };
        PodStatus {
            phase: Some(phase.into()),
            conditions: vec![
                condition("PodScheduled", "True", &created),
                condition("Initialized", "True", &created),
                condition("ContainersReady", ready_status, &ready_time),
                condition("Ready", ready_status, &ready_time),
            ],
            start_time: Some(created),
            container_statuses: statuses,
            ..PodStatus::default()
        }
    }
}

fn terminated(exit: &SimExit) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: exit.code,
            signal: None,
            reason: Some(if exit.code == 0 { "Completed" } else { "Error" }.into()),
            message: None,
            started_at: Some(rfc3339(exit.started)),
            finished_at: Some(rfc3339(exit.finished)),
        }),
        ..ContainerState::default()
    }
}

/// The simulated runtime: a map of [`SimPod`]s behind a mutex (held only
/// for short, non-async sections).
#[derive(Debug, Default)]
pub struct SimRuntime {
    pods: Mutex<BTreeMap<String, SimPod>>,
}

impl SimRuntime {
    /// An empty runtime.
    pub fn new() -> SimRuntime {
        SimRuntime::default()
    }

    fn with_pods<T>(&self, f: impl FnOnce(&mut BTreeMap<String, SimPod>) -> T) -> T {
        // A panic while holding the lock leaves plain data behind: keep going.
        let mut guard = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

impl PodRuntime for SimRuntime {
    async fn sync_pod(&self, desired: &PodDesired) -> Result<PodStatus, RuntimeError> {
        let uid = desired.uid();
        if uid.is_empty() {
            return Err(RuntimeError::InvalidPod(
                "the pod has no metadata.uid".into(),
            ));
        }
        if desired.pod.spec.containers.is_empty() {
            return Err(RuntimeError::InvalidPod(
                "the pod has no containers: add at least one to spec.containers".into(),
            ));
        }
        let now = SystemTime::now();
        Ok(self.with_pods(|pods| {
            let pod = pods
                .entry(uid.to_owned())
                .or_insert_with(|| SimPod::new(desired, now));
            if pod.resource_version != desired.pod.metadata.resource_version {
                // A changed pod: containers whose image or behaviour changed
                // start over, the others keep running.
                let fresh = SimPod::new(desired, now);
                let old: BTreeMap<String, SimContainer> = pod
                    .containers
                    .drain(..)
                    .map(|c| (c.name.clone(), c))
                    .collect();
                pod.containers = fresh
                    .containers
                    .into_iter()
                    .map(|new| match old.get(&new.name) {
                        Some(o) if o.image == new.image && o.behaviour == new.behaviour => {
                            o.clone()
                        }
                        _ => new,
                    })
                    .collect();
                pod.resource_version = fresh.resource_version;
                pod.restart_policy = fresh.restart_policy;
            }
            pod.advance(now);
            pod.status()
        }))
    }

    async fn pod_status(&self, uid: &str) -> Option<PodStatus> {
        let now = SystemTime::now();
        self.with_pods(|pods| {
            pods.get_mut(uid).map(|pod| {
                pod.advance(now);
                pod.status()
            })
        })
    }

    async fn kill_pod(&self, uid: &str, _grace: Option<Duration>) -> Result<(), RuntimeError> {
        self.with_pods(|pods| pods.remove(uid));
        Ok(())
    }

    async fn forget_pod(&self, _uid: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn list_pods(&self) -> Vec<String> {
        self.with_pods(|pods| pods.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_common::api::Pod;

    fn container(command: &[&str]) -> Container {
        Container {
            name: "c".into(),
            image: "busybox".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..Container::default()
        }
    }

    #[test]
    fn the_rule() {
        let cases: [(&[&str], Option<i32>); 9] = [
            (&["true"], Some(0)),
            (&["/bin/false"], Some(1)),
            (&["exit", "3"], Some(3)),
            (&["sh", "-c", "exit 7"], Some(7)),
            (&["/bin/sh", "-c", "false"], Some(1)),
            (&["sleep", "3600"], None),
            (&["sh", "-c", "sleep 1; exit 2"], None),
            (&[], None),
            (&["exit", "x"], None),
        ];
        for (argv, want) in cases {
            assert_eq!(command_exit_code(&container(argv)), want, "{argv:?}");
        }
        let mut split = container(&["sh"]);
        split.args = vec!["-c".into(), "exit 4".into()];
        assert_eq!(command_exit_code(&split), Some(4));
        let mut annotations = BTreeMap::new();
        assert_eq!(
            behaviour(&container(&["nginx"]), &annotations),
            SimBehaviour::RunForever
        );
        annotations.insert(ANNOTATION_EXIT_CODE.into(), "9".into());
        annotations.insert(ANNOTATION_RUN_SECONDS.into(), "1.5".into());
        assert_eq!(
            behaviour(&container(&["nginx"]), &annotations),
            SimBehaviour::Exit {
                code: 9,
                after: Duration::from_millis(1500)
            }
        );
    }

    fn pod(command: &[&str], policy: Option<&str>) -> PodDesired {
        let mut desired = PodDesired {
            pod: Pod::default(),
            ..PodDesired::default()
        };
        desired.pod.metadata.uid = Some("u".into());
        desired.pod.spec.containers.push(container(command));
        desired.pod.spec.restart_policy = policy.map(str::to_owned);
        desired
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
    }

    fn phase(pod: &SimPod) -> String {
        pod.status().phase.unwrap_or_default()
    }

    #[test]
    fn pending_then_running_forever() {
        let mut p = SimPod::new(&pod(&["nginx"], None), at(0));
        p.advance(at(50));
        assert_eq!(phase(&p), "Pending");
        p.advance(at(100));
        assert_eq!(phase(&p), "Running");
        let status = p.status();
        assert!(status.container_statuses[0].ready);
        assert!(status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"));
        p.advance(at(10_000_000));
        assert_eq!(phase(&p), "Running");
        assert_eq!(p.status(), status, "a steady pod's status is stable");
    }

    #[test]
    fn exits_follow_the_restart_policy() {
        let mut never_ok = SimPod::new(&pod(&["true"], Some("Never")), at(0));
        never_ok.advance(at(5_000));
        assert_eq!(phase(&never_ok), "Succeeded");
        let mut never_bad = SimPod::new(&pod(&["exit", "3"], Some("Never")), at(0));
        never_bad.advance(at(5_000));
        assert_eq!(phase(&never_bad), "Failed");
        let t = never_bad.status().container_statuses[0]
            .state
            .terminated
            .clone()
            .expect("terminated");
        assert_eq!(t.exit_code, 3);
        let mut on_failure_ok = SimPod::new(&pod(&["true"], Some("OnFailure")), at(0));
        on_failure_ok.advance(at(5_000));
        assert_eq!(phase(&on_failure_ok), "Succeeded");

        // Always: exit at 100 ms, restart 1 s later, and so on.
        let mut always = SimPod::new(&pod(&["false"], None), at(0));
        always.advance(at(500));
        assert_eq!(phase(&always), "Running");
        let s = always.status();
        assert_eq!(
            s.container_statuses[0]
                .state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.as_deref()),
            Some("CrashLoopBackOff")
        );
        assert_eq!(s.container_statuses[0].restart_count, 0);
        always.advance(at(3_150));
        assert_eq!(always.containers[0].restart_count, 3);
        assert_eq!(
            always.status().container_statuses[0]
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
            Some(1)
        );
    }

    #[tokio::test]
    async fn runtime_trait() {
        let runtime = SimRuntime::new();
        let desired = pod(&["nginx"], None);
        let status = runtime.sync_pod(&desired).await.expect("sync");
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(runtime.list_pods().await, vec!["u".to_owned()]);
        assert!(runtime.pod_status("u").await.is_some());
        runtime.kill_pod("u", None).await.expect("kill");
        assert!(runtime.pod_status("u").await.is_none());
        let mut empty = pod(&["x"], None);
        empty.pod.spec.containers.clear();
        assert!(matches!(
            runtime.sync_pod(&empty).await,
            Err(RuntimeError::InvalidPod(_))
        ));
    }
}
