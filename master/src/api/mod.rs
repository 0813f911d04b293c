//! The Kubernetes-style HTTP API.
//!
//! Every request goes through one dispatcher: the path is parsed into a typed
//! [`request::Route`], the bearer token is checked, and the action (list,
//! watch, get, create, update, patch, delete) is handled in [`handlers`]. The
//! API meets the rest of the master only through the [`crate::store`].

pub mod auth;
pub mod deletion;
pub mod discovery;
pub mod error;
pub mod eviction;
pub mod exec;
pub mod handlers;
pub mod logs;
pub mod nodes;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod pod_cidr;
pub mod protobuf;
pub mod request;
pub mod scale;
pub mod selectors;
pub mod server;
mod watch;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::store::Store;
use error::ApiError;
use request::Route;

/// Everything the API handlers share.
pub struct ApiState {
    /// The cluster state.
    pub store: Store,
    /// Accepted bearer tokens, by SHA-256.
    pub auth: auth::Authenticator,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A directory on the data disk for temporary files (snapshots).
    pub scratch_dir: std::path::PathBuf,
    /// Serialises node registrations (pod CIDRs are handed out from what exists).
    pub node_registration: tokio::sync::Mutex<()>,
    /// Reaches the agents (logs).
    pub rpc: Arc<crate::rpc::RpcHub>,
    /// Where nodes' pod CIDRs come from (`--cluster-cidr`, `--node-cidr-mask-size`).
    pub pod_cidrs: pod_cidr::PodCidrPool,
    /// Services' ClusterIPs and NodePorts (`--service-cidr`, `--service-node-port-range`).
    pub services: Arc<crate::controllers::service_ip::ServiceAllocator>,
}

/// The API router: one dispatcher for every path.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(state): State<Arc<ApiState>>, request: Request<Body>) -> Response {
    let path = request.uri().path().to_string();
    let route = match request::parse_path(&path) {
        Ok(route) => route,
        Err(request::NoRoute) => {
            if !state.auth.is_authorized(request.headers()) {
                return ApiError::unauthorized().into_response();
            }
            return ApiError::no_route(&path).into_response();
        }
    };
    let public = matches!(route, Route::Version | Route::Health);
    if !public && !state.auth.is_authorized(request.headers()) {
        return ApiError::unauthorized().into_response();
    }
    let result = match route {
        Route::Version => Ok(json_response(StatusCode::OK, &discovery::version())),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions => Ok(json_response(StatusCode::OK, &discovery::core_versions())),
        Route::GroupList => Ok(json_response(StatusCode::OK, &discovery::group_list())),
        Route::Group(group) => discovery::group(&group)
            .map(|doc| json_response(StatusCode::OK, &doc))
            .ok_or_else(|| ApiError::no_route(&path)),
        Route::ResourceList { group, version } => discovery::resource_list(&group, &version)
            .map(|doc| json_response(StatusCode::OK, &doc))
            .ok_or_else(|| ApiError::no_route(&path)),
        Route::OpenApiRoot => Ok(json_response(StatusCode::OK, &openapi::root())),
        Route::OpenApiGroupVersion(gv) => openapi::group_version(&gv)
            .map(|doc| json_response(StatusCode::OK, &doc))
            .ok_or_else(|| ApiError::no_route(&path)),
        Route::OpenApiV2 => Err(ApiError::no_route(&path)),
        Route::Bramble(rest) => handlers::bramble(&state, &rest, request).await,
        Route::Resource(target) => handlers::resource(&state, target, request).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// An object answered in the format the request's `Accept` negotiates
/// (JSON unless protobuf comes first). An object with no protobuf type is
/// answered in JSON, which every client decodes by its `Content-Type`.
pub fn negotiated_response(
    code: StatusCode,
    value: &serde_json::Value,
    headers: &axum::http::HeaderMap,
) -> Response {
    if protobuf::negotiate(headers) == protobuf::Format::Protobuf {
        match protobuf::encode_object(value) {
            Ok(body) => {
                return (
                    code,
                    [(axum::http::header::CONTENT_TYPE, protobuf::MEDIA_TYPE)],
                    body,
                )
                    .into_response()
            }
            Err(e) => tracing::debug!(error = %e, "answering in JSON"),
        }
    }
    json_response(code, value)
}

/// A JSON response with the given code.
pub fn json_response(code: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
