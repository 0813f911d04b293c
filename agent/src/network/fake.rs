//! [`RecordingNetwork`]: a [`PodNetwork`] that touches nothing, records every
//! call and hands out addresses from a real [`Ipam`], for unit tests of the
//! sync loop and other callers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::ipam::{gateway_of, Ipam};
use super::names::veth_host_name;
use super::{
    HostPort, NetworkError, NodeNetConfig, NodeNetState, Peer, PodNetStatus, PodNetwork,
    RouteChanges,
};

/// One call made to a [`RecordingNetwork`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`PodNetwork::ensure_node`].
    EnsureNode(NodeNetConfig),
    /// [`PodNetwork::setup_pod`].
    SetupPod {
        /// The pod uid.
        pod_uid: String,
        /// The namespace path.
        netns: PathBuf,
        /// The host ports.
        host_ports: Vec<HostPort>,
    },
    /// [`PodNetwork::teardown_pod`].
    TeardownPod {
        /// The pod uid.
        pod_uid: String,
    },
    /// [`PodNetwork::retain_pods`].
    RetainPods(Vec<String>),
    /// [`PodNetwork::sync_routes`].
    SyncRoutes(Vec<Peer>),
    /// [`PodNetwork::reset`].
    Reset,
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<Call>,
    ipam: Option<Ipam>,
    pods: BTreeMap<String, Vec<HostPort>>,
    routes: BTreeMap<ipnet::Ipv4Net, std::net::Ipv4Addr>,
    fail_setup: Option<String>,
}

/// A recording, in-memory [`PodNetwork`].
#[derive(Debug, Default)]
pub struct RecordingNetwork {
    state: Mutex<FakeState>,
}

impl RecordingNetwork {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The pods currently set up, with their host ports.
    pub fn pods(&self) -> BTreeMap<String, Vec<HostPort>> {
        self.lock().pods.clone()
    }

    /// The routes to other nodes currently installed.
    pub fn routes(&self) -> BTreeMap<ipnet::Ipv4Net, std::net::Ipv4Addr> {
        self.lock().routes.clone()
    }

    /// Makes every following `setup_pod` for `pod_uid` fail.
    pub fn fail_setup_of(&self, pod_uid: &str) {
        self.lock().fail_setup = Some(pod_uid.to_string());
    }
}

impl PodNetwork for RecordingNetwork {
    fn ensure_node(&self, config: &NodeNetConfig) -> Result<NodeNetState, NetworkError> {
        let mut s = self.lock();
        s.calls.push(Call::EnsureNode(config.clone()));
        let cidr = config.pod_cidr.trunc();
        if s.ipam.as_ref().is_none_or(|i| i.cidr() != cidr) {
            s.ipam = Some(Ipam::new(cidr)?);
        }
        Ok(NodeNetState {
            bridge: super::DEFAULT_BRIDGE.to_string(),
            gateway: gateway_of(cidr),
            pod_cidr: cidr,
            mtu: 1500,
            repaired: Vec::new(),
        })
    }

    fn setup_pod(
        &self,
        pod_uid: &str,
        netns: &Path,
        host_ports: &[HostPort],
    ) -> Result<PodNetStatus, NetworkError> {
        let mut s = self.lock();
        s.calls.push(Call::SetupPod {
            pod_uid: pod_uid.to_string(),
            netns: netns.to_path_buf(),
            host_ports: host_ports.to_vec(),
        });
        if s.fail_setup.as_deref() == Some(pod_uid) {
            return Err(NetworkError::InvalidConfig(format!(
                "injected failure for pod {pod_uid}"
            )));
        }
        let ipam = s.ipam.as_mut().ok_or(NetworkError::NodeNotReady)?;
        let ip = ipam.allocate(pod_uid)?;
        let cidr = ipam.cidr();
        s.pods.insert(pod_uid.to_string(), host_ports.to_vec());
        Ok(PodNetStatus {
            ip,
            prefix_len: cidr.prefix_len(),
            gateway: gateway_of(cidr),
            veth_host_name: veth_host_name(pod_uid),
        })
    }

    fn teardown_pod(&self, pod_uid: &str, _netns: &Path) -> Result<(), NetworkError> {
        let mut s = self.lock();
        s.calls.push(Call::TeardownPod {
            pod_uid: pod_uid.to_string(),
        });
        if let Some(ipam) = s.ipam.as_mut() {
            ipam.release(pod_uid);
        }
        s.pods.remove(pod_uid);
        Ok(())
    }

    fn retain_pods(&self, live: &[&str]) -> Result<Vec<String>, NetworkError> {
        let mut s = self.lock();
        s.calls.push(Call::RetainPods(
            live.iter().map(|l| l.to_string()).collect(),
        ));
        let stale: Vec<String> = s
            .ipam
            .as_ref()
            .map(|i| i.allocations().keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|uid| !live.contains(&uid.as_str()))
            .collect();
        for uid in &stale {
            if let Some(ipam) = s.ipam.as_mut() {
                ipam.release(uid);
            }
            s.pods.remove(uid);
        }
        Ok(stale)
    }

    fn sync_routes(&self, peers: &[Peer]) -> Result<RouteChanges, NetworkError> {
        let mut s = self.lock();
        s.calls.push(Call::SyncRoutes(peers.to_vec()));
        let own = s.ipam.as_ref().map(|i| i.cidr());
        let desired: BTreeMap<_, _> = peers
            .iter()
            .filter(|p| Some(p.pod_cidr.trunc()) != own)
            .map(|p| (p.pod_cidr.trunc(), p.address))
            .collect();
        let mut changes = RouteChanges::default();
        for (dst, gw) in &desired {
            if s.routes.get(dst) != Some(gw) {
                changes.added.push(*dst);
            }
        }
        for dst in s.routes.keys() {
            if !desired.contains_key(dst) {
                changes.removed.push(*dst);
            }
        }
        s.routes = desired;
        Ok(changes)
    }

    fn reset(&self) -> Result<(), NetworkError> {
        let mut s = self.lock();
        s.calls.push(Call::Reset);
        s.ipam = None;
        s.pods.clear();
        s.routes.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_calls_and_allocates_like_the_real_one() {
        let net = RecordingNetwork::new();
        let path = Path::new("/run/bramble/netns/a");
        assert!(matches!(
            net.setup_pod("a", path, &[]),
            Err(NetworkError::NodeNotReady)
        ));
        net.ensure_node(&NodeNetConfig::new("10.244.1.0/24".parse().unwrap()))
            .unwrap();
        let a = net.setup_pod("a", path, &[]).unwrap();
        assert_eq!(a.ip.to_string(), "10.244.1.2");
        assert_eq!(net.setup_pod("a", path, &[]).unwrap(), a);
        net.teardown_pod("a", path).unwrap();
        assert!(net.pods().is_empty());
        let changes = net
            .sync_routes(&[
                Peer {
                    name: "self".into(),
                    address: "192.168.1.1".parse().unwrap(),
                    pod_cidr: "10.244.1.0/24".parse().unwrap(),
                },
                Peer {
                    name: "b".into(),
                    address: "192.168.1.2".parse().unwrap(),
                    pod_cidr: "10.244.2.0/24".parse().unwrap(),
                },
            ])
            .unwrap();
        assert_eq!(changes.added.len(), 1);
        assert_eq!(net.calls().len(), 6);
        net.setup_pod("c", path, &[]).unwrap();
        net.setup_pod("d", path, &[]).unwrap();
        assert_eq!(net.retain_pods(&["d"]).unwrap(), vec!["c".to_string()]);
        assert_eq!(net.pods().keys().collect::<Vec<_>>(), vec!["d"]);
        net.fail_setup_of("b");
        assert!(net.setup_pod("b", path, &[]).is_err());
    }
}
