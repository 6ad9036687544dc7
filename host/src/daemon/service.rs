//! The API's [`ExecutionService`] over the engine: JSON in, JSON out.

use std::sync::Arc;

use serde_json::Value;

use crate::loader::PluginInfo;
use crate::metrics::Metrics;
use kozmo_api::types::{
    Event, Execution, ExecutionErrorBody, FileChunk, FileList, HandlerErrorBody, NodeBody, NodePlugin, PluginBody,
    PruneReport, QuotaBody, WaitBody,
};
use kozmo_api::{
    split_batch_item, BatchAccepted, ExecutionService, Health, ItemError, ServiceError, SubmitFuture, Submitted,
};
use kozmo_engine::model::{check_execution_id, rfc3339_ms, EventRecord, ExecPhase, ExecutionSpec, ExecutionView};
use kozmo_engine::store::{NodeInfo, NodeRow, StoreErrorKind};
use kozmo_engine::{EngineError, EngineHandle, SubmitOutcome};

use super::prometheus::EngineCollector;
pub use kozmo_engine::spec_parse::{parse_spec, SpecError};

/// The daemon's service: the engine, the loaded plugins, the metrics.
pub struct DaemonService {
    pub(super) engine: EngineHandle,
    plugins: Vec<PluginInfo>,
    metrics: Metrics,
    /// Retention, once started (`POST /v1/prune`).
    pub(super) retention: std::sync::OnceLock<std::sync::Arc<kozmo_engine::retention::pruner::Retention>>,
    /// Ids of the plugins whose library runs in a child process.
    isolated: Vec<String>,
    /// This daemon as a node: its id, what it tells others, when it started
    /// (`GET /v1/nodes` on a store of one daemon).
    pub(super) node: std::sync::OnceLock<(String, NodeInfo, i64)>,
    /// Changes after each commit of the engine: wakes the watches.
    commits: tokio::sync::watch::Receiver<u64>,
}

impl DaemonService {
    /// The service over `engine`; its statistics join `metrics`' registry.
    pub fn new(engine: EngineHandle, plugins: Vec<PluginInfo>, metrics: Metrics) -> Self {
        metrics.register_collector(Box::new(EngineCollector::new(engine.clone())));
        let (tx, commits) = tokio::sync::watch::channel(0u64);
        // On the committing thread: a counter bump, no allocation, no wait.
        if !engine.on_commit(Box::new(move || tx.send_modify(|n| *n = n.wrapping_add(1)))) {
            log::debug!("the engine has a commit listener already: watches poll");
        }
        DaemonService {
            engine,
            plugins,
            metrics,
            retention: std::sync::OnceLock::new(),
            isolated: Vec::new(),
            node: std::sync::OnceLock::new(),
            commits,
        }
    }

    /// Marks the plugins `isolation` runs in a child process (a library is
    /// isolated whole: when it names any plugin of the file).
    pub fn with_isolation(mut self, isolation: &crate::isolation::IsolationConfig) -> Self {
        let ps = &self.plugins;
        self.isolated = ps
            .iter()
            .filter(|p| isolation.covers_all() || ps.iter().any(|q| q.file == p.file && isolation.covers(&q.id)))
            .map(|p| p.id.clone())
            .collect();
        self
    }
}

fn node_body(row: NodeRow, this: Option<&str>) -> NodeBody {
    #[derive(serde::Deserialize)]
    struct P {
        id: String,
        #[serde(default)]
        task_types: Vec<String>,
    }
    let plugins: Vec<P> = serde_json::from_str(&row.info.plugins_json).unwrap_or_default();
    NodeBody {
        this_node: this == Some(row.node_id.as_str()),
        node_id: row.node_id,
        alive: row.alive,
        started_at: rfc3339_ms(row.started_at_ms),
        last_heartbeat: rfc3339_ms(row.heartbeat_at_ms),
        lease_until: rfc3339_ms(row.lease_until_ms),
        executions: row.executions,
        plugins: plugins
            .into_iter()
            .map(|p| NodePlugin {
                id: p.id,
                task_types: p.task_types,
            })
            .collect(),
        version: row.info.version,
        address: row.info.address,
    }
}

pub(super) fn service_error(e: EngineError) -> ServiceError {
    match e {
        EngineError::NotFound => ServiceError::NotFound("no such execution".into()),
        EngineError::Conflict(m) => ServiceError::Conflict(m),
        EngineError::NoPlugin(m) => ServiceError::Unprocessable(m),
        EngineError::Invalid(m) => ServiceError::BadRequest { detail: m, path: None },
        EngineError::Store(m) => match StoreErrorKind::of_message(&m) {
            StoreErrorKind::Full => ServiceError::StorageFull(format!(
                "the store's disk is full ({m}); nothing of this request was written: free space in the data \
                 directory and retry (executions already accepted are kept)"
            )),
            StoreErrorKind::ReadOnly => ServiceError::StorageReadOnly(format!(
                "the store is read-only ({m}); nothing of this request was written: make the data directory \
                 writable and retry"
            )),
            StoreErrorKind::Other => ServiceError::Internal(m),
        },
        EngineError::ShuttingDown => ServiceError::Unavailable("the daemon is shutting down".into()),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The API's view of an execution.
fn execution(v: ExecutionView) -> Execution {
    Execution {
        id: v.id,
        phase: v.phase.as_str().to_string(),
        task_type: v.task_type,
        attempt: v.attempt,
        system_failures: v.system_failures,
        generated_name: v.generated_name,
        plugin_phase: v.plugin_phase,
        plugin_phase_version: v.plugin_phase_version,
        error: v.error.map(|e| ExecutionErrorBody {
            code: e.code,
            message: e.message,
            kind: e.kind.to_string(),
        }),
        last_handler_error: v.last_handler_error.map(|h| HandlerErrorBody {
            message: h.message,
            panic: h.panic,
            attempt: h.attempt,
            at: h.at,
        }),
        consecutive_handler_errors: v.consecutive_handler_errors,
        abort_requested: v.abort_requested,
        plugin_id: v.plugin_id,
        waiting: v.waiting,
        created_at: v.created_at,
        updated_at: v.updated_at,
        attempt_started_at: v.attempt_started_at,
    }
}

/// The API's view of an event.
fn event(e: EventRecord) -> Event {
    Event {
        seq: e.seq,
        execution_id: e.execution_id,
        kind: e.event.kind,
        attempt: e.event.attempt,
        phase: e.event.phase,
        version: e.event.version,
        occurred_at_ms: e.event.occurred_at_ms,
        reported_at_ms: e.event.reported_at_ms,
        body: e.event.body,
    }
}

fn parse_phase(p: &str) -> Result<ExecPhase, ServiceError> {
    p.parse().map_err(|_| {
        let known: Vec<&str> = ExecPhase::ALL.iter().map(|p| p.as_str()).collect();
        ServiceError::BadRequest {
            detail: format!("unknown phase {p:?}: use one of {}", known.join(", ")),
            path: Some("phase".into()),
        }
    })
}

/// A submission's id and body, checked: what the engine takes.
fn checked_submission(id: Option<String>, spec: Value) -> Result<(Option<String>, ExecutionSpec), ServiceError> {
    if let Some(id) = &id {
        check_execution_id(id).map_err(|detail| ServiceError::BadRequest {
            detail,
            path: Some("execution_id".into()),
        })?;
    }
    Ok((id, parse_spec(spec).map_err(bad_spec)?))
}

/// The API's answer to a submission.
fn submitted(outcome: SubmitOutcome, view: ExecutionView) -> Submitted {
    let (id, created) = match outcome {
        SubmitOutcome::Created(id) => (id, true),
        SubmitOutcome::Existing(id) => (id, false),
    };
    Submitted {
        id,
        created,
        execution: execution(view),
    }
}

impl ExecutionService for DaemonService {
    fn submit(&self, id: Option<String>, spec: Value) -> Result<Submitted, ServiceError> {
        let (id, spec) = checked_submission(id, spec)?;
        let (outcome, view) = self.engine.submit_viewed(id, spec).map_err(service_error)?;
        Ok(submitted(outcome, view))
    }

    /// The body is read here (cheap), the insert awaited: the committer's
    /// answer wakes this task, no thread waits for it. Only an existing
    /// execution's view is read from the store, on a blocking thread.
    fn submit_async(self: Arc<Self>, id: Option<String>, spec: Value) -> SubmitFuture {
        Box::pin(async move {
            let (id, spec) = checked_submission(id, spec)?;
            let (outcome, view) = self.engine.submit_async(id, spec).await.map_err(service_error)?;
            let view = match (view, &outcome) {
                (Some(view), _) => view,
                (None, SubmitOutcome::Created(id) | SubmitOutcome::Existing(id)) => {
                    let (engine, id) = (self.engine.clone(), id.clone());
                    tokio::task::spawn_blocking(move || engine.get(&id))
                        .await
                        .map_err(|e| ServiceError::Internal(format!("request handler failed: {e}")))?
                        .map_err(service_error)?
                }
            };
            Ok(submitted(outcome, view))
        })
    }

    fn submit_batch(&self, items: Vec<Value>) -> Result<Vec<Result<BatchAccepted, ServiceError>>, ServiceError> {
        let mut specs = Vec::with_capacity(items.len());
        let mut bad = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let (id, body) = match split_batch_item((index, item)) {
                Ok(split) => split,
                Err(e) => {
                    bad.push(e);
                    continue;
                }
            };
            if let Some(Err(detail)) = id.as_deref().map(check_execution_id) {
                bad.push(ItemError {
                    index,
                    path: Some("execution_id".into()),
                    detail,
                });
                continue;
            }
            match parse_spec(body) {
                Ok(spec) => specs.push((id, spec)),
                Err(SpecError { detail, path }) => bad.push(ItemError {
                    index,
                    path: Some(path),
                    detail,
                }),
            }
        }
        if !bad.is_empty() {
            return Err(ServiceError::BadItems(bad));
        }
        let results = self.engine.submit_batch(specs);
        // A store failure fails the whole batch (nothing of it was written).
        if let Some(Err(e @ (EngineError::Store(_) | EngineError::ShuttingDown))) = results
            .iter()
            .find(|r| matches!(r, Err(EngineError::Store(_) | EngineError::ShuttingDown)))
        {
            return Err(service_error(e.clone()));
        }
        Ok(results
            .into_iter()
            .map(|r| match r.map_err(service_error)? {
                SubmitOutcome::Created(id) => Ok(BatchAccepted { id, created: true }),
                SubmitOutcome::Existing(id) => Ok(BatchAccepted { id, created: false }),
            })
            .collect())
    }

    fn get(&self, id: &str) -> Result<Execution, ServiceError> {
        self.engine.get(id).map(execution).map_err(service_error)
    }

    fn list(&self, phase: Option<&str>, limit: usize, after: Option<&str>) -> Result<Vec<Execution>, ServiceError> {
        let phase = phase.map(parse_phase).transpose()?;
        let views = self
            .engine
            .list(phase, limit, after.map(str::to_string))
            .map_err(service_error)?;
        Ok(views.into_iter().map(execution).collect())
    }

    fn events(&self, id: &str) -> Result<Vec<Event>, ServiceError> {
        let events = self.engine.events(id).map_err(service_error)?;
        Ok(events.into_iter().map(event).collect())
    }

    fn events_after(&self, id: Option<&str>, after_seq: i64, limit: usize) -> Result<Vec<Event>, ServiceError> {
        let events = self.engine.events_after(id, after_seq, limit).map_err(service_error)?;
        Ok(events.into_iter().map(event).collect())
    }

    fn last_event_seq(&self) -> Result<i64, ServiceError> {
        self.engine.last_event_seq().map_err(service_error)
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.commits.clone())
    }

    fn outputs(&self, id: &str) -> Result<Value, ServiceError> {
        self.engine.outputs(id).map(|o| json(&o)).map_err(service_error)
    }

    fn abort(&self, id: &str, reason: &str) -> Result<Execution, ServiceError> {
        self.engine.abort(id, reason).map(execution).map_err(service_error)
    }

    fn plugins(&self) -> Vec<PluginBody> {
        self.plugins
            .iter()
            .map(|p| PluginBody {
                id: p.id.clone(),
                task_types: p.task_types.clone(),
                is_default: p.is_default,
                file: p.file.display().to_string(),
                interface_version: p.interface_version.clone(),
                abi: p.abi.to_string(),
                isolated: self.isolated.contains(&p.id),
            })
            .collect()
    }

    fn nodes(&self) -> Result<Vec<NodeBody>, ServiceError> {
        if let Some(rows) = self.engine.nodes().map_err(service_error)? {
            let me = self.engine.node_id();
            return Ok(rows.into_iter().map(|r| node_body(r, me.as_deref())).collect());
        }
        // A store of one daemon: this one, always alive.
        let Some((id, info, started)) = self.node.get() else {
            return Ok(Vec::new());
        };
        let now = kozmo_engine::model::now_ms();
        let active = self.engine.stats().active;
        Ok(vec![node_body(
            NodeRow {
                node_id: id.clone(),
                started_at_ms: *started,
                heartbeat_at_ms: now,
                lease_until_ms: now,
                alive: true,
                executions: active as u64,
                info: info.clone(),
            },
            Some(id),
        )])
    }

    fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    fn health(&self) -> Health {
        match self.engine.store_degraded() {
            None => Health::Ok,
            Some(d) => Health::Degraded {
                reason: format!("storage_{}", d.kind),
                detail: format!(
                    "store writes fail since {}: {}; submissions and step commits are refused or retried until \
                     a write succeeds",
                    rfc3339_ms(d.since_ms),
                    d.detail
                ),
                since: rfc3339_ms(d.since_ms),
            },
        }
    }

    fn prune(&self, older_than: Option<&str>, dry_run: bool) -> Result<PruneReport, ServiceError> {
        self.prune_now(older_than, dry_run)
    }

    fn wait_info(&self, id: &str) -> Result<WaitBody, ServiceError> {
        self.wait_info_now(id)
    }

    fn quotas(&self) -> Vec<QuotaBody> {
        self.quotas_now()
    }

    fn files(&self, id: &str) -> Result<FileList, ServiceError> {
        self.files_now(id)
    }

    fn read_file(&self, id: &str, path: &str, offset: u64, limit: usize) -> Result<FileChunk, ServiceError> {
        self.read_file_now(id, path, offset, limit)
    }
}

/// A refused task body is a 400 naming the bad field.
fn bad_spec(e: SpecError) -> ServiceError {
    ServiceError::BadRequest {
        detail: e.detail,
        path: Some(e.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_lists_the_engine_phases() {
        let engine: Vec<&str> = ExecPhase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(engine, kozmo_api::types::PHASES);
    }
}
