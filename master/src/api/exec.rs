//! `pods/exec`: `kubectl exec` over the WebSocket stream protocols of
//! Kubernetes (`v5.channel.k8s.io`, `v4.channel.k8s.io`), relayed to the
//! pod's node over an RPC stream session ([`bramble_common::wire::stream`]).
//!
//! The request is checked as kube-apiserver checks it (the pod exists, is
//! not completed, is bound, the container is one of its own), then the node
//! starts the command *before* the WebSocket upgrade, so a container that
//! does not run is an HTTP error as the kubelet gives it, not a broken
//! stream. Each binary message starts with its channel: 0 stdin, 1 stdout,
//! 2 stderr, 3 the error channel (a `metav1.Status` with the exit code, as
//! the kubelet writes it: reason `NonZeroExitCode`, cause `ExitCode`),
//! 4 terminal resize (`{"Width":W,"Height":H}`), and in v5, 255 to close a
//! stream (`[255, 0]`: end of stdin).
//!
//! Flow control: output is acknowledged to the node only once written to
//! the client's socket, and the client's socket is read only while fewer
//! than [`STREAM_WINDOW`] stdin chunks are unacknowledged by the node, so
//! neither direction buffers more than a window here or in the broker.
//! When the client goes away, the session is cancelled and the node kills
//! the command.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bramble_common::api::Pod;
use bramble_common::wire::{
    ExecSpec, ExitStatus, RpcBody, RpcCall, StreamAck, StreamBody, StreamCall, StreamInput,
    TerminalSize, MAX_RPC_CHUNK_BYTES, STREAM_WINDOW,
};
use bramble_common::Kind;
use serde_json::json;

use super::error::ApiError;
use super::ApiState;
use crate::rpc::{RpcError, RpcStream};
use crate::store::ObjectKey;

/// How long the node has to start the command.
const FIRST_ANSWER: Duration = Duration::from_secs(10);
/// The stream protocols served, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// Largest WebSocket message accepted from a client (kubectl sends at most
/// 32 KiB of stdin per message).
const MAX_CLIENT_MESSAGE: usize = 1024 * 1024;

/// How long without any answer from the node before unacknowledged stdin
/// (and the last output ack) is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(1);
/// How long the client has to answer the close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Channel numbers of the stream protocols.
mod channel {
    pub const STDIN: u8 = 0;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const CLOSE: u8 = 255;
}

/// What an exec request asks, from its query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecQuery {
    /// `command`, repeated: the command and its arguments.
    pub command: Vec<String>,
    /// `container`.
    pub container: Option<String>,
    /// `stdin`.
    pub stdin: bool,
    /// `stdout`.
    pub stdout: bool,
    /// `stderr`.
    pub stderr: bool,
    /// `tty`.
    pub tty: bool,
}

impl ExecQuery {
    /// Read the raw query string (`command` repeats), refusing what
    /// kube-apiserver refuses.
    pub fn parse(raw: Option<&str>) -> Result<ExecQuery, ApiError> {
        let mut query = ExecQuery::default();
        let mut flags: HashMap<String, String> = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (
                super::handlers::percent_decode(k),
                super::handlers::percent_decode(v),
            );
            match k.as_str() {
                "command" => query.command.push(v),
                "container" => query.container = Some(v).filter(|c| !c.is_empty()),
                _ => {
                    flags.insert(k, v);
                }
            }
        }
        let flag = |name: &str| -> Result<bool, ApiError> {
            match flags.get(name).map(String::as_str) {
                None | Some("false" | "0") => Ok(false),
                Some("" | "true" | "1") => Ok(true),
                Some(other) => Err(ApiError::bad_request(format!(
                    "{name}: {other:?} is not a boolean (use true or false)"
                ))),
            }
        };
        query.stdin = flag("stdin")?;
        query.stdout = flag("stdout")?;
        query.stderr = flag("stderr")?;
        query.tty = flag("tty")?;
        if query.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !(query.stdin || query.stdout || query.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(query)
    }
}

/// The error-channel status the kubelet writes for an exit code.
pub fn exit_status_json(command: &[String], status: &ExitStatus) -> serde_json::Value {
    if !status.message.is_empty() {
        return json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("error executing command in container: {}", status.message),
            "reason": "InternalError",
            "code": 500,
        });
    }
    if status.code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {}",
            command.join(" "),
            status.code
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": status.code.to_string()}]},
    })
}

/// Serve an exec request (`GET` or `POST` with a WebSocket upgrade).
pub async fn serve(
    state: &Arc<ApiState>,
    namespace: &str,
    name: &str,
    request: Request<axum::body::Body>,
) -> Result<Response, ApiError> {
    let query = ExecQuery::parse(request.uri().query())?;
    let key = ObjectKey {
        kind: Kind::Pod,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let object = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let pod: Pod = serde_json::from_value(object)
        .map_err(|e| ApiError::internal(format!("the stored pod cannot be read: {e}")))?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    if let Some(phase @ ("Succeeded" | "Failed")) = phase.as_deref() {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let container = super::logs::choose_container(&pod, name, query.container.as_deref())?;
    let Some(node) = pod.spec.node_name.clone().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let wants_websocket = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_websocket {
        return Err(ApiError::bad_request(
            "bramble serves exec over WebSocket only (v5.channel.k8s.io or v4.channel.k8s.io); upgrade the connection with Sec-WebSocket-Protocol",
        ));
    }
    let (mut parts, _body) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("not a valid WebSocket upgrade: {e}")))?;
    let offered: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let Some(protocol) = PROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .copied()
    else {
        return Err(ApiError::bad_request(format!(
            "none of the offered stream protocols ({}) is supported; use one of: {}",
            offered.join(", "),
            PROTOCOLS.join(", ")
        )));
    };
    let spec = ExecSpec {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        container,
        command: query.command.clone(),
        stdin: query.stdin,
        stdout: query.stdout,
        stderr: query.stderr && !query.tty,
        tty: query.tty,
    };
    let stream = match state
        .rpc
        .call(&node, RpcCall::Stream(StreamCall::Exec(spec)), FIRST_ANSWER)
        .await
    {
        Ok(stream) => stream,
        // The kubelet's answer for a container that does not run.
        Err(RpcError::Remote(message)) if message.starts_with("container not found") => {
            return Ok((
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response());
        }
        Err(RpcError::Remote(message)) => return Err(ApiError::bad_request(message)),
        Err(other) => return Err(ApiError::service_unavailable(other.to_string())),
    };
    let v5 = protocol == PROTOCOLS[0];
    let command = query.command;
    Ok(upgrade
        .protocols(PROTOCOLS)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            if let Err(error) = relay(socket, stream, v5, &command).await {
                tracing::debug!(%error, "an exec session ended early");
            }
        }))
}

/// Write the exit status on the error channel and close the socket
/// cleanly: send a close frame, then read (and drop) what the client still
/// sends until its own close frame, so unread stdin never turns the close
/// into a reset that could lose the status.
async fn finish(socket: &mut WebSocket, command: &[String], status: &ExitStatus) {
    let body = serde_json::to_vec(&exit_status_json(command, status)).unwrap_or_default();
    let _ = socket.send(framed(channel::ERROR, &body)).await;
    let close = WsMessage::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }));
    if socket.send(close).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, WsMessage::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn framed(channel: u8, data: &[u8]) -> WsMessage {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    WsMessage::Binary(message.into())
}

/// Move bytes between the client's socket and the node until the command
/// ends or either side goes away.
async fn relay(
    mut socket: WebSocket,
    mut stream: RpcStream,
    v5: bool,
    command: &[String],
) -> Result<(), String> {
    // Output: how many responses were handed to the client when the node
    // was last told.
    let mut acked: u32 = 0;
    // Input: chunks sent to the node, and how many it acknowledged.
    let mut sent: u32 = 0;
    let mut input_acked: u32 = 0;
    let mut stdin_closed = false;
    // Sent and not yet acknowledged, resent when the node makes no progress
    // (a message lost on the way, e.g. a full queue on a busy device).
    let mut unacked: VecDeque<StreamInput> = VecDeque::new();
    let mut progress = false;
    let mut resend = tokio::time::interval(RESEND_AFTER);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let input_open = sent.wrapping_sub(input_acked) < STREAM_WINDOW;
        tokio::select! {
            _ = resend.tick() => {
                if !std::mem::take(&mut progress) {
                    for input in &unacked {
                        stream.send_stream(StreamCall::Input(input.clone())).await.map_err(|e| e.to_string())?;
                    }
                    if acked > 0 {
                        stream.send_stream(StreamCall::Ack(StreamAck { seq: acked.wrapping_sub(1) })).await.map_err(|e| e.to_string())?;
                    }
                }
            }
            response = stream.next_response() => {
                let response = match response {
                    Some(Ok(response)) => response,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the node ended the session".into()),
                };
                let delivered = response.seq.wrapping_add(1);
                progress = true;
                match response.body {
                    RpcBody::Stream(StreamBody::Output(output)) => {
                        socket.send(framed(output.channel, &output.data)).await.map_err(|e| e.to_string())?;
                    }
                    RpcBody::Stream(StreamBody::InputAck(StreamAck { seq })) => {
                        let candidate = seq.wrapping_add(1);
                        if candidate.wrapping_sub(input_acked) <= sent.wrapping_sub(input_acked) {
                            input_acked = candidate;
                        }
                        while unacked.front().is_some_and(|i| input_acked.wrapping_sub(i.seq).wrapping_sub(1) < STREAM_WINDOW * 4) {
                            unacked.pop_front();
                        }
                    }
                    RpcBody::Stream(StreamBody::Started) => {}
                    RpcBody::Stream(StreamBody::Exited(status)) => {
                        finish(&mut socket, command, &status).await;
                        return Ok(());
                    }
                    RpcBody::Error { message } => {
                        let status = ExitStatus { code: 1, message };
                        finish(&mut socket, command, &status).await;
                        return Ok(());
                    }
                    RpcBody::LogChunk { .. } => {}
                }
                if delivered.wrapping_sub(acked) >= STREAM_WINDOW / 2 {
                    stream.send_stream(StreamCall::Ack(StreamAck { seq: delivered.wrapping_sub(1) })).await.map_err(|e| e.to_string())?;
                    acked = delivered;
                }
            }
            message = socket.recv(), if input_open => {
                let data = match message {
                    Some(Ok(WsMessage::Binary(data))) => data,
                    Some(Ok(WsMessage::Close(_))) | None => return Err("the client went away".into()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(format!("the client's stream broke: {e}")),
                };
                let Some((&channel, payload)) = data.split_first() else { continue };
                match channel {
                    channel::STDIN if !stdin_closed => {
                        for chunk in payload.chunks(MAX_RPC_CHUNK_BYTES) {
                            let input = StreamInput { seq: sent, data: chunk.to_vec(), eof: false };
                            stream.send_stream(StreamCall::Input(input.clone())).await.map_err(|e| e.to_string())?;
                            unacked.push_back(input);
                            sent = sent.wrapping_add(1);
                        }
                    }
                    channel::RESIZE => {
                        #[derive(serde::Deserialize)]
                        #[serde(rename_all = "PascalCase")]
                        struct Size { width: u16, height: u16 }
                        if let Ok(size) = serde_json::from_slice::<Size>(payload) {
                            stream.send_stream(StreamCall::Resize(TerminalSize { width: size.width, height: size.height })).await.map_err(|e| e.to_string())?;
                        }
                    }
                    channel::CLOSE if v5 && payload.first() == Some(&channel::STDIN) && !stdin_closed => {
                        stdin_closed = true;
                        let input = StreamInput { seq: sent, data: Vec::new(), eof: true };
                        stream.send_stream(StreamCall::Input(input.clone())).await.map_err(|e| e.to_string())?;
                        unacked.push_back(input);
                        sent = sent.wrapping_add(1);
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn query_keeps_every_command_word() {
        let q = ExecQuery::parse(Some(
            "command=sh&command=-c&command=echo%20hi%20%26%26%20exit%203&container=web&stdin=true&stdout=true&tty=true",
        ))
        .unwrap();
        assert_eq!(q.command, ["sh", "-c", "echo hi && exit 3"]);
        assert_eq!(q.container.as_deref(), Some("web"));
        assert!(q.stdin && q.stdout && q.tty && !q.stderr);
        let e = ExecQuery::parse(Some("stdout=true")).unwrap_err();
        assert_eq!(
            e.0.message,
            "you must specify at least one command for the container"
        );
        let e = ExecQuery::parse(Some("command=ls")).unwrap_err();
        assert_eq!(
            e.0.message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(ExecQuery::parse(Some("command=ls&stdout=maybe")).is_err());
    }

    #[test]
    fn exit_codes_are_reported_as_the_kubelet_does() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(
            exit_status_json(
                &cmd,
                &ExitStatus {
                    code: 0,
                    message: String::new()
                }
            ),
            json!({"metadata": {}, "status": "Success"})
        );
        let failed = exit_status_json(
            &cmd,
            &ExitStatus {
                code: 3,
                message: String::new(),
            },
        );
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
    }
}
