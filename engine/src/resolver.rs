//! How the engine finds plugins: [`PluginResolver`] (the loader's registry
//! implements it) and, for plugins whose `handle` calls can travel
//! together, [`BatchHandler`].

use super::*;

/// Finds the plugin for a task type (the loader's registry implements it).
pub trait PluginResolver: Send + Sync {
    /// The plugin for `task_type` (or the default plugin).
    fn resolve(&self, task_type: &str) -> Result<Arc<dyn Plugin>, String>;
    /// The loaded plugin with this id (an execution stays bound to the
    /// plugin it was submitted under). The default knows only the plugins
    /// [`PluginResolver::resolve`] routes to, which the engine tries first.
    fn by_id(&self, _id: &str) -> Option<Arc<dyn Plugin>> {
        None
    }
    /// Whether any plugin this resolver routes to can take batches of
    /// `handle` calls (asked before every round, so it must be cheap: a
    /// resolver of plugins in the daemon only answers `false`).
    fn may_batch(&self) -> bool {
        false
    }
    /// The batch caller of `plugin`, if its `handle` calls can travel
    /// together (a plugin in a child process: one frame for many calls).
    fn batcher(&self, _plugin: &dyn Plugin) -> Option<Arc<dyn BatchHandler>> {
        None
    }
}

/// Runs several `handle` calls of one plugin at once (an isolated plugin
/// sends them to its child in one frame).
pub trait BatchHandler: Send + Sync {
    /// `handle` of every context in `ctxs`, in order; each result is what
    /// [`Plugin::handle`] would have returned for that context alone.
    fn handle_batch(&self, ctxs: &[&dyn kozmo_interface::TaskExecutionContext]) -> BatchOutcome;
}

/// What [`BatchHandler::handle_batch`] returns.
#[derive(Debug)]
pub struct BatchOutcome {
    /// One result per call, in order.
    pub results: Vec<PResult<kozmo_interface::Transition>>,
    /// How many calls were answered: the calls from here on failed because
    /// the plugin's process ended during the batch, which only one of them
    /// (or none) caused.
    pub answered: usize,
}
