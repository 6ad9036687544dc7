//! [`IsolatedPlugin`]: what the engine holds for a plugin that runs in a
//! child process. A call that the child's end interrupts becomes a SYSTEM
//! retryable failure naming the plugin, the call, the execution and the
//! cause, so the engine's ordinary retry budget applies.

use std::sync::Arc;

use kozmo_interface::{PhaseInfo, Plugin, PluginError, PluginProperties, Result, TaskExecutionContext, Transition};
use kozmo_isolation_protocol::{Call, Outcome};

use super::serve::{execution_id, Served};
use super::supervisor::{Failure, Supervisor};
use super::wire::{from_wire, parse};

/// Code of the failure a dead child gives its calls.
pub const DIED_CODE: &str = "PluginProcessDied";

/// A plugin loaded in a supervised child process.
pub struct IsolatedPlugin {
    supervisor: Arc<Supervisor>,
    entry: String,
    id: String,
    properties: PluginProperties,
}

impl IsolatedPlugin {
    /// The plugin `id` of `entry`, loaded in `supervisor`'s child.
    pub fn new(supervisor: Arc<Supervisor>, entry: String, id: String, properties: PluginProperties) -> Self {
        IsolatedPlugin {
            supervisor,
            entry,
            id,
            properties,
        }
    }

    /// The supervisor of its child (restarts, pid).
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
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

fn mismatch(call: &str, got: &Outcome) -> PluginError {
    PluginError::system(
        "IsolationProtocol",
        format!("the plugin process answered {call} with {got:?}"),
    )
}

impl Plugin for IsolatedPlugin {
    fn id(&self) -> &str {
        &self.id
    }

    fn properties(&self) -> PluginProperties {
        self.properties
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let call = Call::Handle {
            entry: self.entry.clone(),
        };
        match self.supervisor.call(&call, &Served::Task(ctx)) {
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

    fn abort(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let call = Call::Abort {
            entry: self.entry.clone(),
        };
        self.finished("abort", call, ctx)
    }

    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let call = Call::Finalize {
            entry: self.entry.clone(),
        };
        let r = self.finished("finalize", call, ctx);
        self.supervisor.handles.forget(&execution_id(ctx));
        r
    }
}
