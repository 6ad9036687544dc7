//! Wake-ups: how soon a round follows the event it waits for.
//!
//! * `shell`: the real daemon (`kozmo serve`, this binary, default resync
//!   of 5 s) with the shell plugin from the plugin directory runs `tasks`
//!   `sh -c true` tasks submitted in one batch, timed from the request to
//!   the last Succeeded, against `seq tasks | xargs -P<workers> -n1 sh -c
//!   true` in the same run (goal ≥ 0.5); then one such task at a time,
//!   submit → Succeeded p50 (goal ≤ 20 ms: far below the resync, because
//!   the plugin signals when its command ends).
//! * `signal`: an engine on SQLite (the daemon's store) with a native
//!   plugin whose own thread signals its execution a few milliseconds after
//!   each round; the time from `signal()` to the start of the next `handle`,
//!   p50/p99 (goal p50 ≤ 1 ms). The resync is an hour: only the signal can
//!   start the round.

use crate::bench::daemon::BenchDaemon;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kozmo_interface::{PhaseInfo, Plugin, Result as PResult, TaskExecutionContext, Transition};
use serde_json::{json, Value};

use kozmo_engine::model::{ExecPhase, ExecutionSpec};
use kozmo_store_sqlite::{Durability, SqliteStore};

/// The shell plugin's library, looked for in the plugin directory.
pub const SHELL_LIBRARY: &str = "libkozmo_plugin_shell.so";

/// What the `shell` part measured.
#[derive(Debug, Clone)]
pub struct ShellPoint {
    /// Tasks in the throughput run.
    pub tasks: usize,
    /// Daemon workers, and xargs' `-P`.
    pub workers: usize,
    /// Through the daemon: batch request to the last Succeeded.
    pub daemon_seconds: f64,
    /// `xargs -P<workers>` of the same command (mean of a run before and
    /// one after the daemon's).
    pub xargs_seconds: f64,
    /// One task at a time, submit → Succeeded, sorted, seconds.
    pub latencies: Vec<f64>,
}

impl ShellPoint {
    /// Daemon rate / xargs rate (goal ≥ 0.5).
    pub fn ratio(&self) -> f64 {
        self.xargs_seconds / self.daemon_seconds
    }
    /// Submit → Succeeded p50, seconds (goal ≤ 20 ms).
    pub fn p50(&self) -> f64 {
        super::quantile(&self.latencies, 0.5)
    }
}

/// What the `signal` part measured.
#[derive(Debug, Clone)]
pub struct SignalPoint {
    /// `signal()` → next `handle`, sorted, seconds.
    pub latencies: Vec<f64>,
}

impl SignalPoint {
    /// p50, seconds (goal ≤ 1 ms).
    pub fn p50(&self) -> f64 {
        super::quantile(&self.latencies, 0.5)
    }
    /// p99, seconds.
    pub fn p99(&self) -> f64 {
        super::quantile(&self.latencies, 0.99)
    }
}

/// Both parts as a Markdown section body (tables and what they measure).
pub fn markdown(shell: Option<&Result<ShellPoint, String>>, signal: Option<&Result<SignalPoint, String>>) -> String {
    let ms = |s: f64| format!("{:.2} ms", s * 1000.0);
    let mut out = String::from("| measurement | result | goal | met |\n|---|---|---|---|\n");
    match shell {
        None => {}
        Some(Err(e)) => out.push_str(&format!("| shell | not measured: {e} | | |\n")),
        Some(Ok(s)) => {
            out.push_str(&format!(
                "| shell: {} `sh -c true` tasks through the daemon / `xargs -P{}` | {:.2} ({:.0}/s vs {:.0}/s) | ≥ 0.5 | {} |\n",
                s.tasks,
                s.workers,
                s.ratio(),
                s.tasks as f64 / s.daemon_seconds,
                s.tasks as f64 / s.xargs_seconds,
                yes_no(s.ratio() >= 0.5)
            ));
            out.push_str(&format!(
                "| shell: one task submit → Succeeded, default configuration (resync 5 s), p50 / p99 of {} | {} / {} | p50 ≤ 20 ms | {} |\n",
                s.latencies.len(),
                ms(s.p50()),
                ms(super::quantile(&s.latencies, 0.99)),
                yes_no(s.p50() <= 0.020)
            ));
        }
    }
    match signal {
        None => {}
        Some(Err(e)) => out.push_str(&format!("| signal | not measured: {e} | | |\n")),
        Some(Ok(s)) => out.push_str(&format!(
            "| signal: plugin `signal()` → start of its next round (SQLite, resync 1 h), p50 / p99 of {} | {} / {} | p50 ≤ 1 ms | {} |\n",
            s.latencies.len(),
            ms(s.p50()),
            ms(s.p99()),
            yes_no(s.p50() <= 0.001)
        )),
    }
    out
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

/// The shell plugin's library in `dir`, if there.
pub fn shell_library(dir: &Path) -> Option<PathBuf> {
    Some(dir.join(SHELL_LIBRARY)).filter(|p| p.is_file())
}

/// The daemon of the shell part, with an HTTP agent of its own.
struct Daemon {
    /// Kept for its process (stopped when dropped).
    _process: BenchDaemon,
    base: String,
    agent: ureq::Agent,
}

impl Daemon {
    fn start(library: &Path, workers: usize) -> anyhow::Result<Daemon> {
        let daemon = BenchDaemon::start("kozmo-bench-shell-", library, SHELL_LIBRARY, workers, &[])?;
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        Ok(Daemon {
            base: daemon.base.clone(),
            _process: daemon,
            agent,
        })
    }

    fn phase(&self, id: &str) -> anyhow::Result<String> {
        let v: Value = self
            .agent
            .get(&format!("{}/v1/executions/{id}", self.base))
            .call()?
            .into_json()?;
        Ok(v["phase"].as_str().unwrap_or_default().to_string())
    }

    /// Waits until `id` is terminal, looking every `poll`; an end other
    /// than Succeeded is an error.
    fn wait_succeeded(&self, id: &str, poll: Duration, deadline: Instant) -> anyhow::Result<()> {
        loop {
            match self.phase(id)?.as_str() {
                "Succeeded" => return Ok(()),
                p @ ("Failed" | "Aborted") => anyhow::bail!("shell task {id} ended {p}"),
                _ if Instant::now() > deadline => anyhow::bail!("shell task {id} not done in time"),
                _ => std::thread::sleep(poll),
            }
        }
    }
}

fn true_task(id: &str) -> Value {
    json!({"execution_id": id, "type": "shell", "container": {"command": ["sh", "-c", "true"]}})
}

/// The `shell` part.
pub fn shell(
    library: &Path,
    tasks: usize,
    samples: usize,
    workers: usize,
    pb: &ProgressBar,
) -> anyhow::Result<ShellPoint> {
    // The reference runs before and after the daemon, and counts as the
    // mean of the two: a machine whose speed drifts during the part moves
    // both sides alike.
    pb.set_message(format!("shell: xargs -P{workers} of {tasks} `sh -c true`"));
    let xargs_before = xargs(tasks, workers)?;

    let daemon = Daemon::start(library, workers)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    pb.set_message(format!("shell: {tasks} tasks through the daemon"));
    let ids: Vec<String> = (0..tasks).map(|i| format!("t{i:06}")).collect();
    let start = Instant::now();
    for chunk in ids.chunks(1000) {
        let body = Value::Array(chunk.iter().map(|id| true_task(id)).collect());
        daemon
            .agent
            .post(&format!("{}/v1/executions:batch", daemon.base))
            .send_json(body)?;
    }
    // Looked at every 5 ms: a tighter loop of GETs takes CPU from the
    // daemon on a small machine, and costs the figure at most 5 ms.
    for id in &ids {
        daemon.wait_succeeded(id, Duration::from_millis(5), deadline)?;
    }
    let daemon_seconds = start.elapsed().as_secs_f64();
    pb.set_message(format!("shell: xargs -P{workers} of {tasks} `sh -c true`, again"));
    let xargs_seconds = (xargs_before + xargs(tasks, workers)?) / 2.0;

    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        pb.set_message(format!("shell: one task at a time {i}/{samples}"));
        let id = format!("one{i:06}");
        let start = Instant::now();
        daemon
            .agent
            .post(&format!("{}/v1/executions", daemon.base))
            .send_json(true_task(&id))?;
        daemon.wait_succeeded(&id, Duration::from_micros(500), deadline)?;
        latencies.push(start.elapsed().as_secs_f64());
    }
    latencies.sort_by(f64::total_cmp);
    Ok(ShellPoint {
        tasks,
        workers,
        daemon_seconds,
        xargs_seconds,
        latencies,
    })
}

/// `seq tasks | xargs -P<workers> -n1 sh -c true`, seconds.
fn xargs(tasks: usize, workers: usize) -> anyhow::Result<f64> {
    let input: String = (0..tasks).map(|i| format!("{i}\n")).collect();
    let start = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P", &workers.to_string(), "-n1", "sh", "-c", "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run xargs for the shell reference: {e}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(input.as_bytes())?;
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "xargs exited with {status}");
    Ok(start.elapsed().as_secs_f64())
}

/// A native plugin that measures its own wake-ups: each round notes how
/// long ago its last signal was sent, then a thread of its own signals
/// again after [`SIGNAL_DELAY`], until `samples` are taken (then Success).
struct SignalPlugin {
    samples: usize,
    shared: Arc<Mutex<Wakeups>>,
}

#[derive(Default)]
struct Wakeups {
    sent: Option<Instant>,
    latencies: Vec<f64>,
}

/// How long after a round its signal is sent: long enough for the round to
/// be home (not in flight), so the latency is the wake-up alone.
const SIGNAL_DELAY: Duration = Duration::from_millis(3);

impl Plugin for SignalPlugin {
    fn id(&self) -> &str {
        "bench-signal"
    }
    fn handle(&self, ctx: &dyn TaskExecutionContext) -> PResult<Transition> {
        let now = Instant::now();
        let mut w = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sent) = w.sent.take() {
            w.latencies.push(now.duration_since(sent).as_secs_f64());
        }
        if w.latencies.len() >= self.samples {
            return Ok(Transition::ephemeral(PhaseInfo::success(None)));
        }
        let shared = self.shared.clone();
        let signal = ctx.task_refresh_indicator();
        std::thread::spawn(move || {
            std::thread::sleep(SIGNAL_DELAY);
            shared.lock().unwrap_or_else(|e| e.into_inner()).sent = Some(Instant::now());
            signal.signal();
        });
        // The same phase and version every round: nothing changes, so only
        // the signal (not "run again at once") brings the next round.
        Ok(Transition::ephemeral(PhaseInfo::running(1, None)))
    }
}

/// The `signal` part: `samples` wake-ups of one execution.
pub fn signal(samples: usize, workers: usize, pb: &ProgressBar) -> anyhow::Result<SignalPoint> {
    pb.set_message(format!("signal: {samples} wake-ups"));
    let dir = tempfile::Builder::new().prefix("kozmo-bench-signal-").tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("kozmo.db"), Durability::Full)?);
    let shared = Arc::new(Mutex::new(Wakeups::default()));
    let plugin: Arc<dyn Plugin> = Arc::new(SignalPlugin {
        samples,
        shared: shared.clone(),
    });
    let engine = super::engine::start_engine(dir.path(), store, plugin, Duration::from_secs(3600), workers)?;
    let spec: ExecutionSpec = serde_json::from_str(r#"{"template": {"type": "bench-signal"}}"#)?;
    engine
        .submit(Some("signalled".into()), spec)
        .map_err(|e| anyhow::anyhow!("submit: {e}"))?;
    // Each sample takes SIGNAL_DELAY plus the wake-up; a stalled run is an error.
    let deadline = Instant::now() + SIGNAL_DELAY * samples as u32 * 4 + Duration::from_secs(30);
    loop {
        let v = engine.get("signalled").map_err(|e| anyhow::anyhow!("get: {e}"))?;
        if v.phase.is_terminal() {
            anyhow::ensure!(
                v.phase == ExecPhase::Succeeded,
                "the signal bench execution ended {:?}",
                v.phase
            );
            break;
        }
        if Instant::now() > deadline {
            engine.shutdown(Duration::from_secs(5));
            anyhow::bail!("the signal bench execution stalled (a signal did not start a round)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    engine.shutdown(Duration::from_secs(10));
    let mut latencies = std::mem::take(&mut shared.lock().unwrap_or_else(|e| e.into_inner()).latencies);
    latencies.sort_by(f64::total_cmp);
    Ok(SignalPoint { latencies })
}
