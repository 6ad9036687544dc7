//! In-memory host services for testing plugins without a daemon.
//!
//! * [`TestTaskContext`] implements [`TaskExecutionContext`] and records
//!   what a plugin does (outputs, errors, state, events, data-store writes,
//!   allocations); configure it with named `with_*` setters.
//! * [`TestSetupContext`] does the same for loaders; the quotas a loader
//!   registers land in its [`TestResources`], which the task contexts it
//!   makes ([`TestSetupContext::task_context`]) allocate against, shared.
//! * [`drive`] / [`Driver`] run a plugin's rounds the way the daemon does
//!   (a delay between rounds, at once after a signal, `finalize` after a
//!   terminal phase, `abort` + `finalize` on request or timeout) and
//!   capture its logs ([`capture_logs`]).
//!
//! Plugin authors use them in unit tests; Kozmo's own tests use them across
//! the FFI boundary too.
//!
//! ```
//! use kozmo_interface::testing::TestTaskContext;
//! use kozmo_interface::{Literal, OutputWriter, TaskExecutionContext, InputReader};
//!
//! let ctx = TestTaskContext::new().with_input("x", Literal::Integer(1));
//! let inputs = ctx.input_reader().get().unwrap();
//! ctx.output_writer().put_outputs(inputs).unwrap();
//! assert_eq!(ctx.outputs().unwrap()["x"], Literal::Integer(1));
//! ```
//!
//! A whole plugin, its loader's quota shared by two tasks:
//!
//! ```
//! use kozmo_interface::kit::TaskContextExt;
//! use kozmo_interface::testing::{Driver, Outcome, TestSetupContext};
//! use kozmo_interface::{
//!     load_plugin, Phase, PhaseInfo, Plugin, PluginEntry, PluginLoader, ResourceNamespace, Result,
//!     TaskExecutionContext, Transition,
//! };
//!
//! struct OneAtATime;
//! impl Plugin for OneAtATime {
//!     fn id(&self) -> &str { "one" }
//!     fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
//!         if let Some(wait) = ctx.allocate(&ResourceNamespace::new("slot"), "busy")? {
//!             return Ok(Transition::ephemeral(wait));
//!         }
//!         Ok(Transition::ephemeral(PhaseInfo::running(0, None)))
//!     }
//!     fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
//!         ctx.release(&ResourceNamespace::new("slot"))
//!     }
//! }
//! let entry = PluginEntry {
//!     id: "one".into(),
//!     registered_task_types: vec!["one".into()],
//!     load_plugin: PluginLoader::new(|setup| {
//!         setup.resource_registrar().register_resource_quota(&ResourceNamespace::new("slot"), 1)?;
//!         Ok(Box::new(OneAtATime))
//!     }),
//!     is_default: false,
//! };
//!
//! let setup = TestSetupContext::new();
//! let plugin = load_plugin(&setup, &entry).unwrap();
//! let (a, b) = (setup.task_context(), setup.task_context());
//! assert_eq!(plugin.handle(&a).unwrap().info().phase(), Phase::RUNNING); // a holds the slot
//! assert_eq!(plugin.handle(&b).unwrap().info().phase(), Phase::WAITING_FOR_RESOURCES);
//! // The daemon aborts `a`: abort, then finalize, which releases the slot.
//! let run = Driver::new().abort_after_rounds(1).run(&*plugin, &a).unwrap();
//! assert_eq!(run.outcome, Outcome::Aborted);
//! assert!(setup.resources().held("slot").is_empty());
//! assert_eq!(plugin.handle(&b).unwrap().info().phase(), Phase::RUNNING);
//! ```

mod driver;
mod logs;
mod resources;

pub use driver::{drive, DriveError, Driver, Outcome, Run};
pub use logs::{capture_logs, install_log_capture, LogRecord};
pub use resources::{Allocation, TestResources};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::context::{
    Catalog, CatalogKey, EnqueueOwner, EventsRecorder, SecretManager, SetupContext, SignalAsync, TaskExecutionContext,
};
use crate::io::{DataStore, InputReader, OutputWriter, TaskReader};
use crate::literals::{Literal, LiteralMap};
use crate::metadata::{MetadataRecord, NamespacedName, TaskExecutionMetadata};
use crate::metrics::{Counter, Gauge, Histogram, MetricSink, MetricsScope, PrefixedScope};
use crate::resource_manager::{ResourceManager, ResourceRegistrar};
use crate::state::{PluginStateReader, PluginStateWriter};
use crate::task::{TaskFile, TaskTemplate};
use crate::{
    AllocationStatus, ExecutionError, PhaseInfo, PluginError, ResourceConstraintsSpec, ResourceNamespace, Result,
};

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts refresh signals.
#[derive(Debug, Default)]
pub struct SignalCounter(AtomicU64);

impl SignalCounter {
    /// How many times `signal` was called.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl SignalAsync for SignalCounter {
    fn signal(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A [`TaskExecutionContext`] kept in memory. Configure it with the
/// `with_*` builders; read what the plugin did with the accessors.
pub struct TestTaskContext {
    /// Template returned by the task reader.
    pub template: TaskTemplate,
    /// Path returned by the task reader (`Err` if `None`).
    pub template_path: Option<String>,
    /// Inputs returned by the input reader.
    pub inputs: LiteralMap,
    /// Metadata.
    pub metadata: MetadataRecord,
    /// Secrets by key.
    pub secrets: BTreeMap<String, String>,
    /// `(input_prefix, input_path, output_prefix, raw_output_prefix, checkpoint_prefix, previous_checkpoint_prefix)`;
    /// prefer the named setters ([`TestTaskContext::with_raw_output_prefix`], ...).
    pub paths: [String; 6],
    /// Value of `max_dataset_size_bytes`.
    pub max_dataset_size_bytes: i64,
    /// Quota per namespace overriding the shared [`TestResources`]' for this
    /// context only (empty by default; prefer [`TestTaskContext::with_quota`],
    /// which sets the shared quota).
    pub quotas: BTreeMap<String, usize>,
    /// A resource manager replacing the built-in one (e.g. one shared by
    /// several contexts, to test tasks competing for a quota).
    pub resource_manager: Option<Arc<dyn ResourceManager + Send + Sync>>,
    state: Mutex<(u8, Option<Vec<u8>>)>,
    pending_state: Mutex<Option<(u8, Option<Vec<u8>>)>>,
    outputs: Mutex<Option<LiteralMap>>,
    error: Mutex<Option<(ExecutionError, bool)>>,
    events: Mutex<Vec<PhaseInfo>>,
    blobs: Mutex<BTreeMap<String, Vec<u8>>>,
    catalog: Mutex<Vec<(CatalogKey, LiteralMap)>>,
    resources: Arc<TestResources>,
    /// The directory under which the default raw output prefix lies
    /// (removed when the context is dropped).
    scratch: PathBuf,
    signals: Arc<SignalCounter>,
}

static CONTEXTS: AtomicU64 = AtomicU64::new(0);

/// A generated name no other context of this process has: `t<time><n>-n0-0`.
fn unique_generated_name() -> String {
    let n = CONTEXTS.fetch_add(1, Ordering::Relaxed);
    let ms = crate::kit::now_ms();
    format!("t{ms:x}{n:x}-n0-0")
}

/// The raw output prefix a context uses by default: `file://<scratch>/raw/<name>`.
fn default_raw(scratch: &std::path::Path, name: &str) -> String {
    format!("file://{}/raw/{name}", scratch.display())
}

impl Drop for TestTaskContext {
    fn drop(&mut self) {
        // Only the context's own scratch directory, and only if a plugin
        // created it.
        if self.scratch.exists() {
            let _ = std::fs::remove_dir_all(&self.scratch);
        }
    }
}

impl Default for TestTaskContext {
    fn default() -> Self {
        Self::new()
    }
}

impl TestTaskContext {
    /// An empty context with generated name `test-exec-n0-0`. Its raw
    /// output prefix is a local directory, as the daemon's is:
    /// `file://<temp dir>/kozmo-test-<pid>-<n>/raw/<generated name>`, unique
    /// to this context, not created (plugins create what they use), and
    /// removed with everything in it when the context is dropped. Every
    /// other path is `mem://...` (the data store is in memory).
    ///
    /// ```
    /// use kozmo_interface::kit::TaskContextExt;
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::OutputWriter;
    ///
    /// let ctx = TestTaskContext::new();
    /// assert!(ctx.raw_output_prefix().starts_with("file:///"));
    /// assert!(ctx.raw_output_prefix().ends_with("/raw/test-exec-n0-0"));
    /// let dir = ctx.raw_output_dir().unwrap();
    /// std::fs::create_dir_all(&dir).unwrap();
    /// drop(ctx);
    /// assert!(!dir.exists(), "removed with the context");
    /// ```
    pub fn new() -> Self {
        let mut metadata = MetadataRecord {
            namespace: "test-namespace".into(),
            max_attempts: 1,
            ..Default::default()
        };
        metadata.task_execution_id.generated_name = "test-exec-n0-0".into();
        metadata.task_execution_id.unique_node_id = "n0".into();
        let scratch = std::env::temp_dir().join(format!(
            "kozmo-test-{}-{}",
            std::process::id(),
            CONTEXTS.fetch_add(1, Ordering::Relaxed)
        ));
        let raw = default_raw(&scratch, "test-exec-n0-0");
        TestTaskContext {
            template: TaskTemplate::default(),
            template_path: Some("mem://task.json".into()),
            inputs: LiteralMap::new(),
            metadata,
            secrets: BTreeMap::new(),
            paths: [
                "mem://inputs".into(),
                "mem://inputs/inputs.json".into(),
                "mem://outputs".into(),
                raw.clone(),
                format!("{raw}/_checkpoints"),
                String::new(),
            ],
            max_dataset_size_bytes: 2 * 1024 * 1024,
            quotas: BTreeMap::new(),
            resource_manager: None,
            state: Mutex::new((0, None)),
            pending_state: Mutex::new(None),
            outputs: Mutex::new(None),
            error: Mutex::new(None),
            events: Mutex::new(Vec::new()),
            blobs: Mutex::new(BTreeMap::new()),
            catalog: Mutex::new(Vec::new()),
            resources: TestResources::new(),
            scratch,
            signals: Arc::new(SignalCounter::default()),
        }
    }

    /// Adds an input.
    pub fn with_input(mut self, name: &str, value: Literal) -> Self {
        self.inputs.insert(name.to_string(), value);
        self
    }

    /// Sets the task template.
    pub fn with_template(mut self, template: TaskTemplate) -> Self {
        self.template = template;
        self
    }

    /// Adds a secret.
    pub fn with_secret(mut self, key: &str, value: &str) -> Self {
        self.secrets.insert(key.to_string(), value.to_string());
        self
    }

    /// Sets the state as if an earlier round had put it.
    pub fn with_state(self, version: u8, bytes: Vec<u8>) -> Self {
        *lock(&self.state) = (version, Some(bytes));
        self
    }

    /// Sets all inputs at once (replacing any).
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::{Literal, LiteralMap};
    ///
    /// let inputs = LiteralMap::from([("n".to_string(), Literal::Integer(3))]);
    /// let ctx = TestTaskContext::new().with_inputs(inputs.clone());
    /// assert_eq!(ctx.inputs, inputs);
    /// ```
    pub fn with_inputs(mut self, inputs: LiteralMap) -> Self {
        self.inputs = inputs;
        self
    }

    /// Sets the template and the inputs of a task file (what `kozmo submit`
    /// sends), e.g. one of the daemon's examples.
    ///
    /// ```
    /// use kozmo_interface::serde_json;
    /// use kozmo_interface::task::TaskFile;
    /// use kozmo_interface::testing::TestTaskContext;
    ///
    /// let file: TaskFile = serde_json::from_str(r#"{"type": "echo", "inputs": {"x": 1}}"#).unwrap();
    /// let ctx = TestTaskContext::new().with_task_file(file);
    /// assert_eq!(ctx.template.task_type, "echo");
    /// assert_eq!(ctx.inputs.len(), 1);
    /// ```
    pub fn with_task_file(mut self, file: TaskFile) -> Self {
        self.template = file.template;
        self.inputs = file.inputs;
        self
    }

    /// Sets the quota of a namespace in this context's [`TestResources`]
    /// (shared with every context given the same resources).
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    ///
    /// let ctx = TestTaskContext::new().with_quota("slots", 1);
    /// assert_eq!(ctx.resources().quota("slots"), Some(1));
    /// ```
    pub fn with_quota(self, namespace: &str, quota: usize) -> Self {
        self.resources.set_quota(namespace, quota);
        self
    }

    /// Allocates against `resources` (shared quotas: several contexts given
    /// the same `Arc` compete for the same slots, as tasks do in the
    /// daemon). [`TestSetupContext::task_context`] does this with the
    /// quotas the loader registered.
    ///
    /// ```
    /// use kozmo_interface::testing::{TestResources, TestTaskContext};
    ///
    /// let shared = TestResources::new().with_quota("slots", 1);
    /// let a = TestTaskContext::new().with_resources(shared.clone());
    /// let b = TestTaskContext::new().with_resources(shared.clone());
    /// assert!(std::sync::Arc::ptr_eq(&a.resources(), &b.resources()));
    /// ```
    pub fn with_resources(mut self, resources: Arc<TestResources>) -> Self {
        self.resources = resources;
        self
    }

    /// The resources this context allocates against.
    pub fn resources(&self) -> Arc<TestResources> {
        self.resources.clone()
    }

    /// Sets the input prefix (and the input path `<prefix>/inputs.json`).
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::InputReader;
    ///
    /// let ctx = TestTaskContext::new().with_input_prefix("/data/executions/e1");
    /// assert_eq!(ctx.input_path(), "/data/executions/e1/inputs.json");
    /// ```
    pub fn with_input_prefix(mut self, prefix: &str) -> Self {
        self.paths[0] = prefix.to_string();
        self.paths[1] = format!("{}/inputs.json", prefix.trim_end_matches('/'));
        self
    }

    /// Sets the output prefix.
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::OutputWriter;
    ///
    /// let ctx = TestTaskContext::new().with_output_prefix("/data/executions/e1/0");
    /// assert_eq!(ctx.output_prefix(), "/data/executions/e1/0");
    /// ```
    pub fn with_output_prefix(mut self, prefix: &str) -> Self {
        self.paths[2] = prefix.to_string();
        self
    }

    /// Sets the checkpoint prefix (set it after [`TestTaskContext::with_raw_output_prefix`],
    /// which puts it under the raw prefix).
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::OutputWriter;
    ///
    /// let ctx = TestTaskContext::new()
    ///     .with_raw_output_prefix("/data/raw/a-n0-1")
    ///     .with_checkpoint_prefix("/data/checkpoints/a-n0-1");
    /// assert_eq!(ctx.checkpoint_prefix(), "/data/checkpoints/a-n0-1");
    /// ```
    pub fn with_checkpoint_prefix(mut self, prefix: &str) -> Self {
        self.paths[4] = prefix.to_string();
        self
    }

    /// Sets the previous attempt's checkpoint prefix (empty by default, as
    /// for a first attempt).
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::OutputWriter;
    ///
    /// let ctx = TestTaskContext::new()
    ///     .with_retry_attempt(1)
    ///     .with_previous_checkpoint_prefix("/data/raw/a-n0-0/_checkpoints");
    /// assert_eq!(ctx.previous_checkpoint_prefix(), "/data/raw/a-n0-0/_checkpoints");
    /// ```
    pub fn with_previous_checkpoint_prefix(mut self, prefix: &str) -> Self {
        self.paths[5] = prefix.to_string();
        self
    }

    /// Sets `max_dataset_size_bytes` (2 MiB by default).
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::TaskExecutionContext;
    ///
    /// let ctx = TestTaskContext::new().with_max_dataset_size_bytes(1024);
    /// assert_eq!(ctx.max_dataset_size_bytes(), 1024);
    /// ```
    pub fn with_max_dataset_size_bytes(mut self, bytes: i64) -> Self {
        self.max_dataset_size_bytes = bytes;
        self
    }

    /// Sets the retry attempt (0 for the first attempt).
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::TaskExecutionContext;
    ///
    /// let ctx = TestTaskContext::new().with_retry_attempt(2);
    /// assert_eq!(ctx.task_execution_metadata().task_execution_id().id().retry_attempt, 2);
    /// ```
    pub fn with_retry_attempt(mut self, attempt: u32) -> Self {
        self.metadata.task_execution_id.id.retry_attempt = attempt;
        self
    }

    /// Gives the context a generated name no other context of this process
    /// has (`t<hex time><hex n>-n0-0`), e.g. for each run of a plugin that
    /// names remote jobs or files after it, or for tasks competing for a
    /// quota (the generated name is the usual token).
    ///
    /// ```
    /// use kozmo_interface::kit::TaskContextExt;
    /// use kozmo_interface::testing::TestTaskContext;
    ///
    /// let a = TestTaskContext::new().with_unique_generated_name();
    /// let b = TestTaskContext::new().with_unique_generated_name();
    /// assert_ne!(a.generated_name(), b.generated_name());
    /// ```
    pub fn with_unique_generated_name(self) -> Self {
        self.with_generated_name(&unique_generated_name())
    }

    /// Sets the raw output prefix (and the checkpoint prefix under it), e.g.
    /// a temporary directory for a plugin that writes files, or an
    /// `s3://...` one to test a plugin's answer to a data store that is not
    /// local. The daemon passes an absolute path (see
    /// [`OutputWriter::raw_output_prefix`] and [`crate::io::local_dir`]).
    /// The default is a `file://` URL of a directory of the context's own.
    ///
    /// ```
    /// use kozmo_interface::io::local_dir;
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::OutputWriter;
    ///
    /// let dir = std::env::temp_dir().join("my-plugin-test");
    /// let ctx = TestTaskContext::new().with_raw_output_prefix(dir.to_str().unwrap());
    /// assert_eq!(local_dir(&ctx.raw_output_prefix()), Some(dir.clone()));
    /// assert_eq!(ctx.checkpoint_prefix(), format!("{}/_checkpoints", dir.display()));
    /// assert!(local_dir(&TestTaskContext::new().raw_output_prefix()).is_some());
    /// ```
    pub fn with_raw_output_prefix(mut self, prefix: &str) -> Self {
        self.paths[3] = prefix.to_string();
        self.paths[4] = format!("{}/_checkpoints", prefix.trim_end_matches('/'));
        self
    }

    /// Sets the generated name (`test-exec-n0-0` by default), e.g. a
    /// different one per test run for a plugin that names remote resources
    /// after it ([`TestTaskContext::with_unique_generated_name`] makes one
    /// up). A default raw output prefix follows the name.
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::TaskExecutionContext;
    ///
    /// let ctx = TestTaskContext::new().with_generated_name("run-42-n0-0");
    /// assert_eq!(ctx.task_execution_metadata().task_execution_id().generated_name(), "run-42-n0-0");
    /// ```
    pub fn with_generated_name(mut self, name: &str) -> Self {
        let old = default_raw(&self.scratch, &self.metadata.task_execution_id.generated_name);
        if self.paths[3] == old {
            let raw = default_raw(&self.scratch, name);
            self.paths[4] = format!("{raw}/_checkpoints");
            self.paths[3] = raw;
        }
        self.metadata.task_execution_id.generated_name = name.to_string();
        self
    }

    /// Uses `manager` instead of the built-in resource manager.
    pub fn with_resource_manager(mut self, manager: Arc<dyn ResourceManager + Send + Sync>) -> Self {
        self.resource_manager = Some(manager);
        self
    }

    /// Ends a round: the state put (or reset) in it becomes visible.
    pub fn next_round(&self) {
        if let Some(s) = lock(&self.pending_state).take() {
            *lock(&self.state) = s;
        }
    }

    /// Ends a round that failed (a handler error): as the daemon does, the
    /// state put (or reset) in it is dropped.
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::{PluginStateReader, PluginStateWriter, TaskExecutionContext};
    ///
    /// let ctx = TestTaskContext::new();
    /// ctx.plugin_state_writer().put_bytes(1, vec![1]).unwrap();
    /// ctx.discard_round();
    /// assert_eq!(ctx.plugin_state_reader().get_bytes().unwrap(), (0, None));
    /// ```
    pub fn discard_round(&self) {
        lock(&self.pending_state).take();
    }

    /// Outputs the plugin recorded.
    pub fn outputs(&self) -> Option<LiteralMap> {
        lock(&self.outputs).clone()
    }

    /// Error document the plugin recorded, with its `recoverable` flag.
    pub fn error_document(&self) -> Option<(ExecutionError, bool)> {
        lock(&self.error).clone()
    }

    /// Events the plugin recorded.
    pub fn events(&self) -> Vec<PhaseInfo> {
        lock(&self.events).clone()
    }

    /// State pending for the next round (`Some((0, None))` after a reset).
    pub fn pending_state(&self) -> Option<(u8, Option<Vec<u8>>)> {
        lock(&self.pending_state).clone()
    }

    /// An object in the data store.
    pub fn blob(&self, reference: &str) -> Option<Vec<u8>> {
        lock(&self.blobs).get(reference).cloned()
    }

    /// Catalog entries written.
    pub fn catalog_entries(&self) -> Vec<(CatalogKey, LiteralMap)> {
        lock(&self.catalog).clone()
    }

    /// Tokens holding a slot of a namespace now (of every context sharing
    /// this context's [`TestResources`]).
    pub fn granted(&self, namespace: &str) -> BTreeSet<String> {
        self.resources.held(namespace)
    }

    /// Refresh signals received.
    pub fn signal_count(&self) -> u64 {
        self.signals.count()
    }
}

impl TaskExecutionContext for TestTaskContext {
    fn resource_manager(&self) -> &dyn ResourceManager {
        match &self.resource_manager {
            Some(m) => m.as_ref(),
            None => self,
        }
    }
    fn secret_manager(&self) -> &dyn SecretManager {
        self
    }
    fn task_refresh_indicator(&self) -> Arc<dyn SignalAsync> {
        self.signals.clone()
    }
    fn max_dataset_size_bytes(&self) -> i64 {
        self.max_dataset_size_bytes
    }
    fn data_store(&self) -> &dyn DataStore {
        self
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
        &self.metadata
    }
    fn output_writer(&self) -> &dyn OutputWriter {
        self
    }
    fn plugin_state_writer(&self) -> &dyn PluginStateWriter {
        self
    }
    fn catalog(&self) -> &dyn Catalog {
        self
    }
    fn events_recorder(&self) -> &dyn EventsRecorder {
        self
    }
    // kozmo-abi-append: test-task-context
}

impl ResourceManager for TestTaskContext {
    fn id(&self) -> String {
        "testresourcemanager".into()
    }
    fn allocate_resource(
        &self,
        namespace: &ResourceNamespace,
        token: &str,
        constraints: &ResourceConstraintsSpec,
    ) -> Result<AllocationStatus> {
        let quota = self.quotas.get(&namespace.0).copied();
        Ok(self.resources.allocate_with(namespace, token, constraints, quota))
    }
    fn release_resource(&self, namespace: &ResourceNamespace, token: &str) -> Result<()> {
        self.resources.release_resource(namespace, token)
    }
}

impl SecretManager for TestTaskContext {
    fn get(&self, key: &str) -> Result<String> {
        self.secrets
            .get(key)
            .cloned()
            .ok_or_else(|| PluginError::user("SecretNotFound", format!("no secret named {key}")))
    }
}

impl DataStore for TestTaskContext {
    fn read_raw(&self, reference: &str) -> Result<Vec<u8>> {
        self.blob(reference)
            .ok_or_else(|| PluginError::new("NotFound", format!("no object at {reference}")))
    }
    fn write_raw(&self, reference: &str, bytes: &[u8]) -> Result<()> {
        lock(&self.blobs).insert(reference.to_string(), bytes.to_vec());
        Ok(())
    }
    fn head(&self, reference: &str) -> Result<Option<u64>> {
        Ok(lock(&self.blobs).get(reference).map(|b| b.len() as u64))
    }
    fn delete(&self, reference: &str) -> Result<()> {
        lock(&self.blobs).remove(reference);
        Ok(())
    }
}

impl PluginStateReader for TestTaskContext {
    fn state_version(&self) -> u8 {
        lock(&self.state).0
    }
    fn get_bytes(&self) -> Result<(u8, Option<Vec<u8>>)> {
        Ok(lock(&self.state).clone())
    }
}

impl PluginStateWriter for TestTaskContext {
    fn put_bytes(&self, version: u8, bytes: Vec<u8>) -> Result<()> {
        *lock(&self.pending_state) = Some((version, Some(bytes)));
        Ok(())
    }
    fn reset(&self) -> Result<()> {
        *lock(&self.pending_state) = Some((0, None));
        Ok(())
    }
}

impl TaskReader for TestTaskContext {
    fn read(&self) -> Result<TaskTemplate> {
        Ok(self.template.clone())
    }
    fn path(&self) -> Result<String> {
        self.template_path
            .clone()
            .ok_or_else(|| PluginError::new("NoTaskPath", "the task template has no path"))
    }
}

impl InputReader for TestTaskContext {
    fn input_prefix(&self) -> String {
        self.paths[0].clone()
    }
    fn input_path(&self) -> String {
        self.paths[1].clone()
    }
    fn get(&self) -> Result<LiteralMap> {
        Ok(self.inputs.clone())
    }
}

impl OutputWriter for TestTaskContext {
    fn output_prefix(&self) -> String {
        self.paths[2].clone()
    }
    fn raw_output_prefix(&self) -> String {
        self.paths[3].clone()
    }
    fn checkpoint_prefix(&self) -> String {
        self.paths[4].clone()
    }
    fn previous_checkpoint_prefix(&self) -> String {
        self.paths[5].clone()
    }
    fn put_outputs(&self, outputs: LiteralMap) -> Result<()> {
        *lock(&self.outputs) = Some(outputs);
        Ok(())
    }
    fn put_error(&self, error: ExecutionError, recoverable: bool) -> Result<()> {
        *lock(&self.error) = Some((error, recoverable));
        Ok(())
    }
}

impl Catalog for TestTaskContext {
    fn get(&self, key: &CatalogKey) -> Result<Option<LiteralMap>> {
        Ok(lock(&self.catalog)
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone()))
    }
    fn put(&self, key: &CatalogKey, outputs: &LiteralMap) -> Result<()> {
        lock(&self.catalog).push((key.clone(), outputs.clone()));
        Ok(())
    }
}

impl EventsRecorder for TestTaskContext {
    fn record_raw(&self, info: &PhaseInfo) -> Result<()> {
        lock(&self.events).push(info.clone());
        Ok(())
    }
}

/// A metric that accumulates into a shared value (for assertions).
#[derive(Debug, Default)]
pub struct RecordedMetric {
    /// Sum of `add` calls, or the last `set`.
    pub value: Mutex<f64>,
    /// Observations.
    pub observations: Mutex<Vec<f64>>,
}

impl MetricSink for RecordedMetric {
    fn add(&self, v: f64) {
        *lock(&self.value) += v;
    }
    fn set(&self, v: f64) {
        *lock(&self.value) = v;
    }
    fn observe(&self, v: f64) {
        lock(&self.observations).push(v);
    }
}

/// Owners enqueued through [`TestSetupContext::enqueue_owner`].
#[derive(Debug, Default)]
pub struct EnqueueRecorder(Mutex<Vec<NamespacedName>>);

impl EnqueueRecorder {
    /// Owners enqueued so far.
    pub fn owners(&self) -> Vec<NamespacedName> {
        lock(&self.0).clone()
    }
}

impl EnqueueOwner for EnqueueRecorder {
    fn enqueue(&self, owner: &NamespacedName) -> Result<()> {
        lock(&self.0).push(owner.clone());
        Ok(())
    }
}

/// A [`SetupContext`] kept in memory.
#[derive(Default)]
pub struct TestSetupContext {
    /// Secrets by key.
    pub secrets: BTreeMap<String, String>,
    /// Owner kind reported.
    pub owner_kind: String,
    quotas: Mutex<Vec<(String, i64)>>,
    resources: Arc<TestResources>,
    metrics: Mutex<BTreeMap<String, Arc<RecordedMetric>>>,
    enqueued: Arc<EnqueueRecorder>,
}

impl TestSetupContext {
    /// An empty setup context with owner kind `Execution`.
    pub fn new() -> Self {
        TestSetupContext {
            owner_kind: "Execution".into(),
            ..Default::default()
        }
    }

    /// Adds a secret.
    pub fn with_secret(mut self, key: &str, value: &str) -> Self {
        self.secrets.insert(key.to_string(), value.to_string());
        self
    }

    /// Quotas registered, in order.
    pub fn quotas(&self) -> Vec<(String, i64)> {
        lock(&self.quotas).clone()
    }

    /// The resource manager the registered quotas went to, shared by the
    /// task contexts [`TestSetupContext::task_context`] makes.
    pub fn resources(&self) -> Arc<TestResources> {
        self.resources.clone()
    }

    /// Registers quotas into `resources` instead of a manager of its own
    /// (e.g. to load two plugins against one manager).
    pub fn with_resources(mut self, resources: Arc<TestResources>) -> Self {
        self.resources = resources;
        self
    }

    /// A task context wired to this setup: it allocates against the quotas
    /// the loader registered ([`TestSetupContext::resources`], shared with
    /// every other context made here), has the setup's secrets, and a
    /// generated name of its own (so each is a distinct quota token).
    ///
    /// ```
    /// use kozmo_interface::kit::TaskContextExt;
    /// use kozmo_interface::testing::TestSetupContext;
    /// use kozmo_interface::{ResourceNamespace, ResourceRegistrar, SetupContext};
    ///
    /// let setup = TestSetupContext::new();
    /// let slots = ResourceNamespace::new("slots");
    /// setup.resource_registrar().register_resource_quota(&slots, 1).unwrap();
    /// let (a, b) = (setup.task_context(), setup.task_context());
    /// assert!(a.allocate(&slots, "full").unwrap().is_none());
    /// assert!(b.allocate(&slots, "full").unwrap().is_some(), "b waits for a's slot");
    /// ```
    pub fn task_context(&self) -> TestTaskContext {
        let mut ctx = TestTaskContext::new()
            .with_resources(self.resources.clone())
            .with_unique_generated_name();
        ctx.secrets = self.secrets.clone();
        ctx
    }

    /// A registered metric by full name.
    pub fn metric(&self, name: &str) -> Option<Arc<RecordedMetric>> {
        lock(&self.metrics).get(name).cloned()
    }

    /// Owners enqueued.
    pub fn enqueued(&self) -> Vec<NamespacedName> {
        self.enqueued.owners()
    }

    fn register(&self, name: &str) -> Arc<dyn MetricSink> {
        let m = Arc::new(RecordedMetric::default());
        lock(&self.metrics).insert(name.to_string(), m.clone());
        m
    }
}

impl SetupContext for TestSetupContext {
    fn enqueue_owner(&self) -> Arc<dyn EnqueueOwner> {
        self.enqueued.clone()
    }
    fn owner_kind(&self) -> String {
        self.owner_kind.clone()
    }
    fn metrics_scope(&self) -> &dyn MetricsScope {
        self
    }
    fn secret_manager(&self) -> &dyn SecretManager {
        self
    }
    fn resource_registrar(&self) -> &dyn ResourceRegistrar {
        self
    }
}

impl SecretManager for TestSetupContext {
    fn get(&self, key: &str) -> Result<String> {
        self.secrets
            .get(key)
            .cloned()
            .ok_or_else(|| PluginError::user("SecretNotFound", format!("no secret named {key}")))
    }
}

impl ResourceRegistrar for TestSetupContext {
    fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> Result<()> {
        lock(&self.quotas).push((namespace.0.clone(), quota));
        self.resources.register_resource_quota(namespace, quota)
    }
}

impl MetricsScope for TestSetupContext {
    fn counter(&self, name: &str, _help: &str) -> Result<Counter> {
        Ok(Counter::from_sink(self.register(name)))
    }
    fn gauge(&self, name: &str, _help: &str) -> Result<Gauge> {
        Ok(Gauge::from_sink(self.register(name)))
    }
    fn histogram(&self, name: &str, _help: &str, _buckets: &[f64]) -> Result<Histogram> {
        Ok(Histogram::from_sink(self.register(name)))
    }
    fn sub_scope(&self, name: &str) -> Box<dyn MetricsScope + '_> {
        Box::new(PrefixedScope::new(self, name))
    }
}
