//! Retention's part in the engine: what an execution owns in the data
//! store, and removing one batch of terminal executions — their blobs
//! first, then their rows — so a crash between the two leaves rows the next
//! pass selects again (never blobs nobody can find). The rows are deleted
//! by the committer, inside its next group commit: the engine's single
//! writer stays single, and a batch costs no sync of its own.
//!
//! Active executions are never touched: the store selects and deletes only
//! rows whose phase is terminal, in the same statement that deletes them,
//! and a terminal execution is never written again (invariant 4: its
//! terminal event is its last step).

use std::path::{Path, PathBuf};

use super::context::{execution_dir, generated_name};
use super::{EngineError, EngineHandle};
use crate::model::ExecutionSpec;
use crate::store::{PruneCandidate, PruneSelect, PrunedRows};

/// One batch removed (or, in a dry run, what would be).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneBatch {
    /// The executions removed.
    pub ids: Vec<String>,
    /// The rows removed per table (zero in a dry run).
    pub rows: PrunedRows,
    /// Directories of the data store removed (or found, in a dry run).
    pub blob_dirs: u64,
    /// Bytes of the files in them.
    pub blob_bytes: u64,
    /// The earliest and latest last update among them (ms).
    pub updated_range_ms: Option<(i64, i64)>,
}

impl EngineHandle {
    /// Terminal executions past `sel` (at most `sel.limit`), least recently
    /// updated first. Reads only.
    pub fn prune_candidates(&self, sel: &PruneSelect) -> Result<Vec<PruneCandidate>, EngineError> {
        Ok(self.core.store.prune_candidates(sel)?)
    }

    /// The data store directories an execution owns: its inputs and outputs
    /// (`<data>/executions/<id>`) and the raw output directory of each
    /// attempt (`<data>/raw/<generated name>`, which holds what plugins
    /// write there, the shell plugin's `shell` working directories
    /// included). Only those that exist.
    pub fn blob_dirs(&self, c: &PruneCandidate) -> Vec<PathBuf> {
        let core = &self.core;
        let root = core.data.root();
        let node_id = serde_json::from_str::<ExecutionSpec>(&c.spec_json)
            .map(|s| s.node_id().to_string())
            .unwrap_or_else(|_| crate::model::DEFAULT_NODE_ID.to_string());
        let mut lens = vec![kozmo_interface::DEFAULT_GENERATED_NAME_MAX_LENGTH];
        if let Ok(Some(p)) = core.bound_plugin(c.plugin_id.as_deref(), &c.task_type) {
            lens.push(p.properties().effective_generated_name_max_length());
        }
        lens.sort_unstable();
        lens.dedup();
        let mut dirs = vec![PathBuf::from(execution_dir(root, &c.id))];
        for attempt in 0..=c.attempt {
            for len in &lens {
                dirs.push(root.join("raw").join(generated_name(*len, &c.id, &node_id, attempt)));
            }
        }
        dirs.into_iter()
            .filter(|d| {
                // Only directories under the data store root (an id cannot
                // name `..`; checked again here all the same, for those
                // that exist).
                d.is_dir() && core.data.resolve(&d.to_string_lossy()).is_ok()
            })
            .collect()
    }

    /// Removes `candidates` (blobs, then rows); with `dry_run`, only
    /// measures their blobs. Executions that stopped being terminal are
    /// left alone (they cannot: terminal is final; checked anyway).
    pub fn prune(&self, candidates: &[PruneCandidate], dry_run: bool) -> Result<PruneBatch, EngineError> {
        let mut out = PruneBatch::default();
        for c in candidates {
            for d in self.blob_dirs(c) {
                out.blob_dirs += 1;
                out.blob_bytes += tree_bytes(&d);
                if !dry_run {
                    if let Err(e) = std::fs::remove_dir_all(&d) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            log::warn!("retention: cannot remove {} of execution {}: {e}", d.display(), c.id);
                        }
                    }
                }
            }
            let t = c.updated_at_ms;
            out.updated_range_ms = Some(out.updated_range_ms.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
        }
        if dry_run {
            out.ids = candidates.iter().map(|c| c.id.clone()).collect();
            return Ok(out);
        }
        let ids: Vec<String> = candidates.iter().map(|c| c.id.clone()).collect();
        let (gone, rows) = self.delete(ids)?;
        out.ids = gone;
        out.rows = rows;
        Ok(out)
    }

    /// Deletes the rows of `ids` (those still terminal): through the
    /// committer, inside its next group commit (no sync of its own; the
    /// writer is never held by anyone else), or directly on a store whose
    /// steps commit inline.
    fn delete(&self, ids: Vec<String>) -> Result<(Vec<String>, PrunedRows), EngineError> {
        let core = &self.core;
        if core.inline_commits {
            return Ok(core.store.delete_executions(&ids)?);
        }
        let ids_copy = ids.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        core.commit_tx
            .send(super::committer::CommitMsg::Prune(ids, tx))
            .map_err(|_| EngineError::ShuttingDown)?;
        match rx.recv().map_err(|_| EngineError::ShuttingDown)? {
            Ok(done) => Ok(done),
            Err(e) => {
                // The group commit could not take it (a transaction that
                // does not delete, or a failed delete): its own transaction.
                log::debug!("retention: deleting in a transaction of its own ({e})");
                Ok(core.store.delete_executions(&ids_copy)?)
            }
        }
    }

    /// Removes catalog entries no stored execution can have written (at
    /// most `limit`).
    pub fn prune_catalog(&self, limit: usize) -> Result<u64, EngineError> {
        Ok(self.core.store.prune_catalog(limit)?)
    }

    /// Gives free store pages back to the file system (at most `max_pages`).
    pub fn reclaim_space(&self, max_pages: u32) -> Result<u64, EngineError> {
        Ok(self.core.store.reclaim_space(max_pages)?)
    }

    /// The free space in the store's file.
    pub fn store_space(&self) -> Result<crate::store::StoreSpace, EngineError> {
        Ok(self.core.store.space()?)
    }

    /// The last update of the oldest terminal execution kept.
    pub fn oldest_terminal(&self) -> Result<Option<i64>, EngineError> {
        Ok(self.core.store.oldest_terminal()?)
    }
}

/// Bytes of the files under `dir` (symlinks not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
