//! The node's conditions as the kubelet reports them, end to end with a
//! real agent: `DiskPressure` from a state dir that fills up (a small tmpfs
//! stands in for the SD card), `Ready=False` with the runtime's reason when
//! the runtime's directory disappears, both back when the cause goes, and
//! the kubelet's events for each change, all read with the stock kubectl.
//!
//! Every wait polls with a deadline; the tmpfs is unmounted and the agent's
//! containers removed when the test ends, pass or fail.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::real::RealNode;
use support::{add_node, ok, wait_until, Master};

/// The agent measures every 10 s; a change shows within two rounds.
const SETTLE: Duration = Duration::from_secs(40);

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", at.display()));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The node's condition `type_` as kubectl shows it.
fn condition(master: &Master, node: &str, type_: &str) -> Value {
    let out = ok(master.kubectl(&["get", "node", node, "-o", "json"]));
    let node: Value = serde_json::from_str(&out).expect("node json");
    node["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

#[track_caller]
fn wait_condition(master: &Master, node: &str, type_: &str, status: &str) -> Value {
    wait_until(&format!("{type_}={status} on {node}"), SETTLE, || {
        let c = condition(master, node, type_);
        if c["status"] == status {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
}

#[track_caller]
fn wait_event(master: &Master, node: &str, reason: &str) {
    wait_until(&format!("event {reason} about {node}"), SETTLE, || {
        let out = ok(master.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={node}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ]));
        if out.contains(&format!("{reason}: Node {node} status is now: {reason}")) {
            Ok(())
        } else {
            Err(out)
        }
    });
}

#[test]
fn pressure_and_readiness_follow_what_the_node_measures() {
    let dir = tempfile::tempdir().expect("tmp");
    let master = Master::start(&dir.path().join("data"), &[]);
    let name = format!("health-{}", std::process::id());
    let token = add_node(&master, &name);
    // The state dir on a 32 MiB file system of its own.
    let state = dir.path().join(&name).join("state");
    let _disk = Tmpfs::mount(&state, "32m");
    let node = RealNode::start(
        dir.path(),
        &master.mqtt,
        &name,
        &token,
        &["--no-network"],
        &[],
    );
    let ready = wait_condition(&master, &name, "Ready", "True");
    assert_eq!(ready["reason"], "KubeletReady", "{ready}");
    assert_eq!(ready["message"], "kubelet is posting ready status");
    for (type_, reason) in [
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let c = wait_condition(&master, &name, type_, "False");
        assert_eq!(c["reason"], reason, "{c}");
    }

    // Fill the disk past the kubelet's nodefs.available<10% threshold.
    let filler = state.join("filler");
    let stat = nix::sys::statvfs::statvfs(&state).expect("statvfs");
    let available = stat.blocks_available() * stat.fragment_size();
    let total = stat.blocks() * stat.fragment_size();
    let keep = total / 20; // leave 5 %
    std::fs::write(&filler, vec![0u8; (available - keep) as usize]).expect("fill the disk");
    let pressure = wait_condition(&master, &name, "DiskPressure", "True");
    assert_eq!(pressure["reason"], "KubeletHasDiskPressure", "{pressure}");
    assert_eq!(pressure["message"], "kubelet has disk pressure");
    wait_event(&master, &name, "NodeHasDiskPressure");
    let describe = ok(master.kubectl(&["describe", "node", &name]));
    assert!(
        describe.contains("DiskPressure") && describe.contains("KubeletHasDiskPressure"),
        "{describe}"
    );
    std::fs::remove_file(&filler).expect("free the disk");
    wait_condition(&master, &name, "DiskPressure", "False");
    wait_event(&master, &name, "NodeHasNoDiskPressure");

    // The runtime's directory disappears (a cleared /run): NotReady, with why.
    let pods_dir = node.run_dir().join(&name).join("pods");
    std::fs::remove_dir(&pods_dir).expect("remove the runtime directory (no pods run)");
    let not_ready = wait_condition(&master, &name, "Ready", "False");
    assert_eq!(not_ready["reason"], "KubeletNotReady", "{not_ready}");
    let message = not_ready["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("container runtime not ready: RuntimeReady=false reason:RuntimeNotReady message:the runtime directory")
            && message.contains("is missing"),
        "{message}"
    );
    wait_event(&master, &name, "NodeNotReady");
    std::fs::create_dir(&pods_dir).expect("recreate the runtime directory");
    let ready = wait_condition(&master, &name, "Ready", "True");
    assert_eq!(ready["reason"], "KubeletReady", "{ready}");
    wait_until("a second NodeReady event", SETTLE, || {
        let out = ok(master.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name},reason=NodeReady"),
            "-o",
            "jsonpath={.items[0].count}",
        ]));
        if out.trim().parse::<u32>().unwrap_or(0) >= 2 {
            Ok(())
        } else {
            Err(out)
        }
    });
    drop(node);
}
