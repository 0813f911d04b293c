//! Image pulls end to end, as a new user tries them: a local registry
//! (Debian's `docker-registry`, filled with `skopeo`) stands in for Docker
//! Hub through a mirror in the agent's `registries.yaml`; the stock
//! `kubectl run web --image=nginx:1.25` runs on a real `bramble-agent`,
//! and `kubectl get events` shows the kubelet's `Pulling` and `Pulled`.
//!
//! Every wait polls with a deadline; the registry, the agent and its pods
//! are cleaned up when the test ends or fails.

#[path = "../../agent/tests/registry_support/mod.rs"]
mod registry_support;
mod support;

use std::time::Duration;

use bramble_agent::images::busybox;
use registry_support::Registry;
use serde_json::Value;
use support::real::RealNode;
use support::{add_node, ok, wait_until, Master};

const SETTLE: Duration = Duration::from_secs(90);

fn event_lines(master: &Master) -> Result<Vec<Value>, String> {
    let out = master.kubectl(&["get", "events", "-o", "json"]);
    if !out.status.success() {
        return Err(support::stderr(&out));
    }
    let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

#[test]
fn kubectl_run_pulls_through_a_registries_yaml_mirror() {
    if let Err(e) = busybox::ensure_busybox() {
        panic!("{e}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    // The registry that stands in for Docker Hub, with "nginx:1.25" in it.
    let registry = Registry::start(None);
    let layout = dir.path().join("layout");
    busybox::busybox_image("nginx:1.25", &["sleep", "3600"])
        .write_oci_layout(&layout)
        .expect("layout");
    registry.push(&layout, "1.25", "library/nginx:1.25", false);
    let registries = dir.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!(
            "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n",
            registry.host
        ),
    )
    .expect("registries.yaml");

    let master = Master::start(&dir.path().join("data"), &[]);
    let name = format!("pulls-{}", std::process::id());
    let token = add_node(&master, &name);
    let registries_flag = registries.display().to_string();
    let _node = RealNode::start(
        dir.path(),
        &master.mqtt,
        &name,
        &token,
        &["--no-network", "--registries", &registries_flag],
        &[],
    );
    wait_until("the node to be Ready", SETTLE, || {
        let out = master.kubectl(&[
            "get",
            "node",
            &name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        let s = support::stdout(&out);
        (s.trim() == "True").then_some(()).ok_or(s)
    });

    ok(master.kubectl(&["run", "web", "--image=nginx:1.25"]));
    let image_id = wait_until("web to run", SETTLE, || {
        let out = master.kubectl(&["get", "pod", "web", "-o", "json"]);
        let pod: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let status = &pod["status"]["containerStatuses"][0];
        if status["state"]["running"].is_object() {
            Ok(status["imageID"].as_str().unwrap_or("").to_string())
        } else {
            Err(status.to_string())
        }
    });
    assert!(
        image_id.starts_with("docker.io/library/nginx@sha256:"),
        "imageID {image_id}"
    );
    let (pulling, pulled) = wait_until("Pulling and Pulled events", SETTLE, || {
        let all = event_lines(&master)?;
        let find = |reason: &str| {
            all.iter()
                .find(|e| e["involvedObject"]["name"] == "web" && e["reason"] == reason)
                .cloned()
        };
        match (find("Pulling"), find("Pulled")) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(all
                .iter()
                .map(|e| {
                    format!(
                        "{} {} {}",
                        e["involvedObject"]["name"], e["reason"], e["message"]
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")),
        }
    });
    assert_eq!(pulling["message"], "Pulling image \"nginx:1.25\"");
    assert_eq!(pulling["type"], "Normal");
    assert_eq!(pulling["source"]["component"], "kubelet");
    let msg = pulled["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("Successfully pulled image \"nginx:1.25\" in ")
            && msg.contains(" including waiting). Image size: ")
            && msg.ends_with(" bytes."),
        "{msg}"
    );
    // kubectl describe shows them as a user reads them.
    let describe = ok(master.kubectl(&["describe", "pod", "web"]));
    assert!(describe.contains("Pulling"), "{describe}");
    assert!(describe.contains("Successfully pulled image"), "{describe}");
    ok(master.kubectl(&["delete", "pod", "web", "--grace-period=1"]));
}
