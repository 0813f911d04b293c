//! ServiceLB: `type: LoadBalancer` for clusters without a cloud load
//! balancer, as k3s' ServiceLB does. A LoadBalancer Service without a
//! `loadBalancerClass` gets `status.loadBalancer.ingress` = the
//! `InternalIP`s of the Ready nodes (only those labelled
//! `bramble.io/lb-pool=NAME` when the Service carries the label
//! `bramble.io/lb-pool: NAME`), sorted; every node's proxy opens the
//! Service's ports on those addresses (the agents get them in the service
//! shards). A Service that stops being a LoadBalancer loses its ingress.
//!
//! [`wanted_status`] is pure; [`run`] follows Services and Nodes, and after
//! 100 ms of quiet writes the status of the Services whose ingress differs.

use std::future::Future;
use std::time::Duration;

use bramble_common::Kind;
use serde_json::{json, Value};

use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// The label that ties a Service to a pool of nodes.
pub const LABEL_LB_POOL: &str = "bramble.io/lb-pool";
/// How long changes are collected before a pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A pass over every Service this often even without changes.
const RESYNC: Duration = Duration::from_secs(60);

fn node_is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn internal_ip(node: &Value) -> Option<&str> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
}

/// The `status.loadBalancer` `service` should have given `nodes`; `None`
/// when ServiceLB does not manage it (another `loadBalancerClass`).
pub fn wanted_status(service: &Value, nodes: &[Value]) -> Option<Value> {
    let spec = &service["spec"];
    if spec["type"] != "LoadBalancer" {
        return Some(json!({}));
    }
    if spec["loadBalancerClass"].is_string() {
        return None;
    }
    let pool = service["metadata"]["labels"][LABEL_LB_POOL].as_str();
    let mut ips: Vec<&str> = nodes
        .iter()
        .filter(|n| node_is_ready(n))
        .filter(|n| pool.is_none_or(|p| n["metadata"]["labels"][LABEL_LB_POOL] == p))
        .filter_map(internal_ip)
        .collect();
    ips.sort_unstable();
    ips.dedup();
    if ips.is_empty() {
        return Some(json!({}));
    }
    let ingress: Vec<Value> = ips
        .into_iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    Some(json!({"ingress": ingress}))
}

async fn pass(store: &Store) -> Result<(), StoreError> {
    let (nodes, _) = store.list(Kind::Node, None).await?;
    let (services, _) = store.list(Kind::Service, None).await?;
    for service in services {
        let Some(wanted) = wanted_status(&service, &nodes) else {
            continue;
        };
        let current = service["status"]["loadBalancer"].clone();
        let current = if current.is_null() {
            json!({})
        } else {
            current
        };
        if current == wanted {
            continue;
        }
        let namespace = service["metadata"]["namespace"].as_str().unwrap_or("");
        let name = service["metadata"]["name"].as_str().unwrap_or("");
        let key = ObjectKey::new(Kind::Service, namespace, name);
        let mut status = if service["status"].is_object() {
            service["status"].clone()
        } else {
            json!({})
        };
        status["loadBalancer"] = wanted;
        let precondition = Precondition {
            resource_version: service["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse().ok()),
            uid: None,
        };
        match store.update_status(&key, status, precondition).await {
            Ok(_) => {
                tracing::info!(service = %format!("{namespace}/{name}"), "load balancer ingress updated")
            }
            // Changed meanwhile: the next pass sees the new one.
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs ServiceLB until `shutdown`.
pub async fn run(store: Store, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let kinds = [Kind::Service, Kind::Node];
    loop {
        let mut watch = match store.watch_kinds(&kinds, store.current_revision()) {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "service load balancer cannot watch; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => return,
                }
            }
        };
        if let Err(error) = pass(&store).await {
            tracing::warn!(%error, "service load balancer: pass failed");
        }
        loop {
            tokio::select! {
                event = watch.next() => {
                    if event.is_none() {
                        break;
                    }
                    let deadline = tokio::time::sleep(DEBOUNCE);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            more = watch.next() => if more.is_none() { break },
                            () = &mut deadline => break,
                        }
                    }
                }
                () = tokio::time::sleep(RESYNC) => {}
                () = &mut shutdown => return,
            }
            if let Err(error) = pass(&store).await {
                tracing::warn!(%error, "service load balancer: pass failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, ready: bool, pool: Option<&str>) -> Value {
        let mut labels = json!({});
        if let Some(pool) = pool {
            labels[LABEL_LB_POOL] = json!(pool);
        }
        json!({"metadata": {"name": name, "labels": labels},
               "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                          "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    #[test]
    fn ingress_lists_the_ready_nodes_of_the_pool() {
        let nodes = [
            node("b", "192.168.1.12", true, Some("edge")),
            node("a", "192.168.1.11", true, None),
            node("c", "192.168.1.13", false, Some("edge")),
        ];
        let lb = json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer"}});
        assert_eq!(
            wanted_status(&lb, &nodes),
            Some(
                json!({"ingress": [{"ip": "192.168.1.11", "ipMode": "VIP"}, {"ip": "192.168.1.12", "ipMode": "VIP"}]})
            )
        );
        let pooled = json!({"metadata": {"name": "web", "labels": {LABEL_LB_POOL: "edge"}}, "spec": {"type": "LoadBalancer"}});
        assert_eq!(
            wanted_status(&pooled, &nodes),
            Some(json!({"ingress": [{"ip": "192.168.1.12", "ipMode": "VIP"}]}))
        );
        let other_class = json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "metallb"}});
        assert_eq!(wanted_status(&other_class, &nodes), None);
        let cluster_ip = json!({"spec": {"type": "ClusterIP"}});
        assert_eq!(wanted_status(&cluster_ip, &nodes), Some(json!({})));
        assert_eq!(wanted_status(&lb, &[]), Some(json!({})));
    }
}
