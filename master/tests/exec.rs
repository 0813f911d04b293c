//! `kubectl exec` and `kubectl cp` end to end, as root: `bramble master`, a
//! real `bramble-agent` running busybox containers, the stock `kubectl`
//! (WebSocket `v5.channel.k8s.io`) through the master and MQTT.
//!
//! - exit codes (`sh -c 'exit 3'` makes kubectl exit 3 with kubelet's
//!   message), stdout and stderr apart, stdin to EOF, the container's
//!   environment and working directory, 8 MB of output through the
//!   flow-controlled stream;
//! - `-it` on a terminal (`script` gives kubectl a pty): a shell, the
//!   terminal size kubectl sends, the shell's exit code;
//! - `kubectl cp` both ways (tar over exec), byte for byte;
//! - `bramble exec` the same way (exit code, stdin, errors);
//! - errors as kube-apiserver gives them: a completed pod, an unknown
//!   container, an unknown pod;
//! - a client that vanishes (kill -9 kubectl) and an agent that dies leave
//!   no exec process in the container, background jobs included.
//!
//! Every wait polls with a deadline; [`RealNode`] removes everything on drop.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::real::{RealNode, IMAGE};
use support::{add_node, fails, ok, stderr, stdout, wait_until, Master};

const SETTLE: Duration = Duration::from_secs(60);

fn apply(master: &Master, object: &Value) {
    ok(master.bramble_stdin(&["apply", "-f", "-"], &object.to_string()));
}

fn get_pod(master: &Master, name: &str) -> Result<Value, String> {
    let out = master.bramble(&["get", "pod", name, "-o", "json"]);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

#[track_caller]
fn wait_phase(master: &Master, name: &str, phase: &str) -> Value {
    wait_until(&format!("pod {name} {phase}"), SETTLE, || {
        let pod = get_pod(master, name)?;
        let running = phase != "Running"
            || pod["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| cs.iter().all(|c| c["state"]["running"].is_object()));
        if pod["status"]["phase"] == phase && running {
            Ok(pod)
        } else {
            Err(pod["status"].to_string())
        }
    })
}

/// kubectl with stdin from `input`.
fn kubectl_stdin(master: &Master, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(support::kubectl_bin())
        .arg("--kubeconfig")
        .arg(&master.kubeconfig)
        .args(args)
        .env("HOME", &master.data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for kubectl");
    let _ = writer.join();
    out
}

/// Processes of the pod `uid` whose command line starts with `needle`.
fn processes_with(node: &RealNode, uid: &str, needle: &str) -> Vec<i32> {
    node.processes()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(uid))
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .is_ok_and(|c| c.starts_with(needle))
        })
        .collect()
}

fn start(dir: &Path, tag: &str) -> (Master, RealNode, String) {
    let master = Master::start(&dir.join("data"), &["--heartbeat-seconds", "1"]);
    let name = format!("{tag}-{}", std::process::id());
    let token = add_node(&master, &name);
    let log = std::env::var("EXEC_TEST_AGENT_LOG").unwrap_or_else(|_| "info".into());
    let node = RealNode::start(
        dir,
        &master.mqtt,
        &name,
        &token,
        &["--no-network"],
        &[("BRAMBLE_LOG", &log)],
    );
    apply(
        &master,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "box"},
            "spec": {
                "nodeName": name,
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main", "image": IMAGE,
                    "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                    "env": [{"name": "GREETING", "value": "hello from bramble"}],
                    "workingDir": "/tmp",
                }],
            },
        }),
    );
    let pod = wait_phase(&master, "box", "Running");
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (master, node, uid)
}

#[test]
fn exec_and_cp_with_the_stock_kubectl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, _node, _uid) = start(dir.path(), "exec");

    // kubectl cp both ways (tar over exec).
    let local = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&local, &data).expect("write payload");
    let out = master.kubectl(&["cp", &local.display().to_string(), "box:/tmp/payload.bin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ok(master.kubectl(&["exec", "box", "--", "sh", "-c", "wc -c < /tmp/payload.bin"]));
    assert_eq!(out.trim(), "700000");
    let back = dir.path().join("back.bin");
    let out = master.kubectl(&["cp", "box:/tmp/payload.bin", &back.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(&back).expect("copied back") == data,
        "kubectl cp changed the bytes"
    );

    // Exit codes, stdout and stderr kept apart.
    let out = master.kubectl(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    let err = stderr(&out);
    assert!(err.contains("err\n"), "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");
    let started = Instant::now();
    let out = master.kubectl(&["exec", "box", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let exec_took = started.elapsed();
    let started = Instant::now();
    ok(master.kubectl(&["get", "pod", "box"]));
    // For the record (not asserted): the whole kubectl run, against a plain
    // GET as the baseline of kubectl's own start-up.
    eprintln!(
        "kubectl exec true: {exec_took:?}; kubectl get pod: {:?}",
        started.elapsed()
    );

    // `bramble exec` mirrors kubectl: the same endpoint and protocol.
    let out = master.bramble(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo via bramble; echo oops >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "via bramble\n");
    assert!(
        stderr(&out).contains("oops\ncommand terminated with exit code 4"),
        "{}",
        stderr(&out)
    );
    let out = master.bramble_stdin(
        &["exec", "-i", "box", "--", "sh", "-c", "cat; echo end"],
        "piped in\n",
    );
    assert_eq!(stdout(&out), "piped in\nend\n", "{}", stderr(&out));
    assert!(out.status.success());
    let error = fails(master.bramble(&["exec", "ghost", "--", "true"]));
    assert!(error.contains("pods \"ghost\" not found"), "{error}");

    // The container's environment and working directory.
    let out = ok(master.kubectl(&[
        "exec",
        "box",
        "-c",
        "main",
        "--",
        "sh",
        "-c",
        "echo $GREETING; pwd; id -u",
    ]));
    assert_eq!(out, "hello from bramble\n/tmp\n0\n");

    // A command that does not exist.
    let out = master.kubectl(&["exec", "box", "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("executable file not found in $PATH"),
        "{}",
        stderr(&out)
    );

    // Stdin to its end.
    let out = kubectl_stdin(
        &master,
        &["exec", "-i", "box", "--", "sh", "-c", "cat; echo done"],
        b"line one\nline two\n",
    );
    assert_eq!(
        stdout(&out),
        "line one\nline two\ndone\n",
        "{}",
        stderr(&out)
    );

    // Much output: the window holds the producer, nothing is lost.
    let started = Instant::now();
    let out = master.kubectl(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "head -c 8000000 /dev/zero | tr '\\0' x",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 8_000_000);
    assert!(out.stdout.iter().all(|b| *b == b'x'));
    eprintln!("8 MB of exec output in {:?}", started.elapsed());

    // A shell on a terminal: `script` gives kubectl a pty.
    let shell = format!(
        "{} --kubeconfig {} exec -it box -- sh",
        support::kubectl_bin(),
        master.kubeconfig.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .env("HOME", &master.data_dir)
        .env("COLUMNS", "97")
        .env("LINES", "31")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        // Give the shell time to start reading; it echoes what it gets.
        std::thread::sleep(Duration::from_millis(1500));
        let _ = stdin.write_all(b"tty; echo answer=$((6*7)); exit 5\n");
        std::thread::sleep(Duration::from_secs(10));
    });
    let out = wait_output(child, Duration::from_secs(30));
    let _ = writer.join();
    let text = stdout(&out);
    assert!(text.contains("answer=42"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}{}", stderr(&out));

    // Errors as kube-apiserver gives them.
    let error = fails(master.kubectl(&["exec", "box", "-c", "nope", "--", "true"]));
    assert!(
        error.contains("container nope is not valid for pod box"),
        "{error}"
    );
    let error = fails(master.kubectl(&["exec", "ghost", "--", "true"]));
    assert!(error.contains("pods \"ghost\" not found"), "{error}");
    apply(
        &master,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "done"},
            "spec": {
                "nodeName": _node.name,
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": IMAGE, "command": ["true"]}],
            },
        }),
    );
    wait_phase(&master, "done", "Succeeded");
    let error = fails(master.kubectl(&["exec", "done", "--", "true"]));
    assert!(
        error.contains(
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        ),
        "{error}"
    );
}

/// SIGKILL `pid` and its descendants (the kubectl that `script` started),
/// found through `/proc/PID/task/PID/children`.
fn kill_tree(pid: i32) {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
    {
        kill_tree(child);
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Wait for `child` at most `timeout`, killing it past that.
fn wait_output(mut child: std::process::Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().expect("output"),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "still running after {timeout:?}: {}{}",
                    stdout(&out),
                    stderr(&out)
                );
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn a_vanished_client_or_agent_leaves_no_exec_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, mut node, uid) = start(dir.path(), "exec-gone");

    // kill -9 kubectl: the session is cancelled, the command and its
    // background job are killed.
    let mut follower = master.follow(
        support::kubectl_bin(),
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "sleep 1001 & echo started; sleep 1002",
        ],
    );
    follower.expect_line(SETTLE, |l| l == "started");
    assert_eq!(processes_with(&node, &uid, "sleep 100").len(), 2);
    drop(follower);
    wait_until(
        "no exec process after the client vanished",
        Duration::from_secs(20),
        || {
            let left = processes_with(&node, &uid, "sleep 100");
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );

    // The same with a terminal session, whose shell puts jobs in their own
    // process groups.
    let shell = format!(
        "{} --kubeconfig {} exec -it box -- sh",
        support::kubectl_bin(),
        master.kubeconfig.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .env("HOME", &master.data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::sleep(Duration::from_millis(1500));
    stdin
        .write_all(b"sleep 1003 &\nsleep 1004\n")
        .expect("type");
    wait_until("the terminal session's jobs run", SETTLE, || {
        let found = processes_with(&node, &uid, "sleep 100");
        if found.len() == 2 {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    });
    kill_tree(child.id() as i32);
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    wait_until(
        "no exec process after the terminal client vanished",
        Duration::from_secs(20),
        || {
            let left = processes_with(&node, &uid, "sleep 100");
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );

    // kill -9 the agent during a session: the helper sees its control pipe
    // close and kills the command; the container itself keeps running.
    let mut follower = master.follow(
        support::kubectl_bin(),
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "sleep 1005 & echo started; sleep 1006",
        ],
    );
    follower.expect_line(SETTLE, |l| l == "started");
    node.kill9();
    wait_until(
        "no exec process after the agent died",
        Duration::from_secs(20),
        || {
            let left = processes_with(&node, &uid, "sleep 100");
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    drop(follower);
    assert!(
        !processes_with(&node, &uid, "sh -c trap").is_empty(),
        "the container itself must keep running"
    );
    node.restart();
    wait_until("exec works again after the agent came back", SETTLE, || {
        let out = master.kubectl(&["exec", "box", "--", "echo", "back"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(stderr(&out))
        }
    });
}
