//! Event rows (docs/semantics.md#events): task events carry the real plugin
//! phase, `occurred_at` and `reported_at` each keep their own value.
//!
//! A task event's body stays a typed record ([`TaskEventBody`]) until a
//! store keeps it: the SQLite store serializes it at insert, the memory store
//! keeps it typed; either writes compact JSON straight from the record (no
//! `serde_json::Value` tree per round). Other bodies are small and written
//! as text at once. Object keys come in sorted order, as a `Value` map
//! prints them.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use kozmo_interface::{ExecutionError, Phase, PhaseInfo, TaskInfo, TaskLog};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

use crate::model::{event_kind, to_ms, write_rfc3339_ms, EventRow, ExecPhase};

/// Who emits a task event.
pub struct EventSource<'a> {
    /// Attempt.
    pub attempt: u32,
    /// Task type.
    pub task_type: &'a Arc<str>,
    /// Plugin id.
    pub plugin_id: &'a Arc<str>,
    /// Generated name.
    pub generated_name: &'a Arc<str>,
    /// Start of the round, unix ms (default `occurred_at`).
    pub round_start_ms: i64,
    /// Now, unix ms.
    pub now_ms: i64,
}

/// What a task event adds to the common body.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEventExtra {
    /// Nothing.
    None,
    /// `"raw": true` (a raw event the plugin recorded).
    Raw,
    /// `"resource_pool_info"`: (namespace, token) of the tokens granted in the round.
    Pool(Vec<(String, String)>),
    /// `"cache_status": "CACHE_HIT"`.
    CacheHit,
}

/// The body of an event a step writes.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// A task event, typed.
    Task(Arc<TaskEventBody>),
    /// Any other event: compact JSON text.
    Text(String),
}

impl EventBody {
    /// Compact JSON text.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            EventBody::Task(t) => Cow::Owned(to_text(&t.json())),
            EventBody::Text(s) => Cow::Borrowed(s),
        }
    }

    /// Turns a typed body into its text now (on the calling thread), so
    /// whoever stores it later only copies it.
    pub fn render(&mut self) {
        if let EventBody::Task(t) = self {
            *self = EventBody::Text(to_text(&t.json()));
        }
    }

    /// The JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        let v = match self {
            EventBody::Task(t) => serde_json::to_value(t.json()),
            EventBody::Text(s) => serde_json::from_str(s),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// The task info of a task event.
#[derive(Debug, Clone, PartialEq)]
pub enum InfoBody {
    /// No task info.
    None,
    /// A task info holding only its two times (already in the body).
    Times,
    /// Anything more.
    Full(Box<TaskInfo>),
}

/// A task event's body, typed; see [`TaskEventBody::json`] for its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEventBody {
    /// Plugin phase.
    pub phase: Phase,
    /// Its version.
    pub version: u32,
    /// Task type.
    pub task_type: Arc<str>,
    /// Plugin id.
    pub plugin_id: Arc<str>,
    /// Generated name of the attempt.
    pub generated_name: Arc<str>,
    /// The phase's reason (first of `reasons` when not empty).
    pub reason: String,
    /// Task info.
    pub info: InfoBody,
    /// Error.
    pub error: Option<Box<ExecutionError>>,
    /// `occurred_at`, unix ms.
    pub occurred_at_ms: i64,
    /// `reported_at`, unix ms.
    pub reported_at_ms: i64,
    /// TaskEventExtra field.
    pub extra: TaskEventExtra,
}

static EMPTY_INFO: std::sync::OnceLock<TaskInfo> = std::sync::OnceLock::new();

impl TaskEventBody {
    fn json(&self) -> TaskBody<'_> {
        let ti = match &self.info {
            InfoBody::None => None,
            InfoBody::Times => Some(EMPTY_INFO.get_or_init(TaskInfo::default)),
            InfoBody::Full(i) => Some(&**i),
        };
        TaskBody {
            cache_status: matches!(self.extra, TaskEventExtra::CacheHit).then_some("CACHE_HIT"),
            error: self.error.as_deref(),
            generated_name: &self.generated_name,
            info: ti.map(|i| InfoJson {
                custom_info: &i.custom_info,
                external_resources: Externals(i),
                logs: &i.logs,
            }),
            occurred_at: Rfc3339(self.occurred_at_ms),
            phase: PhaseName(self.phase),
            plugin_id: &self.plugin_id,
            raw: matches!(self.extra, TaskEventExtra::Raw).then_some(true),
            reasons: Reasons(&self.reason, ti),
            reported_at: Rfc3339(self.reported_at_ms),
            resource_pool_info: match &self.extra {
                TaskEventExtra::Pool(p) => Some(Pool(p)),
                _ => None,
            },
            task_type: &self.task_type,
            version: self.version,
        }
    }
}

/// A time as RFC 3339 text (serialized without an intermediate `String`).
struct Rfc3339(i64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_rfc3339_ms(f, self.0)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A phase by name.
struct PhaseName(Phase);

impl Serialize for PhaseName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.name() {
            Some(n) => s.serialize_str(n),
            None => s.collect_str(&self.0),
        }
    }
}

/// `[{"namespace": .., "token": ..}, ..]`.
struct Pool<'a>(&'a [(String, String)]);

impl Serialize for Pool<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Item<'a> {
            namespace: &'a str,
            token: &'a str,
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for t in self.0 {
            seq.serialize_element(&Item {
                namespace: &t.0,
                token: &t.1,
            })?;
        }
        seq.end()
    }
}

/// The reasons: the phase's own, then the task info's additional ones.
struct Reasons<'a>(&'a str, Option<&'a TaskInfo>);

impl Serialize for Reasons<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        if !self.0.is_empty() {
            seq.serialize_element(self.0)?;
        }
        if let Some(i) = self.1 {
            for r in &i.additional_reasons {
                seq.serialize_element(&r.reason)?;
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct ExternalJson<'a> {
    cache_status: &'a str,
    custom_info: &'a serde_json::Value,
    external_id: &'a str,
    index: u32,
    logs: &'a [TaskLog],
    phase: PhaseName,
    retry_attempt: u32,
}

struct Externals<'a>(&'a TaskInfo);

impl Serialize for Externals<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let list = &self.0.external_resources;
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for r in list {
            seq.serialize_element(&ExternalJson {
                cache_status: &r.cache_status,
                custom_info: &r.custom_info,
                external_id: &r.external_id,
                index: r.index,
                logs: &r.logs,
                phase: PhaseName(r.phase),
                retry_attempt: r.retry_attempt,
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct InfoJson<'a> {
    custom_info: &'a serde_json::Value,
    external_resources: Externals<'a>,
    logs: &'a [TaskLog],
}

/// The body of a task event (keys in sorted order; the extras in their place).
#[derive(Serialize)]
struct TaskBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_status: Option<&'static str>,
    error: Option<&'a ExecutionError>,
    generated_name: &'a str,
    info: Option<InfoJson<'a>>,
    occurred_at: Rfc3339,
    phase: PhaseName,
    plugin_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<bool>,
    reasons: Reasons<'a>,
    reported_at: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_pool_info: Option<Pool<'a>>,
    task_type: &'a str,
    version: u32,
}

fn to_text<T: Serialize>(body: &T) -> String {
    let mut out = Vec::with_capacity(320);
    // Serializing these records into a Vec cannot fail (no map with
    // non-string keys, no failing Serialize impl).
    if serde_json::to_writer(&mut out, body).is_err() {
        return "null".into();
    }
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_else(|_| "null".into())
}

/// A task event for `info` with the `extra` body field.
pub fn task_event(src: &EventSource<'_>, info: &PhaseInfo, extra: TaskEventExtra) -> EventRow {
    let ti = info.info();
    let occurred = ti.and_then(|i| i.occurred_at).map(to_ms).unwrap_or(src.round_start_ms);
    let reported = ti.and_then(|i| i.reported_at).map(to_ms).unwrap_or(src.now_ms);
    let body = TaskEventBody {
        phase: info.phase(),
        version: info.version(),
        task_type: src.task_type.clone(),
        plugin_id: src.plugin_id.clone(),
        generated_name: src.generated_name.clone(),
        reason: info.reason().to_string(),
        info: match ti {
            None => InfoBody::None,
            Some(i) if i.is_only_times() => InfoBody::Times,
            Some(i) => InfoBody::Full(Box::new(i.clone())),
        },
        error: info.err().map(|e| Box::new(e.clone())),
        occurred_at_ms: occurred,
        reported_at_ms: reported,
        extra,
    };
    EventRow {
        kind: event_kind::TASK,
        attempt: src.attempt,
        phase: phase_name(info.phase()),
        version: info.version(),
        occurred_at_ms: occurred,
        reported_at_ms: src.now_ms,
        body: EventBody::Task(Arc::new(body)),
    }
}

/// The stored name of a plugin phase.
pub fn phase_name(p: Phase) -> std::borrow::Cow<'static, str> {
    match p.name() {
        Some(n) => n.into(),
        None => p.to_string().into(),
    }
}

/// A handler-error event.
pub fn handler_error_event(attempt: u32, now_ms: i64, message: &str, panic: bool, count: u32) -> EventRow {
    #[derive(Serialize)]
    struct Body<'a> {
        consecutive: u32,
        message: &'a str,
        panic: bool,
    }
    EventRow {
        kind: event_kind::HANDLER_ERROR,
        attempt,
        phase: "HandlerError".into(),
        version: count,
        occurred_at_ms: now_ms,
        reported_at_ms: now_ms,
        body: EventBody::Text(to_text(&Body {
            consecutive: count,
            message,
            panic,
        })),
    }
}

/// A task-level note of the failure a handler-error streak turned into.
pub fn round_failures_event(attempt: u32, now_ms: i64, err: &ExecutionError) -> EventRow {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a ExecutionError,
    }
    EventRow {
        kind: event_kind::HANDLER_ERROR,
        attempt,
        phase: "RoundFailures".into(),
        version: 0,
        occurred_at_ms: now_ms,
        reported_at_ms: now_ms,
        body: EventBody::Text(to_text(&Body { error: err })),
    }
}

/// The retry event (an attempt ended, the next starts).
pub fn retry_event(attempt: u32, now_ms: i64, error: Option<&ExecutionError>) -> EventRow {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Option<&'a ExecutionError>,
        next_attempt: u32,
    }
    EventRow {
        kind: event_kind::RETRY,
        attempt,
        phase: ExecPhase::Retrying.as_str().into(),
        version: 0,
        occurred_at_ms: now_ms,
        reported_at_ms: now_ms,
        body: EventBody::Text(to_text(&Body {
            error,
            next_attempt: attempt + 1,
        })),
    }
}

/// What the engine observed about a plugin call of an execution outside
/// its steps (a call running long, a crash inside one): `kind` is one of
/// [`event_kind`], `label` its phase column.
pub(crate) fn call_notice_event(
    kind: &'static str,
    label: &'static str,
    attempt: u32,
    now_ms: i64,
    call: super::call_slots::Call,
    message: &str,
) -> EventRow {
    #[derive(Serialize)]
    struct Body<'a> {
        call: &'static str,
        message: &'a str,
    }
    EventRow {
        kind,
        attempt,
        phase: label.into(),
        version: 0,
        occurred_at_ms: now_ms,
        reported_at_ms: now_ms,
        body: EventBody::Text(to_text(&Body {
            call: call.name(),
            message,
        })),
    }
}

/// The one terminal event of an execution (`cache_hit`: it ended on a
/// catalog hit).
pub fn terminal_event(
    attempt: u32,
    now_ms: i64,
    phase: ExecPhase,
    error: Option<&ExecutionError>,
    cache_hit: bool,
) -> EventRow {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_status: Option<&'static str>,
        error: Option<&'a ExecutionError>,
        phase: &'static str,
    }
    EventRow {
        kind: event_kind::TERMINAL,
        attempt,
        phase: phase.as_str().into(),
        version: 0,
        occurred_at_ms: now_ms,
        reported_at_ms: now_ms,
        body: EventBody::Text(to_text(&Body {
            cache_status: cache_hit.then_some("CACHE_HIT"),
            error,
            phase: phase.as_str(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use kozmo_interface::{ErrorKind, ExternalResource, ReasonInfo};
    use serde_json::{json, Value};

    use super::*;
    use crate::model::rfc3339_ms;

    fn parse(e: &EventRow) -> Value {
        let v: Value = serde_json::from_str(&e.body.to_text()).unwrap();
        assert_eq!(v, e.body.to_value());
        v
    }

    #[test]
    fn task_event_bodies_hold_the_same_fields_as_a_json_tree() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut info = TaskInfo::at(t);
        info.custom_info = json!({"b": 1, "a": [true]});
        info.logs = vec![TaskLog::default()];
        info.additional_reasons = vec![ReasonInfo {
            reason: "more".into(),
            occurred_at: None,
        }];
        info.external_resources = vec![ExternalResource {
            external_id: "x".into(),
            index: 2,
            phase: Phase::RUNNING,
            ..ExternalResource::default()
        }];
        let pi = PhaseInfo::from_parts(
            Phase::RUNNING,
            3,
            "why".into(),
            Some(info.clone()),
            Some(ExecutionError::new("c", "m", ErrorKind::User)),
            false,
        );
        let (tt, p, g) = (Arc::from("tt"), Arc::from("p"), Arc::from("g"));
        let src = EventSource {
            attempt: 1,
            task_type: &tt,
            plugin_id: &p,
            generated_name: &g,
            round_start_ms: 5,
            now_ms: 1_700_000_000_999,
        };
        let e = task_event(&src, &pi, TaskEventExtra::Pool(vec![("ns".into(), "tok".into())]));
        let expected = json!({
            "phase": Phase::RUNNING.to_string(),
            "version": 3,
            "task_type": "tt",
            "plugin_id": "p",
            "generated_name": "g",
            "reasons": ["why", "more"],
            "error": pi.err(),
            "info": {
                "logs": info.logs,
                "custom_info": info.custom_info,
                "external_resources": [{
                    "external_id": "x",
                    "index": 2,
                    "retry_attempt": 0,
                    "phase": Phase::RUNNING.to_string(),
                    "cache_status": "",
                    "logs": [],
                    "custom_info": null,
                }],
            },
            "occurred_at": rfc3339_ms(1_700_000_000_123),
            "reported_at": rfc3339_ms(1_700_000_000_999),
            "resource_pool_info": [{"namespace": "ns", "token": "tok"}],
        });
        assert_eq!(parse(&e), expected);
        // Rendered ahead (for the committer): the same text, no longer typed.
        let mut rendered = e.body.clone();
        rendered.render();
        assert!(matches!(rendered, EventBody::Text(_)));
        assert_eq!(rendered.to_text(), e.body.to_text());
        // Sorted keys at the top, as a `Value` prints them.
        assert!(e.body.to_text().starts_with(r#"{"error":{"#), "{}", e.body.to_text());
        assert_eq!(
            (e.kind, e.phase.as_ref(), e.version),
            (event_kind::TASK, "PhaseRunning", 3)
        );
        assert_eq!(e.occurred_at_ms, 1_700_000_000_123);

        let bare = task_event(
            &src,
            &PhaseInfo::from_parts(Phase::SUCCESS, 0, String::new(), None, None, false),
            TaskEventExtra::Raw,
        );
        let v = parse(&bare);
        assert_eq!(v["raw"], json!(true));
        assert_eq!(v["info"], Value::Null);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["reasons"], json!([]));
        assert_eq!(v["occurred_at"], json!(rfc3339_ms(5)));
        assert!(v.get("resource_pool_info").is_none() && v.get("cache_status").is_none());
        let hit = parse(&task_event(&src, &pi, TaskEventExtra::CacheHit));
        assert_eq!(hit["cache_status"], "CACHE_HIT");
        assert_eq!(
            parse(&task_event(&src, &pi, TaskEventExtra::None))
                .as_object()
                .unwrap()
                .len(),
            10
        );
        let times = task_event(
            &src,
            &PhaseInfo::running(1, Some(TaskInfo::at(t))),
            TaskEventExtra::None,
        );
        assert_eq!(
            parse(&times)["info"],
            json!({"logs": [], "custom_info": null, "external_resources": []})
        );
    }

    #[test]
    fn other_event_bodies() {
        let err = ExecutionError::new("c", "m", ErrorKind::System);
        assert_eq!(
            parse(&handler_error_event(0, 1, "boom", true, 2)),
            json!({"message": "boom", "panic": true, "consecutive": 2})
        );
        assert_eq!(parse(&round_failures_event(0, 1, &err)), json!({ "error": err }));
        assert_eq!(
            parse(&retry_event(1, 1, Some(&err))),
            json!({"error": err, "next_attempt": 2})
        );
        assert_eq!(
            parse(&terminal_event(0, 1, ExecPhase::Succeeded, None, false)),
            json!({"phase": "Succeeded", "error": null})
        );
        assert_eq!(
            parse(&terminal_event(0, 1, ExecPhase::Succeeded, None, true)),
            json!({"phase": "Succeeded", "error": null, "cache_status": "CACHE_HIT"})
        );
    }
}
