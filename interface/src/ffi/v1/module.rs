//! The library's root module (an abi_stable prefix type) and the glue the
//! export macro calls.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, RResult, RStr, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};

use super::guard::panic_message;
use super::logging::{install_forwarding_logger, FfiLogSink_TO};
use super::plugin::FfiPluginEntry;
use super::values::FfiError;
use crate::plugin::PluginEntry;
use crate::PluginError;

/// Kozmo's own ABI epoch number for this module layout.
pub const ABI_EPOCH: u32 = 1;

/// The interface version plugins are built against.
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every Kozmo plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[allow(non_camel_case_types)]
#[sabi(kind(Prefix(prefix_ref = PluginModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// Kozmo's ABI epoch the library was built for.
    pub abi_epoch: u32,
    /// `kozmo-interface` version the library was built with.
    pub interface_version: RStr<'static>,
    /// `cfg!(panic = "unwind")` of the library build; `false` = refuse it.
    pub panic_unwind: bool,
    /// Installs the forwarding logger (sink, max level 0 off … 5 trace).
    pub install_logger: extern "C" fn(FfiLogSink_TO<'static, RBox<()>>, u8),
    /// The library's plugin entries.
    #[sabi(last_prefix_field)]
    pub entries: extern "C" fn() -> RResult<RVec<FfiPluginEntry>, FfiError>,
}

impl RootModule for PluginModule_Ref {
    declare_root_module_statics! {PluginModule_Ref}
    const BASE_NAME: &'static str = "kozmo_plugin";
    const NAME: &'static str = "kozmo_plugin";
    const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
}

extern "C" fn install_logger(sink: FfiLogSink_TO<'static, RBox<()>>, max_level: u8) {
    let _ = catch_unwind(AssertUnwindSafe(|| install_forwarding_logger(sink, max_level)));
}

/// Builds the root module (called once by the export macro's loader).
pub fn build_module(
    entries: extern "C" fn() -> RResult<RVec<FfiPluginEntry>, FfiError>,
    abi_epoch: u32,
    panic_unwind: bool,
) -> PluginModule_Ref {
    let module = PluginModule {
        abi_epoch,
        interface_version: RStr::from_str(INTERFACE_VERSION),
        panic_unwind,
        install_logger,
        entries,
    };
    module.leak_into_prefix()
}

/// Runs the author's entry list under `catch_unwind` and converts it.
pub fn export_entries(make: fn() -> Vec<PluginEntry>) -> RResult<RVec<FfiPluginEntry>, FfiError> {
    match catch_unwind(make) {
        Ok(entries) => RResult::ROk(entries.into_iter().map(FfiPluginEntry::from).collect()),
        Err(p) => RResult::RErr(
            PluginError::panic(format!("panic while listing plugin entries: {}", panic_message(&*p))).into(),
        ),
    }
}
