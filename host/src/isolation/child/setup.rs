//! The `SetupContext` a loader gets in the child: secrets, quota
//! registration and metric registration are service calls on the load
//! call's connection; the enqueue owner and the metric handles it returns
//! use the control connection, so they work from any thread later on.

use std::sync::Arc;

use kozmo_interface::metrics::MetricSink;
use kozmo_interface::{
    Counter, EnqueueOwner, Gauge, Histogram, MetricsScope, ResourceNamespace, ResourceRegistrar, Result, SecretManager,
    SetupContext,
};
use kozmo_isolation_protocol::{MetricKind, Service};

use super::control::{ChildEnqueue, ChildSink, Control};
use super::link::Link;
use crate::isolation::wire::json;

/// The context of one loader call.
pub struct SetupProxy<'a> {
    link: Link<'a>,
    control: Arc<Control>,
    owner_kind: String,
}

impl<'a> SetupProxy<'a> {
    /// A context over `link`.
    pub fn new(link: Link<'a>, control: Arc<Control>, owner_kind: String) -> Self {
        SetupProxy {
            link,
            control,
            owner_kind,
        }
    }

    fn scope(&self) -> ScopeProxy<'_, 'a> {
        ScopeProxy {
            setup: self,
            path: Vec::new(),
        }
    }
}

impl SetupContext for SetupProxy<'_> {
    fn enqueue_owner(&self) -> Arc<dyn EnqueueOwner> {
        Arc::new(ChildEnqueue(self.control.clone()))
    }
    fn owner_kind(&self) -> String {
        self.owner_kind.clone()
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

impl SecretManager for SetupProxy<'_> {
    fn get(&self, key: &str) -> Result<String> {
        self.link.text(Service::Secret { key: key.into() })
    }
}

impl ResourceRegistrar for SetupProxy<'_> {
    fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> Result<()> {
        self.link.unit(Service::RegisterQuota {
            namespace_json: json(namespace)?,
            quota,
        })
    }
}

impl MetricsScope for SetupProxy<'_> {
    fn counter(&self, name: &str, help: &str) -> Result<Counter> {
        self.scope().counter(name, help)
    }
    fn gauge(&self, name: &str, help: &str) -> Result<Gauge> {
        self.scope().gauge(name, help)
    }
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram> {
        self.scope().histogram(name, help, buckets)
    }
    fn sub_scope(&self, name: &str) -> Box<dyn MetricsScope + '_> {
        Box::new(ScopeProxy {
            setup: self,
            path: vec![name.to_string()],
        })
    }
}

/// The plugin's metrics scope or one of its sub-scopes (`path` below it).
struct ScopeProxy<'s, 'a> {
    setup: &'s SetupProxy<'a>,
    path: Vec<String>,
}

impl ScopeProxy<'_, '_> {
    fn register(&self, kind: MetricKind, name: &str, help: &str, buckets: &[f64]) -> Result<Arc<dyn MetricSink>> {
        let handle = self.setup.link.handle(Service::RegisterMetric {
            kind,
            scope: self.path.clone(),
            name: name.into(),
            help: help.into(),
            buckets: buckets.to_vec(),
        })?;
        Ok(Arc::new(ChildSink {
            handle,
            control: self.setup.control.clone(),
        }))
    }
}

impl MetricsScope for ScopeProxy<'_, '_> {
    fn counter(&self, name: &str, help: &str) -> Result<Counter> {
        self.register(MetricKind::Counter, name, help, &[])
            .map(Counter::from_sink)
    }
    fn gauge(&self, name: &str, help: &str) -> Result<Gauge> {
        self.register(MetricKind::Gauge, name, help, &[]).map(Gauge::from_sink)
    }
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram> {
        self.register(MetricKind::Histogram, name, help, buckets)
            .map(Histogram::from_sink)
    }
    fn sub_scope(&self, name: &str) -> Box<dyn MetricsScope + '_> {
        let mut path = self.path.clone();
        path.push(name.to_string());
        Box::new(ScopeProxy {
            setup: self.setup,
            path,
        })
    }
}
