//! The worker pool's bookkeeping: which worker runs which step since when,
//! so the watchdog can add a spare worker when every worker is stuck inside
//! a slow plugin call (a slow plugin must not stall the other executions).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One worker's current step: its own lock, so workers never wait on each
/// other to say what they run (only the watchdog reads it).
#[derive(Default)]
pub(crate) struct Busy {
    step: Mutex<(String, Option<Instant>)>,
}

impl Busy {
    /// The worker starts a step of execution `id`.
    pub(crate) fn begin(&self, id: &str) {
        let mut g = crate::sync::lock(&self.step);
        g.0.clear();
        g.0.push_str(id);
        g.1 = Some(Instant::now());
    }

    /// The worker finished its step.
    pub(crate) fn end(&self) {
        crate::sync::lock(&self.step).1 = None;
    }
}

/// Busy workers and the pool size.
#[derive(Default)]
pub(crate) struct Pool {
    workers: Mutex<Vec<Arc<Busy>>>,
    total: AtomicUsize,
}

impl Pool {
    /// Counts a new worker; returns its index and its step record.
    pub(crate) fn add(&self) -> (usize, Arc<Busy>) {
        let busy = Arc::new(Busy::default());
        crate::sync::lock(&self.workers).push(busy.clone());
        (self.total.fetch_add(1, Ordering::SeqCst), busy)
    }

    /// Workers in the pool.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// When every worker has been inside one step for longer than
    /// `stall_after`: the executions and how long their steps have run.
    pub(crate) fn stalled(&self, stall_after: Duration) -> Option<Vec<(String, Duration)>> {
        let workers = crate::sync::lock(&self.workers);
        let now = Instant::now();
        let mut steps = Vec::with_capacity(workers.len());
        for w in workers.iter() {
            let g = crate::sync::lock(&w.step);
            let since = g.1?;
            steps.push((g.0.clone(), now - since));
        }
        (!steps.is_empty() && steps.iter().all(|(_, d)| *d >= stall_after)).then_some(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_when_every_worker_is_busy_long_enough() {
        let p = Pool::default();
        let (a, b) = (p.add().1, p.add().1);
        assert_eq!(p.total(), 2);
        assert!(p.stalled(Duration::ZERO).is_none(), "idle pool");
        a.begin("x");
        assert!(p.stalled(Duration::ZERO).is_none(), "one worker is free");
        b.begin("y");
        let stuck = p.stalled(Duration::ZERO).unwrap();
        assert_eq!(stuck.len(), 2);
        assert!(p.stalled(Duration::from_secs(60)).is_none(), "not long enough yet");
        a.end();
        assert!(p.stalled(Duration::ZERO).is_none());
    }
}
