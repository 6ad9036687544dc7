//! In-memory host services for testing plugins without a daemon.
//!
//! [`TestTaskContext`] implements [`TaskExecutionContext`] and records what
//! a plugin does (outputs, errors, state, events, data-store writes,
//! allocations); [`TestSetupContext`] does the same for loaders. Plugin
//! authors use them in unit tests; Kozmo's own tests use them across the
//! FFI boundary too.
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

use std::collections::{BTreeMap, BTreeSet};
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
use crate::task::TaskTemplate;
use crate::{
    AllocationStatus, ExecutionError, PhaseInfo, PluginError, ResourceConstraintsSpec, ResourceNamespace, Result,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    /// `(input_prefix, input_path, output_prefix, raw_output_prefix, checkpoint_prefix, previous_checkpoint_prefix)`.
    pub paths: [String; 6],
    /// Value of `max_dataset_size_bytes`.
    pub max_dataset_size_bytes: i64,
    /// Quota per namespace for the resource manager (unregistered = unlimited).
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
    granted: Mutex<BTreeMap<String, BTreeSet<String>>>,
    signals: Arc<SignalCounter>,
}

impl Default for TestTaskContext {
    fn default() -> Self {
        Self::new()
    }
}

impl TestTaskContext {
    /// An empty context with generated name `test-exec-n0-0`.
    pub fn new() -> Self {
        let mut metadata = MetadataRecord {
            namespace: "test-namespace".into(),
            max_attempts: 1,
            ..Default::default()
        };
        metadata.task_execution_id.generated_name = "test-exec-n0-0".into();
        metadata.task_execution_id.unique_node_id = "n0".into();
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
                "mem://raw/test-exec-n0-0".into(),
                "mem://raw/test-exec-n0-0/_checkpoints".into(),
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
            granted: Mutex::new(BTreeMap::new()),
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

    /// Sets a quota for a namespace.
    pub fn with_quota(mut self, namespace: &str, quota: usize) -> Self {
        self.quotas.insert(namespace.to_string(), quota);
        self
    }

    /// Sets the raw output prefix (and the checkpoint prefix under it), e.g.
    /// a temporary directory for a plugin that writes files: the host passes
    /// an absolute path when its data store is local (see
    /// [`crate::io::local_dir`]). The default is `mem://raw/<generated name>`,
    /// which is not a local directory.
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
    /// assert_eq!(local_dir(&TestTaskContext::new().raw_output_prefix()), None);
    /// ```
    pub fn with_raw_output_prefix(mut self, prefix: &str) -> Self {
        self.paths[3] = prefix.to_string();
        self.paths[4] = format!("{}/_checkpoints", prefix.trim_end_matches('/'));
        self
    }

    /// Sets the generated name (`test-exec-n0-0` by default), e.g. a
    /// different one per test run for a plugin that names remote resources
    /// after it.
    ///
    /// ```
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::TaskExecutionContext;
    ///
    /// let ctx = TestTaskContext::new().with_generated_name("run-42-n0-0");
    /// assert_eq!(ctx.task_execution_metadata().task_execution_id().generated_name(), "run-42-n0-0");
    /// ```
    pub fn with_generated_name(mut self, name: &str) -> Self {
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

    /// Tokens granted in a namespace.
    pub fn granted(&self, namespace: &str) -> BTreeSet<String> {
        lock(&self.granted).get(namespace).cloned().unwrap_or_default()
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
        _constraints: &ResourceConstraintsSpec,
    ) -> Result<AllocationStatus> {
        let mut granted = lock(&self.granted);
        let set = granted.entry(namespace.0.clone()).or_default();
        if set.contains(token) {
            return Ok(AllocationStatus::GRANTED);
        }
        match self.quotas.get(&namespace.0) {
            Some(&q) if set.len() >= q => Ok(AllocationStatus::EXHAUSTED),
            _ => {
                set.insert(token.to_string());
                Ok(AllocationStatus::GRANTED)
            }
        }
    }
    fn release_resource(&self, namespace: &ResourceNamespace, token: &str) -> Result<()> {
        if let Some(set) = lock(&self.granted).get_mut(&namespace.0) {
            set.remove(token);
        }
        Ok(())
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
        Ok(())
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
