//! What an operator inspects beyond an execution's status (the daemon's
//! console and its JSON endpoints): who holds and who waits in each
//! resource namespace, and the data store directories an execution owns
//! (the files its plugin wrote there: a shell task's stdout and stderr).
//! Reads only.

use std::path::{Path, PathBuf};

use super::{EngineError, EngineHandle};
use crate::resources::{NamespaceMembers, NamespaceUsage};
use crate::store::PruneCandidate;

impl EngineHandle {
    /// Every resource namespace with its quota, tokens in use and waiters.
    pub fn resource_usage(&self) -> Vec<NamespaceUsage> {
        self.core.resources.usage()
    }

    /// Who holds and who waits in each namespace (empty for a backend that
    /// cannot tell).
    pub fn resource_members(&self) -> Vec<NamespaceMembers> {
        self.core.resources.members()
    }

    /// The data store's root directory.
    pub fn data_root(&self) -> &Path {
        self.core.data.root()
    }

    /// The data store directories `id` owns that exist: its inputs and
    /// outputs and each attempt's raw output directory (as retention
    /// removes them: [`EngineHandle::blob_dirs`]).
    pub fn data_dirs(&self, id: &str) -> Result<Vec<PathBuf>, EngineError> {
        let rec = self.core.store.get_execution(id)?.ok_or(EngineError::NotFound)?;
        Ok(self.blob_dirs(&PruneCandidate {
            id: rec.id,
            spec_json: rec.spec_json,
            task_type: rec.task_type,
            plugin_id: rec.plugin_id,
            attempt: rec.state.attempt,
            phase: rec.state.phase,
            updated_at_ms: rec.state.updated_at_ms,
        }))
    }
}
