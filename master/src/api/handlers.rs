//! The actions on objects: list, watch, get, create, update, patch, delete,
//! each on the main resource or its `status` subresource.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bramble_common::kinds::AnyObject;
use bramble_common::{defaults, manifest, table, validation, Kind};
use serde_json::{json, Value};

use super::error::ApiError;
use super::request::{ResourceTarget, Subresource};
use super::{json_response, patch, protobuf, selectors, watch, ApiState};
use crate::store::{DeleteOutcome, ObjectKey, Precondition, StoreError};

/// How many times a patch is retried when the object changes underneath it.
const PATCH_RETRIES: usize = 5;

/// Handle a request on an object or a collection.
pub async fn resource(
    state: &Arc<ApiState>,
    target: ResourceTarget,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let method = request.method().clone();
    if let (Some(name), Some(Subresource::Exec)) = (&target.name, target.subresource) {
        if method != Method::GET && method != Method::POST {
            return Err(ApiError::method_not_allowed(
                method.as_str(),
                request.uri().path(),
            ));
        }
        let namespace = target.namespace.as_deref().unwrap_or("default");
        return super::exec::serve(state, namespace, name, request).await;
    }
    let query = parse_query(request.uri().query());
    let headers = request.headers().clone();
    let path = request.uri().path().to_string();
    let body = read_body(state, request).await?;
    let kind = target.kind;
    match (&method, &target.name, target.subresource) {
        (&Method::GET, None, None) => {
            let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
            if is_watch {
                watch::serve(state, &target, &query, &headers).await
            } else {
                list(state, &target, &query, &headers).await
            }
        }
        (&Method::POST, None, None) => create(state, &target, &query, &headers, &body).await,
        (&Method::GET, Some(name), Some(Subresource::Log)) => {
            let namespace = target.namespace.as_deref().unwrap_or("default");
            super::logs::serve(state, namespace, name, &query).await
        }
        (_, _, Some(Subresource::Log)) => Err(ApiError::method_not_allowed(method.as_str(), &path)),
        (&Method::POST, Some(name), Some(Subresource::Eviction)) => {
            let namespace = target.namespace.as_deref().unwrap_or("default");
            super::eviction::create(state, namespace, name, &headers, &body).await
        }
        (_, _, Some(Subresource::Eviction)) => {
            Err(ApiError::method_not_allowed(method.as_str(), &path))
        }
        (method, Some(name), Some(Subresource::Scale)) => {
            let key = object_key(&target, name);
            match *method {
                Method::GET => super::scale::get(state, &key).await,
                Method::PUT => super::scale::update(state, &key, &query, &body).await,
                Method::PATCH => super::scale::patch(state, &key, &query, &headers, &body).await,
                _ => Err(ApiError::method_not_allowed(method.as_str(), &path)),
            }
        }
        (&Method::GET, Some(name), _) => {
            let key = object_key(&target, name);
            let object = state
                .store
                .get(&key)
                .await?
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            Ok(object_response(StatusCode::OK, &object, kind, &headers))
        }
        (&Method::PUT, Some(name), sub) => {
            update(state, &target, name, sub, &query, &headers, &body).await
        }
        (&Method::PATCH, Some(name), sub) => {
            patch_object(state, &target, name, sub, &query, &headers, &body).await
        }
        (&Method::DELETE, Some(name), None) => {
            delete(state, &target, name, &query, &headers, &body).await
        }
        _ => Err(ApiError::method_not_allowed(method.as_str(), &path)),
    }
}

/// Handle bramble's own endpoints (`/bramble/v1/...`).
pub async fn bramble(
    state: &Arc<ApiState>,
    rest: &str,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    match (&method, rest.split('/').collect::<Vec<_>>().as_slice()) {
        (&Method::GET, ["snapshot"]) => snapshot(state).await,
        (&Method::POST, ["nodes"]) => {
            let body = read_body(state, request).await?;
            super::nodes::add(state, &body).await
        }
        (&Method::DELETE, ["nodes", name]) => super::nodes::remove(state, name).await,
        _ => Err(ApiError::no_route(&path)),
    }
}

async fn snapshot(state: &Arc<ApiState>) -> Result<Response, ApiError> {
    let dir = tempfile::Builder::new()
        .prefix(".snapshot-")
        .tempdir_in(&state.scratch_dir)
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot create a scratch directory for the snapshot: {e}"
            ))
        })?;
    let path = dir.path().join("snapshot.redb");
    let info = state.store.snapshot(&path).await?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the snapshot back: {e}")))?;
    drop(dir);
    Ok((
        StatusCode::OK,
        [
            (
                axum::http::header::CONTENT_TYPE.as_str(),
                "application/octet-stream".to_string(),
            ),
            ("x-bramble-revision", info.revision.to_string()),
            ("x-bramble-objects", info.objects.to_string()),
        ],
        bytes,
    )
        .into_response())
}

async fn read_body(state: &ApiState, request: Request<Body>) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(request.into_body(), state.max_body_bytes)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "cannot read the request body (at most {} bytes are accepted): {e}",
                state.max_body_bytes
            ))
        })
}

/// Parse a query string into a map (last value wins).
pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(percent_decode(k), percent_decode(v));
    }
    map
}

/// Decode `%XX` escapes and `+` of a query string component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The store key of a named object of the target.
pub fn object_key(target: &ResourceTarget, name: &str) -> ObjectKey {
    ObjectKey {
        kind: target.kind,
        namespace: target.namespace.clone().unwrap_or_default(),
        name: name.to_string(),
    }
}

/// True when the client asked for a server-side table (kubectl get does).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

fn object_response(code: StatusCode, object: &Value, kind: Kind, headers: &HeaderMap) -> Response {
    if wants_table(headers) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        return json_response(code, &table::to_table(kind, &[object], &rv, now_unix()));
    }
    super::negotiated_response(code, object, headers)
}

/// Seconds since the epoch, for ages in tables.
pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn parse_body(headers: &HeaderMap, body: &[u8], kind: Kind) -> Result<Value, ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
        let docs = manifest::parse_documents("request body", text)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut docs = docs.into_iter();
        match (docs.next(), docs.next()) {
            (Some(doc), None) => Ok(doc.value),
            _ => Err(ApiError::bad_request(
                "the request body must hold exactly one object",
            )),
        }
    } else if content_type.contains("json") {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    } else if protobuf::is_protobuf_body(headers) {
        protobuf::decode_envelope(body, Some((kind.api_version(), kind.name())))
            .map(|(_, object)| object)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    } else {
        Err(ApiError::unsupported_media_type(format!(
            "unsupported content type {content_type:?}; send application/json or application/vnd.kubernetes.protobuf"
        )))
    }
}

fn is_dry_run(query: &HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|v| v == "All")
}

/// Check and complete an incoming object for `target`: apiVersion/kind,
/// namespace, unsupported fields, validation, defaults.
fn admit(target: &ResourceTarget, mut value: Value) -> Result<AnyObject, ApiError> {
    let kind = target.kind;
    let Some(map) = value.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let api_version = map
        .entry("apiVersion")
        .or_insert_with(|| json!(kind.api_version()));
    if api_version != kind.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            api_version.as_str().unwrap_or("?"),
            kind.api_version()
        )));
    }
    let kind_field = map.entry("kind").or_insert_with(|| json!(kind.name()));
    if kind_field != kind.name() {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({}) does not match the expected kind ({})",
            kind_field.as_str().unwrap_or("?"),
            kind.name()
        )));
    }
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    if let (Some(url_ns), Some(meta)) = (&target.namespace, metadata.as_object_mut()) {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), json!(url_ns));
            }
            Some(ns) if ns != url_ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({url_ns})"
                )));
            }
            Some(_) => {}
        }
    }
    let name = value["metadata"]["name"]
        .as_str()
        .or_else(|| value["metadata"]["generateName"].as_str())
        .unwrap_or("")
        .to_string();
    let mut object =
        manifest::decode_object(value).map_err(|e| ApiError::from_object_error(kind, &name, e))?;
    defaults::apply_defaults(&mut object);
    Ok(object)
}

/// A Service's ClusterIP and NodePorts, allocated or checked (see
/// [`crate::controllers::service_ip`]); the guard serialises allocations
/// until the caller's write is done. Other kinds pass through.
async fn allocate_service<'a>(
    state: &'a ApiState,
    object: &mut AnyObject,
    current: Option<&Value>,
) -> Result<Option<tokio::sync::MutexGuard<'a, ()>>, ApiError> {
    use crate::controllers::service_ip::AdmitError;
    let AnyObject::Service(service) = object else {
        return Ok(None);
    };
    let old = match current {
        Some(value) => match stored_object(Kind::Service, value)? {
            AnyObject::Service(old) => Some(old),
            _ => None,
        },
        None => None,
    };
    let guard = state.services.lock().await;
    let name = service.metadata.name.clone().unwrap_or_default();
    match state
        .services
        .admit(&state.store, service, old.as_ref())
        .await
    {
        Ok(()) => Ok(Some(guard)),
        Err(AdmitError::Invalid(errors)) => Err(ApiError::invalid(Kind::Service, &name, &errors)),
        Err(AdmitError::Store(e)) => Err(e.into()),
    }
}

/// Refuses a create in a namespace that does not exist (404) or that is
/// being deleted (403, as Kubernetes' `NamespaceLifecycle` admission).
async fn ensure_namespace_exists(
    state: &ApiState,
    target: &ResourceTarget,
    name: &str,
) -> Result<(), ApiError> {
    if let (true, Some(ns)) = (target.kind.namespaced(), &target.namespace) {
        let key = ObjectKey {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: ns.clone(),
        };
        match state.store.get(&key).await? {
            None => return Err(ApiError::not_found(Kind::Namespace, ns)),
            Some(namespace) if namespace["metadata"]["deletionTimestamp"].is_string() => {
                return Err(ApiError::forbidden(
                    target.kind,
                    name,
                    &format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn create(
    state: &Arc<ApiState>,
    target: &ResourceTarget,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if target.kind.namespaced() && target.namespace.is_none() {
        return Err(ApiError::bad_request(format!(
            "{} are namespaced: create them under /namespaces/{{namespace}}/",
            target.kind.info().plural
        )));
    }
    let mut object = admit(target, parse_body(headers, body, target.kind)?)?;
    let name = object.metadata().name.clone().unwrap_or_default();
    ensure_namespace_exists(state, target, &name).await?;
    // Held until the Service is written: no two get the same address.
    let _allocation = allocate_service(state, &mut object, None).await?;
    let key = object_key(target, &name);
    let value = object.to_value();
    if is_dry_run(query) {
        return Ok(object_response(
            StatusCode::CREATED,
            &value,
            target.kind,
            headers,
        ));
    }
    let created = state.store.create(&key, value).await?;
    Ok(object_response(
        StatusCode::CREATED,
        &created,
        target.kind,
        headers,
    ))
}

fn precondition_from(value: &Value) -> Result<Precondition, ApiError> {
    let resource_version = match value["metadata"]["resourceVersion"].as_str() {
        None | Some("") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("metadata.resourceVersion: invalid value {rv:?}: not a resource version of this cluster"))
        })?),
    };
    Ok(Precondition {
        resource_version,
        uid: None,
    })
}

fn check_name(target_name: &str, object: &AnyObject) -> Result<(), ApiError> {
    let body_name = object.metadata().name.as_deref().unwrap_or("");
    if body_name != target_name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({target_name})"
        )));
    }
    Ok(())
}

/// Decode the stored object (it was valid when written).
fn stored_object(kind: Kind, value: &Value) -> Result<AnyObject, ApiError> {
    AnyObject::from_value(kind, value.clone())
        .map_err(|e| ApiError::internal(format!("stored object cannot be decoded: {e}")))
}

fn check_update(kind: Kind, name: &str, old: &Value, new: &AnyObject) -> Result<(), ApiError> {
    let old = stored_object(kind, old)?;
    let errors = validation::validate_update(&old, new);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, name, &errors))
    }
}

async fn write_update(
    state: &ApiState,
    key: &ObjectKey,
    sub: Option<Subresource>,
    value: Value,
    precondition: Precondition,
) -> Result<Value, StoreError> {
    match sub {
        Some(Subresource::Status) => {
            let status = value.get("status").cloned().unwrap_or(Value::Null);
            state.store.update_status(key, status, precondition).await
        }
        // `log` is read-only, `scale` and `eviction` have their own handlers: `resource`
        // answers them before here.
        None
        | Some(Subresource::Log | Subresource::Exec | Subresource::Scale | Subresource::Eviction) => {
            state.store.update(key, value, precondition).await
        }
    }
}

async fn update(
    state: &Arc<ApiState>,
    target: &ResourceTarget,
    name: &str,
    sub: Option<Subresource>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let incoming = parse_body(headers, body, target.kind)?;
    let precondition = precondition_from(&incoming)?;
    let mut object = admit(target, incoming)?;
    check_name(name, &object)?;
    let key = object_key(target, name);
    let current = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(target.kind, name))?;
    let _allocation = allocate_service(state, &mut object, Some(&current)).await?;
    check_update(target.kind, name, &current, &object)?;
    if is_dry_run(query) {
        return Ok(object_response(
            StatusCode::OK,
            &object.to_value(),
            target.kind,
            headers,
        ));
    }
    let updated = write_update(state, &key, sub, object.to_value(), precondition).await?;
    Ok(object_response(
        StatusCode::OK,
        &updated,
        target.kind,
        headers,
    ))
}

async fn patch_object(
    state: &Arc<ApiState>,
    target: &ResourceTarget,
    name: &str,
    sub: Option<Subresource>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type.starts_with("application/apply-patch") {
        return Err(ApiError::unsupported_media_type(
            "server-side apply is not supported by bramble; use client-side apply (kubectl apply without --server-side)",
        ));
    }
    let patch_doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let key = object_key(target, name);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = state
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(target.kind, name))?;
        let patched = if content_type.starts_with("application/strategic-merge-patch+json") {
            patch::strategic_merge_patch(target.kind, &current, &patch_doc)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        } else if content_type.starts_with("application/merge-patch+json") {
            let mut doc = current.clone();
            patch::json_merge_patch(&mut doc, &patch_doc);
            doc
        } else if content_type.starts_with("application/json-patch+json") {
            patch::json_patch(&current, &patch_doc)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        } else {
            return Err(ApiError::unsupported_media_type(format!(
                "unsupported patch type {content_type:?}: use application/strategic-merge-patch+json, application/merge-patch+json or application/json-patch+json"
            )));
        };
        // A resourceVersion in the patch is a precondition; otherwise the
        // patch applies to the version just read (and is retried on conflict).
        let explicit = precondition_from(&patch_doc)?;
        let precondition = if explicit.resource_version.is_some() {
            explicit.clone()
        } else {
            precondition_from(&current)?
        };
        let mut object = admit(target, patched)?;
        check_name(name, &object)?;
        let _allocation = allocate_service(state, &mut object, Some(&current)).await?;
        check_update(target.kind, name, &current, &object)?;
        if is_dry_run(query) {
            return Ok(object_response(
                StatusCode::OK,
                &object.to_value(),
                target.kind,
                headers,
            ));
        }
        match write_update(state, &key, sub, object.to_value(), precondition).await {
            Ok(updated) => {
                return Ok(object_response(
                    StatusCode::OK,
                    &updated,
                    target.kind,
                    headers,
                ))
            }
            Err(StoreError::Conflict { .. })
                if explicit.resource_version.is_none() && attempt < PATCH_RETRIES =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn delete(
    state: &Arc<ApiState>,
    target: &ResourceTarget,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut precondition = Precondition::default();
    let mut propagation: Option<String> = query.get("propagationPolicy").cloned();
    let mut grace_seconds: Option<i64> = match query.get("gracePeriodSeconds") {
        Some(v) => Some(v.parse().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds: {v:?} is not a whole number"))
        })?),
        None => None,
    };
    if !body.is_empty() {
        let options: Value = if protobuf::is_protobuf_body(headers) {
            protobuf::decode_envelope(body, Some(("meta.k8s.io/v1", "DeleteOptions")))
                .map(|(_, options)| options)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        } else {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("DeleteOptions are not valid JSON: {e}"))
            })?
        };
        if let Some(grace) = options.get("gracePeriodSeconds").filter(|v| !v.is_null()) {
            grace_seconds = Some(grace.as_i64().ok_or_else(|| {
                ApiError::bad_request(format!("gracePeriodSeconds: {grace} is not a whole number"))
            })?);
        }
        if let Some(policy) = options["propagationPolicy"].as_str() {
            propagation = Some(policy.to_string());
        } else if options["orphanDependents"] == true {
            propagation = Some("Orphan".to_string());
        }
        if let Some(uid) = options["preconditions"]["uid"].as_str() {
            precondition.uid = Some(uid.to_string());
        }
        if let Some(rv) = options["preconditions"]["resourceVersion"].as_str() {
            precondition.resource_version = Some(rv.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "preconditions.resourceVersion: invalid value {rv:?}"
                ))
            })?);
        }
    }
    let policy = super::deletion::Propagation::parse(propagation.as_deref())?;
    let key = object_key(target, name);
    if is_dry_run(query) {
        let current = state
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(target.kind, name))?;
        return Ok(super::negotiated_response(
            StatusCode::OK,
            &current,
            headers,
        ));
    }
    if target.kind == Kind::Namespace {
        super::deletion::protect_namespace(name)?;
    }
    if let Some(object) =
        super::deletion::prepare(&state.store, &key, &precondition, policy).await?
    {
        // A namespace, or an owner whose dependents are handled first: the
        // store only marks it; the namespace controller or the garbage
        // collector finishes.
        let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let outcome = state.store.delete(&key, Precondition::uid(uid)).await?;
        return Ok(super::negotiated_response(
            StatusCode::OK,
            outcome.object(),
            headers,
        ));
    }
    if target.kind == Kind::Pod {
        let stored = state
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(target.kind, name))?;
        let grace = pod_deletion_grace(&stored, grace_seconds);
        if grace > 0 {
            // The node stops the pod first; the pod-termination controller
            // deletes it once its node reports it stopped.
            return match state
                .store
                .delete_gracefully(&key, precondition, grace)
                .await?
            {
                DeleteOutcome::Deleted(object) | DeleteOutcome::Finalizing(object) => {
                    Ok(super::negotiated_response(StatusCode::OK, &object, headers))
                }
            };
        }
    }
    match state.store.delete(&key, precondition).await? {
        DeleteOutcome::Deleted(object) => {
            Ok(super::negotiated_response(StatusCode::OK, &object, headers))
        }
        DeleteOutcome::Finalizing(object) => Ok(super::negotiated_response(
            StatusCode::ACCEPTED,
            &object,
            headers,
        )),
    }
}

/// How long a pod being deleted gets to stop, as Kubernetes decides: the
/// request's `gracePeriodSeconds`, else the pod's
/// `terminationGracePeriodSeconds` (30 s by default); 0 (deleted at once)
/// for a pod no node runs: unscheduled, or already Succeeded or Failed.
pub fn pod_deletion_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let unscheduled = pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || finished {
        return 0;
    }
    requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

/// Parsed `labelSelector` and `fieldSelector` of a list or watch.
pub struct Filter {
    labels: selectors::LabelSelector,
    fields: selectors::FieldSelector,
}

impl Filter {
    /// Parse the selectors of a query.
    pub fn from_query(kind: Kind, query: &HashMap<String, String>) -> Result<Filter, ApiError> {
        let labels =
            selectors::parse_label_selector(query.get("labelSelector").map_or("", String::as_str))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields =
            selectors::parse_field_selector(query.get("fieldSelector").map_or("", String::as_str))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        fields
            .validate_for(kind)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    /// True when `object` passes both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        self.labels.matches(&labels) && self.fields.matches(object)
    }
}

async fn list(
    state: &Arc<ApiState>,
    target: &ResourceTarget,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let filter = Filter::from_query(target.kind, query)?;
    let (objects, revision) = state
        .store
        .list(target.kind, target.namespace.as_deref())
        .await?;
    let items: Vec<&Value> = objects.iter().filter(|o| filter.matches(o)).collect();
    let rv = revision.to_string();
    if wants_table(headers) {
        return Ok(json_response(
            StatusCode::OK,
            &table::to_table(target.kind, &items, &rv, now_unix()),
        ));
    }
    let list = json!({
        "kind": format!("{}List", target.kind.name()),
        "apiVersion": target.kind.api_version(),
        "metadata": {"resourceVersion": rv},
        "items": items,
    });
    Ok(super::negotiated_response(StatusCode::OK, &list, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier%21%3Ddb&watch=true&x"));
        assert_eq!(q["labelSelector"], "app=web,tier!=db");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "");
        assert_eq!(parse_query(Some("a=%zz%4"))["a"], "%zz%4");
    }
}
