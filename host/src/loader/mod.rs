//! Plugin discovery, checks and validation: turns a plugin directory into
//! [`LoadedPlugins`] (task type -> plugin) or a [`LoadReport`] listing every
//! problem, one line each.
//!
//! Order, per file: permissions ([`permissions`]), the root-module symbol
//! read without loading the file ([`symbols`]), then
//! [`kozmo_interface::host::open_library`] (abi_stable header, interface
//! version, layout, epoch, panic strategy) and the entries' shape. Then,
//! across files ([`registry`]): duplicate ids, defaults, task type claims and
//! the configuration. Last, every planned entry's loader runs with its own
//! [`setup::PluginSetupContext`].

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kozmo_interface::host::{open_library, OpenError, OpenedLibrary};
use kozmo_interface::{EnqueueOwner, Plugin, ResourceRegistrar, SecretManager};

pub mod discovery;
pub mod errors;
pub mod permissions;
pub mod probe;
pub mod registry;
pub mod setup;
pub mod symbols;

pub use errors::{LoadReport, Problem, ProblemKind};
pub use registry::{LoadedPlugin, LoadedPlugins, PluginInfo, UnknownTaskType};

use crate::metrics::Metrics;
use discovery::Candidate;
use registry::StagedEntry;

/// How to load a plugin directory (the daemon's `plugins` configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoaderConfig {
    /// The directory holding the plugin libraries (not searched recursively).
    pub plugins_dir: PathBuf,
    /// Plugin ids to load; empty = all.
    pub enabled_plugins: Vec<String>,
    /// Task type -> plugin id, for task types several plugins register.
    pub default_for_task_types: BTreeMap<String, String>,
    /// Skip files and plugins with problems (reported as warnings) instead
    /// of refusing to start. Cross-file and configuration problems stay
    /// errors.
    pub skip_invalid_plugins: bool,
    /// Accept a plugin directory or file writable by group/others or owned
    /// by another user.
    pub allow_insecure_plugin_dir: bool,
    /// Which plugins run in a supervised child process.
    pub isolation: crate::isolation::IsolationConfig,
    /// The program that opens each library in a child process first
    /// ([`probe`]): a `kozmo` binary. The daemon and the CLI pass their own
    /// executable ([`LoaderConfig::probing_with_current_exe`]), integration
    /// tests the built `kozmo`; `None` (the default) opens libraries
    /// in-process only.
    pub probe_program: Option<PathBuf>,
}

impl LoaderConfig {
    /// Strict, secure defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LoaderConfig {
            plugins_dir: dir.into(),
            ..Default::default()
        }
    }

    /// The same, probing libraries with this process's executable (the
    /// `kozmo` binary); without probing if it cannot be found.
    pub fn probing_with_current_exe(self) -> Self {
        let probe_program = std::env::current_exe()
            .map_err(|e| log::warn!("cannot find the kozmo executable for load probing: {e}"))
            .ok();
        LoaderConfig { probe_program, ..self }
    }
}

/// The daemon services plugin loaders get.
#[derive(Clone)]
pub struct LoaderServices {
    /// The resource manager's id; registrations become
    /// `<resource_manager_id>:<entry id>:<namespace>`.
    pub resource_manager_id: String,
    /// The resource manager builder's registrar. The caller builds the
    /// resource manager once, after [`load_directory`] returns.
    pub registrar: Arc<dyn ResourceRegistrar + Send + Sync>,
    /// Secrets.
    pub secrets: Arc<dyn SecretManager + Send + Sync>,
    /// The metrics root; each plugin gets the sub-scope named after its id.
    pub metrics: Metrics,
    /// Re-evaluates an owner.
    pub enqueue_owner: Arc<dyn EnqueueOwner>,
    /// The kind of owner the host drives (e.g. `Execution`).
    pub owner_kind: String,
}

impl std::fmt::Debug for LoaderServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderServices")
            .field("resource_manager_id", &self.resource_manager_id)
            .field("metrics", &self.metrics)
            .field("owner_kind", &self.owner_kind)
            .finish_non_exhaustive()
    }
}

impl LoaderServices {
    /// The daemon's wiring: registrations go to the resource manager
    /// `builder` (built once after loading), enqueue requests to the late
    /// owner (bound once the engine runs), secrets from `secrets`, plugin
    /// metrics under `metrics`, owners of kind `Execution`.
    pub fn for_engine(
        builder: &Arc<kozmo_engine::resources::ResourceManagerBuilder>,
        owner: &Arc<kozmo_engine::LateEnqueueOwner>,
        secrets: Arc<dyn SecretManager + Send + Sync>,
        metrics: Metrics,
    ) -> Self {
        LoaderServices {
            resource_manager_id: builder.id().to_string(),
            registrar: builder.clone(),
            secrets,
            metrics,
            enqueue_owner: owner.clone(),
            owner_kind: "Execution".into(),
        }
    }

    /// Services for running loaders outside the daemon (`kozmo plugins
    /// list/check`): the noop resource manager, no secrets (a lookup fails,
    /// saying `where_`), a private metrics registry, enqueue ignored.
    pub fn offline(where_: &str) -> Self {
        LoaderServices {
            resource_manager_id: "noopresourcemanager".into(),
            registrar: Arc::new(setup::NoopRegistrar),
            secrets: Arc::new(setup::NoSecrets(where_.to_string())),
            metrics: Metrics::new("kozmo"),
            enqueue_owner: Arc::new(setup::IgnoreEnqueue),
            owner_kind: "Execution".into(),
        }
    }
}

/// Loads every plugin of `config.plugins_dir`: all checks, all loaders.
///
/// `Err` when any error remains (all of them, with the warnings): the
/// daemon must refuse to start ([`LoadReport::is_fatal`], exit code 2).
pub fn load_directory(config: &LoaderConfig, services: &LoaderServices) -> Result<LoadedPlugins, LoadReport> {
    let dir = &config.plugins_dir;
    let mut problems = Vec::new();
    if !config.allow_insecure_plugin_dir {
        if let Ok(resolved) = std::fs::canonicalize(dir) {
            // Every directory on the way (StrictModes for ancestors), then
            // the plugin directory itself.
            problems.extend(permissions::check_resolution("plugin directory", dir));
            if let Err(p) = permissions::check_path("plugin directory", dir, &resolved) {
                problems.push(p);
            }
        }
    }
    let candidates = match discovery::discover(dir) {
        Ok((candidates, found)) => {
            problems.extend(found);
            candidates
        }
        Err(p) => {
            problems.push(p);
            Vec::new()
        }
    };
    // Never open a library from a directory others can write to.
    let dir_insecure = problems.iter().any(|p| p.kind == ProblemKind::InsecurePermissions);
    let candidates = if dir_insecure { Vec::new() } else { candidates };
    load_candidates(candidates, problems, config, services)
}

/// Checks and loads the named files as if they were a plugin directory
/// (`kozmo plugins check FILE...`): every per-file check, the cross-file
/// rules among them, and the loaders. `config.plugins_dir` is only used in
/// messages.
pub fn check_files(
    files: &[PathBuf],
    config: &LoaderConfig,
    services: &LoaderServices,
) -> Result<LoadedPlugins, LoadReport> {
    let (candidates, problems) = discovery::from_files(files);
    load_candidates(candidates, problems, config, services)
}

fn load_candidates(
    candidates: Vec<Candidate>,
    mut problems: Vec<Problem>,
    config: &LoaderConfig,
    services: &LoaderServices,
) -> Result<LoadedPlugins, LoadReport> {
    let mut checked = Vec::with_capacity(candidates.len());
    for c in &candidates {
        match precheck(c, config.allow_insecure_plugin_dir) {
            Ok(()) => checked.push(c),
            Err(found) => problems.extend(found),
        }
    }
    // With isolation active every library is first opened by its own
    // supervised child (see `isolation::open`), which reports a crash while
    // loading as the same `load-crash` problem: a probe child would open
    // each library a second time at start-up.
    let probe_program = config.probe_program.as_ref().filter(|_| !config.isolation.is_active());
    if let Some(program) = probe_program {
        let (safe, crashed) = probe::survivors(program, checked);
        problems.extend(crashed);
        checked = safe;
    }
    let mut staged = Vec::new();
    let mut newer = Vec::new();
    for c in checked {
        match open_candidate(c, config, services) {
            Ok(lib) => {
                log::debug!(
                    "{}: kozmo-interface {}, ABI {}, entries {:?}",
                    c.path.display(),
                    lib.interface_version,
                    lib.abi,
                    lib.entries.iter().map(|e| &e.id).collect::<Vec<_>>()
                );
                if let Some(w) = lib.newer_warning() {
                    log::warn!("{}: {w}", c.path.display());
                    newer.push(Problem::file(
                        ProblemKind::NewerAbi,
                        &c.path,
                        format!("{}: {w}", c.path.display()),
                    ));
                }
                staged.extend(lib.entries.into_iter().map(|entry| StagedEntry {
                    file: c.path.clone(),
                    interface_version: lib.interface_version.clone(),
                    abi: lib.abi,
                    entry,
                }))
            }
            Err(found) => problems.extend(found),
        }
    }

    let plan = registry::plan(&staged, config);
    problems.extend(plan.errors);
    let mut warnings = plan.warnings;

    let mut plugins = Vec::new();
    let mut index_of = BTreeMap::new();
    for &i in &plan.to_load {
        let s = &staged[i];
        match run_loader(s, services) {
            Ok(plugin) => {
                log::info!(
                    "loaded plugin {} ({}) for task types [{}]{}",
                    s.entry.id,
                    s.file.display(),
                    s.entry.registered_task_types.join(", "),
                    if s.entry.is_default { ", default" } else { "" }
                );
                index_of.insert(i, plugins.len());
                plugins.push(LoadedPlugin {
                    info: PluginInfo::of(s),
                    plugin,
                });
            }
            Err(p) => problems.push(p),
        }
    }

    let mut errors = Vec::new();
    for p in problems {
        if config.skip_invalid_plugins && p.kind.is_single_file() {
            warnings.push(p);
        } else {
            errors.push(p);
        }
    }
    for w in &warnings {
        log::warn!("skipped: {}", w.message);
    }
    warnings.extend(newer);
    if !errors.is_empty() {
        return Err(LoadReport {
            errors,
            warnings,
            loaded: plugins.into_iter().map(|p| p.info).collect(),
        });
    }
    let routes = plan
        .routes
        .into_iter()
        .filter_map(|(t, i)| index_of.get(&i).map(|&j| (t, j)))
        .collect();
    let default = plan.default.and_then(|i| index_of.get(&i).copied());
    Ok(LoadedPlugins::new(plugins, routes, default, warnings))
}

/// Keeps messages on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The checks made before a file is opened at all (by the probe or the
/// host): permissions, then the root-module symbol.
fn precheck(c: &Candidate, allow_insecure: bool) -> Result<(), Vec<Problem>> {
    if !allow_insecure {
        let found = permissions::check_file(&c.path, &c.resolved);
        if !found.is_empty() {
            return Err(found);
        }
    }
    symbols::check_root_module_symbol(&c.path, &c.resolved).map_err(|p| vec![p])
}

/// Opens a prechecked file and checks its entries; `Err` holds every
/// problem found with the file.
fn open_candidate(
    c: &Candidate,
    config: &LoaderConfig,
    services: &LoaderServices,
) -> Result<OpenedLibrary, Vec<Problem>> {
    // The one branch for isolation: a library with an isolated plugin is
    // opened by its supervised child; every other check stays here.
    let lib = match crate::isolation::open::open_isolated(&c.path, &c.resolved, &config.isolation, services) {
        Some(opened) => opened.map_err(|p| vec![p])?,
        None => open_library(&c.resolved).map_err(|e| vec![open_problem(&c.path, e)])?,
    };
    let mut found = Vec::new();
    for (n, e) in lib.entries.iter().enumerate() {
        if e.id.trim().is_empty() {
            found.push(Problem::file(
                ProblemKind::InvalidEntry,
                &c.path,
                format!(
                    "{}: entry #{} (task types [{}]) has no id; give every PluginEntry an id",
                    c.path.display(),
                    n + 1,
                    e.registered_task_types.join(", ")
                ),
            ));
        } else if e.registered_task_types.is_empty() || e.registered_task_types.iter().any(|t| t.trim().is_empty()) {
            found.push(Problem::file(
                ProblemKind::InvalidEntry,
                &c.path,
                format!(
                    "{}: plugin {} registers no task type (or an empty one); list at least one in registered_task_types",
                    c.path.display(),
                    e.id
                ),
            ));
        }
    }
    if lib.entries.is_empty() {
        found.push(Problem::file(
            ProblemKind::InvalidEntry,
            &c.path,
            format!("{}: the library exports no plugin entry", c.path.display()),
        ));
    }
    if found.is_empty() {
        Ok(lib)
    } else {
        Err(found)
    }
}

/// The problem an [`OpenError`] of `file` is (also used by an isolated
/// plugin's child, which opens the library itself).
pub(crate) fn open_problem(file: &Path, e: OpenError) -> Problem {
    let f = file.display();
    let host = kozmo_interface::host::interface_version();
    let (kind, message) = match &e {
        OpenError::NotALibrary(why) => (
            ProblemKind::NotALibrary,
            format!("{f}: not a loadable library: {why}; remove it from the plugin directory"),
        ),
        OpenError::NoRootModule(why) => (
            ProblemKind::NoRootModule,
            format!("{f}: no Kozmo root module ({why}); build the plugin with kozmo_interface::export_plugins!"),
        ),
        OpenError::AbiHeaderMismatch(why) => (
            ProblemKind::AbiHeaderMismatch,
            format!("{f}: built with another abi_stable release ({why}); rebuild it against kozmo-interface {host}"),
        ),
        OpenError::InterfaceMismatch { expected, found } => (
            ProblemKind::InterfaceMismatch,
            format!(
                "{f}: built against kozmo-interface {found}, this host supports {expected}; rebuild the plugin against kozmo-interface {host}"
            ),
        ),
        OpenError::EpochMismatch { expected, found } => (
            ProblemKind::EpochMismatch,
            format!(
                "{f}: declares Kozmo ABI epoch {found}, this host supports epoch {expected}; {}",
                if found > expected {
                    format!("upgrade the daemon to one that loads epoch {found}, or rebuild the plugin against kozmo-interface {host}")
                } else {
                    format!("rebuild the plugin against kozmo-interface {host}")
                }
            ),
        ),
        OpenError::LayoutMismatch { summary, report } => {
            log::debug!("{f}: abi_stable layout report:\n{report}");
            let shown: Vec<&str> = summary.iter().take(3).map(String::as_str).collect();
            let more = if summary.len() > 3 {
                format!(" (and {} more)", summary.len() - 3)
            } else {
                String::new()
            };
            (
                ProblemKind::LayoutMismatch,
                format!(
                    "{f}: type layouts differ from this host's kozmo-interface {host}: {}{more}; rebuild the plugin against kozmo-interface {host} (-vv shows abi_stable's full report)",
                    shown.join("; ")
                ),
            )
        }
        OpenError::PanicAbort => (ProblemKind::PanicAbort, format!("{f}: {e}")),
        OpenError::Entries(err) => (
            ProblemKind::EntriesFailed,
            format!("{f}: listing the plugin entries failed: {err}"),
        ),
        OpenError::Other(why) => (ProblemKind::Other, format!("{f}: {why}")),
    };
    Problem::file(kind, file, one_line(&message))
}

/// Runs one entry's loader in its own setup context and checks the plugin
/// it returns.
fn run_loader(s: &StagedEntry, services: &LoaderServices) -> Result<Arc<dyn Plugin>, Problem> {
    let id = &s.entry.id;
    let f = s.file.display();
    let ctx = setup::PluginSetupContext::new(services, id);
    let fail = |kind, cause: String| {
        Problem::file(
            kind,
            &s.file,
            one_line(&format!("failed to load plugin {id} ({f}): {cause}")),
        )
    };
    let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| s.entry.load_plugin.load(&ctx)));
    let plugin = match loaded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) if e.is_panic() => {
            return Err(fail(
                ProblemKind::LoaderPanic,
                format!("the loader panicked: {}", e.message),
            ))
        }
        Ok(Err(e)) => return Err(fail(ProblemKind::LoaderError, e.to_string())),
        Err(_) => return Err(fail(ProblemKind::LoaderPanic, "the loader panicked".into())),
    };
    if let Err(e) = kozmo_interface::validate_properties(&plugin.properties()) {
        return Err(fail(ProblemKind::InvalidProperties, e.message));
    }
    if plugin.id() != id {
        return Err(fail(
            ProblemKind::PluginIdMismatch,
            format!(
                "the loaded plugin reports id {:?}, its entry says {id:?}; make them equal (routing and resource namespaces use the entry id)",
                plugin.id()
            ),
        ));
    }
    Ok(Arc::from(plugin))
}

#[cfg(test)]
mod tests {
    use kozmo_interface::{PluginEntry, PluginLoader, Result, TaskExecutionContext, Transition};

    use super::*;

    struct Named(&'static str);

    impl Plugin for Named {
        fn id(&self) -> &str {
            self.0
        }
        fn handle(&self, _: &dyn TaskExecutionContext) -> Result<Transition> {
            Ok(Transition::unknown())
        }
        fn abort(&self, _: &dyn TaskExecutionContext) -> Result<()> {
            Ok(())
        }
        fn finalize(&self, _: &dyn TaskExecutionContext) -> Result<()> {
            Ok(())
        }
    }

    fn staged(id: &str, loader: PluginLoader) -> StagedEntry {
        StagedEntry {
            file: PathBuf::from("/p/lib.so"),
            interface_version: "1.0.0".into(),
            abi: kozmo_interface::abi::ABI_VERSION,
            entry: PluginEntry {
                id: id.into(),
                registered_task_types: vec![id.into()],
                load_plugin: loader,
                is_default: false,
            },
        }
    }

    #[test]
    fn a_plugin_whose_id_differs_from_its_entry_is_refused() {
        let s = staged("core", PluginLoader::new(|_| Ok(Box::new(Named("Core")))));
        let p = run_loader(&s, &LoaderServices::offline("in tests")).err().unwrap();
        assert_eq!(p.kind, ProblemKind::PluginIdMismatch);
        assert!(p
            .message
            .starts_with("failed to load plugin core (/p/lib.so): the loaded plugin reports id \"Core\""));
    }

    #[test]
    fn a_host_side_loader_panic_is_caught() {
        let s = staged("core", PluginLoader::new(|_| panic!("boom")));
        let p = run_loader(&s, &LoaderServices::offline("in tests")).err().unwrap();
        assert_eq!(p.kind, ProblemKind::LoaderPanic);
        let ok = staged("core", PluginLoader::new(|_| Ok(Box::new(Named("core")))));
        assert_eq!(run_loader(&ok, &LoaderServices::offline("t")).unwrap().id(), "core");
    }

    #[test]
    fn layout_mismatch_messages_keep_three_error_lines_on_one_line() {
        let e = OpenError::LayoutMismatch {
            summary: (1..=5).map(|i| format!("Error: field {i} differs")).collect(),
            report: "long\nreport".into(),
        };
        let p = open_problem(Path::new("/p/x.so"), e);
        assert_eq!(p.kind, ProblemKind::LayoutMismatch);
        assert!(!p.message.contains('\n'));
        assert!(
            p.message.contains("Error: field 3 differs (and 2 more)"),
            "{}",
            p.message
        );
        assert!(!p.message.contains("field 4"));
        let p = open_problem(
            Path::new("/p/y.so"),
            OpenError::InterfaceMismatch {
                expected: "1.0.0".into(),
                found: "2.0.0".into(),
            },
        );
        assert_eq!(p.kind, ProblemKind::InterfaceMismatch);
        assert!(p
            .message
            .starts_with("/p/y.so: built against kozmo-interface 2.0.0, this host supports 1.0.0"));
    }
}
