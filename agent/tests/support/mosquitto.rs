//! Debian's `mosquitto` broker as a child of a test, on a loopback port,
//! with password auth and no persistence. The one implementation for the
//! agent's tests (`support::mosquitto`) and the master's (which include
//! this file with `#[path]`): std only.
//!
//! Run as root, Debian's mosquitto 2.0 drops to the `mosquitto` user and
//! then needs its paths owned by that user. The broker's configuration says
//! `user root`, so it stays root and its directory (created by the test,
//! owned by root) is what it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the broker may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A free loopback TCP port (bound and released: a test passes it to a
/// child that binds it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes sure `mosquitto` and `mosquitto_passwd` are installed (installing
/// Debian's package if needed), or fails the test saying what to do.
pub fn require_mosquitto() {
    if found("mosquitto") && found("mosquitto_passwd") {
        return;
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "mosquitto"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed && found("mosquitto") && found("mosquitto_passwd"),
        "mosquitto is required by this test and could not be installed: apt-get install -y mosquitto"
    );
}

/// Adds (or updates) `user` in the existing `password_file`.
fn passwd(password_file: &Path, user: &str, password: &str) {
    let out = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(password_file)
        .args([user, password])
        .output()
        .expect("run mosquitto_passwd (apt-get install -y mosquitto)");
    assert!(
        out.status.success(),
        "mosquitto_passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `mosquitto`; killed, and its directory removed, on drop.
pub struct Mosquitto {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Its directory: `passwords` and `mosquitto.conf`.
    dir: PathBuf,
}

impl Mosquitto {
    /// Start a broker on a free loopback port, under `dir`, that knows the
    /// `(user, password)` pairs.
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> Mosquitto {
        Mosquitto::start_on(dir, free_port(), users)
    }

    /// Start a broker on `127.0.0.1:port`, under `dir`, that knows the
    /// `(user, password)` pairs (none is fine: see [`Mosquitto::add_user`]).
    /// Returns once it accepts connections.
    pub fn start_on(dir: &Path, port: u16, users: &[(&str, &str)]) -> Mosquitto {
        require_mosquitto();
        let dir = dir.join(format!("mosquitto-{port}"));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let passwords = dir.join("passwords");
        std::fs::write(&passwords, "").expect("write the password file");
        for (user, password) in users {
            passwd(&passwords, user, password);
        }
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 persistence false\nuser root\nmax_connections -1\n",
                passwords.display()
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (apt-get install -y mosquitto)");
        let mut broker = Mosquitto { child, port, dir };
        let deadline = Instant::now() + START_DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("mosquitto exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on port {port} within {START_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// Add a user to the running broker: to its password file, then make it
    /// reload that (SIGHUP).
    pub fn add_user(&self, user: &str, password: &str) {
        passwd(&self.dir.join("passwords"), user, password);
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP mosquitto");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
