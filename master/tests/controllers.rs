//! End-to-end tests of the controllers, driven the way a user drives
//! Kubernetes: the real `bramble master`, real `bramble-agent --runtime sim`
//! nodes, and the stock `kubectl` (`apply`, `scale`, `set image`,
//! `rollout status|history|undo|restart`, `delete`, `wait`, ...). Every wait
//! polls with a deadline and fails with what it last saw.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{fails, ok, wait_until, Agent, Master};

/// How long the cluster may take to get where a test expects it.
const SETTLE: Duration = Duration::from_secs(60);

/// The Kubernetes docs' `nginx-deployment` (controllers/nginx-deployment.yaml).
const NGINX_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
";

/// A master with fast heartbeats and `nodes` sim agents, all Ready.
fn cluster(dir: &Path, nodes: &[&str], extra: &[&str]) -> (Master, Vec<Agent>) {
    let mut flags = vec!["--heartbeat-seconds", "1", "--missed-heartbeats", "3"];
    flags.extend_from_slice(extra);
    let master = Master::start(&dir.join("data"), &flags);
    let agents = nodes
        .iter()
        .map(|name| {
            let out = ok(master.bramble(&["node", "add", name]));
            let token = out.split_whitespace().nth(1).expect("token").to_string();
            Agent::start(dir, &master.mqtt, name, &token, &[])
        })
        .collect();
    for name in nodes {
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
    }
    (master, agents)
}

fn kubectl_json(master: &Master, args: &[&str]) -> Result<Value, String> {
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

/// The Running pods matching `selector`, with their images.
fn running_pods(master: &Master, selector: &str) -> Result<Vec<(String, String)>, String> {
    let list = kubectl_json(master, &["pods", "-l", selector])?;
    Ok(items(&list)
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect())
}

/// Waits until exactly `count` pods matching `selector` run, all of `image`,
/// and no other pod of the selector is left (old ones gone).
#[track_caller]
fn wait_pods(master: &Master, selector: &str, count: usize, image: &str) {
    wait_until(
        &format!("{count} pods {selector} running {image}"),
        SETTLE,
        || {
            let all = items(&kubectl_json(master, &["pods", "-l", selector])?);
            let running = running_pods(master, selector)?;
            if running.len() == count
                && all.len() == count
                && running.iter().all(|(_, i)| i == image)
            {
                Ok(())
            } else {
                Err(format!("{} pods in all: running {running:?}", all.len()))
            }
        },
    );
}

#[test]
fn the_docs_nginx_deployment_scales_rolls_out_and_rolls_back_with_kubectl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, _agents) = cluster(dir.path(), &["ctl-a", "ctl-b"], &[]);
    let manifest = dir.path().join("nginx.yaml");
    std::fs::write(&manifest, NGINX_DEPLOYMENT).expect("write manifest");
    ok(master.kubectl(&["apply", "-f", manifest.to_str().expect("path")]));

    // 3 Running pods named after their ReplicaSet, which is named after
    // the Deployment and the template's hash.
    let status = ok(master.kubectl(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]));
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_pods(&master, "app=nginx", 3, "nginx:1.14.2");
    let rs = items(&kubectl_json(&master, &["rs", "-l", "app=nginx"]).expect("rs"));
    assert_eq!(rs.len(), 1, "{rs:?}");
    let rs_name = rs[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let hash = rs[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("hash");
    assert_eq!(rs_name, format!("nginx-deployment-{hash}"));
    assert_eq!(
        rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    for (pod, _) in running_pods(&master, "app=nginx").expect("pods") {
        let suffix = pod
            .strip_prefix(&format!("{rs_name}-"))
            .unwrap_or_else(|| panic!("{pod}"));
        assert_eq!(suffix.len(), 5, "{pod}");
    }
    let get = ok(master.kubectl(&["get", "deployment", "nginx-deployment"]));
    assert!(
        get.lines().nth(1).is_some_and(|l| l.contains("3/3")),
        "{get}"
    );
    let d = kubectl_json(&master, &["deployment", "nginx-deployment"]).expect("deployment");
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    let reasons: Vec<&str> = d["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"MinimumReplicasAvailable"), "{reasons:?}");
    assert!(reasons.contains(&"NewReplicaSetAvailable"), "{reasons:?}");

    // kubectl scale goes through the scale subresource.
    ok(master.kubectl(&["scale", "deployment/nginx-deployment", "--replicas=5"]));
    wait_pods(&master, "app=nginx", 5, "nginx:1.14.2");
    let scale = ok(master.kubectl(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/nginx-deployment/scale",
    ]));
    let scale: Value = serde_json::from_str(&scale).expect("scale json");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=nginx");

    // The controllers' actions are Events, as `kubectl describe` shows them.
    let describe = wait_until("the scale-up event", Duration::from_secs(20), || {
        let text = ok(master.kubectl(&["describe", "deployment", "nginx-deployment"]));
        if text.contains(&format!("Scaled up replica set {rs_name} from 3 to 5")) {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(
        describe.contains(&format!("Scaled up replica set {rs_name} from 0 to 3")),
        "{describe}"
    );
    assert!(describe.contains("ScalingReplicaSet"), "{describe}");
    wait_until(
        "the replica set's SuccessfulCreate events",
        Duration::from_secs(20),
        || {
            let text = ok(master.kubectl(&["describe", "rs", &rs_name]));
            if text.contains("SuccessfulCreate")
                && text.contains(&format!("Created pod: {rs_name}-"))
            {
                Ok(())
            } else {
                Err(text)
            }
        },
    );
    ok(master.kubectl(&["scale", "deployment/nginx-deployment", "--replicas=2"]));
    wait_pods(&master, "app=nginx", 2, "nginx:1.14.2");
    let refused = fails(master.kubectl(&["scale", "deployment/nginx-deployment", "--replicas=-1"]));
    assert!(refused.contains("replicas"), "{refused}");

    // A new image rolls out to a second ReplicaSet (revision 2).
    ok(master.kubectl(&[
        "set",
        "image",
        "deployment/nginx-deployment",
        "nginx=nginx:1.16.1",
    ]));
    let status = ok(master.kubectl(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]));
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_pods(&master, "app=nginx", 2, "nginx:1.16.1");
    let history = ok(master.kubectl(&["rollout", "history", "deployment/nginx-deployment"]));
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Undo: back to the first template, as revision 3, on its old ReplicaSet.
    ok(master.kubectl(&["rollout", "undo", "deployment/nginx-deployment"]));
    ok(master.kubectl(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]));
    wait_pods(&master, "app=nginx", 2, "nginx:1.14.2");
    let first = kubectl_json(&master, &["rs", &rs_name]).expect("first rs");
    assert_eq!(
        first["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(first["spec"]["replicas"], 2);
    ok(master.kubectl(&[
        "rollout",
        "undo",
        "deployment/nginx-deployment",
        "--to-revision=2",
    ]));
    wait_pods(&master, "app=nginx", 2, "nginx:1.16.1");

    // Restart: a new template (an annotation) and new pods.
    let before: Vec<String> = running_pods(&master, "app=nginx")
        .expect("pods")
        .into_iter()
        .map(|p| p.0)
        .collect();
    ok(master.kubectl(&["rollout", "restart", "deployment/nginx-deployment"]));
    ok(master.kubectl(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]));
    wait_until("restarted pods", SETTLE, || {
        let now: Vec<String> = running_pods(&master, "app=nginx")?
            .into_iter()
            .map(|p| p.0)
            .collect();
        let all = items(&kubectl_json(&master, &["pods", "-l", "app=nginx"])?);
        if now.len() == 2 && all.len() == 2 && now.iter().all(|p| !before.contains(p)) {
            Ok(())
        } else {
            Err(format!("before {before:?}, now {now:?}"))
        }
    });

    // Pause: a change waits; resume rolls it out.
    ok(master.kubectl(&["rollout", "pause", "deployment/nginx-deployment"]));
    ok(master.kubectl(&[
        "set",
        "image",
        "deployment/nginx-deployment",
        "nginx=nginx:1.17",
    ]));
    let d = kubectl_json(&master, &["deployment", "nginx-deployment"]).expect("deployment");
    assert_eq!(d["spec"]["paused"], true);
    wait_until("paused condition", SETTLE, || {
        let d = kubectl_json(&master, &["deployment", "nginx-deployment"])?;
        let paused = d["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["reason"] == "DeploymentPaused");
        if paused {
            Ok(())
        } else {
            Err(d["status"].to_string())
        }
    });
    assert!(running_pods(&master, "app=nginx")
        .expect("pods")
        .iter()
        .all(|(_, i)| i == "nginx:1.16.1"));
    ok(master.kubectl(&["rollout", "resume", "deployment/nginx-deployment"]));
    ok(master.kubectl(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]));
    wait_pods(&master, "app=nginx", 2, "nginx:1.17");
}

#[test]
fn invalid_deployments_get_every_field_error_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&dir.path().join("data"), &[]);
    let bad = NGINX_DEPLOYMENT
        .replace("  replicas: 3\n", "  replicas: 3\n  strategy:\n    rollingUpdate:\n      maxSurge: 0\n      maxUnavailable: 0\n")
        .replace("      labels:\n        app: nginx\n    spec:", "      labels:\n        app: other\n    spec:");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, bad).expect("write");
    let err = fails(master.kubectl(&["apply", "-f", file.to_str().expect("path")]));
    assert!(
        err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    assert!(err.contains("may not be 0 when `maxSurge` is 0"), "{err}");
    let out = master.kubectl(&["get", "deployments"]);
    assert!(
        !support::stdout(&out).contains("nginx-deployment"),
        "nothing was written"
    );
}
