//! Liveness, readiness and startup probes: a pure tracker of consecutive
//! results and timing, and the three probe actions (exec inside the
//! container through `bramble-agent shim exec`, httpGet and tcpSocket from
//! inside the pod's netns).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bramble_common::api::{Container, Probe};
use bramble_common::meta::IntOrString;

/// The result of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Passed.
    Success,
    /// Failed, with why.
    Failure(String),
}

/// Timing and consecutive results of one probe of one container.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    initial_delay: Duration,
    period: Duration,
    /// Per-run timeout.
    pub timeout: Duration,
    failure_threshold: u32,
    success_threshold: u32,
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
    /// Current verdict: `Some(true)` passed, `Some(false)` failed, `None` unknown.
    pub verdict: Option<bool>,
    /// Message of the last failure.
    pub last_failure: Option<String>,
}

impl ProbeTracker {
    /// A tracker for `probe` with Kubernetes' defaults.
    pub fn new(probe: &Probe) -> ProbeTracker {
        let secs = |v: Option<i64>, d: i64| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        ProbeTracker {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            last_run: None,
            successes: 0,
            failures: 0,
            verdict: None,
            last_failure: None,
        }
    }

    /// Whether a run is due at `now` for a container started at `started`.
    pub fn due(&self, started: Instant, now: Instant) -> bool {
        if now < started + self.initial_delay {
            return false;
        }
        self.last_run
            .map(|t| now >= t + self.period)
            .unwrap_or(true)
    }

    /// Records a run at `now`; returns the verdict after it.
    pub fn record(&mut self, now: Instant, outcome: ProbeOutcome) -> Option<bool> {
        self.last_run = Some(now);
        match outcome {
            ProbeOutcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.success_threshold {
                    self.verdict = Some(true);
                }
            }
            ProbeOutcome::Failure(msg) => {
                self.successes = 0;
                self.failures += 1;
                self.last_failure = Some(msg);
                if self.failures >= self.failure_threshold {
                    self.verdict = Some(false);
                }
            }
        }
        self.verdict
    }
}

/// Where a probe runs.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The container's init PID on the host.
    pub pid: i32,
    /// The pod's netns (None for host network).
    pub netns: Option<PathBuf>,
    /// The shim binary (for exec probes).
    pub shim_binary: PathBuf,
}

fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name}")),
    }
}

/// Runs one probe once.
pub fn run_probe(
    probe: &Probe,
    c: &Container,
    target: &ProbeTarget,
    timeout: Duration,
) -> ProbeOutcome {
    if let Some(exec) = &probe.exec {
        return run_exec(&target.shim_binary, target.pid, &exec.command, timeout);
    }
    let (host, port, http) = if let Some(h) = &probe.http_get {
        (
            h.host.clone(),
            resolve_port(&h.port, c),
            Some(h.path.clone().unwrap_or_else(|| "/".into())),
        )
    } else if let Some(t) = &probe.tcp_socket {
        (t.host.clone(), resolve_port(&t.port, c), None)
    } else {
        return ProbeOutcome::Failure("probe has no action".into());
    };
    let port = match port {
        Ok(p) => p,
        Err(e) => return ProbeOutcome::Failure(e),
    };
    let host = host.unwrap_or_else(|| "127.0.0.1".into());
    let check = move || -> ProbeOutcome {
        let addr: SocketAddr = match format!("{host}:{port}").parse() {
            Ok(a) => a,
            Err(_) => return ProbeOutcome::Failure(format!("invalid probe host {host}")),
        };
        let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => s,
            Err(e) => return ProbeOutcome::Failure(format!("connect {addr}: {e}")),
        };
        let Some(path) = http else {
            return ProbeOutcome::Success;
        };
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let req = format!(
            "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: bramble-probe/1.0\r\nConnection: close\r\n\r\n"
        );
        if let Err(e) = stream.write_all(req.as_bytes()) {
            return ProbeOutcome::Failure(format!("http write: {e}"));
        }
        let mut head = [0u8; 64];
        let n = match stream.read(&mut head) {
            Ok(n) => n,
            Err(e) => return ProbeOutcome::Failure(format!("http read: {e}")),
        };
        let line = String::from_utf8_lossy(&head[..n]);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if (200..400).contains(&code) {
            ProbeOutcome::Success
        } else {
            ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    match &target.netns {
        Some(ns) => super::netns::run_in(ns, check)
            .unwrap_or_else(|e| ProbeOutcome::Failure(format!("enter netns: {e}"))),
        None => check(),
    }
}

/// Most output of an exec probe kept for its event (the kubelet's 10 KiB).
const MAX_EXEC_OUTPUT: usize = 10 * 1024;

/// Runs `cmd` inside the container of `pid` with a timeout. A failure
/// carries the command's output (stdout and stderr, as the kubelet reports
/// it in the `Unhealthy` event).
pub fn run_exec(shim: &Path, pid: i32, cmd: &[String], timeout: Duration) -> ProbeOutcome {
    use std::os::unix::process::CommandExt;
    let (mut output, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return ProbeOutcome::Failure(format!("create a pipe for exec: {e}")),
    };
    let stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return ProbeOutcome::Failure(format!("create a pipe for exec: {e}")),
    };
    let mut command = std::process::Command::new(shim);
    command
        .arg("shim")
        .arg("exec")
        .arg(pid.to_string())
        .arg("--")
        .args(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        .process_group(0);
    let spawned = command.spawn();
    // The command holds the pipe's write ends: drop them so the output
    // ends when the probe's process does.
    drop(command);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::Failure(format!("spawn exec: {e}")),
    };
    if let Err(e) = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&output),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    ) {
        tracing::debug!(error = %e, "cannot make the exec probe's output non-blocking");
    }
    let mut kept = Vec::new();
    let mut drain = |kept: &mut Vec<u8>| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = output.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        drain(&mut kept);
        match child.try_wait() {
            Ok(Some(status)) => {
                drain(&mut kept);
                return match status.code() {
                    Some(0) => ProbeOutcome::Success,
                    _ => ProbeOutcome::Failure(String::from_utf8_lossy(&kept).into_owned()),
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                return ProbeOutcome::Failure(format!("command {:?} timed out", cmd.join(" ")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return ProbeOutcome::Failure(format!("wait exec: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_thresholds_and_timing() {
        let p = Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(2),
            failure_threshold: Some(2),
            success_threshold: Some(2),
            ..Default::default()
        };
        let mut t = ProbeTracker::new(&p);
        let t0 = Instant::now();
        assert!(!t.due(t0, t0 + Duration::from_secs(4)));
        assert!(t.due(t0, t0 + Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(t.record(t1, ProbeOutcome::Success), None);
        assert!(!t.due(t0, t1 + Duration::from_secs(1)));
        assert_eq!(
            t.record(t1 + Duration::from_secs(2), ProbeOutcome::Success),
            Some(true)
        );
        assert_eq!(
            t.record(
                t1 + Duration::from_secs(4),
                ProbeOutcome::Failure("x".into())
            ),
            Some(true)
        );
        assert_eq!(
            t.record(
                t1 + Duration::from_secs(6),
                ProbeOutcome::Failure("x".into())
            ),
            Some(false)
        );
    }
}
