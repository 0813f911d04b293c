//! The `pods/{name}/eviction` subresource (policy/v1 `Eviction`), what
//! `kubectl drain` posts for each pod: the pod is deleted as a DELETE would
//! (gracefully when a node runs it, with the eviction's
//! `deleteOptions.gracePeriodSeconds` if given) and the answer is a
//! `Success` Status with code 201, as kube-apiserver gives. bramble has no
//! PodDisruptionBudgets, so no eviction is ever refused for one.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bramble_common::meta::Status;
use bramble_common::Kind;
use serde_json::Value;

use super::error::ApiError;
use super::{json_response, protobuf, ApiState};
use crate::store::{ObjectKey, Precondition};

/// Evicts the pod `name` of `namespace`.
pub async fn create(
    state: &ApiState,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let eviction: Value = if body.is_empty() {
        Value::Null
    } else if protobuf::is_protobuf_body(headers) {
        protobuf::decode_envelope(body, Some(("policy/v1", "Eviction")))
            .map(|(_, eviction)| eviction)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the Eviction is not valid JSON: {e}")))?
    };
    if let Some(named) = eviction["metadata"]["name"].as_str() {
        if !named.is_empty() && named != name {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {name} != {named}"
            )));
        }
    }
    let options = &eviction["deleteOptions"];
    let requested = match options.get("gracePeriodSeconds").filter(|v| !v.is_null()) {
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "deleteOptions.gracePeriodSeconds: {v} is not a whole number"
            ))
        })?),
        None => None,
    };
    let key = ObjectKey::new(Kind::Pod, namespace, name);
    let pod = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let mut precondition = Precondition::uid(pod["metadata"]["uid"].as_str().unwrap_or(""));
    if let Some(uid) = options["preconditions"]["uid"].as_str() {
        precondition.uid = Some(uid.to_string());
    }
    let grace = super::handlers::pod_deletion_grace(&pod, requested);
    if grace > 0 {
        state
            .store
            .delete_gracefully(&key, precondition, grace)
            .await?;
    } else {
        state.store.delete(&key, precondition).await?;
    }
    let mut status = Status::failure(201, "", "");
    status.status = "Success".into();
    let value = serde_json::to_value(status).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::CREATED, &value))
}
