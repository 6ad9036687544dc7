//! [`Active`]: an execution in memory while it is not terminal.

use super::*;

/// The in-memory copy of an active execution. It is owned by the
/// scheduler's entry while it waits, and travels (moved, never copied)
/// through the work queue, its worker and the committer while a step runs.
pub(crate) struct Active {
    /// The spec without its inputs, shared with the executions of the same
    /// task (same template and metadata).
    pub(crate) spec: Arc<SharedSpec>,
    /// The inputs, as canonical JSON (a few bytes where a parsed map takes
    /// a kilobyte); parsed when a plugin or the catalog asks.
    pub(crate) inputs: Box<str>,
    /// The execution (its `spec_json` and `task_type` are left empty: the
    /// shape has them).
    pub(crate) record: ExecutionRecord,
    /// What the scheduler's entry and API calls reach while a step runs.
    pub(crate) shared: Arc<ActiveShared>,
    /// The generated name of an attempt, kept while the execution runs
    /// round after round (dropped when it waits).
    pub(crate) gname: Option<(u32, Arc<str>)>,
    /// Consecutive steps that changed nothing (resync backoff).
    pub(crate) no_change: u32,
    /// An attempt this engine knows has no outputs and no error document
    /// stored (it submitted the execution and has committed neither since):
    /// a successful round of it validates without reading the store.
    pub(crate) stored_nothing: Option<u32>,
}

/// The part of an [`Active`] reachable while its step runs.
#[derive(Default)]
pub(crate) struct ActiveShared {
    /// A signal came during the step: run again once it is durable.
    pub(crate) dirty: AtomicBool,
    /// Whether `inputs.json`/`task.json` are known to exist.
    pub(crate) files: AtomicBool,
    /// A client's abort request that came while the execution was out
    /// (queued, running or committing); the next step takes it.
    pub(crate) abort: Mutex<Option<String>>,
    /// Another node holds the execution now (several daemons on one
    /// store): it runs no further step here and is dropped when a worker
    /// next takes it.
    pub(crate) lost: AtomicBool,
}

impl scheduler::JobShared for ActiveShared {
    fn dirty(&self) -> &AtomicBool {
        &self.dirty
    }
}

impl scheduler::Job for Box<Active> {
    type Shared = ActiveShared;
    fn id(&self) -> &str {
        &self.record.id
    }
    fn shared(&self) -> &Arc<ActiveShared> {
        &self.shared
    }
    fn no_change(&mut self) -> &mut u32 {
        &mut self.no_change
    }
}

impl Active {
    pub(crate) fn new(spec: Arc<SharedSpec>, mut record: ExecutionRecord, inputs: Box<str>) -> Box<Self> {
        // The shape has the parsed spec and the task type.
        record.spec_json = String::new();
        record.task_type = String::new();
        Box::new(Active {
            spec,
            inputs,
            record,
            shared: Arc::default(),
            gname: None,
            no_change: 0,
            stored_nothing: None,
        })
    }

    /// Whether nothing is stored as outputs or error document of `attempt`
    /// (`false`: unknown, read the store).
    pub(crate) fn stored_nothing_for(&self, attempt: u32) -> bool {
        self.stored_nothing == Some(attempt)
    }

    /// The inputs' canonical JSON.
    pub(crate) fn inputs_json(&self) -> &str {
        &self.inputs
    }

    /// The inputs.
    pub(crate) fn inputs(&self) -> LiteralMap {
        parse_inputs(&self.record.id, &self.inputs)
    }

    /// Takes an abort request that came while the execution was out.
    pub(crate) fn take_pending_abort(&mut self) {
        let pending = lock(&self.shared.abort).take();
        if let Some(reason) = pending {
            self.record.abort_requested = Some(reason);
        }
    }
}
