//! The P3 reference: the rows a durable run left in its database, written
//! again with plain rusqlite into a fresh file of the same schema and file
//! settings (WAL, `synchronous=FULL`), `batch` executions at a time: one
//! transaction with their `executions` and `execution_specs` rows (the
//! submission), one with the rest (task states, events, outputs). No
//! engine, no JSON, no updates: what SQLite does at best for the same data.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use kozmo_store_sqlite::{Durability, SqliteStore};

/// Tables written per execution, with the column holding the execution id;
/// the first [`SUBMITTED`] are written when an execution is submitted.
const TABLES: [(&str, usize); 6] = [
    ("executions", 0),
    ("execution_specs", 0),
    ("task_states", 0),
    ("events", 1),
    ("outputs", 0),
    ("error_documents", 0),
];

/// How many of [`TABLES`] hold the rows of a submission.
const SUBMITTED: usize = 2;

/// What the raw run wrote.
#[derive(Debug, Clone)]
pub struct RawPoint {
    /// Executions (groups of rows) written.
    pub executions: usize,
    /// Rows written.
    pub rows: usize,
    /// Executions per transaction.
    pub batch: usize,
    /// Time for the inserts and commits.
    pub seconds: f64,
}

impl RawPoint {
    /// Executions' rows per second.
    pub fn per_second(&self) -> f64 {
        self.executions as f64 / self.seconds
    }

    /// Rows per execution.
    pub fn rows_per_execution(&self) -> f64 {
        self.rows as f64 / self.executions.max(1) as f64
    }
}

type Rows = Vec<(usize, Vec<Value>)>;

/// Reads every execution's rows from `source`, then times writing them into
/// a fresh database `target`, `batch` executions per transaction.
pub fn replay(source: &Path, target: &Path, batch: usize) -> anyhow::Result<RawPoint> {
    let src = Connection::open(source)?;
    let mut order: Vec<String> = Vec::new();
    let mut by_exec: HashMap<String, Rows> = HashMap::new();
    let mut columns = Vec::new();
    for (t, (table, id_col)) in TABLES.iter().enumerate() {
        let mut st = src.prepare(&format!("SELECT * FROM {table}"))?;
        let n = st.column_count();
        columns.push(n);
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let values: Vec<Value> = (0..n).map(|i| r.get::<_, Value>(i)).collect::<Result<_, _>>()?;
            let id = match &values[*id_col] {
                Value::Text(s) => s.clone(),
                v => anyhow::bail!("{table}: execution id column is {v:?}"),
            };
            if t == 0 {
                order.push(id.clone());
            }
            by_exec.entry(id).or_default().push((t, values));
        }
    }
    drop(src);

    // The schema and pragmas of the real store, then a plain connection.
    drop(SqliteStore::open(target, Durability::Full)?);
    let mut c = Connection::open(target)?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    let sql: Vec<String> = TABLES
        .iter()
        .zip(&columns)
        .map(|((table, _), n)| {
            let marks = vec!["?"; *n].join(", ");
            format!("INSERT INTO {table} VALUES ({marks})")
        })
        .collect();

    let mut rows = 0usize;
    let start = Instant::now();
    for chunk in order.chunks(batch.max(1)) {
        // Like the engine: the submissions are durable first, then the rest.
        for submission in [true, false] {
            let tx = c.transaction()?;
            for id in chunk {
                for (t, values) in by_exec.get(id).map(Vec::as_slice).unwrap_or_default() {
                    if (*t < SUBMITTED) == submission {
                        tx.prepare_cached(&sql[*t])?.execute(params_from_iter(values.iter()))?;
                        rows += 1;
                    }
                }
            }
            tx.commit()?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(RawPoint {
        executions: order.len(),
        rows,
        batch,
        seconds,
    })
}
