//! The MQTT topics of protocol v1: building them, the subscription filters,
//! and parsing a received topic back.
//!
//! | topic | direction | QoS / retain | message |
//! |---|---|---|---|
//! | `bramble/{cluster}/nodes/{node}/desired` | master -> agent | 1, retained | [`Message::Desired`] |
//! | `bramble/{cluster}/nodes/{node}/report` | agent -> master | 1 | [`Message::Report`] |
//! | `bramble/{cluster}/nodes/{node}/presence` | agent and its last will | 1, retained | [`Message::Presence`] |
//! | `bramble/{cluster}/nodes/{node}/rpc/req` | master -> agent | 1 | [`Message::RpcRequest`] |
//! | `bramble/{cluster}/rpc/resp/{id}` | agent -> master | 1 | [`Message::RpcResponse`] |
//! | `bramble/{cluster}/services/{shard}` | master -> every agent | 1, retained | [`Message::Services`] |
//!
//! Every variable segment (cluster, node, request ID) must be non-empty, at
//! most [`MAX_SEGMENT_BYTES`] long, and free of `/`, the MQTT wildcards `+`
//! and `#`, and control characters: otherwise a node name could publish to
//! another node's topic or be refused by the broker.

use std::fmt;

use super::message::Message;

/// The first level of every bramble topic.
pub const TOPIC_ROOT: &str = "bramble";

/// The longest cluster name, node name or request ID allowed in a topic.
pub const MAX_SEGMENT_BYTES: usize = 256;

/// The QoS of every bramble publication and subscription.
pub const QOS: u8 = 1;

/// A parsed bramble topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `bramble/{cluster}/nodes/{node}/desired`
    Desired {
        /// The cluster's name.
        cluster: String,
        /// The node's name.
        node: String,
    },
    /// `bramble/{cluster}/nodes/{node}/report`
    Report {
        /// The cluster's name.
        cluster: String,
        /// The node's name.
        node: String,
    },
    /// `bramble/{cluster}/nodes/{node}/presence`
    Presence {
        /// The cluster's name.
        cluster: String,
        /// The node's name.
        node: String,
    },
    /// `bramble/{cluster}/nodes/{node}/rpc/req`
    RpcRequest {
        /// The cluster's name.
        cluster: String,
        /// The node's name.
        node: String,
    },
    /// `bramble/{cluster}/rpc/resp/{id}`
    RpcResponse {
        /// The cluster's name.
        cluster: String,
        /// The request's ID.
        id: String,
    },
    /// `bramble/{cluster}/services/{shard}`
    Services {
        /// The cluster's name.
        cluster: String,
        /// The shard (see [`crate::wire::services`]).
        shard: u32,
    },
}

/// A cluster name, node name or request ID that cannot be part of a topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The segment breaks one of the rules.
    #[error("{what} {value:?} cannot be used in an mqtt topic: {reason}")]
    InvalidSegment {
        /// `cluster name`, `node name` or `rpc request id`.
        what: &'static str,
        /// The offending value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// Check that `value` can be one level of a topic; `what` names it in the error.
pub fn validate_segment(what: &'static str, value: &str) -> Result<(), TopicError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > MAX_SEGMENT_BYTES {
        Some("it is longer than 256 bytes")
    } else if value.contains('/') {
        Some("it contains '/'")
    } else if value.contains(['+', '#']) {
        Some("it contains an mqtt wildcard ('+' or '#')")
    } else if value.contains(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TopicError::InvalidSegment {
            what,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Topic {
    /// The cluster the topic belongs to.
    pub fn cluster(&self) -> &str {
        match self {
            Topic::Desired { cluster, .. }
            | Topic::Report { cluster, .. }
            | Topic::Presence { cluster, .. }
            | Topic::RpcRequest { cluster, .. }
            | Topic::RpcResponse { cluster, .. }
            | Topic::Services { cluster, .. } => cluster,
        }
    }

    /// The node the topic belongs to (none for RPC responses).
    pub fn node(&self) -> Option<&str> {
        match self {
            Topic::Desired { node, .. }
            | Topic::Report { node, .. }
            | Topic::Presence { node, .. }
            | Topic::RpcRequest { node, .. } => Some(node),
            Topic::RpcResponse { .. } | Topic::Services { .. } => None,
        }
    }

    /// True for the topics published with the retain flag (desired,
    /// presence, services).
    pub fn retained(&self) -> bool {
        matches!(
            self,
            Topic::Desired { .. } | Topic::Presence { .. } | Topic::Services { .. }
        )
    }

    /// The QoS to publish and subscribe with: always [`QOS`].
    pub fn qos(&self) -> u8 {
        QOS
    }

    /// True when `message` is the kind of message this topic carries; a
    /// receiver drops (and logs) anything else.
    pub fn carries(&self, message: &Message) -> bool {
        matches!(
            (self, message),
            (Topic::Desired { .. }, Message::Desired(_))
                | (
                    Topic::Report { .. },
                    Message::Report(_) | Message::Events(_)
                )
                | (Topic::Presence { .. }, Message::Presence(_))
                | (Topic::RpcRequest { .. }, Message::RpcRequest(_))
                | (Topic::RpcResponse { .. }, Message::RpcResponse(_))
                | (Topic::Services { .. }, Message::Services(_))
        )
    }

    /// Check every variable segment of the topic (see [`validate_segment`]).
    pub fn validate(&self) -> Result<(), TopicError> {
        validate_segment("cluster name", self.cluster())?;
        match self {
            Topic::RpcResponse { id, .. } => validate_segment("rpc request id", id),
            Topic::Services { .. } => Ok(()),
            Topic::Desired { node, .. }
            | Topic::Report { node, .. }
            | Topic::Presence { node, .. }
            | Topic::RpcRequest { node, .. } => validate_segment("node name", node),
        }
    }
}

impl fmt::Display for Topic {
    /// The topic name, e.g. `bramble/home/nodes/pi-1/desired`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Desired { cluster, node } => {
                write!(f, "{TOPIC_ROOT}/{cluster}/nodes/{node}/desired")
            }
            Topic::Report { cluster, node } => {
                write!(f, "{TOPIC_ROOT}/{cluster}/nodes/{node}/report")
            }
            Topic::Presence { cluster, node } => {
                write!(f, "{TOPIC_ROOT}/{cluster}/nodes/{node}/presence")
            }
            Topic::RpcRequest { cluster, node } => {
                write!(f, "{TOPIC_ROOT}/{cluster}/nodes/{node}/rpc/req")
            }
            Topic::RpcResponse { cluster, id } => {
                write!(f, "{TOPIC_ROOT}/{cluster}/rpc/resp/{id}")
            }
            Topic::Services { cluster, shard } => {
                write!(f, "{TOPIC_ROOT}/{cluster}/services/{shard}")
            }
        }
    }
}

fn node_topic(
    make: fn(String, String) -> Topic,
    cluster: &str,
    node: &str,
) -> Result<String, TopicError> {
    let topic = make(cluster.to_owned(), node.to_owned());
    topic.validate()?;
    Ok(topic.to_string())
}

/// `bramble/{cluster}/nodes/{node}/desired`: the node's desired state (retained).
pub fn desired_topic(cluster: &str, node: &str) -> Result<String, TopicError> {
    node_topic(
        |cluster, node| Topic::Desired { cluster, node },
        cluster,
        node,
    )
}

/// `bramble/{cluster}/nodes/{node}/report`: the node's reports.
pub fn report_topic(cluster: &str, node: &str) -> Result<String, TopicError> {
    node_topic(
        |cluster, node| Topic::Report { cluster, node },
        cluster,
        node,
    )
}

/// `bramble/{cluster}/nodes/{node}/presence`: online, or offline as last will (retained).
pub fn presence_topic(cluster: &str, node: &str) -> Result<String, TopicError> {
    node_topic(
        |cluster, node| Topic::Presence { cluster, node },
        cluster,
        node,
    )
}

/// `bramble/{cluster}/nodes/{node}/rpc/req`: requests to the node's agent.
pub fn rpc_request_topic(cluster: &str, node: &str) -> Result<String, TopicError> {
    node_topic(
        |cluster, node| Topic::RpcRequest { cluster, node },
        cluster,
        node,
    )
}

/// `bramble/{cluster}/rpc/resp/{id}`: the responses to request `id`.
pub fn rpc_response_topic(cluster: &str, id: &str) -> Result<String, TopicError> {
    let topic = Topic::RpcResponse {
        cluster: cluster.to_owned(),
        id: id.to_owned(),
    };
    topic.validate()?;
    Ok(topic.to_string())
}

/// `bramble/{cluster}/nodes/+/report`: the master's subscription to every node's reports.
pub fn report_filter(cluster: &str) -> Result<String, TopicError> {
    validate_segment("cluster name", cluster)?;
    Ok(format!("{TOPIC_ROOT}/{cluster}/nodes/+/report"))
}

/// `bramble/{cluster}/nodes/+/presence`: the master's subscription to every node's presence.
pub fn presence_filter(cluster: &str) -> Result<String, TopicError> {
    validate_segment("cluster name", cluster)?;
    Ok(format!("{TOPIC_ROOT}/{cluster}/nodes/+/presence"))
}

/// `bramble/{cluster}/rpc/resp/+`: the master's subscription to every RPC response.
pub fn rpc_response_filter(cluster: &str) -> Result<String, TopicError> {
    validate_segment("cluster name", cluster)?;
    Ok(format!("{TOPIC_ROOT}/{cluster}/rpc/resp/+"))
}

/// `bramble/{cluster}/services/{shard}`: one shard of the cluster's Services (retained).
pub fn services_topic(cluster: &str, shard: u32) -> Result<String, TopicError> {
    let topic = Topic::Services {
        cluster: cluster.to_owned(),
        shard,
    };
    topic.validate()?;
    Ok(topic.to_string())
}

/// `bramble/{cluster}/services/+`: an agent's subscription to every shard of the Services.
pub fn services_filter(cluster: &str) -> Result<String, TopicError> {
    validate_segment("cluster name", cluster)?;
    Ok(format!("{TOPIC_ROOT}/{cluster}/services/+"))
}

/// Parse a received topic name. `None` for anything that is not exactly one
/// of the v1 topics with valid segments.
pub fn parse_topic(topic: &str) -> Option<Topic> {
    let mut levels = topic.split('/');
    if levels.next()? != TOPIC_ROOT {
        return None;
    }
    let cluster = levels.next()?.to_owned();
    let rest: Vec<&str> = levels.collect();
    let parsed = match rest.as_slice() {
        ["nodes", node, "desired"] => Topic::Desired {
            cluster,
            node: (*node).to_owned(),
        },
        ["nodes", node, "report"] => Topic::Report {
            cluster,
            node: (*node).to_owned(),
        },
        ["nodes", node, "presence"] => Topic::Presence {
            cluster,
            node: (*node).to_owned(),
        },
        ["nodes", node, "rpc", "req"] => Topic::RpcRequest {
            cluster,
            node: (*node).to_owned(),
        },
        ["rpc", "resp", id] => Topic::RpcResponse {
            cluster,
            id: (*id).to_owned(),
        },
        ["services", shard] => {
            let number: u32 = shard.parse().ok()?;
            // One spelling per shard: no `+1`, `01`.
            if number.to_string() != *shard {
                return None;
            }
            Topic::Services {
                cluster,
                shard: number,
            }
        }
        _ => return None,
    };
    parsed.validate().ok()?;
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Presence;

    fn ok(result: Result<String, TopicError>) -> String {
        match result {
            Ok(topic) => topic,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn builders_match_the_protocol_table() {
        assert_eq!(
            ok(desired_topic("home", "pi-1")),
            "bramble/home/nodes/pi-1/desired"
        );
        assert_eq!(
            ok(report_topic("home", "pi-1")),
            "bramble/home/nodes/pi-1/report"
        );
        assert_eq!(
            ok(presence_topic("home", "pi-1")),
            "bramble/home/nodes/pi-1/presence"
        );
        assert_eq!(
            ok(rpc_request_topic("home", "pi-1")),
            "bramble/home/nodes/pi-1/rpc/req"
        );
        assert_eq!(
            ok(rpc_response_topic("home", "5f0c")),
            "bramble/home/rpc/resp/5f0c"
        );
        assert_eq!(ok(report_filter("home")), "bramble/home/nodes/+/report");
        assert_eq!(ok(presence_filter("home")), "bramble/home/nodes/+/presence");
        assert_eq!(ok(rpc_response_filter("home")), "bramble/home/rpc/resp/+");
        assert_eq!(ok(services_topic("home", 3)), "bramble/home/services/3");
        assert_eq!(ok(services_filter("home")), "bramble/home/services/+");
        assert_eq!(parse_topic("bramble/home/services/03"), None);
        assert_eq!(parse_topic("bramble/home/services/x"), None);
    }

    #[test]
    fn every_topic_parses_back() {
        let topics = [
            Topic::Desired {
                cluster: "home".into(),
                node: "pi-1".into(),
            },
            Topic::Report {
                cluster: "home".into(),
                node: "pi-1".into(),
            },
            Topic::Presence {
                cluster: "home".into(),
                node: "pi-1".into(),
            },
            Topic::RpcRequest {
                cluster: "home".into(),
                node: "pi-1".into(),
            },
            Topic::RpcResponse {
                cluster: "home".into(),
                id: "5f0c".into(),
            },
            Topic::Services {
                cluster: "home".into(),
                shard: 15,
            },
        ];
        for topic in topics {
            assert_eq!(parse_topic(&topic.to_string()), Some(topic.clone()));
            assert_eq!(topic.cluster(), "home");
            assert_eq!(topic.qos(), 1);
        }
    }

    #[test]
    fn retain_and_node_follow_the_table() {
        let desired = parse_topic("bramble/c/nodes/n/desired").expect("parses");
        let presence = parse_topic("bramble/c/nodes/n/presence").expect("parses");
        let report = parse_topic("bramble/c/nodes/n/report").expect("parses");
        let response = parse_topic("bramble/c/rpc/resp/1").expect("parses");
        assert!(desired.retained() && presence.retained());
        assert!(!report.retained() && !response.retained());
        assert_eq!(report.node(), Some("n"));
        assert_eq!(response.node(), None);
        assert!(presence.carries(&Message::Presence(Presence::Offline)));
        assert!(!desired.carries(&Message::Presence(Presence::Offline)));
    }

    #[test]
    fn foreign_or_malformed_topics_do_not_parse() {
        for topic in [
            "",
            "bramble",
            "bramble/home",
            "other/home/nodes/pi-1/desired",
            "bramble//nodes/pi-1/desired",
            "bramble/home/nodes//desired",
            "bramble/home/nodes/pi-1/desired/extra",
            "bramble/home/nodes/pi-1/unknown",
            "bramble/home/nodes/pi-1/rpc/resp",
            "bramble/home/rpc/resp/",
            "bramble/home/rpc/resp/a/b",
            "bramble/home/nodes/+/report",
            "bramble/#",
            "Bramble/home/nodes/pi-1/desired",
        ] {
            assert_eq!(parse_topic(topic), None, "{topic}");
        }
    }

    #[test]
    fn bad_segments_are_refused_with_the_reason() {
        let error = desired_topic("home", "../pi-2").expect_err("slash");
        assert_eq!(
            error.to_string(),
            "node name \"../pi-2\" cannot be used in an mqtt topic: it contains '/'"
        );
        assert!(report_topic("", "pi-1").is_err());
        assert!(presence_topic("home", "pi+1").is_err());
        assert!(rpc_request_topic("home", "#").is_err());
        assert!(rpc_response_topic("home", "a\0b").is_err());
        assert!(report_filter("a/b").is_err());
        assert!(desired_topic("home", &"x".repeat(MAX_SEGMENT_BYTES)).is_ok());
        assert!(desired_topic("home", &"x".repeat(MAX_SEGMENT_BYTES + 1)).is_err());
    }
}
