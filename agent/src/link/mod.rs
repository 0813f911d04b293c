//! The MQTT session with the master's broker.
//!
//! [`start`] opens a persistent session (clean session off, client ID
//! `bramble-{cluster}-{node}`, user = node, password = join token, keep-alive
//! 30 s, last will `Presence::Offline` retained QoS 1 on the presence topic)
//! and spawns the **one** task that polls the rumqttc event loop. Everything
//! else publishes through the cloned [`rumqttc::AsyncClient`] in [`Link`],
//! with `try_publish` so that no task ever waits on the poller (a task that
//! awaits a publish while the poller waits on it deadlocks).
//!
//! The poller reports the connection state and the latest desired state
//! through watch channels (never blocking either), hands RPC requests (log
//! requests) to a bounded queue (dropping them, logged, when it is full),
//! reconnects with
//! [`Backoff`] (1 s doubling to 60 s, full jitter) after a failure, resets
//! it on ConnAck, and explains a refused login. What to do on (re)connect
//! (subscribe, presence, reports) is up to the owner of the [`Link`].
//!
//! [`coalesce`] decides which reports to send.

pub mod coalesce;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bramble_common::wire::{
    self, Backoff, DecodeError, Message, NodeDesired, Presence, RpcRequest, ServiceShard, Topic,
    TopicError,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS, StateError,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn, Instrument};

use crate::shutdown::Shutdown;

/// MQTT keep-alive of the agent's session.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Capacity of the request channel between clients and the poller.
const REQUEST_CAPACITY: usize = 64;
/// Largest incoming MQTT packet accepted. Larger than a bramble message may
/// be so that an oversized payload reaches [`wire::decode`] and is refused
/// there with a clear log line (rumqttc would otherwise drop the connection,
/// and a retained oversized payload would then loop).
const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// Largest outgoing MQTT packet: a bramble message plus the MQTT header.
const MAX_OUTGOING_PACKET: usize = wire::MAX_MESSAGE_BYTES + 1024;
/// RPC requests waiting for the agent; more are dropped (and logged).
const RPC_QUEUE: usize = 128;
/// How long the poller keeps flushing after shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// What a refused login is logged as.
pub const REFUSED_MESSAGE: &str =
    "the master refused this node's token: check --token or run `bramble node add NAME` again";

/// Errors setting up the link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The cluster or node name cannot be used in a topic.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The last will could not be encoded.
    #[error(transparent)]
    Encode(#[from] wire::EncodeError),
    /// `mqtts://` is not supported by this build yet.
    #[error("mqtts:// (TLS) is not supported by this agent yet: use an mqtt:// broker address")]
    TlsUnsupported,
}

/// Everything the link needs to know.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The cluster name (second topic level).
    pub cluster: String,
    /// The node's name (MQTT user name).
    pub node: String,
    /// The join token (MQTT password).
    pub token: String,
    /// The broker's host.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
}

/// The session's state, as published by the poller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connection {
    /// True between a ConnAck and the next connection error.
    pub connected: bool,
    /// Increases with every successful connection.
    pub epoch: u64,
}

/// A desired state received from the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedDesired {
    /// The payload as received (what `desired.bin` stores).
    pub payload: Vec<u8>,
    /// The decoded state.
    pub desired: NodeDesired,
}

/// A shard of the cluster's Services received from the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedShard {
    /// The payload as received (what the agent persists).
    pub payload: Vec<u8>,
    /// The decoded shard.
    pub shard: ServiceShard,
}

/// The newest shard received of each shard number.
pub type ReceivedShards = BTreeMap<u32, ReceivedShard>;

/// The node's topics.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `bramble/{cluster}/nodes/{node}/desired`.
    pub desired: String,
    /// `bramble/{cluster}/nodes/{node}/report`.
    pub report: String,
    /// `bramble/{cluster}/nodes/{node}/presence`.
    pub presence: String,
    /// `bramble/{cluster}/nodes/{node}/rpc/req`.
    pub rpc_request: String,
    /// `bramble/{cluster}/services/+`.
    pub services: String,
}

impl Topics {
    /// The topics of `node` in `cluster`.
    pub fn new(cluster: &str, node: &str) -> Result<Topics, TopicError> {
        Ok(Topics {
            desired: wire::desired_topic(cluster, node)?,
            report: wire::report_topic(cluster, node)?,
            presence: wire::presence_topic(cluster, node)?,
            rpc_request: wire::rpc_request_topic(cluster, node)?,
            services: wire::services_filter(cluster)?,
        })
    }
}

/// A running link: a client to publish with and what the poller observes.
#[derive(Debug)]
pub struct Link {
    /// Publishes through the poller; use the `try_*` methods.
    pub client: AsyncClient,
    /// The node's topics.
    pub topics: Topics,
    /// The session's state.
    pub connection: watch::Receiver<Connection>,
    /// The newest desired state received (by generation).
    pub desired: watch::Receiver<Option<ReceivedDesired>>,
    /// RPC requests from the master, in arrival order.
    pub rpc: mpsc::Receiver<RpcRequest>,
    /// The newest shard of the cluster's Services, by shard number.
    pub services: watch::Receiver<ReceivedShards>,
    /// The poller task; it ends after a disconnect or at shutdown.
    pub poller: JoinHandle<()>,
}

/// The MQTT client ID of a node.
pub fn client_id(cluster: &str, node: &str) -> String {
    format!("bramble-{cluster}-{node}")
}

/// Open the session and spawn the poller. Connecting happens in the
/// background; watch [`Link::connection`].
pub fn start(settings: LinkSettings, shutdown: Shutdown) -> Result<Link, LinkError> {
    let topics = Topics::new(&settings.cluster, &settings.node)?;
    let offline = wire::encode(&Message::Presence(Presence::Offline))?;
    let mut options = MqttOptions::new(
        client_id(&settings.cluster, &settings.node),
        settings.host.clone(),
        settings.port,
    );
    options
        .set_clean_session(false)
        .set_keep_alive(settings.keep_alive)
        .set_credentials(settings.node.clone(), settings.token.clone())
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
        .set_last_will(LastWill::new(
            topics.presence.clone(),
            offline,
            QoS::AtLeastOnce,
            true,
        ));
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let (connection_tx, connection) = watch::channel(Connection::default());
    let (desired_tx, desired) = watch::channel(None);
    let (rpc_tx, rpc) = mpsc::channel(RPC_QUEUE);
    let (services_tx, services) = watch::channel(ReceivedShards::new());
    let poller = Poller {
        cluster: settings.cluster.clone(),
        services_tx,
        eventloop,
        backoff: settings.backoff,
        node: settings.node.clone(),
        desired_topic: topics.desired.clone(),
        rpc_topic: topics.rpc_request.clone(),
        rpc_tx,
        connection_tx,
        desired_tx,
        logged: BTreeSet::new(),
        epoch: 0,
        ever_connected: false,
        refusal_logged: false,
    };
    let poller = tokio::spawn(poller.run(shutdown).in_current_span());
    Ok(Link {
        client,
        topics,
        connection,
        desired,
        rpc,
        services,
        poller,
    })
}

/// Why a connection attempt or a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The broker refused the node's credentials (or closed the connection
    /// right after CONNECT, as brokers that drop refused clients do).
    Refused,
    /// Anything else: unreachable broker, network error, timeout.
    Other,
}

/// Classify a connection error. `connecting` is true when no session was
/// established (the error came before or instead of the ConnAck).
pub fn classify(error: &ConnectionError, connecting: bool) -> Failure {
    match error {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => Failure::Refused,
        ConnectionError::MqttState(StateError::ConnectionAborted) if connecting => Failure::Refused,
        ConnectionError::MqttState(StateError::Io(e)) | ConnectionError::Io(e)
            if connecting
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                ) =>
        {
            Failure::Refused
        }
        _ => Failure::Other,
    }
}

/// A short key for "log once per distinct reason": the error's kind, with
/// what varies per message (lengths) left out.
pub fn decode_error_key(error: &DecodeError) -> String {
    match error {
        DecodeError::TooLarge { .. } => "too large".into(),
        other => other.to_string(),
    }
}

struct Poller {
    cluster: String,
    services_tx: watch::Sender<ReceivedShards>,
    eventloop: EventLoop,
    backoff: Backoff,
    node: String,
    desired_topic: String,
    rpc_topic: String,
    rpc_tx: mpsc::Sender<RpcRequest>,
    connection_tx: watch::Sender<Connection>,
    desired_tx: watch::Sender<Option<ReceivedDesired>>,
    /// Reasons already logged for dropped payloads.
    logged: BTreeSet<String>,
    epoch: u64,
    ever_connected: bool,
    /// A refusal was logged since the last successful connection.
    refusal_logged: bool,
}

impl Poller {
    async fn run(mut self, mut shutdown: Shutdown) {
        let mut stop_by: Option<tokio::time::Instant> = None;
        loop {
            if stop_by.is_none() && shutdown.is_triggered() {
                stop_by = Some(tokio::time::Instant::now() + SHUTDOWN_FLUSH);
            }
            let connecting = self.eventloop.network.is_none();
            if stop_by.is_some() && connecting {
                break;
            }
            let event = tokio::select! {
                event = self.eventloop.poll() => event,
                _ = shutdown.wait(), if stop_by.is_none() => continue,
                _ = sleep_until_opt(stop_by) => {
                    debug!("gave up flushing the mqtt session at shutdown");
                    break;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.backoff.reset();
                    self.epoch += 1;
                    self.ever_connected = true;
                    self.refusal_logged = false;
                    info!(
                        session_present = ack.session_present,
                        "connected to the master's mqtt broker"
                    );
                    self.connection_tx.send_replace(Connection {
                        connected: true,
                        epoch: self.epoch,
                    });
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    self.received(&publish.topic, publish.payload.to_vec());
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    debug!("mqtt session closed");
                    self.set_disconnected();
                    break;
                }
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => break,
                Err(e) => {
                    self.set_disconnected();
                    // Requests queued for the lost connection (reports,
                    // presence, subscribe) are stale: the owner sends fresh
                    // ones on the next ConnAck. Never replay a backlog.
                    self.eventloop.pending.clear();
                    if stop_by.is_some() {
                        break;
                    }
                    self.log_failure(&e, connecting);
                    let delay = self.backoff.next_delay(rand::random::<f64>());
                    debug!(delay_ms = delay.as_millis(), "reconnecting after backoff");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait() => break,
                    }
                }
            }
        }
        self.set_disconnected();
        debug!("mqtt poller stopped");
    }

    fn set_disconnected(&self) {
        self.connection_tx.send_if_modified(|c| {
            let was = c.connected;
            c.connected = false;
            was
        });
    }

    /// Log a failure: a refusal once per backoff cycle (the first refusal
    /// since the last connection, also when a lost connection came first,
    /// as when the node is removed; then whenever the delay is at its cap),
    /// other errors at the first failure and then at debug.
    fn log_failure(&mut self, error: &ConnectionError, connecting: bool) {
        let first = self.backoff.attempts() == 0;
        let capped = self.backoff.ceiling() >= wire::DEFAULT_MAX_BACKOFF;
        match classify(error, connecting) {
            Failure::Refused if first || capped || !self.refusal_logged => {
                self.refusal_logged = true;
                error!(node = %self.node, error = %error, "{REFUSED_MESSAGE}");
            }
            Failure::Other if first => {
                if self.ever_connected && !connecting {
                    warn!(error = %error, "lost the connection to the master's mqtt broker; reconnecting with backoff (pods keep running)");
                } else {
                    warn!(error = %error, "cannot reach the master's mqtt broker; retrying with backoff (pods keep running)");
                }
            }
            _ => debug!(error = %error, "mqtt connection attempt failed"),
        }
    }

    fn received(&mut self, topic: &str, payload: Vec<u8>) {
        if topic == self.rpc_topic {
            self.received_rpc(&payload);
            return;
        }
        if let Some(Topic::Services { cluster, shard }) = wire::parse_topic(topic) {
            if cluster == self.cluster {
                self.received_shard(shard, payload);
                return;
            }
        }
        if topic != self.desired_topic {
            self.log_once(
                format!("topic {topic}"),
                &format!("dropped a message on unexpected topic {topic}"),
            );
            return;
        }
        let parsed = wire::parse_topic(topic);
        match wire::decode(&payload) {
            Ok(message) if parsed.as_ref().is_some_and(|t| !t.carries(&message)) => {
                self.log_once(
                    format!("kind {}", message.kind()),
                    &format!(
                        "dropped a {} message on the desired topic: only desired states belong there",
                        message.kind()
                    ),
                );
            }
            Ok(Message::Desired(desired)) => {
                let generation = desired.generation;
                let replaced = self.desired_tx.send_if_modified(|current| {
                    if current
                        .as_ref()
                        .is_some_and(|c| c.desired.generation > generation)
                    {
                        return false;
                    }
                    *current = Some(ReceivedDesired { payload, desired });
                    true
                });
                if replaced {
                    debug!(generation, "received desired state");
                } else {
                    info!(
                        received = generation,
                        "ignoring a desired state older than the one applied"
                    );
                }
            }
            Ok(other) => debug!(kind = other.kind(), "ignored message"),
            Err(e) => {
                self.log_once(
                    decode_error_key(&e),
                    &format!("dropped an undecodable desired state: {e}"),
                );
            }
        }
    }

    fn received_shard(&mut self, number: u32, payload: Vec<u8>) {
        if payload.is_empty() {
            // A cleared retained message: nothing to learn from it.
            return;
        }
        match wire::decode(&payload) {
            Ok(Message::Services(shard)) if shard.shard == number => {
                let revision = shard.revision;
                let replaced = self.services_tx.send_if_modified(|shards| {
                    if shards
                        .get(&number)
                        .is_some_and(|held| held.shard.revision >= revision)
                    {
                        return false;
                    }
                    shards.insert(number, ReceivedShard { payload, shard });
                    true
                });
                if replaced {
                    debug!(shard = number, revision, "received a service shard");
                }
            }
            Ok(Message::Services(shard)) => self.log_once(
                format!("shard mismatch {number}"),
                &format!(
                    "dropped service shard {} received on the topic of shard {number}",
                    shard.shard
                ),
            ),
            Ok(other) => self.log_once(
                format!("services kind {}", other.kind()),
                &format!("dropped a {} message on a services topic", other.kind()),
            ),
            Err(e) => self.log_once(
                format!("services {}", decode_error_key(&e)),
                &format!("dropped an undecodable service shard: {e}"),
            ),
        }
    }

    fn received_rpc(&mut self, payload: &[u8]) {
        match wire::decode(payload) {
            Ok(Message::RpcRequest(request)) => {
                if let Err(e) = self.rpc_tx.try_send(request) {
                    warn!(error = %e, "dropped an rpc request: too many at once");
                }
            }
            Ok(other) => self.log_once(
                format!("rpc kind {}", other.kind()),
                &format!(
                    "dropped a {} message on the rpc request topic",
                    other.kind()
                ),
            ),
            Err(e) => self.log_once(
                format!("rpc {}", decode_error_key(&e)),
                &format!("dropped an undecodable rpc request: {e}"),
            ),
        }
    }

    fn log_once(&mut self, key: String, message: &str) {
        if self.logged.insert(key) {
            warn!("{message} (logged once per reason; the agent keeps its current desired state)");
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recognised() {
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert_eq!(classify(&refused, true), Failure::Refused);
        let bad = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        assert_eq!(classify(&bad, true), Failure::Refused);
        let dropped = ConnectionError::MqttState(StateError::ConnectionAborted);
        assert_eq!(classify(&dropped, true), Failure::Refused);
        assert_eq!(
            classify(&dropped, false),
            Failure::Other,
            "mid-session drop"
        );
        let unreachable =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&unreachable, true), Failure::Other);
        assert_eq!(
            classify(&ConnectionError::NetworkTimeout, true),
            Failure::Other
        );
    }

    #[test]
    fn decode_errors_key_by_reason() {
        let a = DecodeError::TooLarge { len: 1, max: 0 };
        let b = DecodeError::TooLarge { len: 2, max: 0 };
        assert_eq!(decode_error_key(&a), decode_error_key(&b));
        assert_ne!(
            decode_error_key(&DecodeError::BadMagic),
            decode_error_key(&DecodeError::Truncated)
        );
    }

    #[test]
    fn backoff_is_used_as_specified() {
        // The link's backoff: 1 s doubling to a 60 s cap, full jitter.
        let mut backoff = Backoff::default();
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = backoff.ceiling().as_secs();
                backoff.next_delay(0.5);
                c
            })
            .collect();
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(client_id("home", "pi-1"), "bramble-home-pi-1");
    }
}
