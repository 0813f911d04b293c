//! Tests of the store through its public API, plus a few hooks (batch
//! runner, writer pause, faulty disk) for what the API cannot force.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bramble_common::Kind;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use serde_json::{json, Value};

use super::writer::{self, Op, OpOutput};
use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

fn open(path: &Path) -> Store {
    Store::open(path, StoreOptions::default()).expect("store opens")
}

fn temp_store() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let store = open(&path);
    (dir, path, store)
}

fn pod_key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Pod, ns, name)
}

fn pod(name: &str, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": image}]}})
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion is a string")
        .parse()
        .expect("resourceVersion is a number")
}

fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn next_event(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(TIMEOUT, watch.next())
        .await
        .expect("an event arrives in time")
        .expect("the watch goes on")
}

#[tokio::test]
async fn create_get_and_list_by_namespace() {
    let (_dir, _path, store) = temp_store();
    assert_eq!(store.current_revision(), 0);
    let created = store
        .create(&pod_key("default", "web"), pod("web", "nginx"))
        .await
        .expect("create");
    assert_eq!(rv(&created), 1, "the first write is revision 1");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(uuid::Uuid::parse_str(created["metadata"]["uid"].as_str().unwrap_or("")).is_ok());
    let created_at = created["metadata"]["creationTimestamp"]
        .as_str()
        .expect("creationTimestamp");
    assert!(
        created_at.parse::<jiff::Timestamp>().is_ok(),
        "{created_at}"
    );
    assert!(created_at.ends_with('Z') && !created_at.contains('.'));

    store
        .create(&pod_key("default", "api"), pod("api", "caddy"))
        .await
        .expect("create");
    store
        .create(&pod_key("other", "web"), pod("web", "nginx"))
        .await
        .expect("create");
    store
        .create(
            &ObjectKey::new(Kind::Service, "default", "web"),
            json!({"metadata": {"name": "web"}, "spec": {}}),
        )
        .await
        .expect("create");
    store
        .create(
            &ObjectKey::new(Kind::Node, "", "pi-1"),
            json!({"metadata": {"name": "pi-1"}}),
        )
        .await
        .expect("create node");

    let got = store
        .get(&pod_key("default", "web"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got, created);
    assert!(store
        .get(&pod_key("default", "nope"))
        .await
        .expect("get")
        .is_none());

    let (default_pods, revision) = store.list(Kind::Pod, Some("default")).await.expect("list");
    assert_eq!(names(&default_pods), ["api", "web"]);
    assert_eq!(revision, 5);
    let (all_pods, _) = store.list(Kind::Pod, None).await.expect("list");
    assert_eq!(all_pods.len(), 3);
    let (nodes, _) = store.list(Kind::Node, None).await.expect("list");
    assert_eq!(names(&nodes), ["pi-1"]);
    assert!(nodes[0]["metadata"].get("namespace").is_none());
    let (none, _) = store.list(Kind::ConfigMap, None).await.expect("list");
    assert!(none.is_empty());
}

#[tokio::test]
async fn generate_name_appends_a_random_suffix() {
    let (_dir, _path, store) = temp_store();
    let body = json!({"metadata": {"generateName": "web-"}, "spec": {}});
    let a = store
        .create(&pod_key("default", ""), body.clone())
        .await
        .expect("create");
    let b = store
        .create(&pod_key("default", ""), body)
        .await
        .expect("create");
    let name_a = a["metadata"]["name"].as_str().expect("name").to_string();
    let name_b = b["metadata"]["name"].as_str().expect("name").to_string();
    assert_ne!(name_a, name_b);
    for name in [&name_a, &name_b] {
        assert_eq!(name.len(), "web-".len() + 5, "{name}");
        assert!(name.starts_with("web-"));
        assert!(name[4..]
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert!(store
            .get(&pod_key("default", name))
            .await
            .expect("get")
            .is_some());
    }
}

#[tokio::test]
async fn create_of_an_existing_key_is_already_exists() {
    let (_dir, _path, store) = temp_store();
    let key = pod_key("default", "web");
    store
        .create(&key, pod("web", "nginx"))
        .await
        .expect("create");
    let err = store
        .create(&key, pod("web", "caddy"))
        .await
        .expect_err("second create fails");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(err.to_string(), "pods \"web\" already exists");
    assert_eq!(
        store.current_revision(),
        1,
        "a rejected write takes no revision"
    );
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let (_dir, _path, store) = temp_store();
    let key = pod_key("default", "web");
    let v1 = store
        .create(&key, pod("web", "nginx"))
        .await
        .expect("create");
    let v2 = store
        .update(
            &key,
            pod("web", "caddy"),
            Precondition::resource_version(rv(&v1)),
        )
        .await
        .expect("update with the current version");
    assert_eq!(rv(&v2), 2);
    let err = store
        .update(
            &key,
            pod("web", "httpd"),
            Precondition::resource_version(rv(&v1)),
        )
        .await
        .expect_err("stale version");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let err = store
        .delete(&key, Precondition::uid("not-the-uid"))
        .await
        .expect_err("wrong uid");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = store
        .update(
            &pod_key("default", "nope"),
            pod("nope", "x"),
            Precondition::default(),
        )
        .await
        .expect_err("missing");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "pods \"nope\" not found");
    let stored = store.get(&key).await.expect("get").expect("exists");
    assert_eq!(stored["spec"]["containers"][0]["image"], "caddy");
}

#[tokio::test]
async fn generation_moves_only_when_the_spec_changes() {
    let (_dir, _path, store) = temp_store();
    let key = pod_key("default", "web");
    let v1 = store
        .create(&key, pod("web", "nginx"))
        .await
        .expect("create");
    let mut labelled = v1.clone();
    labelled["metadata"]["labels"] = json!({"tier": "front"});
    let v2 = store
        .update(&key, labelled, Precondition::default())
        .await
        .expect("update");
    assert_eq!(v2["metadata"]["generation"], 1, "metadata-only change");
    assert_eq!(rv(&v2), 2);
    let mut respec = v2.clone();
    respec["spec"]["containers"][0]["image"] = json!("caddy");
    let v3 = store
        .update(&key, respec, Precondition::default())
        .await
        .expect("update");
    assert_eq!(v3["metadata"]["generation"], 2, "spec change");
    assert_eq!(v3["metadata"]["uid"], v1["metadata"]["uid"]);
    assert_eq!(
        v3["metadata"]["creationTimestamp"],
        v1["metadata"]["creationTimestamp"]
    );
}

#[tokio::test]
async fn an_update_that_changes_nothing_writes_nothing() {
    let (_dir, _path, store) = temp_store();
    let key = pod_key("default", "web");
    let v1 = store
        .create(&key, pod("web", "nginx"))
        .await
        .expect("create");
    let commits = store.commit_count();
    let mut watch = store.watch(None, None, 0).expect("watch");
    let same = store
        .update(&key, pod("web", "nginx"), Precondition::default())
        .await
        .expect("no-op update");
    assert_eq!(same, v1);
    let same = store
        .update_status(&key, Value::Null, Precondition::default())
        .await
        .expect("no-op status update");
    assert_eq!(same, v1);
    assert_eq!(store.current_revision(), 1);
    assert_eq!(
        store.commit_count(),
        commits,
        "no transaction was committed"
    );
    // The next real change takes revision 2: nothing was spent.
    let v2 = store
        .update(&key, pod("web", "caddy"), Precondition::default())
        .await
        .expect("update");
    assert_eq!(rv(&v2), 2);
    let event = next_event(&mut watch).await;
    assert_eq!(event.revision, 2, "no event for the no-ops");
}

#[tokio::test]
async fn status_updates_change_only_status() {
    let (_dir, _path, store) = temp_store();
    let key = pod_key("default", "web");
    store
        .create(&key, pod("web", "nginx"))
        .await
        .expect("create");
    let running = store
        .update_status(&key, json!({"phase": "Running"}), Precondition::default())
        .await
        .expect("status update");
    assert_eq!(running["status"]["phase"], "Running");
    assert_eq!(running["metadata"]["generation"], 1);
    assert_eq!(rv(&running), 2);
    // A normal update cannot touch status.
    let mut body = pod("web", "caddy");
    body["status"] = json!({"phase": "Failed"});
    let updated = store
        .update(&key, body, Precondition::default())
        .await
        .expect("update");
    assert_eq!(updated["status"]["phase"], "Running");
    assert_eq!(updated["metadata"]["generation"], 2);
    let cm = ObjectKey::new(Kind::ConfigMap, "default", "cfg");
    store
        .create(&cm, json!({"metadata": {"name": "cfg"}, "data": {}}))
        .await
        .expect("create");
    let err = store
        .update_status(&cm, json!({}), Precondition::default())
        .await
        .expect_err("configmaps have no status");
    assert!(matches!(err, StoreError::Invalid { .. }));
}

#[tokio::test]
async fn graceful_deletion_marks_then_only_shortens_then_deletes() {
    let (_dir, _path, store) = temp_store();
    let key = pod_key("default", "web");
    store
        .create(&key, pod("web", "nginx"))
        .await
        .expect("create");

    let DeleteOutcome::Finalizing(marked) = store
        .delete_gracefully(&key, Precondition::default(), 30)
        .await
        .expect("mark")
    else {
        panic!("a graceful delete marks the pod");
    };
    let since = marked["metadata"]["deletionTimestamp"].clone();
    assert!(since.is_string());
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(store.get(&key).await.expect("get").is_some(), "still there");

    // A longer grace changes nothing; a shorter one shortens it.
    let revision = store.current_revision();
    store
        .delete_gracefully(&key, Precondition::default(), 60)
        .await
        .expect("longer");
    assert_eq!(store.current_revision(), revision);
    let DeleteOutcome::Finalizing(shorter) = store
        .delete_gracefully(&key, Precondition::default(), 5)
        .await
        .expect("shorter")
    else {
        panic!("still being deleted");
    };
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    assert_eq!(
        shorter["metadata"]["deletionTimestamp"], since,
        "the mark keeps its time"
    );

    // Grace 0 (or an ordinary delete) removes it.
    let outcome = store
        .delete_gracefully(&key, Precondition::default(), 0)
        .await
        .expect("force");
    assert!(matches!(outcome, DeleteOutcome::Deleted(_)));
    assert!(store.get(&key).await.expect("get").is_none());
}

#[tokio::test]
async fn an_update_with_status_writes_both_in_one_revision() {
    let (_dir, _path, store) = temp_store();
    let key = pod_key("default", "web");
    let created = store
        .create(&key, pod("web", "nginx"))
        .await
        .expect("create");
    let mut watch = store.watch(Some(Kind::Pod), None, 0).expect("watch");
    let mut body = created.clone();
    body["spec"]["nodeName"] = json!("pi-1");
    let status =
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]});
    // A stale precondition is refused and writes nothing.
    let err = store
        .update_with_status(
            &key,
            body.clone(),
            status.clone(),
            Precondition::resource_version(99),
        )
        .await
        .expect_err("stale");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let bound = store
        .update_with_status(
            &key,
            body.clone(),
            status.clone(),
            Precondition::resource_version(rv(&created)),
        )
        .await
        .expect("bind");
    assert_eq!(bound["spec"]["nodeName"], "pi-1");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(rv(&bound), rv(&created) + 1, "one revision for both");
    assert_eq!(bound["metadata"]["generation"], 2, "the spec changed");
    let event = next_event(&mut watch).await;
    assert_eq!(event.revision, rv(&bound));
    assert_eq!(event.object["status"]["phase"], "Pending");
    // The same again writes nothing.
    let again = store
        .update_with_status(&key, body, status, Precondition::default())
        .await
        .expect("no-op");
    assert_eq!(rv(&again), rv(&bound));
    assert_eq!(store.current_revision(), rv(&bound));
}

#[tokio::test]
async fn finalizers_delay_deletion_until_the_last_is_removed() {
    let (_dir, _path, store) = temp_store();
    let key = pod_key("default", "web");
    let mut body = pod("web", "nginx");
    body["metadata"]["finalizers"] = json!(["bramble.io/cleanup"]);
    store.create(&key, body).await.expect("create");
    let mut watch = store.watch(Some(Kind::Pod), None, 0).expect("watch");

    let outcome = store
        .delete(&key, Precondition::default())
        .await
        .expect("delete");
    let DeleteOutcome::Finalizing(marked) = outcome else {
        panic!("finalizers pending: {outcome:?}");
    };
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    let event = next_event(&mut watch).await;
    assert_eq!(event.event_type, EventType::Modified);
    // Deleting again changes nothing.
    let again = store
        .delete(&key, Precondition::default())
        .await
        .expect("delete");
    assert!(matches!(again, DeleteOutcome::Finalizing(_)));
    assert_eq!(store.current_revision(), rv(&marked));

    let mut released = marked.clone();
    released["metadata"]["finalizers"] = json!([]);
    // A client cannot clear deletionTimestamp.
    released["metadata"]["deletionTimestamp"] = Value::Null;
    let last = store
        .update(&key, released, Precondition::resource_version(rv(&marked)))
        .await
        .expect("finalizer removal");
    assert!(store.get(&key).await.expect("get").is_none(), "deleted");
    let event = next_event(&mut watch).await;
    assert_eq!(event.event_type, EventType::Deleted);
    assert_eq!(event.revision, rv(&last));
    assert_eq!(*event.object, last);

    // Without finalizers a delete removes at once, with a new revision.
    let key2 = pod_key("default", "api");
    let created = store.create(&key2, pod("api", "x")).await.expect("create");
    let DeleteOutcome::Deleted(final_object) = store
        .delete(&key2, Precondition::default())
        .await
        .expect("delete")
    else {
        panic!("no finalizers");
    };
    assert_eq!(rv(&final_object), rv(&created) + 1);
    let added = next_event(&mut watch).await;
    assert_eq!(added.event_type, EventType::Added);
    let deleted = next_event(&mut watch).await;
    assert_eq!(deleted.event_type, EventType::Deleted);
    assert_eq!(*deleted.object, final_object);
    let err = store
        .delete(&key2, Precondition::default())
        .await
        .expect_err("gone");
    assert!(matches!(err, StoreError::NotFound { .. }));
}

#[tokio::test]
async fn the_owner_index_follows_owner_references() {
    let (_dir, _path, store) = temp_store();
    let owner = |uid: &str| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid}]);
    let mut a = pod("a", "x");
    a["metadata"]["ownerReferences"] = owner("rs-1");
    let mut b = pod("b", "x");
    b["metadata"]["ownerReferences"] = owner("rs-1");
    store
        .create(&pod_key("default", "a"), a)
        .await
        .expect("create");
    let b = store
        .create(&pod_key("default", "b"), b)
        .await
        .expect("create");
    store
        .create(&pod_key("default", "c"), pod("c", "x"))
        .await
        .expect("create");
    let mut deps = store.dependents("rs-1").await.expect("dependents");
    deps.sort();
    assert_eq!(deps, [pod_key("default", "a"), pod_key("default", "b")]);
    assert!(store.dependents("rs").await.expect("dependents").is_empty());

    // Re-parenting b moves it in the index.
    let mut moved = b.clone();
    moved["metadata"]["ownerReferences"] = owner("rs-2");
    store
        .update(&pod_key("default", "b"), moved, Precondition::default())
        .await
        .expect("update");
    assert_eq!(
        store.dependents("rs-1").await.expect("dependents"),
        [pod_key("default", "a")]
    );
    assert_eq!(
        store.dependents("rs-2").await.expect("dependents"),
        [pod_key("default", "b")]
    );
    store
        .delete(&pod_key("default", "a"), Precondition::default())
        .await
        .expect("delete");
    assert!(store
        .dependents("rs-1")
        .await
        .expect("dependents")
        .is_empty());
}

#[tokio::test]
async fn a_watch_replays_from_a_revision_then_streams_live() {
    let (_dir, _path, store) = temp_store();
    for name in ["a", "b", "c"] {
        store
            .create(&pod_key("default", name), pod(name, "x"))
            .await
            .expect("create");
    }
    store
        .create(
            &ObjectKey::new(Kind::Service, "default", "svc"),
            json!({"metadata": {"name": "svc"}}),
        )
        .await
        .expect("create");
    store
        .create(&pod_key("other", "d"), pod("d", "x"))
        .await
        .expect("create");
    let mut watch = store
        .watch(Some(Kind::Pod), Some("default"), 1)
        .expect("watch");
    let replayed: Vec<u64> = vec![
        next_event(&mut watch).await.revision,
        next_event(&mut watch).await.revision,
    ];
    assert_eq!(replayed, [2, 3], "only pods in default, after revision 1");

    let writer = store.clone();
    let live = tokio::spawn(async move {
        writer
            .create(&pod_key("other", "e"), pod("e", "x"))
            .await
            .expect("create");
        let f = writer
            .create(&pod_key("default", "f"), pod("f", "x"))
            .await
            .expect("create");
        writer
            .update_status(
                &pod_key("default", "f"),
                json!({"phase": "Running"}),
                Precondition::default(),
            )
            .await
            .expect("status");
        f
    });
    let added = next_event(&mut watch).await;
    assert_eq!(added.event_type, EventType::Added);
    assert_eq!(added.key, pod_key("default", "f"));
    assert_eq!(added.revision, 7);
    let f = live.await.expect("writer task");
    assert_eq!(*added.object, f);
    let modified = next_event(&mut watch).await;
    assert_eq!(modified.event_type, EventType::Modified);
    assert_eq!(modified.revision, 8);
    assert_eq!(modified.event_type.as_str(), "MODIFIED");
    assert_eq!(
        serde_json::to_value(modified.event_type).expect("serializes"),
        json!("MODIFIED")
    );

    // From "now": only later changes.
    let mut from_now = store.watch(None, None, 0).expect("watch");
    store
        .create(&pod_key("default", "g"), pod("g", "x"))
        .await
        .expect("create");
    assert_eq!(next_event(&mut from_now).await.revision, 9);
}

#[tokio::test]
async fn a_lagging_watch_catches_up_from_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions::default().with_watch_channel_capacity(2);
    let store = Store::open(&dir.path().join("s.redb"), options).expect("open");
    let mut watch = store.watch(Some(Kind::Pod), None, 0).expect("watch");
    for i in 0..20 {
        let name = format!("p{i}");
        store
            .create(&pod_key("default", &name), pod(&name, "x"))
            .await
            .expect("create");
    }
    for expected in 1..=20 {
        assert_eq!(next_event(&mut watch).await.revision, expected);
    }
}

#[tokio::test]
async fn a_watch_far_behind_catches_up_one_page_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions::default().with_watch_channel_capacity(2);
    let store = Store::open(&dir.path().join("s.redb"), options).expect("open");
    let mut watch = store.watch(Some(Kind::Pod), None, 0).expect("watch");
    let total = super::watch::CATCH_UP_PAGE * 2 + 10;
    // Pods and ConfigMaps interleaved (the watch skips the ConfigMaps),
    // created concurrently so the writer commits them in groups.
    let creates = (0..total).map(|i| {
        let store = store.clone();
        async move {
            let name = format!("p{i}");
            store
                .create(&pod_key("default", &name), pod(&name, "x"))
                .await
                .expect("create pod");
            store
                .create(
                    &ObjectKey::new(Kind::ConfigMap, "default", &name),
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
                )
                .await
                .expect("create config map");
        }
    });
    futures_util::future::join_all(creates).await;
    let mut last = 0;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..total {
        let event = next_event(&mut watch).await;
        assert!(event.revision > last, "in revision order");
        last = event.revision;
        assert_eq!(event.key.kind, Kind::Pod);
        assert!(seen.insert(event.key.name.clone()), "once each");
        assert!(
            watch.buffered() <= super::watch::CATCH_UP_PAGE,
            "a catch-up holds at most one page ({} buffered)",
            watch.buffered()
        );
    }
    assert_eq!(seen.len(), total);
}

#[tokio::test]
async fn watching_from_a_compacted_revision_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions::default().with_event_log_capacity(5);
    let store = Store::open(&dir.path().join("s.redb"), options).expect("open");
    for i in 0..12 {
        let name = format!("p{i}");
        store
            .create(&pod_key("default", &name), pod(&name, "x"))
            .await
            .expect("create");
    }
    // Events 8..=12 remain.
    let err = store.watch(None, None, 3).expect_err("compacted");
    assert!(
        matches!(
            err,
            StoreError::Gone {
                requested: 3,
                oldest: 8
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "too old resource version: 3 (8)");
    assert!(matches!(
        store.watch(None, None, 6),
        Err(StoreError::Gone { .. })
    ));
    let mut watch = store.watch(None, None, 7).expect("7 is still covered");
    assert_eq!(next_event(&mut watch).await.revision, 8);
    assert_eq!(store.oldest_watchable_revision(), 7);
}

#[tokio::test]
async fn state_and_event_log_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("store.redb");
    let uid = {
        let store = open(&path);
        let created = store
            .create(&pod_key("default", "web"), pod("web", "nginx"))
            .await
            .expect("create");
        store
            .update_status(
                &pod_key("default", "web"),
                json!({"phase": "Running"}),
                Precondition::default(),
            )
            .await
            .expect("status");
        created["metadata"]["uid"].clone()
    };
    let store = open(&path);
    assert_eq!(store.current_revision(), 2);
    let got = store
        .get(&pod_key("default", "web"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got["metadata"]["uid"], uid);
    assert_eq!(got["status"]["phase"], "Running");
    let next = store
        .create(&pod_key("default", "api"), pod("api", "x"))
        .await
        .expect("create");
    assert_eq!(rv(&next), 3, "the revision counter continues");
    let mut watch = store.watch(None, None, 1).expect("watch from 1");
    assert_eq!(next_event(&mut watch).await.revision, 2, "log survived");
    assert_eq!(next_event(&mut watch).await.revision, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_are_group_committed() {
    let (_dir, _path, store) = temp_store();
    let commits_before = store.commit_count();
    // Hold the writer so that all 16 requests are queued before it drains.
    let pause = store
        .shared()
        .test_pause
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("pod-{i}");
            store
                .create(&pod_key("default", &name), pod(&name, "x"))
                .await
                .map(|object| (name, rv(&object)))
        }));
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    while store.shared().test_submitted.load(Ordering::Acquire) < 16 {
        assert!(std::time::Instant::now() < deadline, "requests not sent");
        std::thread::yield_now();
    }
    drop(pause);
    let mut revisions = BTreeMap::new();
    for task in tasks {
        let (name, revision) = task.await.expect("task").expect("create acknowledged");
        assert!(
            revisions.insert(revision, name).is_none(),
            "distinct revisions"
        );
    }
    assert_eq!(
        revisions.keys().copied().collect::<Vec<_>>(),
        (1..=16).collect::<Vec<_>>()
    );
    let (pods, revision) = store.list(Kind::Pod, Some("default")).await.expect("list");
    assert_eq!(pods.len(), 16);
    assert_eq!(revision, 16);
    let commits = store.commit_count() - commits_before;
    assert!(commits <= 2, "16 writes took {commits} commits");
}

#[tokio::test]
async fn a_rejected_write_does_not_fail_its_batch() {
    let (_dir, _path, store) = temp_store();
    let mut watch = store.watch(None, None, 0).expect("watch");
    let shared = store.shared().clone();
    let results = tokio::task::spawn_blocking(move || {
        writer::run_batch_for_test(
            shared,
            vec![
                Op::Create {
                    key: pod_key("default", "a"),
                    object: pod("a", "x"),
                },
                Op::Create {
                    key: pod_key("default", "a"),
                    object: pod("a", "y"),
                },
                Op::Update {
                    key: pod_key("default", "a"),
                    object: pod("a", "z"),
                    precondition: Precondition::resource_version(1),
                },
                Op::Delete {
                    key: pod_key("default", "missing"),
                    precondition: Precondition::default(),
                },
                Op::Create {
                    key: pod_key("default", "b"),
                    object: pod("b", "x"),
                },
            ],
        )
    })
    .await
    .expect("batch");
    assert!(matches!(&results[0], Ok(OpOutput::Object(o)) if rv(o) == 1));
    assert!(matches!(&results[1], Err(StoreError::AlreadyExists { .. })));
    assert!(
        matches!(&results[2], Ok(OpOutput::Object(o)) if rv(o) == 2),
        "the update sees the create before it in the same batch"
    );
    assert!(matches!(&results[3], Err(StoreError::NotFound { .. })));
    assert!(matches!(&results[4], Ok(OpOutput::Object(o)) if rv(o) == 3));
    assert_eq!(store.current_revision(), 3);
    assert_eq!(store.commit_count(), 1, "one transaction for the batch");
    for expected in 1..=3 {
        assert_eq!(next_event(&mut watch).await.revision, expected);
    }
}

#[test]
fn a_file_that_is_not_redb_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let bytes: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&path, &bytes).expect("write");
    let err = Store::open(&path, StoreOptions::default()).expect_err("refused");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a bramble store"), "{err}");
    assert!(
        err.to_string().contains("choose another --data-dir"),
        "{err}"
    );
    assert_eq!(fs::read(&path).expect("read"), bytes, "byte-identical");

    fs::write(&path, b"").expect("write");
    let err = Store::open(&path, StoreOptions::default()).expect_err("empty refused");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err:?}");
    assert_eq!(fs::read(&path).expect("read").len(), 0);
}

const OTHER_TABLE: redb::TableDefinition<'static, &str, u64> =
    redb::TableDefinition::new("someone-elses");

fn write_foreign_redb(path: &Path) -> redb::Database {
    let db = redb::Database::create(path).expect("create");
    let txn = db.begin_write().expect("txn");
    txn.open_table(OTHER_TABLE)
        .expect("table")
        .insert("k", &7)
        .expect("insert");
    txn.commit().expect("commit");
    db
}

#[test]
fn a_redb_file_without_our_marker_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    drop(write_foreign_redb(&path));
    let before = fs::read(&path).expect("read");
    let err = Store::open(&path, StoreOptions::default()).expect_err("refused");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err:?}");
    assert_eq!(fs::read(&path).expect("read"), before, "byte-identical");

    // The same for a foreign redb file left unclean (it needs recovery,
    // which must not run on it): copy it while its writer is live.
    let live_path = dir.path().join("live.redb");
    let unclean = dir.path().join("unclean.redb");
    let live = write_foreign_redb(&live_path);
    fs::copy(&live_path, &unclean).expect("copy");
    drop(live);
    let before = fs::read(&unclean).expect("read");
    let err = Store::open(&unclean, StoreOptions::default()).expect_err("refused");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err:?}");
    assert_eq!(fs::read(&unclean).expect("read"), before, "byte-identical");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    drop(open(&path));
    {
        let db = redb::Database::open(&path).expect("open");
        let txn = db.begin_write().expect("txn");
        txn.open_table(schema::META)
            .expect("meta")
            .insert(schema::META_SCHEMA, b"bramble-store/v9".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = Store::open(&path, StoreOptions::default()).expect_err("refused");
    assert!(
        matches!(err, OpenError::UnsupportedSchema { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_store_open_twice_is_locked() {
    let (_dir, path, store) = temp_store();
    store
        .create(&pod_key("default", "web"), pod("web", "x"))
        .await
        .expect("create");
    let err = Store::open(&path, StoreOptions::default()).expect_err("second open");
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("in use by another bramble master"));
    drop(store);
    let again = open(&path);
    assert_eq!(again.current_revision(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_during_writes_is_consistent_and_restores() {
    let (dir, path, store) = temp_store();
    let writer_store = store.clone();
    let writes = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..300 {
            let name = format!("p{i}");
            let object = writer_store
                .create(&pod_key("default", &name), pod(&name, "x"))
                .await
                .expect("create");
            acked.push((name, rv(&object)));
        }
        acked
    });
    // Let some writes land first.
    while store.current_revision() < 20 {
        tokio::task::yield_now().await;
    }
    let snap_path = dir.path().join("backup.redb");
    let info = store.snapshot(&snap_path).await.expect("snapshot");
    let acked = writes.await.expect("writer");
    assert!(info.revision >= 20);
    assert_eq!(info.path, snap_path);
    assert!(!dir.path().join("backup.redb.tmp").exists());
    let err = store.snapshot(&snap_path).await.expect_err("dest exists");
    assert!(matches!(err, StoreError::Invalid { .. }));

    // Restoring onto a running store is refused.
    let err = restore_snapshot(&snap_path, &path).expect_err("locked");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    drop(store);

    let restored = restore_snapshot(&snap_path, &path).expect("restore");
    assert_eq!(restored.revision, info.revision);
    assert_eq!(restored.objects, info.objects);
    let previous = restored.previous.expect("previous db kept");
    assert!(previous.to_string_lossy().contains(".before-restore-"));

    let store = open(&path);
    assert_eq!(store.current_revision(), info.revision);
    let (pods, _) = store.list(Kind::Pod, None).await.expect("list");
    let present: std::collections::BTreeSet<String> = names(&pods).into_iter().collect();
    // Exactly the writes acknowledged at or before the snapshot's revision.
    for (name, revision) in &acked {
        assert_eq!(
            present.contains(name),
            *revision <= info.revision,
            "{name} at {revision} vs snapshot at {}",
            info.revision
        );
    }
    assert_eq!(u64::try_from(pods.len()).ok(), Some(info.objects));
    drop(store);
    // The replaced database is intact beside it.
    let old = open(&previous);
    assert_eq!(old.current_revision(), 300);

    // A file that is not a snapshot is refused.
    let junk = dir.path().join("junk");
    fs::write(&junk, b"not a snapshot").expect("write");
    assert!(matches!(
        restore_snapshot(&junk, &path),
        Err(StoreError::Invalid { .. })
    ));
}

/// Set in the child process of the kill -9 test: the store path to write to.
const CRASH_CHILD_ENV: &str = "BRAMBLE_STORE_CRASH_CHILD";
const CRASH_TEST_NAME: &str = "store::tests::acknowledged_writes_survive_kill_9";

/// The child: writes pods from 4 tasks and prints each acknowledged one,
/// until it is killed.
fn crash_child(path: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = open(path);
        let mut tasks = Vec::new();
        for task in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100_000 {
                    let name = format!("t{task}-{i}");
                    let object = store
                        .create(&pod_key("default", &name), pod(&name, "x"))
                        .await
                        .expect("create");
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ACK {name} {}", rv(&object));
                    let _ = out.flush();
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Some(path) = std::env::var_os(CRASH_CHILD_ENV) {
        crash_child(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            CRASH_TEST_NAME,
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while acked.len() < 200 {
        let Some(line) = lines.next() else { break };
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (name, revision) = rest.split_once(' ').expect("ack format");
            acked.push((name.to_string(), revision.parse::<u64>().expect("revision")));
        }
    }
    child.kill().expect("SIGKILL");
    // Acks already printed before the kill count too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("ACK ") {
            if let Some((name, revision)) = rest.split_once(' ') {
                if let Ok(revision) = revision.parse::<u64>() {
                    acked.push((name.to_string(), revision));
                }
            }
        }
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the child was killed, not finished");
    assert!(
        acked.len() >= 200,
        "child acknowledged only {} writes",
        acked.len()
    );

    let store = open(&path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap_or(0);
        assert!(store.current_revision() >= max_acked);
        for (name, revision) in &acked {
            let object = store
                .get(&pod_key("default", name))
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("acknowledged {name} lost"));
            assert_eq!(rv(&object), *revision);
        }
        // The reopened store takes writes.
        store
            .create(&pod_key("default", "after"), pod("after", "x"))
            .await
            .expect("write after recovery");
    });
}

/// A file backend whose writes fail with ENOSPC while `full` is set.
#[derive(Debug)]
struct FullDisk {
    inner: FileBackend,
    full: Arc<AtomicBool>,
}

type BackendResult<T> = Result<T, std::io::Error>;

impl FullDisk {
    fn check(&self) -> BackendResult<()> {
        if self.full.load(Ordering::Acquire) {
            Err(std::io::Error::from_raw_os_error(28))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FullDisk {
    fn len(&self) -> BackendResult<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> BackendResult<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> BackendResult<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> BackendResult<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> BackendResult<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> BackendResult<()> {
        self.inner.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_the_store_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let full = Arc::new(AtomicBool::new(false));
    let opener_full = full.clone();
    let opener: Opener = Arc::new(move |path: &Path| {
        let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
        let backend = FullDisk {
            inner: FileBackend::new(file)?,
            full: opener_full.clone(),
        };
        redb::Builder::new().create_with_backend(backend)
    });
    let store = Store::open_with(&path, StoreOptions::default(), opener).expect("open");
    store
        .create(&pod_key("default", "before"), pod("before", "x"))
        .await
        .expect("create");

    full.store(true, Ordering::Release);
    let err = store
        .create(&pod_key("default", "lost"), pod("lost", "x"))
        .await
        .expect_err("disk full");
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("no space left on the master's data disk (")
            && message.ends_with("): free space; nothing was written"),
        "{message}"
    );
    assert_eq!(store.current_revision(), 1);

    // Space is freed: the writer reopens the file and writes work again.
    full.store(false, Ordering::Release);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let after = loop {
        match store
            .create(&pod_key("default", "after"), pod("after", "x"))
            .await
        {
            Ok(object) => break object,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "store not back yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    assert_eq!(rv(&after), 2, "the failed write took no revision");
    assert!(store
        .get(&pod_key("default", "before"))
        .await
        .expect("get")
        .is_some());
    assert!(store
        .get(&pod_key("default", "lost"))
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn an_unclean_store_of_ours_is_recovered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let copy = dir.path().join("crashed.redb");
    let store = open(&path);
    store
        .create(&pod_key("default", "web"), pod("web", "x"))
        .await
        .expect("create");
    // A copy of a file that is open for writing looks like a crashed master's.
    fs::copy(&path, &copy).expect("copy");
    drop(store);
    assert!(matches!(
        redb::Builder::new().open_read_only(&copy),
        Err(redb::DatabaseError::RepairAborted)
    ));
    let recovered = open(&copy);
    assert_eq!(recovered.current_revision(), 1);
    assert!(recovered
        .get(&pod_key("default", "web"))
        .await
        .expect("get")
        .is_some());
}
