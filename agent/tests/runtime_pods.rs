//! The real runtime, as root, on this machine: pods of busybox containers.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bramble_agent::runtime::logs::read_log_text;
use bramble_agent::runtime::Runtime;
use support::*;

const T: Duration = Duration::from_secs(20);

fn skip_unless_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("runtime tests need root; skipped");
        return true;
    }
    false
}

#[test]
fn runtime_pod_prints_and_exits() {
    if skip_unless_root() {
        return;
    }
    let node = TestNode::new("hello");
    let d = pod(
        "hello",
        vec![container("main", "bramble.test/hello:1", &[])],
        "Never",
    );
    node.rt().sync_pod(&d).unwrap();
    let s = wait_status(node.rt(), d.uid(), T, |s| {
        s.phase.as_deref() == Some("Succeeded")
    });
    let t = s.container_statuses[0].state.terminated.clone().unwrap();
    assert_eq!(t.exit_code, 0);
    assert_eq!(t.reason.as_deref(), Some("Completed"));
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    let log = node.rt().log_path(d.uid(), "main").unwrap();
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(raw.contains(" stdout F hello from bramble"), "log: {raw}");
    assert_eq!(read_log_text(&log).unwrap(), "hello from bramble\n");
}

#[test]
fn runtime_pod_over_memory_limit_is_oom_killed() {
    if skip_unless_root() {
        return;
    }
    let node = TestNode::new("oom");
    let mut c = container("hog", "bramble.test/hog:1", &[]);
    c.resources = Some(bramble_common::api::ResourceRequirements {
        limits: [(
            "memory".to_string(),
            bramble_common::Quantity("32Mi".into()),
        )]
        .into(),
        ..Default::default()
    });
    let d = pod("oom", vec![c], "Never");
    node.rt().sync_pod(&d).unwrap();
    let s = wait_status(node.rt(), d.uid(), T, |s| {
        s.phase.as_deref() == Some("Failed")
    });
    let t = s.container_statuses[0].state.terminated.clone().unwrap();
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"), "{t:?}");
    assert_eq!(t.exit_code, 137);
}

#[test]
fn runtime_two_containers_talk_over_localhost() {
    if skip_unless_root() {
        return;
    }
    let node = TestNode::new("lo");
    let server = container("web", "bramble.test/httpd:1", &[]);
    let client = container(
        "client",
        "bramble.test/hello:1",
        &["sh", "-c", "for i in $(seq 1 100); do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1"],
    );
    let d = pod("lo", vec![server, client], "Never");
    node.rt().sync_pod(&d).unwrap();
    let s = wait_status(node.rt(), d.uid(), T, |s| {
        s.container_statuses
            .iter()
            .any(|c| c.name == "client" && c.state.terminated.is_some())
    });
    let client = s
        .container_statuses
        .iter()
        .find(|c| c.name == "client")
        .unwrap();
    assert_eq!(
        client.state.terminated.as_ref().unwrap().exit_code,
        0,
        "{s:#?}"
    );
    let log = read_log_text(&node.rt().log_path(d.uid(), "client").unwrap()).unwrap();
    assert!(log.contains("hello from bramble httpd"), "{log}");
    // The pod's own netns, not the host's: nothing listens on the host's 8080 from it.
    assert!(node.dir.path().join("run/netns").join(d.uid()).exists());
}

#[test]
fn runtime_missing_image_waits_with_err_image_never_pull() {
    if skip_unless_root() {
        return;
    }
    let node = TestNode::new("noimg");
    let mut c = container("main", "bramble.test/nope:9", &[]);
    c.image_pull_policy = Some("Never".into());
    let d = pod("noimg", vec![c], "Always");
    node.rt().sync_pod(&d).unwrap();
    let s = wait_status(node.rt(), d.uid(), T, |s| {
        s.container_statuses
            .first()
            .and_then(|c| c.state.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .as_deref()
            == Some("ErrImageNeverPull")
    });
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let msg = s.container_statuses[0]
        .state
        .waiting
        .clone()
        .unwrap()
        .message
        .unwrap();
    assert_eq!(
        msg,
        "Container image \"bramble.test/nope:9\" is not present with pull policy of Never"
    );
}

fn process_exists(pid: i32) -> bool {
    // A process that already exited may take a moment to be reaped by init.
    wait_for(Duration::from_secs(2), || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .is_none()
}

fn ppid_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn runtime_agent_restart_readopts_without_duplicating() {
    if skip_unless_root() {
        return;
    }
    let mut node = TestNode::new("adopt");
    let d = pod(
        "adopt",
        vec![container(
            "main",
            "bramble.test/hello:1",
            &["sleep", "1000"],
        )],
        "Always",
    );
    node.rt().sync_pod(&d).unwrap();
    wait_status(node.rt(), d.uid(), T, |s| {
        s.container_statuses
            .first()
            .is_some_and(|c| c.state.running.is_some())
    });
    let pid = wait_for(T, || node.rt().container_pid(d.uid(), "main")).unwrap();
    let shim = wait_for(T, || node.rt().shim_pid(d.uid(), "main")).unwrap();
    // The shim is not our child: it survives its creator.
    assert_ne!(ppid_of(shim), std::process::id() as i32);
    // "Kill" the managing side: stop every worker and forget the runtime.
    let old = node.runtime.take().unwrap();
    old.shutdown();
    drop(old);
    std::thread::sleep(Duration::from_millis(300));
    assert!(process_exists(pid), "container died with its manager");
    // A new agent adopts it.
    node.runtime = Some(node.open_runtime());
    let adopted = node.rt().adopt_existing().unwrap();
    assert_eq!(adopted, vec![d.uid().to_string()]);
    let s = wait_status(node.rt(), d.uid(), T, |s| {
        s.container_statuses
            .first()
            .is_some_and(|c| c.state.running.is_some())
    });
    std::thread::sleep(Duration::from_millis(500));
    let s2 = node.rt().pod_status(d.uid()).unwrap();
    assert_eq!(s2.container_statuses[0].restart_count, 0, "{s:#?}");
    assert_eq!(
        node.rt().container_pid(d.uid(), "main"),
        Some(pid),
        "container was restarted"
    );
    let procs: Vec<String> = node
        .cgroup_dirs()
        .iter()
        .filter(|p| p.starts_with("/sys/fs/cgroup/pids"))
        .map(|p| std::fs::read_to_string(p.join(d.uid()).join("main/cgroup.procs")).unwrap())
        .collect();
    assert_eq!(procs, vec![format!("{pid}\n")], "duplicate processes");
    node.rt()
        .kill_pod(d.uid(), Some(Duration::from_secs(1)))
        .unwrap();
    assert!(!process_exists(pid));
}

#[test]
fn runtime_delete_leaves_nothing_behind() {
    if skip_unless_root() {
        return;
    }
    let node = TestNode::new("del");
    let d = pod(
        "del",
        vec![
            container("a", "bramble.test/hello:1", &["sleep", "1000"]),
            container("b", "bramble.test/httpd:1", &[]),
        ],
        "Always",
    );
    node.rt().sync_pod(&d).unwrap();
    wait_status(node.rt(), d.uid(), T, |s| {
        !s.container_statuses.is_empty()
            && s.container_statuses
                .iter()
                .all(|c| c.state.running.is_some())
    });
    let pids: Vec<i32> = ["a", "b"]
        .iter()
        .map(|c| wait_for(T, || node.rt().container_pid(d.uid(), c)).unwrap())
        .collect();
    let shims: Vec<i32> = ["a", "b"]
        .iter()
        .map(|c| wait_for(T, || node.rt().shim_pid(d.uid(), c)).unwrap())
        .collect();
    assert!(!node.mounts().is_empty());
    let t0 = Instant::now();
    // sleep as pid 1 ignores SIGTERM: the grace period runs out, then SIGKILL.
    node.rt()
        .kill_pod(d.uid(), Some(Duration::from_millis(500)))
        .unwrap();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    for p in pids.iter().chain(&shims) {
        assert!(!process_exists(*p), "process {p} left");
    }
    assert_eq!(
        node.cgroup_dirs()
            .iter()
            .filter(|c| c.join(d.uid()).exists())
            .count(),
        0
    );
    assert_eq!(node.mounts(), Vec::<String>::new());
    assert!(!node.dir.path().join("run/netns").join(d.uid()).exists());
    assert!(!node
        .dir
        .path()
        .join("run")
        .join(&node.name)
        .join("pods")
        .join(d.uid())
        .exists());
    assert!(!node.dir.path().join("state/pods").join(d.uid()).exists());
    assert!(!node
        .dir
        .path()
        .join("run")
        .join(&node.name)
        .join("youki")
        .join(format!("{}-a", d.uid()))
        .exists());
    // Logs stay until the pod object is gone.
    let logs = node.dir.path().join("state/logs");
    assert_eq!(std::fs::read_dir(&logs).unwrap().count(), 1);
    node.rt().remove_pod_logs(d.uid()).unwrap();
    assert_eq!(std::fs::read_dir(&logs).unwrap().count(), 0);
}

#[test]
fn runtime_create_delete_cycles_leave_nothing_behind() {
    if skip_unless_root() {
        return;
    }
    let node = TestNode::new("cycles");
    let cycles = 20;
    let t0 = Instant::now();
    for i in 0..cycles {
        let d = pod(
            &format!("c{i}"),
            vec![container(
                "main",
                "bramble.test/hello:1",
                &["sleep", "1000"],
            )],
            "Always",
        );
        node.rt().sync_pod(&d).unwrap();
        wait_status(node.rt(), d.uid(), T, |s| {
            s.container_statuses
                .first()
                .is_some_and(|c| c.state.running.is_some())
        });
        node.rt().kill_pod(d.uid(), Some(Duration::ZERO)).unwrap();
        node.rt().remove_pod_logs(d.uid()).unwrap();
    }
    let per = t0.elapsed() / cycles;
    eprintln!("create+start+delete cycle: {per:?} per pod ({cycles} cycles)");
    assert_eq!(node.mounts(), Vec::<String>::new());
    for cg in node.cgroup_dirs() {
        assert_eq!(
            std::fs::read_dir(&cg)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
                .count(),
            0,
            "{cg:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(node.dir.path().join("run/netns"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(node.dir.path().join("run").join(&node.name).join("pods"))
            .unwrap()
            .count(),
        0
    );
}
