//! The events a node's agent reports (`kubelet` events: `Started`,
//! `BackOff`, `Unhealthy`, `NodeReady`, ...) turned into [`Occurrence`]s
//! for the master's [`crate::events::EventRecorder`].
//!
//! A node may only speak about itself and the pods bound to it: anything
//! else is refused, so a compromised device cannot write Events about
//! another node's pods. The agent already deduplicated and rate-limited its
//! events; the times it sends are ages, dated here by the master's clock
//! (a device without a real-time clock boots with a wrong one).

use bramble_common::wire::NodeEvent;

use crate::events::{EventType, InvolvedObject, Occurrence};

/// The event source of what agents report, as the kubelet's.
pub const COMPONENT: &str = "kubelet";

/// Why an event from a node was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The event is about another node.
    #[error("an event about node {0:?}, not the reporting node")]
    OtherNode(String),
    /// The event is about a pod not bound to the node.
    #[error("an event about pod {0}/{1}, which is not bound to the reporting node")]
    ForeignPod(String, String),
    /// Neither a pod nor a node.
    #[error("an event about a {0:?}; nodes report only Pod and Node events")]
    Kind(String),
    /// A field that must not be empty is.
    #[error("an event without a reason")]
    NoReason,
}

/// The occurrence `event` from `node` stands for, dated from `now`, if the
/// node may report it. `runs_pod(namespace, name, uid)` says whether the pod
/// is bound to the node.
pub fn occurrence(
    node: &str,
    event: NodeEvent,
    now: jiff::Timestamp,
    runs_pod: impl Fn(&str, &str, &str) -> bool,
) -> Result<Occurrence, Refused> {
    if event.reason.is_empty() {
        return Err(Refused::NoReason);
    }
    match event.kind.as_str() {
        "Node" if event.name == node && event.namespace.is_empty() => {}
        "Node" => return Err(Refused::OtherNode(event.name)),
        "Pod" if runs_pod(&event.namespace, &event.name, &event.uid) => {}
        "Pod" => return Err(Refused::ForeignPod(event.namespace, event.name)),
        _ => return Err(Refused::Kind(event.kind)),
    }
    let ago = |seconds: u32| {
        now.checked_sub(jiff::SignedDuration::from_secs(i64::from(seconds)))
            .unwrap_or(now)
    };
    Ok(Occurrence {
        component: COMPONENT.to_string(),
        host: node.to_string(),
        involved: InvolvedObject {
            api_version: "v1".to_string(),
            kind: event.kind,
            namespace: event.namespace,
            name: event.name,
            uid: event.uid,
            resource_version: String::new(),
            field_path: event.field_path,
        },
        event_type: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason,
        message: event.message,
        count: event.count.max(1),
        first: ago(event.first_seconds_ago),
        last: ago(event.last_seconds_ago),
        rate_limited: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, namespace: &str, name: &str) -> NodeEvent {
        NodeEvent {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: "u1".into(),
            field_path: "spec.containers{app}".into(),
            warning: true,
            reason: "BackOff".into(),
            message: "m".into(),
            count: 3,
            first_seconds_ago: 60,
            last_seconds_ago: 5,
        }
    }

    #[test]
    fn a_pod_event_is_dated_by_the_master_and_attributed_to_the_kubelet() {
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().expect("a time");
        let o = occurrence("n1", event("Pod", "default", "web"), now, |ns, n, uid| {
            (ns, n, uid) == ("default", "web", "u1")
        })
        .expect("accepted");
        assert_eq!((o.component.as_str(), o.host.as_str()), ("kubelet", "n1"));
        assert_eq!(o.event_type, EventType::Warning);
        assert_eq!(o.count, 3);
        assert_eq!(o.first.to_string(), "2026-12-07T11:59:00Z");
        assert_eq!(o.last.to_string(), "2026-12-07T11:59:55Z");
        assert_eq!(o.involved.field_path, "spec.containers{app}");
        assert!(!o.rate_limited);
    }

    #[test]
    fn a_node_speaks_only_about_itself_and_its_pods() {
        let now = jiff::Timestamp::now();
        let never = |_: &str, _: &str, _: &str| false;
        assert_eq!(
            occurrence("n1", event("Pod", "default", "web"), now, never),
            Err(Refused::ForeignPod("default".into(), "web".into()))
        );
        assert_eq!(
            occurrence("n1", event("Node", "", "n2"), now, never),
            Err(Refused::OtherNode("n2".into()))
        );
        assert!(occurrence("n1", event("Node", "", "n1"), now, never).is_ok());
        assert_eq!(
            occurrence("n1", event("Secret", "default", "s"), now, never),
            Err(Refused::Kind("Secret".into()))
        );
    }
}
