//! The cluster's Services as the agents need them: the wire types of
//! [`super::Message::Services`], and how they are split into shards.
//!
//! Every node needs every Service (a pod may reach any of them), so the
//! Services do not travel in each node's desired state: that would make every
//! desired state grow with the cluster and make one Service change republish
//! every node. They travel on `bramble/{cluster}/services/{shard}`, retained,
//! in [`SERVICE_SHARDS`] shards chosen by a stable hash of
//! `namespace/name` ([`shard_of`]): a change of one Service republishes one
//! shard (about 1/16 of the table) to the nodes. At 1,000 Services with one
//! port and three endpoints each, a shard is about 8 KiB, far under the
//! 128 KiB message limit; a shard over the limit is refused by
//! [`super::encode`] and logged by the master, never truncated.
//!
//! The wire rules of [`super::message`] apply to every type here: plain
//! structs and enums, fields never reordered or retyped, variants only
//! appended. The endpoints travel with their readiness as the master sees it;
//! an agent overrides it for its own pods with what its probes say, so a
//! node whose uplink is down still routes to the local pods that are ready.

use serde::{Deserialize, Serialize};

/// How many shards the Services are split into.
pub const SERVICE_SHARDS: u32 = 16;

/// The shard of the Service `namespace/name`: FNV-1a (32 bit) of
/// `namespace/name`, modulo `shards`. Stable across releases and platforms.
pub fn shard_of(namespace: &str, name: &str, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in namespace
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(name.bytes())
    {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % shards.max(1)
}

/// One shard of the cluster's Services (master -> every agent, retained on
/// `bramble/{cluster}/services/{shard}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceShard {
    /// Which shard this is, `0..shard_count`.
    pub shard: u32,
    /// How many shards there are ([`SERVICE_SHARDS`] in this release).
    pub shard_count: u32,
    /// Grows with every change of this shard (the store revision it was
    /// built at); an agent ignores a shard older than the one it holds.
    pub revision: u64,
    /// The Services of this shard, sorted by namespace and name.
    pub services: Vec<WireService>,
}

/// What kind of Service (the routing differs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WireServiceType {
    /// A virtual IP.
    #[default]
    ClusterIp,
    /// A virtual IP and a port on every node.
    NodePort,
    /// A NodePort Service whose port also opens on the load balancer
    /// addresses (bramble's ServiceLB: the nodes' addresses).
    LoadBalancer,
    /// A DNS alias (CNAME), no routing.
    ExternalName,
    /// `clusterIP: None`: DNS answers with the endpoints, no routing.
    Headless,
}

/// A transport protocol.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum WireProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl WireProtocol {
    /// From the API's `TCP`, `UDP`, `SCTP` (TCP when unset or unknown).
    pub fn from_api(protocol: Option<&str>) -> WireProtocol {
        match protocol {
            Some("UDP") => WireProtocol::Udp,
            Some("SCTP") => WireProtocol::Sctp,
            _ => WireProtocol::Tcp,
        }
    }

    /// `tcp`, `udp`, `sctp` (as nft and DNS SRV names write them).
    pub fn as_lower(self) -> &'static str {
        match self {
            WireProtocol::Tcp => "tcp",
            WireProtocol::Udp => "udp",
            WireProtocol::Sctp => "sctp",
        }
    }
}

/// One Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireService {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// How the Service routes.
    pub type_: WireServiceType,
    /// `spec.clusterIP` (empty for headless and ExternalName Services).
    pub cluster_ip: String,
    /// `spec.externalName` (ExternalName Services only).
    pub external_name: String,
    /// The Service's ports, in spec order.
    pub ports: Vec<WireServicePort>,
    /// `sessionAffinity: ClientIP` timeout in seconds; 0 without affinity.
    pub affinity_timeout_seconds: u32,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `trafficDistribution: PreferSameNode` (or `PreferClose`): endpoints on
    /// the client's node first.
    pub prefer_same_node: bool,
    /// `status.loadBalancer.ingress` addresses (LoadBalancer Services).
    pub load_balancer_ips: Vec<String>,
    /// Every endpoint of the Service (from its EndpointSlices).
    pub endpoints: Vec<WireEndpoint>,
}

/// One port of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireServicePort {
    /// The port's name (empty for a single unnamed port).
    pub name: String,
    /// Its protocol.
    pub protocol: WireProtocol,
    /// The Service port.
    pub port: u16,
    /// The NodePort (0: none).
    pub node_port: u16,
}

/// One endpoint of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEndpoint {
    /// The endpoint's IPv4 address.
    pub address: String,
    /// The pod's hostname when it asks for a DNS name under the Service
    /// (`spec.hostname` with `spec.subdomain` naming the Service); empty otherwise.
    pub hostname: String,
    /// The node it runs on.
    pub node: String,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// The endpoint's port for each of the Service's ports, in the same
    /// order (0: the endpoint does not serve that port, e.g. a named
    /// `targetPort` its pod does not have).
    pub ports: Vec<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        // Pinned: changing the hash moves every Service to another topic.
        // (Values computed independently with FNV-1a in Python.)
        assert_eq!(shard_of("default", "web", SERVICE_SHARDS), 11);
        assert_eq!(shard_of("default", "kubernetes", SERVICE_SHARDS), 7);
        let mut counts = [0u32; 16];
        for i in 0..1600 {
            counts[shard_of("ns", &format!("svc-{i}"), 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (60..=140).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(shard_of("a", "b", 0), 0);
    }

    #[test]
    fn a_thousand_services_fit_in_their_shards() {
        let mut shards: Vec<ServiceShard> = (0..SERVICE_SHARDS)
            .map(|shard| ServiceShard {
                shard,
                shard_count: SERVICE_SHARDS,
                revision: 1_000_000,
                services: Vec::new(),
            })
            .collect();
        for i in 0..1000u32 {
            let namespace = format!("team-{}", i % 10);
            let name = format!("service-{i}");
            let service = WireService {
                namespace: namespace.clone(),
                name: name.clone(),
                type_: WireServiceType::NodePort,
                cluster_ip: format!("10.96.{}.{}", i / 250, i % 250),
                ports: vec![WireServicePort {
                    name: "http".into(),
                    protocol: WireProtocol::Tcp,
                    port: 80,
                    node_port: 30000 + i as u16,
                }],
                endpoints: (0..3)
                    .map(|e| WireEndpoint {
                        address: format!("10.244.{}.{}", e * 50 + i % 50, i % 250),
                        node: format!("node-{}", (i + e) % 100),
                        ready: true,
                        serving: true,
                        ports: vec![8080],
                        ..WireEndpoint::default()
                    })
                    .collect(),
                ..WireService::default()
            };
            shards[shard_of(&namespace, &name, SERVICE_SHARDS) as usize]
                .services
                .push(service);
        }
        let sizes: Vec<usize> = shards
            .into_iter()
            .map(
                |shard| match crate::wire::encode(&crate::wire::Message::Services(shard)) {
                    Ok(payload) => payload.len(),
                    Err(e) => panic!("{e}"),
                },
            )
            .collect();
        let total: usize = sizes.iter().sum();
        let largest = sizes.iter().copied().max().unwrap_or(0);
        // About 150 bytes a Service: 150 KB in all, ~10 KB a shard.
        assert!(total > 100_000, "{total}");
        assert!(largest < crate::wire::MAX_MESSAGE_BYTES / 8, "{sizes:?}");
    }
}
