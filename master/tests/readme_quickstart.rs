//! The README's quickstart, run as written: its `bramble master
//! --local-agent ...` command (the first command, minus the build) with its
//! own flags, its `bramble-agent image import` of a busybox archive, then a
//! pod through the stock kubectl on the local agent with the real runtime.
//!
//! The only changes to the README's text: the binaries are the ones under
//! test, the ports are free ones instead of 6443/1883 (so the test never
//! meets a cluster the developer runs), and the relative data dir lives in
//! a temporary directory. The local agent uses the defaults a user gets (the
//! host's `bramble0` bridge, `/run/bramble`); everything it made is removed
//! when the test ends, pass or fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::real::{stop_leftovers, write_test_image, IMAGE};
use support::{agent_bin, ok, wait_until, Master};

/// How long the local node and its pod may take to get where the test expects.
const SETTLE: Duration = Duration::from_secs(90);

/// The README's shell commands in its ```sh blocks, one string per line.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            text if in_sh && !text.is_empty() => commands.push(text.to_string()),
            _ => {}
        }
    }
    commands
}

/// The arguments after `bramble master` in the README's first command.
fn readme_master_args() -> Vec<String> {
    let commands = readme_commands();
    let first = commands.first().expect("the README has a first command");
    let (_, master) = first
        .rsplit_once("./target/release/bramble master ")
        .unwrap_or_else(|| panic!("the first command starts no master: {first}"));
    master.split_whitespace().map(str::to_string).collect()
}

/// The value of `--flag` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("{name} in {args:?}"));
    &args[at + 1]
}

/// This machine's host name as the master names its local node.
fn local_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| "local".into())
}

/// Removes the local node's pods, pod network and leftovers on drop.
struct LocalNode {
    name: String,
    state_dir: PathBuf,
    run_dir: PathBuf,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        // A master killed by a failing test leaves its local agent running.
        for pid in agents_of(&self.state_dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        stop_leftovers(&self.name, &self.state_dir, &self.run_dir, &self.state_dir);
        let out = Command::new(agent_bin())
            .args(["reset", "--node", &self.name, "--state-dir"])
            .arg(&self.state_dir)
            .output();
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!(
                    "bramble-agent reset failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// The processes of `bramble-agent` run with `--state-dir state_dir`.
fn agents_of(state_dir: &Path) -> Vec<i32> {
    let wanted = state_dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_agent = args.first().is_some_and(|a| a.ends_with(b"bramble-agent"));
            let ours = args
                .windows(2)
                .any(|w| w[0] == b"--state-dir" && w[1] == wanted.as_bytes());
            (is_agent && ours).then_some(pid)
        })
        .collect()
}

#[test]
fn the_readme_single_node_cluster_runs_a_pod() {
    let args = readme_master_args();
    assert!(args.iter().any(|a| a == "--local-agent"), "{args:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join(flag(&args, "--data-dir"));
    let agent_state = data_dir.join("agent");

    // The README's import: `bramble-agent image import busybox.tar --state-dir .bramble/master/agent`.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let import = readme
        .split('`')
        .find(|part| part.contains("bramble-agent image import"))
        .expect("the README says how to import an image");
    assert!(
        import.contains("--state-dir .bramble/master/agent"),
        "the README's import must target the local agent's state dir: {import}"
    );
    let archive = dir.path().join("busybox.tar");
    write_test_image(&archive);
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let out = Command::new(agent_bin())
        .args(["image", "import"])
        .arg(&archive)
        .arg("--state-dir")
        .arg(&agent_state)
        .output()
        .expect("run bramble-agent image import");
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let node = LocalNode {
        name: local_node_name(),
        state_dir: agent_state.clone(),
        run_dir: PathBuf::from("/run/bramble"),
    };
    // The README's flags, with free ports; Master::start gives --data-dir
    // and a free --listen itself.
    let mut extra: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--data-dir" | "--listen" => {
                rest.next();
            }
            "--mqtt-listen" => {
                rest.next();
                extra.extend(["--mqtt-listen".into(), "127.0.0.1:0".into()]);
            }
            _ => extra.push(arg.clone()),
        }
    }
    extra.extend(["--agent-bin".into(), agent_bin().display().to_string()]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut master = Master::start(&data_dir, &extra);

    wait_until("the local node Ready", SETTLE, || {
        let out = master.kubectl(&["get", "node", &node.name, "--no-headers"]);
        let text = support::stdout(&out) + &support::stderr(&out);
        if text.contains(" Ready ") {
            Ok(())
        } else {
            Err(format!("{text}\nmaster log:\n{}", log_tail(&master)))
        }
    });
    ok(master.kubectl(&[
        "run",
        "hello",
        &format!("--image={IMAGE}"),
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo hello from the quickstart; sleep 3600",
    ]));
    wait_until("pod hello Running", SETTLE, || {
        let out = master.kubectl(&[
            "get",
            "pod",
            "hello",
            "-o",
            "jsonpath={.status.phase} {.spec.nodeName}",
        ]);
        let text = support::stdout(&out);
        if text == format!("Running {}", node.name) {
            Ok(())
        } else {
            Err(format!("{text} {}", support::stderr(&out)))
        }
    });
    wait_until("the pod's log", SETTLE, || {
        let out = master.kubectl(&["logs", "hello"]);
        let text = support::stdout(&out);
        if text.contains("hello from the quickstart") {
            Ok(())
        } else {
            Err(format!("{text} {}", support::stderr(&out)))
        }
    });
    // The pod runs in its own network namespace on the bridge, not the host's.
    let ip = ok(master.kubectl(&["get", "pod", "hello", "-o", "jsonpath={.status.podIP}"]));
    let cidr = ok(master.kubectl(&["get", "node", &node.name, "-o", "jsonpath={.spec.podCIDR}"]));
    assert!(
        in_cidr(&ip, &cidr),
        "pod IP {ip:?} is not in the node's pod CIDR {cidr:?}"
    );

    ok(master.kubectl(&[
        "delete",
        "pod",
        "hello",
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]));
    let status = master.stop();
    assert!(status.success(), "master exit: {status:?}");
    drop(node);
    assert!(
        !Path::new("/sys/class/net/bramble0").exists(),
        "bramble-agent reset left the bramble0 bridge"
    );
}

fn log_tail(master: &Master) -> String {
    let log = master.log.lock().expect("log");
    log.iter()
        .rev()
        .take(30)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the IPv4 address `ip` is inside `cidr` (`a.b.c.d/n`).
fn in_cidr(ip: &str, cidr: &str) -> bool {
    let Some((base, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(base), Ok(bits)) = (
        ip.parse::<std::net::Ipv4Addr>(),
        base.parse::<std::net::Ipv4Addr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - bits.min(32)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}
