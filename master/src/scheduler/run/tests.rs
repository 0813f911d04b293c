//! Tests of the running scheduler: its small pure helpers, and whole runs
//! against a real store in a temp dir (nodes and pods in; bindings,
//! conditions and events out).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::store::StoreOptions;

const TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Pure helpers

fn recorded(message: &str, written_at: Instant) -> RecordedEvent {
    RecordedEvent {
        key: ObjectKey::new(Kind::Event, "default", "p.1"),
        object: json!({}),
        message: message.into(),
        written_at,
    }
}

#[test]
fn events_are_rate_limited_and_deduplicated() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(30);
    assert_eq!(
        event_decision(None, "m", t0, interval),
        EventDecision::Create
    );
    let last = recorded("m", t0);
    let soon = t0 + Duration::from_secs(10);
    let later = t0 + Duration::from_secs(30);
    assert_eq!(
        event_decision(Some(&last), "m", soon, interval),
        EventDecision::Nothing
    );
    assert_eq!(
        event_decision(Some(&last), "other", soon, interval),
        EventDecision::Defer(later),
        "a new message within the interval waits for its end"
    );
    assert_eq!(
        event_decision(Some(&last), "m", later, interval),
        EventDecision::Bump
    );
    assert_eq!(
        event_decision(Some(&last), "other", later, interval),
        EventDecision::Create
    );
}

#[test]
fn unschedulable_status_is_written_only_when_it_changes() {
    let now = "2026-01-01T00:00:00Z";
    let fresh = json!({"metadata": {"name": "p"}, "spec": {}});
    let status = unschedulable_status(&fresh, "0/1 nodes are available: 1 Too many pods.", now)
        .expect("a fresh pod needs the condition");
    assert_eq!(
        status,
        json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Too many pods.",
                "lastTransitionTime": now,
            }],
        })
    );
    let written = json!({"metadata": {"name": "p"}, "status": status});
    assert_eq!(
        unschedulable_status(
            &written,
            "0/1 nodes are available: 1 Too many pods.",
            "later"
        ),
        None,
        "identical status is never rewritten"
    );
    let changed = unschedulable_status(&written, "no nodes available to schedule pods", "later")
        .expect("a new message is written");
    assert_eq!(
        changed["conditions"][0]["lastTransitionTime"], now,
        "the condition's status did not change, so neither does its transition time"
    );
    assert_eq!(
        changed["conditions"][0]["message"],
        "no nodes available to schedule pods"
    );
}

#[test]
fn scheduled_status_keeps_other_conditions_and_fields() {
    let pod = json!({"status": {
        "phase": "Pending",
        "qosClass": "BestEffort",
        "conditions": [
            {"type": "Other", "status": "True"},
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "m", "lastTransitionTime": "t0"},
        ],
    }});
    let status = scheduled_status(&pod, "t1").expect("changes");
    assert_eq!(
        status,
        json!({
            "phase": "Pending",
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "Other", "status": "True"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t1"},
            ],
        })
    );
    assert_eq!(scheduled_status(&json!({"status": status}), "t2"), None);

    let fresh = scheduled_status(&json!({"metadata": {}}), "t1").expect("changes");
    assert_eq!(
        fresh,
        json!({
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t1"},
            ],
        })
    );
    let running = json!({"status": {"phase": "Running"}});
    let status = scheduled_status(&running, "t1").expect("changes");
    assert_eq!(status["phase"], "Running", "an existing phase is kept");
}

#[test]
fn event_names_are_unique_even_when_the_clock_stands_still() {
    let mut last = i128::MAX - 10;
    let a = event_name(&mut last, "web");
    let b = event_name(&mut last, "web");
    assert_ne!(a, b);
    assert!(a.starts_with("web."), "{a}");
    let mut last = 0;
    let c = event_name(&mut last, "web");
    let nanos = i128::from_str_radix(c.trim_start_matches("web."), 16).expect("hex");
    assert!(nanos > 0);
}

#[test]
fn the_run_future_can_be_spawned() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), StoreOptions::default());
    let future = run(store, std::future::pending::<()>());
    assert_send(&future);
}

// ---------------------------------------------------------------------------
// Whole runs against a real store

fn open_store(dir: &Path, options: StoreOptions) -> Store {
    Store::open(&dir.join("store.redb"), options).expect("store opens")
}

fn fast_options() -> SchedulerOptions {
    SchedulerOptions {
        min_pass_interval: Duration::from_millis(5),
        ..SchedulerOptions::default()
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start(store: &Store, options: SchedulerOptions) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_with_options(store.clone(), options, async {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the scheduler stops when told")
            .expect("the scheduler task does not panic");
    }
}

fn node_json(name: &str, cpu: &str, memory: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/arch": "arm64",
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": name,
        }},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    })
}

fn pod_json(name: &str, cpu: &str, memory: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "app", "image": "nginx",
            "resources": {"requests": {"cpu": cpu, "memory": memory}},
        }]},
    })
}

fn owned(mut pod: Value, owner_uid: &str) -> Value {
    pod["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f",
        "uid": owner_uid, "controller": true,
    }]);
    pod
}

fn pod_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Pod, "default", name)
}

fn node_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Node, "", name)
}

async fn create(store: &Store, key: &ObjectKey, object: Value) -> Value {
    store.create(key, object).await.expect("create")
}

/// Waits, without sleeping, until the object at `key` satisfies `done`.
async fn wait_for(
    store: &Store,
    key: &ObjectKey,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut watch = store.watch(Some(key.kind), None, 0).expect("watch");
    let wait = async {
        if let Some(object) = store.get(key).await.expect("get") {
            if done(&object) {
                return object;
            }
        }
        loop {
            let event = watch.next().await.expect("the watch goes on");
            if event.key == *key && done(&event.object) {
                return Value::clone(&event.object);
            }
        }
    };
    match tokio::time::timeout(TIMEOUT, wait).await {
        Ok(object) => object,
        Err(_) => panic!(
            "timed out waiting for {what}; {key} is {:#}",
            store.get(key).await.ok().flatten().unwrap_or(Value::Null)
        ),
    }
}

/// Waits until the events of namespace `default` satisfy `done`; returns them.
async fn wait_for_events(store: &Store, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut watch = store.watch(Some(Kind::Event), None, 0).expect("watch");
    let wait = async {
        loop {
            let (events, _) = store
                .list(Kind::Event, Some("default"))
                .await
                .expect("list");
            if done(&events) {
                return events;
            }
            watch.next().await.expect("the watch goes on");
        }
    };
    match tokio::time::timeout(TIMEOUT, wait).await {
        Ok(events) => events,
        Err(_) => panic!(
            "timed out waiting for {what}; events: {:#}",
            Value::Array(
                store
                    .list(Kind::Event, Some("default"))
                    .await
                    .map(|(e, _)| e)
                    .unwrap_or_default()
            )
        ),
    }
}

fn node_of(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName").and_then(Value::as_str)
}

fn pod_scheduled(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
}

fn scheduled_true(pod: &Value) -> bool {
    pod_scheduled(pod).is_some_and(|c| c["status"] == "True")
}

fn unschedulable_message(pod: &Value) -> Option<&str> {
    pod_scheduled(pod)
        .filter(|c| c["status"] == "False" && c["reason"] == "Unschedulable")
        .and_then(|c| c["message"].as_str())
}

fn events_about<'a>(events: &'a [Value], pod: &str, reason: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
        .collect()
}

const THREE_NODES_NO_MEMORY: &str =
    "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient memory.";

#[tokio::test]
async fn binds_what_fits_and_explains_what_does_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), StoreOptions::default());
    create(
        &store,
        &node_key("pi-1"),
        node_json("pi-1", "4", "2Gi", true),
    )
    .await;
    create(
        &store,
        &node_key("pi-2"),
        node_json("pi-2", "4", "2Gi", true),
    )
    .await;
    create(
        &store,
        &node_key("pi-3"),
        node_json("pi-3", "4", "8Gi", false),
    )
    .await;
    for name in ["web-0", "web-1"] {
        let pod = owned(pod_json(name, "250m", "256Mi"), "rs-uid");
        create(&store, &pod_key(name), pod).await;
    }
    let big = create(&store, &pod_key("big"), pod_json("big", "100m", "4Gi")).await;
    let mut other = pod_json("custom", "1m", "1Mi");
    other["spec"]["schedulerName"] = json!("my-scheduler");
    create(&store, &pod_key("custom"), other).await;

    let running = start(&store, fast_options());

    // Both replicas bound, one per ready node, with PodScheduled=True.
    let mut nodes = Vec::new();
    for name in ["web-0", "web-1"] {
        let pod = wait_for(&store, &pod_key(name), "the replica to be bound", |p| {
            node_of(p).is_some() && scheduled_true(p)
        })
        .await;
        nodes.push(node_of(&pod).map(str::to_string));
    }
    nodes.sort();
    assert_eq!(nodes, vec![Some("pi-1".into()), Some("pi-2".into())]);

    // The big pod stays Pending with Kubernetes' explanation.
    let pending = wait_for(
        &store,
        &pod_key("big"),
        "the unschedulable condition",
        |p| unschedulable_message(p).is_some(),
    )
    .await;
    assert_eq!(unschedulable_message(&pending), Some(THREE_NODES_NO_MEMORY));
    assert_eq!(pending["status"]["phase"], "Pending");
    assert_eq!(node_of(&pending), None);

    let events = wait_for_events(&store, "the scheduler's events", |events| {
        events_about(events, "big", "FailedScheduling").len() == 1
            && events_about(events, "web-0", "Scheduled").len() == 1
            && events_about(events, "web-1", "Scheduled").len() == 1
    })
    .await;
    let failed = events_about(&events, "big", "FailedScheduling")[0];
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["message"], THREE_NODES_NO_MEMORY);
    assert_eq!(failed["count"], 1);
    assert_eq!(failed["involvedObject"]["kind"], "Pod");
    assert_eq!(failed["involvedObject"]["namespace"], "default");
    assert_eq!(failed["involvedObject"]["uid"], big["metadata"]["uid"]);
    assert_eq!(failed["source"]["component"], "default-scheduler");
    assert_eq!(failed["reportingComponent"], "default-scheduler");
    assert!(failed["firstTimestamp"].is_string());
    assert_eq!(failed["firstTimestamp"], failed["lastTimestamp"]);
    assert!(failed["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("big.")));
    let scheduled = events_about(&events, "web-0", "Scheduled")[0];
    assert_eq!(scheduled["type"], "Normal");
    let web0 = store
        .get(&pod_key("web-0"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        scheduled["message"],
        format!(
            "Successfully assigned default/web-0 to {}",
            node_of(&web0).unwrap_or("?")
        )
    );

    // A new node with room: the big pod is retried and bound there.
    create(
        &store,
        &node_key("pi-4"),
        node_json("pi-4", "4", "8Gi", true),
    )
    .await;
    let bound = wait_for(&store, &pod_key("big"), "the big pod to be bound", |p| {
        node_of(p).is_some() && scheduled_true(p)
    })
    .await;
    assert_eq!(node_of(&bound), Some("pi-4"));
    let condition = pod_scheduled(&bound).expect("condition");
    assert!(condition.get("message").is_none(), "{condition}");

    // The pod for another scheduler was never touched.
    let custom = store
        .get(&pod_key("custom"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(node_of(&custom), None);
    assert!(custom.get("status").is_none(), "{custom}");

    running.stop().await;
}

#[tokio::test]
async fn an_unchanged_explanation_is_not_rewritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), StoreOptions::default());
    create(
        &store,
        &node_key("pi-1"),
        node_json("pi-1", "4", "2Gi", true),
    )
    .await;
    create(
        &store,
        &node_key("pi-2"),
        node_json("pi-2", "4", "2Gi", true),
    )
    .await;
    create(
        &store,
        &node_key("pi-3"),
        node_json("pi-3", "4", "8Gi", false),
    )
    .await;
    create(&store, &pod_key("big"), pod_json("big", "100m", "4Gi")).await;
    let mut ssd = pod_json("wants-ssd", "100m", "64Mi");
    ssd["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    create(&store, &pod_key("wants-ssd"), ssd).await;

    let running = start(&store, fast_options());
    let before = wait_for(
        &store,
        &pod_key("big"),
        "the unschedulable condition",
        |p| unschedulable_message(p) == Some(THREE_NODES_NO_MEMORY),
    )
    .await;
    wait_for(&store, &pod_key("wants-ssd"), "its condition", |p| {
        unschedulable_message(p).is_some()
    })
    .await;
    wait_for_events(&store, "the first FailedScheduling", |events| {
        events_about(events, "big", "FailedScheduling").len() == 1
    })
    .await;

    // A node change that decides both pods again: the ssd pod now fits, the
    // big pod gets the same explanation as before.
    let mut node = store
        .get(&node_key("pi-1"))
        .await
        .expect("get")
        .expect("exists");
    node["metadata"]["labels"]["disk"] = json!("ssd");
    store
        .update(&node_key("pi-1"), node, Precondition::default())
        .await
        .expect("label the node");
    let ssd = wait_for(&store, &pod_key("wants-ssd"), "the ssd pod bound", |p| {
        node_of(p).is_some()
    })
    .await;
    assert_eq!(node_of(&ssd), Some("pi-1"));

    let after = store
        .get(&pod_key("big"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "the same explanation is not written again"
    );
    let (events, _) = store
        .list(Kind::Event, Some("default"))
        .await
        .expect("list");
    let failed = events_about(&events, "big", "FailedScheduling");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["count"], 1, "within 30 s the event is not bumped");
    running.stop().await;
}

#[tokio::test]
async fn repeated_failures_bump_one_event_and_new_reasons_make_a_new_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), StoreOptions::default());
    create(
        &store,
        &node_key("pi-1"),
        node_json("pi-1", "4", "2Gi", true),
    )
    .await;
    create(
        &store,
        &node_key("pi-2"),
        node_json("pi-2", "4", "2Gi", true),
    )
    .await;
    create(
        &store,
        &node_key("pi-3"),
        node_json("pi-3", "4", "2Gi", false),
    )
    .await;
    create(&store, &pod_key("big"), pod_json("big", "100m", "4Gi")).await;
    let options = SchedulerOptions {
        event_interval: Duration::ZERO,
        ..fast_options()
    };
    let running = start(&store, options);
    wait_for_events(&store, "the first FailedScheduling", |events| {
        events_about(events, "big", "FailedScheduling").len() == 1
    })
    .await;

    // Same explanation again: the count goes up on the same event.
    let mut node = store
        .get(&node_key("pi-1"))
        .await
        .expect("get")
        .expect("exists");
    node["metadata"]["labels"]["zone"] = json!("attic");
    store
        .update(&node_key("pi-1"), node, Precondition::default())
        .await
        .expect("label the node");
    let events = wait_for_events(&store, "the event count to go up", |events| {
        let failed = events_about(events, "big", "FailedScheduling");
        failed.len() == 1 && failed[0]["count"] == 2
    })
    .await;
    assert_eq!(
        events_about(&events, "big", "FailedScheduling")[0]["message"],
        THREE_NODES_NO_MEMORY
    );

    // A new explanation: a new condition message and a new event.
    let mut node = store
        .get(&node_key("pi-3"))
        .await
        .expect("get")
        .expect("exists");
    node["status"]["conditions"][0]["status"] = json!("True");
    store
        .update_status(
            &node_key("pi-3"),
            node["status"].clone(),
            Precondition::default(),
        )
        .await
        .expect("node becomes ready");
    let message = "0/3 nodes are available: 3 Insufficient memory.";
    wait_for(&store, &pod_key("big"), "the new explanation", |p| {
        unschedulable_message(p) == Some(message)
    })
    .await;
    let events = wait_for_events(&store, "a second event", |events| {
        events_about(events, "big", "FailedScheduling").len() == 2
    })
    .await;
    let mut messages: Vec<&str> = events_about(&events, "big", "FailedScheduling")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    messages.sort();
    assert_eq!(messages, vec![THREE_NODES_NO_MEMORY, message]);
    running.stop().await;
}

#[tokio::test]
async fn without_nodes_pods_wait_and_are_bound_when_a_node_arrives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), StoreOptions::default());
    let running = start(&store, fast_options());
    create(&store, &pod_key("early"), pod_json("early", "100m", "64Mi")).await;
    wait_for(&store, &pod_key("early"), "the no-nodes explanation", |p| {
        unschedulable_message(p) == Some("no nodes available to schedule pods")
    })
    .await;
    let mut deleting = pod_json("leaving", "1m", "1Mi");
    deleting["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&store, &pod_key("leaving"), deleting).await;
    store
        .delete(&pod_key("leaving"), Precondition::default())
        .await
        .expect("mark for deletion");

    create(
        &store,
        &node_key("pi-1"),
        node_json("pi-1", "1", "1Gi", true),
    )
    .await;
    let pod = wait_for(&store, &pod_key("early"), "the pod to be bound", |p| {
        node_of(p).is_some()
    })
    .await;
    assert_eq!(node_of(&pod), Some("pi-1"));
    let leaving = store
        .get(&pod_key("leaving"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(node_of(&leaving), None, "a pod being deleted is not bound");
    running.stop().await;
}

/// Many pods at once, with a watch buffer so small that the scheduler's
/// watches fall behind and it has to list again: every pod ends up bound,
/// none twice, and no node over its pod limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_pods_is_bound_in_batches() {
    let options = StoreOptions::default()
        .with_watch_channel_capacity(16)
        .with_event_log_capacity(64);
    let scheduler = SchedulerOptions {
        max_pods_per_pass: 200,
        ..fast_options()
    };
    flood(1000, 4, options, scheduler).await;
}

/// The figure: 10,000 pods (`cargo test -- --ignored` to run it; it
/// prints how long the binding took).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow in debug builds; run on demand for the timing"]
async fn ten_thousand_pods() {
    flood(
        10_000,
        40,
        StoreOptions::default(),
        SchedulerOptions::default(),
    )
    .await;
}

/// Creates `pods` pods of one owner, waits until all are bound on `nodes`
/// nodes, and checks they are spread evenly and bound once each.
async fn flood(pods: usize, nodes: usize, options: StoreOptions, scheduler: SchedulerOptions) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), options);
    let per_node_limit = pods.div_ceil(nodes) + 10;
    for i in 0..nodes {
        let name = format!("pi-{i}");
        let mut node = node_json(&name, "64", "64Gi", true);
        node["status"]["allocatable"]["pods"] = json!(per_node_limit.to_string());
        create(&store, &node_key(&name), node).await;
    }
    let running = start(&store, scheduler);
    let creates = (0..pods).map(|i| {
        let store = store.clone();
        async move {
            let name = format!("p-{i:05}");
            let pod = owned(pod_json(&name, "10m", "16Mi"), "rs-flood");
            store.create(&pod_key(&name), pod).await.expect("create");
        }
    });
    futures_util::future::join_all(creates).await;

    let started = std::time::Instant::now();
    let wait = async {
        loop {
            // Watch first, then list: no binding falls in between.
            let mut watch = store.watch(Some(Kind::Pod), None, 0).expect("watch");
            let (all, _) = store.list(Kind::Pod, Some("default")).await.expect("list");
            let mut bound: BTreeSet<String> = all
                .iter()
                .filter(|p| node_of(p).is_some())
                .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect();
            while bound.len() < pods {
                match watch.next().await {
                    Some(event) if node_of(&event.object).is_some() => {
                        bound.insert(event.key.name.clone());
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            if bound.len() == pods {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .expect("every pod is bound in time");
    let (all, _) = store.list(Kind::Pod, Some("default")).await.expect("list");
    let mut per_node = BTreeMap::new();
    for pod in &all {
        *per_node
            .entry(node_of(pod).unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(per_node.values().sum::<usize>(), pods);
    assert!(
        per_node.values().all(|&n| n == pods / nodes),
        "{per_node:?}"
    );
    // The Scheduled event is written after the binding: wait for the last
    // ones (a bounded wait), then check there is exactly one per pod.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let scheduled = loop {
        let (events, _) = store
            .list(Kind::Event, Some("default"))
            .await
            .expect("list");
        let scheduled = events.iter().filter(|e| e["reason"] == "Scheduled").count();
        if scheduled >= pods || std::time::Instant::now() >= deadline {
            break scheduled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(scheduled, pods, "each pod is bound exactly once");
    eprintln!("{pods} pods bound in {:?}", started.elapsed());
    running.stop().await;
}

#[tokio::test]
async fn a_bind_from_a_stale_cache_conflicts_and_the_newer_pod_is_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), StoreOptions::default());
    let node = create(
        &store,
        &node_key("pi-1"),
        node_json("pi-1", "4", "4Gi", true),
    )
    .await;
    let v1 = create(&store, &pod_key("p"), pod_json("p", "100m", "64Mi")).await;
    let mut touched = v1.clone();
    touched["metadata"]["labels"] = json!({"touched": "yes"});
    let v2 = store
        .update(&pod_key("p"), touched, Precondition::default())
        .await
        .expect("update");
    let uid = v1["metadata"]["uid"].as_str().expect("uid").to_string();

    // The cache lags behind the store: it holds the first version.
    let mut scheduler = Scheduler::new(store.clone(), fast_options());
    scheduler.upsert_node(object_revision(&node), &node);
    scheduler.upsert_pod(object_revision(&v1), Arc::new(v1.clone()));
    scheduler.pass().await;
    let stored = store
        .get(&pod_key("p"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(node_of(&stored), None, "the stale bind was refused");
    assert_eq!(object_revision(&stored), object_revision(&v2));
    assert_eq!(scheduler.memory[&uid].attempted, None);
    assert_eq!(scheduler.next_retry, None, "a conflict waits for the watch");

    // The watch brings the newer pod: it is decided again and bound.
    scheduler.upsert_pod(object_revision(&v2), Arc::new(v2));
    assert!(scheduler.pass_due.is_some());
    scheduler.pass().await;
    let stored = store
        .get(&pod_key("p"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(node_of(&stored), Some("pi-1"));
    assert!(scheduled_true(&stored));
    assert_eq!(stored["metadata"]["labels"]["touched"], "yes");
}

/// A pod as the store returns it, without going through a store.
fn stored_pod(name: &str, uid: &str, revision: u64) -> Value {
    let mut pod = pod_json(name, "100m", "64Mi");
    pod["metadata"]["namespace"] = json!("default");
    pod["metadata"]["uid"] = json!(uid);
    pod["metadata"]["resourceVersion"] = json!(revision.to_string());
    pod
}

// The time logic takes `now` as an argument or compares with instants far
// from it, so these tests need no paused clock (tokio's `test-util` is not
// enabled for this crate).

#[tokio::test]
async fn passes_are_coalesced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), StoreOptions::default());
    let mut scheduler = Scheduler::new(store, SchedulerOptions::default());
    // As if a pass had just started (an hour ahead: immune to a slow test).
    let last = Instant::now() + Duration::from_secs(3600);
    scheduler.last_pass = Some(last);
    for i in 0..3u64 {
        let name = format!("p{i}");
        scheduler.upsert_pod(i + 1, Arc::new(stored_pod(&name, &name, i + 1)));
    }
    assert_eq!(
        scheduler.pass_due,
        Some(last + Duration::from_millis(100)),
        "three new pods, one pass, not before the interval ends"
    );
    let before = Instant::now();
    scheduler.last_pass = before.checked_sub(Duration::from_secs(5));
    scheduler.pass_due = None;
    scheduler.upsert_pod(9, Arc::new(stored_pod("p9", "p9", 9)));
    let due = scheduler.pass_due.expect("a pass is due");
    assert!(
        before <= due && due <= Instant::now(),
        "long after the last pass, at once"
    );

    // A pod bound elsewhere, not waiting: its changes request nothing.
    scheduler.pass_due = None;
    let mut bound = stored_pod("b", "b", 10);
    bound["spec"]["nodeName"] = json!("pi-1");
    scheduler.upsert_pod(10, Arc::new(bound));
    assert_eq!(scheduler.pass_due, None);
}

#[tokio::test]
async fn a_new_explanation_within_the_event_interval_waits_for_its_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path(), StoreOptions::default());
    let mut scheduler = Scheduler::new(store, SchedulerOptions::default());
    scheduler.upsert_pod(1, Arc::new(stored_pod("p", "u1", 1)));
    let t0 = Instant::now();
    scheduler.memory.entry("u1".into()).or_default().event =
        Some(recorded("0/1 nodes are available: 1 Too many pods.", t0));

    let actions = scheduler.plan(t0 + Duration::from_secs(10));
    assert_eq!(actions.len(), 1);
    match &actions[0].0 {
        Action::Unschedulable {
            message,
            status: Some(_),
            event: None,
            ..
        } => assert_eq!(message, "no nodes available to schedule pods"),
        _ => panic!("expected a status write without an event"),
    }
    assert_eq!(
        scheduler.memory["u1"].retry_at,
        Some(t0 + Duration::from_secs(30))
    );
    assert!(
        scheduler.plan(t0 + Duration::from_secs(29)).is_empty(),
        "nothing changed: not decided again before the interval ends"
    );

    let actions = scheduler.plan(t0 + Duration::from_secs(30));
    assert_eq!(actions.len(), 1);
    assert!(
        matches!(
            &actions[0].0,
            Action::Unschedulable {
                event: Some(EventWrite::Create { .. }),
                ..
            }
        ),
        "the new explanation is recorded once the interval is over"
    );
}
