//! A `handle` round (docs/semantics.md#rounds), in three parts so that a
//! batch can run the middle part of several rounds at once:
//! [`Engine::round_start`] resolves the plugin and looks the catalog up,
//! the caller runs the plugin call ([`Engine::round_call`], or a batch),
//! and [`Engine::round_end`] turns the answer into a [`StepOutcome`].
//!
//! The decisions are functions of the step input, with no store or plugin
//! behind them: [`cache_hit`] (the catalog hit passed in), [`next_task`]
//! (the task state the answer leaves) and [`apply_phase`] (what the plugin
//! phase does to the execution).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_interface::{
    CatalogKey, ErrorKind, ExecutionError, LiteralMap, Phase, PhaseInfo, Plugin, PluginError, TaskExecutionContext,
    Transition,
};

use super::{abort_allowed, event_source, StepOutcome};
use crate::call_slots::Call;
use crate::catalog::key_string;
use crate::context::{RoundWrites, StateWrite};
use crate::events::{
    handler_error_event, round_failures_event, task_event, terminal_event, EventSource, TaskEventExtra,
};
use crate::model::{now_ms, ExecPhase, ExecState, HandlerErrorRecord, RoundCommit, TaskState};
use crate::outputs::validate_outputs;
use crate::retries::{after_permanent, decide_retryable};
use crate::scheduler::Next;
use crate::{Active, Engine};

/// A `handle` round up to its plugin call.
pub(crate) struct RoundStart {
    started: Instant,
    round_start: i64,
    state: ExecState,
    /// The plugin to call.
    pub(crate) plugin: Arc<dyn Plugin>,
}

/// The limits a round's decisions depend on: the engine's and the task's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// SYSTEM failures tolerated (docs/semantics.md#retries).
    pub system_retry_budget: u32,
    /// Attempts the task may make (docs/semantics.md#retries).
    pub max_attempts: u32,
    /// The task's timeout (docs/semantics.md#timeouts).
    pub timeout: Option<Duration>,
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
    StepOutcome {
        commit: RoundCommit::state_only(id, state)
            .with_task(attempt, task.clone())
            .with_events(events)
            .with_outputs(attempt, Some(outputs))
            .clearing_abort(),
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
            ExecutionError::new("Aborted", reason, ErrorKind::User)
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

impl Engine {
    fn limits(&self, a: &Active) -> Limits {
        Limits {
            system_retry_budget: self.cfg.system_retry_budget,
            max_attempts: a.spec.max_attempts(),
            timeout: a.spec.template.metadata.timeout,
        }
    }

    fn catalog_key(&self, a: &Active) -> CatalogKey {
        CatalogKey {
            identifier: a.spec.template.id.clone(),
            cache_version: a.spec.template.metadata.cache_version.clone(),
            inputs: a.inputs(),
        }
    }

    /// Whether `a`'s task is cached under `plugin` (docs/semantics.md#catalog).
    pub(super) fn cacheable(&self, a: &Active, plugin: &Arc<dyn Plugin>) -> bool {
        a.spec.template.metadata.discoverable && !plugin.properties().disable_node_level_caching
    }

    /// The store key of `a`'s catalog entry.
    pub(super) fn catalog_store_key(&self, a: &Active) -> String {
        key_string(&self.catalog_key(a))
    }

    /// The catalog's outputs for `a` at the start of an attempt of a
    /// cacheable task (docs/semantics.md#catalog); a failed lookup is a miss.
    fn catalog_hit(&self, a: &Active, plugin: &Arc<dyn Plugin>) -> Option<LiteralMap> {
        let ts = &a.record.task;
        if ts.plugin_phase != Phase::UNDEFINED || ts.plugin_phase_version != 0 || !self.cacheable(a, plugin) {
            return None;
        }
        match self.store.catalog_get(&self.catalog_store_key(a)) {
            Ok(hit) => hit,
            Err(e) => {
                log::warn!("catalog lookup for {} failed: {e}", a.record.id);
                None
            }
        }
    }

    pub(super) fn handle_round(&self, a: &mut Active) -> StepOutcome {
        match self.round_start(a) {
            Err(out) => *out,
            Ok(round) => self.round_call(a, round),
        }
    }

    /// A `handle` round from its plugin call on.
    pub(crate) fn round_call(&self, a: &mut Active, round: RoundStart) -> StepOutcome {
        let plugin = round.plugin.clone();
        let (result, buffered, gname) = self.with_context(a, &plugin, Call::Handle, |ctx| {
            plugin.handle(ctx as &dyn TaskExecutionContext)
        });
        self.round_end(a, round, result, buffered, gname)
    }

    /// The start of a `handle` round: the plugin, unless the round ends
    /// without calling it (no plugin, a catalog hit).
    pub(crate) fn round_start(&self, a: &mut Active) -> Result<RoundStart, Box<StepOutcome>> {
        let started = Instant::now();
        let round_start = now_ms();
        let state = a.record.state.clone();
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);

        let plugin = match &a.spec.plugin {
            Some(p) => p.clone(),
            None => match self.plugins.resolve(&a.spec.template.task_type) {
                Ok(p) => p,
                Err(e) => {
                    let msg = format!("no plugin for task type [{}]: {e}", a.spec.template.task_type);
                    return Err(Box::new(self.handler_error(
                        a,
                        state,
                        msg,
                        false,
                        RoundWrites::default(),
                        started,
                    )));
                }
            },
        };

        if let Some(outputs) = self.catalog_hit(a, &plugin) {
            let now = now_ms();
            let gname = self.attempt_name(a, &plugin);
            let pid = Self::plugin_id(a, &plugin);
            let src = event_source(a, &pid, state.attempt, &gname, now, now);
            let out = cache_hit(&a.record.id, state, outputs, &src);
            self.stats.observe_latency(started.elapsed());
            return Err(Box::new(out));
        }
        Ok(RoundStart {
            started,
            round_start,
            state,
            plugin,
        })
    }

    /// The rest of a `handle` round, from the plugin's answer.
    pub(crate) fn round_end(
        &self,
        a: &mut Active,
        round: RoundStart,
        result: Result<Transition, PluginError>,
        buffered: RoundWrites,
        gname: Arc<str>,
    ) -> StepOutcome {
        let RoundStart {
            started,
            round_start,
            mut state,
            plugin,
        } = round;
        let attempt = state.attempt;
        let ts = &a.record.task;
        let mut result: Result<Transition, PluginError> = result;
        if let Some(msg) = &buffered.tokens.never {
            // A quota or constraint of 0: fail permanently, whatever the plugin said.
            result = Ok(Transition::ephemeral(PhaseInfo::failure(
                "ResourceNeverAvailable",
                msg.clone(),
                None,
            )));
        }
        let info = match result {
            Err(e) => {
                let panic = e.is_panic();
                let msg = format!("failed to execute handle for plugin [{}]: {e}", plugin.id());
                return self.handler_error(a, state, msg, panic, buffered, started);
            }
            Ok(t) => t.into_info(),
        };
        if info.phase() == Phase::UNDEFINED || !info.phase().is_a_phase() {
            let msg = format!(
                "failed to execute handle for plugin [{}]: error converting plugin phase, received [{}]",
                plugin.id(),
                info.phase()
            );
            return self.handler_error(a, state, msg, false, buffered, started);
        }
        if info.info().is_none() && info.err().is_none() {
            let msg = format!(
                "failed to execute handle for plugin [{}]: transition doesn't have task info nor an execution error filled",
                plugin.id()
            );
            return self.handler_error(a, state, msg, false, buffered, started);
        }

        // The round is applied from here on.
        let now = now_ms();
        let mut info = info;
        let observed = info.phase() == ts.plugin_phase && info.version() == ts.plugin_phase_version;
        let mut post_process = !observed;
        if !observed && info.phase() == ts.plugin_phase && info.version() > self.cfg.max_plugin_phase_versions {
            let msg = format!(
                "Total number of phase versions exceeded for phase [{}] in Plugin [{}]. Attempted to set version to [{}], max allowed [{}]",
                info.phase(),
                plugin.id(),
                info.version(),
                self.cfg.max_plugin_phase_versions
            );
            info = PhaseInfo::failed(
                Phase::PERMANENT_FAILURE,
                Some(ExecutionError::new(
                    "TooManyPluginPhaseVersions",
                    msg,
                    ErrorKind::Unknown,
                )),
                info.info().cloned(),
            );
            post_process = false;
        }
        let outputs_now = buffered.outputs.clone();
        let error_doc_now = buffered.error_document.clone();
        if post_process && info.phase() == Phase::SUCCESS {
            let id = &a.record.id;
            let stored_outputs = || self.store.outputs(id, attempt).ok().flatten();
            let stored_error = || self.store.error_document(id, attempt).ok().flatten();
            let outputs = outputs_now.clone().or_else(stored_outputs);
            let error_doc = error_doc_now.clone().or_else(stored_error);
            if let Some((err, recoverable)) = validate_outputs(&a.spec.template, outputs.as_ref(), error_doc.as_ref()) {
                let phase = if recoverable {
                    Phase::RETRYABLE_FAILURE
                } else {
                    Phase::PERMANENT_FAILURE
                };
                info = PhaseInfo::failed(phase, Some(err), info.info().cloned());
            }
        }

        let task = next_task(ts, &info, buffered.state.as_ref(), now);

        let mut events = Vec::new();
        if !observed {
            let pid = Self::plugin_id(a, &plugin);
            let src = event_source(a, &pid, attempt, &gname, round_start, now);
            for raw in &buffered.events {
                events.push(task_event(&src, raw, TaskEventExtra::Raw));
            }
            let pool = buffered
                .tokens
                .granted
                .iter()
                .map(|t| (t.namespace.clone(), t.token.clone()))
                .collect();
            events.push(task_event(&src, &info, TaskEventExtra::Pool(pool)));
        }

        state.handler_errors = 0;
        state.updated_at_ms = now;
        let next = apply_phase(&mut state, &info, &task, observed, now, &self.limits(a));

        // A polling round that changed nothing is not written (most rounds
        // of a long task): the store keeps the previous, identical values.
        let old = &a.record.state;
        let unchanged = observed
            && buffered.state.is_none()
            && outputs_now.is_none()
            && error_doc_now.is_none()
            && buffered.tokens.granted.is_empty()
            && buffered.tokens.released.is_empty()
            && task == *ts
            && state.phase == old.phase
            && old.handler_errors == 0
            && state.system_failures == old.system_failures
            && state.finishing == old.finishing;
        if unchanged {
            state.updated_at_ms = old.updated_at_ms;
            self.stats.unchanged_rounds.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.observe_latency(started.elapsed());
        StepOutcome {
            commit: RoundCommit::state_only(&a.record.id, state)
                .with_task(attempt, task.clone())
                .with_events(events)
                .with_outputs(attempt, outputs_now)
                .with_error_document(attempt, error_doc_now)
                .with_tokens(buffered.tokens.granted, buffered.tokens.released),
            next,
            task,
            persist: !unchanged,
        }
    }

    /// A failed round (docs/semantics.md#handler-errors): counted, and after
    /// `max_round_failures` in a row a retryable SYSTEM failure.
    fn handler_error(
        &self,
        a: &Active,
        mut state: ExecState,
        message: String,
        panic: bool,
        buffered: RoundWrites,
        started: Instant,
    ) -> StepOutcome {
        let now = now_ms();
        self.stats.handler_errors.fetch_add(1, Ordering::Relaxed);
        if panic {
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
        }
        log::warn!("execution {} attempt {}: {message}", a.record.id, state.attempt);
        state.handler_errors += 1;
        state.updated_at_ms = now;
        state.last_handler_error = Some(Box::new(HandlerErrorRecord {
            message: message.clone(),
            panic,
            at_ms: now,
            attempt: state.attempt,
        }));
        let mut events = vec![handler_error_event(
            state.attempt,
            now,
            &message,
            panic,
            state.handler_errors,
        )];
        let mut next = Next::Resync;
        if state.handler_errors >= self.cfg.max_round_failures {
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
            let failing = abort_allowed(&a.record.task);
            retryable(&mut state, &err, failing, &self.limits(a));
            events.push(round_failures_event(state.attempt, now, &err));
            next = Next::Now;
        }
        self.stats.observe_latency(started.elapsed());
        StepOutcome {
            commit: RoundCommit::state_only(&a.record.id, state)
                .with_events(events)
                .with_tokens(buffered.tokens.granted, buffered.tokens.released),
            next,
            task: a.record.task.clone(),
            persist: true,
        }
    }
}
