//! End to end through the real `bramble-agent` binary (as root): Debian's
//! mosquitto as the broker, this test playing the master, a busybox image
//! imported with `bramble-agent image import`, the default (real) runtime
//! and pod network. A pod that prints and exits succeeds with its line in
//! its log; an httpd pod runs with an address from the node's pod CIDR and
//! answers on it; a `kill -9`ed agent comes back and re-adopts the running
//! container; removed pods leave no process, cgroup, mount or netns; and
//! `bramble-agent reset` leaves no bridge, veth or nftables table. Everything
//! is cleaned up even when an assertion fails.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bramble_common::api::{Container, PodSpec, PodStatus};
use bramble_common::wire::{
    self, DesiredPod, Message, NodeConfig, NodeDesired, NodeReport, NodeStatusReport,
};
use ipnet::Ipv4Net;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use support::mosquitto::Mosquitto;
use support::{busybox_image, ensure_busybox, TestNode};

const AGENT: &str = env!("CARGO_BIN_EXE_bramble-agent");
const MASTER_USER: &str = "master";
const MASTER_TOKEN: &str = "master-secret";
const NODE_TOKEN: &str = "node-secret";
const DEADLINE: Duration = Duration::from_secs(60);
const POD_CIDR: &str = "10.244.213.0/24";
const IMAGE: &str = "bramble.test/e2e:1";

// ---------------------------------------------------------------- agent

struct Agent {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Agent {
    fn start(config: &Path) -> Agent {
        let mut child = Command::new(AGENT)
            .arg("--config")
            .arg(config)
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

    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cvar) = &*self.lines;
        let mut lines = lock.lock().expect("lines");
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no log line with {needle:?}");
            lines = cvar.wait_timeout(lines, left).expect("wait").0;
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + DEADLINE;
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "agent did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `bramble-agent --config CONFIG ARGS...`; returns stdout.
fn agent_command(config: &Path, args: &[&str]) -> String {
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run bramble-agent");
    assert!(
        out.status.success(),
        "bramble-agent {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops the agent and resets the network when the test ends, however it
/// ends (declared after the [`TestNode`], so it runs before the node's own
/// cleanup of cgroups and mounts).
struct Cleanup {
    agent: Option<Agent>,
    config: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill9();
        }
        let _ = Command::new(AGENT)
            .arg("--config")
            .arg(&self.config)
            .arg("reset")
            .output();
    }
}

// ---------------------------------------------------------------- master side

struct Master {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    node: String,
    /// The pods' statuses as the master would store them, by name.
    pods: BTreeMap<String, PodStatus>,
    node_status: Option<NodeStatusReport>,
    applied_generation: u64,
}

impl Master {
    async fn connect(port: u16, node: &str) -> Master {
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
        client
            .subscribe(
                wire::report_topic("bramble", node).expect("topic"),
                QoS::AtLeastOnce,
            )
            .await
            .expect("subscribe");
        tokio::time::timeout(DEADLINE, subscribed_rx.recv())
            .await
            .expect("suback in time");
        Master {
            client,
            rx,
            node: node.to_owned(),
            pods: BTreeMap::new(),
            node_status: None,
            applied_generation: 0,
        }
    }

    /// Publishes like the master: retained, QoS 1.
    async fn publish_desired(&self, desired: &NodeDesired) {
        let payload = wire::encode(&Message::Desired(desired.clone())).expect("encode");
        self.client
            .publish(
                wire::desired_topic("bramble", &self.node).expect("topic"),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await
            .expect("publish");
    }

    fn apply(&mut self, report: &NodeReport) {
        if report.full {
            self.pods.clear();
        }
        for pod in &report.pod_statuses {
            self.pods
                .insert(pod.name.clone(), pod.status().expect("status json"));
        }
        self.node_status = Some(report.node_status.clone());
        self.applied_generation = report.applied_generation;
    }

    /// Folds reports in until `done` holds; returns what it returned.
    async fn wait_until<T>(&mut self, what: &str, mut done: impl FnMut(&Master) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(found) = done(self) {
                return found;
            }
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((_, payload))) = next else {
                panic!("{what}: not within {DEADLINE:?}; pods: {:#?}", self.pods);
            };
            if let Ok(Message::Report(report)) = wire::decode(&payload) {
                self.apply(&report);
            }
        }
    }
}

fn desired_pod(uid: &str, name: &str, command: &[&str], restart_policy: &str) -> DesiredPod {
    let spec = PodSpec {
        containers: vec![Container {
            name: "main".into(),
            image: IMAGE.into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..Container::default()
        }],
        restart_policy: Some(restart_policy.into()),
        termination_grace_period_seconds: Some(2),
        ..PodSpec::default()
    };
    DesiredPod {
        uid: uid.into(),
        namespace: "default".into(),
        name: name.into(),
        resource_version: 1,
        spec_json: serde_json::to_string(&spec).expect("spec json"),
        ..DesiredPod::default()
    }
}

fn container_pid(run_dir: &Path, node: &str, uid: &str) -> Option<i32> {
    let path = run_dir
        .join(node)
        .join("pods")
        .join(uid)
        .join("containers/main/status.json");
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    status.get("pid")?.as_i64().map(|p| p as i32)
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split(' ').nth(2) == Some("Z"))
}

fn http_get(ip: &str, port: u16) -> String {
    let mut stream = TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().expect("address"),
        Duration::from_secs(5),
    )
    .expect("connect to the pod");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .expect("send");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_true(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_runs_adopts_and_cleans_up_pods() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates containers and links: run it as root"
    );
    ensure_busybox();
    // The agent runs in this machine's namespace: a bridge of its own (the
    // `bridge` key), so that another agent's bramble0 is left alone.
    let bridge = format!("be2e{:08x}", std::process::id());
    assert!(
        !links().contains(&bridge),
        "a {bridge} bridge exists already: run `bramble-agent reset` for the node that made it"
    );
    let node = {
        let mut node = TestNode::new("e2e");
        // The test drives the agent binary, not this in-process runtime.
        if let Some(runtime) = node.runtime.take() {
            runtime.shutdown();
        }
        node
    };
    let root = node.dir.path().to_path_buf();
    let (state_dir, run_dir) = (root.join("state"), root.join("run"));
    let broker = Mosquitto::start(
        &root,
        &[(MASTER_USER, MASTER_TOKEN), (&node.name, NODE_TOKEN)],
    );
    let config = root.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "master = \"mqtt://127.0.0.1:{}\"\nnode = \"{}\"\ntoken = \"{NODE_TOKEN}\"\n\
             state-dir = \"{}\"\nrun-dir = \"{}\"\nheartbeat-seconds = 1\nbridge = \"{bridge}\"\n",
            broker.port,
            node.name,
            state_dir.display(),
            run_dir.display()
        ),
    )
    .expect("write config");
    let mut cleanup = Cleanup {
        agent: None,
        config: config.clone(),
    };

    // The image, through the agent's own subcommand.
    let layout = root.join("e2e-image");
    busybox_image(IMAGE, &["sh"])
        .write_oci_layout(&layout)
        .expect("write image");
    let out = agent_command(&config, &["image", "import", &layout.display().to_string()]);
    assert!(out.contains(IMAGE), "{out}");
    let out = agent_command(&config, &["image", "ls"]);
    assert!(out.contains(IMAGE), "{out}");

    let pid = std::process::id();
    let hello_uid = format!("{pid:08x}-0000-4000-8000-0000000000e1");
    let web_uid = format!("{pid:08x}-0000-4000-8000-0000000000e2");
    let mut master = Master::connect(broker.port, &node.name).await;
    let mut desired = NodeDesired {
        generation: 1,
        pods: vec![
            desired_pod(
                &hello_uid,
                "hello",
                &["sh", "-c", "echo hello from e2e"],
                "Never",
            ),
            desired_pod(
                &web_uid,
                "web",
                &["httpd", "-f", "-p", "8080", "-h", "/www"],
                "Always",
            ),
        ],
        node_config: NodeConfig {
            pod_cidr: POD_CIDR.into(),
            ..NodeConfig::default()
        },
        ..NodeDesired::default()
    };
    master.publish_desired(&desired).await;
    cleanup.agent = Some(Agent::start(&config));

    // hello succeeds with exit code 0 and its line in its log.
    let hello = master
        .wait_until("hello Succeeded", |m| {
            m.pods
                .get("hello")
                .filter(|s| s.phase.as_deref() == Some("Succeeded"))
                .cloned()
        })
        .await;
    let exit_code = hello.container_statuses[0]
        .state
        .terminated
        .as_ref()
        .map(|t| t.exit_code);
    assert_eq!(exit_code, Some(0), "{hello:#?}");
    let log = state_dir
        .join("logs")
        .join(format!("default_hello_{hello_uid}"))
        .join("main.log");
    let text = std::fs::read_to_string(&log).expect("hello's log file");
    assert!(text.contains("hello from e2e"), "{text}");

    // web runs with an address from the node's pod CIDR, and serves on it.
    let cidr: Ipv4Net = POD_CIDR.parse().expect("cidr");
    let web = master
        .wait_until("web Running with a pod IP", |m| {
            m.pods
                .get("web")
                .filter(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
                .cloned()
        })
        .await;
    let pod_ip = web.pod_ip.clone().expect("pod ip");
    let ip: Ipv4Addr = pod_ip.parse().expect("pod ip is IPv4");
    assert!(cidr.contains(&ip), "{pod_ip} not in {POD_CIDR}");
    assert_eq!(web.pod_ips.len(), 1);
    let internal_ip = master
        .node_status
        .as_ref()
        .and_then(|n| n.addresses.iter().find(|(t, _)| t == "InternalIP").cloned());
    assert!(
        internal_ip.is_some(),
        "no InternalIP: {:?}",
        master.node_status
    );
    let mut body = String::new();
    wait_true("httpd answers on the pod IP", || {
        body = http_get(&pod_ip, 8080);
        body.contains("hello from bramble httpd")
    });
    let web_pid = container_pid(&run_dir, &node.name, &web_uid).expect("web container pid");
    let restarts = web.container_statuses[0].restart_count;

    // kill -9 the agent: the container keeps running; a new agent adopts it.
    if let Some(mut agent) = cleanup.agent.take() {
        agent.kill9();
    }
    assert!(alive(web_pid), "the container died with the agent");
    let agent = Agent::start(&config);
    agent.wait_for_line("re-adopted running pods");
    master.pods.clear();
    let web = master
        .wait_until("web Running again after the restart", |m| {
            m.pods
                .get("web")
                .filter(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
                .cloned()
        })
        .await;
    cleanup.agent = Some(agent);
    assert_eq!(container_pid(&run_dir, &node.name, &web_uid), Some(web_pid));
    assert!(alive(web_pid));
    assert_eq!(web.container_statuses[0].restart_count, restarts);
    assert_eq!(web.pod_ip.as_deref(), Some(pod_ip.as_str()));

    // Remove the pods: nothing of them is left.
    desired.generation = 2;
    desired.pods.clear();
    master.publish_desired(&desired).await;
    master
        .wait_until("generation 2 applied", |m| {
            (m.applied_generation == 2 && m.pods.is_empty()).then_some(())
        })
        .await;
    wait_true("the web container is gone", || !alive(web_pid));
    let netns_dir = run_dir.join("netns");
    wait_true("no pod is left on the node", || {
        let cgroups_empty = node
            .cgroup_dirs()
            .iter()
            .all(|d| !d.join(&web_uid).exists() && !d.join(&hello_uid).exists());
        let netns_empty = std::fs::read_dir(&netns_dir).map_or(true, |rd| rd.count() == 0);
        let logs_gone = !log.exists();
        cgroups_empty && netns_empty && logs_gone && node.mounts().is_empty()
    });
    let veths: Vec<String> = links()
        .into_iter()
        .filter(|l| l.starts_with("bv"))
        .collect();
    let own = [
        bramble_agent::network::names::veth_host_name(&web_uid),
        bramble_agent::network::names::veth_host_name(&hello_uid),
    ];
    assert!(
        !veths.iter().any(|v| own.contains(v)),
        "veths left: {veths:?}"
    );

    // Stop the agent, reset the node: no bridge, veth or nftables table.
    if let Some(mut agent) = cleanup.agent.take() {
        agent.stop();
    }
    assert!(links().contains(&bridge), "the agent made {bridge}");
    let out = agent_command(&config, &["reset"]);
    assert!(out.contains("removed"), "{out}");
    assert!(!links().contains(&bridge), "{:?}", links());
    // The directories and cgroups the agent made are gone too.
    assert!(!run_dir.join("netns").exists(), "{out}");
    assert!(!run_dir.join(&node.name).exists(), "{out}");
    assert_eq!(node.cgroup_dirs(), Vec::<PathBuf>::new(), "{out}");
    let table = format!("bramble-{}", node.name);
    let listed = Command::new("nft")
        .args(["list", "table", "ip", &table])
        .output()
        .expect("run nft");
    assert!(!listed.status.success(), "nft table {table} still exists");
    drop(cleanup);
    drop(broker);
}
