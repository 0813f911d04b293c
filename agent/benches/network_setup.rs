//! Per-pod network setup and teardown: bramble's netlink code against the
//! same steps done with `ip` commands, 200 pods each, in one run.
//!
//! Both sides work in a node simulated as a network namespace with a
//! `bramble0` bridge, and per pod: create the pod netns, a veth pair with the
//! host end on the bridge and `eth0` in the pod, the pod's address, `lo` and
//! `eth0` up, the default route; teardown deletes the veth and the netns.
//! Pods are all set up first (the bridge ends up with 200 ports), then all
//! torn down. bramble's side also allocates and persists the address
//! (write, fsync, rename, fsync of the directory): it runs twice, with the
//! state directory on disk and on tmpfs (`/dev/shm`), to show that cost apart.
//!
//! Run as root: `cargo bench -p bramble-agent --bench network_setup`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bramble_agent::network::netns::{create_netns, delete_netns};
use bramble_agent::network::{
    MtuSource, NetlinkNetwork, NetworkOptions, NodeNetConfig, PodNetwork,
};

const PODS: usize = 200;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes every namespace the benchmark made, even after a panic.
struct Cleanup {
    ip_netns: Vec<String>,
    files: Vec<PathBuf>,
    run_netns_was_mounted: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.ip_netns {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
        for file in &self.files {
            let _ = delete_netns(file);
        }
        // `ip netns add` bind-mounts /run/netns onto itself: undo that if it
        // was not there before and nothing else uses it now.
        let run_netns = Path::new("/run/netns");
        if !self.run_netns_was_mounted
            && std::fs::read_dir(run_netns).is_ok_and(|mut d| d.next().is_none())
        {
            let _ = nix::mount::umount2(run_netns, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(run_netns);
        }
    }
}

fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(path))
}

struct Stats {
    setup: Vec<Duration>,
    teardown: Vec<Duration>,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(v: &[Duration]) -> (Duration, Duration) {
    let mut v = v.to_vec();
    v.sort();
    (pct(&v, 50.0), pct(&v, 99.0))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench_bramble(tag: &str, cleanup: &mut Cleanup, dir: &Path, state_dir: &Path) -> Stats {
    let node = format!("bbn-{tag}");
    ip(&["netns", "add", &node]);
    cleanup.ip_netns.push(node.clone());
    ip(&["-n", &node, "link", "set", "lo", "up"]);
    let mut opts = NetworkOptions::new(state_dir, "bench");
    opts.node_netns = Some(PathBuf::from(format!("/run/netns/{node}")));
    opts.netns_dir = Some(dir.join(format!("pods-{tag}")));
    let net = NetlinkNetwork::new(opts).unwrap();
    let mut config = NodeNetConfig::new("10.244.1.0/24".parse().unwrap());
    config.mtu = MtuSource::Fixed(1500);
    net.ensure_node(&config).unwrap();

    let pods: Vec<(String, PathBuf)> = (0..PODS)
        .map(|i| {
            (
                format!("pod-{i}"),
                dir.join(format!("pods-{tag}")).join(format!("pod-{i}")),
            )
        })
        .collect();
    cleanup.files.extend(pods.iter().map(|(_, p)| p.clone()));
    let mut stats = Stats {
        setup: Vec::new(),
        teardown: Vec::new(),
    };
    for (uid, path) in &pods {
        let t = Instant::now();
        create_netns(path).unwrap();
        net.setup_pod(uid, path, &[]).unwrap();
        stats.setup.push(t.elapsed());
    }
    for (uid, path) in &pods {
        let t = Instant::now();
        net.teardown_pod(uid, path).unwrap();
        delete_netns(path).unwrap();
        stats.teardown.push(t.elapsed());
    }
    net.reset().unwrap();
    stats
}

fn bench_ip(tag: &str, cleanup: &mut Cleanup) -> Stats {
    let node = format!("bbi-{tag}");
    ip(&["netns", "add", &node]);
    cleanup.ip_netns.push(node.clone());
    ip(&["-n", &node, "link", "set", "lo", "up"]);
    ip(&["-n", &node, "link", "add", "bramble0", "type", "bridge"]);
    ip(&[
        "-n",
        &node,
        "addr",
        "add",
        "10.244.1.1/24",
        "dev",
        "bramble0",
    ]);
    ip(&["-n", &node, "link", "set", "bramble0", "up"]);

    let mut stats = Stats {
        setup: Vec::new(),
        teardown: Vec::new(),
    };
    let pods: Vec<(String, String, String)> = (0..PODS)
        .map(|i| {
            (
                format!("bbp-{tag}-{i}"),
                format!("bi{tag}{i:04x}"),
                format!("10.244.1.{}/24", 2 + i),
            )
        })
        .collect();
    cleanup
        .ip_netns
        .extend(pods.iter().map(|(ns, _, _)| ns.clone()));
    for (ns, veth, addr) in &pods {
        let t = Instant::now();
        ip(&["netns", "add", ns]);
        ip(&[
            "-n", &node, "link", "add", veth, "mtu", "1500", "type", "veth", "peer", "name",
            "eth0", "mtu", "1500", "netns", ns,
        ]);
        ip(&["-n", &node, "link", "set", veth, "master", "bramble0", "up"]);
        ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", "10.244.1.1"]);
        stats.setup.push(t.elapsed());
    }
    for (ns, veth, _) in &pods {
        let t = Instant::now();
        ip(&["-n", &node, "link", "del", veth]);
        ip(&["netns", "del", ns]);
        stats.teardown.push(t.elapsed());
    }
    stats
}

fn main() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        eprintln!("network_setup: needs root, skipped");
        return;
    }
    let tag = format!("{:04x}", std::process::id() & 0xffff);
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup {
        ip_netns: Vec::new(),
        files: Vec::new(),
        run_netns_was_mounted: is_mountpoint("/run/netns"),
    };
    let disk_state = tempfile::tempdir_in(dir.path()).unwrap();
    let ours = bench_bramble(
        &format!("{tag}d"),
        &mut cleanup,
        dir.path(),
        disk_state.path(),
    );
    let shm_state = tempfile::tempdir_in("/dev/shm").unwrap();
    let ours_shm = bench_bramble(
        &format!("{tag}m"),
        &mut cleanup,
        dir.path(),
        shm_state.path(),
    );
    let theirs = bench_ip(&tag, &mut cleanup);

    println!("per-pod network, {PODS} pods, times in ms");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9}",
        "", "setup p50", "setup p99", "tear p50", "tear p99"
    );
    let rows = [
        ("bramble, state on disk", &ours),
        ("bramble, state on tmpfs", &ours_shm),
        ("ip commands", &theirs),
    ];
    let mut figures = Vec::new();
    for (name, s) in rows {
        let (sp50, sp99) = summary(&s.setup);
        let (tp50, tp99) = summary(&s.teardown);
        let total: Vec<Duration> = s
            .setup
            .iter()
            .zip(&s.teardown)
            .map(|(a, b)| *a + *b)
            .collect();
        let (p50, p99) = summary(&total);
        println!(
            "{name:<28} {:>9.3} {:>9.3} {:>9.3} {:>9.3}   setup+teardown p50 {:.3} p99 {:.3}",
            ms(sp50),
            ms(sp99),
            ms(tp50),
            ms(tp99),
            ms(p50),
            ms(p99)
        );
        figures.push((p50, p99, sp50, tp50));
    }
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    for (i, name) in [(0, "state on disk"), (1, "state on tmpfs")] {
        let (ip_row, ours) = (&figures[2], &figures[i]);
        println!(
            "ip / bramble ({name}): setup+teardown p50 {:.2}x, p99 {:.2}x; setup p50 {:.2}x; teardown p50 {:.2}x",
            ratio(ours.0, ip_row.0),
            ratio(ours.1, ip_row.1),
            ratio(ours.2, ip_row.2),
            ratio(ours.3, ip_row.3),
        );
    }
    drop(cleanup);
}
