//! Node registration (`bramble node add` / `rm`): a Node object with a pod
//! CIDR (from [`PodCidrPool`]), and a join token kept only as a SHA-256
//! digest in a Secret in `kube-system` (as Kubernetes keeps bootstrap tokens).
//!
//! `POST /bramble/v1/nodes` with `{"names": [...]}` registers nodes and
//! answers their tokens (the only time they are shown);
//! `DELETE /bramble/v1/nodes/{name}` revokes a node.

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use bramble_common::{validation, Kind};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::error::ApiError;
use super::pod_cidr::PodCidrPool;
use super::{json_response, pki, ApiState};
use crate::store::{ObjectKey, Precondition, StoreError};

/// Namespace holding node join tokens.
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// Secret type of node join tokens.
pub const TOKEN_SECRET_TYPE: &str = "bramble.io/node-token";
/// Data key holding the hex SHA-256 of the token.
pub const TOKEN_HASH_KEY: &str = "token-sha256";
/// Data key holding the node name.
pub const TOKEN_NODE_KEY: &str = "node";

/// Name of the Secret holding `node`'s token.
pub fn token_secret_name(node: &str) -> String {
    format!("bramble-node-token-{node}")
}

/// Nodes registered at once by one request.
const REGISTRATIONS_IN_FLIGHT: usize = 32;

fn node_key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::Node,
        namespace: String::new(),
        name: name.to_string(),
    }
}

fn token_key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::Secret,
        namespace: TOKEN_NAMESPACE.to_string(),
        name: token_secret_name(name),
    }
}

/// Register the nodes named in `body`.
pub async fn add(state: &ApiState, body: &[u8]) -> Result<Response, ApiError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let names: Vec<String> = request["names"]
        .as_array()
        .ok_or_else(|| ApiError::bad_request("expected {\"names\": [...]}"))?
        .iter()
        .map(|n| n.as_str().unwrap_or("").to_string())
        .collect();
    if names.is_empty() {
        return Err(ApiError::bad_request("no node names given"));
    }
    for name in &names {
        let problems = validation::name_errors(Kind::Node, name);
        if !problems.is_empty() || name.len() > 63 || name.contains('.') {
            return Err(ApiError::bad_request(format!(
                "node name {name:?} is invalid: use a lowercase DNS label (letters, digits and '-', at most 63 characters){}",
                if problems.is_empty() { String::new() } else { format!(": {}", problems.join("; ")) }
            )));
        }
    }
    // One registration at a time: pod CIDRs are handed out from what exists.
    let _guard = state.node_registration.lock().await;
    for name in &names {
        if state.store.get(&node_key(name)).await?.is_some() {
            return Err(ApiError::already_exists(Kind::Node, name));
        }
    }
    // Hand out every CIDR before writing anything: a registration that does
    // not fit is refused whole, never half done.
    let cidrs = free_pod_cidrs(&state.store, &state.pod_cidrs, names.len()).await?;
    // Several at once: the store commits them in groups.
    let registrations: Vec<_> = names
        .iter()
        .cloned()
        .zip(cidrs)
        .map(|(name, cidr)| {
            let store = state.store.clone();
            async move {
                let token = pki::new_token();
                set_token(&store, &name, &token).await?;
                store
                    .create(&node_key(&name), node_object(&name, &cidr, &[]))
                    .await?;
                Ok::<_, ApiError>(json!({"name": name, "token": token, "podCIDR": cidr}))
            }
        })
        .collect();
    let answers: Vec<Value> = futures_util::stream::iter(registrations)
        .buffered(REGISTRATIONS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"nodes": answers}),
    ))
}

/// `count` pod CIDRs of `pool` nobody holds yet (lowest first), or an
/// error when the cluster range has fewer free.
pub async fn free_pod_cidrs(
    store: &crate::store::Store,
    pool: &PodCidrPool,
    count: usize,
) -> Result<Vec<String>, ApiError> {
    let (nodes, _) = store.list(Kind::Node, None).await?;
    let used = nodes.iter().filter_map(|n| n["spec"]["podCIDR"].as_str());
    let blocks = pool
        .allocate(used, count)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(blocks.iter().map(ToString::to_string).collect())
}

/// A new Node object for `name` with its pod CIDR (and extra labels).
pub fn node_object(name: &str, cidr: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    for (k, v) in extra_labels {
        labels.insert((*k).to_string(), json!(v));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"conditions": [{
            "type": "Ready",
            "status": "Unknown",
            "reason": "AgentNeverConnected",
            "message": "the agent has not connected yet; start bramble-agent on the device with this node's token",
        }]},
    })
}

/// Make `token` the join token of `node` (replacing any earlier one).
pub async fn set_token(
    store: &crate::store::Store,
    node: &str,
    token: &str,
) -> Result<(), ApiError> {
    let hash: String = pki::token_sha256(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token_secret_name(node),
            "namespace": TOKEN_NAMESPACE,
            "labels": {"bramble.io/node": node},
        },
        "type": TOKEN_SECRET_TYPE,
        "data": {TOKEN_NODE_KEY: b64(node), TOKEN_HASH_KEY: b64(&hash)},
    });
    match store.get(&token_key(node)).await? {
        Some(_) => {
            store
                .update(&token_key(node), secret, Precondition::default())
                .await?
        }
        None => store.create(&token_key(node), secret).await?,
    };
    Ok(())
}

/// Revoke and remove a node.
pub async fn remove(state: &ApiState, name: &str) -> Result<Response, ApiError> {
    let had_token = match state
        .store
        .delete(&token_key(name), Precondition::default())
        .await
    {
        Ok(_) => true,
        Err(StoreError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let had_node = match state
        .store
        .delete(&node_key(name), Precondition::default())
        .await
    {
        Ok(_) => true,
        Err(StoreError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if !had_token && !had_node {
        return Err(ApiError::not_found(Kind::Node, name));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "revoked": had_token}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_secrets_are_named_after_the_node() {
        assert_eq!(token_secret_name("pi-1"), "bramble-node-token-pi-1");
    }
}
