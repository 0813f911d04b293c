//! Image pulls for pod workers, as the kubelet's image manager does them:
//! one background pull per (pod, image), the pod worker polls it without
//! blocking (the pod's status stays readable), and failures back off per
//! (pod, image) from 10 s doubling to 5 min (kubelet's `backOffPeriod` and
//! `MaxContainerBackOff`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bramble_common::api::Secret;

use crate::images::auth::Keyring;
use crate::images::pull::{PullError, PullOutcome, Puller};

/// The first back-off after a failed pull (kubelet's `backOffPeriod`).
pub const IMAGE_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest back-off (kubelet's `MaxContainerBackOff`).
pub const IMAGE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Where a pull stands for a pod worker.
pub enum PullPoll {
    /// A pull was started now.
    Started,
    /// A pull is running.
    Running,
    /// The pull finished; `waited` counts from when it was started.
    Finished {
        /// The result.
        result: Box<Result<PullOutcome, PullError>>,
        /// Time since the pull was asked for.
        waited: Duration,
    },
    /// Pulls of this image for this pod back off after a failure; the
    /// message is the last failure's.
    BackOff(String),
}

struct Job {
    cancel: Arc<AtomicBool>,
    started: Instant,
    result: Arc<Mutex<Option<Result<PullOutcome, PullError>>>>,
}

struct BackoffEntry {
    last_update: Instant,
    delay: Duration,
    message: String,
}

/// The node's pull jobs and back-offs.
pub struct ImagePulls {
    puller: Arc<Puller>,
    jobs: Mutex<HashMap<String, Job>>,
    backoff: Mutex<HashMap<String, BackoffEntry>>,
    initial: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ImagePulls {
    /// Pull jobs through `puller`, backing off from `initial`.
    pub fn new(puller: Arc<Puller>, initial: Duration) -> ImagePulls {
        ImagePulls {
            puller,
            jobs: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            initial,
        }
    }

    /// The puller.
    pub fn puller(&self) -> &Arc<Puller> {
        &self.puller
    }

    /// Polls (starting when needed) the pull of `image` for the job `key`
    /// (`{pod-uid}_{image}`, the kubelet's back-off key). `done` runs on
    /// the pull's thread when it ends (to wake the pod worker).
    pub fn poll(
        &self,
        key: &str,
        image: &str,
        keyring: Keyring,
        done: impl FnOnce() + Send + 'static,
    ) -> PullPoll {
        {
            let mut jobs = lock(&self.jobs);
            if let Some(job) = jobs.get(key) {
                let finished = lock(&job.result).take();
                return match finished {
                    None => PullPoll::Running,
                    Some(result) => {
                        let waited = job.started.elapsed();
                        jobs.remove(key);
                        match &result {
                            Ok(_) => {
                                lock(&self.backoff).remove(key);
                            }
                            Err(e) => self.failed(key, e.to_string()),
                        }
                        PullPoll::Finished {
                            result: Box::new(result),
                            waited,
                        }
                    }
                };
            }
        }
        if let Some(message) = self.in_backoff(key) {
            return PullPoll::BackOff(message);
        }
        let job = Job {
            cancel: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            result: Arc::new(Mutex::new(None)),
        };
        let cancel = job.cancel.clone();
        let slot = job.result.clone();
        let puller = self.puller.clone();
        let image = image.to_string();
        lock(&self.jobs).insert(key.to_string(), job);
        let spawned = std::thread::Builder::new()
            .name("image-pull".into())
            .spawn(move || {
                let result = puller.pull(&image, &keyring, &cancel);
                *lock(&slot) = Some(result);
                done();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start an image pull thread");
            lock(&self.jobs).remove(key);
            self.failed(key, format!("cannot start a pull: {e}"));
            return PullPoll::BackOff(format!("cannot start a pull: {e}"));
        }
        PullPoll::Started
    }

    fn failed(&self, key: &str, message: String) {
        let now = Instant::now();
        let mut backoff = lock(&self.backoff);
        let delay = match backoff.get(key) {
            Some(e) if now.duration_since(e.last_update) <= IMAGE_BACKOFF_MAX * 2 => {
                (e.delay * 2).min(IMAGE_BACKOFF_MAX)
            }
            _ => self.initial,
        };
        backoff.insert(
            key.to_string(),
            BackoffEntry {
                last_update: now,
                delay,
                message,
            },
        );
    }

    fn in_backoff(&self, key: &str) -> Option<String> {
        let backoff = lock(&self.backoff);
        let e = backoff.get(key)?;
        (e.last_update.elapsed() < e.delay).then(|| e.message.clone())
    }

    /// Whether a pull for `key` is running or has a result not yet polled.
    pub fn has_job(&self, key: &str) -> bool {
        lock(&self.jobs).contains_key(key)
    }

    /// Marks the back-off of `key` as caused by an unreachable registry.
    pub fn mark_unreachable(&self, key: &str) {
        if let Some(e) = lock(&self.backoff).get_mut(key) {
            if !e.message.starts_with(super::linux::UNREACHABLE_MARK) {
                e.message = format!("{}{}", super::linux::UNREACHABLE_MARK, e.message);
            }
        }
    }

    /// Cancels the pulls of pod `uid` and forgets its back-offs.
    pub fn forget_pod(&self, uid: &str) {
        let prefix = format!("{uid}_");
        let mut jobs = lock(&self.jobs);
        jobs.retain(|k, j| {
            let mine = k.starts_with(&prefix);
            if mine {
                j.cancel.store(true, Ordering::SeqCst);
            }
            !mine
        });
        lock(&self.backoff).retain(|k, _| !k.starts_with(&prefix));
    }

    /// Cancels every pull (the runtime stops).
    pub fn cancel_all(&self) {
        for j in lock(&self.jobs).values() {
            j.cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// The keyring of a pod's `imagePullSecrets`, and the names that could not
/// be used (missing, or of no docker config type).
pub fn pod_keyring(names: &[String], secrets: &BTreeMap<String, Secret>) -> (Keyring, Vec<String>) {
    let mut keyring = Keyring::default();
    let mut missing = Vec::new();
    for name in names {
        let Some(secret) = secrets.get(name) else {
            missing.push(name.clone());
            continue;
        };
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in &secret.data {
            if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(v) {
                data.insert(k.clone(), b);
            }
        }
        for (k, v) in &secret.string_data {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        if let Err(e) = keyring.add_secret(&data) {
            tracing::warn!(secret = %name, error = %e, "image pull secret not usable");
            missing.push(name.clone());
        }
    }
    (keyring, missing)
}
