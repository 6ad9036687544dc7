//! Resource-manager values: [`AllocationStatus`], [`ResourceNamespace`],
//! constraints.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The answer to an allocation request. A transparent `u8` so new values can
/// be added without breaking the ABI.
///
/// ```
/// use kozmo_interface::AllocationStatus;
///
/// assert_eq!(AllocationStatus::GRANTED.to_string(), "Granted");
/// assert_eq!("Exhausted".parse(), Ok(AllocationStatus::EXHAUSTED));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[repr(transparent)]
#[serde(transparent)]
pub struct AllocationStatus(pub u8);

impl AllocationStatus {
    /// 0: no answer (used with errors).
    pub const UNDEFINED: AllocationStatus = AllocationStatus(0);
    /// 1: the token holds a slot.
    pub const GRANTED: AllocationStatus = AllocationStatus(1);
    /// 2: the quota is full; wait and try again.
    pub const EXHAUSTED: AllocationStatus = AllocationStatus(2);
    /// 3: a project/namespace cap is full; treated like `EXHAUSTED`.
    pub const NAMESPACE_QUOTA_EXCEEDED: AllocationStatus = AllocationStatus(3);

    const NAMES: [&'static str; 4] = ["AllocationUndefined", "Granted", "Exhausted", "NamespaceQuotaExceeded"];

    /// All known values in numeric order.
    pub fn values() -> [AllocationStatus; 4] {
        [
            AllocationStatus::UNDEFINED,
            AllocationStatus::GRANTED,
            AllocationStatus::EXHAUSTED,
            AllocationStatus::NAMESPACE_QUOTA_EXCEEDED,
        ]
    }

    /// The name, or `None` for an unknown value.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES.get(self.0 as usize).copied()
    }

    /// What a plugin does with this answer of
    /// [`ResourceManager::allocate_resource`](crate::ResourceManager::allocate_resource):
    /// `Ok(None)` when granted (go on with the work); the
    /// `WaitingForResources` phase to report (with `reason`, version 0)
    /// when the quota or a namespace cap is full (the host runs the round
    /// again when a slot frees); a SYSTEM error naming the status for
    /// anything else (the original fell through an empty case here and
    /// reported "allocation status undefined" for a full namespace cap).
    ///
    /// ```
    /// use kozmo_interface::{AllocationStatus, Phase};
    ///
    /// assert!(AllocationStatus::GRANTED.wait_for("waiting for a slot").unwrap().is_none());
    /// let wait = AllocationStatus::NAMESPACE_QUOTA_EXCEEDED.wait_for("waiting for a slot").unwrap().unwrap();
    /// assert_eq!(wait.phase(), Phase::WAITING_FOR_RESOURCES);
    /// assert_eq!(wait.reason(), "waiting for a slot");
    /// assert!(AllocationStatus::UNDEFINED.wait_for("waiting for a slot").is_err());
    /// ```
    pub fn wait_for(self, reason: &str) -> crate::Result<Option<crate::PhaseInfo>> {
        match self {
            AllocationStatus::GRANTED => Ok(None),
            AllocationStatus::EXHAUSTED | AllocationStatus::NAMESPACE_QUOTA_EXCEEDED => Ok(Some(
                crate::PhaseInfo::waiting_for_resources_info(std::time::SystemTime::now(), 0, reason, None),
            )),
            other => Err(crate::PluginError::system(
                "AllocationUndefined",
                format!("allocation status {other}: neither granted nor waiting"),
            )),
        }
    }
}

impl fmt::Display for AllocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "AllocationStatus({})", self.0),
        }
    }
}

impl FromStr for AllocationStatus {
    type Err = String;

    /// Parses the exact name, e.g. `Granted`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AllocationStatus::values()
            .into_iter()
            .find(|v| v.name() == Some(s))
            .ok_or_else(|| format!("{s} does not belong to AllocationStatus values"))
    }
}

/// A resource namespace; sub-namespaces are joined with `:`.
///
/// ```
/// use kozmo_interface::ResourceNamespace;
///
/// let ns = ResourceNamespace::new("redisresourcemanager");
/// let sub = ns.create_sub_namespace(&ResourceNamespace::new("qubole-hive-executor"));
/// assert_eq!(sub.as_str(), "redisresourcemanager:qubole-hive-executor");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceNamespace(pub String);

impl ResourceNamespace {
    /// Wraps a name.
    pub fn new(name: impl Into<String>) -> Self {
        ResourceNamespace(name.into())
    }

    /// `self:child`.
    pub fn create_sub_namespace(&self, child: &ResourceNamespace) -> ResourceNamespace {
        ResourceNamespace(format!("{}:{}", self.0, child.0))
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cap on the tokens one scope may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ResourceConstraint {
    /// The cap; a request is allowed iff the scope holds fewer tokens.
    pub value: i64,
}

/// Caps per project and per project+domain; `None` = no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ResourceConstraintsSpec {
    /// Cap for all tokens of the execution's project.
    pub project_scope: Option<ResourceConstraint>,
    /// Cap for all tokens of the execution's project and domain.
    pub namespace_scope: Option<ResourceConstraint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_status_names() {
        let rows = [
            (0, "AllocationUndefined"),
            (1, "Granted"),
            (2, "Exhausted"),
            (3, "NamespaceQuotaExceeded"),
        ];
        for (v, name) in rows {
            let s = AllocationStatus(v);
            assert_eq!(s.to_string(), name);
            assert_eq!(name.parse::<AllocationStatus>().unwrap(), s);
        }
        assert_eq!(AllocationStatus(4).to_string(), "AllocationStatus(4)");
        assert!("granted".parse::<AllocationStatus>().is_err());
        assert_eq!(AllocationStatus::values().len(), 4);
    }

    #[test]
    fn sub_namespaces_join_with_colon() {
        let a = ResourceNamespace::new("a");
        assert_eq!(a.create_sub_namespace(&ResourceNamespace::new("b")).to_string(), "a:b");
    }
}
