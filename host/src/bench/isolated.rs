//! Isolation costs: P4 (one no-op `handle` round trip through an isolated
//! plugin against a raw pipe round trip of the same bytes to another
//! process) and engine rounds/s with the no-op fixture
//! isolated, next to the same library loaded in the daemon.
//!
//! Both use `libkozmo_fixture_noop` from the plugin directory (build it
//! with `cargo build --release -p kozmo-fixture-noop`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_interface::testing::TestTaskContext;
use kozmo_interface::{PhaseInfo, Plugin, Transition};
use kozmo_isolation_protocol::{encode_frame, Call, Frame, Outcome};

use crate::isolation::IsolationConfig;
use crate::loader::{self, LoaderConfig, LoaderServices};
use kozmo_engine::model::ExecutionSpec;
use kozmo_engine::store::MemoryStore;

/// The library both measurements load.
pub const NOOP_LIBRARY: &str = "libkozmo_fixture_noop.so";

/// P4.
#[derive(Debug, Clone)]
pub struct RoundTripPoint {
    /// Mean of one isolated no-op `handle`, in nanoseconds.
    pub isolated_ns: f64,
    /// Mean of one raw round trip of the same bytes, in nanoseconds.
    pub raw_ns: f64,
    /// Calls timed on each side.
    pub calls: u64,
    /// Bytes sent per call (the `Call` frame).
    pub request_bytes: usize,
    /// Bytes answered per call (the `Done` frame).
    pub response_bytes: usize,
}

impl RoundTripPoint {
    /// isolated / raw.
    pub fn ratio(&self) -> f64 {
        self.isolated_ns / self.raw_ns
    }
}

/// Engine rounds/s with the no-op plugin, isolated and in the daemon.
#[derive(Debug, Clone)]
pub struct IsolatedRoundsPoint {
    /// Executions in flight.
    pub in_flight: usize,
    /// Rounds/s with the plugin in a child process.
    pub isolated: f64,
    /// Rounds/s with the same library loaded in the daemon.
    pub in_process: f64,
    /// Length of each measured window.
    pub seconds: f64,
    /// Engine workers.
    pub workers: usize,
}

/// Where the no-op library is, if `dir` has it.
pub fn noop_library(dir: &Path) -> Option<PathBuf> {
    Some(dir.join(NOOP_LIBRARY)).filter(|p| p.is_file())
}

/// Loads the `noop` entry of `library`, in a child process if `isolated`.
pub fn load_noop(library: &Path, isolated: bool) -> anyhow::Result<Arc<dyn Plugin>> {
    let config = LoaderConfig {
        plugins_dir: library.parent().unwrap_or(Path::new(".")).to_path_buf(),
        isolation: IsolationConfig {
            plugins: if isolated { vec!["noop".into()] } else { Vec::new() },
            ..IsolationConfig::default()
        },
        ..LoaderConfig::default()
    };
    let loaded = loader::check_files(
        &[library.to_path_buf()],
        &config,
        &LoaderServices::offline("in kozmo bench"),
    )
    .map_err(|report| anyhow::anyhow!("{}: {report}", library.display()))?;
    loaded
        .get("noop")
        .map(|p| p.plugin.clone())
        .ok_or_else(|| anyhow::anyhow!("{} has no noop plugin", library.display()))
}

/// P4: `calls` sequential no-op handles through the isolated plugin, then
/// `calls` raw pipe round trips of the same frames.
pub fn round_trip(library: &Path, calls: u64) -> anyhow::Result<RoundTripPoint> {
    let plugin = load_noop(library, true)?;
    let ctx = TestTaskContext::new();
    for _ in 0..calls.min(1000) {
        plugin.handle(&ctx)?;
    }
    let start = Instant::now();
    for _ in 0..calls {
        plugin.handle(&ctx)?;
    }
    let isolated_ns = start.elapsed().as_nanos() as f64 / calls as f64;

    let mut request = Vec::new();
    encode_frame(&Frame::Call(Call::Handle { entry: "noop".into() }), &mut request)?;
    // The answer exactly as the child encodes the no-op's result.
    let transition = Transition::ephemeral(PhaseInfo::running(1, None));
    let outcome = match crate::isolation::wire::plain_transition(&transition) {
        Some(plain) => Outcome::HandledPlain(plain),
        None => Outcome::Handled(Ok(serde_json::to_string(&transition)?)),
    };
    let mut response = Vec::new();
    encode_frame(&Frame::Done(outcome), &mut response)?;
    let raw_ns = raw_round_trip(&request, &response, calls)?;
    Ok(RoundTripPoint {
        isolated_ns,
        raw_ns,
        calls,
        request_bytes: request.len(),
        response_bytes: response.len(),
    })
}

/// Mean of `calls` raw pipe round trips of the same bytes: the call frame
/// and the answer frame, written together to `cat` (another process,
/// started with exec like the plugin's child) and read back.
fn raw_round_trip(request: &[u8], response: &[u8], calls: u64) -> anyhow::Result<f64> {
    let mut cat = std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start cat for the raw pipe round trip: {e}"))?;
    let (mut to, mut from) = (cat.stdin.take().expect("piped"), cat.stdout.take().expect("piped"));
    let bytes = [request, response].concat();
    let mut back = vec![0u8; bytes.len()];
    let mut once = || -> std::io::Result<()> {
        to.write_all(&bytes)?;
        from.read_exact(&mut back)
    };
    for _ in 0..calls.min(1000) {
        once()?;
    }
    let start = Instant::now();
    for _ in 0..calls {
        once()?;
    }
    let ns = start.elapsed().as_nanos() as f64 / calls as f64;
    drop(to);
    cat.wait()?;
    Ok(ns)
}

/// Rounds/s of an engine on the in-memory store whose `n` executions all
/// run `plugin`: the no-op reports Running v1 every round, so each
/// execution is re-evaluated by its 1 ms resync timer; the rounds of a
/// `seconds` window after a warm-up are counted.
fn engine_rounds(plugin: Arc<dyn Plugin>, n: usize, seconds: f64, workers: usize) -> anyhow::Result<f64> {
    let dir = tempfile::Builder::new().prefix("kozmo-bench-iso-").tempdir()?;
    let engine = super::engine::start_engine(
        dir.path(),
        Arc::new(MemoryStore::new()),
        plugin,
        Duration::from_millis(1),
        workers,
    )?;
    let spec: ExecutionSpec = serde_json::from_str(r#"{"template": {"type": "noop"}}"#)?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let items = chunk.iter().map(|i| (Some(format!("i{i:07}")), spec.clone())).collect();
        for r in engine.submit_batch(items) {
            r.map_err(|e| anyhow::anyhow!("submit: {e}"))?;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = engine.stats().rounds_total;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let rounds = engine.stats().rounds_total - before;
    let elapsed = start.elapsed().as_secs_f64();
    engine.shutdown(Duration::from_secs(10));
    Ok(rounds as f64 / elapsed)
}

/// Isolated rounds/s, and the in-process figure of the same run.
pub fn rounds(library: &Path, n: usize, seconds: f64, workers: usize) -> anyhow::Result<IsolatedRoundsPoint> {
    let isolated = engine_rounds(load_noop(library, true)?, n, seconds, workers)?;
    let in_process = engine_rounds(load_noop(library, false)?, n, seconds, workers)?;
    Ok(IsolatedRoundsPoint {
        in_flight: n,
        isolated,
        in_process,
        seconds,
        workers,
    })
}
