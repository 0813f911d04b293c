//! The agent's MQTT link against a real broker (Debian's `mosquitto`, run as
//! a child on a free loopback port) with real agent processes: desired
//! state in, reports and presence out. Every wait has a deadline and waits
//! for a message or a log line, never for a fixed time.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bramble_common::api::{Container, PodSpec};
use bramble_common::wire::{self, DesiredPod, Message, NodeDesired, NodeReport, Presence};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use support::mosquitto::{free_port, Mosquitto};

const AGENT: &str = env!("CARGO_BIN_EXE_bramble-agent");
const MASTER_USER: &str = "master";
const MASTER_TOKEN: &str = "master-secret";
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- broker

/// A broker on a free loopback port that knows `nodes` plus the master.
fn broker(dir: &Path, nodes: &[(&str, &str)]) -> Mosquitto {
    broker_on(dir, free_port(), nodes)
}

/// A broker on `port` that knows `nodes` plus the master.
fn broker_on(dir: &Path, port: u16, nodes: &[(&str, &str)]) -> Mosquitto {
    let mut users = vec![(MASTER_USER, MASTER_TOKEN)];
    users.extend_from_slice(nodes);
    Mosquitto::start_on(dir, port, &users)
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

// ---------------------------------------------------------------- agent

struct Agent {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Agent {
    fn start(args: &[String]) -> Agent {
        Agent::start_with_env(args, &[])
    }

    fn start_with_env(args: &[String], env: &[(&str, &str)]) -> Agent {
        let mut child = Command::new(AGENT)
            .args(args)
            .envs(env.iter().copied())
            .env("BRAMBLE_LOG", "info,rumqttc=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bramble-agent");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("agent| {line}");
                let (lock, cvar) = &*sink;
                lock.lock().expect("lines").push(line);
                cvar.notify_all();
            }
        });
        Agent { child, lines }
    }

    /// Wait until a log line contains `needle`; returns it.
    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cvar) = &*self.lines;
        let mut lines = lock.lock().expect("lines");
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no log line with {needle:?} within {DEADLINE:?}; got:\n{}",
                lines.join("\n")
            );
            lines = cvar.wait_timeout(lines, left).expect("wait").0;
        }
    }

    fn count_lines(&self, needle: &str) -> usize {
        let (lock, _) = &*self.lines;
        lock.lock()
            .expect("lines")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "agent did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, port: u16, node: &str, token: &str) -> PathBuf {
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(
        &path,
        format!(
            "master = \"mqtt://127.0.0.1:{port}\"\nnode = \"{node}\"\ntoken = \"{token}\"\n\
             state-dir = \"{}\"\nrun-dir = \"{}\"\nheartbeat-seconds = 1\n",
            dir.join(node).join("state").display(),
            dir.join(node).join("run").display(),
        ),
    )
    .expect("write agent config");
    path
}

fn sim_agent(config: &Path) -> Agent {
    Agent::start(&[
        "--config".into(),
        config.display().to_string(),
        "--runtime".into(),
        "sim".into(),
    ])
}

// ---------------------------------------------------------------- master side

/// A test client playing the master.
struct Master {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Master {
    async fn connect(port: u16, filters: &[&str]) -> Master {
        let mut options = MqttOptions::new(format!("test-master-{port}"), "127.0.0.1", port);
        options
            .set_credentials(MASTER_USER, MASTER_TOKEN)
            .set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, mut subscribed_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for filter in filters {
            client
                .subscribe(*filter, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        for _ in filters {
            tokio::time::timeout(DEADLINE, subscribed_rx.recv())
                .await
                .expect("suback in time");
        }
        Master { client, rx }
    }

    async fn publish_desired(&self, node: &str, desired: &NodeDesired) {
        let payload = wire::encode(&Message::Desired(desired.clone())).expect("encode");
        self.publish_raw(node, payload).await;
    }

    async fn publish_raw(&self, node: &str, payload: Vec<u8>) {
        self.client
            .publish(
                wire::desired_topic("bramble", node).expect("topic"),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await
            .expect("publish");
    }

    /// The next decoded message for which `pick` returns something.
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&str, Message) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (topic, payload) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("message within the deadline")
                .expect("client alive");
            let Ok(message) = wire::decode(&payload) else {
                continue;
            };
            if let Some(found) = pick(&topic, message) {
                return found;
            }
        }
    }

    async fn wait_presence(&mut self, node: &str, online: bool) -> Presence {
        let topic = wire::presence_topic("bramble", node).expect("topic");
        self.wait_for(|t, m| match m {
            Message::Presence(p)
                if t == topic && matches!(p, Presence::Online { .. }) == online =>
            {
                Some(p)
            }
            _ => None,
        })
        .await
    }
}

/// The pods' phases as the master sees them, folding partial reports in.
#[derive(Default)]
struct PodView {
    phases: BTreeMap<String, String>,
}

impl PodView {
    fn apply(&mut self, report: &NodeReport) {
        if report.full {
            self.phases.clear();
        }
        for pod in &report.pod_statuses {
            let status = pod.status().expect("valid status json");
            self.phases
                .insert(pod.name.clone(), status.phase.unwrap_or_default());
        }
    }

    fn phase(&self, name: &str) -> Option<&str> {
        self.phases.get(name).map(String::as_str)
    }
}

fn pod(name: &str, command: &[&str], restart_policy: Option<&str>) -> DesiredPod {
    let spec = PodSpec {
        containers: vec![Container {
            name: "main".into(),
            image: "busybox:1.36".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..Container::default()
        }],
        restart_policy: restart_policy.map(str::to_owned),
        ..PodSpec::default()
    };
    DesiredPod {
        uid: format!("uid-{name}"),
        namespace: "default".into(),
        name: name.into(),
        resource_version: 1,
        spec_json: serde_json::to_string(&spec).expect("spec json"),
        ..DesiredPod::default()
    }
}

fn desired(generation: u64, pods: Vec<DesiredPod>) -> NodeDesired {
    NodeDesired {
        generation,
        pods,
        ..NodeDesired::default()
    }
}

fn report_topic(node: &str) -> String {
    wire::report_topic("bramble", node).expect("topic")
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_desired_is_saved_before_reports_and_sim_pods_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), &[("pi-1", "tok-1")]);
    let mut master = Master::connect(broker.port, &["bramble/bramble/nodes/pi-1/#"]).await;
    master
        .publish_desired(
            "pi-1",
            &desired(
                3,
                vec![
                    pod("web", &["nginx"], None),
                    pod("job", &["true"], Some("Never")),
                ],
            ),
        )
        .await;

    let config = write_config(dir.path(), broker.port, "pi-1", "tok-1");
    let agent = sim_agent(&config);
    let online = master.wait_presence("pi-1", true).await;
    assert!(
        matches!(online, Presence::Online { agent_version, .. } if agent_version == env!("CARGO_PKG_VERSION"))
    );

    let state_dir = dir.path().join("pi-1").join("state");
    let topic = report_topic("pi-1");
    let mut view = PodView::default();
    let mut checked_file = false;
    master
        .wait_for(|t, m| match m {
            Message::Report(r) if t == topic => {
                if r.applied_generation == 3 && !checked_file {
                    // The state was on disk before the agent reported it applied.
                    let saved = bramble_agent::state::load_desired(&state_dir)
                        .expect("desired.bin readable")
                        .expect("desired.bin written before the report");
                    assert_eq!(saved.generation, 3);
                    checked_file = true;
                }
                view.apply(&r);
                (r.applied_generation == 3
                    && view.phase("web") == Some("Running")
                    && view.phase("job") == Some("Succeeded"))
                .then_some(())
            }
            _ => None,
        })
        .await;
    assert!(checked_file);
    agent.wait_for_line("bramble-agent ready node=pi-1");

    // A full report carries the node's facts and a Ready condition.
    let full = master
        .wait_for(|t, m| match m {
            Message::Report(r) if t == topic && r.full => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(full.node_status.facts.os, "linux");
    assert!(full
        .node_status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready"));
    let web = full
        .pod_statuses
        .iter()
        .find(|p| p.name == "web")
        .expect("web reported")
        .status()
        .expect("status");
    // hostIP is the node's InternalIP (the default route's interface).
    let internal_ip = full
        .node_status
        .addresses
        .iter()
        .find(|(kind, _)| kind == "InternalIP")
        .map(|(_, address)| address.clone());
    assert!(internal_ip.is_some(), "{:?}", full.node_status.addresses);
    assert_eq!(web.host_ip, internal_ip);
    let types: Vec<&str> = web.conditions.iter().map(|c| c.type_.as_str()).collect();
    for wanted in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(types.contains(&wanted), "{types:?}");
    }
    assert!(web.container_statuses[0].ready);

    // An older generation is ignored; a deletion stops the pod.
    master.publish_desired("pi-1", &desired(2, vec![])).await;
    agent.wait_for_line("ignoring a desired state older than the one applied");
    let mut deleting = pod("web", &["nginx"], None);
    deleting.deletion_grace_seconds = Some(0);
    deleting.resource_version = 2;
    master
        .publish_desired("pi-1", &desired(4, vec![deleting]))
        .await;
    master
        .wait_for(|t, m| match m {
            Message::Report(r) if t == topic => {
                view.apply(&r);
                (r.applied_generation == 4 && view.phase("web") == Some("Failed")).then_some(())
            }
            _ => None,
        })
        .await;
    let saved = bramble_agent::state::load_desired(&state_dir)
        .expect("readable")
        .expect("present");
    assert_eq!(saved.generation, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_bad_token_is_refused_and_logged_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), &[("pi-1", "right")]);
    let config = write_config(dir.path(), broker.port, "pi-1", "wrong");
    let agent = sim_agent(&config);
    let line = agent.wait_for_line("the master refused this node's token");
    assert!(
        line.contains("check --token or run `bramble node add NAME` again"),
        "{line}"
    );
    // The agent keeps running its (empty) node meanwhile.
    agent.wait_for_line("bramble-agent ready node=pi-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_garbage_is_logged_once_and_a_later_desired_state_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), &[("pi-1", "tok-1")]);
    let mut master = Master::connect(broker.port, &["bramble/bramble/nodes/pi-1/#"]).await;
    let config = write_config(dir.path(), broker.port, "pi-1", "tok-1");
    let agent = sim_agent(&config);
    master.wait_presence("pi-1", true).await;

    for _ in 0..3 {
        master
            .publish_raw("pi-1", b"{\"not\":\"bramble\"}".to_vec())
            .await;
    }
    let mut future_version = wire::encode(&Message::Desired(desired(9, vec![]))).expect("encode");
    future_version[4] = 9;
    master.publish_raw("pi-1", future_version.clone()).await;
    master.publish_raw("pi-1", future_version).await;
    master.publish_raw("pi-1", vec![b'B'; 200 * 1024]).await;
    master
        .publish_desired("pi-1", &desired(5, vec![pod("web", &["nginx"], None)]))
        .await;

    let topic = report_topic("pi-1");
    let mut view = PodView::default();
    master
        .wait_for(|t, m| match m {
            Message::Report(r) if t == topic => {
                view.apply(&r);
                (r.applied_generation == 5 && view.phase("web") == Some("Running")).then_some(())
            }
            _ => None,
        })
        .await;
    // Every bad payload arrived before the valid one: each reason once.
    assert_eq!(agent.count_lines("magic bytes"), 1);
    assert_eq!(agent.count_lines("protocol version 9"), 1);
    assert_eq!(agent.count_lines("byte limit"), 1);
    assert_eq!(agent.count_lines("dropped an undecodable desired state"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_offline_start_runs_pods_from_desired_bin_and_reports_coalesced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, "pi-1", "tok-1");
    let state_dir = dir.path().join("pi-1").join("state");
    let payload = wire::encode(&Message::Desired(desired(
        7,
        vec![
            pod("web", &["nginx"], None),
            pod("job", &["false"], Some("Never")),
        ],
    )))
    .expect("encode");
    bramble_agent::state::save_desired(&state_dir, &payload).expect("seed desired.bin");

    // No broker: the agent runs its pods from desired.bin.
    let agent = sim_agent(&config);
    agent.wait_for_line("loaded the local desired state");
    agent.wait_for_line("cannot reach the master's mqtt broker");
    agent.wait_for_line("pod default/web is Running");
    agent.wait_for_line("pod default/job is Failed");

    // The broker appears; the master listens before the node may log in.
    let broker = broker_on(dir.path(), port, &[]);
    let mut master = Master::connect(port, &["bramble/bramble/nodes/pi-1/#"]).await;
    broker.add_user("pi-1", "tok-1");
    master.wait_presence("pi-1", true).await;
    let topic = report_topic("pi-1");
    let first = master
        .wait_for(|t, m| match m {
            Message::Report(r) if t == topic => Some(r),
            _ => None,
        })
        .await;
    // One full report of the latest state: no backlog of offline changes.
    assert_eq!(first.seq, 1, "the first report sent");
    assert!(first.full);
    assert_eq!(first.applied_generation, 7);
    let mut view = PodView::default();
    view.apply(&first);
    assert_eq!(view.phase("web"), Some("Running"));
    assert_eq!(view.phase("job"), Some("Failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_stop_publishes_offline_and_a_killed_agent_gets_its_last_will() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), &[("pi-1", "tok-1")]);
    let mut master = Master::connect(broker.port, &["bramble/bramble/nodes/pi-1/presence"]).await;
    let config = write_config(dir.path(), broker.port, "pi-1", "tok-1");

    // Graceful: SIGTERM, Offline, exit 0.
    let mut agent = sim_agent(&config);
    master.wait_presence("pi-1", true).await;
    signal(agent.child.id(), "TERM");
    assert_eq!(master.wait_presence("pi-1", false).await, Presence::Offline);
    assert!(agent.wait_exit().success());

    // Killed: the broker publishes the last will.
    let mut agent = sim_agent(&config);
    master.wait_presence("pi-1", true).await;
    signal(agent.child.id(), "KILL");
    assert_eq!(master.wait_presence("pi-1", false).await, Presence::Offline);
    let _ = agent.wait_exit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_sim_nodes_connect_fifty_sessions() {
    const NODES: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials: Vec<(String, String)> = (0..NODES)
        .map(|i| (format!("sim-{i}"), format!("token-{i}")))
        .collect();
    let nodes: Vec<(&str, &str)> = credentials
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let broker = broker(dir.path(), &nodes);
    let mut master = Master::connect(broker.port, &["bramble/bramble/nodes/+/presence"]).await;
    let file = dir.path().join("credentials");
    let text: String = credentials
        .iter()
        .map(|(n, t)| format!("{n} {t}\n"))
        .collect();
    std::fs::write(&file, text).expect("write credentials");
    let agent = Agent::start(&[
        "--master".into(),
        format!("mqtt://127.0.0.1:{}", broker.port),
        "--state-dir".into(),
        dir.path().join("state").display().to_string(),
        "--run-dir".into(),
        dir.path().join("run").display().to_string(),
        "--sim-nodes".into(),
        NODES.to_string(),
        "--sim-credentials".into(),
        file.display().to_string(),
        "--config".into(),
        "/dev/null".into(),
    ]);
    let mut online = std::collections::BTreeSet::new();
    while online.len() < NODES {
        let node = master
            .wait_for(|t, m| match (wire::parse_topic(t), m) {
                (Some(topic), Message::Presence(Presence::Online { .. })) => {
                    topic.node().map(str::to_owned)
                }
                _ => None,
            })
            .await;
        online.insert(node);
    }
    assert_eq!(online.len(), NODES);
    agent.wait_for_line("bramble-agent ready node=sim-49");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_missing_memory_cgroup_reports_not_ready_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path(), &[("pi-zero", "tok")]);
    let mut master = Master::connect(broker.port, &["bramble/bramble/nodes/pi-zero/report"]).await;
    let config = write_config(dir.path(), broker.port, "pi-zero", "tok");
    // Test-only overrides: a Pi Zero on Raspberry Pi OS without the memory cgroup.
    let _agent = Agent::start_with_env(
        &[
            "--config".into(),
            config.display().to_string(),
            "--runtime".into(),
            "sim".into(),
        ],
        &[
            ("BRAMBLE_FAKE_ARCH", "armv6l"),
            ("BRAMBLE_FAKE_CGROUP_CONTROLLERS", "cpu cpuset pids"),
            ("BRAMBLE_FAKE_MEMORY_BYTES", "450000000"),
            ("BRAMBLE_FAKE_CPUS", "1"),
        ],
    );
    let report = master
        .wait_for(|_, m| match m {
            Message::Report(r) if r.full => Some(r),
            _ => None,
        })
        .await;
    let facts = &report.node_status.facts;
    assert_eq!(
        (facts.architecture.as_str(), facts.arch_variant.as_str()),
        ("arm", "v6")
    );
    assert_eq!((facts.cpus, facts.memory_bytes), (1, 450_000_000));
    let ready = report
        .node_status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "MemoryCgroupMissing");
    assert!(ready
        .message
        .contains("cgroup_enable=memory cgroup_memory=1"));
}
