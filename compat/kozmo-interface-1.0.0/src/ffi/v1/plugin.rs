//! Plugins and their entries across the boundary: the glue compiled into
//! the plugin (every call under `catch_unwind`) and the host-side wrapper
//! that is a plain [`Plugin`] again.

use std::sync::Arc;

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, RResult, RString, RVec};
use abi_stable::RRef;

use super::context::{FfiTaskContext_TO, HostTaskContext, PluginTaskContext};
use super::guard::{guard, guard_status};
use super::setup::{FfiSetupContext_TO, HostSetupContext, PluginSetupContext};
use super::values::{plain, FfiError, FfiProperties, FfiTransition};
use crate::context::{SetupContext, TaskExecutionContext};
use crate::plugin::{Plugin, PluginEntry, PluginLoader};
use crate::{PluginProperties, Result, Transition};

/// A loaded plugin across the boundary.
#[sabi_trait]
pub trait FfiPlugin: Send + Sync {
    /// [`Plugin::id`].
    fn id(&self) -> RResult<RString, FfiError>;
    /// [`Plugin::properties`].
    fn properties(&self) -> RResult<FfiProperties, FfiError>;
    /// [`Plugin::handle`]: the transition is written into `out` (a record
    /// the host owns, initialised to [`FfiTransition::UNDEFINED`]); an
    /// error or a panic comes back boxed and `out` is then meaningless.
    fn handle(&self, ctx: FfiTaskContext_TO<'_, RRef<'_, ()>>, out: &mut FfiTransition) -> RResult<(), RBox<FfiError>>;
    /// [`Plugin::abort`].
    fn abort(&self, ctx: FfiTaskContext_TO<'_, RRef<'_, ()>>) -> RResult<(), FfiError>;
    /// [`Plugin::finalize`].
    #[sabi(last_prefix_field)]
    fn finalize(&self, ctx: FfiTaskContext_TO<'_, RRef<'_, ()>>) -> RResult<(), FfiError>;
    // kozmo-abi-append: ffi-plugin
    // Methods appended in later minors go here, in order, each with a
    // default body: a host calls that body when the plugin's vtable
    // predates the method.
}

/// A [`PluginLoader`] across the boundary.
#[sabi_trait]
pub trait FfiLoader: Send + Sync {
    /// Runs the loader.
    #[sabi(last_prefix_field)]
    fn load(&self, ctx: FfiSetupContext_TO<'_, RRef<'_, ()>>) -> RResult<FfiPlugin_TO<'static, RBox<()>>, FfiError>;
}

/// A [`PluginEntry`] across the boundary.
#[repr(C)]
#[derive(abi_stable::StableAbi)]
pub struct FfiPluginEntry {
    /// [`PluginEntry::id`].
    pub id: RString,
    /// [`PluginEntry::registered_task_types`].
    pub registered_task_types: RVec<RString>,
    /// [`PluginEntry::is_default`].
    pub is_default: bool,
    /// [`PluginEntry::load_plugin`].
    pub loader: FfiLoader_TO<'static, RBox<()>>,
}

/// Plugin-side glue around an author's plugin.
struct PluginGlue(Box<dyn Plugin>);

impl FfiPlugin for PluginGlue {
    fn id(&self) -> RResult<RString, FfiError> {
        guard("id", || Ok(self.0.id().into()))
    }
    fn properties(&self) -> RResult<FfiProperties, FfiError> {
        guard("properties", || Ok(self.0.properties().into()))
    }
    fn handle(&self, ctx: FfiTaskContext_TO<'_, RRef<'_, ()>>, out: &mut FfiTransition) -> RResult<(), RBox<FfiError>> {
        guard_status("handle", || {
            let ctx = PluginTaskContext::new(ctx);
            // Converted from a borrow: moving the transition out of the
            // `Result` first would copy it (~230 bytes) for nothing.
            let result = self.0.handle(&ctx);
            match &result {
                Ok(t) => *out = FfiTransition::from(t),
                Err(_) => return result.map(drop),
            }
            Ok(())
        })
    }
    fn abort(&self, ctx: FfiTaskContext_TO<'_, RRef<'_, ()>>) -> RResult<(), FfiError> {
        guard("abort", || self.0.abort(&PluginTaskContext::new(ctx)))
    }
    fn finalize(&self, ctx: FfiTaskContext_TO<'_, RRef<'_, ()>>) -> RResult<(), FfiError> {
        guard("finalize", || self.0.finalize(&PluginTaskContext::new(ctx)))
    }
    // kozmo-abi-append: plugin-glue
}

/// Plugin-side glue around an author's loader.
struct LoaderGlue(PluginLoader);

impl FfiLoader for LoaderGlue {
    fn load(&self, ctx: FfiSetupContext_TO<'_, RRef<'_, ()>>) -> RResult<FfiPlugin_TO<'static, RBox<()>>, FfiError> {
        guard("loader", || {
            let plugin = self.0.load(&PluginSetupContext::new(ctx))?;
            Ok(FfiPlugin_TO::from_value(PluginGlue(plugin), TD_Opaque))
        })
    }
}

impl From<PluginEntry> for FfiPluginEntry {
    fn from(e: PluginEntry) -> Self {
        FfiPluginEntry {
            id: e.id.into(),
            registered_task_types: e.registered_task_types.into_iter().map(RString::from).collect(),
            is_default: e.is_default,
            loader: FfiLoader_TO::from_value(LoaderGlue(e.load_plugin), TD_Opaque),
        }
    }
}

/// Host side: a plugin from a library, usable as a plain [`Plugin`]. Its id
/// and properties are read once, at load.
pub struct HostedPlugin {
    inner: FfiPlugin_TO<'static, RBox<()>>,
    id: String,
    properties: PluginProperties,
}

impl HostedPlugin {
    fn new(inner: FfiPlugin_TO<'static, RBox<()>>) -> Result<Self> {
        let id = plain(inner.id())?.into();
        let properties = plain(inner.properties())?.into();
        Ok(HostedPlugin { inner, id, properties })
    }
}

impl Plugin for HostedPlugin {
    fn id(&self) -> &str {
        &self.id
    }
    fn properties(&self) -> PluginProperties {
        self.properties
    }
    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let host = HostTaskContext(ctx);
        let mut out = FfiTransition::UNDEFINED;
        match self
            .inner
            .handle(FfiTaskContext_TO::from_ptr(&host, TD_Opaque), &mut out)
        {
            RResult::ROk(()) => Transition::try_from(out),
            RResult::RErr(e) => Err(RBox::into_inner(e).into()),
        }
    }
    fn abort(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let host = HostTaskContext(ctx);
        plain(self.inner.abort(FfiTaskContext_TO::from_ptr(&host, TD_Opaque)))
    }
    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let host = HostTaskContext(ctx);
        plain(self.inner.finalize(FfiTaskContext_TO::from_ptr(&host, TD_Opaque)))
    }
    // kozmo-abi-append: hosted-plugin
}

/// Host side: turns an entry from a library into a plain [`PluginEntry`]
/// whose loader calls into the library.
pub fn host_entry(e: FfiPluginEntry) -> PluginEntry {
    let loader = Arc::new(e.loader);
    PluginEntry {
        id: e.id.into(),
        registered_task_types: e.registered_task_types.into_iter().map(String::from).collect(),
        is_default: e.is_default,
        load_plugin: PluginLoader::new(move |ctx: &dyn SetupContext| {
            let host = HostSetupContext(ctx);
            let plugin = plain(loader.load(FfiSetupContext_TO::from_ptr(&host, TD_Opaque)))?;
            Ok(Box::new(HostedPlugin::new(plugin)?) as Box<dyn Plugin>)
        }),
    }
}
