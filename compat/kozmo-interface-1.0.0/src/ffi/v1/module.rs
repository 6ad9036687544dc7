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

/// How many additive changes epoch 1 has had since its release (host
/// services, plugin methods or root-module fields appended after the
/// frozen ones). Bump it with every append.
pub const ABI_MINOR: u32 = 0;

/// `"<ABI_EPOCH>.<ABI_MINOR>.0"`: the version abi_stable writes into the
/// library header and checks (same major) before anything else, so it is
/// the ABI version, never the crate's semver version.
pub const ABI_VERSION_STRING: &str = "1.0.0";

/// The `kozmo-interface` crate version plugins are built against
/// (information only: compatibility is the ABI version's business).
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every Kozmo plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[allow(non_camel_case_types)]
#[sabi(kind(Prefix(prefix_ref = PluginModule_Ref)))]
pub struct PluginModule {
    /// Kozmo's ABI epoch the library was built for.
    pub abi_epoch: u32,
    /// Kozmo's ABI minor the library was built for.
    pub abi_minor: u32,
    /// `kozmo-interface` version the library was built with.
    pub interface_version: RStr<'static>,
    /// `cfg!(panic = "unwind")` of the library build; `false` = refuse it.
    pub panic_unwind: bool,
    /// Called once, right after the host opened the library: the host's
    /// ABI version (epoch, minor), its log sink and maximum log level
    /// (0 off … 5 trace). Installs the forwarding logger and panic hook.
    pub attach: extern "C" fn(u32, u32, FfiLogSink_TO<'static, RBox<()>>, u8),
    /// The library's plugin entries.
    #[sabi(last_prefix_field)]
    pub entries: extern "C" fn() -> RResult<RVec<FfiPluginEntry>, FfiError>,
    // kozmo-abi-append: root-module
    // Fields appended in later minors go here, in order, never between the
    // ones above; the host reads each through its `Option`-returning
    // accessor (`None` = the library predates the field).
}

impl RootModule for PluginModule_Ref {
    declare_root_module_statics! {PluginModule_Ref}
    const BASE_NAME: &'static str = "kozmo_plugin";
    const NAME: &'static str = "kozmo_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION_STRING);
}

extern "C" fn attach(host_epoch: u32, host_minor: u32, sink: FfiLogSink_TO<'static, RBox<()>>, max_level: u8) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        crate::abi::set_host_abi(crate::abi::AbiVersion::new(host_epoch, host_minor));
        install_forwarding_logger(sink, max_level)
    }));
}

/// Builds the root module (called once by the export macro's loader).
pub fn build_module(
    entries: extern "C" fn() -> RResult<RVec<FfiPluginEntry>, FfiError>,
    abi_epoch: u32,
    panic_unwind: bool,
) -> PluginModule_Ref {
    let module = PluginModule {
        abi_epoch,
        abi_minor: ABI_MINOR,
        interface_version: RStr::from_str(INTERFACE_VERSION),
        panic_unwind,
        attach,
        entries,
        // kozmo-abi-append: root-module-value
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
