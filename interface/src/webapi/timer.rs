//! One thread that wakes executions at given instants (a poll that is due,
//! a rate-limit slot, a delete retry): `SignalAsync::signal` of the
//! execution, so its next round runs then and not at the daemon's resync.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::SignalAsync;

/// Wake-ups by key (one pending wake-up per key: the earliest asked for).
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use kozmo_interface::testing::SignalCounter;
/// use kozmo_interface::webapi::WakeUps;
///
/// let wake = WakeUps::new();
/// let signal = Arc::new(SignalCounter::default());
/// wake.at("exec-1", Instant::now() + Duration::from_millis(20), signal.clone());
/// wake.at("exec-1", Instant::now() + Duration::from_millis(10), signal.clone()); // replaces: earlier
/// assert_eq!(wake.pending(), 1);
/// std::thread::sleep(Duration::from_millis(300));
/// assert_eq!(signal.count(), 1);
/// assert_eq!(wake.pending(), 0);
/// ```
pub struct WakeUps {
    shared: Arc<Shared>,
    thread: OnceLock<()>,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    by_time: BTreeSet<(Instant, u64, String)>,
    by_key: HashMap<String, (Instant, u64, Arc<dyn SignalAsync>)>,
    seq: u64,
}

impl Default for WakeUps {
    fn default() -> Self {
        Self::new()
    }
}

impl WakeUps {
    /// No wake-ups yet; the thread starts with the first.
    ///
    /// ```
    /// assert_eq!(kozmo_interface::webapi::WakeUps::new().pending(), 0);
    /// ```
    pub fn new() -> Self {
        WakeUps {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                changed: Condvar::new(),
            }),
            thread: OnceLock::new(),
        }
    }

    /// Signals `signal` at `at`, unless a wake-up for `key` at or before
    /// `at` is pending already (a later one is moved up).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::{Duration, Instant};
    /// use kozmo_interface::testing::SignalCounter;
    /// use kozmo_interface::webapi::WakeUps;
    /// let wake = WakeUps::new();
    /// wake.at("k", Instant::now() + Duration::from_secs(60), Arc::new(SignalCounter::default()));
    /// assert_eq!(wake.pending(), 1);
    /// ```
    pub fn at(&self, key: &str, at: Instant, signal: Arc<dyn SignalAsync>) {
        self.thread.get_or_init(|| {
            let shared = self.shared.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("kozmo-webapi-wakeups".into())
                .spawn(move || run(&shared))
            {
                log::warn!("webapi: no wake-up thread ({e}); polls run at the daemon's resync");
            }
        });
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, seq, _)) = q.by_key.get(key) {
            if *old <= at {
                return;
            }
            let (old, seq) = (*old, *seq);
            q.by_time.remove(&(old, seq, key.to_string()));
        }
        q.seq += 1;
        let seq = q.seq;
        q.by_time.insert((at, seq, key.to_string()));
        q.by_key.insert(key.to_string(), (at, seq, signal));
        drop(q);
        self.shared.changed.notify_one();
    }

    /// Wake-ups not yet fired.
    ///
    /// ```
    /// assert_eq!(kozmo_interface::webapi::WakeUps::default().pending(), 0);
    /// ```
    pub fn pending(&self) -> usize {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()).by_key.len()
    }
}

fn run(shared: &Shared) {
    let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(first) = q.by_time.first().cloned() {
            if first.0 > now {
                break;
            }
            q.by_time.remove(&first);
            if let Some((_, _, signal)) = q.by_key.remove(&first.2) {
                due.push(signal);
            }
        }
        if !due.is_empty() {
            drop(q);
            for s in due {
                s.signal();
            }
            q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let wait = q
            .by_time
            .first()
            .map(|f| f.0.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(3600));
        q = shared
            .changed
            .wait_timeout(q, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}
