//! Services on the real `bramble master` driven with the stock kubectl:
//! ClusterIP and NodePort allocation and refusal, the built-in `kubernetes`
//! and `kube-dns` Services, ExternalName, LoadBalancer, and the endpoint
//! controller's EndpointSlices and Endpoints (pod status written through the
//! status subresource, as a node's agent does).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{fails, ok, wait_until, Master};

const SETTLE: Duration = Duration::from_secs(20);

fn new_master(extra: &[&str]) -> (tempfile::TempDir, Master) {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(&dir.path().join("data"), extra);
    (dir, master)
}

fn apply(master: &Master, object: &Value) -> std::process::Output {
    let path = master.data_dir.join(format!(
        "obj-{}.json",
        uuid_like(object["metadata"]["name"].as_str().unwrap_or("x"))
    ));
    std::fs::write(&path, object.to_string()).expect("write manifest");
    master.kubectl(&["apply", "-f", path.to_str().expect("path")])
}

fn uuid_like(name: &str) -> String {
    format!(
        "{name}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

fn get_json(master: &Master, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(master.kubectl(&all))).expect("json")
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

#[test]
fn cluster_ips_and_node_ports_are_allocated_kept_and_refused_like_kubernetes() {
    let (_dir, mut master) = new_master(&["--service-node-port-range", "30000-30100"]);
    // The built-in Services.
    let kubernetes = get_json(&master, &["get", "svc", "kubernetes", "-n", "default"]);
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], 443);
    let endpoints = get_json(&master, &["get", "endpoints", "kubernetes"]);
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    let dns = get_json(&master, &["get", "svc", "kube-dns", "-n", "kube-system"]);
    assert_eq!(dns["spec"]["clusterIP"], "10.96.0.10");

    ok(apply(
        &master,
        &service(
            "web",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}),
        ),
    ));
    let web = get_json(&master, &["get", "svc", "web"]);
    let ip = web["spec"]["clusterIP"]
        .as_str()
        .expect("allocated")
        .to_string();
    assert!(ip.starts_with("10.96."), "{ip}");
    assert_eq!(web["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(web["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(web["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(web["spec"]["internalTrafficPolicy"], "Cluster");
    let table = ok(master.kubectl(&["get", "svc", "web"]));
    assert!(
        table.contains(&ip) && table.contains("80/TCP") && table.contains("<none>"),
        "{table}"
    );

    // A re-apply (no clusterIP in the manifest) keeps the address.
    ok(apply(
        &master,
        &service(
            "web",
            json!({"selector": {"app": "web", "tier": "front"}, "ports": [{"port": 80, "targetPort": 8080}]}),
        ),
    ));
    assert_eq!(
        get_json(&master, &["get", "svc", "web"])["spec"]["clusterIP"],
        ip.as_str()
    );

    // A taken address, one outside the range.
    let err = fails(apply(
        &master,
        &service("copy", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
    ));
    assert!(
        err.contains(&format!(
            "failed to allocate IP {ip}: provided IP is already allocated"
        )),
        "{err}"
    );
    let err = fails(apply(
        &master,
        &service(
            "far",
            json!({"clusterIP": "10.200.0.1", "ports": [{"port": 80}]}),
        ),
    ));
    assert!(
        err.contains("The range of valid IPs is 10.96.0.0/16"),
        "{err}"
    );
    // Headless.
    ok(apply(
        &master,
        &service(
            "db",
            json!({"clusterIP": "None", "selector": {"app": "db"}}),
        ),
    ));
    assert!(ok(master.kubectl(&["get", "svc", "db"])).contains("None"));

    // NodePorts: allocated in the range, a taken one and one outside refused.
    ok(apply(
        &master,
        &service(
            "np",
            json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
        ),
    ));
    let np = get_json(&master, &["get", "svc", "np"])["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("node port");
    assert!((30000..=30100).contains(&np), "{np}");
    let err = fails(apply(
        &master,
        &service(
            "np2",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}),
        ),
    ));
    assert!(
        err.contains(&format!(
            "spec.ports[0].nodePort: Invalid value: {np}: provided port is already allocated"
        )),
        "{err}"
    );
    let err = fails(apply(
        &master,
        &service(
            "np3",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}),
        ),
    ));
    assert!(
        err.contains(
            "provided port is not in the valid range. The range of valid ports is 30000-30100"
        ),
        "{err}"
    );

    // ExternalName: no address, the alias as EXTERNAL-IP; a bad name is a 422.
    ok(apply(
        &master,
        &service(
            "pay",
            json!({"type": "ExternalName", "externalName": "pay.example.com"}),
        ),
    ));
    let table = ok(master.kubectl(&["get", "svc", "pay"]));
    assert!(
        table.contains("ExternalName") && table.contains("pay.example.com"),
        "{table}"
    );
    let err = fails(apply(
        &master,
        &service(
            "bad",
            json!({"type": "ExternalName", "externalName": "not a name!"}),
        ),
    ));
    assert!(
        err.contains("spec.externalName: Invalid value: \"not a name!\""),
        "{err}"
    );

    // A LoadBalancer with no node yet is <pending>.
    ok(apply(
        &master,
        &service(
            "lb",
            json!({"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 8088}]}),
        ),
    ));
    let table = ok(master.kubectl(&["get", "svc", "lb"]));
    assert!(table.contains("<pending>"), "{table}");

    // Addresses survive a restart and are never handed out twice.
    let before: Vec<String> = ["web", "np", "lb"]
        .iter()
        .map(|n| {
            get_json(&master, &["get", "svc", n])["spec"]["clusterIP"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    master.stop();
    let master = Master::start(
        &master.data_dir.clone(),
        &["--service-node-port-range", "30000-30100"],
    );
    for (n, ip) in ["web", "np", "lb"].iter().zip(&before) {
        assert_eq!(
            get_json(&master, &["get", "svc", n])["spec"]["clusterIP"],
            ip.as_str()
        );
    }
    for i in 0..20 {
        ok(apply(
            &master,
            &service(&format!("s{i}"), json!({"ports": [{"port": 80}]})),
        ));
    }
    let list = get_json(&master, &["get", "svc", "-A"]);
    let ips: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str())
        .filter(|ip| *ip != "None")
        .collect();
    let unique: std::collections::BTreeSet<&str> = ips.iter().copied().collect();
    assert_eq!(ips.len(), unique.len(), "{ips:?}");
}

fn pod(name: &str, labels: Value, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels},
           "spec": {"nodeName": node, "containers": [{"name": "web", "image": "busybox:1.36", "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

/// Write a pod's status as its node's agent would.
fn set_status(master: &Master, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    ok(master.kubectl(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]));
}

#[test]
fn endpoint_slices_and_endpoints_follow_the_pods() {
    let (_dir, master) = new_master(&[]);
    ok(apply(
        &master,
        &service(
            "web",
            json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        ),
    ));
    // A selector that matches nothing yet: one empty slice, Endpoints with no subsets.
    let slices = wait_until("an empty slice", SETTLE, || {
        let list = get_json(
            &master,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ],
        );
        match list["items"].as_array().map(Vec::len) {
            Some(1) => Ok(list),
            _ => Err(list.to_string()),
        }
    });
    assert_eq!(slices["items"][0]["addressType"], "IPv4");
    assert_eq!(
        slices["items"][0]["metadata"]["ownerReferences"][0]["kind"],
        "Service"
    );

    for (name, ip) in [("web-a", "10.244.1.5"), ("web-b", "10.244.2.7")] {
        ok(apply(
            &master,
            &pod(
                name,
                json!({"app": "web"}),
                if name == "web-a" { "n1" } else { "n2" },
            ),
        ));
        set_status(&master, name, ip, true);
    }
    let table = wait_until("both endpoints", SETTLE, || {
        let t = ok(master.kubectl(&["get", "endpoints", "web"]));
        if t.contains("10.244.1.5:8080") && t.contains("10.244.2.7:8080") {
            Ok(t)
        } else {
            Err(t)
        }
    });
    assert!(table.contains("ENDPOINTS"), "{table}");
    let slices = ok(master.kubectl(&["get", "endpointslices"]));
    assert!(
        slices.contains("IPv4") && slices.contains("8080") && slices.contains("10.244.1.5"),
        "{slices}"
    );

    // A backend that turns unready leaves the ready set.
    set_status(&master, "web-b", "10.244.2.7", false);
    wait_until("web-b not ready", SETTLE, || {
        let ep = get_json(&master, &["get", "endpoints", "web"]);
        let not_ready = ep["subsets"][0]["notReadyAddresses"].to_string();
        let ready = ep["subsets"][0]["addresses"].to_string();
        if not_ready.contains("10.244.2.7") && !ready.contains("10.244.2.7") {
            Ok(())
        } else {
            Err(ep.to_string())
        }
    });
    let slice = get_json(
        &master,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
    );
    let b = slice["items"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["addresses"][0] == "10.244.2.7")
        .cloned()
        .expect("web-b");
    assert_eq!(
        b["conditions"],
        json!({"ready": false, "serving": false, "terminating": false})
    );
    assert_eq!(b["nodeName"], "n2");
    assert_eq!(b["targetRef"]["name"], "web-b");

    // A hand-written slice of a Service without a selector is left alone.
    ok(apply(
        &master,
        &service("ext", json!({"ports": [{"port": 5432}]})),
    ));
    let manual = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "ext-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "ext"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["192.168.1.50"]}], "ports": [{"port": 5432}]});
    ok(apply(&master, &manual));
    std::thread::sleep(Duration::from_millis(500));
    let kept = get_json(&master, &["get", "endpointslice", "ext-1"]);
    assert_eq!(kept["endpoints"][0]["addresses"][0], "192.168.1.50");

    // Deleting the Service removes its slices and Endpoints.
    ok(master.kubectl(&["delete", "svc", "web"]));
    wait_until("slices gone", SETTLE, || {
        let list = get_json(
            &master,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ],
        );
        let eps = master.kubectl(&["get", "endpoints", "web"]);
        if list["items"].as_array().is_some_and(Vec::is_empty) && !eps.status.success() {
            Ok(())
        } else {
            Err(list.to_string())
        }
    });
}
