//! Deletes Events a while after their last change (`--event-ttl`, one hour
//! by default as in kube-apiserver, where each Event's etcd lease does it).
//!
//! The task lists the Events once, then follows their changes and keeps
//! only each Event's expiry in memory; every sweep deletes the expired ones
//! with a `resourceVersion` precondition, so an Event bumped meanwhile
//! lives on.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bramble_common::Kind;
use serde_json::Value;

use crate::store::{EventType, ObjectKey, Precondition, Store, StoreError};

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// When an Event stored at `revision` expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expiry {
    at_unix: i64,
    revision: u64,
}

fn revision_of(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The last time an Event was written, from its timestamps (the latest of
/// `lastTimestamp`, `eventTime`, `creationTimestamp`), else `now`.
fn last_written(object: &Value, now: i64) -> i64 {
    [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|pointer| object.pointer(pointer).and_then(Value::as_str))
    .filter_map(|text| text.parse::<jiff::Timestamp>().ok())
    .map(|at| at.as_second())
    .max()
    .unwrap_or(now)
}

/// Runs until `shutdown`, deleting Events `ttl` after their last change.
pub async fn run(store: Store, ttl: Duration, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let ttl_seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let sweep_every = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let mut expiries: HashMap<ObjectKey, Expiry> = HashMap::new();
        let revision = store.current_revision();
        let mut watch = match store.watch(Some(Kind::Event), None, revision) {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "cannot watch events for their TTL; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    () = &mut shutdown => return,
                }
            }
        };
        let now = jiff::Timestamp::now().as_second();
        match store.list(Kind::Event, None).await {
            Ok((events, _)) => {
                for event in events {
                    let key = key_of(&event);
                    expiries.insert(
                        key,
                        Expiry {
                            at_unix: last_written(&event, now).saturating_add(ttl_seconds),
                            revision: revision_of(&event),
                        },
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list events for their TTL"),
        }
        let mut sweep = tokio::time::interval(sweep_every);
        loop {
            tokio::select! {
                event = watch.next() => {
                    let Some(event) = event else { break };
                    match event.event_type {
                        EventType::Deleted => { expiries.remove(&event.key); }
                        EventType::Added | EventType::Modified => {
                            let now = jiff::Timestamp::now().as_second();
                            expiries.insert(event.key.clone(), Expiry {
                                at_unix: now.saturating_add(ttl_seconds),
                                revision: event.revision,
                            });
                        }
                    }
                }
                _ = sweep.tick() => expire(&store, &mut expiries).await,
                () = &mut shutdown => return,
            }
        }
    }
}

fn key_of(event: &Value) -> ObjectKey {
    let text = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    ObjectKey::new(
        Kind::Event,
        text("/metadata/namespace"),
        text("/metadata/name"),
    )
}

async fn expire(store: &Store, expiries: &mut HashMap<ObjectKey, Expiry>) {
    let now = jiff::Timestamp::now().as_second();
    let expired: Vec<(ObjectKey, Expiry)> = expiries
        .iter()
        .filter(|(_, expiry)| expiry.at_unix <= now)
        .map(|(key, expiry)| (key.clone(), *expiry))
        .collect();
    let deletes = expired.into_iter().map(|(key, expiry)| async move {
        let result = store
            .delete(&key, Precondition::resource_version(expiry.revision))
            .await;
        (key, result)
    });
    for (key, result) in futures_util::future::join_all(deletes).await {
        match result {
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                expiries.remove(&key);
            }
            // Changed since: its watch event gave it a new expiry.
            Err(StoreError::Conflict { .. }) => {}
            Err(error) => {
                tracing::warn!(%error, event = %key, "cannot delete an expired event; retrying at the next sweep")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_latest_timestamp_counts() {
        let event = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
            "lastTimestamp": "2026-01-01T01:00:00Z"});
        assert_eq!(last_written(&event, 0), 1_767_229_200);
        assert_eq!(last_written(&json!({}), 42), 42);
    }

    #[tokio::test]
    async fn events_go_a_ttl_after_their_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("store.redb"),
            crate::store::StoreOptions::default(),
        )
        .unwrap();
        let create = |name: &'static str| {
            let store = store.clone();
            async move {
                let event = json!({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": "default"},
                    "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "X"});
                store
                    .create(&ObjectKey::new(Kind::Event, "default", name), event)
                    .await
                    .unwrap();
            }
        };
        let names = || async {
            let (events, _) = store.list(Kind::Event, None).await.unwrap();
            events
                .iter()
                .map(|e| e["metadata"]["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        // "early" is found by the first list, "late" through the watch,
        // written two seconds later; each lives 4 s after its write.
        create("early").await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(store.clone(), Duration::from_secs(4), async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_secs(2)).await;
        create("late").await;
        assert_eq!(names().await, ["early", "late"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while names().await.contains(&"early".to_string()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the early event was not deleted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            names().await,
            ["late"],
            "the late event is kept for its TTL"
        );
        while !names().await.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the late event was not deleted after its TTL"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(());
        task.await.unwrap();
    }
}
