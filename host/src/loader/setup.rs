//! The [`SetupContext`] each plugin loader gets (docs/semantics.md#resources):
//! a registrar proxy that prefixes namespaces with
//! `<resource manager id>:<entry id>:`, the secret manager, a metrics
//! sub-scope named after the plugin, and the enqueue-owner callback.

use std::sync::Arc;

use kozmo_interface::metadata::NamespacedName;
use kozmo_interface::{
    EnqueueOwner, MetricsScope, PluginError, ResourceNamespace, ResourceRegistrar, Result, SecretManager, SetupContext,
};

use crate::metrics::Metrics;

/// Registers quotas under `<resource manager id>:<entry id>:<namespace>`.
pub struct PrefixedRegistrar {
    prefix: ResourceNamespace,
    inner: Arc<dyn ResourceRegistrar + Send + Sync>,
}

impl PrefixedRegistrar {
    /// A proxy for entry `entry_id` over the manager `resource_manager_id`.
    pub fn new(resource_manager_id: &str, entry_id: &str, inner: Arc<dyn ResourceRegistrar + Send + Sync>) -> Self {
        PrefixedRegistrar {
            prefix: ResourceNamespace::new(resource_manager_id).create_sub_namespace(&ResourceNamespace::new(entry_id)),
            inner,
        }
    }

    /// `<resource manager id>:<entry id>`.
    pub fn prefix(&self) -> &ResourceNamespace {
        &self.prefix
    }
}

impl ResourceRegistrar for PrefixedRegistrar {
    fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> Result<()> {
        self.inner
            .register_resource_quota(&self.prefix.create_sub_namespace(namespace), quota)
    }
}

/// The setup context of one plugin entry.
pub struct PluginSetupContext {
    registrar: PrefixedRegistrar,
    secrets: Arc<dyn SecretManager + Send + Sync>,
    metrics: Metrics,
    enqueue_owner: Arc<dyn EnqueueOwner>,
    owner_kind: String,
}

impl PluginSetupContext {
    /// The context for `entry_id`, built from the daemon's services.
    pub fn new(services: &super::LoaderServices, entry_id: &str) -> Self {
        PluginSetupContext {
            registrar: PrefixedRegistrar::new(&services.resource_manager_id, entry_id, services.registrar.clone()),
            secrets: services.secrets.clone(),
            metrics: services.metrics.sub(entry_id),
            enqueue_owner: services.enqueue_owner.clone(),
            owner_kind: services.owner_kind.clone(),
        }
    }
}

impl SetupContext for PluginSetupContext {
    fn enqueue_owner(&self) -> Arc<dyn EnqueueOwner> {
        self.enqueue_owner.clone()
    }
    fn owner_kind(&self) -> String {
        self.owner_kind.clone()
    }
    fn metrics_scope(&self) -> &dyn MetricsScope {
        &self.metrics
    }
    fn secret_manager(&self) -> &dyn SecretManager {
        &*self.secrets
    }
    fn resource_registrar(&self) -> &dyn ResourceRegistrar {
        &self.registrar
    }
}

/// Accepts every quota: the registrar of the noop resource manager that
/// `kozmo plugins list/check` use (docs/semantics.md#resources).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopRegistrar;

impl ResourceRegistrar for NoopRegistrar {
    fn register_resource_quota(&self, _namespace: &ResourceNamespace, _quota: i64) -> Result<()> {
        Ok(())
    }
}

/// Has no secrets: every lookup fails with a message saying where it
/// happened (used by `kozmo plugins list/check`, which run loaders outside
/// the daemon).
#[derive(Debug, Clone)]
pub struct NoSecrets(pub String);

impl SecretManager for NoSecrets {
    fn get(&self, key: &str) -> Result<String> {
        Err(PluginError::system(
            "SecretNotAvailable",
            format!("secret {key} is not available {}", self.0),
        ))
    }
}

/// Ignores enqueue requests (no engine is running).
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreEnqueue;

impl EnqueueOwner for IgnoreEnqueue {
    fn enqueue(&self, _owner: &NamespacedName) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, i64)>>);

    impl ResourceRegistrar for Recorder {
        fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> Result<()> {
            self.0.lock().unwrap().push((namespace.0.clone(), quota));
            Ok(())
        }
    }

    #[test]
    fn the_registrar_proxy_prefixes_manager_and_entry_id() {
        let rec = Arc::new(Recorder::default());
        let proxy = PrefixedRegistrar::new("noopresourcemanager", "sleep-quota", rec.clone());
        proxy
            .register_resource_quota(&ResourceNamespace::new("slots"), 3)
            .unwrap();
        assert_eq!(
            *rec.0.lock().unwrap(),
            [("noopresourcemanager:sleep-quota:slots".to_string(), 3)]
        );
    }
}
