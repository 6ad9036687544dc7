//! The retention benchmark: a sustained load of short executions on SQLite
//! (`synchronous=FULL`, native no-op plugin: one Success round and a
//! Finalize step each) with `max_executions` retention, reporting the
//! database's size over time and the group commit latency with and without
//! pruning.
//!
//! Phase A (no pruning): `keep` executions fill the store, then `2 × keep` more
//! run while every group commit is timed (the baseline). Phase B: the
//! pruner runs a pass every `interval` (`max_executions = keep`), the load
//! goes on to `total`; commits are timed and tagged by whether a prune pass
//! was running. Phase A times the commits of `2 × keep` executions (~140
//! commits), so its p99 is not just its slowest commit. (Commits in phase B
//! between passes are not a baseline: under this load a pass finds more to
//! remove as soon as the last one ends, so there are none.) A commit's time is from asking the store for its
//! transaction (waiting for the writer included) to durable.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kozmo_interface::literals::LiteralMap;

use super::engine::{bench_spec, BenchPlugin};
use super::quantile;
use crate::isolation::plugin::OnlyPlugin;
use kozmo_engine::model::{
    ErrorDocument, EventRecord, EventRow, ExecPhase, ExecutionRecord, NewExecution, RoundCommit, TokenRow,
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

/// What the retention run measured.
#[derive(Debug, Clone)]
pub struct RetentionPoint {
    /// Executions run.
    pub total: usize,
    /// Terminal executions kept (`max_executions`).
    pub keep: usize,
    /// Executions per prune transaction.
    pub batch: usize,
    /// (executions submitted, seconds since start, `kozmo.db` bytes, WAL bytes).
    pub sizes: Vec<(usize, f64, u64, u64)>,
    /// Commit latency p50/p99 (ms) without pruning (phase A).
    pub baseline_ms: (f64, f64),
    /// Commits timed in phase A.
    pub baseline_commits: usize,
    /// Commit latency p50/p99 (ms) while a prune pass ran.
    pub pruning_ms: (f64, f64),
    /// Commits timed during prune passes.
    pub pruning_commits: usize,
    /// Executions pruned.
    pub pruned: u64,
    /// Executions left in the store at the end.
    pub left: u64,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl RetentionPoint {
    /// p99 during pruning / p99 without (goal ≤ 1.5).
    pub fn ratio(&self) -> f64 {
        self.pruning_ms.1 / self.baseline_ms.1
    }

    /// The figures as Markdown (a table of sizes, the latencies).
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Retention: {} executions, `max_executions = {}`, batches of {}; {:.1} s; {} pruned, {} left.\n",
            self.total, self.keep, self.batch, self.seconds, self.pruned, self.left
        );
        let _ = writeln!(s, "| executions submitted | seconds | kozmo.db | WAL file |");
        let _ = writeln!(s, "|---:|---:|---:|---:|");
        for (n, t, db, wal) in &self.sizes {
            let _ = writeln!(
                s,
                "| {n} | {t:.1} | {:.1} MB | {:.1} MB |",
                *db as f64 / 1e6,
                *wal as f64 / 1e6
            );
        }
        let _ = writeln!(
            s,
            "\n| group commit (ask for the writer → durable) | commits | p50 | p99 |\n|---|---:|---:|---:|"
        );
        let _ = writeln!(
            s,
            "| without pruning (phase A) | {} | {:.2} ms | {:.2} ms |",
            self.baseline_commits, self.baseline_ms.0, self.baseline_ms.1
        );

        let _ = writeln!(
            s,
            "| during prune passes | {} | {:.2} ms | {:.2} ms |",
            self.pruning_commits, self.pruning_ms.0, self.pruning_ms.1
        );
        let _ = writeln!(
            s,
            "\np99 during pruning / without: {:.2}× (goal ≤ 1.5×: {})",
            self.ratio(),
            if self.ratio() <= 1.5 { "met" } else { "not met" }
        );
        s
    }
}

/// Commit times, tagged by whether a prune pass was running.
#[derive(Default)]
struct Timings {
    pruning: AtomicBool,
    recording: AtomicBool,
    without: Mutex<Vec<f64>>,
    /// When each commit waiting for its sync started, oldest first.
    unsynced: Mutex<Vec<Instant>>,
    during: Mutex<Vec<f64>>,
}

impl Timings {
    fn record(&self, ms: f64) {
        if self.pruning.load(Ordering::Relaxed) {
            lock(&self.during).push(ms);
        } else if self.recording.load(Ordering::Relaxed) {
            lock(&self.without).push(ms);
        }
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
        timings.record(started.elapsed().as_secs_f64() * 1000.0);
        r
    }
    /// Timed to the end of the sync the engine runs later (durable). The
    /// engine runs one sync for every transaction waiting (the last one's):
    /// each sync ends the times of all commits made before it.
    fn commit_unsynced(self: Box<Self>) -> StoreResult<Option<PendingSync>> {
        let (started, timings) = (self.started, self.timings.clone());
        match self.inner.commit_unsynced()? {
            None => {
                timings.record(started.elapsed().as_secs_f64() * 1000.0);
                Ok(None)
            }
            Some(mut sync) => {
                lock(&timings.unsynced).push(started);
                Ok(Some(Box::new(move || {
                    let covered = lock(&timings.unsynced).len();
                    sync()?;
                    let done: Vec<Instant> = lock(&timings.unsynced).drain(..covered).collect();
                    for t in done {
                        timings.record(t.elapsed().as_secs_f64() * 1000.0);
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

fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (quantile(&v, 0.5), quantile(&v, 0.99))
}

/// Runs the retention benchmark: `total` executions, `keep` kept, the
/// pruner every `interval` deleting `batch` per transaction; at most
/// `in_flight` executions active at once (a sustained load, not a queue).
pub fn measure(
    total: usize,
    keep: usize,
    batch: usize,
    interval: Duration,
    workers: usize,
    pb: &ProgressBar,
) -> anyhow::Result<RetentionPoint> {
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
    let engine = Engine::start(cfg, store.clone(), Arc::new(OnlyPlugin(plugin.clone())), resources)
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
    let chunk = 512;
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
    let mut submitted = 0;
    while submitted < total {
        if submitted >= keep && !timings.recording.load(Ordering::Relaxed) && pruner.is_none() {
            timings.recording.store(true, Ordering::SeqCst);
        }
        if submitted >= 3 * keep.min(total / 4) && pruner.is_none() {
            // Phase B: the baseline is taken; the pruner starts.
            timings.recording.store(false, Ordering::SeqCst);
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
        let n = chunk.min(total - submitted);
        let items = (0..n)
            .map(|i| (Some(format!("r{:08}", submitted + i)), spec.clone()))
            .collect();
        for r in engine.submit_batch(items) {
            r.map_err(|e| anyhow::anyhow!("submit: {e}"))?;
        }
        submitted += n;
        if submitted >= next_sample || submitted == total {
            sizes.push(sample(submitted, started.elapsed().as_secs_f64()));
            next_sample += sample_every;
            pb.set_message(format!("retention: {submitted}/{total} submitted"));
        }
    }
    while (plugin.finalized() as usize) < total {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    let mut pruned = pruner.map(|h| h.join().unwrap_or(0)).unwrap_or(0);
    // The background pruner's next passes after the load: what the store
    // settles at (the first removes what is left past the limit and keeps
    // the pages it freed, the next finds nothing to remove and gives them
    // back).
    timings.pruning.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let rep = retention.background_pass().map_err(anyhow::Error::msg)?;
        pruned += rep.executions;
        if rep.executions == 0 && rep.db_bytes_reclaimed == 0 {
            break;
        }
    }
    timings.pruning.store(false, Ordering::SeqCst);
    // Let the background checkpoints fold the WAL in before the last sample.
    std::thread::sleep(Duration::from_millis(300));
    sizes.push(sample(total, started.elapsed().as_secs_f64()));
    let left: u64 = store.count_by_phase()?.values().sum();
    let seconds = started.elapsed().as_secs_f64();
    retention.stop();
    engine.shutdown(Duration::from_secs(10));
    let without = std::mem::take(&mut *lock(&timings.without));
    let during = std::mem::take(&mut *lock(&timings.during));
    Ok(RetentionPoint {
        total,
        keep,
        batch,
        sizes,
        baseline_commits: without.len(),
        baseline_ms: p50_p99(without),
        pruning_commits: during.len(),
        pruning_ms: p50_p99(during),
        pruned,
        left,
        seconds,
    })
}
