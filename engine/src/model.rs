//! The execution model: what a client submits ([`ExecutionSpec`]), what the
//! store keeps ([`ExecutionRecord`], [`TaskState`], [`EventRecord`]) and what
//! clients read back ([`ExecutionView`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kozmo_interface::literals::LiteralMap;
use kozmo_interface::metadata::{OverridesRecord, SecurityContext};
use kozmo_interface::task::TaskTemplate;
use kozmo_interface::{format_rfc3339_nanos, ExecutionError, Phase};
use serde::{Deserialize, Serialize};

pub use crate::events::{EventBody, InfoBody, TaskEventBody, TaskEventExtra};

/// Node id used when the spec names none.
pub const DEFAULT_NODE_ID: &str = "n0";

/// Who and where an execution runs (backs `TaskExecutionMetadata`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionMetadata {
    /// Project (token prefixes and constraints are scoped by it).
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Node id inside the owner (default `n0`).
    pub node_id: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Environment variables for the task.
    pub env: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
    /// Security context.
    pub security_context: SecurityContext,
    /// Resource/config overrides.
    pub overrides: OverridesRecord,
    /// Overrides the template's `interruptible` when set.
    pub interruptible: Option<bool>,
}

/// What a client submits (the JSON body of `POST /v1/executions`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionSpec {
    /// The task.
    pub template: TaskTemplate,
    /// Its inputs.
    pub inputs: LiteralMap,
    /// Execution metadata.
    pub metadata: ExecutionMetadata,
}

impl ExecutionSpec {
    /// The node id (default `n0`).
    pub fn node_id(&self) -> &str {
        self.metadata
            .node_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_NODE_ID)
    }

    /// Attempts the user budget allows: template retries + 1.
    pub fn max_attempts(&self) -> u32 {
        self.template.metadata.retries.saturating_add(1)
    }

    /// Canonical JSON (the store keeps it; resubmissions compare it): keys
    /// sorted (serde_json's `Value` maps are, without `preserve_order`), and
    /// without the members equal to the default spec's. Every struct of a
    /// spec reads a missing member as its default, so it reads back as the
    /// same spec; an echo task's spec is ~40 bytes instead of ~600, which
    /// every execution stores once and retention deletes once.
    pub fn to_canonical_json(&self) -> String {
        let (inputs, rest) = self.canonical_parts();
        Self::join_canonical(&inputs, &rest)
    }

    /// Whether two canonical JSONs are the same spec: the same text, or
    /// (one of them written before defaults were left out) the same spec
    /// read back.
    pub fn same_canonical(a: &str, b: &str) -> bool {
        a == b
            || matches!(
                (serde_json::from_str::<ExecutionSpec>(a), serde_json::from_str::<ExecutionSpec>(b)),
                (Ok(x), Ok(y)) if x == y
            )
    }

    /// The canonical JSON split in two: the inputs, and the rest (metadata
    /// and template: what the executions of one task share, defaults left
    /// out). With [`ExecutionSpec::join_canonical`] they make
    /// [`Self::to_canonical_json`].
    pub fn canonical_parts(&self) -> (String, String) {
        let inputs = serde_json::to_value(&self.inputs).expect("inputs always serialise");
        (inputs.to_string(), self.canonical_rest())
    }

    /// The canonical JSON of the spec without its inputs. Each thread keeps
    /// the last one it made: a client submits many executions of one task,
    /// and comparing two specs costs far less than serialising one and
    /// comparing every member with its default.
    fn canonical_rest(&self) -> String {
        type Last = Option<(TaskTemplate, ExecutionMetadata, String)>;
        thread_local! {
            static LAST: std::cell::RefCell<Last> = const { std::cell::RefCell::new(None) };
        }
        LAST.with_borrow_mut(|last| match last {
            Some((t, m, json)) if *t == self.template && *m == self.metadata => json.clone(),
            _ => {
                let json = self.canonical_rest_uncached();
                *last = Some((self.template.clone(), self.metadata.clone(), json.clone()));
                json
            }
        })
    }

    fn canonical_rest_uncached(&self) -> String {
        const SERIALISES: &str = "an ExecutionSpec always serialises";
        let mut members = serde_json::Map::new();
        members.insert(
            "template".into(),
            serde_json::to_value(&self.template).expect(SERIALISES),
        );
        members.insert(
            "metadata".into(),
            serde_json::to_value(&self.metadata).expect(SERIALISES),
        );
        let mut v = serde_json::Value::Object(members);
        strip_defaults(&mut v, default_spec_value());
        // The template stays, empty or not: a spec without one reads as a
        // task file (the template's fields at the top level).
        if let Some(m) = v.as_object_mut() {
            m.entry("template")
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
        }
        v.to_string()
    }

    /// The canonical JSON from [`Self::canonical_parts`] ("inputs" sorts
    /// before the other keys).
    pub fn join_canonical(inputs: &str, rest: &str) -> String {
        match rest.strip_prefix('{').filter(|r| *r != "}") {
            Some(r) => format!("{{\"inputs\":{inputs},{r}"),
            None => format!("{{\"inputs\":{inputs}}}"),
        }
    }
}

/// [`ExecutionSpec::default`] as JSON (what [`strip_defaults`] leaves out).
fn default_spec_value() -> &'static serde_json::Value {
    static DEFAULT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| serde_json::to_value(ExecutionSpec::default()).expect("the default spec serialises"))
}

/// Removes from the object `v` every member equal to the same member of
/// `default`, descending into objects present in both: what is left reads
/// back to the same spec, every struct of it being `#[serde(default)]`.
/// Arrays and map values are kept whole (their defaults are empty).
fn strip_defaults(v: &mut serde_json::Value, default: &serde_json::Value) {
    let (Some(obj), Some(def)) = (v.as_object_mut(), default.as_object()) else {
        return;
    };
    obj.retain(|k, member| match def.get(k) {
        Some(d) if member == d => false,
        Some(d) => {
            strip_defaults(member, d);
            !(member.as_object().is_some_and(|m| m.is_empty()) && d.is_object())
        }
        None => true,
    });
}

/// The execution-level phase (what clients see).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExecPhase {
    /// Accepted, no round has run yet.
    Queued,
    /// Rounds are running.
    Running,
    /// The plugin succeeded; Finalize is pending.
    Succeeding,
    /// A failure ended the attempt; Abort/Finalize are pending.
    Failing,
    /// A retryable failure: Abort + Finalize pending, then the next attempt.
    Retrying,
    /// Abort requested or returned by the plugin: Abort/Finalize pending.
    Aborting,
    /// Terminal: success.
    Succeeded,
    /// Terminal: failure.
    Failed,
    /// Terminal: aborted.
    Aborted,
}

impl ExecPhase {
    /// All phases.
    pub const ALL: [ExecPhase; 9] = [
        ExecPhase::Queued,
        ExecPhase::Running,
        ExecPhase::Succeeding,
        ExecPhase::Failing,
        ExecPhase::Retrying,
        ExecPhase::Aborting,
        ExecPhase::Succeeded,
        ExecPhase::Failed,
        ExecPhase::Aborted,
    ];

    /// Whether no more rounds will run.
    pub fn is_terminal(self) -> bool {
        matches!(self, ExecPhase::Succeeded | ExecPhase::Failed | ExecPhase::Aborted)
    }

    /// Whether the next step is Abort/Finalize rather than `handle`.
    pub fn is_finishing(self) -> bool {
        matches!(
            self,
            ExecPhase::Succeeding | ExecPhase::Failing | ExecPhase::Retrying | ExecPhase::Aborting
        )
    }

    /// The name (also the stored form).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecPhase::Queued => "Queued",
            ExecPhase::Running => "Running",
            ExecPhase::Succeeding => "Succeeding",
            ExecPhase::Failing => "Failing",
            ExecPhase::Retrying => "Retrying",
            ExecPhase::Aborting => "Aborting",
            ExecPhase::Succeeded => "Succeeded",
            ExecPhase::Failed => "Failed",
            ExecPhase::Aborted => "Aborted",
        }
    }
}

impl fmt::Display for ExecPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecPhase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExecPhase::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown execution phase [{s}]"))
    }
}

/// What the finishing step must do (persisted with the phase that asks for it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Finishing {
    /// Call the plugin's `abort` before `finalize`.
    pub call_abort: bool,
    /// Reason given to Abort (and to the abort event).
    pub reason: String,
    /// The error the execution ends with (Failing), or the retried attempt's.
    pub error: Option<ExecutionError>,
    /// Consecutive failed tries of this step.
    pub failures: u32,
    /// Call neither Abort nor Finalize: the plugin crashed the daemon in
    /// this execution's calls (crash-loop protection); the host only
    /// releases what the execution holds.
    pub skip_plugin: bool,
}

impl Finishing {
    /// What a finishing step does: Abort first if `call_abort`, for
    /// `reason`, ending with `error`; no failed try yet.
    pub fn new(call_abort: bool, reason: String, error: ExecutionError) -> Self {
        Finishing {
            call_abort,
            reason,
            error: Some(error),
            ..Finishing::default()
        }
    }
}

/// A handler error stored on the execution (docs/semantics.md#handler-errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerErrorRecord {
    /// What went wrong.
    pub message: String,
    /// Whether it was a panic in the plugin.
    pub panic: bool,
    /// When, unix milliseconds.
    pub at_ms: i64,
    /// The attempt it happened in.
    pub attempt: u32,
}

/// The mutable, engine-owned part of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecState {
    /// Execution phase.
    pub phase: ExecPhase,
    /// Current attempt (retry attempt), from 0.
    pub attempt: u32,
    /// SYSTEM failures so far.
    pub system_failures: u32,
    /// Last change, unix ms.
    pub updated_at_ms: i64,
    /// Start of the current attempt, unix ms.
    pub attempt_started_at_ms: i64,
    /// The error a Failed/Aborted execution ended with (boxed, like the
    /// other rarely set parts: an active execution keeps its state in
    /// memory).
    pub error: Option<Box<ExecutionError>>,
    /// The last handler error (kept after recovery for visibility).
    pub last_handler_error: Option<Box<HandlerErrorRecord>>,
    /// Consecutive handler errors of the current attempt.
    pub handler_errors: u32,
    /// Pending Abort/Finalize work (finishing phases only).
    pub finishing: Option<Box<Finishing>>,
}

impl ExecState {
    /// Starts failing: the finishing step calls Abort if `call_abort`, then
    /// Finalize, and the execution ends Failed with `error`.
    pub fn fail(&mut self, call_abort: bool, error: ExecutionError) {
        self.enter(
            ExecPhase::Failing,
            Finishing::new(call_abort, "node failing".into(), error),
        );
    }

    /// Starts aborting for `reason`: Abort if `call_abort`, then Finalize;
    /// the execution ends Aborted with `error`.
    pub fn abort(&mut self, call_abort: bool, reason: String, error: ExecutionError) {
        self.enter(ExecPhase::Aborting, Finishing::new(call_abort, reason, error));
    }

    /// Starts retrying for `reason`: Abort, Finalize, then a new attempt;
    /// `error` is the failed attempt's.
    pub fn retry(&mut self, reason: String, error: ExecutionError) {
        self.enter(ExecPhase::Retrying, Finishing::new(true, reason, error));
    }

    /// Fails without calling the plugin again (crash-loop protection): the
    /// host only releases what the execution holds.
    pub fn fail_without_plugin(&mut self, reason: &str, error: ExecutionError) {
        let mut finishing = Finishing::new(false, reason.into(), error);
        finishing.skip_plugin = true;
        self.enter(ExecPhase::Failing, finishing);
    }

    /// Starts succeeding: Finalize, then Succeeded.
    pub fn succeed(&mut self) {
        self.enter(ExecPhase::Succeeding, Finishing::default());
    }

    /// Ends a finishing phase at `now_ms` (docs/semantics.md#abort-and-finalize)
    /// and returns the phase entered: Retrying starts the next attempt
    /// (Running); Succeeding, Failing and Aborting end Succeeded, Failed and
    /// Aborted, with the finishing step's error (none for Succeeded).
    pub fn finalize(&mut self, now_ms: i64) -> ExecPhase {
        let finishing = self.finishing.take();
        if self.phase == ExecPhase::Retrying {
            self.attempt += 1;
            self.attempt_started_at_ms = now_ms;
            self.handler_errors = 0;
            self.phase = ExecPhase::Running;
            return self.phase;
        }
        self.phase = match self.phase {
            ExecPhase::Succeeding => ExecPhase::Succeeded,
            ExecPhase::Failing => ExecPhase::Failed,
            _ => ExecPhase::Aborted,
        };
        self.error = match self.phase {
            ExecPhase::Succeeded => None,
            _ => finishing.and_then(|f| f.error).map(Box::new),
        };
        self.phase
    }

    /// Enters the finishing `phase`, with the work its step must do.
    fn enter(&mut self, phase: ExecPhase, finishing: Finishing) {
        self.phase = phase;
        self.finishing = Some(Box::new(finishing));
    }

    /// The state of a new execution.
    pub fn new(now_ms: i64) -> Self {
        ExecState {
            phase: ExecPhase::Queued,
            attempt: 0,
            system_failures: 0,
            updated_at_ms: now_ms,
            attempt_started_at_ms: now_ms,
            error: None,
            last_handler_error: None,
            handler_errors: 0,
            finishing: None,
        }
    }
}

/// Per-attempt task state (docs/semantics.md#plugin-state).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskState {
    /// Last plugin phase persisted.
    pub plugin_phase: Phase,
    /// Its version.
    pub plugin_phase_version: u32,
    /// Plugin state bytes (`None` = no state).
    pub plugin_state: Option<Vec<u8>>,
    /// Plugin state version.
    pub plugin_state_version: u8,
    /// Sticky cleanup-on-failure flag.
    pub cleanup_on_failure: bool,
    /// When the plugin phase last changed, unix ms.
    pub last_phase_updated_at_ms: i64,
}

/// An execution as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    /// Id (also the owner name).
    pub id: String,
    /// Whether the id was given by the client.
    pub client_id: bool,
    /// The spec, canonical JSON.
    pub spec_json: String,
    /// Task type (copied from the spec for listing).
    pub task_type: String,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Engine-owned state.
    pub state: ExecState,
    /// Abort requested by a client (reason).
    pub abort_requested: Option<String>,
    /// Task state of the current attempt.
    pub task: TaskState,
    /// The plugin chosen at submission (`None` for executions stored before
    /// executions were bound to their plugin: routed by task type).
    pub plugin_id: Option<String>,
}

/// A new execution for the store.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Id.
    pub id: String,
    /// Whether the id was given by the client.
    pub client_id: bool,
    /// The spec, canonical JSON.
    pub spec_json: String,
    /// Task type.
    pub task_type: String,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Initial state.
    pub state: ExecState,
    /// The plugin chosen at submission: the execution only ever runs under it.
    pub plugin_id: Option<String>,
}

/// The error code of every abort (a client's, or the plugin's own Aborted
/// phase without an error of its own): in the execution's `error` and in
/// its task event alike.
pub const ABORTED_CODE: &str = "Aborted";

/// Kinds of event rows.
pub mod event_kind {
    /// A task (plugin phase) event.
    pub const TASK: &str = "task";
    /// A handler error (plugin error, panic, invalid transition).
    pub const HANDLER_ERROR: &str = "handler_error";
    /// A retry: the attempt ended and a new one starts.
    pub const RETRY: &str = "retry";
    /// The execution reached its terminal phase (exactly one per execution).
    pub const TERMINAL: &str = "terminal";
    /// A plugin call has run past `call_warn_after` (written by the
    /// watchdog while the call runs, not by a step).
    pub const SLOW_CALL: &str = "slow_call";
    /// Crash-loop protection: the daemon died while this execution was
    /// inside a plugin call (written at start, after the unclean stop).
    pub const PLUGIN_CRASH: &str = "plugin_crash";
}

/// An event to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// One of [`event_kind`].
    pub kind: String,
    /// Attempt.
    pub attempt: u32,
    /// Phase name (plugin `Phase` name for task events, `ExecPhase` otherwise).
    pub phase: String,
    /// Phase version.
    pub version: u32,
    /// When it happened, unix ms.
    pub occurred_at_ms: i64,
    /// When the host recorded it, unix ms.
    pub reported_at_ms: i64,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// An event a step writes (in a [`RoundCommit`]): its body is typed or
/// compact text ([`EventBody`]), serialized once where it is stored; stores
/// give events back as [`NewEvent`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// One of [`event_kind`].
    pub kind: &'static str,
    /// Attempt.
    pub attempt: u32,
    /// Phase name (plugin `Phase` name for task events, `ExecPhase` otherwise).
    pub phase: std::borrow::Cow<'static, str>,
    /// Phase version.
    pub version: u32,
    /// When it happened, unix ms.
    pub occurred_at_ms: i64,
    /// When the host recorded it, unix ms.
    pub reported_at_ms: i64,
    /// The JSON body.
    pub body: EventBody,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Global sequence number.
    pub seq: i64,
    /// Execution.
    pub execution_id: String,
    /// The event.
    #[serde(flatten)]
    pub event: NewEvent,
}

/// An error document a plugin wrote (`put_error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDocument {
    /// The error.
    pub error: ExecutionError,
    /// Whether the failure is retryable.
    pub recoverable: bool,
}

/// A granted resource token, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenRow {
    /// Fully qualified namespace.
    pub namespace: String,
    /// Composed token.
    pub token: String,
    /// Execution holding it.
    pub execution_id: String,
    /// Attempt holding it.
    pub attempt: u32,
}

/// Everything one round (or finishing step) changes, committed atomically;
/// built with [`RoundCommit::state_only`] and its `with_*` methods
/// (`engine/src/step/commit.rs`).
#[derive(Debug, Clone)]
pub struct RoundCommit {
    /// Execution.
    pub execution_id: String,
    /// New engine-owned state.
    pub state: ExecState,
    /// Task state to upsert for `(execution, attempt)`.
    pub task: Option<(u32, TaskState)>,
    /// Events, in order.
    pub events: Vec<EventRow>,
    /// Outputs to record for an attempt.
    pub outputs: Option<(u32, LiteralMap)>,
    /// Error document to record for an attempt.
    pub error_document: Option<(u32, ErrorDocument)>,
    /// Tokens granted in this step.
    pub tokens_granted: Vec<TokenRow>,
    /// Tokens released in this step (namespace, token).
    pub tokens_released: Vec<(String, String)>,
    /// Clear the client's abort request (handled by this step).
    pub clear_abort: bool,
    /// Catalog entry this step writes (store key, outputs): the success of
    /// a cacheable task, in the same transaction as its terminal state, so
    /// no crash can leave a Succeeded execution without its entry.
    pub catalog: Option<(String, LiteralMap)>,
}

/// What clients read about an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionView {
    /// Id.
    pub id: String,
    /// Execution phase.
    pub phase: ExecPhase,
    /// Task type.
    pub task_type: String,
    /// Current attempt.
    pub attempt: u32,
    /// SYSTEM failures so far.
    pub system_failures: u32,
    /// Generated name of the current attempt (docs/semantics.md#generated-names).
    pub generated_name: String,
    /// Plugin phase name of the current attempt.
    pub plugin_phase: String,
    /// Its version.
    pub plugin_phase_version: u32,
    /// The error a failed/aborted execution ended with.
    pub error: Option<ExecutionError>,
    /// Last handler error (plugin error, panic, invalid transition).
    pub last_handler_error: Option<HandlerErrorView>,
    /// Consecutive handler errors in the current attempt.
    pub consecutive_handler_errors: u32,
    /// Client abort request pending.
    pub abort_requested: Option<String>,
    /// The plugin the execution is bound to (chosen at submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_id: Option<String>,
    /// Why a non-terminal execution is not progressing right now, one line:
    /// `plugin "x" is not loaded`, `plugin call handle in progress for 5m`,
    /// `abort pending: plugin call handle in progress for 5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339.
    pub attempt_started_at: String,
}

/// A handler error as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerErrorView {
    /// Message.
    pub message: String,
    /// Whether the plugin panicked.
    pub panic: bool,
    /// Attempt.
    pub attempt: u32,
    /// RFC 3339.
    pub at: String,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// Unix milliseconds of `t`.
pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Whether a name may be one component of a path, a URL or a generated
/// name: 1-100 characters of `[A-Za-z0-9._-]`, not starting with `.` (so
/// never `.`, `..`, a hidden file, a separator or a control character).
/// `Err` says what the rule is, without repeating the value.
pub fn check_name_component(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err("must be 1-100 characters of [A-Za-z0-9._-], not starting with '.' (it names files and URL paths)".into())
    }
}

/// Checks an execution id a client chose ([`check_name_component`]).
pub fn check_execution_id(id: &str) -> Result<(), String> {
    check_name_component(id).map_err(|why| {
        let shown: String = id.chars().take(100).flat_map(char::escape_debug).collect();
        format!("execution id [{shown}] {why}")
    })
}

/// RFC 3339 text of a unix-ms time.
pub fn rfc3339_ms(ms: i64) -> String {
    let mut s = String::with_capacity(24);
    let _ = write_rfc3339_ms(&mut s, ms);
    s
}

/// Writes [`rfc3339_ms`] of `ms` without allocating (years 1970-9999; other
/// times through chrono, same text).
pub fn write_rfc3339_ms(out: &mut impl fmt::Write, ms: i64) -> fmt::Result {
    // 253402300800000 ms = 10000-01-01T00:00:00Z.
    if !(0..253_402_300_800_000).contains(&ms) {
        return out.write_str(&rfc3339_ms_slow(ms));
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    write!(out, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}")?;
    if milli != 0 {
        let frac = [
            b'0' + (milli / 100) as u8,
            b'0' + (milli / 10 % 10) as u8,
            b'0' + (milli % 10) as u8,
        ];
        let len = if milli % 100 == 0 {
            1
        } else if milli % 10 == 0 {
            2
        } else {
            3
        };
        out.write_char('.')?;
        // ASCII digits.
        out.write_str(std::str::from_utf8(&frac[..len]).unwrap_or("0"))?;
    }
    out.write_char('Z')
}

fn rfc3339_ms_slow(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    format_rfc3339_nanos(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical JSON leaves out what equals the default spec, and what
    /// is left reads back as the very same spec: the examples, and a spec
    /// setting one member deep in each nested struct (the rest of which
    /// is left out), a `Some` of a default value, and empty free-form JSON.
    #[test]
    fn the_canonical_json_leaves_out_defaults_and_reads_back_the_same() {
        let mut bodies: Vec<serde_json::Value> = [
            include_str!("../../examples/echo.json"),
            include_str!("../../examples/shell-hello.json"),
            include_str!("../../examples/shell-fail.json"),
            include_str!("../../examples/shell-sleep.json"),
            include_str!("../../examples/sleep-quota.json"),
            include_str!("../../examples/rest-job.json"),
        ]
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
        bodies.push(serde_json::json!({
            "template": {
                "type": "t",
                "custom": {},
                "container": {},
                "metadata": {"retries": 2, "timeout": "1s", "interruptible": false},
                "interface": {"outputs": {"o": {"type": "string"}}}
            },
            "metadata": {
                "interruptible": false,
                "security_context": {"run_as": "u"},
                "overrides": {"resources": {"limits": {"cpu": "1"}}},
                "labels": {"a": "b"},
                "node_id": ""
            },
            "inputs": {"x": 1}
        }));
        for body in bodies {
            let spec = crate::spec_parse::parse_spec(body.clone()).unwrap();
            let canonical = spec.to_canonical_json();
            let back: ExecutionSpec = serde_json::from_str(&canonical).unwrap();
            assert_eq!(back, spec, "{canonical}");
            // What the task-file reader makes of it too, and a fixed point.
            let again = crate::spec_parse::parse_spec(serde_json::from_str(&canonical).unwrap()).unwrap();
            assert_eq!((&again, again.to_canonical_json()), (&spec, canonical.clone()));
            let full = serde_json::to_value(&spec).unwrap().to_string();
            assert!(canonical.len() < full.len(), "{canonical}");
            assert!(
                ExecutionSpec::same_canonical(&full, &canonical),
                "a spec stored in full is the same"
            );
        }
        // A default template is still written: without it the JSON would
        // read as a task file (its execution metadata as the task's).
        let mut bare = ExecutionSpec::default();
        bare.metadata.project = "p".into();
        let canonical = bare.to_canonical_json();
        assert_eq!(canonical, r#"{"inputs":{},"metadata":{"project":"p"},"template":{}}"#);
        assert_eq!(serde_json::from_str::<ExecutionSpec>(&canonical).unwrap(), bare);
        let echo = crate::spec_parse::parse_spec(serde_json::json!({"type": "echo"})).unwrap();
        assert_eq!(echo.to_canonical_json(), r#"{"inputs":{},"template":{"type":"echo"}}"#);
        let other =
            crate::spec_parse::parse_spec(serde_json::json!({"type": "echo", "metadata": {"retries": 1}})).unwrap();
        assert!(!ExecutionSpec::same_canonical(
            &echo.to_canonical_json(),
            &other.to_canonical_json()
        ));
        assert!(!ExecutionSpec::same_canonical("not json", &other.to_canonical_json()));
    }

    #[test]
    fn specs_alternating_on_one_thread_keep_their_own_canonical_json() {
        // The last spec's JSON is kept per thread: a different template or
        // metadata must not get it.
        let a: ExecutionSpec = serde_json::from_str(r#"{"template": {"type": "t"}}"#).unwrap();
        let mut b = a.clone();
        b.metadata.project = "p".into();
        let mut c = a.clone();
        c.template.task_type = "u".into();
        let mut a_other_inputs = a.clone();
        a_other_inputs
            .inputs
            .insert("x".into(), kozmo_interface::literals::Literal::Integer(1));
        for _ in 0..2 {
            assert_eq!(a.canonical_parts().1, r#"{"template":{"type":"t"}}"#);
            assert_eq!(
                b.canonical_parts().1,
                r#"{"metadata":{"project":"p"},"template":{"type":"t"}}"#
            );
            assert_eq!(c.canonical_parts().1, r#"{"template":{"type":"u"}}"#);
            assert_eq!(
                a_other_inputs.canonical_parts(),
                (
                    r#"{"x":{"integer":1}}"#.to_string(),
                    r#"{"template":{"type":"t"}}"#.to_string()
                )
            );
        }
    }

    #[test]
    fn canonical_parts_join_into_the_canonical_json() {
        let specs = [
            r#"{"template": {"type": "t"}}"#,
            r#"{"template": {"type": "t", "custom": {"b": 1, "a": [2]}}, "inputs": {"x": {"integer": 3}, "a": {"string": "s"}},
                "metadata": {"project": "p", "retries": 2}}"#,
        ];
        for json in specs {
            let spec: ExecutionSpec = serde_json::from_str(json).unwrap();
            let (inputs, rest) = spec.canonical_parts();
            assert_eq!(ExecutionSpec::join_canonical(&inputs, &rest), spec.to_canonical_json());
            let rest_v: serde_json::Value = serde_json::from_str(&rest).unwrap();
            assert!(
                rest_v.get("inputs").is_none() && rest_v.get("template").is_some(),
                "{rest}"
            );
            let back: LiteralMap = serde_json::from_str(&inputs).unwrap();
            assert_eq!(back, spec.inputs);
        }
        assert_eq!(ExecutionSpec::join_canonical("{}", "{}"), r#"{"inputs":{}}"#);
    }

    #[test]
    fn fast_rfc3339_matches_chrono() {
        let mut ms: i64 = 0;
        // Dates across leap years, centuries (2000, 2100) and every ms digit pattern.
        while ms < 253_402_300_800_000 {
            for extra in [0, 1, 10, 100, 120, 123, 999] {
                assert_eq!(rfc3339_ms(ms + extra), rfc3339_ms_slow(ms + extra), "{}", ms + extra);
            }
            ms += 86_399_937 * 97 + 13;
        }
        for ms in [-1, -86_400_000, 253_402_300_799_999, 253_402_300_800_000] {
            assert_eq!(rfc3339_ms(ms), rfc3339_ms_slow(ms));
        }
    }

    #[test]
    fn phases_round_trip_and_classify() {
        for p in ExecPhase::ALL {
            assert_eq!(p.as_str().parse::<ExecPhase>().unwrap(), p);
        }
        assert!(ExecPhase::Aborted.is_terminal());
        assert!(!ExecPhase::Failing.is_terminal());
        assert!(ExecPhase::Retrying.is_finishing());
    }

    #[test]
    fn spec_json_is_canonical_and_node_defaults() {
        let a: ExecutionSpec =
            serde_json::from_str(r#"{"template": {"type": "echo"}, "inputs": {"b": 1, "a": "x"}}"#).unwrap();
        let b: ExecutionSpec = serde_json::from_str(&a.to_canonical_json()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_canonical_json(), b.to_canonical_json());
        assert_eq!(a.node_id(), "n0");
        assert_eq!(a.max_attempts(), 1);
        assert_eq!(rfc3339_ms(1_000), "1970-01-01T00:00:01Z");
    }
}
