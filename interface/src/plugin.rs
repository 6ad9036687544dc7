//! What authors implement: [`Plugin`], and [`PluginEntry`] to register it.

use std::fmt;
use std::sync::Arc;

use crate::context::{SetupContext, TaskExecutionContext};
use crate::properties::MIN_GENERATED_NAME_MAX_LENGTH;
use crate::{PluginError, PluginProperties, Result, Transition};

/// A task type name.
pub type TaskType = String;

/// A task plugin: a state machine the host drives round by round.
///
/// `handle` must not block (start work, then report progress on later
/// rounds) and may be called many times for the same phase, so it must be
/// idempotent; so must `abort` and `finalize`. `finalize` is always called
/// after a terminal phase or an abort.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's id.
    fn id(&self) -> &str;
    /// Properties; the defaults suit most plugins.
    fn properties(&self) -> PluginProperties {
        PluginProperties::default()
    }
    /// Advances the task one round.
    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition>;
    /// Stops whatever the task started. The default does nothing, for
    /// plugins whose `handle` starts nothing that outlives the call.
    fn abort(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
    /// Releases what the task holds (tokens, temporary files). The default
    /// does nothing; the host releases any token an execution still holds
    /// after `finalize` anyway, with a warning naming the plugin.
    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
    // kozmo-abi-append: plugin-trait
    // Methods added after 1.0 go here, each with a default body (what the
    // host sees from a plugin that predates the method).
}

type LoaderFn = dyn Fn(&dyn SetupContext) -> Result<Box<dyn Plugin>> + Send + Sync;

/// Builds a plugin when the host loads it (runs before any `handle`).
///
/// ```
/// use kozmo_interface::{Plugin, PluginLoader, SetupContext};
/// # struct Mine;
/// # impl Plugin for Mine {
/// #     fn id(&self) -> &str { "mine" }
/// #     fn handle(&self, _: &dyn kozmo_interface::TaskExecutionContext) -> kozmo_interface::Result<kozmo_interface::Transition> { unimplemented!() }
/// #     fn abort(&self, _: &dyn kozmo_interface::TaskExecutionContext) -> kozmo_interface::Result<()> { Ok(()) }
/// #     fn finalize(&self, _: &dyn kozmo_interface::TaskExecutionContext) -> kozmo_interface::Result<()> { Ok(()) }
/// # }
/// let loader = PluginLoader::new(|_ctx: &dyn SetupContext| Ok(Box::new(Mine) as Box<dyn Plugin>));
/// ```
#[derive(Clone)]
pub struct PluginLoader(Arc<LoaderFn>);

impl PluginLoader {
    /// Wraps a loader function or closure.
    pub fn new(f: impl Fn(&dyn SetupContext) -> Result<Box<dyn Plugin>> + Send + Sync + 'static) -> Self {
        PluginLoader(Arc::new(f))
    }

    /// Runs the loader.
    pub fn load(&self, ctx: &dyn SetupContext) -> Result<Box<dyn Plugin>> {
        (self.0)(ctx)
    }
}

impl fmt::Debug for PluginLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PluginLoader")
    }
}

/// Registers a plugin: its id, the task types it handles, its loader, and
/// whether it is the default for task types no plugin claims.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    /// The plugin's id (unique in a plugin directory).
    pub id: TaskType,
    /// Task types routed to this plugin (at least one).
    pub registered_task_types: Vec<TaskType>,
    /// Builds the plugin.
    pub load_plugin: PluginLoader,
    /// Whether this plugin handles task types nobody registered (at most one).
    pub is_default: bool,
}

/// Runs an entry's loader and validates what it returns (the original's
/// `LoadPlugin`): `generated_name_max_length` must be at least 8
/// (docs/semantics.md#generated-names).
pub fn load_plugin(ctx: &dyn SetupContext, entry: &PluginEntry) -> Result<Box<dyn Plugin>> {
    let plugin = entry.load_plugin.load(ctx)?;
    validate_properties(&plugin.properties())?;
    Ok(plugin)
}

/// Checks [`PluginProperties`] the way [`load_plugin`] does.
pub fn validate_properties(p: &PluginProperties) -> Result<()> {
    match p.generated_name_max_length {
        Some(n) if n < MIN_GENERATED_NAME_MAX_LENGTH => Err(PluginError::new(
            "InvalidProperties",
            format!("generated_name_max_length must be at least {MIN_GENERATED_NAME_MAX_LENGTH}, got {n}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestSetupContext;

    struct Core(PluginProperties);

    impl Plugin for Core {
        fn id(&self) -> &str {
            "core"
        }
        fn properties(&self) -> PluginProperties {
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

    fn entry(max_len: Option<u32>) -> PluginEntry {
        PluginEntry {
            id: "core".into(),
            registered_task_types: vec!["core".into()],
            load_plugin: PluginLoader::new(move |_| {
                Ok(Box::new(Core(PluginProperties {
                    generated_name_max_length: max_len,
                    ..Default::default()
                })))
            }),
            is_default: false,
        }
    }

    #[test]
    fn load_plugin_without_properties() {
        let p = load_plugin(&TestSetupContext::new(), &entry(None)).unwrap();
        assert_eq!(p.id(), "core");
        assert_eq!(p.properties().effective_generated_name_max_length(), 50);
    }

    #[test]
    fn load_plugin_accepts_10_and_8() {
        for n in [10, 8] {
            let p = load_plugin(&TestSetupContext::new(), &entry(Some(n))).unwrap();
            assert_eq!(p.properties().generated_name_max_length, Some(n));
        }
    }

    #[test]
    fn load_plugin_rejects_5_with_a_clear_message() {
        let err = load_plugin(&TestSetupContext::new(), &entry(Some(5))).err().unwrap();
        assert_eq!(err.message, "generated_name_max_length must be at least 8, got 5");
        assert_eq!(err.code, "InvalidProperties");
    }

    #[test]
    fn a_loader_error_is_returned_unchanged() {
        let e = PluginEntry {
            load_plugin: PluginLoader::new(|_| Err(PluginError::system("Boom", "no backend"))),
            ..entry(None)
        };
        let err = load_plugin(&TestSetupContext::new(), &e).err().unwrap();
        assert_eq!(err, PluginError::system("Boom", "no backend"));
    }
}
