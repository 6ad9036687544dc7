//! Durable state behind a trait: the engine never sees SQL.
//!
//! [`SqliteStore`] is the default (one file `<data_dir>/kozmo.db`, WAL);
//! [`MemoryStore`] keeps everything in memory (benchmarks, tests).
//!
//! Atomicity: everything in one [`RoundCommit`] is applied together, and a
//! batch of commits is applied in one transaction (group commit). Durability:
//! a call returns only after its transaction is durable (SQLite
//! `synchronous=FULL` by default).

mod checkpointer;
mod memory;
mod migrations;
mod prune;
#[cfg(test)]
mod prune_tests;
mod sqlite;
mod sqlite_prune;
mod sqlite_txn;

use std::collections::BTreeMap;

pub use memory::MemoryStore;
pub use prune::{PruneCandidate, PruneSelect, PrunedRows, TERMINAL};
pub use sqlite::{Durability, SqliteStore};

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

/// An open write transaction ([`Store::begin`]): what it applies becomes
/// durable together at [`WriteTxn::commit`]; dropped uncommitted, it leaves
/// nothing behind.
pub trait WriteTxn {
    /// Inserts a new execution, or reports the existing one.
    fn insert(&mut self, new: &NewExecution) -> StoreResult<InsertOutcome>;
    /// Applies one step's results.
    fn apply(&mut self, step: &RoundCommit) -> StoreResult<()>;
    /// Makes everything applied durable.
    fn commit(self: Box<Self>) -> StoreResult<()>;
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
    /// When the least recently updated terminal execution still stored was
    /// last updated (the oldest one retention kept). Default: unknown.
    fn oldest_terminal(&self) -> StoreResult<Option<i64>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use kozmo_interface::{ErrorKind, ExecutionError, Literal, Phase};

    use super::*;
    use crate::model::{event_kind, ErrorDocument, EventRow, ExecState, NewEvent, TaskState};

    fn new(id: &str, spec: &str) -> NewExecution {
        NewExecution {
            id: id.into(),
            client_id: true,
            spec_json: spec.into(),
            task_type: "t".into(),
            created_at_ms: 1,
            state: ExecState::new(1),
            plugin_id: Some("p".into()),
        }
    }

    #[test]
    fn processes_opening_a_new_file_at_once_migrate_it_once() {
        // A CLI or test opening the file while the daemon creates it: each
        // re-reads the version under the write lock, none applies a
        // migration twice ("table executions already exists").
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kozmo.db");
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || SqliteStore::open(&path, Durability::Normal).map(|s| s.schema_version()))
                })
                .collect();
            for o in openers {
                let version = o.join().unwrap().unwrap().unwrap();
                assert_eq!(version as usize, migrations::MIGRATIONS.len());
            }
        }
    }

    fn event(kind: &str) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            attempt: 0,
            phase: "PhaseRunning".into(),
            version: 1,
            occurred_at_ms: 2,
            reported_at_ms: 3,
            body: serde_json::json!({"k": 1}),
        }
    }

    fn row(kind: &'static str) -> EventRow {
        EventRow {
            kind,
            attempt: 0,
            phase: "PhaseRunning".into(),
            version: 1,
            occurred_at_ms: 2,
            reported_at_ms: 3,
            body: crate::model::EventBody::Text(r#"{"k":1}"#.into()),
        }
    }

    /// The contract every store keeps.
    fn contract(s: &dyn Store) {
        assert_eq!(s.insert_execution(&new("a", "{}")).unwrap(), InsertOutcome::Created);
        assert_eq!(
            s.insert_executions(&[new("b", "{}"), new("a", "{\"x\":1}")]).unwrap(),
            vec![InsertOutcome::Created, InsertOutcome::Exists { spec_json: "{}".into() }]
        );
        let mut state = ExecState::new(5);
        state.phase = ExecPhase::Running;
        state.error = Some(Box::new(ExecutionError::new("c", "m", ErrorKind::System)));
        let task = TaskState {
            plugin_phase: Phase::RUNNING,
            plugin_phase_version: 3,
            plugin_state: Some(vec![1, 2, 3]),
            plugin_state_version: 2,
            cleanup_on_failure: true,
            last_phase_updated_at_ms: 9,
        };
        let mut outputs = LiteralMap::new();
        outputs.insert("x".into(), Literal::Integer(1));
        let token = TokenRow {
            namespace: "ns".into(),
            token: "tok".into(),
            execution_id: "a".into(),
            attempt: 0,
        };
        assert!(s.request_abort("a", "why").unwrap());
        assert!(!s.request_abort("zzz", "why").unwrap());
        s.commit(&mut [RoundCommit {
            task: Some((0, task.clone())),
            events: vec![row(event_kind::TASK), row(event_kind::TERMINAL)],
            outputs: Some((0, outputs.clone())),
            error_document: Some((
                0,
                ErrorDocument {
                    error: ExecutionError::new("e", "m", ErrorKind::User),
                    recoverable: true,
                },
            )),
            tokens_granted: vec![token.clone()],
            ..RoundCommit::state_only("a", state.clone())
        }])
        .unwrap();
        let rec = s.get_execution("a").unwrap().unwrap();
        assert_eq!(rec.state, state);
        assert_eq!(rec.task, task);
        assert_eq!(
            rec.abort_requested.as_deref(),
            Some("why"),
            "a commit keeps the abort request"
        );
        let ev = s.events("a").unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event, event(event_kind::TASK));
        assert!(ev[0].seq < ev[1].seq);
        assert_eq!(s.outputs("a", 0).unwrap(), Some(outputs.clone()));
        assert_eq!(s.outputs("a", 1).unwrap(), None);
        assert!(s.error_document("a", 0).unwrap().unwrap().recoverable);
        assert_eq!(s.tokens().unwrap(), vec![token]);
        let mut done = state.clone();
        done.phase = ExecPhase::Succeeded;
        s.commit(&mut [RoundCommit {
            tokens_released: vec![("ns".into(), "tok".into())],
            clear_abort: true,
            ..RoundCommit::state_only("a", done)
        }])
        .unwrap();
        assert!(s.tokens().unwrap().is_empty());
        assert_eq!(s.get_execution("a").unwrap().unwrap().abort_requested, None);
        assert_eq!(s.load_active().unwrap().len(), 1, "only b is active");
        assert_eq!(
            s.list_executions(Some(ExecPhase::Succeeded), 10, None).unwrap().len(),
            1
        );
        let page = s.list_executions(None, 10, Some("a")).unwrap();
        assert_eq!(page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(s.count_by_phase().unwrap()[&ExecPhase::Queued], 1);
        s.catalog_put("k", &outputs).unwrap();
        assert_eq!(s.catalog_get("k").unwrap(), Some(outputs));
        assert_eq!(s.catalog_get("other").unwrap(), None);
        assert_eq!(
            s.get_execution("b").unwrap().unwrap().plugin_id.as_deref(),
            Some("p"),
            "the plugin chosen at submission is kept"
        );
        s.append_events("b", &[row(event_kind::SLOW_CALL)]).unwrap();
        assert_eq!(s.events("b").unwrap().last().unwrap().event.kind, event_kind::SLOW_CALL);
        let victim = |id: &str| CrashVictim {
            execution_id: id.into(),
            call: "handle".into(),
        };
        assert_eq!(s.count_crashes(&[victim("b"), victim("c")], 1).unwrap(), vec![1, 1]);
        assert_eq!(s.count_crashes(&[victim("b")], 2).unwrap(), vec![2], "consecutive");
        assert_eq!(
            s.count_crashes(&[victim("c")], 3).unwrap(),
            vec![1],
            "c was not in a call at the second crash: it starts over"
        );
        assert_eq!(s.count_crashes(&[], 4).unwrap(), Vec::<u32>::new());
        assert_eq!(
            s.count_crashes(&[victim("b")], 5).unwrap(),
            vec![1],
            "b starts over too"
        );
    }

    #[test]
    fn memory_store_keeps_the_contract() {
        contract(&MemoryStore::new());
    }

    #[test]
    fn sqlite_store_keeps_the_contract_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open_in(dir.path()).unwrap();
            assert_eq!(s.schema_version().unwrap(), 5);
            contract(&s);
        }
        let s = SqliteStore::open_in(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), 5, "migrations run once");
        assert_eq!(s.get_execution("a").unwrap().unwrap().state.phase, ExecPhase::Succeeded);
        // A second terminal event for one execution is refused.
        let dup = RoundCommit {
            events: vec![row(event_kind::TERMINAL)],
            ..RoundCommit::state_only("a", s.get_execution("a").unwrap().unwrap().state)
        };
        assert!(s.commit(&mut [dup]).is_err());
    }

    #[test]
    fn sqlite_write_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_in(dir.path()).unwrap();
        s.insert_execution(&new("a", "{}")).unwrap();
        let terminal = || RoundCommit {
            events: vec![row(event_kind::TERMINAL)],
            ..RoundCommit::state_only("a", ExecState::new(2))
        };
        s.commit(&mut [terminal()]).unwrap();
        // A second terminal event is refused: the new execution written in
        // the same transaction must not exist afterwards.
        assert!(s.write(&[new("b", "{}")], &mut [terminal()]).is_err());
        assert!(s.get_execution("b").unwrap().is_none());
        assert_eq!(
            s.write(&[new("b", "{}"), new("a", "{\"x\":1}")], &mut []).unwrap(),
            vec![InsertOutcome::Created, InsertOutcome::Exists { spec_json: "{}".into() }]
        );
    }

    #[test]
    fn sqlite_transactions_apply_as_they_go_and_vanish_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_in(dir.path()).unwrap();
        let mut running = ExecState::new(2);
        running.phase = ExecPhase::Running;
        {
            let mut tx = s.begin().unwrap().expect("SQLite streams its group commits");
            assert_eq!(tx.insert(&new("a", "{}")).unwrap(), InsertOutcome::Created);
            tx.apply(&RoundCommit::state_only("a", running.clone())).unwrap();
            // Dropped without commit: rolled back.
        }
        assert!(s.get_execution("a").unwrap().is_none());
        let mut tx = s.begin().unwrap().unwrap();
        tx.insert(&new("a", "{}")).unwrap();
        tx.apply(&RoundCommit::state_only("a", running.clone())).unwrap();
        tx.commit().unwrap();
        assert_eq!(s.get_execution("a").unwrap().unwrap().state, running);
        assert!(s.commit_cost() > std::time::Duration::ZERO, "the sync was timed");
        assert!(
            MemoryStore::new().begin().unwrap().is_none(),
            "the memory store takes batches"
        );
    }

    #[test]
    fn sqlite_moves_specs_of_a_version_1_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kozmo.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(migrations::MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO executions VALUES ('old', 1, '{\"s\":1}', 't', 1, 'Running', 0, 0, 1, 1, NULL, NULL, \
                 0, NULL, NULL)",
                [],
            )
            .unwrap();
        }
        let s = SqliteStore::open_in(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), 5);
        let rec = s.get_execution("old").unwrap().unwrap();
        assert_eq!(rec.spec_json, "{\"s\":1}");
        assert_eq!(rec.plugin_id, None, "older rows are not bound: routed by task type");
        assert_eq!(rec.state.phase, ExecPhase::Running);
        assert_eq!(s.load_active().unwrap().len(), 1);
    }

    #[test]
    fn sqlite_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open_in(dir.path()).unwrap());
        let c = rusqlite::Connection::open(dir.path().join("kozmo.db")).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = SqliteStore::open_in(dir.path()).err().unwrap();
        assert!(e.0.contains("newer"), "{e}");
    }
}
