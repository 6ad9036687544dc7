//! The resource manager plugins use to respect quotas.

use crate::{AllocationStatus, ResourceConstraintsSpec, ResourceNamespace, Result};

/// Allocates and releases quota tokens at run time. Namespaces are the
/// plugin's own (the host prefixes them); allocating a token that is already
/// granted returns `GRANTED` again.
pub trait ResourceManager {
    /// The manager's id (e.g. `inmemoryresourcemanager`).
    fn id(&self) -> String;
    /// Asks for a slot in `namespace` for `token`, within `constraints`.
    fn allocate_resource(
        &self,
        namespace: &ResourceNamespace,
        token: &str,
        constraints: &ResourceConstraintsSpec,
    ) -> Result<AllocationStatus>;
    /// Gives the slot back (releasing a token not held is not an error).
    fn release_resource(&self, namespace: &ResourceNamespace, token: &str) -> Result<()>;
}

/// Registers quotas while plugins load.
pub trait ResourceRegistrar {
    /// Declares that `namespace` holds at most `quota` tokens at once.
    fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> Result<()>;
}
