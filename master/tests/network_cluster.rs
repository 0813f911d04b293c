//! End-to-end tests of the pod network (issue 5) on a two-node cluster built
//! on this machine: the real `bramble master` in the root namespace, each
//! node a network namespace on a test bridge running the real
//! `bramble-agent` (default runtime, real containers), and a host on the
//! bridge that is not a node ("outside"). Everything is driven the way a
//! user does it: `bramble apply`, `bramble get pods -o wide / -o json`,
//! `bramble delete`, `bramble-agent reset`; reachability is shown by pods
//! that fetch a URL with busybox wget and succeed or fail, and by wget run
//! on a node. See `support/net.rs` for the topology and the cleanup, which
//! runs even when an assertion fails.
//!
//! Needs root, `ip`, `nsenter`, `nft` and Debian's `busybox-static`
//! (`tests/run-all` installs them).

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::net::{
    apply, client_pod, get_json, in_netns, pod, web_pod, wget_from, NetCluster, BUSYBOX, INDEX,
};
use support::{ok, wait_until};

/// `status.podIP` of a pod.
fn pod_ip(pod: &Value) -> Ipv4Addr {
    pod["status"]["podIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no podIP: {pod:#}"))
}

/// `spec.podCIDR` of a node, as (network, prefix length).
fn pod_cidr(cluster: &NetCluster, node: &str) -> (Ipv4Addr, u32) {
    let object = get_json(cluster.master(), &["node", node]).expect("get node");
    let cidr = object["spec"]["podCIDR"].as_str().unwrap_or_default();
    let (network, len) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("node {node} has no pod CIDR: {object:#}"));
    (
        network.parse().expect("CIDR address"),
        len.parse().expect("CIDR length"),
    )
}

fn in_cidr(ip: Ipv4Addr, (network, len): (Ipv4Addr, u32)) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

/// The line of `bramble get pods -o wide` for pod `name`.
fn wide_line(cluster: &NetCluster, name: &str) -> String {
    let table = ok(cluster.master().bramble(&["get", "pods", "-o", "wide"]));
    let header = table.lines().next().unwrap_or_default().to_string();
    assert!(
        header.contains("IP") && header.contains("NODE"),
        "`get pods -o wide` has IP and NODE columns:\n{table}"
    );
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("pod {name} not in `get pods -o wide`:\n{table}"))
        .to_string()
}

/// Waits until `url` answers [`INDEX`] from the namespace at `netns`.
#[track_caller]
fn wait_reachable(what: &str, netns: &Path, url: &str) {
    wait_until(what, Duration::from_secs(20), || {
        let body = wget_from(netns, url)?;
        if body.contains(INDEX) {
            Ok(())
        } else {
            Err(format!("answered {body:?}"))
        }
    });
}

#[test]
fn pods_get_addresses_from_their_nodes_cidr_and_reach_each_other() {
    let cluster = NetCluster::start(&["a", "b"]);
    let (a, b) = (cluster.nodes[0].name.clone(), cluster.nodes[1].name.clone());
    let (cidr_a, cidr_b) = (pod_cidr(&cluster, &a), pod_cidr(&cluster, &b));
    assert_ne!(cidr_a, cidr_b, "each node has its own pod CIDR");

    apply(cluster.master(), &web_pod("web-a", &a, json!({})));
    apply(cluster.master(), &web_pod("web-b", &b, json!({})));
    let web_a = cluster.wait_running("web-a");
    let web_b = cluster.wait_running("web-b");
    assert_eq!(web_a["spec"]["nodeName"], a.as_str());
    assert_eq!(web_b["spec"]["nodeName"], b.as_str());
    let (ip_a, ip_b) = (pod_ip(&web_a), pod_ip(&web_b));
    assert!(in_cidr(ip_a, cidr_a), "{ip_a} is not in {a}'s {cidr_a:?}");
    assert!(in_cidr(ip_b, cidr_b), "{ip_b} is not in {b}'s {cidr_b:?}");
    for (pod, ip) in [(&web_a, ip_a), (&web_b, ip_b)] {
        assert_eq!(
            pod["status"]["podIPs"],
            json!([{"ip": ip.to_string()}]),
            "{pod:#}"
        );
    }
    for (name, ip, node) in [("web-a", ip_a, &a), ("web-b", ip_b, &b)] {
        let line = wide_line(&cluster, name);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.contains(&ip.to_string().as_str()) && words.contains(&node.as_str()),
            "`get pods -o wide` shows {name} with IP {ip} on {node}: {line}"
        );
    }

    // Same node: a pod on a reaches web-a by its IP.
    let url_a = format!("http://{ip_a}:8080/index.html");
    let url_b = format!("http://{ip_b}:8080/index.html");
    apply(
        cluster.master(),
        &client_pod("same-node", &a, &url_a, INDEX),
    );
    // Across nodes, both ways.
    apply(cluster.master(), &client_pod("a-to-b", &a, &url_b, INDEX));
    apply(cluster.master(), &client_pod("b-to-a", &b, &url_a, INDEX));
    let same_node = cluster.wait_succeeded("same-node");
    let a_to_b = cluster.wait_succeeded("a-to-b");
    let b_to_a = cluster.wait_succeeded("b-to-a");
    assert_eq!(same_node["spec"]["nodeName"], a.as_str());
    assert_eq!(a_to_b["spec"]["nodeName"], a.as_str());
    assert_eq!(b_to_a["spec"]["nodeName"], b.as_str());
    // Every pod has an address of its own.
    let mut ips = vec![ip_a, ip_b];
    for pod in [&same_node, &a_to_b, &b_to_a] {
        let ip = pod_ip(pod);
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        assert!(in_cidr(ip, pod_cidr(&cluster, node)), "{pod:#}");
        ips.push(ip);
    }
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ips.len(), "pod IPs collide: {ips:?}");

    // Control: a pod that fetches from an address where nothing listens
    // fails, so a Succeeded client above means it did reach its server.
    let nowhere = format!("http://{ip_b}:8081/index.html");
    let fetch_once = format!("timeout 2 wget -q -O - '{nowhere}' | grep -qxF '{INDEX}'");
    apply(
        cluster.master(),
        &pod(
            "control",
            &a,
            &["sh", "-c", &fetch_once],
            "Never",
            json!({}),
        ),
    );
    let control = cluster.wait_pod("control", "Failed", |p| {
        p["status"]["phase"] == "Failed" || p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(control["status"]["phase"], "Failed", "{control:#}");
}

#[test]
fn egress_is_masqueraded_to_the_node_address_and_host_port_answers_from_another_node() {
    let mut cluster = NetCluster::start(&["a", "b"]);
    let (a, b) = (cluster.nodes[0].name.clone(), cluster.nodes[1].name.clone());
    let (address_a, address_b) = (cluster.nodes[0].address, cluster.nodes[1].address);

    // The outside host: busybox httpd with a CGI that answers and records
    // the source address it sees.
    let www = cluster.dir.path().join("outside-www");
    let seen = cluster.dir.path().join("outside-seen");
    std::fs::create_dir_all(www.join("cgi-bin")).expect("www dir");
    std::fs::write(www.join("index.html"), format!("{INDEX}\n")).expect("index");
    let cgi = www.join("cgi-bin/whoami");
    std::fs::write(
        &cgi,
        format!(
            "#!/bin/sh\n\
             # An IPv6 socket shows an IPv4 peer as [::ffff:a.b.c.d].\n\
             peer=${{REMOTE_ADDR#[}}; peer=${{peer%]}}; peer=${{peer#::ffff:}}\n\
             echo \"$peer\" >> {}\n\
             printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$peer\"\n",
            seen.display()
        ),
    )
    .expect("cgi");
    must_chmod_x(&cgi);
    let outside = cluster.outside().to_path_buf();
    let out_address = cluster.outside_address;
    cluster.serve(
        &outside,
        BUSYBOX,
        &[
            "httpd",
            "-f",
            "-p",
            &format!("{out_address}:8000"),
            "-h",
            &www.display().to_string(),
        ],
    );
    wait_reachable(
        "the outside host serves",
        &outside,
        &format!("http://{out_address}:8000/index.html"),
    );

    // A pod on a reaches the outside host; the host sees a's address.
    let whoami = format!("http://{out_address}:8000/cgi-bin/whoami");
    apply(
        cluster.master(),
        &client_pod("egress", &a, &whoami, &address_a.to_string()),
    );
    let egress = cluster.wait_succeeded("egress");
    let egress_ip = pod_ip(&egress);
    let sources = std::fs::read_to_string(&seen).expect("the outside host saw requests");
    assert!(
        sources.lines().any(|l| l == address_a.to_string()),
        "the outside host sees node {a}'s address {address_a}; it saw {sources:?}"
    );
    assert!(
        !sources.contains(&egress_ip.to_string()),
        "the pod address {egress_ip} leaked outside: {sources:?}"
    );

    // hostPort on b answers on b's address, from node a and from a pod on a.
    apply(
        cluster.master(),
        &web_pod(
            "published",
            &b,
            json!({"ports": [{"containerPort": 8080, "hostPort": 30080}]}),
        ),
    );
    cluster.wait_running("published");
    let published = format!("http://{address_b}:30080/index.html");
    wait_reachable(
        &format!("hostPort 30080 of {b} from node {a}"),
        &cluster.nodes[0].netns,
        &published,
    );
    apply(
        cluster.master(),
        &client_pod("via-host-port", &a, &published, INDEX),
    );
    cluster.wait_succeeded("via-host-port");
    // Control: the same port on a, where nothing is published, refuses.
    let unpublished = format!("http://{address_a}:30080/index.html");
    assert!(
        cluster.nodes[1].wget(&unpublished).is_err(),
        "port 30080 answers on {a}, which publishes nothing"
    );
}

fn must_chmod_x(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// What a node namespace looks like: links (name, kind, flags, master),
/// IPv4 addresses, every IPv4 route, the nftables ruleset, ip_forward.
fn namespace_snapshot(netns: &Path) -> String {
    let run = |program: &str, args: &[&str]| {
        in_netns(netns, program, args).unwrap_or_else(|e| panic!("{e}"))
    };
    let links: Vec<String> = run("ip", &["-o", "link"])
        .lines()
        .map(|l| {
            // Drop the link-layer tail and the carrier state.
            let l = l.split("link/").next().unwrap_or_default();
            l.split_whitespace()
                .filter(|w| !["UNKNOWN", "UP", "DOWN", "LOWERLAYERDOWN"].contains(w))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    format!(
        "links:\n{}\naddresses:\n{}routes:\n{}nft:\n{}ip_forward={}",
        links.join("\n"),
        run("ip", &["-o", "-4", "addr"]),
        run("ip", &["-4", "route", "show", "table", "all"]),
        run("nft", &["list", "ruleset"]),
        run("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(),
    )
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            out.push(
                path.strip_prefix(base)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
            );
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn killed_agent_keeps_pods_reachable_and_reset_leaves_the_node_as_found() {
    let mut cluster = NetCluster::new(&["a", "b"]);
    let before: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| namespace_snapshot(&n.netns))
        .collect();
    cluster.start_agents();
    let (a, b) = (cluster.nodes[0].name.clone(), cluster.nodes[1].name.clone());
    for (node, before) in cluster.nodes.iter().zip(&before) {
        assert_ne!(
            &namespace_snapshot(&node.netns),
            before,
            "the agent of {} set up its node network",
            node.name
        );
        assert!(
            node.run("ip", &["link", "show", "bramble0"]).is_ok(),
            "{} has bramble0",
            node.name
        );
    }

    apply(cluster.master(), &web_pod("web-a", &a, json!({})));
    apply(cluster.master(), &web_pod("web-b", &b, json!({})));
    let web_a = cluster.wait_running("web-a");
    let web_b = cluster.wait_running("web-b");
    let (ip_a, ip_b) = (pod_ip(&web_a), pod_ip(&web_b));
    let url_b = format!("http://{ip_b}:8080/index.html");
    let restarts = |pod: &Value| pod["status"]["containerStatuses"][0]["restartCount"].clone();
    let uid_b = web_b["metadata"]["uid"].as_str().expect("uid").to_string();
    let netns_b = cluster.nodes[1].pod_netns(&uid_b);
    wait_reachable("web-b from node a", &cluster.nodes[0].netns, &url_b);

    // kill -9 b's agent: its pod keeps running and stays reachable from
    // the other node and from a pod on it.
    cluster.nodes[1].agent.as_mut().expect("agent b").kill9();
    wait_reachable(
        "web-b from node a while b's agent is dead",
        &cluster.nodes[0].netns,
        &url_b,
    );
    apply(
        cluster.master(),
        &client_pod("while-dead", &a, &url_b, INDEX),
    );
    cluster.wait_succeeded("while-dead");
    assert!(netns_b.exists(), "web-b's netns is still mounted");

    // Restart it: it re-adopts the pod, whose IP and container are unchanged.
    let agent_b = cluster.nodes[1].agent.as_mut().expect("agent b");
    let mark = agent_b.mark();
    agent_b.restart();
    agent_b.wait_log(mark, "re-adopted running pods");
    cluster.wait_ready(1);
    let again = cluster.wait_running("web-b");
    assert_eq!(pod_ip(&again), ip_b, "web-b's IP changed: {again:#}");
    assert_eq!(restarts(&again), restarts(&web_b), "{again:#}");
    assert!(
        wide_line(&cluster, "web-b")
            .split_whitespace()
            .any(|w| w == ip_b.to_string()),
        "{}",
        wide_line(&cluster, "web-b")
    );
    wait_reachable(
        "web-b from node a after b's agent restarted",
        &cluster.nodes[0].netns,
        &url_b,
    );
    apply(
        cluster.master(),
        &client_pod("after-restart", &a, &url_b, INDEX),
    );
    cluster.wait_succeeded("after-restart");
    // A new pod on b gets a new address: the agent kept web-b's reserved.
    apply(cluster.master(), &web_pod("web-b2", &b, json!({})));
    let ip_b2 = pod_ip(&cluster.wait_running("web-b2"));
    assert_ne!(ip_b2, ip_b, "web-b2 got web-b's address");
    assert_eq!(
        pod_ip(&get_json(cluster.master(), &["pod", "web-a"]).expect("web-a")),
        ip_a
    );

    // Delete every pod, stop the agents, reset the nodes: each node
    // namespace is as it was before its agent first started.
    ok(cluster.master().bramble(&[
        "delete",
        "pods",
        "web-a",
        "web-b",
        "web-b2",
        "while-dead",
        "after-restart",
    ]));
    wait_until("every pod is gone", Duration::from_secs(60), || {
        let pods = get_json(cluster.master(), &["pods"])?;
        match pods["items"].as_array() {
            Some(items) if items.is_empty() => Ok(()),
            _ => Err(pods.to_string()),
        }
    });
    for node in &cluster.nodes {
        wait_until(
            &format!("{} stopped its pods", node.name),
            Duration::from_secs(60),
            || node.pods_gone(),
        );
    }
    for (node, before) in cluster.nodes.iter_mut().zip(&before) {
        let mut agent = node.agent.take().expect("agent running");
        agent.stop(Duration::from_secs(30));
        let out = node
            .agent_command(&["reset"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("removed"), "reset printed {out:?}");
        let name = node.name.clone();
        assert_eq!(
            &namespace_snapshot(&node.netns),
            before,
            "`bramble-agent reset` leaves {name}'s namespace as it found it"
        );
        let run_dir: PathBuf = node.run_dir();
        assert_eq!(
            tree(&run_dir),
            Vec::<String>::new(),
            "reset leaves {name}'s run dir empty"
        );
        assert_eq!(
            support::net::mounts_under(&node.dir),
            Vec::<String>::new(),
            "mounts left under {name}'s dir"
        );
        assert_eq!(
            NetCluster::cgroups_of(&name),
            Vec::<PathBuf>::new(),
            "cgroups of {name} left"
        );
    }
    // The `bramble` parent cgroup is gone too, unless another agent on this
    // machine (a parallel test) still has a node in it.
    for root in support::net::cgroup_roots() {
        let parent = root.join("bramble");
        if parent.is_dir() {
            let children: Vec<_> = std::fs::read_dir(&parent)
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                !children.is_empty(),
                "an empty {} is left after reset",
                parent.display()
            );
        }
    }
}
