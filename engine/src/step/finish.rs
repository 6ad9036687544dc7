//! The finishing step (docs/semantics.md#abort-and-finalize): Abort if due,
//! Finalize, the host's release of tokens the plugin left, then
//! [`ExecState::finalize`]: the terminal phase or the next attempt.
//!
//! [`Engine::finish_step`] makes the plugin calls (`finish_calls`), releases
//! the tokens and reads the store (the attempt's outputs for the catalog
//! entry). What it decides is a function of what they gave: [`failed_try`]
//! (a failed call: try again, or give up and finish) and [`finished`] (the
//! end of the step, the catalog entry in the same commit as the terminal
//! state, docs/semantics.md#catalog).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use kozmo_interface::webapi::CANCELLING_REMOTE_JOB;
use kozmo_interface::{ErrorKind, ExecutionError, LiteralMap, Phase, PhaseInfo, Plugin};

use super::answer::{HandlerError, Limits};
use super::{event_source, StepOutcome};
use crate::call_slots::Call;
use crate::events::{handler_error_event, retry_event, task_event, terminal_event, TaskEventExtra};
use crate::model::{
    now_ms, EventRow, ExecPhase, ExecState, Finishing, HandlerErrorRecord, RoundCommit, TaskState, TokenRow,
};
use crate::scheduler::Next;
use crate::{Active, Engine};

/// What a finishing step's calls and releases left to commit.
pub(super) struct Finished {
    /// Events so far (Abort's, a handler error), in order.
    pub events: Vec<EventRow>,
    /// Tokens granted during the calls and still held.
    pub granted: Vec<TokenRow>,
    /// Tokens released (by the plugin or by the host).
    pub released: Vec<(String, String)>,
    /// The catalog entry (store key, outputs) a success writes.
    pub catalog: Option<(String, LiteralMap)>,
}

/// The end of the finishing step of `id` at `now`: `state` (a finishing
/// phase) leaves it through [`ExecState::finalize`], with `task` the
/// persisted task state of the attempt. A Retrying execution starts its
/// next attempt; any other ends with its `terminal` event, the catalog
/// entry of a success and the client's abort request cleared.
pub(super) fn finished(id: &str, mut state: ExecState, mut task: TaskState, done: Finished, now: i64) -> StepOutcome {
    let Finished {
        mut events,
        granted,
        released,
        catalog,
    } = done;
    let attempt = state.attempt;
    let error = state.finishing.as_ref().and_then(|f| f.error.clone());
    let entered = state.finalize(now);
    let mut task_write = None;
    let terminal = entered.is_terminal();
    if terminal {
        if entered == ExecPhase::Aborted && !task.plugin_phase.is_terminal() {
            task.plugin_phase = Phase::ABORTED;
            task.plugin_phase_version = 0;
            task.last_phase_updated_at_ms = now;
            task_write = Some((attempt, task.clone()));
        }
        events.push(terminal_event(attempt, now, entered, state.error.as_deref(), false));
    } else {
        events.push(retry_event(attempt, now, error.as_ref()));
        task = TaskState {
            last_phase_updated_at_ms: now,
            ..TaskState::default()
        };
        task_write = Some((state.attempt, task.clone()));
    }
    let mut commit = RoundCommit::state_only(id, state);
    commit.set_events(events).set_tokens(granted, released);
    if let Some((n, t)) = task_write {
        commit.set_task(n, t);
    }
    if terminal {
        commit.set_clear_abort();
        if entered == ExecPhase::Succeeded {
            commit.set_catalog(catalog);
        }
    }
    StepOutcome {
        commit,
        next: if terminal { Next::Done } else { Next::Now },
        task,
        persist: true,
    }
}

/// What the plugin calls of a finishing step gave.
struct Calls {
    /// The plugin called (none: skipped, or not found).
    plugin: Option<Arc<dyn Plugin>>,
    /// Its id, for the log of tokens it left.
    plugin_id: String,
    /// Abort's events.
    events: Vec<EventRow>,
    /// Tokens granted during the calls.
    granted: Vec<TokenRow>,
    /// Tokens the plugin released.
    released: Vec<(String, String)>,
    /// What failed: (message, panic).
    errors: Vec<(String, bool)>,
    /// Abort failed with a retryable `CancellingRemoteJob` error: the plugin
    /// is still cancelling something outside, so the step is tried again
    /// without a limit.
    abort_retryable: bool,
}

/// A failed try of the finishing step at `now`
/// (docs/semantics.md#abort-and-finalize): counted on `f`, recorded on
/// `state`, its `handler_error` event pushed on `events`. True to try again
/// at the next resync (fewer than `limits.max_round_failures` tries failed
/// in a row, or `keep_trying`: Abort is still cancelling a remote job), false
/// to give up on the plugin and finish anyway.
pub(super) fn failed_try(
    state: &mut ExecState,
    f: &mut Finishing,
    error: &HandlerError,
    events: &mut Vec<EventRow>,
    now: i64,
    limits: &Limits,
    keep_trying: bool,
) -> bool {
    f.failures += 1;
    state.last_handler_error = Some(Box::new(HandlerErrorRecord {
        message: error.message.clone(),
        panic: error.panic,
        at_ms: now,
        attempt: state.attempt,
    }));
    events.push(handler_error_event(
        state.attempt,
        now,
        &error.message,
        error.panic,
        f.failures,
    ));
    keep_trying || f.failures < limits.max_round_failures
}

impl Engine {
    /// Releases a token an execution left held, counted in
    /// `kozmo_leaked_tokens_released_total`: whether it was held, or
    /// `None` (logged) if the resource manager failed.
    pub(crate) fn release_leaked(&self, ns: &str, tok: &str) -> Option<bool> {
        match self.resources.release(ns, tok) {
            Ok(held) => {
                if held {
                    self.stats.leaked_tokens.fetch_add(1, Ordering::Relaxed);
                }
                Some(held)
            }
            Err(e) => {
                log::error!("cannot release leaked token [{tok}] in [{ns}]: {e}");
                None
            }
        }
    }

    /// Abort (if due) + Finalize, release leftover tokens, then the terminal
    /// phase or the next attempt.
    pub(super) fn finish_step(&self, a: &mut Active) -> StepOutcome {
        let started = Instant::now();
        let id = &a.record.id.clone();
        let mut state = a.record.state.clone();
        let mut f = state.finishing.clone().unwrap_or_default();
        let attempt = state.attempt;
        let Calls {
            plugin,
            plugin_id,
            mut events,
            mut granted,
            mut released,
            mut errors,
            abort_retryable,
        } = self.finish_calls(a, &f);
        // What the execution still holds, read after the plugin's calls; a
        // backend that cannot tell fails this try like a plugin error.
        let leftover = self.resources.try_held_by(id).unwrap_or_else(|e| {
            errors.push((format!("cannot list the execution's resource tokens: {e}"), false));
            Vec::new()
        });

        let now = now_ms();
        state.updated_at_ms = now;
        if !errors.is_empty() {
            self.stats.handler_errors.fetch_add(1, Ordering::Relaxed);
            let panic = errors.iter().any(|e| e.1);
            if panic {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
            }
            let message = errors.into_iter().map(|e| e.0).collect::<Vec<_>>().join("; ");
            log::warn!("execution {id} attempt {attempt}: {message}");
            let error = HandlerError { message, panic };
            if failed_try(
                &mut state,
                &mut f,
                &error,
                &mut events,
                now,
                &self.limits(a),
                abort_retryable,
            ) {
                state.finishing = Some(f);
                self.stats.observe_latency(started.elapsed());
                let mut commit = RoundCommit::state_only(id, state);
                commit.set_events(events).set_tokens(granted, released);
                return StepOutcome {
                    commit,
                    next: Next::Resync,
                    task: a.record.task.clone(),
                    persist: true,
                };
            }
            log::error!(
                "execution {id}: giving up on Abort/Finalize after {} failures",
                f.failures
            );
        }

        // Tokens the plugin did not release: the host releases them.
        for (ns, tok, held_attempt) in leftover {
            log::warn!(
                "plugin [{plugin_id}] left resource token [{tok}] in [{ns}] after Finalize of execution {id} attempt {held_attempt}; releasing it"
            );
            if self.release_leaked(&ns, &tok).is_none() {
                continue;
            }
            granted.retain(|t| !(t.namespace == ns && t.token == tok));
            released.push((ns, tok));
        }

        let catalog = match state.phase {
            ExecPhase::Succeeding => self.catalog_entry(a, plugin.as_ref(), attempt),
            _ => None,
        };
        let done = Finished {
            events,
            granted,
            released,
            catalog,
        };
        let out = finished(id, state, a.record.task.clone(), done, now);
        self.stats.observe_latency(started.elapsed());
        out
    }

    /// The plugin calls of the finishing step of `a` (doing `f`): Abort if
    /// due, then Finalize, each in a fresh context.
    fn finish_calls(&self, a: &mut Active, f: &Finishing) -> Calls {
        let attempt = a.record.state.attempt;
        let mut events = Vec::new();
        let mut granted: Vec<TokenRow> = Vec::new();
        let mut released: Vec<(String, String)> = Vec::new();
        let mut errors: Vec<(String, bool)> = Vec::new();
        let mut abort_retryable = false;
        let mut plugin_id = a.record.plugin_id.clone().unwrap_or_else(|| "?".into());

        let plugin = match &a.spec.plugin {
            // Crash-loop protection: the plugin is not called again.
            _ if f.skip_plugin => None,
            Some(p) => Some(p.clone()),
            None => match self.plugins.resolve(&a.spec.template.task_type) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push((
                        format!("no plugin for task type [{}]: {e}", a.spec.template.task_type),
                        false,
                    ));
                    None
                }
            },
        };
        if let Some(plugin) = &plugin {
            plugin_id = plugin.id().to_string();
            let now = now_ms();
            if f.call_abort {
                let (r, buffered, gname) = self.with_context(a, plugin, Call::Abort, |ctx| plugin.abort(ctx));
                granted.extend(buffered.tokens.granted);
                released.extend(buffered.tokens.released);
                match r {
                    Err(e) => {
                        abort_retryable = e.retryable && e.code == CANCELLING_REMOTE_JOB;
                        errors.push((format!("failed to abort plugin [{}]: {e}", plugin.id()), e.is_panic()));
                    }
                    Ok(()) => {
                        let pid = Self::plugin_id(a, plugin);
                        let src = event_source(a, &pid, attempt, &gname, now, now);
                        let persisted = &a.record.task;
                        let flush_phase = if persisted.plugin_phase.is_failure() {
                            persisted.plugin_phase
                        } else {
                            Phase::ABORTED
                        };
                        for raw in &buffered.events {
                            let p = PhaseInfo::from_parts(
                                flush_phase,
                                persisted.plugin_phase_version + 1,
                                raw.reason().to_string(),
                                raw.info().cloned(),
                                raw.err().cloned(),
                                raw.cleanup_on_failure(),
                            );
                            events.push(task_event(&src, &p, TaskEventExtra::Raw));
                        }
                        let aborted = PhaseInfo::failed(
                            Phase::ABORTED,
                            Some(ExecutionError::new(
                                crate::model::ABORTED_CODE,
                                f.reason.clone(),
                                ErrorKind::User,
                            )),
                            None,
                        );
                        events.push(task_event(&src, &aborted, TaskEventExtra::None));
                    }
                }
            }
            let (r, buffered, _) = self.with_context(a, plugin, Call::Finalize, |ctx| plugin.finalize(ctx));
            granted.extend(buffered.tokens.granted);
            released.extend(buffered.tokens.released);
            if let Err(e) = r {
                errors.push((
                    format!("failed to finalize plugin [{}]: {e}", plugin.id()),
                    e.is_panic(),
                ));
            }
        }

        Calls {
            plugin,
            plugin_id,
            events,
            granted,
            released,
            errors,
            abort_retryable,
        }
    }

    /// The catalog entry a success of `a` writes with its terminal state:
    /// the attempt's committed outputs, if its task is cacheable.
    fn catalog_entry(
        &self,
        a: &Active,
        plugin: Option<&Arc<dyn Plugin>>,
        attempt: u32,
    ) -> Option<(String, LiteralMap)> {
        let plugin = plugin?;
        if !self.cacheable(a, plugin) || a.spec.template.interface.outputs.is_empty() {
            return None;
        }
        match self.store.outputs(&a.record.id, attempt) {
            Ok(outputs) => Some((self.catalog_store_key(a), outputs?)),
            Err(e) => {
                log::warn!(
                    "catalog entry for {} not written: its outputs cannot be read: {e}",
                    a.record.id
                );
                None
            }
        }
    }
}
