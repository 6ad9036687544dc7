//! The engine's counters and histograms: atomics the hot path bumps
//! without a lock, and [`EngineStats`], their snapshot. The daemon encodes
//! a snapshot with prometheus-client at each scrape (one exposition with
//! the plugins' metrics); this crate writes no exposition text.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::resources::NamespaceUsage;
use crate::StoreDegraded;

/// Upper bounds (seconds) of the step latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0,
];

/// Upper bounds (seconds) of the store commit latency histogram (a commit
/// of a store with syncs costs an fsync: around a millisecond and up).
pub const COMMIT_LATENCY_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0,
];

/// A histogram of durations over fixed bounds, lock-free.
pub(crate) struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// One count per bound, then the `+Inf` one (`N + 1` entries).
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            counts: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self.bounds.iter().position(|b| s <= *b).unwrap_or(N);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(b, n)| (b, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The engine's live counters.
pub(crate) struct Stats {
    pub(crate) rounds: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) leaked_tokens: AtomicU64,
    pub(crate) unchanged_rounds: AtomicU64,
    /// How long one step took (plugin call included).
    pub(crate) step_latency: Histogram<{ LATENCY_BUCKETS.len() }>,
    /// How long one store transaction took to commit (its sync).
    pub(crate) commit_latency: Histogram<{ COMMIT_LATENCY_BUCKETS.len() }>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            rounds: AtomicU64::new(0),
            handler_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            leaked_tokens: AtomicU64::new(0),
            unchanged_rounds: AtomicU64::new(0),
            step_latency: Histogram::new(&LATENCY_BUCKETS),
            commit_latency: Histogram::new(&COMMIT_LATENCY_BUCKETS),
        }
    }
}

impl Stats {
    pub(crate) fn observe_latency(&self, d: Duration) {
        self.step_latency.observe(d);
    }

    /// A snapshot with the scheduler's `(queued, in flight, active)`
    /// counts and what the store and its health report.
    pub(crate) fn snapshot(
        &self,
        (queue_depth, in_flight, active): (usize, usize, usize),
        executions_by_phase: BTreeMap<String, u64>,
        store_errors_total: Vec<(String, u64)>,
        store_degraded: Option<StoreDegraded>,
        resources: Vec<NamespaceUsage>,
    ) -> EngineStats {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            rounds_total: n(&self.rounds),
            handler_errors_total: n(&self.handler_errors),
            panics_total: n(&self.panics),
            commits_total: n(&self.commits),
            commit_batches_total: n(&self.batches),
            leaked_tokens_released_total: n(&self.leaked_tokens),
            unchanged_rounds_total: n(&self.unchanged_rounds),
            queue_depth,
            in_flight,
            active,
            executions_by_phase,
            step_latency: self.step_latency.snapshot(),
            commit_latency: self.commit_latency.snapshot(),
            store_errors_total,
            store_degraded,
            resources,
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations in that bucket alone — not
    /// cumulative); the last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
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
    /// Latency of one step.
    pub step_latency: HistogramSnapshot,
    /// Latency of one store transaction's commit, by the committer (a store
    /// without syncs, written by the workers themselves, is not timed).
    pub commit_latency: HistogramSnapshot,
    /// Failed store writes by kind (`full`, `read_only`, `other`).
    pub store_errors_total: Vec<(String, u64)>,
    /// Set while store writes fail (cleared by the next successful write).
    pub store_degraded: Option<StoreDegraded>,
    /// Each resource namespace: quota, tokens in use, executions waiting.
    pub resources: Vec<NamespaceUsage>,
}
