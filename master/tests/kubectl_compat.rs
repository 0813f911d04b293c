//! kubectl as Kubernetes users type it, against the real `bramble master`:
//! the imperative commands (which send protobuf), protobuf watches, and
//! bad protobuf bodies.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{curl, fails, ok, stderr, token_of, Master};

fn new_master() -> (tempfile::TempDir, Master) {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&dir.path().join("data"), &[]);
    (dir, master)
}

fn get_json(master: &Master, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ok(master.kubectl(&all))).expect("kubectl -o json")
}

#[test]
fn imperative_kubectl_commands_work_over_protobuf() {
    let (_dir, master) = new_master();
    // kubectl's typed clients send protobuf: prove this one did.
    let verbose = master.kubectl(&["create", "namespace", "x", "-v=8"]);
    let log = stderr(&verbose);
    assert!(verbose.status.success(), "{log}");
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl create namespace sent protobuf and got protobuf back:\n{log}"
    );
    for args in [
        &["create", "configmap", "c1", "-n", "x", "--from-literal=a=1"][..],
        &[
            "create",
            "secret",
            "generic",
            "s1",
            "-n",
            "x",
            "--from-literal=p=hello",
        ],
        &[
            "create",
            "secret",
            "docker-registry",
            "d1",
            "-n",
            "x",
            "--docker-username=u",
            "--docker-password=p",
            "--docker-server=registry.example",
        ],
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "x",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80",
        ],
        &[
            "create",
            "deployment",
            "idle",
            "-n",
            "x",
            "--image=busybox",
            "--replicas=0",
        ],
        &[
            "run",
            "p1",
            "-n",
            "x",
            "--image=busybox",
            "--labels=app=p1",
            "--",
            "sleep",
            "100",
        ],
        &[
            "expose",
            "deployment",
            "web",
            "-n",
            "x",
            "--port=80",
            "--target-port=8080",
        ],
        &[
            "create",
            "service",
            "clusterip",
            "svc2",
            "-n",
            "x",
            "--tcp=81:http",
        ],
        &[
            "create",
            "service",
            "nodeport",
            "np",
            "-n",
            "x",
            "--tcp=80:8080",
        ],
        &["label", "configmap", "c1", "-n", "x", "tier=db"],
        &["annotate", "configmap", "c1", "-n", "x", "note=kept"],
        &[
            "set",
            "image",
            "deployment/web",
            "-n",
            "x",
            "nginx=nginx:1.28",
        ],
        &["set", "env", "deployment/web", "-n", "x", "MODE=prod"],
        &[
            "set",
            "resources",
            "deployment/web",
            "-n",
            "x",
            "--limits=cpu=200m,memory=64Mi",
        ],
    ] {
        ok(master.kubectl(args));
    }
    let secret = get_json(&master, &["secret", "s1", "-n", "x"]);
    assert_eq!(secret["data"]["p"], "aGVsbG8=", "{secret}");
    assert_eq!(secret["type"], "Opaque");
    let docker = get_json(&master, &["secret", "d1", "-n", "x"]);
    assert_eq!(docker["type"], "kubernetes.io/dockerconfigjson");
    let idle = get_json(&master, &["deployment", "idle", "-n", "x"]);
    assert_eq!(idle["spec"]["replicas"], 0, "replicas: 0 survives protobuf");
    let web = get_json(&master, &["deployment", "web", "-n", "x"]);
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.28");
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert_eq!(container["env"][0]["name"], "MODE");
    assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
    let pod = get_json(&master, &["pod", "p1", "-n", "x"]);
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["sleep", "100"])
    );
    assert_eq!(pod["metadata"]["labels"]["app"], "p1");
    let exposed = get_json(&master, &["service", "web", "-n", "x"]);
    assert_eq!(
        exposed["spec"]["ports"][0]["targetPort"], 8080,
        "IntOrString as a number"
    );
    assert_eq!(exposed["spec"]["selector"]["app"], "web");
    let named = get_json(&master, &["service", "svc2", "-n", "x"]);
    assert_eq!(
        named["spec"]["ports"][0]["targetPort"], "http",
        "IntOrString as a name"
    );
    let np = get_json(&master, &["service", "np", "-n", "x"]);
    assert_eq!(np["spec"]["type"], "NodePort");
    let cm = get_json(&master, &["configmap", "c1", "-n", "x"]);
    assert_eq!(cm["metadata"]["labels"]["tier"], "db");
    assert_eq!(cm["metadata"]["annotations"]["note"], "kept");
    assert!(cm["metadata"]["creationTimestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    // Typed deletes send protobuf DeleteOptions on some paths; kubectl's
    // own delete gets the answer in protobuf.
    ok(master.kubectl(&["delete", "configmap", "c1", "-n", "x"]));
    fails(master.kubectl(&["get", "configmap", "c1", "-n", "x"]));
}

#[test]
fn kubectl_events_watches_in_protobuf() {
    let (_dir, master) = new_master();
    let mut events = master.follow(
        support::kubectl_bin(),
        &["events", "-n", "default", "--watch", "-v=6"],
    );
    // A pod no node can take gets a FailedScheduling event from the scheduler.
    ok(master.kubectl(&["run", "lonely", "--image=busybox"]));
    let line = events.expect_line(Duration::from_secs(30), |l| {
        l.contains("FailedScheduling") && l.contains("Pod/lonely")
    });
    assert!(line.contains("Warning"), "{line}");
}

#[test]
fn protobuf_answers_and_bad_protobuf_bodies() {
    let (dir, master) = new_master();
    let base = format!("https://{}", master.addr);
    let auth = format!("Authorization: Bearer {}", token_of(&master));
    // JSON stays the default; protobuf when asked first.
    let (code, body) = curl(
        &master,
        &["-H", &auth, &format!("{base}/api/v1/namespaces/default")],
    );
    assert_eq!(code, 200);
    assert!(body.starts_with('{'), "{body}");
    let (code, body) = curl(
        &master,
        &[
            "-H",
            &auth,
            "-H",
            "Accept: application/vnd.kubernetes.protobuf, */*",
            &format!("{base}/api/v1/namespaces/default"),
        ],
    );
    assert_eq!(code, 200);
    assert!(body.starts_with("k8s\0"), "{body:?}");
    // A protobuf watch: length-prefixed WatchEvents around enveloped objects.
    let frames = dir.path().join("watch.bin");
    let out = std::process::Command::new("curl")
        .args(["-sSf", "--cacert"])
        .arg(master.data_dir.join("pki/ca.crt"))
        .args([
            "-H",
            &auth,
            "-H",
            "Accept: application/vnd.kubernetes.protobuf;stream=watch",
            "-o",
        ])
        .arg(&frames)
        .arg(format!(
            "{base}/api/v1/namespaces?watch=true&timeoutSeconds=1"
        ))
        .output()
        .expect("curl is needed by this test (apt-get install curl)");
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&frames).expect("frames");
    let mut offset = 0;
    let mut events = 0;
    while offset < bytes.len() {
        let length =
            u32::from_be_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        let frame = &bytes[offset + 4..offset + 4 + length];
        assert!(frame.windows(5).any(|w| w == b"ADDED"), "{frame:?}");
        assert!(
            frame.windows(4).any(|w| w == b"k8s\0"),
            "an enveloped object"
        );
        offset += 4 + length;
        events += 1;
    }
    assert!(events >= 3, "default, kube-system, kube-public: {events}");
    // A body that is not protobuf, and one that does not decode: 400, nothing stored.
    let garbage = dir.path().join("garbage.bin");
    for (bytes, expected) in [
        (
            &b"{\"kind\":\"ConfigMap\"}"[..],
            "expected prefix [107 56 115 0]",
        ),
        (&b"k8s\0\x0a\xff\xff\xff"[..], "does not decode"),
    ] {
        std::fs::write(&garbage, bytes).expect("write");
        let (code, body) = curl(
            &master,
            &[
                "-H",
                &auth,
                "-H",
                "Content-Type: application/vnd.kubernetes.protobuf",
                "--data-binary",
                &format!("@{}", garbage.display()),
                &format!("{base}/api/v1/namespaces/default/configmaps"),
            ],
        );
        assert_eq!(code, 400, "{body}");
        let status: Value = serde_json::from_str(&body).expect("a Status");
        assert_eq!(status["reason"], "BadRequest");
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.contains(expected)),
            "{body}"
        );
    }
    let list = get_json(&master, &["configmaps", "-n", "default"]);
    assert_eq!(list["items"], serde_json::json!([]));
}
