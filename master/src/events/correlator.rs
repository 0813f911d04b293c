//! Decides what becomes of each occurrence of an event, as client-go's
//! `EventCorrelator` does: no I/O, time passed in, unit-tested on its own.
//!
//! - **Aggregation**: more than [`AGGREGATE_MAX_EVENTS`] events within
//!   [`AGGREGATE_INTERVAL`] that differ only in their message (same source,
//!   involved object, type and reason) are folded into one event whose
//!   message is prefixed `(combined from similar events): `.
//! - **Deduplication**: an event equal to one already recorded (same source,
//!   involved object, type, reason and message) bumps that event's `count`
//!   and `lastTimestamp` instead of creating another.
//! - **Spam filter**: a token bucket per source and involved object (burst
//!   [`SPAM_BURST`], one token every [`SPAM_REFILL`]) drops the rest, so a
//!   crash-looping pod cannot fill the store.
//!
//! The caches are bounded ([`CACHE_SIZE`] entries each, least recently used
//! dropped first), like client-go's LRU caches.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Events that may differ only in message before they are aggregated.
pub const AGGREGATE_MAX_EVENTS: usize = 10;
/// The window over which similar events are counted for aggregation.
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);
/// Events one source may record about one object at once.
pub const SPAM_BURST: f64 = 25.0;
/// Time for one more token of the spam filter (client-go: qps 1/300).
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Entries kept per cache.
pub const CACHE_SIZE: usize = 4096;
/// The prefix of an aggregated event's message.
pub const AGGREGATED_PREFIX: &str = "(combined from similar events): ";

/// Who reports an event and what it is about: everything but the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimilarKey {
    /// The reporting component (`deployment-controller`, `kubelet`).
    pub component: String,
    /// The node of the reporting component, if any.
    pub host: String,
    /// `apiVersion/kind` of the involved object.
    pub kind: String,
    /// Namespace of the involved object.
    pub namespace: String,
    /// Name of the involved object.
    pub name: String,
    /// UID of the involved object.
    pub uid: String,
    /// Field of the involved object (`spec.containers{web}`).
    pub field_path: String,
    /// `Normal` or `Warning`.
    pub event_type: String,
    /// The event's reason.
    pub reason: String,
}

impl SimilarKey {
    /// The spam filter's key: source and involved object.
    fn spam_key(&self) -> (String, String, String, String, String, String) {
        (
            self.component.clone(),
            self.host.clone(),
            self.kind.clone(),
            self.namespace.clone(),
            self.name.clone(),
            self.uid.clone(),
        )
    }
}

/// The identity of one recorded event: its similar key and its message.
pub type EventKey = (SimilarKey, String);

/// What to do with one occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived: returned and matched at once
pub enum Decision {
    /// Record it under this key with this message (possibly aggregated).
    Record {
        /// The key the stored event is found by.
        key: EventKey,
        /// The message to store.
        message: String,
    },
    /// Drop it: the spam filter has no token left.
    Drop,
}

/// A map that forgets its least recently used entries past a size.
#[derive(Debug)]
pub(super) struct Lru<K, V> {
    entries: HashMap<K, (u64, V)>,
    tick: u64,
    capacity: usize,
}

impl<K: Clone + Eq + Hash, V> Lru<K, V> {
    pub(super) fn new(capacity: usize) -> Lru<K, V> {
        Lru {
            entries: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    pub(super) fn get_mut_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        self.tick += 1;
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.evict();
        }
        let tick = self.tick;
        let entry = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| (tick, make()));
        entry.0 = tick;
        &mut entry.1
    }

    /// The entry of `key`, if any (marks it used).
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|entry| {
            entry.0 = tick;
            &mut entry.1
        })
    }

    /// Forgets `key`.
    pub(super) fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops the oldest tenth (at least one) in one pass, so that a full
    /// cache costs one scan per many inserts.
    fn evict(&mut self) {
        let drop = (self.capacity / 10).max(1);
        let mut ticks: Vec<u64> = self.entries.values().map(|(tick, _)| *tick).collect();
        ticks.sort_unstable();
        if let Some(&limit) = ticks.get(drop - 1) {
            self.entries.retain(|_, (tick, _)| *tick > limit);
        }
    }
}

#[derive(Debug)]
struct Similar {
    messages: BTreeSet<String>,
    window_start: Instant,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The correlator's memory. One per recorder.
#[derive(Debug)]
pub struct Correlator {
    similar: Lru<SimilarKey, Similar>,
    buckets: Lru<(String, String, String, String, String, String), Bucket>,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new(CACHE_SIZE)
    }
}

impl Correlator {
    /// A correlator whose caches hold `capacity` entries each.
    pub fn new(capacity: usize) -> Correlator {
        Correlator {
            similar: Lru::new(capacity),
            buckets: Lru::new(capacity),
        }
    }

    /// Decides about one occurrence at `now`. `limited` is false for
    /// events whose source already applied these rules (a node's agent).
    pub fn decide(
        &mut self,
        similar: SimilarKey,
        message: String,
        now: Instant,
        limited: bool,
    ) -> Decision {
        if limited && !self.take_token(&similar, now) {
            return Decision::Drop;
        }
        let entry = self.similar.get_mut_or_insert_with(&similar, || Similar {
            messages: BTreeSet::new(),
            window_start: now,
        });
        if now.duration_since(entry.window_start) > AGGREGATE_INTERVAL {
            entry.messages.clear();
            entry.window_start = now;
        }
        if entry.messages.contains(&message) || entry.messages.len() < AGGREGATE_MAX_EVENTS {
            entry.messages.insert(message.clone());
            return Decision::Record {
                key: (similar, message.clone()),
                message,
            };
        }
        // Too many different messages: one aggregated event for all of them,
        // found by the similar key alone (the empty message).
        Decision::Record {
            key: (similar, String::new()),
            message: format!("{AGGREGATED_PREFIX}{message}"),
        }
    }

    fn take_token(&mut self, similar: &SimilarKey, now: Instant) -> bool {
        let bucket = self
            .buckets
            .get_mut_or_insert_with(&similar.spam_key(), || Bucket {
                tokens: SPAM_BURST,
                at: now,
            });
        let refilled = now.duration_since(bucket.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        bucket.tokens = (bucket.tokens + refilled).min(SPAM_BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> SimilarKey {
        SimilarKey {
            component: "kubelet".into(),
            host: "pi-1".into(),
            kind: "v1/Pod".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            field_path: String::new(),
            event_type: "Warning".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn the_same_event_keeps_its_key() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let a = c.decide(key("BackOff"), "m".into(), now, true);
        let b = c.decide(key("BackOff"), "m".into(), now, true);
        assert_eq!(a, b);
        assert_eq!(
            a,
            Decision::Record {
                key: (key("BackOff"), "m".into()),
                message: "m".into()
            }
        );
    }

    #[test]
    fn similar_events_are_aggregated_after_ten_messages() {
        let mut c = Correlator::default();
        let now = Instant::now();
        for i in 0..AGGREGATE_MAX_EVENTS {
            let d = c.decide(key("Failed"), format!("m{i}"), now, false);
            assert_eq!(
                d,
                Decision::Record {
                    key: (key("Failed"), format!("m{i}")),
                    message: format!("m{i}")
                }
            );
        }
        let d = c.decide(key("Failed"), "m-new".into(), now, false);
        assert_eq!(
            d,
            Decision::Record {
                key: (key("Failed"), String::new()),
                message: "(combined from similar events): m-new".into()
            }
        );
        // A message seen before keeps its own event.
        let d = c.decide(key("Failed"), "m3".into(), now, false);
        assert!(matches!(d, Decision::Record { message, .. } if message == "m3"));
        // After the window, messages count from zero again.
        let later = now + AGGREGATE_INTERVAL + Duration::from_secs(1);
        let d = c.decide(key("Failed"), "m-late".into(), later, false);
        assert!(matches!(d, Decision::Record { message, .. } if message == "m-late"));
    }

    #[test]
    fn spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let allowed = (0..100)
            .filter(|_| c.decide(key("BackOff"), "m".into(), now, true) != Decision::Drop)
            .count();
        assert_eq!(allowed, 25);
        assert_eq!(
            c.decide(
                key("BackOff"),
                "m".into(),
                now + Duration::from_secs(299),
                true
            ),
            Decision::Drop
        );
        assert_ne!(
            c.decide(
                key("BackOff"),
                "m".into(),
                now + Duration::from_secs(301),
                true
            ),
            Decision::Drop
        );
        // Unlimited sources are never dropped.
        assert_ne!(
            c.decide(key("BackOff"), "m".into(), now, false),
            Decision::Drop
        );
    }

    #[test]
    fn caches_stay_bounded() {
        let mut c = Correlator::new(100);
        let now = Instant::now();
        for i in 0..1000 {
            let mut k = key("X");
            k.name = format!("pod-{i}");
            c.decide(k, "m".into(), now, true);
        }
        assert!(c.similar.entries.len() <= 100);
        assert!(c.buckets.entries.len() <= 100);
    }
}
