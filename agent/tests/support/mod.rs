//! Shared helpers of the runtime integration tests: test images built from
//! Debian's `busybox-static` (no network), and a per-test node with its own
//! directories and name that cleans up after itself, even on failure.
#![allow(dead_code, clippy::unwrap_used)]

pub mod mosquitto;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bramble_agent::images::ImageStore;
use bramble_agent::runtime::{LinuxRuntime, PodDesired, Runtime, RuntimeConfig};
use bramble_common::api::{Container, Pod, PodSpec, PodStatus};
use bramble_common::ObjectMeta;

#[allow(unused_imports)]
pub use bramble_agent::images::busybox::{busybox_image, busybox_layer, BUSYBOX};

/// Makes sure `busybox-static` is installed (installing it if needed), or
/// fails the test saying what to do.
pub fn ensure_busybox() {
    if let Err(e) = bramble_agent::images::busybox::ensure_busybox() {
        panic!("{e}");
    }
}

/// Imports the three standard test images into `store`: `bramble.test/hello`
/// (prints and exits), `bramble.test/httpd` (serves /www on 8080) and
/// `bramble.test/hog` (allocates ~200 MB).
pub fn import_test_images(store: &ImageStore, scratch: &Path) {
    ensure_busybox();
    let images = [
        busybox_image("bramble.test/hello:1", &["echo", "hello from bramble"]),
        busybox_image(
            "bramble.test/httpd:1",
            &["httpd", "-f", "-p", "8080", "-h", "/www"],
        ),
        busybox_image(
            "bramble.test/hog:1",
            &[
                "sh",
                "-c",
                "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
            ],
        ),
    ];
    for (i, img) in images.iter().enumerate() {
        let dir = scratch.join(format!("img{i}"));
        img.write_oci_layout(&dir).unwrap();
        store.import(&dir).unwrap();
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One test's node: unique name, own state and run dirs, the runtime.
pub struct TestNode {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub runtime: Option<LinuxRuntime>,
}

impl TestNode {
    pub fn new(tag: &str) -> TestNode {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}-{tag}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("bramble-rt-")
            .tempdir()
            .unwrap();
        let mut node = TestNode {
            name,
            dir,
            runtime: None,
        };
        node.runtime = Some(node.open_runtime());
        let scratch = node.dir.path().join("scratch");
        import_test_images(node.rt().images(), &scratch);
        node
    }

    pub fn config(&self) -> RuntimeConfig {
        let mut cfg = RuntimeConfig::new(
            &self.name,
            self.dir.path().join("state"),
            self.dir.path().join("run"),
        );
        cfg.shim_binary = PathBuf::from(env!("CARGO_BIN_EXE_bramble-agent"));
        cfg.sync_interval = Duration::from_millis(50);
        cfg.idle_interval = Duration::from_millis(50);
        cfg
    }

    pub fn open_runtime(&self) -> LinuxRuntime {
        LinuxRuntime::new(self.config()).unwrap()
    }

    pub fn rt(&self) -> &LinuxRuntime {
        self.runtime.as_ref().unwrap()
    }

    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let p = e.path().join("bramble").join(&self.name);
            if p.exists() {
                out.push(p);
            }
        }
        let p = Path::new("/sys/fs/cgroup/bramble").join(&self.name);
        if p.exists() {
            out.push(p);
        }
        out
    }

    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }
}

fn print_shim_logs(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() && !p.ends_with("rootfs") && !p.ends_with("images") {
            print_shim_logs(&p);
        } else if p.file_name().is_some_and(|n| n == "shim.log") {
            eprintln!(
                "--- {}:\n{}",
                p.display(),
                std::fs::read_to_string(&p).unwrap_or_default()
            );
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_shim_logs(self.dir.path());
        }
        if let Some(rt) = self.runtime.take() {
            for p in rt.list_pods() {
                let _ = rt.kill_pod(&p.uid, Some(Duration::ZERO));
            }
            rt.shutdown();
        }
        // Whatever is left (a test that failed half way): kill, unmount, rmdir.
        for cg in self.cgroup_dirs() {
            kill_cgroup_tree(&cg);
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
        for cg in self.cgroup_dirs() {
            rmdir_tree(&cg);
        }
    }
}

fn kill_cgroup_tree(p: &Path) {
    if let Ok(procs) = std::fs::read_to_string(p.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_cgroup_tree(&e.path());
            }
        }
    }
}

fn rmdir_tree(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path());
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

/// A pod with the given containers.
pub fn pod(name: &str, containers: Vec<Container>, restart_policy: &str) -> PodDesired {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    PodDesired {
        pod: Pod {
            api_version: "v1".into(),
            kind: "Pod".into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!(
                    "{:08x}-0000-4000-8000-{:012x}",
                    std::process::id(),
                    n
                )),
                ..Default::default()
            },
            spec: PodSpec {
                containers,
                restart_policy: Some(restart_policy.into()),
                ..Default::default()
            },
            status: None,
        },
        config_maps: BTreeMap::new(),
        secrets: BTreeMap::new(),
    }
}

/// A container of `image` with an optional command.
pub fn container(name: &str, image: &str, command: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until the runtime reports a status satisfying `pred`.
pub fn wait_status(
    rt: &LinuxRuntime,
    uid: &str,
    timeout: Duration,
    pred: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    let mut last = None;
    let got = wait_for(timeout, || {
        let s = rt.pod_status(uid)?;
        last = Some(s.clone());
        pred(&s).then_some(s)
    });
    match got {
        Some(s) => s,
        None => panic!("timed out waiting for pod {uid}; last status: {last:#?}"),
    }
}
