//! # kozmo-interface
//!
//! The crate Kozmo plugin authors build against. A plugin is a `cdylib`
//! that implements [`Plugin`] in plain Rust and exports [`PluginEntry`]s
//! with [`export_plugins!`]; the `kozmo` daemon loads it from its plugin
//! directory and drives every task through it, round after round.
//!
//! No abi_stable type appears in an author's code: the glue this crate
//! compiles into the plugin converts at the boundary, catches panics (they
//! become [`PluginError`]s, never a dead daemon) and forwards `log` records
//! to the daemon's logger.
//!
//! ## A complete plugin
//!
//! `kozmo plugins new NAME` writes a crate to start from (it builds, tests
//! and loads as it is). By hand, `Cargo.toml` (this crate is not on
//! crates.io: depend on a checkout's `interface/` by path):
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # the library the daemon loads; rlib for `cargo test`
//!
//! [dependencies]
//! kozmo-interface = { path = "/path/to/kozmo/interface" }
//! log = "0.4"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use kozmo_interface::{
//!     Plugin, PluginEntry, PluginLoader, PhaseInfo, Result, TaskExecutionContext, Transition,
//! };
//!
//! /// Returns its inputs as its outputs.
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn id(&self) -> &str {
//!         "echo"
//!     }
//!
//!     fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
//!         let inputs = ctx.input_reader().get()?;
//!         log::info!("echoing {} inputs", inputs.len());
//!         ctx.output_writer().put_outputs(inputs)?;
//!         Ok(Transition::ephemeral(PhaseInfo::success(None)))
//!     }
//!
//!     fn abort(&self, _ctx: &dyn TaskExecutionContext) -> Result<()> {
//!         Ok(())
//!     }
//!
//!     fn finalize(&self, _ctx: &dyn TaskExecutionContext) -> Result<()> {
//!         Ok(())
//!     }
//! }
//!
//! fn echo_entry() -> PluginEntry {
//!     PluginEntry {
//!         id: "echo".into(),
//!         registered_task_types: vec!["echo".into()],
//!         load_plugin: PluginLoader::new(|_setup| Ok(Box::new(Echo))),
//!         is_default: true,
//!     }
//! }
//!
//! kozmo_interface::export_plugins![echo_entry()];
//! # fn main() {}
//! ```
//!
//! ## Compatibility
//!
//! A plugin is built against an ABI version, epoch.minor (see [`abi`]). A
//! plugin built against 1.x loads and runs unchanged in every 1.y daemon
//! with y ≥ x. In an older daemon (y < x) it still loads, with a warning,
//! and each host service added after 1.y returns an error with code
//! [`abi::NEEDS_NEWER_HOST`] naming the minor it needs; [`abi::host_abi`]
//! tells the plugin which ABI its daemon speaks. New trait methods always
//! come with default bodies, so a plugin's source keeps compiling. An
//! incompatible change is a new epoch, and daemons keep loading the older
//! epochs.
//!
//! ## Map
//!
//! * Values: [`Phase`], [`PhaseInfo`] and its constructors, [`Transition`],
//!   [`TaskInfo`], [`ExecutionError`], [`AllocationStatus`],
//!   [`ResourceNamespace`], [`PluginProperties`], [`PluginError`].
//! * Host services a plugin receives: [`TaskExecutionContext`] (13
//!   accessors) and [`SetupContext`] with the traits they return.
//! * [`kit`] (what every plugin otherwise writes itself: the generated
//!   name, the raw output directory, quota allocation answering the phase
//!   to report, `now_ms`), [`io::local_dir`] (the raw output prefix's
//!   forms: see [`OutputWriter::raw_output_prefix`]).
//! * [`encoding`] (generated names), [`template`] (argument rendering),
//!   [`literals`] (input/output values), [`state`] (typed plugin state),
//!   [`testing`] (in-memory host services to unit-test a plugin, shared
//!   quotas wired to the loader's, [`testing::drive`] to run rounds as the
//!   daemon does, captured logs).
//! * [`abi`] (the ABI version) and [`host`] (for hosts: open a plugin
//!   library). The frozen per-epoch FFI layer underneath is not part of
//!   this API and not documented here: authors never need it.

#![deny(missing_docs)]

pub mod abi;
pub mod context;
pub mod encoding;
mod error;
mod export;
// The FFI layer (value mirrors, `#[sabi_trait]` contexts, the root module of
// each frozen ABI epoch) has to be `pub`: the code `export_plugins!`
// expands to inside a plugin crate names its types (through `__private`),
// and so do `host::open_library`, the ABI layout tests and the
// compatibility suite's simulated interfaces. It is not part of the author
// API, whose every item is plain Rust, so it stays out of the documentation.
#[doc(hidden)]
pub mod ffi;
pub mod host;
pub mod io;
pub mod kit;
pub mod literals;
pub mod metadata;
pub mod metrics;
mod phase;
mod phase_info;
mod plugin;
mod properties;
mod resource;
pub mod resource_manager;
pub mod state;
pub mod task;
mod task_info;
pub mod template;
pub mod testing;
mod transition;
pub mod webapi;

pub use context::{
    Catalog, CatalogKey, EnqueueOwner, EventsRecorder, SecretManager, SetupContext, SignalAsync, TaskExecutionContext,
};
pub use error::{ErrorKind, ExecutionError, PluginError, Result, PANIC_ERROR_CODE};
pub use io::{DataStore, InputReader, OutputWriter, TaskReader};
pub use literals::{Literal, LiteralMap};
pub use metadata::{TaskExecutionId, TaskExecutionMetadata, TaskOverrides};
pub use metrics::{Counter, Gauge, Histogram, MetricsScope};
pub use phase::{ParsePhaseError, Phase, DEFAULT_PHASE_VERSION, SYSTEM_ERROR_CODE};
pub use phase_info::PhaseInfo;
pub use plugin::{load_plugin, validate_properties, Plugin, PluginEntry, PluginLoader, TaskType};
pub use properties::{PluginProperties, DEFAULT_GENERATED_NAME_MAX_LENGTH, MIN_GENERATED_NAME_MAX_LENGTH};
pub use resource::{AllocationStatus, ResourceConstraint, ResourceConstraintsSpec, ResourceNamespace};
pub use resource_manager::{ResourceManager, ResourceRegistrar};
pub use state::{PluginStateReader, PluginStateReaderExt, PluginStateWriter, PluginStateWriterExt};
pub use task_info::{format_rfc3339_nanos, ExternalResource, ReasonInfo, TaskInfo, TaskLog};
pub use transition::{ParseTransitionTypeError, Transition, TransitionType};

/// Re-exported so authors can build times and values without another
/// dependency.
pub use chrono;
pub use serde_json;

/// Items the export macro expands to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
    pub use abi_stable::std_types::{RResult, RVec};

    pub use crate::ffi::current::{
        build_module, export_entries, FfiError, FfiPluginEntry, PluginModule_Ref, ABI_EPOCH,
    };

    /// What the generated entries function returns.
    pub type EntriesResult = RResult<RVec<FfiPluginEntry>, FfiError>;

    /// abi_stable's loader wrapper (catches panics of the module builder).
    pub fn call_root_module_loader(f: fn() -> PluginModule_Ref) -> RootModuleResult {
        abi_stable::library::__call_root_module_loader(f)
    }
}
