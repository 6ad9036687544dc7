//! Event rows (§6.7): task events carry the real plugin phase (fix of §6.5),
//! `occurred_at` and `reported_at` each keep their own value (fix of §6.7).

use kozmo_interface::{ExecutionError, PhaseInfo, TaskInfo};
use serde_json::{json, Value};

use crate::model::{event_kind, rfc3339_ms, to_ms, ExecPhase, NewEvent};

/// Who emits a task event.
pub struct EventSource<'a> {
    /// Attempt.
    pub attempt: u32,
    /// Task type.
    pub task_type: &'a str,
    /// Plugin id.
    pub plugin_id: &'a str,
    /// Generated name.
    pub generated_name: &'a str,
    /// Start of the round, unix ms (default `occurred_at`).
    pub round_start_ms: i64,
    /// Now, unix ms.
    pub now_ms: i64,
}

fn info_json(info: Option<&TaskInfo>) -> Value {
    match info {
        None => Value::Null,
        Some(i) => json!({
            "logs": i.logs,
            "custom_info": i.custom_info,
            "external_resources": i.external_resources.iter().map(|r| json!({
                "external_id": r.external_id,
                "index": r.index,
                "retry_attempt": r.retry_attempt,
                "phase": r.phase.to_string(),
                "cache_status": r.cache_status,
                "logs": r.logs,
                "custom_info": r.custom_info,
            })).collect::<Vec<_>>(),
        }),
    }
}

/// A task event for `info`; `extra` is merged into the body.
pub fn task_event(src: &EventSource<'_>, info: &PhaseInfo, extra: Value) -> NewEvent {
    let ti = info.info();
    let occurred = ti.and_then(|i| i.occurred_at).map(to_ms).unwrap_or(src.round_start_ms);
    let reported = ti.and_then(|i| i.reported_at).map(to_ms).unwrap_or(src.now_ms);
    let mut reasons = Vec::new();
    if !info.reason().is_empty() {
        reasons.push(info.reason().to_string());
    }
    if let Some(i) = ti {
        reasons.extend(i.additional_reasons.iter().map(|r| r.reason.clone()));
    }
    let mut body = json!({
        "phase": info.phase().to_string(),
        "version": info.version(),
        "task_type": src.task_type,
        "plugin_id": src.plugin_id,
        "generated_name": src.generated_name,
        "reasons": reasons,
        "error": info.err(),
        "info": info_json(ti),
        "occurred_at": rfc3339_ms(occurred),
        "reported_at": rfc3339_ms(reported),
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    NewEvent {
        kind: event_kind::TASK.to_string(),
        attempt: src.attempt,
        phase: info.phase().to_string(),
        version: info.version(),
        occurred_at_ms: occurred,
        reported_at_ms: src.now_ms,
        body,
    }
}

/// A handler-error event.
pub fn handler_error_event(attempt: u32, now_ms: i64, message: &str, panic: bool, count: u32) -> NewEvent {
    NewEvent {
        kind: event_kind::HANDLER_ERROR.to_string(),
        attempt,
        phase: "HandlerError".into(),
        version: count,
        occurred_at_ms: now_ms,
        reported_at_ms: now_ms,
        body: json!({ "message": message, "panic": panic, "consecutive": count }),
    }
}

/// The retry event (an attempt ended, the next starts).
pub fn retry_event(attempt: u32, now_ms: i64, error: Option<&ExecutionError>) -> NewEvent {
    NewEvent {
        kind: event_kind::RETRY.to_string(),
        attempt,
        phase: ExecPhase::Retrying.to_string(),
        version: 0,
        occurred_at_ms: now_ms,
        reported_at_ms: now_ms,
        body: json!({ "error": error, "next_attempt": attempt + 1 }),
    }
}

/// The one terminal event of an execution.
pub fn terminal_event(
    attempt: u32,
    now_ms: i64,
    phase: ExecPhase,
    error: Option<&ExecutionError>,
    extra: Value,
) -> NewEvent {
    let mut body = json!({ "phase": phase.as_str(), "error": error });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    NewEvent {
        kind: event_kind::TERMINAL.to_string(),
        attempt,
        phase: phase.to_string(),
        version: 0,
        occurred_at_ms: now_ms,
        reported_at_ms: now_ms,
        body,
    }
}
