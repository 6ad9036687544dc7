//! SQLite schema migrations, applied in order; `PRAGMA user_version` holds
//! how many have run. Never edit a released migration: append a new one.
//! Each runs in a transaction of its own, except those listed in
//! [`OUTSIDE_TRANSACTION`] (`VACUUM` cannot run inside one): they are
//! written to be run again from the start if they are interrupted.

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
CREATE TABLE executions (
    id                 TEXT PRIMARY KEY,
    client_id          INTEGER NOT NULL,
    spec               TEXT NOT NULL,
    task_type          TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    phase              TEXT NOT NULL,
    attempt            INTEGER NOT NULL,
    system_failures    INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    attempt_started_at INTEGER NOT NULL,
    error              TEXT,
    last_handler_error TEXT,
    handler_errors     INTEGER NOT NULL,
    finishing          TEXT,
    abort_requested    TEXT
) WITHOUT ROWID;
CREATE INDEX executions_by_phase ON executions(phase, id);

CREATE TABLE task_states (
    execution_id          TEXT NOT NULL,
    attempt               INTEGER NOT NULL,
    plugin_phase          INTEGER NOT NULL,
    plugin_phase_version  INTEGER NOT NULL,
    plugin_state          BLOB,
    plugin_state_version  INTEGER NOT NULL,
    cleanup_on_failure    INTEGER NOT NULL,
    last_phase_updated_at INTEGER NOT NULL,
    PRIMARY KEY (execution_id, attempt)
) WITHOUT ROWID;

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    phase        TEXT NOT NULL,
    version      INTEGER NOT NULL,
    occurred_at  INTEGER NOT NULL,
    reported_at  INTEGER NOT NULL,
    body         TEXT NOT NULL
);
CREATE INDEX events_by_execution ON events(execution_id, seq);
CREATE UNIQUE INDEX events_one_terminal ON events(execution_id) WHERE kind = 'terminal';

CREATE TABLE outputs (
    execution_id TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    outputs      TEXT NOT NULL,
    PRIMARY KEY (execution_id, attempt)
) WITHOUT ROWID;

CREATE TABLE error_documents (
    execution_id TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    document     TEXT NOT NULL,
    PRIMARY KEY (execution_id, attempt)
) WITHOUT ROWID;

CREATE TABLE resource_tokens (
    namespace    TEXT NOT NULL,
    token        TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    PRIMARY KEY (namespace, token)
) WITHOUT ROWID;

CREATE TABLE catalog (
    key        TEXT PRIMARY KEY,
    outputs    TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // 2: the spec, written once, moves out of the executions row, which
    // every step rewrites: a step then writes a ~100-byte row instead of
    // one carrying the whole spec (half the WAL bytes per execution).
    r#"
CREATE TABLE execution_specs (
    execution_id TEXT PRIMARY KEY,
    spec         TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO execution_specs (execution_id, spec) SELECT id, spec FROM executions;
ALTER TABLE executions DROP COLUMN spec;
"#,
    // 3: an execution stays bound to the plugin chosen at submission
    // (NULL for older rows: routed by task type as before).
    r#"
ALTER TABLE executions ADD COLUMN plugin_id TEXT;
"#,
    // 4: crash-loop protection: per execution, the consecutive unclean
    // stops of the daemon that happened inside one of its plugin calls.
    r#"
CREATE TABLE plugin_crashes (
    execution_id TEXT PRIMARY KEY,
    crashes      INTEGER NOT NULL,
    call         TEXT NOT NULL,
    at           INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // 5: retention. The pruner selects terminal executions by age from a
    // partial index (only terminal rows are in it, so a step of an active
    // execution never writes it), and catalog entries by age. The index
    // holds `phase` too: SQLite re-checks a partial index's condition on
    // each row, and without the column there that is one seek into the
    // table per row (a count over 180k terminal rows took 0.2 s instead of
    // 8 ms).
    // `auto_vacuum = INCREMENTAL` lets the pruner give the pages it frees
    // back to the file system (`PRAGMA incremental_vacuum`) instead of
    // keeping the file at its largest forever. SQLite changes the
    // auto-vacuum mode of a file that has tables only by rebuilding it, so
    // this migration runs `VACUUM` once, outside a transaction: it rewrites
    // the whole database (about as long as copying the file, seconds per
    // 100 MB; the daemon is not serving yet) and needs as much free disk as
    // the file takes again, for the copy. A new, empty database pays
    // nothing. Interrupted, it runs again from the start (every statement
    // can be repeated).
    r#"
CREATE INDEX IF NOT EXISTS executions_terminal_by_age ON executions(updated_at, id, phase)
    WHERE phase IN ('Succeeded', 'Failed', 'Aborted');
CREATE INDEX IF NOT EXISTS catalog_by_age ON catalog(created_at);
PRAGMA auto_vacuum = INCREMENTAL;
VACUUM;
"#,
    // 6: the terminal index's condition as comparisons. SQLite evaluates a
    // constant `IN (...)` list through a temporary table, and it tests a
    // partial index's condition on every insert and update of the table:
    // with `IN`, each submission built one and each step two (5 per
    // execution, ~45% of the committer's instructions in `kozmo bench`
    // P3). Queries spell the condition the same way (`TERMINAL_SQL`): SQLite
    // uses a partial index only for a WHERE that contains its condition.
    r#"
DROP INDEX executions_terminal_by_age;
CREATE INDEX executions_terminal_by_age ON executions(updated_at, id, phase)
    WHERE (phase = 'Succeeded' OR phase = 'Failed' OR phase = 'Aborted');
"#,
    // 7: values the store keeps about itself (`event_seq.rs`: the highest
    // event seq retention deleted, so none is handed out twice), and the
    // tokens of an execution found by an index: retention deletes them by
    // execution, and without it each slice scanned the whole table (its key
    // is namespace and token).
    r#"
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX resource_tokens_by_execution ON resource_tokens(execution_id);
"#,
];

/// Migrations (by number, from 1) that run outside a transaction.
pub const OUTSIDE_TRANSACTION: &[usize] = &[5];
