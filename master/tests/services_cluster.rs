//! Services end to end (issue 11) on a two-node cluster on this machine:
//! the real `bramble master`, two nodes as network namespaces each running
//! the real `bramble-agent` (real containers, real nftables), and a host
//! that is not a node ("outside"); see `support/net.rs` for the topology
//! and the cleanup, which runs even when an assertion fails.
//!
//! Two backends (busybox httpd answering with their pod name) behind a
//! NodePort Service and a LoadBalancer Service (EXTERNAL-IP: the nodes'
//! addresses, answering there from outside): a pod on either node reaches the ClusterIP and gets
//! answers from both; the NodePort answers from outside on every node's
//! address; with the master stopped, and then with an agent restarted
//! while the master is still down (its Services from its saved copy),
//! the pods still reach the Service. Client pods reach `web`,
//! `web.default` and `web.default.svc.cluster.local` by name (their
//! resolv.conf, the cluster DNS Service DNATed to the node-local DNS
//! server), and the name still resolves with the master stopped. Other
//! requests are made with busybox wget and nslookup inside the pods'
//! network namespaces (`nsenter --net`).
//!
//! Needs root, `ip`, `nsenter`, `nft` and Debian's `busybox-static`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::net::{apply, client_pod, get_json, in_netns, pod, wget_from, NetCluster, BUSYBOX};
use support::wait_until;

const NODE_PORT: u16 = 30081;

/// A backend: busybox httpd on 8080 whose index is its pod name.
fn backend(name: &str, node: &str) -> Value {
    let mut object = pod(
        name,
        node,
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && cat /etc/hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        ],
        "Always",
        json!({
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        }),
    );
    object["metadata"]["labels"]["app"] = json!("web");
    object
}

/// A pod that only sleeps: its network namespace is where requests come from.
fn sleeper(name: &str, node: &str) -> Value {
    pod(name, node, &["sleep", "3600"], "Always", json!({}))
}

/// `nslookup name 10.96.0.10` from `netns` (the cluster DNS Service,
/// which each node's proxy sends to its own DNS server) until it lists
/// `address`.
#[track_caller]
fn wait_resolves(what: &str, netns: &Path, name: &str, address: &str) {
    wait_until(what, Duration::from_secs(30), || {
        let out = in_netns(
            netns,
            BUSYBOX,
            &["timeout", "3", BUSYBOX, "nslookup", name, "10.96.0.10"],
        )?;
        if out.contains(address) {
            Ok(())
        } else {
            Err(out)
        }
    });
}

/// Who answers `url` from `netns`, until every one of `expected` has
/// (or the deadline passes: then the test fails with what was seen).
#[track_caller]
fn wait_answers(what: &str, netns: &Path, url: &str, expected: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    wait_until(what, Duration::from_secs(45), || {
        for _ in 0..10 {
            match wget_from(netns, url) {
                Ok(body) => {
                    seen.insert(body.trim().to_string());
                }
                Err(e) => errors.push(e),
            }
        }
        if expected.is_subset(&seen) {
            Ok(())
        } else {
            Err(format!(
                "seen {seen:?}; last errors {:?}",
                &errors[errors.len().saturating_sub(3)..]
            ))
        }
    });
}

fn pod_netns(cluster: &NetCluster, node: usize, name: &str) -> PathBuf {
    let object = get_json(cluster.master(), &["pod", name]).expect("get pod");
    let uid = object["metadata"]["uid"].as_str().expect("uid");
    cluster.nodes[node].pod_netns(uid)
}

#[test]
fn pods_on_both_nodes_reach_a_service_and_its_node_port_also_with_the_master_stopped() {
    let mut cluster = NetCluster::start(&["a", "b"]);
    let (a, b) = (cluster.nodes[0].name.clone(), cluster.nodes[1].name.clone());
    apply(cluster.master(), &backend("web-a", &a));
    apply(cluster.master(), &backend("web-b", &b));
    apply(cluster.master(), &sleeper("client-a", &a));
    apply(cluster.master(), &sleeper("client-b", &b));
    apply(
        cluster.master(),
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": NODE_PORT}]},
        }),
    );
    for name in ["web-a", "web-b", "client-a", "client-b"] {
        cluster.wait_running(name);
    }
    let service = get_json(cluster.master(), &["svc", "web"]).expect("get svc");
    let cluster_ip = service["spec"]["clusterIP"]
        .as_str()
        .expect("a clusterIP")
        .to_string();
    let both: BTreeSet<String> = ["web-a".to_string(), "web-b".to_string()].into();
    let url = format!("http://{cluster_ip}/");
    let clients = [
        pod_netns(&cluster, 0, "client-a"),
        pod_netns(&cluster, 1, "client-b"),
    ];
    for (i, netns) in clients.iter().enumerate() {
        wait_answers(
            &format!("client on node {} gets both backends at {url}", i),
            netns,
            &url,
            &both,
        );
    }
    let outside = cluster.outside().to_path_buf();
    for node in &cluster.nodes {
        let node_port = format!("http://{}:{NODE_PORT}/", node.address);
        wait_answers(
            &format!("NodePort on {} from outside", node.name),
            &outside,
            &node_port,
            &both,
        );
    }

    // A LoadBalancer Service (ServiceLB): the nodes' addresses are its
    // EXTERNAL-IP and its port answers there from outside.
    apply(
        cluster.master(),
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web-lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 8088, "targetPort": "http"}]},
        }),
    );
    let addresses: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.address.to_string())
        .collect();
    wait_until(
        "web-lb's ingress lists both nodes",
        Duration::from_secs(30),
        || {
            let lb = get_json(cluster.master(), &["svc", "web-lb"])?;
            let ingress: Vec<String> = lb["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().map(str::to_string))
                .collect();
            let mut want = addresses.clone();
            want.sort();
            if ingress == want {
                Ok(())
            } else {
                Err(format!("{lb:#}"))
            }
        },
    );
    // The table lists every node address as EXTERNAL-IP, as
    // kube-apiserver's (wide) tables do.
    let table = support::ok(cluster.master().bramble(&["get", "svc", "web-lb"]));
    let mut sorted = addresses.clone();
    sorted.sort();
    assert!(
        !table.contains("<pending>") && table.contains(&sorted.join(",")),
        "EXTERNAL-IP shows the nodes' addresses:\n{table}"
    );
    for address in &addresses {
        wait_answers(
            &format!("LoadBalancer {address}:8088 from outside"),
            &outside,
            &format!("http://{address}:8088/"),
            &both,
        );
    }

    // Names: a pod on either node resolves `web`, `web.default` and the
    // full name through its resolv.conf (search path, ndots:5) and reaches
    // both backends by name.
    let names = [
        ("short-a", &a, "http://web/", "web-a"),
        ("short-b", &b, "http://web/", "web-b"),
        ("ns-a", &a, "http://web.default/", "web-b"),
        ("ns-b", &b, "http://web.default/", "web-a"),
        (
            "fqdn-a",
            &a,
            "http://web.default.svc.cluster.local/",
            "web-a",
        ),
        (
            "fqdn-b",
            &b,
            "http://web.default.svc.cluster.local/",
            "web-b",
        ),
    ];
    for (name, node, url, expect) in names {
        apply(cluster.master(), &client_pod(name, node, url, expect));
    }
    for (name, ..) in names {
        cluster.wait_succeeded(name);
    }
    let fqdn = "web.default.svc.cluster.local";
    for netns in &clients {
        wait_resolves("the ClusterIP by name", netns, fqdn, &cluster_ip);
    }

    // The master goes away: the nodes keep routing and resolving.
    cluster.master.as_mut().expect("master").stop();
    for netns in &clients {
        wait_answers("with the master stopped", netns, &url, &both);
        wait_resolves("with the master stopped", netns, fqdn, &cluster_ip);
    }
    // An agent restarted while the master is down programs its Services
    // from its saved copy.
    let table = format!("bramble-svc-{a}");
    let agent = cluster.nodes[0].agent.as_mut().expect("agent a");
    agent.kill9();
    let _ = cluster.nodes[0].run("nft", &["delete", "table", "ip", &table]);
    cluster.nodes[0].agent.as_mut().expect("agent a").restart();
    wait_until(
        "the restarted agent restores its service table without the master",
        Duration::from_secs(30),
        || {
            cluster.nodes[0]
                .run("nft", &["list", "table", "ip", &table])
                .map(|_| ())
        },
    );
    wait_answers(
        "restarted agent, master still down",
        &clients[0],
        &url,
        &both,
    );
    wait_resolves(
        "restarted agent, master still down",
        &clients[0],
        fqdn,
        &cluster_ip,
    );
}
