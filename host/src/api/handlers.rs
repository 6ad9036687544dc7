//! Route handlers: parse, call the service on a blocking thread, answer JSON.

use std::collections::HashMap;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::service::{ExecutionService, ServiceError};
use super::AppState;

/// Largest page `GET /v1/executions` returns.
const MAX_PAGE: usize = 1000;

pub(super) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn ExecutionService) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = state.service.clone();
    tokio::task::spawn_blocking(move || f(service.as_ref()))
        .await
        .map_err(|e| ApiError::from(ServiceError::Internal(format!("request handler failed: {e}"))))?
        .map_err(ApiError::from)
}

pub(super) async fn read_json(state: &AppState, body: Body) -> Result<Option<Value>, ApiError> {
    let limit = state.options.max_body_bytes;
    let bytes = to_bytes(body, limit).await.map_err(|_| ApiError::too_large(limit))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))
}

pub(crate) async fn submit(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let Some(Value::Object(mut spec)) = read_json(&state, body).await? else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object describing the execution (see examples/)",
            None,
        ));
    };
    let id = match spec.remove("execution_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`execution_id` must be a string",
                Some("execution_id".into()),
            ))
        }
    };
    let submitted = blocking(&state, move |s| s.submit(id, Value::Object(spec))).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/executions/{}", submitted.id);
    Ok((status, [(header::LOCATION, location)], Json(submitted.execution)).into_response())
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    format!("`limit` must be an integer from 1 to {MAX_PAGE}, got {l:?}"),
                    Some("limit".into()),
                ))
            }
        },
    };
    let phase = q.get("phase").cloned();
    let after = q.get("after").cloned();
    let items = blocking(&state, move |s| s.list(phase.as_deref(), limit, after.as_deref())).await?;
    let next = if items.len() == limit {
        items.last().and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    Ok(Json(json!({ "items": items, "next": next })))
}

pub(crate) async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(blocking(&state, move |s| s.get(&id)).await?))
}

pub(crate) async fn events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let items = blocking(&state, move |s| s.events(&id)).await?;
    Ok(Json(json!({ "items": items })))
}

pub(crate) async fn outputs(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let outputs = blocking(&state, move |s| s.outputs(&id)).await?;
    Ok(Json(json!({ "outputs": outputs })))
}

pub(crate) async fn abort(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let reason = match read_json(&state, body).await? {
        None => "aborted by the API".to_string(),
        Some(v) => match v.get("reason") {
            None => "aborted by the API".to_string(),
            Some(Value::String(r)) => r.clone(),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "`reason` must be a string",
                    Some("reason".into()),
                ))
            }
        },
    };
    Ok(Json(blocking(&state, move |s| s.abort(&id, &reason)).await?))
}

pub(crate) async fn plugins(State(state): State<AppState>) -> Json<Value> {
    Json(state.service.plugins())
}

pub(crate) async fn health(State(state): State<AppState>) -> Response {
    match state.service.health() {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => ApiError::from(ServiceError::Unavailable(e)).into_response(),
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let service = state.service.clone();
    let text = tokio::task::spawn_blocking(move || service.metrics_text())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; the API lives under /v1 (executions, plugins), plus /healthz and /metrics",
    )
}
