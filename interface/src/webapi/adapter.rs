//! The adapters that turn an [`AsyncPlugin`] or a [`SyncPlugin`] into a
//! [`Plugin`]: the state machine, rate limits, wake-ups, quota tokens and
//! the reliable abort (see the module docs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::AsyncConfig;
use super::limiter::RateLimiter;
use super::state::{AsyncPhase, AsyncState, ASYNC_STATE_VERSION};
use super::timer::WakeUps;
use super::{AsyncPlugin, SyncPlugin, CANCELLING_REMOTE_JOB, NOT_FOUND};
use crate::{
    AllocationStatus, ErrorKind, Phase, PhaseInfo, Plugin, PluginError, PluginProperties, PluginStateReaderExt,
    PluginStateWriterExt, Result, SetupContext, TaskExecutionContext, TaskInfo, Transition,
};

/// The reason shown while a call waits for its write slot.
pub const WAITING_FOR_WRITE_SLOT: &str = "waiting for the write rate limit";

/// The engine refuses versions past 100000 in one phase; the adapter stops
/// raising them well before.
const MAX_VERSION: u32 = 50_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn instant_of(at_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms()))
}

fn key(ctx: &dyn TaskExecutionContext) -> String {
    ctx.task_execution_metadata()
        .task_execution_id()
        .generated_name()
        .to_string()
}

/// FNV-1a: a digest that stays the same across builds (it is persisted).
fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= 0xff;
    h.wrapping_mul(0x100_0000_01b3)
}

/// What of a phase info the user sees besides its phase: reason, error,
/// logs, custom info, external resources (not the times).
fn digest(info: &PhaseInfo) -> u64 {
    let mut h = fnv(info.reason().as_bytes(), 0xcbf2_9ce4_8422_2325);
    if let Some(e) = info.err() {
        h = fnv(e.code.as_bytes(), h);
        h = fnv(e.message.as_bytes(), h);
    }
    if let Some(i) = info.info() {
        for l in &i.logs {
            h = fnv(l.name.as_bytes(), h);
            h = fnv(l.uri.as_bytes(), h);
        }
        h = fnv(i.custom_info.to_string().as_bytes(), h);
        for r in &i.external_resources {
            h = fnv(r.external_id.as_bytes(), h);
            h = fnv(&[r.phase.0 as u8], h);
        }
        for r in &i.additional_reasons {
            h = fnv(r.reason.as_bytes(), h);
        }
    }
    h
}

/// Records `info` as reported in `st` and gives it the version the user
/// sees: the plugin's in a new phase, the last one + 1 when the reason,
/// logs or custom info changed within the phase.
fn report(st: &mut AsyncState, info: PhaseInfo) -> PhaseInfo {
    let d = digest(&info);
    let version = if info.phase().0 == st.reported_phase {
        if d != st.reported_digest && st.reported_version < MAX_VERSION {
            st.reported_version + 1
        } else {
            st.reported_version
        }
    } else {
        info.version()
    };
    st.reported_phase = info.phase().0;
    st.reported_version = version;
    st.reported_digest = d;
    st.reported_reason = info.reason().to_string();
    info.with_version(version)
}

/// The last reported phase again, for a round that did not poll (the
/// engine sees the same phase and version: nothing is written).
fn repeat(st: &AsyncState) -> PhaseInfo {
    PhaseInfo::from_parts(
        Phase(st.reported_phase),
        st.reported_version,
        st.reported_reason.clone(),
        Some(TaskInfo::default()),
        None,
        false,
    )
}

fn put(ctx: &dyn TaskExecutionContext, st: &AsyncState) -> Result<()> {
    ctx.plugin_state_writer().put(ASYNC_STATE_VERSION, st)
}

/// Shared machinery of both adapters.
pub(super) struct Driver {
    pub(super) read: RateLimiter,
    pub(super) write: RateLimiter,
    pub(super) wake: WakeUps,
    /// Failed deletes per execution: how many, and when the next may run.
    deletes: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Driver {
    fn new(config: &AsyncConfig) -> Result<Driver> {
        config.validate()?;
        Ok(Driver {
            read: RateLimiter::new(config.read),
            write: RateLimiter::new(config.write),
            wake: WakeUps::new(),
            deletes: Mutex::new(HashMap::new()),
        })
    }

    /// Wakes the execution of `ctx` at `at`.
    fn wake_at(&self, ctx: &dyn TaskExecutionContext, key: &str, at: Instant) {
        self.wake.at(key, at, ctx.task_refresh_indicator());
    }

    /// A write slot now, or the execution is woken at its slot.
    fn write_slot(&self, ctx: &dyn TaskExecutionContext, key: &str) -> bool {
        match self.write.reserve(key) {
            Ok(()) => true,
            Err(at) => {
                self.wake_at(ctx, key, at);
                false
            }
        }
    }

    fn forget(&self, key: &str) {
        self.read.forget(key);
        self.write.forget(key);
        self.deletes.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

fn register_quotas(config: &AsyncConfig, setup: &dyn SetupContext) -> Result<()> {
    for q in &config.quotas {
        setup
            .resource_registrar()
            .register_resource_quota(&q.namespace, q.limit)?;
    }
    Ok(())
}

/// An [`AsyncPlugin`] as a [`Plugin`]. Export it from a loader:
///
/// ```no_run
/// # use kozmo_interface::webapi::*;
/// # use kozmo_interface::*;
/// # struct MyApi(AsyncConfig);
/// # impl AsyncPlugin for MyApi {
/// #   type Metadata = String; type Resource = String;
/// #   fn id(&self) -> &str { "my-api" }
/// #   fn config(&self) -> &AsyncConfig { &self.0 }
/// #   fn create(&self, _: &dyn TaskExecutionContext) -> Result<Created<String, String>> { unimplemented!() }
/// #   fn get(&self, _: &dyn TaskExecutionContext, _: &String) -> Result<String> { unimplemented!() }
/// #   fn delete(&self, _: &dyn TaskExecutionContext, _: &String) -> Result<()> { Ok(()) }
/// #   fn status(&self, _: &dyn TaskExecutionContext, _: &String, _: &String) -> Result<PhaseInfo> { unimplemented!() }
/// # }
/// fn entry() -> PluginEntry {
///     PluginEntry {
///         id: "my-api".into(),
///         registered_task_types: vec!["my-api".into()],
///         load_plugin: PluginLoader::new(|setup| {
///             let config = AsyncConfig::default().with_settings("my-api")?;
///             Ok(Box::new(AsyncAdapter::load(MyApi(config), setup)?))
///         }),
///         is_default: false,
///     }
/// }
/// kozmo_interface::export_plugins![entry()];
/// ```
pub struct AsyncAdapter<P: AsyncPlugin> {
    plugin: P,
    pub(super) driver: Driver,
}

impl<P: AsyncPlugin> AsyncAdapter<P> {
    /// Wraps `plugin` (its configuration checked); quotas are not
    /// registered (see [`AsyncAdapter::load`]).
    ///
    /// ```
    /// # use kozmo_interface::webapi::*;
    /// # use kozmo_interface::*;
    /// # struct MyApi(AsyncConfig);
    /// # impl AsyncPlugin for MyApi {
    /// #   type Metadata = String; type Resource = String;
    /// #   fn id(&self) -> &str { "my-api" }
    /// #   fn config(&self) -> &AsyncConfig { &self.0 }
    /// #   fn create(&self, _: &dyn TaskExecutionContext) -> Result<Created<String, String>> { unimplemented!() }
    /// #   fn get(&self, _: &dyn TaskExecutionContext, _: &String) -> Result<String> { unimplemented!() }
    /// #   fn delete(&self, _: &dyn TaskExecutionContext, _: &String) -> Result<()> { Ok(()) }
    /// #   fn status(&self, _: &dyn TaskExecutionContext, _: &String, _: &String) -> Result<PhaseInfo> { unimplemented!() }
    /// # }
    /// let bad = AsyncConfig { poll_interval: std::time::Duration::ZERO, ..AsyncConfig::default() };
    /// assert!(AsyncAdapter::new(MyApi(bad)).is_err());
    /// assert_eq!(AsyncAdapter::new(MyApi(AsyncConfig::default())).unwrap().inner().id(), "my-api");
    /// ```
    pub fn new(plugin: P) -> Result<Self> {
        let driver = Driver::new(plugin.config())?;
        Ok(AsyncAdapter { plugin, driver })
    }

    /// [`AsyncAdapter::new`], and registers the configured quotas with the
    /// host (call it from the plugin's loader).
    ///
    /// ```
    /// # use kozmo_interface::webapi::*;
    /// # use kozmo_interface::*;
    /// # struct MyApi(AsyncConfig);
    /// # impl AsyncPlugin for MyApi {
    /// #   type Metadata = String; type Resource = String;
    /// #   fn id(&self) -> &str { "my-api" }
    /// #   fn config(&self) -> &AsyncConfig { &self.0 }
    /// #   fn create(&self, _: &dyn TaskExecutionContext) -> Result<Created<String, String>> { unimplemented!() }
    /// #   fn get(&self, _: &dyn TaskExecutionContext, _: &String) -> Result<String> { unimplemented!() }
    /// #   fn delete(&self, _: &dyn TaskExecutionContext, _: &String) -> Result<()> { Ok(()) }
    /// #   fn status(&self, _: &dyn TaskExecutionContext, _: &String, _: &String) -> Result<PhaseInfo> { unimplemented!() }
    /// # }
    /// use kozmo_interface::testing::TestSetupContext;
    /// let setup = TestSetupContext::new();
    /// let config = AsyncConfig { quotas: vec![Quota::new("jobs", 3)], ..AsyncConfig::default() };
    /// AsyncAdapter::load(MyApi(config), &setup).unwrap();
    /// assert_eq!(setup.quotas(), vec![("jobs".to_string(), 3)]);
    /// ```
    pub fn load(plugin: P, setup: &dyn SetupContext) -> Result<Self> {
        let adapter = Self::new(plugin)?;
        register_quotas(adapter.plugin.config(), setup)?;
        Ok(adapter)
    }

    /// The wrapped plugin.
    ///
    /// (See [`AsyncAdapter::new`] for an example.)
    pub fn inner(&self) -> &P {
        &self.plugin
    }

    /// The first rounds: the quota token, the write slot, `create`.
    fn start(&self, ctx: &dyn TaskExecutionContext, key: &str, st: &mut AsyncState) -> Result<PhaseInfo> {
        if let Some(req) = self.plugin.resource_requirements(ctx)? {
            let since = *st.token_requested_at_ms.get_or_insert_with(now_ms);
            let status = ctx
                .resource_manager()
                .allocate_resource(&req.namespace, key, &req.constraints)?;
            let why = match status {
                AllocationStatus::GRANTED => None,
                AllocationStatus::EXHAUSTED => Some("its quota is used up"),
                AllocationStatus::NAMESPACE_QUOTA_EXCEEDED => Some("the namespace's quota is exceeded"),
                other => {
                    return Err(PluginError::system(
                        "AllocationUndefined",
                        format!(
                            "the resource manager answered {other} for a token in {}: neither granted nor waiting",
                            req.namespace
                        ),
                    ))
                }
            };
            if let Some(why) = why {
                let waited = now_ms().saturating_sub(since) / 1000;
                let reason = format!(
                    "waiting for a quota token in {}: {why} (waiting since {waited}s)",
                    req.namespace
                );
                // The reason changes with the seconds only in the state, not
                // in what is compared: report the reason without them.
                let shown = format!("waiting for a quota token in {}: {why}", req.namespace);
                log::debug!("{}: {key}: {reason}", self.plugin.id());
                let info = PhaseInfo::waiting_for_resources_info(SystemTime::now(), 0, shown, None);
                return Ok(report(st, info));
            }
        }
        if !self.driver.write_slot(ctx, key) {
            let info = PhaseInfo::queued(SystemTime::now(), 0, WAITING_FOR_WRITE_SLOT);
            return Ok(report(st, info));
        }
        let created = match self.plugin.create(ctx) {
            Ok(c) => c,
            Err(e) if e.kind == ErrorKind::User && !e.retryable => {
                let info = PhaseInfo::failure(e.code, e.message, None);
                st.phase = AsyncPhase::Done;
                return Ok(report(st, info));
            }
            Err(e) => return Err(e),
        };
        st.set_metadata(&created.metadata)?;
        st.phase = AsyncPhase::Created;
        st.sync_failures = 0;
        st.next_poll_at_ms = now_ms() + self.plugin.config().poll_interval.as_millis() as u64;
        log::debug!("{}: {key}: remote resource created", self.plugin.id());
        // From here on the round must not fail: the metadata has to be
        // committed, or the resource would be created again.
        let info = match &created.resource {
            Some(resource) => match self.plugin.status(ctx, &created.metadata, resource) {
                Ok(info) => {
                    if info.phase().is_terminal() {
                        st.phase = AsyncPhase::Done;
                    }
                    info
                }
                Err(e) => self.sync_failed(st, e),
            },
            None => PhaseInfo::queued(SystemTime::now(), 0, "remote job created"),
        };
        if !info.phase().is_terminal() {
            self.driver.wake_at(ctx, key, instant_of(st.next_poll_at_ms));
        }
        Ok(report(st, info))
    }

    /// A failed `get` (or `status`): counted; the budget spent, a retryable
    /// SYSTEM failure with cleanup (the remote job may still run).
    fn sync_failed(&self, st: &mut AsyncState, e: PluginError) -> PhaseInfo {
        st.sync_failures += 1;
        let max = self.plugin.config().max_sync_failures;
        if st.sync_failures >= max {
            return PhaseInfo::system_retryable_failure_with_cleanup(
                "SyncFailures",
                format!(
                    "{} consecutive polls of the remote job failed; last error: {e}",
                    st.sync_failures
                ),
                None,
            );
        }
        let phase = if st.reported_phase == Phase::UNDEFINED.0 {
            Phase::QUEUED
        } else {
            Phase(st.reported_phase)
        };
        PhaseInfo::from_parts(
            phase,
            st.reported_version,
            format!("polling the remote job failed ({}/{max}): {e}", st.sync_failures),
            Some(TaskInfo::default()),
            None,
            false,
        )
    }

    /// A round after `create`: nothing before the poll time or the read
    /// slot; then `get` and `status`.
    fn poll(&self, ctx: &dyn TaskExecutionContext, key: &str, st: &mut AsyncState) -> Result<PhaseInfo> {
        if now_ms() < st.next_poll_at_ms {
            self.driver.wake_at(ctx, key, instant_of(st.next_poll_at_ms));
            return Ok(repeat(st));
        }
        if let Err(at) = self.driver.read.reserve(key) {
            self.driver.wake_at(ctx, key, at);
            return Ok(repeat(st));
        }
        let Some(metadata) = st.metadata::<P::Metadata>()? else {
            return Err(PluginError::system(
                "MissingResourceMetadata",
                "the plugin state says the remote job was created but holds no metadata",
            ));
        };
        st.next_poll_at_ms = now_ms() + self.plugin.config().poll_interval.as_millis() as u64;
        let info = match self
            .plugin
            .get(ctx, &metadata)
            .and_then(|r| self.plugin.status(ctx, &metadata, &r))
        {
            Ok(info) => {
                st.sync_failures = 0;
                if info.phase().is_terminal() {
                    // The remote job is over: nothing to delete.
                    st.phase = AsyncPhase::Done;
                }
                info
            }
            Err(e) => {
                log::debug!("{}: {key}: poll failed: {e}", self.plugin.id());
                self.sync_failed(st, e)
            }
        };
        if !info.phase().is_terminal() {
            self.driver.wake_at(ctx, key, instant_of(st.next_poll_at_ms));
        }
        Ok(report(st, info))
    }
}

impl<P: AsyncPlugin> Plugin for AsyncAdapter<P> {
    fn id(&self) -> &str {
        self.plugin.id()
    }

    fn properties(&self) -> PluginProperties {
        self.plugin.properties()
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let key = key(ctx);
        let (_, persisted) = ctx.plugin_state_reader().get::<AsyncState>()?;
        let persisted = persisted.unwrap_or_default();
        let mut st = persisted.clone();
        let info = match st.phase {
            AsyncPhase::NotStarted => self.start(ctx, &key, &mut st)?,
            AsyncPhase::Created => self.poll(ctx, &key, &mut st)?,
            AsyncPhase::Done => repeat(&st),
        };
        if st != persisted {
            put(ctx, &st)?;
        }
        Ok(Transition::ephemeral(info))
    }

    /// Deletes the remote job, if one was created and not seen finished:
    /// the write slot, then `delete`; a retryable failure (or no slot yet)
    /// is a [`CANCELLING_REMOTE_JOB`] error the engine tries again, after a
    /// backoff, until `delete` succeeds or answers [`NOT_FOUND`]. A `delete`
    /// error that is not retryable is returned as it is (the engine gives
    /// up after its usual number of tries).
    fn abort(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let key = key(ctx);
        let (_, st) = ctx.plugin_state_reader().get::<AsyncState>()?;
        let Some(st) = st.filter(|s| s.phase == AsyncPhase::Created) else {
            return Ok(());
        };
        let Some(metadata) = st.metadata::<P::Metadata>()? else {
            return Ok(());
        };
        let cancelling = |what: String| {
            PluginError::system(CANCELLING_REMOTE_JOB, format!("cancelling remote job: {what}")).retryable(true)
        };
        let now = Instant::now();
        let previous = self
            .driver
            .deletes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied();
        if let Some((n, next)) = previous {
            if now < next {
                self.driver.wake_at(ctx, &key, next);
                return Err(cancelling(format!(
                    "delete failed {n} time(s); next try in {:.1}s",
                    (next - now).as_secs_f64()
                )));
            }
        }
        if !self.driver.write_slot(ctx, &key) {
            return Err(cancelling(WAITING_FOR_WRITE_SLOT.to_string()));
        }
        match self.plugin.delete(ctx, &metadata) {
            Ok(()) => {}
            Err(e) if e.code == NOT_FOUND => {
                log::debug!("{}: {key}: remote job already gone: {e}", self.plugin.id());
            }
            Err(e) if !e.retryable => {
                log::warn!("{}: {key}: delete refused: {e}", self.plugin.id());
                return Err(e);
            }
            Err(e) => {
                let n = previous.map_or(0, |p| p.0) + 1;
                let config = self.plugin.config();
                let delay = config
                    .delete_backoff
                    .saturating_mul(1u32 << (n - 1).min(20))
                    .min(config.delete_backoff_max);
                let next = Instant::now() + delay;
                self.driver
                    .deletes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), (n, next));
                self.driver.wake_at(ctx, &key, next);
                log::warn!("{}: {key}: delete failed (try {n}): {e}", self.plugin.id());
                return Err(cancelling(format!(
                    "delete failed (try {n}): {e}; next try in {:.1}s",
                    delay.as_secs_f64()
                )));
            }
        }
        self.driver.forget(&key);
        Ok(())
    }

    /// Releases the quota token (releasing one not held is fine).
    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let key = key(ctx);
        self.driver.read.forget(&key);
        self.driver.write.forget(&key);
        if let Some(req) = self.plugin.resource_requirements(ctx)? {
            ctx.resource_manager().release_resource(&req.namespace, &key)?;
        }
        Ok(())
    }
}

/// A [`SyncPlugin`] as a [`Plugin`]: `do` under the write limit.
///
/// (See [`SyncPlugin`] for an example.)
pub struct SyncAdapter<P: SyncPlugin> {
    plugin: P,
    pub(super) driver: Driver,
}

impl<P: SyncPlugin> SyncAdapter<P> {
    /// Wraps `plugin`, its configuration checked.
    ///
    /// (See [`SyncPlugin`] for an example.)
    pub fn new(plugin: P) -> Result<Self> {
        let driver = Driver::new(plugin.config())?;
        Ok(SyncAdapter { plugin, driver })
    }

    /// [`SyncAdapter::new`], and registers the configured quotas.
    ///
    /// ```
    /// # use kozmo_interface::webapi::*;
    /// # use kozmo_interface::*;
    /// # struct Ping(AsyncConfig);
    /// # impl SyncPlugin for Ping {
    /// #   fn id(&self) -> &str { "ping" }
    /// #   fn config(&self) -> &AsyncConfig { &self.0 }
    /// #   fn r#do(&self, _: &dyn TaskExecutionContext) -> Result<PhaseInfo> { Ok(PhaseInfo::success(None)) }
    /// # }
    /// let setup = kozmo_interface::testing::TestSetupContext::new();
    /// SyncAdapter::load(Ping(AsyncConfig::default()), &setup).unwrap();
    /// ```
    pub fn load(plugin: P, setup: &dyn SetupContext) -> Result<Self> {
        let adapter = Self::new(plugin)?;
        register_quotas(adapter.plugin.config(), setup)?;
        Ok(adapter)
    }
}

impl<P: SyncPlugin> Plugin for SyncAdapter<P> {
    fn id(&self) -> &str {
        self.plugin.id()
    }

    fn properties(&self) -> PluginProperties {
        self.plugin.properties()
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let key = key(ctx);
        if !self.driver.write_slot(ctx, &key) {
            return Ok(Transition::ephemeral(PhaseInfo::queued(
                SystemTime::now(),
                0,
                WAITING_FOR_WRITE_SLOT,
            )));
        }
        Ok(Transition::ephemeral(self.plugin.r#do(ctx)?))
    }

    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        self.driver.forget(&key(ctx));
        Ok(())
    }
}
