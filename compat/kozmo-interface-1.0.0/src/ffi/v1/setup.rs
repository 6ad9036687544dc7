//! The loader's setup context across the boundary, and the long-lived
//! handles it hands out (refresh signal, enqueue-owner, metrics).

use std::sync::Arc;

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RSlice, RStr, RString};
use abi_stable::RRef;

use super::guard::{guard, guard_or};
use super::values::{plain, FfiError};
use crate::context::{EnqueueOwner, SecretManager, SetupContext, SignalAsync};
use crate::metadata::NamespacedName;
use crate::metrics::{Counter, Gauge, Histogram, MetricSink, MetricsScope, PrefixedScope};
use crate::resource_manager::ResourceRegistrar;
use crate::{ResourceNamespace, Result};

/// [`SignalAsync`] across the boundary.
#[sabi_trait]
pub trait FfiSignal: Send + Sync {
    /// Requests a new round.
    #[sabi(last_prefix_field)]
    fn signal(&self);
}

/// [`EnqueueOwner`] across the boundary.
#[sabi_trait]
pub trait FfiEnqueueOwner: Send + Sync {
    /// Requests a new round for the owner `namespace/name`.
    #[sabi(last_prefix_field)]
    fn enqueue(&self, namespace: RStr<'_>, name: RStr<'_>) -> RResult<(), FfiError>;
}

/// [`MetricSink`] across the boundary.
#[sabi_trait]
pub trait FfiMetric: Send + Sync {
    /// See [`MetricSink::add`].
    fn add(&self, value: f64);
    /// See [`MetricSink::set`].
    fn set(&self, value: f64);
    /// See [`MetricSink::observe`].
    #[sabi(last_prefix_field)]
    fn observe(&self, value: f64);
}

/// Metric kinds for [`FfiSetupContext::metric`].
const COUNTER: u8 = 0;
const GAUGE: u8 = 1;
const HISTOGRAM: u8 = 2;

/// Every service of a [`SetupContext`], flattened into one FFI trait.
#[sabi_trait]
pub trait FfiSetupContext {
    /// [`SetupContext::enqueue_owner`].
    fn enqueue_owner(&self) -> FfiEnqueueOwner_TO<'static, RArc<()>>;
    /// [`SetupContext::owner_kind`].
    fn owner_kind(&self) -> RString;
    /// Registers a metric of `kind` (0 counter, 1 gauge, 2 histogram) under
    /// the plugin's scope; `name` already holds any sub-scopes.
    fn metric(
        &self,
        kind: u8,
        name: RStr<'_>,
        help: RStr<'_>,
        buckets: RSlice<'_, f64>,
    ) -> RResult<FfiMetric_TO<'static, RArc<()>>, FfiError>;
    /// [`SecretManager::get`].
    fn secret_get(&self, key: RStr<'_>) -> RResult<RString, FfiError>;
    /// [`ResourceRegistrar::register_resource_quota`].
    #[sabi(last_prefix_field)]
    fn register_quota(&self, namespace: RStr<'_>, quota: i64) -> RResult<(), FfiError>;
}

/// Host side of a refresh signal.
pub(crate) struct HostSignal(Arc<dyn SignalAsync>);

impl HostSignal {
    pub(crate) fn wrap(s: Arc<dyn SignalAsync>) -> FfiSignal_TO<'static, RArc<()>> {
        FfiSignal_TO::from_ptr(RArc::new(HostSignal(s)), TD_Opaque)
    }
}

impl FfiSignal for HostSignal {
    fn signal(&self) {
        guard_or("task_refresh_indicator.signal", || (), || self.0.signal())
    }
}

/// Plugin side of a refresh signal.
pub(crate) struct PluginSignal(pub(crate) FfiSignal_TO<'static, RArc<()>>);

impl SignalAsync for PluginSignal {
    fn signal(&self) {
        self.0.signal()
    }
}

struct HostEnqueue(Arc<dyn EnqueueOwner>);

impl FfiEnqueueOwner for HostEnqueue {
    fn enqueue(&self, namespace: RStr<'_>, name: RStr<'_>) -> RResult<(), FfiError> {
        guard("enqueue_owner.enqueue", || {
            self.0.enqueue(&NamespacedName {
                namespace: namespace.into(),
                name: name.into(),
            })
        })
    }
}

struct PluginEnqueue(FfiEnqueueOwner_TO<'static, RArc<()>>);

impl EnqueueOwner for PluginEnqueue {
    fn enqueue(&self, owner: &NamespacedName) -> Result<()> {
        plain(
            self.0
                .enqueue(owner.namespace.as_str().into(), owner.name.as_str().into()),
        )
    }
}

struct HostMetric(Arc<dyn MetricSink>);

impl FfiMetric for HostMetric {
    fn add(&self, value: f64) {
        guard_or("metric.add", || (), || self.0.add(value))
    }
    fn set(&self, value: f64) {
        guard_or("metric.set", || (), || self.0.set(value))
    }
    fn observe(&self, value: f64) {
        guard_or("metric.observe", || (), || self.0.observe(value))
    }
}

struct PluginMetric(FfiMetric_TO<'static, RArc<()>>);

impl MetricSink for PluginMetric {
    fn add(&self, value: f64) {
        self.0.add(value)
    }
    fn set(&self, value: f64) {
        self.0.set(value)
    }
    fn observe(&self, value: f64) {
        self.0.observe(value)
    }
}

/// Host side: serves a plain [`SetupContext`] to a plugin's loader.
pub struct HostSetupContext<'a>(pub &'a dyn SetupContext);

impl FfiSetupContext for HostSetupContext<'_> {
    fn enqueue_owner(&self) -> FfiEnqueueOwner_TO<'static, RArc<()>> {
        FfiEnqueueOwner_TO::from_ptr(RArc::new(HostEnqueue(self.0.enqueue_owner())), TD_Opaque)
    }
    fn owner_kind(&self) -> RString {
        guard_or("owner_kind", RString::new, || self.0.owner_kind().into())
    }
    fn metric(
        &self,
        kind: u8,
        name: RStr<'_>,
        help: RStr<'_>,
        buckets: RSlice<'_, f64>,
    ) -> RResult<FfiMetric_TO<'static, RArc<()>>, FfiError> {
        guard("metrics_scope", || {
            let scope = self.0.metrics_scope();
            let sink = match kind {
                COUNTER => scope.counter(name.as_str(), help.as_str())?.into_sink(),
                GAUGE => scope.gauge(name.as_str(), help.as_str())?.into_sink(),
                HISTOGRAM => scope
                    .histogram(name.as_str(), help.as_str(), buckets.as_slice())?
                    .into_sink(),
                other => {
                    return Err(crate::PluginError::new(
                        "BadMetricKind",
                        format!("unknown metric kind {other}"),
                    ))
                }
            };
            Ok(FfiMetric_TO::from_ptr(RArc::new(HostMetric(sink)), TD_Opaque))
        })
    }
    fn secret_get(&self, key: RStr<'_>) -> RResult<RString, FfiError> {
        guard("secret_manager.get", || {
            self.0.secret_manager().get(key.as_str()).map(RString::from)
        })
    }
    fn register_quota(&self, namespace: RStr<'_>, quota: i64) -> RResult<(), FfiError> {
        guard("resource_registrar.register_resource_quota", || {
            self.0
                .resource_registrar()
                .register_resource_quota(&ResourceNamespace::new(namespace.as_str()), quota)
        })
    }
}

/// Plugin side: a plain [`SetupContext`] over the FFI object.
pub struct PluginSetupContext<'lt, 'r> {
    ffi: FfiSetupContext_TO<'lt, RRef<'r, ()>>,
}

impl<'lt, 'r> PluginSetupContext<'lt, 'r> {
    /// Wraps the object the host passed.
    pub fn new(ffi: FfiSetupContext_TO<'lt, RRef<'r, ()>>) -> Self {
        PluginSetupContext { ffi }
    }

    fn metric(&self, kind: u8, name: &str, help: &str, buckets: &[f64]) -> Result<Arc<dyn MetricSink>> {
        let m = plain(self.ffi.metric(kind, name.into(), help.into(), buckets.into()))?;
        Ok(Arc::new(PluginMetric(m)))
    }
}

impl SetupContext for PluginSetupContext<'_, '_> {
    fn enqueue_owner(&self) -> Arc<dyn EnqueueOwner> {
        Arc::new(PluginEnqueue(self.ffi.enqueue_owner()))
    }
    fn owner_kind(&self) -> String {
        self.ffi.owner_kind().into()
    }
    fn metrics_scope(&self) -> &dyn MetricsScope {
        self
    }
    fn secret_manager(&self) -> &dyn SecretManager {
        self
    }
    fn resource_registrar(&self) -> &dyn ResourceRegistrar {
        self
    }
}

impl SecretManager for PluginSetupContext<'_, '_> {
    fn get(&self, key: &str) -> Result<String> {
        plain(self.ffi.secret_get(key.into())).map(Into::into)
    }
}

impl ResourceRegistrar for PluginSetupContext<'_, '_> {
    fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> Result<()> {
        plain(self.ffi.register_quota(namespace.as_str().into(), quota))
    }
}

impl MetricsScope for PluginSetupContext<'_, '_> {
    fn counter(&self, name: &str, help: &str) -> Result<Counter> {
        self.metric(COUNTER, name, help, &[]).map(Counter::from_sink)
    }
    fn gauge(&self, name: &str, help: &str) -> Result<Gauge> {
        self.metric(GAUGE, name, help, &[]).map(Gauge::from_sink)
    }
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram> {
        self.metric(HISTOGRAM, name, help, buckets).map(Histogram::from_sink)
    }
    fn sub_scope(&self, name: &str) -> Box<dyn MetricsScope + '_> {
        Box::new(PrefixedScope::new(self, name))
    }
}
