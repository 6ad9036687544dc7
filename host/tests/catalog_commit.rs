//! A success and its catalog entry are one commit: they land together or
//! not at all, so no crash or failed write can leave one without the other.
//!
//! The store below refuses the first write that carries a success: the
//! first commit moving an execution to Succeeded and the first separate
//! catalog write, as a disk that is full for a moment (or a daemon dying at
//! that write) would. The engine retries the failed commit; a catalog entry
//! written by a call of its own (before this fix: `catalog_put` while
//! finishing the step) was lost, and the next run of the same task called
//! the plugin again instead of hitting the catalog.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_engine::model::{
    ErrorDocument, EventRecord, EventRow, ExecPhase, ExecutionRecord, NewExecution, RoundCommit, TokenRow,
};
use kozmo_engine::resources::{ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::store::{CrashVictim, InsertOutcome, Store, StoreError, StoreResult, WriteTxn};
use kozmo_engine::{Engine, EngineHandle};
use kozmo_interface::LiteralMap;
use kozmo_store_sqlite::SqliteStore;
use serde_json::json;
use support::spec;

/// SQLite, refusing the first write of a success and the first catalog write.
struct BlipAtSuccess {
    inner: SqliteStore,
    success_refused: AtomicBool,
    catalog_refused: AtomicBool,
}

fn full() -> StoreError {
    StoreError("disk full for a moment".into())
}

fn succeeds(c: &RoundCommit) -> bool {
    c.state.phase == ExecPhase::Succeeded
}

/// A streamed transaction whose commit fails if it is the first success.
struct Txn<'a> {
    inner: Box<dyn WriteTxn + 'a>,
    refused: &'a AtomicBool,
    success: bool,
}

impl WriteTxn for Txn<'_> {
    fn insert(&mut self, n: &NewExecution) -> StoreResult<InsertOutcome> {
        self.inner.insert(n)
    }
    fn apply(&mut self, c: &RoundCommit) -> StoreResult<()> {
        self.success |= succeeds(c);
        self.inner.apply(c)
    }
    fn commit(self: Box<Self>) -> StoreResult<()> {
        if self.success && !self.refused.swap(true, Ordering::SeqCst) {
            // Dropped uncommitted: rolled back.
            return Err(full());
        }
        self.inner.commit()
    }
}

impl Store for BlipAtSuccess {
    fn begin(&self) -> StoreResult<Option<Box<dyn WriteTxn + '_>>> {
        Ok(self.inner.begin()?.map(|inner| {
            Box::new(Txn {
                inner,
                refused: &self.success_refused,
                success: false,
            }) as Box<dyn WriteTxn + '_>
        }))
    }
    fn commit(&self, batch: &mut [RoundCommit]) -> StoreResult<()> {
        if batch.iter().any(succeeds) && !self.success_refused.swap(true, Ordering::SeqCst) {
            return Err(full());
        }
        self.inner.commit(batch)
    }
    fn catalog_put(&self, k: &str, o: &LiteralMap) -> StoreResult<()> {
        if !self.catalog_refused.swap(true, Ordering::SeqCst) {
            return Err(full());
        }
        self.inner.catalog_put(k, o)
    }
    fn insert_execution(&self, n: &NewExecution) -> StoreResult<InsertOutcome> {
        self.inner.insert_execution(n)
    }
    fn append_events(&self, id: &str, events: &[EventRow]) -> StoreResult<()> {
        self.inner.append_events(id, events)
    }
    fn request_abort(&self, id: &str, r: &str) -> StoreResult<bool> {
        self.inner.request_abort(id, r)
    }
    fn count_crashes(&self, victims: &[CrashVictim], at_ms: i64) -> StoreResult<Vec<u32>> {
        self.inner.count_crashes(victims, at_ms)
    }
    fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        self.inner.get_execution(id)
    }
    fn list_executions(&self, p: Option<ExecPhase>, l: usize, a: Option<&str>) -> StoreResult<Vec<ExecutionRecord>> {
        self.inner.list_executions(p, l, a)
    }
    fn load_active(&self) -> StoreResult<Vec<ExecutionRecord>> {
        self.inner.load_active()
    }
    fn events(&self, id: &str) -> StoreResult<Vec<EventRecord>> {
        self.inner.events(id)
    }
    fn outputs(&self, id: &str, a: u32) -> StoreResult<Option<LiteralMap>> {
        self.inner.outputs(id, a)
    }
    fn error_document(&self, id: &str, a: u32) -> StoreResult<Option<ErrorDocument>> {
        self.inner.error_document(id, a)
    }
    fn tokens(&self) -> StoreResult<Vec<TokenRow>> {
        self.inner.tokens()
    }
    fn catalog_get(&self, k: &str) -> StoreResult<Option<LiteralMap>> {
        self.inner.catalog_get(k)
    }
    fn count_by_phase(&self) -> StoreResult<BTreeMap<ExecPhase, u64>> {
        self.inner.count_by_phase()
    }
}

fn cacheable() -> serde_json::Value {
    json!({
        "metadata": {"discoverable": true, "cache_version": "1"},
        "interface": {"outputs": {"x": {"type": "integer"}}},
        "inputs": {"x": 7},
        "custom": {"rounds": [{"phase": "Success", "echo_inputs": true}]}
    })
}

fn engine(data: &std::path::Path, store: Arc<dyn Store>) -> EngineHandle {
    Engine::start(
        support::test_config(data),
        store,
        Arc::new(support::Resolver(support::scripted())),
        ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>,
    )
    .unwrap()
}

fn wait_terminal(engine: &EngineHandle, id: &str) -> ExecPhase {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let phase = engine.get(id).unwrap().phase;
        if phase.is_terminal() {
            return phase;
        }
        assert!(Instant::now() < deadline, "{id} stuck in {phase:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_success_and_its_catalog_entry_land_together() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    {
        let store = Arc::new(BlipAtSuccess {
            inner: SqliteStore::open_in(&db).unwrap(),
            success_refused: AtomicBool::new(false),
            catalog_refused: AtomicBool::new(false),
        });
        let first = engine(&dir.path().join("first"), store.clone());
        first.submit(Some("first".into()), spec(cacheable())).unwrap();
        assert_eq!(wait_terminal(&first, "first"), ExecPhase::Succeeded);
        assert!(
            store.success_refused.load(Ordering::SeqCst),
            "the first success commit was refused and retried"
        );
        first.shutdown(Duration::from_secs(5));
    }
    // A later daemon on the same file: the same task is a catalog hit.
    let second = engine(&dir.path().join("second"), Arc::new(SqliteStore::open_in(&db).unwrap()));
    second.submit(Some("second".into()), spec(cacheable())).unwrap();
    assert_eq!(wait_terminal(&second, "second"), ExecPhase::Succeeded);
    let events = second.events("second").unwrap();
    assert_eq!(
        events[0].event.body["cache_status"], "CACHE_HIT",
        "the entry landed with the success: {:?}",
        events[0].event.body
    );
    assert_eq!(
        second.outputs("second").unwrap().unwrap()["x"],
        kozmo_interface::Literal::Integer(7)
    );
    second.shutdown(Duration::from_secs(5));
}
