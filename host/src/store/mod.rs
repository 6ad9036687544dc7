//! Durable state behind a trait: the engine never sees SQL.
//!
//! [`SqliteStore`] is the default (one file `<data_dir>/kozmo.db`, WAL);
//! [`MemoryStore`] keeps everything in memory (benchmarks, tests).
//!
//! Atomicity: everything in one [`RoundCommit`] is applied together, and a
//! batch of commits is applied in one transaction (group commit). Durability:
//! a call returns only after its transaction is durable (SQLite
//! `synchronous=FULL` by default).

mod memory;
mod migrations;
mod sqlite;

use std::collections::BTreeMap;

pub use memory::MemoryStore;
pub use sqlite::{Durability, SqliteStore};

use kozmo_interface::literals::LiteralMap;

use crate::model::{ErrorDocument, EventRecord, ExecPhase, ExecutionRecord, NewExecution, RoundCommit, TokenRow};

/// A store failure (I/O, corruption, schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

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
    /// Applies a batch of round results in one transaction, in order.
    fn commit(&self, batch: &[RoundCommit]) -> StoreResult<()>;
    /// Records a client's abort request; false if the execution is unknown.
    fn request_abort(&self, id: &str, reason: &str) -> StoreResult<bool>;
    /// The events of an execution in order.
    fn events(&self, id: &str) -> StoreResult<Vec<EventRecord>>;
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
}
