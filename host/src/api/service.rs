//! What the HTTP API needs from the engine, as JSON in and out, so the API
//! layer knows nothing of the engine's types (and the engine nothing of HTTP).

use serde_json::Value;

/// Why a request failed; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceError {
    /// 400: the request is malformed; `path` is the JSON path of the bad field.
    BadRequest {
        /// What is wrong.
        detail: String,
        /// JSON path of the bad field (`inputs.n`), if known.
        path: Option<String>,
    },
    /// 404: no such execution.
    NotFound(String),
    /// 409: the id exists with a different body.
    Conflict(String),
    /// 422: well-formed but cannot run (no plugin for the task type).
    Unprocessable(String),
    /// 503: shutting down.
    Unavailable(String),
    /// 500: anything else (store errors).
    Internal(String),
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The execution's id.
    pub id: String,
    /// `false` when the same id and body were submitted before.
    pub created: bool,
    /// The execution as `get` shows it.
    pub execution: Value,
}

/// The operations behind `/v1`. Implementations may block (the API calls
/// them on blocking threads).
pub trait ExecutionService: Send + Sync + 'static {
    /// Accepts an execution; durable before it returns.
    fn submit(&self, id: Option<String>, spec: Value) -> Result<Submitted, ServiceError>;
    /// One execution's status.
    fn get(&self, id: &str) -> Result<Value, ServiceError>;
    /// A page of executions, oldest first, after the id `after`.
    fn list(&self, phase: Option<&str>, limit: usize, after: Option<&str>) -> Result<Vec<Value>, ServiceError>;
    /// An execution's events, in order.
    fn events(&self, id: &str) -> Result<Vec<Value>, ServiceError>;
    /// An execution's outputs (`null` until it succeeded).
    fn outputs(&self, id: &str) -> Result<Value, ServiceError>;
    /// Aborts an execution; returns its status.
    fn abort(&self, id: &str, reason: &str) -> Result<Value, ServiceError>;
    /// The loaded plugins.
    fn plugins(&self) -> Value;
    /// Prometheus text exposition of every metric.
    fn metrics_text(&self) -> String;
    /// `Ok` while the daemon can serve.
    fn health(&self) -> Result<(), String>;
    /// Runs a retention pass now (`older_than`: a duration such as `7d`
    /// replacing the configured keep times); returns what it removed, or
    /// with `dry_run` what it would remove.
    fn prune(&self, _older_than: Option<&str>, _dry_run: bool) -> Result<Value, ServiceError> {
        Err(ServiceError::Unavailable("this service does not prune".into()))
    }
}
