//! Helpers for end-to-end tests: start the real `bramble master`, run the real
//! `bramble` CLI and the stock `kubectl` against it, and follow streaming
//! output line by line with a deadline (never sleep-and-hope).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `bramble` binary under test.
pub fn bramble_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bramble")
}

/// A running master.
pub struct Master {
    child: Option<Child>,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// `host:port` it listens on.
    pub addr: String,
    /// `host:port` of its MQTT broker.
    pub mqtt: String,
    /// Everything it printed on stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Master {
    /// Start `bramble master` on a free loopback port with `extra` flags and
    /// wait (at most 60 s) until it says it is ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Master {
        let mut child = Command::new(bramble_bin())
            .arg("master")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--mqtt-listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .env("BRAMBLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bramble master");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log_writer.lock().expect("log").push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let (addr, mqtt) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("bramble master ready") => {
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .unwrap_or_else(|| panic!("{name} in the ready line: {line}"))
                            .to_string()
                    };
                    break (field("listen="), field("mqtt="));
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    panic!(
                        "bramble master did not become ready (exit: {status:?}); its log:\n{}",
                        log.lock().expect("log").join("\n")
                    );
                }
            }
        };
        Master {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            kubeconfig: data_dir.join("admin.kubeconfig"),
            addr,
            mqtt,
            log,
        }
    }

    /// SIGKILL the master and wait for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the master and wait for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("master running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("wait for master")
    }

    /// Run `bramble` with this master's kubeconfig.
    pub fn bramble(&self, args: &[&str]) -> Output {
        run_bramble(&self.kubeconfig, args, None)
    }

    /// Run `bramble` with stdin.
    pub fn bramble_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_bramble(&self.kubeconfig, args, Some(stdin))
    }

    /// Run the stock kubectl with this master's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut command = Command::new(kubectl_bin());
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", &self.data_dir)
            .stdin(Stdio::null());
        command.output().expect("run kubectl")
    }

    /// Start a long-running command (a watch) and follow its stdout.
    pub fn follow(&self, program: &str, args: &[&str]) -> Follower {
        let mut command = Command::new(program);
        if program == kubectl_bin() {
            command.env("HOME", &self.data_dir);
        }
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        Follower::spawn(command)
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Run `bramble` with a kubeconfig and optional stdin.
pub fn run_bramble(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bramble_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bramble");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("bramble output")
}

/// The kubectl binary; the test fails, saying so, when there is none.
pub fn kubectl_bin() -> &'static str {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let path = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        match Command::new(&path).args(["version", "--client"]).output() {
            Ok(out) if out.status.success() => path,
            _ => panic!(
                "kubectl is required by this test and was not found (tried {path:?}); install kubectl or set KUBECTL=/path/to/kubectl"
            ),
        }
    })
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert success and return stdout.
#[track_caller]
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Assert failure and return stderr.
#[track_caller]
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "command should have failed\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// A child process whose stdout lines are collected as they come.
pub struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line seen so far.
    pub seen: Vec<String>,
}

impl Follower {
    fn spawn(mut command: Command) -> Follower {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn follower");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Wait (at most `timeout`) for a line satisfying `pred`; panics with
    /// everything seen when it does not come.
    #[track_caller]
    pub fn expect_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "expected line did not come within {timeout:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of a fixture manifest.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}
