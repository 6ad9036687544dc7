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

mod batch;
mod binding;
mod call_slots;
mod committer;
mod context;
mod crash_loop;
mod events;
mod lock;
mod outputs;
mod prune;
mod retries;
mod round;
mod scheduler;
mod status;
mod store_health;
mod workers;

use std::collections::{BTreeMap, HashMap};
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

pub use batch::MAX_BATCH as MAX_BATCH_ROUNDS;
pub use context::{generated_name, AttemptPaths, MAX_DATASET_SIZE_BYTES};
pub use events::{EventBody, Extra, InfoBody, TaskEventBody};
pub use prune::PruneBatch;
pub use retries::{decide_retryable, RetryDecision};
pub use scheduler::{Job, JobShared, Next, Scheduler, Work};
pub use store_health::StoreDegraded;

use committer::CommitMsg;

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

/// Finds the plugin for a task type (the loader's registry implements it).
pub trait PluginResolver: Send + Sync {
    /// The plugin for `task_type` (or the default plugin).
    fn resolve(&self, task_type: &str) -> Result<Arc<dyn Plugin>, String>;
    /// The loaded plugin with this id (an execution stays bound to the
    /// plugin it was submitted under). The default knows only the plugins
    /// [`PluginResolver::resolve`] routes to, which the engine tries first.
    fn by_id(&self, _id: &str) -> Option<Arc<dyn Plugin>> {
        None
    }
    /// Whether any plugin this resolver routes to can take batches of
    /// `handle` calls (asked before every round, so it must be cheap: a
    /// resolver of plugins in the daemon only answers `false`).
    fn may_batch(&self) -> bool {
        false
    }
    /// The batch caller of `plugin`, if its `handle` calls can travel
    /// together (a plugin in a child process: one frame for many calls).
    fn batcher(&self, _plugin: &dyn Plugin) -> Option<Arc<dyn BatchHandler>> {
        None
    }
}

/// Runs several `handle` calls of one plugin at once (an isolated plugin
/// sends them to its child in one frame).
pub trait BatchHandler: Send + Sync {
    /// `handle` of every context in `ctxs`, in order; each result is what
    /// [`Plugin::handle`] would have returned for that context alone.
    fn handle_batch(&self, ctxs: &[&dyn kozmo_interface::TaskExecutionContext]) -> BatchOutcome;
}

/// What [`BatchHandler::handle_batch`] returns.
#[derive(Debug)]
pub struct BatchOutcome {
    /// One result per call, in order.
    pub results: Vec<PResult<kozmo_interface::Transition>>,
    /// How many calls were answered: the calls from here on failed because
    /// the plugin's process ended during the batch, which only one of them
    /// (or none) caused.
    pub answered: usize,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Data directory: the data store lives in `<data_dir>/data`.
    pub data_dir: PathBuf,
    /// Worker threads running plugin calls (default: number of cores).
    pub workers: usize,
    /// First resync delay of an execution that reported no change.
    pub resync_interval: Duration,
    /// Largest resync delay (the delay doubles per unchanged round).
    pub max_resync_interval: Duration,
    /// Consecutive handler errors before the attempt fails with `RoundFailures`.
    pub max_round_failures: u32,
    /// `TooManyPluginPhaseVersions` limit (strictly greater fails).
    pub max_plugin_phase_versions: u32,
    /// SYSTEM failures retried (default 3; docs/semantics.md#retries).
    pub system_retry_budget: u32,
    /// What [`kozmo_interface::TaskExecutionContext::secrets`] reads
    /// (default: this process's `KOZMO_SECRET_<KEY>` variables when the
    /// configuration is made, no secrets directory).
    pub secrets: HostSecrets,
    /// Most writes (step results and new executions) in one transaction.
    pub max_batch: usize,
    /// When every worker has been inside one step this long (slow or stuck
    /// plugin calls), a spare worker is started so other executions go on.
    pub stall_after: Duration,
    /// Upper bound of the pool, spares included.
    pub max_workers: usize,
    /// An execution that was inside a plugin call at this many consecutive
    /// unclean stops of the daemon is failed with `PluginCrashed` at the
    /// next start (default 2; 0 = never).
    pub crash_loop_limit: u32,
    /// A plugin call running this long is reported: a warning and an event,
    /// and the execution's status says so (default 60 s).
    pub call_warn_after: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: PathBuf::from("kozmo-data"),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            resync_interval: Duration::from_secs(1),
            // Plugins that do not signal (most poll a process or a service)
            // are noticed at most this late; 10k such executions cost
            // ~2k rounds/s, far below what the engine does.
            max_resync_interval: Duration::from_secs(5),
            max_round_failures: 10,
            max_plugin_phase_versions: 100_000,
            system_retry_budget: 3,
            secrets: HostSecrets::from_process_env(None),
            max_batch: 4096,
            stall_after: Duration::from_secs(5),
            max_workers: 64,
            crash_loop_limit: 2,
            call_warn_after: Duration::from_secs(60),
        }
    }
}

/// What `submit` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmitOutcome {
    /// A new execution with this id (durable).
    Created(String),
    /// The same id and spec were submitted before.
    Existing(String),
}

/// Engine errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// No such execution.
    NotFound,
    /// The id exists with a different spec.
    Conflict(String),
    /// No plugin for the task type.
    NoPlugin(String),
    /// The request is invalid.
    Invalid(String),
    /// The store failed.
    Store(String),
    /// The engine is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::NotFound => f.write_str("execution not found"),
            EngineError::Conflict(m) => write!(f, "conflict: {m}"),
            EngineError::NoPlugin(m) => write!(f, "no plugin: {m}"),
            EngineError::Invalid(m) => write!(f, "invalid request: {m}"),
            EngineError::Store(m) => write!(f, "store error: {m}"),
            EngineError::ShuttingDown => f.write_str("the engine is shutting down"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<crate::store::StoreError> for EngineError {
    fn from(e: crate::store::StoreError) -> Self {
        EngineError::Store(e.0)
    }
}

/// Upper bounds (seconds) of the round latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0,
];

#[derive(Default)]
struct Stats {
    rounds: AtomicU64,
    handler_errors: AtomicU64,
    panics: AtomicU64,
    commits: AtomicU64,
    batches: AtomicU64,
    leaked_tokens: AtomicU64,
    unchanged_rounds: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_nanos: AtomicU64,
}

impl Stats {
    fn observe_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

/// Counters and gauges of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    /// `handle` rounds run.
    pub rounds_total: u64,
    /// Handler errors (plugin errors, panics, invalid transitions).
    pub handler_errors_total: u64,
    /// Panics among them.
    pub panics_total: u64,
    /// Step results committed.
    pub commits_total: u64,
    /// Store transactions (group commits).
    pub commit_batches_total: u64,
    /// Tokens the host released after Finalize.
    pub leaked_tokens_released_total: u64,
    /// Rounds that changed nothing and were not written.
    pub unchanged_rounds_total: u64,
    /// Executions queued for a step.
    pub queue_depth: usize,
    /// Steps running.
    pub in_flight: usize,
    /// Executions the engine tracks (non-terminal).
    pub active: usize,
    /// Executions by phase (from the store).
    pub executions_by_phase: BTreeMap<String, u64>,
    /// Step latency histogram: (upper bound in seconds, count); the last
    /// bound is `+Inf`.
    pub step_latency_buckets: Vec<(f64, u64)>,
    /// Sum of step latencies, seconds.
    pub step_latency_sum_seconds: f64,
    /// Failed store writes by kind (`full`, `read_only`, `other`).
    pub store_errors_total: Vec<(String, u64)>,
    /// Set while store writes fail (cleared by the next successful write).
    pub store_degraded: Option<StoreDegraded>,
}

/// A parsed spec without its inputs, with what follows from it, shared by
/// every active execution of the same task (see [`Shapes`]).
pub(crate) struct Shape {
    pub(crate) spec: ExecutionSpec,
    /// The task type (shared by the events of every round).
    pub(crate) task_type: Arc<str>,
    pub(crate) plugin: Option<Arc<dyn Plugin>>,
    /// The plugin's id, when the plugin is known.
    pub(crate) plugin_id: Option<Arc<str>>,
}

impl std::ops::Deref for Shape {
    type Target = ExecutionSpec;
    fn deref(&self) -> &ExecutionSpec {
        &self.spec
    }
}

/// A submitted spec taken apart: the part executions of one task share
/// (template and metadata, interned as a [`Shape`]) and their inputs.
pub(crate) struct SplitSpec {
    /// The spec with empty inputs.
    spec: ExecutionSpec,
    /// Canonical JSON of `spec` without inputs (the interning key).
    shared_json: String,
    /// Canonical JSON of the inputs.
    inputs: Box<str>,
}

impl SplitSpec {
    fn new(mut spec: ExecutionSpec) -> Self {
        let (inputs, shared_json) = spec.canonical_parts();
        spec.inputs = LiteralMap::new();
        SplitSpec {
            spec,
            shared_json,
            inputs: inputs.into_boxed_str(),
        }
    }

    /// The whole spec's canonical JSON (what the store keeps).
    fn canonical_json(&self) -> String {
        ExecutionSpec::join_canonical(&self.inputs, &self.shared_json)
    }
}

/// Inputs from the canonical JSON the engine made of them (a failure would
/// be an engine bug: it is logged and the inputs read as empty).
pub(crate) fn parse_inputs(id: &str, json: &str) -> LiteralMap {
    serde_json::from_str(json).unwrap_or_else(|e| {
        log::error!("execution {id}: its inputs do not parse back ({e}); read as empty");
        LiteralMap::new()
    })
}

/// Interned [`Shape`]s by the canonical JSON of a spec without its inputs:
/// executions of the same task (template and metadata) share one parsed
/// copy (most of an idle execution's memory otherwise), whatever their
/// inputs. Entries die with their last execution.
#[derive(Default)]
struct Shapes {
    hasher: std::collections::hash_map::RandomState,
    by_hash: HashMap<u64, Vec<Weak<Shape>>>,
    /// Entries at the last sweep of dead ones.
    swept_at: usize,
}

impl Shapes {
    fn intern(&mut self, spec_json: &str, spec: ExecutionSpec, plugin: Option<Arc<dyn Plugin>>) -> Arc<Shape> {
        use std::hash::BuildHasher;
        let bucket = self.by_hash.entry(self.hasher.hash_one(spec_json)).or_default();
        bucket.retain(|w| w.strong_count() > 0);
        let same_plugin = |a: &Option<Arc<dyn Plugin>>| match (a, &plugin) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if let Some(found) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| same_plugin(&s.plugin) && s.spec == spec)
        {
            return found;
        }
        let shape = Arc::new(Shape {
            task_type: Arc::from(spec.template.task_type.as_str()),
            plugin_id: plugin.as_ref().map(|p| Arc::from(p.id())),
            spec,
            plugin,
        });
        bucket.push(Arc::downgrade(&shape));
        let n = self.by_hash.len();
        if n >= 2 * self.swept_at.max(512) {
            self.by_hash.retain(|_, b| {
                b.retain(|w| w.strong_count() > 0);
                !b.is_empty()
            });
            self.swept_at = self.by_hash.len();
        }
        shape
    }
}

/// The in-memory copy of an active execution. It is owned by the
/// scheduler's entry while it waits, and travels (moved, never copied)
/// through the work queue, its worker and the committer while a step runs.
pub(crate) struct Active {
    /// The spec without its inputs, shared with the executions of the same
    /// task (same template and metadata).
    pub(crate) spec: Arc<Shape>,
    /// The inputs, as canonical JSON (a few bytes where a parsed map takes
    /// a kilobyte); parsed when a plugin or the catalog asks.
    inputs: Box<str>,
    /// The execution (its `spec_json` and `task_type` are left empty: the
    /// shape has them).
    pub(crate) record: ExecutionRecord,
    /// What the scheduler's entry and API calls reach while a step runs.
    pub(crate) shared: Arc<ActiveShared>,
    /// The generated name of an attempt, kept while the execution runs
    /// round after round (dropped when it waits).
    pub(crate) gname: Option<(u32, Arc<str>)>,
    /// Consecutive steps that changed nothing (resync backoff).
    no_change: u32,
}

/// The part of an [`Active`] reachable while its step runs.
#[derive(Default)]
pub(crate) struct ActiveShared {
    /// A signal came during the step: run again once it is durable.
    dirty: AtomicBool,
    /// Whether `inputs.json`/`task.json` are known to exist.
    pub(crate) files: AtomicBool,
    /// A client's abort request that came while the execution was out
    /// (queued, running or committing); the next step takes it.
    abort: Mutex<Option<String>>,
}

impl scheduler::JobShared for ActiveShared {
    fn dirty(&self) -> &AtomicBool {
        &self.dirty
    }
}

impl scheduler::Job for Box<Active> {
    type Shared = ActiveShared;
    fn id(&self) -> &str {
        &self.record.id
    }
    fn shared(&self) -> &Arc<ActiveShared> {
        &self.shared
    }
    fn no_change(&mut self) -> &mut u32 {
        &mut self.no_change
    }
}

impl Active {
    fn new(spec: Arc<Shape>, mut record: ExecutionRecord, inputs: Box<str>) -> Box<Self> {
        // The shape has the parsed spec and the task type.
        record.spec_json = String::new();
        record.task_type = String::new();
        Box::new(Active {
            spec,
            inputs,
            record,
            shared: Arc::default(),
            gname: None,
            no_change: 0,
        })
    }

    /// The inputs' canonical JSON.
    pub(crate) fn inputs_json(&self) -> &str {
        &self.inputs
    }

    /// The inputs.
    pub(crate) fn inputs(&self) -> LiteralMap {
        parse_inputs(&self.record.id, &self.inputs)
    }

    /// Takes an abort request that came while the execution was out.
    fn take_pending_abort(&mut self) {
        let pending = lock(&self.shared.abort).take();
        if let Some(reason) = pending {
            self.record.abort_requested = Some(reason);
        }
    }
}

/// The engine's scheduler: executions travel through it as jobs.
pub(crate) type Sched = Scheduler<Box<Active>>;

pub(crate) struct Core {
    cfg: EngineConfig,
    store: Arc<dyn Store>,
    plugins: Arc<dyn PluginResolver>,
    resources: Arc<dyn ResourceBackend>,
    sched: Arc<Sched>,
    shapes: Mutex<Shapes>,
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
    threads: Mutex<Vec<JoinHandle<()>>>,
    id_counter: AtomicU64,
    lock: Mutex<Option<lock::DataDirLock>>,
}

/// The engine.
pub struct Engine;

/// A handle on a running engine (cheap to clone, usable from any thread).
#[derive(Clone)]
pub struct EngineHandle {
    core: Arc<Core>,
}

/// An [`EnqueueOwner`] that exists before the engine (give it to loaders)
/// and is bound to the engine once it runs. Requests before binding are
/// dropped: every execution is evaluated at start anyway.
#[derive(Default)]
pub struct LateEnqueueOwner {
    sched: OnceLock<Weak<Sched>>,
}

impl LateEnqueueOwner {
    /// An unbound owner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds to a running engine.
    pub fn bind(&self, engine: &EngineHandle) {
        let _ = self.sched.set(Arc::downgrade(&engine.core.sched));
    }
}

impl EnqueueOwner for LateEnqueueOwner {
    fn enqueue(&self, owner: &NamespacedName) -> PResult<()> {
        match self.sched.get().and_then(Weak::upgrade) {
            Some(s) => s.enqueue(&owner.name),
            None => log::debug!("enqueue of {owner} before the engine started: ignored"),
        }
        Ok(())
    }
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
        let data = FsDataStore::new(cfg.data_dir.join("data"))
            .map_err(|e| EngineError::Invalid(format!("data directory {}: {e}", cfg.data_dir.display())))?;
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
        let core = Arc::new(Core {
            inline_commits: store.commits_inline(),
            secrets: cfg.secrets.clone(),
            catalog: StoreCatalog::new(store.clone()),
            cfg,
            store,
            plugins,
            resources,
            sched,
            shapes: Mutex::new(Shapes::default()),
            data,
            stats: Stats::default(),
            store_health: Default::default(),
            commit_tx,
            work_tx,
            work_rx,
            pool: workers::Pool::default(),
            calls,
            unbound: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            id_counter: AtomicU64::new(0),
            lock: Mutex::new(Some(dir_lock)),
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
        for mut rec in recovered {
            let spec: ExecutionSpec = match serde_json::from_str(&rec.spec_json) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("execution {}: stored spec unreadable ({e}); skipped", rec.id);
                    continue;
                }
            };
            let plugin = match core.bound_plugin(rec.plugin_id.as_deref(), &spec.template.task_type) {
                Ok(p) => p,
                Err(missing) => {
                    log::warn!(
                        "execution {}: its plugin \"{missing}\" is not loaded; it waits for a start with the plugin",
                        rec.id
                    );
                    lock(&core.unbound).insert(rec.id, missing);
                    continue;
                }
            };
            if let Some(c) = crashed.get(&rec.id) {
                let pid = plugin.as_ref().map(|p| p.id().to_string());
                crash_loop::recovering(&*core.store, &mut rec, pid.as_deref(), c, core.cfg.crash_loop_limit);
            }
            let split = SplitSpec::new(spec);
            let shape = lock(&core.shapes).intern(&split.shared_json, split.spec, plugin);
            core.sched.add(Active::new(shape, rec, split.inputs));
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

impl Core {
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
                self.sched.done(a, Next::Later);
            }
        }
    }

    /// Applies a step's outcome to its execution and makes it durable (if
    /// it changed anything) before the next step.
    fn after_step(&self, mut a: Box<Active>, out: round::StepOutcome) {
        a.record.state = out.commit.state.clone();
        a.record.task = out.task;
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
    ) -> Result<(NewExecution, SplitSpec, Arc<dyn Plugin>), EngineError> {
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
        let plugin = self
            .plugins
            .resolve(&spec.template.task_type)
            .map_err(|e| EngineError::NoPlugin(format!("task type [{}]: {e}", spec.template.task_type)))?;
        let split = SplitSpec::new(spec);
        let new = NewExecution {
            id,
            client_id,
            spec_json: split.canonical_json(),
            task_type: split.spec.template.task_type.clone(),
            created_at_ms: now,
            state: ExecState::new(now),
            plugin_id: Some(plugin.id().to_string()),
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
        self.sched.add(Active::new(shape, rec, spec.inputs));
        shown
    }
}

impl EngineHandle {
    /// Accepts an execution; returns once it is durable. The same id with
    /// the same spec is `Existing`; with another spec, `Conflict`.
    pub fn submit(&self, id: Option<String>, spec: ExecutionSpec) -> Result<SubmitOutcome, EngineError> {
        self.submit_batch(vec![(id, spec)])
            .pop()
            .unwrap_or(Err(EngineError::Invalid("empty batch".into())))
    }

    /// Accepts an execution like [`Self::submit`] and returns its view: a
    /// new one's is built from the record in hand (no store read), an
    /// existing one's is read.
    pub fn submit_viewed(
        &self,
        id: Option<String>,
        spec: ExecutionSpec,
    ) -> Result<(SubmitOutcome, ExecutionView), EngineError> {
        let (outcome, view) = self
            .submit_all(vec![(id, spec)], true)
            .pop()
            .unwrap_or(Err(EngineError::Invalid("empty batch".into())))?;
        match (view, &outcome) {
            (Some(v), _) => Ok((outcome, v)),
            (None, SubmitOutcome::Created(id) | SubmitOutcome::Existing(id)) => {
                let v = self.get(id)?;
                Ok((outcome, v))
            }
        }
    }

    /// Accepts several executions in one durable transaction (one fsync);
    /// one result per item, in order.
    pub fn submit_batch(&self, items: Vec<(Option<String>, ExecutionSpec)>) -> Vec<Result<SubmitOutcome, EngineError>> {
        self.submit_all(items, false)
            .into_iter()
            .map(|r| r.map(|(outcome, _)| outcome))
            .collect()
    }

    /// [`Self::submit_batch`], with the views of the new executions if `views`.
    fn submit_all(
        &self,
        items: Vec<(Option<String>, ExecutionSpec)>,
        views: bool,
    ) -> Vec<Result<(SubmitOutcome, Option<ExecutionView>), EngineError>> {
        let c = &self.core;
        if c.sched_stopping() {
            return items.iter().map(|_| Err(EngineError::ShuttingDown)).collect();
        }
        let now = now_ms();
        let mut results: Vec<Result<(SubmitOutcome, Option<ExecutionView>), EngineError>> =
            Vec::with_capacity(items.len());
        let mut pending = Vec::new();
        for (i, (id, spec)) in items.into_iter().enumerate() {
            match c.prepare(id, spec, now) {
                Ok(p) => {
                    results.push(Ok((SubmitOutcome::Created(p.0.id.clone()), None)));
                    pending.push((i, p));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // The committer makes them durable with whatever else is pending.
        let (news, rest): (Vec<NewExecution>, Vec<_>) = pending
            .into_iter()
            .map(|(i, (new, spec, plugin))| (new, (i, spec, plugin)))
            .unzip();
        if news.is_empty() {
            return results;
        }
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        // No answer: the committer stopped (shutdown) before writing them.
        let reply = c
            .commit_tx
            .send(CommitMsg::Submit(news, reply_tx))
            .ok()
            .and_then(|()| reply_rx.recv().ok())
            .ok_or(EngineError::ShuttingDown)
            .and_then(|written| written.map_err(EngineError::from));
        let (news, outcomes) = match reply {
            Ok(written) => written,
            Err(e) => {
                for (i, _, _) in &rest {
                    results[*i] = Err(e.clone());
                }
                return results;
            }
        };
        for ((new, (i, spec, plugin)), outcome) in news.into_iter().zip(rest).zip(outcomes) {
            let id = new.id.clone();
            results[i] = match outcome {
                InsertOutcome::Exists { spec_json } if spec_json == new.spec_json => {
                    Ok((SubmitOutcome::Existing(id), None))
                }
                InsertOutcome::Exists { .. } => Err(EngineError::Conflict(format!(
                    "execution [{id}] exists with a different spec"
                ))),
                InsertOutcome::Created => {
                    let view = c.activate(new, spec, Some(plugin), views);
                    Ok((SubmitOutcome::Created(id), view))
                }
            };
        }
        results
    }

    /// The durable state of an execution.
    pub fn get(&self, id: &str) -> Result<ExecutionView, EngineError> {
        let rec = self.core.store.get_execution(id)?.ok_or(EngineError::NotFound)?;
        Ok(self.core.view(&rec))
    }

    /// Executions ordered by id, optionally of one phase, after `after`.
    pub fn list(
        &self,
        phase: Option<ExecPhase>,
        limit: usize,
        after: Option<String>,
    ) -> Result<Vec<ExecutionView>, EngineError> {
        let recs = self.core.store.list_executions(phase, limit, after.as_deref())?;
        Ok(recs.iter().map(|r| self.core.view(r)).collect())
    }

    /// The events of an execution, in order.
    pub fn events(&self, id: &str) -> Result<Vec<EventRecord>, EngineError> {
        let c = &self.core;
        if c.store.get_execution(id)?.is_none() {
            return Err(EngineError::NotFound);
        }
        Ok(c.store.events(id)?)
    }

    /// The outputs of the execution's current attempt.
    pub fn outputs(&self, id: &str) -> Result<Option<LiteralMap>, EngineError> {
        let c = &self.core;
        let rec = c.store.get_execution(id)?.ok_or(EngineError::NotFound)?;
        Ok(c.store.outputs(id, rec.state.attempt)?)
    }

    /// Requests an abort: Abort + Finalize run, the execution ends Aborted.
    /// Terminal executions, and ones already succeeding or failing, are
    /// left as they are.
    pub fn abort(&self, id: &str, reason: &str) -> Result<ExecutionView, EngineError> {
        let c = &self.core;
        let rec = c.store.get_execution(id)?.ok_or(EngineError::NotFound)?;
        if rec.state.phase.is_terminal() {
            return Ok(c.view(&rec));
        }
        let reason = if reason.is_empty() {
            "aborted by a client"
        } else {
            reason
        };
        if !c.store.request_abort(id, reason)? {
            return Err(EngineError::NotFound);
        }
        c.sched.with_job(id, |a, shared| match a {
            Some(a) => a.record.abort_requested = Some(reason.to_string()),
            None => *lock(&shared.abort) = Some(reason.to_string()),
        });
        c.sched.enqueue(id);
        self.get(id)
    }

    /// Set while store writes fail (cheap: no store query).
    pub fn store_degraded(&self) -> Option<StoreDegraded> {
        self.core.store_health.degraded()
    }

    /// Engine statistics.
    pub fn stats(&self) -> EngineStats {
        let c = &self.core;
        let (queued, in_flight, active) = c.sched.depth();
        let by_phase = c
            .store
            .count_by_phase()
            .unwrap_or_default()
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(c.stats.latency_buckets.iter())
            .map(|(b, n)| (*b, n.load(Ordering::Relaxed)))
            .collect();
        buckets.push((
            f64::INFINITY,
            c.stats.latency_buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed),
        ));
        EngineStats {
            rounds_total: c.stats.rounds.load(Ordering::Relaxed),
            handler_errors_total: c.stats.handler_errors.load(Ordering::Relaxed),
            panics_total: c.stats.panics.load(Ordering::Relaxed),
            commits_total: c.stats.commits.load(Ordering::Relaxed),
            commit_batches_total: c.stats.batches.load(Ordering::Relaxed),
            leaked_tokens_released_total: c.stats.leaked_tokens.load(Ordering::Relaxed),
            unchanged_rounds_total: c.stats.unchanged_rounds.load(Ordering::Relaxed),
            queue_depth: queued,
            in_flight,
            active,
            executions_by_phase: by_phase,
            step_latency_buckets: buckets,
            step_latency_sum_seconds: c.stats.latency_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            store_errors_total: c.store_health.errors_by_kind(),
            store_degraded: c.store_health.degraded(),
        }
    }

    /// Stops starting steps, waits up to `timeout` for running ones, commits
    /// what they produced and stops the threads. Whatever did not finish is
    /// resumed from the store at the next start.
    pub fn shutdown(&self, timeout: Duration) {
        let c = &self.core;
        let deadline = Instant::now() + timeout;
        c.sched.stop();
        if !c.sched.wait_idle(timeout) {
            c.log_calls_left_behind(timeout);
        }
        let threads = std::mem::take(&mut *lock(&c.threads));
        for _ in 0..c.pool.total() {
            let _ = c.work_tx.send(Work::Stop);
        }
        let _ = c.commit_tx.send(CommitMsg::Stop);
        for t in threads {
            if Instant::now() >= deadline && !t.is_finished() {
                continue; // a plugin call is stuck: leave the thread behind
            }
            let _ = t.join();
        }
        // A clean stop: calls still stuck are not crashes.
        c.calls.mark_clean();
        // Another engine may use the directory from now on.
        lock(&c.lock).take();
    }

    /// Wakes an execution now (as a plugin signal would).
    pub fn wake(&self, id: &str) {
        self.core.sched.enqueue(id);
    }
}

impl Core {
    fn sched_stopping(&self) -> bool {
        // A stopped scheduler never queues again; probe via a cheap flag.
        self.sched.is_stopping()
    }
}
