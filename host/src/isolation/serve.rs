//! The host services a child asks for during a call, answered from the
//! daemon's own context of that call: the engine's `TaskExecutionContext`
//! for handle/abort/finalize, the loader's `SetupContext` for a load.

use kozmo_interface::context::CatalogKey;
use kozmo_interface::{
    ExecutionError, LiteralMap, PhaseInfo, PluginError, ResourceConstraintsSpec, ResourceNamespace, Result,
    SetupContext, TaskExecutionContext,
};
use kozmo_isolation_protocol::{Service, Value, WireError};

use super::control::{Handles, MetricSpec};
use super::wire::{json, parse, to_wire};

/// The daemon's context of the call being served.
pub enum Served<'a> {
    /// A handle, abort or finalize.
    Task(&'a dyn TaskExecutionContext),
    /// A loader; `first` is false when a restarted child loads again
    /// (quotas are registered once, at the first load).
    Setup {
        /// The loader's context.
        ctx: &'a dyn SetupContext,
        /// Whether this is the first load of the entry.
        first: bool,
    },
}

/// The execution a task context belongs to.
pub fn execution_id(ctx: &dyn TaskExecutionContext) -> String {
    ctx.task_execution_metadata().owner_id().name.clone()
}

fn unavailable(service: &Service) -> PluginError {
    let name = format!("{service:?}");
    let name = name.split([' ', '{', '(']).next().unwrap_or_default().to_string();
    PluginError::system("ServiceUnavailable", format!("{name} is not available in this call"))
}

/// Answers one service request.
pub fn serve(service: Service, served: &Served<'_>, handles: &Handles) -> std::result::Result<Value, WireError> {
    let r = match served {
        Served::Task(ctx) => task_service(service, *ctx, handles),
        Served::Setup { ctx, first } => setup_service(service, *ctx, *first, handles),
    };
    r.map_err(|e| to_wire(&e))
}

fn setup_service(service: Service, ctx: &dyn SetupContext, first: bool, handles: &Handles) -> Result<Value> {
    Ok(match service {
        Service::Secret { key } => Value::Text(ctx.secret_manager().get(&key)?),
        Service::RegisterMetric {
            kind,
            scope,
            name,
            help,
            buckets,
        } => Value::Handle(handles.metric(
            ctx.metrics_scope(),
            &MetricSpec {
                kind,
                path: &scope,
                name: &name,
                help: &help,
                buckets: &buckets,
            },
        )?),
        Service::RegisterQuota { namespace_json, quota } => {
            let ns: ResourceNamespace = parse(&namespace_json, "resource namespace")?;
            if first {
                ctx.resource_registrar().register_resource_quota(&ns, quota)?;
            } else {
                log::debug!(target: &handles.target(), "quota {ns:?} = {quota} kept from the first load");
            }
            Value::Unit
        }
        other => return Err(unavailable(&other)),
    })
}

fn task_service(service: Service, ctx: &dyn TaskExecutionContext, handles: &Handles) -> Result<Value> {
    Ok(match service {
        Service::ResourceManagerId => Value::Text(ctx.resource_manager().id()),
        Service::Allocate {
            namespace_json,
            token,
            constraints_json,
        } => {
            let ns: ResourceNamespace = parse(&namespace_json, "resource namespace")?;
            let c: ResourceConstraintsSpec = parse(&constraints_json, "resource constraints")?;
            Value::Text(json(&ctx.resource_manager().allocate_resource(&ns, &token, &c)?)?)
        }
        Service::Release { namespace_json, token } => {
            let ns: ResourceNamespace = parse(&namespace_json, "resource namespace")?;
            ctx.resource_manager().release_resource(&ns, &token)?;
            Value::Unit
        }
        Service::Secret { key } => Value::Text(ctx.secret_manager().get(&key)?),
        Service::RefreshIndicator => {
            Value::Handle(handles.signal_handle(&execution_id(ctx), ctx.task_refresh_indicator()))
        }
        Service::MaxDatasetSize => Value::Int(ctx.max_dataset_size_bytes()),
        Service::DataRead { reference } => Value::Bytes(ctx.data_store().read_raw(&reference)?),
        Service::DataWrite { reference, bytes } => {
            ctx.data_store().write_raw(&reference, &bytes)?;
            Value::Unit
        }
        Service::DataHead { reference } => Value::Size(ctx.data_store().head(&reference)?),
        Service::DataDelete { reference } => {
            ctx.data_store().delete(&reference)?;
            Value::Unit
        }
        Service::StateVersion => Value::Int(i64::from(ctx.plugin_state_reader().state_version())),
        Service::StateGet => {
            let (v, b) = ctx.plugin_state_reader().get_bytes()?;
            Value::State(v, b)
        }
        Service::StatePut { version, bytes } => {
            ctx.plugin_state_writer().put_bytes(version, bytes)?;
            Value::Unit
        }
        Service::StateReset => {
            ctx.plugin_state_writer().reset()?;
            Value::Unit
        }
        Service::TaskRead => Value::Text(json(&ctx.task_reader().read()?)?),
        Service::TaskPath => Value::Text(ctx.task_reader().path()?),
        Service::InputPrefix => Value::Text(ctx.input_reader().input_prefix()),
        Service::InputPath => Value::Text(ctx.input_reader().input_path()),
        Service::InputGet => Value::Text(json(&ctx.input_reader().get()?)?),
        Service::Metadata => Value::Text(json(&kozmo_interface::metadata::MetadataRecord::capture(
            ctx.task_execution_metadata(),
        ))?),
        Service::OutputPrefix => Value::Text(ctx.output_writer().output_prefix()),
        Service::RawOutputPrefix => Value::Text(ctx.output_writer().raw_output_prefix()),
        Service::CheckpointPrefix => Value::Text(ctx.output_writer().checkpoint_prefix()),
        Service::PreviousCheckpointPrefix => Value::Text(ctx.output_writer().previous_checkpoint_prefix()),
        Service::PutOutputs { outputs_json } => {
            let outputs: LiteralMap = parse(&outputs_json, "outputs")?;
            ctx.output_writer().put_outputs(outputs)?;
            Value::Unit
        }
        Service::PutError {
            error_json,
            recoverable,
        } => {
            let e: ExecutionError = parse(&error_json, "error document")?;
            ctx.output_writer().put_error(e, recoverable)?;
            Value::Unit
        }
        Service::CatalogGet { key_json } => {
            let key: CatalogKey = parse(&key_json, "catalog key")?;
            Value::Text(json(&ctx.catalog().get(&key)?)?)
        }
        Service::CatalogPut { key_json, outputs_json } => {
            let key: CatalogKey = parse(&key_json, "catalog key")?;
            let outputs: LiteralMap = parse(&outputs_json, "outputs")?;
            ctx.catalog().put(&key, &outputs)?;
            Value::Unit
        }
        Service::RecordRaw { info_json } => {
            let info: PhaseInfo = parse(&info_json, "phase info")?;
            ctx.events_recorder().record_raw(&info)?;
            Value::Unit
        }
        other => return Err(unavailable(&other)),
    })
}
