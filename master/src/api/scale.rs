//! The `scale` subresource (autoscaling/v1 `Scale`) of Deployments and
//! ReplicaSets: what `kubectl scale` and clients'
//! `patch_namespaced_deployment_scale` use.
//!
//! A `Scale` is a view of the object: `spec.replicas` is the object's,
//! `status.replicas` and `status.selector` (as a label selector string)
//! come from its status and selector. Writing it writes `spec.replicas` of
//! the object, under the Scale's `resourceVersion` when it has one (the
//! object's).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bramble_common::validation::FieldError;
use bramble_common::Kind;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{json_response, patch, ApiState};
use crate::store::{ObjectKey, Precondition};

/// Kinds with a `scale` subresource.
pub fn has_scale(kind: Kind) -> bool {
    matches!(kind, Kind::Deployment | Kind::ReplicaSet)
}

/// The `Scale` of a stored object.
pub fn scale_of(object: &Value) -> Value {
    let meta = &object["metadata"];
    let selector: bramble_common::meta::LabelSelector =
        serde_json::from_value(object["spec"]["selector"].clone()).unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": crate::controllers::pods::selector_string(&selector),
        },
    })
}

async fn load(state: &ApiState, key: &ObjectKey) -> Result<Value, ApiError> {
    state
        .store
        .get(key)
        .await?
        .ok_or_else(|| ApiError::not_found(key.kind, &key.name))
}

/// `GET .../{name}/scale`.
pub async fn get(state: &Arc<ApiState>, key: &ObjectKey) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &scale_of(&load(state, key).await?),
    ))
}

/// Writes the replicas of `scale` to the object; answers the new Scale.
async fn write(
    state: &ApiState,
    key: &ObjectKey,
    current: Value,
    scale: &Value,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    if scale["kind"].as_str().is_some_and(|k| k != "Scale") {
        return Err(ApiError::bad_request(format!(
            "the body must be an autoscaling/v1 Scale, not a {}",
            scale["kind"]
        )));
    }
    let replicas = match &scale["spec"]["replicas"] {
        Value::Null => 0,
        value => value.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!("spec.replicas: {value} is not a whole number"))
        })?,
    };
    if replicas < 0 || replicas > i64::from(i32::MAX) {
        let error = FieldError::invalid(
            "spec.replicas",
            replicas,
            "must be greater than or equal to 0",
        );
        return Err(ApiError::invalid(key.kind, &key.name, &[error]));
    }
    let precondition = match scale["metadata"]["resourceVersion"].as_str() {
        None | Some("") => Precondition::resource_version(
            current["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0),
        ),
        Some(rv) => Precondition::resource_version(rv.parse().map_err(|_| {
            ApiError::bad_request(format!("metadata.resourceVersion: invalid value {rv:?}"))
        })?),
    };
    let mut object = current;
    object["spec"]["replicas"] = json!(replicas);
    if query.get("dryRun").is_some_and(|v| v == "All") {
        return Ok(json_response(StatusCode::OK, &scale_of(&object)));
    }
    let stored = state.store.update(key, object, precondition).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&stored)))
}

/// `PUT .../{name}/scale`.
pub async fn update(
    state: &Arc<ApiState>,
    key: &ObjectKey,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let scale: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the Scale is not valid JSON: {e}")))?;
    let current = load(state, key).await?;
    write(state, key, current, &scale, query).await
}

/// `PATCH .../{name}/scale` (merge, strategic merge or JSON patch of the
/// Scale), retried when the object changes underneath.
pub async fn patch(
    state: &Arc<ApiState>,
    key: &ObjectKey,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let explicit = document["metadata"]["resourceVersion"].is_string();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = load(state, key).await?;
        let scale = scale_of(&current);
        let patched = if content_type.starts_with("application/json-patch+json") {
            patch::json_patch(&scale, &document)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        } else if content_type.starts_with("application/merge-patch+json")
            || content_type.starts_with("application/strategic-merge-patch+json")
        {
            // A Scale has no lists: a strategic merge is a merge.
            let mut doc = scale.clone();
            patch::json_merge_patch(&mut doc, &document);
            doc
        } else {
            return Err(ApiError::unsupported_media_type(format!(
                "unsupported patch type {content_type:?}: use application/merge-patch+json, application/strategic-merge-patch+json or application/json-patch+json"
            )));
        };
        match write(state, key, current, &patched, query).await {
            Err(ApiError(status)) if status.code == 409 && !explicit && attempt < 5 => continue,
            other => return other,
        }
    }
}
