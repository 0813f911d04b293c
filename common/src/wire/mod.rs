//! Protocol v1 between the master and the agents: the MQTT topics, the
//! messages, and the envelope they travel in.
//!
//! - [`topic`]: topic names, subscription filters, [`parse_topic`].
//! - [`message`]: [`Message`] and everything inside it. postcard is not
//!   self-describing, so these types follow strict evolution rules (see the
//!   module); `common/tests/golden/` holds encoded samples that must keep
//!   decoding, so an agent one release behind still understands the master.
//! - [`codec`]: the `BRMB` + version header, [`encode`] (refuses anything over
//!   [`MAX_MESSAGE_BYTES`]: never truncate) and [`decode`] (never panics).
//! - [`convert`]: wire types from API objects, and the JSON they carry back
//!   into API types.
//! - [`stream`]: interactive sessions (exec) over the RPC topics, flow
//!   controlled both ways.
//! - [`backoff`]: capped exponential reconnect backoff with full jitter.
//!
//! Everything here is pure: no I/O, no clock, no randomness of its own.

pub mod backoff;
pub mod codec;
pub mod convert;
pub mod message;
pub mod services;
pub mod stream;
pub mod topic;

pub use backoff::{Backoff, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF};
pub use codec::{
    check_size, decode, encode, DecodeError, EncodeError, HEADER_LEN, MAGIC, MAX_MESSAGE_BYTES,
    MAX_RPC_CHUNK_BYTES, PROTOCOL_VERSION,
};
pub use convert::{EmbeddedJsonError, FromApiError, DEFAULT_TERMINATION_GRACE_SECONDS};
pub use message::{
    ConditionReport, ConfigData, ConfigKind, DesiredPod, Message, NodeConfig, NodeDesired,
    NodeEvent, NodeEvents, NodeFacts, NodeReport, NodeStatusReport, PeerNode, PodStatusReport,
    Presence, RpcBody, RpcCall, RpcRequest, RpcResponse,
};
pub use services::{
    shard_of, ServiceShard, WireEndpoint, WireProtocol, WireService, WireServicePort,
    WireServiceType, SERVICE_SHARDS,
};
pub use stream::{
    ExecSpec, ExitStatus, StreamAck, StreamBody, StreamCall, StreamInput, StreamOutput,
    TerminalSize, STREAM_WINDOW,
};
pub use topic::{
    desired_topic, parse_topic, presence_filter, presence_topic, report_filter, report_topic,
    rpc_request_topic, rpc_response_filter, rpc_response_topic, services_filter, services_topic,
    validate_segment, Topic, TopicError, MAX_SEGMENT_BYTES, QOS, TOPIC_ROOT,
};
