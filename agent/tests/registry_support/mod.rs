//! A real registry for the pull tests: Debian's `docker-registry` on a
//! loopback port, optionally behind htpasswd (bcrypt, `htpasswd -B`),
//! filled with `skopeo copy` from OCI layouts the tests build; and a TCP
//! proxy that cuts a connection after N bytes. Everything stops and is
//! removed when its guard drops, also when a test fails.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fails the test with the install command when a tool is missing.
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is needed by this test: apt-get install {package} (tests/run-all installs it)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `docker-registry`.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Its storage and config.
    pub dir: tempfile::TempDir,
    /// `user:password` when htpasswd is on.
    pub creds: Option<String>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry; with `auth`, htpasswd with that user and password.
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        need("docker-registry", "docker-registry");
        need("skopeo", "skopeo");
        let dir = tempfile::Builder::new()
            .prefix("bramble-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut auth_yaml = String::new();
        if let Some((user, pass)) = auth {
            need("htpasswd", "apache2-utils");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: bramble-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let reg = Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir,
            creds: auth.map(|(u, p)| format!("{u}:{p}")),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(&reg.host) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {}: {}",
                reg.host,
                std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// Pushes `oci:{layout}:{tag}` (with every platform of an index when
    /// `all`) as `{repo}:{tag}`.
    pub fn push(&self, layout: &Path, layout_tag: &str, repo_tag: &str, all: bool) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        if let Some(c) = &self.creds {
            cmd.arg(format!("--dest-creds={c}"));
        }
        cmd.arg(format!("oci:{}:{layout_tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The path of a blob in the registry's storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// A TCP proxy to `upstream` that cuts connections: the first `cuts`
/// connections that carry more than `after` bytes to the client are
/// closed there. It counts every byte sent to clients.
pub struct CuttingProxy {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Bytes sent to clients, all connections.
    pub to_client: Arc<AtomicU64>,
    /// Connections cut so far.
    pub cut: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl CuttingProxy {
    /// Starts the proxy.
    pub fn start(upstream: &str, after: u64, cuts: u64) -> CuttingProxy {
        CuttingProxy::start_throttled(upstream, after, cuts, Duration::ZERO)
    }

    /// Starts the proxy, sleeping `pause` after each 16 KiB sent (a slow link).
    pub fn start_throttled(upstream: &str, after: u64, cuts: u64, pause: Duration) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let to_client = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tc, ct, st) = (to_client.clone(), cut.clone(), stop.clone());
        let upstream = upstream.to_string();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (tc, ct) = (tc.clone(), ct.clone());
                std::thread::spawn(move || pipe(client, server, after, cuts, pause, &tc, &ct));
            }
        });
        CuttingProxy {
            host,
            to_client,
            cut,
            stop,
            thread: Some(thread),
        }
    }
}

fn pipe(
    client: TcpStream,
    server: TcpStream,
    after: u64,
    cuts: u64,
    pause: Duration,
    sent: &AtomicU64,
    cut: &AtomicU64,
) {
    let mut c2 = client.try_clone().unwrap();
    let mut s2 = server.try_clone().unwrap();
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let mut server = server;
    let mut client = client;
    let mut buf = [0u8; 16 << 10];
    let mut this_conn = 0u64;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut n = n as u64;
        let may_cut = cut.load(Ordering::SeqCst) < cuts;
        if may_cut && this_conn + n > after {
            n = after.saturating_sub(this_conn);
            let _ = client.write_all(&buf[..n as usize]);
            sent.fetch_add(n, Ordering::SeqCst);
            cut.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client.write_all(&buf[..n as usize]).is_err() {
            break;
        }
        this_conn += n;
        sent.fetch_add(n, Ordering::SeqCst);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}
