//! End to end through the real binaries, as root: `bramble master`, a real
//! `bramble-agent` (the default runtime, libcontainer containers from a
//! busybox image it imported), the `bramble` CLI and the stock `kubectl`.
//!
//! - logs: `bramble logs` and `kubectl logs` (whole, `--tail`, `-f` while
//!   the container writes, `--previous` after a restart, `-c` in a
//!   two-container pod) and their errors: unknown pod or container, a
//!   container name missing, a pod on a simulated node, a node whose agent
//!   is gone;
//! - the lifecycle the runtime issue asks for, seen through the API: a pod
//!   over its memory limit is OOMKilled and restarted with backoff; two
//!   containers of a pod talk over localhost; a killed agent leaves its
//!   containers running and the restarted one adopts them; 100 pods
//!   created and deleted leave no process, cgroup, mount or netns; a node
//!   without the memory cgroup is NotReady with the fix; a deleted pod is
//!   `Terminating` until its node stopped it (`kubectl delete` waits).
//!
//! Every wait polls with a deadline; nothing is left behind when a test
//! fails ([`RealNode`] cleans up on drop).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::real::{RealNode, IMAGE};
use support::{add_node, fails, ok, stdout, wait_until, Agent, Master};

/// How long a pod or a node may take to get where a test expects it.
const SETTLE: Duration = Duration::from_secs(60);
/// The master's heartbeat settings: a node silent for 3 s is NotReady.
const FAST_HEARTBEATS: [&str; 4] = ["--heartbeat-seconds", "1", "--missed-heartbeats", "3"];

fn start_master(dir: &Path) -> Master {
    Master::start(&dir.join("data"), &FAST_HEARTBEATS)
}

/// A node name unique to this test process (cgroups carry it).
fn node_name(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// Register a node named after `tag` and start a real agent for it
/// (`--no-network`: these tests need no pod network) with `env`.
fn join_real_node(
    dir: &Path,
    master: &Master,
    tag: &str,
    env: &[(&str, &str)],
) -> (String, RealNode) {
    let name = node_name(tag);
    let token = add_node(master, &name);
    let node = RealNode::start(dir, &master.mqtt, &name, &token, &["--no-network"], env);
    (name, node)
}

fn get_json(master: &Master, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = master.bramble(&all);
    if !out.status.success() {
        return Err(support::stderr(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", stdout(&out)))
}

fn ready_of(node: &Value) -> (String, String) {
    let condition = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    (
        condition["status"].as_str().unwrap_or("<none>").to_string(),
        condition["message"].as_str().unwrap_or("").to_string(),
    )
}

#[track_caller]
fn wait_ready(master: &Master, name: &str, status: &str) -> Value {
    wait_until(&format!("node {name} Ready={status}"), SETTLE, || {
        let node = get_json(master, &["node", name])?;
        if ready_of(&node).0 == status {
            Ok(node)
        } else {
            Err(node.to_string())
        }
    })
}

/// A pod of busybox containers `(name, shell script)` on `node`.
fn pod(name: &str, node: &str, containers: &[(&str, &str)], restart_policy: &str) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(c, script)| json!({"name": c, "image": IMAGE, "command": ["sh", "-c", script]}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
        },
    })
}

fn apply(master: &Master, object: &Value) {
    ok(master.bramble_stdin(&["apply", "-f", "-"], &object.to_string()));
}

/// Wait until `probe` accepts the pod's JSON.
#[track_caller]
fn wait_pod<T>(master: &Master, name: &str, what: &str, probe: impl Fn(&Value) -> Option<T>) -> T {
    wait_until(&format!("pod {name}: {what}"), SETTLE, || {
        let pod = get_json(master, &["pod", name])?;
        probe(&pod).ok_or_else(|| pod["status"].to_string())
    })
}

fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == container)
}

fn phase_is(phase: &'static str) -> impl Fn(&Value) -> Option<()> {
    move |pod| (pod["status"]["phase"] == phase).then_some(())
}

/// `bramble logs ARGS`, which must succeed.
fn logs(master: &Master, args: &[&str]) -> String {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    ok(master.bramble(&all))
}

#[test]
fn logs_through_the_master_with_bramble_and_kubectl() {
    let dir = tempfile::tempdir().expect("tmp");
    let master = start_master(dir.path());
    let (name, mut node) = join_real_node(dir.path(), &master, "logs", &[]);
    wait_ready(&master, &name, "True");

    // A pod that prints and exits: the whole log, its tail, through both CLIs.
    apply(
        &master,
        &pod(
            "printer",
            &name,
            &[(
                "app",
                "echo hello from bramble; for i in 1 2 3 4 5; do echo line $i; done",
            )],
            "Never",
        ),
    );
    wait_pod(&master, "printer", "Succeeded", phase_is("Succeeded"));
    let whole = "hello from bramble\nline 1\nline 2\nline 3\nline 4\nline 5\n";
    assert_eq!(logs(&master, &["printer"]), whole);
    assert_eq!(
        logs(&master, &["printer", "--tail", "2"]),
        "line 4\nline 5\n"
    );
    assert_eq!(ok(master.kubectl(&["logs", "printer"])), whole);
    assert_eq!(
        ok(master.kubectl(&["logs", "printer", "--tail=1"])),
        "line 5\n"
    );
    let stamped = ok(master.kubectl(&["logs", "printer", "--timestamps", "--tail=1"]));
    let (time, message) = stamped.trim_end().split_once(' ').expect("TIME MESSAGE");
    assert!(time.ends_with('Z') && time.contains('T'), "{stamped:?}");
    assert_eq!(message, "line 5");

    // -f: lines come while the container writes them.
    apply(
        &master,
        &pod(
            "ticker",
            &name,
            &[(
                "app",
                "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done",
            )],
            "Always",
        ),
    );
    wait_pod(&master, "ticker", "Running", phase_is("Running"));
    let mut follow = master.follow(support::bramble_bin(), &["logs", "-f", "ticker"]);
    follow.expect_line(SETTLE, |l| l == "tick 1");
    // Written after the request began: only a stream delivers these.
    follow.expect_line(SETTLE, |l| l == "tick 12");
    let mut kubectl = master.follow(
        support::kubectl_bin(),
        &["logs", "-f", "ticker", "--tail=1"],
    );
    let first = kubectl.expect_line(SETTLE, |l| l.starts_with("tick "));
    let n: u32 = first["tick ".len()..].parse().expect("tick number");
    let next = format!("tick {}", n + 3);
    kubectl.expect_line(SETTLE, |l| l == next);
    drop(follow);
    drop(kubectl);

    // --previous: the run before the restart, not the current one.
    apply(
        &master,
        &pod(
            "crasher",
            &name,
            &[(
                "app",
                "echo run $(cat /proc/sys/kernel/random/uuid); exit 3",
            )],
            "Always",
        ),
    );
    wait_pod(&master, "crasher", "restarted", |pod| {
        let status = container_status(pod, "app")?;
        (status["restartCount"].as_i64()? >= 1
            && status["lastState"]["terminated"]["exitCode"] == 3)
            .then_some(())
    });
    let current = logs(&master, &["crasher"]);
    let previous = logs(&master, &["crasher", "--previous"]);
    assert!(
        current.starts_with("run ") && previous.starts_with("run "),
        "{current:?} {previous:?}"
    );
    assert_eq!(
        previous.lines().count(),
        1,
        "only the previous run: {previous:?}"
    );
    assert_ne!(
        current, previous,
        "--previous shows the run before the current one"
    );

    // A two-container pod: -c picks one; without it the error names them.
    apply(
        &master,
        &pod(
            "duo",
            &name,
            &[
                ("web", "httpd -f -p 8080 -h /www"),
                (
                    "client",
                    "until wget -q -O - http://127.0.0.1:8080/index.html; do sleep 0.2; done; sleep 3600",
                ),
            ],
            "Always",
        ),
    );
    wait_until(
        "the client container reached httpd over localhost",
        SETTLE,
        || {
            let out = master.bramble(&["logs", "duo", "-c", "client"]);
            let text = stdout(&out);
            if text.contains("hello from bramble httpd") {
                Ok(())
            } else {
                Err(format!("{text}{}", support::stderr(&out)))
            }
        },
    );
    let error = fails(master.bramble(&["logs", "duo"]));
    assert!(
        error.contains(
            "a container name must be specified for pod duo, choose one of: [web client]"
        ),
        "{error}"
    );

    // Errors say what is wrong.
    let error = fails(master.bramble(&["logs", "nope"]));
    assert!(error.contains("pods \"nope\" not found"), "{error}");
    let error = fails(master.bramble(&["logs", "printer", "-c", "nope"]));
    assert!(
        error.contains("container nope is not valid for pod printer"),
        "{error}"
    );
    let error = fails(master.kubectl(&["logs", "crasher", "--tail=-5"]));
    assert!(!error.is_empty());

    // A simulated node keeps no logs, and says so.
    let sim_name = node_name("logs-sim");
    let sim_token = add_node(&master, &sim_name);
    let _sim = Agent::start(dir.path(), &master.mqtt, &sim_name, &sim_token, &[]);
    wait_ready(&master, &sim_name, "True");
    apply(
        &master,
        &pod("simulated", &sim_name, &[("app", "sleep 3600")], "Always"),
    );
    wait_pod(&master, "simulated", "Running", phase_is("Running"));
    let error = fails(master.bramble(&["logs", "simulated"]));
    assert!(error.contains("simulated runtime"), "{error}");

    // A node whose agent is gone: a clear error, not a hang.
    node.kill9();
    let error = fails(master.bramble(&["logs", "printer"]));
    assert!(
        error.contains(&format!("node {name} did not answer")),
        "{error}"
    );
    node.restart();
    wait_ready(&master, &name, "True");
    wait_until("logs again after the agent came back", SETTLE, || {
        let out = master.bramble(&["logs", "printer"]);
        (stdout(&out) == whole)
            .then_some(())
            .ok_or_else(|| support::stderr(&out))
    });
}

/// The pids of a pod's containers, from the node's cgroups (any process
/// whose cgroup path names the pod's UID).
fn pod_processes(node: &RealNode, uid: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = node
        .processes()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(uid))
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[test]
fn the_real_runtime_through_the_master() {
    let dir = tempfile::tempdir().expect("tmp");
    let master = start_master(dir.path());
    let (name, mut node) = join_real_node(dir.path(), &master, "life", &[]);
    wait_ready(&master, &name, "True");

    // Over its memory limit: OOMKilled, restarted, backing off.
    let mut hog = pod(
        "hog",
        &name,
        &[(
            "app",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        )],
        "Always",
    );
    hog["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "32Mi"}});
    apply(&master, &hog);
    wait_pod(&master, "hog", "OOMKilled and backing off", |pod| {
        let status = container_status(pod, "app")?;
        let oom = status["lastState"]["terminated"]["reason"] == "OOMKilled";
        let backoff = status["state"]["waiting"]["reason"] == "CrashLoopBackOff";
        (oom && backoff && status["restartCount"].as_i64()? >= 1).then_some(())
    });
    let table = ok(master.bramble(&["get", "pods", "hog"]));
    assert!(
        table.contains("CrashLoopBackOff") || table.contains("OOMKilled"),
        "{table}"
    );
    ok(master.bramble(&["delete", "pod", "hog"]));

    // A long-running pod survives its agent: same processes after a kill -9
    // and a restart, no restart counted, and the agent says it adopted it.
    apply(
        &master,
        &pod("keeper", &name, &[("app", "sleep 3600")], "Always"),
    );
    let uid = wait_pod(&master, "keeper", "Running", |pod| {
        (pod["status"]["phase"] == "Running")
            .then(|| pod["metadata"]["uid"].as_str().map(str::to_string))?
    });
    let before = pod_processes(&node, &uid);
    assert!(!before.is_empty(), "the pod's processes are in its cgroup");
    node.kill9();
    wait_ready(&master, &name, "Unknown");
    assert_eq!(
        pod_processes(&node, &uid),
        before,
        "containers outlive the agent"
    );
    let mark = node.agent.mark();
    node.restart();
    node.agent.wait_log(mark, "re-adopted running pods");
    wait_ready(&master, &name, "True");
    assert_eq!(pod_processes(&node, &uid), before, "adopted, not restarted");
    let keeper = get_json(&master, &["pod", "keeper"]).expect("get keeper");
    assert_eq!(
        container_status(&keeper, "app").expect("status")["restartCount"],
        0
    );

    // 100 pods created and deleted, ten at a time: nothing of them is left.
    for round in 0..10 {
        let names: Vec<String> = (0..10).map(|i| format!("cycle-{round}-{i}")).collect();
        for name_i in &names {
            apply(
                &master,
                &pod(name_i, &name, &[("app", "sleep 3600")], "Always"),
            );
        }
        for name_i in &names {
            wait_pod(&master, name_i, "Running", phase_is("Running"));
        }
        let mut delete = vec!["delete", "pod"];
        delete.extend(names.iter().map(String::as_str));
        ok(master.bramble(&delete));
        for name_i in &names {
            wait_until(&format!("pod {name_i} gone"), SETTLE, || {
                match get_json(&master, &["pod", name_i]) {
                    Err(e) if e.contains("not found") => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            });
        }
    }
    wait_until(
        "only keeper's processes, mounts and netns left",
        SETTLE,
        || {
            let processes = node.processes();
            let netns = node.netns_files();
            let mounts: Vec<String> = node
                .mounts()
                .into_iter()
                .filter(|m| !m.contains(&uid))
                .collect();
            if processes == before && netns.len() == 1 && mounts.is_empty() {
                Ok(())
            } else {
                Err(format!(
                "processes {processes:?} (keeper: {before:?}), netns {netns:?}, mounts {mounts:?}"
            ))
            }
        },
    );
    let pod_dirs = std::fs::read_dir(node.run_dir().join(&name).join("pods"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert!(pod_dirs <= 1, "{pod_dirs} pod dirs left in the run dir");

    // A device without the memory cgroup: NotReady, with the fix.
    let (bare, _bare) = join_real_node(
        dir.path(),
        &master,
        "nomem",
        &[("BRAMBLE_FAKE_CGROUP_CONTROLLERS", "cpu cpuacct pids")],
    );
    let node_json = wait_ready(&master, &bare, "False");
    let (_, message) = ready_of(&node_json);
    assert!(
        message.contains("cgroup_enable=memory cgroup_memory=1"),
        "{message}"
    );
    let described = ok(master.bramble(&["describe", "node", &bare]));
    assert!(
        described.contains("cgroup_enable=memory cgroup_memory=1"),
        "{described}"
    );
    let table = ok(master.bramble(&["get", "nodes", &bare]));
    assert!(table.contains("NotReady"), "{table}");

    // Graceful deletion: Terminating while the node stops the pod (sh as
    // PID 1 ignores SIGTERM, so it takes the whole 3 s), then gone.
    let mut slow = pod("slow-stop", &name, &[("app", "sleep 3600")], "Always");
    slow["spec"]["terminationGracePeriodSeconds"] = json!(3);
    apply(&master, &slow);
    let slow_uid = wait_pod(&master, "slow-stop", "Running", |pod| {
        (pod["status"]["phase"] == "Running")
            .then(|| pod["metadata"]["uid"].as_str().map(str::to_string))?
    });
    ok(master.bramble(&["delete", "pod", "slow-stop", "--wait=false"]));
    let table = ok(master.bramble(&["get", "pod", "slow-stop"]));
    assert!(table.contains("Terminating"), "{table}");
    assert!(
        !pod_processes(&node, &slow_uid).is_empty(),
        "still stopping"
    );
    wait_until(
        "slow-stop deleted once its node stopped it",
        SETTLE,
        || match get_json(&master, &["pod", "slow-stop"]) {
            Err(e) if e.contains("not found") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        pod_processes(&node, &slow_uid).is_empty(),
        "stopped before deleted"
    );
    // bramble delete and kubectl delete wait until the node stopped the pod
    // and it is gone; --grace-period=0 needs --force.
    let refused = fails(master.bramble(&["delete", "pod", "keeper", "--grace-period=0"]));
    assert!(refused.contains("--force"), "{refused}");
    apply(
        &master,
        &pod("waited", &name, &[("app", "sleep 3600")], "Always"),
    );
    let waited_uid = wait_pod(&master, "waited", "Running", |pod| {
        (pod["status"]["phase"] == "Running")
            .then(|| pod["metadata"]["uid"].as_str().map(str::to_string))?
    });
    ok(master.bramble(&["delete", "pod", "waited"]));
    let gone = get_json(&master, &["pod", "waited"]).expect_err("waited is gone");
    assert!(gone.contains("not found"), "{gone}");
    assert!(
        pod_processes(&node, &waited_uid).is_empty(),
        "waited stopped"
    );
    ok(master.kubectl(&["delete", "pod", "keeper", "--timeout=60s"]));
    let gone = get_json(&master, &["pod", "keeper"]).expect_err("keeper is gone");
    assert!(gone.contains("not found"), "{gone}");
    assert!(pod_processes(&node, &uid).is_empty(), "keeper stopped");
}
