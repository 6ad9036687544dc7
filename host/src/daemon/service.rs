//! The API's [`ExecutionService`] over the engine: JSON in, JSON out.

use serde_json::{Map, Value};

use crate::api::{ExecutionService, ServiceError, Submitted};
use crate::engine::{EngineError, EngineHandle, SubmitOutcome};
use crate::loader::PluginInfo;
use crate::metrics::Metrics;
use crate::model::{check_execution_id, ExecPhase, ExecutionSpec};

use super::prometheus::engine_metrics_text;

/// The daemon's service: the engine, the loaded plugins, the metrics.
pub struct DaemonService {
    engine: EngineHandle,
    plugins: Vec<PluginInfo>,
    metrics: Metrics,
    /// Retention, once started (`POST /v1/prune`).
    pub(super) retention: std::sync::OnceLock<std::sync::Arc<crate::retention::pruner::Retention>>,
}

impl DaemonService {
    /// Wraps a running engine.
    pub fn new(engine: EngineHandle, plugins: Vec<PluginInfo>, metrics: Metrics) -> Self {
        DaemonService {
            engine,
            plugins,
            metrics,
            retention: std::sync::OnceLock::new(),
        }
    }
}

fn service_error(e: EngineError) -> ServiceError {
    match e {
        EngineError::NotFound => ServiceError::NotFound("no such execution".into()),
        EngineError::Conflict(m) => ServiceError::Conflict(m),
        EngineError::NoPlugin(m) => ServiceError::Unprocessable(m),
        EngineError::Invalid(m) => ServiceError::BadRequest { detail: m, path: None },
        EngineError::Store(m) => ServiceError::Internal(m),
        EngineError::ShuttingDown => ServiceError::Unavailable("the daemon is shutting down".into()),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Reads a task body: either the nested form `{"template": {...}, "inputs":
/// {...}, "metadata": {...}}`, or the task-file form: the template's fields
/// at the top level (its `metadata` is the *task* metadata: retries,
/// timeout, ...), plus `inputs`, plus `execution` for the execution metadata
/// (project, domain, labels, ...).
pub fn parse_spec(body: Value) -> Result<ExecutionSpec, ServiceError> {
    let flat = matches!(&body, Value::Object(obj) if !obj.contains_key("template"));
    let body = match body {
        Value::Object(obj) if flat => {
            let mut template = obj;
            let mut spec = Map::new();
            for (from, to) in [("inputs", "inputs"), ("execution", "metadata")] {
                if let Some(v) = template.remove(from) {
                    spec.insert(to.to_string(), v);
                }
            }
            spec.insert("template".into(), Value::Object(template));
            Value::Object(spec)
        }
        other => other,
    };
    serde_path_to_error::deserialize::<_, ExecutionSpec>(body).map_err(|e| {
        let nested = e.path().to_string();
        // Report the path as the client wrote it.
        let path = match (flat, nested.split_once('.')) {
            (true, Some(("template", rest))) => rest.to_string(),
            (true, Some(("metadata", rest))) => format!("execution.{rest}"),
            _ => nested,
        };
        ServiceError::BadRequest {
            detail: format!("invalid task at `{path}`: {}", e.inner()),
            path: Some(path),
        }
    })
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

impl ExecutionService for DaemonService {
    fn submit(&self, id: Option<String>, spec: Value) -> Result<Submitted, ServiceError> {
        if let Some(id) = &id {
            check_execution_id(id).map_err(|detail| ServiceError::BadRequest {
                detail,
                path: Some("execution_id".into()),
            })?;
        }
        let spec = parse_spec(spec)?;
        let (id, created) = match self.engine.submit(id, spec).map_err(service_error)? {
            SubmitOutcome::Created(id) => (id, true),
            SubmitOutcome::Existing(id) => (id, false),
        };
        let execution = json(&self.engine.get(&id).map_err(service_error)?);
        Ok(Submitted { id, created, execution })
    }

    fn get(&self, id: &str) -> Result<Value, ServiceError> {
        self.engine.get(id).map(|v| json(&v)).map_err(service_error)
    }

    fn list(&self, phase: Option<&str>, limit: usize, after: Option<&str>) -> Result<Vec<Value>, ServiceError> {
        let phase = phase.map(parse_phase).transpose()?;
        let views = self
            .engine
            .list(phase, limit, after.map(str::to_string))
            .map_err(service_error)?;
        Ok(views.iter().map(json).collect())
    }

    fn events(&self, id: &str) -> Result<Vec<Value>, ServiceError> {
        let events = self.engine.events(id).map_err(service_error)?;
        Ok(events.iter().map(json).collect())
    }

    fn outputs(&self, id: &str) -> Result<Value, ServiceError> {
        self.engine.outputs(id).map(|o| json(&o)).map_err(service_error)
    }

    fn abort(&self, id: &str, reason: &str) -> Result<Value, ServiceError> {
        self.engine.abort(id, reason).map(|v| json(&v)).map_err(service_error)
    }

    fn plugins(&self) -> Value {
        Value::Array(
            self.plugins
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "id": p.id,
                        "task_types": p.task_types,
                        "is_default": p.is_default,
                        "file": p.file.display().to_string(),
                        "interface_version": p.interface_version,
                        "abi": p.abi.to_string(),
                    })
                })
                .collect(),
        )
    }

    fn metrics_text(&self) -> String {
        let plugin_metrics = self.metrics.encode();
        let body = plugin_metrics
            .trim_end()
            .strip_suffix("# EOF")
            .unwrap_or(&plugin_metrics);
        format!("{}{}# EOF\n", body, engine_metrics_text(&self.engine.stats()))
    }

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn prune(&self, older_than: Option<&str>, dry_run: bool) -> Result<Value, ServiceError> {
        self.prune_now(older_than, dry_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_file_form_and_the_nested_form_parse_alike() {
        let flat = serde_json::json!({"type": "echo", "metadata": {"retries": 2}, "inputs": {"x": 1},
            "execution": {"project": "p"}});
        let nested = serde_json::json!({"template": {"type": "echo", "metadata": {"retries": 2}}, "inputs": {"x": 1},
            "metadata": {"project": "p"}});
        assert_eq!(parse_spec(flat).unwrap(), parse_spec(nested).unwrap());
    }

    #[test]
    fn a_bad_field_reports_its_path() {
        match parse_spec(serde_json::json!({"type": "echo", "metadata": {"retries": "x"}})) {
            Err(ServiceError::BadRequest { path, detail }) => {
                assert_eq!(path.as_deref(), Some("metadata.retries"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        match parse_spec(serde_json::json!({"type": "echo", "execution": {"labels": 3}})) {
            Err(ServiceError::BadRequest { path, .. }) => assert_eq!(path.as_deref(), Some("execution.labels")),
            other => panic!("{other:?}"),
        }
        match parse_spec(serde_json::json!({"type": "echo", "interface": {"outputs": 5}})) {
            Err(ServiceError::BadRequest { path, .. }) => assert_eq!(path.as_deref(), Some("interface.outputs")),
            other => panic!("{other:?}"),
        }
    }
}
