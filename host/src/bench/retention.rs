//! The retention benchmark: a sustained load of short executions on SQLite
//! (`synchronous=FULL`, native no-op plugin: one Success round and a
//! Finalize step each) with `max_executions` retention, reporting the
//! database's size over time and the step commit latency with and without
//! pruning.
//!
//! Each load runs on a fresh store without retention (the baseline), then
//! on another with the pruner running a pass every `interval`
//! (`max_executions = keep`) from the moment `keep` executions were
//! submitted; `pairs` such pairs, one after the other, and the verdict is
//! their median ratio (one pair's p99 ratio swung from 1.4 to 1.9× at the
//! full rate, and 1.6 to 4.7× at half of it, between back-to-back runs on
//! the same tree). Latencies are taken from then on in both runs, the second
//! run's tagged by whether a pass was running. Two latencies: a step's (its
//! result → its execution's next call: the durable commit in between and a
//! worker's pickup, what an execution waits) and a store transaction's
//! (asking the store for it → durable), the latter split into its
//! statements (to the end of its `COMMIT`, a checkpoint the writer was asked
//! for included) and the WAL sync; and the bytes the process wrote per
//! execution. Two loads: the full rate the store
//! takes (the writer never idle), then half the rate the full baseline
//! finished executions at.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kozmo_interface::literals::LiteralMap;
use kozmo_interface::{Plugin, Result as PResult, TaskExecutionContext, Transition};

use super::engine::{bench_spec, BenchPlugin};
use super::quantile;
use crate::isolation::plugin::OnlyPlugin;
use kozmo_engine::model::{
    ErrorDocument, EventRecord, EventRow, ExecPhase, ExecutionRecord, ExecutionSpec, NewExecution, RoundCommit,
    TokenRow,
};
use kozmo_engine::resources::{ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::retention::pruner::Retention;
use kozmo_engine::retention::RetentionConfig;
use kozmo_engine::store::{
    CrashVictim, InsertOutcome, PendingSync, PruneCandidate, PruneSelect, PrunedRows, Store, StoreResult, StoreSpace,
    WriteTxn,
};
use kozmo_engine::sync::lock;
use kozmo_engine::{Engine, EngineConfig};
use kozmo_store_sqlite::{Durability, SqliteStore};

/// How fast executions arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// As fast as the store takes them (at most 2,048 active at once): the
    /// writer is never idle.
    Full,
    /// At this many executions per second, evenly (a load with headroom).
    Paced(f64),
}

/// What the retention run measured.
#[derive(Debug, Clone)]
pub struct RetentionPoint {
    /// How the executions arrived.
    pub load: Load,
    /// Executions finished per second once `keep` were submitted.
    pub rate: f64,
    /// Executions run.
    pub total: usize,
    /// Terminal executions kept (`max_executions`).
    pub keep: usize,
    /// Executions per prune transaction.
    pub batch: usize,
    /// (executions submitted, seconds since start, `kozmo.db` bytes, WAL bytes).
    pub sizes: Vec<(usize, f64, u64, u64)>,
    /// Step commit latency (a step's result → the execution's next call,
    /// its durable commit in between), outside and during prune passes.
    pub steps: Latencies,
    /// Store transaction latency (asking for the writer → durable),
    /// outside and during prune passes.
    pub commits: Latencies,
    /// The WAL syncs alone (one may cover several transactions).
    pub syncs: Latencies,
    /// A transaction's statements alone (its begin → the end of its
    /// `COMMIT`, with any checkpoint the writer ran after it).
    pub statements: Latencies,
    /// Bytes the process wrote to disk per execution (`/proc/self/io`).
    pub written_per_execution: f64,
    /// Executions pruned.
    pub pruned: u64,
    /// Executions left in the store at the end.
    pub left: u64,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// Count, p50 and p99 (ms) of latencies outside and during prune passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    /// While no pass ran (the whole run without retention).
    pub without: (usize, f64, f64),
    /// While a prune pass ran.
    pub during: (usize, f64, f64),
}

/// Latencies of one kind, by whether a prune pass was running.
#[derive(Default)]
struct Samples {
    without: Mutex<Vec<f64>>,
    during: Mutex<Vec<f64>>,
}

impl Samples {
    fn latencies(&self) -> Latencies {
        let summary = |v: &Mutex<Vec<f64>>| {
            let mut v = std::mem::take(&mut *lock(v));
            v.sort_by(f64::total_cmp);
            (v.len(), quantile(&v, 0.5), quantile(&v, 0.99))
        };
        Latencies {
            without: summary(&self.without),
            during: summary(&self.during),
        }
    }
}

/// Commit and step times, tagged by whether a prune pass was running.
#[derive(Default)]
struct Timings {
    pruning: AtomicBool,
    recording: AtomicBool,
    /// When each commit waiting for its sync started, oldest first.
    unsynced: Mutex<Vec<Instant>>,
    commits: Samples,
    steps: Samples,
    syncs: Samples,
    statements: Samples,
}

impl Timings {
    fn record(&self, which: &Samples, ms: f64) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        if self.pruning.load(Ordering::Relaxed) {
            lock(&which.during).push(ms);
        } else {
            lock(&which.without).push(ms);
        }
    }

    fn commit(&self, started: Instant) {
        self.record(&self.commits, started.elapsed().as_secs_f64() * 1000.0);
    }
}

/// The bench plugin, timing each execution from its Success round's
/// result to its Finalize call: the engine calls Finalize once that result
/// is durable, so the gap is the step's commit (and a worker's pickup).
struct TimedPlugin {
    inner: Arc<BenchPlugin>,
    timings: Arc<Timings>,
    returned: Mutex<std::collections::HashMap<String, Instant>>,
}

impl Plugin for TimedPlugin {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn handle(&self, ctx: &dyn TaskExecutionContext) -> PResult<Transition> {
        let t = self.inner.handle(ctx);
        let name = ctx.task_execution_metadata().task_execution_id().generated_name();
        lock(&self.returned).insert(name.to_string(), Instant::now());
        t
    }
    fn abort(&self, ctx: &dyn TaskExecutionContext) -> PResult<()> {
        self.inner.abort(ctx)
    }
    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> PResult<()> {
        let name = ctx.task_execution_metadata().task_execution_id().generated_name();
        if let Some(t) = lock(&self.returned).remove(name) {
            self.timings
                .record(&self.timings.steps, t.elapsed().as_secs_f64() * 1000.0);
        }
        self.inner.finalize(ctx)
    }
}

/// The SQLite store, with every group commit timed.
struct TimedStore {
    inner: SqliteStore,
    timings: Arc<Timings>,
}

struct TimedTxn<'a> {
    inner: Box<dyn WriteTxn + 'a>,
    started: Instant,
    timings: &'a Arc<Timings>,
}

impl WriteTxn for TimedTxn<'_> {
    fn insert(&mut self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        self.inner.insert(new)
    }
    fn apply(&mut self, step: &RoundCommit) -> StoreResult<()> {
        self.inner.apply(step)
    }
    fn delete_terminal(&mut self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        self.inner.delete_terminal(ids)
    }
    fn commit(self: Box<Self>) -> StoreResult<()> {
        let (started, timings) = (self.started, self.timings);
        let r = self.inner.commit();
        timings.commit(started);
        r
    }
    /// Timed to the end of the sync the engine runs later (durable). The
    /// engine runs one sync for every transaction waiting (the last one's):
    /// each sync ends the times of all commits made before it.
    fn commit_unsynced(self: Box<Self>) -> StoreResult<Option<PendingSync>> {
        let (started, timings) = (self.started, self.timings.clone());
        let committed = self.inner.commit_unsynced()?;
        timings.record(&timings.statements, started.elapsed().as_secs_f64() * 1000.0);
        match committed {
            None => {
                timings.commit(started);
                Ok(None)
            }
            Some(mut sync) => {
                lock(&timings.unsynced).push(started);
                Ok(Some(Box::new(move || {
                    let covered = lock(&timings.unsynced).len();
                    let syncing = Instant::now();
                    sync()?;
                    timings.record(&timings.syncs, syncing.elapsed().as_secs_f64() * 1000.0);
                    let done: Vec<Instant> = lock(&timings.unsynced).drain(..covered).collect();
                    for t in done {
                        timings.commit(t);
                    }
                    Ok(())
                })))
            }
        }
    }
}

impl Store for TimedStore {
    fn begin(&self) -> StoreResult<Option<Box<dyn WriteTxn + '_>>> {
        let started = Instant::now();
        Ok(self.inner.begin()?.map(|inner| {
            Box::new(TimedTxn {
                inner,
                started,
                timings: &self.timings,
            }) as Box<dyn WriteTxn + '_>
        }))
    }
    fn write(&self, news: &[NewExecution], batch: &mut [RoundCommit]) -> StoreResult<Vec<InsertOutcome>> {
        self.inner.write(news, batch)
    }
    fn commit_cost(&self) -> Duration {
        self.inner.commit_cost()
    }
    fn insert_execution(&self, new: &NewExecution) -> StoreResult<InsertOutcome> {
        self.inner.insert_execution(new)
    }
    fn insert_executions(&self, news: &[NewExecution]) -> StoreResult<Vec<InsertOutcome>> {
        self.inner.insert_executions(news)
    }
    fn get_execution(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        self.inner.get_execution(id)
    }
    fn list_executions(
        &self,
        phase: Option<ExecPhase>,
        limit: usize,
        after: Option<&str>,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        self.inner.list_executions(phase, limit, after)
    }
    fn load_active(&self) -> StoreResult<Vec<ExecutionRecord>> {
        self.inner.load_active()
    }
    fn commit(&self, batch: &mut [RoundCommit]) -> StoreResult<()> {
        self.inner.commit(batch)
    }
    fn append_events(&self, id: &str, events: &[EventRow]) -> StoreResult<()> {
        self.inner.append_events(id, events)
    }
    fn count_crashes(&self, victims: &[CrashVictim], at_ms: i64) -> StoreResult<Vec<u32>> {
        self.inner.count_crashes(victims, at_ms)
    }
    fn request_abort(&self, id: &str, reason: &str) -> StoreResult<bool> {
        self.inner.request_abort(id, reason)
    }
    fn events(&self, id: &str) -> StoreResult<Vec<EventRecord>> {
        self.inner.events(id)
    }
    fn outputs(&self, id: &str, attempt: u32) -> StoreResult<Option<LiteralMap>> {
        self.inner.outputs(id, attempt)
    }
    fn error_document(&self, id: &str, attempt: u32) -> StoreResult<Option<ErrorDocument>> {
        self.inner.error_document(id, attempt)
    }
    fn tokens(&self) -> StoreResult<Vec<TokenRow>> {
        self.inner.tokens()
    }
    fn catalog_get(&self, key: &str) -> StoreResult<Option<LiteralMap>> {
        self.inner.catalog_get(key)
    }
    fn catalog_put(&self, key: &str, outputs: &LiteralMap) -> StoreResult<()> {
        self.inner.catalog_put(key, outputs)
    }
    fn count_by_phase(&self) -> StoreResult<BTreeMap<ExecPhase, u64>> {
        self.inner.count_by_phase()
    }
    fn prune_candidates(&self, sel: &PruneSelect) -> StoreResult<Vec<PruneCandidate>> {
        self.inner.prune_candidates(sel)
    }
    fn delete_executions(&self, ids: &[String]) -> StoreResult<(Vec<String>, PrunedRows)> {
        self.inner.delete_executions(ids)
    }
    fn prune_catalog(&self, limit: usize) -> StoreResult<u64> {
        self.inner.prune_catalog(limit)
    }
    fn reclaim_space(&self, max_pages: u32) -> StoreResult<u64> {
        self.inner.reclaim_space(max_pages)
    }
    fn space(&self) -> StoreResult<StoreSpace> {
        self.inner.space()
    }
    fn oldest_terminal(&self) -> StoreResult<Option<i64>> {
        self.inner.oldest_terminal()
    }
}

/// Sizes of `kozmo.db` and its WAL.
fn db_bytes(dir: &Path) -> (u64, u64) {
    let len = |f: &str| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len());
    (len("kozmo.db"), len("kozmo.db-wal"))
}

/// Threads submitting the chunks the load paces.
const SUBMITTERS: usize = 4;

/// The sizes of a retention run.
#[derive(Debug, Clone, Copy)]
pub struct RunSize {
    /// Executions run.
    pub total: usize,
    /// Terminal executions kept (`max_executions`).
    pub keep: usize,
    /// Executions the pruner selects per round.
    pub batch: usize,
    /// Between prune passes.
    pub interval: Duration,
    /// Engine workers (0: one per core).
    pub workers: usize,
    /// Runs of each load without and with retention, alternating.
    pub pairs: usize,
}

/// Bytes this process has passed to `write` calls so far (`wchar` of
/// `/proc/self/io`; 0 where there is none): the WAL, checkpoints and
/// anything else the run writes.
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One run: `size.total` executions arriving as `load` says on a fresh
/// store; with `prune`, `size.keep` kept, the pruner every `size.interval`
/// from the moment `keep` were submitted; at most 2,048 executions active
/// at once (a sustained load, not a queue).
pub fn measure(size: RunSize, load: Load, prune: bool, pb: &ProgressBar) -> anyhow::Result<RetentionPoint> {
    let RunSize {
        total,
        keep,
        batch,
        interval,
        workers,
        pairs: _,
    } = size;
    let dir = tempfile::Builder::new().prefix("kozmo-bench-retention-").tempdir()?;
    let timings = Arc::new(Timings::default());
    let store = Arc::new(TimedStore {
        inner: SqliteStore::open(&dir.path().join("kozmo.db"), Durability::Full)?,
        timings: timings.clone(),
    });
    let plugin = BenchPlugin::new(0, true);
    let mut cfg = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        ..EngineConfig::default()
    };
    if workers > 0 {
        cfg.workers = workers;
    }
    let resources = ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>;
    let timed = Arc::new(TimedPlugin {
        inner: plugin.clone(),
        timings: timings.clone(),
        returned: Mutex::new(Default::default()),
    });
    let engine = Engine::start(cfg, store.clone(), Arc::new(OnlyPlugin(timed)), resources)
        .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
    let policy = RetentionConfig {
        keep: "forever".into(),
        max_executions: Some(keep as u64),
        interval: "forever".into(),
        batch,
        ..Default::default()
    }
    .policy()
    .map_err(anyhow::Error::msg)?;
    let retention = Retention::start(engine.clone(), policy, None);

    let started = Instant::now();
    let in_flight = 4 * 512;
    // Paced: chunks of about 2 ms of arrivals.
    let chunk = match load {
        Load::Full => 512,
        Load::Paced(rate) => ((rate / 500.0) as usize).clamp(8, 512),
    };
    let mut measured_from: Option<(Instant, u64)> = None;
    let mut written_from = 0;
    let spec = bench_spec();
    let sample = |n: usize, t: f64| {
        let (db, wal) = db_bytes(dir.path());
        (n, t, db, wal)
    };
    let mut sizes = vec![sample(0, 0.0)];
    let sample_every = (total / 20).max(chunk);
    let mut next_sample = sample_every;
    let stop = Arc::new(AtomicBool::new(false));
    let mut pruner: Option<std::thread::JoinHandle<u64>> = None;
    // Paced: a submission answers once durable, so the pacing thread hands
    // chunks to submitters instead of waiting itself (the arrivals stay on
    // schedule whatever a commit takes).
    let (chunks, queued) = crossbeam_channel::bounded::<Vec<(Option<String>, ExecutionSpec)>>(SUBMITTERS * 2);
    let submit_error = Arc::new(Mutex::new(None::<String>));
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|_| {
            let (engine, queued, error) = (engine.clone(), queued.clone(), submit_error.clone());
            std::thread::spawn(move || {
                for items in queued {
                    for r in engine.submit_batch(items) {
                        if let Err(e) = r {
                            lock(&error).get_or_insert(e.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    let mut submitted = 0;
    while submitted < total {
        if submitted >= keep && measured_from.is_none() {
            // The store holds `keep`: from here on, latencies count and
            // (with `prune`) the pruner runs.
            timings.recording.store(true, Ordering::SeqCst);
            measured_from = Some((Instant::now(), plugin.finalized()));
            written_from = bytes_written();
        }
        if prune && measured_from.is_some() && pruner.is_none() {
            let (r, stop, t) = (retention.clone(), stop.clone(), timings.clone());
            pruner = Some(std::thread::spawn(move || {
                let mut pruned = 0;
                while !stop.load(Ordering::SeqCst) {
                    t.pruning.store(true, Ordering::SeqCst);
                    match r.background_pass() {
                        Ok(rep) => pruned += rep.executions,
                        Err(e) => log::error!("bench retention pass: {e}"),
                    }
                    t.pruning.store(false, Ordering::SeqCst);
                    let until = Instant::now() + interval;
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                pruned
            }));
        }
        while submitted as u64 - plugin.finalized() > in_flight as u64 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Load::Paced(rate) = load {
            let due = started + Duration::from_secs_f64(submitted as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let n = chunk.min(total - submitted);
        let items = (0..n)
            .map(|i| (Some(format!("r{:08}", submitted + i)), spec.clone()))
            .collect();
        if load == Load::Full {
            // The in-flight bound paces it: submit here, as the load did.
            for r in engine.submit_batch(items) {
                r.map_err(|e| anyhow::anyhow!("submit: {e}"))?;
            }
        } else if chunks.send(items).is_err() {
            break;
        }
        submitted += n;
        if submitted >= next_sample || submitted == total {
            sizes.push(sample(submitted, started.elapsed().as_secs_f64()));
            next_sample += sample_every;
            pb.set_message(format!("retention: {submitted}/{total} submitted"));
        }
    }
    drop(chunks);
    for s in submitters {
        let _ = s.join();
    }
    if let Some(e) = lock(&submit_error).take() {
        anyhow::bail!("submit: {e}");
    }
    while (plugin.finalized() as usize) < total {
        std::thread::sleep(Duration::from_millis(10));
    }
    timings.recording.store(false, Ordering::SeqCst);
    let written_per_execution = bytes_written().saturating_sub(written_from) as f64 / (total - keep).max(1) as f64;
    let rate = measured_from.map_or(0.0, |(t, done)| {
        (plugin.finalized() - done) as f64 / t.elapsed().as_secs_f64().max(1e-9)
    });
    stop.store(true, Ordering::SeqCst);
    let mut pruned = pruner.map(|h| h.join().unwrap_or(0)).unwrap_or(0);
    // The background pruner's next passes after the load: what the store
    // settles at (the first removes what is left past the limit and keeps
    // the pages it freed, the next finds nothing to remove and gives them
    // back).
    for _ in 0..3 {
        if !prune {
            break;
        }
        let rep = retention.background_pass().map_err(anyhow::Error::msg)?;
        pruned += rep.executions;
        if rep.executions == 0 && rep.db_bytes_reclaimed == 0 {
            break;
        }
    }
    // Let the background checkpoints fold the WAL in before the last sample.
    std::thread::sleep(Duration::from_millis(300));
    sizes.push(sample(total, started.elapsed().as_secs_f64()));
    let left: u64 = store.count_by_phase()?.values().sum();
    let seconds = started.elapsed().as_secs_f64();
    retention.stop();
    engine.shutdown(Duration::from_secs(10));
    Ok(RetentionPoint {
        load,
        rate,
        total,
        keep,
        batch,
        sizes,
        steps: timings.steps.latencies(),
        commits: timings.commits.latencies(),
        syncs: timings.syncs.latencies(),
        statements: timings.statements.latencies(),
        written_per_execution,
        pruned,
        left,
        seconds,
    })
}

/// Share of the full rate (the baseline run's) at which the paced load
/// submits.
pub const PACED_SHARE: f64 = 0.5;

/// One load, run without and with retention (`RunSize::pairs` times).
pub struct LoadPair {
    /// Without retention, in the pair of the median ratio.
    pub base: RetentionPoint,
    /// With retention, in that pair.
    pub pruned: RetentionPoint,
    /// Each pair's step commit p99 ratio, in the order they ran.
    pub ratios: Vec<f64>,
    /// Each baseline's rate (executions/s finished).
    pub base_rates: Vec<f64>,
}

impl LoadPair {
    fn measure(size: RunSize, load: Load, pb: &ProgressBar) -> anyhow::Result<LoadPair> {
        let mut pairs = Vec::new();
        for _ in 0..size.pairs.max(1) {
            let base = measure(size, load, false, pb)?;
            let pruned = measure(size, load, true, pb)?;
            pairs.push((pair_ratio(&base, &pruned), base, pruned));
        }
        let ratios: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let base_rates = pairs.iter().map(|p| p.1.rate).collect();
        // The pair of the median ratio (the lower middle one of an even
        // count) is the one shown.
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
        let (_, base, pruned) = pairs.swap_remove(order[(order.len() - 1) / 2]);
        Ok(LoadPair {
            base,
            pruned,
            ratios,
            base_rates,
        })
    }

    /// Step commit p99 during prune passes / p99 without retention, the
    /// median over the pairs (goal ≤ 1.5).
    pub fn ratio(&self) -> f64 {
        pair_ratio(&self.base, &self.pruned)
    }

    /// The median of the baselines' rates.
    pub fn base_rate(&self) -> f64 {
        let mut r = self.base_rates.clone();
        r.sort_by(f64::total_cmp);
        r.get(r.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
    }

    /// The figures as Markdown (sizes over time, latencies).
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let (b, p) = (&self.base, &self.pruned);
        let mut s = String::new();
        let load = match p.load {
            Load::Full => "at the full rate the store takes".to_string(),
            Load::Paced(rate) => format!("paced at {rate:.0}/s"),
        };
        let _ = writeln!(
            s,
            "{} executions {load}; with retention: `max_executions = {}`, batches of {}, {} pruned, {} left; \
             {:.0} / {:.0} executions/s finished without / with retention; {:.1} / {:.1} s.\n",
            p.total, p.keep, p.batch, p.pruned, p.left, b.rate, p.rate, b.seconds, p.seconds
        );
        let _ = writeln!(
            s,
            "| executions submitted | kozmo.db without retention | with retention | its WAL |\n|---:|---:|---:|---:|"
        );
        let mb = |x: u64| x as f64 / 1e6;
        for (i, (n, _, db, wal)) in p.sizes.iter().enumerate() {
            let without = b.sizes.get(i).map_or("".to_string(), |x| format!("{:.1} MB", mb(x.2)));
            let after = if i + 1 == p.sizes.len() {
                " (after the last passes)"
            } else {
                ""
            };
            let _ = writeln!(s, "| {n}{after} | {without} | {:.1} MB | {:.1} MB |", mb(*db), mb(*wal));
        }
        let cell = |x: (usize, f64, f64)| format!("{} / {:.2} / {:.2} ms", x.0, x.1, x.2);
        let _ = writeln!(
            s,
            "\n| latency (n / p50 / p99) | without retention | with retention: during passes | between passes | p99 during / without |\n|---|---|---|---|---:|"
        );
        for (what, lb, lp) in [
            (
                "step commit (a step's result → its execution's next call)",
                &b.steps,
                &p.steps,
            ),
            (
                "store transaction (ask for the writer → durable)",
                &b.commits,
                &p.commits,
            ),
            (
                "its statements (ask for the writer → `COMMIT` done)",
                &b.statements,
                &p.statements,
            ),
            ("a WAL sync (`fdatasync`)", &b.syncs, &p.syncs),
        ] {
            let _ = writeln!(
                s,
                "| {what} | {} | {} | {} | {:.2}× |",
                cell(lb.without),
                cell(lp.during),
                cell(lp.without),
                lp.during.2 / lb.without.2
            );
        }
        let _ = writeln!(
            s,
            "\nBytes written per execution run (WAL, checkpoints): {:.0} without retention, {:.0} with it.",
            b.written_per_execution, p.written_per_execution
        );
        let each: Vec<String> = self.ratios.iter().map(|r| format!("{r:.2}×")).collect();
        let pairs = match each.len() {
            1 => "one pair".to_string(),
            n => format!(
                "the median of {n} pairs run one after the other: {} (the tables above are the median pair's)",
                each.join(", ")
            ),
        };
        let _ = writeln!(
            s,
            "\nstep commit p99 during pruning / without: {:.2}× (goal ≤ 1.5×: {}); {pairs}",
            self.ratio(),
            if self.ratio() <= 1.5 { "met" } else { "not met" },
        );
        s
    }
}

/// A pair's step commit p99 during passes / without retention.
fn pair_ratio(base: &RetentionPoint, pruned: &RetentionPoint) -> f64 {
    pruned.steps.during.2 / base.steps.without.2
}

/// Both loads: the full rate, then [`PACED_SHARE`] of the rate the full
/// baseline finished executions at.
pub struct RetentionRun {
    /// Executions as fast as the store takes them.
    pub full: LoadPair,
    /// Executions at a share of that rate.
    pub paced: LoadPair,
}

impl RetentionRun {
    /// Runs both loads, each without and with retention.
    pub fn measure(size: RunSize, pb: &ProgressBar) -> anyhow::Result<RetentionRun> {
        let full = LoadPair::measure(size, Load::Full, pb)?;
        let rate = (full.base_rate() * PACED_SHARE).max(100.0);
        let paced = LoadPair::measure(size, Load::Paced(rate), pb)?;
        Ok(RetentionRun { full, paced })
    }

    /// Both loads as Markdown.
    pub fn markdown(&self) -> String {
        format!(
            "### At the full rate\n\n{}\n### Paced at {:.0} % of that rate\n\n{}",
            self.full.markdown(),
            PACED_SHARE * 100.0,
            self.paced.markdown()
        )
    }
}
