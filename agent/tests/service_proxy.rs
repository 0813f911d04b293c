//! The service proxy for real: nodes and pods as network namespaces (see
//! `network_support`), the real pod network, the proxy's rules applied
//! with the real `nft`, traffic through ClusterIPs and NodePorts. Needs
//! root and `nft`. Every namespace (and so every table and link) is
//! removed by the cluster's `Drop`, also when an assertion fails.
#![allow(clippy::unwrap_used, missing_docs)]

mod network_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use bramble_agent::network::netns::in_netns;
use bramble_agent::network::proxy::{self, LocalPods, ProxyConfig};
use bramble_agent::network::{nft, PodNetwork};
use bramble_common::wire::{
    WireEndpoint, WireProtocol, WireService, WireServicePort, WireServiceType,
};
use network_support::{ask_from, ns_cmd, Cluster, CLUSTER_CIDR};

const CLUSTER_IP: &str = "10.96.0.20";
const NODE_PORT: u16 = 30080;
const POD_PORT: u16 = 8080;

/// Answers every connection on port [`POD_PORT`] in `netns` with `name`.
fn serve_name(netns: &Path, name: &'static str) {
    let listener = in_netns(Some(netns), || TcpListener::bind(("0.0.0.0", POD_PORT)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(name.as_bytes());
        }
    });
}

fn web(endpoints: &[(Ipv4Addr, &str, bool)]) -> WireService {
    WireService {
        namespace: "default".into(),
        name: "web".into(),
        type_: WireServiceType::NodePort,
        cluster_ip: CLUSTER_IP.into(),
        ports: vec![WireServicePort {
            name: "http".into(),
            protocol: WireProtocol::Tcp,
            port: 80,
            node_port: NODE_PORT,
        }],
        endpoints: endpoints
            .iter()
            .map(|(ip, node, ready)| WireEndpoint {
                address: ip.to_string(),
                node: node.to_string(),
                ready: *ready,
                serving: *ready,
                ports: vec![POD_PORT],
                ..WireEndpoint::default()
            })
            .collect(),
        ..WireService::default()
    }
}

/// Programs the proxy of node `netns` (named `node`) for `services`.
fn program(netns: &Path, table: &str, node: &str, services: &[WireService], local: &LocalPods) {
    let config = ProxyConfig {
        table: table.into(),
        node: node.into(),
        cluster_cidr: CLUSTER_CIDR.parse().unwrap(),
        dns: None,
    };
    let script = proxy::render(&config, services, local);
    in_netns(Some(netns), || nft::apply("nft", table, &script))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{script}"));
}

/// Who answers at `addr` from `netns`, over `tries` connections.
fn answers(netns: &Path, addr: SocketAddr, tries: usize) -> BTreeSet<String> {
    (0..tries)
        .map(|_| ask_from(netns, addr).unwrap_or_else(|e| format!("error: {e}")))
        .collect()
}

#[test]
fn cluster_ip_and_node_port_balance_reject_and_follow_readiness() {
    let started = Instant::now();
    let cluster = Cluster::new(2);
    let (na, nb) = (cluster.node(0), cluster.node(1));
    let (net_a, net_b) = (na.network(&cluster.id), nb.network(&cluster.id));
    net_a.ensure_node(&na.config()).unwrap();
    net_b.ensure_node(&nb.config()).unwrap();
    let peers = [na.peer(), nb.peer()];
    net_a.sync_routes(&peers).unwrap();
    net_b.sync_routes(&peers).unwrap();
    // Nodes have a default route (to the outside host), as real ones do:
    // a cluster IP without rules would be routed away, not unreachable.
    for node in [na, nb] {
        ns_cmd(
            &node.netns,
            "ip",
            &format!("route add default via {}", cluster.outside_address),
        );
    }

    let a_ns = na.pod_netns("web-a");
    let b_ns = nb.pod_netns("web-b");
    let c_ns = na.pod_netns("client");
    let a = net_a.setup_pod("web-a", &a_ns, &[]).unwrap();
    let b = net_b.setup_pod("web-b", &b_ns, &[]).unwrap();
    net_a.setup_pod("client", &c_ns, &[]).unwrap();
    serve_name(&a_ns, "web-a");
    serve_name(&b_ns, "web-b");

    let table = format!("bramble-svc-{}", cluster.id);
    let both = [
        (a.ip, na.name.as_str(), true),
        (b.ip, nb.name.as_str(), true),
    ];
    for node in [na, nb] {
        program(
            &node.netns,
            &table,
            &node.name,
            &[web(&both)],
            &LocalPods::new(),
        );
    }
    let listing = ns_cmd(&na.netns, "nft", &format!("list table ip {table}"));
    assert!(listing.contains("map service-ips"), "{listing}");
    assert!(listing.contains("numgen random mod 2"), "{listing}");

    let cluster_ip = SocketAddr::new(IpAddr::V4(CLUSTER_IP.parse().unwrap()), 80);
    let expected: BTreeSet<String> = ["web-a".to_string(), "web-b".to_string()].into();
    // A pod reaches the ClusterIP and gets both backends (random choice:
    // 40 tries miss one of two with probability 2^-39).
    assert_eq!(answers(&c_ns, cluster_ip, 40), expected, "pod -> ClusterIP");
    // The node itself reaches it too (nat-output).
    assert_eq!(
        answers(&na.netns, cluster_ip, 40),
        expected,
        "node -> ClusterIP"
    );
    // A backend reaching its own Service (hairpin) is answered.
    let port = ns_cmd(
        &na.netns,
        "ip",
        &format!("-d link show {}", a.veth_host_name),
    );
    assert!(port.contains("hairpin on"), "{port}");
    let from_a = answers(&a_ns, cluster_ip, 40);
    assert_eq!(from_a, expected, "hairpin: web-a -> ClusterIP");

    // NodePort from outside on every node's address.
    for node in [na, nb] {
        let addr = SocketAddr::new(IpAddr::V4(node.address), NODE_PORT);
        assert_eq!(
            answers(&cluster.outside, addr, 40),
            expected,
            "outside -> NodePort on {}",
            node.name
        );
    }

    // web-b turns unready: it leaves the rotation.
    let only_a = [
        (a.ip, na.name.as_str(), true),
        (b.ip, nb.name.as_str(), false),
    ];
    program(
        &na.netns,
        &table,
        &na.name,
        &[web(&only_a)],
        &LocalPods::new(),
    );
    assert_eq!(
        answers(&c_ns, cluster_ip, 20),
        ["web-a".to_string()].into(),
        "unready web-b left the rotation"
    );

    // The master says web-a is not ready (its node's uplink is down), but
    // node a's own probes say it is: node a keeps routing to it.
    let stale = [
        (a.ip, na.name.as_str(), false),
        (b.ip, nb.name.as_str(), false),
    ];
    let local: LocalPods = [(a.ip, true)].into();
    program(&na.netns, &table, &na.name, &[web(&stale)], &local);
    assert_eq!(answers(&c_ns, cluster_ip, 20), ["web-a".to_string()].into());

    // No endpoints: the connection is refused at once, not left to time out.
    program(&na.netns, &table, &na.name, &[web(&[])], &LocalPods::new());
    let refused = Instant::now();
    let error = ask_from(&c_ns, cluster_ip).unwrap_err();
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );
    assert!(refused.elapsed() < Duration::from_secs(2));
    let node_port = SocketAddr::new(IpAddr::V4(na.address), NODE_PORT);
    let error = ask_from(&cluster.outside, node_port).unwrap_err();
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );

    // A script the kernel refuses leaves the rules in place.
    program(
        &na.netns,
        &table,
        &na.name,
        &[web(&both)],
        &LocalPods::new(),
    );
    let bad = in_netns(Some(&na.netns), || {
        nft::apply(
            "nft",
            &table,
            &format!("table ip {table} {{ chain x {{ nonsense }} }}"),
        )
    })
    .unwrap();
    assert!(bad.is_err());
    assert_eq!(
        answers(&c_ns, cluster_ip, 40),
        expected,
        "previous rules kept"
    );

    // Removing the table (what reset does) leaves no trace.
    in_netns(Some(&na.netns), || {
        nft::apply("nft", &table, &proxy::render_delete(&table))
    })
    .unwrap()
    .unwrap();
    let tables = ns_cmd(&na.netns, "nft", "list tables");
    assert!(!tables.contains(&table), "{tables}");
    assert!(started.elapsed() < Duration::from_secs(120));
}
