//! The SQLite write transaction of a group commit: writes are applied as
//! they arrive, made durable together by one `COMMIT` (one sync), and
//! rolled back if it is dropped before that. It holds the writer
//! connection for its whole life, so other writes (abort requests, catalog
//! entries) wait for it rather than landing inside it.

use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use rusqlite::{params, Connection};

use crate::event_seq::SeqFloor;
use crate::sqlite::{err, json, opt_json};
use crate::wal_sync::WalSync;
use kozmo_engine::model::{EventRow, NewExecution, RoundCommit};
use kozmo_engine::store::{InsertOutcome, PendingSync, PrunedRows, StoreError, StoreResult, WriteTxn};

/// An open write transaction on the writer connection.
pub(super) struct SqliteTxn<'a> {
    conn: MutexGuard<'a, Connection>,
    wal: &'a Arc<WalSync>,
    seq_floor: &'a SeqFloor,
    /// The writer does not sync at `COMMIT`: the WAL is synced after it.
    sync_after_commit: bool,
    open: bool,
}

impl<'a> SqliteTxn<'a> {
    /// `BEGIN IMMEDIATE` on the writer connection.
    pub(super) fn begin(
        conn: MutexGuard<'a, Connection>,
        wal: &'a Arc<WalSync>,
        seq_floor: &'a SeqFloor,
        sync_after_commit: bool,
    ) -> StoreResult<Self> {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        Ok(SqliteTxn {
            conn,
            wal,
            seq_floor,
            sync_after_commit,
            open: true,
        })
    }

    /// The connection, for statements of its own.
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Commits and makes it durable, recording what the sync cost.
    pub(super) fn finish(self) -> StoreResult<()> {
        match self.commit_only()? {
            Some(wal) => wal.sync(),
            None => Ok(()),
        }
    }

    /// `COMMIT`; the WAL to sync if the commit did not sync it.
    fn commit_only(mut self) -> StoreResult<Option<Arc<WalSync>>> {
        let started = Instant::now();
        self.conn.execute_batch("COMMIT").map_err(err)?;
        self.open = false;
        if self.sync_after_commit {
            if self.wal.take_checkpoint_request() {
                // After the COMMIT: a failure here must not fail the commit.
                if let Err(e) = checkpoint_synced(&self.conn) {
                    log::warn!("WAL checkpoint after a commit failed (the next request tries again): {e}");
                }
            }
            Ok(Some(self.wal.clone()))
        } else {
            self.wal.cost().observe(started.elapsed());
            Ok(None)
        }
    }
}

impl Drop for SqliteTxn<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                log::error!("rolling back a failed group commit: {e}");
            }
        }
    }
}

impl WriteTxn for SqliteTxn<'_> {
    /// Inserts one execution; only when the id exists already is its spec
    /// read back (one statement for the common case).
    fn insert(&mut self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        let s = &new.state;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO executions (id, client_id, task_type, created_at, phase, attempt, system_failures, \
                 updated_at, attempt_started_at, error, last_handler_error, handler_errors, finishing, \
                 abort_requested, plugin_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, 0, NULL, NULL, ?10) \
                 ON CONFLICT(id) DO NOTHING",
            )
            .map_err(err)?
            .execute(params![
                new.id,
                new.client_id,
                new.task_type,
                new.created_at_ms,
                s.phase.as_str(),
                s.attempt as i64,
                s.system_failures as i64,
                s.updated_at_ms,
                s.attempt_started_at_ms,
                new.plugin_id,
            ])
            .map_err(err)?;
        if inserted == 1 {
            self.conn
                .prepare_cached("INSERT INTO execution_specs (execution_id, spec) VALUES (?1, ?2)")
                .map_err(err)?
                .execute(params![new.id, new.spec_json])
                .map_err(err)?;
            return Ok(InsertOutcome::Created);
        }
        let spec_json: String = self
            .conn
            .prepare_cached("SELECT spec FROM execution_specs WHERE execution_id = ?1")
            .map_err(err)?
            .query_row([&new.id], |r| r.get(0))
            .map_err(err)?;
        Ok(InsertOutcome::Exists { spec_json })
    }

    fn apply(&mut self, c: &RoundCommit) -> StoreResult<()> {
        let s = &c.state;
        let id = &c.execution_id;
        let conn = &*self.conn;
        conn.prepare_cached(
            "UPDATE executions SET phase = ?2, attempt = ?3, system_failures = ?4, updated_at = ?5, \
             attempt_started_at = ?6, error = ?7, last_handler_error = ?8, handler_errors = ?9, finishing = ?10, \
             abort_requested = CASE WHEN ?11 THEN NULL ELSE abort_requested END WHERE id = ?1",
        )
        .map_err(err)?
        .execute(params![
            id,
            s.phase.as_str(),
            s.attempt as i64,
            s.system_failures as i64,
            s.updated_at_ms,
            s.attempt_started_at_ms,
            opt_json(&s.error)?,
            opt_json(&s.last_handler_error)?,
            s.handler_errors as i64,
            opt_json(&s.finishing)?,
            c.clear_abort,
        ])
        .map_err(err)?;
        if let Some((attempt, t)) = &c.task {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO task_states (execution_id, attempt, plugin_phase, plugin_phase_version, \
                 plugin_state, plugin_state_version, cleanup_on_failure, last_phase_updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(err)?
            .execute(params![
                id,
                *attempt as i64,
                t.plugin_phase.0 as i64,
                t.plugin_phase_version as i64,
                t.plugin_state,
                t.plugin_state_version as i64,
                t.cleanup_on_failure,
                t.last_phase_updated_at_ms,
            ])
            .map_err(err)?;
        }
        insert_events(conn, self.seq_floor, id, &c.events)?;
        apply_rare(conn, c)
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        self.finish()
    }

    fn commit_unsynced(self: Box<Self>) -> StoreResult<Option<PendingSync>> {
        Ok(self
            .commit_only()?
            .map(|wal| Box::new(move || wal.sync()) as PendingSync))
    }

    fn delete_terminal(&mut self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        super::sqlite_prune::delete_terminal_in(&self.conn, self.seq_floor, ids)
    }
}

/// A passive checkpoint on the writer, under `synchronous=FULL` for its
/// length (it syncs the WAL before copying and the database file after),
/// the checkpointer's pages already copied; then back to `OFF`.
fn checkpoint_synced(c: &Connection) -> rusqlite::Result<()> {
    c.pragma_update(None, "synchronous", "FULL")?;
    let done = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    // Back to OFF whatever the checkpoint did (FULL left on is only slower).
    c.pragma_update(None, "synchronous", "OFF")?;
    done
}

/// Appends `events` of execution `id` (numbered by SQLite, unless that
/// would reuse a seq retention deleted: `seq_floor`).
pub(super) fn insert_events(conn: &Connection, seq_floor: &SeqFloor, id: &str, events: &[EventRow]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    // NULL: SQLite's own number (the newest + 1).
    let mut seq = seq_floor.next_seq(conn)?;
    let mut st = conn
        .prepare_cached(
            "INSERT INTO events (seq, execution_id, attempt, kind, phase, version, occurred_at, reported_at, \
             body) VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(err)?;
    for e in events {
        st.execute(params![
            id,
            e.attempt as i64,
            e.kind,
            e.phase.as_ref(),
            e.version as i64,
            e.occurred_at_ms,
            e.reported_at_ms,
            e.body.to_text(),
            // Only the first is numbered here: the ones after follow it.
            seq.take(),
        ])
        .map_err(|x| StoreError(format!("event {} {} of {id}: {x}", e.kind, e.phase)))?;
    }
    Ok(())
}

/// What few steps write: outputs, error documents, resource tokens,
/// catalog entries.
fn apply_rare(conn: &Connection, c: &RoundCommit) -> StoreResult<()> {
    let id = &c.execution_id;
    if let Some((attempt, o)) = &c.outputs {
        conn.prepare_cached("INSERT OR REPLACE INTO outputs (execution_id, attempt, outputs) VALUES (?1, ?2, ?3)")
            .map_err(err)?
            .execute(params![id, *attempt as i64, json(o)?])
            .map_err(err)?;
    }
    if let Some((attempt, d)) = &c.error_document {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO error_documents (execution_id, attempt, document) VALUES (?1, ?2, ?3)",
        )
        .map_err(err)?
        .execute(params![id, *attempt as i64, json(d)?])
        .map_err(err)?;
    }
    for t in &c.tokens_granted {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO resource_tokens (namespace, token, execution_id, attempt) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(err)?
        .execute(params![t.namespace, t.token, t.execution_id, t.attempt as i64])
        .map_err(err)?;
    }
    for (ns, tok) in &c.tokens_released {
        conn.prepare_cached("DELETE FROM resource_tokens WHERE namespace = ?1 AND token = ?2")
            .map_err(err)?
            .execute(params![ns, tok])
            .map_err(err)?;
    }
    if let Some((key, outputs)) = &c.catalog {
        conn.prepare_cached("INSERT OR REPLACE INTO catalog (key, outputs, created_at) VALUES (?1, ?2, ?3)")
            .map_err(err)?
            .execute(params![key, json(outputs)?, kozmo_engine::model::now_ms()])
            .map_err(err)?;
    }
    Ok(())
}
