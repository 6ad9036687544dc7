//! JSON error bodies: `{"error": <kind>, "detail": <text>}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::service::ServiceError;

/// Seconds a client should wait before retrying a 503 or 507.
const RETRY_AFTER_SECS: &str = "10";

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    path: Option<String>,
    /// Per-item errors of a batch (`[{index, path, detail}]`).
    errors: Option<serde_json::Value>,
}

impl ApiError {
    /// A response with a status, a short kind and a detail.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            detail: detail.into(),
            path: None,
            errors: None,
        }
    }

    /// 400 with the JSON path of the bad field.
    pub fn bad_request(detail: impl Into<String>, path: Option<String>) -> Self {
        ApiError {
            path,
            ..ApiError::new(StatusCode::BAD_REQUEST, "bad_request", detail)
        }
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes (setting max_body_bytes)"),
        )
    }

    /// 401.
    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token: send `Authorization: Bearer <token>`",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The short kind (`bad_request`, `conflict`, ...).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What went wrong.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::BadRequest { detail, path } => ApiError::bad_request(detail, path),
            ServiceError::NotFound(d) => ApiError::new(StatusCode::NOT_FOUND, "not_found", d),
            ServiceError::Conflict(d) => ApiError::new(StatusCode::CONFLICT, "conflict", d),
            ServiceError::Unprocessable(d) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", d),
            ServiceError::Unavailable(d) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", d),
            ServiceError::StorageFull(d) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", d),
            ServiceError::StorageReadOnly(d) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_read_only", d),
            ServiceError::Internal(d) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", d),
            ServiceError::BadItems(items) => {
                let first = items.first().map(|e| e.index).unwrap_or_default();
                let errors = items
                    .iter()
                    .map(|e| json!({ "index": e.index, "path": e.path, "detail": e.detail }))
                    .collect();
                ApiError {
                    errors: Some(serde_json::Value::Array(errors)),
                    ..ApiError::bad_request(
                        format!(
                            "{} of the batch's items are invalid (the first at index {first}); nothing was submitted",
                            items.len()
                        ),
                        None,
                    )
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.kind, "detail": self.detail });
        if let Some(p) = self.path {
            body["path"] = json!(p);
        }
        if let Some(errors) = self.errors {
            body["errors"] = errors;
        }
        let mut response = (self.status, Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
        ) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
