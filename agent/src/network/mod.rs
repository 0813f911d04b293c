//! Pod networking: netns, bridge, veth, IPAM, routes, nftables.
//!
//! # Design
//!
//! Every pod that does not use the host network gets its own network
//! namespace (made by the runtime with [`netns::create_netns`] at
//! `{run_dir}/netns/{pod-uid}`) and a veth pair: the host end, named
//! [`names::veth_host_name`] (`bv` + 10 hex of a hash of the pod uid), sits
//! on the node's bridge (`bramble0`); the other end is `eth0` in the pod with
//! an address from the node's pod CIDR, `lo` is up and the default route goes
//! via the bridge, whose address is the CIDR's first host.
//!
//! ```text
//!   pod netns            node                               other node
//!   eth0 10.244.1.2 ── bv…(veth) ─┐
//!   eth0 10.244.1.3 ── bv…(veth) ─┤ bramble0 10.244.1.1/24
//!                                 │   ip_forward=1
//!                                 │   10.244.2.0/24 via 192.168.1.12 ── uplink ── 192.168.1.12
//!                                 └ nft table ip bramble-{node}: masquerade to
//!                                   outside the cluster CIDR, hostPort DNAT
//! ```
//!
//! Callers (the sync loop) talk to the [`PodNetwork`] trait. It has two
//! implementations: [`NetlinkNetwork`], which does the work for real, and
//! [`fake::RecordingNetwork`], which records calls and hands out addresses
//! from a real [`ipam::Ipam`], for unit tests of the callers.
//!
//! * [`PodNetwork::ensure_node`] creates or adopts the bridge, its address
//!   and MTU (from the uplink), enables forwarding, installs the nftables
//!   table and re-installs the routes to other nodes. Everything is compared
//!   with what is there: a second call changes nothing and reports nothing
//!   in [`NodeNetState::repaired`]; a deleted bridge or route is repaired.
//! * [`PodNetwork::setup_pod`] / [`PodNetwork::teardown_pod`] wire and unwire
//!   one pod; both are idempotent (setup of a pod already set up returns the
//!   same address).
//! * [`PodNetwork::retain_pods`] releases what pods that no longer exist
//!   still hold (after a restart or reboot).
//! * [`PodNetwork::sync_routes`] keeps one route per other node's pod CIDR
//!   via that node's address (host-gateway routing), tagged with
//!   [`ROUTE_PROTOCOL`] so that stale ones can be found and removed.
//! * [`PodNetwork::reset`] removes everything bramble created on the host.
//!
//! All link, address and route work goes through rtnetlink. Work inside a
//! namespace (the pod's, or a node simulated as a namespace in tests) runs on
//! a short-lived OS thread that `setns`es, opens its own netlink socket and
//! drives it with a current-thread runtime ([`netns::with_netlink`]): no
//! tokio worker ever changes namespace. The trait's methods are therefore
//! blocking (a few netlink round trips, one fsync of the IPAM state, at times
//! one run of `nft`); call them from `spawn_blocking` or a dedicated thread.
//!
//! Addresses ([`ipam`]) are persisted to `{state_dir}/ipam.json` before they
//! are used; released addresses are reused only after the rest of the range.
//! Host ports are persisted beside them (`hostports.json`) so that the
//! nftables table can be rebuilt after a restart before every pod has been
//! set up again.
//!
//! Measured (`benches/network_setup.rs`, 200 pods, release build, this
//! project's 2-core dev VM): setup p50 14.0 ms with the IPAM state on disk
//! (two fsyncs are ~10 ms of it), 4.9 ms with it on tmpfs, against 18.1 ms for
//! the same steps as `ip` commands; teardown ~36 ms on both sides, spent in
//! the kernel unregistering the veth.
//!
//! Host-network pods do not call into this module at all: they keep the
//! node's namespace, and their ports are the node's ports.
//!
//! Services and cluster DNS will slot in as more chains in the agent's
//! nftables table ([`nft::NftRules`]) and more routes via [`ROUTE_PROTOCOL`].

pub mod fake;
pub mod ipam;
pub mod names;
mod netlink;
pub mod netns;
pub mod nft;
pub mod proxy;
mod state;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use netlink::{NetlinkNetwork, NetworkOptions};

/// The route protocol number bramble tags its routes with (`ip route` shows
/// `proto 151`), so that routes it did not make are never touched.
pub const ROUTE_PROTOCOL: u8 = 151;

/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "bramble0";

/// Default cluster-wide pod CIDR.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";

/// Where the bridge MTU comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MtuSource {
    /// The interface that holds the node address, else the one of the
    /// default route; 1500 if neither exists.
    #[default]
    Auto,
    /// The MTU of the named uplink interface.
    Uplink(String),
    /// A fixed value.
    Fixed(u32),
}

/// What the node's network should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetConfig {
    /// This node's pod CIDR (assigned by the master: any prefix up to /30,
    /// a /24 by default).
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod CIDR: traffic to it is never masqueraded.
    /// The sync loop sets the smallest prefix over every node's pod CIDR
    /// (the master does not send its `--cluster-cidr`).
    pub cluster_cidr: Ipv4Net,
    /// The node's own address (used to pick the uplink for the MTU).
    pub node_address: Option<Ipv4Addr>,
    /// Where the bridge MTU comes from.
    pub mtu: MtuSource,
    /// Whether pod traffic leaving the cluster is masqueraded.
    pub masquerade: bool,
}

impl NodeNetConfig {
    /// A configuration for `pod_cidr` with the defaults: cluster CIDR
    /// `10.244.0.0/16`, MTU from the uplink, masquerade on.
    pub fn new(pod_cidr: Ipv4Net) -> Self {
        Self {
            pod_cidr,
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or(pod_cidr),
            node_address: None,
            mtu: MtuSource::Auto,
            masquerade: true,
        }
    }
}

/// The node's network as [`PodNetwork::ensure_node`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetState {
    /// The bridge name.
    pub bridge: String,
    /// The bridge's address, every pod's gateway.
    pub gateway: Ipv4Addr,
    /// The node's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The bridge MTU.
    pub mtu: u32,
    /// What had to be created or repaired; empty when all was right.
    pub repaired: Vec<String>,
}

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A container port published on the node (`hostPort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostPort {
    /// The port on the node.
    pub host_port: u16,
    /// The port in the pod.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Only this node address; every local address when `None`.
    pub host_ip: Option<Ipv4Addr>,
}

impl HostPort {
    /// The published ports of a pod spec's containers (those with a
    /// `hostPort`). SCTP and out-of-range ports are refused.
    pub fn from_spec(spec: &bramble_common::api::PodSpec) -> Result<Vec<Self>, NetworkError> {
        let mut out = Vec::new();
        for c in &spec.containers {
            for p in &c.ports {
                let Some(host_port) = p.host_port else {
                    continue;
                };
                let port = |v: i64| {
                    u16::try_from(v).ok().filter(|v| *v != 0).ok_or_else(|| {
                        NetworkError::InvalidConfig(format!(
                            "container {}: port {v} is not in 1..=65535",
                            c.name
                        ))
                    })
                };
                let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                    "TCP" => Protocol::Tcp,
                    "UDP" => Protocol::Udp,
                    other => {
                        return Err(NetworkError::InvalidConfig(format!(
                            "container {}: hostPort with protocol {other} is not supported; use TCP or UDP",
                            c.name
                        )))
                    }
                };
                out.push(HostPort {
                    host_port: port(host_port)?,
                    container_port: port(p.container_port)?,
                    protocol,
                    host_ip: None,
                });
            }
        }
        Ok(out)
    }
}

/// A pod's network, as [`PodNetwork::setup_pod`] made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetStatus {
    /// The pod's address (`status.podIP`).
    pub ip: Ipv4Addr,
    /// The prefix length of the pod CIDR.
    pub prefix_len: u8,
    /// The default gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// The host end of the pod's veth.
    pub veth_host_name: String,
}

impl PodNetStatus {
    /// Writes the address into `status.podIP` and `status.podIPs`.
    pub fn apply_to(&self, status: &mut bramble_common::api::PodStatus) {
        let ip = self.ip.to_string();
        status.pod_ip = Some(ip.clone());
        status.pod_ips = vec![bramble_common::api::PodIp { ip }];
    }
}

/// Another node, as the routes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's name (for logs).
    pub name: String,
    /// The node's address, the gateway to its pods.
    pub address: Ipv4Addr,
    /// The node's pod CIDR.
    pub pod_cidr: Ipv4Net,
}

/// What [`PodNetwork::sync_routes`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteChanges {
    /// Routes added or changed (a peer's new address).
    pub added: Vec<Ipv4Net>,
    /// Routes removed (a node left).
    pub removed: Vec<Ipv4Net>,
}

impl RouteChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The pod network of one node. Methods block (see the module docs).
pub trait PodNetwork: Send + Sync {
    /// Creates or repairs the node network (bridge, address, MTU,
    /// forwarding, nftables table, routes to known peers).
    fn ensure_node(&self, config: &NodeNetConfig) -> Result<NodeNetState, NetworkError>;

    /// Wires the pod whose namespace is at `netns` and publishes its host
    /// ports; returns its address. Calling it again for a pod that is set up
    /// returns the same address and repairs what is missing.
    fn setup_pod(
        &self,
        pod_uid: &str,
        netns: &Path,
        host_ports: &[HostPort],
    ) -> Result<PodNetStatus, NetworkError>;

    /// Removes the pod's veth and host ports and releases its address.
    /// Nothing to remove is not an error. `netns` may be gone already.
    fn teardown_pod(&self, pod_uid: &str, netns: &Path) -> Result<(), NetworkError>;

    /// Tears down every pod this node's network knows of (address, host
    /// ports, a `bv…` veth on the bridge) whose uid is not in `live`, and
    /// returns their uids. For after a restart or reboot, when the sync loop
    /// knows which pods still exist.
    fn retain_pods(&self, live: &[&str]) -> Result<Vec<String>, NetworkError>;

    /// Keeps exactly one route per peer's pod CIDR via the peer's address
    /// (peers with this node's own CIDR are skipped).
    fn sync_routes(&self, peers: &[Peer]) -> Result<RouteChanges, NetworkError>;

    /// Removes everything bramble created: pod veths, bridge, routes,
    /// nftables table, namespace mounts under the netns directory, network
    /// state files; restores `ip_forward` if bramble changed it.
    fn reset(&self) -> Result<(), NetworkError>;
}

/// Errors of the pod network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// A pod operation came before [`PodNetwork::ensure_node`].
    #[error("the node network is not set up yet; call ensure_node first")]
    NodeNotReady,
    /// The configuration cannot work.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// A netlink request failed.
    #[error("netlink: {op}: {source}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// A link exists with our name but is not ours to use.
    #[error("link {name} {reason}; remove it or configure another name")]
    LinkConflict {
        /// The link name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A namespace operation failed.
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    /// Address management failed (including exhaustion).
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    /// nftables refused the table.
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An operation failed and so did undoing its partial work.
    #[error("{source} (and cleaning up failed too: {cleanup})")]
    WithCleanup {
        /// The original failure.
        source: Box<NetworkError>,
        /// The cleanup failure.
        cleanup: Box<NetworkError>,
    },
}

impl NetworkError {
    /// Whether the error is address exhaustion (to report as a pod event).
    pub fn is_exhausted(&self) -> bool {
        match self {
            Self::Ipam(ipam::IpamError::Exhausted { .. }) => true,
            Self::WithCleanup { source, .. } => source.is_exhausted(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bramble_common::api::{Container, ContainerPort, PodSpec, PodStatus};

    #[test]
    fn host_ports_from_spec() {
        let spec = PodSpec {
            containers: vec![Container {
                name: "web".into(),
                ports: vec![
                    ContainerPort {
                        container_port: 80,
                        host_port: Some(8080),
                        ..Default::default()
                    },
                    ContainerPort {
                        container_port: 9000,
                        ..Default::default()
                    },
                    ContainerPort {
                        container_port: 53,
                        host_port: Some(5353),
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let ports = HostPort::from_spec(&spec).unwrap();
        assert_eq!(
            ports,
            vec![
                HostPort {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: None
                },
                HostPort {
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: None
                },
            ]
        );
        let mut bad = spec.clone();
        bad.containers[0].ports[0].host_port = Some(70000);
        assert!(HostPort::from_spec(&bad).is_err());
    }

    #[test]
    fn status_gets_pod_ips() {
        let mut status = PodStatus::default();
        PodNetStatus {
            ip: "10.244.1.2".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.244.1.1".parse().unwrap(),
            veth_host_name: "bv0123456789".into(),
        }
        .apply_to(&mut status);
        assert_eq!(status.pod_ip.as_deref(), Some("10.244.1.2"));
        assert_eq!(status.pod_ips.len(), 1);
    }
}
