//! End-to-end tests of a whole cluster with real processes: the real
//! `bramble master`, real `bramble-agent --runtime sim` processes (facts
//! faked per agent), the `bramble` CLI and the stock `kubectl`, over the
//! embedded broker or Debian's `mosquitto`. Every wait polls with a
//! deadline and fails with what it last saw; none is a bare sleep.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{add_node, mqtt_publish, ok, wait_until, Agent, Master, Mosquitto};

/// How long a pod or a node may take to get where a test expects it.
const SETTLE: Duration = Duration::from_secs(30);
/// The master's heartbeat settings: a node silent for 3 s is NotReady.
const FAST_HEARTBEATS: [&str; 4] = ["--heartbeat-seconds", "1", "--missed-heartbeats", "3"];

const GI: u64 = 1024 * 1024 * 1024;

fn start_master(dir: &Path, extra: &[&str]) -> Master {
    let mut flags = FAST_HEARTBEATS.to_vec();
    flags.extend_from_slice(extra);
    Master::start(&dir.join("data"), &flags)
}

fn get_json(master: &Master, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = master.bramble(&all);
    if !out.status.success() {
        return Err(support::stderr(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", support::stdout(&out)))
}

fn get_node(master: &Master, name: &str) -> Value {
    get_json(master, &["node", name]).expect("get node")
}

/// The `status` of the node's `Ready` condition (`True`, `False`, `Unknown`).
fn ready_of(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("<none>")
        .to_string()
}

/// Wait until the node's Ready condition has `status`; returns the node.
#[track_caller]
fn wait_ready(master: &Master, name: &str, status: &str, timeout: Duration) -> Value {
    wait_until(&format!("node {name} Ready={status}"), timeout, || {
        let node = get_json(master, &["node", name])?;
        if ready_of(&node) == status {
            Ok(node)
        } else {
            Err(node.to_string())
        }
    })
}

/// A pod of one sim container; `spec` is merged into its spec.
fn pod(name: &str, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1"}]},
    });
    if let (Some(target), Some(extra)) = (pod["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    pod
}

/// A pod whose container requests `memory` bytes.
fn pod_requesting(name: &str, memory: u64, spec: Value) -> Value {
    let mut pod = pod(name, spec);
    pod["spec"]["containers"][0]["resources"] =
        json!({"requests": {"memory": memory.to_string(), "cpu": "100m"}});
    pod
}

fn apply(master: &Master, object: &Value) {
    ok(master.bramble_stdin(&["apply", "-f", "-"], &object.to_string()));
}

/// Wait until the pod is Running; returns the node it runs on.
#[track_caller]
fn wait_running(master: &Master, name: &str) -> String {
    wait_until(&format!("pod {name} Running"), SETTLE, || {
        let pod = get_json(master, &["pod", name])?;
        if pod["status"]["phase"] == "Running" {
            Ok(pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string())
        } else {
            Err(pod.to_string())
        }
    })
}

/// The pod's `PodScheduled` condition.
fn scheduled_condition(pod: &Value) -> Option<Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
}

#[test]
fn join_good_token_runs_a_pod_and_bad_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = start_master(dir.path(), &[]);
    let token = add_node(&master, "pi-1");
    let other_token = add_node(&master, "pi-2");

    let pi1 = Agent::start(
        dir.path(),
        &master.mqtt,
        "pi-1",
        &token,
        &[("BRAMBLE_FAKE_ARCH", "aarch64")],
    );
    let node = wait_ready(&master, "pi-1", "True", SETTLE);
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/arch"], "arm64",
        "arch label from the agent's facts: {node}"
    );
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "pi-1");
    let cidr = node["spec"]["podCIDR"].as_str().unwrap_or_default();
    assert!(cidr.ends_with("/24"), "a /24 pod CIDR: {node}");
    let table = ok(master.bramble(&["get", "nodes"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("pi-1") && l.contains("Ready")),
        "{table}"
    );

    apply(&master, &pod("web", json!({})));
    assert_eq!(wait_running(&master, "web"), "pi-1");
    let table = ok(master.bramble(&["get", "pods"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web") && l.contains("Running")),
        "{table}"
    );

    // An agent claiming pi-2 with a token that is not pi-2's.
    let wrong = format!("{}x", &other_token[..other_token.len() - 1]);
    let mut impostor = Agent::start(dir.path(), &master.mqtt, "pi-2", &wrong, &[]);
    impostor.wait_log(0, "the master refused this node's token");
    // Give it a couple of heartbeats' worth of chances: it stays not Ready.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let node = get_node(&master, "pi-2");
        assert_ne!(ready_of(&node), "True", "refused node went Ready: {node}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(impostor.running(), "a refused agent keeps retrying");
    assert!(
        ok(master.bramble(&["get", "pod", "web", "-o", "json"])).contains("\"Running\""),
        "the good node is unaffected"
    );

    // Removing the node revokes its token and disconnects its agent.
    let mark = pi1.mark();
    ok(master.bramble(&["node", "rm", "pi-1"]));
    pi1.wait_log(mark, "the master refused this node's token");
    let nodes = ok(master.bramble(&["get", "nodes", "-o", "name"]));
    assert!(!nodes.contains("pi-1"), "{nodes}");
}

#[test]
fn scheduling_across_three_nodes_with_requests_selectors_and_taints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = start_master(dir.path(), &[]);
    let nodes = [
        ("pi-1", "x86_64", 4 * GI),
        ("pi-2", "aarch64", GI),
        ("pi-3", "x86_64", 8 * GI),
    ];
    let mut agents = Vec::new();
    for (name, arch, memory) in nodes {
        let token = add_node(&master, name);
        let memory = memory.to_string();
        agents.push(Agent::start(
            dir.path(),
            &master.mqtt,
            name,
            &token,
            &[
                ("BRAMBLE_FAKE_ARCH", arch),
                ("BRAMBLE_FAKE_MEMORY_BYTES", &memory),
                ("BRAMBLE_FAKE_CPUS", "4"),
            ],
        ));
    }
    ok(master.kubectl(&["taint", "nodes", "pi-3", "dedicated=edge:NoSchedule"]));
    for (name, _, _) in nodes {
        wait_ready(&master, name, "True", SETTLE);
    }
    let tainted = get_node(&master, "pi-3");
    assert_eq!(
        tainted["spec"]["taints"][0]["key"], "dedicated",
        "{tainted}"
    );

    // 2 GiB fits pi-1 only: pi-2 is too small and pi-3 is tainted.
    apply(&master, &pod_requesting("big", 2 * GI, json!({})));
    // arm64 only.
    apply(
        &master,
        &pod_requesting(
            "arm",
            256 * 1024 * 1024,
            json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}}),
        ),
    );
    // 6 GiB fits the tainted pi-3 only, and this pod tolerates the taint.
    apply(
        &master,
        &pod_requesting(
            "edge",
            6 * GI,
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}]}),
        ),
    );
    // 6 GiB without the toleration fits nowhere.
    apply(&master, &pod_requesting("untolerated", 6 * GI, json!({})));
    // 1 TiB fits nowhere.
    apply(&master, &pod_requesting("huge", 1024 * GI, json!({})));

    assert_eq!(wait_running(&master, "big"), "pi-1");
    assert_eq!(wait_running(&master, "arm"), "pi-2");
    assert_eq!(wait_running(&master, "edge"), "pi-3");

    for (name, must_mention) in [("huge", "Insufficient memory"), ("untolerated", "taint")] {
        let condition = wait_until(&format!("pod {name} PodScheduled=False"), SETTLE, || {
            let pod = get_json(&master, &["pod", name])?;
            match scheduled_condition(&pod) {
                Some(c) if c["status"] == "False" => Ok(c),
                _ => Err(pod.to_string()),
            }
        });
        assert_eq!(condition["reason"], "Unschedulable", "{condition}");
        let message = condition["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("0/3 nodes are available:"),
            "{name}: {message}"
        );
        assert!(message.contains(must_mention), "{name}: {message}");
        let pod = get_json(&master, &["pod", name]).expect("pod");
        assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
        assert!(
            pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty(),
            "{pod}"
        );
    }
    let event = wait_until("a FailedScheduling event for huge", SETTLE, || {
        let events = get_json(&master, &["events"])?;
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == "huge")
            .cloned()
            .ok_or_else(|| events.to_string())
    });
    assert!(
        event["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("0/3 nodes are available:"),
        "{event}"
    );
    assert_eq!(event["type"], "Warning", "{event}");
}

#[test]
fn killing_an_agent_flips_its_node_not_ready_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = start_master(dir.path(), &[]);
    let token = add_node(&master, "pi-1");
    let mut agent = Agent::start(dir.path(), &master.mqtt, "pi-1", &token, &[]);
    wait_ready(&master, "pi-1", "True", SETTLE);

    agent.kill9();
    let node = wait_ready(&master, "pi-1", "Unknown", Duration::from_secs(10));
    let table = ok(master.bramble(&["get", "nodes"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("pi-1") && l.contains("NotReady")),
        "{table}"
    );
    let table = ok(master.kubectl(&["get", "nodes"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("pi-1") && l.contains("NotReady")),
        "kubectl shows it the same: {table}"
    );
    let condition = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert!(
        !condition["reason"].as_str().unwrap_or_default().is_empty(),
        "a reason for NotReady: {condition}"
    );

    agent.restart();
    wait_ready(&master, "pi-1", "True", SETTLE);

    // A frozen agent keeps its connection (no last will): the missed
    // heartbeats (3 x 1 s) make the node NotReady, and thawing it brings
    // it back.
    agent.signal("STOP");
    let node = wait_ready(&master, "pi-1", "Unknown", Duration::from_secs(10));
    let message = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    assert!(message.contains("stopped reporting"), "{node}");
    agent.signal("CONT");
    wait_ready(&master, "pi-1", "True", SETTLE);
}

#[test]
fn restarting_the_master_redelivers_desired_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port().to_string();
    let mqtt_listen = format!("127.0.0.1:{port}");
    let mut master = start_master(dir.path(), &["--mqtt-listen", &mqtt_listen]);
    let token = add_node(&master, "pi-1");
    let mut agent = Agent::start(dir.path(), &master.mqtt, "pi-1", &token, &[]);
    wait_ready(&master, "pi-1", "True", SETTLE);
    apply(&master, &pod("before", json!({})));
    assert_eq!(wait_running(&master, "before"), "pi-1");

    master.kill9();
    let mark = agent.mark();
    let master = start_master(dir.path(), &["--mqtt-listen", &mqtt_listen]);
    assert_eq!(master.mqtt, mqtt_listen);
    // The agent reconnects on its own.
    agent.wait_log(mark, "connected to the master's mqtt broker");
    apply(&master, &pod("after", json!({})));
    assert_eq!(wait_running(&master, "after"), "pi-1");
    wait_ready(&master, "pi-1", "True", SETTLE);
    let before = get_json(&master, &["pod", "before"]).expect("pod");
    assert_eq!(before["status"]["phase"], "Running", "{before}");
    assert!(
        agent
            .log_text()
            .lines()
            .skip(mark)
            .any(|l| l.contains("applying desired state") && l.contains("pods=2")),
        "the agent applied the new desired state:\n{}",
        agent.log_text()
    );

    // An agent that lost its local copy gets the whole state from the
    // restarted master, with nothing changed in the store.
    agent.kill9();
    std::fs::remove_dir_all(agent.dir.join("state")).expect("remove the agent's state");
    let mark = agent.mark();
    agent.restart();
    let applied = agent.wait_log(mark, "applying desired state");
    assert!(applied.contains("pods=2"), "{applied}");
    agent.wait_log(mark, "pod default/before is Running");
    agent.wait_log(mark, "pod default/after is Running");
}

#[test]
fn an_agent_started_without_the_broker_runs_from_its_local_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port().to_string();
    let mqtt_listen = format!("127.0.0.1:{port}");
    let mut master = start_master(dir.path(), &["--mqtt-listen", &mqtt_listen]);
    let token = add_node(&master, "pi-1");
    let mut agent = Agent::start(dir.path(), &master.mqtt, "pi-1", &token, &[]);
    wait_ready(&master, "pi-1", "True", SETTLE);
    apply(&master, &pod("kept", json!({})));
    assert_eq!(wait_running(&master, "kept"), "pi-1");

    // No broker at all, then a fresh agent process.
    master.kill9();
    let mark = agent.mark();
    agent.restart();
    let loaded = agent.wait_log(mark, "loaded the local desired state");
    assert!(loaded.contains("pods=1"), "{loaded}");
    agent.wait_log(mark, "cannot reach the master's mqtt broker");
    // The simulated runtime keeps nothing across agent restarts: the pod
    // runs again from the agent's own copy, with no master.
    agent.wait_log(mark, "pod default/kept is Running");
    assert!(agent.running(), "the agent runs without its broker");

    let master = start_master(dir.path(), &["--mqtt-listen", &mqtt_listen]);
    agent.wait_log(mark, "connected to the master's mqtt broker");
    wait_ready(&master, "pi-1", "True", SETTLE);
    assert_eq!(wait_running(&master, "kept"), "pi-1");
}

#[test]
fn the_same_flow_through_mosquitto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password = "master-secret-for-the-test";
    let broker = Mosquitto::start(dir.path(), &[("bramble-master", password)]);
    let url = format!("mqtt://{}", broker.addr());
    let master = start_master(
        dir.path(),
        &[
            "--mqtt-url",
            &url,
            "--mqtt-username",
            "bramble-master",
            "--mqtt-password",
            password,
        ],
    );
    assert_eq!(master.mqtt, broker.addr());
    let token = add_node(&master, "pi-1");
    broker.add_user("pi-1", &token);
    let agent = Agent::start(dir.path(), &broker.addr(), "pi-1", &token, &[]);
    wait_ready(&master, "pi-1", "True", SETTLE);
    apply(&master, &pod("web", json!({})));
    assert_eq!(wait_running(&master, "web"), "pi-1");

    // The broker's last will reaches the master the same way.
    let mut agent = agent;
    agent.kill9();
    wait_ready(&master, "pi-1", "Unknown", Duration::from_secs(10));
    agent.restart();
    wait_ready(&master, "pi-1", "True", SETTLE);

    // A wrong token is refused by mosquitto as by the embedded broker.
    let other = add_node(&master, "pi-2");
    broker.add_user("pi-2", &other);
    let impostor = Agent::start(dir.path(), &broker.addr(), "pi-2", "wrong", &[]);
    impostor.wait_log(0, "the master refused this node's token");
    assert_ne!(ready_of(&get_node(&master, "pi-2")), "True");
}

#[test]
fn garbage_mqtt_payloads_leave_master_and_agents_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = start_master(dir.path(), &[]);
    let token = add_node(&master, "pi-1");
    let mut agent = Agent::start(dir.path(), &master.mqtt, "pi-1", &token, &[]);
    wait_ready(&master, "pi-1", "True", SETTLE);
    apply(&master, &pod("before", json!({})));
    assert_eq!(wait_running(&master, "before"), "pi-1");

    // As the node itself (the embedded broker knows only the master and the
    // nodes): garbage reports (three times the same), presence and desired
    // states, one of them retained.
    let mark = agent.mark();
    let topic = |leaf: &str| format!("bramble/bramble/nodes/pi-1/{leaf}");
    let as_node = ("pi-1", token.as_str());
    let garbage: &[u8] = b"\xff\x00garbage\x13\x37";
    for _ in 0..3 {
        mqtt_publish(&master.mqtt, as_node, &topic("report"), garbage, false);
    }
    mqtt_publish(&master.mqtt, as_node, &topic("report"), b"", false);
    mqtt_publish(&master.mqtt, as_node, &topic("presence"), garbage, false);
    mqtt_publish(
        &master.mqtt,
        as_node,
        &topic("desired"),
        &[0xff; 4096],
        false,
    );
    mqtt_publish(&master.mqtt, as_node, &topic("desired"), garbage, true);

    agent.wait_log(mark, "dropped an undecodable desired state");
    wait_until("the master logs the garbage report", SETTLE, || {
        let log = master.log.lock().expect("log");
        let dropped = log
            .iter()
            .filter(|l| l.contains("dropped a message"))
            .count();
        if dropped >= 1 {
            Ok(())
        } else {
            Err(log.join("\n"))
        }
    });

    // Both keep serving: the API answers, the agent keeps its pod (also
    // when it restarts with garbage retained on its desired topic) and
    // applies a later, valid desired state.
    assert!(
        agent.running(),
        "agent still running:\n{}",
        agent.log_text()
    );
    let mark = agent.mark();
    agent.restart();
    // (Whether the broker hands the retained garbage to the resumed session
    // again is its business; either way the agent runs from its copy.)
    agent.wait_log(mark, "pod default/before is Running");
    wait_ready(&master, "pi-1", "True", SETTLE);
    let before = get_json(&master, &["pod", "before"]).expect("pod");
    assert_eq!(before["status"]["phase"], "Running", "{before}");
    apply(&master, &pod("after", json!({})));
    assert_eq!(wait_running(&master, "after"), "pi-1");
    assert!(
        agent.running(),
        "agent still running:\n{}",
        agent.log_text()
    );

    // Logged once per reason, not per message.
    let log = master.log.lock().expect("log").clone();
    let dropped: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("dropped a message"))
        .collect();
    assert!(
        (1..=2).contains(&dropped.len()),
        "the same garbage is logged once per reason: {dropped:#?}"
    );
}

/// `bramble master` with `flags` on `data_dir` must refuse to start: its
/// exit status is an error and stderr says why (returned).
#[track_caller]
fn master_refuses(data_dir: &Path, flags: &[&str]) -> String {
    let mut child = std::process::Command::new(support::bramble_bin())
        .arg("master")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
        .args(flags)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn bramble master");
    let status = wait_until("the master to exit", SETTLE, || {
        child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_string())
    });
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(
        !status.success(),
        "the master started with {flags:?}:\n{stderr}"
    );
    stderr
}

fn pod_cidr_of(master: &Master, node: &str) -> String {
    get_node(master, node)["spec"]["podCIDR"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn pod_cidr_flags_size_the_nodes_blocks_and_a_conflicting_restart_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut master = start_master(dir.path(), &["--node-cidr-mask-size", "26"]);
    let out = ok(master.bramble(&["node", "add", "--count", "3", "--prefix", "pi-"]));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(pod_cidr_of(&master, "pi-1"), "10.244.0.0/26");
    assert_eq!(pod_cidr_of(&master, "pi-2"), "10.244.0.64/26");
    assert_eq!(pod_cidr_of(&master, "pi-3"), "10.244.0.128/26");
    let table = ok(master.bramble(&["get", "nodes"]));
    assert!(table.contains("10.244.0.64/26"), "{table}");
    assert!(master.stop().success());

    // A cluster range that does not hold the blocks nodes have is refused.
    let refused = master_refuses(&data, &["--cluster-cidr", "10.10.0.0/16"]);
    assert!(
        refused.contains("--cluster-cidr 10.10.0.0/16 does not contain pod CIDR 10.244.0.0/26 of existing node pi-1"),
        "{refused}"
    );
    // So are a mask that does not fit the range and a malformed range.
    let refused = master_refuses(&data, &["--node-cidr-mask-size", "12"]);
    assert!(
        refused.contains("--node-cidr-mask-size 12 does not fit --cluster-cidr 10.244.0.0/16"),
        "{refused}"
    );
    let refused = master_refuses(&data, &["--cluster-cidr", "10.244.0.0"]);
    assert!(
        refused.contains("--cluster-cidr \"10.244.0.0\" is not an IPv4 CIDR"),
        "{refused}"
    );

    // Back to the default /24s: the nodes keep their /26s, a new node gets
    // the first /24 that overlaps none of them.
    let mut master = start_master(dir.path(), &[]);
    add_node(&master, "pi-4");
    assert_eq!(pod_cidr_of(&master, "pi-1"), "10.244.0.0/26");
    assert_eq!(pod_cidr_of(&master, "pi-4"), "10.244.1.0/24");
    assert!(master.stop().success());

    // A tiny range fills up: a registration that does not fit is refused
    // whole, with what to change.
    let small = tempfile::tempdir().expect("tempdir");
    let master = start_master(
        small.path(),
        &[
            "--cluster-cidr",
            "10.99.0.0/29",
            "--node-cidr-mask-size",
            "30",
        ],
    );
    let refused =
        support::fails(master.bramble(&["node", "add", "--count", "3", "--prefix", "x-"]));
    assert!(
        refused.contains("registering 3 node(s) needs more pod CIDRs than are free: 2 /30 block(s) of --cluster-cidr 10.99.0.0/29 are left"),
        "{refused}"
    );
    let nodes = get_json(&master, &["nodes"]).expect("nodes");
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(0), "{nodes}");
}
