//! A small cluster of real processes on one machine, for the network tests
//! and the network benchmark.
//!
//! ```text
//!  root namespace                       node namespaces (ip netns)
//!  bramble master  ── MQTT on 172.31.X.1:port
//!  bridge bntX 172.31.X.1/24 ─┬─ veth bntX-a ── eth0 172.31.X.10  bntX-a: bramble-agent, bramble0, pods
//!                             ├─ veth bntX-b ── eth0 172.31.X.11  bntX-b: bramble-agent, bramble0, pods
//!                             └─ veth bntX-o ── eth0 172.31.X.200 bntX-o: "outside", not a node
//! ```
//!
//! `X` is claimed by creating the bridge `bntX` (a name taken by a parallel
//! test makes this one try the next `X`), so every name the cluster uses
//! starts with `bntX`: bridge, veths, namespaces, nodes (and so the agents'
//! cgroups `bramble/bntX-a` and nftables tables `bramble-bntX-a`).
//!
//! Each node runs the real `bramble-agent` (default runtime) inside its
//! namespace, started with `nsenter --net` (not `ip netns exec`, which
//! remounts `/sys` and hides the cgroup mounts), with its own state and run
//! directories under the cluster's temp dir, against the real `bramble
//! master` in the root namespace. The image the pods run is built here from
//! Debian's `busybox-static` and imported with `bramble-agent image import`.
//!
//! [`NetCluster`]'s `Drop` removes everything, also when a test panics
//! half-way: it kills the agents and every process left in the cluster's
//! namespaces and in the pods' namespaces (shims, containers, servers),
//! unmounts what is mounted under the temp dir, removes the nodes' cgroups,
//! deletes the namespaces (and with them every link, route and nftables
//! table inside), the veths and the bridge.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bramble_agent::images::busybox;
use serde_json::{json, Value};

use super::{agent_bin, ok, wait_until, Agent, Master};

/// The image every pod of these tests runs: busybox and its applets, a web
/// root with `index.html`.
pub const IMAGE: &str = "bramble.test/net:1";
/// What `httpd` in [`IMAGE`] serves as `/index.html`.
pub const INDEX: &str = busybox::INDEX_HTML;
/// The static busybox from Debian's `busybox-static`.
pub const BUSYBOX: &str = busybox::BUSYBOX;
/// How long a pod or a node may take to get where a test expects it.
pub const SETTLE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ tools

/// Fails, saying what to install, unless the test runs as root with `ip`,
/// `nsenter`, `nft`, `umount` and a static busybox.
pub fn require_tools() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "these tests create network namespaces, bridges and containers: run them as root"
    );
    let mut missing = Vec::new();
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("umount", "mount"),
        ("nft", "nftables"),
    ] {
        if !found(tool) {
            missing.push(format!("{tool} (apt-get install -y {package})"));
        }
    }
    if !busybox::is_static_busybox() {
        missing.push(format!(
            "a static busybox at {BUSYBOX} (apt-get install -y busybox-static)"
        ));
    }
    assert!(
        missing.is_empty(),
        "these tests need {}; tests/run-all installs them",
        missing.join(", ")
    );
}

/// Whether `tool` is on the PATH.
pub fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `program args`; Ok(stdout) on success, else Err with what it said.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Runs `program args`, panicking with what it said when it fails.
#[track_caller]
pub fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `program args` inside the network namespace at `netns`.
pub fn in_netns(netns: &Path, program: &str, args: &[&str]) -> Result<String, String> {
    let net = format!("--net={}", netns.display());
    let mut all = vec![net.as_str(), "--", program];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// `GET url` with busybox wget from the network namespace at `netns`
/// (3 s timeout): the body, or what went wrong.
///
/// The timeout is busybox `timeout`: `wget -T` of Debian's busybox 1.35
/// crashes (SIGSEGV) on every request.
pub fn wget_from(netns: &Path, url: &str) -> Result<String, String> {
    in_netns(
        netns,
        BUSYBOX,
        &["timeout", "3", BUSYBOX, "wget", "-q", "-O", "-", url],
    )
}

// ------------------------------------------------------------------ image

/// Writes [`IMAGE`] as a `docker save` archive to `file`, made by the
/// project's image builder from Debian's busybox-static.
pub fn write_image_archive(file: &Path) {
    busybox::busybox_image(IMAGE, &["sh"])
        .write_docker_archive(file)
        .expect("write the test image archive");
}

// ------------------------------------------------------------------ pods

/// A pod running [`IMAGE`] with `command` on the node `node` (through the
/// scheduler, by its hostname label); `extra` is merged into the container.
pub fn pod(name: &str, node: &str, command: &[&str], restart_policy: &str, extra: Value) -> Value {
    let mut container = json!({"name": "main", "image": IMAGE, "command": command});
    if let (Some(target), Some(more)) = (container.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            target.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"test": "net"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    })
}

/// A pod serving [`IMAGE`]'s web root with busybox httpd on port 8080.
pub fn web_pod(name: &str, node: &str, extra: Value) -> Value {
    let mut more = json!({"ports": [{"containerPort": 8080}]});
    if let (Some(target), Some(extra)) = (more.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    pod(
        name,
        node,
        &["httpd", "-f", "-p", "8080", "-h", "/www"],
        "Always",
        more,
    )
}

/// A pod that fetches `url` with busybox wget until the body has a line
/// that is exactly `expect` (then it exits 0: `Succeeded`), at most 20
/// tries (2 s timeout each) 0.5 s apart (then it exits 1: `Failed`).
pub fn client_pod(name: &str, node: &str, url: &str, expect: &str) -> Value {
    let script = format!(
        "for i in $(seq 20); do \
           if timeout 2 wget -q -O - '{url}' | grep -qxF '{expect}'; then echo reached {url}; exit 0; fi; \
           sleep 0.5; \
         done; echo 'cannot reach {url}'; timeout 2 wget -O - '{url}'; exit 1"
    );
    pod(name, node, &["sh", "-c", &script], "Never", json!({}))
}

/// `bramble apply -f -` of one object.
#[track_caller]
pub fn apply(master: &Master, object: &Value) {
    ok(master.bramble_stdin(&["apply", "-f", "-"], &object.to_string()));
}

/// `bramble get ARGS -o json`.
pub fn get_json(master: &Master, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = master.bramble(&all);
    if !out.status.success() {
        return Err(super::stderr(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", super::stdout(&out)))
}

// ------------------------------------------------------------------ cluster

/// One node: a network namespace on the test bridge with its own agent.
pub struct NetNode {
    /// Node name, namespace name and root-side veth name: `bntX-a`.
    pub name: String,
    /// `/run/netns/{name}`.
    pub netns: PathBuf,
    /// The node's address on the test bridge (its InternalIP).
    pub address: Ipv4Addr,
    /// The agent's directory (`state/`, `run/`, `agent.toml`).
    pub dir: PathBuf,
    /// Its join token.
    pub token: String,
    /// Its agent, while it runs.
    pub agent: Option<Agent>,
}

impl NetNode {
    /// `{dir}/state`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `{dir}/run`.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The network namespace of the pod `uid` on this node.
    pub fn pod_netns(&self, uid: &str) -> PathBuf {
        self.run_dir().join("netns").join(uid)
    }

    /// The agent (panics when it is not running).
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    /// `bramble-agent ARGS --node N --state-dir S --run-dir R` inside the
    /// node's namespace (`reset`, `image import`...).
    pub fn agent_command(&self, args: &[&str]) -> Result<String, String> {
        let (state, run) = (self.state_dir(), self.run_dir());
        let mut all: Vec<&str> = args.to_vec();
        let state = state.display().to_string();
        let run = run.display().to_string();
        all.extend_from_slice(&[
            "--node",
            &self.name,
            "--state-dir",
            &state,
            "--run-dir",
            &run,
        ]);
        in_netns(&self.netns, &agent_bin().display().to_string(), &all)
    }

    /// Runs `program args` inside the node's namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        in_netns(&self.netns, program, args)
    }

    /// `GET url` from the node's namespace (a process on the node itself).
    pub fn wget(&self, url: &str) -> Result<String, String> {
        wget_from(&self.netns, url)
    }

    /// Ok when the node runs no pod any more: no pod namespace, no pod
    /// directory, no veth on `bramble0`; else what is left.
    ///
    /// `bramble delete pod` removes the pod from the API at once, before
    /// the node has stopped it: a test that goes on to stop the agent waits
    /// for this first.
    pub fn pods_gone(&self) -> Result<(), String> {
        let entries = |dir: PathBuf| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let netns = entries(self.run_dir().join("netns"));
        let pods = entries(self.run_dir().join(&self.name).join("pods"));
        let veths = self.run("ip", &["-o", "link", "show", "master", "bramble0"])?;
        if netns.is_empty() && pods.is_empty() && veths.trim().is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: pod netns {netns:?}, pod dirs {pods:?}, veths on bramble0:\n{veths}",
                self.name
            ))
        }
    }
}

/// The test bridge, the nodes, the outside host and the master. See the
/// module docs.
pub struct NetCluster {
    /// `X` of `172.31.X.0/24` and of every name.
    pub id: u8,
    /// Everything on disk lives here.
    pub dir: tempfile::TempDir,
    /// `bntX`.
    pub bridge: String,
    /// The bridge's address in the root namespace (the master's MQTT).
    pub gateway: Ipv4Addr,
    /// The master (root namespace).
    pub master: Option<Master>,
    /// The nodes, in the order given.
    pub nodes: Vec<NetNode>,
    /// The namespace of a host on the test bridge that is not a node.
    pub outside: Option<PathBuf>,
    /// Its address.
    pub outside_address: Ipv4Addr,
    /// Namespaces created (names), for cleanup.
    namespaces: Vec<String>,
    /// Root-side veths created, for cleanup.
    veths: Vec<String>,
    /// Servers started in the cluster's namespaces.
    servers: Vec<Child>,
}

impl NetCluster {
    /// [`NetCluster::new`], then [`NetCluster::start_agents`]: returns once
    /// every node is Ready.
    pub fn start(shorts: &[&str]) -> NetCluster {
        let mut cluster = Self::new(shorts);
        cluster.start_agents();
        cluster
    }

    /// The bridge, an outside host, a node namespace `bntX-{short}` for
    /// each of `shorts` (one letter each), the master, every node
    /// registered (`bramble node add`) with [`IMAGE`] imported into its
    /// agent's state dir; no agent runs yet.
    pub fn new(shorts: &[&str]) -> NetCluster {
        require_tools();
        let mut cluster = Self::claim();
        cluster.build(shorts);
        cluster
    }

    /// Starts every node's agent and waits until every node is Ready.
    pub fn start_agents(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_agent(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i);
        }
    }

    /// Claims a free `X` by creating the bridge `bntX` with `172.31.X.1/24`.
    fn claim() -> NetCluster {
        let addresses = must("ip", &["-o", "-4", "addr"]);
        let routes = must("ip", &["-4", "route", "show", "table", "all"]);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_micros() as usize)
            .unwrap_or(0)
            ^ std::process::id() as usize;
        let dir = tempfile::Builder::new()
            .prefix("bramble-netcluster-")
            .tempdir()
            .expect("tempdir");
        for attempt in 0..200 {
            let id = (20 + (seed + attempt) % 200) as u8;
            let prefix = format!("172.31.{id}.");
            if addresses.contains(&prefix) || routes.contains(&prefix) {
                continue;
            }
            let bridge = format!("bnt{id}");
            if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue; // taken by a parallel test (or left over)
            }
            let cluster = NetCluster {
                id,
                dir,
                bridge: bridge.clone(),
                gateway: Ipv4Addr::new(172, 31, id, 1),
                master: None,
                nodes: Vec::new(),
                outside: None,
                outside_address: Ipv4Addr::new(172, 31, id, 200),
                namespaces: Vec::new(),
                veths: Vec::new(),
                servers: Vec::new(),
            };
            // From here on the cluster's Drop cleans up whatever happens.
            must(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/24", cluster.gateway),
                    "dev",
                    &bridge,
                ],
            );
            must("ip", &["link", "set", &bridge, "up"]);
            return cluster;
        }
        panic!(
            "no free 172.31.X.0/24 for a test bridge: remove leftover bnt* bridges (`ip -br link`)"
        );
    }

    /// A namespace `bntX-{short}` joined to the bridge with `address`/24.
    fn host(&mut self, short: &str, address: Ipv4Addr) -> (String, PathBuf) {
        let name = format!("bnt{}-{short}", self.id);
        must("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        must(
            "ip",
            &[
                "link", "add", &name, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ],
        );
        self.veths.push(name.clone());
        must("ip", &["link", "set", &name, "master", &self.bridge, "up"]);
        let netns = PathBuf::from(format!("/run/netns/{name}"));
        for args in [
            vec!["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ip", "link", "set", "lo", "up"],
        ] {
            in_netns(&netns, args[0], &args[1..]).unwrap_or_else(|e| panic!("{e}"));
        }
        (name, netns)
    }

    fn build(&mut self, shorts: &[&str]) {
        let id = self.id;
        let (_, outside) = self.host("o", self.outside_address);
        self.outside = Some(outside);
        let mut hosts = Vec::new();
        for (i, short) in shorts.iter().enumerate() {
            let address = Ipv4Addr::new(172, 31, id, 10 + i as u8);
            let (name, netns) = self.host(short, address);
            hosts.push((name, netns, address));
        }
        let master = Master::start(
            &self.dir.path().join("master"),
            &["--mqtt-listen", &format!("{}:0", self.gateway)],
        );
        let archive = self.dir.path().join("image.tar");
        write_image_archive(&archive);
        self.master = Some(master);
        for (name, netns, address) in hosts {
            let token = self.node_add(&name);
            let dir = self.dir.path().join(&name);
            // The run dir exists before the agent, as systemd's
            // RuntimeDirectory makes /run/bramble.
            std::fs::create_dir_all(dir.join("run")).expect("run dir");
            let node = NetNode {
                name,
                netns,
                address,
                dir,
                token,
                agent: None,
            };
            let out = node
                .agent_command(&["image", "import", &archive.display().to_string()])
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(out.contains(IMAGE), "image import printed {out:?}");
            self.nodes.push(node);
        }
    }

    /// `bramble node add NAME`: the token it prints.
    fn node_add(&self, name: &str) -> String {
        let out = ok(self.master().bramble(&["node", "add", name]));
        let line = out.lines().next().unwrap_or_default();
        let (printed, token) = line.split_once(' ').unwrap_or_else(|| {
            panic!("`bramble node add {name}` should print `NAME TOKEN`, printed {out:?}")
        });
        assert_eq!(printed, name);
        token.trim().to_string()
    }

    /// Starts node `i`'s agent in its namespace.
    pub fn start_agent(&mut self, i: usize) {
        let mqtt = self.master().mqtt.clone();
        let node = &mut self.nodes[i];
        assert!(
            node.agent.is_none(),
            "agent of {} already running",
            node.name
        );
        let address = node.address.to_string();
        node.agent = Some(Agent::start_in_netns(
            &node.netns,
            &node.dir,
            &mqtt,
            &node.name,
            &node.token,
            &["--node-address", &address],
        ));
    }

    /// Waits until node `i` is Ready with its address as InternalIP.
    pub fn wait_ready(&self, i: usize) -> Value {
        let node = &self.nodes[i];
        wait_until(&format!("node {} Ready", node.name), SETTLE, || {
            let object = get_json(self.master(), &["node", &node.name])?;
            let ready = object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let address = object["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["type"] == "InternalIP" && a["address"] == node.address.to_string());
            if ready && address {
                Ok(object)
            } else {
                Err(format!(
                    "{object}\nagent log:\n{}",
                    self.agent_log_tail(i, 20)
                ))
            }
        })
    }

    /// The master.
    pub fn master(&self) -> &Master {
        self.master.as_ref().expect("master running")
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &NetNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The outside host's namespace.
    pub fn outside(&self) -> &Path {
        self.outside.as_deref().expect("outside host")
    }

    /// Starts `program args` in the namespace at `netns` as a server owned
    /// by the cluster (killed when it is dropped).
    pub fn serve(&mut self, netns: &Path, program: &str, args: &[&str]) {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {}: {e}", netns.display()));
        self.servers.push(child);
    }

    /// The last `n` lines of node `i`'s agent log.
    pub fn agent_log_tail(&self, i: usize, n: usize) -> String {
        let Some(agent) = &self.nodes[i].agent else {
            return "(agent not running)".into();
        };
        let log = agent.log.lock().map(|l| l.clone()).unwrap_or_default();
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until pod `name` satisfies `pred` (given its JSON); returns it.
    #[track_caller]
    pub fn wait_pod(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(&format!("pod {name} {what}"), SETTLE, || {
            let pod = get_json(self.master(), &["pod", name])?;
            if pred(&pod) {
                Ok(pod)
            } else {
                Err(format!("{pod:#}\n{}", self.pod_diagnostics(&pod)))
            }
        })
    }

    /// Waits until pod `name` is Running with an IP; returns the pod.
    #[track_caller]
    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_pod(name, "Running with a podIP", |p| {
            p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
        })
    }

    /// Waits until pod `name` ended; panics with its log when it Failed.
    #[track_caller]
    pub fn wait_succeeded(&self, name: &str) -> Value {
        let pod = self.wait_pod(name, "Succeeded or Failed", |p| {
            p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed"
        });
        assert_eq!(
            pod["status"]["phase"],
            "Succeeded",
            "pod {name} failed:\n{pod:#}\n{}",
            self.pod_diagnostics(&pod)
        );
        pod
    }

    /// The container log of `pod` as its agent wrote it, and its agent's
    /// last lines: what a failed wait shows.
    pub fn pod_diagnostics(&self, pod: &Value) -> String {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let Some(i) = self.nodes.iter().position(|n| n.name == node) else {
            return format!("(pod {name} is not on a node of this cluster)");
        };
        let log = self.nodes[i]
            .state_dir()
            .join("logs")
            .join(format!("default_{name}_{uid}"))
            .join("main.log");
        format!(
            "container log {}:\n{}\nagent {node}:\n{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_else(|e| format!("({e})")),
            self.agent_log_tail(i, 30)
        )
    }

    /// Every pid whose network namespace is one of `netns_files`.
    fn processes_in(netns_files: &[PathBuf]) -> Vec<u32> {
        let wanted: Vec<(u64, u64)> = netns_files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| wanted.contains(&(m.dev(), m.ino())))
            })
            .collect()
    }

    /// The namespaces of the cluster's hosts and of every pod of its nodes.
    fn namespace_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .namespaces
            .iter()
            .map(|n| PathBuf::from(format!("/run/netns/{n}")))
            .collect();
        for node in &self.nodes {
            if let Ok(entries) = std::fs::read_dir(node.run_dir().join("netns")) {
                files.extend(entries.flatten().map(|e| e.path()));
            }
        }
        files
    }

    /// Every pid in the cgroups of the cluster's nodes (`bramble/{node}/...`
    /// in every hierarchy): containers, also those whose namespace file is
    /// gone already.
    fn processes_in_cgroups(&self) -> Vec<u32> {
        fn walk(dir: &Path, out: &mut Vec<u32>) {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&e.path(), out);
                    }
                }
            }
        }
        let mut pids = Vec::new();
        for node in &self.nodes {
            for cgroup in Self::cgroups_of(&node.name) {
                walk(&cgroup, &mut pids);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process in the cluster's namespaces, the pods'
    /// namespaces and the nodes' cgroups, and waits (at most 10 s) until
    /// they are gone.
    pub fn kill_everything(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut agent) = node.agent.take() {
                agent.kill9();
            }
        }
        for mut server in self.servers.drain(..) {
            let _ = server.kill();
            let _ = server.wait();
        }
        let files = self.namespace_files();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut pids = Self::processes_in(&files);
            pids.extend(self.processes_in_cgroups());
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            let mut args = vec!["-KILL"];
            args.extend(pids.iter().map(String::as_str));
            let _ = run("kill", &args);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The cgroup directories of node `name` in every hierarchy.
    pub fn cgroups_of(name: &str) -> Vec<PathBuf> {
        cgroup_roots()
            .into_iter()
            .map(|root| root.join("bramble").join(name))
            .filter(|p| p.is_dir())
            .collect()
    }

    /// The mount points under the cluster's temp dir.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(self.dir.path())
    }
}

/// Mount points under `dir` (from `/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// The root of every cgroup hierarchy.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
}

/// rmdir `dir` and the directories under it, deepest first (cgroups).
fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!(
                    "--- agent {} (last lines):\n{}",
                    self.nodes[i].name,
                    self.agent_log_tail(i, 60)
                );
            }
        }
        if let Some(mut master) = self.master.take() {
            master.kill9();
        }
        self.kill_everything();
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = run("umount", &["--lazy", &m]);
        }
        for node in &self.nodes {
            for cgroup in Self::cgroups_of(&node.name) {
                rmdir_tree(&cgroup);
            }
        }
        // The `bramble` parent, where no other agent's cgroup is left.
        for root in cgroup_roots() {
            let _ = std::fs::remove_dir(root.join("bramble"));
        }
        for veth in &self.veths {
            let _ = run("ip", &["link", "del", veth]);
        }
        for name in &self.namespaces {
            let _ = run("ip", &["netns", "del", name]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
