//! Server-side defaults, applied to every object the API admits, as
//! Kubernetes does (so `kubectl get -o yaml` shows the values in force).

use base64::Engine;

use crate::api::{Container, PodSpec, Toleration};
use crate::kinds::AnyObject;

/// Fill in the defaults of `object`.
pub fn apply_defaults(object: &mut AnyObject) {
    match object {
        AnyObject::Pod(pod) => {
            pod_spec_defaults(&mut pod.spec);
            default_toleration_seconds(&mut pod.spec);
            // A new pod is Pending until the scheduler and its node say otherwise.
            let status = pod.status.get_or_insert_with(Default::default);
            status.phase.get_or_insert_with(|| "Pending".into());
        }
        AnyObject::Deployment(d) => {
            d.spec.replicas.get_or_insert(1);
            d.spec.revision_history_limit.get_or_insert(10);
            d.spec.progress_deadline_seconds.get_or_insert(600);
            let strategy = d.spec.strategy.get_or_insert_with(Default::default);
            let type_ = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
            if type_ == "RollingUpdate" {
                let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
                rolling
                    .max_surge
                    .get_or_insert(crate::meta::IntOrString::String("25%".into()));
                rolling
                    .max_unavailable
                    .get_or_insert(crate::meta::IntOrString::String("25%".into()));
            }
            pod_spec_defaults(&mut d.spec.template.spec);
        }
        AnyObject::ReplicaSet(rs) => {
            rs.spec.replicas.get_or_insert(1);
            pod_spec_defaults(&mut rs.spec.template.spec);
        }
        AnyObject::DaemonSet(ds) => {
            ds.spec.revision_history_limit.get_or_insert(10);
            let strategy = ds.spec.update_strategy.get_or_insert_with(Default::default);
            strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
            pod_spec_defaults(&mut ds.spec.template.spec);
        }
        AnyObject::Service(svc) => service_defaults(svc),
        AnyObject::Secret(secret) => {
            secret.type_.get_or_insert_with(|| "Opaque".into());
            let engine = base64::engine::general_purpose::STANDARD;
            for (key, value) in std::mem::take(&mut secret.string_data) {
                secret.data.insert(key, engine.encode(value.as_bytes()));
            }
        }
        AnyObject::Namespace(ns) => {
            let status = ns.status.get_or_insert_with(Default::default);
            status.phase.get_or_insert_with(|| "Active".into());
        }
        AnyObject::Job(job) => {
            let spec = &mut job.spec;
            if spec.completions.is_none() && spec.parallelism.is_none() {
                spec.completions = Some(1);
            }
            spec.parallelism.get_or_insert(1);
            spec.backoff_limit.get_or_insert(6);
            spec.completion_mode
                .get_or_insert_with(|| "NonIndexed".into());
            spec.suspend.get_or_insert(false);
            spec.manual_selector.get_or_insert(false);
            // Kubernetes labels a Job's pods with its name (and uid, added
            // by the controller: it is only known once stored).
            if let Some(name) = job.metadata.name.clone().filter(|n| !n.is_empty()) {
                let labels = &mut spec.template.metadata.labels;
                labels
                    .entry("batch.kubernetes.io/job-name".into())
                    .or_insert_with(|| name.clone());
                labels.entry("job-name".into()).or_insert(name);
            }
            let restart = spec.template.spec.restart_policy.clone();
            pod_spec_defaults(&mut spec.template.spec);
            // No default: validation asks for OnFailure or Never.
            spec.template.spec.restart_policy = restart;
        }
        AnyObject::Node(_)
        | AnyObject::ConfigMap(_)
        | AnyObject::Event(_)
        | AnyObject::ControllerRevision(_) => {}
        AnyObject::EndpointSlice(slice) => {
            for port in &mut slice.ports {
                port.protocol.get_or_insert_with(|| "TCP".into());
            }
        }
        AnyObject::Endpoints(endpoints) => {
            for port in endpoints
                .subsets
                .iter_mut()
                .flat_map(|s| s.ports.iter_mut())
            {
                port.protocol.get_or_insert_with(|| "TCP".into());
            }
        }
    }
}

/// Seconds a pod stays on a node that became not ready or unreachable
/// before it is evicted, unless it says otherwise (Kubernetes'
/// `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// Kubernetes' `DefaultTolerationSeconds` admission: a pod that does not
/// already tolerate the `node.kubernetes.io/not-ready` and
/// `node.kubernetes.io/unreachable` `NoExecute` taints gets tolerations for
/// them of [`DEFAULT_TOLERATION_SECONDS`].
pub fn default_toleration_seconds(spec: &mut PodSpec) {
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = spec.tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "NoExecute")
        });
        if !present {
            spec.tolerations.push(Toleration {
                key: Some(key.to_string()),
                operator: Some("Exists".to_string()),
                value: None,
                effect: Some("NoExecute".to_string()),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
            });
        }
    }
}

/// A Service's defaults as a single-stack IPv4 Kubernetes sets them (the
/// address itself comes from the master's allocator).
fn service_defaults(svc: &mut crate::api::Service) {
    let spec = &mut svc.spec;
    let type_ = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    spec.session_affinity.get_or_insert_with(|| "None".into());
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let config = spec
            .session_affinity_config
            .get_or_insert_with(Default::default);
        let client_ip = config.client_ip.get_or_insert_with(Default::default);
        client_ip.timeout_seconds.get_or_insert(10800);
    }
    for port in &mut spec.ports {
        port.protocol.get_or_insert_with(|| "TCP".into());
        if port.target_port.is_none() {
            port.target_port = Some(crate::meta::IntOrString::Int(port.port));
        }
    }
    if type_ != "ExternalName" {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
        if spec.ip_family_policy.is_none() {
            let headless_without_selector =
                spec.cluster_ip.as_deref() == Some("None") && spec.selector.is_empty();
            spec.ip_family_policy = Some(
                if headless_without_selector {
                    "RequireDualStack"
                } else {
                    "SingleStack"
                }
                .into(),
            );
        }
        if spec.ip_families.is_empty() {
            spec.ip_families = vec!["IPv4".into()];
        }
    }
    if matches!(type_.as_str(), "NodePort" | "LoadBalancer") {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if type_ == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    if let Some(ip) = spec.cluster_ip.clone().filter(|ip| !ip.is_empty()) {
        if spec.cluster_ips.is_empty() {
            spec.cluster_ips = vec![ip];
        }
    }
    let status = svc.status.get_or_insert_with(Default::default);
    status.load_balancer.get_or_insert_with(Default::default);
}

fn container_defaults(container: &mut Container) {
    if container.image_pull_policy.is_none() {
        let latest = image_tag(&container.image).is_none_or(|tag| tag == "latest");
        let digest = container.image.contains('@');
        container.image_pull_policy = Some(
            if latest && !digest {
                "Always"
            } else {
                "IfNotPresent"
            }
            .into(),
        );
    }
    for port in &mut container.ports {
        port.protocol.get_or_insert_with(|| "TCP".into());
    }
}

/// The tag of an image reference, if any (`busybox:1.36` → `1.36`).
fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment.split_once(':').map(|(_, tag)| tag)
}

fn pod_spec_defaults(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    for container in spec
        .init_containers
        .iter_mut()
        .chain(spec.containers.iter_mut())
    {
        container_defaults(container);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Pod, Secret};

    #[test]
    fn pods_get_the_default_toleration_seconds_unless_they_say_otherwise() {
        let mut pod = Pod::default();
        pod.spec.tolerations.push(Toleration {
            key: Some("node.kubernetes.io/unreachable".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(86_400),
            ..Toleration::default()
        });
        let mut object = AnyObject::Pod(pod);
        apply_defaults(&mut object);
        let AnyObject::Pod(pod) = object else {
            unreachable!()
        };
        let seconds = |key: &str| {
            pod.spec
                .tolerations
                .iter()
                .filter(|t| t.key.as_deref() == Some(key))
                .map(|t| t.toleration_seconds)
                .collect::<Vec<_>>()
        };
        assert_eq!(seconds("node.kubernetes.io/not-ready"), [Some(300)]);
        assert_eq!(seconds("node.kubernetes.io/unreachable"), [Some(86_400)]);
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        let mut pod = Pod::default();
        for image in [
            "busybox",
            "busybox:latest",
            "busybox:1.36",
            "reg:5000/busybox",
            "busybox@sha256:ab",
        ] {
            pod.spec.containers.push(Container {
                name: "c".into(),
                image: image.into(),
                ..Default::default()
            });
        }
        let mut object = AnyObject::Pod(pod);
        apply_defaults(&mut object);
        let AnyObject::Pod(pod) = object else {
            unreachable!()
        };
        let policies: Vec<_> = pod
            .spec
            .containers
            .iter()
            .map(|c| c.image_pull_policy.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            policies,
            ["Always", "Always", "IfNotPresent", "Always", "IfNotPresent"]
        );
        assert_eq!(pod.spec.restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn secret_string_data_moves_into_data() {
        let mut secret = Secret::default();
        secret.string_data.insert("user".into(), "admin".into());
        let mut object = AnyObject::Secret(secret);
        apply_defaults(&mut object);
        let AnyObject::Secret(secret) = object else {
            unreachable!()
        };
        assert!(secret.string_data.is_empty());
        assert_eq!(secret.data["user"], "YWRtaW4=");
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    }
}
