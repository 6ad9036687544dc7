//! `POST /v1/prune`: a retention pass now. Body (optional): `{"older_than":
//! "7d", "dry_run": true}`; answers what was (or would be) removed.

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::handlers::{blocking, read_json};
use super::AppState;

pub(crate) async fn prune(State(state): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let (older_than, dry_run) = match read_json(&state, body).await? {
        None => (None, false),
        Some(Value::Object(m)) => {
            let older_than = match m.get("older_than") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "`older_than` must be a duration string such as \"7d\" or \"12h\"",
                        Some("older_than".into()),
                    ))
                }
            };
            let dry_run = match m.get("dry_run") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "`dry_run` must be true or false",
                        Some("dry_run".into()),
                    ))
                }
            };
            if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "older_than" | "dry_run")) {
                return Err(ApiError::bad_request(
                    format!("unknown field `{k}`: the body takes `older_than` and `dry_run`"),
                    Some(k.clone()),
                ));
            }
            (older_than, dry_run)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "the body must be a JSON object: {\"older_than\": \"7d\", \"dry_run\": true}",
                None,
            ))
        }
    };
    Ok(Json(
        blocking(&state, move |s| s.prune(older_than.as_deref(), dry_run)).await?,
    ))
}
