//! What the HTTP API needs from the engine, in the API's own types
//! ([`super::types`]), so the API layer knows nothing of the engine's types
//! (and the engine nothing of HTTP). Task bodies come in as JSON: reading
//! them strictly is the service's job.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use super::types::{Event, Execution, FileChunk, FileList, NodeBody, PluginBody, PruneReport, QuotaBody, WaitBody};

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
    /// 507: the store's disk is full; nothing of the request was written.
    StorageFull(String),
    /// 503 with `Retry-After`: the store is read-only right now.
    StorageReadOnly(String),
    /// 500: anything else (store errors).
    Internal(String),
    /// 400 for a batch: every bad item (nothing of the batch was submitted).
    BadItems(Vec<ItemError>),
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The execution's id.
    pub id: String,
    /// `false` when the same id and body were submitted before.
    pub created: bool,
    /// The execution as `get` shows it.
    pub execution: Execution,
}

/// One item's answer in a batch submission.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchAccepted {
    /// The execution's id.
    pub id: String,
    /// `false` when the same id and body were submitted before.
    pub created: bool,
}

/// A bad item of a batch: its index, the JSON path inside it, what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemError {
    /// Index in the request's array.
    pub index: usize,
    /// JSON path of the bad field inside the item, if known.
    pub path: Option<String>,
    /// What is wrong.
    pub detail: String,
}

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Serving.
    Ok,
    /// Up, but some requests fail: `reason` is a short kind
    /// (`storage_full`), `detail` says what and what to do.
    Degraded {
        /// Short kind of the problem.
        reason: String,
        /// What is wrong and what to do.
        detail: String,
        /// Since when (RFC 3339).
        since: String,
    },
}

/// A submission on its way ([`ExecutionService::submit_async`]).
pub type SubmitFuture = Pin<Box<dyn Future<Output = Result<Submitted, ServiceError>> + Send + 'static>>;

/// The operations behind `/v1`. Implementations may block (the API calls
/// them on blocking threads), except [`Self::submit_async`], which the
/// API awaits on its async workers.
pub trait ExecutionService: Send + Sync + 'static {
    /// Accepts an execution; durable before it returns.
    fn submit(&self, id: Option<String>, spec: Value) -> Result<Submitted, ServiceError>;
    /// Accepts an execution as [`Self::submit`] does, as a future that
    /// resolves once it is durable: what `POST /v1/executions` awaits. It
    /// must not block; a service whose submissions can be awaited without
    /// a thread waiting for each (the daemon's) overrides it. The default
    /// runs [`Self::submit`] on a blocking thread.
    fn submit_async(self: Arc<Self>, id: Option<String>, spec: Value) -> SubmitFuture {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.submit(id, spec))
                .await
                .map_err(|e| ServiceError::Internal(format!("request handler failed: {e}")))?
        })
    }
    /// Accepts many executions, each a task body as for [`Self::submit`]
    /// (with its own optional `execution_id`): every item is checked first
    /// (any bad item: [`ServiceError::BadItems`] listing all of them, and
    /// nothing is submitted), then all are made durable together before it
    /// returns; one result per item, in order (an id taken by another body
    /// is that item's `Conflict`).
    fn submit_batch(&self, items: Vec<Value>) -> Result<Vec<Result<BatchAccepted, ServiceError>>, ServiceError> {
        let (items, bad): (Vec<_>, Vec<_>) = items
            .into_iter()
            .enumerate()
            .map(split_batch_item)
            .partition(Result::is_ok);
        if !bad.is_empty() {
            return Err(ServiceError::BadItems(
                bad.into_iter().filter_map(Result::err).collect(),
            ));
        }
        Ok(items
            .into_iter()
            .filter_map(Result::ok)
            .map(|(id, spec)| {
                self.submit(id, spec).map(|s| BatchAccepted {
                    id: s.id,
                    created: s.created,
                })
            })
            .collect())
    }
    /// One execution's status.
    fn get(&self, id: &str) -> Result<Execution, ServiceError>;
    /// A page of executions, oldest first, after the id `after`.
    fn list(&self, phase: Option<&str>, limit: usize, after: Option<&str>) -> Result<Vec<Execution>, ServiceError>;
    /// An execution's events, in order.
    fn events(&self, id: &str) -> Result<Vec<Event>, ServiceError>;
    /// The events with `seq` after `after_seq`, in order, at most `limit`:
    /// of execution `id`, or of every execution (`None`). The watch
    /// endpoints read them from the store, so a watch sees what any daemon
    /// sharing it wrote. Default: [`Self::events`] filtered for one
    /// execution; every execution's are unavailable.
    fn events_after(&self, id: Option<&str>, after_seq: i64, limit: usize) -> Result<Vec<Event>, ServiceError> {
        match id {
            Some(id) => Ok(self
                .events(id)?
                .into_iter()
                .filter(|e| e.seq > after_seq)
                .take(limit)
                .collect()),
            None => Err(ServiceError::Unavailable(
                "this service cannot watch every execution".into(),
            )),
        }
    }
    /// The greatest event `seq` stored (0: none): where a watch of every
    /// execution starts. Default: unavailable.
    fn last_event_seq(&self) -> Result<i64, ServiceError> {
        Err(ServiceError::Unavailable(
            "this service cannot watch every execution".into(),
        ))
    }
    /// A wake-up for watchers: its value changes after each commit this
    /// process made, so a watch reads the store at once instead of at its
    /// next poll. Default: none (watches poll).
    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// An execution's outputs (`null` until it succeeded).
    fn outputs(&self, id: &str) -> Result<Value, ServiceError>;
    /// Aborts an execution; returns its status.
    fn abort(&self, id: &str, reason: &str) -> Result<Execution, ServiceError>;
    /// The loaded plugins.
    fn plugins(&self) -> Vec<PluginBody>;
    /// The daemons sharing the store. Default: none known.
    fn nodes(&self) -> Result<Vec<NodeBody>, ServiceError> {
        Ok(Vec::new())
    }
    /// Prometheus text exposition of every metric.
    fn metrics_text(&self) -> String;
    /// Whether the daemon can serve, and if not why.
    fn health(&self) -> Health;
    /// Runs a retention pass now (`older_than`: a duration such as `7d`
    /// replacing the configured keep times); returns what it removed, or
    /// with `dry_run` what it would remove.
    fn prune(&self, _older_than: Option<&str>, _dry_run: bool) -> Result<PruneReport, ServiceError> {
        Err(ServiceError::Unavailable("this service does not prune".into()))
    }
    /// Why an execution is not progressing right now. Default: what its
    /// status says ([`Execution::waiting`]).
    fn wait_info(&self, id: &str) -> Result<WaitBody, ServiceError> {
        let e = self.get(id)?;
        let finished = matches!(e.phase.as_str(), "Succeeded" | "Failed" | "Aborted");
        let kind = match (&e.waiting, finished) {
            (_, true) => "finished",
            (Some(_), _) => "plugin_call",
            (None, _) if e.phase == "Queued" => "queued",
            (None, _) => "running",
        };
        Ok(WaitBody {
            id: e.id,
            phase: e.phase,
            waiting: !matches!(kind, "finished" | "running"),
            kind: kind.into(),
            reason: e.waiting,
            resources: Vec::new(),
        })
    }
    /// Every resource namespace, its quota, holders and waiters. Default:
    /// none.
    fn quotas(&self) -> Vec<QuotaBody> {
        Vec::new()
    }
    /// The files an execution's plugin wrote in the data store (under the
    /// execution's own directories only). Default: none.
    fn files(&self, id: &str) -> Result<FileList, ServiceError> {
        self.get(id)?;
        Ok(FileList {
            items: Vec::new(),
            truncated: false,
        })
    }
    /// At most `limit` bytes from `offset` of one of [`Self::files`]
    /// (`path` as listed there); anything else is `NotFound`.
    fn read_file(&self, id: &str, path: &str, _offset: u64, _limit: usize) -> Result<FileChunk, ServiceError> {
        self.get(id)?;
        Err(ServiceError::NotFound(format!("execution {id} has no file {path:?}")))
    }
}

/// The execution id no execution may have: `/v1/executions/watch` is the
/// watch of every execution, not an execution.
pub const RESERVED_ID: &str = "watch";

/// One item of a batch: its `execution_id` (taken out) and the rest of the
/// task body; an item that is not an object or has a non-string id is an
/// [`ItemError`] at its index.
pub fn split_batch_item((index, item): (usize, Value)) -> Result<(Option<String>, Value), ItemError> {
    let Value::Object(mut spec) = item else {
        return Err(ItemError {
            index,
            path: None,
            detail: "an item must be a JSON object describing the execution".into(),
        });
    };
    match spec.remove("execution_id") {
        None | Some(Value::Null) => Ok((None, Value::Object(spec))),
        Some(Value::String(id)) if id == RESERVED_ID => Err(ItemError {
            index,
            path: Some("execution_id".into()),
            detail: format!(
                "the id `{RESERVED_ID}` is reserved: GET /v1/executions/{RESERVED_ID} is the watch of every execution"
            ),
        }),
        Some(Value::String(id)) => Ok((Some(id), Value::Object(spec))),
        Some(_) => Err(ItemError {
            index,
            path: Some("execution_id".into()),
            detail: "`execution_id` must be a string".into(),
        }),
    }
}
