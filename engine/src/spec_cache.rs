//! Parsed specs shared by the active executions of one task: a spec is
//! split into its shared part (template and metadata, interned by its
//! canonical JSON) and its inputs.

use super::*;

/// A parsed spec without its inputs, with what follows from it, shared by
/// every active execution of the same task (see [`SharedSpecs`]).
pub(crate) struct SharedSpec {
    pub(crate) spec: ExecutionSpec,
    /// The task type (shared by the events of every round).
    pub(crate) task_type: Arc<str>,
    pub(crate) plugin: Option<Arc<dyn Plugin>>,
    /// The plugin's id, when the plugin is known.
    pub(crate) plugin_id: Option<Arc<str>>,
}

impl std::ops::Deref for SharedSpec {
    type Target = ExecutionSpec;
    fn deref(&self) -> &ExecutionSpec {
        &self.spec
    }
}

/// A submitted spec taken apart: the part executions of one task share
/// (template and metadata, interned as a [`SharedSpec`]) and their inputs.
pub(crate) struct SplitSpec {
    /// The spec with empty inputs.
    pub(crate) spec: ExecutionSpec,
    /// Canonical JSON of `spec` without inputs (the interning key).
    pub(crate) shared_json: String,
    /// Canonical JSON of the inputs.
    pub(crate) inputs: Box<str>,
}

impl SplitSpec {
    pub(crate) fn new(mut spec: ExecutionSpec) -> Self {
        let (inputs, shared_json) = spec.canonical_parts();
        spec.inputs = LiteralMap::new();
        SplitSpec {
            spec,
            shared_json,
            inputs: inputs.into_boxed_str(),
        }
    }

    /// The whole spec's canonical JSON (what the store keeps).
    pub(crate) fn canonical_json(&self) -> String {
        ExecutionSpec::join_canonical(&self.inputs, &self.shared_json)
    }
}

/// Inputs from the canonical JSON the engine made of them (a failure would
/// be an engine bug: it is logged and the inputs read as empty).
pub(crate) fn parse_inputs(id: &str, json: &str) -> LiteralMap {
    serde_json::from_str(json).unwrap_or_else(|e| {
        log::error!("execution {id}: its inputs do not parse back ({e}); read as empty");
        LiteralMap::new()
    })
}

/// Interned [`SharedSpec`]s by the canonical JSON of a spec without its inputs:
/// executions of the same task (template and metadata) share one parsed
/// copy (most of an idle execution's memory otherwise), whatever their
/// inputs. Entries die with their last execution.
#[derive(Default)]
pub(crate) struct SharedSpecs {
    pub(crate) hasher: std::collections::hash_map::RandomState,
    pub(crate) by_hash: HashMap<u64, Vec<Weak<SharedSpec>>>,
    /// Entries at the last sweep of dead ones.
    pub(crate) swept_at: usize,
}

impl SharedSpecs {
    pub(crate) fn intern(
        &mut self,
        spec_json: &str,
        spec: ExecutionSpec,
        plugin: Option<Arc<dyn Plugin>>,
    ) -> Arc<SharedSpec> {
        use std::hash::BuildHasher;
        let bucket = self.by_hash.entry(self.hasher.hash_one(spec_json)).or_default();
        bucket.retain(|w| w.strong_count() > 0);
        let same_plugin = |a: &Option<Arc<dyn Plugin>>| match (a, &plugin) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if let Some(found) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| same_plugin(&s.plugin) && s.spec == spec)
        {
            return found;
        }
        let shape = Arc::new(SharedSpec {
            task_type: Arc::from(spec.template.task_type.as_str()),
            plugin_id: plugin.as_ref().map(|p| Arc::from(p.id())),
            spec,
            plugin,
        });
        bucket.push(Arc::downgrade(&shape));
        let n = self.by_hash.len();
        if n >= 2 * self.swept_at.max(512) {
            self.by_hash.retain(|_, b| {
                b.retain(|w| w.strong_count() > 0);
                !b.is_empty()
            });
            self.swept_at = self.by_hash.len();
        }
        shape
    }
}
