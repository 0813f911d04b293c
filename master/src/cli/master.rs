//! `bramble master`: open the store, make credentials on first start, and
//! serve the API until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bramble_common::Kind;
use serde::Deserialize;
use serde_json::json;

use crate::api::pod_cidr::{self, PodCidrPool};
use crate::api::{self, pki};
use crate::store::{ObjectKey, Store, StoreError, StoreOptions};

/// Flags of `bramble master`.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterArgs {
    /// Configuration file (TOML with the same keys as the flags: data-dir, listen, cluster-name, tls-san).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory holding the store, the credentials and the admin kubeconfig [default: /var/lib/bramble/master].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTPS API [default: 0.0.0.0:6443].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Name of the cluster (in the kubeconfig and MQTT topics) [default: bramble].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Extra DNS name or IP address for the serving certificate (repeatable; used on first start).
    #[arg(long)]
    pub tls_san: Vec<String>,
    /// Watch events kept for clients resuming a watch [default: 10000].
    #[arg(long)]
    pub event_log_capacity: Option<usize>,
    /// Address of the embedded MQTT broker [default: 0.0.0.0:1883].
    #[arg(long)]
    pub mqtt_listen: Option<SocketAddr>,
    /// Use this external MQTT broker (mqtt://HOST:PORT) instead of the embedded one.
    #[arg(long)]
    pub mqtt_url: Option<String>,
    /// User name on the external broker.
    #[arg(long)]
    pub mqtt_username: Option<String>,
    /// Password on the external broker (or set BRAMBLE_MQTT_PASSWORD).
    #[arg(long, env = "BRAMBLE_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// Seconds between agent heartbeats [default: 10].
    #[arg(long)]
    pub heartbeat_seconds: Option<u32>,
    /// Missed heartbeats after which a node is NotReady [default: 3].
    #[arg(long)]
    pub missed_heartbeats: Option<u32>,
    /// The cluster's pod address range; each node gets a block of it [default: 10.244.0.0/16].
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// Prefix length of each node's pod CIDR, cut from --cluster-cidr [default: 24].
    #[arg(long)]
    pub node_cidr_mask_size: Option<u8>,
    /// The Services' virtual address range [default: 10.96.0.0/16].
    #[arg(long)]
    pub service_cidr: Option<String>,
    /// The ports NodePort and LoadBalancer Services get on every node [default: 30000-32767].
    #[arg(long)]
    pub service_node_port_range: Option<String>,
    /// The cluster DNS Service's address (kube-system/kube-dns), inside --service-cidr [default: 10.96.0.10].
    #[arg(long)]
    pub cluster_dns: Option<String>,
    /// Also run an agent on this machine (node named after the host), like `k3s server`.
    #[arg(long)]
    pub local_agent: bool,
    /// Runtime of the local agent: `real` (containers) or `sim` (simulated pods).
    #[arg(long, default_value = "real")]
    pub local_agent_runtime: String,
    /// The agent binary for --local-agent [default: bramble-agent beside bramble].
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// How long Events are kept after their last change, e.g. 1h, 30m [default: 1h].
    #[arg(long)]
    pub event_ttl: Option<String>,
    /// Load and check the configuration, print it and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// The master's effective configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MasterConfig {
    /// See `--data-dir`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// See `--listen`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// See `--cluster-name`.
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// See `--tls-san`.
    #[serde(default)]
    pub tls_san: Vec<String>,
    /// See `--event-log-capacity`.
    #[serde(default = "default_event_log_capacity")]
    pub event_log_capacity: usize,
    /// See `--mqtt-listen`.
    #[serde(default = "default_mqtt_listen")]
    pub mqtt_listen: SocketAddr,
    /// See `--mqtt-url`.
    #[serde(default)]
    pub mqtt_url: Option<String>,
    /// See `--mqtt-username`.
    #[serde(default)]
    pub mqtt_username: Option<String>,
    /// See `--mqtt-password`.
    #[serde(default)]
    pub mqtt_password: Option<String>,
    /// See `--heartbeat-seconds`.
    #[serde(default = "default_heartbeat_seconds")]
    pub heartbeat_seconds: u32,
    /// See `--missed-heartbeats`.
    #[serde(default = "default_missed_heartbeats")]
    pub missed_heartbeats: u32,
    /// Cluster DNS address sent to nodes.
    #[serde(default = "default_cluster_dns")]
    pub cluster_dns: String,
    /// Service address range sent to nodes.
    #[serde(default = "default_service_cidr")]
    pub service_cidr: String,
    /// See `--cluster-cidr`.
    #[serde(default = "default_cluster_cidr")]
    pub cluster_cidr: String,
    /// See `--node-cidr-mask-size`.
    #[serde(default = "default_node_cidr_mask_size")]
    pub node_cidr_mask_size: u8,
    /// See `--service-node-port-range`.
    #[serde(default = "default_node_port_range")]
    pub service_node_port_range: String,
    /// See `--event-ttl`.
    #[serde(default = "default_event_ttl")]
    pub event_ttl: String,
}

impl MasterConfig {
    /// `event-ttl` as a duration (at least one second).
    pub fn event_ttl(&self) -> Result<std::time::Duration, String> {
        let ttl: jiff::SignedDuration = self.event_ttl.parse().map_err(|_| {
            format!(
                "event-ttl {:?}: expected a duration such as 1h, 30m or 90s",
                self.event_ttl
            )
        })?;
        match std::time::Duration::try_from(ttl) {
            Ok(ttl) if ttl.as_secs() >= 1 => Ok(ttl),
            _ => Err(format!(
                "event-ttl {:?}: must be at least 1s",
                self.event_ttl
            )),
        }
    }

    /// The Service allocator that `service-cidr` and
    /// `service-node-port-range` describe; `cluster-dns` must be inside.
    pub fn service_allocator(
        &self,
    ) -> Result<crate::controllers::service_ip::ServiceAllocator, String> {
        let allocator = crate::controllers::service_ip::ServiceAllocator::new(
            &self.service_cidr,
            &self.service_node_port_range,
        )
        .map_err(|e| e.to_string())?;
        let dns: std::net::Ipv4Addr = self
            .cluster_dns
            .parse()
            .map_err(|_| format!("cluster-dns {:?} is not an IPv4 address", self.cluster_dns))?;
        if !allocator.cidr().contains(&dns) || dns == allocator.kubernetes_ip() {
            return Err(format!(
                "cluster-dns {dns} must be an address of --service-cidr {} other than {}",
                allocator.cidr(),
                allocator.kubernetes_ip()
            ));
        }
        Ok(allocator)
    }

    /// The pod CIDR pool that `cluster-cidr` and `node-cidr-mask-size` describe.
    pub fn pod_cidrs(&self) -> Result<PodCidrPool, String> {
        PodCidrPool::parse(&self.cluster_cidr, self.node_cidr_mask_size).map_err(|e| e.to_string())
    }
}

fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1883))
}
fn default_heartbeat_seconds() -> u32 {
    10
}
fn default_missed_heartbeats() -> u32 {
    3
}
fn default_cluster_dns() -> String {
    "10.96.0.10".into()
}
fn default_service_cidr() -> String {
    "10.96.0.0/16".into()
}
fn default_node_port_range() -> String {
    crate::controllers::service_ip::DEFAULT_NODE_PORT_RANGE.into()
}
fn default_cluster_cidr() -> String {
    pod_cidr::DEFAULT_CLUSTER_CIDR.into()
}
fn default_node_cidr_mask_size() -> u8 {
    pod_cidr::DEFAULT_NODE_CIDR_MASK_SIZE
}

/// An external broker address, `mqtt://HOST:PORT` (the form agents take).
fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    use bramble_common::endpoint::{BrokerUrl, MqttTransport};
    let parsed = BrokerUrl::parse(url).map_err(|reason| format!("--mqtt-url {url:?}: {reason}"))?;
    if parsed.transport == MqttTransport::Tls {
        return Err(format!(
            "--mqtt-url {url:?}: mqtts:// is not supported by the master yet; use mqtt://HOST:PORT"
        ));
    }
    Ok((parsed.host, parsed.port))
}

fn default_event_ttl() -> String {
    "1h".into()
}

fn default_event_log_capacity() -> usize {
    10_000
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(super::DEFAULT_DATA_DIR)
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 6443))
}
fn default_cluster_name() -> String {
    "bramble".into()
}

impl MasterConfig {
    /// The file (if any) overridden by the flags.
    pub fn load(args: &MasterArgs) -> Result<MasterConfig, String> {
        let mut config: MasterConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => toml::from_str("").map_err(|e| e.to_string())?,
        };
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(listen) = args.listen {
            config.listen = listen;
        }
        if let Some(name) = &args.cluster_name {
            config.cluster_name = name.clone();
        }
        config.tls_san.extend(args.tls_san.iter().cloned());
        if let Some(capacity) = args.event_log_capacity {
            config.event_log_capacity = capacity;
        }
        if let Some(listen) = args.mqtt_listen {
            config.mqtt_listen = listen;
        }
        if args.mqtt_url.is_some() {
            config.mqtt_url = args.mqtt_url.clone();
        }
        if args.mqtt_username.is_some() {
            config.mqtt_username = args.mqtt_username.clone();
        }
        if args.mqtt_password.is_some() {
            config.mqtt_password = args.mqtt_password.clone();
        }
        if let Some(h) = args.heartbeat_seconds {
            config.heartbeat_seconds = h;
        }
        if let Some(m) = args.missed_heartbeats {
            config.missed_heartbeats = m;
        }
        if let Some(cidr) = &args.cluster_cidr {
            config.cluster_cidr = cidr.clone();
        }
        if let Some(mask) = args.node_cidr_mask_size {
            config.node_cidr_mask_size = mask;
        }
        if let Some(cidr) = &args.service_cidr {
            config.service_cidr = cidr.clone();
        }
        if let Some(range) = &args.service_node_port_range {
            config.service_node_port_range = range.clone();
        }
        if let Some(dns) = &args.cluster_dns {
            config.cluster_dns = dns.clone();
        }
        if let Some(ttl) = &args.event_ttl {
            config.event_ttl = ttl.clone();
        }
        config.pod_cidrs()?;
        config.event_ttl()?;
        config.service_allocator()?;
        if config.heartbeat_seconds == 0 || config.missed_heartbeats == 0 {
            return Err("heartbeat-seconds and missed-heartbeats must be at least 1".into());
        }
        if let Some(url) = &config.mqtt_url {
            parse_mqtt_url(url)?;
        }
        if config.event_log_capacity == 0 {
            return Err("event-log-capacity must be at least 1".into());
        }
        let name_ok = !config.cluster_name.is_empty()
            && config.cluster_name.len() <= 63
            && config
                .cluster_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(format!(
                "cluster-name {:?} is invalid: use 1 to 63 lowercase letters, digits or '-'",
                config.cluster_name
            ));
        }
        Ok(config)
    }
}

/// Run `bramble master`.
pub fn main(runtime: &tokio::runtime::Runtime, args: MasterArgs) -> ExitCode {
    let config = match MasterConfig::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("data-dir = {:?}", config.data_dir.display().to_string());
        println!("listen = \"{}\"", config.listen);
        println!("cluster-name = {:?}", config.cluster_name);
        println!("tls-san = {:?}", config.tls_san);
        println!("event-log-capacity = {}", config.event_log_capacity);
        match &config.mqtt_url {
            Some(url) => println!("mqtt-url = {url:?}"),
            None => println!("mqtt-listen = \"{}\"", config.mqtt_listen),
        }
        println!("heartbeat-seconds = {}", config.heartbeat_seconds);
        println!("missed-heartbeats = {}", config.missed_heartbeats);
        println!("cluster-cidr = {:?}", config.cluster_cidr);
        println!("node-cidr-mask-size = {}", config.node_cidr_mask_size);
        println!("service-cidr = {:?}", config.service_cidr);
        println!(
            "service-node-port-range = {:?}",
            config.service_node_port_range
        );
        println!("cluster-dns = {:?}", config.cluster_dns);
        println!("event-ttl = {:?}", config.event_ttl);
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("BRAMBLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let local_agent = args.local_agent.then(|| super::local_agent::LocalAgent {
        binary: args
            .agent_bin
            .clone()
            .unwrap_or_else(super::local_agent::default_binary),
        node: super::local_agent::default_node_name(),
        runtime: args.local_agent_runtime.clone(),
        state_dir: config.data_dir.join("agent"),
    });
    match runtime.block_on(run(config, local_agent)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn create_data_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            format!(
                "cannot create the data dir {}: {e}; choose another with --data-dir",
                dir.display()
            )
        })
}

async fn ensure_builtin_namespaces(store: &Store) -> Result<(), String> {
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = ObjectKey {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: name.into(),
        };
        let object = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        match store.create(&key, object).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(format!("cannot create namespace {name}: {e}")),
        }
    }
    Ok(())
}

/// Refuse a pod range that does not hold the pod CIDRs nodes already have:
/// they never move, so starting would leave those nodes' pods unreachable.
async fn check_pod_cidrs(store: &Store, pool: &PodCidrPool) -> Result<(), String> {
    let (nodes, _) = store
        .list(Kind::Node, None)
        .await
        .map_err(|e| format!("cannot read the nodes: {e}"))?;
    pool.check_assigned(nodes.iter().filter_map(|n| {
        Some((
            n["metadata"]["name"].as_str()?,
            n["spec"]["podCIDR"].as_str()?,
        ))
    }))
    .map_err(|e| e.to_string())
}

async fn run(
    config: MasterConfig,
    local_agent: Option<super::local_agent::LocalAgent>,
) -> Result<(), String> {
    create_data_dir(&config.data_dir)?;
    let db_path = config.data_dir.join("store.redb");
    let store = {
        let path = db_path.clone();
        let options = StoreOptions {
            event_log_capacity: config.event_log_capacity,
            ..StoreOptions::default()
        };
        tokio::task::spawn_blocking(move || Store::open(&path, options))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    ensure_builtin_namespaces(&store).await?;
    let pod_cidrs = config.pod_cidrs()?;
    check_pod_cidrs(&store, &pod_cidrs).await?;
    let services = Arc::new(config.service_allocator()?);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} for the API: {e}; choose another address with --listen",
                config.listen
            )
        })?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let pki_options = pki::PkiOptions {
        extra_sans: config.tls_san.clone(),
        server_url: format!("https://127.0.0.1:{}", local.port()),
        cluster_name: config.cluster_name.clone(),
    };
    let credentials =
        pki::load_or_create(&config.data_dir, &pki_options).map_err(|e| e.to_string())?;
    // Stop everything on the first SIGINT/SIGTERM.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let (mqtt, broker_credentials) = start_mqtt(&config, &store, stopped.clone()).await?;
    let rpc = crate::rpc::RpcHub::start(&mqtt, &config.cluster_name, stopped())?;
    let state = Arc::new(api::ApiState {
        store: store.clone(),
        auth: api::auth::Authenticator::new(credentials.admin_token_sha256),
        max_body_bytes: 3 * 1024 * 1024,
        scratch_dir: config.data_dir.clone(),
        node_registration: tokio::sync::Mutex::new(()),
        rpc,
        pod_cidrs,
        services: services.clone(),
    });
    crate::controllers::builtin_services::ensure(
        &store,
        services.kubernetes_ip(),
        &config.cluster_dns,
        crate::controllers::builtin_services::advertise_address(config.listen, &config.tls_san),
        local.port(),
    )
    .await?;
    let app = api::router(state);
    let health = Arc::new(crate::controllers::node_lifecycle::NodeHealth::default());
    let settings = crate::dispatch::ClusterSettings {
        cluster_name: config.cluster_name.clone(),
        cluster_dns: config.cluster_dns.clone(),
        service_cidr: config.service_cidr.clone(),
        heartbeat_seconds: config.heartbeat_seconds,
    };
    let events = crate::events::EventRecorder::new(store.clone());
    tokio::spawn(crate::dispatch::run(
        store.clone(),
        crate::dispatch::DispatchOptions {
            settings,
            endpoint: mqtt.clone(),
            debounce: std::time::Duration::from_millis(100),
            peer_interval: std::time::Duration::from_secs(2),
            events: events.clone(),
        },
        health.clone(),
        stopped(),
    ));
    tokio::spawn(crate::scheduler::run(store.clone(), stopped()));
    tokio::spawn(crate::events::ttl::run(
        store.clone(),
        config.event_ttl()?,
        stopped(),
    ));
    tokio::spawn(crate::controllers::run(
        store.clone(),
        events.clone(),
        crate::controllers::ControllerOptions::default(),
        stopped.clone(),
    ));
    tokio::spawn(crate::controllers::endpointslice::run(
        store.clone(),
        stopped(),
    ));
    tokio::spawn(crate::controllers::service_lb::run(
        store.clone(),
        stopped(),
    ));
    let silence = std::time::Duration::from_secs(
        u64::from(config.heartbeat_seconds) * u64::from(config.missed_heartbeats),
    );
    tokio::spawn(crate::controllers::node_lifecycle::run(
        store.clone(),
        health,
        silence,
        events.clone(),
        stopped(),
    ));
    tokio::spawn(watchdog(stopped()));
    if local_agent.is_some() && config.mqtt_url.is_some() {
        tracing::warn!("--local-agent with an external broker: the agent's token must also be accepted by that broker");
    }
    if let Some(agent) = local_agent {
        tokio::spawn(super::local_agent::run(
            agent,
            store.clone(),
            if mqtt.host.contains(':') {
                format!("[{}]:{}", mqtt.host, mqtt.port)
            } else {
                format!("{}:{}", mqtt.host, mqtt.port)
            },
            config.cluster_name.clone(),
            pod_cidrs,
            broker_credentials,
            stopped(),
        ));
    }

    tracing::info!(
        mqtt = %format!("{}:{}", mqtt.host, mqtt.port),
        listen = %local,
        data_dir = %config.data_dir.display(),
        kubeconfig = %credentials.kubeconfig_path.display(),
        revision = store.current_revision(),
        "bramble master ready"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    api::server::serve_tls(listener, credentials.tls, app, async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("bramble master stopped");
    Ok(())
}

/// Start the embedded broker (unless an external one is configured) and
/// return how the master's own MQTT session reaches it.
async fn start_mqtt<F, Fut>(
    config: &MasterConfig,
    store: &Store,
    stopped: F,
) -> Result<
    (
        crate::dispatch::MqttEndpoint,
        Option<Arc<crate::broker::Credentials>>,
    ),
    String,
>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let client_id = format!("bramble-master-{}", config.cluster_name);
    if let Some(url) = &config.mqtt_url {
        let (host, port) = parse_mqtt_url(url)?;
        let endpoint = crate::dispatch::MqttEndpoint {
            host,
            port,
            username: config.mqtt_username.clone().unwrap_or_default(),
            password: config.mqtt_password.clone().unwrap_or_default(),
            client_id,
        };
        return Ok((endpoint, None));
    }
    let credentials = Arc::new(crate::broker::Credentials::new());
    let master_token = pki::new_token();
    credentials.allow(crate::broker::MASTER_USER, pki::token_sha256(&master_token));
    let tokens = crate::broker::node_tokens(store)
        .await
        .map_err(|e| e.to_string())?;
    credentials.replace_all(tokens, &[crate::broker::MASTER_USER]);
    let broker =
        crate::broker::start(config.mqtt_listen, credentials.clone()).map_err(|e| e.to_string())?;
    let cluster = config.cluster_name.clone();
    let kick_token = master_token.clone();
    tokio::spawn(crate::broker::keep_in_step(
        store.clone(),
        credentials.clone(),
        move |node| {
            let client_id = format!("bramble-{cluster}-{node}");
            tokio::spawn(crate::broker::kick(
                broker.connect_addr(),
                client_id,
                kick_token.clone(),
            ));
        },
        stopped(),
    ));
    let endpoint = crate::dispatch::MqttEndpoint {
        host: broker.connect_addr().ip().to_string(),
        port: broker.addr.port(),
        username: crate::broker::MASTER_USER.into(),
        password: master_token,
        client_id,
    };
    Ok((endpoint, Some(credentials)))
}

/// Ping systemd's watchdog (when the unit asks for one) until `stopped`.
async fn watchdog(stopped: impl std::future::Future<Output = ()>) {
    let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) else {
        return;
    };
    let period = timeout / 2;
    tokio::pin!(stopped);
    loop {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = &mut stopped => return,
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
