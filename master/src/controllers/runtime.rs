//! The shared controller runtime: what kube-rs' `Controller` and
//! client-go's work queue give Kubernetes' controllers.
//!
//! A controller is a [`Reconciler`]: a level-triggered function from an
//! object's key to writes, over the shared [`Cache`]. The runtime gives it:
//! - a work queue keyed by object: a key queued many times is reconciled
//!   once; a key is never reconciled twice at the same time (a change that
//!   arrives while it is being reconciled queues it again for after);
//! - secondary watches: every change the cache sees is mapped to the keys
//!   to reconcile by [`Reconciler::keys_for`] (a pod's change to its
//!   ReplicaSet through its controller reference);
//! - requeue with exponential backoff on error (per key, reset on success),
//!   and [`Action::RequeueAfter`] for time-based work (minReadySeconds,
//!   deadlines, schedules);
//! - a periodic resync that queues every object of the primary kind;
//! - a tracing span per reconcile carrying the controller and the object;
//! - shutdown: no new reconcile starts; the ones running finish;
//! - [`Expectations`]: kube-controller-manager's record of the creations and
//!   deletions a controller made and has not yet seen in its cache, so a
//!   slow watch never makes it create twice.
//!
//! A failing object is retried on its own; the others go on.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_common::Kind;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use super::cache::{Cache, Change, Subscriber};
use super::ControllerError;
use crate::store::ObjectKey;

/// What to do after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes (or the periodic resync).
    AwaitChange,
    /// Reconcile again after this long, even if nothing changes.
    RequeueAfter(Duration),
}

impl Action {
    /// The sooner of two actions.
    pub fn min(self, other: Action) -> Action {
        match (self, other) {
            (Action::AwaitChange, other) | (other, Action::AwaitChange) => other,
            (Action::RequeueAfter(a), Action::RequeueAfter(b)) => Action::RequeueAfter(a.min(b)),
        }
    }
}

/// A controller: reconciles objects of one kind.
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name, as kube-controller-manager's event sources
    /// (`replicaset-controller`).
    fn name(&self) -> &'static str;
    /// The kind this controller reconciles; every object of it is queued at
    /// start and at each resync.
    fn primary(&self) -> Kind;
    /// The keys (of the primary kind) to reconcile after `change`. The
    /// default queues the changed object itself when it is of the primary
    /// kind.
    fn keys_for(&self, change: &Change, cache: &Cache) -> Vec<ObjectKey> {
        let _ = cache;
        if change.key.kind == self.primary() {
            vec![change.key.clone()]
        } else {
            Vec::new()
        }
    }
    /// The keys queued at start, after a relist and at each resync: every
    /// object of the primary kind by default (the garbage collector
    /// queues the objects of every kind that have owners).
    fn resync_keys(&self, cache: &Cache) -> Vec<ObjectKey> {
        cache.keys(self.primary())
    }
    /// Drives the object at `key` toward its spec. Called for deleted
    /// objects too (the key is then absent from the cache).
    fn reconcile(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<Action, ControllerError>> + Send;
}

/// Tuning of one controller's loop.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Reconciles running at once (kube-controller-manager: 5 for
    /// Deployments and ReplicaSets).
    pub workers: usize,
    /// Every object of the primary kind is queued this often.
    pub resync: Duration,
    /// First retry delay after an error; doubles per failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            workers: 5,
            resync: Duration::from_secs(300),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(300),
        }
    }
}

#[derive(Default)]
struct QueueState {
    /// Keys waiting, in order; each at most once.
    ready: VecDeque<ObjectKey>,
    /// Keys in `ready`, or queued again while being reconciled.
    dirty: HashSet<ObjectKey>,
    /// Keys being reconciled now.
    processing: HashSet<ObjectKey>,
    /// Keys to queue later: the earliest time per key.
    delayed: BTreeMap<(Instant, u64), ObjectKey>,
    delayed_at: HashMap<ObjectKey, (Instant, u64)>,
    sequence: u64,
    /// Consecutive failures per key.
    failures: HashMap<ObjectKey, u32>,
}

/// A work queue keyed by object (client-go's `workqueue`): deduplicated,
/// one reconcile per key at a time, delayed adds.
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<QueueState>,
    wake: Notify,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` (once, however often it is added before it is taken).
    pub fn add(&self, key: ObjectKey) {
        let mut state = self.lock();
        if state.dirty.insert(key.clone()) && !state.processing.contains(&key) {
            state.ready.push_back(key);
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Queues `key` after `delay` (the earliest of several such requests wins).
    pub fn add_after(&self, key: ObjectKey, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut state = self.lock();
        if let Some(existing) = state.delayed_at.get(&key).copied() {
            if existing.0 <= at {
                return;
            }
            state.delayed.remove(&existing);
        }
        state.sequence += 1;
        let slot = (at, state.sequence);
        state.delayed.insert(slot, key.clone());
        state.delayed_at.insert(key, slot);
        drop(state);
        self.wake.notify_one();
    }

    /// Moves due delayed keys to the ready queue; returns when the next one
    /// is due.
    fn promote(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut state = self.lock();
            while let Some((&slot, _)) = state.delayed.first_key_value() {
                if slot.0 > now {
                    break;
                }
                if let Some(key) = state.delayed.remove(&slot) {
                    state.delayed_at.remove(&key);
                    due.push(key);
                }
            }
            state.delayed.first_key_value().map(|(slot, _)| slot.0)
        };
        for key in due {
            self.add(key);
        }
        next
    }

    /// Takes the next key to reconcile, if any.
    fn take(&self) -> Option<ObjectKey> {
        let mut state = self.lock();
        let key = state.ready.pop_front()?;
        state.dirty.remove(&key);
        state.processing.insert(key.clone());
        Some(key)
    }

    /// The reconcile of `key` ended; returns the backoff delay to retry
    /// with when it failed.
    fn done(&self, key: &ObjectKey, failed: bool, options: &LoopOptions) -> Option<Duration> {
        let mut state = self.lock();
        state.processing.remove(key);
        let retry = if failed {
            let failures = state.failures.entry(key.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            let exponent = (*failures - 1).min(20);
            Some(
                options
                    .backoff_base
                    .saturating_mul(1u32 << exponent)
                    .min(options.backoff_max),
            )
        } else {
            state.failures.remove(key);
            None
        };
        if state.dirty.contains(key) {
            state.ready.push_back(key.clone());
            drop(state);
            self.wake.notify_one();
        }
        retry
    }

    /// Keys waiting now (not counting delayed ones).
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// True when no key waits now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A running controller's queue as the cache's [`Subscriber`].
struct Subscription<R: Reconciler> {
    reconciler: Arc<R>,
    queue: Arc<WorkQueue>,
}

impl<R: Reconciler> Subscriber for Subscription<R> {
    fn changed(&self, change: &Change, cache: &Cache) {
        for key in self.reconciler.keys_for(change, cache) {
            self.queue.add(key);
        }
    }

    fn relisted(&self, cache: &Cache) {
        for key in self.reconciler.resync_keys(cache) {
            self.queue.add(key);
        }
    }
}

/// One controller, ready to run.
pub struct Controller<R: Reconciler> {
    reconciler: Arc<R>,
    queue: Arc<WorkQueue>,
    options: LoopOptions,
}

impl<R: Reconciler> Controller<R> {
    /// A controller running `reconciler` with `options`.
    pub fn new(reconciler: Arc<R>, options: LoopOptions) -> Controller<R> {
        Controller {
            reconciler,
            queue: Arc::new(WorkQueue::default()),
            options,
        }
    }

    /// Its queue's subscription, to hand to the cache's feeder.
    pub fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(Subscription {
            reconciler: self.reconciler.clone(),
            queue: self.queue.clone(),
        })
    }

    /// Its queue (a reconciler may queue keys itself).
    pub fn queue(&self) -> Arc<WorkQueue> {
        self.queue.clone()
    }

    /// Runs until `shutdown`: waits for the cache, queues every object of
    /// the primary kind, then reconciles what the queue hands out, at most
    /// `workers` at once.
    pub async fn run(self, cache: Cache, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = cache.wait_synced() => {}
        }
        let name = self.reconciler.name();
        for key in self.reconciler.resync_keys(&cache) {
            self.queue.add(key);
        }
        let mut next_resync = Instant::now() + self.options.resync;
        let mut running = FuturesUnordered::new();
        loop {
            let now = Instant::now();
            if now >= next_resync {
                for key in self.reconciler.resync_keys(&cache) {
                    self.queue.add(key);
                }
                next_resync = now + self.options.resync;
            }
            let next_delayed = self.queue.promote(now);
            while running.len() < self.options.workers.max(1) {
                let Some(key) = self.queue.take() else { break };
                let reconciler = self.reconciler.clone();
                let span = tracing::info_span!("reconcile", controller = name, object = %key);
                running.push(
                    async move {
                        let result = reconciler.reconcile(&key).await;
                        (key, result)
                    }
                    .instrument(span),
                );
            }
            let wake_at = next_delayed.map_or(next_resync, |d| d.min(next_resync));
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some((key, result)) = running.next(), if !running.is_empty() => {
                    let failed = result.is_err();
                    let retry = self.queue.done(&key, failed, &self.options);
                    match result {
                        Ok(Action::AwaitChange) => {}
                        Ok(Action::RequeueAfter(delay)) => self.queue.add_after(key, delay),
                        Err(error) => {
                            let delay = retry.unwrap_or(self.options.backoff_base);
                            if error.is_conflict() {
                                tracing::debug!(controller = name, object = %key, %error, "conflict; reconciling again");
                            } else {
                                tracing::warn!(controller = name, object = %key, %error, ?delay, "reconcile failed; retrying");
                            }
                            self.queue.add_after(key, delay);
                        }
                    }
                }
                () = self.queue.wake.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
        // Let the reconciles under way finish their writes.
        while running.next().await.is_some() {}
    }
}

/// What a controller expects to see in its cache for one owner.
#[derive(Debug, Clone)]
struct Expected {
    adds: i64,
    deletes: HashSet<String>,
    since: Instant,
}

/// kube-controller-manager's `ControllerExpectations` (with the UID-tracked
/// deletions of `UIDTrackingControllerExpectations`): before a controller
/// creates or deletes pods for an owner it records how many; the cache's
/// events lower the counts; until they reach zero (or
/// [`Expectations::TIMEOUT`] passes, for an event that never comes) the
/// controller does not create or delete again for that owner, whatever its
/// (possibly stale) cache says.
#[derive(Debug, Default)]
pub struct Expectations {
    owners: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    /// Expectations older than this are ignored (Kubernetes: 5 minutes).
    pub const TIMEOUT: Duration = Duration::from_secs(300);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when the owner `uid` has no creations or deletions in flight.
    pub fn satisfied(&self, uid: &str) -> bool {
        match self.lock().get(uid) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.since.elapsed() > Self::TIMEOUT,
        }
    }

    /// `uid` is about to create `count` objects.
    pub fn expect_creations(&self, uid: &str, count: usize) {
        let mut owners = self.lock();
        let e = owners.entry(uid.to_string()).or_insert_with(|| Expected {
            adds: 0,
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        e.adds = i64::try_from(count).unwrap_or(i64::MAX);
        e.since = Instant::now();
    }

    /// `uid` is about to delete the objects with `uids`.
    pub fn expect_deletions(&self, uid: &str, uids: impl IntoIterator<Item = String>) {
        let mut owners = self.lock();
        let e = owners.entry(uid.to_string()).or_insert_with(|| Expected {
            adds: 0,
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        e.deletes = uids.into_iter().collect();
        e.since = Instant::now();
    }

    /// The cache saw an object of `uid` created (or a creation failed).
    pub fn creation_observed(&self, uid: &str) {
        if let Some(e) = self.lock().get_mut(uid) {
            e.adds -= 1;
        }
    }

    /// The cache saw the object `dependent` of `uid` deleted (or being
    /// deleted), or its deletion failed.
    pub fn deletion_observed(&self, uid: &str, dependent: &str) {
        if let Some(e) = self.lock().get_mut(uid) {
            e.deletes.remove(dependent);
        }
    }

    /// The owner is gone: forget it.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::ReplicaSet, "default", name)
    }

    #[test]
    fn a_key_is_queued_once_and_never_handed_out_twice_at_once() {
        let queue = WorkQueue::default();
        let options = LoopOptions::default();
        queue.add(key("a"));
        queue.add(key("a"));
        queue.add(key("b"));
        assert_eq!(queue.len(), 2);
        let a = queue.take().expect("a");
        assert_eq!(a, key("a"));
        // Changed again while being reconciled: not handed out until done.
        queue.add(key("a"));
        assert_eq!(queue.take(), Some(key("b")));
        assert_eq!(queue.take(), None);
        assert_eq!(queue.done(&a, false, &options), None);
        assert_eq!(queue.take(), Some(key("a")), "queued again after done");
    }

    #[test]
    fn failures_back_off_exponentially_and_reset_on_success() {
        let queue = WorkQueue::default();
        let options = LoopOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..LoopOptions::default()
        };
        let delays: Vec<_> = (0..6)
            .map(|_| {
                queue.add(key("a"));
                let k = queue.take().expect("key");
                queue.done(&k, true, &options).expect("delay")
            })
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        queue.add(key("a"));
        let k = queue.take().expect("key");
        assert_eq!(queue.done(&k, false, &options), None);
        queue.add(key("a"));
        let k = queue.take().expect("key");
        assert_eq!(
            queue.done(&k, true, &options),
            Some(Duration::from_millis(100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_come_due_in_order() {
        let queue = WorkQueue::default();
        queue.add_after(key("late"), Duration::from_secs(10));
        queue.add_after(key("soon"), Duration::from_secs(1));
        queue.add_after(key("late"), Duration::from_secs(20));
        let next = queue.promote(Instant::now());
        assert!(queue.is_empty());
        assert_eq!(next, Some(Instant::now() + Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        queue.promote(Instant::now());
        assert_eq!(queue.take(), Some(key("soon")));
        assert_eq!(queue.take(), None);
        tokio::time::advance(Duration::from_secs(9)).await;
        queue.promote(Instant::now());
        assert_eq!(queue.take(), Some(key("late")), "the earlier request won");
    }

    #[test]
    fn expectations_hold_until_observed() {
        let expectations = Expectations::default();
        assert!(expectations.satisfied("rs"));
        expectations.expect_creations("rs", 2);
        assert!(!expectations.satisfied("rs"));
        expectations.creation_observed("rs");
        assert!(!expectations.satisfied("rs"));
        expectations.creation_observed("rs");
        assert!(expectations.satisfied("rs"));
        expectations.expect_deletions("rs", ["p1".to_string()]);
        assert!(!expectations.satisfied("rs"));
        expectations.deletion_observed("rs", "p2");
        assert!(!expectations.satisfied("rs"));
        expectations.deletion_observed("rs", "p1");
        assert!(expectations.satisfied("rs"));
    }
}
