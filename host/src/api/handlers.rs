//! Route handlers: parse, call the service on a blocking thread, answer JSON.

use std::collections::HashMap;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::service::{split_batch_item, ExecutionService, Health, ServiceError};
use super::AppState;

/// Largest page `GET /v1/executions` returns.
const MAX_PAGE: usize = 1000;

async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn ExecutionService) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = state.service.clone();
    tokio::task::spawn_blocking(move || f(service.as_ref()))
        .await
        .map_err(|e| ApiError::from(ServiceError::Internal(format!("request handler failed: {e}"))))?
        .map_err(ApiError::from)
}

async fn read_json(state: &AppState, body: Body) -> Result<Option<Value>, ApiError> {
    read_json_within(state, body, state.options.max_body_bytes).await
}

async fn read_json_within(state: &AppState, body: Body, limit: usize) -> Result<Option<Value>, ApiError> {
    let wait = state.options.body_timeout;
    let bytes = match tokio::time::timeout(wait, to_bytes(body, limit)).await {
        Ok(read) => read.map_err(|_| ApiError::too_large(limit))?,
        Err(_) => {
            log::warn!(
                "cut off a slow client: its request body did not arrive within {} s (setting http_body_timeout_secs)",
                wait.as_secs_f64()
            );
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within {} s", wait.as_secs_f64()),
            ));
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))
}

pub(crate) async fn submit(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let Some(body @ Value::Object(_)) = read_json(&state, body).await? else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object describing the execution (see examples/)",
            None,
        ));
    };
    let (id, spec) = split_batch_item((0, body)).map_err(|e| ApiError::bad_request(e.detail, e.path))?;
    let submitted = blocking(&state, move |s| s.submit(id, spec)).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/executions/{}", submitted.id);
    Ok((status, [(header::LOCATION, location)], Json(submitted.execution)).into_response())
}

/// `POST /v1/executions:batch`: a JSON array of task bodies. Every item is
/// checked first (any bad one: 400 listing each by index, nothing
/// submitted); then all are durable together before the answer, which has
/// one result per item in order: `{"index", "id", "status": 201|200}` or
/// `{"index", "status", "error", "detail"}` (an id taken by another body: 409).
pub(crate) async fn submit_batch(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let max_items = state.options.max_batch_items;
    let Some(Value::Array(raw)) = read_json_within(&state, body, state.options.max_batch_bytes).await? else {
        return Err(ApiError::bad_request(
            "the body must be a JSON array of task bodies (each as for POST /v1/executions)",
            None,
        ));
    };
    if raw.is_empty() || raw.len() > max_items {
        return Err(ApiError::bad_request(
            format!(
                "a batch holds 1 to {max_items} items (setting max_batch_items), this one {}",
                raw.len()
            ),
            None,
        ));
    }
    let results = blocking(&state, move |s| s.submit_batch(raw)).await?;
    let mut created = 0usize;
    let answers: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(index, r)| match r {
            Ok(a) => {
                created += usize::from(a.created);
                json!({ "index": index, "id": a.id, "status": if a.created { 201 } else { 200 } })
            }
            Err(e) => {
                let e = ApiError::from(e);
                json!({ "index": index, "status": e.status().as_u16(), "error": e.kind(), "detail": e.detail() })
            }
        })
        .collect();
    Ok(Json(json!({ "items": answers, "created": created })).into_response())
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(unknown) = q.keys().find(|k| !matches!(k.as_str(), "limit" | "phase" | "after")) {
        return Err(ApiError::bad_request(
            format!("unknown query parameter `{unknown}`: use limit, phase, after"),
            Some(unknown.clone()),
        ));
    }
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
    const DEFAULT_REASON: &str = "aborted by the API";
    let reason = match read_json(&state, body).await? {
        None => DEFAULT_REASON.to_string(),
        Some(Value::Object(mut fields)) => {
            let reason = match fields.remove("reason") {
                None | Some(Value::Null) => DEFAULT_REASON.to_string(),
                Some(Value::String(r)) => r,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "`reason` must be a string",
                        Some("reason".into()),
                    ))
                }
            };
            if let Some(unknown) = fields.keys().next() {
                return Err(ApiError::bad_request(
                    format!("unknown field `{unknown}`: an abort body has only `reason`"),
                    Some(unknown.clone()),
                ));
            }
            reason
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "an abort body must be a JSON object like {\"reason\": \"...\"}, or empty",
                None,
            ))
        }
    };
    Ok(Json(blocking(&state, move |s| s.abort(&id, &reason)).await?))
}

pub(crate) async fn plugins(State(state): State<AppState>) -> Json<Value> {
    Json(state.service.plugins())
}

pub(crate) async fn health(State(state): State<AppState>) -> Response {
    match state.service.health() {
        Health::Ok => Json(json!({ "status": "ok" })).into_response(),
        Health::Degraded { reason, detail, since } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "degraded", "reason": reason, "detail": detail, "since": since })),
        )
            .into_response(),
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
