//! What an operator inspects beyond an execution's status (the console
//! uses these): why it waits, the resource namespaces, and the files its
//! plugin wrote in the data store (text, size-capped, only under the
//! execution's own directories: the service checks every path).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::handlers::blocking;
use super::types::{ErrorBody, FileList, FileQuery, QuotaList, WaitBody};
use super::AppState;

/// Most bytes `GET /v1/executions/{id}/file` returns at once.
pub const MAX_FILE_CHUNK: u32 = 1024 * 1024;

/// Longest `path` accepted.
const MAX_PATH_LEN: usize = 1024;

/// Why an execution is not progressing: what it waits for (a resource
/// token: namespace, tokens in use and quota, its place in line; a plugin
/// that is not loaded; a plugin call in progress).
#[utoipa::path(get, path = "/v1/executions/{id}/wait", tag = "executions",
    params(("id" = String, Path, description = "the execution's id")),
    responses(
        (status = 200, description = "what it waits for", body = WaitBody),
        (status = 400, description = "a malformed id", body = ErrorBody),
        (status = 404, description = "no such execution", body = ErrorBody),
    ))]
pub(crate) async fn wait(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<WaitBody>, ApiError> {
    Ok(Json(blocking(&state, move |s| s.wait_info(&id)).await?))
}

/// Every resource namespace: quota, tokens in use, holders and waiters.
#[utoipa::path(get, path = "/v1/quotas", tag = "resources",
    responses((status = 200, description = "every namespace", body = QuotaList)))]
pub(crate) async fn quotas(State(state): State<AppState>) -> Result<Json<QuotaList>, ApiError> {
    let items = blocking(&state, |s| Ok(s.quotas())).await?;
    Ok(Json(QuotaList { items }))
}

/// The files an execution's plugin wrote in the data store (its stdout,
/// stderr and other task logs).
#[utoipa::path(get, path = "/v1/executions/{id}/files", tag = "executions",
    params(("id" = String, Path, description = "the execution's id")),
    responses(
        (status = 200, description = "its files", body = FileList),
        (status = 400, description = "a malformed id", body = ErrorBody),
        (status = 404, description = "no such execution", body = ErrorBody),
    ))]
pub(crate) async fn files(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<FileList>, ApiError> {
    Ok(Json(blocking(&state, move |s| s.files(&id)).await?))
}

/// A part of one of an execution's files, as text: at most `limit` bytes
/// from `offset`; `X-File-Size` gives the file's size, `X-File-Offset`
/// where the part starts.
#[utoipa::path(get, path = "/v1/executions/{id}/file", tag = "executions",
    params(("id" = String, Path, description = "the execution's id"), FileQuery),
    responses(
        (status = 200, description = "the bytes", content_type = "text/plain", body = String,
            headers(("X-File-Size" = u64, description = "the file's size"),
                    ("X-File-Offset" = u64, description = "where the bytes start"))),
        (status = 400, description = "a malformed parameter", body = ErrorBody),
        (status = 404, description = "no such execution or file", body = ErrorBody),
    ))]
pub(crate) async fn file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit {
        None => MAX_FILE_CHUNK,
        Some(n) if (1..=MAX_FILE_CHUNK).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(
                format!("`limit` must be an integer from 1 to {MAX_FILE_CHUNK}, got {n}"),
                Some("limit".into()),
            ))
        }
    } as usize;
    if q.path.is_empty() || q.path.len() > MAX_PATH_LEN || q.path.contains('\0') {
        return Err(ApiError::bad_request(
            format!("`path` must be 1 to {MAX_PATH_LEN} bytes, as GET /v1/executions/{{id}}/files lists it"),
            Some("path".into()),
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let path = q.path;
    let chunk = blocking(&state, move |s| s.read_file(&id, &path, offset, limit)).await?;
    let mut response = (StatusCode::OK, chunk.data).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-file-size", HeaderValue::from(chunk.size));
    h.insert("x-file-offset", HeaderValue::from(chunk.offset));
    Ok(response)
}
