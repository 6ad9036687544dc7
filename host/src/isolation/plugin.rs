//! [`IsolatedPlugin`]: what the engine holds for a plugin that runs in a
//! child process. A call that the child's end interrupts becomes a SYSTEM
//! retryable failure naming the plugin, the call, the execution and the
//! cause, so the engine's ordinary retry budget applies.
//!
//! The engine finds the isolated plugin behind an `Arc<dyn Plugin>` through
//! its resolver ([`batch_handler`]) to run several `handle` calls in one
//! batch frame (the [`BatchHandler`] of [`IsolatedCore`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

use kozmo_interface::{PhaseInfo, Plugin, PluginError, PluginProperties, Result, TaskExecutionContext, Transition};
use kozmo_isolation_protocol::{Call, Outcome};

use kozmo_engine::{BatchHandler, BatchOutcome, PluginResolver};

use super::serve::{execution_id, Served};
use super::supervisor::{Failure, Supervisor};
use super::wire::{from_plain, from_wire, parse};

/// Code of the failure a dead child gives its calls.
pub const DIED_CODE: &str = "PluginProcessDied";

/// A plugin loaded in a supervised child process (the `Plugin` the engine
/// holds; [`IsolatedCore`] does the work).
pub struct IsolatedPlugin(Arc<IsolatedCore>);

/// An isolated plugin's calls.
pub struct IsolatedCore {
    supervisor: Arc<Supervisor>,
    entry: String,
    id: String,
    properties: PluginProperties,
}

/// Whether any isolated plugin was ever made (while not, [`batch_handler`] costs
/// one atomic load: plugins in the daemon pay nothing for batching).
static ANY: AtomicBool = AtomicBool::new(false);

/// Live isolated plugins by the address of their id's text: an
/// `Arc<dyn Plugin>` built from the `Box` the loader returns has moved the
/// plugin but not its id's heap buffer, which [`Plugin::id`] returns.
fn registry() -> &'static RwLock<HashMap<usize, Weak<IsolatedCore>>> {
    static R: std::sync::OnceLock<RwLock<HashMap<usize, Weak<IsolatedCore>>>> = std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

/// Whether this process ever loaded an isolated plugin.
pub fn any_isolated() -> bool {
    ANY.load(Ordering::Relaxed)
}

/// The batch caller of the isolated plugin behind `plugin`, if it is one.
pub fn batch_handler(plugin: &dyn Plugin) -> Option<Arc<dyn BatchHandler>> {
    isolated_core(plugin).map(|core| core as Arc<dyn BatchHandler>)
}

/// The isolated plugin behind `plugin`, if it is one.
pub fn isolated_core(plugin: &dyn Plugin) -> Option<Arc<IsolatedCore>> {
    if !any_isolated() {
        return None;
    }
    let id = plugin.id();
    let core = kozmo_engine::sync::read(registry())
        .get(&(id.as_ptr() as usize))?
        .upgrade()?;
    // Same buffer and length: the very id of that plugin.
    (core.id.as_ptr() == id.as_ptr() && core.id.len() == id.len()).then_some(core)
}

/// A resolver that routes every task type to one plugin, batching its
/// calls if it is isolated (benchmarks and tests of a single plugin).
pub struct OnlyPlugin(pub Arc<dyn Plugin>);

impl PluginResolver for OnlyPlugin {
    fn resolve(&self, _task_type: &str) -> std::result::Result<Arc<dyn Plugin>, String> {
        Ok(self.0.clone())
    }

    fn may_batch(&self) -> bool {
        any_isolated()
    }

    fn batcher(&self, plugin: &dyn Plugin) -> Option<Arc<dyn BatchHandler>> {
        batch_handler(plugin)
    }
}

const _: () = assert!(kozmo_engine::MAX_BATCH_ROUNDS <= kozmo_isolation_protocol::MAX_BATCH_CALLS);

impl IsolatedPlugin {
    /// The plugin `id` of `entry`, loaded in `supervisor`'s child.
    pub fn new(supervisor: Arc<Supervisor>, entry: String, id: String, properties: PluginProperties) -> Self {
        let core = Arc::new(IsolatedCore {
            supervisor,
            entry,
            id,
            properties,
        });
        // An empty id has no buffer of its own: such a plugin is not batched.
        if !core.id.is_empty() {
            kozmo_engine::sync::write(registry()).insert(core.id.as_ptr() as usize, Arc::downgrade(&core));
            ANY.store(true, Ordering::Relaxed);
        }
        IsolatedPlugin(core)
    }

    /// The supervisor of its child (restarts, pid).
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.0.supervisor
    }
}

impl Drop for IsolatedPlugin {
    fn drop(&mut self) {
        if !self.0.id.is_empty() {
            kozmo_engine::sync::write(registry()).remove(&(self.0.id.as_ptr() as usize));
        }
    }
}

impl IsolatedCore {
    /// The supervisor of its child (restarts, pid).
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// A `handle` call's result: a dead child is a SYSTEM retryable phase.
    fn handled(&self, ctx: &dyn TaskExecutionContext, r: std::result::Result<Outcome, Failure>) -> Result<Transition> {
        match r {
            Ok(Outcome::HandledPlain(t)) => from_plain(t),
            Ok(Outcome::Handled(Ok(t))) => parse(&t, "transition"),
            Ok(Outcome::Handled(Err(e))) => Err(from_wire(e)),
            Ok(other) => Err(mismatch("handle", &other)),
            Err(f) => {
                let e = self.failure("handle", ctx, f);
                Ok(Transition::ephemeral(PhaseInfo::system_retryable_failure(
                    e.code, e.message, None,
                )))
            }
        }
    }

    fn failure(&self, call: &str, ctx: &dyn TaskExecutionContext, f: Failure) -> PluginError {
        let exec = execution_id(ctx);
        let message = match f {
            Failure::Died(cause) => format!("plugin {:?} process died during {call} of {exec}: {cause}", self.id),
            Failure::NotRunning(cause) => {
                format!(
                    "plugin {:?} process is not running for {call} of {exec}: {cause}",
                    self.id
                )
            }
        };
        log::warn!(target: &self.supervisor.handles.target(), "{message}");
        PluginError::system(DIED_CODE, message).retryable(true)
    }

    fn finished(&self, call: &str, c: Call, ctx: &dyn TaskExecutionContext) -> Result<()> {
        match self.supervisor.call(&c, &Served::Task(ctx)) {
            Ok(Outcome::Finished(r)) => r.map_err(from_wire),
            Ok(other) => Err(mismatch(call, &other)),
            Err(f) => Err(self.failure(call, ctx, f)),
        }
    }
}

impl BatchHandler for IsolatedCore {
    /// `handle` of every context in `ctxs` (at most
    /// [`kozmo_isolation_protocol::MAX_BATCH_CALLS`]), as one batch frame;
    /// each call's result is what [`Plugin::handle`] would have returned
    /// for it alone, had the child died during it.
    fn handle_batch(&self, ctxs: &[&dyn TaskExecutionContext]) -> BatchOutcome {
        let calls = vec![
            Call::Handle {
                entry: self.entry.clone()
            };
            ctxs.len()
        ];
        let served: Vec<Served<'_>> = ctxs.iter().map(|c| Served::Task(*c)).collect();
        let results = self.supervisor.call_batch(calls, &served);
        let answered = results.iter().take_while(|r| r.is_ok()).count();
        let results = ctxs.iter().zip(results).map(|(ctx, r)| self.handled(*ctx, r)).collect();
        BatchOutcome { results, answered }
    }
}

fn mismatch(call: &str, got: &Outcome) -> PluginError {
    PluginError::system(
        "IsolationProtocol",
        format!("the plugin process answered {call} with {got:?}"),
    )
}

impl Plugin for IsolatedPlugin {
    fn id(&self) -> &str {
        &self.0.id
    }

    fn properties(&self) -> PluginProperties {
        self.0.properties
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let c = &self.0;
        let call = Call::Handle { entry: c.entry.clone() };
        c.handled(ctx, c.supervisor.call(&call, &Served::Task(ctx)))
    }

    fn abort(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let call = Call::Abort {
            entry: self.0.entry.clone(),
        };
        self.0.finished("abort", call, ctx)
    }

    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let call = Call::Finalize {
            entry: self.0.entry.clone(),
        };
        let r = self.0.finished("finalize", call, ctx);
        self.0.supervisor.handles.forget(&execution_id(ctx));
        r
    }
}
