//! The pruner: one pass removes every terminal execution past retention,
//! one batch at a time; each batch's rows are deleted by the engine's
//! committer in slices spread over its group commits (`EngineHandle::prune`),
//! so the engine keeps a single writer and a batch costs no sync of its own. Then
//! catalog entries no stored execution can have written, then free pages go
//! back to the file system (`incremental_vacuum`, in small steps with a
//! pause as long as each). A background thread runs a pass every `interval`;
//! `POST /v1/prune` runs one on demand (one pass at a time).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kozmo_interface::metrics::{Counter, Gauge, MetricsScope};
use serde::Serialize;

use super::Policy;
use crate::model::now_ms;
use crate::store::PrunedRows;
use crate::sync::lock;
use crate::{EngineHandle, PruneInFlight};

/// Batches a pass keeps in flight (selected and sent, not yet durable).
const IN_FLIGHT: usize = 2;

/// Pages given back per `incremental_vacuum` step (4 MiB of 4 KiB pages).
const RECLAIM_PAGES: u32 = 1024;
/// Most executions a dry run lists.
const DRY_RUN_MAX: usize = 1_000_000;
/// Most ids a report names.
const REPORT_IDS: usize = 100;

/// What one pass removed (or, dry, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Nothing was removed: this is what would be.
    pub dry_run: bool,
    /// Executions removed.
    pub executions: u64,
    /// Rows removed per table (dry run: not counted).
    pub rows: PrunedRows,
    /// Data store directories removed (inputs, outputs, raw outputs).
    pub blob_dirs: u64,
    /// Bytes of the files in them.
    pub blob_bytes: u64,
    /// Bytes the database file gave back to the file system.
    pub db_bytes_reclaimed: u64,
    /// Earliest last update among the removed executions (ms since the epoch).
    pub oldest_removed_ms: Option<i64>,
    /// Latest last update among them.
    pub newest_removed_ms: Option<i64>,
    /// Last update of the oldest terminal execution kept.
    pub oldest_kept_ms: Option<i64>,
    /// Store transactions that deleted executions.
    pub batches: u64,
    /// How long the pass took.
    pub elapsed_ms: u64,
    /// The first removed ids (at most 100).
    pub ids: Vec<String>,
}

/// The metrics of retention (`kozmo_retention_*`).
struct RetentionMetrics {
    executions: Counter,
    bytes: Counter,
    oldest_age: Gauge,
}

/// Retention in a running daemon: the background pruner and on-demand passes.
pub struct Retention {
    engine: EngineHandle,
    policy: Policy,
    metrics: Option<RetentionMetrics>,
    /// One pass at a time.
    pass: Mutex<()>,
    stopping: AtomicBool,
    wake: (Mutex<bool>, Condvar),
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Retention {
    /// Retention over `engine`, its metrics registered in `scope`
    /// (`executions_pruned_total`, `bytes_reclaimed_total`,
    /// `oldest_kept_age_seconds`); starts the background pruner if the
    /// policy has an interval.
    pub fn start(engine: EngineHandle, policy: Policy, scope: Option<&dyn MetricsScope>) -> Arc<Retention> {
        let metrics = scope.and_then(|s| {
            Some(RetentionMetrics {
                executions: s
                    .counter("executions_pruned", "Terminal executions removed by retention.")
                    .ok()?,
                bytes: s
                    .counter(
                        "bytes_reclaimed",
                        "Bytes retention freed: data store files removed and database pages given back.",
                    )
                    .ok()?,
                oldest_age: s
                    .gauge(
                        "oldest_kept_age_seconds",
                        "Seconds since the oldest terminal execution kept finished (at the last pass).",
                    )
                    .ok()?,
            })
        });
        let r = Arc::new(Retention {
            engine,
            policy,
            metrics,
            pass: Mutex::new(()),
            stopping: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            thread: Mutex::new(None),
        });
        if let Some(every) = r.policy.interval {
            let me = r.clone();
            match std::thread::Builder::new()
                .name("kozmo-retention".into())
                .spawn(move || me.background(every))
            {
                Ok(h) => *lock(&r.thread) = Some(h),
                Err(e) => log::error!("retention: cannot start the pruner thread ({e}); only `kozmo prune` prunes"),
            }
        }
        r
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn background(&self, every: Duration) {
        loop {
            match self.background_pass() {
                Ok(r) if r.executions > 0 => log::info!(
                    "retention: removed {} executions ({} blob bytes, {} database bytes given back) in {} ms",
                    r.executions,
                    r.blob_bytes,
                    r.db_bytes_reclaimed,
                    r.elapsed_ms
                ),
                Ok(_) => {}
                Err(e) => log::warn!("retention: pass failed, trying again in {every:?}: {e}"),
            }
            let (m, cv) = &self.wake;
            let guard = lock(m);
            let (guard, _) = cv
                .wait_timeout_while(guard, every, |stop| !*stop)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
        }
    }

    /// Stops the background pruner (a pass in progress ends after its
    /// current batch).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        *lock(&self.wake.0) = true;
        self.wake.1.notify_all();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }

    /// One pass: with `older_than`, every phase's keep time is replaced by
    /// it (the count limit still applies); `dry_run` only reports.
    /// Gives every free page back to the file system (what `kozmo prune`
    /// asks for).
    pub fn run_pass(&self, older_than: Option<Duration>, dry_run: bool) -> Result<PruneReport, String> {
        self.pass_keeping(older_than, dry_run, false)
    }

    /// A pass of the background pruner: like [`Retention::run_pass`] with the
    /// policy's limits, but it keeps as many free pages as its own deletes
    /// freed. The load that finished those executions since the last pass
    /// will fill about as many pages again before the next one: giving them
    /// back only to grow the file again would cost the writer twice (an
    /// `incremental_vacuum` holds it, and syncs, while step commits wait).
    /// Once the load falls, a pass frees less, and what it keeps is
    /// given back by the next pass.
    pub fn background_pass(&self) -> Result<PruneReport, String> {
        self.pass_keeping(None, false, true)
    }

    fn pass_keeping(
        &self,
        older_than: Option<Duration>,
        dry_run: bool,
        keep_freed: bool,
    ) -> Result<PruneReport, String> {
        let _one = lock(&self.pass);
        let started = Instant::now();
        let mut report = PruneReport {
            dry_run,
            ..Default::default()
        };
        let e = |e: crate::EngineError| e.to_string();
        if dry_run {
            let mut sel = self.policy.select(now_ms(), older_than);
            sel.limit = DRY_RUN_MAX;
            let cands = self.engine.prune_candidates(&sel).map_err(e)?;
            let b = self.engine.prune(&cands, true).map_err(e)?;
            report.add_batch(&b);
            report.batches = 0;
        } else {
            let free_before = self.engine.store_space().map_err(e)?.free_bytes;
            // Two batches in flight: while the committer deletes one, the
            // next is selected and sent, so it never runs out of slices.
            let mut in_flight: VecDeque<PruneInFlight> = VecDeque::new();
            let sent_all = self.delete_batches(older_than, &mut in_flight, &mut report);
            // Whatever ended it, a batch still in flight is the committer's
            // to delete: wait for it so the report and the metrics count
            // what it removed.
            while let Some(sent) = in_flight.pop_front() {
                if let Ok(b) = self.engine.prune_wait(sent) {
                    self.count(&mut report, &b);
                }
            }
            sent_all?;
            loop {
                let n = self.engine.prune_catalog(self.policy.batch).map_err(e)?;
                report.rows.catalog += n;
                if n == 0 || self.stopping.load(Ordering::SeqCst) {
                    break;
                }
            }
            let space = self.engine.store_space().map_err(e)?;
            let reserve = if keep_freed {
                space.free_bytes.saturating_sub(free_before)
            } else {
                0
            };
            let mut to_give = space.free_bytes.saturating_sub(reserve);
            while to_give > 0 && !self.stopping.load(Ordering::SeqCst) {
                let t = Instant::now();
                let pages = (to_give / space.page_bytes.max(1)).clamp(1, RECLAIM_PAGES as u64) as u32;
                let n = self.engine.reclaim_space(pages).map_err(e)?;
                to_give = to_give.saturating_sub(n);
                if n == 0 {
                    break;
                }
                report.db_bytes_reclaimed += n;
                if let Some(m) = &self.metrics {
                    m.bytes.inc_by(n);
                }
                std::thread::sleep(t.elapsed().max(Duration::from_millis(1)));
            }
        }
        report.oldest_kept_ms = self.engine.oldest_terminal().map_err(e)?;
        if let Some(m) = &self.metrics {
            let age = report
                .oldest_kept_ms
                .map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
            m.oldest_age.set(age);
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Selects batches and hands them to the committer, `IN_FLIGHT` at a
    /// time, until nothing is left to select (or the pruner stops) and
    /// every batch sent was waited for; on an error, what is still in
    /// flight is left in `in_flight`.
    fn delete_batches(
        &self,
        older_than: Option<Duration>,
        in_flight: &mut VecDeque<PruneInFlight>,
        report: &mut PruneReport,
    ) -> Result<(), String> {
        let e = |e: crate::EngineError| e.to_string();
        // False once a batch removed nothing (its executions are gone
        // some other way): what is in flight is waited for, no more.
        let mut selecting = true;
        // The newest (in selection order) of the batches sent: those in
        // flight are still stored, and the next batch starts past them.
        let mut sent_up_to: Option<(i64, String)> = None;
        loop {
            let mut cands = Vec::new();
            if selecting && !self.stopping.load(Ordering::SeqCst) {
                let mut sel = self.policy.select(now_ms(), older_than);
                sel.after = sent_up_to.clone();
                cands = self.engine.prune_candidates(&sel).map_err(e)?;
                if let Some(last) = cands.iter().map(|c| (c.updated_at_ms, &c.id)).max() {
                    sent_up_to = Some((last.0, last.1.clone()));
                }
            }
            if !cands.is_empty() {
                let sent = self.engine.prune_send(&cands).map_err(e)?;
                in_flight.push_back(sent);
                if in_flight.len() < IN_FLIGHT {
                    continue;
                }
            }
            let Some(oldest) = in_flight.pop_front() else {
                return Ok(());
            };
            let b = self.engine.prune_wait(oldest).map_err(e)?;
            selecting &= !b.ids.is_empty();
            self.count(report, &b);
            // The batch rode in group commits; a breath before the next.
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Adds a batch the committer deleted to `report` and the metrics.
    fn count(&self, report: &mut PruneReport, b: &crate::PruneBatch) {
        report.add_batch(b);
        if let Some(m) = &self.metrics {
            m.executions.inc_by(b.ids.len() as u64);
            m.bytes.inc_by(b.blob_bytes);
        }
    }
}

impl PruneReport {
    fn add_batch(&mut self, b: &crate::PruneBatch) {
        self.executions += b.ids.len() as u64;
        self.rows.add(&b.rows);
        self.blob_dirs += b.blob_dirs;
        self.blob_bytes += b.blob_bytes;
        self.batches += 1;
        if let Some((lo, hi)) = b.updated_range_ms {
            self.oldest_removed_ms = Some(self.oldest_removed_ms.map_or(lo, |x| x.min(lo)));
            self.newest_removed_ms = Some(self.newest_removed_ms.map_or(hi, |x| x.max(hi)));
        }
        let room = REPORT_IDS.saturating_sub(self.ids.len());
        self.ids.extend(b.ids.iter().take(room).cloned());
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        *lock(&self.wake.0) = true;
        self.wake.1.notify_all();
    }
}
