//! Durable state behind a trait: the engine never sees SQL.
//!
//! The SQLite store (`kozmo-store-sqlite`, one file `<data_dir>/kozmo.db`,
//! WAL) is the daemon's default; [`MemoryStore`] keeps everything in memory
//! (benchmarks, tests). Every store runs the [`contract`] in its tests.
//!
//! Atomicity: everything in one [`RoundCommit`] is applied together, and a
//! batch of commits is applied in one transaction (group commit). Durability:
//! a call returns only after its transaction is durable (SQLite
//! `synchronous=FULL` by default).

mod cluster;
mod commit_cost;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
#[cfg(any(test, feature = "contract"))]
pub mod contract_prune;
mod memory;
mod prune;

use std::collections::BTreeMap;

pub use cluster::{Beat, Cluster, NodeInfo, NodeRow};
pub use commit_cost::CommitCost;
pub use memory::MemoryStore;
pub use prune::{CountSlot, PruneCandidate, PruneSelect, PrunedRows, StoreSpace, OWNED_TABLES, TERMINAL};

use kozmo_interface::literals::LiteralMap;

use crate::model::{
    ErrorDocument, EventRecord, EventRow, ExecPhase, ExecutionRecord, NewExecution, RoundCommit, TokenRow,
};

/// A store failure (I/O, corruption, schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// What kind of failure a store error is, for answers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreErrorKind {
    /// The disk (or the database's size limit) is full.
    Full,
    /// The database or its file system is read-only.
    ReadOnly,
    /// Anything else (I/O, corruption, busy, schema).
    Other,
}

impl StoreErrorKind {
    /// Every kind, in metric order.
    pub const ALL: [StoreErrorKind; 3] = [StoreErrorKind::Full, StoreErrorKind::ReadOnly, StoreErrorKind::Other];

    /// The kind's name in metrics and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Full => "full",
            StoreErrorKind::ReadOnly => "read_only",
            StoreErrorKind::Other => "other",
        }
    }

    /// The kind of a store error's message. The stores' messages come from
    /// the database library and the OS, whose wording for these cases is
    /// fixed (`database or disk is full`, `No space left on device`,
    /// `attempt to write a readonly database`, `Read-only file system`).
    pub fn of_message(message: &str) -> StoreErrorKind {
        let m = message.to_ascii_lowercase();
        if m.contains("disk is full") || m.contains("no space left") || m.contains("os error 28") {
            StoreErrorKind::Full
        } else if m.contains("readonly database") || m.contains("read-only file system") || m.contains("os error 30") {
            StoreErrorKind::ReadOnly
        } else {
            StoreErrorKind::Other
        }
    }
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        StoreErrorKind::of_message(&self.0)
    }
}

/// Result of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// What inserting an execution did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Inserted (and durable).
    Created,
    /// An execution with that id exists; its canonical spec JSON.
    Exists {
        /// Spec JSON of the existing execution.
        spec_json: String,
    },
}

/// An execution that was inside a plugin call when the daemon stopped
/// uncleanly ([`Store::count_crashes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashVictim {
    /// The execution.
    pub execution_id: String,
    /// The call it was inside (`handle`, `abort`, `finalize`).
    pub call: String,
}

/// The sync that makes committed transactions durable
/// ([`WriteTxn::commit_unsynced`]).
/// If it fails it may be run again.
pub type PendingSync = Box<dyn FnMut() -> StoreResult<()> + Send>;

/// An open write transaction ([`Store::begin`]): what it applies becomes
/// durable together at [`WriteTxn::commit`]; dropped uncommitted, it leaves
/// nothing behind.
pub trait WriteTxn {
    /// Inserts a new execution, or reports the existing one.
    fn insert(&mut self, new: &NewExecution) -> StoreResult<InsertOutcome>;
    /// Inserts several, in order, each as [`WriteTxn::insert`] (a store
    /// that pays per statement writes them in fewer). Default: one by one.
    fn insert_all(&mut self, news: &[NewExecution]) -> StoreResult<Vec<InsertOutcome>> {
        news.iter().map(|n| self.insert(n)).collect()
    }
    /// Applies one step's results.
    fn apply(&mut self, step: &RoundCommit) -> StoreResult<()>;
    /// Makes everything applied durable.
    fn commit(self: Box<Self>) -> StoreResult<()>;
    /// Commits without waiting for the writes to be durable: they are
    /// visible to the store's readers at once and durable once the
    /// returned [`PendingSync`] has run, which the engine does on another
    /// thread while it fills the next transaction; nothing is answered or
    /// acted on before. A sync makes every transaction committed before it
    /// durable. Default: [`WriteTxn::commit`] (durable at once, nothing left).
    fn commit_unsynced(self: Box<Self>) -> StoreResult<Option<PendingSync>> {
        self.commit().map(|()| None)
    }
    /// Deletes those of `ids` that are terminal with every row they own
    /// (as [`Store::delete_executions`], inside this transaction).
    /// Default: refuses (the engine then deletes in a transaction of its own).
    fn delete_terminal(&mut self, _ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        Err(StoreError("this store deletes only in transactions of its own".into()))
    }
}

/// The engine's durable state.
pub trait Store: Send + Sync {
    /// Inserts a new execution durably, or reports the existing one.
    fn insert_execution(&self, new: &NewExecution) -> StoreResult<InsertOutcome>;
    /// Inserts several executions in one durable transaction.
    fn insert_executions(&self, news: &[NewExecution]) -> StoreResult<Vec<InsertOutcome>> {
        news.iter().map(|n| self.insert_execution(n)).collect()
    }
    /// One execution with the task state of its current attempt.
    fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>>;
    /// Executions ordered by id, optionally of one phase, after `after`.
    fn list_executions(
        &self,
        phase: Option<ExecPhase>,
        limit: usize,
        after: Option<&str>,
    ) -> StoreResult<Vec<ExecutionRecord>>;
    /// Every execution not in a terminal phase (recovery at start).
    fn load_active(&self) -> StoreResult<Vec<ExecutionRecord>>;
    /// Applies a batch of round results in one transaction, in order. On
    /// success a store may move what it keeps out of the commits (the
    /// engine drops them next); on error the batch is left as it was (the
    /// engine retries it).
    fn commit(&self, batch: &mut [RoundCommit]) -> StoreResult<()>;
    /// Inserts `news` and applies `batch` in one durable transaction: the
    /// engine's group commit, so new submissions and step results share
    /// one sync. It must apply all or nothing: the engine answers the
    /// submitters with the error and retries the step results. The default
    /// calls [`Store::insert_executions`], then [`Store::commit`] (each only
    /// if it has something to do): all or nothing only for a store that
    /// cannot fail (like [`MemoryStore`]); a store that can fail must write
    /// both in one transaction.
    fn write(&self, news: &[NewExecution], batch: &mut [RoundCommit]) -> StoreResult<Vec<InsertOutcome>> {
        let out = if news.is_empty() {
            Vec::new()
        } else {
            self.insert_executions(news)?
        };
        if !batch.is_empty() {
            self.commit(batch)?;
        }
        Ok(out)
    }
    /// Opens a write transaction the engine fills as writes arrive (the
    /// statements run while it waits for more) and commits once; `None`
    /// (the default) if the store only takes whole batches ([`Store::write`]).
    fn begin(&self) -> StoreResult<Option<Box<dyn WriteTxn + '_>>> {
        Ok(None)
    }
    /// What one commit costs whatever it holds (a disk sync), lately. The
    /// engine waits up to this long for steps still running to share a
    /// commit; zero (the default: no sync) means it never waits.
    fn commit_cost(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Whether a commit is cheap (no sync, nothing to group): the engine
    /// then commits each step on the worker that ran it instead of sending
    /// it to its single committer thread. Default: false.
    fn commits_inline(&self) -> bool {
        false
    }
    /// Appends events to an execution outside any step (what the engine
    /// observes about it: a slow plugin call, a crash), durably.
    fn append_events(&self, id: &str, events: &[EventRow]) -> StoreResult<()>;
    /// Crash-loop bookkeeping after an unclean stop, in one transaction:
    /// every execution not among `victims` starts over at zero crashes (the
    /// crashes must be consecutive), each victim's count goes up by one;
    /// returns the victims' new counts, in order.
    fn count_crashes(&self, victims: &[CrashVictim], at_ms: i64) -> StoreResult<Vec<u32>>;
    /// Records a client's abort request; false if the execution is unknown.
    fn request_abort(&self, id: &str, reason: &str) -> StoreResult<bool>;
    /// The events of an execution in order.
    fn events(&self, id: &str) -> StoreResult<Vec<EventRecord>>;
    /// The events with `seq` greater than `after_seq`, in `seq` order, at
    /// most `limit`: of execution `id`, or of every execution (`None`). What
    /// the watch API reads, so a watcher sees what any writer of the store
    /// committed. Default: `events(id)` filtered; every execution's only
    /// from a store that implements it.
    fn events_after(&self, id: Option<&str>, after_seq: i64, limit: usize) -> StoreResult<Vec<EventRecord>> {
        match id {
            Some(id) => Ok(self
                .events(id)?
                .into_iter()
                .filter(|e| e.seq > after_seq)
                .take(limit)
                .collect()),
            None => Err(StoreError(
                "this store cannot list the events of every execution".into(),
            )),
        }
    }
    /// The greatest event `seq` stored (0: none); where a watch of every
    /// execution starts. Default: unknown (an error).
    fn last_event_seq(&self) -> StoreResult<i64> {
        Err(StoreError("this store cannot tell its last event".into()))
    }
    /// The outputs recorded for an attempt.
    fn outputs(&self, id: &str, attempt: u32) -> StoreResult<Option<LiteralMap>>;
    /// The error document recorded for an attempt.
    fn error_document(&self, id: &str, attempt: u32) -> StoreResult<Option<ErrorDocument>>;
    /// Every granted token.
    fn tokens(&self) -> StoreResult<Vec<TokenRow>>;
    /// A catalog entry.
    fn catalog_get(&self, key: &str) -> StoreResult<Option<LiteralMap>>;
    /// Writes a catalog entry (replaces).
    fn catalog_put(&self, key: &str, outputs: &LiteralMap) -> StoreResult<()>;
    /// Number of executions per phase.
    fn count_by_phase(&self) -> StoreResult<BTreeMap<ExecPhase, u64>>;
    /// Terminal executions past retention, least recently updated first,
    /// at most `sel.limit` (reads only; never an active execution).
    /// Default (a store without retention): none.
    fn prune_candidates(&self, _sel: &PruneSelect) -> StoreResult<Vec<PruneCandidate>> {
        Ok(Vec::new())
    }
    /// Deletes those of `ids` that are terminal, with every row they own
    /// (spec, task states, events, outputs, error documents, crash counts,
    /// tokens), in one short transaction; returns the ids deleted and the
    /// rows per table. Default: deletes nothing.
    fn delete_executions(&self, _ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        Ok((Vec::new(), PrunedRows::default()))
    }
    /// Deletes up to `limit` catalog entries written before the oldest
    /// execution still stored was created (no execution left can have
    /// written them); returns how many. Default: none.
    fn prune_catalog(&self, _limit: usize) -> StoreResult<u64> {
        Ok(0)
    }
    /// Gives free space back to the file system, at most `max_pages` pages
    /// at a time; returns the bytes given back. Default: nothing to give.
    fn reclaim_space(&self, _max_pages: u32) -> StoreResult<u64> {
        Ok(0)
    }
    /// The free space in the store's file. Default: none (nothing to give
    /// back).
    fn space(&self) -> StoreResult<StoreSpace> {
        Ok(StoreSpace::default())
    }
    /// When the least recently updated terminal execution still stored was
    /// last updated (the oldest one retention kept). Default: unknown.
    fn oldest_terminal(&self) -> StoreResult<Option<i64>> {
        Ok(None)
    }
    /// The cluster side of a store several daemons share (leases,
    /// claims, fencing); `None` (the default) for a store of one daemon.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }
}
