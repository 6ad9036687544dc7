//! The work queue: which execution runs its next step, and when.
//!
//! An execution is queued when it is new, when its plugin signals, when its
//! previous step changed something (run again at once), and by a resync
//! timer whose delay doubles for every step that reported no change (up to a
//! maximum). An execution is never queued twice nor run while in flight: a
//! signal that arrives while a step runs marks it dirty and it is queued
//! again as soon as that step's commit is durable.
//!
//! The execution itself (a [`Job`]) travels: from its entry through the work
//! queue to a worker, with its step's commit to the committer, and home
//! again with [`Scheduler::done`]; one map lookup and one lock per step on
//! the scheduler's side, nothing copied.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

/// When an execution should run again after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Something changed: run again now.
    Now,
    /// Nothing changed (or the step failed): resync later, with backoff.
    Resync,
    /// Terminal: forget it.
    Done,
}

/// What the scheduler hands to workers: the execution itself travels
/// through the queue, the worker and the committer, and comes back with
/// [`Scheduler::done`]. While it is out, its entry keeps only flags.
pub trait Job: Send {
    /// What the job shares with its entry while it is out.
    type Shared: JobShared;
    /// The execution id.
    fn id(&self) -> &str;
    /// The part shared with the scheduler's entry.
    fn shared(&self) -> &Arc<Self::Shared>;
    /// Consecutive steps that changed nothing (the resync backoff), kept
    /// by the job so a step that changed something needs no entry lookup.
    fn no_change(&mut self) -> &mut u32;
}

/// What the scheduler needs of a job's shared part.
pub trait JobShared: Send + Sync {
    /// Set when a signal comes after the job was taken by its worker.
    fn dirty(&self) -> &AtomicBool;
}

/// A work item.
pub enum Work<T> {
    /// Run the next step of this job.
    Run(T),
    /// A worker stops.
    Stop,
}

struct Entry<T: Job> {
    /// The job, when it is not queued, running or committing.
    job: Option<T>,
    shared: Arc<T::Shared>,
    timer_gen: u64,
}

struct Inner<T: Job> {
    entries: HashMap<Arc<str>, Entry<T>>,
    timers: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    /// Jobs out of their entries (queued, running or committing).
    out: usize,
    stopping: bool,
}

/// The scheduler.
pub struct Scheduler<T: Job> {
    inner: Mutex<Inner<T>>,
    /// Jobs sent to the queue and not yet taken by a worker.
    queued: AtomicUsize,
    stopping: AtomicBool,
    timer_cv: Condvar,
    idle_cv: Condvar,
    work: Sender<Work<T>>,
    base: Duration,
    max: Duration,
}

impl<T: Job> Scheduler<T> {
    /// A scheduler feeding `work`, resyncing after `base` (doubling up to `max`).
    pub fn new(work: Sender<Work<T>>, base: Duration, max: Duration) -> Self {
        Scheduler {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                timers: BinaryHeap::new(),
                out: 0,
                stopping: false,
            }),
            queued: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            timer_cv: Condvar::new(),
            idle_cv: Condvar::new(),
            work,
            base,
            max: max.max(base),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        crate::sync::lock(&self.inner)
    }

    /// Queues `id` if its job is home; marks it dirty if it is out.
    fn push(&self, g: &mut Inner<T>, id: &str) {
        if g.stopping {
            return;
        }
        let Some(e) = g.entries.get_mut(id) else { return };
        match e.job.take() {
            None => e.shared.dirty().store(true, Ordering::Release),
            Some(job) => {
                e.timer_gen += 1;
                g.out += 1;
                self.send(job);
            }
        }
    }

    fn send(&self, job: T) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        // The receiver lives as long as the engine's core.
        let _ = self.work.send(Work::Run(job));
    }

    /// Tracks a new (or recovered) execution and queues it; a job whose id
    /// is already tracked is dropped.
    pub fn add(&self, job: T) {
        let mut g = self.lock();
        if g.entries.contains_key(job.id()) {
            return;
        }
        let id: Arc<str> = Arc::from(job.id());
        let shared = job.shared().clone();
        g.entries.insert(
            id.clone(),
            Entry {
                job: Some(job),
                shared,
                timer_gen: 0,
            },
        );
        self.push(&mut g, &id);
    }

    /// Queues a known execution (signals, abort requests) and resets its
    /// resync backoff: something happened. Unknown or terminal executions
    /// are ignored.
    pub fn enqueue(&self, id: &str) {
        let mut g = self.lock();
        if let Some(job) = g.entries.get_mut(id).and_then(|e| e.job.as_mut()) {
            *job.no_change() = 0;
        }
        self.push(&mut g, id);
    }

    /// Runs `f` on the job of `id` (`None` while it is out: queued,
    /// running or committing) and its shared part; `None` if unknown.
    pub fn with_job<R>(&self, id: &str, f: impl FnOnce(Option<&mut T>, &T::Shared) -> R) -> Option<R> {
        let mut g = self.lock();
        let e = g.entries.get_mut(id)?;
        Some(f(e.job.as_mut(), &e.shared))
    }

    /// A worker took `job` from the queue; false if it must not run (the
    /// scheduler stops: the job goes home).
    pub fn take(&self, job: &T) -> bool {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        // Signals until now are handled by this step.
        job.shared().dirty().store(false, Ordering::Release);
        !self.stopping.load(Ordering::Acquire)
    }

    /// The steps of these jobs are durable (or were not run); schedule what
    /// follows. A job that runs again at once goes straight back to the
    /// queue (it stays out: its entry has nothing to change, and any timer
    /// was invalidated when it was queued); the others under one lock.
    pub fn done_all(&self, jobs: impl IntoIterator<Item = (T, Next)>) {
        let mut g = None;
        for (mut job, next) in jobs {
            if next == Next::Now && !self.stopping.load(Ordering::Acquire) {
                *job.no_change() = 0;
                self.send(job);
                continue;
            }
            let g = g.get_or_insert_with(|| self.lock());
            self.done_locked(g, job, next);
        }
        if let Some(g) = g {
            if g.out == 0 {
                self.idle_cv.notify_all();
            }
        }
    }

    /// The step of `job` is durable; schedule what follows.
    pub fn done(&self, job: T, next: Next) {
        self.done_all(std::iter::once((job, next)));
    }

    fn done_locked(&self, g: &mut Inner<T>, mut job: T, next: Next) {
        let stopping = g.stopping;
        let Some(e) = g.entries.get_mut(job.id()) else {
            return;
        };
        g.out -= 1;
        let dirty = e.shared.dirty().swap(false, Ordering::AcqRel);
        match next {
            Next::Done => {
                g.entries.remove(job.id());
            }
            Next::Now if !stopping => {
                *job.no_change() = 0;
                e.timer_gen += 1;
                g.out += 1;
                self.send(job);
            }
            Next::Resync if dirty && !stopping => {
                *job.no_change() = 0;
                e.timer_gen += 1;
                g.out += 1;
                self.send(job);
            }
            Next::Now => e.job = Some(job),
            Next::Resync => {
                let n = job.no_change();
                let shift = (*n).min(16);
                *n = n.saturating_add(1);
                let delay = self.base.saturating_mul(1u32 << shift).min(self.max);
                e.timer_gen += 1;
                let gen = e.timer_gen;
                let key = g.entries.get_key_value(job.id()).map(|(k, _)| k.clone());
                if let Some(e) = g.entries.get_mut(job.id()) {
                    e.job = Some(job);
                }
                if let Some(key) = key {
                    g.timers.push(Reverse((Instant::now() + delay, gen, key)));
                    self.timer_cv.notify_one();
                }
            }
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
        self.stopping.store(true, Ordering::Release);
        self.timer_cv.notify_all();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Waits until every job is home (or `timeout`); true if idle. After
    /// [`stop`](Self::stop), queued jobs come home without running.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        while g.out > 0 {
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
        let queued = self.queued.load(Ordering::Relaxed).min(g.out);
        (queued, g.out - queued, g.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Flags(AtomicBool);
    impl JobShared for Flags {
        fn dirty(&self) -> &AtomicBool {
            &self.0
        }
    }
    struct J(&'static str, Arc<Flags>, u32);
    impl Job for J {
        type Shared = Flags;
        fn id(&self) -> &str {
            self.0
        }
        fn shared(&self) -> &Arc<Flags> {
            &self.1
        }
        fn no_change(&mut self) -> &mut u32 {
            &mut self.2
        }
    }
    fn job(id: &'static str) -> J {
        J(id, Arc::default(), 0)
    }
    fn ids(rx: &crossbeam_channel::Receiver<Work<J>>) -> Vec<&'static str> {
        rx.try_iter()
            .map(|w| match w {
                Work::Run(j) => j.0,
                Work::Stop => "stop",
            })
            .collect()
    }
    fn recv(rx: &crossbeam_channel::Receiver<Work<J>>) -> J {
        match rx.recv_timeout(Duration::from_secs(2)).unwrap() {
            Work::Run(j) => j,
            Work::Stop => panic!("stop"),
        }
    }

    #[test]
    fn never_queued_twice_and_dirty_requeues_after_done() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = Scheduler::new(tx, Duration::from_millis(5), Duration::from_millis(20));
        s.add(job("a"));
        s.add(job("a"));
        s.enqueue("a");
        let j = recv(&rx);
        assert_eq!(ids(&rx).len(), 0, "queued once");
        assert!(s.take(&j), "a signal before the step is handled by it");
        s.done(j, Next::Resync);
        assert_eq!(ids(&rx).len(), 0, "not dirty: waits for its timer");
        s.enqueue("a");
        let j = recv(&rx);
        assert!(s.take(&j));
        s.enqueue("a");
        assert_eq!(ids(&rx).len(), 0, "in flight: only marked dirty");
        assert_eq!(s.depth(), (0, 1, 1));
        s.done(j, Next::Resync);
        let j = recv(&rx);
        assert_eq!(j.0, "a");
        assert!(s.take(&j));
        s.done(j, Next::Done);
        s.enqueue("a");
        assert_eq!(ids(&rx).len(), 0);
        assert_eq!(s.depth(), (0, 0, 0));
        assert!(s.wait_idle(Duration::ZERO));
    }

    #[test]
    fn a_signal_resets_the_resync_backoff() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = Scheduler::new(tx, Duration::from_secs(60), Duration::from_secs(600));
        s.add(job("a"));
        let mut j = recv(&rx);
        assert!(s.take(&j));
        j.2 = 5; // five rounds that changed nothing: the next resync is far
        s.done(j, Next::Resync);
        assert_eq!(s.with_job("a", |j, _| j.map(|j| j.2)), Some(Some(6)));
        s.enqueue("a");
        let mut j = recv(&rx);
        assert_eq!(j.2, 0, "a signal to a waiting job resets its backoff");
        assert!(s.take(&j));
        j.2 = 5;
        s.enqueue("a"); // while in flight: dirty
        s.done(j, Next::Resync);
        let j = recv(&rx);
        assert_eq!(j.2, 0, "a signal during the step resets it too");
    }

    #[test]
    fn stopping_sends_jobs_home() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = Scheduler::new(tx, Duration::from_millis(5), Duration::from_millis(20));
        s.add(job("a"));
        let j = recv(&rx);
        s.stop();
        assert!(!s.take(&j));
        s.done(j, Next::Now);
        assert!(s.wait_idle(Duration::ZERO));
        assert_eq!(s.with_job("a", |j, _| j.is_some()), Some(true));
        s.enqueue("a");
        assert_eq!(ids(&rx).len(), 0);
    }

    #[test]
    fn no_change_backs_off_through_the_timer() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = Arc::new(Scheduler::new(tx, Duration::from_millis(10), Duration::from_millis(40)));
        let t = {
            let s = s.clone();
            std::thread::spawn(move || s.run_timers())
        };
        s.add(job("a"));
        let mut j = recv(&rx);
        let mut gaps = Vec::new();
        for _ in 0..4 {
            assert!(s.take(&j));
            let start = Instant::now();
            s.done(j, Next::Resync);
            j = recv(&rx);
            gaps.push(start.elapsed());
        }
        assert!(gaps[0] >= Duration::from_millis(10));
        assert!(gaps[2] >= Duration::from_millis(40), "{gaps:?}");
        s.stop();
        t.join().unwrap();
    }
}
