//! The Kozmo engine: drives every execution through its plugin, round
//! after round, durably.
//!
//! This crate knows no SQL and no HTTP (Cargo enforces it: none of
//! rusqlite, axum, hyper or ureq is in its dependency tree). It holds the
//! execution [`model`], the [`store::Store`] trait with the in-memory
//! store, the [`resources`] manager, the [`catalog`], the [`datastore`]
//! for inputs and outputs, [`secrets`] and [`retention`]. The SQLite store
//! (`kozmo-store-sqlite`), the HTTP API (`kozmo-api`) and the daemon (the
//! `kozmo` binary, `host/`) are built on it.
//!
//! * [`Engine::start`] recovers every non-terminal execution from the
//!   [`Store`] and starts the worker pool, the committer and the resync timer.
//! * Workers run one step of one execution at a time ([`round`]); a step's
//!   effects go to the committer, which applies a batch of steps in one
//!   store transaction (group commit) and only then lets the execution run
//!   again ([`scheduler`]).

pub mod catalog;
pub mod datastore;
pub mod model;
pub mod resources;
pub mod retention;
pub mod secrets;
pub mod spec_parse;
pub mod store;
pub mod sync;

mod active;
mod batch;
mod binding;
mod call_slots;
mod cluster;
mod committer;
mod config;
mod context;
mod crash_loop;
mod errors;
mod events;
mod handle;
mod inspect;
mod lock;
mod oneshot;
mod outputs;
mod prune;
mod resolver;
mod retries;
mod scheduler;
mod spec_cache;
mod stats;
mod status;
mod step;
mod store_health;
mod stray_tokens;
mod workers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use kozmo_interface::literals::LiteralMap;
use kozmo_interface::metadata::NamespacedName;
use kozmo_interface::{EnqueueOwner, Plugin, Result as PResult};
use serde::{Deserialize, Serialize};

pub(crate) use active::Active;
pub use batch::MAX_BATCH as MAX_BATCH_ROUNDS;
pub use config::EngineConfig;
pub use context::{generated_name, AttemptPaths, MAX_DATASET_SIZE_BYTES};
pub use errors::{EngineError, SubmitOutcome};
pub use events::{EventBody, InfoBody, TaskEventBody, TaskEventExtra};
pub use handle::{EngineHandle, LateEnqueueOwner, SubmitFuture};
pub use prune::{PruneBatch, PruneInFlight};
pub use resolver::{BatchHandler, BatchOutcome, PluginResolver};
pub use retries::{decide_retryable, RetryDecision};
pub use scheduler::{Job, JobShared, Next, Scheduler, Work};
pub(crate) use spec_cache::{parse_inputs, SharedSpec, SharedSpecs, SplitSpec};
pub use stats::{EngineStats, HistogramSnapshot, COMMIT_LATENCY_BUCKETS, LATENCY_BUCKETS};
pub use store_health::StoreDegraded;

use committer::CommitMsg;
use stats::Stats;

use crate::catalog::StoreCatalog;
use crate::datastore::FsDataStore;
use crate::model::{
    now_ms, rfc3339_ms, EventRecord, ExecPhase, ExecState, ExecutionRecord, ExecutionSpec, ExecutionView,
    HandlerErrorView, NewExecution, RoundCommit, TaskState,
};
use crate::resources::ResourceBackend;
use crate::secrets::HostSecrets;
use crate::store::{InsertOutcome, Store};
use crate::sync::lock;

/// The plugin an execution is bound to.
pub(crate) type BoundPlugin = Arc<dyn Plugin>;

/// The engine's scheduler: executions travel through it as jobs.
pub(crate) type ExecutionScheduler = Scheduler<Box<Active>>;

/// The engine: its settings, store, plugins, resources, scheduler, worker
/// pool and committer. [`Engine::start`] builds and starts one and hands
/// out an [`EngineHandle`]; everything else is the engine's own.
pub struct Engine {
    cfg: EngineConfig,
    store: Arc<dyn Store>,
    plugins: Arc<dyn PluginResolver>,
    resources: Arc<dyn ResourceBackend>,
    sched: Arc<ExecutionScheduler>,
    shapes: Mutex<SharedSpecs>,
    data: FsDataStore,
    secrets: HostSecrets,
    catalog: StoreCatalog,
    stats: Stats,
    /// Failed store writes, and whether writes fail right now.
    store_health: store_health::StoreHealth,
    /// `store.commits_inline()`: workers commit their own steps.
    inline_commits: bool,
    commit_tx: Sender<CommitMsg>,
    work_tx: Sender<Work<Box<Active>>>,
    work_rx: Receiver<Work<Box<Active>>>,
    pool: workers::Pool,
    /// The plugin call each worker is inside, in a file that outlives a crash.
    calls: call_slots::CallSlots,
    /// Executions whose bound plugin is not loaded: id -> plugin id. They
    /// wait (unscheduled) until a start that has the plugin.
    unbound: Mutex<HashMap<String, String>>,
    /// Task types live other nodes serve (several daemons on one store):
    /// a submission of one this node has no plugin for is accepted for them.
    served_elsewhere: Mutex<cluster::ServedElsewhere>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    id_counter: AtomicU64,
    lock: Mutex<Option<lock::DataDirLock>>,
    /// Called after each durable commit ([`EngineHandle::on_commit`]).
    commit_listener: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Engine {
    /// Recovers active executions from `store` and starts the engine.
    pub fn start(
        cfg: EngineConfig,
        store: Arc<dyn Store>,
        plugins: Arc<dyn PluginResolver>,
        resources: Arc<dyn ResourceBackend>,
    ) -> Result<EngineHandle, EngineError> {
        let dir_lock = lock::DataDirLock::acquire(&cfg.data_dir).map_err(EngineError::Invalid)?;
        let data_root = cfg.data_store.clone().unwrap_or_else(|| cfg.data_dir.join("data"));
        let data = FsDataStore::new(&data_root)
            .map_err(|e| EngineError::Invalid(format!("data store {}: {e}", data_root.display())))?;
        let (work_tx, work_rx) = crossbeam_channel::unbounded::<Work<Box<Active>>>();
        let (commit_tx, commit_rx) = crossbeam_channel::unbounded::<CommitMsg>();
        let sched = Arc::new(Scheduler::new(
            work_tx.clone(),
            cfg.resync_interval,
            cfg.max_resync_interval,
        ));
        resources.restore(&store.tokens()?);
        let previous = call_slots::Previous::read(&cfg.data_dir);
        let crashed = if previous.unclean {
            crash_loop::count(&*store, &previous)
        } else {
            HashMap::new()
        };
        let calls =
            call_slots::CallSlots::open(&cfg.data_dir, cfg.max_workers.max(cfg.workers).max(1)).map_err(|e| {
                EngineError::Invalid(format!(
                    "cannot create the plugin call record in {}: {e}",
                    cfg.data_dir.display()
                ))
            })?;
        let core = Arc::new(Engine {
            inline_commits: store.commits_inline(),
            secrets: cfg.secrets.clone(),
            catalog: StoreCatalog::new(store.clone()),
            cfg,
            store,
            plugins,
            resources,
            sched,
            shapes: Mutex::new(SharedSpecs::default()),
            data,
            stats: Stats::default(),
            store_health: Default::default(),
            commit_tx,
            work_tx,
            work_rx,
            pool: workers::Pool::default(),
            calls,
            unbound: Mutex::new(HashMap::new()),
            served_elsewhere: Mutex::new(Default::default()),
            threads: Mutex::new(Vec::new()),
            id_counter: AtomicU64::new(0),
            lock: Mutex::new(Some(dir_lock)),
            commit_listener: OnceLock::new(),
        });
        {
            let weak = Arc::downgrade(&core.sched);
            core.resources.set_release_listener(Box::new(move |id| {
                if let Some(s) = weak.upgrade() {
                    s.enqueue(id);
                }
            }));
        }
        let recovered = core.store.load_active()?;
        let n = recovered.len();
        for rec in recovered {
            core.adopt(rec, &crashed);
        }
        if n > 0 {
            log::info!("engine recovered {n} active executions");
        }
        let mut threads = Vec::new();
        for _ in 0..core.cfg.workers.max(1) {
            threads.push(core.spawn_worker().map_err(|e| EngineError::Invalid(e.to_string()))?);
        }
        {
            let c = core.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("kozmo-watchdog".into())
                    .spawn(move || c.watchdog())
                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
            );
        }
        if core.store.cluster().is_some() {
            let c = core.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("kozmo-node".into())
                    .spawn(move || c.node_loop())
                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
            );
        }
        {
            let c = core.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("kozmo-committer".into())
                    .spawn(move || c.committer(commit_rx))
                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
            );
            let s = core.sched.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("kozmo-timer".into())
                    .spawn(move || s.run_timers())
                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
            );
        }
        *lock(&core.threads) = threads;
        Ok(EngineHandle { core })
    }
}

impl Engine {
    /// Starts tracking an execution read from the store (at start, or
    /// claimed from another node): bound to its plugin, or left waiting
    /// for a start that has it. `crashed` holds the crash-loop counts
    /// after an unclean stop.
    fn adopt(&self, mut rec: ExecutionRecord, crashed: &HashMap<String, crash_loop::Crashed>) {
        let spec: ExecutionSpec = match serde_json::from_str(&rec.spec_json) {
            Ok(s) => s,
            Err(e) => {
                log::error!("execution {}: stored spec unreadable ({e}); skipped", rec.id);
                return;
            }
        };
        let plugin = match self.bound_plugin(rec.plugin_id.as_deref(), &spec.template.task_type) {
            Ok(p) => p,
            Err(missing) => {
                log::warn!(
                    "execution {}: its plugin \"{missing}\" is not loaded; it waits for a start with the plugin",
                    rec.id
                );
                lock(&self.unbound).insert(rec.id, missing);
                return;
            }
        };
        if let Some(c) = crashed.get(&rec.id) {
            let pid = plugin.as_ref().map(|p| p.id().to_string());
            crash_loop::recovering(&*self.store, &mut rec, pid.as_deref(), c, self.cfg.crash_loop_limit);
        }
        let split = SplitSpec::new(spec);
        let shape = lock(&self.shapes).intern(&split.shared_json, split.spec, plugin);
        self.sched.add(Active::new(shape, rec, split.inputs));
    }

    /// Starts one more worker thread.
    fn spawn_worker(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let c = self.clone();
        let (w, busy) = self.pool.add();
        std::thread::Builder::new()
            .name(format!("kozmo-worker-{w}"))
            .spawn(move || {
                call_slots::bind_worker(w);
                c.worker(&busy)
            })
    }

    /// Adds a spare worker whenever every worker has been inside one step
    /// for `stall_after` (up to `max_workers`), so slow or stuck plugin
    /// calls never stall the other executions.
    fn watchdog(self: Arc<Self>) {
        let tick = (self.cfg.stall_after.min(self.cfg.call_warn_after) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        while !self.sched.is_stopping() {
            std::thread::sleep(tick);
            self.report_slow_calls();
            let Some(stuck) = self.pool.stalled(self.cfg.stall_after) else {
                continue;
            };
            let total = self.pool.total();
            let list = stuck
                .iter()
                .map(|(id, d)| format!("{id} ({:.1}s)", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ");
            if total >= self.cfg.max_workers || self.sched.is_stopping() {
                log::warn!("all {total} workers are inside slow plugin calls: {list}; max_workers reached");
                continue;
            }
            log::warn!("all {total} workers are inside slow plugin calls: {list}; starting a spare worker");
            match self.spawn_worker() {
                Ok(t) => lock(&self.threads).push(t),
                Err(e) => log::error!("cannot start a spare worker: {e}"),
            }
        }
    }

    fn worker(&self, busy: &workers::Busy) {
        let rx = self.work_rx.clone();
        // Jobs taken while filling a batch that were not for it.
        let mut later = std::collections::VecDeque::new();
        let mut stop = false;
        loop {
            let a = match later.pop_front() {
                Some(a) => a,
                None if stop => return,
                None => match rx.recv() {
                    Ok(Work::Run(a)) => match self.take_job(a) {
                        Some(a) => a,
                        None => continue,
                    },
                    _ => return, // stop sentinel
                },
            };
            match self.batch_target(&a) {
                Some(target) => {
                    let mut jobs = vec![a];
                    stop |= self.fill_batch(&rx, &target, &mut jobs, &mut later);
                    self.run_batch(busy, &target, jobs);
                }
                None => self.run_one(busy, a),
            }
        }
    }

    /// A worker took `a` from the queue: `None` if it must not run (it
    /// went home).
    fn take_job(&self, mut a: Box<Active>) -> Option<Box<Active>> {
        if !self.sched.take(&a) {
            self.sched.done(a, Next::Now); // stopping: home without a step
            return None;
        }
        if a.shared.lost.load(Ordering::Acquire) {
            self.drop_lost(a);
            return None;
        }
        a.take_pending_abort();
        Some(a)
    }

    /// Runs the next step of `a` and sends it on.
    fn run_one(&self, busy: &workers::Busy, mut a: Box<Active>) {
        busy.begin(&a.record.id, a.record.state.attempt);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(&mut a)));
        busy.end();
        match out {
            Ok(o) => self.after_step(a, o),
            Err(_) => {
                log::error!("engine bug: a step of {} panicked; retrying later", a.record.id);
                self.sched.done(a, Next::Resync);
            }
        }
    }

    /// Applies a step's outcome to its execution and makes it durable (if
    /// it changed anything) before the next step.
    fn after_step(&self, mut a: Box<Active>, out: step::StepOutcome) {
        a.record.state = out.commit.state.clone();
        a.record.task = out.task;
        if out.commit.outputs.is_some() || out.commit.error_document.is_some() {
            a.stored_nothing = None;
        }
        if out.commit.clear_abort {
            a.record.abort_requested = None;
        }
        if out.next != Next::Now {
            // Waiting: keep no per-round cache.
            a.gname = None;
        }
        if out.persist {
            self.commit_step(out.commit, out.next, a);
        } else {
            // Nothing to make durable: the next step may start.
            self.sched.done(a, out.next);
        }
    }

    /// Makes a step's results durable, then sends its execution home. A
    /// store without syncs is written here, on the worker (nothing to
    /// group, and one committer thread would serialise every step); if that
    /// fails, the committer retries it.
    fn commit_step(&self, mut commit: RoundCommit, next: Next, a: Box<Active>) {
        if self.inline_commits {
            match self.store.commit(std::slice::from_mut(&mut commit)) {
                Ok(()) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.notify_committed();
                    self.sched.done(a, next);
                    return;
                }
                Err(e) => log::warn!(
                    "committing a step of {} failed, the committer retries it: {e}",
                    a.record.id
                ),
            }
        }
        // The committer serialises every store write: what can be done
        // here, on one of the workers, is not left to it.
        for e in &mut commit.events {
            e.body.render();
        }
        let _ = self.commit_tx.send(CommitMsg::Step(Box::new(commit), next, a));
    }

    /// Tells the commit listener, if any, that a commit is durable.
    fn notify_committed(&self) {
        if let Some(listener) = self.commit_listener.get() {
            listener();
        }
    }

    /// Resets an execution to what the store holds (after its step's commit
    /// was given up).
    fn reload(&self, a: &mut Active) {
        if let Ok(Some(mut rec)) = self.store.get_execution(&a.record.id) {
            if !rec.state.phase.is_terminal() {
                rec.spec_json = String::new();
                rec.task_type = String::new();
                a.record = rec;
                a.gname = None;
            }
        }
    }

    fn view(&self, rec: &ExecutionRecord) -> ExecutionView {
        let spec: Option<ExecutionSpec> = serde_json::from_str(&rec.spec_json).ok();
        let plugin = self
            .sched
            .with_job(&rec.id, |a, _| a.and_then(|a| a.spec.plugin.clone()))
            .flatten()
            .or_else(|| {
                spec.as_ref()
                    .and_then(|s| self.plugins.resolve(&s.template.task_type).ok())
            });
        let node = spec.as_ref().map_or(crate::model::DEFAULT_NODE_ID, |s| s.node_id());
        self.view_with(rec, plugin.as_ref(), node)
    }

    /// The view of `rec` whose plugin and node id are known.
    fn view_with(&self, rec: &ExecutionRecord, plugin: Option<&Arc<dyn Plugin>>, node: &str) -> ExecutionView {
        let max_len = plugin.map_or(kozmo_interface::DEFAULT_GENERATED_NAME_MAX_LENGTH, |p| {
            p.properties().effective_generated_name_max_length()
        });
        let s = &rec.state;
        ExecutionView {
            id: rec.id.clone(),
            phase: s.phase,
            task_type: rec.task_type.clone(),
            attempt: s.attempt,
            system_failures: s.system_failures,
            generated_name: generated_name(max_len, &rec.id, node, s.attempt),
            plugin_phase: rec.task.plugin_phase.to_string(),
            plugin_phase_version: rec.task.plugin_phase_version,
            error: s.error.as_deref().cloned(),
            last_handler_error: s.last_handler_error.as_ref().map(|h| HandlerErrorView {
                message: h.message.clone(),
                panic: h.panic,
                attempt: h.attempt,
                at: rfc3339_ms(h.at_ms),
            }),
            consecutive_handler_errors: s.handler_errors,
            // A request that came after the end changes nothing: not shown.
            abort_requested: rec.abort_requested.clone().filter(|_| !s.phase.is_terminal()),
            plugin_id: rec.plugin_id.clone(),
            waiting: self.waiting(rec),
            created_at: rfc3339_ms(rec.created_at_ms),
            updated_at: rfc3339_ms(s.updated_at_ms),
            attempt_started_at: rfc3339_ms(s.attempt_started_at_ms),
        }
    }

    fn new_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("x{:x}{:04x}", t, n & 0xffff)
    }

    /// Validates a submission and builds its row.
    fn prepare(
        &self,
        id: Option<String>,
        spec: ExecutionSpec,
        now: i64,
    ) -> Result<(NewExecution, SplitSpec, Option<BoundPlugin>), EngineError> {
        if spec.template.task_type.is_empty() {
            return Err(EngineError::Invalid("the task template has no type".into()));
        }
        let client_id = id.is_some();
        let id = match id {
            Some(id) => {
                crate::model::check_execution_id(&id).map_err(EngineError::Invalid)?;
                id
            }
            None => self.new_id(),
        };
        // Another live node's task type: stored for it to claim.
        let plugin = match self.plugins.resolve(&spec.template.task_type) {
            Ok(p) => Some(p),
            Err(_) if lock(&self.served_elsewhere).serves(&spec.template.task_type) => None,
            Err(e) => {
                return Err(EngineError::NoPlugin(format!(
                    "task type [{}]: {e}",
                    spec.template.task_type
                )))
            }
        };
        let split = SplitSpec::new(spec);
        let new = NewExecution {
            id,
            client_id,
            spec_json: split.canonical_json(),
            task_type: split.spec.template.task_type.clone(),
            created_at_ms: now,
            state: ExecState::new(now),
            plugin_id: plugin.as_ref().map(|p| p.id().to_string()),
        };
        Ok((new, split, plugin))
    }

    /// Tracks a durable new execution and queues it; its view first if
    /// `view` (built from what is in hand: no store read).
    fn activate(
        &self,
        new: NewExecution,
        spec: SplitSpec,
        plugin: Option<Arc<dyn Plugin>>,
        view: bool,
    ) -> Option<ExecutionView> {
        let rec = ExecutionRecord {
            id: new.id,
            client_id: new.client_id,
            spec_json: new.spec_json,
            task_type: new.task_type,
            created_at_ms: new.created_at_ms,
            state: new.state,
            abort_requested: None,
            task: TaskState::default(),
            plugin_id: new.plugin_id,
        };
        let shown = view.then(|| self.view_with(&rec, plugin.as_ref(), spec.spec.node_id()));
        let shape = lock(&self.shapes).intern(&spec.shared_json, spec.spec, plugin);
        let attempt = rec.state.attempt;
        let mut a = Active::new(shape, rec, spec.inputs);
        // Just submitted: nothing of its first attempt is stored.
        a.stored_nothing = Some(attempt);
        self.sched.add(a);
        shown
    }
}

impl Engine {
    fn sched_stopping(&self) -> bool {
        // A stopped scheduler never queues again; probe via a cheap flag.
        self.sched.is_stopping()
    }
}
