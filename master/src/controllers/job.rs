//! The Job controller (Kubernetes' `pkg/controller/job`): runs pods of
//! `spec.template` until `completions` of them succeed.
//!
//! - At most `parallelism` pods at once, never more than the completions
//!   still needed; without `completions`, until one succeeds (work queue).
//! - `completionMode: Indexed`: one completion per index `0..completions`;
//!   each pod carries the `batch.kubernetes.io/job-completion-index`
//!   annotation and label, the `JOB_COMPLETION_INDEX` variable and the
//!   hostname `{job}-{index}`; `status.completedIndexes` lists the done
//!   ones (`0-2,4`).
//! - Pods are named `{job}-{5 random}` (`{job}-{index}-{5 random}`) and
//!   labelled `job-name`, `batch.kubernetes.io/job-name`, `controller-uid`
//!   and `batch.kubernetes.io/controller-uid`, owned by the Job.
//! - Failures: each failed pod (with `restartPolicy: OnFailure`, each
//!   container restart) counts against `backoffLimit` (default 6); a new
//!   pod after a failure waits 10 s doubling per failure up to 6 min, as
//!   Kubernetes' pod failure backoff. Past the limit: `Failed`, reason
//!   `BackoffLimitExceeded`. Active longer than `activeDeadlineSeconds`:
//!   `Failed`, reason `DeadlineExceeded`. The active pods are deleted.
//! - Done: `SuccessCriteriaMet` and `Complete` (what `kubectl wait
//!   --for=condition=complete` waits for), `completionTime`, event
//!   `Completed`; the pods stay, shown `Completed` by `kubectl get pods`.
//! - `suspend: true` deletes the active pods (`Suspended` condition,
//!   `JobSuspended`); resuming restarts the clock (`JobResumed`).
//! - `ttlSecondsAfterFinished`: the finished Job is deleted that long
//!   after it finished (its pods with it, by the garbage collector), as the
//!   TTL-after-finished controller does.
//! - Status `active`, `ready`, `succeeded`, `failed`, `startTime`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_common::api::{EnvVar, Job, PodTemplateSpec};
use bramble_common::Kind;
use futures_util::future::join_all;
use serde_json::{json, Value};

use super::cache::{Cache, Change, PodInfo};
use super::runtime::{Action, Expectations, Reconciler};
use super::{pods, ControllerError};
use crate::events::EventRecorder;
use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// The event source of this controller.
pub const NAME: &str = "job-controller";
/// Annotation and label with an Indexed Job pod's index.
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// First delay before a pod replaces a failed one.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest delay before a pod replaces a failed one.
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// The Job controller.
pub struct JobController {
    store: Store,
    cache: Cache,
    events: EventRecorder,
    expectations: Expectations,
    /// Per Job uid: the failure count last seen and when it grew.
    failures_seen: Mutex<HashMap<String, (i64, tokio::time::Instant)>>,
}

impl JobController {
    /// The controller over `store`, reading `cache`.
    pub fn new(store: Store, cache: Cache, events: EventRecorder) -> JobController {
        JobController {
            store,
            cache,
            events,
            expectations: Expectations::default(),
            failures_seen: Mutex::new(HashMap::new()),
        }
    }

    /// How long to wait before creating, after `failed` failures.
    fn backoff_remaining(&self, uid: &str, failed: i64) -> Duration {
        if failed <= 0 {
            return Duration::ZERO;
        }
        let mut seen = self.failures_seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let entry = seen.entry(uid.to_string()).or_insert((0, now));
        if entry.0 != failed {
            *entry = (failed, now);
        }
        let exponent = u32::try_from(failed - 1).unwrap_or(u32::MAX).min(10);
        let delay = BACKOFF_BASE
            .saturating_mul(1u32 << exponent)
            .min(BACKOFF_MAX);
        (entry.1 + delay).saturating_duration_since(now)
    }
}

/// Indexes as Kubernetes writes `completedIndexes`: sorted, runs of three
/// or more as `a-b` (`0-2,4,6-7`... Kubernetes writes runs of two as
/// `6-7` too).
pub fn format_indexes(indexes: &BTreeSet<i64>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn condition_true(status: &Value, type_: &str) -> bool {
    status["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

/// The conditions with `type_` set (kept as it was when unchanged).
fn with_condition(
    conditions: &[Value],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) -> Vec<Value> {
    let previous = conditions.iter().find(|c| c["type"] == type_);
    if previous.is_some_and(|c| c["status"] == status && c["reason"] == reason) {
        return conditions.to_vec();
    }
    let mut list: Vec<Value> = conditions
        .iter()
        .filter(|c| c["type"] != type_)
        .cloned()
        .collect();
    list.push(json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastProbeTime": now, "lastTransitionTime": now,
    }));
    list
}

/// What the Job's pods say.
struct Counts {
    active: Vec<Arc<PodInfo>>,
    succeeded: i64,
    failed: i64,
    ready: i64,
    succeeded_indexes: BTreeSet<i64>,
}

fn count(pods: &[Arc<PodInfo>], on_failure: bool, completions: Option<i64>) -> Counts {
    let mut counts = Counts {
        active: Vec::new(),
        succeeded: 0,
        failed: 0,
        ready: 0,
        succeeded_indexes: BTreeSet::new(),
    };
    for pod in pods {
        match pod.phase.as_str() {
            "Succeeded" => {
                counts.succeeded += 1;
                if let Some(i) = pod.completion_index {
                    if completions.is_none_or(|c| i < c) {
                        counts.succeeded_indexes.insert(i);
                    }
                }
            }
            "Failed" => counts.failed += 1,
            _ if pod.deleting.is_none() => {
                if pod.ready {
                    counts.ready += 1;
                }
                if on_failure {
                    counts.failed += pod.restarts;
                }
                counts.active.push(pod.clone());
            }
            _ => {}
        }
    }
    counts
}

impl Reconciler for JobController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn primary(&self) -> Kind {
        Kind::Job
    }

    fn keys_for(&self, change: &Change, _cache: &Cache) -> Vec<ObjectKey> {
        match change.key.kind {
            Kind::Job => {
                if change.new.is_none() {
                    if let Some(old) = &change.old {
                        self.expectations.forget(&old.uid());
                    }
                }
                vec![change.key.clone()]
            }
            Kind::Pod => {
                let old = change.old.as_ref().and_then(|c| c.pod());
                let new = change.new.as_ref().and_then(|c| c.pod());
                super::pods::observe_change(
                    &self.expectations,
                    old.map(|p| &**p),
                    new.map(|p| &**p),
                );
                super::pods::controller_keys(old.map(|p| &**p), new.map(|p| &**p), Kind::Job)
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ControllerError> {
        let Some(raw) = self.cache.get(key) else {
            return Ok(Action::AwaitChange);
        };
        let job: Job =
            serde_json::from_value((*raw).clone()).map_err(|e| ControllerError::Malformed {
                object: key.to_string(),
                reason: e.to_string(),
            })?;
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let status = raw.get("status").cloned().unwrap_or_else(|| json!({}));
        let now = super::now();
        let now_text = super::format_time(now);
        let finished = condition_true(&status, "Complete") || condition_true(&status, "Failed");
        if finished {
            return self.expire(key, &job, &status, now).await;
        }
        let spec = &job.spec;
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions.map(i64::from);
        let parallelism = i64::from(spec.parallelism.unwrap_or(1).max(0));
        let on_failure = spec.template.spec.restart_policy.as_deref() == Some("OnFailure");
        let pods = self.cache.pods_controlled_by(&uid);
        let counts = count(&pods, on_failure, completions);
        let suspended = spec.suspend == Some(true);
        let conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
        let mut new_conditions = conditions.clone();
        let mut start_time = status["startTime"].as_str().map(str::to_string);
        let mut completion_time = None;
        let mut doomed: Vec<Arc<PodInfo>> = Vec::new();
        let mut next = Action::AwaitChange;
        // Suspension.
        if suspended {
            if !condition_true(&status, "Suspended") {
                self.events.normal(NAME, &raw, "Suspended", "Job suspended");
            }
            new_conditions = with_condition(
                &new_conditions,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                &now_text,
            );
            start_time = None;
            doomed.extend(counts.active.iter().cloned());
        } else {
            if condition_true(&status, "Suspended") {
                self.events.normal(NAME, &raw, "Resumed", "Job resumed");
                new_conditions = with_condition(
                    &new_conditions,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    &now_text,
                );
            }
            if start_time.is_none() {
                start_time = Some(now_text.clone());
            }
        }
        let started = start_time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(now, |t| t.as_second());
        let backoff_limit = i64::from(spec.backoff_limit.unwrap_or(6).max(0));
        let complete = match (indexed, completions) {
            (true, Some(c)) => i64::try_from(counts.succeeded_indexes.len()).unwrap_or(0) >= c,
            (false, Some(c)) => counts.succeeded >= c,
            (_, None) => counts.succeeded > 0 && counts.active.is_empty(),
        };
        let failure = if complete || suspended {
            None
        } else if counts.failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if spec
            .active_deadline_seconds
            .is_some_and(|d| now - started >= d)
        {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            if let Some(deadline) = spec.active_deadline_seconds {
                let wait = u64::try_from((started + deadline - now).max(1)).unwrap_or(1);
                next = next.min(Action::RequeueAfter(Duration::from_secs(wait)));
            }
            None
        };
        if let Some((reason, message)) = failure {
            new_conditions = with_condition(
                &new_conditions,
                "FailureTarget",
                "True",
                reason,
                message,
                &now_text,
            );
            new_conditions = with_condition(
                &new_conditions,
                "Failed",
                "True",
                reason,
                message,
                &now_text,
            );
            self.events.warning(NAME, &raw, reason, message);
            doomed.extend(counts.active.iter().cloned());
        } else if complete {
            new_conditions = with_condition(
                &new_conditions,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                &now_text,
            );
            new_conditions = with_condition(
                &new_conditions,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                &now_text,
            );
            completion_time = Some(now_text.clone());
            self.events.normal(NAME, &raw, "Completed", "Job completed");
            doomed.extend(counts.active.iter().cloned());
        } else if !suspended && self.expectations.satisfied(&uid) {
            let wait = self.backoff_remaining(&uid, counts.failed);
            if wait.is_zero() {
                self.create_pods(&raw, &job, &uid, indexed, completions, parallelism, &counts)
                    .await;
            } else {
                next = next.min(Action::RequeueAfter(wait));
            }
        }
        if !doomed.is_empty() {
            self.delete_pods(&raw, &uid, doomed).await;
        }
        let active_after = if failure.is_some() || complete || suspended {
            0
        } else {
            counts.active.len()
        };
        let mut new_status = json!({
            "active": active_after,
            "ready": counts.ready,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
        });
        if !new_conditions.is_empty() {
            new_status["conditions"] = Value::Array(new_conditions);
        }
        if let Some(start) = start_time {
            new_status["startTime"] = json!(start);
        }
        if let Some(done) = completion_time {
            new_status["completionTime"] = json!(done);
        }
        if indexed {
            new_status["completedIndexes"] = json!(format_indexes(&counts.succeeded_indexes));
        }
        for field in ["active", "succeeded", "failed"] {
            if new_status[field] == 0 && status.get(field).is_none() {
                if let Some(map) = new_status.as_object_mut() {
                    map.remove(field);
                }
            }
        }
        if new_status != status {
            let rv = job
                .metadata
                .resource_version
                .as_deref()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0);
            match self
                .store
                .update_status(key, new_status, Precondition::resource_version(rv))
                .await
            {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        if complete || failure.is_some() {
            // Come back for the TTL.
            if let Some(ttl) = spec.ttl_seconds_after_finished {
                next = next.min(Action::RequeueAfter(Duration::from_secs(
                    u64::try_from(ttl.max(0)).unwrap_or(0),
                )));
            }
        }
        Ok(next)
    }
}

impl JobController {
    /// A finished Job: deleted `ttlSecondsAfterFinished` after it finished.
    async fn expire(
        &self,
        key: &ObjectKey,
        job: &Job,
        status: &Value,
        now: i64,
    ) -> Result<Action, ControllerError> {
        let Some(ttl) = job.spec.ttl_seconds_after_finished else {
            return Ok(Action::AwaitChange);
        };
        let finished_at = status["conditions"]
            .as_array()
            .and_then(|c| {
                c.iter().find(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                })
            })
            .and_then(|c| super::parse_time(&c["lastTransitionTime"]))
            .unwrap_or(now);
        let due = finished_at + i64::from(ttl);
        if due > now {
            let wait = u64::try_from(due - now).unwrap_or(1);
            return Ok(Action::RequeueAfter(Duration::from_secs(wait)));
        }
        tracing::info!(job = %key, "ttlSecondsAfterFinished passed: deleting the Job");
        let uid = job.metadata.uid.clone().unwrap_or_default();
        match self.store.delete(key, Precondition::uid(uid)).await {
            Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {
                Ok(Action::AwaitChange)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Creates the pods still needed, at most `parallelism` active.
    #[allow(clippy::too_many_arguments)]
    async fn create_pods(
        &self,
        raw: &Value,
        job: &Job,
        uid: &str,
        indexed: bool,
        completions: Option<i64>,
        parallelism: i64,
        counts: &Counts,
    ) {
        let active = i64::try_from(counts.active.len()).unwrap_or(0);
        let mut indexes: Vec<Option<i64>> = Vec::new();
        if indexed {
            let running: BTreeSet<i64> = counts
                .active
                .iter()
                .filter_map(|p| p.completion_index)
                .collect();
            let room = (parallelism - active).max(0);
            indexes = (0..completions.unwrap_or(0))
                .filter(|i| !counts.succeeded_indexes.contains(i) && !running.contains(i))
                .take(usize::try_from(room).unwrap_or(0))
                .map(Some)
                .collect();
        } else {
            let wanted = match completions {
                Some(c) => (c - counts.succeeded).min(parallelism),
                None if counts.succeeded > 0 => 0,
                None => parallelism,
            };
            let missing = (wanted - active).max(0);
            indexes.resize(usize::try_from(missing).unwrap_or(0), None);
        }
        if indexes.is_empty() {
            return;
        }
        let count = indexes.len().min(pods::BURST);
        self.expectations.expect_creations(uid, count);
        let name = job.metadata.name.clone().unwrap_or_default();
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let created = pods::create_in_batches(&self.store, &namespace, count, |i| {
            self.pod_for(raw, &job.spec.template, &name, uid, indexes[i])
        })
        .await;
        for pod in &created.pods {
            self.events.normal(
                NAME,
                raw,
                "SuccessfulCreate",
                format!(
                    "Created pod: {}",
                    pod["metadata"]["name"].as_str().unwrap_or("")
                ),
            );
        }
        if let Some(error) = created.error {
            for _ in 0..count - created.pods.len() {
                self.expectations.creation_observed(uid);
            }
            self.events.warning(
                NAME,
                raw,
                "FailedCreate",
                format!("Error creating: {error}"),
            );
        }
    }

    /// One pod of the Job (of `index` for an Indexed Job).
    fn pod_for(
        &self,
        raw: &Value,
        template: &PodTemplateSpec,
        name: &str,
        uid: &str,
        index: Option<i64>,
    ) -> Value {
        let mut template = template.clone();
        let mut labels = BTreeMap::from([
            ("batch.kubernetes.io/job-name".to_string(), name.to_string()),
            ("job-name".to_string(), name.to_string()),
            (
                "batch.kubernetes.io/controller-uid".to_string(),
                uid.to_string(),
            ),
            ("controller-uid".to_string(), uid.to_string()),
        ]);
        let mut annotations = BTreeMap::new();
        let prefix = match index {
            Some(i) => {
                labels.insert(INDEX_ANNOTATION.to_string(), i.to_string());
                annotations.insert(INDEX_ANNOTATION.to_string(), i.to_string());
                for container in template
                    .spec
                    .init_containers
                    .iter_mut()
                    .chain(template.spec.containers.iter_mut())
                {
                    container.env.retain(|e| e.name != "JOB_COMPLETION_INDEX");
                    container.env.push(EnvVar {
                        name: "JOB_COMPLETION_INDEX".into(),
                        value: Some(i.to_string()),
                        value_from: None,
                    });
                }
                template.spec.hostname = Some(format!("{name}-{i}"));
                format!("{name}-{i}-")
            }
            None => format!("{name}-"),
        };
        pods::from_template(raw, &template, &prefix, &labels, &annotations)
    }

    async fn delete_pods(&self, raw: &Value, uid: &str, doomed: Vec<Arc<PodInfo>>) {
        self.expectations
            .expect_deletions(uid, doomed.iter().map(|p| p.uid.clone()));
        let results = join_all(doomed.iter().map(|pod| pods::delete(&self.store, pod))).await;
        for (pod, result) in doomed.iter().zip(results) {
            match result {
                Ok(()) => self.events.normal(
                    NAME,
                    raw,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pod.name),
                ),
                Err(error) => {
                    self.expectations.deletion_observed(uid, &pod.uid);
                    self.events.warning(
                        NAME,
                        raw,
                        "FailedDelete",
                        format!("Error deleting: {error}"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_written_as_ranges() {
        let set = |v: &[i64]| v.iter().copied().collect::<BTreeSet<i64>>();
        assert_eq!(format_indexes(&set(&[])), "");
        assert_eq!(format_indexes(&set(&[0, 1, 2, 4])), "0-2,4");
        assert_eq!(format_indexes(&set(&[1, 3, 4])), "1,3-4");
    }
}
