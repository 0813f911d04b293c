//! Scale benchmark of a whole cluster (issue 3). Run with
//! `cargo bench -p bramble-master --bench cluster_scale` (as root for the
//! Mosquitto half: the broker runs with `user root`). Prints figures; asserts
//! none.
//!
//! For each broker (the master's embedded rumqttd, then Debian's
//! `mosquitto` on a free loopback port): start a master on loopback with a
//! temporary data dir, register N nodes (`POST /bramble/v1/nodes`), start
//! ONE `bramble-agent --runtime sim --sim-nodes N` process, wait until every
//! node is Ready, create P pods with 16 concurrent clients, and follow a
//! watch until every pod is scheduled and Running. Then stay idle for a
//! while with every node heart-beating (default interval, 10 s).
//!
//! Figures: time until all nodes are Ready; pods/s created, scheduled and
//! Running; master RSS (with the embedded broker it is also the broker's
//! RSS, one process: when both brokers run, the embedded broker's share is
//! estimated as the difference between the two runs' master RSS), agent
//! and mosquitto RSS; MQTT bytes per pod and per
//! idle minute, counted on the broker's side of every MQTT connection
//! (`ss -tin`, bytes_sent + bytes_received of the sockets whose local port
//! is the broker's: nodes' and the master's own session, TCP payload); disk
//! bytes written by the master process (`/proc/PID/io` write_bytes) per pod
//! and per idle minute.
//!
//! The master hands each node a block of its pod range 10.244.0.0/16: a /24
//! up to 256 nodes, else the longest mask that fits them all (`/26` for
//! 1,000 nodes: 61 pods each), passed as `--node-cidr-mask-size`.
//!
//! `BRAMBLE_BENCH_NODES` (default 1000), `BRAMBLE_BENCH_PODS` (default
//! 10000), `BRAMBLE_BENCH_IDLE_SECONDS` (default 60),
//! `BRAMBLE_BENCH_BROKERS` (`embedded,mosquitto`, the default, or one of
//! them). The agent binary is built with `cargo build --release -p
//! bramble-agent` next to the `bramble` binary under test (target/release).

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_master::cli::client::Client;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};

mod common;

use common::{agent_binary, env_usize, proc_field, start_master, Guard};

const MASTER_USER: &str = "bramble-master";
const CONCURRENCY: usize = 16;
const NAMESPACE: &str = "bench";

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn rss(pid: u32) -> String {
    format!(
        "{} (peak {})",
        mib(proc_field(pid, "status", "VmRSS:")),
        mib(proc_field(pid, "status", "VmHWM:"))
    )
}

fn disk_written(pid: u32) -> u64 {
    proc_field(pid, "io", "write_bytes:")
}

/// (sent, received) bytes of the established TCP sockets whose local port
/// is `port`: the broker's side of every MQTT connection.
fn mqtt_bytes(port: u16) -> (u64, u64) {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |word: &str, key: &str| word.strip_prefix(key).and_then(|v| v.parse::<u64>().ok());
    let (mut sent, mut received) = (0, 0);
    for word in text.split_whitespace() {
        sent += field(word, "bytes_sent:").unwrap_or(0);
        received += field(word, "bytes_received:").unwrap_or(0);
    }
    (sent, received)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// Register `count` nodes `sim-1..` and return their `(name, token)`.
async fn register_nodes(client: &Client, count: usize) -> Vec<(String, String)> {
    let mut nodes = Vec::new();
    let names: Vec<String> = (1..=count).map(|i| format!("sim-{i}")).collect();
    for batch in names.chunks(100) {
        let body = serde_json::to_vec(&json!({"names": batch})).unwrap_or_default();
        let answer = client
            .json(
                Method::POST,
                "/bramble/v1/nodes",
                Some("application/json"),
                None,
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("registering nodes {}..: {e}", batch[0]));
        for node in answer["nodes"].as_array().cloned().unwrap_or_default() {
            nodes.push((
                node["name"].as_str().unwrap_or_default().to_string(),
                node["token"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    nodes
}

fn start_agent(agent: &Path, dir: &Path, mqtt: &str, nodes: &[(String, String)]) -> Guard {
    let credentials = dir.join("credentials");
    let text: String = nodes.iter().map(|(n, t)| format!("{n} {t}\n")).collect();
    std::fs::write(&credentials, text).unwrap_or_else(|e| panic!("credentials: {e}"));
    let config = dir.join("agent.toml");
    std::fs::write(&config, "heartbeat-seconds = 10\n").unwrap_or_else(|e| panic!("config: {e}"));
    let log = std::fs::File::create(dir.join("agent.log")).unwrap_or_else(|e| panic!("log: {e}"));
    let child = Command::new(agent)
        .arg("--runtime")
        .arg("sim")
        .arg("--sim-nodes")
        .arg(nodes.len().to_string())
        .arg("--sim-credentials")
        .arg(&credentials)
        .arg("--master")
        .arg(format!("mqtt://{mqtt}"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("agents"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .env("BRAMBLE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn agent: {e}"));
    Guard { child }
}

fn ready_count(nodes: &Value) -> usize {
    nodes["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

/// Poll the node list every 500 ms until `count` are Ready or `limit`.
async fn wait_nodes_ready(client: &Client, count: usize, limit: Duration) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        let ready = client
            .get("/api/v1/nodes")
            .await
            .map(|v| ready_count(&v))
            .unwrap_or(0);
        if ready >= count || started.elapsed() > limit {
            return (ready, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pod(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}}]}
    }))
    .unwrap_or_default()
}

/// What the watch saw, with the time each threshold was crossed.
#[derive(Default)]
struct Progress {
    scheduled: HashSet<String>,
    running: HashSet<String>,
    first_scheduled: Option<Instant>,
    all_scheduled: Option<Instant>,
    all_running: Option<Instant>,
    /// Times the master ended the watch and the pods were listed again.
    watch_restarts: usize,
}

impl Progress {
    /// Takes in one pod as seen at `now`; true once every pod is Running.
    fn see(&mut self, object: &Value, count: usize, now: Instant) -> bool {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if object["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
            && self.scheduled.insert(name.clone())
        {
            self.first_scheduled.get_or_insert(now);
            if self.scheduled.len() >= count {
                self.all_scheduled = Some(now);
            }
        }
        if object["status"]["phase"] == "Running"
            && self.running.insert(name)
            && self.running.len() >= count
        {
            self.all_running = Some(now);
            return true;
        }
        false
    }
}

/// Follow the bench namespace's pods until every one is Running, as an
/// informer does: watch, and when the master ends the watch (a watcher
/// that falls further behind than the master's event log reaches is ended;
/// 10,000 pods make ~40,000 events) list again and watch from the list's
/// revision. Pods seen in a list count at the time of the list.
async fn follow(client: Arc<Client>, count: usize, progress: Arc<Mutex<Progress>>) {
    let mut since: Option<String> = None;
    loop {
        let path = match &since {
            Some(rv) => {
                format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=true&resourceVersion={rv}")
            }
            None => format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=true"),
        };
        let (status, mut body) = client
            .send(Method::GET, &path, None, None, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("watch: {e}"));
        let mut buffer: Vec<u8> = Vec::new();
        let mut expired = !status.is_success();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if event["type"] == "ERROR" {
                    expired = true;
                    continue;
                }
                let object = &event["object"];
                if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
                    since = Some(rv.to_string());
                }
                let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
                if p.see(object, count, Instant::now()) {
                    return;
                }
            }
        }
        // The watch ended: resume after the last event seen; list again
        // when that is too old (410 Gone, or an ERROR event).
        if expired || since.is_none() {
            let list = client
                .get(&format!("/api/v1/namespaces/{NAMESPACE}/pods"))
                .await
                .unwrap_or_else(|e| panic!("list pods: {e}"));
            let now = Instant::now();
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            p.watch_restarts += 1;
            for object in list["items"].as_array().into_iter().flatten() {
                if p.see(object, count, now) {
                    return;
                }
            }
            since = list["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string);
        }
    }
}

async fn create_pods(client: Arc<Client>, count: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
            let mut i = worker;
            while i < count {
                client
                    .json(
                        Method::POST,
                        &path,
                        Some("application/json"),
                        None,
                        pod(&format!("p{i}")),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("create pod p{i}: {e}"));
                i += CONCURRENCY;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    started.elapsed()
}

/// Debian's mosquitto on a free loopback port, password file, no persistence.
struct Mosquitto {
    guard: Guard,
    port: u16,
    passwords: PathBuf,
}

fn mosquitto_passwd(args: &[&str], file: &Path) {
    let out = Command::new("mosquitto_passwd")
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("mosquitto_passwd (apt-get install -y mosquitto): {e}"));
    assert!(
        out.status.success(),
        "mosquitto_passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Mosquitto {
    fn start(dir: &Path, master_password: &str) -> Mosquitto {
        let port = free_port();
        let passwords = dir.join("passwords");
        std::fs::write(&passwords, format!("{MASTER_USER}:{master_password}\n"))
            .unwrap_or_else(|e| panic!("passwords: {e}"));
        mosquitto_passwd(&["-U"], &passwords);
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 persistence false\nuser root\nmax_connections -1\nlog_dest none\n",
                passwords.display()
            ),
        )
        .unwrap_or_else(|e| panic!("mosquitto.conf: {e}"));
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start mosquitto (apt-get install -y mosquitto): {e}"));
        let guard = Guard { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            guard,
            port,
            passwords,
        }
    }

    /// Add the nodes' users (one hashing run) and reload the password file.
    fn add_users(&self, users: &[(String, String)]) {
        let plain = self.passwords.with_extension("new");
        let text: String = users.iter().map(|(u, t)| format!("{u}:{t}\n")).collect();
        std::fs::write(&plain, text).unwrap_or_else(|e| panic!("passwords: {e}"));
        mosquitto_passwd(&["-U"], &plain);
        let hashed = std::fs::read_to_string(&plain).unwrap_or_default();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.passwords)
            .unwrap_or_else(|e| panic!("passwords: {e}"));
        let _ = file.write_all(hashed.as_bytes());
        let reloaded = Command::new("kill")
            .args(["-HUP", &self.guard.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(reloaded, "kill -HUP mosquitto");
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Broker {
    Embedded,
    Mosquitto,
}

/// The node mask that fits `nodes` blocks in a /16, at least /24.
fn node_mask_size(nodes: usize) -> u32 {
    let bits = nodes.max(1).next_power_of_two().trailing_zeros();
    (16 + bits).clamp(24, 30)
}

/// The master's RSS in KiB with the nodes connected and with the pods.
type MasterRss = (u64, u64);

fn run(broker: Broker, agent: &Path, nodes: usize, pods: usize, idle: u64) -> Option<MasterRss> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let data = dir.path().join("data");
    let password = "bench-master-password";
    let mosquitto = (broker == Broker::Mosquitto).then(|| Mosquitto::start(dir.path(), password));
    let mut extra: Vec<String> = match &mosquitto {
        Some(m) => vec![
            "--mqtt-url".into(),
            format!("mqtt://127.0.0.1:{}", m.port),
            "--mqtt-username".into(),
            MASTER_USER.into(),
            "--mqtt-password".into(),
            password.into(),
        ],
        None => Vec::new(),
    };
    extra.extend([
        "--node-cidr-mask-size".into(),
        node_mask_size(nodes).to_string(),
    ]);
    let master = start_master(&data, &dir.path().join("master.log"), &extra);
    let pid = master.guard.pid();
    let port: u16 = master
        .mqtt
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no mqtt= in the ready line ({:?})", master.mqtt));
    let title = match broker {
        Broker::Embedded => "embedded broker (rumqttd inside the master process)".to_string(),
        Broker::Mosquitto => format!("mosquitto {}", mosquitto_version()),
    };
    println!(
        "\n== {title}: {nodes} sim nodes (a /{} pod CIDR each), {pods} pods, idle {idle} s; master API {}, MQTT {}",
        node_mask_size(nodes),
        master.listen, master.mqtt
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let completed = runtime.block_on(async {
        let client = master.client.clone();
        println!("master RSS at start: {}", rss(pid));
        let t = Instant::now();
        let credentials = register_nodes(&client, nodes).await;
        println!("register {nodes} nodes: {:.2} s", t.elapsed().as_secs_f64());
        if let Some(m) = &mosquitto {
            m.add_users(&credentials);
        }
        let agent = start_agent(agent, dir.path(), &master.mqtt, &credentials);
        let limit = Duration::from_secs(120 + nodes as u64 / 2);
        let (ready, took) = wait_nodes_ready(&client, nodes, limit).await;
        println!(
            "{ready} of {nodes} nodes Ready {:.2} s after the agent started (polled every 500 ms)",
            took.as_secs_f64()
        );
        if ready < nodes {
            println!("not every node became Ready within {} s: stopping this run (logs in {})", limit.as_secs(), dir.path().display());
            return None;
        }
        println!("master RSS with {nodes} nodes connected: {}", rss(pid));
        let rss_connected = proc_field(pid, "status", "VmRSS:");
        if let Some(m) = &mosquitto {
            println!("mosquitto RSS with {nodes} nodes connected: {}", rss(m.guard.pid()));
        }
        println!("agent RSS ({nodes} sim nodes in one process): {}", rss(agent.pid()));

        // Pods.
        let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})).unwrap_or_default();
        client
            .json(Method::POST, "/api/v1/namespaces", Some("application/json"), None, body)
            .await
            .unwrap_or_else(|e| panic!("namespace: {e}"));
        let progress = Arc::new(Mutex::new(Progress::default()));
        let watcher = tokio::spawn(follow(client.clone(), pods, progress.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let disk_before = disk_written(pid);
        let (sent_before, received_before) = mqtt_bytes(port);
        let started = Instant::now();
        let created = create_pods(client.clone(), pods).await;
        println!(
            "create {pods} pods, {CONCURRENCY} clients: {:.2} s, {:.0} pods/s",
            created.as_secs_f64(),
            pods as f64 / created.as_secs_f64()
        );
        let limit = Duration::from_secs(300 + pods as u64 / 10);
        let finished = tokio::time::timeout(limit.saturating_sub(started.elapsed()), watcher).await.is_ok();
        let end = Instant::now();
        let (sent_after, received_after) = mqtt_bytes(port);
        let disk_after = disk_written(pid);
        {
        let p = progress.lock().unwrap_or_else(|e| e.into_inner());
        let secs = |t: Option<Instant>| t.map(|t| t.duration_since(started).as_secs_f64());
        if !finished {
            println!(
                "NOT all Running within {} s: {} scheduled, {} Running",
                limit.as_secs(),
                p.scheduled.len(),
                p.running.len()
            );
        }
        if let Some(all) = secs(p.all_scheduled) {
            let first = secs(p.first_scheduled).unwrap_or(0.0);
            println!(
                "all {pods} pods scheduled {all:.2} s after the first create (first at {first:.2} s): {:.0} pods/s scheduled",
                pods as f64 / all
            );
        }
        if let Some(all) = secs(p.all_running) {
            println!("all {pods} pods Running {all:.2} s after the first create: {:.0} pods/s end to end", pods as f64 / all);
        }
        if p.watch_restarts > 0 {
            println!("(the master ended the bench's pod watch {} time(s); it listed the pods again and went on watching)", p.watch_restarts);
        }
        }
        let span = end.duration_since(started).as_secs_f64();
        let (sent, received) = (sent_after.saturating_sub(sent_before), received_after.saturating_sub(received_before));
        println!(
            "MQTT bytes during the pod phase ({span:.1} s, broker side, all connections): {:.0} per pod ({:.0} broker->clients + {:.0} clients->broker; heartbeats of that span included)",
            (sent + received) as f64 / pods as f64,
            sent as f64 / pods as f64,
            received as f64 / pods as f64
        );
        println!(
            "disk bytes written by the master during the pod phase: {:.0} per pod ({:.1} MiB in all)",
            disk_after.saturating_sub(disk_before) as f64 / pods as f64,
            disk_after.saturating_sub(disk_before) as f64 / 1048576.0
        );
        println!("master RSS with {nodes} nodes and {pods} pods: {}", rss(pid));
        let rss_pods = proc_field(pid, "status", "VmRSS:");
        if let Some(m) = &mosquitto {
            println!("mosquitto RSS with {nodes} nodes and {pods} pods: {}", rss(m.guard.pid()));
        }
        println!("agent RSS with {pods} pods: {}", rss(agent.pid()));

        // Idle.
        let disk_before = disk_written(pid);
        let (sent_before, received_before) = mqtt_bytes(port);
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let (sent_after, received_after) = mqtt_bytes(port);
        let disk_after = disk_written(pid);
        let per_minute = 60.0 / idle.max(1) as f64;
        println!(
            "idle {idle} s, {nodes} nodes heart-beating every 10 s: master wrote {:.0} bytes/min to disk; MQTT {:.0} bytes/min ({:.0} per node per minute)",
            disk_after.saturating_sub(disk_before) as f64 * per_minute,
            (sent_after + received_after).saturating_sub(sent_before + received_before) as f64 * per_minute,
            (sent_after + received_after).saturating_sub(sent_before + received_before) as f64 * per_minute / nodes as f64
        );
        println!("master RSS at the end: {}", rss(pid));
        if let Some(m) = &mosquitto {
            println!("mosquitto RSS at the end: {}", rss(m.guard.pid()));
        }
        let db = std::fs::metadata(data.join("store.redb")).map(|m| m.len()).unwrap_or(0);
        println!("store file: {:.1} MiB", db as f64 / 1048576.0);
        drop(agent);
        Some((rss_connected, rss_pods))
    });
    drop(master);
    drop(mosquitto);
    if completed.is_none() {
        println!("logs kept in {}", dir.keep().display());
    }
    completed
}

fn mosquitto_version() -> String {
    Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

fn main() {
    let nodes = env_usize("BRAMBLE_BENCH_NODES", 1000);
    let pods = env_usize("BRAMBLE_BENCH_PODS", 10_000);
    let idle = env_usize("BRAMBLE_BENCH_IDLE_SECONDS", 60) as u64;
    let brokers =
        std::env::var("BRAMBLE_BENCH_BROKERS").unwrap_or_else(|_| "embedded,mosquitto".into());
    let agent = agent_binary();
    println!(
        "bramble cluster scale benchmark: {nodes} sim nodes (one bramble-agent process), {pods} pods, idle {idle} s, {} CPUs",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let (mut embedded, mut external) = (None, None);
    for name in brokers.split(',') {
        match name.trim() {
            "embedded" => embedded = run(Broker::Embedded, &agent, nodes, pods, idle),
            "mosquitto" => external = run(Broker::Mosquitto, &agent, nodes, pods, idle),
            other => println!("unknown broker {other:?} in BRAMBLE_BENCH_BROKERS"),
        }
    }
    // The embedded broker lives in the master's process: its share is what
    // the master holds beyond the same master talking to mosquitto.
    if let (Some((e_nodes, e_pods)), Some((m_nodes, m_pods))) = (embedded, external) {
        println!(
            "\nembedded broker's share of the master's RSS (embedded run minus mosquitto run): {} with {nodes} nodes connected, {} with {pods} pods",
            mib(e_nodes.saturating_sub(m_nodes)),
            mib(e_pods.saturating_sub(m_pods))
        );
    }
}
