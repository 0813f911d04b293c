//! End-to-end test of taint-based eviction tuned for edge links: the real
//! `bramble master`, real `bramble-agent --runtime sim` nodes whose agents
//! are killed, and the stock `kubectl`. A node whose agent vanishes gets the
//! `node.kubernetes.io/unreachable` taints; its pods go after their
//! `tolerationSeconds` and are replaced on another node, except on a node
//! annotated `bramble.io/autonomy-duration: "0"`; when the agent comes back
//! the taints go and the replaced pods are stopped. Every wait polls with a
//! deadline and fails with what it last saw.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{ok, wait_until, Agent, Master};

const SETTLE: Duration = Duration::from_secs(60);

/// A Deployment of 2 pods on nodes labelled `{label}=yes` that tolerate an
/// unreachable node for 2 s (instead of the default 300 s).
fn deployment(name: &str, label: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      nodeSelector:
        {label}: \"yes\"
      tolerations:
      - key: node.kubernetes.io/unreachable
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 2
      containers:
      - name: c
        image: busybox:1.36
"
    )
}

fn join(master: &Master, dir: &Path, name: &str) -> Agent {
    let out = ok(master.bramble(&["node", "add", name]));
    let token = out.split_whitespace().nth(1).expect("token").to_string();
    let agent = Agent::start(dir, &master.mqtt, name, &token, &[]);
    wait_ready(master, name, "True");
    agent
}

#[track_caller]
fn wait_ready(master: &Master, name: &str, want: &str) {
    wait_until(&format!("node {name} Ready={want}"), SETTLE, || {
        let out = master.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        match support::stdout(&out).trim() {
            s if s == want => Ok(()),
            other => Err(format!("{other} {}", support::stderr(&out))),
        }
    });
}

fn get_json(master: &Master, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = master.kubectl(&all);
    if !out.status.success() {
        return Err(support::stderr(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", support::stdout(&out)))
}

/// (name, node, terminating) of the pods of `app`.
fn pods(master: &Master, app: &str) -> Result<Vec<(String, String, bool)>, String> {
    let list = get_json(master, &["pods", "-l", &format!("app={app}")])?;
    Ok(list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p["metadata"]["deletionTimestamp"].is_string(),
            )
        })
        .collect())
}

fn running_on(master: &Master, app: &str, node: &str) -> Result<usize, String> {
    let list = get_json(master, &["pods", "-l", &format!("app={app}")])?;
    Ok(list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"] == node
                && p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count())
}

fn taint_keys(master: &Master, node: &str) -> Vec<String> {
    get_json(master, &["node", node])
        .map(|n| {
            n["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pods_of_an_unreachable_node_are_evicted_after_their_toleration_unless_the_node_is_autonomous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(
        &dir.path().join("data"),
        &["--heartbeat-seconds", "1", "--missed-heartbeats", "3"],
    );
    let mut a = join(&master, dir.path(), "ev-a");
    let _b = join(&master, dir.path(), "ev-b");
    let mut c = join(&master, dir.path(), "ev-c");
    ok(master.kubectl(&["label", "node", "ev-a", "movable=yes"]));
    ok(master.kubectl(&["label", "node", "ev-c", "autonomous=yes"]));
    ok(master.kubectl(&["annotate", "node", "ev-c", "bramble.io/autonomy-duration=0"]));
    for (name, label) in [("movable", "movable"), ("autonomous", "autonomous")] {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, deployment(name, label)).expect("write");
        ok(master.kubectl(&["apply", "-f", file.to_str().expect("path")]));
    }
    wait_until(
        "2 movable pods on ev-a and 2 autonomous on ev-c",
        SETTLE,
        || match (
            running_on(&master, "movable", "ev-a")?,
            running_on(&master, "autonomous", "ev-c")?,
        ) {
            (2, 2) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let originals: Vec<String> = pods(&master, "movable")
        .expect("pods")
        .into_iter()
        .map(|p| p.0)
        .collect();
    // ev-b may now take the movable pods too.
    ok(master.kubectl(&["label", "node", "ev-b", "movable=yes"]));

    // Both agents vanish.
    a.kill9();
    c.kill9();
    wait_ready(&master, "ev-a", "Unknown");
    wait_ready(&master, "ev-c", "Unknown");
    wait_until("the unreachable taints", SETTLE, || {
        let (ta, tc) = (taint_keys(&master, "ev-a"), taint_keys(&master, "ev-c"));
        let want = [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute",
        ];
        if want
            .iter()
            .all(|w| ta.iter().any(|t| t == w) && tc.iter().any(|t| t == w))
        {
            Ok(())
        } else {
            Err(format!("ev-a {ta:?}, ev-c {tc:?}"))
        }
    });
    let node = get_json(&master, &["node", "ev-a"]).expect("node");
    let no_execute = node["spec"]["taints"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["effect"] == "NoExecute"))
        .cloned()
        .expect("NoExecute taint");
    assert!(no_execute["timeAdded"].is_string(), "{no_execute}");

    // The movable pods are evicted after 2 s and replaced on ev-b.
    wait_until("the movable pods replaced on ev-b", SETTLE, || {
        let all = pods(&master, "movable")?;
        let old_terminating = all
            .iter()
            .filter(|p| originals.contains(&p.0) && p.2)
            .count();
        let on_b = running_on(&master, "movable", "ev-b")?;
        if old_terminating == 2 && on_b == 2 {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });
    let events = get_json(
        &master,
        &["events", "--field-selector", "reason=TaintManagerEviction"],
    )
    .expect("events");
    let messages: Vec<String> = events["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    for pod in &originals {
        assert!(
            messages.contains(&format!("Marking for deletion Pod default/{pod}")),
            "{messages:?}"
        );
    }

    // ev-c's taint is as old and its pods tolerate it for 2 s as well, but
    // the node is autonomous: wait past the toleration and check.
    let tc = get_json(&master, &["node", "ev-c"]).expect("node");
    let added = tc["spec"]["taints"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["effect"] == "NoExecute"))
        .and_then(|t| t["timeAdded"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .expect("timeAdded");
    wait_until("5 s past the autonomous node's taint", SETTLE, || {
        let past = jiff::Timestamp::now().as_second() - added.as_second();
        if past >= 5 {
            Ok(())
        } else {
            Err(format!("{past} s"))
        }
    });
    // The movable ones were evicted in that time; the autonomous ones stay.
    let autonomous = pods(&master, "autonomous").expect("pods");
    assert_eq!(autonomous.len(), 2, "{autonomous:?}");
    assert!(
        autonomous.iter().all(|p| !p.2 && p.1 == "ev-c"),
        "{autonomous:?}"
    );

    // ev-a comes back: its taints go and the replaced pods are stopped.
    a.restart();
    wait_ready(&master, "ev-a", "True");
    wait_until("ev-a untainted", SETTLE, || {
        let t = taint_keys(&master, "ev-a");
        if t.is_empty() {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    wait_until("the replaced pods gone", SETTLE, || {
        let all = pods(&master, "movable")?;
        if all.len() == 2 && all.iter().all(|p| p.1 == "ev-b" && !p.2) {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });
    // kubectl drain: cordons ev-b and evicts its pods through the eviction
    // subresource; they come back on ev-a.
    let drained = ok(master.kubectl(&["drain", "ev-b", "--ignore-daemonsets", "--timeout=60s"]));
    assert!(
        drained.contains("evicting pod default/movable-"),
        "{drained}"
    );
    assert!(drained.contains("evicted"), "{drained}");
    let node = get_json(&master, &["node", "ev-b"]).expect("node");
    assert_eq!(node["spec"]["unschedulable"], true);
    wait_until("the drained pods running on ev-a", SETTLE, || {
        match (
            running_on(&master, "movable", "ev-a")?,
            pods(&master, "movable")?.len(),
        ) {
            (2, 2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    ok(master.kubectl(&["uncordon", "ev-b"]));
    let node = get_json(&master, &["node", "ev-b"]).expect("node");
    assert!(node["spec"]["unschedulable"].is_null() || node["spec"]["unschedulable"] == false);

    // ev-c comes back with its pods never disturbed.
    c.restart();
    wait_ready(&master, "ev-c", "True");
    wait_until("autonomous pods running on ev-c", SETTLE, || {
        let after = pods(&master, "autonomous")?;
        let names = |v: &[(String, String, bool)]| {
            let mut n: Vec<String> = v.iter().map(|p| p.0.clone()).collect();
            n.sort();
            n
        };
        if names(&after) == names(&autonomous) && running_on(&master, "autonomous", "ev-c")? == 2 {
            Ok(())
        } else {
            Err(format!("{after:?}"))
        }
    });
}
