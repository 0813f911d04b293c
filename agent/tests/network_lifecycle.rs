//! Node network lifecycle for real: idempotence, restart, repair, routes that
//! follow nodes, leak-free create/delete cycles, exhaustion, reset. Needs root.
#![allow(clippy::unwrap_used, missing_docs)]

mod network_support;

use std::net::{IpAddr, SocketAddr};

use bramble_agent::network::netns::{create_netns, delete_netns};
use bramble_agent::network::{HostPort, NodeNetConfig, Peer, PodNetwork, Protocol};
use network_support::{ask_from, listen_in, mounts_under, ns_cmd, serve_peer_address, Cluster};

/// Links, addresses and routes of a namespace, without counters.
fn snapshot(netns: &std::path::Path) -> String {
    let links: Vec<String> = ns_cmd(netns, "ip", "-o link")
        .lines()
        // Keep name, flags, mtu and master; drop the `link/ether` tail and
        // the carrier state (a bridge whose last port left has no carrier).
        .map(|l| {
            let l = l.split('\\').next().unwrap_or_default();
            l.split_whitespace()
                .filter(|w| !["UNKNOWN", "UP", "DOWN", "LOWERLAYERDOWN", "linkdown"].contains(w))
                .map(|w| w.replace(",LOWER_UP", "").replace("NO-CARRIER,", ""))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    format!(
        "{}\n{}\n{}\n{}\nip_forward={}",
        links.join("\n"),
        ns_cmd(netns, "ip", "-o -4 addr"),
        ns_cmd(netns, "ip", "route").replace(" linkdown", ""),
        ns_cmd(netns, "nft", "list tables"),
        ns_cmd(netns, "cat", "/proc/sys/net/ipv4/ip_forward").trim(),
    )
}

#[test]
fn restart_keeps_ips_and_changes_nothing() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let net = node.network(&cluster.id);
    let first = net.ensure_node(&node.config()).unwrap();
    assert!(!first.repaired.is_empty());
    assert!(net.ensure_node(&node.config()).unwrap().repaired.is_empty());

    let uids = ["r1", "r2", "r3"];
    let mut ips = Vec::new();
    for uid in uids {
        let ns = node.pod_netns(uid);
        ips.push(net.setup_pod(uid, &ns, &[]).unwrap().ip);
    }
    // Release one so that the reuse queue is non-empty too.
    net.teardown_pod("r2", &node.pods_dir.join("r2")).unwrap();
    let before = snapshot(&node.netns);
    drop(net);

    // "Restart": a new instance over the same state directory.
    let net = node.network(&cluster.id);
    let state = net.ensure_node(&node.config()).unwrap();
    assert!(state.repaired.is_empty(), "{:?}", state.repaired);
    for (uid, ip) in [("r1", ips[0]), ("r3", ips[2])] {
        let status = net.setup_pod(uid, &node.pods_dir.join(uid), &[]).unwrap();
        assert_eq!(status.ip, ip, "{uid} keeps its address");
    }
    assert_eq!(snapshot(&node.netns), before, "restart changed nothing");
    // A new pod gets neither a held address nor the just-released one.
    let fresh = net.setup_pod("r4", &node.pod_netns("r4"), &[]).unwrap().ip;
    assert!(!ips.contains(&fresh), "{fresh} in {ips:?}");

    // Still working traffic after the restart.
    let port = serve_peer_address(listen_in(&node.pods_dir.join("r1")), 1);
    let seen = ask_from(
        &node.pods_dir.join("r4"),
        SocketAddr::new(IpAddr::V4(ips[0]), port),
    );
    assert_eq!(seen.unwrap(), fresh.to_string());
}

#[test]
fn deleted_bridge_and_route_are_repaired() {
    let cluster = Cluster::new(2);
    let (na, nb) = (cluster.node(0), cluster.node(1));
    let net = na.network(&cluster.id);
    net.ensure_node(&na.config()).unwrap();
    net.sync_routes(&[nb.peer()]).unwrap();
    let a_ns = na.pod_netns("x1");
    let b_ns = na.pod_netns("x2");
    let a = net.setup_pod("x1", &a_ns, &[]).unwrap();
    net.setup_pod("x2", &b_ns, &[]).unwrap();

    na.ip("link del bramble0");
    na.ip("route del 10.244.2.0/24");
    ns_cmd(
        &na.netns,
        "nft",
        &format!("delete table ip bramble-{}", cluster.id),
    );
    let state = net.ensure_node(&na.config()).unwrap();
    let repaired = state.repaired.join("; ");
    assert!(repaired.contains("created bridge bramble0"), "{repaired}");
    assert!(repaired.contains("route to 10.244.2.0/24"), "{repaired}");
    assert!(repaired.contains("nftables"), "{repaired}");
    // Pods are re-attached by setting them up again (idempotent).
    assert_eq!(net.setup_pod("x1", &a_ns, &[]).unwrap(), a);
    net.setup_pod("x2", &b_ns, &[]).unwrap();
    let port = serve_peer_address(listen_in(&a_ns), 1);
    assert!(ask_from(&b_ns, SocketAddr::new(IpAddr::V4(a.ip), port)).is_ok());
    assert!(net.ensure_node(&na.config()).unwrap().repaired.is_empty());
}

#[test]
fn routes_follow_nodes_joining_leaving_and_moving() {
    let cluster = Cluster::new(3);
    let (na, nb, nc) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let net = na.network(&cluster.id);
    net.ensure_node(&na.config()).unwrap();

    let changes = net.sync_routes(&[na.peer(), nb.peer()]).unwrap();
    assert_eq!(changes.added, vec![nb.pod_cidr]);
    let changes = net.sync_routes(&[na.peer(), nb.peer(), nc.peer()]).unwrap();
    assert_eq!(changes.added, vec![nc.pod_cidr], "C joined");
    let moved = Peer {
        address: "192.168.77.30".parse().unwrap(),
        ..nc.peer()
    };
    let changes = net.sync_routes(&[nb.peer(), moved]).unwrap();
    assert_eq!(changes.added, vec![nc.pod_cidr], "C changed address");
    let routes = na.ip("route");
    assert!(
        routes.contains("10.244.3.0/24 via 192.168.77.30"),
        "{routes}"
    );
    let changes = net.sync_routes(&[nb.peer()]).unwrap();
    assert_eq!(changes.removed, vec![nc.pod_cidr], "C left");
    let routes = na.ip("route");
    assert!(!routes.contains("10.244.3.0"), "{routes}");
    assert!(
        routes.contains("10.244.2.0/24 via 192.168.77.11"),
        "{routes}"
    );
    // Routes bramble did not make are left alone.
    na.ip("route add 10.99.0.0/16 via 192.168.77.11");
    net.sync_routes(&[]).unwrap();
    let routes = na.ip("route");
    assert!(routes.contains("10.99.0.0/16"), "{routes}");
    assert!(!routes.contains("10.244.2.0"), "{routes}");
}

#[test]
fn hundred_create_delete_cycles_leak_nothing() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let net = node.network(&cluster.id);
    net.ensure_node(&node.config()).unwrap();
    let before = snapshot(&node.netns);
    let port = HostPort {
        host_port: 8000,
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: None,
    };
    for i in 0..100 {
        let uid = format!("cycle-{i}");
        let ns = node.pod_netns(&uid);
        let ports = if i % 10 == 0 { vec![port] } else { vec![] };
        net.setup_pod(&uid, &ns, &ports).unwrap();
        net.teardown_pod(&uid, &ns).unwrap();
        net.teardown_pod(&uid, &ns).unwrap(); // idempotent
        delete_netns(&ns).unwrap();
    }
    assert_eq!(snapshot(&node.netns), before);
    let bridge_ports = node.ip("-o link show master bramble0");
    assert!(bridge_ports.trim().is_empty(), "{bridge_ports}");
    assert!(mounts_under(&node.pods_dir).is_empty());
    let ipam: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.state_dir.join("ipam.json")).unwrap()).unwrap();
    assert_eq!(ipam["allocations"], serde_json::json!({}));
    let ruleset = ns_cmd(&node.netns, "nft", "list ruleset");
    assert!(!ruleset.contains("dport 8000"), "{ruleset}");
}

#[test]
fn exhaustion_is_an_error_naming_the_cidr_and_leaks_nothing() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let net = node.network(&cluster.id);
    let mut config = node.config();
    config.pod_cidr = "10.244.9.0/29".parse().unwrap(); // .2 ..= .6
    net.ensure_node(&config).unwrap();
    for i in 0..5 {
        let uid = format!("full-{i}");
        net.setup_pod(&uid, &node.pod_netns(&uid), &[]).unwrap();
    }
    let err = net
        .setup_pod("one-more", &node.pod_netns("one-more"), &[])
        .unwrap_err();
    assert!(err.is_exhausted(), "{err}");
    assert!(err.to_string().contains("10.244.9.0/29"), "{err}");
    let veths = node.ip("-o link show master bramble0");
    assert_eq!(veths.lines().count(), 5, "{veths}");
}

#[test]
fn reset_leaves_the_node_as_it_found_it() {
    let cluster = Cluster::new(2);
    let (na, nb) = (cluster.node(0), cluster.node(1));
    let before = snapshot(&na.netns);
    let net = na.network(&cluster.id);
    let mut config: NodeNetConfig = na.config();
    config.masquerade = true;
    net.ensure_node(&config).unwrap();
    net.sync_routes(&[na.peer(), nb.peer()]).unwrap();
    let port = HostPort {
        host_port: 9090,
        container_port: 90,
        protocol: Protocol::Udp,
        host_ip: None,
    };
    for uid in ["z1", "z2", "z3"] {
        net.setup_pod(uid, &na.pod_netns(uid), &[port]).ok();
    }
    // A veth that lost its bridge (e.g. a crash mid-way) is found too.
    na.ip("link set dev bramble0 down");
    assert_ne!(snapshot(&na.netns), before);
    assert_eq!(mounts_under(&na.pods_dir).len(), 3);

    net.reset().unwrap();
    assert_eq!(snapshot(&na.netns), before);
    assert!(mounts_under(&na.pods_dir).is_empty());
    assert_eq!(std::fs::read_dir(&na.pods_dir).unwrap().count(), 0);
    assert!(!na.state_dir.join("ipam.json").exists());
    // Reset twice is harmless, and the node can start again from scratch.
    net.reset().unwrap();
    net.ensure_node(&config).unwrap();
    let ns = na.pods_dir.join("again");
    create_netns(&ns).unwrap();
    assert_eq!(
        net.setup_pod("again", &ns, &[]).unwrap().ip.to_string(),
        "10.244.1.2"
    );
    net.reset().unwrap();
    assert_eq!(snapshot(&na.netns), before);
}

#[test]
fn retain_pods_releases_what_gone_pods_hold_after_a_restart() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let net = node.network(&cluster.id);
    net.ensure_node(&node.config()).unwrap();
    let port = HostPort {
        host_port: 7070,
        container_port: 70,
        protocol: Protocol::Tcp,
        host_ip: None,
    };
    let keep = net.setup_pod("keep", &node.pod_netns("keep"), &[]).unwrap();
    let gone = net
        .setup_pod("gone", &node.pod_netns("gone"), &[port])
        .unwrap();
    drop(net);

    let net = node.network(&cluster.id);
    net.ensure_node(&node.config()).unwrap();
    assert_eq!(
        net.retain_pods(&["keep"]).unwrap(),
        vec!["gone".to_string()]
    );
    let veths = node.ip("-o link show master bramble0");
    assert!(veths.contains(&keep.veth_host_name), "{veths}");
    assert!(!veths.contains(&gone.veth_host_name), "{veths}");
    let ruleset = ns_cmd(&node.netns, "nft", "list ruleset");
    assert!(!ruleset.contains("7070"), "{ruleset}");
    assert!(net.retain_pods(&["keep"]).unwrap().is_empty());
    assert_eq!(
        net.setup_pod("keep", &node.pods_dir.join("keep"), &[])
            .unwrap()
            .ip,
        keep.ip
    );
}
