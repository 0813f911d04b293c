//! Pod start benchmark of the real runtime (issue 4), side by side with
//! crun, runc and podman in one run. Run as root with
//! `cargo bench -p bramble-master --bench pod_start`. Prints figures;
//! asserts none.
//!
//! 1. The runtime alone: create + start + wait + delete of a container
//!    running `true`, N times in a row: bramble's `LinuxRuntime` (the
//!    agent's runtime, in this process; a whole pod: netns, overlayfs,
//!    cgroups, shim), `crun run` + `crun delete`, `runc run` + `runc
//!    delete`, on the same busybox rootfs.
//! 2. Pod start latency: a busybox pod (`sleep 3600`) created through the
//!    API until the master stores it `Running` (seen on a watch): N pods one
//!    after the other, then 20 at once, placed by the scheduler as a user's
//!    pods are (a `nodeSelector` picks the node), and, under its own name,
//!    pre-bound with `nodeName` (no scheduler); a real agent on this machine, with
//!    its pod network (bridge, veth, address) and with `--no-network`
//!    (netns with `lo` only). The same workload with `podman run -d --rm
//!    --rootfs` (`--network none` and podman's default bridge) and `crun
//!    run -d` (a new netns with `lo`), timed until the command returns with
//!    the container started.
//! 3. Footprint: agent RSS idle and with 20 running pods, RSS per shim,
//!    agent CPU while idle with 20 pods.
//!
//! crun 1.8 refuses this cgroup v1 hybrid host ("cgroups in hybrid mode not
//! supported") because hugetlb sits on the cgroup2 mount; the benchmark
//! mounts a v1 hugetlb hierarchy for its duration (MACHINE-NOTES). podman
//! runs with `--cgroup-manager=cgroupfs --events-backend=file`.
//!
//! podman's default bridge network leaves netavark's `ip nat` and `ip filter`
//! nftables tables behind (podman's, not bramble's); `nft delete table ip
//! nat` and `... ip filter` remove them when nothing else uses them.
//!
//! `BRAMBLE_BENCH_PODS` (default 100): N. Missing tools (crun, runc,
//! podman) are installed with apt-get, saying so.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_agent::images::busybox;
use bramble_agent::runtime::{LinuxRuntime, PodDesired, Runtime, RuntimeConfig};
use bramble_common::api::{Container, Pod, PodSpec};
use bramble_common::ObjectMeta;
use bramble_master::cli::client::Client;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::Notify;

mod common;

use common::{agent_binary, env_usize, proc_field, start_master, Guard};

const IMAGE: &str = "bramble.test/busybox:1";
const AT_ONCE: usize = 20;

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

fn ensure_tool(tool: &str, package: &str) {
    if run(tool, &["--version"]).is_ok() {
        return;
    }
    eprintln!("{tool} is missing: apt-get install -y {package}");
    let _ = Command::new("apt-get")
        .args(["install", "-y", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    assert!(
        run(tool, &["--version"]).is_ok(),
        "{tool} is needed: apt-get install -y {package}"
    );
}

fn version(tool: &str) -> String {
    run(tool, &["--version"])
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Percentile `p` (0-100) of `samples`, in ms.
fn percentile(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One row of figures.
struct Row {
    name: String,
    p50: f64,
    p99: f64,
}

fn row(name: &str, samples: &[Duration]) -> Row {
    Row {
        name: name.to_string(),
        p50: percentile(samples, 50.0),
        p99: percentile(samples, 99.0),
    }
}

fn print_table(title: &str, rows: &[Row], reference: usize) {
    println!("\n{title}");
    println!(
        "  {:<44} {:>10} {:>10} {:>12} {:>12}",
        "", "p50 ms", "p99 ms", "p50 ratio", "p99 ratio"
    );
    let base = &rows[reference];
    for r in rows {
        println!(
            "  {:<44} {:>10.1} {:>10.1} {:>11.2}x {:>11.2}x",
            r.name,
            r.p50,
            r.p99,
            r.p50 / base.p50,
            r.p99 / base.p99
        );
    }
    println!("  (ratio: this row / {}; below 1 is faster)", base.name);
}

/// Proportional set size of `pid` (shared pages divided among their users).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Pss:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command: state is field 0, utime 11, stime 12.
    field(11) + field(12)
}

/// Pids of the processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            out.push(pid);
        }
    }
    out
}

// ------------------------------------------------------------------ setup

/// The busybox image as a docker archive, and a copy of its rootfs for
/// crun, runc and podman.
fn prepare_image(dir: &Path) -> (PathBuf, PathBuf) {
    if let Err(e) = busybox::ensure_busybox() {
        panic!("{e}");
    }
    let archive = dir.join("image.tar");
    busybox::busybox_image(IMAGE, &["sh"])
        .write_docker_archive(&archive)
        .unwrap_or_else(|e| panic!("image: {e}"));
    // The same files, unpacked by tar, as the other runtimes' rootfs.
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap_or_else(|e| panic!("rootfs: {e}"));
    let unpack = dir.join("unpack");
    std::fs::create_dir_all(&unpack).unwrap_or_else(|e| panic!("unpack: {e}"));
    must(
        "tar",
        &[
            "-xf",
            &archive.display().to_string(),
            "-C",
            &unpack.display().to_string(),
        ],
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(unpack.join("manifest.json")).unwrap_or_else(|e| panic!("manifest: {e}")),
    )
    .unwrap_or_else(|e| panic!("manifest: {e}"));
    for layer in manifest[0]["Layers"].as_array().into_iter().flatten() {
        let layer = unpack.join(layer.as_str().unwrap_or_default());
        must(
            "tar",
            &[
                "-xf",
                &layer.display().to_string(),
                "-C",
                &rootfs.display().to_string(),
            ],
        );
    }
    (archive, rootfs)
}

/// An OCI bundle for crun/runc sharing `rootfs` (read-only), running `args`.
fn bundle(dir: &Path, rootfs: &Path, args: &[&str]) -> PathBuf {
    let bundle = dir.to_path_buf();
    std::fs::create_dir_all(&bundle).unwrap_or_else(|e| panic!("bundle: {e}"));
    must("runc", &["spec", "--bundle", &bundle.display().to_string()]);
    let path = bundle.join("config.json");
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("spec: {e}")))
            .unwrap_or_else(|e| panic!("spec: {e}"));
    spec["root"] = json!({"path": rootfs.display().to_string(), "readonly": true});
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(args);
    spec["process"]["env"] = json!(["PATH=/bin"]);
    std::fs::write(&path, spec.to_string()).unwrap_or_else(|e| panic!("spec: {e}"));
    bundle
}

/// Mounts a v1 hugetlb hierarchy while it lives, so crun accepts this host.
struct HugetlbMount(Option<PathBuf>);

impl HugetlbMount {
    fn new(dir: &Path) -> HugetlbMount {
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(" cgroup ") && l.contains("hugetlb"));
        if mounted {
            return HugetlbMount(None);
        }
        let target = dir.join("hugetlb");
        let _ = std::fs::create_dir_all(&target);
        match run(
            "mount",
            &[
                "-t",
                "cgroup",
                "-o",
                "hugetlb",
                "cgroup",
                &target.display().to_string(),
            ],
        ) {
            Ok(_) => HugetlbMount(Some(target)),
            Err(e) => {
                eprintln!("cannot mount a hugetlb hierarchy for crun: {e}");
                HugetlbMount(None)
            }
        }
    }
}

impl Drop for HugetlbMount {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            let _ = run("umount", &[&target.display().to_string()]);
        }
    }
}

// ------------------------------------------------------ 1. runtime alone

fn pod_desired(uid: &str, command: &[&str], restart: &str) -> PodDesired {
    PodDesired {
        pod: Pod {
            api_version: "v1".into(),
            kind: "Pod".into(),
            metadata: ObjectMeta {
                name: Some(format!("p-{uid}")),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            spec: PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: IMAGE.into(),
                    command: command.iter().map(|s| s.to_string()).collect(),
                    ..Container::default()
                }],
                restart_policy: Some(restart.into()),
                ..PodSpec::default()
            },
            status: None,
        },
        config_maps: Default::default(),
        secrets: Default::default(),
    }
}

/// The phases of one bramble runtime cycle.
#[derive(Default)]
struct Phases {
    total: Vec<Duration>,
    running: Vec<Duration>,
    ended: Vec<Duration>,
    deleted: Vec<Duration>,
}

fn bramble_runtime_cycles(dir: &Path, agent: &Path, archive: &Path, n: usize) -> Phases {
    let mut config = RuntimeConfig::new("bench-rt", dir.join("state"), dir.join("run"));
    config.shim_binary = agent.to_path_buf();
    let runtime = LinuxRuntime::new(config).unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime
        .images()
        .import(archive)
        .unwrap_or_else(|e| panic!("import: {e}"));
    let mut phases = Phases::default();
    // One warm-up cycle, not counted (first use of the image's layers).
    for i in 0..=n {
        let uid = format!("00000000-0000-4000-8000-{i:012}");
        let desired = pod_desired(&uid, &["true"], "Never");
        let started = Instant::now();
        runtime
            .sync_pod(&desired)
            .unwrap_or_else(|e| panic!("sync: {e}"));
        let mut running = None;
        loop {
            let status = runtime.pod_status(&uid);
            let states = status.map(|s| s.container_statuses).unwrap_or_default();
            if running.is_none()
                && states
                    .iter()
                    .any(|c| c.state.running.is_some() || c.state.terminated.is_some())
            {
                running = Some(started.elapsed());
            }
            if states.iter().any(|c| c.state.terminated.is_some()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "pod {uid} did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let ended = started.elapsed();
        runtime
            .kill_pod(&uid, Some(Duration::ZERO))
            .unwrap_or_else(|e| panic!("kill: {e}"));
        let total = started.elapsed();
        let _ = runtime.remove_pod_logs(&uid);
        if i == 0 {
            continue;
        }
        phases.total.push(total);
        phases.running.push(running.unwrap_or(ended));
        phases.ended.push(ended - running.unwrap_or(ended));
        phases.deleted.push(total - ended);
    }
    runtime.shutdown();
    drop(runtime);
    // The node's now empty cgroups and run dirs.
    bramble_agent::runtime::remove_empty_leftovers(&dir.join("run"), "bench-rt");
    phases
}

fn oci_cycles(tool: &str, bundle: &Path, n: usize) -> Vec<Duration> {
    let mut samples = Vec::new();
    let bundle = bundle.display().to_string();
    // One warm-up cycle, not counted, as for bramble.
    for i in 0..=n {
        let id = format!("bench-{tool}-{i}");
        let started = Instant::now();
        must(tool, &["run", "--bundle", &bundle, &id]);
        must(tool, &["delete", "--force", &id]);
        if i > 0 {
            samples.push(started.elapsed());
        }
    }
    samples
}

// ------------------------------------------------- 2. through the API

/// First time each pod was seen Running on the watch.
#[derive(Default)]
struct Seen {
    running: HashMap<String, Instant>,
}

async fn watch_running(client: Arc<Client>, seen: Arc<Mutex<Seen>>, notify: Arc<Notify>) {
    let (_, mut body) = client
        .send(
            Method::GET,
            "/api/v1/namespaces/default/pods?watch=true",
            None,
            None,
            Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"));
    let mut buffer = Vec::new();
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
            let object = &event["object"];
            if object["status"]["phase"] == "Running" {
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let now = Instant::now();
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .running
                    .entry(name)
                    .or_insert(now);
                notify.notify_waiters();
            }
        }
    }
}

struct Api {
    client: Arc<Client>,
    seen: Arc<Mutex<Seen>>,
    notify: Arc<Notify>,
}

/// How a benchmark pod gets to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// As a user creates it: the scheduler binds it (a `nodeSelector` on
    /// the node's `kubernetes.io/hostname` label picks the node).
    Scheduled,
    /// `spec.nodeName` set by the creator: the scheduler is skipped.
    PreBound,
}

impl Api {
    async fn create(&self, name: &str, node: &str) {
        self.create_placed(name, node, Placement::PreBound).await;
    }

    async fn create_placed(&self, name: &str, node: &str, placement: Placement) {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"]}],
            },
        });
        match placement {
            Placement::Scheduled => {
                pod["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
            }
            Placement::PreBound => pod["spec"]["nodeName"] = json!(node),
        }
        self.client
            .json(
                Method::POST,
                "/api/v1/namespaces/default/pods",
                Some("application/json"),
                None,
                pod.to_string().into_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    async fn running_at(&self, name: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let notified = self.notify.notified();
            if let Some(at) = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .running
                .get(name)
            {
                return *at;
            }
            assert!(Instant::now() < deadline, "pod {name} never Running");
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    async fn delete_all(&self, names: &[String]) {
        for name in names {
            let _ = self
                .client
                .json(
                    Method::DELETE,
                    &format!("/api/v1/namespaces/default/pods/{name}"),
                    None,
                    None,
                    Vec::new(),
                )
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let list = self
                .client
                .get("/api/v1/namespaces/default/pods")
                .await
                .unwrap_or_else(|e| panic!("list: {e}"));
            if list["items"]
                .as_array()
                .is_none_or(|items| items.is_empty())
            {
                return;
            }
            assert!(Instant::now() < deadline, "pods not deleted in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// N pods one after the other, then AT_ONCE together, on `node`.
    async fn start_latencies(
        &self,
        node: &str,
        tag: &str,
        n: usize,
        placement: Placement,
    ) -> (Vec<Duration>, Vec<Duration>) {
        let mut sequential = Vec::new();
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("{tag}-seq-{i}");
            let started = Instant::now();
            self.create_placed(&name, node, placement).await;
            sequential.push(self.running_at(&name).await - started);
            names.push(name);
        }
        self.delete_all(&names).await;
        let names: Vec<String> = (0..AT_ONCE).map(|i| format!("{tag}-burst-{i}")).collect();
        let started = Instant::now();
        futures_util::future::join_all(
            names
                .iter()
                .map(|name| self.create_placed(name, node, placement)),
        )
        .await;
        let mut burst = Vec::new();
        for name in &names {
            burst.push(self.running_at(name).await - started);
        }
        self.delete_all(&names).await;
        (sequential, burst)
    }
}

fn add_node(data: &Path, name: &str) -> String {
    let out = must(
        env!("CARGO_BIN_EXE_bramble"),
        &[
            "--kubeconfig",
            &data.join("admin.kubeconfig").display().to_string(),
            "node",
            "add",
            name,
        ],
    );
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// A real agent for `node`; `bramble-agent reset` and a stop on drop.
struct AgentProcess {
    guard: Option<Guard>,
    agent: PathBuf,
    args: Vec<String>,
    pid: u32,
}

impl AgentProcess {
    fn start(
        agent: &Path,
        dir: &Path,
        mqtt: &str,
        node: &str,
        token: &str,
        archive: &Path,
        extra: &[&str],
    ) -> AgentProcess {
        let state = dir.join(node).join("state");
        let run_dir = dir.join(node).join("run");
        must(
            &agent.display().to_string(),
            &[
                "image",
                "import",
                &archive.display().to_string(),
                "--state-dir",
                &state.display().to_string(),
            ],
        );
        let mut args: Vec<String> = vec![
            "--master".into(),
            format!("mqtt://{mqtt}"),
            "--node".into(),
            node.into(),
            "--token".into(),
            token.into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--run-dir".into(),
            run_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(agent)
            .args(&args)
            .env("BRAMBLE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("agent: {e}"));
        let pid = child.id();
        AgentProcess {
            guard: Some(Guard { child }),
            agent: agent.to_path_buf(),
            args,
            pid,
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            let _ = Command::new("kill")
                .arg(guard.child.id().to_string())
                .status();
            std::thread::sleep(Duration::from_secs(1));
            drop(guard);
        }
        let mut reset = Command::new(&self.agent);
        reset.args(&self.args).arg("reset");
        let _ = reset.output();
    }
}

async fn wait_node_ready(client: &Client, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(object) = client.get(&format!("/api/v1/nodes/{node}")).await {
            let ready = object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                return;
            }
        }
        assert!(Instant::now() < deadline, "node {node} not Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tool run -d` for each id (podman or crun), timed until the command
/// returns with the container started; sequential, then AT_ONCE together.
fn cli_start_latencies(
    start: &(dyn Fn(&str) -> Command + Sync),
    remove: &dyn Fn(&[String]),
    n: usize,
    tag: &str,
) -> (Vec<Duration>, Vec<Duration>) {
    // Detached containers keep inherited pipes open: no pipes at all.
    let timed = |id: &str| {
        let started = Instant::now();
        let status = start(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert!(
            status.success(),
            "{tag} {id} failed ({status}); run it by hand to see why"
        );
        started.elapsed()
    };
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{tag}-seq-{i}")).collect();
    let sequential: Vec<Duration> = ids.iter().map(|id| timed(id)).collect();
    remove(&ids);
    let ids: Vec<String> = (0..AT_ONCE)
        .map(|i| format!("bench-{tag}-burst-{i}"))
        .collect();
    let burst: Vec<Duration> = std::thread::scope(|scope| {
        let started = Instant::now();
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                scope.spawn(move || {
                    let _ = timed(id);
                    started.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("{tag} thread")))
            .collect()
    });
    remove(&ids);
    (sequential, burst)
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the pod start benchmark runs containers: run it as root"
    );
    ensure_tool("crun", "crun");
    ensure_tool("runc", "runc");
    ensure_tool("podman", "podman");
    let n = env_usize("BRAMBLE_BENCH_PODS", 100);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tmp: {e}"));
    let dir = tmp.path();
    let agent = agent_binary();
    let (archive, rootfs) = prepare_image(dir);
    let _hugetlb = HugetlbMount::new(dir);
    println!("pod start benchmark, {n} pods in a row and {AT_ONCE} at once, busybox");
    println!(
        "  {} | {} | {}",
        version("crun"),
        version("runc"),
        version("podman")
    );

    // 1. The runtime alone.
    let true_bundle = bundle(&dir.join("bundle-true"), &rootfs, &["true"]);
    let bramble_rt = bramble_runtime_cycles(&dir.join("rt"), &agent, &archive, n);
    let crun_rt = oci_cycles("crun", &true_bundle, n);
    let runc_rt = oci_cycles("runc", &true_bundle, n);
    print_table(
        &format!("1. container create + start + wait + delete (`true`), {n} in a row"),
        &[
            row("bramble LinuxRuntime (whole pod)", &bramble_rt.total),
            row("crun run + delete", &crun_rt),
            row("runc run + delete", &runc_rt),
        ],
        1,
    );
    println!(
        "  bramble phases, p50: started (sandbox + shim + container) {:.1} ms, exit seen {:.1} ms later, deleted in {:.1} ms",
        percentile(&bramble_rt.running, 50.0),
        percentile(&bramble_rt.ended, 50.0),
        percentile(&bramble_rt.deleted, 50.0)
    );

    // 2. Pod start latency: through the API, podman, crun.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"));
    let data = dir.join("master");
    let master = start_master(&data, &dir.join("master.log"), &[]);
    let mqtt = master.mqtt.clone();
    let client = Arc::clone(&master.client);
    let api = Api {
        client: Arc::clone(&client),
        seen: Arc::default(),
        notify: Arc::new(Notify::new()),
    };
    runtime.spawn(watch_running(
        Arc::clone(&client),
        Arc::clone(&api.seen),
        Arc::clone(&api.notify),
    ));
    let net_token = add_node(&data, "bench-net");
    let lo_token = add_node(&data, "bench-lo");
    let net_agent = AgentProcess::start(&agent, dir, &mqtt, "bench-net", &net_token, &archive, &[]);
    let lo_agent = AgentProcess::start(
        &agent,
        dir,
        &mqtt,
        "bench-lo",
        &lo_token,
        &archive,
        &["--no-network"],
    );
    runtime.block_on(async {
        wait_node_ready(&client, "bench-net").await;
        wait_node_ready(&client, "bench-lo").await;
    });
    let idle_rss = proc_field(lo_agent.pid, "status", "VmRSS:");
    // The path a user takes (the scheduler binds the pod), and beside it,
    // under its own name, the pre-bound path that skips the scheduler.
    let (net_seq, net_burst) =
        runtime.block_on(api.start_latencies("bench-net", "net", n, Placement::Scheduled));
    let (lo_seq, lo_burst) =
        runtime.block_on(api.start_latencies("bench-lo", "lo", n, Placement::Scheduled));
    let (bound_seq, bound_burst) =
        runtime.block_on(api.start_latencies("bench-lo", "bound", n, Placement::PreBound));

    let podman_base = |network: &'static str| {
        let rootfs = rootfs.clone();
        move |id: &str| {
            let mut c = Command::new("podman");
            c.args([
                "--cgroup-manager=cgroupfs",
                "--events-backend=file",
                "run",
                "-d",
                "--rm",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
                "--network",
                network,
                "--name",
                id,
                "--rootfs",
            ])
            .arg(&rootfs)
            .args(["sleep", "3600"]);
            c
        }
    };
    let podman_rm = |ids: &[String]| {
        let mut args = vec![
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            "rm",
            "-f",
            "-t",
            "0",
        ];
        args.extend(ids.iter().map(String::as_str));
        let _ = run("podman", &args);
    };
    let (podman_none_seq, podman_none_burst) =
        cli_start_latencies(&podman_base("none"), &podman_rm, n, "podman-none");
    let (podman_bridge_seq, podman_bridge_burst) =
        cli_start_latencies(&podman_base("bridge"), &podman_rm, n, "podman-bridge");
    let sleep_bundle = bundle(&dir.join("bundle-sleep"), &rootfs, &["sleep", "3600"]);
    let crun_start = |id: &str| {
        let mut c = Command::new("crun");
        c.args(["run", "-d", "--bundle"]).arg(&sleep_bundle).arg(id);
        c
    };
    let crun_rm = |ids: &[String]| {
        for id in ids {
            let _ = run("crun", &["delete", "--force", id]);
        }
    };
    let (crun_seq, crun_burst) = cli_start_latencies(&crun_start, &crun_rm, n, "crun");
    print_table(
        &format!("2a. pod start latency, {n} pods one after the other"),
        &[
            row(
                "bramble, API -> scheduled -> Running, pod network",
                &net_seq,
            ),
            row(
                "bramble, API -> scheduled -> Running, --no-network",
                &lo_seq,
            ),
            row(
                "bramble, pre-bound (nodeName) -> Running, --no-network",
                &bound_seq,
            ),
            row("podman run -d --rm --network none", &podman_none_seq),
            row("podman run -d --rm --network bridge", &podman_bridge_seq),
            row("crun run -d (netns with lo)", &crun_seq),
        ],
        2,
    );
    print_table(
        &format!("2b. pod start latency, {AT_ONCE} pods at once (time from the first create)"),
        &[
            row(
                "bramble, API -> scheduled -> Running, pod network",
                &net_burst,
            ),
            row(
                "bramble, API -> scheduled -> Running, --no-network",
                &lo_burst,
            ),
            row(
                "bramble, pre-bound (nodeName) -> Running, --no-network",
                &bound_burst,
            ),
            row("podman run -d --rm --network none", &podman_none_burst),
            row("podman run -d --rm --network bridge", &podman_bridge_burst),
            row("crun run -d (netns with lo)", &crun_burst),
        ],
        2,
    );

    // 3. Footprint with AT_ONCE pods running.
    let names: Vec<String> = (0..AT_ONCE).map(|i| format!("idle-{i}")).collect();
    runtime.block_on(async {
        for name in &names {
            api.create(name, "bench-lo").await;
        }
        for name in &names {
            api.running_at(name).await;
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    let busy_rss = proc_field(lo_agent.pid, "status", "VmRSS:");
    let shims: Vec<u32> = pids_with(" shim ")
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.ends_with("bramble-agent"))
        })
        .collect();
    let shim_rss: Vec<u64> = shims
        .iter()
        .map(|pid| proc_field(*pid, "status", "VmRSS:"))
        .collect();
    let shim_pss: Vec<u64> = shims.iter().map(|pid| pss_kib(*pid)).collect();
    let ticks_per_second = 100.0;
    let idle_window = Duration::from_secs(30);
    let before = cpu_ticks(lo_agent.pid);
    std::thread::sleep(idle_window);
    let after = cpu_ticks(lo_agent.pid);
    let cpu = (after - before) as f64 / ticks_per_second / idle_window.as_secs_f64() * 100.0;
    println!(
        "\n3. footprint (agent with --no-network; `{}` builds)",
        if agent.display().to_string().contains("release") {
            "release"
        } else {
            "debug"
        }
    );
    println!(
        "  agent RSS idle (no pods)           {:>8.1} MiB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  agent RSS with {AT_ONCE} running pods      {:>8.1} MiB",
        busy_rss as f64 / 1024.0
    );
    if !shim_rss.is_empty() {
        let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64 / 1024.0;
        println!(
            "  shim RSS, {} shims                 {:>8.1} MiB each (avg)",
            shim_rss.len(),
            avg(&shim_rss)
        );
        println!(
            "  shim PSS (shared pages split)      {:>8.1} MiB each (avg), {:.1} MiB for all",
            avg(&shim_pss),
            shim_pss.iter().sum::<u64>() as f64 / 1024.0
        );
    }
    println!(
        "  agent CPU, idle with {AT_ONCE} pods, {} s   {:>8.2} % of one core",
        idle_window.as_secs(),
        cpu
    );
    runtime.block_on(api.delete_all(&names));
    drop(net_agent);
    drop(lo_agent);
    drop(master);
    let _ = std::io::stdout().flush();
}
