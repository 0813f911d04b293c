//! Interactive sessions the master opens on this node (`kubectl exec`),
//! over the RPC topics ([`bramble_common::wire::stream`]).
//!
//! A session is answered only for a pod in the node's accepted desired
//! state, a container of its spec that runs now; the command runs in the
//! container through the single-threaded helper of
//! [`crate::runtime::exec`], never from this process. Output goes back in
//! numbered chunks of at most [`wire::MAX_RPC_CHUNK_BYTES`], with at most
//! [`STREAM_WINDOW`] unacknowledged by the master: past that the agent
//! stops reading the command's pipes and the command blocks, so nothing
//! piles up here, in the broker or in the master. Stdin chunks are written
//! to the command in order (duplicates dropped) and acknowledged once
//! written.
//!
//! A session ends when the command exits (its code is the last response),
//! or it is killed with everything left in its process session when the
//! master cancels it, the link drops, the agent stops, or the pod leaves the
//! node. At most [`MAX_SESSIONS`] run at once per node.

use std::process::Stdio;
use std::time::Duration;

use bramble_common::wire::{
    self, ExecSpec, ExitStatus, RpcBody, RpcRequest, StreamAck, StreamBody, StreamCall,
    StreamInput, StreamOutput, TerminalSize, STREAM_WINDOW,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tracing::debug;

use crate::rpc::{Responder, RpcContext};
use crate::runtime::exec::{self, ExecTarget};
use crate::sync::PodRuntime;

/// Sessions served at once per node; more are refused with an error.
pub const MAX_SESSIONS: usize = 8;
/// How long output is still read after the command exited (background jobs
/// may keep the pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How often a session checks that its pod is still on the node.
const POD_CHECK: Duration = Duration::from_secs(1);
/// Messages queued for a session (the master respects the window, so this
/// only absorbs acks and resizes).
pub const INBOX: usize = 2 * STREAM_WINDOW as usize + 16;

/// A message from the master for a running session.
#[derive(Debug)]
pub enum SessionInput {
    /// Stdin bytes.
    Input(StreamInput),
    /// Output acknowledged.
    Ack(StreamAck),
    /// Terminal size.
    Resize(TerminalSize),
}

impl SessionInput {
    /// The session message a [`StreamCall`] carries, if it is one (not an
    /// opening call).
    pub fn from_call(call: StreamCall) -> Option<SessionInput> {
        match call {
            StreamCall::Exec(_) => None,
            StreamCall::Input(input) => Some(SessionInput::Input(input)),
            StreamCall::Ack(ack) => Some(SessionInput::Ack(ack)),
            StreamCall::Resize(size) => Some(SessionInput::Resize(size)),
        }
    }
}

/// Serve one exec session until it ends.
pub async fn run_exec<R: PodRuntime>(
    context: RpcContext<R>,
    request: RpcRequest,
    spec: ExecSpec,
    inbox: mpsc::Receiver<SessionInput>,
) {
    let mut out = Responder::new(&context.client, &request);
    let (uid, target) = match plan(&context, &spec) {
        Ok(found) => found,
        Err(message) => {
            let _ = out.error(message).await;
            return;
        }
    };
    let result = match Session::spawn(&target, &spec) {
        Ok(session) => session.serve(&context, &uid, &mut out, inbox).await,
        Err(e) => {
            out.error(format!("cannot start the command in the container: {e}"))
                .await
        }
    };
    if let Err(e) = result {
        debug!(id = %request.id, error = %e, "exec session ended early");
    }
}

/// Check the request against the node's desired state and the runtime.
fn plan<R: PodRuntime>(
    context: &RpcContext<R>,
    spec: &ExecSpec,
) -> Result<(String, ExecTarget), String> {
    let ExecSpec {
        namespace,
        pod,
        container,
        command,
        ..
    } = spec;
    if command.is_empty() {
        return Err("you must specify at least one command for the container".into());
    }
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
        return Err(format!("container {container} is not valid for pod {pod}"));
    }
    match context.runtime.exec_target(&found.uid, container) {
        Some(target) => Ok((found.uid, target)),
        None => Err(format!("container not found ({container:?})")),
    }
}

/// The helper process of one session and its pipes.
struct Session {
    child: Child,
    shim_pid: Option<i32>,
    stdin: Option<ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    control: Option<tokio::net::unix::pipe::Sender>,
}

impl Session {
    fn spawn(target: &ExecTarget, spec: &ExecSpec) -> std::io::Result<Session> {
        use std::os::fd::AsRawFd;
        let (control_read, control_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        // Only the read end goes to the helper (under its own number); the
        // write end stays close-on-exec, so the pipe closes with us.
        nix::fcntl::fcntl(
            control_read.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(std::io::Error::from)?;
        let args = exec::session_args(target, spec.tty, control_read.as_raw_fd(), &spec.command);
        let piped = |wanted: bool| {
            if wanted {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        let mut command = tokio::process::Command::new(&target.shim_binary);
        command
            .args(&args)
            .stdin(piped(spec.stdin))
            .stdout(piped(spec.stdout || spec.tty))
            .stderr(piped(spec.stderr && !spec.tty))
            .kill_on_drop(true);
        let spawned = command.spawn();
        drop(control_read);
        let mut child = spawned?;
        let control = tokio::net::unix::pipe::Sender::from_owned_fd(control_write)?;
        Ok(Session {
            shim_pid: child.id().and_then(|p| i32::try_from(p).ok()),
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            control: Some(control),
            child,
        })
    }

    async fn serve<R: PodRuntime>(
        mut self,
        context: &RpcContext<R>,
        uid: &str,
        out: &mut Responder,
        mut inbox: mpsc::Receiver<SessionInput>,
    ) -> Result<(), String> {
        let result = self.pump(context, uid, out, &mut inbox).await;
        match result {
            Ok(code) => {
                out.send(
                    RpcBody::Stream(StreamBody::Exited(ExitStatus {
                        code,
                        message: String::new(),
                    })),
                    true,
                )
                .await
            }
            Err(why) => {
                self.kill().await;
                // Tell the master, if it still listens.
                let _ = out
                    .send(
                        RpcBody::Stream(StreamBody::Exited(ExitStatus {
                            code: 137,
                            message: why.clone(),
                        })),
                        true,
                    )
                    .await;
                Err(why)
            }
        }
    }

    /// Kill the helper and whatever is left of the command's session.
    async fn kill(&mut self) {
        self.control = None;
        if let Some(shim) = self.shim_pid {
            let leaders = exec::children_of(shim);
            let _ = tokio::task::spawn_blocking(move || {
                for leader in leaders {
                    exec::kill_session(leader);
                }
            })
            .await;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Move data until the command exits; its exit code.
    async fn pump<R: PodRuntime>(
        &mut self,
        context: &RpcContext<R>,
        uid: &str,
        out: &mut Responder,
        inbox: &mut mpsc::Receiver<SessionInput>,
    ) -> Result<i32, String> {
        let mut connection = context.connection.clone();
        out.send(RpcBody::Stream(StreamBody::Started), false)
            .await?;
        // The highest response seq the master acknowledged (+1): responses
        // below `acked` are delivered.
        let mut acked: u32 = 0;
        let mut next_input: u32 = 0;
        let mut exit: Option<i32> = None;
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut stdout_buf = vec![0u8; wire::MAX_RPC_CHUNK_BYTES];
        let mut stderr_buf = vec![0u8; wire::MAX_RPC_CHUNK_BYTES];
        let mut pod_check = tokio::time::interval(POD_CHECK);
        loop {
            if self.stdout.is_none() && self.stderr.is_none() {
                if let Some(code) = exit {
                    return Ok(code);
                }
            }
            let open = out.seq().wrapping_sub(acked) < STREAM_WINDOW;
            let deadline = drain_until
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
            tokio::select! {
                read = read_some(&mut self.stdout, &mut stdout_buf), if open && self.stdout.is_some() => {
                    match read {
                        Some(n) => out.send(RpcBody::Stream(StreamBody::Output(StreamOutput { channel: 1, data: stdout_buf[..n].to_vec() })), false).await?,
                        None => self.stdout = None,
                    }
                }
                read = read_some(&mut self.stderr, &mut stderr_buf), if open && self.stderr.is_some() => {
                    match read {
                        Some(n) => out.send(RpcBody::Stream(StreamBody::Output(StreamOutput { channel: 2, data: stderr_buf[..n].to_vec() })), false).await?,
                        None => self.stderr = None,
                    }
                }
                status = self.child.wait(), if exit.is_none() => {
                    let status = status.map_err(|e| format!("cannot wait for the command: {e}"))?;
                    exit = Some(exit_code(status));
                    drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
                () = tokio::time::sleep_until(deadline), if drain_until.is_some() => {
                    self.stdout = None;
                    self.stderr = None;
                }
                message = inbox.recv() => match message {
                    None => return Err("the session was cancelled".into()),
                    Some(SessionInput::Ack(StreamAck { seq })) => {
                        let candidate = seq.wrapping_add(1);
                        // Only move forward, and never past what was sent.
                        if candidate.wrapping_sub(acked) <= out.seq().wrapping_sub(acked) {
                            acked = candidate;
                        }
                    }
                    Some(SessionInput::Resize(size)) => {
                        if let Some(control) = self.control.as_mut() {
                            let line = format!("{} {}\n", size.width, size.height);
                            let _ = control.write_all(line.as_bytes()).await;
                        }
                    }
                    Some(SessionInput::Input(input)) => {
                        debug!(seq = input.seq, len = input.data.len(), eof = input.eof, expected = next_input, "exec stdin");
                        if input.seq != next_input {
                            // A duplicate (QoS 1, or resent because an ack was
                            // lost): acknowledge again what was written. One
                            // from the future (one before it was lost on the
                            // way): drop it, the master resends from the gap.
                            let behind = next_input.wrapping_sub(input.seq);
                            if behind != 0 && behind <= STREAM_WINDOW * 4 && next_input != 0 {
                                out.send(RpcBody::Stream(StreamBody::InputAck(StreamAck { seq: next_input.wrapping_sub(1) })), false).await?;
                            }
                            continue;
                        }
                        next_input = next_input.wrapping_add(1);
                        if let Some(stdin) = self.stdin.as_mut() {
                            if !input.data.is_empty() && stdin.write_all(&input.data).await.is_err() {
                                self.stdin = None;
                            }
                        }
                        if input.eof {
                            self.stdin = None;
                        }
                        out.send(RpcBody::Stream(StreamBody::InputAck(StreamAck { seq: input.seq })), false).await?;
                    }
                },
                changed = connection.changed() => {
                    if changed.is_err() || !connection.borrow_and_update().connected {
                        return Err("the link to the master dropped".into());
                    }
                }
                _ = pod_check.tick() => {
                    let on_node = context.desired.borrow().as_deref().is_some_and(|d| d.pods.iter().any(|p| p.uid == uid));
                    if !on_node {
                        return Err("the pod left the node".into());
                    }
                }
            }
        }
    }
}

/// Read what is available; `None` at the end (or on an error).
async fn read_some<T: AsyncRead + Unpin>(pipe: &mut Option<T>, buf: &mut [u8]) -> Option<usize> {
    let pipe = pipe.as_mut()?;
    match pipe.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
