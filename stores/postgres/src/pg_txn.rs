//! The PostgreSQL write transaction of a group commit: writes are applied
//! as they arrive (each statement a round trip while the engine waits for
//! more steps), made durable together by one `COMMIT` (one WAL flush), and
//! rolled back if it is dropped before that. A statement that fails
//! aborts the whole transaction (PostgreSQL refuses every later one), so
//! a batch is all or nothing.

use std::time::Instant;

use crate::pg::{err, json, opt_json, Conn, Pooled, SyncCost};
use kozmo_engine::model::{EventRow, NewExecution, RoundCommit};
use kozmo_engine::store::{InsertOutcome, PrunedRows, StoreError, StoreResult, WriteTxn};
use kozmo_interface::literals::LiteralMap;

/// An open write transaction on a pooled connection.
pub(crate) struct PgTxn<'a> {
    conn: Pooled,
    sync_cost: &'a SyncCost,
    open: bool,
    /// A statement failed: PostgreSQL has aborted the transaction, and a
    /// `COMMIT` would answer `ROLLBACK` without an error.
    failed: bool,
}

impl<'a> PgTxn<'a> {
    /// `BEGIN` on `conn`.
    pub(crate) fn begin(mut conn: Pooled, sync_cost: &'a SyncCost) -> StoreResult<Self> {
        conn.client.batch_execute("BEGIN").map_err(err)?;
        Ok(PgTxn {
            conn,
            sync_cost,
            open: true,
            failed: false,
        })
    }

    /// The connection, for statements of its own.
    pub(crate) fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Commits (the WAL flush), recording what it cost.
    pub(crate) fn finish(mut self) -> StoreResult<()> {
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

    fn apply(&mut self, c: &RoundCommit) -> StoreResult<()> {
        let r = self.apply_one(c);
        self.failed |= r.is_err();
        r
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        self.finish()
    }

    fn delete_terminal(&mut self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        crate::pg_prune::delete_terminal_in(&mut self.conn, ids, &mut self.failed)
    }
}

impl PgTxn<'_> {
    fn insert_one(&mut self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        let s = &new.state;
        let inserted = self.conn.execute(
            "INSERT INTO executions (id, client_id, task_type, created_at, phase, attempt, system_failures, \
             updated_at, attempt_started_at, handler_errors, plugin_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10) ON CONFLICT (id) DO NOTHING",
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
            ],
        )?;
        if inserted == 1 {
            self.conn.execute(
                "INSERT INTO execution_specs (execution_id, spec) VALUES ($1, $2)",
                &[&new.id, &new.spec_json],
            )?;
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

    fn apply_one(&mut self, c: &RoundCommit) -> StoreResult<()> {
        let s = &c.state;
        let id = &c.execution_id;
        let conn = &mut *self.conn;
        conn.execute(
            "UPDATE executions SET phase = $2, attempt = $3, system_failures = $4, updated_at = $5, \
             attempt_started_at = $6, error = $7, last_handler_error = $8, handler_errors = $9, finishing = $10, \
             abort_requested = CASE WHEN $11 THEN NULL ELSE abort_requested END WHERE id = $1",
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
            ],
        )?;
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
        insert_events(conn, id, &c.events)?;
        apply_rare(conn, c)
    }
}

/// Appends `events` of execution `id`, in order, in one statement.
pub(crate) fn insert_events(conn: &mut Conn, id: &str, events: &[EventRow]) -> StoreResult<()> {
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
        "INSERT INTO events (execution_id, attempt, kind, phase, version, occurred_at, reported_at, body) \
         SELECT $1, a, k, p, v, o, r, b FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], \
         $6::bigint[], $7::bigint[], $8::text[]) WITH ORDINALITY AS x(a, k, p, v, o, r, b, n) ORDER BY n",
        &[&id, &attempt, &kind, &phase, &version, &occurred, &reported, &body],
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
