//! The node-local cluster DNS server: authoritative for the cluster domain
//! from the node's copy of the Services ([`zone`], the Kubernetes DNS
//! specification), everything else forwarded to the node's resolvers
//! ([`server`]). It answers cluster names with no uplink and no upstream
//! at all. It listens on the pod bridge's address (port 53); the cluster
//! DNS Service (`10.96.0.10`) is DNATed to it by the service proxy.
//!
//! The library is `simple-dns` (wire format only, about +75 KB on an agent
//! binary) with this module's own server loop, rather than `hickory-server`
//! (+534 KB, measured on this project's machine): the zone is computed
//! from the Services on every query, so a DNS server framework's zone
//! store buys nothing here.

pub mod server;
pub mod zone;

/// The cluster domain (Kubernetes' default; the master does not send
/// another one in protocol v1).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The cluster DNS Service's default address, written as the nameserver
/// of `ClusterFirst` pods' `resolv.conf` (the proxy DNATs it to the
/// node-local server).
pub const DEFAULT_CLUSTER_DNS: &str = "10.96.0.10";
