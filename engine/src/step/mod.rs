//! One step of one execution: a `handle` round (docs/semantics.md#rounds) or a
//! finishing step (Abort/Finalize, docs/semantics.md#abort-and-finalize). A step computes a [`RoundCommit`] (everything it
//! changes, applied atomically by the store, catalog entries included) and
//! when to run next; it never writes to the store itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use kozmo_interface::{
    CatalogKey, ErrorKind, ExecutionError, Phase, PhaseInfo, Plugin, PluginError, TaskExecutionContext, Transition,
};

use super::call_slots::Call;
use super::context::{generated_name, AttemptInfo, RoundContext, RoundWrites, Services, StateWrite};
use super::events::{
    handler_error_event, retry_event, round_failures_event, task_event, terminal_event, EventSource, TaskEventExtra,
};
use super::outputs::validate_outputs;
use super::retries::{after_permanent, decide_retryable};
use super::scheduler::Next;
use super::{Active, Engine};
use crate::catalog::key_string;
use crate::model::{now_ms, ExecPhase, ExecState, HandlerErrorRecord, RoundCommit, TaskState, TokenRow};

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

/// A `handle` round up to its plugin call.
pub(crate) struct RoundStart {
    started: Instant,
    round_start: i64,
    state: ExecState,
    /// The plugin to call.
    pub(crate) plugin: Arc<dyn Plugin>,
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

/// Whether Abort is called for a persisted task state
/// (docs/semantics.md#abort-and-finalize).
fn abort_allowed(task: &TaskState) -> bool {
    !task.plugin_phase.is_terminal() || (task.plugin_phase.is_failure() && task.cleanup_on_failure)
}

impl Engine {
    fn interruptible(&self, a: &Active, system_failures: u32) -> bool {
        let base = a
            .spec
            .metadata
            .interruptible
            .unwrap_or(a.spec.template.metadata.interruptible);
        // Threshold -1: off once failures >= (system budget + 1) - 1
        // (docs/semantics.md#interruptible).
        base && system_failures < self.cfg.system_retry_budget
    }

    fn name_max_len(&self, plugin: Option<&Arc<dyn Plugin>>) -> u32 {
        plugin.map_or(kozmo_interface::DEFAULT_GENERATED_NAME_MAX_LENGTH, |p| {
            p.properties().effective_generated_name_max_length()
        })
    }

    /// The generated name of `a`'s current attempt (kept while it runs).
    fn attempt_name(&self, a: &mut Active, plugin: &Arc<dyn Plugin>) -> Arc<str> {
        let attempt = a.record.state.attempt;
        match &a.gname {
            Some((n, g)) if *n == attempt => g.clone(),
            _ => {
                let g: Arc<str> =
                    generated_name(self.name_max_len(Some(plugin)), &a.record.id, a.spec.node_id(), attempt).into();
                a.gname = Some((attempt, g.clone()));
                g
            }
        }
    }

    /// The plugin's id as shared text.
    fn plugin_id(a: &Active, plugin: &Arc<dyn Plugin>) -> Arc<str> {
        match &a.spec.plugin_id {
            Some(id) if a.spec.plugin.is_some() => id.clone(),
            _ => Arc::from(plugin.id()),
        }
    }

    /// Runs plugin call `call` (`f`) with a fresh context for the current
    /// attempt of `a`, recorded in the worker's call slot while it runs.
    fn with_context<R>(
        &self,
        a: &mut Active,
        plugin: &Arc<dyn Plugin>,
        call: Call,
        f: impl FnOnce(&RoundContext<'_>) -> R,
    ) -> (R, RoundWrites, Arc<str>) {
        let names = self.context_names(a, plugin);
        let ctx = self.context(a, plugin, &names);
        let r = {
            let _in_call = self.calls.enter(&a.record.id, call);
            f(&ctx)
        };
        (r, ctx.into_buffered(), names.0)
    }

    /// The generated name and plugin id a context of `a` borrows.
    pub(crate) fn context_names(&self, a: &mut Active, plugin: &Arc<dyn Plugin>) -> (Arc<str>, Arc<str>) {
        (self.attempt_name(a, plugin), Self::plugin_id(a, plugin))
    }

    /// A fresh context for the current attempt of `a`.
    pub(crate) fn context<'a>(
        &'a self,
        a: &'a Active,
        plugin: &Arc<dyn Plugin>,
        (gname, plugin_id): &'a (Arc<str>, Arc<str>),
    ) -> RoundContext<'a> {
        let st = &a.record.state;
        RoundContext::new(
            Services {
                secrets: &self.secrets,
                data: &self.data,
                catalog: &self.catalog,
                sched: &self.sched,
                resources: &self.resources,
            },
            AttemptInfo {
                id: &a.record.id,
                spec: &a.spec.spec,
                inputs: a.inputs_json(),
                attempt: st.attempt,
                name_max_len: self.name_max_len(Some(plugin)),
                generated_name: gname,
                interruptible: self.interruptible(a, st.system_failures),
                plugin_id,
            },
            (a.record.task.plugin_state_version, a.record.task.plugin_state.clone()),
            &a.shared.files,
        )
    }

    /// Runs the next step of `a`.
    pub(crate) fn step(&self, a: &mut Active) -> StepOutcome {
        let st = &a.record.state;
        if st.phase.is_finishing() {
            return self.finish_step(a);
        }
        if let Some(reason) = &a.record.abort_requested {
            let mut state = st.clone();
            state.updated_at_ms = now_ms();
            let error = ExecutionError::new("Aborted", reason.clone(), ErrorKind::User);
            state.abort(abort_allowed(&a.record.task), reason.clone(), error);
            let mut commit = RoundCommit::state_only(&a.record.id, state);
            commit.clear_abort = true;
            return StepOutcome {
                commit,
                next: Next::Now,
                task: a.record.task.clone(),
                persist: true,
            };
        }
        self.handle_round(a)
    }

    fn catalog_key(&self, a: &Active) -> CatalogKey {
        CatalogKey {
            identifier: a.spec.template.id.clone(),
            cache_version: a.spec.template.metadata.cache_version.clone(),
            inputs: a.inputs(),
        }
    }

    fn cacheable(&self, a: &Active, plugin: &Arc<dyn Plugin>) -> bool {
        a.spec.template.metadata.discoverable && !plugin.properties().disable_node_level_caching
    }

    fn handle_round(&self, a: &mut Active) -> StepOutcome {
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
        let ts = &a.record.task;
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

        // Catalog (docs/semantics.md#catalog): a hit at the start of an
        // attempt completes the execution without calling the plugin.
        if ts.plugin_phase == Phase::UNDEFINED && ts.plugin_phase_version == 0 && self.cacheable(a, &plugin) {
            match self.store.catalog_get(&key_string(&self.catalog_key(a))) {
                Ok(Some(outputs)) => return Err(Box::new(self.cache_hit(a, &plugin, state, outputs, started))),
                Ok(None) => {}
                Err(e) => log::warn!("catalog lookup for {} failed: {e}", a.record.id),
            }
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

        // New task state: the plugin's put/reset is persisted even when the
        // event is suppressed (docs/semantics.md#phase-versions).
        let (state_version, state_bytes) = match &buffered.state {
            Some(StateWrite::Put(v, b)) => (*v, Some(b.clone())),
            Some(StateWrite::Reset) => (0, None),
            None => (ts.plugin_state_version, ts.plugin_state.clone()),
        };
        let task = TaskState {
            plugin_phase: info.phase(),
            plugin_phase_version: info.version(),
            plugin_state: state_bytes,
            plugin_state_version: state_version,
            cleanup_on_failure: ts.cleanup_on_failure || info.cleanup_on_failure(),
            last_phase_updated_at_ms: if info.phase() != ts.plugin_phase {
                now
            } else {
                ts.last_phase_updated_at_ms
            },
        };

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
        let mut next = if observed { Next::Resync } else { Next::Now };
        let phase = info.phase();
        if is_running_phase(phase) {
            state.phase = ExecPhase::Running;
            if let Some(timeout) = a.spec.template.metadata.timeout {
                if now - state.attempt_started_at_ms > timeout.as_millis() as i64 {
                    let err = ExecutionError::new(
                        "TimeoutExpired",
                        format!("task execution timeout [{}] expired", humantime(timeout)),
                        ErrorKind::User,
                    );
                    self.retryable(a, &mut state, &err, true);
                    next = Next::Now;
                }
            }
        } else if phase == Phase::SUCCESS {
            state.phase = ExecPhase::Succeeding;
            state.finishing = Some(Box::default());
            next = Next::Now;
        } else if phase == Phase::RETRYABLE_FAILURE {
            let err = info.err().cloned().unwrap_or_else(ExecutionError::unknown);
            self.retryable(a, &mut state, &err, abort_allowed(&task));
            next = Next::Now;
        } else if phase == Phase::PERMANENT_FAILURE {
            let err = info.err().cloned().unwrap_or_else(ExecutionError::unknown);
            state.system_failures = after_permanent(&err, state.system_failures);
            state.fail(abort_allowed(&task), err);
            next = Next::Now;
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
            next = Next::Now;
        }

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
            commit: RoundCommit {
                task: Some((attempt, task.clone())),
                events,
                outputs: outputs_now.map(|o| (attempt, o)),
                error_document: error_doc_now.map(|d| (attempt, d)),
                tokens_granted: buffered.tokens.granted,
                tokens_released: buffered.tokens.released,
                ..RoundCommit::state_only(&a.record.id, state)
            },
            next,
            task,
            persist: !unchanged,
        }
    }

    /// A retryable failure of the current attempt (docs/semantics.md#retries): Retrying if the
    /// budget allows, else Failing with `RetriesExhausted|...`.
    fn retryable(&self, a: &Active, state: &mut ExecState, err: &ExecutionError, abort_if_failing: bool) {
        let d = decide_retryable(
            err,
            state.attempt,
            state.system_failures,
            self.cfg.system_retry_budget,
            a.spec.max_attempts(),
        );
        state.system_failures = d.system_failures;
        if d.eligible {
            state.retry(err.message.clone(), d.error);
        } else {
            state.fail(abort_if_failing, d.error);
        }
    }

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
            self.retryable(a, &mut state, &err, failing);
            events.push(round_failures_event(state.attempt, now, &err));
            next = Next::Now;
        }
        self.stats.observe_latency(started.elapsed());
        StepOutcome {
            commit: RoundCommit {
                events,
                tokens_granted: buffered.tokens.granted,
                tokens_released: buffered.tokens.released,
                ..RoundCommit::state_only(&a.record.id, state)
            },
            next,
            task: a.record.task.clone(),
            persist: true,
        }
    }

    fn cache_hit(
        &self,
        a: &mut Active,
        plugin: &Arc<dyn Plugin>,
        mut state: ExecState,
        outputs: kozmo_interface::LiteralMap,
        started: Instant,
    ) -> StepOutcome {
        let now = now_ms();
        let attempt = state.attempt;
        let gname = self.attempt_name(a, plugin);
        let pid = Self::plugin_id(a, plugin);
        let info = PhaseInfo::success(None);
        let src = event_source(a, &pid, attempt, &gname, now, now);
        let task = TaskState {
            plugin_phase: Phase::SUCCESS,
            plugin_phase_version: 0,
            last_phase_updated_at_ms: now,
            ..TaskState::default()
        };
        state.phase = ExecPhase::Succeeded;
        state.updated_at_ms = now;
        state.finishing = None;
        self.stats.observe_latency(started.elapsed());
        StepOutcome {
            commit: RoundCommit {
                task: Some((attempt, task.clone())),
                events: vec![
                    task_event(&src, &info, TaskEventExtra::CacheHit),
                    terminal_event(attempt, now, ExecPhase::Succeeded, None, true),
                ],
                outputs: Some((attempt, outputs)),
                clear_abort: true,
                ..RoundCommit::state_only(&a.record.id, state)
            },
            next: Next::Done,
            task,
            persist: true,
        }
    }

    /// Abort (if due) + Finalize, release leftover tokens, then the terminal
    /// phase or the next attempt.
    fn finish_step(&self, a: &mut Active) -> StepOutcome {
        let started = Instant::now();
        let id = &a.record.id.clone();
        let mut state = a.record.state.clone();
        let mut f = state.finishing.clone().unwrap_or_default();
        let attempt = state.attempt;
        let mut events = Vec::new();
        let mut granted: Vec<TokenRow> = Vec::new();
        let mut released: Vec<(String, String)> = Vec::new();
        let mut errors: Vec<(String, bool)> = Vec::new();
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
                    Err(e) => errors.push((format!("failed to abort plugin [{}]: {e}", plugin.id()), e.is_panic())),
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
                            Some(ExecutionError::new("Task Aborted", f.reason.clone(), ErrorKind::User)),
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

        let now = now_ms();
        state.updated_at_ms = now;
        if !errors.is_empty() {
            f.failures += 1;
            self.stats.handler_errors.fetch_add(1, Ordering::Relaxed);
            let panic = errors.iter().any(|e| e.1);
            if panic {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
            }
            let message = errors.into_iter().map(|e| e.0).collect::<Vec<_>>().join("; ");
            log::warn!("execution {id} attempt {attempt}: {message}");
            state.last_handler_error = Some(Box::new(HandlerErrorRecord {
                message: message.clone(),
                panic,
                at_ms: now,
                attempt,
            }));
            events.push(handler_error_event(attempt, now, &message, panic, f.failures));
            if f.failures < self.cfg.max_round_failures {
                state.finishing = Some(f);
                self.stats.observe_latency(started.elapsed());
                return StepOutcome {
                    commit: RoundCommit {
                        events,
                        tokens_granted: granted,
                        tokens_released: released,
                        ..RoundCommit::state_only(id, state)
                    },
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
        for (ns, tok, held_attempt) in self.resources.held_by(id) {
            log::warn!(
                "plugin [{plugin_id}] left resource token [{tok}] in [{ns}] after Finalize of execution {id} attempt {held_attempt}; releasing it"
            );
            if let Err(e) = self.resources.release(&ns, &tok) {
                log::error!("cannot release leaked token [{tok}] in [{ns}]: {e}");
                continue;
            }
            self.stats.leaked_tokens.fetch_add(1, Ordering::Relaxed);
            granted.retain(|t| !(t.namespace == ns && t.token == tok));
            released.push((ns, tok));
        }

        let mut commit = RoundCommit {
            events,
            tokens_granted: granted,
            tokens_released: released,
            ..RoundCommit::state_only(id, state.clone())
        };
        let mut task = a.record.task.clone();
        let next;
        match state.phase {
            ExecPhase::Retrying => {
                commit.events.push(retry_event(attempt, now, f.error.as_ref()));
                state.attempt += 1;
                state.attempt_started_at_ms = now;
                state.handler_errors = 0;
                state.finishing = None;
                state.phase = ExecPhase::Running;
                task = TaskState {
                    last_phase_updated_at_ms: now,
                    ..TaskState::default()
                };
                commit.task = Some((state.attempt, task.clone()));
                next = Next::Now;
            }
            phase => {
                let terminal = match phase {
                    ExecPhase::Succeeding => ExecPhase::Succeeded,
                    ExecPhase::Failing => ExecPhase::Failed,
                    _ => ExecPhase::Aborted,
                };
                if terminal == ExecPhase::Succeeded {
                    commit.catalog = self.catalog_entry(a, plugin.as_ref(), attempt);
                }
                if terminal == ExecPhase::Aborted && !task.plugin_phase.is_terminal() {
                    task.plugin_phase = Phase::ABORTED;
                    task.plugin_phase_version = 0;
                    task.last_phase_updated_at_ms = now;
                    commit.task = Some((attempt, task.clone()));
                }
                state.phase = terminal;
                state.error = if terminal == ExecPhase::Succeeded {
                    None
                } else {
                    f.error.clone().map(Box::new)
                };
                state.finishing = None;
                commit
                    .events
                    .push(terminal_event(attempt, now, terminal, state.error.as_deref(), false));
                commit.clear_abort = true;
                next = Next::Done;
            }
        }
        commit.state = state;
        self.stats.observe_latency(started.elapsed());
        StepOutcome {
            commit,
            next,
            task,
            persist: true,
        }
    }

    /// The catalog entry a success of `a` writes with its terminal state:
    /// the attempt's committed outputs, if its task is cacheable.
    fn catalog_entry(
        &self,
        a: &Active,
        plugin: Option<&Arc<dyn Plugin>>,
        attempt: u32,
    ) -> Option<(String, kozmo_interface::LiteralMap)> {
        let plugin = plugin?;
        if !self.cacheable(a, plugin) || a.spec.template.interface.outputs.is_empty() {
            return None;
        }
        match self.store.outputs(&a.record.id, attempt) {
            Ok(outputs) => Some((key_string(&self.catalog_key(a)), outputs?)),
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

/// `90s`, `1.5s`, `250ms`.
fn humantime(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
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
