//! Why an execution is not progressing, for its status and the operator:
//! its bound plugin is not loaded, or its plugin call has run past
//! `call_warn_after` (in-process calls cannot be interrupted: the status
//! says so instead of a silent Queued, and an abort answers "abort pending"
//! until the call returns). Also the watchdog's slow-call reports and the
//! shutdown's list of calls it leaves behind.

use std::time::Duration;

use super::call_slots::Call;
use super::events::call_notice_event;
use super::workers::{human_duration, Running};
use super::Engine;
use crate::model::{event_kind, now_ms, ExecutionRecord};
use crate::sync::lock;

impl Engine {
    /// The one-line `waiting` of an execution's status, if it is stuck.
    pub(crate) fn waiting(&self, rec: &ExecutionRecord) -> Option<String> {
        if rec.state.phase.is_terminal() {
            return None;
        }
        let why = match lock(&self.unbound).get(&rec.id) {
            Some(plugin) => format!("plugin \"{plugin}\" is not loaded"),
            None => {
                let step = self.pool.step_of(&rec.id)?;
                if step.elapsed < self.cfg.call_warn_after {
                    return None;
                }
                let call = self.calls.call_of(step.worker)?;
                in_progress(call, step.elapsed)
            }
        };
        Some(match rec.abort_requested {
            Some(_) => format!("abort pending: {why}"),
            None => why,
        })
    }

    /// Warns about (and records an event on) every plugin call that has
    /// run past `call_warn_after`, once per step.
    pub(crate) fn report_slow_calls(&self) {
        for step in self.pool.newly_slow(self.cfg.call_warn_after) {
            let Some(call) = self.calls.call_of(step.worker) else {
                continue;
            };
            let message = format!(
                "{} (call_warn_after is {}); in-process calls cannot be interrupted: an abort completes when it \
                 returns, or isolate the plugin",
                in_progress(call, step.elapsed),
                human_duration(self.cfg.call_warn_after)
            );
            log::warn!("execution {}: {message}", step.id);
            let event = call_notice_event(
                event_kind::SLOW_CALL,
                "SlowCall",
                step.attempt,
                now_ms(),
                call,
                &message,
            );
            if let Err(e) = self.store.append_events(&step.id, &[event]) {
                log::warn!("cannot record the slow call on execution {}: {e}", step.id);
            }
        }
    }

    /// Shutdown gave up waiting after `grace`: says which calls still run.
    pub(crate) fn log_calls_left_behind(&self, grace: Duration) {
        let left: Vec<String> = self.pool.running().iter().map(|r| self.describe(r)).collect();
        log::warn!(
            "engine shutdown: the grace period ({}) is over with {} step(s) still running: {}; they are left \
             behind and redone at the next start",
            human_duration(grace),
            left.len(),
            left.join(", ")
        );
    }

    fn describe(&self, r: &Running) -> String {
        match self.calls.call_of(r.worker) {
            Some(call) => format!("{} ({} for {})", r.id, call.name(), human_duration(r.elapsed)),
            None => format!("{} (step for {})", r.id, human_duration(r.elapsed)),
        }
    }
}

/// `plugin call handle in progress for 5m`.
fn in_progress(call: Call, elapsed: Duration) -> String {
    format!(
        "plugin call {} in progress for {}",
        call.name(),
        human_duration(elapsed)
    )
}
