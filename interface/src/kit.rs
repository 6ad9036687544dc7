//! Small helpers every plugin otherwise writes itself: the task's generated
//! name (the usual quota token), its raw output directory when the data
//! store is local, quota allocation that answers with the phase to report,
//! and the time in milliseconds for plugin state.
//!
//! [`TaskContextExt`] is implemented for every [`TaskExecutionContext`],
//! so bring it into scope and call its methods on `ctx`:
//!
//! ```
//! use kozmo_interface::kit::TaskContextExt;
//! use kozmo_interface::testing::TestTaskContext;
//! use kozmo_interface::{Phase, ResourceNamespace};
//!
//! let ctx = TestTaskContext::new().with_quota("slots", 0);
//! assert_eq!(ctx.generated_name(), "test-exec-n0-0");
//! assert!(ctx.raw_output_dir().is_some(), "the test context's raw prefix is a local directory");
//! let wait = ctx.allocate(&ResourceNamespace::new("slots"), "waiting for a slot").unwrap();
//! assert_eq!(wait.unwrap().phase(), Phase::WAITING_FOR_RESOURCES);
//! ```

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{PhaseInfo, ResourceConstraintsSpec, ResourceNamespace, Result, TaskExecutionContext};

/// Milliseconds since the Unix epoch (0 if the clock is before it): the
/// usual way to keep a time in plugin state, which outlives the process.
///
/// ```
/// let t = kozmo_interface::kit::now_ms();
/// assert!(t > 1_600_000_000_000);
/// ```
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Helpers on every [`TaskExecutionContext`] (plain functions of the
/// context's services; nothing here crosses the ABI on its own).
pub trait TaskContextExt {
    /// The attempt's generated name: unique per execution, node and
    /// attempt, the same in every round of the attempt. It is the natural
    /// quota token and the name for anything the plugin creates outside
    /// the host (a remote job, a temporary file).
    ///
    /// ```
    /// use kozmo_interface::kit::TaskContextExt;
    /// use kozmo_interface::testing::TestTaskContext;
    ///
    /// let ctx = TestTaskContext::new().with_generated_name("job-7-n0-0");
    /// assert_eq!(ctx.generated_name(), "job-7-n0-0");
    /// ```
    fn generated_name(&self) -> String;

    /// The attempt's raw output prefix as a local directory, when the
    /// host's data store is local (the Kozmo daemon always passes an
    /// absolute path; tests may pass a `file://` URL), else `None`
    /// (an object store, `mem://`). See [`crate::io::local_dir`] for the
    /// forms accepted. The directory may not exist yet: create it.
    ///
    /// ```
    /// use std::path::PathBuf;
    /// use kozmo_interface::kit::TaskContextExt;
    /// use kozmo_interface::testing::TestTaskContext;
    ///
    /// let ctx = TestTaskContext::new().with_raw_output_prefix("file:///srv/kozmo/data/raw/x-n0-0");
    /// assert_eq!(ctx.raw_output_dir(), Some(PathBuf::from("/srv/kozmo/data/raw/x-n0-0")));
    /// let remote = TestTaskContext::new().with_raw_output_prefix("s3://bucket/raw/x-n0-0");
    /// assert_eq!(remote.raw_output_dir(), None);
    /// ```
    fn raw_output_dir(&self) -> Option<PathBuf>;

    /// Asks for a slot in `namespace` for this attempt (token: its
    /// [generated name](TaskContextExt::generated_name), no scope caps) and
    /// says what to do: `Ok(None)` when granted (go on; asking again for a
    /// token already held is granted again, so it is safe in every round),
    /// `Ok(Some(phase))` with the `WaitingForResources` phase to report
    /// (reason `reason`) when the quota or a cap is full — the host runs
    /// the round again when a slot frees —, an error for anything else
    /// (see [`AllocationStatus::wait_for`](crate::AllocationStatus::wait_for)).
    /// Release the slot in `finalize` with [`TaskContextExt::release`].
    ///
    /// ```
    /// use kozmo_interface::kit::TaskContextExt;
    /// use kozmo_interface::testing::{TestResources, TestTaskContext};
    /// use kozmo_interface::{Phase, ResourceNamespace};
    ///
    /// let slots = ResourceNamespace::new("slots");
    /// let resources = TestResources::new().with_quota("slots", 1);
    /// let a = TestTaskContext::new().with_generated_name("a-n0-0").with_resources(resources.clone());
    /// let b = TestTaskContext::new().with_generated_name("b-n0-0").with_resources(resources.clone());
    /// assert!(a.allocate(&slots, "no free slot").unwrap().is_none(), "a holds the slot");
    /// let wait = b.allocate(&slots, "no free slot").unwrap().expect("b waits");
    /// assert_eq!((wait.phase(), wait.reason()), (Phase::WAITING_FOR_RESOURCES, "no free slot"));
    /// a.release(&slots).unwrap();
    /// assert!(b.allocate(&slots, "no free slot").unwrap().is_none(), "b got it");
    /// ```
    fn allocate(&self, namespace: &ResourceNamespace, reason: &str) -> Result<Option<PhaseInfo>>;

    /// [`TaskContextExt::allocate`] within caps on the tokens the
    /// execution's project (or project and domain) may hold in `namespace`;
    /// a full cap answers the same `WaitingForResources` phase.
    ///
    /// ```
    /// use kozmo_interface::kit::TaskContextExt;
    /// use kozmo_interface::testing::{TestResources, TestTaskContext};
    /// use kozmo_interface::{ResourceConstraint, ResourceConstraintsSpec, ResourceNamespace};
    ///
    /// let shared = TestResources::new();
    /// let one_per_project = ResourceConstraintsSpec {
    ///     project_scope: Some(ResourceConstraint { value: 1 }),
    ///     namespace_scope: None,
    /// };
    /// let gpus = ResourceNamespace::new("gpus");
    /// let a = TestTaskContext::new().with_unique_generated_name().with_resources(shared.clone());
    /// let b = TestTaskContext::new().with_unique_generated_name().with_resources(shared.clone());
    /// assert!(a.allocate_within(&gpus, &one_per_project, "cap").unwrap().is_none());
    /// assert!(b.allocate_within(&gpus, &one_per_project, "cap").unwrap().is_some());
    /// ```
    fn allocate_within(
        &self,
        namespace: &ResourceNamespace,
        constraints: &ResourceConstraintsSpec,
        reason: &str,
    ) -> Result<Option<PhaseInfo>>;

    /// Gives back this attempt's slot in `namespace` (releasing a slot not
    /// held is fine, so `finalize` may call it every time).
    ///
    /// ```
    /// use kozmo_interface::kit::TaskContextExt;
    /// use kozmo_interface::testing::TestTaskContext;
    /// use kozmo_interface::ResourceNamespace;
    ///
    /// let ctx = TestTaskContext::new();
    /// let slots = ResourceNamespace::new("slots");
    /// ctx.allocate(&slots, "full").unwrap();
    /// assert_eq!(ctx.granted("slots").len(), 1);
    /// ctx.release(&slots).unwrap();
    /// ctx.release(&slots).unwrap(); // again: fine
    /// assert!(ctx.granted("slots").is_empty());
    /// ```
    fn release(&self, namespace: &ResourceNamespace) -> Result<()>;
}

impl<T: TaskExecutionContext + ?Sized> TaskContextExt for T {
    fn generated_name(&self) -> String {
        self.task_execution_metadata()
            .task_execution_id()
            .generated_name()
            .to_string()
    }

    fn raw_output_dir(&self) -> Option<PathBuf> {
        crate::io::local_dir(&self.output_writer().raw_output_prefix())
    }

    fn allocate(&self, namespace: &ResourceNamespace, reason: &str) -> Result<Option<PhaseInfo>> {
        self.allocate_within(namespace, &ResourceConstraintsSpec::default(), reason)
    }

    fn allocate_within(
        &self,
        namespace: &ResourceNamespace,
        constraints: &ResourceConstraintsSpec,
        reason: &str,
    ) -> Result<Option<PhaseInfo>> {
        let status = self
            .resource_manager()
            .allocate_resource(namespace, &self.generated_name(), constraints)?;
        status.wait_for(reason)
    }

    fn release(&self, namespace: &ResourceNamespace) -> Result<()> {
        self.resource_manager()
            .release_resource(namespace, &self.generated_name())
    }
}
