//! Who and what an execution is: [`TaskExecutionMetadata`],
//! [`TaskExecutionId`], [`TaskOverrides`], and plain records implementing
//! them ([`MetadataRecord`], [`ExecutionIdRecord`], [`OverridesRecord`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::encoding::generated_name_with;
use crate::task::Identifier;
use crate::{PluginError, Result};

/// A name inside a namespace (the owner of an execution).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespacedName {
    /// Namespace (`<project>-<domain>` by convention).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A reference to the object owning an execution.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OwnerReference {
    /// Kind of the owner (e.g. `Execution`).
    pub kind: String,
    /// Name of the owner.
    pub name: String,
    /// Unique id of the owner.
    pub uid: String,
}

/// An execution of a workflow (project, domain, name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowExecutionIdentifier {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Name.
    pub name: String,
}

/// One node of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeExecutionIdentifier {
    /// The node.
    pub node_id: String,
    /// The execution.
    pub execution_id: WorkflowExecutionIdentifier,
}

/// One attempt of one task on one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskExecutionIdentifier {
    /// The task.
    pub task_id: Identifier,
    /// The node execution.
    pub node_execution_id: NodeExecutionIdentifier,
    /// The attempt, from 0.
    pub retry_attempt: u32,
}

/// Resource requests and limits by name (`cpu`, `memory`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceRequirements {
    /// Requested amounts.
    pub requests: BTreeMap<String, String>,
    /// Limits.
    pub limits: BTreeMap<String, String>,
}

/// Resources beyond cpu/memory (accelerators, shared memory).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtendedResources {
    /// Accelerator device name, empty if none.
    pub gpu_accelerator: String,
    /// Accelerator partition size, empty if none.
    pub gpu_partition_size: String,
    /// Shared memory size, empty if default.
    pub shared_memory: String,
}

/// A secret a task asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretRequest {
    /// Group (namespace) of the secret.
    pub group: String,
    /// Key inside the group.
    pub key: String,
}

/// Identity a task runs with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityContext {
    /// Run-as user or role, empty for the daemon's.
    pub run_as: String,
    /// Secrets the task needs.
    pub secrets: Vec<SecretRequest>,
}

/// Overrides of one execution's resources and configuration.
pub trait TaskOverrides {
    /// Resource requests and limits.
    fn resources(&self) -> &ResourceRequirements;
    /// Extended resources.
    fn extended_resources(&self) -> &ExtendedResources;
    /// Free-form key/value configuration.
    fn config(&self) -> &BTreeMap<String, String>;
}

/// The identity of one attempt and its generated name.
pub trait TaskExecutionId {
    /// The name the host generated for this attempt, bounded by the
    /// plugin's `generated_name_max_length` (docs/semantics.md#generated-names).
    fn generated_name(&self) -> &str;
    /// The generated name padded with `'0'` to `min_length`, or hashed down
    /// to `max_length`.
    fn generated_name_with(&self, min_length: usize, max_length: usize) -> Result<String> {
        generated_name_with(self.generated_name(), min_length, max_length)
            .map_err(|e| PluginError::new("GeneratedNameTooLong", e.to_string()))
    }
    /// The full identifier.
    fn id(&self) -> &TaskExecutionIdentifier;
    /// The node's unique id.
    fn unique_node_id(&self) -> &str;
}

/// What the host knows about the execution a task belongs to.
pub trait TaskExecutionMetadata {
    /// The owner's namespaced name.
    fn owner_id(&self) -> &NamespacedName;
    /// The attempt's identity.
    fn task_execution_id(&self) -> &dyn TaskExecutionId;
    /// The namespace the task runs in.
    fn namespace(&self) -> &str;
    /// The owner object.
    fn owner_reference(&self) -> &OwnerReference;
    /// Per-execution overrides.
    fn overrides(&self) -> &dyn TaskOverrides;
    /// Labels.
    fn labels(&self) -> &BTreeMap<String, String>;
    /// Attempts allowed (retries + 1).
    fn max_attempts(&self) -> u32;
    /// Annotations.
    fn annotations(&self) -> &BTreeMap<String, String>;
    /// Service account to run as.
    fn service_account(&self) -> &str;
    /// Security context.
    fn security_context(&self) -> &SecurityContext;
    /// Whether the attempt may run on interruptible capacity.
    fn is_interruptible(&self) -> bool;
    /// Platform defaults for resources.
    fn platform_resources(&self) -> &ResourceRequirements;
    /// The interruptible-failure threshold (docs/semantics.md#interruptible).
    fn interruptible_failure_threshold(&self) -> i32;
    /// Environment variables for the task.
    fn environment_variables(&self) -> &BTreeMap<String, String>;
    /// The metadata as a plain record when the implementation already is
    /// one, so hosts can send it across the plugin boundary without copying
    /// it field by field first.
    fn as_record(&self) -> Option<&MetadataRecord> {
        None
    }
}

/// A plain [`TaskOverrides`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OverridesRecord {
    /// See [`TaskOverrides::resources`].
    pub resources: ResourceRequirements,
    /// See [`TaskOverrides::extended_resources`].
    pub extended_resources: ExtendedResources,
    /// See [`TaskOverrides::config`].
    pub config: BTreeMap<String, String>,
}

impl TaskOverrides for OverridesRecord {
    fn resources(&self) -> &ResourceRequirements {
        &self.resources
    }
    fn extended_resources(&self) -> &ExtendedResources {
        &self.extended_resources
    }
    fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }
}

/// A plain [`TaskExecutionId`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionIdRecord {
    /// See [`TaskExecutionId::generated_name`].
    pub generated_name: String,
    /// See [`TaskExecutionId::id`].
    pub id: TaskExecutionIdentifier,
    /// See [`TaskExecutionId::unique_node_id`].
    pub unique_node_id: String,
}

impl TaskExecutionId for ExecutionIdRecord {
    fn generated_name(&self) -> &str {
        &self.generated_name
    }
    fn id(&self) -> &TaskExecutionIdentifier {
        &self.id
    }
    fn unique_node_id(&self) -> &str {
        &self.unique_node_id
    }
}

/// A plain [`TaskExecutionMetadata`]; hosts fill one per attempt, and it is
/// what crosses the plugin boundary.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataRecord {
    /// See [`TaskExecutionMetadata::owner_id`].
    pub owner_id: NamespacedName,
    /// See [`TaskExecutionMetadata::task_execution_id`].
    pub task_execution_id: ExecutionIdRecord,
    /// See [`TaskExecutionMetadata::namespace`].
    pub namespace: String,
    /// See [`TaskExecutionMetadata::owner_reference`].
    pub owner_reference: OwnerReference,
    /// See [`TaskExecutionMetadata::overrides`].
    pub overrides: OverridesRecord,
    /// See [`TaskExecutionMetadata::labels`].
    pub labels: BTreeMap<String, String>,
    /// See [`TaskExecutionMetadata::max_attempts`].
    pub max_attempts: u32,
    /// See [`TaskExecutionMetadata::annotations`].
    pub annotations: BTreeMap<String, String>,
    /// See [`TaskExecutionMetadata::service_account`].
    pub service_account: String,
    /// See [`TaskExecutionMetadata::security_context`].
    pub security_context: SecurityContext,
    /// See [`TaskExecutionMetadata::is_interruptible`].
    pub interruptible: bool,
    /// See [`TaskExecutionMetadata::platform_resources`].
    pub platform_resources: ResourceRequirements,
    /// See [`TaskExecutionMetadata::interruptible_failure_threshold`].
    pub interruptible_failure_threshold: i32,
    /// See [`TaskExecutionMetadata::environment_variables`].
    pub environment_variables: BTreeMap<String, String>,
}

impl MetadataRecord {
    /// Copies any implementation into a record.
    pub fn capture(m: &dyn TaskExecutionMetadata) -> Self {
        let id = m.task_execution_id();
        let o = m.overrides();
        MetadataRecord {
            owner_id: m.owner_id().clone(),
            task_execution_id: ExecutionIdRecord {
                generated_name: id.generated_name().to_string(),
                id: id.id().clone(),
                unique_node_id: id.unique_node_id().to_string(),
            },
            namespace: m.namespace().to_string(),
            owner_reference: m.owner_reference().clone(),
            overrides: OverridesRecord {
                resources: o.resources().clone(),
                extended_resources: o.extended_resources().clone(),
                config: o.config().clone(),
            },
            labels: m.labels().clone(),
            max_attempts: m.max_attempts(),
            annotations: m.annotations().clone(),
            service_account: m.service_account().to_string(),
            security_context: m.security_context().clone(),
            interruptible: m.is_interruptible(),
            platform_resources: m.platform_resources().clone(),
            interruptible_failure_threshold: m.interruptible_failure_threshold(),
            environment_variables: m.environment_variables().clone(),
        }
    }
}

impl TaskExecutionMetadata for MetadataRecord {
    fn owner_id(&self) -> &NamespacedName {
        &self.owner_id
    }
    fn task_execution_id(&self) -> &dyn TaskExecutionId {
        &self.task_execution_id
    }
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn owner_reference(&self) -> &OwnerReference {
        &self.owner_reference
    }
    fn overrides(&self) -> &dyn TaskOverrides {
        &self.overrides
    }
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }
    fn service_account(&self) -> &str {
        &self.service_account
    }
    fn security_context(&self) -> &SecurityContext {
        &self.security_context
    }
    fn is_interruptible(&self) -> bool {
        self.interruptible
    }
    fn platform_resources(&self) -> &ResourceRequirements {
        &self.platform_resources
    }
    fn interruptible_failure_threshold(&self) -> i32 {
        self.interruptible_failure_threshold
    }
    fn environment_variables(&self) -> &BTreeMap<String, String> {
        &self.environment_variables
    }
    fn as_record(&self) -> Option<&MetadataRecord> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ExecutionIdRecord {
        ExecutionIdRecord {
            generated_name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn generated_name_with_vectors() {
        assert!(record("exec name").generated_name_with(0, 0).is_err());
        assert_eq!(
            record("exec name name").generated_name_with(10, 100).unwrap(),
            "exec name name"
        );
        assert_eq!(record("exec").generated_name_with(10, 100).unwrap(), "exec000000");
    }

    #[test]
    fn capture_copies_every_field() {
        let mut m = MetadataRecord {
            namespace: "ns".into(),
            max_attempts: 3,
            interruptible: true,
            interruptible_failure_threshold: -1,
            ..Default::default()
        };
        m.labels.insert("l".into(), "v".into());
        m.task_execution_id.generated_name = "g".into();
        m.overrides.config.insert("k".into(), "v".into());
        assert_eq!(MetadataRecord::capture(&m), m);
    }
}
