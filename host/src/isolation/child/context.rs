//! The `TaskExecutionContext` a plugin gets in the child: every accessor is
//! a service call to the daemon on the call's connection. Values that
//! cannot change during a call (metadata, the dataset limit) are asked once.

use std::cell::OnceCell;
use std::sync::Arc;

use kozmo_interface::context::CatalogKey;
use kozmo_interface::metadata::MetadataRecord;
use kozmo_interface::task::TaskTemplate;
use kozmo_interface::{
    AllocationStatus, Catalog, DataStore, EventsRecorder, ExecutionError, InputReader, LiteralMap, OutputWriter,
    PhaseInfo, PluginStateReader, PluginStateWriter, ResourceConstraintsSpec, ResourceManager, ResourceNamespace,
    Result, SecretManager, SignalAsync, TaskExecutionContext, TaskExecutionMetadata, TaskReader,
};
use kozmo_isolation_protocol::{Service, Value};

use super::control::{ChildSignal, Control};
use super::link::Link;
use crate::isolation::wire::json;

/// The context of one call.
pub struct TaskProxy<'a> {
    link: Link<'a>,
    control: Arc<Control>,
    metadata: OnceCell<MetadataRecord>,
    max_dataset_size: OnceCell<i64>,
}

impl<'a> TaskProxy<'a> {
    /// A context over `link`.
    pub fn new(link: Link<'a>, control: Arc<Control>) -> Self {
        TaskProxy {
            link,
            control,
            metadata: OnceCell::new(),
            max_dataset_size: OnceCell::new(),
        }
    }
}

impl TaskExecutionContext for TaskProxy<'_> {
    fn resource_manager(&self) -> &dyn ResourceManager {
        self
    }
    fn secret_manager(&self) -> &dyn SecretManager {
        self
    }
    fn task_refresh_indicator(&self) -> Arc<dyn SignalAsync> {
        // Without a handle the signal goes nowhere; the engine's resync
        // still re-evaluates the task.
        let handle = self.link.handle(Service::RefreshIndicator).unwrap_or_else(|e| {
            log::error!("no refresh indicator from the daemon: {e}");
            u64::MAX
        });
        Arc::new(ChildSignal {
            handle,
            control: self.control.clone(),
        })
    }
    fn max_dataset_size_bytes(&self) -> i64 {
        *self
            .max_dataset_size
            .get_or_init(|| match self.link.call(Service::MaxDatasetSize) {
                Ok(Value::Int(n)) => n,
                other => {
                    log::error!("no dataset size limit from the daemon: {other:?}");
                    0
                }
            })
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
            self.link
                .json(Service::Metadata, "execution metadata")
                .unwrap_or_else(|e| {
                    log::error!("no execution metadata from the daemon: {e}");
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
}

impl ResourceManager for TaskProxy<'_> {
    fn id(&self) -> String {
        self.link.text(Service::ResourceManagerId).unwrap_or_default()
    }
    fn allocate_resource(
        &self,
        namespace: &ResourceNamespace,
        token: &str,
        constraints: &ResourceConstraintsSpec,
    ) -> Result<AllocationStatus> {
        self.link.json(
            Service::Allocate {
                namespace_json: json(namespace)?,
                token: token.into(),
                constraints_json: json(constraints)?,
            },
            "allocation status",
        )
    }
    fn release_resource(&self, namespace: &ResourceNamespace, token: &str) -> Result<()> {
        self.link.unit(Service::Release {
            namespace_json: json(namespace)?,
            token: token.into(),
        })
    }
}

impl SecretManager for TaskProxy<'_> {
    fn get(&self, key: &str) -> Result<String> {
        self.link.text(Service::Secret { key: key.into() })
    }
}

impl DataStore for TaskProxy<'_> {
    fn read_raw(&self, reference: &str) -> Result<Vec<u8>> {
        match self.link.call(Service::DataRead {
            reference: reference.into(),
        })? {
            Value::Bytes(b) => Ok(b),
            other => Err(unexpected("bytes", other)),
        }
    }
    fn write_raw(&self, reference: &str, bytes: &[u8]) -> Result<()> {
        self.link.unit(Service::DataWrite {
            reference: reference.into(),
            bytes: bytes.to_vec(),
        })
    }
    fn head(&self, reference: &str) -> Result<Option<u64>> {
        match self.link.call(Service::DataHead {
            reference: reference.into(),
        })? {
            Value::Size(s) => Ok(s),
            other => Err(unexpected("a size", other)),
        }
    }
    fn delete(&self, reference: &str) -> Result<()> {
        self.link.unit(Service::DataDelete {
            reference: reference.into(),
        })
    }
}

fn unexpected(what: &str, got: Value) -> kozmo_interface::PluginError {
    kozmo_interface::PluginError::system("IsolationLink", format!("expected {what} from the daemon, got {got:?}"))
}

impl PluginStateReader for TaskProxy<'_> {
    fn state_version(&self) -> u8 {
        match self.link.call(Service::StateVersion) {
            Ok(Value::Int(v)) => v as u8,
            other => {
                log::error!("no state version from the daemon: {other:?}");
                0
            }
        }
    }
    fn get_bytes(&self) -> Result<(u8, Option<Vec<u8>>)> {
        match self.link.call(Service::StateGet)? {
            Value::State(v, b) => Ok((v, b)),
            other => Err(unexpected("plugin state", other)),
        }
    }
}

impl PluginStateWriter for TaskProxy<'_> {
    fn put_bytes(&self, version: u8, bytes: Vec<u8>) -> Result<()> {
        self.link.unit(Service::StatePut { version, bytes })
    }
    fn reset(&self) -> Result<()> {
        self.link.unit(Service::StateReset)
    }
}

impl TaskReader for TaskProxy<'_> {
    fn read(&self) -> Result<TaskTemplate> {
        self.link.json(Service::TaskRead, "task template")
    }
    fn path(&self) -> Result<String> {
        self.link.text(Service::TaskPath)
    }
}

impl InputReader for TaskProxy<'_> {
    fn input_prefix(&self) -> String {
        self.link.text(Service::InputPrefix).unwrap_or_default()
    }
    fn input_path(&self) -> String {
        self.link.text(Service::InputPath).unwrap_or_default()
    }
    fn get(&self) -> Result<LiteralMap> {
        self.link.json(Service::InputGet, "inputs")
    }
}

impl OutputWriter for TaskProxy<'_> {
    fn output_prefix(&self) -> String {
        self.link.text(Service::OutputPrefix).unwrap_or_default()
    }
    fn raw_output_prefix(&self) -> String {
        self.link.text(Service::RawOutputPrefix).unwrap_or_default()
    }
    fn checkpoint_prefix(&self) -> String {
        self.link.text(Service::CheckpointPrefix).unwrap_or_default()
    }
    fn previous_checkpoint_prefix(&self) -> String {
        self.link.text(Service::PreviousCheckpointPrefix).unwrap_or_default()
    }
    fn put_outputs(&self, outputs: LiteralMap) -> Result<()> {
        self.link.unit(Service::PutOutputs {
            outputs_json: json(&outputs)?,
        })
    }
    fn put_error(&self, error: ExecutionError, recoverable: bool) -> Result<()> {
        self.link.unit(Service::PutError {
            error_json: json(&error)?,
            recoverable,
        })
    }
}

impl Catalog for TaskProxy<'_> {
    fn get(&self, key: &CatalogKey) -> Result<Option<LiteralMap>> {
        self.link
            .json(Service::CatalogGet { key_json: json(key)? }, "catalog entry")
    }
    fn put(&self, key: &CatalogKey, outputs: &LiteralMap) -> Result<()> {
        self.link.unit(Service::CatalogPut {
            key_json: json(key)?,
            outputs_json: json(outputs)?,
        })
    }
}

impl EventsRecorder for TaskProxy<'_> {
    fn record_raw(&self, info: &PhaseInfo) -> Result<()> {
        self.link.unit(Service::RecordRaw { info_json: json(info)? })
    }
}
