//! PostgreSQL schema migrations, applied in order; the table
//! `kozmo_schema_migrations` records each one applied (version, when).
//! Never edit a released migration: append a new one.
//!
//! Every migration runs in a transaction of its own that first takes a
//! transaction-level advisory lock ([`LOCK_KEY`]) and then reads the
//! version again: daemons (or a CLI and a daemon) opening a new database
//! at once apply each migration exactly once, and one that fails midway
//! leaves nothing (PostgreSQL's DDL is transactional).

use postgres::Client;

use kozmo_engine::store::{StoreError, StoreResult};

/// The advisory lock every migration holds (`"kozmo.mi"` as an i64; one
/// namespace per database).
pub const LOCK_KEY: i64 = 0x6b6f_7a6d_6f2e_6d69;

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "initial schema (SQLite's 5 migrations in one; leases for several daemons, unused yet)",
        r#"
-- Ids compare byte by byte ("C"), as in SQLite, whatever the database's
-- collation: listing order and `after` paging are the same on both.
CREATE TABLE executions (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    client_id          BOOLEAN NOT NULL,
    task_type          TEXT NOT NULL,
    plugin_id          TEXT,
    created_at         BIGINT NOT NULL,
    phase              TEXT NOT NULL,
    attempt            BIGINT NOT NULL,
    system_failures    BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    attempt_started_at BIGINT NOT NULL,
    error              TEXT,
    last_handler_error TEXT,
    handler_errors     BIGINT NOT NULL,
    finishing          TEXT,
    abort_requested    TEXT,
    -- Several daemons on one database (issue 15, later parts): the node
    -- holding the execution, until when (ms), and the fencing generation
    -- a step commit will check. Written by nothing yet.
    owner              TEXT,
    lease_until        BIGINT,
    lease_generation   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX executions_by_phase ON executions (phase, id);
-- Retention: terminal executions by age; steps of active executions
-- never write this index.
CREATE INDEX executions_terminal_by_age ON executions (updated_at, id)
    WHERE phase IN ('Succeeded', 'Failed', 'Aborted');

-- Written once at submission, out of the row every step rewrites.
CREATE TABLE execution_specs (
    execution_id TEXT COLLATE "C" PRIMARY KEY,
    spec         TEXT NOT NULL
);

CREATE TABLE task_states (
    execution_id          TEXT COLLATE "C" NOT NULL,
    attempt               BIGINT NOT NULL,
    plugin_phase          BIGINT NOT NULL,
    plugin_phase_version  BIGINT NOT NULL,
    plugin_state          BYTEA,
    plugin_state_version  BIGINT NOT NULL,
    cleanup_on_failure    BOOLEAN NOT NULL,
    last_phase_updated_at BIGINT NOT NULL,
    PRIMARY KEY (execution_id, attempt)
);

CREATE TABLE events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id TEXT COLLATE "C" NOT NULL,
    attempt      BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    phase        TEXT NOT NULL,
    version      BIGINT NOT NULL,
    occurred_at  BIGINT NOT NULL,
    reported_at  BIGINT NOT NULL,
    body         TEXT NOT NULL
);
CREATE INDEX events_by_execution ON events (execution_id, seq);
-- Exactly one terminal event per execution (engine invariant 4).
CREATE UNIQUE INDEX events_one_terminal ON events (execution_id) WHERE kind = 'terminal';

CREATE TABLE outputs (
    execution_id TEXT COLLATE "C" NOT NULL,
    attempt      BIGINT NOT NULL,
    outputs      TEXT NOT NULL,
    PRIMARY KEY (execution_id, attempt)
);

CREATE TABLE error_documents (
    execution_id TEXT COLLATE "C" NOT NULL,
    attempt      BIGINT NOT NULL,
    document     TEXT NOT NULL,
    PRIMARY KEY (execution_id, attempt)
);

CREATE TABLE resource_tokens (
    namespace    TEXT COLLATE "C" NOT NULL,
    token        TEXT COLLATE "C" NOT NULL,
    execution_id TEXT COLLATE "C" NOT NULL,
    attempt      BIGINT NOT NULL,
    PRIMARY KEY (namespace, token)
);
CREATE INDEX resource_tokens_by_execution ON resource_tokens (execution_id);

CREATE TABLE catalog (
    key        TEXT COLLATE "C" PRIMARY KEY,
    outputs    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX catalog_by_age ON catalog (created_at);

-- Crash-loop protection: consecutive unclean stops inside a plugin call.
CREATE TABLE plugin_crashes (
    execution_id TEXT COLLATE "C" PRIMARY KEY,
    crashes      BIGINT NOT NULL,
    call         TEXT NOT NULL,
    at           BIGINT NOT NULL
);
"#,
    ),
    (
        "several daemons: nodes with leases, claims, fencing generations on events",
        r#"
-- The store's clock, in ms: leases are compared on one clock whatever
-- the nodes' clocks say.
CREATE FUNCTION kozmo_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- One row per node: its lease (renewed by its heartbeat) and what it says
-- about itself (JSON: plugins, version, address).
CREATE TABLE kozmo_nodes (
    node_id      TEXT COLLATE "C" PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    lease_until  BIGINT NOT NULL,
    info         TEXT NOT NULL
);

-- Leases are per node (kozmo_nodes.lease_until): executions.lease_until
-- stays unused. Claims and abort polls read active executions by owner.
CREATE INDEX executions_active_by_owner ON executions (owner, id)
    WHERE phase NOT IN ('Succeeded', 'Failed', 'Aborted');

-- Which node wrote an event, under which fencing generation: the record
-- that no node committed for an execution after losing it.
ALTER TABLE events ADD COLUMN node_id TEXT, ADD COLUMN lease_generation BIGINT;
"#,
    ),
    (
        "the group commit's sync off the committer: one row per writer a synchronous commit updates",
        r#"
-- A group commit commits with synchronous_commit off; then one synchronous
-- update of the writer's row here flushes the WAL up to it (the WAL is
-- flushed in order), on the engine's syncer thread.
CREATE TABLE kozmo_sync (
    writer TEXT COLLATE "C" PRIMARY KEY,
    syncs  BIGINT NOT NULL
);
"#,
    ),
];

fn err(what: &str, e: postgres::Error) -> StoreError {
    StoreError(format!("{what}: {}", crate::pg::describe(&e)))
}

/// Brings the database to the newest schema; refuses a newer one.
pub fn migrate(c: &mut Client) -> StoreResult<()> {
    loop {
        let mut tx = c.transaction().map_err(|e| err("migrations", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .map_err(|e| err("migration lock", e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS kozmo_schema_migrations (
                 version     INTEGER PRIMARY KEY,
                 description TEXT NOT NULL,
                 applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .map_err(|e| err("migrations table", e))?;
        let current: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM kozmo_schema_migrations", &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| err("schema version", e))?;
        let current = current.max(0) as usize;
        if current > MIGRATIONS.len() {
            return Err(StoreError(format!(
                "database schema version {current} is newer than this kozmo ({}); refusing to open",
                MIGRATIONS.len()
            )));
        }
        let Some((description, sql)) = MIGRATIONS.get(current) else {
            tx.commit().map_err(|e| err("migrations", e))?;
            return Ok(());
        };
        let n = current + 1;
        tx.batch_execute(sql).map_err(|e| err(&format!("migration {n}"), e))?;
        tx.execute(
            "INSERT INTO kozmo_schema_migrations (version, description) VALUES ($1, $2)",
            &[&(n as i32), description],
        )
        .map_err(|e| err(&format!("migration {n}"), e))?;
        tx.commit().map_err(|e| err(&format!("migration {n}"), e))?;
        log::info!("store: PostgreSQL schema migration {n} applied ({description})");
    }
}
