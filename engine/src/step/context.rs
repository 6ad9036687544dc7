//! The context a plugin call of a step gets: the attempt's generated name,
//! the plugin id, interruptibility (docs/semantics.md#interruptible), and
//! the call itself, recorded in the worker's call slot while it runs
//! (docs/semantics.md#rounds).

use std::sync::Arc;

use kozmo_interface::Plugin;

use crate::call_slots::Call;
use crate::context::{generated_name, AttemptInfo, RoundContext, RoundWrites, Services};
use crate::{Active, Engine};

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
    pub(super) fn attempt_name(&self, a: &mut Active, plugin: &Arc<dyn Plugin>) -> Arc<str> {
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
    pub(super) fn plugin_id(a: &Active, plugin: &Arc<dyn Plugin>) -> Arc<str> {
        match &a.spec.plugin_id {
            Some(id) if a.spec.plugin.is_some() => id.clone(),
            _ => Arc::from(plugin.id()),
        }
    }

    /// Runs plugin call `call` (`f`) with a fresh context for the current
    /// attempt of `a`, recorded in the worker's call slot while it runs.
    pub(super) fn with_context<R>(
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
}
