//! Interactive streams between the master and one agent: `kubectl exec`
//! (and later attach and port-forward), carried by the RPC topics.
//!
//! A session is one [`super::RpcRequest`] ID. The master opens it with
//! [`StreamCall::Exec`]; every later message the master sends for it
//! ([`StreamCall::Input`], [`StreamCall::Ack`], [`StreamCall::Resize`]) is
//! another `RpcRequest` with the *same* ID and reply topic, so the agent
//! routes it to the session. The agent answers with numbered
//! [`super::RpcResponse`]s whose body is [`StreamBody`].
//!
//! Flow control, both ways, so a fast producer never piles data up in the
//! master or the broker:
//! - output (agent -> master): the agent keeps at most
//!   [`STREAM_WINDOW`] responses unacknowledged; the master sends
//!   [`StreamCall::Ack`] with the highest response `seq` it has handed to
//!   its client;
//! - input (master -> agent): the master keeps at most [`STREAM_WINDOW`]
//!   [`StreamInput`] chunks unacknowledged; the agent answers
//!   [`StreamBody::InputAck`] once it wrote them to the process.
//!
//! The same rules as [`super::message`] hold: never reorder or retype a
//! field, add variants only at the end.

use serde::{Deserialize, Serialize};

/// Messages in flight per direction and session (each at most
/// [`super::MAX_RPC_CHUNK_BYTES`] of data).
pub const STREAM_WINDOW: u32 = 8;

/// What the master asks of a stream session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamCall {
    /// Start a command in a running container (`pods/exec`).
    Exec(ExecSpec),
    /// Bytes for the session's stdin, in order.
    Input(StreamInput),
    /// The master handed the session's responses up to `seq` to its client.
    Ack(StreamAck),
    /// The client's terminal changed size (TTY sessions).
    Resize(TerminalSize),
}

/// A command to run in a container, as `pods/exec` asks it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// The command and its arguments (no shell is involved).
    pub command: Vec<String>,
    /// The client sends stdin.
    pub stdin: bool,
    /// The client wants stdout.
    pub stdout: bool,
    /// The client wants stderr (never with `tty`: the terminal merges them).
    pub stderr: bool,
    /// Run the command on a terminal.
    pub tty: bool,
}

/// One chunk of stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInput {
    /// 0, 1, 2, ... per session, so the agent drops duplicates (QoS 1).
    pub seq: u32,
    /// The bytes; at most [`super::MAX_RPC_CHUNK_BYTES`].
    pub data: Vec<u8>,
    /// The client closed its stdin after these bytes.
    pub eof: bool,
}

/// Acknowledges the session's responses up to and including `seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAck {
    /// The highest response `seq` handed to the client.
    pub seq: u32,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// What the agent sends back on a stream session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamBody {
    /// The command runs (the first response of an exec session).
    Started,
    /// Output of the command.
    Output(StreamOutput),
    /// The agent wrote stdin up to and including the chunk `seq`.
    InputAck(StreamAck),
    /// The command ended (the last response of the session).
    Exited(ExitStatus),
}

/// A chunk of the command's output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOutput {
    /// 1 for stdout, 2 for stderr (the channel numbers of Kubernetes'
    /// stream protocols).
    pub channel: u8,
    /// The bytes; at most [`super::MAX_RPC_CHUNK_BYTES`].
    pub data: Vec<u8>,
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code (128 + the signal when a signal killed it).
    pub code: i32,
    /// Empty when the command ran; else why it could not run or was
    /// stopped, lowercase.
    pub message: String,
}
