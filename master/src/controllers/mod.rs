//! Controllers: loops that watch the store and drive it toward what the
//! objects ask for, like kube-controller-manager. One file per controller,
//! all on one shared runtime ([`runtime`]) over one shared cache
//! ([`cache`]); [`run`] starts them all.

pub mod builtin_services;
pub mod cache;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod garbage_collector;
pub mod job;
pub mod namespace;
pub mod node_lifecycle;
pub mod node_taints;
pub mod pod_termination;
pub mod pods;
pub mod replicaset;
pub mod runtime;
pub mod service_ip;
pub mod service_lb;
pub mod taint_eviction;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bramble_common::Kind;
use serde_json::Value;

use crate::store::StoreError;

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// A store read or write failed (a conflict means the object changed:
    /// the next reconcile sees the new one).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored object cannot be read as its kind.
    #[error("{object}: cannot be read: {reason}")]
    Malformed {
        /// The object.
        object: String,
        /// What is wrong.
        reason: String,
    },
}

impl ControllerError {
    /// True for a write that lost a race (409): retried at once, not logged
    /// as a failure.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ControllerError::Store(StoreError::Conflict { .. }))
    }
}

/// An RFC 3339 time as seconds since the epoch.
pub fn parse_time(value: &Value) -> Option<i64> {
    value
        .as_str()?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// `seconds` since the epoch as Kubernetes writes times (RFC 3339, UTC,
/// whole seconds).
pub fn format_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `metadata.labels` of a JSON object.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The owner reference a controller puts on what it creates
/// (`controller: true`, `blockOwnerDeletion: true`).
pub fn controller_ref(owner: &Value) -> Value {
    serde_json::json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The uid of the owner reference with `controller: true` of `object`.
pub fn controller_uid(object: &Value) -> Option<&str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// Tuning of every controller. `Default` is what the master uses.
#[derive(Debug, Clone, Default)]
pub struct ControllerOptions {
    /// The loop settings of each controller.
    pub loop_options: runtime::LoopOptions,
}

/// Starts every controller on one shared cache and runs them until
/// `shutdown`.
pub async fn run<F, Fut>(
    store: crate::store::Store,
    events: crate::events::EventRecorder,
    options: ControllerOptions,
    shutdown: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let kinds = [
        Kind::Pod,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::Namespace,
        Kind::DaemonSet,
        Kind::Node,
        Kind::ControllerRevision,
        Kind::Job,
    ];
    let (cache, feeder) = cache::Cache::new(&kinds);
    let loop_options = options.loop_options.clone();
    let termination = runtime::Controller::new(
        Arc::new(pod_termination::PodTermination::new(
            store.clone(),
            cache.clone(),
        )),
        loop_options.clone(),
    );
    let replicasets = runtime::Controller::new(
        Arc::new(replicaset::ReplicaSetController::new(
            store.clone(),
            cache.clone(),
            events.clone(),
        )),
        loop_options.clone(),
    );
    let deployments = runtime::Controller::new(
        Arc::new(deployment::DeploymentController::new(
            store.clone(),
            cache.clone(),
            events.clone(),
        )),
        loop_options.clone(),
    );
    let daemonsets = runtime::Controller::new(
        Arc::new(daemonset::DaemonSetController::new(
            store.clone(),
            cache.clone(),
            events.clone(),
        )),
        loop_options.clone(),
    );
    let jobs = runtime::Controller::new(
        Arc::new(job::JobController::new(
            store.clone(),
            cache.clone(),
            events.clone(),
        )),
        loop_options.clone(),
    );
    let taints = runtime::Controller::new(
        Arc::new(node_taints::NodeTaints::new(store.clone(), cache.clone())),
        loop_options.clone(),
    );
    let evictions = runtime::Controller::new(
        Arc::new(taint_eviction::TaintEviction::new(
            store.clone(),
            cache.clone(),
            events.clone(),
        )),
        loop_options.clone(),
    );
    let gc = Arc::new(garbage_collector::GarbageCollector::new(
        store.clone(),
        cache.clone(),
    ));
    let collector = runtime::Controller::new(gc.clone(), loop_options.clone());
    let namespaces = runtime::Controller::new(
        Arc::new(namespace::NamespaceController::new(
            store.clone(),
            cache.clone(),
        )),
        loop_options.clone(),
    );
    let subscribers = vec![
        termination.subscriber(),
        replicasets.subscriber(),
        deployments.subscriber(),
        daemonsets.subscriber(),
        jobs.subscriber(),
        taints.subscriber(),
        evictions.subscriber(),
        collector.subscriber(),
        namespaces.subscriber(),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(termination.run(cache.clone(), shutdown()));
    tasks.spawn(replicasets.run(cache.clone(), shutdown()));
    tasks.spawn(deployments.run(cache.clone(), shutdown()));
    tasks.spawn(daemonsets.run(cache.clone(), shutdown()));
    tasks.spawn(jobs.run(cache.clone(), shutdown()));
    tasks.spawn(taints.run(cache.clone(), shutdown()));
    tasks.spawn(evictions.run(cache.clone(), shutdown()));
    tasks.spawn(garbage_collector::follow_uncached(
        gc,
        collector.queue(),
        garbage_collector::uncached_kinds(&cache),
        shutdown(),
    ));
    tasks.spawn(collector.run(cache.clone(), shutdown()));
    tasks.spawn(namespaces.run(cache.clone(), shutdown()));
    tasks.spawn(feeder.run(store, subscribers, shutdown()));
    while tasks.join_next().await.is_some() {}
}
