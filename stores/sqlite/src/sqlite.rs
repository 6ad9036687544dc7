//! SQLite [`Store`]: one file, WAL journal, migrations by `user_version`.
//!
//! One writer connection (behind a mutex; every write is one transaction)
//! and one reader connection (WAL lets it read while the writer commits).
//! Full durability by default: the log is synced after every commit, so
//! an acknowledged submission or round survives power loss, not only a
//! process crash; group commit amortises the sync over a batch, and the
//! engine runs a group commit's sync while it fills the next transaction
//! (`wal_sync.rs` says how that stays as safe as `synchronous=FULL`).
//! `Durability::Normal` (survives a process crash, may lose the last commits
//! on power loss) is available for throughput experiments.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kozmo_interface::literals::LiteralMap;
use kozmo_interface::Phase;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::checkpointer::{Checkpointer, FALLBACK_PAGES};
use crate::event_seq::SeqFloor;
use crate::migrations::{MIGRATIONS, OUTSIDE_TRANSACTION};
use crate::sqlite_txn::{insert_events, SqliteTxn};
use crate::wal_sync::WalSync;
use kozmo_engine::model::{
    ErrorDocument, EventRecord, EventRow, ExecPhase, ExecState, ExecutionRecord, NewEvent, NewExecution, RoundCommit,
    TaskState, TokenRow,
};
use kozmo_engine::store::{
    CrashVictim, InsertOutcome, PruneCandidate, PruneSelect, PrunedRows, Store, StoreError, StoreResult, StoreSpace,
    WriteTxn,
};
use kozmo_engine::sync::lock;

/// How hard commits are pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: durable against power loss (default).
    #[default]
    Full,
    /// `synchronous=NORMAL`: durable against a process crash.
    Normal,
}

/// The SQLite store.
pub struct SqliteStore {
    // Dropped first: the thread stops before the connections close.
    _checkpointer: Checkpointer,
    pub(super) writer: Mutex<Connection>,
    pub(super) reader: Mutex<Connection>,
    /// The WAL and what syncing it costs.
    wal: Arc<WalSync>,
    /// Full durability: the writer runs with `synchronous=OFF` and every
    /// commit is made durable by syncing the WAL itself (`wal_sync.rs`).
    sync_after_commit: bool,
    /// The highest event seq deleted (`event_seq.rs`).
    pub(super) seq_floor: SeqFloor,
}

pub(super) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(err)
}

pub(super) fn opt_json<T: serde::Serialize>(v: &Option<T>) -> StoreResult<Option<String>> {
    v.as_ref().map(json).transpose()
}

fn parse_opt<T: serde::de::DeserializeOwned>(s: Option<String>) -> rusqlite::Result<Option<T>> {
    s.map(|s| {
        serde_json::from_str(&s)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
    })
    .transpose()
}

const EXEC_COLUMNS: &str = "e.id, e.client_id, s.spec, e.task_type, e.created_at, e.phase, e.attempt, \
     e.system_failures, e.updated_at, e.attempt_started_at, e.error, e.last_handler_error, e.handler_errors, \
     e.finishing, e.abort_requested, t.plugin_phase, t.plugin_phase_version, t.plugin_state, \
     t.plugin_state_version, t.cleanup_on_failure, t.last_phase_updated_at, e.plugin_id";

const EXEC_FROM: &str = "FROM executions e JOIN execution_specs s ON s.execution_id = e.id \
     LEFT JOIN task_states t ON t.execution_id = e.id AND t.attempt = e.attempt";

fn exec_from_row(r: &Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let phase: String = r.get(5)?;
    let phase = phase.parse::<ExecPhase>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(StoreError(e)))
    })?;
    let task = match r.get::<_, Option<i64>>(15)? {
        None => TaskState::default(),
        Some(p) => TaskState {
            plugin_phase: Phase(p as i8),
            plugin_phase_version: r.get::<_, i64>(16)? as u32,
            plugin_state: r.get(17)?,
            plugin_state_version: r.get::<_, i64>(18)? as u8,
            cleanup_on_failure: r.get::<_, i64>(19)? != 0,
            last_phase_updated_at_ms: r.get(20)?,
        },
    };
    Ok(ExecutionRecord {
        id: r.get(0)?,
        client_id: r.get::<_, i64>(1)? != 0,
        spec_json: r.get(2)?,
        task_type: r.get(3)?,
        created_at_ms: r.get(4)?,
        state: ExecState {
            phase,
            attempt: r.get::<_, i64>(6)? as u32,
            system_failures: r.get::<_, i64>(7)? as u32,
            updated_at_ms: r.get(8)?,
            attempt_started_at_ms: r.get(9)?,
            error: parse_opt(r.get(10)?)?,
            last_handler_error: parse_opt(r.get(11)?)?,
            handler_errors: r.get::<_, i64>(12)? as u32,
            finishing: parse_opt(r.get(13)?)?,
        },
        abort_requested: r.get(14)?,
        task,
        plugin_id: r.get(21)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/kozmo.db` with full durability.
    pub fn open_in(data_dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(err)?;
        Self::open(&data_dir.join("kozmo.db"), Durability::Full)
    }

    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<Self> {
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        let open = || -> StoreResult<Connection> {
            let c = Connection::open(path).map_err(err)?;
            c.busy_timeout(Duration::from_secs(10)).map_err(err)?;
            c.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
            c.pragma_update(None, "synchronous", sync).map_err(err)?;
            c.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
            Ok(c)
        };
        // Another process opening a new file at the same moment can hold
        // the lock where SQLite does not wait for it (switching the journal
        // to WAL, a migration that runs outside a transaction): such an
        // open is tried again, for as long as the busy timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let writer = loop {
            let opened = open().and_then(|mut c| migrate(&mut c).map(|()| c));
            match opened {
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        // Checkpoints run in the background. With full durability the
        // writer never checkpoints (see `wal_sync.rs`): the checkpointer
        // also bounds the WAL. Otherwise a commit checkpoints by itself
        // when the WAL grows past the fallback.
        let sync_after_commit = durability == Durability::Full;
        if sync_after_commit {
            writer.pragma_update(None, "synchronous", "OFF").map_err(err)?;
            writer.pragma_update(None, "wal_autocheckpoint", 0).map_err(err)?;
        } else {
            writer
                .pragma_update(None, "wal_autocheckpoint", FALLBACK_PAGES)
                .map_err(err)?;
        }
        let reader = open()?;
        let seq_floor = SeqFloor::load(&writer)?;
        let wal = Arc::new(WalSync::for_database(path));
        let on_request = sync_after_commit.then(|| wal.clone());
        Ok(SqliteStore {
            _checkpointer: Checkpointer::start(path, sync, on_request).map_err(err)?,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            wal,
            sync_after_commit,
            seq_floor,
        })
    }

    /// Opens the write transaction of a group commit (holding the writer
    /// connection until it ends).
    pub(super) fn begin_write(&self) -> StoreResult<SqliteTxn<'_>> {
        SqliteTxn::begin(lock(&self.writer), &self.wal, &self.seq_floor, self.sync_after_commit)
    }

    /// Makes what the writer connection wrote outside a transaction of
    /// [`SqliteStore::begin_write`] durable (nothing to do unless the store
    /// syncs after commits).
    pub(super) fn sync_written(&self) -> StoreResult<()> {
        if self.sync_after_commit {
            self.wal.sync()?;
        }
        Ok(())
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> StoreResult<u32> {
        lock(&self.reader)
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map(|v| v as u32)
            .map_err(err)
    }
}

/// Whether `e` is SQLite's "the file is locked by another connection".
fn is_busy(e: &StoreError) -> bool {
    e.0.contains("database is locked") || e.0.contains("database table is locked")
}

fn migrate(c: &mut Connection) -> StoreResult<()> {
    let current: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
    let current = current.max(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError(format!(
            "database schema version {current} is newer than this kozmo ({}); refusing to open",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        if OUTSIDE_TRANSACTION.contains(&(i + 1)) {
            // Its statements can be repeated; the version only moves forward
            // (another connection may have applied later migrations while
            // these ran: writing `i + 1` blindly would send it back).
            c.execute_batch(sql)
                .map_err(|e| StoreError(format!("migration {}: {e}", i + 1)))?;
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(err)?;
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
            if (now.max(0) as usize) <= i {
                tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(err)?;
            }
            tx.commit().map_err(err)?;
            continue;
        }
        // Another process may open the same file at the same time (a CLI
        // next to a starting daemon, a test): take the write lock first and
        // read the version again under it, so a migration another
        // connection committed after our first read is not applied twice.
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        if now.max(0) as usize > i {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| StoreError(format!("migration {}: {e}", i + 1)))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

impl Drop for SqliteStore {
    /// The writer goes back to `synchronous=FULL` before it closes: the
    /// checkpoint SQLite runs as the last connection closes then syncs.
    fn drop(&mut self) {
        if self.sync_after_commit {
            let c = lock(&self.writer);
            if let Err(e) = c.pragma_update(None, "synchronous", "FULL") {
                log::warn!("restoring synchronous=FULL before closing the store: {e}");
            }
        }
    }
}

impl Store for SqliteStore {
    fn insert_execution(&self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        Ok(self.insert_executions(std::slice::from_ref(new))?.remove(0))
    }

    fn insert_executions(&self, news: &[NewExecution]) -> StoreResult<Vec<InsertOutcome>> {
        self.write(news, &mut [])
    }

    #[allow(clippy::let_and_return)] // the statement borrows the connection guard
    fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let c = lock(&self.reader);
        let sql = format!("SELECT {EXEC_COLUMNS} {EXEC_FROM} WHERE e.id = ?1");
        let mut st = c.prepare_cached(&sql).map_err(err)?;
        let r = st.query_row([id], exec_from_row).optional().map_err(err);
        r
    }

    fn list_executions(
        &self,
        phase: Option<ExecPhase>,
        limit: usize,
        after: Option<&str>,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        let c = lock(&self.reader);
        let sql = format!(
            "SELECT {EXEC_COLUMNS} {EXEC_FROM} WHERE (?1 IS NULL OR e.phase = ?1) AND (?2 IS NULL OR e.id > ?2) \
             ORDER BY e.id LIMIT ?3"
        );
        let mut st = c.prepare_cached(&sql).map_err(err)?;
        let rows = st
            .query_map(
                params![phase.map(|p| p.as_str()), after, limit.min(i64::MAX as usize) as i64],
                exec_from_row,
            )
            .map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
    }

    fn load_active(&self) -> StoreResult<Vec<ExecutionRecord>> {
        let c = lock(&self.reader);
        let sql = format!("SELECT {EXEC_COLUMNS} {EXEC_FROM} WHERE e.phase NOT IN ('Succeeded', 'Failed', 'Aborted')");
        let mut st = c.prepare(&sql).map_err(err)?;
        let rows = st.query_map([], exec_from_row).map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
    }

    fn commit(&self, batch: &mut [RoundCommit]) -> StoreResult<()> {
        self.write(&[], batch).map(drop)
    }

    fn write(&self, news: &[NewExecution], batch: &mut [RoundCommit]) -> StoreResult<Vec<InsertOutcome>> {
        if news.is_empty() && batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write()?;
        let out = news.iter().map(|n| tx.insert(n)).collect::<StoreResult<Vec<_>>>()?;
        for rc in batch.iter() {
            tx.apply(rc)?;
        }
        tx.finish()?;
        Ok(out)
    }

    fn begin(&self) -> StoreResult<Option<Box<dyn WriteTxn + '_>>> {
        Ok(Some(Box::new(self.begin_write()?)))
    }

    fn commit_cost(&self) -> Duration {
        self.wal.cost().get()
    }

    fn append_events(&self, id: &str, events: &[EventRow]) -> StoreResult<()> {
        let tx = self.begin_write()?;
        insert_events(tx.conn(), &self.seq_floor, id, events)?;
        tx.finish()
    }

    fn count_crashes(&self, victims: &[CrashVictim], at_ms: i64) -> StoreResult<Vec<u32>> {
        let tx = self.begin_write()?;
        let ids: Vec<&str> = victims.iter().map(|v| v.execution_id.as_str()).collect();
        let c = tx.conn();
        c.execute(
            "DELETE FROM plugin_crashes WHERE execution_id NOT IN (SELECT value FROM json_each(?1))",
            [json(&ids)?],
        )
        .map_err(err)?;
        let mut counts = Vec::with_capacity(victims.len());
        for v in victims {
            let n: i64 = c
                .prepare_cached(
                    "INSERT INTO plugin_crashes (execution_id, crashes, call, at) VALUES (?1, 1, ?2, ?3) \
                     ON CONFLICT(execution_id) DO UPDATE SET crashes = crashes + 1, call = ?2, at = ?3 \
                     RETURNING crashes",
                )
                .map_err(err)?
                .query_row(params![v.execution_id, v.call, at_ms], |r| r.get(0))
                .map_err(err)?;
            counts.push(n.max(0) as u32);
        }
        tx.finish()?;
        Ok(counts)
    }

    fn request_abort(&self, id: &str, reason: &str) -> StoreResult<bool> {
        let tx = self.begin_write()?;
        let n = tx
            .conn()
            .execute(
                "UPDATE executions SET abort_requested = ?2 WHERE id = ?1",
                params![id, reason],
            )
            .map_err(err)?;
        tx.finish()?;
        Ok(n > 0)
    }

    fn events(&self, id: &str) -> StoreResult<Vec<EventRecord>> {
        let c = lock(&self.reader);
        let mut st = c
            .prepare_cached(&format!("{EVENT_COLUMNS} WHERE execution_id = ?1 ORDER BY seq"))
            .map_err(err)?;
        let rows = st.query_map([id], event_from_row).map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
    }

    fn events_after(&self, id: Option<&str>, after_seq: i64, limit: usize) -> StoreResult<Vec<EventRecord>> {
        let c = lock(&self.reader);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (mut st, args) = match id {
            Some(id) => (
                c.prepare_cached(&format!(
                    "{EVENT_COLUMNS} WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))
                .map_err(err)?,
                rusqlite::params_from_iter(vec![
                    rusqlite::types::Value::Text(id.to_string()),
                    rusqlite::types::Value::Integer(after_seq),
                    rusqlite::types::Value::Integer(limit),
                ]),
            ),
            None => (
                c.prepare_cached(&format!("{EVENT_COLUMNS} WHERE seq > ?1 ORDER BY seq LIMIT ?2"))
                    .map_err(err)?,
                rusqlite::params_from_iter(vec![
                    rusqlite::types::Value::Integer(after_seq),
                    rusqlite::types::Value::Integer(limit),
                ]),
            ),
        };
        let rows = st.query_map(args, event_from_row).map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
    }

    fn last_event_seq(&self) -> StoreResult<i64> {
        let c = lock(&self.reader);
        c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(err)
    }

    fn outputs(&self, id: &str, attempt: u32) -> StoreResult<Option<LiteralMap>> {
        let c = lock(&self.reader);
        let s: Option<String> = c
            .prepare_cached("SELECT outputs FROM outputs WHERE execution_id = ?1 AND attempt = ?2")
            .map_err(err)?
            .query_row(params![id, attempt as i64], |r| r.get(0))
            .optional()
            .map_err(err)?;
        s.map(|s| serde_json::from_str(&s).map_err(err)).transpose()
    }

    fn error_document(&self, id: &str, attempt: u32) -> StoreResult<Option<ErrorDocument>> {
        let c = lock(&self.reader);
        let s: Option<String> = c
            .prepare_cached("SELECT document FROM error_documents WHERE execution_id = ?1 AND attempt = ?2")
            .map_err(err)?
            .query_row(params![id, attempt as i64], |r| r.get(0))
            .optional()
            .map_err(err)?;
        s.map(|s| serde_json::from_str(&s).map_err(err)).transpose()
    }

    fn tokens(&self) -> StoreResult<Vec<TokenRow>> {
        let c = lock(&self.reader);
        let mut st = c
            .prepare("SELECT namespace, token, execution_id, attempt FROM resource_tokens ORDER BY namespace, token")
            .map_err(err)?;
        let rows = st
            .query_map([], |r| {
                Ok(TokenRow {
                    namespace: r.get(0)?,
                    token: r.get(1)?,
                    execution_id: r.get(2)?,
                    attempt: r.get::<_, i64>(3)? as u32,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
    }

    fn catalog_get(&self, key: &str) -> StoreResult<Option<LiteralMap>> {
        let c = lock(&self.reader);
        let s: Option<String> = c
            .prepare_cached("SELECT outputs FROM catalog WHERE key = ?1")
            .map_err(err)?
            .query_row([key], |r| r.get(0))
            .optional()
            .map_err(err)?;
        s.map(|s| serde_json::from_str(&s).map_err(err)).transpose()
    }

    fn catalog_put(&self, key: &str, outputs: &LiteralMap) -> StoreResult<()> {
        let tx = self.begin_write()?;
        tx.conn()
            .execute(
                "INSERT OR REPLACE INTO catalog (key, outputs, created_at) VALUES (?1, ?2, ?3)",
                params![key, json(outputs)?, kozmo_engine::model::now_ms()],
            )
            .map_err(err)?;
        tx.finish()
    }

    fn prune_candidates(&self, sel: &PruneSelect) -> StoreResult<Vec<PruneCandidate>> {
        self.select_prunable(sel)
    }

    fn delete_executions(&self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        self.delete_terminal(ids)
    }

    fn prune_catalog(&self, limit: usize) -> StoreResult<u64> {
        self.delete_orphan_catalog(limit)
    }

    fn reclaim_space(&self, max_pages: u32) -> StoreResult<u64> {
        self.incremental_vacuum(max_pages)
    }

    fn space(&self) -> StoreResult<StoreSpace> {
        self.free_space()
    }

    fn oldest_terminal(&self) -> StoreResult<Option<i64>> {
        self.oldest_terminal_update()
    }

    fn count_by_phase(&self) -> StoreResult<BTreeMap<ExecPhase, u64>> {
        let c = lock(&self.reader);
        let mut st = c
            .prepare("SELECT phase, COUNT(*) FROM executions GROUP BY phase")
            .map_err(err)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(err)?;
        let mut m = BTreeMap::new();
        for row in rows {
            let (p, n) = row.map_err(err)?;
            if let Ok(p) = p.parse::<ExecPhase>() {
                m.insert(p, n as u64);
            }
        }
        Ok(m)
    }
}

/// The columns [`event_from_row`] reads.
const EVENT_COLUMNS: &str =
    "SELECT seq, execution_id, attempt, kind, phase, version, occurred_at, reported_at, body FROM events";

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    let body: String = r.get(8)?;
    Ok(EventRecord {
        seq: r.get(0)?,
        execution_id: r.get(1)?,
        event: NewEvent {
            attempt: r.get::<_, i64>(2)? as u32,
            kind: r.get(3)?,
            phase: r.get(4)?,
            version: r.get::<_, i64>(5)? as u32,
            occurred_at_ms: r.get(6)?,
            reported_at_ms: r.get(7)?,
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        },
    })
}
