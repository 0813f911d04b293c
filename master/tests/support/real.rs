//! A node with the real runtime for end-to-end tests through the master:
//! the real `bramble-agent` (default runtime, no `--runtime` flag) with its
//! own state and run dirs, the test image imported with
//! `bramble-agent image import`, and a cleanup that leaves no process,
//! cgroup or mount behind even when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bramble_agent::images::busybox;
use bramble_agent::runtime::{LinuxRuntime, Runtime, RuntimeConfig};

use super::{agent_bin, Agent};

/// The test image: busybox-static with its applets, default command `sh`.
pub const IMAGE: &str = "bramble.test/busybox:1";

/// Writes [`IMAGE`] as a `docker save` archive to `file`, built by the
/// project's own image builder from Debian's busybox-static.
pub fn write_test_image(file: &Path) {
    if let Err(e) = busybox::ensure_busybox() {
        panic!("{e}");
    }
    busybox::busybox_image(IMAGE, &["sh"])
        .write_docker_archive(file)
        .expect("write the test image archive");
}

/// A real agent for node `name`, started by [`RealNode::start`], with the
/// cleanup of everything its pods had.
pub struct RealNode {
    /// The node's name.
    pub name: String,
    /// Its directory (`state/`, `run/`).
    pub dir: PathBuf,
    /// The agent process.
    pub agent: Agent,
}

impl RealNode {
    /// Import the test image and start `bramble-agent` (the default, real
    /// runtime) for `name` with `token` against `mqtt` (`host:port`), its
    /// directories under `dir/name`, a 1 s heartbeat, `extra` flags and
    /// `env`.
    pub fn start(
        dir: &Path,
        mqtt: &str,
        name: &str,
        token: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> RealNode {
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let archive = node_dir.join("image.tar");
        write_test_image(&archive);
        let out = Command::new(agent_bin())
            .arg("image")
            .arg("import")
            .arg(&archive)
            .arg("--state-dir")
            .arg(node_dir.join("state"))
            .output()
            .expect("run bramble-agent image import");
        assert!(
            out.status.success(),
            "bramble-agent image import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        RealNode {
            name: name.to_string(),
            dir: node_dir,
            agent: Agent::start_real(dir, mqtt, name, token, extra, env),
        }
    }

    /// The agent's state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The agent's run dir.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// SIGKILL the agent (its containers keep running).
    pub fn kill9(&mut self) {
        self.agent.kill9();
    }

    /// Start the agent again with the same flags.
    pub fn restart(&mut self) {
        self.agent.restart();
    }

    /// The node's cgroup dirs (one per v1 hierarchy, or the v2 one).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        node_cgroup_dirs(&self.name)
    }

    /// Processes in the node's cgroups.
    pub fn processes(&self) -> Vec<i32> {
        node_processes(&self.name)
    }

    /// Mounts under the node's directory.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under_dir(&self.dir)
    }

    /// Pod network namespaces still mounted for this node.
    pub fn netns_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.run_dir().join("netns"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// The cgroup dirs of node `name` (one per v1 hierarchy, or the v2 one).
pub fn node_cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for entry in entries.flatten() {
            let p = entry.path().join("bramble").join(name);
            if p.exists() {
                out.push(p);
            }
        }
    }
    let p = Path::new("/sys/fs/cgroup/bramble").join(name);
    if p.exists() {
        out.push(p);
    }
    out
}

/// Processes in the cgroups of node `name`.
pub fn node_processes(name: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in node_cgroup_dirs(name) {
        collect_procs(&dir, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Mount points under `dir`.
pub fn mounts_under_dir(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

fn collect_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&entry.path(), pids);
            }
        }
    }
}

fn rmdir_tree(p: &Path) {
    if let Ok(entries) = std::fs::read_dir(p) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&entry.path());
            }
        }
    }
    for _ in 0..100 {
        if std::fs::remove_dir(p).is_ok() || !p.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent {} log:\n{}", self.name, self.agent.log_text());
        }
        self.kill9();
        stop_leftovers(&self.name, &self.state_dir(), &self.run_dir(), &self.dir);
    }
}

/// Stops whatever pods an agent of node `name` (with these state and run
/// dirs) left, through the runtime itself; then kills, unmounts and
/// removes anything still left (a runtime that could not open): processes
/// in the node's cgroups, mounts under `mounts_under`, the cgroups.
pub fn stop_leftovers(name: &str, state_dir: &Path, run_dir: &Path, mounts_under: &Path) {
    if let Ok(runtime) = LinuxRuntime::new(RuntimeConfig::new(
        name,
        state_dir.to_path_buf(),
        run_dir.to_path_buf(),
    )) {
        let _ = runtime.adopt_existing();
        for pod in runtime.list_pods() {
            let _ = runtime.kill_pod(&pod.uid, Some(Duration::ZERO));
        }
        runtime.shutdown();
    }
    for pid in node_processes(name) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let mut mounts = mounts_under_dir(mounts_under);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
    }
    for dir in node_cgroup_dirs(name) {
        rmdir_tree(&dir);
    }
}
