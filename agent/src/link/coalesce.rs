//! Which report to send, and when: pure state, no I/O, no clock.
//!
//! The [`ReportCoalescer`] keeps only the latest observed state. While the
//! link is down nothing is produced; changes just replace the latest state.
//! On (re)connect it produces one full report of the latest state, never a
//! backlog. While connected it produces a report when the state differs
//! from what was last sent (only the changed pods, or all of them when a
//! pod went away), and a full report on every heartbeat.

use bramble_common::wire::{NodeReport, NodeStatusReport, PodStatusReport};

/// What a report is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportState {
    /// The last desired generation applied.
    pub applied_generation: u64,
    /// The node itself.
    pub node_status: NodeStatusReport,
    /// Every pod, sorted by UID.
    pub pods: Vec<PodStatusReport>,
}

/// Decides which [`NodeReport`]s to publish; see the module documentation.
#[derive(Debug, Default)]
pub struct ReportCoalescer {
    seq: u64,
    connected: bool,
    latest: Option<ReportState>,
    /// What the master got in this connection, as far as the agent knows.
    sent: Option<ReportState>,
}

impl ReportCoalescer {
    /// A coalescer with nothing observed and the link down.
    pub fn new() -> ReportCoalescer {
        ReportCoalescer::default()
    }

    /// The link is up: the full latest state, if there is one.
    pub fn connected(&mut self) -> Option<NodeReport> {
        self.connected = true;
        self.sent = None;
        self.full()
    }

    /// The link is down: nothing is produced until [`Self::connected`].
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.sent = None;
    }

    /// A new observed state. Produces a report when connected and the state
    /// differs from what was sent.
    pub fn update(&mut self, state: ReportState) -> Option<NodeReport> {
        self.latest = Some(state);
        if !self.connected {
            return None;
        }
        let latest = self.latest.as_ref()?;
        let Some(sent) = &self.sent else {
            return self.full();
        };
        if sent == latest {
            return None;
        }
        let removed = sent.pods.iter().any(|old| {
            latest
                .pods
                .binary_search_by(|p| p.uid.cmp(&old.uid))
                .is_err()
        });
        if removed {
            return self.full();
        }
        let changed: Vec<PodStatusReport> = latest
            .pods
            .iter()
            .filter(|pod| {
                sent.pods
                    .binary_search_by(|p| p.uid.cmp(&pod.uid))
                    .map_or(true, |i| sent.pods[i] != **pod)
            })
            .cloned()
            .collect();
        let report = self.report(changed, false);
        self.sent = self.latest.clone();
        Some(report)
    }

    /// The heartbeat is due: the full latest state, when connected.
    pub fn heartbeat(&mut self) -> Option<NodeReport> {
        if self.connected {
            self.full()
        } else {
            None
        }
    }

    /// The last report produced could not be handed to the link: the next
    /// report will be a full one.
    pub fn publish_failed(&mut self) {
        self.sent = None;
    }

    /// True when connected and the latest state was not (fully) sent.
    pub fn pending(&self) -> bool {
        self.connected && self.latest.is_some() && self.sent != self.latest
    }

    /// The latest applied generation (0 before any state).
    pub fn applied_generation(&self) -> u64 {
        self.latest.as_ref().map_or(0, |s| s.applied_generation)
    }

    fn full(&mut self) -> Option<NodeReport> {
        let pods = self.latest.as_ref()?.pods.clone();
        let report = self.report(pods, true);
        self.sent = self.latest.clone();
        Some(report)
    }

    fn report(&mut self, pod_statuses: Vec<PodStatusReport>, full: bool) -> NodeReport {
        self.seq += 1;
        let (applied_generation, node_status) = self
            .latest
            .as_ref()
            .map(|s| (s.applied_generation, s.node_status.clone()))
            .unwrap_or_default();
        NodeReport {
            seq: self.seq,
            applied_generation,
            node_status,
            pod_statuses,
            full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, phase: &str) -> PodStatusReport {
        PodStatusReport {
            uid: uid.into(),
            namespace: "default".into(),
            name: uid.into(),
            status_json: format!("{{\"phase\":\"{phase}\"}}"),
            observed_resource_version: 1,
        }
    }

    fn state(generation: u64, pods: &[(&str, &str)]) -> ReportState {
        ReportState {
            applied_generation: generation,
            node_status: NodeStatusReport::default(),
            pods: pods.iter().map(|(u, p)| pod(u, p)).collect(),
        }
    }

    #[test]
    fn offline_changes_coalesce_into_one_full_report() {
        let mut c = ReportCoalescer::new();
        assert_eq!(c.connected(), None, "nothing observed yet");
        c.disconnected();
        for generation in 1..=50 {
            assert_eq!(c.update(state(generation, &[("a", "Pending")])), None);
        }
        assert_eq!(c.update(state(51, &[("a", "Running")])), None);
        assert_eq!(c.heartbeat(), None, "no heartbeat while offline");
        assert!(!c.pending());
        let report = c.connected().expect("one report on reconnect");
        assert!(report.full);
        assert_eq!(report.applied_generation, 51);
        assert_eq!(report.pod_statuses, vec![pod("a", "Running")]);
        assert_eq!(report.seq, 1);
        assert_eq!(c.update(state(51, &[("a", "Running")])), None, "unchanged");
    }

    #[test]
    fn changes_send_only_changed_pods_and_removals_send_all() {
        let mut c = ReportCoalescer::new();
        c.update(state(1, &[("a", "Pending"), ("b", "Pending")]));
        assert!(c.connected().is_some_and(|r| r.full));
        let r = c
            .update(state(1, &[("a", "Running"), ("b", "Pending")]))
            .expect("a changed");
        assert!(!r.full);
        assert_eq!(r.pod_statuses, vec![pod("a", "Running")]);
        let r = c
            .update(state(2, &[("a", "Running"), ("b", "Pending")]))
            .expect("generation changed");
        assert!(r.pod_statuses.is_empty());
        assert_eq!(r.applied_generation, 2);
        let r = c
            .update(state(3, &[("b", "Pending"), ("c", "Pending")]))
            .expect("a removed");
        assert!(r.full);
        assert_eq!(r.pod_statuses.len(), 2);
        assert_eq!(r.seq, 4);
        let hb = c.heartbeat().expect("heartbeat while connected");
        assert!(hb.full && hb.seq == 5);
    }

    #[test]
    fn failed_publish_resends_in_full() {
        let mut c = ReportCoalescer::new();
        c.connected();
        assert!(c.update(state(1, &[("a", "Pending")])).is_some());
        c.publish_failed();
        assert!(c.pending());
        let r = c
            .update(state(1, &[("a", "Pending")]))
            .expect("resent after failure");
        assert!(r.full);
        assert!(!c.pending());
        assert_eq!(c.applied_generation(), 1);
    }
}
