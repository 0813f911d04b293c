//! The Services every cluster has, created at start when missing:
//!
//! - `default/kubernetes`: the API server at the first address of the
//!   service range (`10.96.0.1`), port `https` 443, with hand-kept
//!   EndpointSlice and Endpoints pointing at the master's own address (as
//!   kube-apiserver keeps them);
//! - `kube-system/kube-dns`: the cluster DNS address (`10.96.0.10`), ports
//!   `dns` 53/UDP and `dns-tcp` 53/TCP, without a selector: every node's
//!   agent answers it itself with its node-local DNS server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bramble_common::api::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME};
use bramble_common::{defaults, manifest, Kind};
use serde_json::{json, Value};

use crate::store::{ObjectKey, Precondition, Store, StoreError};

/// The value of `endpointslice.kubernetes.io/managed-by` on the
/// `kubernetes` Service's slice (kube-apiserver's).
pub const API_SERVER_MANAGER: &str = "bramble-apiserver";

/// The address nodes and pods reach the API server at: the listen address
/// when it is a specific one, else the first IP among the serving
/// certificate's extra names, else the address of the interface holding
/// the default route.
pub fn advertise_address(listen: SocketAddr, tls_sans: &[String]) -> Option<Ipv4Addr> {
    if let IpAddr::V4(ip) = listen.ip() {
        if !ip.is_unspecified() {
            return Some(ip);
        }
    }
    if let Some(ip) = tls_sans.iter().find_map(|s| s.parse::<Ipv4Addr>().ok()) {
        return Some(ip);
    }
    // No packet is sent: connecting a UDP socket only picks the route.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

fn admitted(value: Value) -> Result<Value, String> {
    let mut object = manifest::decode_object(value).map_err(|e| e.to_string())?;
    defaults::apply_defaults(&mut object);
    Ok(object.to_value())
}

/// Create `value` at `key` unless something is there; `Ok(false)` if it was.
async fn create_missing(store: &Store, key: &ObjectKey, value: Value) -> Result<bool, String> {
    match store.get(key).await {
        Ok(Some(_)) => return Ok(false),
        Ok(None) => {}
        Err(e) => return Err(e.to_string()),
    }
    match store.create(key, admitted(value)?).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Create or refresh the built-in Services (see the module docs).
pub async fn ensure(
    store: &Store,
    kubernetes_ip: Ipv4Addr,
    cluster_dns: &str,
    api_address: Option<Ipv4Addr>,
    api_port: u16,
) -> Result<(), String> {
    let kubernetes = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": kubernetes_ip.to_string(), "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}]},
    });
    create_missing(
        store,
        &ObjectKey::new(Kind::Service, "default", "kubernetes"),
        kubernetes,
    )
    .await?;
    let dns_taken_by = taken_by(store, cluster_dns).await?;
    match dns_taken_by {
        Some(other) if other != ("kube-system".to_string(), "kube-dns".to_string()) => {
            tracing::warn!(
                cluster_dns,
                service = %format!("{}/{}", other.0, other.1),
                "the cluster DNS address is held by another Service: pods' DNS queries go there; delete it and restart the master"
            );
        }
        _ => {
            let kube_dns = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                             "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
                             "annotations": {"bramble.io/node-local": "every node's agent answers this Service itself"}},
                "spec": {"clusterIP": cluster_dns, "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ]},
            });
            create_missing(
                store,
                &ObjectKey::new(Kind::Service, "kube-system", "kube-dns"),
                kube_dns,
            )
            .await?;
        }
    }
    let Some(address) = api_address else {
        tracing::warn!("cannot tell this machine's address: the kubernetes Service has no endpoints; start the master with --listen IP:PORT or --tls-san IP");
        return Ok(());
    };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {LABEL_SERVICE_NAME: "kubernetes", LABEL_MANAGED_BY: API_SERVER_MANAGER}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address.to_string()}], "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}],
    });
    for (kind, value) in [(Kind::EndpointSlice, slice), (Kind::Endpoints, endpoints)] {
        let key = ObjectKey::new(kind, "default", "kubernetes");
        let value = admitted(value)?;
        match store.get(&key).await.map_err(|e| e.to_string())? {
            None => {
                store.create(&key, value).await.map_err(|e| e.to_string())?;
            }
            Some(current) => {
                let body = |v: &Value| {
                    (
                        v["endpoints"].clone(),
                        v["subsets"].clone(),
                        v["ports"].clone(),
                    )
                };
                if body(&current) != body(&value) {
                    let mut update = value;
                    update["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                    store
                        .update(&key, update, Precondition::default())
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    Ok(())
}

/// The Service holding `ip`, if any.
async fn taken_by(store: &Store, ip: &str) -> Result<Option<(String, String)>, String> {
    let (services, _) = store
        .list(Kind::Service, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(services
        .iter()
        .find(|s| s["spec"]["clusterIP"] == ip)
        .map(|s| {
            (
                s["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                s["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        }))
}
