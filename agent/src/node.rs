//! One node's agent: the local desired state, the sync loop and the link,
//! wired together.
//!
//! At start the agent loads `desired.bin` and starts the sync loop on it at
//! once, without waiting for the broker: a device that boots without its
//! uplink still runs its pods. Then, in one task that never waits on the
//! MQTT poller:
//!
//! - a desired state from the master with a generation below the one
//!   accepted is ignored; a new one is written to `desired.bin` *before*
//!   the sync loop sees it;
//! - RPC requests (logs) are answered by [`crate::rpc`], in tasks of their own;
//! - on every (re)connect: subscribe to the desired and rpc topics, publish
//!   `Presence::Online` (retained), and one full report of the latest state;
//! - reports on change and a full heartbeat every `heartbeat` interval,
//!   coalesced while offline ([`ReportCoalescer`]);
//! - at shutdown: `Presence::Offline` (retained), then a clean disconnect.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bramble_common::wire::{self, Backoff, Message, NodeDesired, NodeEvents, NodeReport, Presence};
use rumqttc::QoS;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use crate::config::{AgentConfig, MqttTransport};
use crate::events::{EventRecorder, EventType};
use crate::facts::Facts;
use crate::link::coalesce::{ReportCoalescer, ReportState};
use crate::link::{self, Link, LinkError, LinkSettings};
use crate::shutdown::Shutdown;
use crate::state;
use crate::sync::{self, PodRuntime, SyncSettings, SyncSnapshot};

/// How long to wait for the link and the sync loop to finish at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay before retrying a report the client could not queue.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often the node's conditions are measured again (the kubelet's
/// `nodeStatusUpdateFrequency`); a report goes out only when they change.
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// Errors that stop a node's agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The link could not be set up.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Everything one node's agent needs.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The cluster's name.
    pub cluster: String,
    /// The node's name.
    pub node: String,
    /// The node's join token.
    pub token: String,
    /// The broker's host.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// Where `desired.bin` lives.
    pub state_dir: PathBuf,
    /// Interval of heartbeat reports.
    pub heartbeat: Duration,
    /// Interval between sync passes when nothing happens.
    pub resync: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// The device's facts.
    pub facts: Arc<Facts>,
    /// Unix time the agent started (transition time of node conditions).
    pub started_unix: i64,
    /// The node's `InternalIP` when configured (`node-address`); otherwise
    /// the address of the interface holding the default route.
    pub node_address: Option<Ipv4Addr>,
    /// The node's events, sent to the master on its report topic.
    pub events: EventRecorder,
    /// Whether the service proxy is programmed (with the pod network).
    pub service_proxy: bool,
}

impl NodeSettings {
    /// Settings from the agent's configuration.
    pub fn from_config(
        config: &AgentConfig,
        facts: Arc<Facts>,
        started_unix: i64,
    ) -> Result<NodeSettings, LinkError> {
        if config.master.transport == MqttTransport::Tls {
            return Err(LinkError::TlsUnsupported);
        }
        Ok(NodeSettings {
            cluster: config.cluster.clone(),
            node: config.node.clone(),
            token: config.token.clone(),
            host: config.master.host.clone(),
            port: config.master.port,
            state_dir: config.state_dir.clone(),
            heartbeat: Duration::from_secs(config.heartbeat_seconds),
            resync: sync::DEFAULT_RESYNC,
            backoff: Backoff::default(),
            facts,
            started_unix,
            node_address: config.node_address,
            events: EventRecorder::new(&config.node),
            service_proxy: config.network,
        })
    }
}

/// The address this device uses to reach `host:port` (no packet is sent),
/// reported as the node's `InternalIP` and the pods' `hostIP`.
pub async fn local_address_towards(host: &str, port: u16) -> Option<String> {
    let socket = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await.ok()?;
    socket.connect((host, port)).await.ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

/// The address of the interface that holds the default route: the source
/// address the kernel picks towards a public address (no packet is sent).
pub async fn default_route_address() -> Option<Ipv4Addr> {
    let socket = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await.ok()?;
    socket.connect(("192.0.2.1", 9)).await.ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// The node's `InternalIP`: the configured `node-address`, else the
/// address of the default route's interface, else the address used to
/// reach the broker.
pub async fn node_address(settings: &NodeSettings) -> Option<Ipv4Addr> {
    if let Some(address) = settings.node_address {
        return Some(address);
    }
    if let Some(address) = default_route_address().await {
        return Some(address);
    }
    local_address_towards(&settings.host, settings.port)
        .await
        .and_then(|a| a.parse().ok())
}

/// Tell systemd the agent is ready (`READY=1`, a no-op outside a
/// `Type=notify` service).
fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        debug!(error = %e, "cannot notify systemd");
    }
}

/// Run one node's agent until `shutdown`.
pub async fn run<R: PodRuntime>(
    settings: NodeSettings,
    runtime: Arc<R>,
    shutdown: Shutdown,
) -> Result<(), NodeError> {
    let span = tracing::info_span!("node", node = %settings.node);
    run_inner(settings, runtime, shutdown)
        .instrument(span)
        .await
}

async fn run_inner<R: PodRuntime>(
    settings: NodeSettings,
    runtime: Arc<R>,
    mut shutdown: Shutdown,
) -> Result<(), NodeError> {
    // 1. The local copy of the desired state, before anything else.
    let state_dir = settings.state_dir.clone();
    let loaded = match tokio::task::spawn_blocking(move || state::load_desired(&state_dir)).await {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => {
            error!(error = %e, "cannot use the local desired state; starting with no pods");
            None
        }
        Err(e) => {
            error!(error = %e, "loading the local desired state failed; starting with no pods");
            None
        }
    };
    if let Some(desired) = &loaded {
        info!(
            generation = desired.generation,
            pods = desired.pods.len(),
            "loaded the local desired state"
        );
    }
    let mut accepted: Option<Arc<NodeDesired>> = loaded.map(Arc::new);
    note_start(&settings).await;

    // 2. The sync loop, at once.
    let host_ip = node_address(&settings).await.map(|a| a.to_string());
    let (sync_tx, sync_rx) = watch::channel(accepted.clone());
    let (snapshot_tx, mut snapshots) = watch::channel(SyncSnapshot::default());
    let sync_task = tokio::spawn(
        sync::run(
            SyncSettings {
                node: settings.node.clone(),
                host_ip: host_ip.clone(),
                resync: settings.resync,
            },
            Arc::clone(&runtime),
            sync_rx,
            snapshot_tx,
            shutdown.clone(),
        )
        .in_current_span(),
    );

    // 3. The link.
    let Link {
        client,
        topics,
        mut connection,
        desired: mut received,
        rpc,
        services: received_services,
        poller,
    } = link::start(
        LinkSettings {
            cluster: settings.cluster.clone(),
            node: settings.node.clone(),
            token: settings.token.clone(),
            host: settings.host.clone(),
            port: settings.port,
            keep_alive: link::KEEP_ALIVE,
            backoff: settings.backoff.clone(),
        },
        shutdown.clone(),
    )?;

    let health_runtime = Arc::clone(&runtime);
    // 4. Requests from the master (logs).
    tokio::spawn(
        crate::rpc::serve(
            rpc,
            crate::rpc::RpcContext {
                cluster: settings.cluster.clone(),
                node: settings.node.clone(),
                client: client.clone(),
                runtime,
                desired: sync_tx.subscribe(),
                snapshots: snapshots.clone(),
                connection: connection.clone(),
            },
            shutdown.clone(),
        )
        .in_current_span(),
    );

    // 5. The Services: proxy (and the table the DNS server answers from).
    let (services_table, services_rx) = watch::channel(Arc::default());
    tokio::spawn(
        crate::services::run(
            crate::services::ServicesSettings {
                state_dir: settings.state_dir.clone(),
                node: settings.node.clone(),
                proxy: settings.service_proxy,
                table: crate::network::proxy::table_name(&settings.node),
                nft_binary: "nft".into(),
                node_netns: None,
                local_dns: settings.service_proxy,
                events: settings.events.clone(),
            },
            received_services,
            sync_tx.subscribe(),
            snapshots.clone(),
            services_table,
            shutdown.clone(),
        )
        .in_current_span(),
    );
    if settings.service_proxy {
        tokio::spawn(run_dns(sync_tx.subscribe(), services_rx, shutdown.clone()).in_current_span());
    }

    let mut node_status = settings
        .facts
        .node_status(host_ip.as_deref(), settings.started_unix);
    if let Some(conditions) =
        measure_health(&settings, &*health_runtime, &node_status.conditions).await
    {
        node_status.conditions = conditions;
    }
    let mut last_state: Option<ReportState> = None;
    let mut health_at = Instant::now() + HEALTH_INTERVAL;
    let publisher = Publisher {
        client: client.clone(),
        topics: topics.clone(),
    };
    let mut coalescer = ReportCoalescer::new();
    let mut heartbeat_at = Instant::now() + settings.heartbeat;
    let mut retry_at: Option<Instant> = None;
    let mut last_epoch = 0;
    let (mut received_open, mut connection_open, mut snapshots_open) = (true, true, true);
    let mut ready_notified = false;

    loop {
        let mut report: Option<NodeReport> = None;
        tokio::select! {
            _ = shutdown.wait() => break,
            changed = received.changed(), if received_open => {
                if changed.is_err() {
                    received_open = false;
                    continue;
                }
                let Some(new) = received.borrow_and_update().clone() else { continue };
                let current = accepted.as_ref().map_or(0, |d| d.generation);
                if new.desired.generation < current {
                    info!(received = new.desired.generation, applied = current, "ignoring a desired state older than the one applied");
                    continue;
                }
                if accepted.as_deref() == Some(&new.desired) {
                    debug!(generation = current, "desired state unchanged");
                    continue;
                }
                let dir = settings.state_dir.clone();
                let payload = new.payload;
                match tokio::task::spawn_blocking(move || state::save_desired(&dir, &payload)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => error!(error = %e, "cannot save the desired state; applying it anyway (it will be lost at reboot)"),
                    Err(e) => error!(error = %e, "saving the desired state failed; applying it anyway"),
                }
                info!(generation = new.desired.generation, pods = new.desired.pods.len(), "applying desired state");
                let desired = Arc::new(new.desired);
                accepted = Some(Arc::clone(&desired));
                sync_tx.send_replace(Some(desired));
            }
            changed = connection.changed(), if connection_open => {
                if changed.is_err() {
                    connection_open = false;
                    continue;
                }
                let now = *connection.borrow_and_update();
                if now.connected && now.epoch != last_epoch {
                    last_epoch = now.epoch;
                    publisher.on_connect(&settings, coalescer.applied_generation());
                    report = coalescer.connected();
                } else if !now.connected {
                    coalescer.disconnected();
                }
            }
            changed = snapshots.changed(), if snapshots_open => {
                if changed.is_err() {
                    snapshots_open = false;
                    continue;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                if snapshot.passes > 0 && !ready_notified {
                    ready_notified = true;
                    notify_ready();
                    settings.events.node(
                        EventType::Normal,
                        "NodeReady",
                        format!("Node {} status is now: NodeReady", settings.node),
                    );
                }
                if snapshot.passes > 0 {
                    let state = ReportState {
                        applied_generation: snapshot.applied_generation,
                        node_status: node_status.clone(),
                        pods: snapshot.pods,
                    };
                    last_state = Some(state.clone());
                    report = coalescer.update(state);
                }
            }
            _ = tokio::time::sleep_until(health_at) => {
                health_at = Instant::now() + HEALTH_INTERVAL;
                let Some(conditions) = measure_health(&settings, &*health_runtime, &node_status.conditions).await else {
                    continue;
                };
                if conditions == node_status.conditions {
                    continue;
                }
                for reason in crate::health::transitions(&node_status.conditions, &conditions) {
                    settings.events.node(
                        EventType::Normal,
                        reason,
                        format!("Node {} status is now: {reason}", settings.node),
                    );
                }
                for condition in conditions.iter().filter(|c| !node_status.conditions.contains(c)) {
                    info!(condition = %condition.type_, status = %condition.status, reason = %condition.reason, message = %condition.message, "node condition changed");
                }
                node_status.conditions = conditions;
                if let Some(state) = &mut last_state {
                    state.node_status = node_status.clone();
                    report = coalescer.update(state.clone());
                }
            }
            _ = tokio::time::sleep_until(heartbeat_at) => {
                heartbeat_at = Instant::now() + settings.heartbeat;
                report = coalescer.heartbeat();
            }
            _ = sleep_until_opt(retry_at) => {
                retry_at = None;
                if coalescer.pending() {
                    report = coalescer.heartbeat();
                }
            }
            _ = settings.events.due(), if retry_at.is_none() && connection.borrow().connected => {
                if let Some(batch) = settings.events.take_batch() {
                    if !publisher.events(&batch) {
                        settings.events.put_back(batch);
                        retry_at = Some(Instant::now() + RETRY_DELAY);
                    }
                }
            }
        }
        if let Some(report) = report {
            // Events first: a report can end a pod's life at the master, and
            // events about a pod it no longer has are refused.
            if let Some(batch) = settings.events.take_batch() {
                if !publisher.events(&batch) {
                    settings.events.put_back(batch);
                }
            }
            if publisher.report(&report) {
                heartbeat_at = Instant::now() + settings.heartbeat;
            } else {
                coalescer.publish_failed();
                retry_at = Some(Instant::now() + RETRY_DELAY);
            }
        }
    }

    // Shutdown: say goodbye while connected, then disconnect cleanly.
    if connection.borrow().connected {
        publisher.presence(&Presence::Offline);
        if let Err(e) = client.try_disconnect() {
            debug!(error = %e, "cannot queue the mqtt disconnect");
        }
    }
    if tokio::time::timeout(STOP_TIMEOUT, poller).await.is_err() {
        warn!("the mqtt link did not stop in time");
    }
    if tokio::time::timeout(STOP_TIMEOUT, sync_task).await.is_err() {
        warn!("the sync loop did not stop in time");
    }
    info!("node agent stopped");
    Ok(())
}

/// The node's conditions measured now ([`crate::health`]), or `None` when
/// the measurement could not run.
async fn measure_health<R: PodRuntime>(
    settings: &NodeSettings,
    runtime: &R,
    previous: &[wire::ConditionReport],
) -> Option<Vec<wire::ConditionReport>> {
    let runtime_health = runtime.health();
    let dir = settings.state_dir.clone();
    match tokio::task::spawn_blocking(move || crate::health::check(&dir, runtime_health)).await {
        Ok(reading) => Some(crate::health::conditions(
            &settings.facts.node,
            &reading,
            previous,
            jiff::Timestamp::now().as_second(),
        )),
        Err(e) => {
            warn!(error = %e, "measuring the node's health failed");
            None
        }
    }
}

/// The node-local DNS server, on the pod bridge's address once the node's
/// pod CIDR is known (from the desired state, local or received).
async fn run_dns(
    mut desired: watch::Receiver<Option<Arc<NodeDesired>>>,
    services: watch::Receiver<Arc<crate::services::ServiceTable>>,
    mut shutdown: Shutdown,
) {
    let gateway = loop {
        let gateway = desired.borrow_and_update().as_ref().and_then(|d| {
            d.node_config
                .pod_cidr
                .parse::<ipnet::Ipv4Net>()
                .ok()
                .and_then(|cidr| cidr.hosts().next())
        });
        if let Some(gateway) = gateway {
            break gateway;
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = desired.changed() => if changed.is_err() { return },
        }
    };
    let resolv = tokio::task::spawn_blocking(|| std::fs::read_to_string("/etc/resolv.conf"))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let upstreams = crate::dns::server::upstreams_from_resolv_conf(&resolv, gateway);
    if upstreams.is_empty() {
        info!("no upstream resolver in /etc/resolv.conf: the node-local DNS answers cluster names only");
    }
    crate::dns::server::serve(
        crate::dns::server::DnsSettings {
            listen: (gateway, 53).into(),
            domain: crate::dns::CLUSTER_DOMAIN.into(),
            upstreams,
            forward_timeout: Duration::from_secs(2),
        },
        services,
        shutdown,
    )
    .await;
}

/// The node's events of a start: `Starting`, and `Rebooted` when the
/// device booted since the agent last ran.
async fn note_start(settings: &NodeSettings) {
    settings.events.node(
        EventType::Normal,
        "Starting",
        format!(
            "Starting bramble-agent {}.",
            settings.facts.node.agent_version
        ),
    );
    let (dir, boot_id) = (
        settings.state_dir.clone(),
        settings.facts.node.boot_id.clone(),
    );
    if boot_id.is_empty() {
        return;
    }
    match tokio::task::spawn_blocking(move || state::note_boot_id(&dir, &boot_id)).await {
        Ok(Ok(Some(_previous))) => settings.events.node(
            EventType::Warning,
            "Rebooted",
            format!(
                "Node {} has been rebooted, boot id: {}",
                settings.node, settings.facts.node.boot_id
            ),
        ),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            warn!(error = %e, "cannot remember the boot id; a reboot will not be reported")
        }
        Err(e) => warn!(error = %e, "remembering the boot id failed"),
    }
}

/// Publishes through the client without ever waiting on the poller.
struct Publisher {
    client: rumqttc::AsyncClient,
    topics: link::Topics,
}

impl Publisher {
    fn on_connect(&self, settings: &NodeSettings, applied_generation: u64) {
        if let Err(e) = self
            .client
            .try_subscribe(self.topics.desired.clone(), QoS::AtLeastOnce)
        {
            warn!(error = %e, "cannot subscribe to the desired state");
        }
        if let Err(e) = self
            .client
            .try_subscribe(self.topics.rpc_request.clone(), QoS::AtLeastOnce)
        {
            warn!(error = %e, "cannot subscribe to rpc requests (bramble logs)");
        }
        if let Err(e) = self
            .client
            .try_subscribe(self.topics.services.clone(), QoS::AtLeastOnce)
        {
            warn!(error = %e, "cannot subscribe to the cluster's services");
        }
        self.presence(&Presence::Online {
            agent_version: settings.facts.node.agent_version.clone(),
            boot_id: settings.facts.node.boot_id.clone(),
            applied_generation,
        });
    }

    fn presence(&self, presence: &Presence) {
        match wire::encode(&Message::Presence(presence.clone())) {
            Ok(payload) => {
                if let Err(e) = self.client.try_publish(
                    self.topics.presence.clone(),
                    QoS::AtLeastOnce,
                    true,
                    payload,
                ) {
                    warn!(error = %e, "cannot publish presence");
                }
            }
            Err(e) => error!(error = %e, "cannot encode presence"),
        }
    }

    /// Queue a batch of events; false when it could not be queued.
    fn events(&self, batch: &NodeEvents) -> bool {
        let payload = match wire::encode(&Message::Events(batch.clone())) {
            Ok(payload) => payload,
            Err(e) => {
                error!(error = %e, events = batch.events.len(), "cannot encode events; dropping them");
                return true;
            }
        };
        match self
            .client
            .try_publish(self.topics.report.clone(), QoS::AtLeastOnce, false, payload)
        {
            Ok(()) => {
                debug!(
                    seq = batch.seq,
                    events = batch.events.len(),
                    "events queued"
                );
                true
            }
            Err(e) => {
                debug!(error = %e, "cannot queue events; retrying");
                false
            }
        }
    }

    /// Queue a report; false when it could not be queued.
    fn report(&self, report: &NodeReport) -> bool {
        let payload = match wire::encode(&Message::Report(report.clone())) {
            Ok(payload) => payload,
            Err(e) => {
                error!(error = %e, "cannot encode report");
                // Retrying the same state would fail the same way.
                return true;
            }
        };
        match self
            .client
            .try_publish(self.topics.report.clone(), QoS::AtLeastOnce, false, payload)
        {
            Ok(()) => {
                debug!(
                    seq = report.seq,
                    full = report.full,
                    pods = report.pod_statuses.len(),
                    applied_generation = report.applied_generation,
                    "report queued"
                );
                true
            }
            Err(e) => {
                debug!(error = %e, "cannot queue report; retrying");
                false
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
