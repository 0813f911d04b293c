//! Service proxy rule sync time: the whole table for N Services (one port,
//! three endpoints each) rendered and applied with one `nft -f`, in a fresh
//! network namespace, at 10, 100 and 1,000 Services; then the time to
//! apply it again after one Service changed (today every update is a full
//! rewrite: this is the figure an incremental update must beat). Render
//! and apply are timed apart; each figure is the median of 5 runs.
//!
//! Run as root: `cargo bench -p bramble-agent --bench service_proxy`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bramble_agent::network::netns::{create_netns, delete_netns, in_netns};
use bramble_agent::network::nft;
use bramble_agent::network::proxy::{self, LocalPods, ProxyConfig};
use bramble_common::wire::{
    WireEndpoint, WireProtocol, WireService, WireServicePort, WireServiceType,
};

/// Deletes the namespace, even after a panic.
struct Netns(PathBuf);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = delete_netns(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

fn services(n: usize, generation: u16) -> Vec<WireService> {
    (0..n)
        .map(|i| WireService {
            namespace: format!("team-{}", i % 10),
            name: format!("svc-{i}"),
            type_: WireServiceType::NodePort,
            cluster_ip: format!("10.96.{}.{}", i / 250, i % 250 + 1),
            ports: vec![WireServicePort {
                name: "http".into(),
                protocol: WireProtocol::Tcp,
                port: 80,
                node_port: 30000 + i as u16,
            }],
            endpoints: (0..3)
                .map(|e| WireEndpoint {
                    address: format!("10.244.{}.{}", e, i % 250 + 2),
                    node: format!("node-{e}"),
                    ready: true,
                    serving: true,
                    // The first Service's port moves with `generation`.
                    ports: vec![if i == 0 { 8080 + generation } else { 8080 }],
                    ..WireEndpoint::default()
                })
                .collect(),
            ..WireService::default()
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let path = std::env::temp_dir().join(format!("bramble-bench-svc-{}", std::process::id()));
    create_netns(&path).unwrap();
    let netns = Netns(path);
    let config = ProxyConfig {
        table: "bramble-svc-bench".into(),
        node: "node-0".into(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        dns: None,
    };
    let apply = |script: &str| {
        let started = Instant::now();
        in_netns(Some(&netns.0), || nft::apply("nft", &config.table, script))
            .unwrap()
            .unwrap();
        started.elapsed()
    };
    println!("services  render   first load  one changed (full rewrite)  script bytes");
    for n in [10, 100, 1000] {
        let mut render_times = Vec::new();
        let mut load_times = Vec::new();
        let mut update_times = Vec::new();
        let mut bytes = 0;
        for run in 0..5u16 {
            in_netns(Some(&netns.0), || {
                nft::apply("nft", &config.table, &proxy::render_delete(&config.table))
            })
            .unwrap()
            .unwrap();
            let list = services(n, run * 2);
            let started = Instant::now();
            let script = proxy::render(&config, &list, &LocalPods::new());
            render_times.push(started.elapsed());
            bytes = script.len();
            load_times.push(apply(&script));
            let changed = services(n, run * 2 + 1);
            let script = proxy::render(&config, &changed, &LocalPods::new());
            update_times.push(apply(&script));
        }
        println!(
            "{n:>8}  {:>6.1} ms  {:>8.1} ms  {:>12.1} ms               {bytes}",
            median(render_times).as_secs_f64() * 1e3,
            median(load_times).as_secs_f64() * 1e3,
            median(update_times).as_secs_f64() * 1e3,
        );
    }
}
