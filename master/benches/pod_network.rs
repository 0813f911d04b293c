//! Pod network datapath benchmark (issue 5): pod-to-pod throughput and
//! latency on one node and across two nodes, against host-to-host (node
//! namespace to node namespace over the same veths and test bridge), in one
//! run, reported as ratios. Run as root:
//!
//! ```sh
//! cargo bench -p bramble-master --bench pod_network
//! ```
//!
//! (`--profile dev` skips the release build of the master; the datapath
//! measured is the kernel's either way, only the ping-pong loop of this
//! binary is slower in a debug build.)
//!
//! The cluster is the one of `master/tests/network_cluster.rs`
//! (`tests/support/net.rs`): the real `bramble master`, two nodes, each a
//! network namespace on a test bridge with its own real `bramble-agent` and
//! `bramble0`. Three pods created with `bramble apply` (`sleep`, from the
//! busybox test image): `srv-a` and `cli-a` on node a, `srv-b` on node b.
//! The measuring programs run inside the pods' network namespaces
//! (`nsenter --net={run}/netns/{pod-uid}`), so the traffic takes exactly a
//! pod's path: pod veth, `bramble0`, the node's routes and nftables table,
//! and across nodes the node veths and the test bridge.
//!
//! - host-to-host: node a's namespace -> node b's address;
//! - same node: `cli-a` -> `srv-a`'s pod IP;
//! - across nodes: `cli-a` -> `srv-b`'s pod IP.
//!
//! Throughput: `iperf3 -c` for `BRAMBLE_BENCH_SECONDS` (default 5) per
//! path and round, one TCP stream. Latency: a TCP ping-pong of 64-byte
//! messages over one connection with `TCP_NODELAY` (this binary re-run
//! with `--pingpong-server` / `--pingpong-client` inside the namespaces),
//! `BRAMBLE_BENCH_PINGS` (default 20000) round trips after 1000 for warm-up;
//! p50 and p99. The paths are measured in turn, `BRAMBLE_BENCH_ROUNDS`
//! (default 3) rounds, and the median round of each figure is reported, so
//! that load from other processes on the machine hits every path alike.
//!
//! Needs Debian's `iperf3` (`apt-get install iperf3`; nothing is installed
//! here) and what the network tests need (`ip`, `nsenter`, `nft`,
//! `busybox-static`). Prints figures, asserts none.
//!
//! Measured on this project's 2-core dev VM (shared with other builds),
//! `--profile dev`, defaults (3 rounds, 5 s, 20000 pings), median round:
//!
//! | path | Gbit/s | p50 us | p99 us | x thrpt | x p50 | x p99 |
//! |---|---|---|---|---|---|---|
//! | host-to-host | 19.19 | 24.1 | 38.4 | 1.00 | 1.00 | 1.00 |
//! | pod-to-pod, same node | 19.73 | 21.6 | 38.6 | 1.03 | 0.90 | 1.01 |
//! | pod-to-pod, across nodes | 15.60 | 31.4 | 48.5 | 0.81 | 1.30 | 1.26 |
//!
//! A pod on the same node costs nothing measurable against host-to-host
//! (one veth and the bridge instead of one veth and the test bridge);
//! across nodes a packet crosses two more veths, two `bramble0` bridges and
//! two routing and nftables passes: about a fifth of the throughput and
//! 7 us per round trip.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::net::{apply, pod, NetCluster};

const MESSAGE_BYTES: usize = 64;
const WARMUP_PINGS: usize = 1000;
const IPERF_PORT: u16 = 5201;

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// `--pingpong-server HOST`: listen on HOST:0, print the port, echo every
/// message of one connection until it closes.
fn pingpong_server(host: &str) {
    let listener = TcpListener::bind((host, 0)).expect("bind the ping-pong server");
    let port = listener.local_addr().expect("local address").port();
    println!("port {port}");
    std::io::stdout().flush().expect("flush stdout");
    let (mut stream, _) = listener.accept().expect("accept");
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = [0u8; MESSAGE_BYTES];
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(&buf).is_err() {
            break;
        }
    }
}

/// `--pingpong-client HOST:PORT N`: N timed round trips after the warm-up;
/// prints `p50_us p99_us mean_us`.
fn pingpong_client(addr: &str, count: usize) {
    let mut stream = TcpStream::connect(addr).expect("connect to the ping-pong server");
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = [7u8; MESSAGE_BYTES];
    let mut samples = Vec::with_capacity(count);
    for i in 0..WARMUP_PINGS + count {
        let start = Instant::now();
        stream.write_all(&buf).expect("send");
        stream.read_exact(&mut buf).expect("receive");
        if i >= WARMUP_PINGS {
            samples.push(start.elapsed());
        }
    }
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pick = |q: f64| us(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    let mean = us(samples.iter().sum::<Duration>()) / samples.len() as f64;
    println!("{:.1} {:.1} {:.1}", pick(0.50), pick(0.99), mean);
}

/// A measured path: where the client and the server run, the server's address.
struct MeasuredPath {
    name: &'static str,
    client: PathBuf,
    server: PathBuf,
    address: String,
}

/// One round's figures for one path.
#[derive(Clone, Copy, Default)]
struct Figures {
    gbit_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// A child killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nsenter(netns: &Path) -> Command {
    let mut command = Command::new("nsenter");
    command.arg(format!("--net={}", netns.display())).arg("--");
    command
}

fn throughput(path: &MeasuredPath, seconds: usize) -> f64 {
    let _server = Guard(
        nsenter(&path.server)
            .args(["iperf3", "-s", "-1", "-B", &path.address])
            .arg("-p")
            .arg(IPERF_PORT.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s"),
    );
    // The server needs a moment to listen: retry a refused client, with a
    // deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = nsenter(&path.client)
            .args(["iperf3", "-J", "-c", &path.address])
            .arg("-p")
            .arg(IPERF_PORT.to_string())
            .arg("-t")
            .arg(seconds.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run iperf3 -c");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        // iperf3 -J can exit 0 with an error in its report.
        if out.status.success() && report["error"].is_null() {
            let bits = report["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or_else(|| panic!("iperf3 -J without end.sum_received: {report}"));
            return bits / 1e9;
        }
        if Instant::now() >= deadline {
            panic!(
                "iperf3 {} -> {} failed: {}{}",
                path.name,
                path.address,
                report["error"],
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn latency(path: &MeasuredPath, pings: usize, exe: &Path) -> (f64, f64) {
    let mut server = Guard(
        nsenter(&path.server)
            .arg(exe)
            .args(["--pingpong-server", &path.address])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the ping-pong server"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the server's port");
    let port = line
        .trim()
        .strip_prefix("port ")
        .unwrap_or_else(|| panic!("ping-pong server said {line:?}"));
    let out = nsenter(&path.client)
        .arg(exe)
        .args([
            "--pingpong-client",
            &format!("{}:{port}", path.address),
            &pings.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run the ping-pong client");
    assert!(
        out.status.success(),
        "ping-pong {}: {}",
        path.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [p50, p99, _mean] => (p50, p99),
        _ => panic!("ping-pong client printed {text:?}"),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--pingpong-server") => return pingpong_server(&args[2]),
        Some("--pingpong-client") => {
            return pingpong_client(&args[2], args[3].parse().expect("count"))
        }
        _ => {}
    }
    assert!(
        support::net::found("iperf3"),
        "this benchmark needs iperf3: apt-get install iperf3"
    );
    let seconds = env_number("BRAMBLE_BENCH_SECONDS", 5);
    let pings = env_number("BRAMBLE_BENCH_PINGS", 20000);
    let rounds = env_number("BRAMBLE_BENCH_ROUNDS", 3).max(1);
    let exe = std::env::current_exe().expect("this benchmark's path");

    let cluster = NetCluster::start(&["a", "b"]);
    let (a, b) = (cluster.nodes[0].name.clone(), cluster.nodes[1].name.clone());
    let sleeper = |name: &str, node: &str| pod(name, node, &["sleep", "86400"], "Never", json!({}));
    apply(cluster.master(), &sleeper("srv-a", &a));
    apply(cluster.master(), &sleeper("cli-a", &a));
    apply(cluster.master(), &sleeper("srv-b", &b));
    let running = |name: &str| {
        let pod = cluster.wait_running(name);
        let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
        let ip = pod["status"]["podIP"].as_str().expect("podIP").to_string();
        let node = pod["spec"]["nodeName"].as_str().expect("node").to_string();
        let netns = cluster.node(&node).pod_netns(&uid);
        (netns, ip)
    };
    let (srv_a, srv_a_ip) = running("srv-a");
    let (cli_a, _) = running("cli-a");
    let (srv_b, srv_b_ip) = running("srv-b");
    let paths = [
        MeasuredPath {
            name: "host-to-host",
            client: cluster.nodes[0].netns.clone(),
            server: cluster.nodes[1].netns.clone(),
            address: cluster.nodes[1].address.to_string(),
        },
        MeasuredPath {
            name: "pod-to-pod, same node",
            client: cli_a.clone(),
            server: srv_a,
            address: srv_a_ip,
        },
        MeasuredPath {
            name: "pod-to-pod, across nodes",
            client: cli_a,
            server: srv_b,
            address: srv_b_ip,
        },
    ];

    println!(
        "pod network datapath: {rounds} rounds, iperf3 {seconds} s per path (1 TCP stream), \
         {pings} TCP ping-pongs of {MESSAGE_BYTES} B per path; median round"
    );
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); paths.len()];
    for round in 0..rounds {
        for (i, path) in paths.iter().enumerate() {
            let gbit_s = throughput(path, seconds);
            let (p50_us, p99_us) = latency(path, pings, &exe);
            eprintln!(
                "round {}: {:<26} {gbit_s:>7.2} Gbit/s  p50 {p50_us:>6.1} us  p99 {p99_us:>6.1} us",
                round + 1,
                path.name
            );
            results[i].push(Figures {
                gbit_s,
                p50_us,
                p99_us,
            });
        }
    }
    let summary: Vec<Figures> = results
        .iter()
        .map(|r| Figures {
            gbit_s: median(r.iter().map(|f| f.gbit_s).collect()),
            p50_us: median(r.iter().map(|f| f.p50_us).collect()),
            p99_us: median(r.iter().map(|f| f.p99_us).collect()),
        })
        .collect();
    let host = summary[0];
    println!(
        "\n{:<26} {:>10} {:>9} {:>9}   {:>10} {:>10} {:>10}",
        "path", "Gbit/s", "p50 us", "p99 us", "x thrpt", "x p50", "x p99"
    );
    for (path, f) in paths.iter().zip(&summary) {
        println!(
            "{:<26} {:>10.2} {:>9.1} {:>9.1}   {:>10.2} {:>10.2} {:>10.2}",
            path.name,
            f.gbit_s,
            f.p50_us,
            f.p99_us,
            f.gbit_s / host.gbit_s,
            f.p50_us / host.p50_us,
            f.p99_us / host.p99_us
        );
    }
    println!(
        "(x = ratio to host-to-host: throughput above 1 is faster, latency above 1 is slower)"
    );
    drop(cluster);
}
