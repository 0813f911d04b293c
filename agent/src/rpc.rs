//! Answers the master's RPC requests: the logs of a container, for
//! `bramble logs` and `kubectl logs`, and the interactive sessions of
//! `kubectl exec` ([`crate::stream`]).
//!
//! A request names a pod by namespace and name; it is answered only for a
//! pod in the node's accepted desired state and a container of its spec, so
//! a request cannot read any other file. The log records go back as they
//! are stored (CRI format) in chunks of at most
//! [`wire::MAX_RPC_CHUNK_BYTES`], numbered, the last one marked; the
//! master turns them into text. A follow request keeps sending what the
//! container writes until the container ends, the pod leaves the node, the
//! master cancels it ([`RpcCall::Cancel`]), the link drops or the agent
//! stops. At most [`MAX_STREAMS`] requests are served at once. Answers go
//! only to the protocol's response topic of the request's ID
//! (`bramble/{cluster}/rpc/resp/{id}`): a request naming another reply
//! topic is dropped, so it cannot make the agent publish elsewhere.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bramble_common::wire::{
    self, Message, NodeDesired, RpcBody, RpcCall, RpcRequest, RpcResponse, StreamCall,
};
use rumqttc::{AsyncClient, QoS};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::link::Connection;
use crate::runtime::logs;
use crate::shutdown::Shutdown;
use crate::stream::{self, SessionInput};
use crate::sync::{LogLocation, PodRuntime, SyncSnapshot};

/// Requests served at once; more are answered with an error.
pub const MAX_STREAMS: usize = 8;
/// How often a follow request looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What answering requests needs from the node's agent.
pub struct RpcContext<R> {
    /// The cluster's name (the response topics).
    pub cluster: String,
    /// The node's name (for messages).
    pub node: String,
    /// Publishes the responses.
    pub client: AsyncClient,
    /// Where the containers' logs are.
    pub runtime: Arc<R>,
    /// The desired state the agent accepted.
    pub desired: watch::Receiver<Option<Arc<NodeDesired>>>,
    /// The sync loop's latest statuses (when a container ended).
    pub snapshots: watch::Receiver<SyncSnapshot>,
    /// The link's state: streams stop when it drops.
    pub connection: watch::Receiver<Connection>,
}

impl<R> Clone for RpcContext<R> {
    fn clone(&self) -> Self {
        RpcContext {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
            client: self.client.clone(),
            runtime: Arc::clone(&self.runtime),
            desired: self.desired.clone(),
            snapshots: self.snapshots.clone(),
            connection: self.connection.clone(),
        }
    }
}

/// Serve `requests` until they end or `shutdown`.
pub async fn serve<R: PodRuntime>(
    mut requests: mpsc::Receiver<RpcRequest>,
    context: RpcContext<R>,
    mut shutdown: Shutdown,
) {
    let mut active: HashMap<String, AbortHandle> = HashMap::new();
    let mut sessions: HashMap<String, (mpsc::Sender<SessionInput>, AbortHandle)> = HashMap::new();
    loop {
        let request = tokio::select! {
            request = requests.recv() => request,
            _ = shutdown.wait() => None,
        };
        let Some(request) = request else { break };
        let expected = wire::rpc_response_topic(&context.cluster, &request.id);
        if expected.as_deref() != Ok(request.reply_topic.as_str()) {
            warn!(id = %request.id, reply_topic = %request.reply_topic, "dropped an rpc request whose reply topic is not its response topic");
            continue;
        }
        active.retain(|_, handle| !handle.is_finished());
        sessions.retain(|_, (_, handle)| !handle.is_finished());
        match request.call.clone() {
            RpcCall::Cancel { id } => {
                if let Some(handle) = active.remove(&id) {
                    debug!(%id, "rpc request cancelled");
                    handle.abort();
                }
                // Dropping the inbox ends the session (and kills its command).
                if sessions.remove(&id).is_some() {
                    debug!(%id, "stream session cancelled");
                }
            }
            RpcCall::Stream(StreamCall::Exec(spec)) => {
                if sessions.contains_key(&request.id) {
                    continue;
                }
                if sessions.len() >= stream::MAX_SESSIONS {
                    let mut out = Responder::new(&context.client, &request);
                    let message = format!(
                        "node {} is already serving {} exec sessions; close one and retry",
                        context.node,
                        stream::MAX_SESSIONS
                    );
                    let _ = out.error(message).await;
                    continue;
                }
                let id = request.id.clone();
                let (tx, rx) = mpsc::channel(stream::INBOX);
                let task = tokio::spawn(stream::run_exec(context.clone(), request, spec, rx));
                sessions.insert(id, (tx, task.abort_handle()));
            }
            RpcCall::Stream(call) => {
                let Some(input) = SessionInput::from_call(call) else {
                    continue;
                };
                if let Some((tx, _)) = sessions.get(&request.id) {
                    if tx.try_send(input).is_err() {
                        warn!(id = %request.id, "a stream session's inbox is full; the master broke the window");
                    }
                }
            }
            RpcCall::Logs { .. } if active.len() >= MAX_STREAMS => {
                let mut out = Responder::new(&context.client, &request);
                let message = format!(
                    "node {} is already serving {MAX_STREAMS} log requests; close one and retry",
                    context.node
                );
                let _ = out.error(message).await;
            }
            RpcCall::Logs { .. } => {
                let id = request.id.clone();
                let task = tokio::spawn(answer_logs(context.clone(), request));
                active.insert(id, task.abort_handle());
            }
        }
    }
    for handle in active.values() {
        handle.abort();
    }
    // Each session kills its command when its inbox closes; give them a
    // moment to do it before the runtime goes away.
    let handles: Vec<AbortHandle> = sessions.into_values().map(|(_, handle)| handle).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while handles.iter().any(|h| !h.is_finished()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes the numbered responses to one request.
pub(crate) struct Responder {
    client: AsyncClient,
    topic: String,
    id: String,
    seq: u32,
}

impl Responder {
    pub(crate) fn new(client: &AsyncClient, request: &RpcRequest) -> Responder {
        Responder {
            client: client.clone(),
            topic: request.reply_topic.clone(),
            id: request.id.clone(),
            seq: 0,
        }
    }

    /// The `seq` of the next response.
    pub(crate) fn seq(&self) -> u32 {
        self.seq
    }

    pub(crate) async fn send(&mut self, body: RpcBody, last: bool) -> Result<(), String> {
        let message = Message::RpcResponse(RpcResponse {
            id: self.id.clone(),
            seq: self.seq,
            last,
            body,
        });
        let payload = wire::encode(&message).map_err(|e| e.to_string())?;
        self.seq = self.seq.wrapping_add(1);
        // Waiting here is fine: this task is not the link's poller.
        self.client
            .publish(self.topic.clone(), QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| e.to_string())
    }

    async fn data(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.send(RpcBody::LogChunk { data }, false).await
    }

    async fn end(&mut self) -> Result<(), String> {
        self.send(RpcBody::LogChunk { data: Vec::new() }, true)
            .await
    }

    pub(crate) async fn error(&mut self, message: String) -> Result<(), String> {
        self.send(RpcBody::Error { message }, true).await
    }
}

/// What a log request reads, once checked.
#[derive(Debug)]
struct LogPlan {
    uid: String,
    container: String,
    /// The files to send, oldest first, and where to start in the first.
    files: Vec<PathBuf>,
    start: (usize, u64),
    /// The live file to keep reading, for a follow request.
    follow: Option<PathBuf>,
}

async fn answer_logs<R: PodRuntime>(context: RpcContext<R>, request: RpcRequest) {
    let mut out = Responder::new(&context.client, &request);
    let result = match plan_logs(&context, &request.call) {
        Ok(plan) => send_logs(&context, &mut out, plan).await,
        Err(message) => out.error(message).await,
    };
    if let Err(e) = result {
        debug!(id = %request.id, error = %e, "log request ended early");
    }
}

fn plan_logs<R: PodRuntime>(context: &RpcContext<R>, call: &RpcCall) -> Result<LogPlan, String> {
    let RpcCall::Logs {
        namespace,
        pod,
        container,
        tail_lines,
        previous,
        follow,
        ..
    } = call
    else {
        return Err("not a log request".into());
    };
    let desired = context.desired.borrow().clone();
    let found = desired
        .as_deref()
        .and_then(|d| {
            d.pods
                .iter()
                .find(|p| p.namespace == *namespace && p.name == *pod)
        })
        .cloned();
    let Some(found) = found else {
        return Err(format!(
            "pod {namespace}/{pod} is not on node {} (it may have just moved or been deleted)",
            context.node
        ));
    };
    let spec = found
        .spec()
        .map_err(|e| format!("pod {namespace}/{pod} cannot be read on the node: {e}"))?;
    let known = spec
        .init_containers
        .iter()
        .chain(spec.containers.iter())
        .any(|c| c.name == *container);
    if !known {
        return Err(format!(
            "container {container} is not valid for pod {namespace}/{pod}"
        ));
    }
    let live = match context.runtime.container_log(&found.uid, container) {
        LogLocation::At(path) => path,
        LogLocation::NotStarted => {
            return Err(format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start"
            ))
        }
        LogLocation::NotKept => {
            return Err(format!(
                "node {} runs the simulated runtime (bramble-agent --runtime sim), which keeps no container logs",
                context.node
            ))
        }
    };
    let path = if *previous {
        logs::previous_log_path(&live)
    } else {
        live.clone()
    };
    let files = logs::log_files(&path);
    if *previous && files.is_empty() {
        return Err(format!(
            "previous terminated container \"{container}\" in pod \"{pod}\" not found"
        ));
    }
    let start = match tail_lines {
        Some(lines) => logs::tail_start(&files, *lines)
            .map_err(|e| format!("cannot read the log of container {container}: {e}"))?,
        None => (0, 0),
    };
    Ok(LogPlan {
        uid: found.uid,
        container: container.clone(),
        files,
        start,
        follow: (*follow && !*previous).then_some(live),
    })
}

/// Reads `file` from `offset` to its end, sending it in chunks; returns
/// the offset reached.
async fn send_from(
    out: &mut Responder,
    file: &mut tokio::fs::File,
    mut offset: u64,
) -> Result<u64, String> {
    let mut buf = vec![0u8; wire::MAX_RPC_CHUNK_BYTES];
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(offset);
        }
        offset += n as u64;
        out.data(buf[..n].to_vec()).await?;
    }
}

async fn send_logs<R: PodRuntime>(
    context: &RpcContext<R>,
    out: &mut Responder,
    plan: LogPlan,
) -> Result<(), String> {
    let (first, first_offset) = plan.start;
    let mut live: Option<(tokio::fs::File, u64)> = None;
    for (index, path) in plan.files.iter().enumerate().skip(first) {
        let offset = if index == first { first_offset } else { 0 };
        let mut file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            // Rotated away while we read: its records are in the next file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return out.error(format!("cannot read the log: {e}")).await,
        };
        let reached = send_from(out, &mut file, offset).await?;
        if Some(path) == plan.follow.as_ref() {
            live = Some((file, reached));
        }
    }
    let Some(live_path) = plan.follow else {
        return out.end().await;
    };
    let mut connection = context.connection.clone();
    loop {
        if !connection.borrow_and_update().connected {
            return Err("the link dropped".into());
        }
        if let Some((file, offset)) = live.as_mut() {
            *offset = send_from(out, file, *offset).await?;
        }
        if rotated(&live_path, live.as_ref().map(|(f, _)| f)).await {
            // Drain the old file, then continue with the new one.
            if let Some((file, offset)) = live.as_mut() {
                send_from(out, file, *offset).await?;
            }
            live = match tokio::fs::File::open(&live_path).await {
                Ok(file) => Some((file, 0)),
                Err(_) => None,
            };
            continue;
        }
        if follow_is_over(context, &plan.uid, &plan.container) {
            if let Some((file, offset)) = live.as_mut() {
                send_from(out, file, *offset).await?;
            }
            return out.end().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = connection.changed() => {}
        }
    }
}

/// True when the file at `path` is not the one open (rotated, or created
/// since the request began).
async fn rotated(path: &Path, open: Option<&tokio::fs::File>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(on_disk) = tokio::fs::metadata(path).await else {
        return false;
    };
    let Some(open) = open else {
        return true;
    };
    match open.metadata().await {
        Ok(meta) => meta.ino() != on_disk.ino() || meta.dev() != on_disk.dev(),
        Err(_) => true,
    }
}

/// A follow request ends when its pod left the node or its container ended.
fn follow_is_over<R>(context: &RpcContext<R>, uid: &str, container: &str) -> bool {
    let on_node = context
        .desired
        .borrow()
        .as_deref()
        .is_some_and(|d| d.pods.iter().any(|p| p.uid == uid));
    if !on_node {
        return true;
    }
    let snapshot = context.snapshots.borrow();
    let Some(report) = snapshot.pods.iter().find(|p| p.uid == uid) else {
        return false;
    };
    let Ok(status) = report.status() else {
        warn!(%uid, "cannot read the pod's status while following its log");
        return false;
    };
    status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .find(|c| c.name == container)
        .is_some_and(|c| c.state.terminated.is_some())
}
