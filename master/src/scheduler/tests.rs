//! Tests of the pure scheduling logic: whole decisions over small clusters.

use std::collections::BTreeMap;

use bramble_common::api::{
    Container, Node, NodeSpec, NodeStatus, NodeSystemInfo, Pod, PodSpec, PodStatus,
    ResourceRequirements, Taint, Toleration,
};
use bramble_common::meta::{Condition, OwnerReference};
use bramble_common::Quantity;

use super::filter::{LABEL_ARCH, TAINT_NOT_READY, TAINT_UNSCHEDULABLE};
use super::*;

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// A ready arm64 node with `cpu` and `memory` allocatable.
fn node(name: &str, cpu: &str, memory: &str) -> Node {
    let mut node = Node::default();
    node.metadata.name = Some(name.into());
    node.metadata.labels = [
        (LABEL_ARCH.to_string(), "arm64".to_string()),
        ("kubernetes.io/hostname".to_string(), name.to_string()),
    ]
    .into_iter()
    .collect();
    node.status = Some(NodeStatus {
        allocatable: quantities(&[("cpu", cpu), ("memory", memory)]),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Condition::default()
        }],
        ..NodeStatus::default()
    });
    node
}

fn not_ready(mut node: Node) -> Node {
    if let Some(status) = node.status.as_mut() {
        status.conditions[0].status = "False".into();
    }
    node
}

fn tainted(mut node: Node, key: &str, value: Option<&str>, effect: &str) -> Node {
    node.spec.taints.push(Taint {
        key: key.into(),
        value: value.map(Into::into),
        effect: effect.into(),
        time_added: None,
    });
    node
}

/// A pending pod requesting `cpu` and `memory` (empty: no request).
fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
    let mut requests = Vec::new();
    if !cpu.is_empty() {
        requests.push(("cpu", cpu));
    }
    if !memory.is_empty() {
        requests.push(("memory", memory));
    }
    Pod {
        metadata: bramble_common::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: "busybox".into(),
                resources: Some(ResourceRequirements {
                    requests: quantities(&requests),
                    limits: BTreeMap::new(),
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        },
        ..Pod::default()
    }
}

fn on(mut pod: Pod, node: &str) -> Pod {
    pod.spec.node_name = Some(node.into());
    pod
}

fn owned_by(mut pod: Pod, uid: &str) -> Pod {
    pod.metadata.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "web-123".into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    });
    pod
}

fn with_phase(mut pod: Pod, phase: &str) -> Pod {
    pod.status = Some(PodStatus {
        phase: Some(phase.into()),
        ..PodStatus::default()
    });
    pod
}

fn tolerate(mut pod: Pod, key: &str, operator: &str, effect: &str) -> Pod {
    pod.spec.tolerations.push(Toleration {
        key: (!key.is_empty()).then(|| key.to_string()),
        operator: Some(operator.into()),
        value: None,
        effect: (!effect.is_empty()).then(|| effect.to_string()),
        toleration_seconds: None,
    });
    pod
}

fn message(result: Result<String, Unschedulable>) -> String {
    match result {
        Ok(node) => panic!("expected no fit, got {node}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn picks_the_least_allocated_node() {
    let nodes = vec![node("a", "4", "4Gi"), node("b", "4", "4Gi")];
    let bound = vec![on(pod("x", "2", "2Gi"), "a")];
    assert_eq!(
        schedule(&pod("p", "500m", "256Mi"), &nodes, &bound),
        Ok("b".into())
    );
}

#[test]
fn explains_like_kubernetes() {
    let nodes = vec![
        node("a", "4", "1Gi"),
        node("b", "4", "1Gi"),
        not_ready(node("c", "4", "8Gi")),
    ];
    let result = schedule(&pod("p", "100m", "2Gi"), &nodes, &[]);
    let Err(u) = result else {
        panic!("expected no fit")
    };
    assert_eq!(
        u.message,
        "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient memory."
    );
    assert_eq!(u.reasons.get("Insufficient memory"), Some(&2));
    assert_eq!(u.reasons.get("node(s) were not ready"), Some(&1));
    assert_eq!(u.nodes["c"], vec!["node(s) were not ready".to_string()]);
}

#[test]
fn no_nodes_at_all() {
    assert_eq!(
        message(schedule(&pod("p", "", ""), &[], &[])),
        "no nodes available to schedule pods"
    );
}

#[test]
fn a_node_without_conditions_is_not_ready_unless_the_pod_tolerates_it() {
    let mut bare = node("a", "4", "4Gi");
    if let Some(status) = bare.status.as_mut() {
        status.conditions.clear();
    }
    let nodes = vec![bare];
    assert_eq!(
        message(schedule(&pod("p", "", ""), &nodes, &[])),
        "0/1 nodes are available: 1 node(s) were not ready."
    );
    let daemon = tolerate(pod("p", "", ""), TAINT_NOT_READY, "Exists", "NoSchedule");
    assert_eq!(schedule(&daemon, &nodes, &[]), Ok("a".into()));
}

#[test]
fn cordoned_nodes_are_skipped_unless_tolerated() {
    let mut cordoned = node("a", "4", "4Gi");
    cordoned.spec = NodeSpec {
        unschedulable: Some(true),
        ..NodeSpec::default()
    };
    let nodes = vec![cordoned];
    assert_eq!(
        message(schedule(&pod("p", "", ""), &nodes, &[])),
        "0/1 nodes are available: 1 node(s) were unschedulable."
    );
    let tolerant = tolerate(pod("p", "", ""), TAINT_UNSCHEDULABLE, "Exists", "");
    assert_eq!(schedule(&tolerant, &nodes, &[]), Ok("a".into()));
}

#[test]
fn no_schedule_and_no_execute_taints_block_untolerating_pods() {
    let nodes = vec![
        tainted(node("a", "4", "4Gi"), "dedicated", Some("db"), "NoSchedule"),
        tainted(node("b", "4", "4Gi"), "maintenance", None, "NoExecute"),
    ];
    assert_eq!(
        message(schedule(&pod("p", "", ""), &nodes, &[])),
        "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, \
         1 node(s) had untolerated taint {maintenance: }."
    );
    let db = tolerate(pod("p", "", ""), "dedicated", "Exists", "NoSchedule");
    assert_eq!(schedule(&db, &nodes, &[]), Ok("a".into()));
    let everything = tolerate(pod("p", "", ""), "", "Exists", "");
    assert!(schedule(&everything, &nodes, &[]).is_ok());
}

#[test]
fn prefer_no_schedule_only_lowers_the_score() {
    // "a" sorts first and is emptier, but carries a soft taint.
    let nodes = vec![
        tainted(node("a", "8", "8Gi"), "spot", None, "PreferNoSchedule"),
        node("b", "4", "4Gi"),
    ];
    assert_eq!(schedule(&pod("p", "", ""), &nodes, &[]), Ok("b".into()));
    let tolerant = tolerate(pod("p", "", ""), "spot", "Exists", "PreferNoSchedule");
    assert_eq!(schedule(&tolerant, &nodes, &[]), Ok("a".into()));
    // A NoSchedule toleration does not cover a PreferNoSchedule taint.
    let wrong_effect = tolerate(pod("p", "", ""), "spot", "Exists", "NoSchedule");
    assert_eq!(schedule(&wrong_effect, &nodes, &[]), Ok("b".into()));
    // The only node: still chosen.
    assert_eq!(
        schedule(&pod("p", "", ""), &nodes[..1], &[]),
        Ok("a".into())
    );
}

#[test]
fn node_selector_and_architecture() {
    let mut armv7 = node("pi-zero", "1", "512Mi");
    armv7
        .metadata
        .labels
        .insert(LABEL_ARCH.into(), "arm".into());
    let mut unlabelled = node("pi-5", "4", "8Gi");
    unlabelled.metadata.labels.clear();
    if let Some(status) = unlabelled.status.as_mut() {
        status.node_info = Some(NodeSystemInfo {
            architecture: "arm64".into(),
            ..NodeSystemInfo::default()
        });
    }
    let nodes = vec![armv7, unlabelled];

    let mut arm64 = pod("p", "", "");
    arm64
        .spec
        .node_selector
        .insert(LABEL_ARCH.into(), "arm64".into());
    assert_eq!(schedule(&arm64, &nodes, &[]), Ok("pi-5".into()));

    let mut amd64 = pod("p", "", "");
    amd64
        .spec
        .node_selector
        .insert(LABEL_ARCH.into(), "amd64".into());
    assert_eq!(
        message(schedule(&amd64, &nodes, &[])),
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn bound_pods_count_against_their_node_until_they_finish() {
    let nodes = vec![node("a", "2", "2Gi")];
    let running = vec![on(pod("x", "1500m", "1Gi"), "a")];
    assert_eq!(
        message(schedule(&pod("p", "1", "512Mi"), &nodes, &running)),
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    let deleting = {
        let mut p = on(pod("x", "1500m", "1Gi"), "a");
        p.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        vec![p]
    };
    assert!(
        schedule(&pod("p", "1", "512Mi"), &nodes, &deleting).is_err(),
        "a pod being deleted still runs"
    );
    for phase in ["Succeeded", "Failed"] {
        let done = vec![with_phase(on(pod("x", "1500m", "1Gi"), "a"), phase)];
        assert_eq!(
            schedule(&pod("p", "1", "512Mi"), &nodes, &done),
            Ok("a".into()),
            "{phase}"
        );
    }
    let elsewhere = vec![on(pod("x", "1500m", "1Gi"), "gone")];
    assert_eq!(
        schedule(&pod("p", "1", "512Mi"), &nodes, &elsewhere),
        Ok("a".into())
    );
}

#[test]
fn one_node_short_of_cpu_and_memory_gives_both_reasons() {
    let nodes = vec![node("a", "1", "1Gi")];
    assert_eq!(
        message(schedule(&pod("p", "2", "2Gi"), &nodes, &[])),
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
    );
}

#[test]
fn exact_fit_is_a_fit() {
    let nodes = vec![node("a", "1", "1Gi")];
    let bound = vec![on(pod("x", "500m", "512Mi"), "a")];
    assert_eq!(
        schedule(&pod("p", "500m", "512Mi"), &nodes, &bound),
        Ok("a".into())
    );
}

#[test]
fn pod_count_uses_allocatable_pods_or_110() {
    let mut small = node("a", "4", "4Gi");
    if let Some(status) = small.status.as_mut() {
        status
            .allocatable
            .insert("pods".into(), Quantity("2".into()));
    }
    let nodes = vec![small];
    let bound = vec![on(pod("x", "", ""), "a"), on(pod("y", "", ""), "a")];
    assert_eq!(
        message(schedule(&pod("p", "", ""), &nodes, &bound)),
        "0/1 nodes are available: 1 Too many pods."
    );

    let nodes = vec![node("a", "4", "4Gi")];
    let bound: Vec<Pod> = (0..110)
        .map(|i| on(pod(&format!("x{i}"), "", ""), "a"))
        .collect();
    assert_eq!(
        message(schedule(&pod("p", "", ""), &nodes, &bound)),
        "0/1 nodes are available: 1 Too many pods."
    );
    assert!(schedule(&pod("p", "", ""), &nodes, &bound[..109]).is_ok());
}

#[test]
fn pods_without_requests_fit_a_full_node_but_prefer_an_empty_one() {
    let nodes = vec![node("a", "1", "1Gi"), node("b", "1", "1Gi")];
    // "a" is full by requests.
    let bound = vec![on(pod("x", "1", "1Gi"), "a")];
    assert_eq!(schedule(&pod("p", "", ""), &nodes, &bound), Ok("b".into()));
    assert_eq!(
        schedule(&pod("p", "", ""), &nodes[..1], &bound),
        Ok("a".into()),
        "zero requests always fit"
    );
    // Pods without requests weigh 100m/200Mi each when scoring.
    let bound = vec![on(pod("x", "", ""), "a")];
    assert_eq!(schedule(&pod("p", "", ""), &nodes, &bound), Ok("b".into()));
}

#[test]
fn init_containers_raise_the_request_to_their_largest() {
    let nodes = vec![node("a", "4", "1Gi")];
    let mut p = pod("p", "100m", "100Mi");
    p.spec.init_containers.push(Container {
        name: "migrate".into(),
        resources: Some(ResourceRequirements {
            requests: quantities(&[("memory", "2Gi")]),
            limits: BTreeMap::new(),
        }),
        ..Container::default()
    });
    assert_eq!(
        message(schedule(&p, &nodes, &[])),
        "0/1 nodes are available: 1 Insufficient memory."
    );
}

#[test]
fn filters_run_in_kubernetes_order_and_stop_at_the_first_failure() {
    let nodes = vec![
        not_ready(node("a", "1", "1Gi")),
        tainted(node("b", "1", "1Gi"), "k", Some("v"), "NoSchedule"),
        node("c", "1", "1Gi"),
    ];
    let mut p = pod("p", "2", "2Gi");
    p.spec.node_selector.insert("disk".into(), "ssd".into());
    let Err(u) = schedule(&p, &nodes, &[]) else {
        panic!("expected no fit")
    };
    assert_eq!(u.nodes["a"], vec!["node(s) were not ready".to_string()]);
    assert_eq!(
        u.nodes["b"],
        vec!["node(s) had untolerated taint {k: v}".to_string()]
    );
    assert_eq!(
        u.nodes["c"],
        vec!["node(s) didn't match Pod's node affinity/selector".to_string()]
    );
    assert_eq!(
        u.message,
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {k: v}, 1 node(s) were not ready."
    );
}

#[test]
fn replicas_of_one_owner_spread_across_nodes() {
    let nodes = vec![
        node("a", "64", "64Gi"),
        node("b", "4", "4Gi"),
        node("c", "4", "4Gi"),
    ];
    let mut snapshot = Snapshot::new(&nodes);
    let mut placed = Vec::new();
    for i in 0..3 {
        let replica = owned_by(pod(&format!("web-{i}"), "100m", "64Mi"), "rs-1");
        let node = snapshot.schedule(&replica).expect("fits");
        assert!(snapshot.assume(&replica, &node));
        placed.push(node);
    }
    placed.sort();
    assert_eq!(placed, vec!["a", "b", "c"]);

    // Without an owner, the much bigger node takes all three.
    let mut snapshot = Snapshot::new(&nodes);
    for i in 0..3 {
        let lone = pod(&format!("lone-{i}"), "100m", "64Mi");
        let node = snapshot.schedule(&lone).expect("fits");
        assert_eq!(node, "a");
        snapshot.assume(&lone, &node);
    }
}

#[test]
fn ties_go_to_the_first_node_name_whatever_the_input_order() {
    let nodes = vec![
        node("c", "4", "4Gi"),
        node("a", "4", "4Gi"),
        node("b", "4", "4Gi"),
    ];
    assert_eq!(schedule(&pod("p", "1", "1Gi"), &nodes, &[]), Ok("a".into()));
    let scores = Snapshot::new(&nodes)
        .evaluate(&pod("p", "1", "1Gi"))
        .expect("fits");
    let names: Vec<&str> = scores.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert!(scores.iter().all(|s| s.total == scores[0].total));
}

#[test]
fn scores_stay_within_their_ranges() {
    let nodes = vec![node("a", "1", "1Gi"), node("b", "0", "0")];
    let scores = Snapshot::new(&nodes)
        .evaluate(&owned_by(pod("p", "", ""), "rs"))
        .expect("fits");
    for score in &scores {
        for value in [score.least_allocated, score.spread, score.taints] {
            assert!((0..=100).contains(&value), "{score:?}");
        }
        assert!((0..=600).contains(&score.total), "{score:?}");
    }
    // Asking more than the node has (only possible for scoring defaults) is 0.
    assert_eq!(scores[1].least_allocated, 0);
}

#[test]
fn ten_thousand_pods_fill_a_cluster_evenly() {
    let nodes: Vec<Node> = (0..20)
        .map(|i| node(&format!("pi-{i:02}"), "4", "8Gi"))
        .collect();
    let mut snapshot = Snapshot::new(&nodes);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut unschedulable = 0;
    for i in 0..10_000 {
        let p = owned_by(pod(&format!("p{i}"), "10m", "16Mi"), "rs");
        match snapshot.schedule(&p) {
            Ok(node) => {
                snapshot.assume(&p, &node);
                *per_node.entry(node).or_insert(0) += 1;
            }
            Err(_) => unschedulable += 1,
        }
    }
    // 20 nodes x 110 pods.
    assert_eq!(per_node.values().sum::<usize>(), 2200);
    assert!(per_node.values().all(|&n| n == 110), "{per_node:?}");
    assert_eq!(unschedulable, 7800);
    let last = owned_by(pod("last", "10m", "16Mi"), "rs");
    assert_eq!(
        snapshot.schedule(&last).map_err(|e| e.message),
        Err("0/20 nodes are available: 20 Too many pods.".into())
    );
}

#[test]
fn which_pods_wait_for_this_scheduler() {
    let p = pod("p", "", "");
    assert!(needs_scheduling(&p));
    assert!(!needs_scheduling(&on(p.clone(), "a")));
    let mut other = p.clone();
    other.spec.scheduler_name = Some("my-scheduler".into());
    assert!(!needs_scheduling(&other));
    let mut explicit = p.clone();
    explicit.spec.scheduler_name = Some(SCHEDULER_NAME.into());
    assert!(needs_scheduling(&explicit));
    let mut deleting = p.clone();
    deleting.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
    assert!(!needs_scheduling(&deleting));
    assert!(!needs_scheduling(&with_phase(p.clone(), "Failed")));
    let mut empty_node = p;
    empty_node.spec.node_name = Some(String::new());
    assert!(needs_scheduling(&empty_node));
}
