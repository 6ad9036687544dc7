//! The task execution context across the boundary: one flattened
//! `#[sabi_trait]`, a host adapter that implements it over a plain
//! [`TaskExecutionContext`], and a plugin adapter that implements every plain
//! service trait over it.

use std::cell::OnceCell;
use std::sync::Arc;

use abi_stable::sabi_trait;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::RRef;

use super::guard::{guard, guard_or};
use super::setup::{FfiSignal_TO, HostSignal, PluginSignal};
use super::values::{from_json, plain, to_json, FfiError, FfiExecError, FfiPhaseInfo, FfiStrSink};
use crate::context::{Catalog, CatalogKey, EventsRecorder, SecretManager, SignalAsync, TaskExecutionContext};
use crate::io::{DataStore, InputReader, OutputWriter, TaskReader};
use crate::literals::LiteralMap;
use crate::metadata::{MetadataRecord, TaskExecutionMetadata};
use crate::resource_manager::ResourceManager;
use crate::state::{PluginStateReader, PluginStateWriter};
use crate::task::TaskTemplate;
use crate::{
    AllocationStatus, ExecutionError, PhaseInfo, ResourceConstraint, ResourceConstraintsSpec, ResourceNamespace, Result,
};

/// Every service of a [`TaskExecutionContext`], flattened into one FFI trait.
#[sabi_trait]
pub trait FfiTaskContext {
    /// [`ResourceManager::id`].
    fn rm_id(&self, into: FfiStrSink<'_>);
    /// [`ResourceManager::allocate_resource`].
    fn rm_allocate(
        &self,
        namespace: RStr<'_>,
        token: RStr<'_>,
        project_cap: ROption<i64>,
        namespace_cap: ROption<i64>,
    ) -> RResult<u8, FfiError>;
    /// [`ResourceManager::release_resource`].
    fn rm_release(&self, namespace: RStr<'_>, token: RStr<'_>) -> RResult<(), FfiError>;
    /// [`SecretManager::get`].
    fn secret_get(&self, key: RStr<'_>) -> RResult<RString, FfiError>;
    /// [`TaskExecutionContext::task_refresh_indicator`].
    fn refresh_indicator(&self) -> FfiSignal_TO<'static, abi_stable::std_types::RArc<()>>;
    /// [`TaskExecutionContext::max_dataset_size_bytes`].
    fn max_dataset_size_bytes(&self) -> i64;
    /// [`DataStore::read_raw`].
    fn ds_read(&self, reference: RStr<'_>) -> RResult<RVec<u8>, FfiError>;
    /// [`DataStore::write_raw`].
    fn ds_write(&self, reference: RStr<'_>, bytes: RSlice<'_, u8>) -> RResult<(), FfiError>;
    /// [`DataStore::head`].
    fn ds_head(&self, reference: RStr<'_>) -> RResult<ROption<u64>, FfiError>;
    /// [`DataStore::delete`].
    fn ds_delete(&self, reference: RStr<'_>) -> RResult<(), FfiError>;
    /// [`PluginStateReader::state_version`].
    fn state_version(&self) -> u8;
    /// [`PluginStateReader::get_bytes`].
    fn state_get(&self) -> RResult<Tuple2<u8, ROption<RVec<u8>>>, FfiError>;
    /// [`PluginStateWriter::put_bytes`].
    fn state_put(&self, version: u8, bytes: RVec<u8>) -> RResult<(), FfiError>;
    /// [`PluginStateWriter::reset`].
    fn state_reset(&self) -> RResult<(), FfiError>;
    /// [`TaskReader::read`], as JSON.
    fn task_read(&self) -> RResult<RVec<u8>, FfiError>;
    /// [`TaskReader::path`].
    fn task_path(&self) -> RResult<RString, FfiError>;
    /// [`InputReader::input_prefix`].
    fn input_prefix(&self, into: FfiStrSink<'_>);
    /// [`InputReader::input_path`].
    fn input_path(&self, into: FfiStrSink<'_>);
    /// [`InputReader::get`], as JSON.
    fn input_get(&self) -> RResult<RVec<u8>, FfiError>;
    /// The whole [`TaskExecutionMetadata`] as a JSON [`MetadataRecord`].
    fn metadata(&self) -> RVec<u8>;
    /// [`OutputWriter::output_prefix`].
    fn output_prefix(&self, into: FfiStrSink<'_>);
    /// [`OutputWriter::raw_output_prefix`].
    fn raw_output_prefix(&self, into: FfiStrSink<'_>);
    /// [`OutputWriter::checkpoint_prefix`].
    fn checkpoint_prefix(&self, into: FfiStrSink<'_>);
    /// [`OutputWriter::previous_checkpoint_prefix`].
    fn previous_checkpoint_prefix(&self, into: FfiStrSink<'_>);
    /// [`OutputWriter::put_outputs`], as JSON.
    fn put_outputs(&self, outputs_json: RVec<u8>) -> RResult<(), FfiError>;
    /// [`OutputWriter::put_error`].
    fn put_error(&self, error: FfiExecError, recoverable: bool) -> RResult<(), FfiError>;
    /// [`Catalog::get`]; key and outputs as JSON.
    fn catalog_get(&self, key_json: RVec<u8>) -> RResult<ROption<RVec<u8>>, FfiError>;
    /// [`Catalog::put`]; key and outputs as JSON.
    fn catalog_put(&self, key_json: RVec<u8>, outputs_json: RVec<u8>) -> RResult<(), FfiError>;
    /// [`EventsRecorder::record_raw`].
    #[sabi(last_prefix_field)]
    fn record_raw(&self, info: FfiPhaseInfo) -> RResult<(), FfiError>;
    // kozmo-abi-append: task-context
    // Methods appended in later minors go here, in order, each with a
    // default body returning `crate::abi::needs_newer_host(..)`: a plugin
    // built against a later minor calls that body when the host's vtable
    // predates the method.
}

/// Host side of the string accessors: hands the host's value to the
/// plugin's sink; a panic leaves the plugin's string empty.
#[inline]
fn fill(what: &str, into: FfiStrSink<'_>, value: impl FnOnce() -> String) {
    guard_or(what, || (), || into.set(&value()))
}

/// Plugin side of the string accessors: the plugin's own string, filled by
/// the host.
#[inline]
fn host_string(fill: impl FnOnce(FfiStrSink<'_>)) -> String {
    let mut s = String::new();
    fill(FfiStrSink::new(&mut s));
    s
}

/// Host side: serves a plain [`TaskExecutionContext`] to a plugin. Panics in
/// host services become errors, never an abort.
pub struct HostTaskContext<'a>(pub &'a dyn TaskExecutionContext);

fn constraints(project: ROption<i64>, namespace: ROption<i64>) -> ResourceConstraintsSpec {
    ResourceConstraintsSpec {
        project_scope: project.into_option().map(|value| ResourceConstraint { value }),
        namespace_scope: namespace.into_option().map(|value| ResourceConstraint { value }),
    }
}

impl FfiTaskContext for HostTaskContext<'_> {
    fn rm_id(&self, into: FfiStrSink<'_>) {
        fill("resource_manager.id", into, || self.0.resource_manager().id())
    }
    fn rm_allocate(
        &self,
        namespace: RStr<'_>,
        token: RStr<'_>,
        project_cap: ROption<i64>,
        namespace_cap: ROption<i64>,
    ) -> RResult<u8, FfiError> {
        guard("resource_manager.allocate_resource", || {
            let ns = ResourceNamespace::new(namespace.as_str());
            let spec = constraints(project_cap, namespace_cap);
            self.0
                .resource_manager()
                .allocate_resource(&ns, token.as_str(), &spec)
                .map(|s| s.0)
        })
    }
    fn rm_release(&self, namespace: RStr<'_>, token: RStr<'_>) -> RResult<(), FfiError> {
        guard("resource_manager.release_resource", || {
            self.0
                .resource_manager()
                .release_resource(&ResourceNamespace::new(namespace.as_str()), token.as_str())
        })
    }
    fn secret_get(&self, key: RStr<'_>) -> RResult<RString, FfiError> {
        guard("secret_manager.get", || {
            self.0.secret_manager().get(key.as_str()).map(RString::from)
        })
    }
    fn refresh_indicator(&self) -> FfiSignal_TO<'static, abi_stable::std_types::RArc<()>> {
        HostSignal::wrap(self.0.task_refresh_indicator())
    }
    fn max_dataset_size_bytes(&self) -> i64 {
        guard_or("max_dataset_size_bytes", || 0, || self.0.max_dataset_size_bytes())
    }
    fn ds_read(&self, reference: RStr<'_>) -> RResult<RVec<u8>, FfiError> {
        guard("data_store.read_raw", || {
            self.0.data_store().read_raw(reference.as_str()).map(RVec::from)
        })
    }
    fn ds_write(&self, reference: RStr<'_>, bytes: RSlice<'_, u8>) -> RResult<(), FfiError> {
        guard("data_store.write_raw", || {
            self.0.data_store().write_raw(reference.as_str(), bytes.as_slice())
        })
    }
    fn ds_head(&self, reference: RStr<'_>) -> RResult<ROption<u64>, FfiError> {
        guard("data_store.head", || {
            self.0.data_store().head(reference.as_str()).map(ROption::from)
        })
    }
    fn ds_delete(&self, reference: RStr<'_>) -> RResult<(), FfiError> {
        guard("data_store.delete", || self.0.data_store().delete(reference.as_str()))
    }
    fn state_version(&self) -> u8 {
        guard_or(
            "plugin_state_reader.state_version",
            || 0,
            || self.0.plugin_state_reader().state_version(),
        )
    }
    fn state_get(&self) -> RResult<Tuple2<u8, ROption<RVec<u8>>>, FfiError> {
        guard("plugin_state_reader.get_bytes", || {
            let (v, bytes) = self.0.plugin_state_reader().get_bytes()?;
            Ok(Tuple2(v, bytes.map(RVec::from).into()))
        })
    }
    fn state_put(&self, version: u8, bytes: RVec<u8>) -> RResult<(), FfiError> {
        guard("plugin_state_writer.put_bytes", || {
            self.0.plugin_state_writer().put_bytes(version, bytes.into())
        })
    }
    fn state_reset(&self) -> RResult<(), FfiError> {
        guard("plugin_state_writer.reset", || self.0.plugin_state_writer().reset())
    }
    fn task_read(&self) -> RResult<RVec<u8>, FfiError> {
        guard("task_reader.read", || self.0.task_reader().read().map(|t| to_json(&t)))
    }
    fn task_path(&self) -> RResult<RString, FfiError> {
        guard("task_reader.path", || self.0.task_reader().path().map(RString::from))
    }
    fn input_prefix(&self, into: FfiStrSink<'_>) {
        fill("input_reader.input_prefix", into, || {
            self.0.input_reader().input_prefix()
        })
    }
    fn input_path(&self, into: FfiStrSink<'_>) {
        fill("input_reader.input_path", into, || self.0.input_reader().input_path())
    }
    fn input_get(&self) -> RResult<RVec<u8>, FfiError> {
        guard("input_reader.get", || self.0.input_reader().get().map(|m| to_json(&m)))
    }
    fn metadata(&self) -> RVec<u8> {
        guard_or("task_execution_metadata", RVec::new, || {
            let m = self.0.task_execution_metadata();
            match m.as_record() {
                Some(record) => to_json(record),
                None => to_json(&MetadataRecord::capture(m)),
            }
        })
    }
    fn output_prefix(&self, into: FfiStrSink<'_>) {
        fill("output_writer.output_prefix", into, || {
            self.0.output_writer().output_prefix()
        })
    }
    fn raw_output_prefix(&self, into: FfiStrSink<'_>) {
        fill("output_writer.raw_output_prefix", into, || {
            self.0.output_writer().raw_output_prefix()
        })
    }
    fn checkpoint_prefix(&self, into: FfiStrSink<'_>) {
        fill("output_writer.checkpoint_prefix", into, || {
            self.0.output_writer().checkpoint_prefix()
        })
    }
    fn previous_checkpoint_prefix(&self, into: FfiStrSink<'_>) {
        fill("output_writer.previous_checkpoint_prefix", into, || {
            self.0.output_writer().previous_checkpoint_prefix()
        })
    }
    fn put_outputs(&self, outputs_json: RVec<u8>) -> RResult<(), FfiError> {
        guard("output_writer.put_outputs", || {
            let outputs: LiteralMap = from_json(&outputs_json)?;
            self.0.output_writer().put_outputs(outputs)
        })
    }
    fn put_error(&self, error: FfiExecError, recoverable: bool) -> RResult<(), FfiError> {
        guard("output_writer.put_error", || {
            self.0.output_writer().put_error(error.into(), recoverable)
        })
    }
    fn catalog_get(&self, key_json: RVec<u8>) -> RResult<ROption<RVec<u8>>, FfiError> {
        guard("catalog.get", || {
            let key: CatalogKey = from_json(&key_json)?;
            Ok(self.0.catalog().get(&key)?.map(|m| to_json(&m)).into())
        })
    }
    fn catalog_put(&self, key_json: RVec<u8>, outputs_json: RVec<u8>) -> RResult<(), FfiError> {
        guard("catalog.put", || {
            let key: CatalogKey = from_json(&key_json)?;
            let outputs: LiteralMap = from_json(&outputs_json)?;
            self.0.catalog().put(&key, &outputs)
        })
    }
    fn record_raw(&self, info: FfiPhaseInfo) -> RResult<(), FfiError> {
        guard("events_recorder.record_raw", || {
            let info = PhaseInfo::try_from(info)?;
            self.0.events_recorder().record_raw(&info)
        })
    }
    // kozmo-abi-append: host-task-context
}

/// Plugin side: implements every plain service trait over the FFI object,
/// so plugin code sees a plain `&dyn TaskExecutionContext`.
pub struct PluginTaskContext<'lt, 'r> {
    ffi: FfiTaskContext_TO<'lt, RRef<'r, ()>>,
    metadata: OnceCell<MetadataRecord>,
}

impl<'lt, 'r> PluginTaskContext<'lt, 'r> {
    /// Wraps the object the host passed.
    pub fn new(ffi: FfiTaskContext_TO<'lt, RRef<'r, ()>>) -> Self {
        PluginTaskContext {
            ffi,
            metadata: OnceCell::new(),
        }
    }
}

impl TaskExecutionContext for PluginTaskContext<'_, '_> {
    fn resource_manager(&self) -> &dyn ResourceManager {
        self
    }
    fn secret_manager(&self) -> &dyn SecretManager {
        self
    }
    fn task_refresh_indicator(&self) -> Arc<dyn SignalAsync> {
        Arc::new(PluginSignal(self.ffi.refresh_indicator()))
    }
    fn max_dataset_size_bytes(&self) -> i64 {
        self.ffi.max_dataset_size_bytes()
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
        self.metadata.get_or_init(|| {
            from_json(&self.ffi.metadata()).unwrap_or_else(|e| {
                log::error!("task execution metadata from the host is unreadable: {e}");
                MetadataRecord::default()
            })
        })
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
    // kozmo-abi-append: plugin-task-context
}

impl ResourceManager for PluginTaskContext<'_, '_> {
    fn id(&self) -> String {
        host_string(|s| self.ffi.rm_id(s))
    }
    fn allocate_resource(
        &self,
        namespace: &ResourceNamespace,
        token: &str,
        constraints: &ResourceConstraintsSpec,
    ) -> Result<AllocationStatus> {
        plain(self.ffi.rm_allocate(
            namespace.as_str().into(),
            token.into(),
            constraints.project_scope.map(|c| c.value).into(),
            constraints.namespace_scope.map(|c| c.value).into(),
        ))
        .map(AllocationStatus)
    }
    fn release_resource(&self, namespace: &ResourceNamespace, token: &str) -> Result<()> {
        plain(self.ffi.rm_release(namespace.as_str().into(), token.into()))
    }
}

impl SecretManager for PluginTaskContext<'_, '_> {
    fn get(&self, key: &str) -> Result<String> {
        plain(self.ffi.secret_get(key.into())).map(Into::into)
    }
}

impl DataStore for PluginTaskContext<'_, '_> {
    fn read_raw(&self, reference: &str) -> Result<Vec<u8>> {
        plain(self.ffi.ds_read(reference.into())).map(Into::into)
    }
    fn write_raw(&self, reference: &str, bytes: &[u8]) -> Result<()> {
        plain(self.ffi.ds_write(reference.into(), bytes.into()))
    }
    fn head(&self, reference: &str) -> Result<Option<u64>> {
        plain(self.ffi.ds_head(reference.into())).map(ROption::into_option)
    }
    fn delete(&self, reference: &str) -> Result<()> {
        plain(self.ffi.ds_delete(reference.into()))
    }
}

impl PluginStateReader for PluginTaskContext<'_, '_> {
    fn state_version(&self) -> u8 {
        self.ffi.state_version()
    }
    fn get_bytes(&self) -> Result<(u8, Option<Vec<u8>>)> {
        let Tuple2(v, bytes) = plain(self.ffi.state_get())?;
        Ok((v, bytes.into_option().map(Into::into)))
    }
}

impl PluginStateWriter for PluginTaskContext<'_, '_> {
    fn put_bytes(&self, version: u8, bytes: Vec<u8>) -> Result<()> {
        plain(self.ffi.state_put(version, bytes.into()))
    }
    fn reset(&self) -> Result<()> {
        plain(self.ffi.state_reset())
    }
}

impl TaskReader for PluginTaskContext<'_, '_> {
    fn read(&self) -> Result<TaskTemplate> {
        from_json(&plain(self.ffi.task_read())?)
    }
    fn path(&self) -> Result<String> {
        plain(self.ffi.task_path()).map(Into::into)
    }
}

impl InputReader for PluginTaskContext<'_, '_> {
    fn input_prefix(&self) -> String {
        host_string(|s| self.ffi.input_prefix(s))
    }
    fn input_path(&self) -> String {
        host_string(|s| self.ffi.input_path(s))
    }
    fn get(&self) -> Result<LiteralMap> {
        from_json(&plain(self.ffi.input_get())?)
    }
}

impl OutputWriter for PluginTaskContext<'_, '_> {
    fn output_prefix(&self) -> String {
        host_string(|s| self.ffi.output_prefix(s))
    }
    fn raw_output_prefix(&self) -> String {
        host_string(|s| self.ffi.raw_output_prefix(s))
    }
    fn checkpoint_prefix(&self) -> String {
        host_string(|s| self.ffi.checkpoint_prefix(s))
    }
    fn previous_checkpoint_prefix(&self) -> String {
        host_string(|s| self.ffi.previous_checkpoint_prefix(s))
    }
    fn put_outputs(&self, outputs: LiteralMap) -> Result<()> {
        plain(self.ffi.put_outputs(to_json(&outputs)))
    }
    fn put_error(&self, error: ExecutionError, recoverable: bool) -> Result<()> {
        plain(self.ffi.put_error((&error).into(), recoverable))
    }
}

impl Catalog for PluginTaskContext<'_, '_> {
    fn get(&self, key: &CatalogKey) -> Result<Option<LiteralMap>> {
        match plain(self.ffi.catalog_get(to_json(key)))?.into_option() {
            Some(bytes) => from_json(&bytes).map(Some),
            None => Ok(None),
        }
    }
    fn put(&self, key: &CatalogKey, outputs: &LiteralMap) -> Result<()> {
        plain(self.ffi.catalog_put(to_json(key), to_json(outputs)))
    }
}

impl EventsRecorder for PluginTaskContext<'_, '_> {
    fn record_raw(&self, info: &PhaseInfo) -> Result<()> {
        plain(self.ffi.record_raw(info.into()))
    }
}
