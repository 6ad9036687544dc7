//! The loader's branch point: a library with an isolated plugin is opened
//! by a supervised child, and its entries' loaders run there.
//!
//! Which plugins a library holds is known only once it is open, so when
//! isolation names particular plugins every library is first opened by a
//! child; a library none of whose plugins is isolated is then let go (its
//! child retired) and opened in the daemon as usual.

use std::path::Path;
use std::sync::Arc;

use kozmo_interface::host::OpenedLibrary;
use kozmo_interface::{Plugin, PluginEntry, PluginError, PluginLoader, PluginProperties, SetupContext};
use kozmo_isolation_protocol::Outcome;

use super::plugin::{IsolatedPlugin, DIED_CODE};
use super::spawn::signal_name;
use super::supervisor::{Failure, Opened, Supervisor};
use super::wire::{from_wire, parse};
use super::IsolationConfig;
use crate::loader::{LoaderServices, Problem, ProblemKind};

/// Opens `file` (resolved to `resolved`) in a child if `cfg` isolates one
/// of its plugins (or every plugin); `None` when it is not isolated.
pub fn open_isolated(
    file: &Path,
    resolved: &Path,
    cfg: &IsolationConfig,
    services: &LoaderServices,
) -> Option<Result<OpenedLibrary, Problem>> {
    if !cfg.is_active() {
        return None;
    }
    let f = file.display();
    let label = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (sup, opened) = match Supervisor::start(resolved.to_path_buf(), file.to_path_buf(), label, cfg, services) {
        Ok(x) => x,
        Err(e) => {
            return Some(Err(Problem::file(
                ProblemKind::Other,
                file,
                format!("{f}: cannot start a plugin process for it: {e}"),
            )))
        }
    };
    let lib = match opened {
        Opened::Crashed { cause, signal } => {
            let how = match signal {
                Some(sig) => format!("crashed while loading ({})", signal_name(sig)),
                None => format!("ended while loading ({cause})"),
            };
            return Some(Err(Problem::file(ProblemKind::LoadCrash, file, format!("{f}: {how}"))));
        }
        Opened::Refused(failure) => {
            let kind = open_kind(&failure.kind);
            return Some(Err(Problem::file(kind, file, failure.message)));
        }
        Opened::Library(lib) => lib,
    };
    if !cfg.covers_all() && !lib.entries.iter().any(|e| cfg.covers(&e.id)) {
        sup.retire();
        return None;
    }
    let ids: Vec<&str> = lib.entries.iter().map(|e| e.id.as_str()).collect();
    sup.handles.set_label(&ids.join("+"));
    log::info!("{f}: isolated in plugin process {}", sup.pid().unwrap_or_default());
    let entries = lib
        .entries
        .into_iter()
        .map(|e| {
            let (sup, entry) = (sup.clone(), e.id.clone());
            PluginEntry {
                id: e.id,
                registered_task_types: e.task_types,
                is_default: e.is_default,
                load_plugin: PluginLoader::new(move |ctx| load_entry(&sup, &entry, ctx)),
            }
        })
        .collect();
    Some(Ok(OpenedLibrary {
        path: file.to_path_buf(),
        abi: kozmo_interface::abi::AbiVersion::new(lib.abi_epoch, lib.abi_minor),
        interface_version: lib.interface_version,
        entries,
    }))
}

/// The kind of a problem the child met opening the library, from its name
/// (only `open_library`'s kinds can come back).
fn open_kind(name: &str) -> ProblemKind {
    use ProblemKind::*;
    [
        NotALibrary,
        NoRootModule,
        AbiHeaderMismatch,
        InterfaceMismatch,
        EpochMismatch,
        LayoutMismatch,
        PanicAbort,
        EntriesFailed,
    ]
    .into_iter()
    .find(|k| k.name() == name)
    .unwrap_or(Other)
}

/// An entry's loader: runs the real loader in the child.
fn load_entry(sup: &Arc<Supervisor>, entry: &str, ctx: &dyn SetupContext) -> kozmo_interface::Result<Box<dyn Plugin>> {
    match sup.load(entry, ctx) {
        Ok(Outcome::Loaded(Ok((id, properties)))) => {
            let properties: PluginProperties = parse(&properties, "plugin properties")?;
            Ok(Box::new(IsolatedPlugin::new(
                sup.clone(),
                entry.to_string(),
                id,
                properties,
            )))
        }
        Ok(Outcome::Loaded(Err(e))) => Err(from_wire(e)),
        Ok(other) => Err(PluginError::system(
            "IsolationProtocol",
            format!("the plugin process answered a load with {other:?}"),
        )),
        Err(Failure::Died(cause) | Failure::NotRunning(cause)) => Err(PluginError::system(
            DIED_CODE,
            format!("the plugin process died while loading: {cause}"),
        )),
    }
}
