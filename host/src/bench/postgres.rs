//! The `postgres` benchmark part: durable completions/s of the engine on
//! the PostgreSQL store (joined as a cluster node, as the daemon runs it),
//! against raw batched writes of the same rows into the same server in the
//! same run; then two nodes on one database against one.
//!
//! The server is `--postgres URL` or, without it, a throw-away cluster
//! (`initdb` + `postgres` from the installed PostgreSQL, the test kit's
//! `PgServer`). Each run gets a schema of its own (dropped at the end):
//! the engine's run, its rows read back per table, then the same rows
//! written into copies of the tables (same columns, indexes and
//! constraints), `batch` executions per transaction, twice: with one
//! multi-row `INSERT … SELECT FROM unnest(…)` per table (batched inserts,
//! the goal's reference, and how the store itself writes step results),
//! and with `COPY` (the fastest way a client can load rows: the ceiling).

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use postgres::{Client, NoTls};

use super::engine::{bench_spec, start_engine, BenchPlugin};
use kozmo_engine::model::ExecPhase;
use kozmo_engine::store::{NodeInfo, Store};
use kozmo_store_postgres::{NodeSpec, PostgresStore};

/// The tables a run writes, in the order the raw writes fill them.
const TABLES: [&str; 5] = ["executions", "execution_specs", "task_states", "events", "outputs"];

/// What the part measured.
#[derive(Debug, Clone)]
pub struct PostgresPoint {
    /// The server (a URL with its password hidden, or the throw-away cluster).
    pub server: String,
    /// Executions per run.
    pub executions: usize,
    /// Executions per submission batch and per raw transaction.
    pub batch: usize,
    /// One node: seconds from the first submission to the last Succeeded row.
    pub one_node_secs: f64,
    /// Raw batched inserts of the same rows: seconds.
    pub raw_secs: f64,
    /// Raw `COPY` of the same rows: seconds.
    pub copy_secs: f64,
    /// Two nodes, half the submissions each: seconds.
    pub two_nodes_secs: f64,
    /// Rows per table the one-node run left.
    pub rows: TableRows,
}

impl PostgresPoint {
    fn rate(&self, secs: f64) -> f64 {
        self.executions as f64 / secs
    }

    /// Engine / raw (goal >= 0.5).
    pub fn ratio(&self) -> f64 {
        self.raw_secs / self.one_node_secs
    }

    /// The part's Markdown.
    pub fn markdown(&self) -> String {
        let rows: Vec<String> = self.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
        format!(
            "Server: {}. {} echo-like executions (native no-op plugin: one round and a finalizing step each), \
             submitted in batches of {}.\n\n\
             | figure | completions/s | |\n|---|---|---|\n\
             | engine, 1 node | {:.0} | |\n\
             | raw batched inserts of the same rows (one multi-row `INSERT` per table), {} executions per \
             transaction | {:.0} | |\n\
             | **engine / raw inserts** | **{:.2}** | goal >= 0.5: {} |\n\
             | raw `COPY` of the same rows (the ceiling) | {:.0} | engine / COPY {:.2} |\n\
             | engine, 2 nodes on one database | {:.0} | {:.2}x one node (report only: on 2 cores both nodes \
             and the server share the CPUs, no gain is expected) |\n\n\
             Rows per run: {}.\n",
            self.server,
            self.executions,
            self.batch,
            self.rate(self.one_node_secs),
            self.batch,
            self.rate(self.raw_secs),
            self.ratio(),
            if self.ratio() >= 0.5 { "met" } else { "missed" },
            self.rate(self.copy_secs),
            self.copy_secs / self.one_node_secs,
            self.rate(self.two_nodes_secs),
            self.one_node_secs / self.two_nodes_secs,
            rows.join(", ")
        )
    }
}

/// `url` with its search path set to `schema` (libpq's `options`).
fn in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// Runs the part against `url` (or a throw-away cluster).
pub fn measure(url: Option<&str>, executions: usize, batch: usize, pb: &ProgressBar) -> anyhow::Result<PostgresPoint> {
    let mut scratch = None;
    let (base, server) = match url {
        Some(u) => (u.to_string(), kozmo_store_postgres::redact(u)),
        None => {
            kozmo_testkit::postgres::bindir().map_err(|e| {
                anyhow::anyhow!("{e}; or give a database with --postgres postgres://user:password@host/db")
            })?;
            pb.set_message("postgres: starting a throw-away cluster");
            let pg = kozmo_testkit::postgres::PgServer::start();
            let u = pg.url("kozmo");
            scratch = Some(pg);
            (
                u,
                "a throw-away local cluster (default settings, synchronous_commit on)".to_string(),
            )
        }
    };
    let mut admin = Client::connect(&base, NoTls)?;
    let tag = std::process::id();
    let schemas = [format!("kozmo_bench_{tag}_one"), format!("kozmo_bench_{tag}_two")];
    for s in &schemas {
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}"))?;
    }
    let result = (|| {
        let one_url = in_schema(&base, &schemas[0]);
        pb.set_message("postgres: engine, 1 node");
        let one_node_secs = run_engine(&one_url, 1, executions, batch, pb)?;
        pb.set_message("postgres: raw inserts and COPY");
        let (raw_secs, copy_secs, rows) = raw_writes(&one_url, batch)?;
        pb.set_message("postgres: engine, 2 nodes");
        let two_nodes_secs = run_engine(&in_schema(&base, &schemas[1]), 2, executions, batch, pb)?;
        Ok(PostgresPoint {
            server,
            executions,
            batch,
            one_node_secs,
            raw_secs,
            copy_secs,
            two_nodes_secs,
            rows,
        })
    })();
    for s in &schemas {
        let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"));
    }
    drop(scratch);
    result
}

/// `nodes` engines on the database, each joined as a node and given its
/// share of `n` executions: seconds to the last Succeeded.
fn run_engine(url: &str, nodes: usize, n: usize, batch: usize, pb: &ProgressBar) -> anyhow::Result<f64> {
    let mut running = Vec::new();
    for i in 0..nodes {
        let dir = tempfile::Builder::new().prefix("kozmo-bench-pg-").tempdir()?;
        let store = std::sync::Arc::new(PostgresStore::open(url).map_err(|e| anyhow::anyhow!("{e}"))?);
        let spec = NodeSpec {
            node_id: format!("bench-{i}"),
            lease: Duration::from_secs(30),
            task_types: None,
        };
        store
            .join_cluster(spec, &NodeInfo::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let plugin = BenchPlugin::new(0, true);
        let engine = start_engine(dir.path(), store.clone(), plugin.clone(), Duration::from_secs(3600), 0)?;
        running.push((engine, store, plugin, dir));
    }
    let start = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for (k, (engine, ..)) in running.iter().enumerate() {
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let ids: Vec<String> = (k..n).step_by(nodes).map(|i| format!("b{i:07}")).collect();
                for chunk in ids.chunks(batch.max(1)) {
                    let items = chunk.iter().map(|id| (Some(id.clone()), bench_spec())).collect();
                    for r in engine.submit_batch(items) {
                        r.map_err(|e| anyhow::anyhow!("submit: {e}"))?;
                    }
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
        }
        Ok(())
    })?;
    let store = &running[0].1;
    loop {
        let finalized: u64 = running.iter().map(|r| r.2.finalized()).sum();
        if finalized as usize >= n {
            let done = store.count_by_phase()?.get(&ExecPhase::Succeeded).copied().unwrap_or(0);
            if done as usize >= n {
                break;
            }
        }
        pb.set_message(format!("postgres: {nodes} node(s), {finalized}/{n} done"));
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = start.elapsed().as_secs_f64();
    for (engine, ..) in &running {
        engine.shutdown(Duration::from_secs(10));
    }
    Ok(secs)
}

/// Rows per table.
type TableRows = Vec<(&'static str, i64)>;

/// One table's rows of one batch: as `COPY` text, and as text columns.
struct TableBatch {
    copy: Vec<u8>,
    columns: Vec<Vec<Option<String>>>,
}

/// Reads back what the engine left and writes the same rows into copies of
/// its tables, `batch` executions per transaction: with batched `INSERT`s,
/// then with `COPY`. Seconds of each, and rows per table.
fn raw_writes(url: &str, batch: usize) -> anyhow::Result<(f64, f64, TableRows)> {
    use std::io::{Read, Write};
    let mut c = Client::connect(url, NoTls)?;
    let mut rows = Vec::new();
    let mut columns: Vec<Vec<(String, String)>> = Vec::new();
    for t in TABLES {
        let n: i64 = c.query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])?.get(0);
        rows.push((t, n));
        c.batch_execute(&format!(
            "CREATE TABLE insert_{t} (LIKE {t} INCLUDING ALL); CREATE TABLE copy_{t} (LIKE {t} INCLUDING ALL)"
        ))?;
        columns.push(
            c.query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[&t],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        );
    }
    let ids: Vec<String> = c
        .query("SELECT id FROM executions ORDER BY id", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Every batch's rows per table, read before the clocks start.
    let mut batches: Vec<Vec<TableBatch>> = Vec::new();
    for chunk in ids.chunks(batch.max(1)) {
        let (first, last) = (&chunk[0], &chunk[chunk.len() - 1]);
        let mut per_table = Vec::new();
        for (t, cols) in TABLES.iter().zip(&columns) {
            let key = if *t == "executions" { "id" } else { "execution_id" };
            let order = if *t == "events" { "seq" } else { key };
            let filter = format!("FROM {t} WHERE {key} BETWEEN '{first}' AND '{last}' ORDER BY {order}");
            let mut copy = Vec::new();
            c.copy_out(&format!("COPY (SELECT * {filter}) TO STDOUT"))?
                .read_to_end(&mut copy)?;
            let list: Vec<String> = cols.iter().map(|(n, _)| format!("{n}::text")).collect();
            let read = c.query(&format!("SELECT {} {filter}", list.join(", ")), &[])?;
            let columns = (0..cols.len())
                .map(|i| read.iter().map(|r| r.get::<_, Option<String>>(i)).collect())
                .collect();
            per_table.push(TableBatch { copy, columns });
        }
        batches.push(per_table);
    }
    let inserts: Vec<String> = TABLES
        .iter()
        .zip(&columns)
        .map(|(t, cols)| {
            let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
            let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}::text[]")).collect();
            let casts: Vec<String> = cols.iter().map(|(n, ty)| format!("u.{n}::{ty}")).collect();
            format!(
                "INSERT INTO insert_{t} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM unnest({}) AS u({})",
                names.join(", "),
                casts.join(", "),
                params.join(", "),
                names.join(", ")
            )
        })
        .collect();
    let start = Instant::now();
    for per_table in &batches {
        let mut tx = c.transaction()?;
        for (sql, b) in inserts.iter().zip(per_table) {
            if b.columns.first().is_none_or(Vec::is_empty) {
                continue;
            }
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = b
                .columns
                .iter()
                .map(|col| col as &(dyn postgres::types::ToSql + Sync))
                .collect();
            tx.execute(sql.as_str(), &params)?;
        }
        tx.commit()?;
    }
    let insert_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for per_table in &batches {
        let mut tx = c.transaction()?;
        for (t, b) in TABLES.iter().zip(per_table) {
            if b.copy.is_empty() {
                continue;
            }
            let mut w = tx.copy_in(&format!("COPY copy_{t} FROM STDIN"))?;
            w.write_all(&b.copy)?;
            w.finish()?;
        }
        tx.commit()?;
    }
    Ok((insert_secs, start.elapsed().as_secs_f64(), rows))
}
