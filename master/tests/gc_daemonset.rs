//! End-to-end tests of the garbage collector, namespace deletion and the
//! DaemonSet controller, driven as a user drives Kubernetes: the real
//! `bramble master`, real `bramble-agent --runtime sim` nodes and the stock
//! `kubectl` (`delete --cascade=orphan|foreground|background`, `delete
//! namespace`, `label`, `taint`, `set image`, `rollout status`). Every wait
//! polls with a deadline and fails with what it last saw.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{fails, ok, wait_until, Agent, Master};

/// How long the cluster may take to get where a test expects it.
const SETTLE: Duration = Duration::from_secs(60);

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
";

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: probe
spec:
  selector:
    matchLabels:
      app: probe
  template:
    metadata:
      labels:
        app: probe
    spec:
      containers:
      - name: probe
        image: busybox:1.36
";

const SENSOR_DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: sensor
spec:
  selector:
    matchLabels:
      app: sensor
  template:
    metadata:
      labels:
        app: sensor
    spec:
      nodeSelector:
        sensor: \"yes\"
      containers:
      - name: sensor
        image: busybox:1.36
";

/// Adds `name` to the cluster and starts its sim agent.
fn join(master: &Master, dir: &Path, name: &str) -> Agent {
    let out = ok(master.bramble(&["node", "add", name]));
    let token = out.split_whitespace().nth(1).expect("token").to_string();
    let agent = Agent::start(dir, &master.mqtt, name, &token, &[]);
    wait_until(&format!("node {name} Ready"), SETTLE, || {
        let out = master.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        match support::stdout(&out).trim() {
            "True" => Ok(()),
            other => Err(format!("{other} {}", support::stderr(&out))),
        }
    });
    agent
}

/// A master with fast heartbeats and `nodes` sim agents, all Ready.
fn cluster(dir: &Path, nodes: &[&str]) -> (Master, Vec<Agent>) {
    let master = Master::start(
        &dir.join("data"),
        &["--heartbeat-seconds", "1", "--missed-heartbeats", "3"],
    );
    let agents = nodes.iter().map(|name| join(&master, dir, name)).collect();
    (master, agents)
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

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn apply(master: &Master, dir: &Path, file: &str, manifest: &str) {
    let path = dir.join(file);
    std::fs::write(&path, manifest).expect("write manifest");
    ok(master.kubectl(&["apply", "-f", path.to_str().expect("path")]));
}

/// Waits until `count` Running, not deleting pods match `selector` in
/// `namespace` and no other pod of it is left; returns them.
#[track_caller]
fn wait_running(master: &Master, namespace: &str, selector: &str, count: usize) -> Vec<Value> {
    wait_until(
        &format!("{count} running pods {selector} in {namespace}"),
        SETTLE,
        || {
            let all = items(&get_json(
                master,
                &["pods", "-n", namespace, "-l", selector],
            )?);
            let running = all
                .iter()
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .count();
            if running == count && all.len() == count {
                Ok(all)
            } else {
                Err(format!(
                    "{running} running of {}: {:?}",
                    all.len(),
                    all.iter().map(name_of).collect::<Vec<_>>()
                ))
            }
        },
    )
}

#[track_caller]
fn wait_gone(master: &Master, what: &[&str]) {
    wait_until(&format!("{what:?} gone"), SETTLE, || {
        let list = get_json(master, what)?;
        let left = items(&list);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                left.iter().map(name_of).collect::<Vec<_>>()
            ))
        }
    });
}

#[test]
fn deleting_owners_cascades_orphans_or_waits_and_a_namespace_deletion_empties_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, _agents) = cluster(dir.path(), &["gc-a"]);
    ok(master.kubectl(&["create", "namespace", "shop"]));

    // --cascade=orphan: the ReplicaSet and its pods stay, without the
    // reference to the Deployment.
    apply(&master, dir.path(), "web.yaml", DEPLOYMENT);
    let pods = wait_running(&master, "shop", "app=web", 3);
    ok(master.kubectl(&[
        "delete",
        "deployment",
        "web",
        "-n",
        "shop",
        "--cascade=orphan",
    ]));
    let out = fails(master.kubectl(&["get", "deployment", "web", "-n", "shop"]));
    assert!(out.contains("not found"), "{out}");
    let rs = items(&get_json(&master, &["rs", "-n", "shop", "-l", "app=web"]).expect("rs"));
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert!(
        rs[0]["metadata"]["ownerReferences"].is_null(),
        "orphaned: {}",
        rs[0]["metadata"]
    );
    let after = wait_running(&master, "shop", "app=web", 3);
    let names = |pods: &[Value]| {
        let mut n: Vec<String> = pods.iter().map(name_of).collect();
        n.sort();
        n
    };
    assert_eq!(names(&after), names(&pods), "the same pods kept running");

    // Background (kubectl's default): the ReplicaSet goes at once, the
    // collector deletes its pods.
    ok(master.kubectl(&["delete", "rs", &name_of(&rs[0]), "-n", "shop"]));
    wait_gone(&master, &["pods", "-n", "shop", "-l", "app=web"]);

    // Foreground: when `kubectl delete` returns (it waits for the object
    // to be gone), the ReplicaSets and pods are gone already.
    apply(&master, dir.path(), "web.yaml", DEPLOYMENT);
    wait_running(&master, "shop", "app=web", 3);
    let out = master.kubectl(&[
        "delete",
        "deployment",
        "web",
        "-n",
        "shop",
        "--cascade=foreground",
        "--wait=false",
    ]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    // Marked with the finalizer while its dependents go (it may already
    // be gone if the node was quick).
    if let Ok(d) = get_json(&master, &["deployment", "web", "-n", "shop"]) {
        assert!(
            d["metadata"]["deletionTimestamp"].is_string(),
            "{}",
            d["metadata"]
        );
        let finalizers = d["metadata"]["finalizers"].to_string();
        assert!(finalizers.contains("foregroundDeletion"), "{finalizers}");
    }
    wait_until("the foreground deletion to finish", SETTLE, || {
        let out = master.kubectl(&["get", "deployment", "web", "-n", "shop"]);
        if out.status.success() {
            // While the Deployment exists, dependents may still be there.
            return Err("the deployment is still there".to_string());
        }
        let pods = items(&get_json(
            &master,
            &["pods", "-n", "shop", "-l", "app=web"],
        )?);
        let rs = items(&get_json(&master, &["rs", "-n", "shop", "-l", "app=web"])?);
        if pods.is_empty() && rs.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the deployment is gone but its dependents are not: {} pods, {} rs (foreground must remove them first)",
                pods.len(),
                rs.len()
            ))
        }
    });

    // A dependent whose owner does not exist is collected; one whose owner
    // exists is not.
    let orphan = "apiVersion: v1
kind: ConfigMap
metadata:
  name: leftover
  namespace: shop
  ownerReferences:
  - apiVersion: apps/v1
    kind: ReplicaSet
    name: long-gone
    uid: 00000000-0000-0000-0000-000000000000
data:
  k: v
";
    apply(&master, dir.path(), "cm.yaml", orphan);
    wait_until("the orphaned ConfigMap collected", SETTLE, || {
        let out = master.kubectl(&["get", "configmap", "leftover", "-n", "shop"]);
        if out.status.success() {
            Err("still there".to_string())
        } else {
            Ok(())
        }
    });

    // Deleting the namespace: Terminating while something is left (a pod
    // bound to a node that never reports stays Terminating, as in
    // Kubernetes), new content is refused, then everything goes.
    apply(&master, dir.path(), "web.yaml", DEPLOYMENT);
    wait_running(&master, "shop", "app=web", 3);
    let stuck = "apiVersion: v1
kind: Pod
metadata:
  name: stuck
  namespace: shop
spec:
  nodeName: a-node-that-is-gone
  containers:
  - name: c
    image: busybox:1.36
";
    apply(&master, dir.path(), "stuck.yaml", stuck);
    ok(master.kubectl(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "shop",
        "--from-literal=a=b",
    ]));
    ok(master.kubectl(&["delete", "namespace", "shop", "--wait=false"]));
    let ns =
        wait_until(
            "the namespace Terminating with content remaining",
            SETTLE,
            || {
                let ns = get_json(&master, &["namespace", "shop"])?;
                let remaining = ns["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "NamespaceContentRemaining")
                    .cloned();
                match remaining {
            Some(c) if ns["status"]["phase"] == "Terminating"
                && c["message"] == "Some resources are remaining: pods. has 1 resource instances" =>
            {
                Ok(ns)
            }
            _ => Err(ns["status"].to_string()),
        }
            },
        );
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(ns["spec"]["finalizers"][0], "kubernetes", "{}", ns["spec"]);
    let listed = ok(master.kubectl(&["get", "namespace", "shop"]));
    assert!(listed.contains("Terminating"), "{listed}");
    let refused = fails(master.kubectl(&["create", "configmap", "late", "-n", "shop"]));
    assert!(
        refused.contains(
            "unable to create new content in namespace shop because it is being terminated"
        ),
        "{refused}"
    );
    for kind in ["deployments", "rs", "configmaps"] {
        let left = items(&get_json(&master, &[kind, "-n", "shop"]).expect("list"));
        assert!(left.is_empty(), "{kind}: {left:?}");
    }
    let pods = items(&get_json(&master, &["pods", "-n", "shop"]).expect("pods"));
    assert_eq!(pods.iter().map(name_of).collect::<Vec<_>>(), ["stuck"]);
    ok(master.kubectl(&[
        "delete",
        "pod",
        "stuck",
        "-n",
        "shop",
        "--grace-period=0",
        "--force",
    ]));
    wait_until("the namespace gone", SETTLE, || {
        let out = master.kubectl(&["get", "namespace", "shop"]);
        if out.status.success() {
            Err(support::stdout(&out))
        } else {
            Ok(())
        }
    });
    let refused = fails(master.kubectl(&["delete", "namespace", "default"]));
    assert!(
        refused.contains("this namespace may not be deleted"),
        "{refused}"
    );
}

/// The nodes of the pods matching `selector`, sorted, once `count` run.
#[track_caller]
fn daemon_nodes(master: &Master, selector: &str, count: usize) -> Vec<String> {
    let pods = wait_running(master, "default", selector, count);
    let mut nodes: Vec<String> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn a_daemonset_runs_one_pod_per_eligible_node_follows_nodes_and_rolls_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, mut agents) = cluster(dir.path(), &["ds-a", "ds-b"]);
    apply(&master, dir.path(), "probe.yaml", DAEMONSET);
    assert_eq!(daemon_nodes(&master, "app=probe", 2), ["ds-a", "ds-b"]);
    let status = ok(master.kubectl(&["rollout", "status", "daemonset/probe", "--timeout=60s"]));
    assert!(status.contains("successfully rolled out"), "{status}");
    let ds = get_json(&master, &["daemonset", "probe"]).expect("ds");
    for field in [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberReady",
        "numberAvailable",
        "updatedNumberScheduled",
    ] {
        assert_eq!(ds["status"][field], 2, "{field}: {}", ds["status"]);
    }
    assert_eq!(ds["status"]["numberMisscheduled"], 0);
    assert_eq!(
        ds["status"]["observedGeneration"],
        ds["metadata"]["generation"]
    );
    let pods = items(&get_json(&master, &["pods", "-l", "app=probe"]).expect("pods"));
    let pod = &pods[0];
    assert!(name_of(pod).starts_with("probe-"), "{}", name_of(pod));
    assert!(pod["metadata"]["labels"]["controller-revision-hash"].is_string());
    assert_eq!(pod["metadata"]["labels"]["pod-template-generation"], "1");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    let tolerations = pod["spec"]["tolerations"].to_string();
    for key in [
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/unschedulable",
    ] {
        assert!(tolerations.contains(key), "{tolerations}");
    }
    assert!(
        !tolerations.contains("tolerationSeconds"),
        "daemon pods are never evicted: {tolerations}"
    );

    // A node that joins gets its pod.
    agents.push(join(&master, dir.path(), "ds-c"));
    assert_eq!(
        daemon_nodes(&master, "app=probe", 3),
        ["ds-a", "ds-b", "ds-c"]
    );

    // nodeSelector: follows the node's labels.
    apply(&master, dir.path(), "sensor.yaml", SENSOR_DAEMONSET);
    wait_until("the sensor DaemonSet observed", SETTLE, || {
        let ds = get_json(&master, &["daemonset", "sensor"])?;
        if ds["status"]["desiredNumberScheduled"] == 0 && ds["status"]["observedGeneration"] == 1 {
            Ok(())
        } else {
            Err(ds["status"].to_string())
        }
    });
    ok(master.kubectl(&["label", "node", "ds-b", "sensor=yes"]));
    assert_eq!(daemon_nodes(&master, "app=sensor", 1), ["ds-b"]);
    ok(master.kubectl(&["label", "node", "ds-b", "sensor-"]));
    wait_gone(&master, &["pods", "-l", "app=sensor"]);

    // A NoExecute taint it does not tolerate: its pod leaves that node.
    ok(master.kubectl(&["taint", "node", "ds-c", "dedicated=db:NoExecute"]));
    assert_eq!(daemon_nodes(&master, "app=probe", 2), ["ds-a", "ds-b"]);
    // Cordoning changes nothing for daemons.
    ok(master.kubectl(&["cordon", "ds-a"]));
    ok(master.kubectl(&["taint", "node", "ds-c", "dedicated=db:NoExecute-"]));
    assert_eq!(
        daemon_nodes(&master, "app=probe", 3),
        ["ds-a", "ds-b", "ds-c"]
    );

    // A rolling update replaces every pod, one node at a time.
    let before: Vec<String> =
        items(&get_json(&master, &["pods", "-l", "app=probe"]).expect("pods"))
            .iter()
            .map(name_of)
            .collect();
    ok(master.kubectl(&["set", "image", "daemonset/probe", "probe=busybox:1.37"]));
    let status = ok(master.kubectl(&["rollout", "status", "daemonset/probe", "--timeout=90s"]));
    assert!(status.contains("successfully rolled out"), "{status}");
    let pods = wait_running(&master, "default", "app=probe", 3);
    for pod in &pods {
        assert_eq!(pod["spec"]["containers"][0]["image"], "busybox:1.37");
        assert!(
            !before.contains(&name_of(pod)),
            "{} was not replaced",
            name_of(pod)
        );
        assert_eq!(pod["metadata"]["labels"]["pod-template-generation"], "2");
    }
    let describe = ok(master.kubectl(&["describe", "daemonset", "probe"]));
    assert!(describe.contains("SuccessfulCreate"), "{describe}");
    assert!(describe.contains("SuccessfulDelete"), "{describe}");

    // History: one ControllerRevision per template, as kubectl reads it.
    let revisions = |master: &Master| -> Vec<String> {
        ok(master.kubectl(&["rollout", "history", "daemonset/probe"]))
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(revisions(&master), ["1", "2"]);
    let listed = ok(master.kubectl(&["get", "controllerrevisions"]));
    assert!(listed.contains("daemonset.apps/probe"), "{listed}");
    // Undo: back to the first template, which becomes revision 3.
    ok(master.kubectl(&["rollout", "undo", "daemonset/probe"]));
    let status = ok(master.kubectl(&["rollout", "status", "daemonset/probe", "--timeout=90s"]));
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_until("the pods back on the first template", SETTLE, || {
        let pods = items(&get_json(&master, &["pods", "-l", "app=probe"])?);
        let images: Vec<String> = pods
            .iter()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running"
            })
            .map(|p| {
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        if pods.len() == 3 && images.len() == 3 && images.iter().all(|i| i == "busybox:1.36") {
            Ok(())
        } else {
            Err(format!("{images:?} of {} pods", pods.len()))
        }
    });
    assert_eq!(revisions(&master), ["2", "3"]);
    ok(master.kubectl(&["rollout", "undo", "daemonset/probe", "--to-revision=2"]));
    let status = ok(master.kubectl(&["rollout", "status", "daemonset/probe", "--timeout=90s"]));
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_running(&master, "default", "app=probe", 3)
        .iter()
        .for_each(|p| assert_eq!(p["spec"]["containers"][0]["image"], "busybox:1.37"));

    // OnDelete: a template change waits until the user deletes a pod.
    ok(master.kubectl(&[
        "patch",
        "daemonset",
        "probe",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#,
    ]));
    ok(master.kubectl(&["set", "image", "daemonset/probe", "probe=busybox:1.38"]));
    wait_until("the OnDelete change observed", SETTLE, || {
        let ds = get_json(&master, &["daemonset", "probe"])?;
        if ds["status"]["observedGeneration"] == ds["metadata"]["generation"]
            && ds["status"]["updatedNumberScheduled"] == 0
        {
            Ok(())
        } else {
            Err(ds["status"].to_string())
        }
    });
    let pods = wait_running(&master, "default", "app=probe", 3);
    assert!(pods
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "busybox:1.37"));
    ok(master.kubectl(&["delete", "pod", &name_of(&pods[0])]));
    wait_until(
        "the deleted pod replaced with the new template",
        SETTLE,
        || {
            let pods = items(&get_json(&master, &["pods", "-l", "app=probe"])?);
            let running: Vec<&Value> = pods
                .iter()
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .collect();
            let new = running
                .iter()
                .filter(|p| p["spec"]["containers"][0]["image"] == "busybox:1.38")
                .count();
            if new == 1 && running.len() == 3 && pods.len() == 3 {
                Ok(())
            } else {
                Err(format!("{new} pods of the new template"))
            }
        },
    );

    // Deleting the DaemonSet deletes its pods (garbage collector).
    ok(master.kubectl(&["delete", "daemonset", "probe"]));
    wait_gone(&master, &["pods", "-l", "app=probe"]);
}
