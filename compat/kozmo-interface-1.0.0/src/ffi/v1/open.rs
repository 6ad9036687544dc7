//! Host side: opens a library whose header declares epoch 1.

use std::path::Path;

use abi_stable::library::LibHeader;
use abi_stable::StableAbi;

use super::logging::HostLogSink;
use super::module::{PluginModule_Ref, ABI_EPOCH};
use super::plugin::host_entry;
use crate::abi::{AbiVersion, ABI_VERSION};
use crate::ffi::layout_check;
use crate::host::{classify, host_max_level, OpenError, OpenedLibrary};

/// Kozmo's layout check against epoch 1's root module, then the module's
/// own checks, the host attach and the entries.
pub(crate) fn open(path: &Path, header: &'static LibHeader, abi: AbiVersion) -> Result<OpenedLibrary, OpenError> {
    let Some(layout) = header.layout() else {
        return Err(OpenError::Other(
            "the library's root module carries no type layout to check; build it with kozmo_interface::export_plugins!"
                .into(),
        ));
    };
    layout_check::check(<PluginModule_Ref as StableAbi>::LAYOUT, layout).map_err(|e| OpenError::LayoutMismatch {
        summary: e.summary,
        report: e.report,
    })?;
    // SAFETY: the layout of the library's root module was just checked
    // against `PluginModule_Ref`'s; the only differences forgiven are
    // prefix-type fields the accessors check at run time.
    let module: PluginModule_Ref =
        unsafe { header.init_root_module_with_unchecked_layout::<PluginModule_Ref>() }.map_err(classify)?;
    let declared = AbiVersion::new(module.abi_epoch(), module.abi_minor());
    if declared.epoch != ABI_EPOCH {
        return Err(OpenError::EpochMismatch {
            expected: ABI_EPOCH,
            found: declared.epoch,
        });
    }
    if declared != abi {
        return Err(OpenError::Other(format!(
            "the library header says ABI {abi} but its root module says {declared}; rebuild it with kozmo_interface::export_plugins!"
        )));
    }
    if !module.panic_unwind() {
        return Err(OpenError::PanicAbort);
    }
    (module.attach())(
        ABI_VERSION.epoch,
        ABI_VERSION.minor,
        HostLogSink::object(),
        host_max_level(),
    );
    let entries = (module.entries())()
        .into_result()
        .map_err(|e| OpenError::Entries(e.into()))?;
    Ok(OpenedLibrary {
        path: path.to_path_buf(),
        abi,
        interface_version: module.interface_version().as_str().to_string(),
        entries: entries.into_iter().map(host_entry).collect(),
    })
}
