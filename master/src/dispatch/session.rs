//! The master's MQTT session. One task polls the rumqttc event loop and
//! forwards what arrives; everything else publishes through a cloned client
//! (awaiting a publish inside the polling task would deadlock once its
//! request channel fills).

use std::time::Duration;

use bramble_common::wire::Backoff;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// How the master reaches the broker (embedded or external: the same).
#[derive(Debug, Clone)]
pub struct MqttEndpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub username: String,
    /// Password (token).
    pub password: String,
    /// Client id.
    pub client_id: String,
}

/// What the session hands to the dispatcher.
#[derive(Debug)]
pub enum Incoming {
    /// (Re)connected: subscriptions were renewed; republish what is needed.
    Connected,
    /// A message arrived.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: bytes::Bytes,
    },
}

/// Largest MQTT packet: the protocol's 128 KiB plus header room.
pub const MAX_PACKET_BYTES: usize = 130 * 1024;

/// Requests (publishes) queued for the event loop. Each may hold a whole
/// desired state: keep it short (the [`super::publish::Publisher`] is
/// where payloads wait, one per node at most).
const REQUEST_QUEUE: usize = 64;

/// Connect and start polling. `filters` are subscribed at QoS 1 on every
/// connect. The polling task ends with the returned receiver.
pub fn start(
    endpoint: &MqttEndpoint,
    filters: Vec<String>,
) -> (AsyncClient, mpsc::Receiver<Incoming>) {
    let mut options = MqttOptions::new(
        endpoint.client_id.clone(),
        endpoint.host.clone(),
        endpoint.port,
    );
    options
        .set_credentials(endpoint.username.clone(), endpoint.password.clone())
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_inflight(100)
        .set_request_channel_capacity(REQUEST_QUEUE);
    let (client, event_loop) = AsyncClient::new(options, REQUEST_QUEUE);
    let (tx, rx) = mpsc::channel(4096);
    let subscriber = client.clone();
    let endpoint = endpoint.clone();
    tokio::spawn(poll(event_loop, subscriber, filters, tx, endpoint));
    (client, rx)
}

async fn poll(
    mut event_loop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    tx: mpsc::Sender<Incoming>,
    endpoint: MqttEndpoint,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut logged_down = false;
    let mut ever_connected = false;
    loop {
        let event = tokio::select! {
            event = event_loop.poll() => event,
            () = tx.closed() => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                ever_connected = true;
                if logged_down {
                    tracing::info!(broker = %format!("{}:{}", endpoint.host, endpoint.port), "reconnected to the MQTT broker");
                }
                logged_down = false;
                // Subscribe from another task: the request queue may be full
                // of publishes, and this task must keep polling to drain it.
                let subscriber = client.clone();
                let wanted = filters.clone();
                tokio::spawn(async move {
                    for filter in wanted {
                        if let Err(error) =
                            subscriber.subscribe(filter.clone(), QoS::AtLeastOnce).await
                        {
                            tracing::error!(%error, %filter, "cannot subscribe");
                        }
                    }
                });
                if tx.send(Incoming::Connected).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let message = Incoming::Message {
                    topic: publish.topic.clone(),
                    payload: publish.payload.clone(),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                if !logged_down && ever_connected {
                    tracing::warn!(%error, broker = %format!("{}:{}", endpoint.host, endpoint.port), "MQTT connection lost; retrying");
                    logged_down = true;
                } else if !ever_connected && backoff.attempts() == 5 {
                    tracing::warn!(%error, broker = %format!("{}:{}", endpoint.host, endpoint.port), "cannot connect to the MQTT broker yet; still trying");
                }
                let delay = backoff.next_delay(rand::random::<f64>());
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}
