//! Retention's part in the engine: what an execution owns in the data
//! store, and removing one batch of terminal executions — their blobs
//! first, then their rows — so a crash between the two leaves rows the next
//! pass selects again (never blobs nobody can find). The rows are deleted
//! by the committer, in slices spread over its coming group commits: the
//! engine's single writer stays single, and a slice costs no sync of its
//! own.
//!
//! Active executions are never touched: the store selects and deletes only
//! rows whose phase is terminal, in the same statement that deletes them,
//! and a terminal execution is never written again (invariant 4: its
//! terminal event is its last step).

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::context::{execution_dir, generated_name, EXECUTIONS_DIR, RAW_DIR};
use super::{EngineError, EngineHandle};
use crate::model::ExecutionSpec;
use crate::store::{PruneCandidate, PruneSelect, PrunedRows};

/// Executions per slice: the unit the committer fits into its group
/// commits (the store deletes a slice table by table).
const PRUNE_SLICE: usize = 16;

/// A batch whose blobs are gone and whose rows the committer is deleting
/// ([`EngineHandle::prune_send`]).
pub struct PruneInFlight {
    batch: PruneBatch,
    slices: Vec<(Vec<String>, crossbeam_channel::Receiver<super::committer::PruneReply>)>,
    /// A store whose steps commit inline deleted them at once.
    inline: Option<(Vec<String>, PrunedRows)>,
}

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
        self.existing_dirs(c, &ListedParents::default())
    }

    /// [`EngineHandle::blob_dirs`], asking the file system only about
    /// directories `listed` may hold.
    fn existing_dirs(&self, c: &PruneCandidate, listed: &ListedParents) -> Vec<PathBuf> {
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
                dirs.push(root.join(RAW_DIR).join(generated_name(*len, &c.id, &node_id, attempt)));
            }
        }
        dirs.into_iter()
            .filter(|d| {
                // Only directories under the data store root (an id cannot
                // name `..`; checked again here all the same, for those
                // that exist).
                listed.may_hold(d) && d.is_dir() && core.data.resolve(&d.to_string_lossy()).is_ok()
            })
            .collect()
    }

    /// Removes `candidates` (blobs, then rows); with `dry_run`, only
    /// measures their blobs. Executions that stopped being terminal are
    /// left alone (they cannot: terminal is final; checked anyway).
    pub fn prune(&self, candidates: &[PruneCandidate], dry_run: bool) -> Result<PruneBatch, EngineError> {
        if dry_run {
            let mut out = self.blobs_of(candidates, true);
            out.ids = candidates.iter().map(|c| c.id.clone()).collect();
            return Ok(out);
        }
        let sent = self.prune_send(candidates)?;
        self.prune_wait(sent)
    }

    /// Starts removing `candidates`: their blobs now, their rows handed to
    /// the committer in slices; [`EngineHandle::prune_wait`] waits until
    /// they are durably gone. A pass keeps the next batch in flight while
    /// it selects another, so the committer always has slices to take.
    pub fn prune_send(&self, candidates: &[PruneCandidate]) -> Result<PruneInFlight, EngineError> {
        let batch = self.blobs_of(candidates, false);
        let mut ids: Vec<String> = candidates.iter().map(|c| c.id.clone()).collect();
        // Sliced in id order: a slice then holds executions that sit side
        // by side in the store's tables, which a store can delete by range.
        ids.sort_unstable();
        let core = &self.core;
        let mut slices = Vec::new();
        if core.inline_commits {
            let done = core.store.delete_executions(&ids)?;
            return Ok(PruneInFlight {
                batch,
                slices,
                inline: Some(done),
            });
        }
        for slice in ids.chunks(PRUNE_SLICE) {
            let (tx, rx) = crossbeam_channel::bounded(1);
            core.commit_tx
                .send(super::committer::CommitMsg::Prune(slice.to_vec(), tx))
                .map_err(|_| EngineError::ShuttingDown)?;
            slices.push((slice.to_vec(), rx));
        }
        Ok(PruneInFlight {
            batch,
            slices,
            inline: None,
        })
    }

    /// Waits until the rows of a batch [`EngineHandle::prune_send`] started
    /// are durably deleted: the executions removed and the rows per table.
    pub fn prune_wait(&self, sent: PruneInFlight) -> Result<PruneBatch, EngineError> {
        let PruneInFlight {
            mut batch,
            slices,
            inline,
            ..
        } = sent;
        let (mut gone, mut rows) = inline.unwrap_or_default();
        for (slice, rx) in slices {
            let (g, r) = match rx.recv().map_err(|_| EngineError::ShuttingDown)? {
                Ok(done) => done,
                Err(e) => {
                    // The group commit could not take it (a transaction that
                    // does not delete, or a failed delete): its own transaction.
                    log::debug!("retention: deleting in a transaction of its own ({e})");
                    self.core.store.delete_executions(&slice)?
                }
            };
            gone.extend(g);
            rows.add(&r);
        }
        batch.ids = gone;
        batch.rows = rows;
        Ok(batch)
    }

    /// Measures (and unless `dry_run`, removes) the blobs of `candidates`.
    fn blobs_of(&self, candidates: &[PruneCandidate], dry_run: bool) -> PruneBatch {
        let mut out = PruneBatch::default();
        let listed = ListedParents::read(self.core.data.root(), candidates.len() * LISTED_PER_CANDIDATE);
        for c in candidates {
            for d in self.existing_dirs(c, &listed) {
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
        out
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

/// Names read per candidate at most when a batch lists the data store's
/// parent directories: a larger directory is not listed (asking about each
/// candidate's directories is cheaper then).
const LISTED_PER_CANDIDATE: usize = 4;

/// The names in the data store's `executions` and `raw` directories, read
/// once for a batch, so a batch asks the file system only about the
/// directories that are there. (A stat of every directory a candidate may
/// own, three per echo execution, most of them absent, took more of the
/// pruner thread than anything else: more CPU than the deletes cost the
/// committer.) `None`: not listed (too many names, or unreadable): ask.
#[derive(Default)]
struct ListedParents {
    executions: Option<(PathBuf, HashSet<OsString>)>,
    raw: Option<(PathBuf, HashSet<OsString>)>,
}

impl ListedParents {
    /// Lists both under `root`, each only if it holds at most `cap` names.
    fn read(root: &Path, cap: usize) -> Self {
        let list = |name: &str| {
            let dir = root.join(name);
            list_names(&dir, cap).map(|names| (dir, names))
        };
        ListedParents {
            executions: list(EXECUTIONS_DIR),
            raw: list(RAW_DIR),
        }
    }

    /// False only for a directory of a listed parent whose name was not in it.
    fn may_hold(&self, dir: &Path) -> bool {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return true;
        };
        [&self.executions, &self.raw]
            .into_iter()
            .flatten()
            .find(|(listed, _)| listed == parent)
            .is_none_or(|(_, names)| names.contains(name))
    }
}

/// The names in `dir` (none if it does not exist); `None` if it holds more
/// than `cap` or cannot be read.
fn list_names(dir: &Path, cap: usize) -> Option<HashSet<OsString>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(HashSet::new()),
        Err(_) => return None,
    };
    let mut names = HashSet::new();
    for entry in entries {
        if names.len() == cap {
            return None;
        }
        names.insert(entry.ok()?.file_name());
    }
    Some(names)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_parent_answers_for_its_names_and_a_large_one_is_asked_about() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join(EXECUTIONS_DIR).join("kept")).unwrap();
        std::fs::create_dir_all(root.join(RAW_DIR).join("raw-kept")).unwrap();
        let listed = ListedParents::read(root, 8);
        assert!(listed.may_hold(&root.join(EXECUTIONS_DIR).join("kept")));
        assert!(!listed.may_hold(&root.join(EXECUTIONS_DIR).join("gone")));
        assert!(listed.may_hold(&root.join(RAW_DIR).join("raw-kept")));
        assert!(!listed.may_hold(&root.join(RAW_DIR).join("raw-gone")));
        assert!(listed.may_hold(&root.join("elsewhere").join("gone")), "not listed: ask");
        let too_many = ListedParents::read(root, 0);
        assert!(
            too_many.may_hold(&root.join(EXECUTIONS_DIR).join("gone")),
            "over the cap: ask"
        );
        std::fs::remove_dir_all(root.join(RAW_DIR)).unwrap();
        let no_raw = ListedParents::read(root, 8);
        assert!(
            !no_raw.may_hold(&root.join(RAW_DIR).join("raw-kept")),
            "a parent that is not there holds nothing"
        );
    }
}
