//! What retention asks of a store: which terminal executions are past the
//! limits ([`PruneSelect`] → [`PruneCandidate`]s), and deleting them with
//! every row they own ([`PrunedRows`]), in small transactions.

use crate::model::ExecPhase;

/// Which terminal executions are past retention. Active executions are
/// never selected, whatever the limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneSelect {
    /// Per terminal phase (`Succeeded`, `Failed`, `Aborted`): executions of
    /// that phase last updated before this time (ms since the epoch) are
    /// past retention; a phase without an entry is kept by time.
    pub before_ms: Vec<(ExecPhase, i64)>,
    /// Keep at most this many terminal executions (the most recently
    /// updated ones), whatever their age.
    pub keep_at_most: Option<u64>,
    /// Most candidates returned (one batch).
    pub limit: usize,
    /// Only executions after this one in the selection's order (`updated_at`
    /// ms, then id): a pass selects past the batches it has sent and that
    /// may not be deleted yet, without reading them again.
    pub after: Option<(i64, String)>,
}

impl PruneSelect {
    /// The cutoff for `phase`, if it is pruned by age.
    pub fn cutoff(&self, phase: ExecPhase) -> Option<i64> {
        self.before_ms.iter().find(|(p, _)| *p == phase).map(|(_, t)| *t)
    }

    /// [`PruneSelect::after`] as a lower bound that every execution
    /// passes when there is none (ids are never empty).
    pub fn after_or_first(&self) -> (i64, &str) {
        self.after.as_ref().map_or((i64::MIN, ""), |(t, id)| (*t, id.as_str()))
    }
}

/// A terminal execution past retention: what it takes to find its blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneCandidate {
    /// The execution.
    pub id: String,
    /// Its canonical spec JSON (node id, for the raw output directories).
    pub spec_json: String,
    /// Its task type (plugin routing for executions stored unbound).
    pub task_type: String,
    /// The plugin it ran under, if stored (migration 3).
    pub plugin_id: Option<String>,
    /// Its last attempt (raw output directories exist for 0..=attempt).
    pub attempt: u32,
    /// Its terminal phase.
    pub phase: ExecPhase,
    /// When it was last updated (became terminal), ms since the epoch.
    pub updated_at_ms: i64,
}

/// Rows a prune removed, per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PrunedRows {
    /// `executions` rows (= executions pruned).
    pub executions: u64,
    /// `execution_specs` rows.
    pub specs: u64,
    /// `task_states` rows.
    pub task_states: u64,
    /// `events` rows.
    pub events: u64,
    /// `outputs` rows.
    pub outputs: u64,
    /// `error_documents` rows.
    pub error_documents: u64,
    /// `plugin_crashes` rows.
    pub plugin_crashes: u64,
    /// `resource_tokens` rows (a terminal execution holds none; any left
    /// over is removed with it).
    pub resource_tokens: u64,
    /// `catalog` rows no kept execution can have written.
    pub catalog: u64,
}

impl PrunedRows {
    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &PrunedRows) {
        self.executions += o.executions;
        self.specs += o.specs;
        self.task_states += o.task_states;
        self.events += o.events;
        self.outputs += o.outputs;
        self.error_documents += o.error_documents;
        self.plugin_crashes += o.plugin_crashes;
        self.resource_tokens += o.resource_tokens;
        self.catalog += o.catalog;
    }
}

/// How much of the store's file is in use, for deciding whether free
/// space is worth giving back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreSpace {
    /// Bytes in free pages (reused by the next writes before the file grows).
    pub free_bytes: u64,
    /// Bytes of one page: what [`Store::reclaim_space`](super::Store::reclaim_space) counts in.
    pub page_bytes: u64,
}

/// Where one table's count goes in [`PrunedRows`].
pub type CountSlot = fn(&mut PrunedRows) -> &mut u64;

/// The tables keyed by `execution_id` an execution owns (every store keeps
/// them under these names), and where a prune's count of each goes in
/// [`PrunedRows`].
pub const OWNED_TABLES: [(&str, CountSlot); 7] = [
    ("execution_specs", |r| &mut r.specs),
    ("task_states", |r| &mut r.task_states),
    ("events", |r| &mut r.events),
    ("outputs", |r| &mut r.outputs),
    ("error_documents", |r| &mut r.error_documents),
    ("plugin_crashes", |r| &mut r.plugin_crashes),
    ("resource_tokens", |r| &mut r.resource_tokens),
];

/// The terminal phases, in the order of their stored names.
pub const TERMINAL: [ExecPhase; 3] = [ExecPhase::Succeeded, ExecPhase::Failed, ExecPhase::Aborted];
