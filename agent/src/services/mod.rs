//! The cluster's Services on this node: the shards received from the
//! master (or, after a reboot without uplink, the ones saved before), this
//! node's own pods' readiness, and the service proxy programmed from both.
//!
//! [`run`] is one task:
//!
//! - at start it loads the saved shards ([`store`]) and programs the proxy
//!   from them as soon as the node's pod CIDR is known (from the local
//!   desired state, which the agent also loads before any uplink);
//! - a shard from the master with a higher revision than the one held is
//!   saved, then used (an older or equal one is ignored);
//! - this node's pods' readiness (from the sync loop's snapshots) overrides
//!   what the master says of them;
//! - changes are gathered for [`DEBOUNCE`], then the whole table is
//!   rendered ([`crate::network::proxy::render`]) and applied as one
//!   `nft -f` transaction when it differs from the one applied last; a
//!   script the kernel refuses leaves the previous rules in place, is
//!   logged and recorded as a Warning event on the node, and is retried at
//!   the next change or resync;
//! - every [`RESYNC`] the table is checked and restored when something
//!   removed it.
//!
//! The merged table is also published on a watch channel ([`ServiceTable`])
//! for the node-local DNS server.

pub mod store;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bramble_common::wire::{NodeDesired, ServiceShard, WireService};
use ipnet::Ipv4Net;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::events::{EventRecorder, EventType};
use crate::link::ReceivedShards;
use crate::network::proxy::{self, DnsRedirect, LocalPods, ProxyConfig};
use crate::network::{netns, nft};
use crate::shutdown::Shutdown;
use crate::sync::SyncSnapshot;

/// Quiet time after a change before the rules are rewritten.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// How often the table is checked even when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(30);

/// How the Services are programmed on this node.
#[derive(Debug, Clone)]
pub struct ServicesSettings {
    /// The agent's state directory (the shards are saved under it).
    pub state_dir: PathBuf,
    /// The node's name.
    pub node: String,
    /// Whether to program the proxy (off when the pod network is off).
    pub proxy: bool,
    /// The proxy's nftables table.
    pub table: String,
    /// The `nft` binary.
    pub nft_binary: String,
    /// The node's network namespace (tests); the agent's own when `None`.
    pub node_netns: Option<PathBuf>,
    /// Whether the cluster DNS Service is answered by a node-local server
    /// on the pod bridge's address.
    pub local_dns: bool,
    /// Where failures are recorded.
    pub events: EventRecorder,
}

/// Every Service this node knows, by shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTable {
    shards: BTreeMap<u32, ServiceShard>,
}

impl ServiceTable {
    /// Takes `shard` when it is newer than the one held; returns whether it
    /// was taken.
    pub fn insert(&mut self, shard: ServiceShard) -> bool {
        if self
            .shards
            .get(&shard.shard)
            .is_some_and(|held| held.revision >= shard.revision)
        {
            return false;
        }
        self.shards.insert(shard.shard, shard);
        true
    }

    /// The revision held of shard `shard` (0: none).
    pub fn revision(&self, shard: u32) -> u64 {
        self.shards.get(&shard).map_or(0, |s| s.revision)
    }

    /// Every Service, shard by shard.
    pub fn services(&self) -> impl Iterator<Item = &WireService> {
        self.shards.values().flat_map(|s| s.services.iter())
    }
}

/// This node's pods with an address, and whether each is Ready, from the
/// sync loop's latest snapshot.
pub fn local_pods(snapshot: &SyncSnapshot) -> LocalPods {
    let mut pods = LocalPods::new();
    for report in &snapshot.pods {
        let Ok(status) = report.status() else {
            continue;
        };
        let Some(ip) = status
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        pods.insert(ip, ready);
    }
    pods
}

/// The proxy's settings for the desired state `desired`, `None` while the
/// node has no valid pod CIDR.
fn proxy_config(settings: &ServicesSettings, desired: &NodeDesired) -> Option<ProxyConfig> {
    let pod_cidr: Ipv4Net = desired.node_config.pod_cidr.parse().ok()?;
    let cluster_cidr = crate::runtime::adapter::pod_range(pod_cidr, desired);
    let dns = match (
        settings.local_dns,
        desired.node_config.cluster_dns.parse::<Ipv4Addr>(),
        pod_cidr.hosts().next(),
    ) {
        (true, Ok(service_ip), Some(local)) => Some(DnsRedirect { service_ip, local }),
        _ => None,
    };
    Some(ProxyConfig {
        table: settings.table.clone(),
        node: settings.node.clone(),
        cluster_cidr,
        dns,
    })
}

/// Runs until `shutdown`: see the module docs. `table` receives every new
/// merged table.
pub async fn run(
    settings: ServicesSettings,
    mut received: watch::Receiver<ReceivedShards>,
    mut desired: watch::Receiver<Option<Arc<NodeDesired>>>,
    mut snapshots: watch::Receiver<SyncSnapshot>,
    table: watch::Sender<Arc<ServiceTable>>,
    mut shutdown: Shutdown,
) {
    let mut services = ServiceTable::default();
    let dir = settings.state_dir.clone();
    match tokio::task::spawn_blocking(move || store::load_shards(&dir)).await {
        Ok((shards, warnings)) => {
            for warning in warnings {
                warn!("{warning}");
            }
            let count = shards.len();
            for (_, shard) in shards {
                services.insert(shard);
            }
            if count > 0 {
                info!(
                    shards = count,
                    services = services.services().count(),
                    "loaded the local copy of the services"
                );
            }
        }
        Err(e) => error!(error = %e, "loading the local copy of the services failed"),
    }
    table.send_replace(Arc::new(services.clone()));
    let mut applied: Option<String> = None;
    let mut dirty = true;
    let mut debounce_at = tokio::time::Instant::now();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut received_open, mut desired_open, mut snapshots_open) = (true, true, true);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            changed = received.changed(), if received_open => {
                if changed.is_err() {
                    received_open = false;
                    continue;
                }
                let shards = received.borrow_and_update().clone();
                let mut took = false;
                for (number, shard) in shards {
                    if shard.shard.revision <= services.revision(number) {
                        continue;
                    }
                    let dir = settings.state_dir.clone();
                    let payload = shard.payload;
                    match tokio::task::spawn_blocking(move || store::save_shard(&dir, number, &payload)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => error!(error = %e, "cannot save a service shard; using it anyway (it is lost at reboot)"),
                        Err(e) => error!(error = %e, "saving a service shard failed; using it anyway"),
                    }
                    debug!(shard = number, revision = shard.shard.revision, services = shard.shard.services.len(), "services updated");
                    took |= services.insert(shard.shard);
                }
                if took {
                    table.send_replace(Arc::new(services.clone()));
                    if !dirty {
                        debounce_at = tokio::time::Instant::now() + DEBOUNCE;
                    }
                    dirty = true;
                }
            }
            changed = desired.changed(), if desired_open => {
                if changed.is_err() {
                    desired_open = false;
                    continue;
                }
                desired.borrow_and_update();
                if !dirty {
                    debounce_at = tokio::time::Instant::now() + DEBOUNCE;
                }
                dirty = true;
            }
            changed = snapshots.changed(), if snapshots_open => {
                if changed.is_err() {
                    snapshots_open = false;
                    continue;
                }
                snapshots.borrow_and_update();
                if !dirty {
                    debounce_at = tokio::time::Instant::now() + DEBOUNCE;
                }
                dirty = true;
            }
            _ = resync.tick() => {
                if !dirty && settings.proxy && applied.is_some() && !table_present(&settings).await {
                    warn!(table = %settings.table, "the service proxy's nftables table was removed; restoring it");
                    applied = None;
                    dirty = true;
                }
            }
            _ = tokio::time::sleep_until(debounce_at), if dirty => {
                dirty = false;
                if !settings.proxy {
                    continue;
                }
                let Some(current) = desired.borrow().clone() else { continue };
                let Some(config) = proxy_config(&settings, &current) else { continue };
                let local = local_pods(&snapshots.borrow());
                let list: Vec<WireService> = services.services().cloned().collect();
                let script = proxy::render(&config, &list, &local);
                if applied.as_deref() == Some(script.as_str()) {
                    continue;
                }
                let started = std::time::Instant::now();
                match apply(&settings, script.clone()).await {
                    Ok(()) => {
                        debug!(services = list.len(), took_ms = started.elapsed().as_millis() as u64, "service proxy rules applied");
                        applied = Some(script);
                    }
                    Err(message) => {
                        error!(error = %message, "the service proxy's rules were refused; the previous rules stay in place");
                        settings.events.node(EventType::Warning, "FailedServiceProxySync", message);
                    }
                }
            }
        }
    }
}

/// Applies `script` in the node's namespace (on a blocking thread).
async fn apply(settings: &ServicesSettings, script: String) -> Result<(), String> {
    let binary = settings.nft_binary.clone();
    let table = settings.table.clone();
    let node_netns = settings.node_netns.clone();
    let result = tokio::task::spawn_blocking(move || {
        netns::in_netns(node_netns.as_deref(), || {
            nft::apply(&binary, &table, &script)
        })
    })
    .await;
    match result {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn table_present(settings: &ServicesSettings) -> bool {
    let binary = settings.nft_binary.clone();
    let table = settings.table.clone();
    let node_netns = settings.node_netns.clone();
    let result = tokio::task::spawn_blocking(move || {
        netns::in_netns(node_netns.as_deref(), || nft::list_table(&binary, &table))
    })
    .await;
    // Only a definite "missing" triggers a restore.
    !matches!(result, Ok(Ok(Ok(None))))
}

/// Removes the proxy's table `table` (in the caller's namespace) and the
/// saved shards: what `bramble-agent reset` does for Services.
pub fn reset(state_dir: &std::path::Path, nft_binary: &str, table: &str) -> Result<(), String> {
    nft::apply(nft_binary, table, &proxy::render_delete(table)).map_err(|e| e.to_string())?;
    store::remove_all(state_dir).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bramble_common::wire::{PodStatusReport, SERVICE_SHARDS};

    #[test]
    fn only_newer_shards_are_taken() {
        let mut table = ServiceTable::default();
        let shard = |revision, name: &str| ServiceShard {
            shard: 2,
            shard_count: SERVICE_SHARDS,
            revision,
            services: vec![WireService {
                name: name.into(),
                ..WireService::default()
            }],
        };
        assert!(table.insert(shard(5, "a")));
        assert!(!table.insert(shard(5, "b")));
        assert!(!table.insert(shard(4, "c")));
        assert!(table.insert(shard(6, "d")));
        let names: Vec<&str> = table.services().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["d"]);
        assert_eq!(table.revision(2), 6);
        assert_eq!(table.revision(3), 0);
    }

    #[test]
    fn local_pods_come_from_the_sync_snapshot() {
        let report = |name: &str, json: &str| PodStatusReport {
            uid: name.into(),
            namespace: "default".into(),
            name: name.into(),
            status_json: json.into(),
            observed_resource_version: 1,
        };
        let snapshot = SyncSnapshot {
            applied_generation: 1,
            passes: 1,
            pods: vec![
                report(
                    "a",
                    r#"{"podIP":"10.244.1.5","conditions":[{"type":"Ready","status":"True"}]}"#,
                ),
                report(
                    "b",
                    r#"{"podIP":"10.244.1.6","conditions":[{"type":"Ready","status":"False"}]}"#,
                ),
                report("c", r#"{"phase":"Pending"}"#),
                report("d", "not json"),
            ],
        };
        let pods = local_pods(&snapshot);
        assert_eq!(pods.len(), 2);
        assert_eq!(pods.get(&"10.244.1.5".parse().unwrap()), Some(&true));
        assert_eq!(pods.get(&"10.244.1.6".parse().unwrap()), Some(&false));
    }
}
