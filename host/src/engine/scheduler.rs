//! The work queue: which execution runs its next step, and when.
//!
//! An execution is queued when it is new, when its plugin signals, when its
//! previous step changed something (run again at once), and by a resync
//! timer whose delay doubles for every step that reported no change (up to a
//! maximum). An execution is never queued twice nor run while in flight: a
//! signal that arrives while a step runs marks it dirty and it is queued
//! again as soon as that step's commit is durable.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

/// When an execution should run again after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Something changed: run again now.
    Now,
    /// Nothing changed (or the step failed): resync later, with backoff.
    Later,
    /// Terminal: forget it.
    Done,
}

#[derive(Default)]
struct Entry {
    queued: bool,
    in_flight: bool,
    dirty: bool,
    no_change: u32,
    timer_gen: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    timers: BinaryHeap<Reverse<(Instant, u64, String)>>,
    queued: usize,
    in_flight: usize,
    stopping: bool,
}

/// The scheduler.
pub struct Scheduler {
    inner: Mutex<Inner>,
    timer_cv: Condvar,
    idle_cv: Condvar,
    work: Sender<String>,
    base: Duration,
    max: Duration,
}

impl Scheduler {
    /// A scheduler feeding `work`, resyncing after `base` (doubling up to `max`).
    pub fn new(work: Sender<String>, base: Duration, max: Duration) -> Self {
        Scheduler {
            inner: Mutex::new(Inner::default()),
            timer_cv: Condvar::new(),
            idle_cv: Condvar::new(),
            work,
            base,
            max: max.max(base),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    fn push(&self, g: &mut Inner, id: &str) {
        if g.stopping {
            return;
        }
        let Some(e) = g.entries.get_mut(id) else { return };
        if e.in_flight {
            e.dirty = true;
        } else if !e.queued {
            e.queued = true;
            e.timer_gen += 1;
            g.queued += 1;
            let _ = self.work.send(id.to_string());
        }
    }

    /// Tracks a new (or recovered) execution and queues it.
    pub fn add(&self, id: &str) {
        let mut g = self.lock();
        g.entries.entry(id.to_string()).or_default();
        self.push(&mut g, id);
    }

    /// Queues a known execution (signals, abort requests). Unknown or
    /// terminal executions are ignored.
    pub fn enqueue(&self, id: &str) {
        let mut g = self.lock();
        self.push(&mut g, id);
    }

    /// A worker starts a step; false if the execution must not run now.
    pub fn take(&self, id: &str) -> bool {
        let mut g = self.lock();
        if g.stopping {
            return false;
        }
        let Some(e) = g.entries.get_mut(id) else { return false };
        if !e.queued || e.in_flight {
            return false;
        }
        e.queued = false;
        e.in_flight = true;
        e.dirty = false;
        g.queued -= 1;
        g.in_flight += 1;
        true
    }

    /// The step of `id` is durable; schedule what follows.
    pub fn done(&self, id: &str, next: Next) {
        let mut g = self.lock();
        let Some(e) = g.entries.get_mut(id) else { return };
        if e.in_flight {
            e.in_flight = false;
            g.in_flight -= 1;
        }
        let e = g.entries.get_mut(id).expect("present");
        match next {
            Next::Done => {
                g.entries.remove(id);
            }
            Next::Now => {
                e.no_change = 0;
                self.push(&mut g, id);
            }
            Next::Later => {
                if e.dirty {
                    e.dirty = false;
                    self.push(&mut g, id);
                } else {
                    let shift = e.no_change.min(16);
                    e.no_change = e.no_change.saturating_add(1);
                    let delay = self.base.saturating_mul(1u32 << shift).min(self.max);
                    e.timer_gen += 1;
                    let gen = e.timer_gen;
                    g.timers.push(Reverse((Instant::now() + delay, gen, id.to_string())));
                    self.timer_cv.notify_one();
                }
            }
        }
        if g.in_flight == 0 {
            self.idle_cv.notify_all();
        }
    }

    /// Runs due timers until [`stop`](Self::stop); the timer thread's body.
    pub fn run_timers(&self) {
        let mut g = self.lock();
        loop {
            if g.stopping {
                return;
            }
            let now = Instant::now();
            let mut wait = Duration::from_secs(3600);
            while let Some(Reverse((due, _, _))) = g.timers.peek() {
                if *due > now {
                    wait = *due - now;
                    break;
                }
                let Reverse((_, gen, id)) = g.timers.pop().expect("peeked");
                if g.entries.get(&id).is_some_and(|e| e.timer_gen == gen) {
                    self.push(&mut g, &id);
                }
            }
            g = self.timer_cv.wait_timeout(g, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Stops queuing; running steps finish.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.timer_cv.notify_all();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Waits until no step is in flight (or `timeout`); true if idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        while g.in_flight > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .idle_cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// (queued, in flight, tracked).
    pub fn depth(&self) -> (usize, usize, usize) {
        let g = self.lock();
        (g.queued, g.in_flight, g.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_queued_twice_and_dirty_requeues_after_done() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = Scheduler::new(tx, Duration::from_millis(5), Duration::from_millis(20));
        s.add("a");
        s.enqueue("a");
        assert_eq!(rx.try_iter().count(), 1);
        assert!(s.take("a"));
        s.enqueue("a");
        assert_eq!(rx.try_iter().count(), 0, "in flight: only marked dirty");
        s.done("a", Next::Later);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec!["a".to_string()]);
        assert!(s.take("a"));
        s.done("a", Next::Done);
        s.enqueue("a");
        assert_eq!(rx.try_iter().count(), 0);
        assert_eq!(s.depth(), (0, 0, 0));
    }

    #[test]
    fn no_change_backs_off_through_the_timer() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = std::sync::Arc::new(Scheduler::new(tx, Duration::from_millis(10), Duration::from_millis(40)));
        let t = {
            let s = s.clone();
            std::thread::spawn(move || s.run_timers())
        };
        s.add("a");
        let _ = rx.recv().unwrap();
        let mut gaps = Vec::new();
        for _ in 0..4 {
            assert!(s.take("a"));
            let start = Instant::now();
            s.done("a", Next::Later);
            let _ = rx.recv_timeout(Duration::from_secs(2)).unwrap();
            gaps.push(start.elapsed());
        }
        assert!(gaps[0] >= Duration::from_millis(10));
        assert!(gaps[2] >= Duration::from_millis(40), "{gaps:?}");
        s.stop();
        t.join().unwrap();
    }
}
