//! In-memory [`Store`]: same semantics, no durability (benchmarks, tests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use kozmo_interface::literals::LiteralMap;

use super::{InsertOutcome, Store, StoreResult};
use crate::model::{
    ErrorDocument, EventRecord, ExecPhase, ExecutionRecord, NewEvent, NewExecution, RoundCommit, TaskState, TokenRow,
};

/// An event as kept in memory: the body as compact JSON text, a tenth of
/// the memory of a `serde_json::Value` tree and cheaper to make than its
/// clone (most of P2's store cost was cloning and growing those trees).
struct StoredEvent {
    seq: i64,
    kind: String,
    attempt: u32,
    phase: String,
    version: u32,
    occurred_at_ms: i64,
    reported_at_ms: i64,
    body: Box<str>,
}

impl StoredEvent {
    fn record(&self, id: &str) -> EventRecord {
        EventRecord {
            seq: self.seq,
            execution_id: id.to_string(),
            event: NewEvent {
                kind: self.kind.clone(),
                attempt: self.attempt,
                phase: self.phase.clone(),
                version: self.version,
                occurred_at_ms: self.occurred_at_ms,
                reported_at_ms: self.reported_at_ms,
                body: serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null),
            },
        }
    }
}

#[derive(Default)]
struct Inner {
    executions: BTreeMap<String, ExecutionRecord>,
    tasks: BTreeMap<(String, u32), TaskState>,
    events: BTreeMap<String, Vec<StoredEvent>>,
    outputs: BTreeMap<(String, u32), LiteralMap>,
    errors: BTreeMap<(String, u32), ErrorDocument>,
    tokens: BTreeSet<TokenRow>,
    catalog: BTreeMap<String, LiteralMap>,
    seq: i64,
}

impl Inner {
    fn with_task(&self, rec: &ExecutionRecord) -> ExecutionRecord {
        let mut r = rec.clone();
        r.task = self
            .tasks
            .get(&(r.id.clone(), r.state.attempt))
            .cloned()
            .unwrap_or_default();
        r
    }
}

/// An in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }
}

impl Store for MemoryStore {
    fn insert_execution(&self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        let mut g = self.lock();
        if let Some(e) = g.executions.get(&new.id) {
            return Ok(InsertOutcome::Exists {
                spec_json: e.spec_json.clone(),
            });
        }
        g.executions.insert(
            new.id.clone(),
            ExecutionRecord {
                id: new.id.clone(),
                client_id: new.client_id,
                spec_json: new.spec_json.clone(),
                task_type: new.task_type.clone(),
                created_at_ms: new.created_at_ms,
                state: new.state.clone(),
                abort_requested: None,
                task: TaskState::default(),
            },
        );
        Ok(InsertOutcome::Created)
    }

    fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let g = self.lock();
        Ok(g.executions.get(id).map(|r| g.with_task(r)))
    }

    fn list_executions(
        &self,
        phase: Option<ExecPhase>,
        limit: usize,
        after: Option<&str>,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        let g = self.lock();
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_string()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(g.executions
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| match phase {
                Some(p) => r.state.phase == p,
                None => true,
            })
            .take(limit)
            .map(|r| g.with_task(r))
            .collect())
    }

    fn load_active(&self) -> StoreResult<Vec<ExecutionRecord>> {
        let g = self.lock();
        Ok(g.executions
            .values()
            .filter(|r| !r.state.phase.is_terminal())
            .map(|r| g.with_task(r))
            .collect())
    }

    fn commit(&self, batch: &[RoundCommit]) -> StoreResult<()> {
        let mut g = self.lock();
        for c in batch {
            let id = c.execution_id.clone();
            match g.executions.get_mut(&id) {
                Some(e) => {
                    e.state = c.state.clone();
                    if c.clear_abort {
                        e.abort_requested = None;
                    }
                }
                None => continue,
            }
            if let Some((attempt, ts)) = &c.task {
                g.tasks.insert((id.clone(), *attempt), ts.clone());
            }
            if !c.events.is_empty() {
                let first = g.seq + 1;
                g.seq += c.events.len() as i64;
                let stored = g.events.entry(id.clone()).or_default();
                for (ev, seq) in c.events.iter().zip(first..) {
                    stored.push(StoredEvent {
                        seq,
                        kind: ev.kind.clone(),
                        attempt: ev.attempt,
                        phase: ev.phase.clone(),
                        version: ev.version,
                        occurred_at_ms: ev.occurred_at_ms,
                        reported_at_ms: ev.reported_at_ms,
                        body: ev.body.to_string().into_boxed_str(),
                    });
                }
            }
            if let Some((attempt, o)) = &c.outputs {
                g.outputs.insert((id.clone(), *attempt), o.clone());
            }
            if let Some((attempt, d)) = &c.error_document {
                g.errors.insert((id.clone(), *attempt), d.clone());
            }
            for t in &c.tokens_granted {
                g.tokens.insert(t.clone());
            }
            for (ns, tok) in &c.tokens_released {
                g.tokens.retain(|t| !(&t.namespace == ns && &t.token == tok));
            }
        }
        Ok(())
    }

    fn request_abort(&self, id: &str, reason: &str) -> StoreResult<bool> {
        let mut g = self.lock();
        match g.executions.get_mut(id) {
            Some(e) => {
                e.abort_requested = Some(reason.to_string());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn events(&self, id: &str) -> StoreResult<Vec<EventRecord>> {
        Ok(self
            .lock()
            .events
            .get(id)
            .map(|v| v.iter().map(|e| e.record(id)).collect())
            .unwrap_or_default())
    }

    fn outputs(&self, id: &str, attempt: u32) -> StoreResult<Option<LiteralMap>> {
        Ok(self.lock().outputs.get(&(id.to_string(), attempt)).cloned())
    }

    fn error_document(&self, id: &str, attempt: u32) -> StoreResult<Option<ErrorDocument>> {
        Ok(self.lock().errors.get(&(id.to_string(), attempt)).cloned())
    }

    fn tokens(&self) -> StoreResult<Vec<TokenRow>> {
        Ok(self.lock().tokens.iter().cloned().collect())
    }

    fn catalog_get(&self, key: &str) -> StoreResult<Option<LiteralMap>> {
        Ok(self.lock().catalog.get(key).cloned())
    }

    fn catalog_put(&self, key: &str, outputs: &LiteralMap) -> StoreResult<()> {
        self.lock().catalog.insert(key.to_string(), outputs.clone());
        Ok(())
    }

    fn count_by_phase(&self) -> StoreResult<BTreeMap<ExecPhase, u64>> {
        let mut m = BTreeMap::new();
        for r in self.lock().executions.values() {
            *m.entry(r.state.phase).or_insert(0) += 1;
        }
        Ok(m)
    }
}
