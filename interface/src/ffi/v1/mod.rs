//! ABI epoch 1. Frozen from the first release that ships it: from then on
//! only appended prefix fields and appended trait methods (after
//! `last_prefix_field`) may change it. Not released yet, so its layout may
//! still change in place.

#![allow(non_local_definitions, non_camel_case_types)]

mod context;
mod guard;
mod logging;
mod module;
mod plugin;
mod setup;
mod values;

pub use context::{FfiTaskContext, FfiTaskContext_TO, HostTaskContext, PluginTaskContext};
pub use guard::{guard, guard_status, panic_message};
pub use logging::{install_forwarding_logger, FfiLogSink, FfiLogSink_TO, HostLogSink};
pub use module::{build_module, export_entries, PluginModule, PluginModule_Ref, ABI_EPOCH, INTERFACE_VERSION};
pub use plugin::{host_entry, FfiLoader, FfiLoader_TO, FfiPlugin, FfiPluginEntry, FfiPlugin_TO, HostedPlugin};
pub use setup::{
    FfiEnqueueOwner, FfiEnqueueOwner_TO, FfiMetric, FfiMetric_TO, FfiSetupContext, FfiSetupContext_TO, FfiSignal,
    FfiSignal_TO, HostSetupContext, PluginSetupContext,
};
pub use values::{
    FfiError, FfiExecError, FfiPhaseInfo, FfiPhaseRare, FfiProperties, FfiStrSink, FfiTime, FfiTransition,
};
