//! Load benchmark of the master's API (issue 2). Run with
//! `cargo bench -p bramble-master --bench api_load` (as any user; the master
//! runs on loopback with a temporary data dir). Prints figures; asserts none.
//!
//! Measures, in one run: creating N pods over HTTPS with 1 and 16 concurrent
//! clients (objects/s, p50/p99 latency), listing them all, watch fan-out to 10
//! watchers, the master's RSS with N pods, and bytes written to disk per pod.
//! `BRAMBLE_BENCH_PODS` sets N (default 10000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bramble_master::cli::client::Client;
use http_body_util::BodyExt;

mod common;

use common::{env_usize, proc_field, start_master};
use hyper::Method;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn pod(namespace: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}}]}
    }))
    .unwrap_or_default()
}

async fn create_pods(
    client: Arc<Client>,
    namespace: &str,
    count: usize,
    concurrency: usize,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let namespace = namespace.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let path = format!("/api/v1/namespaces/{namespace}/pods");
            let mut i = worker;
            while i < count {
                let t = Instant::now();
                client
                    .json(
                        Method::POST,
                        &path,
                        Some("application/json"),
                        None,
                        pod(&namespace, &format!("p{i}")),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("create failed: {e}"));
                latencies.push(t.elapsed());
                i += concurrency;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort();
    (started.elapsed(), all)
}

async fn create_namespace(client: &Client, name: &str) {
    let body = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .unwrap_or_default();
    client
        .json(
            Method::POST,
            "/api/v1/namespaces",
            Some("application/json"),
            None,
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("namespace: {e}"));
}

fn main() {
    let count = env_usize("BRAMBLE_BENCH_PODS", 10_000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let data = dir.path().join("data");
    let master = start_master(&data, &dir.path().join("master.log"), &[]);
    let pid = master.guard.pid();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let client = Arc::clone(&master.client);
        let rss_idle = proc_field(pid, "status", "VmRSS:");
        println!("bramble master API benchmark: {count} pods per run, {} CPUs", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        println!("master RSS idle: {:.1} MiB", rss_idle as f64 / 1024.0);

        // Watch fan-out: 10 watchers on namespace w, counting ADDED events.
        create_namespace(&client, "w").await;
        let mut watchers = Vec::new();
        for _ in 0..10 {
            let client = client.clone();
            let expected = count;
            watchers.push(tokio::spawn(async move {
                let (_, mut body) = client
                    .send(Method::GET, "/api/v1/namespaces/w/pods?watch=true", None, None, Vec::new())
                    .await
                    .unwrap_or_else(|e| panic!("watch: {e}"));
                // Count what the events say: distinct pods ADDED (the
                // scheduler's MODIFIED events are not creations), from
                // whole lines (a frame may end inside one).
                let mut added = std::collections::HashSet::new();
                let mut pending: Vec<u8> = Vec::new();
                let mut last = Instant::now();
                'frames: while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else { continue };
                    pending.extend_from_slice(&data);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                            continue;
                        };
                        if event["type"] == "ADDED" {
                            if let Some(name) = event["object"]["metadata"]["name"].as_str() {
                                if added.insert(name.to_string()) {
                                    last = Instant::now();
                                }
                            }
                        }
                        if added.len() >= expected {
                            break 'frames;
                        }
                    }
                }
                (added.len(), last)
            }));
        }
        let write_before = proc_field(pid, "io", "write_bytes:");
        for (label, namespace, concurrency) in [("1 client", "c1", 1usize), ("16 clients", "c16", 16)] {
            create_namespace(&client, namespace).await;
            let before = proc_field(pid, "io", "write_bytes:");
            let (elapsed, latencies) = create_pods(client.clone(), namespace, count, concurrency).await;
            let written = proc_field(pid, "io", "write_bytes:") - before;
            println!(
                "create {count} pods, {label}: {:.0} objects/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} bytes written to disk per pod",
                count as f64 / elapsed.as_secs_f64(),
                percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
                percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
                written as f64 / count as f64
            );
        }
        let _ = write_before;
        let t = Instant::now();
        let list = client.bytes(Method::GET, "/api/v1/namespaces/c16/pods", None, None, Vec::new()).await.unwrap_or_else(|e| panic!("list: {e}"));
        println!("list {count} pods: {:.0} ms ({:.1} MiB of JSON)", t.elapsed().as_secs_f64() * 1000.0, list.len() as f64 / 1048576.0);
        let t = Instant::now();
        let all = client.bytes(Method::GET, "/api/v1/pods", None, None, Vec::new()).await.unwrap_or_else(|e| panic!("list: {e}"));
        println!("list all {} pods across namespaces: {:.0} ms", 2 * count, t.elapsed().as_secs_f64() * 1000.0);
        drop(all);

        let fan_start = Instant::now();
        let (elapsed, _) = create_pods(client.clone(), "w", count, 16).await;
        let mut slowest = Duration::ZERO;
        for w in watchers {
            let (seen, last) = w.await.unwrap_or((0, fan_start));
            assert!(seen >= count, "a watcher saw {seen} of {count} pods ADDED");
            slowest = slowest.max(last.duration_since(fan_start));
        }
        println!(
            "watch fan-out: {count} pods created in {:.2} s with 10 watchers; the last watcher had every event {:.2} s after the first create ({:.0} events/s delivered in total)",
            elapsed.as_secs_f64(),
            slowest.as_secs_f64(),
            (10 * count) as f64 / slowest.as_secs_f64()
        );
        let rss = proc_field(pid, "status", "VmRSS:");
        let hwm = proc_field(pid, "status", "VmHWM:");
        println!("master RSS with {} pods: {:.1} MiB (peak {:.1} MiB)", 3 * count, rss as f64 / 1024.0, hwm as f64 / 1024.0);
        let db = std::fs::metadata(data.join("store.redb")).map(|m| m.len()).unwrap_or(0);
        println!("store file: {:.1} MiB for {} pods", db as f64 / 1048576.0, 3 * count);
    });
    drop(master);
}
