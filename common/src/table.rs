//! The columns `bramble get` and `kubectl get` show for each kind, as a
//! Kubernetes `Table` (`meta.k8s.io/v1`). The server renders tables so that
//! the stock kubectl and bramble's CLI print the same thing.
//!
//! Pure functions: the current time is passed in.

use serde_json::{json, Value};

use crate::Kind;

mod discovery;

/// A column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Header (kubectl prints it upper-cased).
    pub name: &'static str,
    /// `string`, `integer`, `date`.
    pub type_: &'static str,
    /// 0: always shown; 1: shown with `-o wide`.
    pub priority: u8,
    /// What the column means.
    pub description: &'static str,
}

const fn col(name: &'static str, priority: u8, description: &'static str) -> Column {
    Column {
        name,
        type_: "string",
        priority,
        description,
    }
}

/// The columns of `kind`.
pub fn columns(kind: Kind) -> Vec<Column> {
    let name = col("Name", 0, "Name must be unique within a namespace.");
    let age = col("Age", 0, "Time since the object was created.");
    match kind {
        Kind::Pod => vec![
            name,
            col("Ready", 0, "Ready containers out of all containers."),
            col(
                "Status",
                0,
                "The aggregate state of the containers in this pod.",
            ),
            col(
                "Restarts",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            age,
            col("IP", 1, "The IP address assigned to the pod."),
            col("Node", 1, "The node the pod is bound to."),
            col("Nominated Node", 1, "Not used by bramble."),
            col("Readiness Gates", 1, "Not used by bramble."),
        ],
        Kind::Node => vec![
            name,
            col("Status", 0, "The node's Ready condition."),
            col(
                "Roles",
                0,
                "The node-role.kubernetes.io/ labels of the node.",
            ),
            age,
            col("Version", 0, "The agent version."),
            col("Arch", 0, "The node's CPU architecture."),
            col("Pod-CIDR", 0, "The pod address range assigned to the node."),
            col("Internal-IP", 1, "The node's internal address."),
            col("OS-Image", 1, "The node's operating system."),
            col("Kernel-Version", 1, "The node's kernel."),
            col(
                "Container-Runtime",
                1,
                "The runtime running the containers.",
            ),
        ],
        Kind::Namespace => vec![name, col("Status", 0, "The namespace's phase."), age],
        Kind::Service => vec![
            name,
            col(
                "Type",
                0,
                "ClusterIP, NodePort, LoadBalancer or ExternalName.",
            ),
            col("Cluster-IP", 0, "The service's virtual IP."),
            col(
                "External-IP",
                0,
                "The load balancer's addresses or the external name.",
            ),
            col("Port(s)", 0, "The service's ports."),
            age,
            col("Selector", 1, "The labels of the pods behind the service."),
        ],
        Kind::ConfigMap => vec![name, col("Data", 0, "Number of keys."), age],
        Kind::Secret => vec![
            name,
            col("Type", 0, "The secret's type."),
            col("Data", 0, "Number of keys."),
            age,
        ],
        Kind::Event => vec![
            col("Last Seen", 0, "Time since the latest occurrence."),
            col("Type", 0, "Normal or Warning."),
            col("Reason", 0, "Why it happened."),
            col("Object", 0, "The object it happened to."),
            col("Message", 0, "What happened."),
        ],
        Kind::Deployment => vec![
            name,
            col("Ready", 0, "Ready pods out of desired pods."),
            col("Up-to-date", 0, "Pods with the newest template."),
            col("Available", 0, "Available pods."),
            age,
            col("Containers", 1, "Container names."),
            col("Images", 1, "Container images."),
            col("Selector", 1, "The pod selector."),
        ],
        Kind::ReplicaSet => vec![
            name,
            col("Desired", 0, "Desired pods."),
            col("Current", 0, "Created pods."),
            col("Ready", 0, "Ready pods."),
            age,
            col("Containers", 1, "Container names."),
            col("Images", 1, "Container images."),
            col("Selector", 1, "The pod selector."),
        ],
        Kind::DaemonSet => vec![
            name,
            col("Desired", 0, "Nodes that should run the pod."),
            col("Current", 0, "Nodes running the pod."),
            col("Ready", 0, "Nodes whose pod is ready."),
            col("Up-to-date", 0, "Nodes running the newest template."),
            col("Available", 0, "Nodes whose pod is available."),
            col("Node Selector", 0, "Labels a node needs to run the pod."),
            age,
            col("Containers", 1, "Container names."),
            col("Images", 1, "Container images."),
            col("Selector", 1, "The pod selector."),
        ],
        Kind::Endpoints => discovery::endpoints_columns(name, age),
        Kind::EndpointSlice => discovery::endpoint_slice_columns(name, age),
        Kind::Job => vec![
            name,
            col("Status", 0, "The Job's state."),
            col("Completions", 0, "Succeeded pods out of the pods needed."),
            col("Duration", 0, "Time the Job took or has taken so far."),
            age,
            col("Containers", 1, "Container names."),
            col("Images", 1, "Container images."),
            col("Selector", 1, "The pod selector."),
        ],
        Kind::ControllerRevision => vec![
            name,
            col("Controller", 0, "The controller this revision belongs to."),
            col("Revision", 0, "The revision number."),
            age,
        ],
    }
}

/// A Kubernetes `Table` of `objects` of `kind`.
pub fn to_table(kind: Kind, objects: &[&Value], resource_version: &str, now_unix: i64) -> Value {
    let definitions: Vec<Value> = columns(kind)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            json!({
                "cells": cells(kind, object, now_unix),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn s(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn age_of(timestamp: &Value, now_unix: i64) -> String {
    match s(timestamp).parse::<jiff::Timestamp>() {
        Ok(ts) => human_duration(now_unix - ts.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn parse_rfc3339(timestamp: &Value) -> Option<i64> {
    s(timestamp)
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// Kubernetes' short human-readable duration (`45s`, `3m12s`, `5h`, `2d3h`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        format!("{}y{}d", days / 365, days % 365)
    } else {
        format!("{}y", days / 365)
    }
}

/// `k=v,k2=v2` of a flat label map (service selectors, node selectors).
fn labels_text(map: &Value) -> String {
    let parts: Vec<String> = map
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    or_none(parts.join(","))
}

/// A `LabelSelector` as kubectl prints it (`app=web,tier in (a,b)`).
fn label_selector_text(selector: &Value) -> String {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|v| v.iter().map(s).collect())
            .unwrap_or_default();
        parts.push(match s(&e["operator"]) {
            "Exists" => s(&e["key"]).to_string(),
            "DoesNotExist" => format!("!{}", s(&e["key"])),
            op => format!(
                "{} {} ({})",
                s(&e["key"]),
                op.to_lowercase(),
                values.join(",")
            ),
        });
    }
    or_none(parts.join(","))
}

fn containers_and_images(template_spec: &Value) -> (String, String) {
    let containers = template_spec["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

/// The STATUS column of a pod, computed as kubectl does.
pub fn pod_status(pod: &Value) -> String {
    let status = &pod["status"];
    let mut reason = s(&status["phase"]).to_string();
    if reason.is_empty() {
        reason = "Pending".into();
    }
    if let Some(r) = status["reason"].as_str().filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    let init_total = pod["spec"]["initContainers"].as_array().map_or(0, Vec::len);
    let mut initializing = false;
    if let Some(inits) = status["initContainerStatuses"].as_array() {
        for (i, cs) in inits.iter().enumerate() {
            let terminated = &cs["state"]["terminated"];
            let waiting = &cs["state"]["waiting"];
            if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
                continue;
            }
            initializing = true;
            reason = if terminated.is_object() {
                match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(r) => format!("Init:{r}"),
                    None if int(&terminated["signal"]) != 0 => {
                        format!("Init:Signal:{}", int(&terminated["signal"]))
                    }
                    None => format!("Init:ExitCode:{}", int(&terminated["exitCode"])),
                }
            } else if let Some(r) = waiting["reason"]
                .as_str()
                .filter(|r| !r.is_empty() && *r != "PodInitializing")
            {
                format!("Init:{r}")
            } else {
                format!("Init:{i}/{init_total}")
            };
            break;
        }
    }
    if !initializing {
        let mut has_running = false;
        if let Some(statuses) = status["containerStatuses"].as_array() {
            for cs in statuses.iter().rev() {
                let state = &cs["state"];
                if let Some(r) = state["waiting"]["reason"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                {
                    reason = r.to_string();
                } else if state["terminated"].is_object() {
                    let t = &state["terminated"];
                    reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                        Some(r) => r.to_string(),
                        None if int(&t["signal"]) != 0 => format!("Signal:{}", int(&t["signal"])),
                        None => format!("ExitCode:{}", int(&t["exitCode"])),
                    };
                } else if state["running"].is_object() && cs["ready"].as_bool() == Some(true) {
                    has_running = true;
                }
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    reason
}

fn node_status(node: &Value) -> String {
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| s(&c["status"]).to_string());
    // As Kubernetes prints it: any Ready status but True (False or Unknown)
    // is `NotReady`; `Unknown` only when there is no Ready condition.
    let mut text = match ready.as_deref() {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        text.push_str(",SchedulingDisabled");
    }
    text
}

fn node_roles(node: &Value) -> String {
    let roles: Vec<String> = node["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    or_none(roles.join(","))
}

fn cells(kind: Kind, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(s(&o["metadata"]["name"]));
    let age = json!(age_of(&o["metadata"]["creationTimestamp"], now));
    let spec = &o["spec"];
    let status = &o["status"];
    match kind {
        Kind::Pod => {
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|c| c["ready"].as_bool() == Some(true))
                .count();
            let restarts: i64 = statuses.iter().map(|c| int(&c["restartCount"])).sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                age,
                json!(or_none(s(&status["podIP"]).to_string())),
                json!(or_none(s(&spec["nodeName"]).to_string())),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        Kind::Node => {
            let info = &status["nodeInfo"];
            let internal_ip = status["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .map(|x| s(&x["address"]).to_string())
                .unwrap_or_default();
            let arch = match s(&info["architecture"]) {
                "" => s(&o["metadata"]["labels"]["kubernetes.io/arch"]).to_string(),
                a => a.to_string(),
            };
            vec![
                name,
                json!(node_status(o)),
                json!(node_roles(o)),
                age,
                json!(or_none(s(&info["kubeletVersion"]).to_string())),
                json!(or_none(arch)),
                json!(or_none(s(&spec["podCIDR"]).to_string())),
                json!(or_none(internal_ip)),
                json!(or_none(s(&info["osImage"]).to_string())),
                json!(or_none(s(&info["kernelVersion"]).to_string())),
                json!(or_none(s(&info["containerRuntimeVersion"]).to_string())),
            ]
        }
        Kind::Namespace => {
            let phase = match s(&status["phase"]) {
                "" => "Active",
                p => p,
            };
            vec![name, json!(phase), age]
        }
        Kind::Service => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| {
                            let proto = match s(&p["protocol"]) {
                                "" => "TCP",
                                x => x,
                            };
                            match p["nodePort"].as_i64() {
                                Some(np) => format!("{}:{np}/{proto}", int(&p["port"])),
                                None => format!("{}/{proto}", int(&p["port"])),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let type_ = match s(&spec["type"]) {
                "" => "ClusterIP",
                t => t,
            };
            vec![
                name,
                json!(type_),
                json!(or_none(s(&spec["clusterIP"]).to_string())),
                json!(discovery::service_external_ip(o)),
                json!(or_none(ports.join(","))),
                age,
                json!(labels_text(&spec["selector"])),
            ]
        }
        Kind::ConfigMap => {
            let count = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(count), age]
        }
        Kind::Secret => {
            let count = o["data"].as_object().map_or(0, |m| m.len());
            let type_ = match s(&o["type"]) {
                "" => "Opaque",
                t => t,
            };
            vec![name, json!(type_), json!(count), age]
        }
        Kind::Event => {
            let last = if o["lastTimestamp"].is_string() {
                &o["lastTimestamp"]
            } else {
                &o["metadata"]["creationTimestamp"]
            };
            let involved = &o["involvedObject"];
            vec![
                json!(age_of(last, now)),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(format!(
                    "{}/{}",
                    s(&involved["kind"]).to_lowercase(),
                    s(&involved["name"])
                )),
                json!(s(&o["message"])),
            ]
        }
        Kind::Deployment | Kind::ReplicaSet => {
            let desired = spec["replicas"].as_i64().unwrap_or(1);
            let (containers, images) = containers_and_images(&spec["template"]["spec"]);
            let selector = json!(label_selector_text(&spec["selector"]));
            if kind == Kind::Deployment {
                vec![
                    name,
                    json!(format!("{}/{desired}", int(&status["readyReplicas"]))),
                    json!(int(&status["updatedReplicas"])),
                    json!(int(&status["availableReplicas"])),
                    age,
                    json!(containers),
                    json!(images),
                    selector,
                ]
            } else {
                vec![
                    name,
                    json!(desired),
                    json!(int(&status["replicas"])),
                    json!(int(&status["readyReplicas"])),
                    age,
                    json!(containers),
                    json!(images),
                    selector,
                ]
            }
        }
        Kind::DaemonSet => {
            let (containers, images) = containers_and_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(int(&status["desiredNumberScheduled"])),
                json!(int(&status["currentNumberScheduled"])),
                json!(int(&status["numberReady"])),
                json!(int(&status["updatedNumberScheduled"])),
                json!(int(&status["numberAvailable"])),
                json!(labels_text(&spec["template"]["spec"]["nodeSelector"])),
                age,
                json!(containers),
                json!(images),
                json!(label_selector_text(&spec["selector"])),
            ]
        }
        Kind::Endpoints => vec![name, json!(discovery::endpoints_cell(o)), age],
        Kind::EndpointSlice => {
            let [address_type, ports, endpoints] = discovery::endpoint_slice_cells(o);
            vec![name, address_type, ports, endpoints, age]
        }
        Kind::Job => {
            let (containers, images) = containers_and_images(&spec["template"]["spec"]);
            let condition = |t: &str| {
                status["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == t && c["status"] == "True"))
            };
            let state = if condition("Complete") {
                "Complete"
            } else if condition("Failed") {
                "Failed"
            } else if condition("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let succeeded = int(&status["succeeded"]);
            let completions = if spec["completions"].is_null() {
                format!("{succeeded}/1 of {}", int(&spec["parallelism"]))
            } else {
                format!("{succeeded}/{}", int(&spec["completions"]))
            };
            let start = parse_rfc3339(&status["startTime"]);
            let end = parse_rfc3339(&status["completionTime"]).unwrap_or(now);
            let duration = start.map_or(String::new(), |s| human_duration((end - s).max(0)));
            vec![
                name,
                json!(state),
                json!(completions),
                json!(duration),
                age,
                json!(containers),
                json!(images),
                json!(label_selector_text(&spec["selector"])),
            ]
        }
        Kind::ControllerRevision => {
            // kube-apiserver's printer: `{kind}.{group}/{name}` of the
            // controller owner.
            let controller = o["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
                .map(|r| {
                    let api_version = s(&r["apiVersion"]);
                    let group = api_version.split_once('/').map_or("", |(g, _)| g);
                    let kind = s(&r["kind"]).to_ascii_lowercase();
                    let kind = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{kind}/{}", s(&r["name"]))
                })
                .unwrap_or_else(|| "<none>".to_string());
            vec![name, json!(controller), json!(int(&o["revision"])), age]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubernetes() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(185), "3m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(400 * 86400), "400d");
    }

    #[test]
    fn pod_row_shows_ready_status_restarts_and_node() {
        let pod = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "pi-1"},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let now = "2026-01-01T00:00:30Z"
            .parse::<jiff::Timestamp>()
            .expect("ts")
            .as_second();
        let table = to_table(Kind::Pod, &[&pod], "7", now);
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[4], "30s");
        assert_eq!(cells[5], "10.244.1.5");
        assert_eq!(cells[6], "pi-1");
        assert_eq!(
            table["columnDefinitions"].as_array().map(Vec::len),
            Some(cells.as_array().map_or(0, Vec::len))
        );
    }

    #[test]
    fn every_kind_has_as_many_cells_as_columns() {
        let empty = json!({"metadata": {"name": "x"}});
        for kind in Kind::all() {
            let table = to_table(*kind, &[&empty], "1", 0);
            assert_eq!(
                table["rows"][0]["cells"].as_array().map(Vec::len),
                Some(columns(*kind).len()),
                "{kind}"
            );
        }
    }

    #[test]
    fn init_and_terminating_states() {
        let pod = json!({
            "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"running": {}}}]}
        });
        assert_eq!(pod_status(&pod), "Init:0/1");
        let mut deleting = pod.clone();
        deleting["metadata"] = json!({"deletionTimestamp": "2026-01-01T00:00:00Z"});
        assert_eq!(pod_status(&deleting), "Terminating");
    }
}
