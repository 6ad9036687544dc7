//! One step of one execution: a `handle` round (docs/semantics.md#rounds,
//! [`round`]) or a finishing step (Abort/Finalize,
//! docs/semantics.md#abort-and-finalize, [`finish`]). A step computes a
//! [`RoundCommit`] (everything it changes, applied atomically by the store,
//! catalog entry included; built in [`commit`]) and when to run next; it
//! never writes to the store itself.
//!
//! The decisions are functions of the step input (the execution's state,
//! the plugin's answer, the catalog hit) with the plugin calls and store
//! reads done by their callers, and every phase change is a method of
//! [`ExecState`] (`succeed`, `fail`, `retry`, `abort`, `finalize`).

mod answer;
mod commit;
mod context;
mod finish;
mod round;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use kozmo_interface::{ErrorKind, ExecutionError};

pub(crate) use self::round::RoundStart;
use crate::events::EventSource;
use crate::model::{now_ms, ExecState, RoundCommit, TaskState};
use crate::scheduler::Next;
use crate::{Active, Engine};

/// What a step produced.
pub struct StepOutcome {
    /// The commit.
    pub commit: RoundCommit,
    /// What follows once it is durable.
    pub next: Next,
    /// The new in-memory view (applied after the commit is queued).
    pub task: TaskState,
    /// False for a round that changed nothing (same phase and version, no
    /// state, outputs, tokens or counters): nothing to write.
    pub persist: bool,
}

/// Whether Abort is called for a persisted task state
/// (docs/semantics.md#abort-and-finalize).
fn abort_allowed(task: &TaskState) -> bool {
    !task.plugin_phase.is_terminal() || (task.plugin_phase.is_failure() && task.cleanup_on_failure)
}

/// A client's abort request for `reason` (docs/semantics.md#client-aborts),
/// handled at `now` before any other step: Aborting, with Abort called if
/// the persisted `task` allows it.
fn client_abort(id: &str, mut state: ExecState, task: &TaskState, reason: &str, now: i64) -> StepOutcome {
    state.updated_at_ms = now;
    let error = ExecutionError::new(crate::model::ABORTED_CODE, reason.to_string(), ErrorKind::User);
    state.abort(abort_allowed(task), reason.to_string(), error);
    let mut commit = RoundCommit::state_only(id, state);
    commit.set_clear_abort();
    StepOutcome {
        commit,
        next: Next::Now,
        task: task.clone(),
        persist: true,
    }
}

impl Engine {
    /// Runs the next step of `a`.
    pub(crate) fn step(&self, a: &mut Active) -> StepOutcome {
        let st = &a.record.state;
        if st.phase.is_finishing() {
            return self.finish_step(a);
        }
        if let Some(reason) = &a.record.abort_requested {
            return client_abort(&a.record.id, st.clone(), &a.record.task, reason, now_ms());
        }
        self.handle_round(a)
    }
}

/// Where the events of a step come from.
fn event_source<'a>(
    a: &'a Active,
    plugin_id: &'a Arc<str>,
    attempt: u32,
    generated_name: &'a Arc<str>,
    round_start_ms: i64,
    now_ms: i64,
) -> EventSource<'a> {
    EventSource {
        attempt,
        task_type: &a.spec.task_type,
        plugin_id,
        generated_name,
        round_start_ms,
        now_ms,
    }
}
