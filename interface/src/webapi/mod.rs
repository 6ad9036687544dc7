//! Asynchronous (web-API) plugins: a task that drives a remote service —
//! submit a job, poll it, cancel it — written as a few plain functions.
//!
//! An author implements [`AsyncPlugin`] (`create`, `get`, `delete`,
//! `status`, optionally `resource_requirements`) or, for a service that
//! answers at once, [`SyncPlugin`] (`do`), and turns it into a
//! [`Plugin`](crate::Plugin) with [`AsyncAdapter`] / [`SyncAdapter`]; the
//! adapter does the rest, the same way for every plugin:
//!
//! * **Durable state.** The remote resource's metadata (typed, serde), the
//!   consecutive `get` failures, the next poll time and when the quota token
//!   was first asked for live in the attempt's plugin state ([`AsyncState`]),
//!   committed with the round: the metadata of a created resource is durable
//!   before the engine sees the round's answer, and a daemon restart resumes
//!   polling the same resource (no second `create`).
//! * **Polls on wake-ups.** A round before the next poll time does nothing
//!   (no call, no write); a timer thread signals the execution when its poll
//!   is due ([`WakeUps`]), so there is no busy loop and no thread per task.
//! * **Rate limits, both enforced.** `get` goes through the read limiter,
//!   `create`, `delete` and `do` through the write limiter
//!   ([`AsyncConfig::read`], [`AsyncConfig::write`], [`RateLimiter`]): a
//!   call that may not go now keeps a slot and its execution is woken then.
//! * **Failure budget.** `max_sync_failures` consecutive `get` errors
//!   (default 5) fail the attempt as a retryable SYSTEM failure
//!   `SyncFailures` (with cleanup: `delete` runs); fewer show in the
//!   execution's reason.
//! * **Visible changes.** A changed reason, logs or custom info within a
//!   plugin phase raises the phase version, so it becomes an event.
//! * **Quotas.** [`AsyncPlugin::resource_requirements`] names a namespace;
//!   the adapter asks for a token (the attempt's generated name), reports
//!   `WaitingForResources` with the reason while the quota is used up or the
//!   namespace's quota is exceeded, and releases it in `finalize`.
//! * **Reliable abort.** `abort` calls `delete` (under the write limit)
//!   unless the resource was seen finished; a retryable `delete` failure is
//!   a [`CANCELLING_REMOTE_JOB`] error, which the engine tries again
//!   without giving up, with a backoff ([`AsyncConfig::delete_backoff`]),
//!   the execution showing `cancelling remote job …` meanwhile, until
//!   `delete` succeeds or answers not found ([`NOT_FOUND`]).
//!
//! `docs/async-plugins.md` is the author's guide, with a complete plugin.

mod adapter;
mod config;
mod limiter;
mod state;
mod timer;

pub use adapter::{AsyncAdapter, SyncAdapter, WAITING_FOR_WRITE_SLOT};
pub use config::{setting_var, AsyncConfig, Quota, RateLimit};
pub use limiter::RateLimiter;
pub use state::{AsyncPhase, AsyncState, ASYNC_STATE_VERSION};
pub use timer::WakeUps;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{PhaseInfo, PluginProperties, ResourceConstraintsSpec, ResourceNamespace, Result, TaskExecutionContext};

/// The error code with which `delete` says the resource is gone already;
/// the adapter counts it as a success (so is `Ok(())`).
///
/// ```
/// use kozmo_interface::PluginError;
/// let gone = PluginError::user(kozmo_interface::webapi::NOT_FOUND, "job j-1 does not exist");
/// assert_eq!(gone.code, "NotFound");
/// ```
pub const NOT_FOUND: &str = "NotFound";

/// The error code of an `abort` that is still cancelling something outside
/// (the adapter's, while `delete` fails). With `retryable` set, the engine
/// tries such an abort again without its usual limit of failed tries
/// (`docs/semantics.md#abort-and-finalize`), so a remote job cannot leak
/// because one `delete` failed.
///
/// ```
/// use kozmo_interface::webapi::CANCELLING_REMOTE_JOB;
/// use kozmo_interface::PluginError;
/// let e = PluginError::system(CANCELLING_REMOTE_JOB, "cancelling remote job: delete failed").retryable(true);
/// assert_eq!(e.code, "CancellingRemoteJob");
/// ```
pub const CANCELLING_REMOTE_JOB: &str = "CancellingRemoteJob";

/// What `create` returns: the remote resource's metadata (persisted), and
/// the resource itself if the answer already holds it (a fast job that is
/// finished at once then ends in the same round).
///
/// ```
/// use kozmo_interface::webapi::Created;
/// let c: Created<String, u32> = Created::new("job-1".to_string());
/// assert!(c.resource.is_none());
/// let fast = Created::with_resource("job-2".to_string(), 200u32);
/// assert_eq!(fast.resource, Some(200));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Created<M, R> {
    /// What identifies the remote resource (e.g. its job id).
    pub metadata: M,
    /// The resource's current state, if `create`'s answer had it.
    pub resource: Option<R>,
}

impl<M, R> Created<M, R> {
    /// Created; its state is known at the first poll.
    ///
    /// ```
    /// let c = kozmo_interface::webapi::Created::<u8, ()>::new(1);
    /// assert_eq!(c.metadata, 1);
    /// ```
    pub fn new(metadata: M) -> Self {
        Created {
            metadata,
            resource: None,
        }
    }

    /// Created, and its state is `resource`.
    ///
    /// ```
    /// let c = kozmo_interface::webapi::Created::with_resource(1u8, "done");
    /// assert_eq!(c.resource, Some("done"));
    /// ```
    pub fn with_resource(metadata: M, resource: R) -> Self {
        Created {
            metadata,
            resource: Some(resource),
        }
    }
}

/// A quota token a task needs before its `create`: `namespace` (one of the
/// plugin's [`AsyncConfig::quotas`]) and the constraints of the allocation.
///
/// ```
/// use kozmo_interface::webapi::ResourceRequirements;
/// let r = ResourceRequirements::new("jobs");
/// assert_eq!(r.namespace.as_str(), "jobs");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequirements {
    /// Where the token is counted.
    pub namespace: ResourceNamespace,
    /// Project and namespace scope limits.
    pub constraints: ResourceConstraintsSpec,
}

impl ResourceRequirements {
    /// A token in `namespace`, no constraints.
    ///
    /// ```
    /// let r = kozmo_interface::webapi::ResourceRequirements::new("n");
    /// assert!(r.constraints.project_scope.is_none());
    /// ```
    pub fn new(namespace: &str) -> Self {
        ResourceRequirements {
            namespace: ResourceNamespace::new(namespace),
            constraints: ResourceConstraintsSpec::default(),
        }
    }
}

/// A plugin that drives a remote resource: create it, poll it, delete it.
///
/// Every method gets the round's context (inputs, task template, secrets,
/// output writer). They are called by the daemon's workers and must not
/// block for long: one HTTP request each, with a timeout.
///
/// ```
/// use kozmo_interface::testing::TestTaskContext;
/// use kozmo_interface::webapi::{AsyncAdapter, AsyncConfig, AsyncPlugin, Created};
/// use kozmo_interface::{PhaseInfo, Plugin, Result, TaskExecutionContext};
///
/// /// A "remote" job that is done at its first poll.
/// struct Instant { config: AsyncConfig }
///
/// impl AsyncPlugin for Instant {
///     type Metadata = String;          // the job id
///     type Resource = &'static str;    // the job's status
///     fn id(&self) -> &str { "instant" }
///     fn config(&self) -> &AsyncConfig { &self.config }
///     fn create(&self, ctx: &dyn TaskExecutionContext) -> Result<Created<String, &'static str>> {
///         let name = ctx.task_execution_metadata().task_execution_id().generated_name();
///         Ok(Created::new(format!("job-{name}")))
///     }
///     fn get(&self, _: &dyn TaskExecutionContext, _job: &String) -> Result<&'static str> { Ok("DONE") }
///     fn delete(&self, _: &dyn TaskExecutionContext, _job: &String) -> Result<()> { Ok(()) }
///     fn status(&self, _: &dyn TaskExecutionContext, _: &String, s: &&'static str) -> Result<PhaseInfo> {
///         Ok(if *s == "DONE" { PhaseInfo::success(None) } else { PhaseInfo::running(0, None) })
///     }
/// }
///
/// let config = AsyncConfig { poll_interval: std::time::Duration::from_millis(1), ..AsyncConfig::default() };
/// let plugin = AsyncAdapter::new(Instant { config }).unwrap();
/// let ctx = TestTaskContext::new();
/// let first = plugin.handle(&ctx).unwrap();            // create
/// assert!(!first.info().phase().is_terminal());
/// ctx.next_round();
/// std::thread::sleep(std::time::Duration::from_millis(5));
/// let second = plugin.handle(&ctx).unwrap();           // poll: done
/// assert!(second.info().phase().is_success());
/// ```
pub trait AsyncPlugin: Send + Sync + 'static {
    /// What identifies the remote resource, persisted in the plugin state
    /// (as JSON) as soon as `create` returns it.
    type Metadata: Serialize + DeserializeOwned;
    /// The remote resource as `get` (or `create`) sees it; never persisted.
    type Resource;

    /// The plugin id.
    fn id(&self) -> &str;

    /// Properties (generated-name length, caching); the default ones.
    fn properties(&self) -> PluginProperties {
        PluginProperties::default()
    }

    /// Rate limits, poll interval, failure budget, quotas.
    fn config(&self) -> &AsyncConfig;

    /// The quota token a task needs before `create`, if any (default none).
    fn resource_requirements(&self, _ctx: &dyn TaskExecutionContext) -> Result<Option<ResourceRequirements>> {
        Ok(None)
    }

    /// Creates the remote resource. Called at least once per attempt, so it
    /// must be idempotent: use the attempt's generated name (or
    /// `{{ .PerRetryUniqueKey }}`) as the service's idempotency key. A USER
    /// error that is not retryable fails the attempt permanently; any other
    /// error is a handler error and `create` is tried again at the next
    /// round.
    fn create(&self, ctx: &dyn TaskExecutionContext) -> Result<Created<Self::Metadata, Self::Resource>>;

    /// Reads the remote resource (one poll). Errors count against
    /// [`AsyncConfig::max_sync_failures`].
    fn get(&self, ctx: &dyn TaskExecutionContext, metadata: &Self::Metadata) -> Result<Self::Resource>;

    /// Deletes (cancels) the remote resource. Called at least once on
    /// abort while the resource is not seen finished; must succeed, or fail
    /// with code [`NOT_FOUND`], when the resource is gone already. A
    /// retryable error is retried with a backoff until it succeeds; one that
    /// is not retryable (the service refuses for good) is a plain abort
    /// error, tried only the engine's usual number of times.
    fn delete(&self, ctx: &dyn TaskExecutionContext, metadata: &Self::Metadata) -> Result<()>;

    /// The plugin phase of `resource`: pure (no network), so it can run in
    /// the round that created it. On success it writes the outputs
    /// (`ctx.output_writer()`). Versions are numbered by the adapter.
    fn status(
        &self,
        ctx: &dyn TaskExecutionContext,
        metadata: &Self::Metadata,
        resource: &Self::Resource,
    ) -> Result<PhaseInfo>;
}

/// A plugin whose remote call answers at once: one `do` per attempt, under
/// the write rate limit, its answer is the task's phase.
///
/// ```
/// use kozmo_interface::testing::TestTaskContext;
/// use kozmo_interface::webapi::{AsyncConfig, SyncAdapter, SyncPlugin};
/// use kozmo_interface::{PhaseInfo, Plugin, Result, TaskExecutionContext};
///
/// struct Ping(AsyncConfig);
/// impl SyncPlugin for Ping {
///     fn id(&self) -> &str { "ping" }
///     fn config(&self) -> &AsyncConfig { &self.0 }
///     fn r#do(&self, _: &dyn TaskExecutionContext) -> Result<PhaseInfo> { Ok(PhaseInfo::success(None)) }
/// }
///
/// let plugin = SyncAdapter::new(Ping(AsyncConfig::default())).unwrap();
/// assert!(plugin.handle(&TestTaskContext::new()).unwrap().info().phase().is_success());
/// ```
pub trait SyncPlugin: Send + Sync + 'static {
    /// The plugin id.
    fn id(&self) -> &str;

    /// Properties; the default ones.
    fn properties(&self) -> PluginProperties {
        PluginProperties::default()
    }

    /// The write limit applies to `do`; the rest is unused.
    fn config(&self) -> &AsyncConfig;

    /// Makes the call; its answer is the round's phase (usually terminal:
    /// success with the outputs written, or a failure).
    fn r#do(&self, ctx: &dyn TaskExecutionContext) -> Result<PhaseInfo>;
}

#[cfg(test)]
mod tests;
