//! Validation across the whole directory (duplicate ids, defaults, task
//! type claims, `enabled_plugins`, `default_for_task_types`) and the routing
//! of task types to loaded plugins (docs/semantics.md#plugin-loading-and-routing).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use kozmo_interface::abi::AbiVersion;
use kozmo_interface::{Plugin, PluginEntry};

use super::errors::{Problem, ProblemKind};
use super::LoaderConfig;

/// An entry of a library that passed the per-file checks.
#[derive(Debug, Clone)]
pub struct StagedEntry {
    /// The library, as found in the directory.
    pub file: PathBuf,
    /// The interface version the library was built with.
    pub interface_version: String,
    /// The ABI version the library was built for.
    pub abi: AbiVersion,
    /// The entry.
    pub entry: PluginEntry,
}

/// What the daemon shows about a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The entry's id.
    pub id: String,
    /// The task types it registers.
    pub task_types: Vec<String>,
    /// Whether it is the default for task types nobody registered.
    pub is_default: bool,
    /// Its library.
    pub file: PathBuf,
    /// The `kozmo-interface` version it was built with.
    pub interface_version: String,
    /// The ABI version (epoch.minor) it was built for.
    pub abi: AbiVersion,
}

impl PluginInfo {
    /// The info of a staged entry.
    pub fn of(s: &StagedEntry) -> PluginInfo {
        PluginInfo {
            id: s.entry.id.clone(),
            task_types: s.entry.registered_task_types.clone(),
            is_default: s.entry.is_default,
            file: s.file.clone(),
            interface_version: s.interface_version.clone(),
            abi: s.abi,
        }
    }
}

/// Config names are trimmed of spaces and lower-cased; ids and task types
/// are compared in that form (docs/semantics.md#plugin-loading-and-routing).
pub fn clean(name: &str) -> String {
    name.trim_matches(' ').to_lowercase()
}

/// `a`, `a and b`, `a, b and c`.
pub fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The outcome of validation: which entries to load (indexes into the
/// staged list) and how task types route (task type -> plugin id).
#[derive(Debug, Default)]
pub struct Plan {
    /// Staged entries to run loaders for, in order.
    pub to_load: Vec<usize>,
    /// Task type -> index of the staged entry that handles it.
    pub routes: BTreeMap<String, usize>,
    /// The staged entry that is the global default.
    pub default: Option<usize>,
    /// Cross-file and configuration errors.
    pub errors: Vec<Problem>,
    /// Notes that never stop loading.
    pub warnings: Vec<Problem>,
}

/// Validates staged entries against each other and the configuration.
pub fn plan(staged: &[StagedEntry], config: &LoaderConfig) -> Plan {
    let mut plan = Plan::default();
    let dir = config.plugins_dir.clone();

    // Duplicate ids, over every entry in the directory (enabled or not).
    let mut by_id: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in staged.iter().enumerate() {
        by_id.entry(clean(&s.entry.id)).or_default().push(i);
    }
    let mut first_of_id = BTreeSet::new();
    for idx in by_id.values() {
        first_of_id.insert(idx[0]);
        if idx.len() > 1 {
            let files: Vec<PathBuf> = idx.iter().map(|&i| staged[i].file.clone()).collect();
            let distinct: BTreeSet<&PathBuf> = files.iter().collect();
            let id = &staged[idx[0]].entry.id;
            let message = if distinct.len() == 1 {
                format!(
                    "plugin id {id} is exported {} times by {}; each id must appear once",
                    idx.len(),
                    files[0].display()
                )
            } else {
                let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                format!(
                    "plugin id {id} is exported by {}{} (a copy or symlink of one library counts too); keep one of them",
                    if shown.len() == 2 { "both " } else { "" },
                    join_and(&shown)
                )
            };
            plan.errors
                .push(Problem::files(ProblemKind::DuplicateId, files, message));
        }
    }

    // enabled_plugins (empty = all).
    let enabled: BTreeSet<String> = config.enabled_plugins.iter().map(|n| clean(n)).collect();
    for name in &enabled {
        if !by_id.contains_key(name) {
            plan.warnings.push(Problem::files(
                ProblemKind::Config,
                vec![dir.clone()],
                format!(
                    "enabled_plugins names {name}, but no library in {} exports it",
                    dir.display()
                ),
            ));
        }
    }
    let is_enabled = |s: &StagedEntry| enabled.is_empty() || enabled.contains(&clean(&s.entry.id));
    plan.to_load = (0..staged.len())
        .filter(|i| first_of_id.contains(i) && is_enabled(&staged[*i]))
        .collect();
    let loaded_by_id: BTreeMap<String, usize> = plan.to_load.iter().map(|&i| (clean(&staged[i].entry.id), i)).collect();

    // default_for_task_types.
    let mut configured: BTreeMap<String, usize> = BTreeMap::new();
    for (task_type, plugin) in &config.default_for_task_types {
        let (tt, pid) = (clean(task_type), clean(plugin));
        if !enabled.is_empty() && !enabled.contains(&pid) {
            plan.errors.push(Problem::files(
                ProblemKind::Config,
                vec![dir.clone()],
                format!(
                    "cannot set default plugin [{pid}] for task type [{tt}] when it is not configured to be an enabled plugin; add it to enabled_plugins"
                ),
            ));
            continue;
        }
        let Some(&i) = loaded_by_id.get(&pid) else {
            plan.errors.push(Problem::files(
                ProblemKind::Config,
                vec![dir.clone()],
                format!(
                    "default_for_task_types maps task type [{tt}] to plugin [{pid}], but no library in {} exports it",
                    dir.display()
                ),
            ));
            continue;
        };
        let registers = staged[i].entry.registered_task_types.iter().any(|t| clean(t) == tt);
        if !registers {
            plan.errors.push(Problem::files(
                ProblemKind::Config,
                vec![staged[i].file.clone()],
                format!(
                    "default_for_task_types maps task type [{tt}] to plugin [{pid}] ({}), which does not register it (it registers {})",
                    staged[i].file.display(),
                    staged[i].entry.registered_task_types.join(", ")
                ),
            ));
            continue;
        }
        configured.insert(tt, i);
    }

    // At most one default.
    let defaults: Vec<usize> = plan
        .to_load
        .iter()
        .copied()
        .filter(|&i| staged[i].entry.is_default)
        .collect();
    match defaults.as_slice() {
        [] => {}
        [one] => plan.default = Some(*one),
        many => {
            let shown: Vec<String> = many
                .iter()
                .map(|&i| format!("{} ({})", staged[i].entry.id, staged[i].file.display()))
                .collect();
            plan.errors.push(Problem::files(
                ProblemKind::MultipleDefaults,
                many.iter().map(|&i| staged[i].file.clone()).collect(),
                format!(
                    "plugins {} are {} marked is_default; at most one plugin may be the default, remove the others or disable them with enabled_plugins",
                    join_and(&shown),
                    if shown.len() == 2 { "both" } else { "all" }
                ),
            ));
        }
    }

    // Task type claims.
    let mut claims: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in &plan.to_load {
        for t in &staged[i].entry.registered_task_types {
            let v = claims.entry(t.clone()).or_default();
            if !v.contains(&i) {
                v.push(i);
            }
        }
    }
    for (tt, claimants) in claims {
        if let Some(&i) = configured.get(&clean(&tt)) {
            plan.routes.insert(tt, i);
        } else if claimants.len() == 1 {
            plan.routes.insert(tt, claimants[0]);
        } else {
            let shown: Vec<String> = claimants
                .iter()
                .map(|&i| format!("{} ({})", staged[i].entry.id, staged[i].file.display()))
                .collect();
            plan.errors.push(Problem::files(
                ProblemKind::TaskTypeConflict,
                claimants.iter().map(|&i| staged[i].file.clone()).collect(),
                format!(
                    "task type [{tt}] is registered by plugins {}; choose one with default_for_task_types ({tt} = \"{}\")",
                    join_and(&shown),
                    staged[claimants[0]].entry.id
                ),
            ));
        }
    }
    plan
}

/// A plugin that loaded.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// What it is and where it came from.
    pub info: PluginInfo,
    /// The plugin.
    pub plugin: Arc<dyn Plugin>,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin").field("info", &self.info).finish()
    }
}

/// No plugin handles a task type, and there is no default plugin
/// (docs/semantics.md#plugin-loading-and-routing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTaskType(pub String);

impl fmt::Display for UnknownTaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no plugin defined for task type [{}] and no default plugin configured",
            self.0
        )
    }
}

impl std::error::Error for UnknownTaskType {}

/// The plugins of a directory and the task type routing.
#[derive(Debug, Default)]
pub struct LoadedPlugins {
    plugins: Vec<LoadedPlugin>,
    routes: BTreeMap<String, usize>,
    default: Option<usize>,
    warnings: Vec<Problem>,
}

impl LoadedPlugins {
    /// Assembles the result (routes and default index into `plugins`).
    pub fn new(
        plugins: Vec<LoadedPlugin>,
        routes: BTreeMap<String, usize>,
        default: Option<usize>,
        warnings: Vec<Problem>,
    ) -> Self {
        LoadedPlugins {
            plugins,
            routes,
            default,
            warnings,
        }
    }

    /// The plugin for `task_type`: the configured or single plugin that
    /// registers it, else the default plugin, else an error naming the type.
    pub fn resolve(&self, task_type: &str) -> Result<Arc<dyn Plugin>, UnknownTaskType> {
        self.resolve_loaded(task_type).map(|p| p.plugin.clone())
    }

    /// Like [`resolve`](Self::resolve), with the plugin's info.
    pub fn resolve_loaded(&self, task_type: &str) -> Result<&LoadedPlugin, UnknownTaskType> {
        match self.routes.get(task_type) {
            Some(&i) => Ok(&self.plugins[i]),
            None => match self.default {
                Some(i) => {
                    log::debug!(
                        "task type [{task_type}] has no plugin of its own; using the default plugin {}",
                        self.plugins[i].info.id
                    );
                    Ok(&self.plugins[i])
                }
                None => Err(UnknownTaskType(task_type.to_string())),
            },
        }
    }

    /// The loaded plugins, in directory order.
    pub fn plugins(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// The infos of the loaded plugins.
    pub fn infos(&self) -> Vec<PluginInfo> {
        self.plugins.iter().map(|p| p.info.clone()).collect()
    }

    /// The plugin with this entry id.
    pub fn get(&self, id: &str) -> Option<&LoadedPlugin> {
        self.plugins.iter().find(|p| p.info.id == id)
    }

    /// The default plugin, if any.
    pub fn default_plugin(&self) -> Option<&LoadedPlugin> {
        self.default.map(|i| &self.plugins[i])
    }

    /// Task type -> plugin id, for every registered task type.
    pub fn routes(&self) -> BTreeMap<String, String> {
        self.routes
            .iter()
            .map(|(t, &i)| (t.clone(), self.plugins[i].info.id.clone()))
            .collect()
    }

    /// Problems skipped under `skip_invalid_plugins`.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }
}

/// The registry routes task types for the engine; plugins in child
/// processes take batches of `handle` calls.
impl kozmo_engine::PluginResolver for LoadedPlugins {
    fn resolve(&self, task_type: &str) -> Result<Arc<dyn Plugin>, String> {
        LoadedPlugins::resolve(self, task_type).map_err(|e| e.to_string())
    }

    fn by_id(&self, id: &str) -> Option<Arc<dyn Plugin>> {
        self.get(id).map(|p| p.plugin.clone())
    }

    fn may_batch(&self) -> bool {
        crate::isolation::plugin::any_isolated()
    }

    fn batcher(&self, plugin: &dyn Plugin) -> Option<Arc<dyn kozmo_engine::BatchHandler>> {
        crate::isolation::plugin::batch_handler(plugin)
    }
}

#[cfg(test)]
mod tests {
    use kozmo_interface::{PluginError, PluginLoader};

    use super::*;

    fn staged(file: &str, id: &str, types: &[&str], is_default: bool) -> StagedEntry {
        StagedEntry {
            file: PathBuf::from(file),
            interface_version: "1.0.0".into(),
            abi: kozmo_interface::abi::ABI_VERSION,
            entry: PluginEntry {
                id: id.into(),
                registered_task_types: types.iter().map(|t| t.to_string()).collect(),
                load_plugin: PluginLoader::new(|_| Err(PluginError::system("NotRun", "not run in plan tests"))),
                is_default,
            },
        }
    }

    fn config() -> LoaderConfig {
        LoaderConfig::new("/plugins")
    }

    #[test]
    fn an_id_exported_twice_by_one_library_names_it_once() {
        let s = [
            staged("/p/a.so", "x", &["x"], false),
            staged("/p/a.so", "x", &["y"], false),
        ];
        let plan = plan(&s, &config());
        assert_eq!(plan.errors.len(), 1);
        assert_eq!(plan.errors[0].kind, ProblemKind::DuplicateId);
        assert_eq!(
            plan.errors[0].message,
            "plugin id x is exported 2 times by /p/a.so; each id must appear once"
        );
        assert_eq!(
            plan.to_load,
            [0],
            "the first occurrence is still loaded, for a complete report"
        );
    }

    #[test]
    fn three_way_duplicates_and_defaults_name_every_file() {
        let s = [
            staged("/p/a.so", "x", &["a"], true),
            staged("/p/b.so", "X", &["b"], true),
            staged("/p/c.so", "x", &["c"], false),
            staged("/p/d.so", "d", &["d"], true),
        ];
        let plan = plan(&s, &config());
        let dup = &plan.errors[0];
        assert_eq!(dup.kind, ProblemKind::DuplicateId);
        assert!(
            dup.message.contains("exported by /p/a.so, /p/b.so and /p/c.so"),
            "{}",
            dup.message
        );
        let defaults = &plan.errors[1];
        assert_eq!(defaults.kind, ProblemKind::MultipleDefaults);
        assert!(
            defaults
                .message
                .starts_with("plugins x (/p/a.so) and d (/p/d.so) are both marked is_default"),
            "{}",
            defaults.message
        );
        assert_eq!(plan.errors.len(), 2);
    }

    #[test]
    fn config_names_are_cleaned_and_checked() {
        let s = [
            staged("/p/a.so", "alpha", &["t"], false),
            staged("/p/b.so", "beta", &["t"], false),
        ];
        let mut c = config();
        c.enabled_plugins = vec!["Alpha".into(), " beta".into(), "gamma".into()];
        c.default_for_task_types = BTreeMap::from([("T ".into(), "BETA".into())]);
        let p = plan(&s, &c);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.routes.get("t"), Some(&1));
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].message.contains("gamma"));

        c.enabled_plugins = vec!["alpha".into()];
        let p = plan(&s, &c);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].kind, ProblemKind::Config);
        assert!(p.errors[0].message.contains("not configured to be an enabled plugin"));

        c.enabled_plugins = vec![];
        c.default_for_task_types = BTreeMap::from([("other".into(), "alpha".into())]);
        let p = plan(&s, &c);
        let kinds: Vec<_> = p.errors.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [ProblemKind::Config, ProblemKind::TaskTypeConflict]);
        assert!(p.errors[0].message.contains("does not register it (it registers t)"));
    }

    #[test]
    fn join_and_reads_naturally() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(join_and(&v(&[])), "");
        assert_eq!(join_and(&v(&["a"])), "a");
        assert_eq!(join_and(&v(&["a", "b"])), "a and b");
        assert_eq!(join_and(&v(&["a", "b", "c"])), "a, b and c");
    }
}
