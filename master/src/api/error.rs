//! API errors as Kubernetes `Status` objects with the matching HTTP codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bramble_common::manifest::ObjectError;
use bramble_common::meta::{Status, StatusCause, StatusDetails};
use bramble_common::validation::FieldError;
use bramble_common::Kind;

use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError(pub Box<Status>);

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError(Box::new(Status::failure(code, reason, message)))
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 503 Service Unavailable: a node or the broker cannot be reached.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "Unauthorized",
            "Unauthorized: a valid bearer token is required (use the admin kubeconfig the master wrote into its data dir)",
        )
    }

    /// 404 Not Found for an object.
    pub fn not_found(kind: Kind, name: &str) -> Self {
        let plural = kind.info().plural;
        Self::new(404, "NotFound", format!("{plural} \"{name}\" not found")).with_details(
            kind,
            name,
            Vec::new(),
        )
    }

    /// 404 Not Found for a path the API does not serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 405 Method Not Allowed.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow {method} on {path}"),
        )
    }

    /// 409 Conflict with reason AlreadyExists.
    pub fn already_exists(kind: Kind, name: &str) -> Self {
        let plural = kind.info().plural;
        Self::new(
            409,
            "AlreadyExists",
            format!("{plural} \"{name}\" already exists"),
        )
        .with_details(kind, name, Vec::new())
    }

    /// 403 Forbidden for an action on an object (`pods "x" is forbidden:
    /// {why}`).
    pub fn forbidden(kind: Kind, name: &str, why: &str) -> Self {
        let plural = kind.info().plural;
        Self::new(
            403,
            "Forbidden",
            format!("{plural} \"{name}\" is forbidden: {why}"),
        )
        .with_details(kind, name, Vec::new())
    }

    /// 415 Unsupported Media Type.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 422 Unprocessable Entity: the object is invalid.
    pub fn invalid(kind: Kind, name: &str, errors: &[FieldError]) -> Self {
        let listed: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let joined = if listed.len() == 1 {
            listed[0].clone()
        } else {
            format!("[{}]", listed.join(", "))
        };
        let causes = errors
            .iter()
            // kubectl prints `field: message`, so the cause's message leaves the path out.
            .map(FieldError::to_cause)
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {joined}", kind.name()),
        )
        .with_details(kind, name, causes)
    }

    /// 500 Internal Server Error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    fn with_details(mut self, kind: Kind, name: &str, causes: Vec<StatusCause>) -> Self {
        self.0.details = Some(StatusDetails {
            name: Some(name.to_string()),
            group: Some(kind.info().group.to_string()).filter(|g| !g.is_empty()),
            kind: Some(kind.info().plural.to_string()),
            causes,
        });
        self
    }

    /// Map a decoding error of a request body.
    pub fn from_object_error(kind: Kind, name: &str, error: ObjectError) -> Self {
        match error {
            ObjectError::Invalid { errors, .. } => Self::invalid(kind, name, &errors),
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound { key } => ApiError::not_found(key.kind, &key.name),
            StoreError::AlreadyExists { key } => ApiError::already_exists(key.kind, &key.name),
            StoreError::Conflict { key, message } => ApiError::new(
                409,
                "Conflict",
                message.clone(),
            )
            .with_details(key.kind, &key.name, Vec::new()),
            StoreError::Gone { .. } => ApiError::new(410, "Expired", error.to_string()),
            StoreError::Invalid { message } => ApiError::bad_request(message.clone()),
            _ => ApiError::internal(error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}
