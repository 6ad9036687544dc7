//! Every error answer in the API's JSON format: responses that the router or
//! an extractor produced itself (405 with an empty body, a plain-text 400 for
//! a bad percent-encoding in the path, ...) are rewritten to
//! `{"error": <kind>, "detail": <text>}`.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Longest plain-text body kept as the detail.
const MAX_DETAIL: usize = 4096;

/// The middleware: passes JSON answers and successes through untouched.
pub(crate) async fn every_error_in_json(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_DETAIL)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        default_detail(status, &method, parts.headers.get(header::ALLOW))
    } else {
        text
    };
    let mut fixed = ApiError::new(status, kind_of(status), detail).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            fixed.headers_mut().insert(name, v.clone());
        }
    }
    fixed
}

fn is_json(r: &Response<Body>) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The error kind of a status the handlers do not produce themselves.
fn kind_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

fn default_detail(status: StatusCode, method: &Method, allow: Option<&HeaderValue>) -> String {
    match (status, allow.and_then(|v| v.to_str().ok())) {
        (StatusCode::METHOD_NOT_ALLOWED, Some(allowed)) => {
            format!("this route does not take {method}; it takes {allowed}")
        }
        (StatusCode::METHOD_NOT_ALLOWED, None) => {
            format!("this route does not take {method} (the Allow header lists what it takes)")
        }
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    }
}
