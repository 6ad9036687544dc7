//! [`TestResources`]: one in-memory resource manager shared by a loader's
//! [`TestSetupContext`](super::TestSetupContext) and any number of
//! [`TestTaskContext`](super::TestTaskContext)s, as the daemon's is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::resource_manager::{ResourceManager, ResourceRegistrar};
use crate::{AllocationStatus, ResourceConstraintsSpec, ResourceNamespace, Result};

/// Quotas and the tokens holding them, in memory, shared by every context
/// given the same `Arc` (cloning it shares; it never copies the counts).
///
/// It counts like the daemon's manager: a namespace with a quota grants at
/// most that many tokens at once (`Exhausted` beyond); asking again for a
/// token already held is `Granted`; a namespace without a quota grants
/// everything. Scope caps in [`ResourceConstraintsSpec`] are answered too:
/// a `project_scope` or `namespace_scope` cap of N lets at most N tokens of
/// the namespace be held (every test context belongs to one project and
/// domain), `NamespaceQuotaExceeded` beyond.
///
/// The quota a plugin's loader registers through
/// [`TestSetupContext`](super::TestSetupContext) lands here, so task
/// contexts made with [`TestSetupContext::task_context`](super::TestSetupContext::task_context)
/// compete for it:
///
/// ```
/// use kozmo_interface::testing::TestSetupContext;
/// use kozmo_interface::{ResourceNamespace, ResourceRegistrar, SetupContext};
///
/// let setup = TestSetupContext::new();
/// // What a loader does:
/// setup.resource_registrar().register_resource_quota(&ResourceNamespace::new("slots"), 1).unwrap();
/// assert_eq!(setup.resources().quota("slots"), Some(1));
/// let a = setup.task_context();
/// let b = setup.task_context();
/// assert!(std::sync::Arc::ptr_eq(&a.resources(), &b.resources()));
/// ```
#[derive(Debug, Default)]
pub struct TestResources {
    quotas: Mutex<BTreeMap<String, usize>>,
    held: Mutex<BTreeMap<String, BTreeSet<String>>>,
    history: Mutex<Vec<Allocation>>,
}

/// One call on a [`TestResources`], in order (see [`TestResources::history`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    /// `allocate_resource(namespace, token)` answered `status`.
    Allocate {
        /// The namespace.
        namespace: String,
        /// The token.
        token: String,
        /// The answer.
        status: AllocationStatus,
    },
    /// `release_resource(namespace, token)`.
    Release {
        /// The namespace.
        namespace: String,
        /// The token.
        token: String,
    },
}

impl TestResources {
    /// An empty manager (no quotas: every namespace is unlimited), shared.
    ///
    /// ```
    /// use kozmo_interface::testing::TestResources;
    ///
    /// let r = TestResources::new();
    /// assert_eq!(r.quota("slots"), None);
    /// ```
    pub fn new() -> Arc<Self> {
        Arc::new(TestResources::default())
    }

    /// Sets the quota of `namespace` (the plugin's own name for it, as its
    /// loader registers it) and returns the same manager.
    ///
    /// ```
    /// use kozmo_interface::testing::TestResources;
    ///
    /// let r = TestResources::new().with_quota("slots", 2);
    /// assert_eq!(r.quota("slots"), Some(2));
    /// ```
    pub fn with_quota(self: Arc<Self>, namespace: &str, quota: usize) -> Arc<Self> {
        self.set_quota(namespace, quota);
        self
    }

    /// Sets the quota of `namespace` (on a shared manager: every context
    /// using it sees the new quota at its next allocation).
    ///
    /// ```
    /// use kozmo_interface::testing::TestResources;
    ///
    /// let r = TestResources::new();
    /// r.set_quota("slots", 3);
    /// assert_eq!(r.quota("slots"), Some(3));
    /// ```
    pub fn set_quota(&self, namespace: &str, quota: usize) {
        lock(&self.quotas).insert(namespace.to_string(), quota);
    }

    /// The quota of `namespace`, if one was set or registered.
    pub fn quota(&self, namespace: &str) -> Option<usize> {
        lock(&self.quotas).get(namespace).copied()
    }

    /// The tokens holding a slot of `namespace` now.
    ///
    /// ```
    /// use kozmo_interface::testing::TestResources;
    /// use kozmo_interface::{ResourceConstraintsSpec, ResourceManager, ResourceNamespace};
    ///
    /// let r = TestResources::new();
    /// r.allocate_resource(&ResourceNamespace::new("slots"), "t1", &ResourceConstraintsSpec::default()).unwrap();
    /// assert_eq!(r.held("slots").into_iter().collect::<Vec<_>>(), ["t1"]);
    /// ```
    pub fn held(&self, namespace: &str) -> BTreeSet<String> {
        lock(&self.held).get(namespace).cloned().unwrap_or_default()
    }

    /// Every allocation and release so far, in order.
    ///
    /// ```
    /// use kozmo_interface::testing::{Allocation, TestResources};
    /// use kozmo_interface::{AllocationStatus, ResourceConstraintsSpec, ResourceManager, ResourceNamespace};
    ///
    /// let r = TestResources::new().with_quota("slots", 0);
    /// let ns = ResourceNamespace::new("slots");
    /// r.allocate_resource(&ns, "t1", &ResourceConstraintsSpec::default()).unwrap();
    /// assert_eq!(
    ///     r.history(),
    ///     [Allocation::Allocate { namespace: "slots".into(), token: "t1".into(), status: AllocationStatus::EXHAUSTED }]
    /// );
    /// ```
    pub fn history(&self) -> Vec<Allocation> {
        lock(&self.history).clone()
    }

    /// Allocation with a quota override (the one a
    /// [`TestTaskContext`](super::TestTaskContext)'s own `quotas` field sets).
    pub(crate) fn allocate_with(
        &self,
        namespace: &ResourceNamespace,
        token: &str,
        constraints: &ResourceConstraintsSpec,
        quota_override: Option<usize>,
    ) -> AllocationStatus {
        let quota = quota_override.or_else(|| self.quota(&namespace.0));
        let mut held = lock(&self.held);
        let set = held.entry(namespace.0.clone()).or_default();
        let cap = [constraints.project_scope, constraints.namespace_scope]
            .into_iter()
            .flatten()
            .map(|c| c.value.max(0) as usize)
            .min();
        let status = if set.contains(token) {
            AllocationStatus::GRANTED
        } else if quota.is_some_and(|q| set.len() >= q) {
            AllocationStatus::EXHAUSTED
        } else if cap.is_some_and(|c| set.len() >= c) {
            AllocationStatus::NAMESPACE_QUOTA_EXCEEDED
        } else {
            set.insert(token.to_string());
            AllocationStatus::GRANTED
        };
        drop(held);
        lock(&self.history).push(Allocation::Allocate {
            namespace: namespace.0.clone(),
            token: token.to_string(),
            status,
        });
        status
    }
}

impl ResourceManager for TestResources {
    fn id(&self) -> String {
        "testresourcemanager".into()
    }

    fn allocate_resource(
        &self,
        namespace: &ResourceNamespace,
        token: &str,
        constraints: &ResourceConstraintsSpec,
    ) -> Result<AllocationStatus> {
        Ok(self.allocate_with(namespace, token, constraints, None))
    }

    fn release_resource(&self, namespace: &ResourceNamespace, token: &str) -> Result<()> {
        if let Some(set) = lock(&self.held).get_mut(&namespace.0) {
            set.remove(token);
        }
        lock(&self.history).push(Allocation::Release {
            namespace: namespace.0.clone(),
            token: token.to_string(),
        });
        Ok(())
    }
}

impl ResourceRegistrar for TestResources {
    /// Sets the quota (a negative one counts as 0).
    fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> Result<()> {
        self.set_quota(&namespace.0, quota.max(0) as usize);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceConstraint;

    #[test]
    fn quota_regrant_release_and_caps() {
        let r = TestResources::new().with_quota("q", 2);
        let ns = ResourceNamespace::new("q");
        let none = ResourceConstraintsSpec::default();
        assert_eq!(r.allocate_resource(&ns, "a", &none).unwrap(), AllocationStatus::GRANTED);
        assert_eq!(r.allocate_resource(&ns, "a", &none).unwrap(), AllocationStatus::GRANTED);
        assert_eq!(r.allocate_resource(&ns, "b", &none).unwrap(), AllocationStatus::GRANTED);
        assert_eq!(
            r.allocate_resource(&ns, "c", &none).unwrap(),
            AllocationStatus::EXHAUSTED
        );
        r.release_resource(&ns, "a").unwrap();
        r.release_resource(&ns, "a").unwrap();
        let cap = ResourceConstraintsSpec {
            project_scope: Some(ResourceConstraint { value: 1 }),
            namespace_scope: None,
        };
        assert_eq!(
            r.allocate_resource(&ns, "c", &cap).unwrap(),
            AllocationStatus::NAMESPACE_QUOTA_EXCEEDED
        );
        assert_eq!(r.allocate_resource(&ns, "c", &none).unwrap(), AllocationStatus::GRANTED);
        assert_eq!(r.held("q"), BTreeSet::from(["b".to_string(), "c".to_string()]));
        assert_eq!(r.history().len(), 8);
        let unlimited = ResourceNamespace::new("other");
        for t in 0..100 {
            assert_eq!(
                r.allocate_resource(&unlimited, &t.to_string(), &none).unwrap(),
                AllocationStatus::GRANTED
            );
        }
    }
}
