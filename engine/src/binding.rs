//! An execution stays bound to the plugin chosen at its submission: its id
//! is stored with the execution, and at a later start the execution runs
//! under that plugin or not at all (it waits, visibly, for a start that has
//! it); it never falls back to whatever the task type routes to now.

use std::sync::Arc;

use kozmo_interface::Plugin;

use super::Engine;

impl Engine {
    /// The plugin of a stored execution: `Ok(None)` for an execution stored
    /// before bindings existed whose task type no plugin handles (it fails
    /// its rounds as before); `Err(id)` when its bound plugin is not loaded.
    pub(crate) fn bound_plugin(
        &self,
        plugin_id: Option<&str>,
        task_type: &str,
    ) -> Result<Option<Arc<dyn Plugin>>, String> {
        let routed = self.plugins.resolve(task_type).ok();
        let Some(id) = plugin_id else {
            return Ok(routed);
        };
        match routed {
            Some(p) if p.id() == id => Ok(Some(p)),
            _ => self.plugins.by_id(id).map(Some).ok_or_else(|| id.to_string()),
        }
    }
}
