//! The per-round [`TaskExecutionContext`]: built fresh for every plugin call
//! (docs/semantics.md#plugin-state); it buffers what the plugin writes (state, outputs, error
//! document, raw events, token operations) so the engine can commit a
//! round's effects atomically, or drop them when the round fails.

use std::cell::{OnceCell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use kozmo_interface::literals::LiteralMap;
use kozmo_interface::metadata::{
    ExecutionIdRecord, MetadataRecord, NamespacedName, NodeExecutionIdentifier, OwnerReference,
    TaskExecutionIdentifier, TaskExecutionMetadata, WorkflowExecutionIdentifier,
};
use kozmo_interface::task::TaskTemplate;
use kozmo_interface::{
    Catalog, DataStore, EventsRecorder, ExecutionError, InputReader, OutputWriter, PhaseInfo, PluginStateReader,
    PluginStateWriter, ResourceManager, Result, SecretManager, SignalAsync, TaskExecutionContext, TaskReader,
};

use super::ExecutionScheduler;
use crate::catalog::StoreCatalog;
use crate::datastore::FsDataStore;
use crate::model::{ErrorDocument, ExecutionSpec};
use crate::resources::{ResourceBackend, TaskResources, TokenOps, TokenOwner};
use crate::secrets::HostSecrets;

/// The interruptible-failure threshold given to plugins
/// (docs/semantics.md#interruptible).
pub const INTERRUPTIBLE_FAILURE_THRESHOLD: i32 = -1;

/// Default limit on output documents: 2 MiB, the original's default
/// (docs/semantics.md#output-validation).
pub const MAX_DATASET_SIZE_BYTES: i64 = 2 * 1024 * 1024;

/// Where one attempt reads and writes (docs/semantics.md#paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptPaths {
    /// `<data>/executions/<id>`.
    pub input_prefix: String,
    /// `<input prefix>/inputs.json`.
    pub input_path: String,
    /// `<input prefix>/task.json`.
    pub task_path: String,
    /// `<input prefix>/<attempt>`.
    pub output_prefix: String,
    /// `<data>/raw/<generated name>`.
    pub raw_output_prefix: String,
    /// `<raw>/_checkpoints`.
    pub checkpoint_prefix: String,
    /// The previous attempt's checkpoint prefix (empty for attempt 0).
    pub previous_checkpoint_prefix: String,
}

/// The generated name of an attempt (docs/semantics.md#generated-names):
/// owner name = execution id.
pub fn generated_name(max_len: u32, id: &str, node_id: &str, attempt: u32) -> String {
    let attempt = attempt.to_string();
    kozmo_interface::encoding::fixed_length_unique_id_for_parts(
        max_len as usize,
        &[id, node_id, attempt.as_str()],
        kozmo_interface::encoding::Algorithm::Fnv32,
    )
    .unwrap_or_else(|e| {
        // Only reachable with max_len < 8, which loading rejects.
        log::error!("generated name for {id}: {e}");
        format!("{id}-{node_id}-{attempt}")
    })
}

/// The data store's directory holding one directory per execution.
pub const EXECUTIONS_DIR: &str = "executions";

/// The data store's directory holding each attempt's raw outputs, by
/// generated name.
pub const RAW_DIR: &str = "raw";

/// Directory of an execution's inputs.
pub fn execution_dir(root: &Path, id: &str) -> String {
    root.join(EXECUTIONS_DIR).join(id).to_string_lossy().into_owned()
}

impl AttemptPaths {
    /// The paths of `attempt` of execution `id`.
    pub fn new(root: &Path, id: &str, node_id: &str, attempt: u32, name_max_len: u32) -> Self {
        let dir = execution_dir(root, id);
        let raw_of = |a: u32| {
            root.join(RAW_DIR)
                .join(generated_name(name_max_len, id, node_id, a))
                .to_string_lossy()
                .into_owned()
        };
        let raw = raw_of(attempt);
        AttemptPaths {
            input_path: format!("{dir}/inputs.json"),
            task_path: format!("{dir}/task.json"),
            output_prefix: format!("{dir}/{attempt}"),
            input_prefix: dir,
            checkpoint_prefix: format!("{raw}/_checkpoints"),
            raw_output_prefix: raw,
            previous_checkpoint_prefix: if attempt == 0 {
                String::new()
            } else {
                format!("{}/_checkpoints", raw_of(attempt - 1))
            },
        }
    }
}

/// Builds the metadata record of an attempt.
pub fn metadata_record(
    id: &str,
    spec: &ExecutionSpec,
    attempt: u32,
    generated_name: String,
    interruptible: bool,
) -> MetadataRecord {
    let m = &spec.metadata;
    let namespace = format!("{}-{}", m.project, m.domain);
    let node_id = spec.node_id().to_string();
    MetadataRecord {
        owner_id: NamespacedName {
            namespace: namespace.clone(),
            name: id.to_string(),
        },
        task_execution_id: ExecutionIdRecord {
            generated_name,
            id: TaskExecutionIdentifier {
                task_id: spec.template.id.clone(),
                node_execution_id: NodeExecutionIdentifier {
                    node_id: node_id.clone(),
                    execution_id: WorkflowExecutionIdentifier {
                        project: m.project.clone(),
                        domain: m.domain.clone(),
                        name: id.to_string(),
                    },
                },
                retry_attempt: attempt,
            },
            unique_node_id: node_id,
        },
        namespace,
        owner_reference: OwnerReference {
            kind: "Execution".into(),
            name: id.to_string(),
            uid: id.to_string(),
        },
        overrides: m.overrides.clone(),
        labels: m.labels.clone(),
        max_attempts: spec.max_attempts(),
        annotations: m.annotations.clone(),
        service_account: m.service_account.clone(),
        security_context: m.security_context.clone(),
        interruptible,
        platform_resources: Default::default(),
        interruptible_failure_threshold: INTERRUPTIBLE_FAILURE_THRESHOLD,
        environment_variables: m.env.clone(),
    }
}

/// Requests a new round of one execution.
pub struct ExecSignal {
    pub(crate) sched: Weak<ExecutionScheduler>,
    pub(crate) id: String,
}

impl SignalAsync for ExecSignal {
    fn signal(&self) {
        if let Some(s) = self.sched.upgrade() {
            s.enqueue(&self.id);
        }
    }
}

/// What a plugin did to its state in a round (last call wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    /// `put(version, bytes)`.
    Put(u8, Vec<u8>),
    /// `reset()`.
    Reset,
}

/// Everything a round context buffered.
#[derive(Debug, Default)]
pub struct RoundWrites {
    /// State change.
    pub state: Option<StateWrite>,
    /// Outputs written.
    pub outputs: Option<LiteralMap>,
    /// Error document written.
    pub error_document: Option<ErrorDocument>,
    /// Raw events recorded.
    pub events: Vec<PhaseInfo>,
    /// Token operations.
    pub tokens: TokenOps,
}

/// Shared services a round context borrows.
pub struct Services<'a> {
    /// Secrets.
    pub secrets: &'a HostSecrets,
    /// Data store.
    pub data: &'a FsDataStore,
    /// Catalog.
    pub catalog: &'a StoreCatalog,
    /// Scheduler (for signals).
    pub sched: &'a Arc<ExecutionScheduler>,
    /// Resource manager backend.
    pub resources: &'a Arc<dyn ResourceBackend>,
}

/// Which attempt of which execution a context is for: everything the
/// metadata record, the paths and the resource proxy are made of. Those are
/// built on first use only (most plugins read few of them in a round).
pub struct AttemptInfo<'a> {
    /// Execution id.
    pub id: &'a str,
    /// Its spec (inputs apart).
    pub spec: &'a ExecutionSpec,
    /// Its inputs, as canonical JSON.
    pub inputs: &'a str,
    /// Attempt.
    pub attempt: u32,
    /// The plugin's generated-name limit.
    pub name_max_len: u32,
    /// The attempt's generated name.
    pub generated_name: &'a str,
    /// Interruptible as given to the plugin (docs/semantics.md#interruptible).
    pub interruptible: bool,
    /// The plugin's id (resource namespaces).
    pub plugin_id: &'a str,
}

/// The context of one plugin call.
pub struct RoundContext<'a> {
    services: Services<'a>,
    at: AttemptInfo<'a>,
    metadata: OnceCell<MetadataRecord>,
    paths: OnceCell<AttemptPaths>,
    resources: OnceCell<TaskResources>,
    state_version: u8,
    state_bytes: Option<Vec<u8>>,
    state_write: RefCell<Option<StateWrite>>,
    outputs: RefCell<Option<LiteralMap>>,
    error_document: RefCell<Option<ErrorDocument>>,
    events: RefCell<Vec<PhaseInfo>>,
    files: &'a AtomicBool,
}

impl<'a> RoundContext<'a> {
    /// The execution's inputs.
    fn inputs(&self) -> LiteralMap {
        super::parse_inputs(self.at.id, self.at.inputs)
    }

    /// A context for a call on attempt `at`.
    pub fn new(
        services: Services<'a>,
        at: AttemptInfo<'a>,
        state: (u8, Option<Vec<u8>>),
        files: &'a AtomicBool,
    ) -> Self {
        RoundContext {
            services,
            at,
            metadata: OnceCell::new(),
            paths: OnceCell::new(),
            resources: OnceCell::new(),
            state_version: state.0,
            state_bytes: state.1,
            state_write: RefCell::new(None),
            outputs: RefCell::new(None),
            error_document: RefCell::new(None),
            events: RefCell::new(Vec::new()),
            files,
        }
    }

    fn paths(&self) -> &AttemptPaths {
        self.paths.get_or_init(|| {
            let a = &self.at;
            AttemptPaths::new(
                self.services.data.root(),
                a.id,
                a.spec.node_id(),
                a.attempt,
                a.name_max_len,
            )
        })
    }

    fn resources(&self) -> &TaskResources {
        self.resources.get_or_init(|| {
            let a = &self.at;
            TaskResources::new(
                self.services.resources.clone(),
                a.plugin_id,
                &a.spec.metadata.project,
                &a.spec.metadata.domain,
                TokenOwner {
                    execution_id: a.id.to_string(),
                    attempt: a.attempt,
                },
            )
        })
    }

    /// Writes `inputs.json` and `task.json` the first time a plugin asks
    /// for their paths (most plugins read inputs through the reader).
    fn ensure_files(&self) {
        if self.files.load(Ordering::Acquire) {
            return;
        }
        let write = |path: &str, bytes: serde_json::Result<Vec<u8>>| -> Result<()> {
            if self.services.data.head(path)?.is_none() {
                self.services.data.write_raw(path, &bytes?)?;
            }
            Ok(())
        };
        let paths = self.paths();
        let r = write(&paths.input_path, serde_json::to_vec(&self.inputs()))
            .and_then(|_| write(&paths.task_path, serde_json::to_vec(&self.at.spec.template)));
        match r {
            Ok(()) => self.files.store(true, Ordering::Release),
            Err(e) => log::warn!("execution {}: cannot write its input files: {e}", self.at.id),
        }
    }

    /// Takes what the plugin wrote.
    pub fn into_buffered(self) -> RoundWrites {
        RoundWrites {
            state: self.state_write.into_inner(),
            outputs: self.outputs.into_inner(),
            error_document: self.error_document.into_inner(),
            events: self.events.into_inner(),
            tokens: self.resources.into_inner().map(|r| r.take_ops()).unwrap_or_default(),
        }
    }
}

impl TaskExecutionContext for RoundContext<'_> {
    fn resource_manager(&self) -> &dyn ResourceManager {
        self.resources()
    }
    fn secret_manager(&self) -> &dyn SecretManager {
        self.services.secrets
    }
    fn task_refresh_indicator(&self) -> Arc<dyn SignalAsync> {
        Arc::new(ExecSignal {
            sched: Arc::downgrade(self.services.sched),
            id: self.at.id.to_string(),
        })
    }
    fn max_dataset_size_bytes(&self) -> i64 {
        MAX_DATASET_SIZE_BYTES
    }
    fn data_store(&self) -> &dyn DataStore {
        self.services.data
    }
    fn plugin_state_reader(&self) -> &dyn PluginStateReader {
        self
    }
    fn task_reader(&self) -> &dyn TaskReader {
        self
    }
    fn input_reader(&self) -> &dyn InputReader {
        self
    }
    fn task_execution_metadata(&self) -> &dyn TaskExecutionMetadata {
        self.metadata.get_or_init(|| {
            let a = &self.at;
            metadata_record(a.id, a.spec, a.attempt, a.generated_name.to_string(), a.interruptible)
        })
    }
    fn output_writer(&self) -> &dyn OutputWriter {
        self
    }
    fn plugin_state_writer(&self) -> &dyn PluginStateWriter {
        self
    }
    fn catalog(&self) -> &dyn Catalog {
        self.services.catalog
    }
    fn events_recorder(&self) -> &dyn EventsRecorder {
        self
    }
}

impl PluginStateReader for RoundContext<'_> {
    fn state_version(&self) -> u8 {
        self.state_version
    }
    fn get_bytes(&self) -> Result<(u8, Option<Vec<u8>>)> {
        // Always the state persisted at the start of the round, any number
        // of times (docs/semantics.md#plugin-state).
        Ok((self.state_version, self.state_bytes.clone()))
    }
}

impl PluginStateWriter for RoundContext<'_> {
    fn put_bytes(&self, version: u8, bytes: Vec<u8>) -> Result<()> {
        *self.state_write.borrow_mut() = Some(StateWrite::Put(version, bytes));
        Ok(())
    }
    fn reset(&self) -> Result<()> {
        *self.state_write.borrow_mut() = Some(StateWrite::Reset);
        Ok(())
    }
}

impl TaskReader for RoundContext<'_> {
    fn read(&self) -> Result<TaskTemplate> {
        Ok(self.at.spec.template.clone())
    }
    fn path(&self) -> Result<String> {
        self.ensure_files();
        Ok(self.paths().task_path.clone())
    }
}

impl InputReader for RoundContext<'_> {
    fn input_prefix(&self) -> String {
        self.ensure_files();
        self.paths().input_prefix.clone()
    }
    fn input_path(&self) -> String {
        self.ensure_files();
        self.paths().input_path.clone()
    }
    fn get(&self) -> Result<LiteralMap> {
        Ok(self.inputs())
    }
}

impl OutputWriter for RoundContext<'_> {
    fn output_prefix(&self) -> String {
        self.paths().output_prefix.clone()
    }
    fn raw_output_prefix(&self) -> String {
        self.paths().raw_output_prefix.clone()
    }
    fn checkpoint_prefix(&self) -> String {
        self.paths().checkpoint_prefix.clone()
    }
    fn previous_checkpoint_prefix(&self) -> String {
        self.paths().previous_checkpoint_prefix.clone()
    }
    fn put_outputs(&self, outputs: LiteralMap) -> Result<()> {
        *self.outputs.borrow_mut() = Some(outputs);
        Ok(())
    }
    fn put_error(&self, error: ExecutionError, recoverable: bool) -> Result<()> {
        *self.error_document.borrow_mut() = Some(ErrorDocument { error, recoverable });
        Ok(())
    }
}

impl EventsRecorder for RoundContext<'_> {
    fn record_raw(&self, info: &PhaseInfo) -> Result<()> {
        self.events.borrow_mut().push(info.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_and_paths_follow_section_2() {
        assert_eq!(generated_name(50, "name", "n1", 1), "name-n1-1");
        assert_eq!(generated_name(8, "name", "n1", 1), "fpmmhh6q");
        let p = AttemptPaths::new(Path::new("/d/data"), "name", "n1", 1, 8);
        assert_eq!(p.raw_output_prefix, "/d/data/raw/fpmmhh6q");
        assert_eq!(p.checkpoint_prefix, "/d/data/raw/fpmmhh6q/_checkpoints");
        assert_eq!(p.output_prefix, "/d/data/executions/name/1");
        let prev = generated_name(8, "name", "n1", 0);
        assert_eq!(p.previous_checkpoint_prefix, format!("/d/data/raw/{prev}/_checkpoints"));
        let p0 = AttemptPaths::new(Path::new("/d/data"), "name", "n1", 0, 50);
        assert_eq!(p0.previous_checkpoint_prefix, "");
        assert_eq!(p0.input_path, "/d/data/executions/name/inputs.json");
    }
}
