//! The embedded MQTT broker (rumqttd), started by `bramble master` unless an
//! external broker is configured.
//!
//! Clients authenticate at CONNECT with a user name and a token, checked
//! against a [`Credentials`] table that the master keeps in step with the
//! store (node join tokens, stored hashed). A refused client sees its TCP
//! connection closed. Nothing outside this module knows that the broker is
//! embedded: the rest of the master talks MQTT to an address like any client.

mod credentials;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;

pub use credentials::{keep_in_step, node_tokens, Credentials, MASTER_USER};

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The MQTT address could not be bound.
    #[error("cannot listen on {addr} for MQTT: {source}; choose another address with --mqtt-listen (or use an external broker with --mqtt-url)")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The broker thread could not be started.
    #[error("cannot start the embedded MQTT broker: {0}")]
    Start(String),
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// The address a client on this machine connects to: the listening
    /// address, with an unspecified one (`0.0.0.0`, `::`) replaced by the
    /// loopback address of its family. A broker listening on one address
    /// only (`--mqtt-listen 192.168.1.10:1883`) is not on the loopback.
    pub fn connect_addr(&self) -> SocketAddr {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.addr.port())
    }
}

/// Largest MQTT payload accepted (the protocol's message limit plus headroom
/// for the MQTT header and topic).
const MAX_PAYLOAD_BYTES: usize = 130 * 1024;

/// Start the broker on `listen`. It runs on its own threads (rumqttd has no
/// shutdown; it ends with the process).
pub fn start(
    listen: SocketAddr,
    credentials: Arc<Credentials>,
) -> Result<EmbeddedBroker, BrokerError> {
    // Bind here first: a busy port becomes a clear error naming the flag, and
    // port 0 becomes a real port (rumqttd binds on its own thread and only
    // logs a failure).
    let probe = TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
        addr: listen,
        source,
    })?;
    let addr = probe.local_addr().map_err(|source| BrokerError::Bind {
        addr: listen,
        source,
    })?;
    drop(probe);

    let mut settings: rumqttd::ServerSettings = serde_json::from_value(serde_json::json!({
        "name": "bramble-v4",
        "listen": addr.to_string(),
        "next_connection_delay_ms": 1,
        "connections": {
            "connection_timeout_ms": 10000,
            "max_payload_size": MAX_PAYLOAD_BYTES,
            "max_inflight_count": 100,
            "dynamic_filters": true,
        },
    }))
    .map_err(|e| BrokerError::Start(format!("server settings: {e}")))?;
    settings.set_auth_handler(move |client_id: String, user: String, token: String| {
        let credentials = credentials.clone();
        async move {
            let ok = credentials.check(&user, &token);
            if !ok {
                tracing::warn!(%client_id, %user, "MQTT login refused: unknown user or wrong token");
            }
            ok
        }
    });
    let mut v4 = std::collections::HashMap::new();
    v4.insert("1".to_string(), settings);
    let root = bramble_common::wire::TOPIC_ROOT;
    let router: rumqttd::RouterConfig = serde_json::from_value(serde_json::json!({
        "max_connections": 20000,
        "max_outgoing_packet_count": 200,
        // rumqttd keeps a log per subscription filter of up to
        // max_segment_count segments, a segment growing until it passes
        // max_segment_size; a subscriber that falls behind the log jumps to
        // its oldest entry. Each device subscribes to its own desired-state
        // topic, whose messages are whole states (only the newest matters)
        // of up to 128 KiB: keep the last two and nothing more, or 1,000
        // nodes hold hundreds of MiB of old desired states. The filters the
        // master reads every node's messages through must lose nothing:
        // larger logs there.
        "max_segment_size": 1024,
        "max_segment_count": 2,
        "custom_segment": {
            format!("{root}/+/nodes/+/report"): {"max_segment_size": 1024 * 1024, "max_segment_count": 8},
            format!("{root}/+/nodes/+/presence"): {"max_segment_size": 256 * 1024, "max_segment_count": 2},
            format!("{root}/+/nodes/+/rpc/req"): {"max_segment_size": 64 * 1024, "max_segment_count": 2},
            format!("{root}/+/rpc/resp/+"): {"max_segment_size": 1024 * 1024, "max_segment_count": 4},
        },
        "initialized_filters": null,
    }))
    .map_err(|e| BrokerError::Start(format!("router settings: {e}")))?;
    let config = rumqttd::Config {
        id: 0,
        router,
        v4: Some(v4),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    Ok(EmbeddedBroker { addr })
}

/// Disconnect the device logged in with `client_id` from the embedded
/// broker: connecting with the same client id takes its session over (MQTT
/// 3.1.1, 3.1.4-2); then this connection closes. With its token revoked the
/// device cannot log in again.
pub async fn kick(addr: SocketAddr, client_id: String, master_token: String) {
    let mut options =
        rumqttc::MqttOptions::new(client_id.clone(), addr.ip().to_string(), addr.port());
    options
        .set_credentials(credentials::MASTER_USER, master_token)
        .set_clean_session(true)
        .set_keep_alive(std::time::Duration::from_secs(5));
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 10);
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match event_loop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.try_disconnect();
                }
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    match outcome {
        Ok(true) => tracing::info!(%client_id, "disconnected a revoked node"),
        _ => tracing::warn!(%client_id, "could not take over a revoked node's session"),
    }
}
