//! The real runtime pulling pod images from a real registry (Debian's
//! `docker-registry` on loopback), as root: Pulling/Pulled events with
//! kubelet's messages and imageID; a missing tag as ErrImagePull then
//! ImagePullBackOff with Failed/BackOff events and a retry after the
//! back-off; `Always` with no registry reachable running the local image;
//! InvalidImageName; a private registry through an imagePullSecret.
#![allow(clippy::unwrap_used)]

mod registry_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use bramble_agent::events::EventRecorder;
use bramble_agent::runtime::{LinuxRuntime, PodDesired, Runtime};
use bramble_common::api::{LocalObjectReference, PodStatus, Secret};
use bramble_common::wire::NodeEvent;
use registry_support::Registry;
use support::*;

const T: Duration = Duration::from_secs(30);

fn root() -> bool {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the runtime pull tests need root (they run containers)"
    );
    true
}

/// A test node whose runtime records events (returned) and backs off
/// pulls from `backoff`.
fn node_with_events(tag: &str, backoff: Duration) -> (TestNode, EventRecorder) {
    let mut node = TestNode::new(tag);
    if let Some(rt) = node.runtime.take() {
        rt.shutdown();
    }
    let events = EventRecorder::new(&node.name);
    let mut cfg = node.config();
    cfg.events = events.clone();
    cfg.image_pull_backoff = backoff;
    node.runtime = Some(LinuxRuntime::new(cfg).unwrap());
    (node, events)
}

/// Collects events until `pred` holds for the list.
fn wait_events(
    events: &EventRecorder,
    seen: &mut Vec<NodeEvent>,
    what: &str,
    pred: impl Fn(&[NodeEvent]) -> bool,
) {
    let ok = wait_for(T, || {
        while let Some(batch) = events.take_batch() {
            seen.extend(batch.events);
        }
        pred(seen).then_some(())
    });
    assert!(
        ok.is_some(),
        "timed out waiting for {what}; events: {:#?}",
        seen.iter()
            .map(|e| format!("{} {}: {}", e.reason, e.field_path, e.message))
            .collect::<Vec<_>>()
    );
}

fn waiting(s: &PodStatus) -> Option<(String, String)> {
    let w = s.container_statuses.first()?.state.waiting.as_ref()?;
    Some((w.reason.clone()?, w.message.clone().unwrap_or_default()))
}

fn push_busybox(reg: &Registry, repo_tag: &str, cmd: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    busybox_image("x:1", cmd)
        .write_oci_layout(&dir.path().join("layout"))
        .unwrap();
    reg.push(&dir.path().join("layout"), "1", repo_tag, false);
}

#[test]
fn runtime_pulls_an_image_with_kubelet_events_and_image_id() {
    assert!(root());
    ensure_busybox();
    let reg = Registry::start(None);
    push_busybox(&reg, "apps/sleeper:1", &["sleep", "3600"]);
    let (node, events) = node_with_events("pull", Duration::from_secs(10));
    let image = format!("{}/apps/sleeper:1", reg.host);
    let d = pod("pulled", vec![container("main", &image, &[])], "Always");
    node.rt().sync_pod(&d).unwrap();
    let s = wait_status(node.rt(), d.uid(), T, |s| {
        s.container_statuses
            .first()
            .is_some_and(|c| c.state.running.is_some())
    });
    let id = &s.container_statuses[0].image_id;
    assert!(
        id.starts_with(&format!("{}/apps/sleeper@sha256:", reg.host)),
        "imageID {id}"
    );
    let mut seen = Vec::new();
    wait_events(&events, &mut seen, "Pulling and Pulled", |ev| {
        ev.iter().any(|e| e.reason == "Pulling")
            && ev.iter().any(|e| e.reason == "Pulled")
            && ev.iter().any(|e| e.reason == "Started")
    });
    let pulling = seen.iter().find(|e| e.reason == "Pulling").unwrap();
    assert_eq!(pulling.message, format!("Pulling image \"{image}\""));
    assert_eq!(pulling.field_path, "spec.containers{main}");
    assert!(!pulling.warning);
    let all: Vec<String> = seen
        .iter()
        .map(|e| format!("{} x{}: {}", e.reason, e.count, e.message))
        .collect();
    let pulled = seen
        .iter()
        .find(|e| e.reason == "Pulled")
        .unwrap_or_else(|| panic!("{all:#?}"));
    let re = regex::Regex::new(&format!(
        r#"^Successfully pulled image "{}" in [0-9.]+m?s \([0-9.]+m?s including waiting\)\. Image size: [0-9]+ bytes\.$"#,
        regex::escape(&image)
    ))
    .unwrap();
    assert!(re.is_match(&pulled.message), "{all:#?}");
    node.rt().kill_pod(d.uid(), Some(Duration::ZERO)).unwrap();
}

#[test]
fn runtime_missing_tag_is_err_image_pull_then_back_off() {
    assert!(root());
    ensure_busybox();
    let reg = Registry::start(None);
    push_busybox(&reg, "apps/sleeper:1", &["sleep", "3600"]);
    // A short back-off so the retry shows in a bounded test (kubelet's is 10 s).
    let (node, events) = node_with_events("backoff", Duration::from_secs(2));
    let image = format!("{}/apps/sleeper:missing", reg.host);
    let d = pod("missing", vec![container("main", &image, &[])], "Always");
    node.rt().sync_pod(&d).unwrap();
    let s = wait_status(node.rt(), d.uid(), T, |s| {
        waiting(s).is_some_and(|(r, _)| r == "ImagePullBackOff")
    });
    let (_, msg) = waiting(&s).unwrap();
    assert!(
        msg.starts_with(&format!(
            "Back-off pulling image \"{image}\": ErrImagePull: failed to pull and unpack image"
        )),
        "{msg}"
    );
    assert!(msg.contains("not found"), "{msg}");
    let mut seen = Vec::new();
    wait_events(&events, &mut seen, "Failed, BackOff and a retry", |ev| {
        ev.iter().any(|e| e.reason == "Failed" && e.message == "Error: ErrImagePull")
            && ev.iter().any(|e| {
                e.reason == "Failed" && e.message.starts_with(&format!("Failed to pull image \"{image}\": "))
            })
            && ev.iter().any(|e| e.reason == "BackOff" && e.message == format!("Back-off pulling image \"{image}\""))
            && ev.iter().any(|e| e.reason == "Failed" && e.message == "Error: ImagePullBackOff")
            // Retried after the back-off: a second Pulling.
            && ev.iter().filter(|e| e.reason == "Pulling").map(|e| e.count).sum::<u32>() >= 2
    });
    // The tag appears: the next attempt pulls it and the pod runs.
    push_busybox(&reg, "apps/sleeper:missing", &["sleep", "3600"]);
    wait_status(node.rt(), d.uid(), T, |s| {
        s.container_statuses
            .first()
            .is_some_and(|c| c.state.running.is_some())
    });
    node.rt().kill_pod(d.uid(), Some(Duration::ZERO)).unwrap();
}

#[test]
fn runtime_always_with_the_registry_down_runs_the_local_image() {
    assert!(root());
    ensure_busybox();
    let (node, events) = node_with_events("offline", Duration::from_secs(10));
    // A registry address where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = format!("127.0.0.1:{port}/apps/local:latest");
    let dir = tempfile::tempdir().unwrap();
    busybox_image(&image, &["sleep", "3600"])
        .write_oci_layout(&dir.path().join("layout"))
        .unwrap();
    node.rt()
        .images()
        .import(&dir.path().join("layout"))
        .unwrap();
    // `:latest` defaults to Always.
    let d = pod("offline", vec![container("main", &image, &[])], "Always");
    node.rt().sync_pod(&d).unwrap();
    wait_status(node.rt(), d.uid(), T, |s| {
        s.container_statuses
            .first()
            .is_some_and(|c| c.state.running.is_some())
    });
    let mut seen = Vec::new();
    wait_events(&events, &mut seen, "the local-image event", |ev| {
        ev.iter().any(|e| {
            e.reason == "Failed"
                && e.warning
                && e.message.contains(
                    "the registry is unreachable, so the image already on the node is used",
                )
        })
    });

    // An image name that cannot be parsed.
    let bad = pod(
        "bad",
        vec![container("main", "Not A/Valid Image", &[])],
        "Always",
    );
    node.rt().sync_pod(&bad).unwrap();
    let s = wait_status(node.rt(), bad.uid(), T, |s| {
        waiting(s).is_some_and(|(r, _)| r == "InvalidImageName")
    });
    assert_eq!(
        waiting(&s).unwrap().1,
        "Failed to apply default image tag \"Not A/Valid Image\": couldn't parse image name \"Not A/Valid Image\": invalid reference format"
    );
    node.rt().kill_pod(d.uid(), Some(Duration::ZERO)).unwrap();
    node.rt().kill_pod(bad.uid(), Some(Duration::ZERO)).unwrap();
}

#[test]
fn runtime_pulls_from_a_private_registry_with_an_image_pull_secret() {
    assert!(root());
    ensure_busybox();
    let reg = Registry::start(Some(("bob", "hunter2")));
    push_busybox(&reg, "private/app:1", &["sleep", "3600"]);
    let (node, _events) = node_with_events("secret", Duration::from_secs(10));
    let image = format!("{}/private/app:1", reg.host);
    let secret = |password: &str| {
        let json = format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host,
            base64::engine::general_purpose::STANDARD.encode(format!("bob:{password}"))
        );
        let mut data = BTreeMap::new();
        data.insert(
            ".dockerconfigjson".to_string(),
            base64::engine::general_purpose::STANDARD.encode(json),
        );
        Secret {
            data,
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            ..Default::default()
        }
    };
    let with_secret = |name: &str, password: &str| -> PodDesired {
        let mut d = pod(name, vec![container("main", &image, &[])], "Always");
        d.pod.spec.image_pull_secrets = vec![LocalObjectReference {
            name: "regcred".into(),
        }];
        d.secrets.insert("regcred".into(), secret(password));
        d
    };
    let wrong = with_secret("wrong", "nope");
    node.rt().sync_pod(&wrong).unwrap();
    let s = wait_status(node.rt(), wrong.uid(), T, |s| {
        waiting(s).is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
    let (_, msg) = waiting(&s).unwrap();
    assert!(msg.contains("401 Unauthorized"), "{msg}");
    let good = with_secret("good", "hunter2");
    node.rt().sync_pod(&good).unwrap();
    wait_status(node.rt(), good.uid(), T, |s| {
        s.container_statuses
            .first()
            .is_some_and(|c| c.state.running.is_some())
    });
    node.rt()
        .kill_pod(wrong.uid(), Some(Duration::ZERO))
        .unwrap();
    node.rt()
        .kill_pod(good.uid(), Some(Duration::ZERO))
        .unwrap();
}
