//! The PostgreSQL write transaction of a group commit, made durable by one
//! `COMMIT` (one WAL flush) and rolled back if it is dropped before that.
//! A statement that fails aborts the whole transaction (PostgreSQL refuses
//! every later one), so a batch is all or nothing.
//!
//! Every statement is a round trip to the server, so step results are not
//! written one statement per row: [`StepBatch`] gathers them as columns
//! and writes them with one statement per table (`unnest` of arrays) once
//! [`FLUSH_AT`] are waiting, before a prune, and at commit. A step that
//! writes error documents, tokens or a catalog entry (rare), or a second
//! step of an execution already waiting, first sends what waits and is
//! then written row by row, so the order of writes is the order of
//! `apply` calls. New executions are written at once, since the engine
//! needs each outcome: a submission batch in one statement
//! (`WriteTxn::insert_all`), a lone one in one (a CTE).

use std::collections::HashSet;
use std::time::Instant;

use crate::cluster::PgCluster;
use crate::pg::{err, json, opt_json, Conn, Pooled};
use kozmo_engine::model::{EventRow, NewExecution, RoundCommit};
use kozmo_engine::store::CommitCost;
use kozmo_engine::store::{InsertOutcome, PendingSync, PrunedRows, StoreError, StoreResult, WriteTxn};
use kozmo_interface::literals::LiteralMap;

/// An open write transaction on a pooled connection.
pub(crate) struct PgTxn<'a> {
    conn: Pooled,
    sync_cost: &'a CommitCost,
    /// This node, when several daemons share the database: inserts take
    /// ownership, step commits are fenced ([`crate::cluster`]).
    node: Option<&'a PgCluster>,
    /// Executions this transaction ends (no longer held once committed).
    ended: Vec<String>,
    /// How a commit made without waiting for the flush is made durable.
    sync: WalSync,
    open: bool,
    /// A statement failed: PostgreSQL has aborted the transaction, and a
    /// `COMMIT` would answer `ROLLBACK` without an error.
    failed: bool,
    /// Step results applied but not yet sent.
    batch: StepBatch,
}

/// Step results waiting to be sent at which a batch is sent.
pub(crate) const FLUSH_AT: usize = 256;

impl<'a> PgTxn<'a> {
    /// `BEGIN` on `conn`.
    pub(crate) fn begin(
        mut conn: Pooled,
        sync_cost: &'a CommitCost,
        node: Option<&'a PgCluster>,
        sync: WalSync,
    ) -> StoreResult<Self> {
        conn.client.batch_execute("BEGIN").map_err(err)?;
        Ok(PgTxn {
            conn,
            sync_cost,
            node,
            ended: Vec::new(),
            sync,
            open: true,
            failed: false,
            batch: StepBatch::default(),
        })
    }

    /// The connection, for statements of its own.
    pub(crate) fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Commits without waiting for the WAL flush (`synchronous_commit`
    /// off for this transaction): visible at once, durable once
    /// [`sync_wal`] ran after it.
    pub(crate) fn finish_unsynced(mut self) -> StoreResult<()> {
        if !self.failed {
            let r = self.conn.client.batch_execute("SET LOCAL synchronous_commit TO OFF");
            self.failed |= r.is_err();
            r.map_err(err)?;
        }
        self.finish()
    }

    /// Commits (the WAL flush), recording what it cost.
    pub(crate) fn finish(mut self) -> StoreResult<()> {
        if !self.batch.is_empty() {
            let r = self.batch.send(&mut self.conn, self.node);
            self.failed |= r.is_err();
            r?;
        }
        if self.failed {
            return Err(StoreError("the transaction failed earlier; rolled back".into()));
        }
        let started = Instant::now();
        let r = self.conn.client.batch_execute("COMMIT");
        self.open = false;
        r.map_err(|e| {
            self.conn.broken = true;
            err(e)
        })?;
        self.sync_cost.observe(started.elapsed());
        if let Some(node) = self.node {
            node.ended(&self.ended);
        }
        Ok(())
    }
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.conn.client.batch_execute("ROLLBACK") {
                log::error!("rolling back a failed group commit: {}", crate::pg::describe(&e));
                // Never hand a connection in an unknown state to the next user.
                self.conn.broken = true;
            }
        }
    }
}

impl WriteTxn for PgTxn<'_> {
    /// Inserts one execution; only when the id exists already is its spec
    /// read back (one statement for the common case).
    fn insert(&mut self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        let r = self.insert_one(new);
        self.failed |= r.is_err();
        r
    }

    /// All in one statement (and the specs of those that existed in one
    /// more); one by one if an id repeats.
    fn insert_all(&mut self, news: &[NewExecution]) -> StoreResult<Vec<InsertOutcome>> {
        let r = self.insert_many(news);
        self.failed |= r.is_err();
        r
    }

    fn apply(&mut self, c: &RoundCommit) -> StoreResult<()> {
        let r = self.apply_one(c);
        self.failed |= r.is_err();
        r
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        self.finish()
    }

    /// The group commit's sync leaves the committer: `COMMIT` with
    /// `synchronous_commit` off returns before the WAL flush, and the
    /// returned sync (run on the engine's syncer thread) commits one small
    /// synchronous update, whose flush covers every commit before it.
    fn commit_unsynced(self: Box<Self>) -> StoreResult<Option<PendingSync>> {
        let sync = self.sync.clone();
        self.finish_unsynced()?;
        Ok(Some(Box::new(move || sync.run())))
    }

    fn delete_terminal(&mut self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        self.send_batch()?;
        crate::pg_prune::delete_terminal_in(&mut self.conn, ids, &mut self.failed)
    }
}

impl<'a> PgTxn<'a> {
    /// Sends the step results waiting, if any.
    fn send_batch(&mut self) -> StoreResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let r = self.batch.send(&mut self.conn, self.node);
        self.failed |= r.is_err();
        r
    }

    /// A step result: into the batch, or (rare writes, or its execution
    /// already waits) row by row after what waits.
    fn apply_one(&mut self, c: &RoundCommit) -> StoreResult<()> {
        if c.state.phase.is_terminal() && self.node.is_some() {
            self.ended.push(c.execution_id.clone());
        }
        let rare = c.error_document.is_some()
            || !c.tokens_granted.is_empty()
            || !c.tokens_released.is_empty()
            || c.catalog.is_some();
        if rare || self.batch.holds(&c.execution_id) {
            self.send_batch()?;
            return self.apply_rows(c);
        }
        let generation = self.node.map(|n| n.generation(&c.execution_id).unwrap_or(-1));
        self.batch.add(c, generation);
        if self.batch.len() >= FLUSH_AT {
            self.send_batch()?;
        }
        Ok(())
    }

    fn insert_many(&mut self, news: &[NewExecution]) -> StoreResult<Vec<InsertOutcome>> {
        let mut seen = HashSet::with_capacity(news.len());
        if news.len() < 2 || !news.iter().all(|n| seen.insert(n.id.as_str())) {
            return news.iter().map(|n| self.insert_one(n)).collect();
        }
        let col = |f: &dyn Fn(&NewExecution) -> i64| news.iter().map(f).collect::<Vec<i64>>();
        let id: Vec<&str> = news.iter().map(|n| n.id.as_str()).collect();
        let client_id: Vec<bool> = news.iter().map(|n| n.client_id).collect();
        let task_type: Vec<&str> = news.iter().map(|n| n.task_type.as_str()).collect();
        let phase: Vec<&str> = news.iter().map(|n| n.state.phase.as_str()).collect();
        let plugin_id: Vec<Option<&str>> = news.iter().map(|n| n.plugin_id.as_deref()).collect();
        let spec: Vec<&str> = news.iter().map(|n| n.spec_json.as_str()).collect();
        let owner: Vec<Option<&str>> = news.iter().map(|n| self.owner_of(n)).collect();
        let rows = self.conn.query(
            "WITH input AS (SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::bigint[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[]) \
             WITH ORDINALITY AS u(id, client_id, task_type, created_at, phase, attempt, system_failures, \
             updated_at, attempt_started_at, plugin_id, spec, owner, n)), \
             ins AS (INSERT INTO executions (id, client_id, task_type, created_at, phase, attempt, \
             system_failures, updated_at, attempt_started_at, handler_errors, plugin_id, owner, lease_generation) \
             SELECT id, client_id, task_type, created_at, phase, attempt, system_failures, updated_at, \
             attempt_started_at, 0, plugin_id, owner, CASE WHEN owner IS NULL THEN 0 ELSE 1 END \
             FROM input ORDER BY n ON CONFLICT (id) DO NOTHING RETURNING id), \
             spec AS (INSERT INTO execution_specs (execution_id, spec) \
             SELECT input.id, input.spec FROM input JOIN ins ON ins.id = input.id) \
             SELECT id FROM ins",
            &[
                &id,
                &client_id,
                &task_type,
                &col(&|n| n.created_at_ms),
                &phase,
                &col(&|n| n.state.attempt as i64),
                &col(&|n| n.state.system_failures as i64),
                &col(&|n| n.state.updated_at_ms),
                &col(&|n| n.state.attempt_started_at_ms),
                &plugin_id,
                &spec,
                &owner,
            ],
        )?;
        let created: HashSet<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if let Some(node) = self.node {
            node.hold_new(
                news.iter()
                    .zip(&owner)
                    .filter(|(n, o)| o.is_some() && created.contains(&n.id))
                    .map(|(n, _)| n.id.clone()),
            );
        }
        let existing: Vec<&str> = id.iter().copied().filter(|i| !created.contains(*i)).collect();
        let mut specs = std::collections::HashMap::new();
        if !existing.is_empty() {
            for r in self.conn.query(
                "SELECT execution_id, spec FROM execution_specs WHERE execution_id = ANY($1)",
                &[&existing],
            )? {
                specs.insert(
                    r.try_get::<_, String>(0).map_err(err)?,
                    r.try_get::<_, String>(1).map_err(err)?,
                );
            }
        }
        news.iter()
            .map(|n| {
                if created.contains(&n.id) {
                    return Ok(InsertOutcome::Created);
                }
                let spec_json = specs
                    .remove(&n.id)
                    .ok_or_else(|| StoreError(format!("execution {} exists without its spec", n.id)))?;
                Ok(InsertOutcome::Exists { spec_json })
            })
            .collect()
    }

    fn insert_one(&mut self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        let s = &new.state;
        let owner = self.owner_of(new);
        // One round trip: the row, its spec if the row is new, and whether
        // it was (data-modifying CTEs run whatever the query reads).
        let inserted = self
            .conn
            .query_opt(
                "WITH ins AS (INSERT INTO executions (id, client_id, task_type, created_at, phase, attempt, \
                 system_failures, updated_at, attempt_started_at, handler_errors, plugin_id, owner, \
                 lease_generation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $12, \
                 CASE WHEN $12::text IS NULL THEN 0 ELSE 1 END) ON CONFLICT (id) DO NOTHING RETURNING id), \
                 spec AS (INSERT INTO execution_specs (execution_id, spec) SELECT id, $11::text FROM ins) \
                 SELECT COUNT(*) FROM ins",
                &[
                    &new.id,
                    &new.client_id,
                    &new.task_type,
                    &new.created_at_ms,
                    &s.phase.as_str(),
                    &(s.attempt as i64),
                    &(s.system_failures as i64),
                    &s.updated_at_ms,
                    &s.attempt_started_at_ms,
                    &new.plugin_id,
                    &new.spec_json,
                    &owner,
                ],
            )?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()
            .map_err(err)?
            .unwrap_or(0);
        if inserted == 1 {
            if let (Some(node), Some(_)) = (self.node, owner) {
                node.hold_new([new.id.clone()]);
            }
            return Ok(InsertOutcome::Created);
        }
        let row = self
            .conn
            .query_opt("SELECT spec FROM execution_specs WHERE execution_id = $1", &[&new.id])?
            .ok_or_else(|| StoreError(format!("execution {} exists without its spec", new.id)))?;
        Ok(InsertOutcome::Exists {
            spec_json: row.try_get(0).map_err(err)?,
        })
    }

    /// One step result, a statement per row.
    fn apply_rows(&mut self, c: &RoundCommit) -> StoreResult<()> {
        let s = &c.state;
        let id = &c.execution_id;
        let node = self.node;
        let generation = node.map(|n| n.generation(id).unwrap_or(-1));
        let conn = &mut *self.conn;
        let updated = conn.execute(
            "UPDATE executions SET phase = $2, attempt = $3, system_failures = $4, updated_at = $5, \
             attempt_started_at = $6, error = $7, last_handler_error = $8, handler_errors = $9, finishing = $10, \
             abort_requested = CASE WHEN $11 THEN NULL ELSE abort_requested END WHERE id = $1 \
             AND ($12::text IS NULL OR (owner = $12 AND lease_generation = $13 AND EXISTS (SELECT 1 \
             FROM kozmo_nodes n WHERE n.node_id = $12 AND n.lease_until > kozmo_now_ms())))",
            &[
                id,
                &s.phase.as_str(),
                &(s.attempt as i64),
                &(s.system_failures as i64),
                &s.updated_at_ms,
                &s.attempt_started_at_ms,
                &opt_json(&s.error)?,
                &opt_json(&s.last_handler_error)?,
                &(s.handler_errors as i64),
                &opt_json(&s.finishing)?,
                &c.clear_abort,
                &node.map(|n| n.spec.node_id.as_str()),
                &generation,
            ],
        )?;
        if let Some(node) = node {
            if updated == 0 {
                return Err(fenced(conn, node, std::slice::from_ref(id)));
            }
        }
        if let Some((attempt, t)) = &c.task {
            conn.execute(
                "INSERT INTO task_states (execution_id, attempt, plugin_phase, plugin_phase_version, \
                 plugin_state, plugin_state_version, cleanup_on_failure, last_phase_updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (execution_id, attempt) DO UPDATE SET \
                 plugin_phase = EXCLUDED.plugin_phase, plugin_phase_version = EXCLUDED.plugin_phase_version, \
                 plugin_state = EXCLUDED.plugin_state, plugin_state_version = EXCLUDED.plugin_state_version, \
                 cleanup_on_failure = EXCLUDED.cleanup_on_failure, \
                 last_phase_updated_at = EXCLUDED.last_phase_updated_at",
                &[
                    id,
                    &(*attempt as i64),
                    &(t.plugin_phase.0 as i64),
                    &(t.plugin_phase_version as i64),
                    &t.plugin_state.as_deref(),
                    &(t.plugin_state_version as i64),
                    &t.cleanup_on_failure,
                    &t.last_phase_updated_at_ms,
                ],
            )?;
        }
        let writer = node.map(|n| (n.spec.node_id.as_str(), generation.unwrap_or(-1)));
        insert_events(conn, id, &c.events, writer)?;
        apply_rare(conn, c)
    }

    /// Who owns a new execution: this node if it serves its task type.
    fn owner_of(&self, new: &NewExecution) -> Option<&'a str> {
        self.node
            .filter(|n| n.serves(&new.task_type))
            .map(|n| n.spec.node_id.as_str())
    }
}

/// The error of a commit refused by the fencing check: the executions held
/// by another node go to [`PgCluster::fence`] (the engine drops them);
/// if none is, this node's lease ran out and the commit waits for the
/// heartbeat to take it again.
fn fenced(conn: &mut Conn, node: &PgCluster, ids: &[String]) -> StoreError {
    match crate::cluster::not_held(conn, node, ids) {
        Ok(lost) if !lost.is_empty() => {
            let e = StoreError(format!(
                "node {}: {} execution(s) are held by another node now ({}…); their steps are dropped",
                node.spec.node_id,
                lost.len(),
                lost[0]
            ));
            node.fence(lost);
            e
        }
        Ok(_) => StoreError(format!(
            "node {}: its lease ran out; steps are committed again once its heartbeat renews it",
            node.spec.node_id
        )),
        Err(e) => e,
    }
}

/// Makes the commits before it durable: one synchronous `UPSERT` of this
/// writer's row in `kozmo_sync` on a pooled connection (PostgreSQL
/// flushes the WAL in order, so the flush of its commit record covers
/// every commit made before it, synchronous or not).
#[derive(Clone)]
pub(crate) struct WalSync {
    pub(crate) pool: r2d2::Pool<crate::pg::Manager>,
    /// This writer's row (the node id, or the store's own).
    pub(crate) writer: std::sync::Arc<str>,
}

impl WalSync {
    /// Runs the sync (may be run again after a failure).
    pub(crate) fn run(&self) -> StoreResult<()> {
        let mut c = self
            .pool
            .get()
            .map_err(|e| StoreError(format!("no connection to sync the WAL: {e}")))?;
        c.execute(
            "INSERT INTO kozmo_sync (writer, syncs) VALUES ($1, 1) \
             ON CONFLICT (writer) DO UPDATE SET syncs = kozmo_sync.syncs + 1",
            &[&&*self.writer],
        )?;
        Ok(())
    }
}

/// Appends `events` of execution `id`, in order, in one statement.
/// `writer`: the node and fencing generation writing them, if several
/// daemons share the database.
pub(crate) fn insert_events(
    conn: &mut Conn,
    id: &str,
    events: &[EventRow],
    writer: Option<(&str, i64)>,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut attempt = Vec::with_capacity(events.len());
    let mut kind = Vec::with_capacity(events.len());
    let mut phase = Vec::with_capacity(events.len());
    let mut version = Vec::with_capacity(events.len());
    let mut occurred = Vec::with_capacity(events.len());
    let mut reported = Vec::with_capacity(events.len());
    let mut body = Vec::with_capacity(events.len());
    for e in events {
        attempt.push(e.attempt as i64);
        kind.push(e.kind);
        phase.push(e.phase.as_ref());
        version.push(e.version as i64);
        occurred.push(e.occurred_at_ms);
        reported.push(e.reported_at_ms);
        body.push(e.body.to_text());
    }
    let body: Vec<&str> = body.iter().map(|b| b.as_ref()).collect();
    // WITH ORDINALITY + ORDER BY: `seq` follows the order given.
    conn.execute(
        "INSERT INTO events (execution_id, attempt, kind, phase, version, occurred_at, reported_at, body, \
         node_id, lease_generation) \
         SELECT $1, a, k, p, v, o, r, b, $9, $10 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], \
         $6::bigint[], $7::bigint[], $8::text[]) WITH ORDINALITY AS x(a, k, p, v, o, r, b, n) ORDER BY n",
        &[
            &id,
            &attempt,
            &kind,
            &phase,
            &version,
            &occurred,
            &reported,
            &body,
            &writer.map(|w| w.0),
            &writer.map(|w| w.1),
        ],
    )
    .map_err(|x| {
        let kinds: Vec<String> = events.iter().map(|e| format!("{} {}", e.kind, e.phase)).collect();
        StoreError(format!("events [{}] of {id}: {}", kinds.join(", "), x.0))
    })?;
    Ok(())
}

/// Writes a catalog entry (replaces).
pub(crate) fn put_catalog(conn: &mut Conn, key: &str, outputs: &LiteralMap) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO catalog (key, outputs, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET outputs = EXCLUDED.outputs, created_at = EXCLUDED.created_at",
        &[&key, &json(outputs)?, &kozmo_engine::model::now_ms()],
    )?;
    Ok(())
}

/// What few steps write: outputs, error documents, resource tokens,
/// catalog entries.
fn apply_rare(conn: &mut Conn, c: &RoundCommit) -> StoreResult<()> {
    let id = &c.execution_id;
    if let Some((attempt, o)) = &c.outputs {
        conn.execute(
            "INSERT INTO outputs (execution_id, attempt, outputs) VALUES ($1, $2, $3) \
             ON CONFLICT (execution_id, attempt) DO UPDATE SET outputs = EXCLUDED.outputs",
            &[id, &(*attempt as i64), &json(o)?],
        )?;
    }
    if let Some((attempt, d)) = &c.error_document {
        conn.execute(
            "INSERT INTO error_documents (execution_id, attempt, document) VALUES ($1, $2, $3) \
             ON CONFLICT (execution_id, attempt) DO UPDATE SET document = EXCLUDED.document",
            &[id, &(*attempt as i64), &json(d)?],
        )?;
    }
    for t in &c.tokens_granted {
        conn.execute(
            "INSERT INTO resource_tokens (namespace, token, execution_id, attempt) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (namespace, token) DO UPDATE SET execution_id = EXCLUDED.execution_id, \
             attempt = EXCLUDED.attempt",
            &[&t.namespace, &t.token, &t.execution_id, &(t.attempt as i64)],
        )?;
    }
    for (ns, tok) in &c.tokens_released {
        conn.execute(
            "DELETE FROM resource_tokens WHERE namespace = $1 AND token = $2",
            &[ns, tok],
        )?;
    }
    if let Some((key, outputs)) = &c.catalog {
        put_catalog(conn, key, outputs)?;
    }
    Ok(())
}

/// Step results gathered as columns, sent with one statement per table.
#[derive(Default)]
struct StepBatch {
    ids: HashSet<String>,
    // executions
    id: Vec<String>,
    phase: Vec<&'static str>,
    attempt: Vec<i64>,
    system_failures: Vec<i64>,
    updated_at: Vec<i64>,
    attempt_started_at: Vec<i64>,
    error: Vec<Option<String>>,
    last_handler_error: Vec<Option<String>>,
    handler_errors: Vec<i64>,
    finishing: Vec<Option<String>>,
    clear_abort: Vec<bool>,
    /// The generation this node holds each under (fencing; -1 if not held).
    generation: Vec<i64>,
    // task_states
    t_id: Vec<String>,
    t_attempt: Vec<i64>,
    t_phase: Vec<i64>,
    t_phase_version: Vec<i64>,
    t_state: Vec<Option<Vec<u8>>>,
    t_state_version: Vec<i64>,
    t_cleanup: Vec<bool>,
    t_updated: Vec<i64>,
    // events, in order
    e_id: Vec<String>,
    e_attempt: Vec<i64>,
    e_kind: Vec<&'static str>,
    e_phase: Vec<String>,
    e_version: Vec<i64>,
    e_occurred: Vec<i64>,
    e_reported: Vec<i64>,
    e_body: Vec<String>,
    e_generation: Vec<Option<i64>>,
    // outputs
    o_id: Vec<String>,
    o_attempt: Vec<i64>,
    o_outputs: Vec<String>,
    /// A serialization failed while adding (reported at send).
    error_text: Option<String>,
}

impl StepBatch {
    fn len(&self) -> usize {
        self.id.len()
    }

    fn is_empty(&self) -> bool {
        self.id.is_empty() && self.error_text.is_none()
    }

    fn holds(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Adds a step result; `generation`: this node's on the execution, if
    /// several daemons share the database.
    fn add(&mut self, c: &RoundCommit, generation: Option<i64>) {
        let s = &c.state;
        let id = &c.execution_id;
        let mut text = |v: StoreResult<Option<String>>| {
            v.unwrap_or_else(|e| {
                self.error_text.get_or_insert(e.0);
                None
            })
        };
        let error = text(opt_json(&s.error));
        let last_handler_error = text(opt_json(&s.last_handler_error));
        let finishing = text(opt_json(&s.finishing));
        let outputs = c.outputs.as_ref().map(|(a, o)| (*a, text(json(o).map(Some))));
        self.ids.insert(id.clone());
        self.id.push(id.clone());
        self.phase.push(s.phase.as_str());
        self.attempt.push(s.attempt as i64);
        self.system_failures.push(s.system_failures as i64);
        self.updated_at.push(s.updated_at_ms);
        self.attempt_started_at.push(s.attempt_started_at_ms);
        self.error.push(error);
        self.last_handler_error.push(last_handler_error);
        self.handler_errors.push(s.handler_errors as i64);
        self.finishing.push(finishing);
        self.clear_abort.push(c.clear_abort);
        self.generation.push(generation.unwrap_or(-1));
        if let Some((attempt, t)) = &c.task {
            self.t_id.push(id.clone());
            self.t_attempt.push(*attempt as i64);
            self.t_phase.push(t.plugin_phase.0 as i64);
            self.t_phase_version.push(t.plugin_phase_version as i64);
            self.t_state.push(t.plugin_state.clone());
            self.t_state_version.push(t.plugin_state_version as i64);
            self.t_cleanup.push(t.cleanup_on_failure);
            self.t_updated.push(t.last_phase_updated_at_ms);
        }
        for e in &c.events {
            self.e_id.push(id.clone());
            self.e_attempt.push(e.attempt as i64);
            self.e_kind.push(e.kind);
            self.e_phase.push(e.phase.to_string());
            self.e_version.push(e.version as i64);
            self.e_occurred.push(e.occurred_at_ms);
            self.e_reported.push(e.reported_at_ms);
            self.e_body.push(e.body.to_text().into_owned());
            self.e_generation.push(generation);
        }
        if let Some((attempt, Some(o))) = outputs {
            self.o_id.push(id.clone());
            self.o_attempt.push(attempt as i64);
            self.o_outputs.push(o);
        }
    }

    /// Writes everything gathered (a statement per table that has rows)
    /// and empties the batch.
    /// With `node`, only the rows this node holds (fencing): a batch with
    /// any other is refused.
    fn send(&mut self, conn: &mut Conn, node: Option<&PgCluster>) -> StoreResult<()> {
        let b = std::mem::take(self);
        if let Some(e) = b.error_text {
            return Err(StoreError(e));
        }
        let me = node.map(|n| n.spec.node_id.as_str());
        let updated = conn.execute(
            "UPDATE executions e SET phase = u.phase, attempt = u.attempt, system_failures = u.system_failures, \
             updated_at = u.updated_at, attempt_started_at = u.attempt_started_at, error = u.error, \
             last_handler_error = u.last_handler_error, handler_errors = u.handler_errors, \
             finishing = u.finishing, \
             abort_requested = CASE WHEN u.clear_abort THEN NULL ELSE e.abort_requested END \
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], \
             $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bool[], $12::bigint[]) \
             AS u(id, phase, attempt, system_failures, updated_at, attempt_started_at, error, \
             last_handler_error, handler_errors, finishing, clear_abort, generation) WHERE e.id = u.id \
             AND ($13::text IS NULL OR (e.owner = $13 AND e.lease_generation = u.generation AND EXISTS \
             (SELECT 1 FROM kozmo_nodes n WHERE n.node_id = $13 AND n.lease_until > kozmo_now_ms())))",
            &[
                &b.id,
                &b.phase,
                &b.attempt,
                &b.system_failures,
                &b.updated_at,
                &b.attempt_started_at,
                &b.error,
                &b.last_handler_error,
                &b.handler_errors,
                &b.finishing,
                &b.clear_abort,
                &b.generation,
                &me,
            ],
        )?;
        if let Some(node) = node {
            if updated < b.id.len() as u64 {
                return Err(fenced(conn, node, &b.id));
            }
        }
        if !b.t_id.is_empty() {
            conn.execute(
                "INSERT INTO task_states (execution_id, attempt, plugin_phase, plugin_phase_version, \
                 plugin_state, plugin_state_version, cleanup_on_failure, last_phase_updated_at) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[], \
                 $6::bigint[], $7::bool[], $8::bigint[]) \
                 ON CONFLICT (execution_id, attempt) DO UPDATE SET \
                 plugin_phase = EXCLUDED.plugin_phase, plugin_phase_version = EXCLUDED.plugin_phase_version, \
                 plugin_state = EXCLUDED.plugin_state, plugin_state_version = EXCLUDED.plugin_state_version, \
                 cleanup_on_failure = EXCLUDED.cleanup_on_failure, \
                 last_phase_updated_at = EXCLUDED.last_phase_updated_at",
                &[
                    &b.t_id,
                    &b.t_attempt,
                    &b.t_phase,
                    &b.t_phase_version,
                    &b.t_state,
                    &b.t_state_version,
                    &b.t_cleanup,
                    &b.t_updated,
                ],
            )?;
        }
        if !b.e_id.is_empty() {
            conn.execute(
                "INSERT INTO events (execution_id, attempt, kind, phase, version, occurred_at, reported_at, body, \
                 node_id, lease_generation) \
                 SELECT i, a, k, p, v, o, r, b, $9, g FROM unnest($1::text[], $2::bigint[], $3::text[], \
                 $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $10::bigint[]) WITH ORDINALITY \
                 AS x(i, a, k, p, v, o, r, b, g, n) ORDER BY n",
                &[
                    &b.e_id,
                    &b.e_attempt,
                    &b.e_kind,
                    &b.e_phase,
                    &b.e_version,
                    &b.e_occurred,
                    &b.e_reported,
                    &b.e_body,
                    &me,
                    &b.e_generation,
                ],
            )
            .map_err(|x| StoreError(format!("events of {} step results: {}", b.id.len(), x.0)))?;
        }
        if !b.o_id.is_empty() {
            conn.execute(
                "INSERT INTO outputs (execution_id, attempt, outputs) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
                 ON CONFLICT (execution_id, attempt) DO UPDATE SET outputs = EXCLUDED.outputs",
                &[&b.o_id, &b.o_attempt, &b.o_outputs],
            )?;
        }
        Ok(())
    }
}
