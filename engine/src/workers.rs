//! The worker pool's bookkeeping: which worker runs which step since when,
//! so the watchdog can add a spare worker when every worker is stuck inside
//! a slow plugin call (a slow plugin must not stall the other executions),
//! report calls running past `call_warn_after`, and shutdown can say which
//! calls it left behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a worker runs.
#[derive(Default)]
struct Step {
    id: String,
    attempt: u32,
    /// When the step started; `None` while the worker is idle.
    since: Option<Instant>,
    /// The slow-call warning for this step was given.
    warned: bool,
}

/// One worker's current step: its own lock, so workers never wait on each
/// other to say what they run (only the watchdog and status reads read it).
#[derive(Default)]
pub(crate) struct Busy {
    step: Mutex<Step>,
}

impl Busy {
    /// The worker starts a step of execution `id`'s attempt `attempt`.
    pub(crate) fn begin(&self, id: &str, attempt: u32) {
        let mut g = crate::sync::lock(&self.step);
        g.id.clear();
        g.id.push_str(id);
        g.attempt = attempt;
        g.since = Some(Instant::now());
        g.warned = false;
    }

    /// The worker finished its step.
    pub(crate) fn end(&self) {
        crate::sync::lock(&self.step).since = None;
    }
}

/// A step in progress, as the pool reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Running {
    /// The worker's index (its call slot).
    pub(crate) worker: usize,
    /// The execution.
    pub(crate) id: String,
    /// Its attempt.
    pub(crate) attempt: u32,
    /// How long the step has run.
    pub(crate) elapsed: Duration,
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
        let mut w = crate::sync::lock(&self.workers);
        w.push(busy.clone());
        self.total.store(w.len(), Ordering::SeqCst);
        (w.len() - 1, busy)
    }

    /// Workers in the pool.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Every step in progress; `warn_after`: only those that have run that
    /// long and were not reported yet, which are marked reported.
    fn steps(&self, warn_after: Option<Duration>) -> Vec<Running> {
        let workers = crate::sync::lock(&self.workers);
        let now = Instant::now();
        let mut out = Vec::new();
        for (worker, w) in workers.iter().enumerate() {
            let mut g = crate::sync::lock(&w.step);
            let Some(since) = g.since else { continue };
            let elapsed = now - since;
            if let Some(after) = warn_after {
                if g.warned || elapsed < after {
                    continue;
                }
                g.warned = true;
            }
            out.push(Running {
                worker,
                id: g.id.clone(),
                attempt: g.attempt,
                elapsed,
            });
        }
        out
    }

    /// Every step in progress.
    pub(crate) fn running(&self) -> Vec<Running> {
        self.steps(None)
    }

    /// Steps that have run for `after` and were not reported by this call
    /// before (each is reported once).
    pub(crate) fn newly_slow(&self, after: Duration) -> Vec<Running> {
        self.steps(Some(after))
    }

    /// The step of execution `id` in progress, if any.
    pub(crate) fn step_of(&self, id: &str) -> Option<Running> {
        self.running().into_iter().find(|r| r.id == id)
    }

    /// When every worker has been inside one step for longer than
    /// `stall_after`: the executions and how long their steps have run.
    pub(crate) fn stalled(&self, stall_after: Duration) -> Option<Vec<(String, Duration)>> {
        let total = crate::sync::lock(&self.workers).len();
        let steps = self.running();
        (!steps.is_empty() && steps.len() == total && steps.iter().all(|r| r.elapsed >= stall_after))
            .then(|| steps.into_iter().map(|r| (r.id, r.elapsed)).collect())
    }
}

/// `850ms`, `12.3s`, `5m`, `5m 20s`, `2h 5m`: how long a call has run.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
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
        a.begin("x", 0);
        assert!(p.stalled(Duration::ZERO).is_none(), "one worker is free");
        b.begin("y", 0);
        let stuck = p.stalled(Duration::ZERO).unwrap();
        assert_eq!(stuck.len(), 2);
        assert!(p.stalled(Duration::from_secs(60)).is_none(), "not long enough yet");
        a.end();
        assert!(p.stalled(Duration::ZERO).is_none());
    }

    #[test]
    fn a_slow_step_is_reported_once_and_found_by_id() {
        let p = Pool::default();
        let (i, a) = p.add();
        a.begin("x", 3);
        assert!(p.newly_slow(Duration::from_secs(60)).is_empty(), "not slow yet");
        let slow = p.newly_slow(Duration::ZERO);
        assert_eq!((slow[0].worker, slow[0].id.as_str(), slow[0].attempt), (i, "x", 3));
        assert!(p.newly_slow(Duration::ZERO).is_empty(), "reported once");
        assert_eq!(p.step_of("x").unwrap().worker, i);
        a.begin("x", 4);
        assert_eq!(p.newly_slow(Duration::ZERO).len(), 1, "a new step is reported again");
        a.end();
        assert!(p.step_of("x").is_none());
    }

    #[test]
    fn durations_read_like_an_operator_would_write_them() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(12_300)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(320)), "5m 20s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h 5m");
    }
}
