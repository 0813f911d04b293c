//! What a pod requests and what a node offers, in milli-cpu and bytes.
//!
//! The request rules are Kubernetes': a pod's effective request is the sum over
//! its app containers, raised to the largest init container where that is
//! bigger (init containers run one at a time, before the app containers). For
//! fit a missing request counts 0; for scoring it counts 100m cpu and 200Mi
//! memory per container (Kubernetes' `GetNonzeroRequests`), so that pods
//! without requests still spread instead of piling onto one node.
//!
//! A container with a limit and no request is taken to request its limit:
//! Kubernetes' API server defaults requests that way before the scheduler ever
//! sees the pod, and bramble's API may not, so the scheduler applies the rule
//! itself.

use bramble_common::api::{Container, Node, Pod};
use bramble_common::Quantity;

/// Default cpu request of a container without one, for scoring only (100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i128 = 100;
/// Default memory request of a container without one, for scoring only (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i128 = 200 * 1024 * 1024;
/// Pods a node accepts when its allocatable has no `pods` entry (Kubernetes'
/// kubelet default).
pub const DEFAULT_MAX_PODS: i128 = 110;

/// An amount of cpu and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// Cpu in thousandths of a core.
    pub milli_cpu: i128,
    /// Memory in bytes.
    pub memory: i128,
}

impl Resources {
    fn add(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(other.milli_cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
        }
    }

    /// `self + other`, saturating.
    pub(crate) fn plus(self, other: Resources) -> Resources {
        self.add(other)
    }
}

/// What a pod asks of a node: the request used for fit, and the request used
/// for scoring (with defaults for missing requests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PodRequests {
    /// The effective request; missing requests count 0.
    pub fit: Resources,
    /// The effective request with 100m / 200Mi for each missing request.
    pub score: Resources,
}

impl PodRequests {
    /// The effective requests of `pod`.
    pub fn of(pod: &Pod) -> PodRequests {
        let sum = |defaults: bool| {
            let apps = pod
                .spec
                .containers
                .iter()
                .map(|c| container_request(c, defaults))
                .fold(Resources::default(), Resources::add);
            pod.spec
                .init_containers
                .iter()
                .map(|c| container_request(c, defaults))
                .fold(apps, Resources::max)
        };
        PodRequests {
            fit: sum(false),
            score: sum(true),
        }
    }
}

/// One container's request. An explicit request (even `0`) wins, then the
/// limit; otherwise 0, or Kubernetes' scoring default when `defaults` is set.
fn container_request(container: &Container, defaults: bool) -> Resources {
    let lookup = |name: &str| {
        let resources = container.resources.as_ref()?;
        resources
            .requests
            .get(name)
            .or_else(|| resources.limits.get(name))
    };
    let cpu = match lookup("cpu") {
        Some(q) => milli(q).unwrap_or(0),
        None if defaults => DEFAULT_MILLI_CPU_REQUEST,
        None => 0,
    };
    let memory = match lookup("memory") {
        Some(q) => units(q).unwrap_or(0),
        None if defaults => DEFAULT_MEMORY_REQUEST,
        None => 0,
    };
    Resources {
        milli_cpu: cpu,
        memory,
    }
}

/// What a node offers to pods: `status.allocatable`, falling back to
/// `status.capacity` per resource (a node that reported no allocatable yet),
/// and to 0 (cpu, memory) or [`DEFAULT_MAX_PODS`] (pods) when both are absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Allocatable {
    /// Cpu and memory.
    pub resources: Resources,
    /// How many pods the node runs at most.
    pub pods: i128,
}

impl Allocatable {
    /// The allocatable resources of `node`.
    pub fn of(node: &Node) -> Allocatable {
        let get = |name: &str| {
            let status = node.status.as_ref()?;
            status
                .allocatable
                .get(name)
                .or_else(|| status.capacity.get(name))
        };
        Allocatable {
            resources: Resources {
                milli_cpu: get("cpu").and_then(milli).unwrap_or(0),
                memory: get("memory").and_then(units).unwrap_or(0),
            },
            pods: get("pods").and_then(units).unwrap_or(DEFAULT_MAX_PODS),
        }
    }
}

/// `q` in milli-units, rounded up (`250m` is 250, `1.5` is 1500), or `None`
/// when it does not parse.
pub(crate) fn milli(q: &Quantity) -> Option<i128> {
    q.parse().ok().map(|p| p.milli_value())
}

/// `q` in whole units, rounded up (`64Mi` is 67108864, `100m` is 1), or
/// `None` when it does not parse.
pub(crate) fn units(q: &Quantity) -> Option<i128> {
    q.parse().ok().map(|p| p.value())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bramble_common::api::{NodeStatus, PodSpec, ResourceRequirements};

    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity(text.to_string())
    }

    #[test]
    fn parses_the_common_quantity_forms() {
        assert_eq!(milli(&q("250m")), Some(250));
        assert_eq!(milli(&q("1")), Some(1000));
        assert_eq!(milli(&q("1.5")), Some(1500));
        assert_eq!(milli(&q("0.1")), Some(100));
        assert_eq!(milli(&q(".5")), Some(500));
        assert_eq!(milli(&q("0.1m")), Some(1), "rounds up like MilliValue");
        assert_eq!(units(&q("64Mi")), Some(64 * 1024 * 1024));
        assert_eq!(units(&q("1Gi")), Some(1 << 30));
        assert_eq!(units(&q("1G")), Some(1_000_000_000));
        assert_eq!(units(&q("500M")), Some(500_000_000));
        assert_eq!(units(&q("1024")), Some(1024));
        assert_eq!(units(&q("2k")), Some(2000));
        assert_eq!(units(&q("1.5Gi")), Some(3 << 29));
        assert_eq!(units(&q("100m")), Some(1), "rounds up like Value");
        assert_eq!(units(&q("1e3")), Some(1000));
        assert_eq!(units(&q("1E-3")), Some(1));
        assert_eq!(milli(&q("1E-3")), Some(1));
        assert_eq!(units(&q("+2")), Some(2));
        assert_eq!(units(&q("-2")), Some(-2));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        for bad in [
            "", "m", "abc", "1.2.3", "1KB", "1ki", ".", "1e", "1e99", "-",
        ] {
            assert_eq!(units(&q(bad)), None, "{bad:?}");
        }
        assert_eq!(units(&q("99999999999999999999999999999999999999Ei")), None);
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), q(v)))
                .collect::<BTreeMap<_, _>>()
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
            }),
            ..Container::default()
        }
    }

    #[test]
    fn effective_request_sums_app_containers_and_takes_the_largest_init_container() {
        let pod = Pod {
            spec: PodSpec {
                containers: vec![
                    container(&[("cpu", "200m"), ("memory", "100Mi")], &[]),
                    container(&[("cpu", "300m"), ("memory", "100Mi")], &[]),
                ],
                init_containers: vec![
                    container(&[("cpu", "1"), ("memory", "10Mi")], &[]),
                    container(&[("cpu", "100m"), ("memory", "150Mi")], &[]),
                ],
                ..PodSpec::default()
            },
            ..Pod::default()
        };
        let requests = PodRequests::of(&pod);
        assert_eq!(
            requests.fit,
            Resources {
                milli_cpu: 1000,
                memory: 200 << 20
            }
        );
        assert_eq!(requests.score, requests.fit);
    }

    #[test]
    fn missing_requests_are_zero_for_fit_and_defaults_for_scoring() {
        let pod = Pod {
            spec: PodSpec {
                containers: vec![
                    Container::default(),
                    container(&[("cpu", "0")], &[]),
                    container(&[], &[("memory", "1Gi")]),
                ],
                ..PodSpec::default()
            },
            ..Pod::default()
        };
        let requests = PodRequests::of(&pod);
        assert_eq!(
            requests.fit,
            Resources {
                milli_cpu: 0,
                memory: 1 << 30
            },
            "a limit without a request is the request"
        );
        assert_eq!(
            requests.score,
            Resources {
                // default, explicit 0, default
                milli_cpu: 200,
                memory: DEFAULT_MEMORY_REQUEST * 2 + (1 << 30)
            }
        );
    }

    #[test]
    fn allocatable_falls_back_to_capacity_then_defaults() {
        let mut node = Node::default();
        assert_eq!(
            Allocatable::of(&node),
            Allocatable {
                resources: Resources::default(),
                pods: DEFAULT_MAX_PODS
            }
        );
        node.status = Some(NodeStatus {
            capacity: [("cpu", "4"), ("memory", "8Gi"), ("pods", "50")]
                .iter()
                .map(|(k, v)| (k.to_string(), q(v)))
                .collect(),
            allocatable: [("memory", "7Gi")]
                .iter()
                .map(|(k, v)| (k.to_string(), q(v)))
                .collect(),
            ..NodeStatus::default()
        });
        assert_eq!(
            Allocatable::of(&node),
            Allocatable {
                resources: Resources {
                    milli_cpu: 4000,
                    memory: 7 << 30
                },
                pods: 50
            }
        );
    }
}
