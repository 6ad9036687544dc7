//! PostgreSQL [`Store`]: a pool of blocking connections, each keeping its
//! prepared statements.
//!
//! Writes of the engine go through one transaction at a time from the
//! committer ([`crate::pg_txn::PgTxn`], the group commit); reads and the
//! few writes outside steps (abort requests, catalog entries) take any
//! pooled connection. Durability is the server's: the group commit's
//! `COMMIT` runs with `synchronous_commit` off, and the engine's syncer
//! then commits a synchronous update (`crate::pg_txn::WalSync`) whose
//! WAL flush covers it, before anything of the transaction is answered or
//! acted on; so an acknowledged submission or round survives a crash of the
//! server (as long as the server's `fsync` is on).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kozmo_interface::literals::LiteralMap;
use kozmo_interface::Phase;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use crate::cluster::PgCluster;
use crate::migrations;
use crate::pg_txn::{insert_events, PgTxn, WalSync};
use crate::url::redact;
use kozmo_engine::model::{
    ErrorDocument, EventRecord, EventRow, ExecPhase, ExecState, ExecutionRecord, NewEvent, NewExecution, RoundCommit,
    TaskState, TokenRow,
};
use kozmo_engine::store::{
    Cluster, CommitCost, CrashVictim, InsertOutcome, PruneCandidate, PruneSelect, PrunedRows, Store, StoreError,
    StoreResult, WriteTxn,
};

/// Most pooled connections of one store (the committer's transaction,
/// API reads, workers' catalog and output reads).
pub const POOL_SIZE: u32 = 16;

/// How long a caller waits for a pooled connection (or a new one).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection and the statements prepared on it.
pub struct Conn {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
    /// Left in an unknown state (a failed rollback): closed, not reused.
    pub(crate) broken: bool,
}

impl Conn {
    /// The prepared statement for `sql` (prepared on first use).
    pub(crate) fn prepare(&mut self, sql: &str) -> StoreResult<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(err)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Runs `sql` (prepared once) and returns the rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let st = self.prepare(sql)?;
        self.client.execute(&st, params).map_err(err)
    }

    /// Runs `sql` (prepared once) and returns its rows.
    pub(crate) fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let st = self.prepare(sql)?;
        self.client.query(&st, params).map_err(err)
    }

    /// Runs `sql` (prepared once) and returns its row, if any.
    pub(crate) fn query_opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<Row>> {
        let st = self.prepare(sql)?;
        self.client.query_opt(&st, params).map_err(err)
    }
}

/// Opens connections for the pool.
pub struct Manager {
    config: postgres::Config,
}

/// A client error with its causes, as the pool reports it.
#[derive(Debug)]
pub struct ConnError(String);

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnError {}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnError;

    fn connect(&self) -> Result<Conn, ConnError> {
        Ok(Conn {
            client: self.config.connect(NoTls).map_err(|e| ConnError(describe(&e)))?,
            statements: HashMap::new(),
            broken: false,
        })
    }

    fn is_valid(&self, c: &mut Conn) -> Result<(), ConnError> {
        c.client.simple_query("").map(drop).map_err(|e| ConnError(describe(&e)))
    }

    fn has_broken(&self, c: &mut Conn) -> bool {
        c.broken || c.client.is_closed()
    }
}

/// A pooled connection.
pub(crate) type Pooled = r2d2::PooledConnection<Manager>;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: r2d2::Pool<Manager>,
    /// This node, once it joined the daemons on the database
    /// ([`PostgresStore::join_cluster`]).
    cluster: std::sync::OnceLock<PgCluster>,
    config: postgres::Config,
    /// What a commit (the server's WAL flush and the round trip) costs lately.
    pub(crate) sync_cost: std::sync::Arc<CommitCost>,
    /// The connection string with its password hidden.
    target: String,
    /// This store's row in `kozmo_sync` when it has not joined a cluster
    /// (the node id otherwise).
    writer: std::sync::Arc<str>,
}

/// A client error on one line with its causes (the library's `Display`
/// says only "db error"): `db error: ERROR: duplicate key value …`.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s.replace('\n', "; ")
}

pub(crate) fn err(e: postgres::Error) -> StoreError {
    StoreError(describe(&e))
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError(e.to_string()))
}

pub(crate) fn opt_json<T: serde::Serialize>(v: &Option<T>) -> StoreResult<Option<String>> {
    v.as_ref().map(json).transpose()
}

fn parse_opt<T: serde::de::DeserializeOwned>(s: Option<String>) -> StoreResult<Option<T>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError(e.to_string())))
        .transpose()
}

pub(crate) fn get<'a, T: postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> StoreResult<T> {
    r.try_get(i).map_err(err)
}

/// A count or attempt number read back (stored as BIGINT).
pub(crate) fn get_u32(r: &Row, i: usize) -> StoreResult<u32> {
    Ok(get::<i64>(r, i)?.clamp(0, u32::MAX as i64) as u32)
}

const EXEC_COLUMNS: &str = "e.id, e.client_id, s.spec, e.task_type, e.created_at, e.phase, e.attempt, \
     e.system_failures, e.updated_at, e.attempt_started_at, e.error, e.last_handler_error, e.handler_errors, \
     e.finishing, e.abort_requested, t.plugin_phase, t.plugin_phase_version, t.plugin_state, \
     t.plugin_state_version, t.cleanup_on_failure, t.last_phase_updated_at, e.plugin_id";

const EXEC_FROM: &str = "FROM executions e JOIN execution_specs s ON s.execution_id = e.id \
     LEFT JOIN task_states t ON t.execution_id = e.id AND t.attempt = e.attempt";

/// The terminal phases as SQL (matches the partial index).
pub(crate) const TERMINAL_SQL: &str = "phase IN ('Succeeded', 'Failed', 'Aborted')";

fn exec_from_row(r: &Row) -> StoreResult<ExecutionRecord> {
    let phase = get::<String>(r, 5)?.parse::<ExecPhase>().map_err(StoreError)?;
    let task = match get::<Option<i64>>(r, 15)? {
        None => TaskState::default(),
        Some(p) => TaskState {
            plugin_phase: Phase(p as i8),
            plugin_phase_version: get_u32(r, 16)?,
            plugin_state: get(r, 17)?,
            plugin_state_version: get::<i64>(r, 18)? as u8,
            cleanup_on_failure: get(r, 19)?,
            last_phase_updated_at_ms: get(r, 20)?,
        },
    };
    Ok(ExecutionRecord {
        id: get(r, 0)?,
        client_id: get(r, 1)?,
        spec_json: get(r, 2)?,
        task_type: get(r, 3)?,
        created_at_ms: get(r, 4)?,
        state: ExecState {
            phase,
            attempt: get_u32(r, 6)?,
            system_failures: get_u32(r, 7)?,
            updated_at_ms: get(r, 8)?,
            attempt_started_at_ms: get(r, 9)?,
            error: parse_opt(get(r, 10)?)?,
            last_handler_error: parse_opt(get(r, 11)?)?,
            handler_errors: get_u32(r, 12)?,
            finishing: parse_opt(get(r, 13)?)?,
        },
        abort_requested: get(r, 14)?,
        task,
        plugin_id: get(r, 21)?,
    })
}

/// The columns [`event_from_row`] reads.
const EVENT_COLUMNS: &str =
    "SELECT seq, execution_id, attempt, kind, phase, version, occurred_at, reported_at, body FROM events";

fn event_from_row(r: &Row) -> StoreResult<EventRecord> {
    let body: String = get(r, 8)?;
    Ok(EventRecord {
        seq: get(r, 0)?,
        execution_id: get(r, 1)?,
        event: NewEvent {
            attempt: get_u32(r, 2)?,
            kind: get(r, 3)?,
            phase: get(r, 4)?,
            version: get_u32(r, 5)?,
            occurred_at_ms: get(r, 6)?,
            reported_at_ms: get(r, 7)?,
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        },
    })
}

fn records(rows: Vec<Row>) -> StoreResult<Vec<ExecutionRecord>> {
    rows.iter().map(exec_from_row).collect()
}

impl PostgresStore {
    /// Connects to the database named by `url` (`postgres://user:password@host:port/db`
    /// or libpq's `key=value` form), applies the migrations it lacks and
    /// opens the pool. Errors name the target with its password hidden,
    /// and never carry the password.
    pub fn open(url: &str) -> StoreResult<Self> {
        let target = redact(url);
        let fail = |what: &str, e: String| StoreError(scrub(&format!("{what} {target}: {e}"), url));
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| fail("invalid", describe(&e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("kozmo");
        }
        // One connection first: its error is the real one (refused,
        // authentication, unknown database), and the migrations run on it.
        let mut first = config
            .connect(NoTls)
            .map_err(|e| fail("cannot connect to PostgreSQL at", describe(&e)))?;
        migrations::migrate(&mut first).map_err(|e| fail("cannot migrate the schema of", e.0))?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .test_on_check_out(false)
            .build(Manager { config: config.clone() })
            .map_err(|e| fail("cannot open a connection pool to", e.to_string()))?;
        log::debug!("store: PostgreSQL at {target}, pool of {POOL_SIZE}");
        Ok(PostgresStore {
            pool,
            cluster: std::sync::OnceLock::new(),
            config,
            sync_cost: std::sync::Arc::default(),
            target,
            writer: format!("store-{}", std::process::id()).into(),
        })
    }

    /// The connection settings (for connections of its own).
    pub(crate) fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// This node, if it joined the daemons on the database.
    pub(crate) fn pg_cluster(&self) -> Option<&PgCluster> {
        self.cluster.get()
    }

    /// Records this node (once).
    pub(crate) fn set_cluster(&self, node: PgCluster) -> StoreResult<()> {
        self.cluster
            .set(node)
            .map_err(|_| StoreError("this store joined the cluster already".into()))
    }

    /// The records of `ids` (any order).
    pub(crate) fn records_of(&self, ids: &[String]) -> StoreResult<Vec<ExecutionRecord>> {
        let sql = format!("SELECT {EXEC_COLUMNS} {EXEC_FROM} WHERE e.id = ANY($1)");
        records(self.conn()?.query(&sql, &[&ids])?)
    }

    /// The connection string with its password hidden (for logs).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A pooled connection.
    pub(crate) fn conn(&self) -> StoreResult<Pooled> {
        self.pool
            .get()
            .map_err(|e| StoreError(format!("no connection to PostgreSQL at {}: {e}", self.target)))
    }

    /// Opens the write transaction of a group commit.
    pub(crate) fn begin_write(&self) -> StoreResult<PgTxn<'_>> {
        let writer: std::sync::Arc<str> = match self.cluster.get() {
            Some(n) => n.spec.node_id.as_str().into(),
            None => self.writer.clone(),
        };
        let sync = WalSync {
            pool: self.pool.clone(),
            writer,
            cost: self.sync_cost.clone(),
        };
        PgTxn::begin(self.conn()?, &self.sync_cost, self.cluster.get(), sync)
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> StoreResult<u32> {
        let mut c = self.conn()?;
        let r = c.query_opt("SELECT COALESCE(MAX(version), 0) FROM kozmo_schema_migrations", &[])?;
        Ok(r.map(|r| get::<i32>(&r, 0)).transpose()?.unwrap_or(0).max(0) as u32)
    }
}

/// `msg` without `url`'s password, should a library message ever repeat it.
fn scrub(msg: &str, url: &str) -> String {
    let password = url
        .parse::<postgres::Config>()
        .ok()
        .and_then(|c| c.get_password().map(|p| String::from_utf8_lossy(p).into_owned()));
    match password {
        Some(p) if !p.is_empty() => msg.replace(&p, "***"),
        _ => msg.to_string(),
    }
}

impl Store for PostgresStore {
    fn insert_execution(&self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        Ok(self.insert_executions(std::slice::from_ref(new))?.remove(0))
    }

    fn insert_executions(&self, news: &[NewExecution]) -> StoreResult<Vec<InsertOutcome>> {
        self.write(news, &mut [])
    }

    fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let sql = format!("SELECT {EXEC_COLUMNS} {EXEC_FROM} WHERE e.id = $1");
        self.conn()?
            .query_opt(&sql, &[&id])?
            .map(|r| exec_from_row(&r))
            .transpose()
    }

    fn list_executions(
        &self,
        phase: Option<ExecPhase>,
        limit: usize,
        after: Option<&str>,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        let sql = format!(
            "SELECT {EXEC_COLUMNS} {EXEC_FROM} WHERE ($1::text IS NULL OR e.phase = $1) \
             AND ($2::text IS NULL OR e.id > $2) ORDER BY e.id LIMIT $3"
        );
        let limit = limit.min(i64::MAX as usize) as i64;
        records(
            self.conn()?
                .query(&sql, &[&phase.map(|p| p.as_str()), &after, &limit])?,
        )
    }

    fn load_active(&self) -> StoreResult<Vec<ExecutionRecord>> {
        if self.cluster.get().is_some() {
            // A node starts with what it claims: its own from its last
            // run, and what nobody holds.
            return self.claim_up_to(None);
        }
        let sql = format!("SELECT {EXEC_COLUMNS} {EXEC_FROM} WHERE NOT e.{TERMINAL_SQL}");
        records(self.conn()?.query(&sql, &[])?)
    }

    fn commit(&self, batch: &mut [RoundCommit]) -> StoreResult<()> {
        self.write(&[], batch).map(drop)
    }

    fn write(&self, news: &[NewExecution], batch: &mut [RoundCommit]) -> StoreResult<Vec<InsertOutcome>> {
        if news.is_empty() && batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write()?;
        let out = if news.is_empty() {
            Vec::new()
        } else {
            tx.insert_all(news)?
        };
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
        self.sync_cost.get()
    }

    fn append_events(&self, id: &str, events: &[EventRow]) -> StoreResult<()> {
        // One statement: atomic by itself.
        insert_events(&mut *self.conn()?, id, events, None)
    }

    fn count_crashes(&self, victims: &[CrashVictim], at_ms: i64) -> StoreResult<Vec<u32>> {
        let mut tx = self.begin_write()?;
        let ids: Vec<&str> = victims.iter().map(|v| v.execution_id.as_str()).collect();
        let c = tx.conn();
        // Several daemons: only this node's executions start over (the
        // others' counts are their own nodes' business).
        let me = self.cluster.get().map(|n| n.spec.node_id.as_str());
        c.execute(
            "DELETE FROM plugin_crashes WHERE NOT (execution_id = ANY($1)) AND ($2::text IS NULL OR \
             execution_id IN (SELECT id FROM executions WHERE owner = $2))",
            &[&ids, &me],
        )?;
        let mut counts = Vec::with_capacity(victims.len());
        for v in victims {
            let row = c.query_opt(
                "INSERT INTO plugin_crashes (execution_id, crashes, call, at) VALUES ($1, 1, $2, $3) \
                 ON CONFLICT (execution_id) DO UPDATE SET crashes = plugin_crashes.crashes + 1, \
                 call = EXCLUDED.call, at = EXCLUDED.at RETURNING crashes",
                &[&v.execution_id, &v.call, &at_ms],
            )?;
            counts.push(row.map(|r| get_u32(&r, 0)).transpose()?.unwrap_or(0));
        }
        tx.finish()?;
        Ok(counts)
    }

    fn request_abort(&self, id: &str, reason: &str) -> StoreResult<bool> {
        let n = self.conn()?.execute(
            "UPDATE executions SET abort_requested = $2 WHERE id = $1",
            &[&id, &reason],
        )?;
        Ok(n > 0)
    }

    fn events(&self, id: &str) -> StoreResult<Vec<EventRecord>> {
        let rows = self
            .conn()?
            .query(&format!("{EVENT_COLUMNS} WHERE execution_id = $1 ORDER BY seq"), &[&id])?;
        rows.iter().map(event_from_row).collect()
    }

    fn events_after(&self, id: Option<&str>, after_seq: i64, limit: usize) -> StoreResult<Vec<EventRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match id {
            Some(id) => self.conn()?.query(
                &format!("{EVENT_COLUMNS} WHERE execution_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
                &[&id, &after_seq, &limit],
            )?,
            None => self.conn()?.query(
                &format!("{EVENT_COLUMNS} WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&after_seq, &limit],
            )?,
        };
        rows.iter().map(event_from_row).collect()
    }

    fn last_event_seq(&self) -> StoreResult<i64> {
        let rows = self
            .conn()?
            .query("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM events", &[])?;
        rows.first().map_or(Ok(0), |r| get(r, 0))
    }

    fn outputs(&self, id: &str, attempt: u32) -> StoreResult<Option<LiteralMap>> {
        let row = self.conn()?.query_opt(
            "SELECT outputs FROM outputs WHERE execution_id = $1 AND attempt = $2",
            &[&id, &(attempt as i64)],
        )?;
        parse_opt(row.map(|r| get::<String>(&r, 0)).transpose()?)
    }

    fn error_document(&self, id: &str, attempt: u32) -> StoreResult<Option<ErrorDocument>> {
        let row = self.conn()?.query_opt(
            "SELECT document FROM error_documents WHERE execution_id = $1 AND attempt = $2",
            &[&id, &(attempt as i64)],
        )?;
        parse_opt(row.map(|r| get::<String>(&r, 0)).transpose()?)
    }

    fn tokens(&self) -> StoreResult<Vec<TokenRow>> {
        let rows = self.conn()?.query(
            "SELECT namespace, token, execution_id, attempt FROM resource_tokens ORDER BY namespace, token",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(TokenRow {
                    namespace: get(r, 0)?,
                    token: get(r, 1)?,
                    execution_id: get(r, 2)?,
                    attempt: get_u32(r, 3)?,
                })
            })
            .collect()
    }

    fn catalog_get(&self, key: &str) -> StoreResult<Option<LiteralMap>> {
        let row = self
            .conn()?
            .query_opt("SELECT outputs FROM catalog WHERE key = $1", &[&key])?;
        parse_opt(row.map(|r| get::<String>(&r, 0)).transpose()?)
    }

    fn catalog_put(&self, key: &str, outputs: &LiteralMap) -> StoreResult<()> {
        crate::pg_txn::put_catalog(&mut *self.conn()?, key, outputs)
    }

    fn count_by_phase(&self) -> StoreResult<BTreeMap<ExecPhase, u64>> {
        let rows = self
            .conn()?
            .query("SELECT phase, COUNT(*) FROM executions GROUP BY phase", &[])?;
        let mut m = BTreeMap::new();
        for r in &rows {
            if let Ok(p) = get::<String>(r, 0)?.parse::<ExecPhase>() {
                m.insert(p, get::<i64>(r, 1)?.max(0) as u64);
            }
        }
        Ok(m)
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

    fn cluster(&self) -> Option<&dyn Cluster> {
        self.cluster.get().map(|_| self as &dyn Cluster)
    }

    fn oldest_terminal(&self) -> StoreResult<Option<i64>> {
        self.oldest_terminal_update()
    }
}
