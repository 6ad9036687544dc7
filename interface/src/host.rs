//! For hosts: open a plugin library and get plain [`PluginEntry`]s back.
//!
//! This is the only place that touches abi_stable's loader, so hosts never
//! see an abi_stable type.

use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError};

use crate::abi::{AbiVersion, ABI_VERSION};
use crate::ffi;
use crate::plugin::PluginEntry;
use crate::PluginError;

/// The name of the exported symbol every abi_stable library has; check for
/// it in the dynamic symbol table before opening a file.
pub const ROOT_MODULE_SYMBOL: &str = abi_stable::library::ROOT_MODULE_LOADER_NAME;

/// Why a library could not be opened as a Kozmo plugin.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenError {
    /// `dlopen` failed (not a library, unreadable, missing dependency).
    NotALibrary(String),
    /// The library has no abi_stable root module (not built with `export_plugins!`).
    NoRootModule(String),
    /// abi_stable's own header is of another abi_stable release.
    AbiHeaderMismatch(String),
    /// The interface version's major differs.
    InterfaceMismatch {
        /// What this host supports.
        expected: String,
        /// What the library was built with.
        found: String,
    },
    /// The types differ in layout from this host's interface.
    LayoutMismatch {
        /// The `Error:` lines of abi_stable's report.
        summary: Vec<String>,
        /// The whole report (hundreds of lines).
        report: String,
    },
    /// Kozmo's ABI epoch differs.
    EpochMismatch {
        /// What this host supports.
        expected: u32,
        /// What the library declares.
        found: u32,
    },
    /// The library was built with `panic = "abort"`; a panic in it would
    /// kill the daemon.
    PanicAbort,
    /// Listing the library's entries failed (error or panic).
    Entries(PluginError),
    /// Anything else abi_stable reported.
    Other(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotALibrary(e) => write!(f, "not a loadable library: {e}"),
            OpenError::NoRootModule(e) => write!(f, "no Kozmo root module (build it with kozmo_interface::export_plugins!): {e}"),
            OpenError::AbiHeaderMismatch(e) => write!(f, "abi_stable header mismatch: {e}"),
            OpenError::InterfaceMismatch { expected, found } => write!(
                f,
                "interface version mismatch: the host supports kozmo-interface {expected}, the plugin was built with {found}"
            ),
            OpenError::LayoutMismatch { summary, .. } => {
                write!(f, "type layout mismatch with this host's interface: {}", summary.join("; "))
            }
            OpenError::EpochMismatch { expected, found } => {
                write!(f, "ABI epoch mismatch: the host supports epoch {expected}, the plugin declares epoch {found}")
            }
            OpenError::PanicAbort => write!(
                f,
                "the plugin was built with panic = \"abort\"; rebuild it with panic = \"unwind\" (the default) so a panic cannot kill the daemon"
            ),
            OpenError::Entries(e) => write!(f, "listing the plugin entries failed: {e}"),
            OpenError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// A library opened as a Kozmo plugin library.
#[derive(Debug)]
pub struct OpenedLibrary {
    /// The file it was opened from.
    pub path: PathBuf,
    /// The ABI version it was built for.
    pub abi: AbiVersion,
    /// The interface crate version it was built with.
    pub interface_version: String,
    /// Its entries, with loaders that call into the library.
    pub entries: Vec<PluginEntry>,
}

impl OpenedLibrary {
    /// Whether the library was built against a newer minor than this
    /// host's: it runs, but the host services added after this host's
    /// minor report [`needs_newer_host`](crate::abi::needs_newer_host).
    pub fn is_newer_than_host(&self) -> bool {
        self.abi.epoch == ABI_VERSION.epoch && self.abi.minor > ABI_VERSION.minor
    }

    /// The warning for a newer library, e.g. `built against kozmo ABI 1.3,
    /// this host speaks 1.1: host services added after 1.1 are unavailable`.
    pub fn newer_warning(&self) -> Option<String> {
        self.is_newer_than_host().then(|| {
            format!(
                "built against kozmo ABI {}, this host speaks {}: host services added after {} are unavailable to it (they return {}); upgrade the daemon",
                self.abi, ABI_VERSION, ABI_VERSION, crate::abi::NEEDS_NEWER_HOST
            )
        })
    }
}

pub(crate) fn classify(e: LibraryError) -> OpenError {
    match e {
        LibraryError::OpenError { err, .. } => OpenError::NotALibrary(err.to_string()),
        LibraryError::GetSymbolError { err, .. } => OpenError::NoRootModule(err.to_string()),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => OpenError::InterfaceMismatch {
            expected: expected_version.to_string(),
            found: actual_version.to_string(),
        },
        LibraryError::AbiInstability(report) => {
            let report = report.to_string();
            let summary = report
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("Error:"))
                .map(str::to_string)
                .collect::<Vec<_>>();
            let summary = if summary.is_empty() {
                vec![report.lines().next().unwrap_or("unknown").to_string()]
            } else {
                summary
            };
            OpenError::LayoutMismatch { summary, report }
        }
        LibraryError::InvalidAbiHeader(h) => OpenError::AbiHeaderMismatch(format!("{h:?}")),
        other => OpenError::Other(other.to_string()),
    }
}

/// The highest log level currently enabled in the host, as the plugin
/// logger's number (0 off … 5 trace).
pub(crate) fn host_max_level() -> u8 {
    log::max_level() as usize as u8
}

/// The ABI version a library's header declares (abi_stable's version
/// strings hold `"<epoch>.<minor>.0"`).
fn header_abi(header: &LibHeader) -> Result<AbiVersion, OpenError> {
    let text = header.version_strings().version.as_str();
    AbiVersion::parse(text)
        .ok_or_else(|| OpenError::Other(format!("unreadable ABI version {text:?} in the library header")))
}

/// Opens `path` as a plugin library: abi_stable's header, the ABI epoch
/// (each epoch has its own frozen module; this host keeps every one it
/// ever shipped), Kozmo's layout check (abi_stable's, forgiving only
/// appended optional fields: module `ffi::layout_check`),
/// the panic strategy; then attaches the host (ABI version, log forwarder)
/// and lists the entries.
///
/// The library stays loaded for the life of the process.
pub fn open_library(path: &Path) -> Result<OpenedLibrary, OpenError> {
    let header = lib_header_from_path(path).map_err(classify)?;
    let abi = header_abi(header)?;
    match abi.epoch {
        // kozmo-abi-append: epoch-dispatch
        // A new epoch adds its arm above this line, newest first; the arms
        // of older epochs stay, so their plugins keep loading.
        1 => ffi::v1::open(path, header, abi),
        found => Err(OpenError::EpochMismatch {
            expected: ABI_VERSION.epoch,
            found,
        }),
    }
}

/// The version of `kozmo-interface` this host was built with.
pub fn interface_version() -> &'static str {
    ffi::current::INTERFACE_VERSION
}
