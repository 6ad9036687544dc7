//! Retention in SQLite: selecting terminal executions past the limits (on
//! the reader connection, never blocking a commit), deleting a slice of
//! them with every owned row — inside the engine's group commit
//! ([`delete_terminal_in`] through `WriteTxn::delete_terminal`, so a slice
//! costs no sync of its own), or in a transaction of its own — and giving
//! free pages back with `incremental_vacuum`.

use std::ops::Range;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension};

use crate::event_seq::{self, SeqFloor};
use crate::sqlite::{err, SqliteStore};
use kozmo_engine::model::ExecPhase;
use kozmo_engine::store::{PruneCandidate, PruneSelect, PrunedRows, StoreResult, StoreSpace, OWNED_TABLES, TERMINAL};
use kozmo_engine::sync::lock;

/// The terminal phases as SQL, spelled exactly as the condition of the
/// partial index `executions_terminal_by_age` (migration 6): SQLite uses a
/// partial index only for a WHERE that contains its condition.
const TERMINAL_SQL: &str = "(phase = 'Succeeded' OR phase = 'Failed' OR phase = 'Aborted')";

/// [`TERMINAL_SQL`] on the table aliased `e`.
const TERMINAL_SQL_E: &str = "(e.phase = 'Succeeded' OR e.phase = 'Failed' OR e.phase = 'Aborted')";

impl SqliteStore {
    /// See [`Store::prune_candidates`]. Two range scans of the
    /// partial index of terminal executions by `(updated_at, id)`, oldest
    /// first: the oldest beyond `keep_at_most`, and those older than their
    /// phase's cutoff; merged, at most `limit`.
    pub(super) fn select_prunable(&self, sel: &PruneSelect) -> StoreResult<Vec<PruneCandidate>> {
        let c = lock(&self.reader);
        let limit = sel.limit.min(i64::MAX as usize) as i64;
        let (after_at, after_id) = sel.after_or_first();
        let mut out: Vec<PruneCandidate> = Vec::new();
        if let Some(keep) = sel.keep_at_most {
            // The oldest execution kept under the count limit: the
            // `keep`-th newest (a walk of `keep` entries of the covering
            // index, not a count of all of them); everything older goes.
            let oldest_kept: Option<(i64, String)> = if keep == 0 {
                None
            } else {
                c.prepare_cached(&format!(
                    "SELECT updated_at, id FROM executions INDEXED BY executions_terminal_by_age \
                     WHERE {TERMINAL_SQL} ORDER BY updated_at DESC, id DESC LIMIT 1 OFFSET ?1"
                ))
                .map_err(err)?
                .query_row([keep.min(i64::MAX as u64) as i64 - 1], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(err)?
            };
            match (keep, oldest_kept) {
                (0, _) => out.extend(query(
                    &c,
                    &format!("{TERMINAL_SQL_E} AND (e.updated_at, e.id) > (?1, ?2)"),
                    rusqlite::params![after_at, after_id, limit],
                    "?3",
                )?),
                (_, Some((at, id))) => out.extend(query(
                    &c,
                    &format!(
                        "{TERMINAL_SQL_E} AND (e.updated_at, e.id) > (?1, ?2) AND (e.updated_at, e.id) < (?3, ?4)"
                    ),
                    rusqlite::params![after_at, after_id, at, id, limit],
                    "?5",
                )?),
                // Fewer than `keep` terminal executions: none is in excess.
                (_, None) => {}
            }
        }
        let cuts: Vec<Option<i64>> = TERMINAL.iter().map(|p| sel.cutoff(*p)).collect();
        if let Some(max) = cuts.iter().flatten().max() {
            let found = query(
                &c,
                &format!(
                    "{TERMINAL_SQL_E} AND (e.updated_at, e.id) > (?1, ?2) AND e.updated_at < ?3 AND \
                     ((e.phase = 'Succeeded' AND e.updated_at < ?4) OR (e.phase = 'Failed' AND e.updated_at < ?5) \
                     OR (e.phase = 'Aborted' AND e.updated_at < ?6))"
                ),
                rusqlite::params![after_at, after_id, max, cuts[0], cuts[1], cuts[2], limit],
                "?7",
            )?;
            out.extend(found);
            out.sort_by(|a, b| (a.updated_at_ms, &a.id).cmp(&(b.updated_at_ms, &b.id)));
            out.dedup_by(|a, b| a.id == b.id);
            out.truncate(sel.limit);
        }
        Ok(out)
    }

    /// See [`Store::delete_executions`].
    pub(super) fn delete_terminal(&self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        if ids.is_empty() {
            return Ok((Vec::new(), PrunedRows::default()));
        }
        let tx = self.begin_write()?;
        let out = delete_terminal_in(tx.conn(), &self.seq_floor, ids)?;
        tx.finish()?;
        Ok(out)
    }

    /// See [`Store::prune_catalog`]: entries written before the
    /// creation of the oldest execution still stored (none left can have
    /// written them; none at all: every entry).
    pub(super) fn delete_orphan_catalog(&self, limit: usize) -> StoreResult<u64> {
        let horizon: Option<i64> = lock(&self.reader)
            .prepare_cached("SELECT MIN(created_at) FROM executions")
            .map_err(err)?
            .query_row([], |r| r.get(0))
            .map_err(err)?;
        let horizon = horizon.unwrap_or(i64::MAX);
        let tx = self.begin_write()?;
        let n = tx
            .conn()
            .prepare_cached(
                "DELETE FROM catalog WHERE key IN (SELECT key FROM catalog WHERE created_at < ?1 \
                 ORDER BY created_at LIMIT ?2)",
            )
            .map_err(err)?
            .execute(params![horizon, limit.min(i64::MAX as usize) as i64])
            .map_err(err)?;
        tx.finish()?;
        Ok(n as u64)
    }

    /// See [`Store::reclaim_space`]: `PRAGMA incremental_vacuum(N)`
    /// on the writer connection (its own short transaction).
    pub(super) fn incremental_vacuum(&self, max_pages: u32) -> StoreResult<u64> {
        let c = lock(&self.writer);
        let started = Instant::now();
        let page_size = pragma(&c, "page_size")?;
        let before = pragma(&c, "freelist_count")?;
        if before == 0 {
            return Ok(0);
        }
        // SQLite frees one page per step of this pragma: step it to the end
        // (a single step, as `execute` does, frees one page).
        {
            let mut st = c
                .prepare(&format!("PRAGMA incremental_vacuum({max_pages})"))
                .map_err(err)?;
            let mut rows = st.query([]).map_err(err)?;
            while rows.next().map_err(err)?.is_some() {}
        }
        let after = pragma(&c, "freelist_count")?;
        drop(c);
        self.sync_written()?;
        log::debug!(
            "incremental_vacuum: {} free pages given back in {:?}",
            before - after,
            started.elapsed()
        );
        Ok((before - after).max(0) as u64 * page_size.max(0) as u64)
    }

    /// See [`Store::space`]: the free list, read on the reader connection
    /// (a committed view; pages a running transaction frees are not in it).
    pub(super) fn free_space(&self) -> StoreResult<StoreSpace> {
        let c = lock(&self.reader);
        let free = pragma(&c, "freelist_count")?.max(0) as u64;
        let page = pragma(&c, "page_size")?.max(0) as u64;
        Ok(StoreSpace {
            free_bytes: free * page,
            page_bytes: page,
        })
    }

    /// See [`Store::oldest_terminal`].
    pub(super) fn oldest_terminal_update(&self) -> StoreResult<Option<i64>> {
        let c = lock(&self.reader);
        let t = c
            .prepare_cached(&format!(
                "SELECT MIN(updated_at) FROM executions INDEXED BY executions_terminal_by_age WHERE {TERMINAL_SQL}"
            ))
            .map_err(err)?
            .query_row([], |r| r.get(0))
            .map_err(err)?;
        Ok(t)
    }
}

/// Deletes those of `ids` that are terminal, with their owned rows, on
/// `c` (inside the caller's transaction). The owned rows go first and the
/// executions rows last: if a statement fails, an execution whose rows are
/// left is still terminal and still selected (the selection does not need
/// its spec), so the next pass finishes it; no savepoint is needed, which
/// spares the sub-journal copy of every page the deletes touch.
///
/// Ids are time-ordered and retention takes the oldest, so most of a slice
/// sits side by side in every table keyed by execution id. The slice is cut
/// into runs of executions with no other execution between them (a walk of
/// the executions table in id order, which also checks each is terminal),
/// and each run goes with one range statement per table: a third fewer
/// instructions per execution than a statement per id (which in turn beat
/// a list parameter, `IN (SELECT value FROM json_each(?))`: the JSON read
/// and an ephemeral index per statement). A table that holds no row is not
/// touched (most executions leave crashes, tokens and error documents
/// empty): one read per table asks.
pub(super) fn delete_terminal_in(
    c: &Connection,
    seq_floor: &SeqFloor,
    ids: &[String],
) -> StoreResult<(Vec<String>, PrunedRows)> {
    let mut rows = PrunedRows::default();
    // Rust orders `str` by bytes, as SQLite's BINARY collation orders the
    // TEXT ids: the walk below meets them in this order.
    let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let (gone, runs) = terminal_runs(c, &sorted)?;
    if gone.is_empty() {
        return Ok((gone, rows));
    }
    let newest_event = event_seq::newest(c)?;
    for (table, slot) in OWNED_TABLES {
        if !is_empty(c, table)? {
            *slot(&mut rows) += delete_runs(c, table, "execution_id", &gone, &runs)?;
        }
    }
    if rows.events > 0 {
        seq_floor.after_delete(c, newest_event)?;
    }
    rows.executions = delete_runs(c, "executions", "id", &gone, &runs)?;
    Ok((gone, rows))
}

/// Of `sorted` (ascending, no repeats), those still terminal (an active
/// execution is never deleted, whatever the caller selected; a terminal one
/// is never written again), and their runs: index ranges into them with no
/// other execution between the first and the last of each.
fn terminal_runs(c: &Connection, sorted: &[&str]) -> StoreResult<(Vec<String>, Vec<Range<usize>>)> {
    let mut walk = c
        .prepare_cached(&format!(
            "SELECT id, {TERMINAL_SQL} FROM executions WHERE id >= ?1 ORDER BY id LIMIT ?2"
        ))
        .map_err(err)?;
    let mut gone: Vec<String> = Vec::with_capacity(sorted.len());
    let mut runs = Vec::new();
    let mut next = 0;
    while next < sorted.len() {
        let start = gone.len();
        let mut found = walk
            .query(params![sorted[next], (sorted.len() - next) as i64])
            .map_err(err)?;
        while let Some(row) = found.next().map_err(err)? {
            let (id, terminal): (String, bool) = (row.get(0).map_err(err)?, row.get(1).map_err(err)?);
            // Another execution (or an active one) between: the run ends.
            if next == sorted.len() || id != sorted[next] || !terminal {
                break;
            }
            gone.push(id);
            next += 1;
        }
        if gone.len() == start {
            // `sorted[next]` is gone already or not terminal.
            next += 1;
        } else {
            runs.push(start..gone.len());
        }
    }
    Ok((gone, runs))
}

/// Whether `table` holds no row (one read).
fn is_empty(c: &Connection, table: &str) -> StoreResult<bool> {
    let any = c
        .prepare_cached(&format!("SELECT 1 FROM {table} LIMIT 1"))
        .map_err(err)?
        .exists([])
        .map_err(err)?;
    Ok(!any)
}

/// Deletes the rows of `table` whose `key` lies in one of `runs` of `ids`,
/// one statement per run; how many.
fn delete_runs(c: &Connection, table: &str, key: &str, ids: &[String], runs: &[Range<usize>]) -> StoreResult<u64> {
    let mut delete = c
        .prepare_cached(&format!("DELETE FROM {table} WHERE {key} BETWEEN ?1 AND ?2"))
        .map_err(err)?;
    let mut n = 0;
    for run in runs {
        n += delete.execute([&ids[run.start], &ids[run.end - 1]]).map_err(err)? as u64;
    }
    Ok(n)
}

/// Terminal executions matching `filter`, oldest first, at most the
/// parameter named by `limit`.
fn query(c: &Connection, filter: &str, params: impl rusqlite::Params, limit: &str) -> StoreResult<Vec<PruneCandidate>> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT e.id, COALESCE(s.spec, '{{}}'), e.task_type, e.plugin_id, e.attempt, e.phase, e.updated_at \
             FROM executions e INDEXED BY executions_terminal_by_age \
             LEFT JOIN execution_specs s ON s.execution_id = e.id \
             WHERE {filter} ORDER BY e.updated_at, e.id LIMIT {limit}"
        ))
        .map_err(err)?;
    let rows = st
        .query_map(params, |r| {
            let phase: String = r.get(5)?;
            Ok(PruneCandidate {
                id: r.get(0)?,
                spec_json: r.get(1)?,
                task_type: r.get(2)?,
                plugin_id: r.get(3)?,
                attempt: r.get::<_, i64>(4)?.max(0) as u32,
                phase: phase.parse().unwrap_or(ExecPhase::Succeeded),
                updated_at_ms: r.get(6)?,
            })
        })
        .map_err(err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
}

fn pragma(c: &Connection, name: &str) -> StoreResult<i64> {
    c.pragma_query_value(None, name, |r| r.get(0)).map_err(err)
}
