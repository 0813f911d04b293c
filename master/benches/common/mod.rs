//! What the benchmarks that drive the real binaries share: a child process
//! killed on drop, the `bramble-agent` binary built with the bench's
//! profile, a master on loopback ports, `/proc` figures.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bramble_master::cli::client::Client;

/// A child process killed and reaped on drop.
pub struct Guard {
    /// The process.
    pub child: Child,
}

impl Guard {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An environment variable as a number, or `default`.
pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `KEY: VALUE [kB]` field of `/proc/PID/FILE` (`status`, `io`...), 0 when
/// missing.
pub fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// The `bramble-agent` binary next to `bramble`, (re)built with cargo in the
/// bench's profile.
pub fn agent_binary() -> PathBuf {
    let bramble = PathBuf::from(env!("CARGO_BIN_EXE_bramble"));
    let dir = bramble.parent().unwrap_or_else(|| Path::new("."));
    let agent = dir.join("bramble-agent");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "-p", "bramble-agent", "--bin", "bramble-agent"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    if let Some(target) = dir.parent() {
        cargo.arg("--target-dir").arg(target);
    }
    cargo.current_dir(env!("CARGO_MANIFEST_DIR"));
    eprintln!("building the agent: {cargo:?}");
    // A failed build must stop the bench: measuring a stale binary would
    // print figures of code that is not the code under test.
    match cargo.status() {
        Ok(s) if s.success() => {}
        other => {
            panic!("cargo build of the agent failed ({other:?}); not measuring a stale binary")
        }
    }
    assert!(
        agent.exists(),
        "{} is missing: run `cargo build --release -p bramble-agent`",
        agent.display()
    );
    agent
}

/// A running master and how to reach it.
pub struct Master {
    /// The process.
    pub guard: Guard,
    /// `host:port` of its API.
    pub listen: String,
    /// `host:port` of its MQTT broker.
    pub mqtt: String,
    /// A client with its admin kubeconfig.
    pub client: Arc<Client>,
}

fn field_after(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .map(|v| v.trim_matches('"').to_string())
}

/// Start `bramble master` on loopback ports with its data in `data` and
/// `extra` flags; its log goes to `log`. Returns once it says it is ready.
pub fn start_master(data: &Path, log: &Path, extra: &[String]) -> Master {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bramble"))
        .args([
            "master",
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("BRAMBLE_LOG", "warn,bramble_master=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn master: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("stderr"));
    let guard = Guard { child };
    let mut lines = BufReader::new(stderr).lines();
    let mut log_file = std::fs::File::create(log).unwrap_or_else(|e| panic!("master log: {e}"));
    let (listen, mqtt) = loop {
        match lines.next() {
            Some(Ok(line)) => {
                let _ = writeln!(log_file, "{line}");
                if line.contains("bramble master ready") {
                    break (
                        field_after(&line, "listen=").unwrap_or_default(),
                        field_after(&line, "mqtt=").unwrap_or_default(),
                    );
                }
            }
            _ => panic!("master did not start (log: {})", log.display()),
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log_file, "{line}");
        }
    });
    let kubeconfig = data.join("admin.kubeconfig");
    let client = Client::from_kubeconfig(Some(&kubeconfig)).unwrap_or_else(|e| panic!("{e}"));
    Master {
        guard,
        listen,
        mqtt,
        client: Arc::new(client),
    }
}
