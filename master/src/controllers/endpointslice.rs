//! The endpoint controller: keeps each Service's EndpointSlices
//! (`discovery.k8s.io/v1`) and its legacy `v1/Endpoints` from the Service's
//! selector and its pods, as kube-controller-manager's EndpointSlice and
//! Endpoints controllers do.
//!
//! [`desired_slices`] and [`desired_endpoints`] are pure functions of the
//! Service, its namespace's pods and the nodes' readiness, unit-tested
//! below. Per pod (with an IP, not Succeeded or Failed) and matching the
//! selector:
//!
//! - `serving` is the pod's `Ready` condition, `terminating` its
//!   `deletionTimestamp`, `ready` is serving and not terminating (always
//!   true with `publishNotReadyAddresses`);
//! - a pod on a node that is not Ready counts as not ready (what
//!   Kubernetes' node lifecycle controller achieves by marking such pods
//!   not ready): the other nodes stop sending it traffic, while its own
//!   node still routes to it from its own probes (see the agent's proxy);
//! - a named `targetPort` is resolved in the pod's containers (name and
//!   protocol); a pod without it is left out of that port, so pods with
//!   different port numbers land in different slices, as in Kubernetes;
//! - `hostname` is set when the pod's `subdomain` is the Service's name.
//!
//! Slices have at most 100 endpoints, deterministic names
//! (`{service}-{hash of the port set}[-{n}]`), the labels
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`
//! and the Service as controlling owner. A Service whose selector matches
//! nothing keeps one empty slice. Services without a selector are left to
//! their owner: hand-written EndpointSlices and Endpoints are never touched.
//! ExternalName Services get none.
//!
//! [`run`] drives them level-triggered in the style of the other
//! controllers: list everything, then follow one watch of Services, Pods,
//! Nodes, EndpointSlices and Endpoints, collect what changed for 100 ms,
//! reconcile the affected Services (all of them on a node change and every
//! minute), writing only what differs.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use bramble_common::api::{
    Endpoint, EndpointAddress, EndpointConditions, EndpointPort, EndpointSlice, EndpointSubset,
    Endpoints, ObjectReference, Pod, Service, LABEL_MANAGED_BY, LABEL_SERVICE_NAME,
    MANAGED_BY_CONTROLLER,
};
use bramble_common::meta::{IntOrString, ObjectMeta, OwnerReference};
use bramble_common::Kind;
use serde_json::Value;

use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// Most endpoints in one slice (kube-controller-manager's
/// `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label kube-controller-manager's Endpoints controller puts on the
/// Endpoints it manages.
pub const LABEL_ENDPOINTS_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// Its value.
pub const ENDPOINTS_CONTROLLER: &str = "endpoint-controller";
/// How long changes are collected before a reconcile.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Every Service is reconciled this often even when nothing changed.
const RESYNC: Duration = Duration::from_secs(60);

/// One pod's facts, as the endpoints need them.
#[derive(Debug, Clone)]
struct PodEndpoint<'a> {
    pod: &'a Pod,
    ip: String,
    serving: bool,
    terminating: bool,
}

/// Whether `pod` is Ready (`status.conditions[type=Ready]`).
fn pod_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The pods of the Service's namespace that its selector matches and that
/// have an address, not finished.
fn matching_pods<'a>(
    service: &Service,
    pods: &'a [Pod],
    node_ready: &dyn Fn(&str) -> bool,
) -> Vec<PodEndpoint<'a>> {
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    let selector = &service.spec.selector;
    let mut out: Vec<PodEndpoint<'a>> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or("default") == namespace)
        .filter(|p| {
            selector
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        })
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            let node = pod.spec.node_name.as_deref().unwrap_or("");
            Some(PodEndpoint {
                pod,
                ip,
                serving: pod_ready(pod) && node_ready(node),
                terminating: pod.metadata.deletion_timestamp.is_some(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    out
}

/// The port a Service port targets on `pod`: a number as is, a name
/// looked up in the pod's containers (same protocol). `None`: the pod has
/// no such port.
pub fn resolve_target_port(
    pod: &Pod,
    target: Option<&IntOrString>,
    port: i64,
    protocol: &str,
) -> Option<i64> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(0)) => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            pod.spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The endpoint ports of `pod` for the Service's ports (those it serves).
fn pod_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = service
        .spec
        .ports
        .iter()
        .filter_map(|sp| {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            let number = resolve_target_port(pod, sp.target_port.as_ref(), sp.port, &protocol)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                protocol: Some(protocol),
                port: Some(number),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort();
    ports
}

/// FNV-1a of the port set, for stable slice names.
fn ports_hash(ports: &[EndpointPort]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for p in ports {
        let text = format!(
            "{}/{}/{};",
            p.name.as_deref().unwrap_or(""),
            p.protocol.as_deref().unwrap_or(""),
            p.port.unwrap_or(0)
        );
        for b in text.bytes() {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash
}

fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the controller keeps endpoints for this Service.
pub fn is_managed(service: &Service) -> bool {
    !service.spec.selector.is_empty() && service.spec.type_.as_deref() != Some("ExternalName")
}

/// The EndpointSlices the Service should have (empty for Services the
/// controller does not manage).
pub fn desired_slices(
    service: &Service,
    pods: &[Pod],
    node_ready: &dyn Fn(&str) -> bool,
) -> Vec<EndpointSlice> {
    if !is_managed(service) {
        return Vec::new();
    }
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let publish_not_ready = service.spec.publish_not_ready_addresses == Some(true);
    let mut groups: BTreeMap<Vec<EndpointPort>, Vec<Endpoint>> = BTreeMap::new();
    for pe in matching_pods(service, pods, node_ready) {
        let ports = pod_ports(service, pe.pod);
        if ports.is_empty() && !service.spec.ports.is_empty() {
            // The pod has none of the Service's target ports.
            continue;
        }
        let hostname =
            pe.pod.spec.hostname.clone().filter(|h| {
                !h.is_empty() && pe.pod.spec.subdomain.as_deref() == Some(name.as_str())
            });
        let endpoint = Endpoint {
            addresses: vec![pe.ip.clone()],
            conditions: EndpointConditions {
                ready: Some(publish_not_ready || (pe.serving && !pe.terminating)),
                serving: Some(publish_not_ready || pe.serving),
                terminating: Some(pe.terminating),
            },
            hostname,
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(namespace.clone()),
                name: pe.pod.metadata.name.clone(),
                uid: pe.pod.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            node_name: pe.pod.spec.node_name.clone(),
            zone: None,
        };
        groups.entry(ports).or_default().push(endpoint);
    }
    let mut labels = service.metadata.labels.clone();
    labels.insert(LABEL_SERVICE_NAME.into(), name.clone());
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_CONTROLLER.into());
    let slice =
        |slice_name: String, ports: Vec<EndpointPort>, endpoints: Vec<Endpoint>| EndpointSlice {
            api_version: Kind::EndpointSlice.api_version().into(),
            kind: "EndpointSlice".into(),
            metadata: ObjectMeta {
                name: Some(slice_name),
                namespace: Some(namespace.clone()),
                labels: labels.clone(),
                owner_references: vec![owner_reference(service)],
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports,
        };
    if groups.is_empty() {
        // The placeholder Kubernetes keeps for a Service with no endpoints.
        return vec![slice(
            format!("{name}-{:08x}", ports_hash(&[])),
            Vec::new(),
            Vec::new(),
        )];
    }
    let mut slices = Vec::new();
    for (ports, endpoints) in groups {
        let base = format!("{name}-{:08x}", ports_hash(&ports));
        for (i, chunk) in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            let slice_name = if i == 0 {
                base.clone()
            } else {
                format!("{base}-{i}")
            };
            slices.push(slice(slice_name, ports.clone(), chunk.to_vec()));
        }
    }
    slices
}

/// The legacy Endpoints the Service should have (`None` for Services the
/// controller does not manage): ready addresses and not-ready ones per set
/// of ports; terminating pods are left out unless the Service publishes
/// not-ready addresses, as kube-controller-manager's Endpoints controller.
pub fn desired_endpoints(
    service: &Service,
    pods: &[Pod],
    node_ready: &dyn Fn(&str) -> bool,
) -> Option<Endpoints> {
    if !is_managed(service) {
        return None;
    }
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let publish_not_ready = service.spec.publish_not_ready_addresses == Some(true);
    let mut groups: BTreeMap<Vec<EndpointPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for pe in matching_pods(service, pods, node_ready) {
        if pe.terminating && !publish_not_ready {
            continue;
        }
        let ports = pod_ports(service, pe.pod);
        if ports.is_empty() && !service.spec.ports.is_empty() {
            continue;
        }
        let hostname =
            pe.pod.spec.hostname.clone().filter(|h| {
                !h.is_empty() && pe.pod.spec.subdomain.as_deref() == Some(name.as_str())
            });
        let address = EndpointAddress {
            ip: pe.ip.clone(),
            hostname,
            node_name: pe.pod.spec.node_name.clone(),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(namespace.clone()),
                name: pe.pod.metadata.name.clone(),
                uid: pe.pod.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
        };
        // Endpoints' ports carry no appProtocol-less differences; keep them as they are.
        let group = groups.entry(ports).or_default();
        if publish_not_ready || pe.serving {
            group.0.push(address);
        } else {
            group.1.push(address);
        }
    }
    let mut labels = service.metadata.labels.clone();
    labels.insert(
        LABEL_ENDPOINTS_MANAGED_BY.into(),
        ENDPOINTS_CONTROLLER.into(),
    );
    if service.spec.cluster_ip.as_deref() == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    Some(Endpoints {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels,
            ..ObjectMeta::default()
        },
        subsets: groups
            .into_iter()
            .map(|(ports, (addresses, not_ready_addresses))| EndpointSubset {
                addresses,
                not_ready_addresses,
                ports: ports
                    .into_iter()
                    .map(|mut p| {
                        // A single unnamed Service port has no name in Endpoints.
                        if p.name.as_deref() == Some("") {
                            p.name = None;
                        }
                        p
                    })
                    .collect(),
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------
// The loop

fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Option<T> {
    serde_json::from_value(value.clone()).ok()
}

fn ns_name(value: &Value) -> (String, String) {
    (
        value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        value["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

/// Whether `node` (a Node object) is Ready.
fn node_is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The part of a stored object the controller compares (what it writes).
fn comparable(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "annotations",
        ] {
            meta.remove(key);
        }
    }
    v
}

/// Make the stored objects of `kind` in `namespace` that belong to the
/// Service `service` equal `desired` (by name): create, update, delete.
async fn converge(
    store: &Store,
    kind: Kind,
    namespace: &str,
    existing: Vec<Value>,
    desired: Vec<Value>,
) -> Result<(), StoreError> {
    let mut existing: BTreeMap<String, Value> =
        existing.into_iter().map(|v| (ns_name(&v).1, v)).collect();
    for want in desired {
        let name = ns_name(&want).1;
        let key = ObjectKey::new(kind, namespace, &name);
        match existing.remove(&name) {
            None => match store.create(&key, want).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            },
            Some(current) => {
                if comparable(&current) == comparable(&want) {
                    continue;
                }
                let mut update = want;
                update["metadata"]["resourceVersion"] =
                    current["metadata"]["resourceVersion"].clone();
                if let Some(annotations) = current["metadata"].get("annotations") {
                    update["metadata"]["annotations"] = annotations.clone();
                }
                let rv = current["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|r| r.parse().ok());
                let precondition = Precondition {
                    resource_version: rv,
                    uid: None,
                };
                match store.update(&key, update, precondition).await {
                    Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    for (name, current) in existing {
        let key = ObjectKey::new(kind, namespace, &name);
        let precondition = Precondition {
            uid: current["metadata"]["uid"].as_str().map(str::to_string),
            ..Precondition::default()
        };
        match store.delete(&key, precondition).await {
            Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn to_values<T: serde::Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect()
}

/// Reconcile the Services named in `dirty` (namespace, name); `None`: all.
async fn reconcile(
    store: &Store,
    dirty: Option<&BTreeSet<(String, String)>>,
) -> Result<(), StoreError> {
    let (nodes, _) = store.list(Kind::Node, None).await?;
    // Only a node known to be not Ready takes its pods out of rotation (a
    // pod on a node the master does not know keeps its own readiness).
    let not_ready: BTreeSet<String> = nodes
        .iter()
        .filter(|n| !node_is_ready(n))
        .map(|n| ns_name(n).1)
        .collect();
    let node_ready = |name: &str| !not_ready.contains(name);
    let namespaces: BTreeSet<String> = match dirty {
        Some(set) => set.iter().map(|(ns, _)| ns.clone()).collect(),
        None => {
            let (services, _) = store.list(Kind::Service, None).await?;
            let mut all: BTreeSet<String> = services.iter().map(|s| ns_name(s).0).collect();
            let (slices, _) = store.list(Kind::EndpointSlice, None).await?;
            all.extend(slices.iter().map(|s| ns_name(s).0));
            all
        }
    };
    for namespace in namespaces {
        let (services, _) = store.list(Kind::Service, Some(&namespace)).await?;
        let services: BTreeMap<String, Service> = services
            .iter()
            .filter_map(|v| Some((ns_name(v).1, decode::<Service>(v)?)))
            .collect();
        let (pods, _) = store.list(Kind::Pod, Some(&namespace)).await?;
        let pods: Vec<Pod> = pods.iter().filter_map(decode).collect();
        let (slices, _) = store.list(Kind::EndpointSlice, Some(&namespace)).await?;
        let (endpoints, _) = store.list(Kind::Endpoints, Some(&namespace)).await?;
        // The slices and Endpoints this controller manages, by Service.
        let mut managed_slices: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for slice in slices {
            let labels = &slice["metadata"]["labels"];
            if labels[LABEL_MANAGED_BY] != MANAGED_BY_CONTROLLER {
                continue;
            }
            if let Some(svc) = labels[LABEL_SERVICE_NAME].as_str() {
                managed_slices
                    .entry(svc.to_string())
                    .or_default()
                    .push(slice.clone());
            }
        }
        let mut managed_endpoints: BTreeMap<String, Value> = BTreeMap::new();
        for ep in endpoints {
            if ep["metadata"]["labels"][LABEL_ENDPOINTS_MANAGED_BY] == ENDPOINTS_CONTROLLER {
                managed_endpoints.insert(ns_name(&ep).1, ep.clone());
            }
        }
        let mut names: BTreeSet<String> = services.keys().cloned().collect();
        names.extend(managed_slices.keys().cloned());
        names.extend(managed_endpoints.keys().cloned());
        for name in names {
            if dirty.is_some_and(|d| !d.contains(&(namespace.clone(), name.clone()))) {
                continue;
            }
            let service = services.get(&name);
            let wanted_slices = service
                .map(|s| desired_slices(s, &pods, &node_ready))
                .unwrap_or_default();
            let existing = managed_slices.remove(&name).unwrap_or_default();
            converge(
                store,
                Kind::EndpointSlice,
                &namespace,
                existing,
                to_values(&wanted_slices),
            )
            .await?;
            let wanted_endpoints = service
                .and_then(|s| desired_endpoints(s, &pods, &node_ready))
                .map(|e| to_values(&[e]))
                .unwrap_or_default();
            // Only Endpoints this controller made (or that are in its way
            // for a managed Service) are touched.
            let mut existing: Vec<Value> = managed_endpoints.remove(&name).into_iter().collect();
            if existing.is_empty() && !wanted_endpoints.is_empty() {
                if let Ok(Some(current)) = store
                    .get(&ObjectKey::new(Kind::Endpoints, &namespace, &name))
                    .await
                {
                    existing.push(current);
                }
            }
            converge(
                store,
                Kind::Endpoints,
                &namespace,
                existing,
                wanted_endpoints,
            )
            .await?;
        }
    }
    Ok(())
}

/// Run until `shutdown`.
pub async fn run(store: Store, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let kinds = [
        Kind::Service,
        Kind::Pod,
        Kind::Node,
        Kind::EndpointSlice,
        Kind::Endpoints,
    ];
    loop {
        let revision = store.current_revision();
        let mut watch = match store.watch_kinds(&kinds, revision) {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "endpoint controller cannot watch; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => return,
                }
            }
        };
        if let Err(error) = reconcile(&store, None).await {
            tracing::warn!(%error, "endpoint controller: full reconcile failed; retrying");
        }
        let mut node_ready: BTreeMap<String, bool> = match store.list(Kind::Node, None).await {
            Ok((nodes, _)) => nodes
                .iter()
                .map(|n| (ns_name(n).1, node_is_ready(n)))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let mut resync_at = tokio::time::Instant::now() + RESYNC;
        loop {
            let first = tokio::select! {
                event = watch.next() => event,
                () = tokio::time::sleep_until(resync_at) => {
                    resync_at = tokio::time::Instant::now() + RESYNC;
                    if let Err(error) = reconcile(&store, None).await {
                        tracing::warn!(%error, "endpoint controller: resync failed");
                    }
                    continue;
                }
                () = &mut shutdown => return,
            };
            let Some(first) = first else { break };
            let mut events = vec![first];
            let deadline = tokio::time::sleep(DEBOUNCE);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    event = watch.next() => match event {
                        Some(e) => events.push(e),
                        None => break,
                    },
                    () = &mut deadline => break,
                }
            }
            let mut all = false;
            let mut dirty: BTreeSet<(String, String)> = BTreeSet::new();
            let mut pod_namespaces: BTreeSet<String> = BTreeSet::new();
            for event in &events {
                let (ns, name) = ns_name(&event.object);
                match event.key.kind {
                    // A change of a node's readiness changes its pods' endpoints.
                    Kind::Node => {
                        let ready = event.event_type != crate::store::EventType::Deleted
                            && node_is_ready(&event.object);
                        if node_ready.insert(name, ready) != Some(ready) {
                            all = true;
                        }
                    }
                    Kind::Service | Kind::Endpoints => {
                        dirty.insert((ns, name));
                    }
                    Kind::EndpointSlice => {
                        if let Some(svc) =
                            event.object["metadata"]["labels"][LABEL_SERVICE_NAME].as_str()
                        {
                            dirty.insert((ns, svc.to_string()));
                        }
                    }
                    Kind::Pod => {
                        pod_namespaces.insert(ns);
                    }
                    _ => {}
                }
            }
            if !pod_namespaces.is_empty() && !all {
                for ns in &pod_namespaces {
                    match store.list(Kind::Service, Some(ns)).await {
                        Ok((services, _)) => dirty.extend(services.iter().map(ns_name)),
                        Err(_) => all = true,
                    }
                }
            }
            let result = if all {
                reconcile(&store, None).await
            } else if dirty.is_empty() {
                Ok(())
            } else {
                reconcile(&store, Some(&dirty)).await
            };
            if let Err(error) = result {
                tracing::warn!(%error, "endpoint controller: reconcile failed; retrying at the next change or resync");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn service(spec: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, node: &str, ready: bool, extra: Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                if k == "metadata" || k == "spec" {
                    for (k2, v2) in v.as_object().unwrap() {
                        p[k][k2] = v2.clone();
                    }
                } else {
                    p[k] = v.clone();
                }
            }
        }
        serde_json::from_value(p).unwrap()
    }

    fn all_ready(_: &str) -> bool {
        true
    }

    #[test]
    fn ready_serving_terminating_and_named_ports() {
        let svc = service(
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}),
        );
        let pods = vec![
            pod("a", "10.244.1.2", "n1", true, json!({})),
            pod("b", "10.244.2.2", "n2", false, json!({})),
            pod(
                "c",
                "10.244.1.3",
                "n1",
                true,
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            pod(
                "d",
                "10.244.1.4",
                "n1",
                true,
                json!({"status": {"phase": "Succeeded", "podIP": "10.244.1.4"}}),
            ),
            pod(
                "e",
                "10.244.1.5",
                "n1",
                true,
                json!({"metadata": {"labels": {"app": "other"}}}),
            ),
        ];
        let slices = desired_slices(&svc, &pods, &all_ready);
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!(slice.metadata.labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(slice.metadata.owner_references[0].uid, "svc-uid");
        assert_eq!(
            slice.ports,
            vec![EndpointPort {
                name: Some(String::new()),
                protocol: Some("TCP".into()),
                port: Some(8080),
                app_protocol: None
            }]
        );
        let by_ip: BTreeMap<&str, &EndpointConditions> = slice
            .endpoints
            .iter()
            .map(|e| (e.addresses[0].as_str(), &e.conditions))
            .collect();
        assert_eq!(by_ip.len(), 3, "{by_ip:?}");
        assert_eq!(
            by_ip["10.244.1.2"],
            &EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false)
            }
        );
        assert_eq!(
            by_ip["10.244.2.2"],
            &EndpointConditions {
                ready: Some(false),
                serving: Some(false),
                terminating: Some(false)
            }
        );
        assert_eq!(
            by_ip["10.244.1.3"],
            &EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true)
            }
        );
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("n1"));
        assert_eq!(
            slice.endpoints[0]
                .target_ref
                .as_ref()
                .unwrap()
                .name
                .as_deref(),
            Some("a")
        );

        let endpoints = desired_endpoints(&svc, &pods, &all_ready).unwrap();
        assert_eq!(endpoints.subsets.len(), 1);
        let ips = |list: &[EndpointAddress]| list.iter().map(|a| a.ip.clone()).collect::<Vec<_>>();
        assert_eq!(ips(&endpoints.subsets[0].addresses), vec!["10.244.1.2"]);
        assert_eq!(
            ips(&endpoints.subsets[0].not_ready_addresses),
            vec!["10.244.2.2"]
        );
        assert_eq!(endpoints.subsets[0].ports[0].port, Some(8080));
        assert_eq!(endpoints.subsets[0].ports[0].name, None);
    }

    #[test]
    fn a_pod_on_a_not_ready_node_is_not_ready() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let pods = vec![
            pod("a", "10.244.1.2", "n1", true, json!({})),
            pod("b", "10.244.2.2", "n2", true, json!({})),
        ];
        let slices = desired_slices(&svc, &pods, &|n| n == "n1");
        let ready: Vec<(String, bool)> = slices[0]
            .endpoints
            .iter()
            .map(|e| (e.addresses[0].clone(), e.conditions.ready == Some(true)))
            .collect();
        assert_eq!(
            ready,
            vec![("10.244.1.2".into(), true), ("10.244.2.2".into(), false)]
        );
    }

    #[test]
    fn missing_named_ports_split_or_drop_pods_and_publish_not_ready() {
        let svc = service(
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "web"}]}),
        );
        let pods = vec![
            pod("a", "10.244.1.2", "n1", true, json!({})),
            pod(
                "b",
                "10.244.1.3",
                "n1",
                true,
                json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "web", "containerPort": 9000}]}]}}),
            ),
        ];
        let slices = desired_slices(&svc, &pods, &all_ready);
        assert_eq!(slices.len(), 1, "pod a has no port named web");
        assert_eq!(
            slices[0].endpoints[0].addresses,
            vec!["10.244.1.3".to_string()]
        );
        assert_eq!(slices[0].ports[0].port, Some(9000));

        let mut svc = service(
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}], "publishNotReadyAddresses": true}),
        );
        let pods = vec![pod("a", "10.244.1.2", "n1", false, json!({}))];
        let slices = desired_slices(&svc, &pods, &all_ready);
        assert_eq!(slices[0].endpoints[0].conditions.ready, Some(true));
        svc.spec.publish_not_ready_addresses = None;
        assert_eq!(
            desired_slices(&svc, &pods, &all_ready)[0].endpoints[0]
                .conditions
                .ready,
            Some(false)
        );
    }

    #[test]
    fn no_match_keeps_one_empty_slice_and_selectorless_services_are_left_alone() {
        let svc = service(json!({"selector": {"app": "nothing"}, "ports": [{"port": 80}]}));
        let slices = desired_slices(
            &svc,
            &[pod("a", "10.244.1.2", "n1", true, json!({}))],
            &all_ready,
        );
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        assert!(desired_endpoints(&svc, &[], &all_ready)
            .unwrap()
            .subsets
            .is_empty());
        let manual = service(json!({"ports": [{"port": 80}]}));
        assert!(desired_slices(&manual, &[], &all_ready).is_empty());
        assert!(desired_endpoints(&manual, &[], &all_ready).is_none());
        let alias = service(
            json!({"type": "ExternalName", "externalName": "x.example.com", "selector": {"app": "web"}}),
        );
        assert!(desired_slices(&alias, &[], &all_ready).is_empty());
    }

    #[test]
    fn hostnames_for_the_subdomain_and_large_services_are_chunked() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let pods = vec![
            pod(
                "a",
                "10.244.1.2",
                "n1",
                true,
                json!({"spec": {"hostname": "db-0", "subdomain": "web"}}),
            ),
            pod(
                "b",
                "10.244.1.3",
                "n1",
                true,
                json!({"spec": {"hostname": "db-1", "subdomain": "other"}}),
            ),
        ];
        let slices = desired_slices(&svc, &pods, &all_ready);
        let hostnames: Vec<Option<String>> = slices[0]
            .endpoints
            .iter()
            .map(|e| e.hostname.clone())
            .collect();
        assert_eq!(hostnames, vec![Some("db-0".into()), None]);
        let endpoints = desired_endpoints(&svc, &pods, &all_ready).unwrap();
        assert!(endpoints
            .metadata
            .labels
            .contains_key("service.kubernetes.io/headless"));

        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let many: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.244.{}.{}", i / 200, i % 200 + 2),
                    "n1",
                    true,
                    json!({}),
                )
            })
            .collect();
        let slices = desired_slices(&svc, &many, &all_ready);
        assert_eq!(
            slices.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        let names: BTreeSet<_> = slices
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names.len(), 3);
    }
}
