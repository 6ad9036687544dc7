//! Retention on PostgreSQL: selecting terminal executions past the limits
//! (from the partial index of terminal executions by age), deleting a
//! batch with every owned row — inside the engine's group commit in a
//! savepoint ([`delete_terminal_in`] through `WriteTxn::delete_terminal`),
//! or in a transaction of its own — re-checking the phase in the `DELETE`
//! itself. Space: PostgreSQL's autovacuum makes the dead rows' space
//! reusable; giving it back to the file system (`VACUUM FULL`) locks the
//! tables and is left to the operator, so `reclaim_space` keeps the
//! trait's default (nothing given back).

use postgres::types::ToSql;

use crate::pg::{get, get_u32, Conn, PostgresStore, TERMINAL_SQL};
use kozmo_engine::model::ExecPhase;
use kozmo_engine::store::{PruneCandidate, PruneSelect, PrunedRows, StoreResult, OWNED_TABLES, TERMINAL};

impl PostgresStore {
    /// See `Store::prune_candidates`: the oldest beyond `keep_at_most`
    /// (found by walking `keep` index entries from the newest, not by
    /// counting all), and those older than their phase's cutoff; merged,
    /// oldest first, at most `limit`.
    pub(crate) fn select_prunable(&self, sel: &PruneSelect) -> StoreResult<Vec<PruneCandidate>> {
        let mut c = self.conn()?;
        let limit = sel.limit.min(i64::MAX as usize) as i64;
        let (after_at, after_id) = sel.after_or_first();
        let mut out: Vec<PruneCandidate> = Vec::new();
        if let Some(keep) = sel.keep_at_most {
            if keep == 0 {
                out.extend(query(
                    &mut c,
                    &format!("e.{TERMINAL_SQL} AND (e.updated_at, e.id) > ($1, $2)"),
                    &[&after_at, &after_id, &limit],
                    "$3",
                )?);
            } else {
                let offset = keep.min(i64::MAX as u64) as i64 - 1;
                let oldest_kept = c.query_opt(
                    &format!(
                        "SELECT updated_at, id FROM executions WHERE {TERMINAL_SQL} \
                         ORDER BY updated_at DESC, id DESC LIMIT 1 OFFSET $1"
                    ),
                    &[&offset],
                )?;
                if let Some(row) = oldest_kept {
                    let (at, id): (i64, String) = (get(&row, 0)?, get(&row, 1)?);
                    out.extend(query(
                        &mut c,
                        &format!(
                            "e.{TERMINAL_SQL} AND (e.updated_at, e.id) > ($1, $2) AND (e.updated_at, e.id) < ($3, $4)"
                        ),
                        &[&after_at, &after_id, &at, &id, &limit],
                        "$5",
                    )?);
                }
                // Else fewer than `keep` terminal executions: none in excess.
            }
        }
        let cuts: Vec<Option<i64>> = TERMINAL.iter().map(|p| sel.cutoff(*p)).collect();
        if let Some(max) = cuts.iter().flatten().max() {
            let found = query(
                &mut c,
                &format!(
                    "e.{TERMINAL_SQL} AND (e.updated_at, e.id) > ($1, $2) AND e.updated_at < $3 AND \
                     ((e.phase = 'Succeeded' AND e.updated_at < $4) OR (e.phase = 'Failed' AND e.updated_at < $5) \
                     OR (e.phase = 'Aborted' AND e.updated_at < $6))"
                ),
                &[&after_at, &after_id, max, &cuts[0], &cuts[1], &cuts[2], &limit],
                "$7",
            )?;
            out.extend(found);
            out.sort_by(|a, b| (a.updated_at_ms, &a.id).cmp(&(b.updated_at_ms, &b.id)));
            out.dedup_by(|a, b| a.id == b.id);
            out.truncate(sel.limit);
        }
        Ok(out)
    }

    /// See `Store::delete_executions`: one batch in a transaction of its own.
    pub(crate) fn delete_terminal(&self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        if ids.is_empty() {
            return Ok((Vec::new(), PrunedRows::default()));
        }
        let mut tx = self.begin_write()?;
        let mut failed = false;
        let out = delete_terminal_in(tx.conn(), ids, &mut failed)?;
        tx.finish()?;
        Ok(out)
    }

    /// See `Store::prune_catalog`: entries written before the creation of
    /// the oldest execution still stored (none left: every entry).
    pub(crate) fn delete_orphan_catalog(&self, limit: usize) -> StoreResult<u64> {
        let mut c = self.conn()?;
        let horizon: Option<i64> = c
            .query_opt("SELECT MIN(created_at) FROM executions", &[])?
            .map(|r| get(&r, 0))
            .transpose()?
            .flatten();
        c.execute(
            "DELETE FROM catalog WHERE key IN (SELECT key FROM catalog WHERE created_at < $1 \
             ORDER BY created_at LIMIT $2)",
            &[&horizon.unwrap_or(i64::MAX), &(limit.min(i64::MAX as usize) as i64)],
        )
    }

    /// See `Store::oldest_terminal`.
    pub(crate) fn oldest_terminal_update(&self) -> StoreResult<Option<i64>> {
        let row = self.conn()?.query_opt(
            &format!("SELECT MIN(updated_at) FROM executions WHERE {TERMINAL_SQL}"),
            &[],
        )?;
        Ok(row.map(|r| get::<Option<i64>>(&r, 0)).transpose()?.flatten())
    }
}

/// Deletes those of `ids` that are terminal, with their owned rows, on
/// `c` inside the caller's transaction, all or nothing (a savepoint);
/// sets `failed` if the transaction around it is left unusable.
pub(crate) fn delete_terminal_in(
    c: &mut Conn,
    ids: &[String],
    failed: &mut bool,
) -> StoreResult<(Vec<String>, PrunedRows)> {
    if let Err(e) = c.client.batch_execute("SAVEPOINT prune") {
        *failed = true;
        return Err(crate::pg::err(e));
    }
    match delete_owned(c, ids) {
        Ok(done) => {
            if let Err(e) = c.client.batch_execute("RELEASE SAVEPOINT prune") {
                *failed = true;
                return Err(crate::pg::err(e));
            }
            Ok(done)
        }
        Err(e) => {
            if let Err(r) = c
                .client
                .batch_execute("ROLLBACK TO SAVEPOINT prune; RELEASE SAVEPOINT prune")
            {
                log::error!("undoing a failed prune batch: {}", crate::pg::describe(&r));
                *failed = true;
            }
            Err(e)
        }
    }
}

fn delete_owned(c: &mut Conn, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
    let mut rows = PrunedRows::default();
    // Still terminal, checked by the delete itself: an active execution is
    // never deleted, whatever the caller selected.
    let gone: Vec<String> = c
        .query(
            &format!("DELETE FROM executions WHERE id = ANY($1) AND {TERMINAL_SQL} RETURNING id"),
            &[&ids],
        )?
        .iter()
        .map(|r| get(r, 0))
        .collect::<StoreResult<_>>()?;
    rows.executions = gone.len() as u64;
    if !gone.is_empty() {
        for (table, slot) in OWNED_TABLES {
            let n = c.execute(&format!("DELETE FROM {table} WHERE execution_id = ANY($1)"), &[&gone])?;
            *slot(&mut rows) += n;
        }
    }
    Ok((gone, rows))
}

/// Terminal executions matching `filter`, oldest first, at most the
/// parameter named by `limit`.
fn query(c: &mut Conn, filter: &str, params: &[&(dyn ToSql + Sync)], limit: &str) -> StoreResult<Vec<PruneCandidate>> {
    let rows = c.query(
        &format!(
            "SELECT e.id, s.spec, e.task_type, e.plugin_id, e.attempt, e.phase, e.updated_at \
             FROM executions e JOIN execution_specs s ON s.execution_id = e.id \
             WHERE {filter} ORDER BY e.updated_at, e.id LIMIT {limit}"
        ),
        params,
    )?;
    rows.iter()
        .map(|r| {
            Ok(PruneCandidate {
                id: get(r, 0)?,
                spec_json: get(r, 1)?,
                task_type: get(r, 2)?,
                plugin_id: get(r, 3)?,
                attempt: get_u32(r, 4)?,
                phase: get::<String>(r, 5)?.parse().unwrap_or(ExecPhase::Succeeded),
                updated_at_ms: get(r, 6)?,
            })
        })
        .collect()
}
