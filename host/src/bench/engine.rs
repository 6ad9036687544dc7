//! Engine measurements with a native no-op plugin: P2, P3 (engine side), P6
//! and the submit → terminal latency.
//!
//! To measure N executions *in flight*, they are first *parked*: while the
//! plugin's gate is closed, `handle` reports Running v0 and nothing else, so
//! after two rounds each execution waits on its (1 hour) resync timer. The
//! gate then opens, every execution is woken, and the clock runs until the
//! last one is Succeeded: all N are active for the whole measurement.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use indicatif::ProgressBar;
use kozmo_interface::{
    Literal, PhaseInfo, Plugin, PluginStateReaderExt, PluginStateWriterExt, Result as PResult, TaskExecutionContext,
    Transition,
};

use crate::isolation::plugin::OnlyPlugin;
use kozmo_engine::model::{ExecPhase, ExecutionSpec};
use kozmo_engine::resources::{ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::store::{MemoryStore, Store};
use kozmo_engine::{Engine, EngineConfig, EngineHandle};
use kozmo_store_sqlite::{Durability, SqliteStore};

/// A native plugin that does nothing: `rounds` rounds of bumping its phase
/// version through plugin state, then Success. While its gate is closed it
/// only reports Running v0 (see the module doc).
pub struct BenchPlugin {
    rounds: u32,
    open: AtomicBool,
    parking_calls: AtomicU64,
    finalized: AtomicU64,
    finalized_tx: Sender<()>,
    finalized_rx: Receiver<()>,
}

impl BenchPlugin {
    /// A plugin running `rounds` rounds after the first, gate open or not.
    pub fn new(rounds: u32, open: bool) -> Arc<Self> {
        let (finalized_tx, finalized_rx) = crossbeam_channel::unbounded();
        Arc::new(BenchPlugin {
            rounds,
            open: AtomicBool::new(open),
            parking_calls: AtomicU64::new(0),
            finalized: AtomicU64::new(0),
            finalized_tx,
            finalized_rx,
        })
    }

    /// Opens the gate.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Finalize calls so far (one per execution reaching its end).
    pub fn finalized(&self) -> u64 {
        self.finalized.load(Ordering::SeqCst)
    }
}

impl Plugin for BenchPlugin {
    fn id(&self) -> &str {
        "bench-noop"
    }
    fn handle(&self, ctx: &dyn TaskExecutionContext) -> PResult<Transition> {
        if !self.open.load(Ordering::Relaxed) {
            self.parking_calls.fetch_add(1, Ordering::Relaxed);
            return Ok(Transition::ephemeral(PhaseInfo::running(0, None)));
        }
        let (_, n) = ctx.plugin_state_reader().get::<u32>()?;
        let n = n.unwrap_or(0);
        if n >= self.rounds {
            return Ok(Transition::ephemeral(PhaseInfo::success(None)));
        }
        ctx.plugin_state_writer().put(1, &(n + 1))?;
        Ok(Transition::ephemeral(PhaseInfo::running(n + 1, None)))
    }
    fn abort(&self, _: &dyn TaskExecutionContext) -> PResult<()> {
        Ok(())
    }
    fn finalize(&self, _: &dyn TaskExecutionContext) -> PResult<()> {
        self.finalized.fetch_add(1, Ordering::SeqCst);
        let _ = self.finalized_tx.send(());
        Ok(())
    }
}

/// Which store an engine run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// [`MemoryStore`].
    Memory,
    /// [`SqliteStore`] with `synchronous=FULL` (the daemon's setting).
    SqliteFull,
}

impl StoreKind {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::SqliteFull => "SQLite, synchronous=FULL",
        }
    }
}

/// An engine over a fresh store in its own temporary directory.
pub struct BenchEngine {
    /// The engine.
    pub engine: EngineHandle,
    /// Its store.
    pub store: Arc<dyn Store>,
    /// Its plugin.
    pub plugin: Arc<BenchPlugin>,
    /// The data directory (the SQLite file is `kozmo.db` in it).
    pub dir: tempfile::TempDir,
}

/// An engine in `dir` on `store` whose every task runs `plugin`, with a
/// fixed resync of `resync` and `workers` workers (0: the default, one per
/// core), no quotas: what every engine measurement starts.
pub fn start_engine(
    dir: &std::path::Path,
    store: Arc<dyn Store>,
    plugin: Arc<dyn Plugin>,
    resync: Duration,
    workers: usize,
) -> anyhow::Result<EngineHandle> {
    let mut cfg = EngineConfig {
        data_dir: dir.to_path_buf(),
        resync_interval: resync,
        max_resync_interval: resync,
        ..EngineConfig::default()
    };
    if workers > 0 {
        cfg.workers = workers;
    }
    let resources = ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>;
    Engine::start(cfg, store, Arc::new(OnlyPlugin(plugin)), resources).map_err(|e| anyhow::anyhow!("engine: {e}"))
}

/// The spec every benchmark execution runs.
pub fn bench_spec() -> ExecutionSpec {
    serde_json::from_str(r#"{"template": {"type": "bench-noop"}}"#).expect("valid spec")
}

impl BenchEngine {
    /// Starts an engine with `workers` workers (0 = number of cores).
    pub fn start(kind: StoreKind, plugin: Arc<BenchPlugin>, workers: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("kozmo-bench-").tempdir()?;
        let store: Arc<dyn Store> = match kind {
            StoreKind::Memory => Arc::new(MemoryStore::new()),
            StoreKind::SqliteFull => Arc::new(SqliteStore::open(&dir.path().join("kozmo.db"), Durability::Full)?),
        };
        // Parked executions must stay parked for the whole run.
        let engine = start_engine(
            dir.path(),
            store.clone(),
            plugin.clone(),
            Duration::from_secs(3600),
            workers,
        )?;
        Ok(BenchEngine {
            engine,
            store,
            plugin,
            dir,
        })
    }

    /// Submits `n` executions `b0000000`.. in batches of `batch`.
    pub fn submit(&self, n: usize, batch: usize, pb: &ProgressBar, what: &str) -> anyhow::Result<Vec<String>> {
        self.submit_specs(n, batch, pb, what, |_| bench_spec())
    }

    /// Submits `n` executions `b0000000`.. in batches of `batch`, the
    /// spec of each made by `spec` from its id.
    pub fn submit_specs(
        &self,
        n: usize,
        batch: usize,
        pb: &ProgressBar,
        what: &str,
        spec: impl Fn(&str) -> ExecutionSpec,
    ) -> anyhow::Result<Vec<String>> {
        let ids: Vec<String> = (0..n).map(|i| format!("b{i:07}")).collect();
        for (k, chunk) in ids.chunks(batch.max(1)).enumerate() {
            let items = chunk.iter().map(|id| (Some(id.clone()), spec(id))).collect();
            for r in self.engine.submit_batch(items) {
                r.map_err(|e| anyhow::anyhow!("submit: {e}"))?;
            }
            pb.set_message(format!("{what}: submitted {}/{n}", ((k + 1) * batch).min(n)));
        }
        Ok(ids)
    }

    /// Waits until every execution made its two parking rounds and no step
    /// is queued or running.
    pub fn wait_parked(&self, n: usize, pb: &ProgressBar, what: &str) {
        loop {
            let calls = self.plugin.parking_calls.load(Ordering::Relaxed);
            if calls >= 2 * n as u64 {
                let s = self.engine.stats();
                if s.queue_depth == 0 && s.in_flight == 0 {
                    return;
                }
            }
            pb.set_message(format!("{what}: parking {}/{n}", calls / 2));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` executions are Succeeded in the store (the plugin's
    /// finalize count tells when to start looking).
    pub fn wait_succeeded(&self, n: usize, pb: &ProgressBar, what: &str) -> anyhow::Result<()> {
        let mut last = Instant::now();
        while (self.plugin.finalized() as usize) < n {
            let _ = self.plugin.finalized_rx.recv_timeout(Duration::from_millis(50));
            if last.elapsed() > Duration::from_millis(100) {
                pb.set_message(format!("{what}: {}/{n} done", self.plugin.finalized()));
                last = Instant::now();
            }
        }
        loop {
            let done = self
                .store
                .count_by_phase()?
                .get(&ExecPhase::Succeeded)
                .copied()
                .unwrap_or(0);
            if done as usize >= n {
                return Ok(());
            }
            // Not too often: counting competes with the committer.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops the engine.
    pub fn shutdown(self) {
        self.engine.shutdown(Duration::from_secs(10));
    }
}

/// P2: one in-flight size.
#[derive(Debug, Clone)]
pub struct ThroughputPoint {
    /// Executions in flight.
    pub in_flight: usize,
    /// `handle` rounds per execution in the measured window.
    pub rounds_per_execution: u32,
    /// `handle` rounds in the window.
    pub rounds: u64,
    /// Steps committed in the window (rounds + finishing steps).
    pub steps: u64,
    /// Store transactions in the window.
    pub batches: u64,
    /// Window length.
    pub seconds: f64,
    /// Rounds/s of every repetition of this size (this point is their median).
    pub repetitions: Vec<f64>,
}

impl ThroughputPoint {
    /// `handle` rounds per second.
    pub fn rounds_per_second(&self) -> f64 {
        self.rounds as f64 / self.seconds
    }
}

/// P2: parks `n` executions on the in-memory store, then measures rounds/s
/// until all of them succeeded after `rounds` rounds (+1 for Success).
pub fn throughput(n: usize, rounds: u32, workers: usize, pb: &ProgressBar) -> anyhow::Result<ThroughputPoint> {
    let what = format!("P2 {n} in flight");
    let b = BenchEngine::start(StoreKind::Memory, BenchPlugin::new(rounds, false), workers)?;
    let ids = b.submit(n, 1000, pb, &what)?;
    b.wait_parked(n, pb, &what);
    let before = b.engine.stats();
    let start = Instant::now();
    b.plugin.open();
    for id in &ids {
        b.engine.wake(id);
    }
    b.wait_succeeded(n, pb, &what)?;
    let seconds = start.elapsed().as_secs_f64();
    // After the shutdown: the committer counts a batch after the store has it.
    b.engine.shutdown(Duration::from_secs(10));
    let after = b.engine.stats();
    Ok(ThroughputPoint {
        in_flight: n,
        rounds_per_execution: rounds + 1,
        rounds: after.rounds_total - before.rounds_total,
        steps: after.commits_total - before.commits_total,
        batches: after.commit_batches_total - before.commit_batches_total,
        seconds,
        repetitions: Vec::new(),
    })
}

/// P6: resident memory of parked executions.
#[derive(Debug, Clone)]
pub struct MemoryPoint {
    /// Store used.
    pub store: StoreKind,
    /// Executions parked.
    pub executions: usize,
    /// RSS with the engine started and nothing submitted.
    pub rss_before: u64,
    /// RSS with every execution parked.
    pub rss_after: u64,
    /// RSS with every execution parked, after returning the allocator's
    /// free memory to the system (`malloc_trim`, glibc only).
    pub rss_after_trim: Option<u64>,
}

impl MemoryPoint {
    /// Bytes per execution.
    pub fn bytes_per_execution(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.executions.max(1) as f64
    }

    /// Bytes per execution once freed memory is trimmed (what the executions hold).
    pub fn trimmed_bytes_per_execution(&self) -> Option<f64> {
        self.rss_after_trim
            .map(|r| r.saturating_sub(self.rss_before) as f64 / self.executions.max(1) as f64)
    }
}

/// Returns the allocator's free memory to the system; false where unsupported.
fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free heap pages; no pointer is involved.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// P6: `VmRSS` before and after parking `n` executions (run it first, on a
/// fresh heap, or freed memory is reused and the figure understates).
pub fn memory(kind: StoreKind, n: usize, workers: usize, pb: &ProgressBar) -> anyhow::Result<Option<MemoryPoint>> {
    let what = format!("P6 {n} parked ({})", kind.name());
    let b = BenchEngine::start(kind, BenchPlugin::new(0, false), workers)?;
    trim();
    let Some(rss_before) = super::rss_bytes() else {
        b.shutdown();
        return Ok(None);
    };
    // One task, each execution with its own input (as real submissions
    // are): the template is shared, the inputs are not.
    b.submit_specs(n, 1000, pb, &what, |id| {
        let mut spec = bench_spec();
        spec.inputs.insert("id".into(), Literal::String(id.to_string()));
        spec
    })?;
    b.wait_parked(n, pb, &what);
    let rss_after = super::rss_bytes().unwrap_or(rss_before);
    let rss_after_trim = trim().then(super::rss_bytes).flatten();
    b.shutdown();
    Ok(Some(MemoryPoint {
        store: kind,
        executions: n,
        rss_before,
        rss_after,
        rss_after_trim,
    }))
}

/// P3, engine side: durable completions.
#[derive(Debug, Clone)]
pub struct DurablePoint {
    /// Executions submitted and completed.
    pub executions: usize,
    /// Submission batch size.
    pub batch: usize,
    /// From the first submission to the last Succeeded persisted.
    pub seconds: f64,
    /// Steps committed.
    pub steps: u64,
    /// Store transactions (submissions and step results share them).
    pub batches: u64,
}

impl DurablePoint {
    /// Completions per second.
    pub fn per_second(&self) -> f64 {
        self.executions as f64 / self.seconds
    }
}

/// P3: submits `n` executions in batches of `batch` on SQLite (FULL) and
/// waits until every one is Succeeded in the store. The engine is returned
/// stopped (its database file is the raw benchmark's row source).
pub fn durable(
    n: usize,
    batch: usize,
    workers: usize,
    pb: &ProgressBar,
) -> anyhow::Result<(DurablePoint, BenchEngine)> {
    let what = format!("P3 {n} durable completions");
    let b = BenchEngine::start(StoreKind::SqliteFull, BenchPlugin::new(0, true), workers)?;
    let start = Instant::now();
    b.submit(n, batch, pb, &what)?;
    b.wait_succeeded(n, pb, &what)?;
    let seconds = start.elapsed().as_secs_f64();
    b.engine.shutdown(Duration::from_secs(10));
    let s = b.engine.stats();
    Ok((
        DurablePoint {
            executions: n,
            batch,
            seconds,
            steps: s.commits_total,
            batches: s.commit_batches_total,
        },
        b,
    ))
}

/// Submit → terminal latency at light load (one execution at a time).
#[derive(Debug, Clone)]
pub struct LatencyPoint {
    /// Store used.
    pub store: StoreKind,
    /// Samples.
    pub samples: usize,
    /// Median, seconds.
    pub p50: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
}

/// Latency: `samples` executions submitted one after the other, each timed
/// from `submit` to its Succeeded row in the store.
pub fn latency(kind: StoreKind, samples: usize, workers: usize, pb: &ProgressBar) -> anyhow::Result<LatencyPoint> {
    let b = BenchEngine::start(kind, BenchPlugin::new(0, true), workers)?;
    let spec = bench_spec();
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = format!("l{i:07}");
        let start = Instant::now();
        b.engine
            .submit(Some(id.clone()), spec.clone())
            .map_err(|e| anyhow::anyhow!("submit: {e}"))?;
        let _ = b.plugin.finalized_rx.recv_timeout(Duration::from_secs(30));
        loop {
            let rec = b.store.get_execution(&id)?;
            if rec.is_some_and(|r| r.state.phase.is_terminal()) {
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        v.push(start.elapsed().as_secs_f64());
        if i % 10 == 0 {
            pb.set_message(format!("latency ({}): {i}/{samples}", kind.name()));
        }
    }
    b.shutdown();
    v.sort_by(f64::total_cmp);
    Ok(LatencyPoint {
        store: kind,
        samples,
        p50: super::quantile(&v, 0.5),
        p99: super::quantile(&v, 0.99),
    })
}
