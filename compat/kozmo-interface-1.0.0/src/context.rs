//! The contexts the host hands to plugins: [`TaskExecutionContext`] for
//! each call on a task, [`SetupContext`] for the loader; and the small
//! services they carry.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::io::{DataStore, InputReader, OutputWriter, TaskReader};
use crate::literals::LiteralMap;
use crate::metadata::{NamespacedName, TaskExecutionMetadata};
use crate::metrics::MetricsScope;
use crate::resource_manager::{ResourceManager, ResourceRegistrar};
use crate::state::{PluginStateReader, PluginStateWriter};
use crate::task::Identifier;
use crate::{PhaseInfo, Result};

/// Reads secrets; values never appear in the host's logs or events.
pub trait SecretManager {
    /// The secret named `key`.
    fn get(&self, key: &str) -> Result<String>;
}

/// What identifies a cached result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CatalogKey {
    /// The task.
    pub identifier: Identifier,
    /// The task's cache version.
    pub cache_version: String,
    /// The inputs the result was computed from.
    pub inputs: LiteralMap,
}

/// The result cache.
pub trait Catalog {
    /// The cached outputs for `key`, if any.
    fn get(&self, key: &CatalogKey) -> Result<Option<LiteralMap>>;
    /// Stores outputs for `key`.
    fn put(&self, key: &CatalogKey, outputs: &LiteralMap) -> Result<()>;
}

/// Records extra events in the current round (sent before the round's own).
pub trait EventsRecorder {
    /// Records an event for `info`.
    fn record_raw(&self, info: &PhaseInfo) -> Result<()>;
}

/// Asks the host to evaluate the task again soon (fire and forget). Plugins
/// may keep it and call it from their own threads.
pub trait SignalAsync: Send + Sync {
    /// Requests a new round.
    fn signal(&self);
}

/// Asks the host to evaluate an owner again (given to loaders).
pub trait EnqueueOwner: Send + Sync {
    /// Requests a new round for the executions owned by `owner`.
    fn enqueue(&self, owner: &NamespacedName) -> Result<()>;
}

/// Everything a plugin call on a task can reach.
pub trait TaskExecutionContext {
    /// Quota tokens.
    fn resource_manager(&self) -> &dyn ResourceManager;
    /// Secrets.
    fn secret_manager(&self) -> &dyn SecretManager;
    /// A handle that requests a new round.
    fn task_refresh_indicator(&self) -> Arc<dyn SignalAsync>;
    /// Largest output document the host accepts, in bytes.
    fn max_dataset_size_bytes(&self) -> i64;
    /// Blob storage.
    fn data_store(&self) -> &dyn DataStore;
    /// The state persisted by earlier rounds.
    fn plugin_state_reader(&self) -> &dyn PluginStateReader;
    /// The task definition.
    fn task_reader(&self) -> &dyn TaskReader;
    /// The inputs.
    fn input_reader(&self) -> &dyn InputReader;
    /// Who and what this execution is.
    fn task_execution_metadata(&self) -> &dyn TaskExecutionMetadata;
    /// Output locations and recording.
    fn output_writer(&self) -> &dyn OutputWriter;
    /// State for later rounds.
    fn plugin_state_writer(&self) -> &dyn PluginStateWriter;
    /// The result cache.
    fn catalog(&self) -> &dyn Catalog;
    /// Extra events.
    fn events_recorder(&self) -> &dyn EventsRecorder;
    // kozmo-abi-append: task-execution-context
    // Services added after 1.0 go here, each with a default body returning
    // `crate::abi::needs_newer_host(..)`, so hosts and test contexts that
    // predate them still compile and answer clearly.
}

/// What a plugin loader can reach.
pub trait SetupContext {
    /// A handle that re-evaluates an owner.
    fn enqueue_owner(&self) -> Arc<dyn EnqueueOwner>;
    /// The kind of owner the host drives (e.g. `Execution`).
    fn owner_kind(&self) -> String;
    /// The plugin's metrics scope.
    fn metrics_scope(&self) -> &dyn MetricsScope;
    /// Secrets.
    fn secret_manager(&self) -> &dyn SecretManager;
    /// Quota registration.
    fn resource_registrar(&self) -> &dyn ResourceRegistrar;
}
