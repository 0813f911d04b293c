//! Protocol v1 compatibility and robustness.
//!
//! - Golden samples: `tests/golden/*.bin` hold the encoding of one fully
//!   populated instance of each message. They must keep decoding to exactly
//!   the structs below, and encoding those structs must keep producing exactly
//!   those bytes: this is what keeps an agent one release behind able to read
//!   the master. `BRAMBLE_BLESS=1 cargo test -p bramble-common --test
//!   wire_golden` (re)writes them; rewriting an existing sample means the
//!   protocol changed incompatibly, which needs a new `PROTOCOL_VERSION`.
//! - Corrupt input of every kind returns an error and never panics.
//! - Decoding allocates in proportion to the payload, never to the lengths a
//!   payload declares (measured with a counting global allocator).

// The counting allocator below needs `unsafe impl GlobalAlloc`; nothing else
// in this file is unsafe.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use bramble_common::wire::{
    check_size, decode, encode, ConditionReport, ConfigData, ConfigKind, DecodeError, DesiredPod,
    EncodeError, ExecSpec, ExitStatus, Message, NodeConfig, NodeDesired, NodeEvent, NodeEvents,
    NodeFacts, NodeReport, NodeStatusReport, PeerNode, PodStatusReport, Presence, RpcBody, RpcCall,
    RpcRequest, RpcResponse, ServiceShard, StreamAck, StreamBody, StreamCall, StreamInput,
    StreamOutput, TerminalSize, WireEndpoint, WireProtocol, WireService, WireServicePort,
    WireServiceType, HEADER_LEN, MAX_MESSAGE_BYTES, MAX_RPC_CHUNK_BYTES, MAX_SEGMENT_BYTES,
    PROTOCOL_VERSION, SERVICE_SHARDS,
};

// ---------------------------------------------------------------------------
// Allocation measurement: the largest single allocation made by this thread
// while tracking is on. Thread-local so that tests running in parallel do not
// disturb each other.

struct TrackingAllocator;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping only touches const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

/// Run `f` and return its result with the largest single allocation it made.
fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    TRACKING.with(|tracking| tracking.set(true));
    let result = f();
    TRACKING.with(|tracking| tracking.set(false));
    (result, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------
// Fixtures: literal values only (never derived from the API types, whose JSON
// may change), with every field set and every Option both Some and None.

fn desired() -> Message {
    Message::Desired(NodeDesired {
        generation: 1_234_567,
        pods: vec![
            DesiredPod {
                uid: "6f1c2a8e-1b7d-4c55-9a0e-3d2f8b9c0a11".into(),
                namespace: "default".into(),
                name: "web-7d4b9c".into(),
                resource_version: 4_815,
                spec_json: r#"{"containers":[{"name":"nginx","image":"nginx:1.27","env":[{"name":"DB_PASSWORD","valueFrom":{"secretKeyRef":{"name":"db","key":"password"}}}],"volumeMounts":[{"name":"conf","mountPath":"/etc/nginx/conf.d"}]}],"volumes":[{"name":"conf","configMap":{"name":"nginx-conf"}}],"nodeName":"pi-1","terminationGracePeriodSeconds":20}"#.into(),
                labels: vec![
                    ("app".into(), "web".into()),
                    ("pod-template-hash".into(), "7d4b9c".into()),
                ],
                annotations: vec![("bramble.io/note".into(), "héllo, wörld ✓".into())],
                deletion_grace_seconds: None,
            },
            DesiredPod {
                uid: "0b9e7c3d-5a4f-4e21-8c6b-7f1a2d3e4b5c".into(),
                namespace: "iot".into(),
                name: "sensor-reader".into(),
                resource_version: 99,
                spec_json: r#"{"containers":[{"name":"reader","image":"ghcr.io/example/reader@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}],"hostNetwork":true}"#.into(),
                labels: vec![],
                annotations: vec![],
                deletion_grace_seconds: Some(30),
            },
        ],
        node_config: NodeConfig {
            pod_cidr: "10.244.1.0/24".into(),
            cluster_dns: "10.96.0.10".into(),
            service_cidr: "10.96.0.0/16".into(),
            heartbeat_seconds: 60,
            cluster_name: "home".into(),
        },
        configs: vec![
            ConfigData {
                kind: ConfigKind::ConfigMap,
                namespace: "default".into(),
                name: "nginx-conf".into(),
                resource_version: 4_700,
                data: vec![
                    ("default.conf".into(), b"server { listen 80; }\n".to_vec()),
                    ("empty".into(), vec![]),
                ],
            },
            ConfigData {
                kind: ConfigKind::Secret,
                namespace: "default".into(),
                name: "db".into(),
                resource_version: 4_701,
                data: vec![("password".into(), vec![0x00, 0xff, 0x7f, 0x80, b'h', b'i'])],
            },
        ],
        peers: vec![
            PeerNode {
                name: "pi-2".into(),
                address: "192.168.1.12".into(),
                pod_cidr: "10.244.2.0/24".into(),
            },
            PeerNode {
                name: "pi-3".into(),
                address: "fd00::13".into(),
                pod_cidr: "10.244.3.0/24".into(),
            },
        ],
    })
}

fn report() -> Message {
    Message::Report(NodeReport {
        seq: 77,
        applied_generation: 1_234_566,
        node_status: NodeStatusReport {
            facts: NodeFacts {
                architecture: "arm".into(),
                arch_variant: "v7".into(),
                os: "linux".into(),
                os_image: "Raspbian GNU/Linux 12 (bookworm)".into(),
                kernel_version: "6.6.31+rpt-rpi-v7".into(),
                cpus: 4,
                memory_bytes: 1_024 * 1_024 * 1_024,
                agent_version: "0.1.0".into(),
                cgroup_version: 2,
                cgroup_controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
                hostname: "pi-1".into(),
                boot_id: "c0ffee00-1111-2222-3333-444455556666".into(),
                machine_id: "0123456789abcdef0123456789abcdef".into(),
                max_pods: 32,
            },
            conditions: vec![
                ConditionReport {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: "AgentReady".into(),
                    message: "bramble-agent is posting ready status".into(),
                    last_transition_unix: 1_767_225_600,
                },
                ConditionReport {
                    type_: "MemoryPressure".into(),
                    status: "False".into(),
                    reason: "".into(),
                    message: "".into(),
                    last_transition_unix: -1,
                },
            ],
            addresses: vec![
                ("InternalIP".into(), "192.168.1.11".into()),
                ("Hostname".into(), "pi-1".into()),
            ],
        },
        pod_statuses: vec![PodStatusReport {
            uid: "6f1c2a8e-1b7d-4c55-9a0e-3d2f8b9c0a11".into(),
            namespace: "default".into(),
            name: "web-7d4b9c".into(),
            status_json: r#"{"phase":"Running","podIP":"10.244.1.7","containerStatuses":[{"name":"nginx","state":{"running":{"startedAt":"2026-01-01T00:00:00Z"}},"ready":true,"restartCount":2,"image":"nginx:1.27","imageID":""}]}"#.into(),
            observed_resource_version: 4_815,
        }],
        full: true,
    })
}

fn presence_online() -> Message {
    Message::Presence(Presence::Online {
        agent_version: "0.1.0".into(),
        boot_id: "c0ffee00-1111-2222-3333-444455556666".into(),
        applied_generation: 1_234_566,
    })
}

fn presence_offline() -> Message {
    Message::Presence(Presence::Offline)
}

fn rpc_request() -> Message {
    Message::RpcRequest(RpcRequest {
        id: "3e1d0f6a-9b8c-4d7e-a6f5-b4c3d2e1f0a9".into(),
        reply_topic: "bramble/home/rpc/resp/3e1d0f6a-9b8c-4d7e-a6f5-b4c3d2e1f0a9".into(),
        call: RpcCall::Logs {
            namespace: "default".into(),
            pod: "web-7d4b9c".into(),
            container: "nginx".into(),
            tail_lines: Some(100),
            previous: false,
            follow: true,
            since_bytes: None,
        },
    })
}

fn rpc_cancel() -> Message {
    Message::RpcRequest(RpcRequest {
        id: "7a2b9c4d-0e1f-4a5b-8c7d-6e5f4a3b2c1d".into(),
        reply_topic: "bramble/home/rpc/resp/7a2b9c4d-0e1f-4a5b-8c7d-6e5f4a3b2c1d".into(),
        call: RpcCall::Cancel {
            id: "3e1d0f6a-9b8c-4d7e-a6f5-b4c3d2e1f0a9".into(),
        },
    })
}

fn rpc_response_log_chunk() -> Message {
    Message::RpcResponse(RpcResponse {
        id: "3e1d0f6a-9b8c-4d7e-a6f5-b4c3d2e1f0a9".into(),
        seq: 3,
        last: false,
        body: RpcBody::LogChunk {
            data: b"GET / HTTP/1.1 200\n\x1b[31mraw bytes \xff\xfe\n".to_vec(),
        },
    })
}

fn rpc_response_error() -> Message {
    Message::RpcResponse(RpcResponse {
        id: "3e1d0f6a-9b8c-4d7e-a6f5-b4c3d2e1f0a9".into(),
        seq: 4,
        last: true,
        body: RpcBody::Error {
            message: "container \"nginx\" of pod default/web-7d4b9c has no previous run".into(),
        },
    })
}

const SESSION: &str = "5b0c1d2e-3f4a-4b5c-8d6e-7f8091a2b3c4";

fn stream_request(call: StreamCall) -> Message {
    Message::RpcRequest(RpcRequest {
        id: SESSION.into(),
        reply_topic: format!("bramble/home/rpc/resp/{SESSION}"),
        call: RpcCall::Stream(call),
    })
}

fn stream_response(seq: u32, last: bool, body: StreamBody) -> Message {
    Message::RpcResponse(RpcResponse {
        id: SESSION.into(),
        seq,
        last,
        body: RpcBody::Stream(body),
    })
}

fn rpc_stream_exec() -> Message {
    stream_request(StreamCall::Exec(ExecSpec {
        namespace: "default".into(),
        pod: "web-7d4b9c".into(),
        container: "nginx".into(),
        command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    }))
}

fn rpc_stream_input() -> Message {
    stream_request(StreamCall::Input(StreamInput {
        seq: 7,
        data: b"ls -l /\n\x04\xff".to_vec(),
        eof: true,
    }))
}

fn rpc_stream_ack() -> Message {
    stream_request(StreamCall::Ack(StreamAck { seq: 70_000 }))
}

fn rpc_stream_resize() -> Message {
    stream_request(StreamCall::Resize(TerminalSize {
        width: 211,
        height: 53,
    }))
}

fn rpc_stream_started() -> Message {
    stream_response(0, false, StreamBody::Started)
}

fn rpc_stream_output() -> Message {
    stream_response(
        1,
        false,
        StreamBody::Output(StreamOutput {
            channel: 2,
            data: b"sh: nope: not found\n\xfe".to_vec(),
        }),
    )
}

fn rpc_stream_input_ack() -> Message {
    stream_response(2, false, StreamBody::InputAck(StreamAck { seq: 7 }))
}

fn rpc_stream_exited() -> Message {
    stream_response(
        3,
        true,
        StreamBody::Exited(ExitStatus {
            code: 137,
            message: "the session was closed".into(),
        }),
    )
}

fn events() -> Message {
    Message::Events(NodeEvents {
        seq: 42,
        events: vec![
            NodeEvent {
                kind: "Pod".into(),
                namespace: "default".into(),
                name: "web-7d4b9c".into(),
                uid: "6f1c2a8e-1b7d-4c55-9a0e-3d2f8b9c0a11".into(),
                field_path: "spec.containers{nginx}".into(),
                warning: true,
                reason: "BackOff".into(),
                message: "Back-off restarting failed container nginx in pod web-7d4b9c_default(6f1c2a8e-1b7d-4c55-9a0e-3d2f8b9c0a11)".into(),
                count: 7,
                first_seconds_ago: 310,
                last_seconds_ago: 4,
            },
            NodeEvent {
                kind: "Node".into(),
                namespace: "".into(),
                name: "pi-1".into(),
                uid: "pi-1".into(),
                field_path: "".into(),
                warning: false,
                reason: "NodeReady".into(),
                message: "Node pi-1 status is now: NodeReady".into(),
                count: 1,
                first_seconds_ago: 0,
                last_seconds_ago: 0,
            },
        ],
    })
}

fn services() -> Message {
    let endpoint = |address: &str, node: &str, ready: bool| WireEndpoint {
        address: address.into(),
        hostname: String::new(),
        node: node.into(),
        ready,
        serving: ready,
        terminating: false,
        ports: vec![8080, 9090],
    };
    Message::Services(ServiceShard {
        shard: 11,
        shard_count: SERVICE_SHARDS,
        revision: 4242,
        services: vec![
            WireService {
                namespace: "default".into(),
                name: "web".into(),
                type_: WireServiceType::LoadBalancer,
                cluster_ip: "10.96.14.7".into(),
                external_name: String::new(),
                ports: vec![
                    WireServicePort {
                        name: "http".into(),
                        protocol: WireProtocol::Tcp,
                        port: 80,
                        node_port: 30080,
                    },
                    WireServicePort {
                        name: "metrics".into(),
                        protocol: WireProtocol::Udp,
                        port: 9090,
                        node_port: 0,
                    },
                ],
                affinity_timeout_seconds: 10800,
                internal_local: false,
                external_local: true,
                prefer_same_node: true,
                load_balancer_ips: vec!["192.168.1.10".into(), "192.168.1.11".into()],
                endpoints: vec![
                    endpoint("10.244.1.5", "pi-1", true),
                    endpoint("10.244.2.9", "pi-2", false),
                ],
            },
            WireService {
                namespace: "default".into(),
                name: "db".into(),
                type_: WireServiceType::Headless,
                cluster_ip: String::new(),
                external_name: String::new(),
                ports: vec![],
                affinity_timeout_seconds: 0,
                internal_local: true,
                external_local: false,
                prefer_same_node: false,
                load_balancer_ips: vec![],
                endpoints: vec![WireEndpoint {
                    address: "10.244.1.6".into(),
                    hostname: "db-0".into(),
                    node: "pi-1".into(),
                    ready: true,
                    serving: true,
                    terminating: true,
                    ports: vec![],
                }],
            },
            WireService {
                namespace: "shop".into(),
                name: "payments".into(),
                type_: WireServiceType::ExternalName,
                external_name: "pay.example.com".into(),
                ..WireService::default()
            },
        ],
    })
}

/// Every golden sample: its file name (without `.bin`) and its message.
fn samples() -> Vec<(&'static str, Message)> {
    vec![
        ("desired", desired()),
        ("report", report()),
        ("presence_online", presence_online()),
        ("presence_offline", presence_offline()),
        ("rpc_request", rpc_request()),
        ("rpc_cancel", rpc_cancel()),
        ("rpc_response_log_chunk", rpc_response_log_chunk()),
        ("rpc_response_error", rpc_response_error()),
        ("events", events()),
        ("services", services()),
        ("rpc_stream_exec", rpc_stream_exec()),
        ("rpc_stream_input", rpc_stream_input()),
        ("rpc_stream_ack", rpc_stream_ack()),
        ("rpc_stream_resize", rpc_stream_resize()),
        ("rpc_stream_started", rpc_stream_started()),
        ("rpc_stream_output", rpc_stream_output()),
        ("rpc_stream_input_ack", rpc_stream_input_ack()),
        ("rpc_stream_exited", rpc_stream_exited()),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn must_encode(message: &Message) -> Vec<u8> {
    match encode(message) {
        Ok(payload) => payload,
        Err(error) => panic!("{error}"),
    }
}

/// A decode that succeeded must survive encode then decode unchanged, and
/// the re-encoding is never longer than the input (it is canonical).
fn assert_reencodes(payload: &[u8], message: &Message) {
    let again = must_encode(message);
    assert!(again.len() <= payload.len(), "re-encoding grew");
    assert_eq!(decode(&again).as_ref(), Ok(message));
}

// ---------------------------------------------------------------------------
// Round trips and golden samples.

#[test]
fn every_message_round_trips() {
    for (name, message) in samples() {
        let payload = must_encode(&message);
        assert_eq!(check_size(&message), Ok(payload.len()), "{name}");
        assert_eq!(decode(&payload), Ok(message), "{name}");
    }
}

#[test]
fn golden_samples_still_decode_and_encode_byte_for_byte() {
    let bless = std::env::var("BRAMBLE_BLESS").is_ok_and(|v| v == "1");
    let dir = golden_dir();
    for (name, message) in samples() {
        let path = dir.join(format!("{name}.bin"));
        if bless {
            std::fs::create_dir_all(&dir).expect("create tests/golden");
            std::fs::write(&path, must_encode(&message)).expect("write golden sample");
        }
        let committed = std::fs::read(&path).unwrap_or_else(|error| {
            panic!(
                "{}: {error}; a NEW sample is created with BRAMBLE_BLESS=1 cargo test \
                 -p bramble-common --test wire_golden",
                path.display()
            )
        });
        assert_eq!(
            decode(&committed).as_ref(),
            Ok(&message),
            "{name}.bin no longer decodes to the same message: an agent one release \
             behind would misread this build (or the fixture changed)"
        );
        assert_eq!(
            must_encode(&message),
            committed,
            "{name}: the encoding changed: this build would send bytes an agent one \
             release behind cannot read"
        );
    }
}

#[test]
fn v1_layout_is_pinned_by_hand() {
    // Independent of the golden files: the envelope and postcard's layout
    // spelled out byte by byte.
    assert_eq!(
        must_encode(&presence_offline()),
        b"BRMB\x01\x00\x02\x01",
        "header, Message::Presence (variant 2), Presence::Offline (variant 1)"
    );
    let online = Message::Presence(Presence::Online {
        agent_version: "1".into(),
        boot_id: "b".into(),
        applied_generation: 300,
    });
    assert_eq!(
        must_encode(&online),
        b"BRMB\x01\x00\x02\x00\x011\x01b\xac\x02",
        "strings are a varint length then bytes, integers are varints"
    );
    let chunk = Message::RpcResponse(RpcResponse {
        id: "i".into(),
        seq: 1,
        last: true,
        body: RpcBody::LogChunk { data: vec![7, 8] },
    });
    assert_eq!(
        must_encode(&chunk),
        b"BRMB\x01\x00\x04\x01i\x01\x01\x00\x02\x07\x08"
    );
}

// ---------------------------------------------------------------------------
// Size limits.

/// A log chunk whose payload is exactly `len` bytes long.
fn log_chunk_of_payload_len(len: usize) -> Message {
    let chunk = |data_len: usize| {
        Message::RpcResponse(RpcResponse {
            id: "x".into(),
            seq: 0,
            last: false,
            body: RpcBody::LogChunk {
                data: vec![b'a'; data_len],
            },
        })
    };
    // The length prefix is a varint, so search for the exact data length.
    let mut data_len = len;
    loop {
        let size = match check_size(&chunk(data_len)) {
            Ok(size) | Err(EncodeError::TooLarge { len: size, .. }) => size,
            Err(error) => panic!("{error}"),
        };
        if size == len {
            return chunk(data_len);
        }
        data_len -= 1;
    }
}

#[test]
fn the_limit_is_inclusive_and_oversize_fails_loudly() {
    let at_limit = log_chunk_of_payload_len(MAX_MESSAGE_BYTES);
    let payload = must_encode(&at_limit);
    assert_eq!(payload.len(), MAX_MESSAGE_BYTES);
    assert_eq!(decode(&payload), Ok(at_limit));

    let over = log_chunk_of_payload_len(MAX_MESSAGE_BYTES + 1);
    let expected = EncodeError::TooLarge {
        kind: "rpc response",
        len: MAX_MESSAGE_BYTES + 1,
        max: MAX_MESSAGE_BYTES,
    };
    assert_eq!(check_size(&over), Err(expected.clone()));
    assert_eq!(encode(&over), Err(expected.clone()));
    assert!(expected.to_string().starts_with(
        "rpc response message would be 131073 bytes, more than the 131072-byte limit"
    ));

    let Message::Desired(mut huge) = desired() else {
        unreachable!()
    };
    huge.configs[0].data[0].1 = vec![0; 200 * 1024];
    assert!(matches!(
        encode(&Message::Desired(huge)),
        Err(EncodeError::TooLarge {
            kind: "desired",
            ..
        })
    ));
}

#[test]
fn a_full_log_chunk_always_fits() {
    let message = Message::RpcResponse(RpcResponse {
        id: "i".repeat(MAX_SEGMENT_BYTES),
        seq: u32::MAX,
        last: true,
        body: RpcBody::LogChunk {
            data: vec![0xff; MAX_RPC_CHUNK_BYTES],
        },
    });
    assert!(check_size(&message).is_ok());
}

// ---------------------------------------------------------------------------
// Corrupt input: always an error, never a panic.

fn header(version: u16) -> Vec<u8> {
    let mut payload = b"BRMB".to_vec();
    payload.extend_from_slice(&version.to_le_bytes());
    payload
}

#[test]
fn empty_short_and_foreign_payloads_are_refused() {
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    let valid = must_encode(&presence_online());
    for len in 1..HEADER_LEN {
        assert_eq!(decode(&valid[..len]), Err(DecodeError::Truncated), "{len}");
    }
    assert_eq!(decode(b"BRMC\x01\x00\x02\x01"), Err(DecodeError::BadMagic));
    assert_eq!(decode(b"brmb\x01\x00\x02\x01"), Err(DecodeError::BadMagic));
    assert_eq!(
        decode(br#"{"kind":"Pod","apiVersion":"v1"}"#),
        Err(DecodeError::BadMagic)
    );
}

#[test]
fn other_versions_are_refused_and_named() {
    let body = &must_encode(&presence_offline())[HEADER_LEN..];
    for version in [0, 2, 0x0100, u16::MAX] {
        let mut payload = header(version);
        payload.extend_from_slice(body);
        assert_eq!(
            decode(&payload),
            Err(DecodeError::UnsupportedVersion {
                got: version,
                supported: PROTOCOL_VERSION,
            })
        );
    }
    let mut v2 = header(2);
    v2.extend_from_slice(body);
    let error = decode(&v2).expect_err("v2");
    assert!(error.to_string().contains("version 2"), "{error}");
}

#[test]
fn every_truncation_of_every_sample_is_an_error() {
    for (name, message) in samples() {
        let payload = must_encode(&message);
        for len in 0..payload.len() {
            let result = decode(&payload[..len]);
            assert!(
                result.is_err(),
                "{name} cut to {len} bytes decoded: {result:?}"
            );
        }
    }
}

#[test]
fn unknown_variants_are_malformed_not_panics() {
    let mut payload = header(PROTOCOL_VERSION);
    payload.push(100); // far past the last Message variant
    payload.push(100); // a Message variant no release has
    assert!(matches!(decode(&payload), Err(DecodeError::Malformed(_))));
    let mut bad_bool = must_encode(&rpc_response_error());
    let last_flag = HEADER_LEN + 1 + 1 + 36 + 1; // variant, id length, id, seq
    assert_eq!(bad_bool[last_flag], 1);
    bad_bool[last_flag] = 2;
    assert_eq!(
        decode(&bad_bool),
        Err(DecodeError::Malformed(
            "a boolean is neither 0 nor 1".into()
        ))
    );
}

#[test]
fn a_200_kib_payload_is_refused_before_parsing() {
    let mut payload = must_encode(&rpc_response_log_chunk());
    payload.resize(200 * 1024, 0);
    let (result, largest) = largest_allocation_during(|| decode(&payload));
    assert_eq!(
        result,
        Err(DecodeError::TooLarge {
            len: 200 * 1024,
            max: MAX_MESSAGE_BYTES,
        })
    );
    assert_eq!(
        largest, 0,
        "nothing may be allocated for an oversize payload"
    );
    assert_eq!(
        decode(&vec![0; MAX_MESSAGE_BYTES + 1]),
        Err(DecodeError::TooLarge {
            len: MAX_MESSAGE_BYTES + 1,
            max: MAX_MESSAGE_BYTES,
        }),
        "size is checked before the magic bytes"
    );
}

/// Varint (LEB128) encoding, as postcard writes lengths.
fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Payloads whose declared lengths lie: each must fail, and allocate in
/// proportion to its own size, never to the declared length.
fn lying_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = Vec::new();
    for (what, claim) in [("2^32", 1u64 << 32), ("2^64-1", u64::MAX)] {
        // NodeDesired { generation: 0, pods: <claim> elements ... }
        let mut pods = header(PROTOCOL_VERSION);
        pods.extend([0, 0]);
        pods.extend(varint(claim));
        cases.push((what, pods.clone()));
        // ... followed by plenty of bytes that are not enough.
        pods.resize(MAX_MESSAGE_BYTES, 0);
        cases.push((what, pods));
        // RpcResponse { id: "", seq: 0, last: false, LogChunk { data: <claim> bytes } }
        let mut chunk = header(PROTOCOL_VERSION);
        chunk.extend([4, 0, 0, 0, 0]);
        chunk.extend(varint(claim));
        cases.push((what, chunk.clone()));
        // A string claiming to be huge.
        let mut string = header(PROTOCOL_VERSION);
        string.extend([4]);
        string.extend(varint(claim));
        string.extend(b"short");
        cases.push((what, string));
    }
    // A claim just within the bytes left: postcard passes it on as a capacity
    // hint, which serde caps at 1 MiB.
    let mut within = header(PROTOCOL_VERSION);
    within.extend([0, 0]);
    within.extend(varint(100_000));
    within.resize(MAX_MESSAGE_BYTES, 0);
    cases.push(("100000 pods in 128 KiB", within));
    cases
}

#[test]
fn the_allocation_meter_sees_allocations() {
    let (buffer, largest) = largest_allocation_during(|| std::hint::black_box(vec![1u8; 5000]));
    assert_eq!(buffer.len(), 5000);
    assert!(largest >= 5000, "the meter saw {largest} bytes");
    let payload = must_encode(&desired());
    let (_, largest) = largest_allocation_during(|| decode(&payload));
    assert!(largest > 0, "decoding a real message allocates");
}

#[test]
fn declared_lengths_cannot_make_decode_allocate() {
    for (what, payload) in lying_payloads() {
        let (result, largest) = largest_allocation_during(|| decode(&payload));
        assert!(result.is_err(), "{what}: {result:?}");
        // Each element the decoder builds costs a few input bytes and at most
        // 168 bytes of memory (DesiredPod), doubled by Vec growth: 64 bytes of
        // memory per input byte bounds it, whatever the declared length.
        let bound = (64 * payload.len()).max(4096);
        assert!(
            largest <= bound,
            "{what}: {} byte payload made a {largest} byte allocation",
            payload.len()
        );
        if payload.len() < 64 {
            assert!(
                largest <= 1024,
                "{what}: a short lie allocated {largest} bytes"
            );
        }
    }
}

/// SplitMix64: a tiny seeded generator, so the random inputs are the same on
/// every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = SplitMix64(0x0b4a_4b1e_5eed_0001);
    let mut parsed_past_header = 0;
    for i in 0..3_000 {
        let len = rng.below(512);
        let mut payload = rng.bytes(len);
        // Two thirds get a valid header, so the message parser is exercised
        // rather than the magic check.
        if i % 3 != 0 && payload.len() >= HEADER_LEN {
            payload[..HEADER_LEN].copy_from_slice(&header(PROTOCOL_VERSION));
            // Start with a real variant most of the time.
            if payload.len() > HEADER_LEN {
                payload[HEADER_LEN] %= 6;
            }
        }
        match decode(&payload) {
            Ok(message) => assert_reencodes(&payload, &message),
            Err(DecodeError::Truncated | DecodeError::Malformed(_)) => parsed_past_header += 1,
            Err(_) => {}
        }
    }
    assert!(
        parsed_past_header > 1_000,
        "only {parsed_past_header} reached the parser"
    );
}

#[test]
fn mutated_samples_never_panic() {
    let mut rng = SplitMix64(0x0b4a_4b1e_5eed_0002);
    let payloads: Vec<Vec<u8>> = samples().iter().map(|(_, m)| must_encode(m)).collect();
    let mut decoded = 0;
    for _ in 0..3_000 {
        let mut payload = payloads[rng.below(payloads.len())].clone();
        for _ in 0..=rng.below(4) {
            let at = HEADER_LEN + rng.below(payload.len() - HEADER_LEN);
            match rng.below(3) {
                0 => payload[at] = rng.next_u64() as u8,
                1 => payload[at] ^= 1 << rng.below(8),
                _ => {
                    payload.remove(at);
                }
            }
            if payload.len() <= HEADER_LEN {
                break;
            }
        }
        if let Ok(message) = decode(&payload) {
            decoded += 1;
            assert_reencodes(&payload, &message);
        }
    }
    // Flipping a byte inside a string still decodes: the round-trip check ran.
    assert!(
        decoded > 0,
        "no mutation decoded, so the re-encoding check never ran"
    );
}
