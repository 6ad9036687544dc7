//! The `sleep-quota` plugin: sleeps, but only so many tasks at once — the
//! resource-manager example.
//!
//! Task type `sleep-quota` (plugin id `sleep-quota`).
//!
//! ## Configuration
//!
//! * At load time the plugin registers a quota for its resource namespace
//!   [`NAMESPACE`] (`slots`; the host prefixes it with the manager and plugin
//!   ids). The quota is the secret [`QUOTA_SECRET`] (`SLEEP_QUOTA`), a
//!   positive integer, when the host has it; otherwise [`DEFAULT_QUOTA`] (2).
//!   A secret that is not a positive integer fails the load (`BadQuota`).
//! * It registers the counter `sleeps_completed` in its metrics scope.
//!
//! ## The task
//!
//! ```json
//! {"type": "sleep-quota", "inputs": {"seconds": 2}}
//! ```
//!
//! How long to sleep: input `seconds` (integer, float or duration), else
//! `custom.seconds` (a number), else 1 second. A negative or non-finite
//! value fails permanently (`BadInput`, before any slot is taken).
//!
//! Output: `slept_seconds` (float): the time from getting a slot to the round
//! that noticed the sleep was over (at least the requested time).
//!
//! ## Rounds (the usual pattern of a quota-respecting plugin, docs/semantics.md#resources)
//!
//! 1. No state: allocate the token (the task's generated name) in `slots`.
//!    * `Granted`: put the state ([`SleepState`]: when the slot was taken,
//!      how long to sleep) and report Queued (version 0, "slot acquired").
//!    * `Exhausted` or `NamespaceQuotaExceeded`: report WaitingForResources
//!      (version 0) and keep no state, so the next round asks again.
//! 2. With state: Running (version 0, the remaining time in
//!    `custom_info`) until the time is up, then Success with the output and
//!    the counter incremented. `handle` never sleeps itself: a Running
//!    round sets an alarm (one thread per sleeping execution, at most one
//!    each) that signals the execution when its time is up, so the round
//!    that succeeds runs then, not at the daemon's next resync.
//! 3. `finalize` releases the token (releasing a token not held is fine, so
//!    it is idempotent); `abort` has nothing to do since `finalize` follows.

#![deny(missing_docs)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kozmo_interface::kit::{now_ms, TaskContextExt};
use kozmo_interface::serde_json::{self, json};
use kozmo_interface::{
    Counter, Literal, LiteralMap, PhaseInfo, Plugin, PluginEntry, PluginError, PluginLoader, PluginStateReaderExt,
    PluginStateWriterExt, ResourceNamespace, Result, SetupContext, SignalAsync, TaskExecutionContext, TaskInfo,
    Transition,
};
use serde::{Deserialize, Serialize};

/// The resource namespace the slots are counted in.
pub const NAMESPACE: &str = "slots";

/// The secret holding the quota.
pub const QUOTA_SECRET: &str = "SLEEP_QUOTA";

/// The quota when the secret is absent.
pub const DEFAULT_QUOTA: i64 = 2;

/// The sleep when neither the inputs nor the configuration say.
pub const DEFAULT_SECONDS: f64 = 1.0;

/// Version given to the plugin state.
pub const STATE_VERSION: u8 = 1;

/// Reason reported while no slot is free.
pub const WAITING_REASON: &str = "quota for sleep-quota slots exhausted; waiting";

/// What the plugin remembers once it holds a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SleepState {
    /// When the slot was granted, in milliseconds since the Unix epoch.
    pub acquired_at_ms: u64,
    /// How long to sleep, in seconds.
    pub seconds: f64,
}

/// How long the task asks to sleep: input `seconds`, else `custom.seconds`,
/// else [`DEFAULT_SECONDS`]. `Err` carries a message for the user.
pub fn requested_seconds(inputs: &LiteralMap, custom: &serde_json::Value) -> std::result::Result<f64, String> {
    let seconds = match inputs.get("seconds") {
        Some(Literal::Integer(i)) => *i as f64,
        Some(Literal::Float(f)) => *f,
        Some(Literal::Duration(d)) => d.seconds as f64 + f64::from(d.nanos) / 1e9,
        Some(other) => {
            return Err(format!(
                "input seconds must be an integer, a float or a duration, got {}",
                other.to_json()
            ))
        }
        None => match custom.get("seconds") {
            None | Some(serde_json::Value::Null) => DEFAULT_SECONDS,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("custom.seconds must be a number, got {v}"))?,
        },
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("seconds must be a finite number >= 0, got {seconds}"));
    }
    Ok(seconds)
}

/// Parses the quota secret: a positive integer. The error describes what
/// is wrong with the value without quoting it: it is a secret.
pub fn parse_quota(text: &str) -> Result<i64> {
    let what = match text.trim().parse::<i64>() {
        Ok(q) if q > 0 => return Ok(q),
        Ok(_) => "zero or negative".to_string(),
        Err(_) if text.trim().is_empty() => "empty".to_string(),
        Err(_) => format!("not an integer ({} characters)", text.trim().chars().count()),
    };
    Err(PluginError::user(
        "BadQuota",
        format!(
            "secret {QUOTA_SECRET} must be a positive integer (the number of concurrent sleeps); \
             its value is {what} (the value itself is not shown: it is a secret)"
        ),
    ))
}

/// Wake-ups of sleeping executions: at most one pending alarm per token.
#[derive(Default)]
struct Alarms {
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Alarms {
    /// Signals `signal` after `delay`, unless an alarm for `token` is
    /// already pending (a resync round of a sleeping execution sets none).
    fn set(&self, token: String, delay: Duration, signal: Arc<dyn SignalAsync>) {
        let pending = self.pending.clone();
        if !lock(&pending).insert(token.clone()) {
            return;
        }
        let thread = std::thread::Builder::new().name("kozmo-sleep-alarm".into()).spawn({
            let token = token.clone();
            let pending = pending.clone();
            move || {
                std::thread::sleep(delay);
                lock(&pending).remove(&token);
                signal.signal();
            }
        });
        if let Err(e) = thread {
            // The daemon's resync still notices the end of the sleep.
            log::warn!("sleep-quota: no alarm thread for {token} ({e}); the sleep ends at a resync");
            lock(&pending).remove(&token);
        }
    }
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sleeps across rounds while holding a quota slot (see the crate docs).
pub struct SleepQuota {
    quota: i64,
    completed: Counter,
    alarms: Alarms,
}

impl SleepQuota {
    /// Loads the plugin: reads the quota, registers it and the counter.
    pub fn load(setup: &dyn SetupContext) -> Result<Self> {
        let quota = match setup.secret_manager().get(QUOTA_SECRET) {
            Ok(text) => parse_quota(&text)?,
            Err(e) => {
                log::debug!("sleep-quota: no {QUOTA_SECRET} secret ({e}); quota {DEFAULT_QUOTA}");
                DEFAULT_QUOTA
            }
        };
        setup
            .resource_registrar()
            .register_resource_quota(&ResourceNamespace::new(NAMESPACE), quota)?;
        let completed = setup
            .metrics_scope()
            .counter("sleeps_completed", "sleep-quota tasks that finished their sleep")?;
        log::info!("sleep-quota: {quota} slot(s) in namespace {NAMESPACE}");
        Ok(SleepQuota {
            quota,
            completed,
            alarms: Alarms::default(),
        })
    }

    /// The quota registered at load time.
    pub fn quota(&self) -> i64 {
        self.quota
    }

    fn acquire(&self, ctx: &dyn TaskExecutionContext) -> Result<PhaseInfo> {
        let template = ctx.task_reader().read()?;
        let inputs = ctx.input_reader().get()?;
        let seconds = match requested_seconds(&inputs, &template.custom) {
            Ok(s) => s,
            Err(message) => return Ok(PhaseInfo::failure("BadInput", message, None)),
        };
        // The token is the attempt's generated name; a full quota answers
        // the WaitingForResources phase to report.
        if let Some(waiting) = ctx.allocate(&ResourceNamespace::new(NAMESPACE), WAITING_REASON)? {
            return Ok(waiting);
        }
        let token = ctx.generated_name();
        let state = SleepState {
            acquired_at_ms: now_ms(),
            seconds,
        };
        ctx.plugin_state_writer().put(STATE_VERSION, &state)?;
        log::info!("sleep-quota: {token} got a slot; sleeping {seconds}s");
        Ok(PhaseInfo::queued(
            SystemTime::now(),
            0,
            format!("slot acquired; sleeping {seconds}s"),
        ))
    }

    fn sleep(&self, ctx: &dyn TaskExecutionContext, state: &SleepState) -> Result<PhaseInfo> {
        let elapsed = now_ms().saturating_sub(state.acquired_at_ms) as f64 / 1000.0;
        if elapsed < state.seconds {
            // Rounded up to the millisecond, so the signalled round finds the time up.
            let remaining = Duration::try_from_secs_f64(state.seconds - elapsed)
                .unwrap_or(Duration::MAX)
                .saturating_add(Duration::from_millis(1));
            self.alarms
                .set(ctx.generated_name(), remaining, ctx.task_refresh_indicator());
            let info = TaskInfo {
                custom_info: json!({ "seconds": state.seconds, "remaining_seconds": state.seconds - elapsed }),
                ..TaskInfo::default()
            };
            return Ok(PhaseInfo::running(0, Some(info)));
        }
        let outputs = LiteralMap::from([("slept_seconds".to_string(), Literal::Float(elapsed))]);
        ctx.output_writer().put_outputs(outputs)?;
        self.completed.inc();
        log::info!("sleep-quota: {} slept {elapsed}s", ctx.generated_name());
        let info = TaskInfo {
            custom_info: json!({ "seconds": state.seconds, "slept_seconds": elapsed }),
            ..TaskInfo::default()
        };
        Ok(PhaseInfo::success(Some(info)))
    }
}

impl Plugin for SleepQuota {
    fn id(&self) -> &str {
        "sleep-quota"
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let (_, state) = ctx.plugin_state_reader().get::<SleepState>()?;
        let info = match state {
            None => self.acquire(ctx)?,
            Some(state) => self.sleep(ctx, &state)?,
        };
        Ok(Transition::ephemeral(info))
    }

    fn abort(&self, _ctx: &dyn TaskExecutionContext) -> Result<()> {
        // Nothing runs anywhere; finalize (always called after abort) releases the slot.
        Ok(())
    }

    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        ctx.release(&ResourceNamespace::new(NAMESPACE))
    }
}

/// The entry: id `sleep-quota`, task type `sleep-quota`.
pub fn entry() -> PluginEntry {
    PluginEntry {
        id: "sleep-quota".into(),
        registered_task_types: vec!["sleep-quota".into()],
        load_plugin: PluginLoader::new(|setup| Ok(Box::new(SleepQuota::load(setup)?))),
        is_default: false,
    }
}

kozmo_interface::export_plugins![entry()];
