//! [`LinuxPodRuntime`]: the real runtime ([`Runtime`], blocking) and the pod
//! network ([`PodNetwork`], blocking) behind the sync loop's async
//! [`PodRuntime`] trait. Every call runs in `spawn_blocking`.
//!
//! The network is wired here, between the two:
//! - [`PodRuntime::sync_node`]: once the desired state carries a pod CIDR,
//!   `ensure_node` (bridge, nftables), `sync_routes` to the peers, and once
//!   after start `retain_pods` with the pods that still exist;
//! - [`PodRuntime::sync_pod`] of a pod without `hostNetwork`: the pod's
//!   netns is created here (`{run_dir}/netns/{uid}`, the path the runtime
//!   uses; its sandbox adopts an existing netns) and `setup_pod` wires it
//!   *before* the runtime starts any container; the address goes into the
//!   pod's status (`podIP`, `podIPs`). Address exhaustion is a retryable
//!   error: the pod stays `Pending` with the reason as message;
//! - [`PodRuntime::kill_pod`]: the runtime stops the pod (removing its
//!   netns), then `teardown_pod` releases its veth, host ports and address.
//!
//! Without a network (`--no-network`) or before the master assigned a pod
//! CIDR, pods that do not use the host network get a netns with only `lo`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_common::api::PodStatus;
use bramble_common::wire::NodeDesired;
use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

use super::{netns, PodDesired, Runtime, RuntimeError};
use crate::network::{HostPort, NetworkError, NodeNetConfig, Peer, PodNetStatus, PodNetwork};
use crate::sync::{LogLocation, PodRuntime, RuntimeError as SyncError};

/// What the adapter knows of the node network.
#[derive(Debug, Default)]
struct NetState {
    /// What was last applied successfully.
    applied: Option<AppliedNet>,
    /// `retain_pods` ran since the start.
    retained: bool,
    /// Why the node network is not usable (pods wait for it), if it is not.
    node_error: Option<String>,
    /// The last node-level message logged, to log each one once.
    logged: Option<String>,
    /// Pod addresses, by UID.
    pods: BTreeMap<String, PodNetStatus>,
}

/// The node network as last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppliedNet {
    /// This node's pod CIDR.
    pod_cidr: Ipv4Net,
    /// The cluster's pod range as far as it is known ([`pod_range`]).
    pod_range: Ipv4Net,
    /// The other nodes.
    peers: Vec<Peer>,
}

/// The smallest prefix holding this node's pod CIDR and every other node's:
/// the cluster's pod range as far as this node needs it (traffic to it is
/// not masqueraded). Protocol v1 does not carry the master's
/// `--cluster-cidr`; every pod address lives in some node's pod CIDR, and
/// each one is inside the cluster range, so this prefix is too. It grows
/// as nodes join (the desired state lists them).
pub(crate) fn pod_range(own: Ipv4Net, desired: &NodeDesired) -> Ipv4Net {
    let own = own.trunc();
    let mut low = u32::from(own.network());
    let mut high = u32::from(own.broadcast());
    for peer in &desired.peers {
        if let Ok(cidr) = peer.pod_cidr.parse::<Ipv4Net>() {
            low = low.min(u32::from(cidr.network()));
            high = high.max(u32::from(cidr.broadcast()));
        }
    }
    let common = u8::try_from((low ^ high).leading_zeros()).unwrap_or(32);
    Ipv4Net::new(Ipv4Addr::from(low), common.min(own.prefix_len()))
        .map(|n| n.trunc())
        .unwrap_or(own)
}

/// The real runtime and the pod network as the sync loop's [`PodRuntime`].
#[derive(Clone)]
pub struct LinuxPodRuntime {
    runtime: Arc<dyn Runtime>,
    network: Option<Arc<dyn PodNetwork>>,
    node_address: Option<Ipv4Addr>,
    run_dir: PathBuf,
    net: Arc<Mutex<NetState>>,
    /// Makes a pod's netns ([`netns::create`]; a no-op in unit tests).
    create_netns: fn(&Path) -> std::io::Result<()>,
}

impl std::fmt::Debug for LinuxPodRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxPodRuntime")
            .field("network", &self.network.is_some())
            .field("node_address", &self.node_address)
            .field("run_dir", &self.run_dir)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Failed(format!("runtime task failed: {e}")))
}

fn to_sync_error(e: RuntimeError) -> SyncError {
    match e {
        RuntimeError::InvalidUid(_) | RuntimeError::Config(_) => {
            SyncError::InvalidPod(e.to_string())
        }
        e => SyncError::Failed(e.to_string()),
    }
}

/// Peers from the wire, skipping (and logging) malformed ones.
fn peers_of(desired: &NodeDesired) -> Vec<Peer> {
    let mut peers = Vec::new();
    for p in &desired.peers {
        match (p.address.parse::<Ipv4Addr>(), p.pod_cidr.parse::<Ipv4Net>()) {
            (Ok(address), Ok(pod_cidr)) => peers.push(Peer {
                name: p.name.clone(),
                address,
                pod_cidr,
            }),
            _ => {
                debug!(peer = %p.name, address = %p.address, pod_cidr = %p.pod_cidr, "skipping a peer without a usable address or pod CIDR")
            }
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    peers
}

impl LinuxPodRuntime {
    /// The adapter over `runtime`, wiring pods into `network` when given.
    /// `node_address` is the node's `InternalIP` (picks the uplink for the
    /// bridge MTU); `run_dir` is the runtime's (`{run_dir}/netns/{uid}`).
    pub fn new(
        runtime: Arc<dyn Runtime>,
        network: Option<Arc<dyn PodNetwork>>,
        node_address: Option<Ipv4Addr>,
        run_dir: PathBuf,
    ) -> Self {
        Self {
            runtime,
            network,
            node_address,
            run_dir,
            net: Arc::new(Mutex::new(NetState::default())),
            create_netns: netns::create,
        }
    }

    /// The address the pod network gave pod `uid`, if any.
    pub fn pod_address(&self, uid: &str) -> Option<Ipv4Addr> {
        lock(&self.net).pods.get(uid).map(|p| p.ip)
    }

    fn log_node_once(&self, message: String, is_error: bool) {
        let mut net = lock(&self.net);
        if net.logged.as_ref() != Some(&message) {
            if is_error {
                warn!("{message}");
            } else {
                info!("{message}");
            }
            net.logged = Some(message);
        }
    }

    fn netns_path(&self, uid: &str) -> PathBuf {
        netns::netns_path(&self.run_dir, uid)
    }

    fn with_address(&self, uid: &str, mut status: PodStatus) -> PodStatus {
        if let Some(net) = lock(&self.net).pods.get(uid) {
            net.apply_to(&mut status);
        }
        status
    }
}

/// Creates the pod's netns (the runtime adopts it) and wires it.
fn setup_pod_network(
    network: &dyn PodNetwork,
    create_netns: fn(&Path) -> std::io::Result<()>,
    uid: &str,
    path: &Path,
    host_ports: &[HostPort],
) -> Result<PodNetStatus, SyncError> {
    create_netns(path).map_err(|e| {
        SyncError::Failed(format!("cannot create the pod's network namespace: {e}"))
    })?;
    network
        .setup_pod(uid, path, host_ports)
        .map_err(|e| SyncError::Failed(format!("pod network: {e}")))
}

impl PodRuntime for LinuxPodRuntime {
    async fn sync_node(&self, desired: &NodeDesired) {
        let Some(network) = self.network.clone() else {
            return;
        };
        let cidr_text = desired.node_config.pod_cidr.trim();
        if cidr_text.is_empty() {
            self.log_node_once(
                "the master assigned no pod CIDR to this node: pods get no pod network until it does".into(),
                false,
            );
            return;
        }
        let cidr = match cidr_text.parse::<Ipv4Net>() {
            Ok(cidr) => cidr,
            Err(e) => {
                let message = format!("the node's pod CIDR {cidr_text:?} is not an IPv4 CIDR ({e}): pods wait until the master assigns a valid one");
                lock(&self.net).node_error = Some(message.clone());
                self.log_node_once(message, true);
                return;
            }
        };
        let peers = peers_of(desired);
        let (applied, retained) = {
            let net = lock(&self.net);
            (net.applied.clone(), net.retained)
        };
        let range = pod_range(cidr, desired);
        let wanted = AppliedNet {
            pod_cidr: cidr,
            pod_range: range,
            peers,
        };
        if applied.as_ref() == Some(&wanted) && retained {
            return;
        }
        let peers = wanted.peers.clone();
        let runtime = Arc::clone(&self.runtime);
        let node_address = self.node_address;
        let mut live: Vec<String> = desired.pods.iter().map(|p| p.uid.clone()).collect();
        let result = blocking(move || -> Result<Option<Vec<String>>, NetworkError> {
            if applied.as_ref().map(|a| (a.pod_cidr, a.pod_range)) != Some((cidr, range)) {
                let mut config = NodeNetConfig::new(cidr);
                config.cluster_cidr = range;
                config.node_address = node_address;
                // ensure_node logs what it created or repaired.
                network.ensure_node(&config)?;
            }
            if applied.as_ref().map(|a| &a.peers) != Some(&peers) {
                let changes = network.sync_routes(&peers)?;
                if !changes.is_empty() {
                    info!(added = ?changes.added, removed = ?changes.removed, "routes to other nodes updated");
                }
            }
            let released = if retained {
                None
            } else {
                live.extend(runtime.list_pods().into_iter().map(|p| p.uid));
                let live: Vec<&str> = live.iter().map(String::as_str).collect();
                Some(network.retain_pods(&live)?)
            };
            Ok(released)
        })
        .await;
        match result {
            Ok(Ok(released)) => {
                let mut net = lock(&self.net);
                net.applied = Some(wanted);
                net.node_error = None;
                net.logged = None;
                if let Some(released) = released {
                    net.retained = true;
                    if !released.is_empty() {
                        info!(pods = ?released, "released the network of pods that no longer exist");
                    }
                }
            }
            Ok(Err(e)) => {
                let message = format!("cannot set up the pod network: {e}");
                lock(&self.net).node_error = Some(message.clone());
                self.log_node_once(message, true);
            }
            Err(e) => warn!(error = %e, "setting up the pod network failed"),
        }
    }

    async fn sync_pod(&self, desired: &PodDesired) -> Result<PodStatus, SyncError> {
        let uid = desired.uid().to_owned();
        let host_network = desired.pod.spec.host_network.unwrap_or(false);
        if let (Some(network), false) = (self.network.clone(), host_network) {
            let (node_error, ready) = {
                let net = lock(&self.net);
                (net.node_error.clone(), net.applied.is_some())
            };
            if let Some(error) = node_error {
                return Err(SyncError::Failed(error));
            }
            if ready {
                let host_ports = HostPort::from_spec(&desired.pod.spec)
                    .map_err(|e| SyncError::InvalidPod(e.to_string()))?;
                let path = self.netns_path(&uid);
                let pod_uid = uid.clone();
                let create_netns = self.create_netns;
                let net = blocking(move || {
                    setup_pod_network(network.as_ref(), create_netns, &pod_uid, &path, &host_ports)
                })
                .await??;
                lock(&self.net).pods.insert(uid.clone(), net);
            }
        }
        let runtime = Arc::clone(&self.runtime);
        let desired = desired.clone();
        let status = blocking(move || runtime.sync_pod(&desired))
            .await?
            .map_err(to_sync_error)?;
        Ok(self.with_address(&uid, status))
    }

    async fn pod_status(&self, uid: &str) -> Option<PodStatus> {
        let runtime = Arc::clone(&self.runtime);
        let pod_uid = uid.to_owned();
        let status = blocking(move || runtime.pod_status(&pod_uid))
            .await
            .ok()
            .flatten()?;
        Some(self.with_address(uid, status))
    }

    async fn kill_pod(&self, uid: &str, grace: Option<Duration>) -> Result<(), SyncError> {
        let runtime = Arc::clone(&self.runtime);
        let network = self.network.clone();
        let path = self.netns_path(uid);
        let pod_uid = uid.to_owned();
        blocking(move || -> Result<(), SyncError> {
            runtime.kill_pod(&pod_uid, grace).map_err(to_sync_error)?;
            if let Some(network) = network {
                match network.teardown_pod(&pod_uid, &path) {
                    Ok(()) | Err(NetworkError::NodeNotReady) => {}
                    Err(e) => return Err(SyncError::Failed(format!("pod network: {e}"))),
                }
            }
            Ok(())
        })
        .await??;
        lock(&self.net).pods.remove(uid);
        Ok(())
    }

    async fn forget_pod(&self, uid: &str) -> Result<(), SyncError> {
        let runtime = Arc::clone(&self.runtime);
        let pod_uid = uid.to_owned();
        blocking(move || runtime.remove_pod_logs(&pod_uid))
            .await?
            .map_err(to_sync_error)
    }

    async fn list_pods(&self) -> Vec<String> {
        let runtime = Arc::clone(&self.runtime);
        blocking(move || runtime.list_pods().into_iter().map(|p| p.uid).collect())
            .await
            .unwrap_or_default()
    }

    fn status_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.runtime.status_changes()
    }

    fn health(&self) -> crate::health::RuntimeHealth {
        crate::health::RuntimeHealth {
            runtime: self.runtime.health(),
            network: lock(&self.net).node_error.clone(),
        }
    }

    fn container_log(&self, uid: &str, container: &str) -> LogLocation {
        match self.runtime.log_path(uid, container) {
            Some(path) => LogLocation::At(path),
            None => LogLocation::NotStarted,
        }
    }

    fn exec_target(&self, uid: &str, container: &str) -> Option<super::exec::ExecTarget> {
        self.runtime.exec_target(uid, container)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use bramble_common::api::{Container, Pod, PodSpec};
    use bramble_common::meta::ObjectMeta;
    use bramble_common::wire::NodeConfig;

    use super::*;
    use crate::network::fake::RecordingNetwork;
    use crate::runtime::PodSummary;

    /// A runtime that remembers the pods handed to it.
    #[derive(Default)]
    struct FakeRuntime {
        pods: Mutex<BTreeMap<String, PodStatus>>,
    }

    impl Runtime for FakeRuntime {
        fn sync_pod(&self, desired: &PodDesired) -> Result<PodStatus, RuntimeError> {
            let status = PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            };
            lock(&self.pods).insert(desired.uid().to_owned(), status.clone());
            Ok(status)
        }
        fn kill_pod(&self, pod_uid: &str, _grace: Option<Duration>) -> Result<(), RuntimeError> {
            lock(&self.pods).remove(pod_uid);
            Ok(())
        }
        fn pod_status(&self, pod_uid: &str) -> Option<PodStatus> {
            lock(&self.pods).get(pod_uid).cloned()
        }
        fn list_pods(&self) -> Vec<PodSummary> {
            lock(&self.pods)
                .keys()
                .map(|uid| PodSummary {
                    uid: uid.clone(),
                    namespace: "default".into(),
                    name: uid.clone(),
                })
                .collect()
        }
        fn adopt_existing(&self) -> Result<Vec<String>, RuntimeError> {
            Ok(Vec::new())
        }
        fn remove_pod_logs(&self, _pod_uid: &str) -> Result<(), RuntimeError> {
            Ok(())
        }
        fn log_path(&self, _pod_uid: &str, _container: &str) -> Option<PathBuf> {
            None
        }
    }

    fn pod(uid: &str, host_network: bool) -> PodDesired {
        PodDesired {
            pod: Pod {
                metadata: ObjectMeta {
                    name: Some(uid.into()),
                    namespace: Some("default".into()),
                    uid: Some(uid.into()),
                    ..ObjectMeta::default()
                },
                spec: PodSpec {
                    containers: vec![Container {
                        name: "main".into(),
                        image: "busybox".into(),
                        ..Container::default()
                    }],
                    host_network: Some(host_network),
                    ..PodSpec::default()
                },
                ..Pod::default()
            },
            ..PodDesired::default()
        }
    }

    fn adapter(network: Arc<RecordingNetwork>) -> (Arc<FakeRuntime>, LinuxPodRuntime) {
        let runtime = Arc::new(FakeRuntime::default());
        let mut adapter = LinuxPodRuntime::new(
            runtime.clone(),
            Some(network),
            None,
            PathBuf::from("/nonexistent/run"),
        );
        adapter.create_netns = |_| Ok(());
        (runtime, adapter)
    }

    fn node(pod_cidr: &str) -> NodeDesired {
        NodeDesired {
            generation: 1,
            node_config: NodeConfig {
                pod_cidr: pod_cidr.into(),
                ..NodeConfig::default()
            },
            ..NodeDesired::default()
        }
    }

    #[tokio::test]
    async fn pods_get_an_address_and_exhaustion_keeps_them_out_of_the_runtime() {
        let network = Arc::new(RecordingNetwork::new());
        let (runtime, adapter) = adapter(network.clone());
        // A /30 holds the gateway and one pod.
        adapter.sync_node(&node("10.244.9.0/30")).await;
        let status = adapter.sync_pod(&pod("a", false)).await.unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.244.9.2"));
        assert_eq!(
            adapter.pod_status("a").await.unwrap().pod_ip.as_deref(),
            Some("10.244.9.2")
        );
        let err = adapter.sync_pod(&pod("b", false)).await.unwrap_err();
        assert!(
            matches!(&err, SyncError::Failed(m) if m.contains("no free pod address")),
            "{err}"
        );
        assert!(runtime.pod_status("b").is_none(), "b must not start");
        // hostNetwork pods need no address.
        let status = adapter.sync_pod(&pod("h", true)).await.unwrap();
        assert_eq!(status.pod_ip, None);
        // Killing a frees its address for b.
        adapter.kill_pod("a", None).await.unwrap();
        assert_eq!(adapter.pod_address("a"), None);
        let status = adapter.sync_pod(&pod("b", false)).await.unwrap();
        assert!(status.pod_ip.is_some());
    }

    #[tokio::test]
    async fn without_a_pod_cidr_pods_run_without_a_pod_network() {
        let network = Arc::new(RecordingNetwork::new());
        let (_runtime, adapter) = adapter(network.clone());
        adapter.sync_node(&node("")).await;
        let status = adapter.sync_pod(&pod("a", false)).await.unwrap();
        assert_eq!(status.pod_ip, None);
        assert!(network.calls().is_empty(), "{:?}", network.calls());
    }

    #[tokio::test]
    async fn node_cidrs_of_any_size_and_the_pod_range_from_the_peers() {
        use bramble_common::wire::PeerNode;
        let network = Arc::new(RecordingNetwork::new());
        let (_runtime, adapter) = adapter(network.clone());
        let peer = |name: &str, cidr: &str| PeerNode {
            name: name.into(),
            address: "192.168.1.20".into(),
            pod_cidr: cidr.into(),
        };
        // A /26 of a /12 cluster range the agent is not told about.
        let mut desired = node("10.16.0.64/26");
        desired.peers = vec![peer("pi-1", "10.16.0.0/26")];
        adapter.sync_node(&desired).await;
        let status = adapter.sync_pod(&pod("a", false)).await.unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.16.0.66"));
        let ensured: Vec<NodeNetConfig> = network
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                crate::network::fake::Call::EnsureNode(config) => Some(config),
                _ => None,
            })
            .collect();
        assert_eq!(ensured.len(), 1, "{ensured:?}");
        assert_eq!(ensured[0].pod_cidr.to_string(), "10.16.0.64/26");
        assert_eq!(ensured[0].cluster_cidr.to_string(), "10.16.0.0/25");
        // A node far away widens the range (no masquerade towards it).
        desired.peers.push(peer("pi-9", "10.31.255.192/26"));
        desired.generation += 1;
        adapter.sync_node(&desired).await;
        let last = network.calls().into_iter().rev().find_map(|c| match c {
            crate::network::fake::Call::EnsureNode(config) => Some(config),
            _ => None,
        });
        assert_eq!(
            last.map(|c| c.cluster_cidr.to_string()).as_deref(),
            Some("10.16.0.0/12")
        );
    }

    #[test]
    fn the_pod_range_is_the_smallest_prefix_over_every_node() {
        let mut desired = node("10.244.0.0/24");
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!(
            pod_range(net("10.244.0.0/24"), &desired),
            net("10.244.0.0/24")
        );
        for cidr in ["10.244.1.0/24", "bogus", "10.244.2.0/24"] {
            desired.peers.push(bramble_common::wire::PeerNode {
                name: cidr.into(),
                address: String::new(),
                pod_cidr: cidr.into(),
            });
        }
        assert_eq!(
            pod_range(net("10.244.0.0/24"), &desired),
            net("10.244.0.0/22")
        );
        desired.peers.clear();
        assert_eq!(pod_range(net("0.0.0.0/0"), &desired), net("0.0.0.0/0"));
    }
}
