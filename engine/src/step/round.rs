//! A `handle` round (docs/semantics.md#rounds), in three parts so that a
//! batch can run the middle part of several rounds at once:
//! [`Engine::round_start`] resolves the plugin and looks the catalog up,
//! the caller runs the plugin call ([`Engine::round_call`], or a batch),
//! and [`Engine::round_end`] reads what the answer needs from the store.
//! What the round decides is in [`super::answer`], from what these pass in.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use kozmo_interface::{
    CatalogKey, LiteralMap, Phase, PhaseInfo, Plugin, PluginError, TaskExecutionContext, Transition,
};

use super::answer::{
    answer_info, cache_hit, cap_versions, is_observed, round_applied, round_failed, Answer, HandlerError, Limits,
};
use super::{event_source, StepOutcome};
use crate::call_slots::Call;
use crate::catalog::key_string;
use crate::context::RoundWrites;
use crate::events::{task_event, TaskEventExtra};
use crate::model::{now_ms, ExecState};
use crate::outputs::validate_outputs;
use crate::{Active, Engine};

/// A `handle` round up to its plugin call.
pub(crate) struct RoundStart {
    started: Instant,
    round_start: i64,
    state: ExecState,
    /// The plugin to call.
    pub(crate) plugin: Arc<dyn Plugin>,
}

impl Engine {
    /// The limits of `a`'s steps.
    pub(super) fn limits(&self, a: &Active) -> Limits {
        Limits {
            system_retry_budget: self.cfg.system_retry_budget,
            max_attempts: a.spec.max_attempts(),
            timeout: a.spec.template.metadata.timeout,
            max_round_failures: self.cfg.max_round_failures,
            max_plugin_phase_versions: self.cfg.max_plugin_phase_versions,
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
                    let error = HandlerError {
                        message: msg,
                        panic: false,
                    };
                    return Err(Box::new(self.handler_error(
                        a,
                        state,
                        &error,
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
            state,
            plugin,
        } = round;
        let info = match answer_info(result, buffered.tokens.never.as_ref(), plugin.id()) {
            Ok(info) => info,
            Err(error) => return self.handler_error(a, state, &error, buffered, started),
        };

        // The round is applied from here on.
        let now = now_ms();
        let attempt = state.attempt;
        let limits = self.limits(a);
        let ts = &a.record.task;
        let observed = is_observed(&info, ts);
        let mut info = info;
        let post_process = cap_versions(&mut info, ts, observed, &limits, plugin.id());
        if post_process && info.phase() == Phase::SUCCESS {
            let id = &a.record.id;
            // Nothing to read when this engine knows nothing was stored.
            let nothing = a.stored_nothing_for(attempt);
            let stored_outputs = || {
                (!nothing)
                    .then(|| self.store.outputs(id, attempt).ok().flatten())
                    .flatten()
            };
            let stored_error = || {
                (!nothing)
                    .then(|| self.store.error_document(id, attempt).ok().flatten())
                    .flatten()
            };
            let outputs = buffered.outputs.clone().or_else(stored_outputs);
            let error_doc = buffered.error_document.clone().or_else(stored_error);
            if let Some((err, recoverable)) = validate_outputs(&a.spec.template, outputs.as_ref(), error_doc.as_ref()) {
                let phase = if recoverable {
                    Phase::RETRYABLE_FAILURE
                } else {
                    Phase::PERMANENT_FAILURE
                };
                info = PhaseInfo::failed(phase, Some(err), info.info().cloned());
            }
        }

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

        let answer = Answer {
            old: &a.record.state,
            persisted: ts,
            info: &info,
            observed,
            writes: buffered,
            events,
        };
        let out = round_applied(&a.record.id, state, answer, now, &limits);
        if !out.persist {
            self.stats.unchanged_rounds.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.observe_latency(started.elapsed());
        out
    }

    /// A failed round: counted and logged, then [`round_failed`].
    fn handler_error(
        &self,
        a: &Active,
        state: ExecState,
        error: &HandlerError,
        buffered: RoundWrites,
        started: Instant,
    ) -> StepOutcome {
        let now = now_ms();
        self.stats.handler_errors.fetch_add(1, Ordering::Relaxed);
        if error.panic {
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
        }
        log::warn!("execution {} attempt {}: {}", a.record.id, state.attempt, error.message);
        let out = round_failed(
            &a.record.id,
            state,
            &a.record.task,
            error,
            buffered,
            now,
            &self.limits(a),
        );
        self.stats.observe_latency(started.elapsed());
        out
    }
}
