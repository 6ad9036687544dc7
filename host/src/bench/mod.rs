//! `kozmo bench`: the measurements behind BENCHMARKS.md, as a library.
//!
//! * [`engine`]: P2 (rounds/s with the in-memory store at N executions in
//!   flight), P3 (durable completions/s on SQLite), P6 (resident memory per
//!   in-flight execution) and the submit → terminal latency, all with a
//!   native no-op plugin ([`BenchPlugin`]) so the figures are the engine's own
//!   cost;
//! * [`sqlite_raw`]: the P3 reference, the same rows written with plain
//!   rusqlite in batched transactions on the same file settings;
//! * [`load`]: P5, load + check of plugin libraries and directories;
//! * [`isolated`]: P4 (an isolated no-op round trip against a raw pipe
//!   round trip) and engine rounds/s with the no-op plugin isolated;
//! * [`http`]: the HTTP API on loopback (1/16/64 connections, the batch
//!   endpoint, the 1-connection p50) against the in-process engine;
//! * [`retention`]: a sustained load with `max_executions` retention:
//!   database size over time, group commit p99 with and without pruning;
//! * [`wakeups`]: the `shell` part (shell tasks through the real daemon
//!   against `xargs`, and one task's submit → Succeeded) and the `signal`
//!   part (a plugin's `signal()` to its next round);
//! * [`async_api`]: the `async` part (10,000 `rest` tasks on a local job
//!   service through the real daemon: read QPS against its limit, daemon CPU);
//! * [`report`]: machine facts, the P1 figures `cargo bench` left behind,
//!   the results table (terminal and Markdown) and the throughput plot.

pub mod async_api;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod isolated;
pub mod load;
pub mod postgres;
pub mod report;
pub mod retention;
pub mod sqlite_raw;
pub mod wakeups;

pub use engine::BenchPlugin;

/// Resident memory of this process in bytes (`VmRSS` of `/proc/self/status`),
/// if the platform has it.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `q`-quantile (0..=1) of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().unwrap() > 0);
        }
    }
}
