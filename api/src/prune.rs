//! `POST /v1/prune`: a retention pass now. Body (optional): `{"older_than":
//! "7d", "dry_run": true}`; answers what was (or would be) removed.

use axum::body::Body;
use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::handlers::{blocking, read_optional_object};
use super::types::{ErrorBody, PruneReport, PruneRequest};
use super::AppState;

/// Run a retention pass now and report what it removed.
#[utoipa::path(post, path = "/v1/prune", tag = "retention",
    request_body(content = Option<PruneRequest>, description = "optional: `{\"older_than\": \"7d\", \"dry_run\": true}`"),
    responses(
        (status = 200, description = "what was removed (or, dry, would be)", body = PruneReport),
        (status = 400, description = "a malformed body or duration", body = ErrorBody),
        (status = 503, description = "retention is not running yet", body = ErrorBody),
    ))]
pub(crate) async fn prune(State(state): State<AppState>, body: Body) -> Result<Json<PruneReport>, ApiError> {
    let request: PruneRequest = read_optional_object(
        &state,
        body,
        "prune",
        "it takes `older_than`, a duration string such as \"7d\", and `dry_run`, true or false",
    )
    .await?;
    let dry_run = request.dry_run.unwrap_or(false);
    Ok(Json(
        blocking(&state, move |s| s.prune(request.older_than.as_deref(), dry_run)).await?,
    ))
}
