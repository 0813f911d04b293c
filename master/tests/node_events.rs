//! The kubelet's Events, end to end: a real `bramble-agent` runs real
//! containers, the stock `kubectl get events` and `kubectl describe` show
//! what the node did (`Created`, `Started`, `BackOff`, `Unhealthy`,
//! `Killing`, `FailedMount`, `ErrImageNeverPull`, `Starting`, `NodeReady`),
//! deduplicated with a `count`; and a node cannot write Events about
//! another node's pods.
//!
//! Every wait polls with a deadline; nothing is left behind when a test
//! fails ([`RealNode`] cleans up on drop).

mod support;

use std::time::Duration;

use bramble_common::wire::{self, Message, NodeEvent, NodeEvents};
use serde_json::{json, Value};
use support::real::{RealNode, IMAGE};
use support::{add_node, ok, wait_until, Master};

/// How long a pod or a node may take to get where a test expects it.
const SETTLE: Duration = Duration::from_secs(60);

/// Every Event, as the stock kubectl lists them.
fn events(master: &Master) -> Result<Vec<Value>, String> {
    let out = master.kubectl(&["get", "events", "-A", "-o", "json"]);
    if !out.status.success() {
        return Err(support::stderr(&out));
    }
    let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Wait for an Event about `name` with `reason` whose message contains
/// `text` and that `accept` takes; returns it.
#[track_caller]
fn wait_event(
    master: &Master,
    name: &str,
    reason: &str,
    text: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(&format!("event {reason} about {name}"), SETTLE, || {
        let all = events(master)?;
        all.iter()
            .find(|e| {
                e["involvedObject"]["name"] == name
                    && e["reason"] == reason
                    && e["message"].as_str().unwrap_or("").contains(text)
                    && accept(e)
            })
            .cloned()
            .ok_or_else(|| {
                all.iter()
                    .map(|e| {
                        format!(
                            "{} {} {} x{} {}",
                            e["involvedObject"]["name"],
                            e["reason"],
                            e["type"],
                            e["count"],
                            e["message"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    })
}

fn any(_: &Value) -> bool {
    true
}

fn busybox(name: &str, node: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "command": ["sh", "-c", script]}],
        },
    })
}

fn apply(master: &Master, object: &Value) {
    ok(master.bramble_stdin(&["apply", "-f", "-"], &object.to_string()));
}

#[test]
fn the_kubelets_events_through_kubectl() {
    let dir = tempfile::tempdir().expect("tmp");
    let master = Master::start(&dir.path().join("data"), &[]);
    let name = format!("events-{}", std::process::id());
    let token = add_node(&master, &name);
    let _node = RealNode::start(
        dir.path(),
        &master.mqtt,
        &name,
        &token,
        &["--no-network"],
        &[],
    );

    // The node's own events.
    let starting = wait_event(&master, &name, "Starting", "Starting bramble-agent", any);
    assert_eq!(starting["source"]["component"], "kubelet");
    assert_eq!(starting["source"]["host"], name.as_str());
    assert_eq!(starting["involvedObject"]["kind"], "Node");
    assert_eq!(starting["metadata"]["namespace"], "default");
    wait_event(
        &master,
        &name,
        "NodeReady",
        &format!("Node {name} status is now: NodeReady"),
        any,
    );

    // A crash loop: Created and Started counted, then BackOff.
    apply(&master, &busybox("crashy", &name, "exit 1"));
    let started = wait_event(&master, "crashy", "Started", "Started container app", |e| {
        e["count"].as_u64().unwrap_or(0) >= 2
    });
    assert_eq!(started["type"], "Normal");
    assert_eq!(
        started["involvedObject"]["fieldPath"],
        "spec.containers{app}"
    );
    assert_eq!(started["involvedObject"]["kind"], "Pod");
    assert_ne!(started["firstTimestamp"], started["lastTimestamp"]);
    wait_event(&master, "crashy", "Created", "Created container: app", any);
    let backoff = wait_event(
        &master,
        "crashy",
        "BackOff",
        "Back-off restarting failed container app in pod crashy_default(",
        any,
    );
    assert_eq!(backoff["type"], "Warning");
    let describe = ok(master.kubectl(&["describe", "pod", "crashy"]));
    assert!(
        describe.contains("Events:")
            && describe.contains("BackOff")
            && describe.contains("kubelet"),
        "kubectl describe pod shows no kubelet events:\n{describe}"
    );

    // A failing liveness probe: Unhealthy with the probe's output, Killing.
    let mut probed = busybox("probed", &name, "sleep 3600");
    probed["spec"]["containers"][0]["livenessProbe"] = json!({
        "exec": {"command": ["sh", "-c", "echo the-probe-said-no; exit 1"]},
        "periodSeconds": 1,
        "failureThreshold": 2,
    });
    apply(&master, &probed);
    wait_event(
        &master,
        "probed",
        "Unhealthy",
        "Liveness probe failed: the-probe-said-no",
        |e| e["type"] == "Warning",
    );
    wait_event(
        &master,
        "probed",
        "Killing",
        "Container app failed liveness probe, will be restarted",
        any,
    );

    // A missing ConfigMap: FailedMount, and the pod starts once it exists.
    let mut mounts = busybox("mounts", &name, "sleep 3600");
    mounts["spec"]["volumes"] = json!([{"name": "cfg", "configMap": {"name": "absent"}}]);
    mounts["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "cfg", "mountPath": "/cfg"}]);
    apply(&master, &mounts);
    wait_event(
        &master,
        "mounts",
        "FailedMount",
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found",
        |e| e["type"] == "Warning" && e["involvedObject"]["fieldPath"].is_null(),
    );
    apply(
        &master,
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "absent"}, "data": {"k": "v"},
        }),
    );
    wait_event(&master, "mounts", "Started", "Started container app", any);

    // An image that is not on the node, with pull policy Never.
    let mut never = busybox("never", &name, "true");
    never["spec"]["containers"][0]["image"] = json!("bramble.test/absent:1");
    never["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
    apply(&master, &never);
    wait_event(
        &master,
        "never",
        "ErrImageNeverPull",
        "bramble.test/absent:1",
        |e| e["type"] == "Warning",
    );

    // Deleting a pod stops its running containers: Killing, recorded
    // although the pod is gone by the time the master hears of it.
    ok(master.kubectl(&["delete", "pod", "mounts"]));
    wait_event(&master, "mounts", "Killing", "Stopping container app", any);
}

#[test]
fn a_node_cannot_write_events_about_another_nodes_pods() {
    let dir = tempfile::tempdir().expect("tmp");
    let master = Master::start(&dir.path().join("data"), &[]);
    let owner = format!("owner-{}", std::process::id());
    let intruder = format!("intruder-{}", std::process::id());
    add_node(&master, &owner);
    let token = add_node(&master, &intruder);
    apply(&master, &busybox("victim", &owner, "sleep 3600"));
    let uid = wait_until("the victim pod", SETTLE, || {
        let out = master.kubectl(&["get", "pod", "victim", "-o", "jsonpath={.metadata.uid}"]);
        let uid = support::stdout(&out);
        if out.status.success() && !uid.trim().is_empty() {
            Ok(uid.trim().to_string())
        } else {
            Err(support::stderr(&out))
        }
    });
    let event = |kind: &str, name: &str, namespace: &str, uid: &str, reason: &str| NodeEvent {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
        field_path: String::new(),
        warning: true,
        reason: reason.into(),
        message: "forged".into(),
        count: 1,
        first_seconds_ago: 0,
        last_seconds_ago: 0,
    };
    let topic = wire::report_topic("bramble", &intruder).expect("topic");
    let forged = wire::encode(&Message::Events(NodeEvents {
        seq: 1,
        events: vec![
            event("Pod", "victim", "default", &uid, "Forged"),
            event("Node", &owner, "", &owner, "Forged"),
        ],
    }))
    .expect("encode");
    support::mqtt_publish(&master.mqtt, (&intruder, &token), &topic, &forged, false);
    // Then one the intruder may send: about itself. Dispatch handles a
    // node's messages in order, so once this one is recorded the forged
    // ones were seen and refused.
    let own = wire::encode(&Message::Events(NodeEvents {
        seq: 2,
        events: vec![event("Node", &intruder, "", &intruder, "Honest")],
    }))
    .expect("encode");
    support::mqtt_publish(&master.mqtt, (&intruder, &token), &topic, &own, false);
    wait_event(&master, &intruder, "Honest", "forged", any);
    let all = events(&master).expect("events");
    let forged: Vec<&Value> = all.iter().filter(|e| e["reason"] == "Forged").collect();
    assert!(forged.is_empty(), "forged events were recorded: {forged:?}");
}
