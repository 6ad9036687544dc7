//! Crash-loop protection for in-process plugins: an execution whose plugin
//! call was in progress at `crash_loop_limit` consecutive unclean stops of
//! the daemon is failed permanently with `PluginCrashed` at the next start,
//! without calling its plugin again, so the daemon comes up and every other
//! execution resumes.
//!
//! The calls in progress come from [`super::call_slots`]; the consecutive
//! counts are durable in the store ([`Store::count_crashes`]), so they
//! survive the restarts they count.

use std::collections::HashMap;

use kozmo_interface::{ErrorKind, ExecutionError};

use super::call_slots::{Call, Previous};
use super::events::call_notice_event;
use crate::model::{event_kind, now_ms, EventRow, ExecState, ExecutionRecord};
use crate::store::{CrashVictim, Store};

/// An execution that was inside a plugin call when the daemon died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Crashed {
    /// Consecutive unclean stops inside its plugin calls, this one included.
    pub(crate) crashes: u32,
    /// The call of the last one.
    pub(crate) call: Call,
}

/// After an unclean stop: counts the crash for every execution that was
/// inside a plugin call (the others start over) and returns them. A store failure is logged and counts nothing (the
/// daemon still starts).
pub(crate) fn count(store: &dyn Store, previous: &Previous) -> HashMap<String, Crashed> {
    let victims: Vec<CrashVictim> = previous
        .in_calls
        .iter()
        .map(|(id, call)| CrashVictim {
            execution_id: id.clone(),
            call: call.name().to_string(),
        })
        .collect();
    let now = now_ms();
    let counts = match store.count_crashes(&victims, now) {
        Ok(c) => c,
        Err(e) => {
            log::error!("crash-loop protection: cannot record the crashes: {e}");
            return HashMap::new();
        }
    };
    if previous.in_calls.is_empty() {
        log::warn!("the previous engine on this data directory stopped uncleanly outside any plugin call");
    }
    previous
        .in_calls
        .iter()
        .zip(counts)
        .map(|((id, call), crashes)| (id.clone(), Crashed { crashes, call: *call }))
        .collect()
}

/// A crashed execution being recovered: records the crash on it and, at
/// the limit, fails it ([`fail`]); `plugin_id`: the plugin it runs under.
pub(crate) fn recovering(
    store: &dyn Store,
    rec: &mut ExecutionRecord,
    plugin_id: Option<&str>,
    crashed: &Crashed,
    limit: u32,
) {
    let event = event(&rec.id, rec.state.attempt, crashed, limit);
    if let Err(e) = store.append_events(&rec.id, &[event]) {
        log::warn!("cannot record the crash on execution {}: {e}", rec.id);
    }
    if over_limit(crashed, limit) {
        let pid = rec.plugin_id.as_deref().or(plugin_id).unwrap_or("?");
        fail(&mut rec.state, &rec.id, pid, crashed);
    }
}

/// The event recorded on an execution the daemon died in, and its log line.
fn event(id: &str, attempt: u32, crashed: &Crashed, limit: u32) -> EventRow {
    let message = format!(
        "the daemon stopped uncleanly during plugin call {} of execution {id} ({} time(s) in a row{})",
        crashed.call.name(),
        crashed.crashes,
        if limit > 0 {
            format!("; it is failed at {limit}")
        } else {
            String::new()
        }
    );
    log::error!("crash-loop protection: {message}");
    call_notice_event(
        event_kind::PLUGIN_CRASH,
        "PluginCrash",
        attempt,
        now_ms(),
        crashed.call,
        &message,
    )
}

/// Whether `crashed` reached the limit (0 = protection off).
fn over_limit(crashed: &Crashed, limit: u32) -> bool {
    limit > 0 && crashed.crashes >= limit
}

/// Moves `state` to Failing with `PluginCrashed`: the finishing step calls
/// neither Abort nor Finalize (the same library crashed the daemon; calling
/// it again may crash it again) and only releases what the execution holds.
fn fail(state: &mut ExecState, id: &str, plugin_id: &str, crashed: &Crashed) {
    let message = format!(
        "plugin \"{plugin_id}\" crashed the daemon {} times in a row during {} of execution {id}; the execution \
         is failed without calling its abort or finalize. Run the plugin in its own process: kozmo serve \
         --isolate {plugin_id}",
        crashed.crashes,
        crashed.call.name()
    );
    log::error!("crash-loop protection: {message}");
    state.updated_at_ms = now_ms();
    state.fail_without_plugin(
        "plugin crashed",
        ExecutionError::new("PluginCrashed", message, ErrorKind::System),
    );
}
