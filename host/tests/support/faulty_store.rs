//! A store that refuses the writes a test picks (a disk full now and then, a
//! write that never happened): every other call goes to the store inside.

use std::collections::BTreeMap;
use std::sync::Arc;

use kozmo_engine::model::{
    ErrorDocument, EventRecord, EventRow, ExecPhase, ExecutionRecord, NewExecution, RoundCommit, TokenRow,
};
use kozmo_engine::store::{CrashVictim, InsertOutcome, PendingSync, Store, StoreError, StoreResult, WriteTxn};
use kozmo_interface::LiteralMap;

/// A write the engine asks of the store.
pub enum Write<'a> {
    /// A batch of step results (`Store::commit`, and `Store::write` through it).
    Commit(&'a [RoundCommit]),
    /// The commit of a streamed transaction: the phases its steps moved to.
    TxnCommit(&'a [ExecPhase]),
    /// A catalog entry written on its own (`Store::catalog_put`).
    CatalogPut,
    /// The sync of a streamed transaction committed without one
    /// (`WriteTxn::commit_unsynced`; refused: the sync failed, the
    /// transaction stays committed and the engine tries the sync again).
    Sync,
}

type Refuse = dyn Fn(Write<'_>) -> bool + Send + Sync;

/// Refuses a write when `refuse` says so ("disk full"; a refused streamed
/// transaction is rolled back).
pub struct FaultyStore {
    inner: Box<dyn Store>,
    refuse: Arc<Refuse>,
}

impl FaultyStore {
    /// `inner`, refusing what `refuse` picks.
    pub fn new(inner: Box<dyn Store>, refuse: impl Fn(Write<'_>) -> bool + Send + Sync + 'static) -> Self {
        FaultyStore {
            inner,
            refuse: Arc::new(refuse),
        }
    }

    fn check(&self, w: Write<'_>) -> StoreResult<()> {
        match (self.refuse)(w) {
            true => Err(StoreError("disk full".into())),
            false => Ok(()),
        }
    }
}

/// A streamed transaction asking its store before it commits.
struct Txn<'a> {
    inner: Box<dyn WriteTxn + 'a>,
    store: &'a FaultyStore,
    phases: Vec<ExecPhase>,
}

impl WriteTxn for Txn<'_> {
    fn insert(&mut self, n: &NewExecution) -> StoreResult<InsertOutcome> {
        self.inner.insert(n)
    }
    fn apply(&mut self, c: &RoundCommit) -> StoreResult<()> {
        self.phases.push(c.state.phase);
        self.inner.apply(c)
    }
    fn commit(self: Box<Self>) -> StoreResult<()> {
        // Refused: dropped uncommitted, so rolled back.
        self.store.check(Write::TxnCommit(&self.phases))?;
        self.inner.commit()
    }
    fn commit_unsynced(self: Box<Self>) -> StoreResult<Option<PendingSync>> {
        self.store.check(Write::TxnCommit(&self.phases))?;
        let refuse = self.store.refuse.clone();
        Ok(self.inner.commit_unsynced()?.map(|mut sync| {
            Box::new(move || match refuse(Write::Sync) {
                true => Err(StoreError("sync failed (refused by the test)".into())),
                false => sync(),
            }) as PendingSync
        }))
    }
}

impl Store for FaultyStore {
    fn begin(&self) -> StoreResult<Option<Box<dyn WriteTxn + '_>>> {
        Ok(self.inner.begin()?.map(|inner| {
            Box::new(Txn {
                inner,
                store: self,
                phases: Vec::new(),
            }) as Box<dyn WriteTxn + '_>
        }))
    }
    fn commit(&self, batch: &mut [RoundCommit]) -> StoreResult<()> {
        self.check(Write::Commit(batch))?;
        self.inner.commit(batch)
    }
    fn catalog_put(&self, k: &str, o: &LiteralMap) -> StoreResult<()> {
        self.check(Write::CatalogPut)?;
        self.inner.catalog_put(k, o)
    }
    fn insert_execution(&self, n: &NewExecution) -> StoreResult<InsertOutcome> {
        self.inner.insert_execution(n)
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
    fn request_abort(&self, id: &str, r: &str) -> StoreResult<bool> {
        self.inner.request_abort(id, r)
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
    fn append_events(&self, id: &str, events: &[EventRow]) -> StoreResult<()> {
        self.inner.append_events(id, events)
    }
    fn count_crashes(&self, victims: &[CrashVictim], at_ms: i64) -> StoreResult<Vec<u32>> {
        self.inner.count_crashes(victims, at_ms)
    }
}
