//! Route handlers: typed extractors, the service on a blocking thread (a
//! single submission: awaited), typed answers. Each carries its OpenAPI description (see `openapi.rs`).

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::service::{split_batch_item, ExecutionService, Health, ServiceError};
use super::types::{
    AbortRequest, BatchItemResult, BatchResponse, ErrorBody, EventList, Execution, ExecutionPage, HealthBody,
    ListQuery, NodeBody, Outputs, PluginBody, TaskBody,
};
use super::AppState;

/// Largest page `GET /v1/executions` returns.
const MAX_PAGE: u32 = 1000;

/// Default page size.
const DEFAULT_PAGE: u32 = 100;

/// The reason of an abort that gives none.
const DEFAULT_ABORT_REASON: &str = "aborted by the API";

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
    read_json_within(state, body, state.options.max_body_bytes).await
}

/// Reads a JSON body of at most `limit` bytes within the body deadline;
/// `None` for an empty body (zero bytes: a body of only whitespace is not
/// JSON and is refused like any other malformed body).
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
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))
}

/// An optional JSON object body of type `T`: empty or `null` is
/// `T::default()`; anything else must be an object `T` accepts (unknown
/// fields refused), else a 400 naming the path of the bad field. `what`
/// names the body, `shape` says what it takes.
pub(super) async fn read_optional_object<T: serde::de::DeserializeOwned + Default>(
    state: &AppState,
    body: Body,
    what: &str,
    shape: &str,
) -> Result<T, ApiError> {
    match read_json(state, body).await? {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v @ Value::Object(_)) => serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!(" at `{path}`")
            };
            ApiError::bad_request(
                format!("invalid {what} body{at}: {} ({shape})", e.inner()),
                (path != ".").then_some(path),
            )
        }),
        Some(_) => Err(ApiError::bad_request(
            format!("the {what} body must be a JSON object, or empty ({shape})"),
            None,
        )),
    }
}

/// Submit one execution.
#[utoipa::path(post, path = "/v1/executions", tag = "executions",
    request_body(content = TaskBody, description = "a task body (see examples/)"),
    responses(
        (status = 201, description = "created", body = Execution),
        (status = 200, description = "the same id and body were submitted before", body = Execution),
        (status = 400, description = "malformed (`path` names the field)", body = ErrorBody),
        (status = 409, description = "the id exists with another body", body = ErrorBody),
        (status = 413, description = "over max_body_bytes", body = ErrorBody),
        (status = 422, description = "no plugin for the task type", body = ErrorBody),
        (status = 503, description = "shutting down or the store is read-only", body = ErrorBody),
        (status = 507, description = "the store's disk is full", body = ErrorBody),
    ))]
pub(crate) async fn submit(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let Some(body @ Value::Object(_)) = read_json(&state, body).await? else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object describing the execution (see examples/)",
            None,
        ));
    };
    let (id, spec) = split_batch_item((0, body)).map_err(|e| ApiError::bad_request(e.detail, e.path))?;
    // Awaited, not on a blocking thread: many concurrent submissions wait
    // for the same commit without a thread each.
    let submitted = state.service.clone().submit_async(id, spec).await?;
    let status = if submitted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/executions/{}", submitted.id);
    Ok((status, [(header::LOCATION, location)], Json(submitted.execution)).into_response())
}

/// Submit many executions, durable together.
///
/// Every item is checked first (any bad one: 400 listing each by index,
/// nothing submitted); then all are durable in one commit before the
/// answer, one result per item in order (an id taken by another body: 409
/// for that item only).
#[utoipa::path(post, path = "/v1/executions:batch", tag = "executions",
    request_body(content = Vec<TaskBody>, description = "1 to max_batch_items task bodies"),
    responses(
        (status = 200, description = "one result per item", body = BatchResponse),
        (status = 400, description = "bad items (`errors` lists them) or a bad batch", body = ErrorBody),
        (status = 413, description = "over max_batch_bytes", body = ErrorBody),
        (status = 503, description = "shutting down or the store is read-only", body = ErrorBody),
        (status = 507, description = "the store's disk is full", body = ErrorBody),
    ))]
pub(crate) async fn submit_batch(State(state): State<AppState>, body: Body) -> Result<Json<BatchResponse>, ApiError> {
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
    let items = results
        .into_iter()
        .enumerate()
        .map(|(index, r)| match r {
            Ok(a) => {
                created += usize::from(a.created);
                BatchItemResult {
                    index,
                    status: if a.created { 201 } else { 200 },
                    id: Some(a.id),
                    error: None,
                    detail: None,
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                BatchItemResult {
                    index,
                    status: e.status().as_u16(),
                    id: None,
                    error: Some(e.kind().to_string()),
                    detail: Some(e.detail().to_string()),
                }
            }
        })
        .collect();
    Ok(Json(BatchResponse { items, created }))
}

/// A page of executions, ordered by id.
#[utoipa::path(get, path = "/v1/executions", tag = "executions", params(ListQuery),
    responses(
        (status = 200, description = "a page; `next` is the `after` of the next one", body = ExecutionPage),
        (status = 400, description = "a bad parameter", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ExecutionPage>, ApiError> {
    let limit = match q.limit {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(
                format!("`limit` must be an integer from 1 to {MAX_PAGE}, got {n}"),
                Some("limit".into()),
            ))
        }
    } as usize;
    let phase = q.phase.map(|p| p.as_str());
    let items = blocking(&state, move |s| s.list(phase, limit, q.after.as_deref())).await?;
    let next = if items.len() == limit {
        items.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Json(ExecutionPage { items, next }))
}

/// One execution's status.
#[utoipa::path(get, path = "/v1/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "the execution's id")),
    responses(
        (status = 200, description = "its status", body = Execution),
        (status = 400, description = "a malformed id", body = ErrorBody),
        (status = 404, description = "no such execution", body = ErrorBody),
    ))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Execution>, ApiError> {
    Ok(Json(blocking(&state, move |s| s.get(&id)).await?))
}

/// An execution's events, in order.
#[utoipa::path(get, path = "/v1/executions/{id}/events", tag = "executions",
    params(("id" = String, Path, description = "the execution's id")),
    responses(
        (status = 200, description = "its events", body = EventList),
        (status = 400, description = "a malformed id", body = ErrorBody),
        (status = 404, description = "no such execution", body = ErrorBody),
    ))]
pub(crate) async fn events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<EventList>, ApiError> {
    let items = blocking(&state, move |s| s.events(&id)).await?;
    Ok(Json(EventList { items }))
}

/// The outputs of an execution's current attempt.
#[utoipa::path(get, path = "/v1/executions/{id}/outputs", tag = "executions",
    params(("id" = String, Path, description = "the execution's id")),
    responses(
        (status = 200, description = "its outputs (`null` until it succeeded)", body = Outputs),
        (status = 400, description = "a malformed id", body = ErrorBody),
        (status = 404, description = "no such execution", body = ErrorBody),
    ))]
pub(crate) async fn outputs(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Outputs>, ApiError> {
    let outputs = blocking(&state, move |s| s.outputs(&id)).await?;
    Ok(Json(Outputs { outputs }))
}

/// Abort an execution: its plugin's abort and finalize run, it ends Aborted.
#[utoipa::path(post, path = "/v1/executions/{id}/abort", tag = "executions",
    params(("id" = String, Path, description = "the execution's id")),
    request_body(content = Option<AbortRequest>, description = "optional: `{\"reason\": ...}`"),
    responses(
        (status = 200, description = "its status", body = Execution),
        (status = 400, description = "a malformed body or id", body = ErrorBody),
        (status = 404, description = "no such execution", body = ErrorBody),
    ))]
pub(crate) async fn abort(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Execution>, ApiError> {
    let request: AbortRequest = read_optional_object(
        &state,
        body,
        "abort",
        "an abort body has only `reason`, a string: {\"reason\": \"...\"}",
    )
    .await?;
    let reason = request.reason.unwrap_or_else(|| DEFAULT_ABORT_REASON.to_string());
    Ok(Json(blocking(&state, move |s| s.abort(&id, &reason)).await?))
}

/// The loaded plugins.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    responses((status = 200, description = "the loaded plugins", body = Vec<PluginBody>)))]
pub(crate) async fn plugins(State(state): State<AppState>) -> Json<Vec<PluginBody>> {
    Json(state.service.plugins())
}

/// The daemons sharing this daemon's store (only itself on SQLite).
#[utoipa::path(get, path = "/v1/nodes", tag = "operations",
    responses((status = 200, description = "every node, live or not", body = Vec<NodeBody>),
        (status = 503, description = "the store cannot be read", body = ErrorBody)))]
pub(crate) async fn nodes(State(state): State<AppState>) -> Result<Json<Vec<NodeBody>>, ApiError> {
    Ok(Json(blocking(&state, |s| s.nodes()).await?))
}

/// Whether the daemon can serve.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "serving", body = HealthBody),
        (status = 503, description = "degraded: `reason` says why", body = HealthBody),
    ))]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    match state.service.health() {
        Health::Ok => Json(HealthBody {
            status: "ok".into(),
            reason: None,
            detail: None,
            since: None,
        })
        .into_response(),
        Health::Degraded { reason, detail, since } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthBody {
                status: "degraded".into(),
                reason: Some(reason),
                detail: Some(detail),
                since: Some(since),
            }),
        )
            .into_response(),
    }
}

/// Every metric, in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
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

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = Object)))]
pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document_json(),
    )
        .into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; the API lives under /v1 (executions, plugins, quotas, openapi.json), plus /healthz, /metrics and the web console at /",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use std::io::{Read, Write};

    use serde_json::{json, Value};
    use tokio::sync::Notify;

    use crate::service::{ExecutionService, Health, ServiceError, SubmitFuture, Submitted};
    use crate::types::{Event, Execution, PluginBody};
    use crate::ApiOptions;

    /// Concurrent requests in the test.
    const CLIENTS: usize = 64;

    /// A service whose submissions can only be awaited: `submit` (the
    /// blocking path) panics, and `submit_async` answers only once all
    /// `CLIENTS` submissions are waiting at the same time, each with an
    /// answer made from its own id.
    struct Gate {
        waiting: Mutex<usize>,
        all_in: Notify,
    }

    fn execution(id: &str) -> Execution {
        Execution {
            id: id.into(),
            phase: "Queued".into(),
            task_type: "t".into(),
            attempt: 0,
            system_failures: 0,
            generated_name: format!("{id}-n0-0"),
            plugin_phase: "Undefined".into(),
            plugin_phase_version: 0,
            error: None,
            last_handler_error: None,
            consecutive_handler_errors: 0,
            abort_requested: None,
            plugin_id: None,
            waiting: None,
            created_at: "2026-12-01T00:00:00.000Z".into(),
            updated_at: "2026-12-01T00:00:00.000Z".into(),
            attempt_started_at: "2026-12-01T00:00:00.000Z".into(),
        }
    }

    impl ExecutionService for Gate {
        fn submit(&self, _: Option<String>, _: Value) -> Result<Submitted, ServiceError> {
            panic!("a single submission is awaited, never run on a blocking thread")
        }
        fn submit_async(self: Arc<Self>, id: Option<String>, _: Value) -> SubmitFuture {
            Box::pin(async move {
                let notified = self.all_in.notified();
                let all_in = {
                    let mut n = self.waiting.lock().unwrap();
                    *n += 1;
                    *n == CLIENTS
                };
                if all_in {
                    self.all_in.notify_waiters();
                } else {
                    notified.await;
                }
                let id = id.unwrap_or_default();
                let n: usize = id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                match n % 4 {
                    0 => Ok(Submitted {
                        id: id.clone(),
                        created: true,
                        execution: execution(&id),
                    }),
                    1 => Ok(Submitted {
                        id: id.clone(),
                        created: false,
                        execution: execution(&id),
                    }),
                    2 => Err(ServiceError::Conflict(format!(
                        "execution [{id}] exists with a different spec"
                    ))),
                    _ => Err(ServiceError::BadRequest {
                        detail: format!("bad {id}"),
                        path: Some("inputs.n".into()),
                    }),
                }
            })
        }
        fn get(&self, _: &str) -> Result<Execution, ServiceError> {
            Err(ServiceError::NotFound("no".into()))
        }
        fn list(&self, _: Option<&str>, _: usize, _: Option<&str>) -> Result<Vec<Execution>, ServiceError> {
            Ok(Vec::new())
        }
        fn events(&self, _: &str) -> Result<Vec<Event>, ServiceError> {
            Ok(Vec::new())
        }
        fn outputs(&self, _: &str) -> Result<Value, ServiceError> {
            Ok(Value::Null)
        }
        fn abort(&self, _: &str, _: &str) -> Result<Execution, ServiceError> {
            Err(ServiceError::NotFound("no".into()))
        }
        fn plugins(&self) -> Vec<PluginBody> {
            Vec::new()
        }
        fn metrics_text(&self) -> String {
            String::new()
        }
        fn health(&self) -> Health {
            Health::Ok
        }
    }

    /// One `POST /v1/executions` over a fresh connection (on the client's
    /// own thread): status and body.
    fn post(addr: std::net::SocketAddr, body: Value) -> (u16, Value) {
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    /// With one blocking thread in the whole runtime, 64 submissions that
    /// each wait for all the others can only complete if none holds a
    /// blocking thread; each client gets the answer to its own id.
    #[test]
    fn concurrent_single_submissions_are_awaited_each_getting_its_own_answer() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let service = Arc::new(Gate {
            waiting: Mutex::new(0),
            all_in: Notify::new(),
        });
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(crate::serve(listener, service, ApiOptions::default(), async {
            let _ = stopped.await;
        }));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| std::thread::spawn(move || post(addr, json!({"execution_id": format!("ex-{i}"), "type": "t"}))))
            .collect();
        for (i, client) in clients.into_iter().enumerate() {
            let (status, body) = client.join().unwrap();
            let id = format!("ex-{i}");
            match i % 4 {
                0 | 1 => {
                    assert_eq!(status, if i % 4 == 0 { 201 } else { 200 }, "{body}");
                    assert_eq!(body["id"], id);
                }
                2 => {
                    assert_eq!(status, 409, "{body}");
                    assert_eq!(body["error"], "conflict");
                    assert_eq!(body["detail"], format!("execution [{id}] exists with a different spec"));
                }
                _ => {
                    assert_eq!(status, 400, "{body}");
                    assert_eq!(body["detail"], format!("bad {id}"));
                    assert_eq!(body["path"], "inputs.n");
                }
            }
        }
        let _ = stop.send(());
        rt.block_on(server).unwrap().unwrap();
    }
}
