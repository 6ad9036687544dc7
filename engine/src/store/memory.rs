//! In-memory [`Store`]: same semantics, no durability (benchmarks, tests).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use kozmo_interface::literals::LiteralMap;

use super::{CrashVictim, InsertOutcome, PruneCandidate, PruneSelect, PrunedRows, Store, StoreResult};
use crate::model::{
    ErrorDocument, EventBody, EventRecord, EventRow, ExecPhase, ExecutionRecord, NewEvent, NewExecution, RoundCommit,
    TaskState, TokenRow,
};

/// An event as kept in memory: task event bodies stay typed (shared with
/// the commit that carried them), others as compact JSON text; bodies are
/// turned into JSON values only when read.
struct StoredEvent {
    seq: i64,
    /// The previous event of the same execution (its `seq`), 0 for none.
    prev: i64,
    kind: &'static str,
    attempt: u32,
    phase: std::borrow::Cow<'static, str>,
    version: u32,
    occurred_at_ms: i64,
    reported_at_ms: i64,
    body: EventBody,
}

impl StoredEvent {
    fn record(&self, id: &str) -> EventRecord {
        EventRecord {
            seq: self.seq,
            execution_id: id.to_string(),
            event: NewEvent {
                kind: self.kind.to_string(),
                attempt: self.attempt,
                phase: self.phase.to_string(),
                version: self.version,
                occurred_at_ms: self.occurred_at_ms,
                reported_at_ms: self.reported_at_ms,
                body: self.body.to_value(),
            },
        }
    }
}

/// One execution and everything stored for it (one map lookup per commit).
struct Row {
    rec: ExecutionRecord,
    /// Task state per attempt.
    tasks: Vec<(u32, TaskState)>,
    /// `seq` of its last event in the log (0: none yet).
    last_event: i64,
    outputs: BTreeMap<u32, LiteralMap>,
    errors: BTreeMap<u32, ErrorDocument>,
}

/// Events per log chunk (about 100 KiB: one allocation, never moved).
const EVENT_CHUNK: usize = 1024;

/// Every event, in commit order (`seq` n is entry n - 1), in fixed-size
/// chunks: appending never moves or copies what is stored, and an
/// execution's events are chained from its row's last one.
#[derive(Default)]
struct EventLog {
    chunks: Vec<Vec<StoredEvent>>,
}

impl EventLog {
    fn push(&mut self, ev: StoredEvent) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < EVENT_CHUNK => c.push(ev),
            _ => {
                let mut c = Vec::with_capacity(EVENT_CHUNK);
                c.push(ev);
                self.chunks.push(c);
            }
        }
    }

    fn get(&self, seq: i64) -> Option<&StoredEvent> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.chunks.get(i / EVENT_CHUNK)?.get(i % EVENT_CHUNK)
    }

    /// Drops the bodies of the events chained back from `last` (a pruned
    /// execution's: the log is append-only, so their fixed-size entries
    /// stay, unreachable); returns how many.
    fn forget_chain(&mut self, last: i64) -> u64 {
        let mut n = 0;
        let mut at = last;
        while let Some(i) = at.checked_sub(1).and_then(|i| usize::try_from(i).ok()) {
            let Some(e) = self
                .chunks
                .get_mut(i / EVENT_CHUNK)
                .and_then(|c| c.get_mut(i % EVENT_CHUNK))
            else {
                break;
            };
            e.body = EventBody::Text(String::new());
            at = e.prev;
            n += 1;
        }
        n
    }

    /// The events chained back from `last`, oldest first.
    fn chain(&self, last: i64) -> Vec<&StoredEvent> {
        let mut out = Vec::new();
        let mut at = last;
        while let Some(e) = self.get(at) {
            out.push(e);
            at = e.prev;
        }
        out.reverse();
        out
    }
}

#[derive(Default)]
struct Inner {
    events: EventLog,
    /// Executions by id (commits look one up per step).
    executions: HashMap<String, Row>,
    /// Their ids in order (listing).
    order: BTreeSet<String>,
    /// Executions per phase, kept as phases change.
    by_phase: BTreeMap<ExecPhase, u64>,
    tokens: BTreeSet<TokenRow>,
    /// Catalog entries with when they were written.
    catalog: BTreeMap<String, (LiteralMap, i64)>,
    /// Consecutive crashes per execution ([`Store::count_crashes`]).
    crashes: HashMap<String, u32>,
    seq: i64,
}

impl Inner {
    /// Appends `ev` to the log and to `id`'s chain.
    fn push_event(&mut self, id: &str, ev: EventRow) {
        let Some(row) = self.executions.get_mut(id) else {
            return;
        };
        self.seq += 1;
        let prev = std::mem::replace(&mut row.last_event, self.seq);
        self.events.push(StoredEvent {
            seq: self.seq,
            prev,
            kind: ev.kind,
            attempt: ev.attempt,
            phase: ev.phase,
            version: ev.version,
            occurred_at_ms: ev.occurred_at_ms,
            reported_at_ms: ev.reported_at_ms,
            body: ev.body,
        });
    }
}

impl Row {
    fn with_task(&self) -> ExecutionRecord {
        let mut r = self.rec.clone();
        r.task = self
            .tasks
            .iter()
            .find(|(a, _)| *a == r.state.attempt)
            .map(|(_, t)| t.clone())
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
    fn commits_inline(&self) -> bool {
        true
    }

    fn insert_execution(&self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        let mut g = self.lock();
        if let Some(e) = g.executions.get(&new.id) {
            return Ok(InsertOutcome::Exists {
                spec_json: e.rec.spec_json.clone(),
            });
        }
        g.order.insert(new.id.clone());
        *g.by_phase.entry(new.state.phase).or_insert(0) += 1;
        g.executions.insert(
            new.id.clone(),
            Row {
                rec: ExecutionRecord {
                    id: new.id.clone(),
                    client_id: new.client_id,
                    spec_json: new.spec_json.clone(),
                    task_type: new.task_type.clone(),
                    created_at_ms: new.created_at_ms,
                    state: new.state.clone(),
                    abort_requested: None,
                    task: TaskState::default(),
                    plugin_id: new.plugin_id.clone(),
                },
                tasks: Vec::new(),
                last_event: 0,
                outputs: BTreeMap::new(),
                errors: BTreeMap::new(),
            },
        );
        Ok(InsertOutcome::Created)
    }

    fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        Ok(self.lock().executions.get(id).map(Row::with_task))
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
        Ok(g.order
            .range((start, std::ops::Bound::Unbounded))
            .filter_map(|id| g.executions.get(id))
            .filter(|r| match phase {
                Some(p) => r.rec.state.phase == p,
                None => true,
            })
            .take(limit)
            .map(Row::with_task)
            .collect())
    }

    fn load_active(&self) -> StoreResult<Vec<ExecutionRecord>> {
        let g = self.lock();
        Ok(g.order
            .iter()
            .filter_map(|id| g.executions.get(id))
            .filter(|r| !r.rec.state.phase.is_terminal())
            .map(Row::with_task)
            .collect())
    }

    fn commit(&self, batch: &mut [RoundCommit]) -> StoreResult<()> {
        let mut g = self.lock();
        let g = &mut *g;
        // Never fails: what it keeps is moved out of the commits.
        for c in batch {
            let Some(row) = g.executions.get_mut(c.execution_id.as_str()) else {
                continue;
            };
            let (old, new) = (row.rec.state.phase, c.state.phase);
            if old != new {
                if let Some(n) = g.by_phase.get_mut(&old) {
                    *n -= 1;
                }
                *g.by_phase.entry(new).or_insert(0) += 1;
            }
            std::mem::swap(&mut row.rec.state, &mut c.state);
            if c.clear_abort {
                row.rec.abort_requested = None;
            }
            if let Some((attempt, ts)) = c.task.take() {
                match row.tasks.iter_mut().find(|(a, _)| *a == attempt) {
                    Some((_, t)) => *t = ts,
                    None => row.tasks.push((attempt, ts)),
                }
            }
            if let Some((attempt, o)) = c.outputs.take() {
                row.outputs.insert(attempt, o);
            }
            if let Some((attempt, d)) = c.error_document.take() {
                row.errors.insert(attempt, d);
            }
            for t in c.tokens_granted.drain(..) {
                g.tokens.insert(t);
            }
            if let Some((key, outputs)) = c.catalog.take() {
                g.catalog.insert(key, (outputs, crate::model::now_ms()));
            }
            for (ns, tok) in &c.tokens_released {
                g.tokens.retain(|t| !(&t.namespace == ns && &t.token == tok));
            }
            for ev in c.events.drain(..) {
                g.push_event(&c.execution_id, ev);
            }
        }
        Ok(())
    }

    fn append_events(&self, id: &str, events: &[EventRow]) -> StoreResult<()> {
        let mut g = self.lock();
        for ev in events {
            g.push_event(id, ev.clone());
        }
        Ok(())
    }

    fn count_crashes(&self, victims: &[CrashVictim], _at_ms: i64) -> StoreResult<Vec<u32>> {
        let mut g = self.lock();
        g.crashes.retain(|id, _| victims.iter().any(|v| &v.execution_id == id));
        Ok(victims
            .iter()
            .map(|v| {
                let n = g.crashes.entry(v.execution_id.clone()).or_insert(0);
                *n += 1;
                *n
            })
            .collect())
    }

    fn request_abort(&self, id: &str, reason: &str) -> StoreResult<bool> {
        let mut g = self.lock();
        match g.executions.get_mut(id) {
            Some(e) => {
                e.rec.abort_requested = Some(reason.to_string());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn events(&self, id: &str) -> StoreResult<Vec<EventRecord>> {
        let g = self.lock();
        Ok(g.executions
            .get(id)
            .map(|r| g.events.chain(r.last_event).into_iter().map(|e| e.record(id)).collect())
            .unwrap_or_default())
    }

    fn events_after(&self, id: Option<&str>, after_seq: i64, limit: usize) -> StoreResult<Vec<EventRecord>> {
        let g = self.lock();
        // The log keeps no execution ids: walk back the chains that reach
        // past `after_seq` (tests and benchmarks only; O(executions)).
        let mut out: Vec<EventRecord> = Vec::new();
        let rows: Box<dyn Iterator<Item = (&String, &Row)>> = match id {
            Some(id) => Box::new(g.executions.get_key_value(id).into_iter()),
            None => Box::new(g.executions.iter()),
        };
        for (id, row) in rows {
            let mut at = row.last_event;
            while at > after_seq {
                let Some(e) = g.events.get(at) else { break };
                out.push(e.record(id));
                at = e.prev;
            }
        }
        out.sort_by_key(|e| e.seq);
        out.truncate(limit);
        Ok(out)
    }

    fn last_event_seq(&self) -> StoreResult<i64> {
        Ok(self.lock().seq)
    }

    fn outputs(&self, id: &str, attempt: u32) -> StoreResult<Option<LiteralMap>> {
        Ok(self
            .lock()
            .executions
            .get(id)
            .and_then(|r| r.outputs.get(&attempt).cloned()))
    }

    fn error_document(&self, id: &str, attempt: u32) -> StoreResult<Option<ErrorDocument>> {
        Ok(self
            .lock()
            .executions
            .get(id)
            .and_then(|r| r.errors.get(&attempt).cloned()))
    }

    fn tokens(&self) -> StoreResult<Vec<TokenRow>> {
        Ok(self.lock().tokens.iter().cloned().collect())
    }

    fn catalog_get(&self, key: &str) -> StoreResult<Option<LiteralMap>> {
        Ok(self.lock().catalog.get(key).map(|(o, _)| o.clone()))
    }

    fn catalog_put(&self, key: &str, outputs: &LiteralMap) -> StoreResult<()> {
        self.lock()
            .catalog
            .insert(key.to_string(), (outputs.clone(), crate::model::now_ms()));
        Ok(())
    }

    fn prune_candidates(&self, sel: &PruneSelect) -> StoreResult<Vec<PruneCandidate>> {
        let g = self.lock();
        let mut terminal: Vec<&Row> = g
            .executions
            .values()
            .filter(|r| r.rec.state.phase.is_terminal())
            .collect();
        terminal.sort_by(|a, b| (a.rec.state.updated_at_ms, &a.rec.id).cmp(&(b.rec.state.updated_at_ms, &b.rec.id)));
        let excess = sel.keep_at_most.map_or(0, |keep| {
            terminal.len().saturating_sub(keep.min(usize::MAX as u64) as usize)
        });
        let after = sel.after_or_first();
        Ok(terminal
            .iter()
            .enumerate()
            .filter(|(_, r)| (r.rec.state.updated_at_ms, r.rec.id.as_str()) > after)
            .filter(|(i, r)| {
                *i < excess
                    || sel
                        .cutoff(r.rec.state.phase)
                        .is_some_and(|t| r.rec.state.updated_at_ms < t)
            })
            .take(sel.limit)
            .map(|(_, r)| PruneCandidate {
                id: r.rec.id.clone(),
                spec_json: r.rec.spec_json.clone(),
                task_type: r.rec.task_type.clone(),
                plugin_id: r.rec.plugin_id.clone(),
                attempt: r.rec.state.attempt,
                phase: r.rec.state.phase,
                updated_at_ms: r.rec.state.updated_at_ms,
            })
            .collect())
    }

    fn delete_executions(&self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        let mut g = self.lock();
        let g = &mut *g;
        let mut rows = PrunedRows::default();
        let mut gone = Vec::new();
        for id in ids {
            if !g.executions.get(id).is_some_and(|r| r.rec.state.phase.is_terminal()) {
                continue;
            }
            let Some(row) = g.executions.remove(id) else { continue };
            g.order.remove(id);
            if let Some(n) = g.by_phase.get_mut(&row.rec.state.phase) {
                *n -= 1;
            }
            rows.executions += 1;
            rows.specs += 1;
            rows.task_states += row.tasks.len() as u64;
            rows.outputs += row.outputs.len() as u64;
            rows.error_documents += row.errors.len() as u64;
            rows.events += g.events.forget_chain(row.last_event);
            rows.plugin_crashes += u64::from(g.crashes.remove(id).is_some());
            let before = g.tokens.len();
            g.tokens.retain(|t| &t.execution_id != id);
            rows.resource_tokens += (before - g.tokens.len()) as u64;
            gone.push(row.rec.id);
        }
        Ok((gone, rows))
    }

    fn prune_catalog(&self, limit: usize) -> StoreResult<u64> {
        let mut g = self.lock();
        let horizon = g
            .executions
            .values()
            .map(|r| r.rec.created_at_ms)
            .min()
            .unwrap_or(i64::MAX);
        let old: Vec<String> = g
            .catalog
            .iter()
            .filter(|(_, (_, at))| *at < horizon)
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            g.catalog.remove(k);
        }
        Ok(old.len() as u64)
    }

    fn oldest_terminal(&self) -> StoreResult<Option<i64>> {
        Ok(self
            .lock()
            .executions
            .values()
            .filter(|r| r.rec.state.phase.is_terminal())
            .map(|r| r.rec.state.updated_at_ms)
            .min())
    }

    fn count_by_phase(&self) -> StoreResult<BTreeMap<ExecPhase, u64>> {
        Ok(self
            .lock()
            .by_phase
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| (*p, *n))
            .collect())
    }
}
