//! End-to-end tests of the control plane: the real `bramble master`, the real
//! `bramble` CLI and the stock `kubectl`, as a user drives them.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{curl, fails, fixture, ok, stderr, stdout, token_of, Master};

fn new_master() -> (tempfile::TempDir, Master) {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&dir.path().join("data"), &[]);
    (dir, master)
}

#[test]
fn bramble_and_kubectl_apply_get_and_delete_the_same_manifests() {
    let (_dir, master) = new_master();
    let app = fixture("app.yaml");

    let applied = ok(master.bramble(&["apply", "-f", &app]));
    for line in [
        "namespace/shop created",
        "configmap/web-config created",
        "secret/web-secret created",
        "deployment.apps/web created",
        "service/web created",
        "pod/hello created",
    ] {
        assert!(applied.contains(line), "missing {line:?} in:\n{applied}");
    }

    // The stock kubectl sees them, as a table and as JSON.
    let pods = ok(master.kubectl(&["get", "pods", "-n", "shop"]));
    assert!(pods.starts_with("NAME"), "{pods}");
    assert!(pods.contains("hello") && pods.contains("Pending"), "{pods}");
    let deploy = ok(master.kubectl(&["get", "deployments", "-n", "shop", "-o", "json"]));
    let deploy: serde_json::Value = serde_json::from_str(&deploy).expect("json");
    assert_eq!(deploy["items"][0]["spec"]["replicas"], 2);
    assert_eq!(
        deploy["items"][0]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent",
        "server-side defaults are applied"
    );
    let secret = ok(master.kubectl(&[
        "get",
        "secret",
        "web-secret",
        "-n",
        "shop",
        "-o",
        "jsonpath={.data.password}",
    ]));
    assert_eq!(secret, "czNjcmV0", "stringData is stored base64 in data");

    // kubectl apply of the same manifests, unchanged, then changed.
    let again = ok(master.kubectl(&["apply", "-f", &app]));
    assert!(
        again.contains("deployment.apps/web unchanged"),
        "kubectl reads bramble's last-applied annotation: {again}"
    );
    let changed = std::fs::read_to_string(&app)
        .expect("fixture")
        .replace("busybox:1.36", "busybox:1.37");
    let changed_path = master.data_dir.join("app-changed.yaml");
    std::fs::write(&changed_path, changed).expect("write");
    let reapplied = ok(master.kubectl(&["apply", "-f", changed_path.to_str().expect("path")]));
    assert!(
        reapplied.contains("deployment.apps/web configured"),
        "{reapplied}"
    );
    let image = ok(master.bramble(&["get", "deployment", "web", "-n", "shop", "-o", "json"]));
    let image: serde_json::Value = serde_json::from_str(&image).expect("json");
    assert_eq!(
        image["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    assert_eq!(
        image["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );

    // bramble apply after kubectl apply: the same last-applied annotation.
    let bramble_again = ok(master.bramble(&["apply", "-f", changed_path.to_str().expect("path")]));
    assert!(
        bramble_again.contains("deployment.apps/web unchanged"),
        "{bramble_again}"
    );

    // bramble get prints aligned tables like kubectl's.
    let table = ok(master.bramble(&["get", "pods", "-n", "shop", "-o", "wide"]));
    let header = table.lines().next().expect("header");
    assert!(
        header.starts_with("NAME") && header.contains("STATUS") && header.contains("NODE"),
        "{table}"
    );
    let all = ok(master.bramble(&["get", "configmaps", "-A"]));
    assert!(
        all.lines().next().expect("header").starts_with("NAMESPACE"),
        "{all}"
    );
    assert!(all.contains("web-config"), "{all}");
    let yaml = ok(master.bramble(&["get", "svc", "web", "-n", "shop", "-o", "yaml"]));
    assert!(
        yaml.contains("kind: Service") && yaml.contains("targetPort: http"),
        "{yaml}"
    );

    // kubectl delete -f removes them all.
    let deleted = ok(master.kubectl(&[
        "delete",
        "-f",
        changed_path.to_str().expect("path"),
        "--wait=false",
    ]));
    assert!(
        deleted.contains("deployment.apps \"web\" deleted"),
        "{deleted}"
    );
    let none = master.kubectl(&["get", "deployments", "-n", "shop", "-o", "name"]);
    assert!(!stdout(&none).contains("web"), "{}", stdout(&none));
}

#[test]
fn kubectl_create_patch_selectors_and_status_subresource() {
    let (_dir, master) = new_master();
    let pod = master.data_dir.join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  labels: {app: web, tier: front}\nspec:\n  schedulerName: manual\n  containers:\n  - name: c\n    image: busybox:1.36\n    env:\n    - {name: A, value: '1'}\n    - {name: B, value: '2'}\n",
    )
    .expect("write");
    ok(master.kubectl(&["create", "-f", pod.to_str().expect("path")]));
    let dup = fails(master.kubectl(&["create", "-f", pod.to_str().expect("path")]));
    assert!(
        dup.contains("AlreadyExists") || dup.contains("already exists"),
        "{dup}"
    );

    // Strategic merge patch: env merged by name, label added.
    ok(master.kubectl(&["patch", "pod", "p1", "-p", r#"{"metadata":{"labels":{"extra":"yes"}},"spec":{"containers":[{"name":"c","image":"busybox:1.37"}]}}"#]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(master.kubectl(&["get", "pod", "p1", "-o", "json"])))
            .expect("json");
    assert_eq!(json["spec"]["containers"][0]["image"], "busybox:1.37");
    assert_eq!(
        json["spec"]["containers"][0]["env"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "env kept by the strategic merge"
    );
    assert_eq!(json["metadata"]["labels"]["extra"], "yes");
    // JSON merge patch removes a label; JSON patch replaces one.
    ok(master.kubectl(&[
        "patch",
        "pod",
        "p1",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"extra":null}}}"#,
    ]));
    ok(master.kubectl(&[
        "patch",
        "pod",
        "p1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/metadata/labels/tier","value":"back"}]"#,
    ]));
    let labels = ok(master.kubectl(&["get", "pod", "p1", "-o", "jsonpath={.metadata.labels}"]));
    assert!(
        !labels.contains("extra") && labels.contains("back"),
        "{labels}"
    );
    // An update that is not allowed on a pod spec is refused with 422.
    let refused = fails(master.kubectl(&[
        "patch",
        "pod",
        "p1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"restartPolicy":"Never"}}"#,
    ]));
    assert!(
        refused.contains("Forbidden") || refused.contains("may not change"),
        "{refused}"
    );

    // Status subresource: status changes only through it.
    ok(master.kubectl(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]));
    ok(master.kubectl(&[
        "patch",
        "pod",
        "p1",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ]));
    let phase = ok(master.kubectl(&["get", "pod", "p1", "-o", "jsonpath={.status.phase}"]));
    assert_eq!(phase, "Running");

    // Selectors.
    let other = master.data_dir.join("other.yaml");
    std::fs::write(&other, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p2\n  labels: {app: db}\nspec:\n  nodeName: pi-1\n  containers:\n  - {name: c, image: busybox}\n").expect("write");
    ok(master.kubectl(&["apply", "-f", other.to_str().expect("path")]));
    let web = ok(master.kubectl(&["get", "pods", "-l", "app=web", "-o", "name"]));
    assert_eq!(web.trim(), "pod/p1");
    let notdb = ok(master.kubectl(&["get", "pods", "-l", "app notin (db)", "-o", "name"]));
    assert_eq!(notdb.trim(), "pod/p1");
    let unbound = ok(master.kubectl(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=",
        "-o",
        "name",
    ]));
    assert_eq!(unbound.trim(), "pod/p1");
    let bound = ok(master.bramble(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=pi-1",
        "-o",
        "name",
    ]));
    assert_eq!(bound.trim(), "pod/p2");
    let bad = fails(master.kubectl(&["get", "pods", "--field-selector", "spec.bogus=x"]));
    assert!(bad.contains("field label not supported"), "{bad}");
}

#[test]
fn watches_stream_changes_to_bramble_and_kubectl() {
    let (_dir, master) = new_master();
    let mut kubectl_watch = master.follow(support::kubectl_bin(), &["get", "configmaps", "-w"]);
    let mut bramble_watch = master.follow(support::bramble_bin(), &["get", "configmaps", "-w"]);
    // kubectl prints nothing for an empty list; give both watches an object
    // to report so we know they are established before the change we test.
    let first = master.data_dir.join("first.yaml");
    std::fs::write(
        &first,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: '1'}\n",
    )
    .expect("write");
    ok(master.bramble(&["apply", "-f", first.to_str().expect("path")]));
    kubectl_watch.expect_line(Duration::from_secs(30), |l| l.starts_with("first"));
    bramble_watch.expect_line(Duration::from_secs(30), |l| l.starts_with("first"));

    std::fs::write(
        &first,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: '1', b: '2'}\n",
    )
    .expect("write");
    ok(master.bramble(&["apply", "-f", first.to_str().expect("path")]));
    kubectl_watch.expect_line(Duration::from_secs(30), |l| {
        l.starts_with("first") && l.contains(" 2 ")
    });
    bramble_watch.expect_line(Duration::from_secs(30), |l| {
        l.starts_with("first") && l.contains(" 2 ")
    });
}

#[test]
fn writes_survive_kill_9_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut master = Master::start(&data, &[]);
    ok(master.bramble(&["apply", "-f", &fixture("app.yaml")]));
    let before = ok(master.bramble(&["get", "deployment", "web", "-n", "shop", "-o", "json"]));
    master.kill9();

    let master = Master::start(&data, &[]);
    let after = ok(master.bramble(&["get", "deployment", "web", "-n", "shop", "-o", "json"]));
    let before: serde_json::Value = serde_json::from_str(&before).expect("json");
    let after: serde_json::Value = serde_json::from_str(&after).expect("json");
    // The deployment controller may have written its status since: the
    // object as written (identity and spec) must be the same.
    for field in ["/metadata/uid", "/metadata/creationTimestamp", "/spec"] {
        assert_eq!(
            before.pointer(field),
            after.pointer(field),
            "{field} is identical after kill -9"
        );
    }
    let pods = ok(master.kubectl(&["get", "pods", "-n", "shop", "-o", "name"]));
    assert!(
        pods.lines().any(|l| l == "pod/hello"),
        "the bare pod survived kill -9: {pods}"
    );
    // New writes continue the revision sequence.
    let cm = master.data_dir.join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\n",
    )
    .expect("write");
    ok(master.bramble(&["apply", "-f", cm.to_str().expect("path")]));
    let later: serde_json::Value =
        serde_json::from_str(&ok(master.bramble(&["get", "cm", "later", "-o", "json"])))
            .expect("json");
    let rv = |v: &serde_json::Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .expect("rv")
    };
    assert!(rv(&later) > rv(&before));
}

#[test]
fn bad_input_is_reported_and_nothing_is_written() {
    let (_dir, master) = new_master();

    let malformed = fails(master.bramble(&["apply", "-f", &fixture("bad-yaml.yaml")]));
    assert!(
        malformed.contains("bad-yaml.yaml:12:"),
        "file and line of the YAML error: {malformed}"
    );
    assert!(malformed.contains("nothing was applied"), "{malformed}");

    let invalid = fails(master.bramble(&["apply", "-f", &fixture("invalid.yaml")]));
    for needle in [
        "metadata.name",
        "spec.restartPolicy",
        "spec.affinity",
        "containerPort",
        "Duplicate value",
        "spec.containers[1].image",
    ] {
        assert!(
            invalid.contains(needle),
            "missing {needle:?} in:\n{invalid}"
        );
    }
    assert!(invalid.contains("nothing was applied"), "{invalid}");

    let unknown = fails(master.bramble(&["apply", "-f", &fixture("unknown-kind.yaml")]));
    assert!(
        unknown.contains("CronJob") && unknown.contains("apps/v1/Deployment"),
        "{unknown}"
    );

    // None of the valid documents of those files were written.
    let cms = ok(master.bramble(&["get", "configmaps", "-o", "name"]));
    assert!(
        !cms.contains("fine") && !cms.contains("would-be-fine"),
        "{cms}"
    );

    // The server reports every field error at once (kubectl has no client-side check here).
    let server = fails(master.kubectl(&["apply", "-f", &fixture("invalid.yaml")]));
    assert!(
        server.contains("spec.restartPolicy") && server.contains("spec.affinity"),
        "{server}"
    );

    // An unknown resource type on the CLI names the supported ones.
    let kind = fails(master.bramble(&["get", "widgets"]));
    assert!(
        kind.contains("widgets") && kind.contains("pods (po)"),
        "{kind}"
    );
    let missing = fails(master.bramble(&["get", "pod", "nope"]));
    assert!(
        missing.contains("NotFound") && missing.contains("pods \"nope\" not found"),
        "{missing}"
    );
}

#[test]
fn unreachable_master_is_one_clear_line() {
    let (_dir, mut master) = new_master();
    master.stop();
    let out = master.bramble(&["get", "pods"]);
    let err = fails(out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the master at https://127.0.0.1:{}",
            master.addr.rsplit(':').next().expect("port")
        )),
        "{err}"
    );
}

#[test]
fn requests_need_a_valid_token() {
    let (_dir, master) = new_master();
    let base = format!("https://{}", master.addr);
    let (code, body) = curl(
        &master,
        &[&format!("{base}/api/v1/namespaces/default/pods")],
    );
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("\"kind\":\"Status\"") && body.contains("Unauthorized"),
        "{body}"
    );
    let (code, _) = curl(
        &master,
        &[
            "-H",
            "Authorization: Bearer wrong",
            &format!("{base}/api/v1/pods"),
        ],
    );
    assert_eq!(code, 401);
    let token = token_of(&master);
    let (code, body) = curl(
        &master,
        &[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{base}/api/v1/pods"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&master.kubeconfig)
            .expect("meta")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the admin kubeconfig is private");
}

#[test]
fn conflicts_and_expired_watches_use_kubernetes_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&dir.path().join("data"), &["--event-log-capacity", "5"]);
    let token = token_of(&master);
    let auth = format!("Authorization: Bearer {token}");
    let base = format!("https://{}", master.addr);
    let cm = master.data_dir.join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n",
    )
    .expect("write");
    ok(master.bramble(&["apply", "-f", cm.to_str().expect("path")]));
    let current: serde_json::Value =
        serde_json::from_str(&ok(master.bramble(&["get", "cm", "c", "-o", "json"]))).expect("json");
    let stale_rv = current["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    ok(master.kubectl(&[
        "patch",
        "cm",
        "c",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]));

    // PUT with the stale resourceVersion: 409 Conflict.
    let mut stale = current.clone();
    stale["data"]["a"] = serde_json::json!("3");
    let (code, body) = curl(
        &master,
        &[
            "-X",
            "PUT",
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            &stale.to_string(),
            &format!("{base}/api/v1/namespaces/default/configmaps/c"),
        ],
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("the object has been modified"), "{body}");

    // Push the event log past its capacity, then watch from an old revision: 410.
    for i in 0..8 {
        ok(master.kubectl(&[
            "patch",
            "cm",
            "c",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"data":{{"i":"{i}"}}}}"#),
        ]));
    }
    let (code, body) = curl(&master, &[
        "-H", &auth, &format!("{base}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={stale_rv}&timeoutSeconds=1"),
    ]);
    assert_eq!(code, 410, "{body}");
    assert!(body.contains("Expired"), "{body}");

    // 404 and 400 are Status objects too.
    let (code, body) = curl(
        &master,
        &[
            "-H",
            &auth,
            &format!("{base}/api/v1/namespaces/default/configmaps/none"),
        ],
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("configmaps \\\"none\\\" not found"), "{body}");
    let (code, body) = curl(
        &master,
        &[
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            "{not json",
            &format!("{base}/api/v1/namespaces/default/configmaps"),
        ],
    );
    assert_eq!(code, 400, "{body}");
}

#[test]
fn snapshot_save_and_restore_bring_back_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut master = Master::start(&data, &[]);
    ok(master.bramble(&["apply", "-f", &fixture("app.yaml")]));
    let snapshot = dir.path().join("snap.redb");
    let saved = ok(master.bramble(&["snapshot", "save", snapshot.to_str().expect("path")]));
    assert!(saved.contains("Snapshot saved"), "{saved}");
    ok(master.bramble(&["delete", "deployment", "web", "-n", "shop"]));

    // Restoring under a running master is refused.
    let refused = fails(master.bramble(&[
        "snapshot",
        "restore",
        snapshot.to_str().expect("path"),
        "--data-dir",
        data.to_str().expect("path"),
    ]));
    assert!(
        refused.contains("running") || refused.contains("in use") || refused.contains("lock"),
        "{refused}"
    );
    master.stop();
    ok(master.bramble(&[
        "snapshot",
        "restore",
        snapshot.to_str().expect("path"),
        "--data-dir",
        data.to_str().expect("path"),
    ]));
    let master = Master::start(&data, &[]);
    let deploy = ok(master.bramble(&["get", "deployments", "-n", "shop", "-o", "name"]));
    assert_eq!(deploy.trim(), "deployment.apps/web");
}

#[test]
fn a_corrupt_or_foreign_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let db = data.join("store.redb");
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &garbage).expect("write");
    let out = Command::new(support::bramble_bin())
        .args([
            "master",
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("run master");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("store.redb")
            && (err.contains("not a bramble store") || err.contains("corrupt")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&db).expect("read"),
        garbage,
        "the file was not touched"
    );
}

#[test]
fn a_busy_port_names_the_flag() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(support::bramble_bin())
        .args([
            "master",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run master");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--listen") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[test]
fn a_busy_mqtt_port_names_the_flag() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(support::bramble_bin())
        .args([
            "master",
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run master");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--mqtt-listen") && err.contains(&port.to_string()),
        "{err}"
    );
}
