//! Requests from the master to one agent, answered in a stream of numbered
//! responses (protocol v1: `bramble/{cluster}/nodes/{node}/rpc/req` and
//! `bramble/{cluster}/rpc/resp/{id}`): container logs, and the stream
//! sessions of exec ([`RpcStream::send_stream`], [`RpcStream::next_response`]).
//!
//! The hub has an MQTT session of its own (client ID
//! `bramble-master-{cluster}-rpc`), so a long log stream never waits behind
//! dispatch, nor dispatch behind it. Each call gets a random ID; responses
//! for unknown IDs (late, duplicated, or forged) are dropped. A call's
//! responses are put back in order and duplicates (QoS 1 may deliver twice)
//! skipped. Dropping an unfinished [`RpcStream`] tells the agent to stop
//! ([`RpcCall::Cancel`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_common::wire::{
    self, Message, RpcBody, RpcCall, RpcRequest, RpcResponse, StreamCall, Topic,
};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use crate::dispatch::session::{self, Incoming};
use crate::dispatch::MqttEndpoint;

/// Responses buffered per call before the hub waits for its reader.
const CALL_BUFFER: usize = 64;
/// Responses kept while an earlier one is missing.
const MAX_OUT_OF_ORDER: usize = 256;
/// How long the hub waits for a slow reader before giving the call up.
const SLOW_READER: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The agent did not answer in time.
    #[error("node {node} did not answer within {seconds} s: is its agent running and connected? (bramble get node {node})")]
    Timeout {
        /// The node asked.
        node: String,
        /// The time waited.
        seconds: u64,
    },
    /// The agent answered with an error.
    #[error("{0}")]
    Remote(String),
    /// The request could not be sent, or the answer was cut short.
    #[error("{0}")]
    Transport(String),
}

type Pending = Arc<Mutex<HashMap<String, mpsc::Sender<RpcResponse>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends requests to agents and routes their responses back.
#[derive(Debug)]
pub struct RpcHub {
    cluster: String,
    client: AsyncClient,
    pending: Pending,
}

impl RpcHub {
    /// Connect to the broker with the master's credentials and start routing
    /// responses; the session ends with `shutdown`.
    pub fn start(
        endpoint: &MqttEndpoint,
        cluster: &str,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<RpcHub>, String> {
        let filter = wire::rpc_response_filter(cluster).map_err(|e| e.to_string())?;
        let mut endpoint = endpoint.clone();
        endpoint.client_id = format!("{}-rpc", endpoint.client_id);
        let (client, incoming) = session::start(&endpoint, vec![filter]);
        let pending: Pending = Arc::default();
        tokio::spawn(route(incoming, Arc::clone(&pending), shutdown));
        Ok(Arc::new(RpcHub {
            cluster: cluster.to_string(),
            client,
            pending,
        }))
    }

    /// Send `call` to `node`'s agent. The stream yields the data of each
    /// response; `first_answer` bounds the wait for the first one.
    pub async fn call(
        self: &Arc<Self>,
        node: &str,
        call: RpcCall,
        first_answer: Duration,
    ) -> Result<RpcStream, RpcError> {
        let id = uuid::Uuid::new_v4().to_string();
        let request_topic = wire::rpc_request_topic(&self.cluster, node)
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let reply_topic = wire::rpc_response_topic(&self.cluster, &id)
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let payload = wire::encode(&Message::RpcRequest(RpcRequest {
            id: id.clone(),
            reply_topic,
            call,
        }))
        .map_err(|e| RpcError::Transport(e.to_string()))?;
        let (tx, rx) = mpsc::channel(CALL_BUFFER);
        lock(&self.pending).insert(id.clone(), tx);
        let mut stream = RpcStream {
            hub: Arc::clone(self),
            node: node.to_string(),
            id,
            rx,
            next_seq: 0,
            early: BTreeMap::new(),
            done: false,
        };
        self.client
            .publish(request_topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| {
                RpcError::Transport(format!("cannot send the request to node {node}: {e}"))
            })?;
        stream.first(first_answer).await?;
        Ok(stream)
    }

    fn cancel(&self, node: &str, id: &str) {
        lock(&self.pending).remove(id);
        let (Ok(topic), Ok(reply_topic)) = (
            wire::rpc_request_topic(&self.cluster, node),
            wire::rpc_response_topic(&self.cluster, id),
        ) else {
            return;
        };
        // The agent accepts a request only on its own ID's response topic:
        // the cancel travels under the ID it cancels.
        let message = Message::RpcRequest(RpcRequest {
            id: id.to_string(),
            reply_topic,
            call: RpcCall::Cancel { id: id.to_string() },
        });
        if let Ok(payload) = wire::encode(&message) {
            if let Err(error) = self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
            {
                tracing::debug!(%error, %node, "cannot send a cancel");
            }
        }
    }
}

/// Routes each response to its call.
async fn route(
    mut incoming: mpsc::Receiver<Incoming>,
    pending: Pending,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            message = incoming.recv() => message,
            () = &mut shutdown => return,
        };
        let (topic, payload) = match message {
            Some(Incoming::Message { topic, payload }) => (topic, payload),
            Some(Incoming::Connected) => continue,
            None => return,
        };
        let Some(Topic::RpcResponse { id, .. }) = wire::parse_topic(&topic) else {
            continue;
        };
        let response = match wire::decode(&payload) {
            Ok(Message::RpcResponse(response)) if response.id == id => response,
            Ok(_) => {
                tracing::debug!(%topic, "dropped a message that is not the response it claims to be");
                continue;
            }
            Err(error) => {
                tracing::debug!(%topic, %error, "dropped an undecodable rpc response");
                continue;
            }
        };
        let Some(tx) = lock(&pending).get(&id).cloned() else {
            continue;
        };
        match tokio::time::timeout(SLOW_READER, tx.send(response)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                lock(&pending).remove(&id);
            }
            Err(_) => {
                tracing::warn!(%id, "an rpc reader fell behind for 30 s; its call was dropped");
                lock(&pending).remove(&id);
            }
        }
    }
}

/// The answer to one call, in order.
#[derive(Debug)]
pub struct RpcStream {
    hub: Arc<RpcHub>,
    node: String,
    id: String,
    rx: mpsc::Receiver<RpcResponse>,
    next_seq: u32,
    /// Responses that arrived before their turn.
    early: BTreeMap<u32, RpcResponse>,
    done: bool,
}

impl RpcStream {
    /// Wait for the first response and keep it for [`RpcStream::next`];
    /// fail on an error response or when none comes in time.
    async fn first(&mut self, wait: Duration) -> Result<(), RpcError> {
        let response = match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(RpcError::Transport("the rpc session ended".into())),
            Err(_) => {
                return Err(RpcError::Timeout {
                    node: self.node.clone(),
                    seconds: wait.as_secs(),
                })
            }
        };
        if let RpcBody::Error { message } = &response.body {
            self.done = true;
            return Err(RpcError::Remote(message.clone()));
        }
        self.early.insert(response.seq, response);
        Ok(())
    }

    /// The next chunk of data, `None` at the end. An error response or a
    /// session that ended is an error.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, RpcError>> {
        loop {
            match self.next_response().await? {
                Err(e) => return Some(Err(e)),
                Ok(response) => match response.body {
                    RpcBody::LogChunk { data } if data.is_empty() => continue,
                    RpcBody::LogChunk { data } => return Some(Ok(data)),
                    RpcBody::Error { message } => return Some(Err(RpcError::Remote(message))),
                    RpcBody::Stream(_) => {
                        self.done = true;
                        return Some(Err(RpcError::Transport(format!(
                            "node {} answered a log request with a stream session",
                            self.node
                        ))));
                    }
                },
            }
        }
    }

    /// The ID of the call (a stream session's ID).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Send a follow-up message of this call's stream session to the node
    /// (same ID and reply topic as the call).
    pub async fn send_stream(&self, call: StreamCall) -> Result<(), RpcError> {
        let request_topic = wire::rpc_request_topic(&self.hub.cluster, &self.node)
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let reply_topic = wire::rpc_response_topic(&self.hub.cluster, &self.id)
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let payload = wire::encode(&Message::RpcRequest(RpcRequest {
            id: self.id.clone(),
            reply_topic,
            call: RpcCall::Stream(call),
        }))
        .map_err(|e| RpcError::Transport(e.to_string()))?;
        self.hub
            .client
            .publish(request_topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| RpcError::Transport(format!("cannot reach node {}: {e}", self.node)))
    }

    /// The next response in order, whatever its body; `None` after the last.
    /// An error body ends the call; a session that ended is an error.
    pub async fn next_response(&mut self) -> Option<Result<RpcResponse, RpcError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(response) = self.early.remove(&self.next_seq) {
                self.next_seq = self.next_seq.wrapping_add(1);
                if response.last || matches!(response.body, RpcBody::Error { .. }) {
                    self.done = true;
                }
                return Some(Ok(response));
            }
            match self.rx.recv().await {
                Some(response) if response.seq >= self.next_seq => {
                    if self.early.len() >= MAX_OUT_OF_ORDER {
                        self.done = true;
                        return Some(Err(RpcError::Transport(format!(
                            "node {} sent {MAX_OUT_OF_ORDER} responses out of order; the answer was dropped",
                            self.node
                        ))));
                    }
                    self.early.insert(response.seq, response);
                }
                // A duplicate (QoS 1).
                Some(_) => {}
                None => {
                    self.done = true;
                    return Some(Err(RpcError::Transport(format!(
                        "node {} stopped answering",
                        self.node
                    ))));
                }
            }
        }
    }
}

impl Drop for RpcStream {
    fn drop(&mut self) {
        if self.done {
            lock(&self.hub.pending).remove(&self.id);
        } else {
            self.hub.cancel(&self.node, &self.id);
        }
    }
}
