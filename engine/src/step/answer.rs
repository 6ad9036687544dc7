//! The decisions of a `handle` round (docs/semantics.md#rounds) as
//! functions of the step input: the execution's state, the persisted task
//! state, the plugin's answer (or the catalog hit) and the limits. No store,
//! plugin or clock behind them: [`super::round`] makes the call and the
//! reads and passes their results in.
//!
//! - [`cache_hit`]: a catalog hit ends the execution (docs/semantics.md#catalog);
//! - [`answer_info`], [`cap_versions`]: what the answer is, or the handler
//!   error it is (docs/semantics.md#handler-errors, docs/semantics.md#phase-versions);
//! - [`round_applied`]: the commit of an applied answer, built from
//!   [`next_task`] and [`apply_phase`];
//! - [`round_failed`]: the commit of a failed round.

use std::time::Duration;

use kozmo_interface::{ErrorKind, ExecutionError, LiteralMap, Phase, PhaseInfo, PluginError, Transition};

use super::{abort_allowed, StepOutcome};
use crate::context::{RoundWrites, StateWrite};
use crate::events::{
    handler_error_event, round_failures_event, task_event, terminal_event, EventSource, TaskEventExtra,
};
use crate::model::{EventRow, ExecPhase, ExecState, HandlerErrorRecord, RoundCommit, TaskState};
use crate::retries::{after_permanent, decide_retryable};
use crate::scheduler::Next;

/// The limits a step's decisions depend on: the engine's and the task's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// SYSTEM failures tolerated (docs/semantics.md#retries).
    pub system_retry_budget: u32,
    /// Attempts the task may make (docs/semantics.md#retries).
    pub max_attempts: u32,
    /// The task's timeout (docs/semantics.md#timeouts).
    pub timeout: Option<Duration>,
    /// Failed rounds in a row before a SYSTEM failure
    /// (docs/semantics.md#handler-errors).
    pub max_round_failures: u32,
    /// Versions of one plugin phase (docs/semantics.md#phase-versions).
    pub max_plugin_phase_versions: u32,
}

/// Phase of a failure result mapped from a plugin phase.
fn is_running_phase(p: Phase) -> bool {
    matches!(
        p,
        Phase::NOT_READY
            | Phase::WAITING_FOR_RESOURCES
            | Phase::QUEUED
            | Phase::INITIALIZING
            | Phase::RUNNING
            | Phase::WAITING_FOR_CACHE
    )
}

/// `90s`, `1.5s`, `250ms`.
fn humantime(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// A catalog hit at the start of an attempt (docs/semantics.md#catalog):
/// the execution of `id` ends Succeeded with `outputs`, without a plugin
/// call, at `src.now_ms`.
pub(super) fn cache_hit(id: &str, mut state: ExecState, outputs: LiteralMap, src: &EventSource<'_>) -> StepOutcome {
    let now = src.now_ms;
    let attempt = state.attempt;
    let task = TaskState {
        plugin_phase: Phase::SUCCESS,
        plugin_phase_version: 0,
        last_phase_updated_at_ms: now,
        ..TaskState::default()
    };
    state.updated_at_ms = now;
    state.succeed();
    let terminal = state.finalize(now);
    let events = vec![
        task_event(src, &PhaseInfo::success(None), TaskEventExtra::CacheHit),
        terminal_event(attempt, now, terminal, None, true),
    ];
    let mut commit = RoundCommit::state_only(id, state);
    commit
        .set_task(attempt, task.clone())
        .set_events(events)
        .set_outputs(attempt, Some(outputs))
        .set_clear_abort();
    StepOutcome {
        commit,
        next: Next::Done,
        task,
        persist: true,
    }
}

/// The task state a round applying `info` leaves, from the persisted one
/// (`persisted`) and the plugin's state write of the round: the put/reset
/// is kept even when the event is suppressed (docs/semantics.md#phase-versions).
pub(super) fn next_task(persisted: &TaskState, info: &PhaseInfo, write: Option<&StateWrite>, now: i64) -> TaskState {
    let (state_version, state_bytes) = match write {
        Some(StateWrite::Put(v, b)) => (*v, Some(b.clone())),
        Some(StateWrite::Reset) => (0, None),
        None => (persisted.plugin_state_version, persisted.plugin_state.clone()),
    };
    TaskState {
        plugin_phase: info.phase(),
        plugin_phase_version: info.version(),
        plugin_state: state_bytes,
        plugin_state_version: state_version,
        cleanup_on_failure: persisted.cleanup_on_failure || info.cleanup_on_failure(),
        last_phase_updated_at_ms: if info.phase() != persisted.plugin_phase {
            now
        } else {
            persisted.last_phase_updated_at_ms
        },
    }
}

/// What the plugin phase of an applied round (`info`, leaving `task`) does
/// to the execution at `now` (docs/semantics.md#execution-phases), and when
/// it runs next: at once after a change, at the next resync after a round
/// that only observed the persisted phase (`observed`).
pub(super) fn apply_phase(
    state: &mut ExecState,
    info: &PhaseInfo,
    task: &TaskState,
    observed: bool,
    now: i64,
    limits: &Limits,
) -> Next {
    let unchanged = if observed { Next::Resync } else { Next::Now };
    let phase = info.phase();
    if is_running_phase(phase) {
        state.phase = ExecPhase::Running;
        match limits.timeout {
            Some(timeout) if now - state.attempt_started_at_ms > timeout.as_millis() as i64 => {
                let err = ExecutionError::new(
                    "TimeoutExpired",
                    format!("task execution timeout [{}] expired", humantime(timeout)),
                    ErrorKind::User,
                );
                retryable(state, &err, true, limits);
                Next::Now
            }
            _ => unchanged,
        }
    } else if phase == Phase::SUCCESS {
        state.succeed();
        Next::Now
    } else if phase == Phase::RETRYABLE_FAILURE {
        let err = info.err().cloned().unwrap_or_else(ExecutionError::unknown);
        retryable(state, &err, abort_allowed(task), limits);
        Next::Now
    } else if phase == Phase::PERMANENT_FAILURE {
        let err = info.err().cloned().unwrap_or_else(ExecutionError::unknown);
        state.system_failures = after_permanent(&err, state.system_failures);
        state.fail(abort_allowed(task), err);
        Next::Now
    } else if phase == Phase::ABORTED {
        // Aborted from handle is terminal: no retry, Finalize runs
        // (docs/semantics.md#execution-phases).
        let err = info.err().cloned().unwrap_or_else(|| {
            let reason = if info.reason().is_empty() {
                "aborted by the plugin"
            } else {
                info.reason()
            };
            ExecutionError::new(crate::model::ABORTED_CODE, reason, ErrorKind::User)
        });
        state.abort(false, err.message.clone(), err);
        Next::Now
    } else {
        unchanged
    }
}

/// A retryable failure of the current attempt (docs/semantics.md#retries):
/// Retrying if the budget allows, else Failing with `RetriesExhausted|...`.
pub(super) fn retryable(state: &mut ExecState, err: &ExecutionError, abort_if_failing: bool, limits: &Limits) {
    let d = decide_retryable(
        err,
        state.attempt,
        state.system_failures,
        limits.system_retry_budget,
        limits.max_attempts,
    );
    state.system_failures = d.system_failures;
    if d.eligible {
        state.retry(err.message.clone(), d.error);
    } else {
        state.fail(abort_if_failing, d.error);
    }
}

/// A round that failed (docs/semantics.md#handler-errors).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HandlerError {
    /// What went wrong.
    pub message: String,
    /// Whether it was a panic in the plugin.
    pub panic: bool,
}

impl HandlerError {
    fn new(message: String, panic: bool) -> Self {
        HandlerError { message, panic }
    }
}

/// The phase info of the plugin's answer to `handle` (`result`, replaced by
/// a permanent `ResourceNeverAvailable` failure when a request of the round
/// can `never` be granted), or the handler error it is: an error or panic,
/// a phase Undefined or out of range, neither task info nor error
/// (docs/semantics.md#rounds, steps 4 and 5).
#[inline]
pub(super) fn answer_info(
    result: Result<Transition, PluginError>,
    never: Option<&String>,
    plugin_id: &str,
) -> Result<PhaseInfo, HandlerError> {
    let result = match never {
        // A quota or constraint of 0: fail permanently, whatever the plugin said.
        Some(msg) => Ok(Transition::ephemeral(PhaseInfo::failure(
            "ResourceNeverAvailable",
            msg.clone(),
            None,
        ))),
        None => result,
    };
    let info = match result {
        Err(e) => {
            let msg = format!("failed to execute handle for plugin [{plugin_id}]: {e}");
            return Err(HandlerError::new(msg, e.is_panic()));
        }
        Ok(t) => t.into_info(),
    };
    if info.phase() == Phase::UNDEFINED || !info.phase().is_a_phase() {
        let msg = format!(
            "failed to execute handle for plugin [{plugin_id}]: error converting plugin phase, received [{}]",
            info.phase()
        );
        return Err(HandlerError::new(msg, false));
    }
    if info.info().is_none() && info.err().is_none() {
        let msg = format!(
            "failed to execute handle for plugin [{plugin_id}]: transition doesn't have task info nor an execution error filled"
        );
        return Err(HandlerError::new(msg, false));
    }
    Ok(info)
}

/// Whether `info` only repeats the persisted (phase, version): an observed
/// round (docs/semantics.md#phase-versions).
pub(super) fn is_observed(info: &PhaseInfo, persisted: &TaskState) -> bool {
    info.phase() == persisted.plugin_phase && info.version() == persisted.plugin_phase_version
}

/// The version cap (docs/semantics.md#phase-versions): a new (not
/// `observed`) version of the persisted phase past `limits.max_plugin_phase_versions` is a permanent
/// `TooManyPluginPhaseVersions` failure. Also says whether the answer is
/// post-processed (output validation of a Success): a new one, not capped.
/// `info` is replaced in place (a phase info is moved as little as it can
/// be: every move of it is a copy on the per-round path).
pub(super) fn cap_versions(
    info: &mut PhaseInfo,
    persisted: &TaskState,
    observed: bool,
    limits: &Limits,
    plugin_id: &str,
) -> bool {
    if observed {
        return false;
    }
    let max = limits.max_plugin_phase_versions;
    if info.phase() == persisted.plugin_phase && info.version() > max {
        let msg = format!(
            "Total number of phase versions exceeded for phase [{}] in Plugin [{plugin_id}]. Attempted to set version to [{}], max allowed [{max}]",
            info.phase(),
            info.version(),
        );
        let err = ExecutionError::new("TooManyPluginPhaseVersions", msg, ErrorKind::Unknown);
        *info = PhaseInfo::failed(Phase::PERMANENT_FAILURE, Some(err), info.info().cloned());
        return false;
    }
    true
}

/// An applied answer of a `handle` round.
pub(super) struct Answer<'a> {
    /// The execution's state as persisted.
    pub old: &'a ExecState,
    /// The attempt's task state as persisted.
    pub persisted: &'a TaskState,
    /// The phase info applied (capped and validated).
    pub info: &'a PhaseInfo,
    /// Whether the answer, as the plugin gave it, only repeated the
    /// persisted (phase, version) ([`is_observed`]).
    pub observed: bool,
    /// What the plugin wrote in the round.
    pub writes: RoundWrites,
    /// The round's task events (none for an observed round).
    pub events: Vec<EventRow>,
}

/// The commit of the applied `answer` of a round of `id` at `now`, from
/// `state` (the execution's state at the round's start). A polling round
/// that changed nothing is not written (`persist` false: most rounds of a
/// long task); the store keeps the previous, identical values.
#[inline]
pub(super) fn round_applied(
    id: &str,
    mut state: ExecState,
    answer: Answer<'_>,
    now: i64,
    limits: &Limits,
) -> StepOutcome {
    let Answer {
        old,
        persisted,
        info,
        observed,
        writes,
        events,
    } = answer;
    let attempt = state.attempt;
    let task = next_task(persisted, info, writes.state.as_ref(), now);
    state.handler_errors = 0;
    state.updated_at_ms = now;
    let next = apply_phase(&mut state, info, &task, observed, now, limits);
    let unchanged = observed
        && writes.state.is_none()
        && writes.outputs.is_none()
        && writes.error_document.is_none()
        && writes.tokens.granted.is_empty()
        && writes.tokens.released.is_empty()
        && task == *persisted
        && state.phase == old.phase
        && old.handler_errors == 0
        && state.system_failures == old.system_failures
        && state.finishing == old.finishing;
    if unchanged {
        state.updated_at_ms = old.updated_at_ms;
    }
    let mut commit = RoundCommit::state_only(id, state);
    commit
        .set_task(attempt, task.clone())
        .set_events(events)
        .set_outputs(attempt, writes.outputs)
        .set_error_document(attempt, writes.error_document)
        .set_tokens(writes.tokens.granted, writes.tokens.released);
    StepOutcome {
        commit,
        next,
        task,
        persist: !unchanged,
    }
}

/// The commit of a failed round of `id` at `now` (docs/semantics.md#handler-errors):
/// the error is recorded and counted; after `limits.max_round_failures` in
/// a row the attempt fails as a retryable SYSTEM failure. The tokens the
/// round granted or released are kept, nothing else it wrote.
#[inline]
pub(super) fn round_failed(
    id: &str,
    mut state: ExecState,
    persisted: &TaskState,
    error: &HandlerError,
    writes: RoundWrites,
    now: i64,
    limits: &Limits,
) -> StepOutcome {
    let HandlerError { message, panic } = error;
    state.handler_errors += 1;
    state.updated_at_ms = now;
    state.last_handler_error = Some(Box::new(HandlerErrorRecord {
        message: message.clone(),
        panic: *panic,
        at_ms: now,
        attempt: state.attempt,
    }));
    let mut events = vec![handler_error_event(
        state.attempt,
        now,
        message,
        *panic,
        state.handler_errors,
    )];
    let mut next = Next::Resync;
    if state.handler_errors >= limits.max_round_failures {
        let err = ExecutionError::new(
            "RoundFailures",
            format!(
                "{} consecutive rounds failed; last error: {message}",
                state.handler_errors
            ),
            ErrorKind::System,
        );
        // The persisted plugin phase is the last applied one (non-terminal),
        // so Abort runs on the way out.
        retryable(&mut state, &err, abort_allowed(persisted), limits);
        events.push(round_failures_event(state.attempt, now, &err));
        next = Next::Now;
    }
    let mut commit = RoundCommit::state_only(id, state);
    commit
        .set_events(events)
        .set_tokens(writes.tokens.granted, writes.tokens.released);
    StepOutcome {
        commit,
        next,
        task: persisted.clone(),
        persist: true,
    }
}
