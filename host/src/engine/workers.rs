//! The worker pool's bookkeeping: which worker runs which step since when,
//! so the watchdog can add a spare worker when every worker is stuck inside
//! a slow plugin call (a slow plugin must not stall the other executions).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Busy workers and the pool size.
#[derive(Default)]
pub(crate) struct Pool {
    busy: Mutex<HashMap<usize, (String, Instant)>>,
    total: AtomicUsize,
}

impl Pool {
    /// Counts a new worker; returns its index.
    pub(crate) fn add(&self) -> usize {
        self.total.fetch_add(1, Ordering::SeqCst)
    }

    /// Workers in the pool.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Worker `w` starts a step of execution `id`.
    pub(crate) fn begin(&self, w: usize, id: &str) {
        self.lock().insert(w, (id.to_string(), Instant::now()));
    }

    /// Worker `w` finished its step.
    pub(crate) fn end(&self, w: usize) {
        self.lock().remove(&w);
    }

    /// When every worker has been inside one step for longer than
    /// `stall_after`: the executions and how long their steps have run.
    pub(crate) fn stalled(&self, stall_after: Duration) -> Option<Vec<(String, Duration)>> {
        let busy = self.lock();
        if busy.is_empty() || busy.len() < self.total() {
            return None;
        }
        let now = Instant::now();
        let steps: Vec<(String, Duration)> = busy.values().map(|(id, t)| (id.clone(), now - *t)).collect();
        steps.iter().all(|(_, d)| *d >= stall_after).then_some(steps)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, (String, Instant)>> {
        crate::sync::lock(&self.busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_when_every_worker_is_busy_long_enough() {
        let p = Pool::default();
        let (a, b) = (p.add(), p.add());
        assert!(p.stalled(Duration::ZERO).is_none(), "idle pool");
        p.begin(a, "x");
        assert!(p.stalled(Duration::ZERO).is_none(), "one worker is free");
        p.begin(b, "y");
        let stuck = p.stalled(Duration::ZERO).unwrap();
        assert_eq!(stuck.len(), 2);
        assert!(p.stalled(Duration::from_secs(60)).is_none(), "not long enough yet");
        p.end(a);
        assert!(p.stalled(Duration::ZERO).is_none());
    }
}
