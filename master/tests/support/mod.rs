//! Helpers for end-to-end tests: start the real `bramble master`, run the real
//! `bramble` CLI and the stock `kubectl` against it, and follow streaming
//! output line by line with a deadline (never sleep-and-hope).

#![allow(dead_code)]

#[path = "../../../agent/tests/support/mosquitto.rs"]
pub mod mosquitto;
pub mod net;
pub mod real;

#[allow(unused_imports)]
pub use mosquitto::{free_port, Mosquitto};

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
        let mut command = Command::new(bramble_bin());
        command
            .arg("master")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0");
        // A test may choose the broker: a fixed MQTT port (to restart a master
        // where its agents expect it) or an external broker.
        if !extra
            .iter()
            .any(|flag| *flag == "--mqtt-listen" || *flag == "--mqtt-url")
        {
            command.arg("--mqtt-listen").arg("127.0.0.1:0");
        }
        let mut child = command
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

/// Register node `name` with `bramble node add` and return its join token.
pub fn add_node(master: &Master, name: &str) -> String {
    let out = ok(master.bramble(&["node", "add", name]));
    let line = out.lines().next().unwrap_or_default();
    let (printed, token) = line.split_once(' ').unwrap_or_else(|| {
        panic!("`bramble node add {name}` should print `NAME TOKEN`, printed {out:?}")
    });
    assert_eq!(printed, name);
    token.trim().to_string()
}

/// Run curl against the master (trusting its CA); `(HTTP code, body)`.
pub fn curl(master: &Master, args: &[&str]) -> (u16, String) {
    let ca = master.data_dir.join("pki/ca.crt");
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is needed by this test (apt-get install curl)");
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').expect("code line");
    (code.trim().parse().expect("http code"), body.to_string())
}

/// The admin bearer token from the master's kubeconfig.
pub fn token_of(master: &Master) -> String {
    let text = std::fs::read_to_string(&master.kubeconfig).expect("kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token")
        .to_string()
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

/// Poll `probe` every 100 ms until it returns `Ok`, at most `timeout`;
/// panics with `what` and the last thing `probe` saw when it never does.
#[track_caller]
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last seen:\n{last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The `bramble-agent` binary, built once per test run.
///
/// It belongs to another crate, so Cargo gives this crate no
/// `CARGO_BIN_EXE_bramble-agent`. Guessing `target/debug/bramble-agent`
/// would run a stale binary (or none) after `cargo test -p bramble-master`,
/// and would miss `CARGO_TARGET_DIR` or a `build.target-dir` setting. So the
/// first caller runs `cargo build -p bramble-agent --message-format=json`
/// (the same cargo that runs the tests; a no-op when it is up to date) and
/// takes the binary's path from Cargo's own `compiler-artifact` message.
pub fn agent_bin() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let out = Command::new(env!("CARGO"))
            .args(["build", "-p", "bramble-agent", "--bin", "bramble-agent"])
            .arg("--message-format=json")
            .current_dir(workspace)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build -p bramble-agent");
        assert!(
            out.status.success(),
            "cargo build -p bramble-agent failed ({:?})",
            out.status
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["reason"] == "compiler-artifact")
            .find(|message| message["target"]["name"] == "bramble-agent")
            .and_then(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no bramble-agent executable")
    })
}

/// A running `bramble-agent` for one node: `--runtime sim` from
/// [`Agent::start`], the real runtime from [`Agent::start_real`], or inside
/// a network namespace from [`Agent::start_in_netns`].
pub struct Agent {
    child: Option<Child>,
    /// The node's name.
    pub name: String,
    /// Its directory: `state/`, `run/` and `agent.toml` live there.
    pub dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The network namespace it runs in (`nsenter --net=`), if not the test's.
    netns: Option<PathBuf>,
    /// Everything it printed on stderr, across restarts.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    /// Start an agent for `name` with `token` against `mqtt` (`host:port`),
    /// its directories under `dir/name`, a 1 s heartbeat and `env` (facts
    /// such as `BRAMBLE_FAKE_ARCH`).
    pub fn start(dir: &Path, mqtt: &str, name: &str, token: &str, env: &[(&str, &str)]) -> Agent {
        Agent::launch(
            &dir.join(name),
            mqtt,
            name,
            token,
            &["--runtime", "sim"],
            env,
            None,
        )
    }

    /// Start an agent with the default (real) runtime for `name` with
    /// `token` against `mqtt` (`host:port`), its directories under
    /// `dir/name`, a 1 s heartbeat, `extra` flags and `env`.
    pub fn start_real(
        dir: &Path,
        mqtt: &str,
        name: &str,
        token: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        Agent::launch(&dir.join(name), mqtt, name, token, extra, env, None)
    }

    /// Start an agent with the default (real) runtime for `name` with
    /// `token` against `mqtt` (`host:port`) inside the network namespace at
    /// `netns` (`nsenter --net=NETNS bramble-agent ...`, which switches the
    /// network namespace only: mounts and cgroups stay the host's). Its
    /// directories are `dir/state` and `dir/run`, with a 1 s heartbeat;
    /// `extra` are more flags (`--node-address`...).
    pub fn start_in_netns(
        netns: &Path,
        dir: &Path,
        mqtt: &str,
        name: &str,
        token: &str,
        extra: &[&str],
    ) -> Agent {
        Agent::launch(dir, mqtt, name, token, extra, &[], Some(netns))
    }

    /// Write `dir/agent.toml` (the heartbeat is a file setting only) and
    /// start the agent with its directories under `dir`.
    fn launch(
        dir: &Path,
        mqtt: &str,
        name: &str,
        token: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        netns: Option<&Path>,
    ) -> Agent {
        std::fs::create_dir_all(dir).expect("agent dir");
        let config = dir.join("agent.toml");
        std::fs::write(&config, "heartbeat-seconds = 1\n").expect("write agent.toml");
        let mut args = vec![
            "--config".to_string(),
            config.display().to_string(),
            "--master".into(),
            format!("mqtt://{mqtt}"),
            "--node".into(),
            name.into(),
            "--token".into(),
            token.into(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--run-dir".into(),
            dir.join("run").display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut agent = Agent {
            child: None,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns: netns.map(Path::to_path_buf),
            log: Default::default(),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent {} already running", self.name);
        // nsenter execs the agent (no fork for a network namespace): the
        // child's pid is the agent's.
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net={}", netns.display()))
                    .arg("--")
                    .arg(agent_bin());
                command
            }
            None => Command::new(agent_bin()),
        };
        let mut child = command
            .args(&self.args)
            .env("BRAMBLE_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bramble-agent");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        let name = self.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().expect("log").push(format!("[{name}] {line}"));
            }
        });
        self.child = Some(child);
    }

    /// Number of log lines so far: a mark for [`Agent::wait_log`].
    pub fn mark(&self) -> usize {
        self.log.lock().expect("log").len()
    }

    /// Wait (at most 30 s) for a log line after `mark` containing `text`.
    #[track_caller]
    pub fn wait_log(&self, mark: usize, text: &str) -> String {
        wait_until(
            &format!("agent {} logs {text:?}", self.name),
            Duration::from_secs(30),
            || {
                let log = self.log.lock().expect("log");
                log.iter()
                    .skip(mark)
                    .find(|line| line.contains(text))
                    .cloned()
                    .ok_or_else(|| log.join("\n"))
            },
        )
    }

    /// The whole log as text.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL the agent and wait for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send a signal (`STOP`, `CONT`, `TERM`...) to the running agent.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("agent running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", child.id());
    }

    /// Start it again with the same arguments, directories and facts.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM the agent and wait (at most `timeout`) for it to exit;
    /// panics, after a SIGKILL, when it does not.
    #[track_caller]
    pub fn stop(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("agent running");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "agent {} did not exit within {timeout:?} of SIGTERM; its log:\n{}",
                        self.name,
                        self.log_text()
                    );
                }
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

static PUBLISHER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Publish `payload` to `topic` (QoS 1, retained when `retain`) on the
/// broker at `addr` as `user`/`password`, and wait until the broker
/// acknowledged it.
pub fn mqtt_publish(
    addr: &str,
    (user, password): (&str, &str),
    topic: &str,
    payload: &[u8],
    retain: bool,
) {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut options = rumqttc::MqttOptions::new(
        format!(
            "test-{}-{}",
            std::process::id(),
            PUBLISHER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
        host,
        port.parse().expect("port"),
    );
    options.set_credentials(user, password);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec())
        .expect("queue publish");
    let deadline = Instant::now() + Duration::from_secs(10);
    for event in connection.iter() {
        assert!(Instant::now() < deadline, "publish to {topic}: no PUBACK");
        match event {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("publish to {topic} as {user}: {e}"),
        }
    }
    let _ = client.disconnect();
}
