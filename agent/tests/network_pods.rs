//! Pod traffic for real, across nodes simulated as network namespaces
//! (see `network_support`). Needs root.
#![allow(clippy::unwrap_used, missing_docs)]

mod network_support;

use std::net::{IpAddr, SocketAddr};

use bramble_agent::network::{HostPort, PodNetwork, Protocol};
use network_support::{ask_from, listen_in, serve_peer_address, Cluster, UPLINK_MTU};

#[test]
fn two_pods_on_one_node_reach_each_other() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let net = node.network(&cluster.id);
    let state = net.ensure_node(&node.config()).unwrap();
    assert_eq!(state.gateway.to_string(), "10.244.1.1");
    assert_eq!(state.mtu, UPLINK_MTU, "bridge MTU follows the uplink");

    let a_ns = node.pod_netns("pod-a");
    let b_ns = node.pod_netns("pod-b");
    let a = net.setup_pod("pod-a", &a_ns, &[]).unwrap();
    let b = net.setup_pod("pod-b", &b_ns, &[]).unwrap();
    assert_eq!(a.ip.to_string(), "10.244.1.2");
    assert_eq!(b.ip.to_string(), "10.244.1.3");
    assert_eq!(
        net.setup_pod("pod-a", &a_ns, &[]).unwrap(),
        a,
        "setup is idempotent"
    );

    let port = serve_peer_address(listen_in(&a_ns), 1);
    let seen = ask_from(&b_ns, SocketAddr::new(IpAddr::V4(a.ip), port)).unwrap();
    assert_eq!(seen, b.ip.to_string(), "pod A sees pod B's own address");

    // The pod side is as specified.
    let links = network_support::ns_cmd(&a_ns, "ip", "-o link");
    assert!(links.contains("lo: <LOOPBACK,UP"), "{links}");
    assert!(links.contains("eth0@"), "{links}");
    assert!(links.contains(&format!("mtu {UPLINK_MTU}")), "{links}");
    let routes = network_support::ns_cmd(&a_ns, "ip", "route");
    assert!(
        routes.contains("default via 10.244.1.1 dev eth0"),
        "{routes}"
    );
    let host = node.ip("-o link show master bramble0");
    assert!(host.contains(&a.veth_host_name), "{host}");
    assert!(host.contains(&b.veth_host_name), "{host}");
}

#[test]
fn pod_on_node_a_reaches_pod_on_node_b() {
    let cluster = Cluster::new(2);
    let (na, nb) = (cluster.node(0), cluster.node(1));
    let (net_a, net_b) = (na.network(&cluster.id), nb.network(&cluster.id));
    net_a.ensure_node(&na.config()).unwrap();
    net_b.ensure_node(&nb.config()).unwrap();
    let peers = [na.peer(), nb.peer()];
    let changes = net_a.sync_routes(&peers).unwrap();
    assert_eq!(changes.added, vec![nb.pod_cidr], "own CIDR is skipped");
    net_b.sync_routes(&peers).unwrap();
    assert!(
        net_a.sync_routes(&peers).unwrap().is_empty(),
        "no change twice"
    );

    let a_ns = na.pod_netns("pa");
    let b_ns = nb.pod_netns("pb");
    let a = net_a.setup_pod("pa", &a_ns, &[]).unwrap();
    let b = net_b.setup_pod("pb", &b_ns, &[]).unwrap();
    assert_eq!(b.ip.to_string(), "10.244.2.2");

    let port = serve_peer_address(listen_in(&b_ns), 1);
    let seen = ask_from(&a_ns, SocketAddr::new(IpAddr::V4(b.ip), port)).unwrap();
    assert_eq!(seen, a.ip.to_string(), "no NAT inside the cluster");
    let routes = na.ip("route");
    assert!(
        routes.contains("10.244.2.0/24 via 192.168.77.11 dev eth0 proto 151"),
        "{routes}"
    );
}

#[test]
fn pod_reaches_outside_and_is_masqueraded_to_the_node_address() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let net = node.network(&cluster.id);
    net.ensure_node(&node.config()).unwrap();
    let pod_ns = node.pod_netns("p1");
    net.setup_pod("p1", &pod_ns, &[]).unwrap();

    let port = serve_peer_address(listen_in(&cluster.outside), 1);
    let seen = ask_from(
        &pod_ns,
        SocketAddr::new(IpAddr::V4(cluster.outside_address), port),
    )
    .unwrap();
    assert_eq!(seen, node.address.to_string(), "the peer sees the node");
    let tables = network_support::ns_cmd(&node.netns, "nft", "list tables");
    assert!(
        tables.contains(&format!("table ip bramble-{}", cluster.id)),
        "{tables}"
    );
}

#[test]
fn host_port_is_reachable_from_another_node() {
    let cluster = Cluster::new(2);
    let (na, nb) = (cluster.node(0), cluster.node(1));
    let net_a = na.network(&cluster.id);
    net_a.ensure_node(&na.config()).unwrap();
    let pod_ns = na.pod_netns("web");
    // The pod listens before its network exists, as a container would.
    let listener = listen_in(&pod_ns);
    let port = listener.local_addr().unwrap().port();
    let host_port = HostPort {
        host_port: 18080,
        container_port: port,
        protocol: Protocol::Tcp,
        host_ip: None,
    };
    net_a.setup_pod("web", &pod_ns, &[host_port]).unwrap();
    serve_peer_address(listener, 2);

    // From node B itself (another host on the network).
    let seen = ask_from(&nb.netns, SocketAddr::new(IpAddr::V4(na.address), 18080)).unwrap();
    assert_eq!(seen, nb.address.to_string());
    // From node A itself, to its own address (output chain).
    let seen = ask_from(&na.netns, SocketAddr::new(IpAddr::V4(na.address), 18080)).unwrap();
    assert_eq!(seen, na.address.to_string());

    // Teardown unpublishes the port.
    net_a.teardown_pod("web", &pod_ns).unwrap();
    let ruleset = network_support::ns_cmd(&na.netns, "nft", "list ruleset");
    assert!(!ruleset.contains("18080"), "{ruleset}");
    assert!(ask_from(&nb.netns, SocketAddr::new(IpAddr::V4(na.address), 18080)).is_err());
}
