//! What committing a transaction costs lately, for the committer's window
//! ([`Store::commit_cost`](super::Store::commit_cost)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A moving average (7/8 old, 1/8 new) of commit (sync) times, each capped
/// at [`CommitCost::CAP`]: a stalled disk or server must not stall the
/// engine more.
#[derive(Debug, Default)]
pub struct CommitCost {
    nanos: AtomicU64,
}

impl CommitCost {
    /// Largest cost reported.
    pub const CAP: Duration = Duration::from_millis(10);

    /// Adds one commit's time.
    pub fn observe(&self, d: Duration) {
        let sample = d.min(Self::CAP).as_nanos() as u64;
        let old = self.nanos.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { (old * 7 + sample) / 8 };
        self.nanos.store(new, Ordering::Relaxed);
    }

    /// The average so far (zero before the first commit).
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_commits_and_a_stall_counts_as_the_cap() {
        let c = CommitCost::default();
        assert_eq!(c.get(), Duration::ZERO);
        c.observe(Duration::from_millis(2));
        assert_eq!(c.get(), Duration::from_millis(2));
        c.observe(Duration::from_secs(5));
        assert_eq!(c.get(), (Duration::from_millis(2) * 7 + CommitCost::CAP) / 8);
    }
}
