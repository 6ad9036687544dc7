//! ABI epoch 1, released with kozmo-interface 1.0.0 and frozen since: the
//! only changes allowed are appends at the `kozmo-abi-append` markers (a
//! root-module field after `entries`, a trait method after the one marked
//! `last_prefix_field`, each with a default body), and each append bumps
//! [`ABI_MINOR`]. `interface/abi/v1.layout` holds the layout snapshot a
//! test compares against; `compat/kozmo-interface-1.0.0/` the released
//! source.

#![allow(non_local_definitions, non_camel_case_types)]

mod context;
mod guard;
mod logging;
mod module;
mod open;
mod plugin;
mod setup;
mod values;

pub use context::{FfiTaskContext, FfiTaskContext_TO, HostTaskContext, PluginTaskContext};
pub use guard::{guard, guard_status, panic_message};
pub use logging::{install_forwarding_logger, FfiLogSink, FfiLogSink_TO, HostLogSink};
pub use module::{
    build_module, export_entries, PluginModule, PluginModule_Ref, ABI_EPOCH, ABI_MINOR, ABI_VERSION_STRING,
    INTERFACE_VERSION,
};
pub(crate) use open::open;
pub use plugin::{host_entry, FfiLoader, FfiLoader_TO, FfiPlugin, FfiPluginEntry, FfiPlugin_TO, HostedPlugin};
pub use setup::{
    FfiEnqueueOwner, FfiEnqueueOwner_TO, FfiMetric, FfiMetric_TO, FfiSetupContext, FfiSetupContext_TO, FfiSignal,
    FfiSignal_TO, HostSetupContext, PluginSetupContext,
};
pub use values::{
    FfiError, FfiExecError, FfiPhaseInfo, FfiPhaseRare, FfiProperties, FfiStrSink, FfiTime, FfiTransition,
};
