//! `async`: asynchronous (web-API) plugins at scale. The real daemon
//! (`kozmo serve`, this binary, default resync) with the bundled `rest`
//! plugin from the plugin directory drives `executions` remote jobs on the
//! local job service (`kozmo_testkit::job_service`, in this process), each
//! polled every second, under a read limit of `read_qps` (far below the
//! 1 poll/s × executions the polls ask for, so the limit is what holds
//! them back). Over a window of `seconds` after every job was created:
//!
//! * the read QPS the service saw (status requests / window), goal within
//!   5 % of `read_qps`;
//! * the daemon's CPU (user + system time of its process / window, in
//!   cores), goal below one core.

use crate::bench::daemon::BenchDaemon;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kozmo_testkit::job_service::JobService;
use serde_json::{json, Value};

/// The rest plugin's library, looked for in the plugin directory.
pub const REST_LIBRARY: &str = "libkozmo_plugin_rest.so";

/// The rest plugin's library in `dir`, if there.
pub fn rest_library(dir: &Path) -> Option<PathBuf> {
    Some(dir.join(REST_LIBRARY)).filter(|p| p.is_file())
}

/// What the part measured.
#[derive(Debug, Clone)]
pub struct AsyncPoint {
    /// Executions polling.
    pub executions: usize,
    /// The configured read limit.
    pub read_qps: f64,
    /// The poll interval asked for, seconds.
    pub poll_interval: f64,
    /// The window, seconds.
    pub seconds: f64,
    /// Status requests the service answered in the window, per second.
    pub measured_qps: f64,
    /// The daemon's CPU over the window, in cores.
    pub cpu_cores: f64,
    /// Creates the service saw (one per execution: no duplicates).
    pub creates: usize,
    /// Time to create every job, seconds.
    pub create_seconds: f64,
}

impl AsyncPoint {
    /// |measured − limit| / limit.
    pub fn qps_error(&self) -> f64 {
        (self.measured_qps - self.read_qps).abs() / self.read_qps
    }

    /// The part's table.
    pub fn markdown(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "**no**" };
        format!(
            "| measurement | result | goal | met |\n|---|---|---|---|\n\
             | read QPS, {} executions polling every {:.0} s, limit {:.0}/s | {:.1}/s ({:+.2} %) | within 5 % of the limit | {} |\n\
             | daemon CPU over the {:.0} s window | {:.2} cores | < 1 core | {} |\n\
             | creates (one per execution) | {} in {:.1} s | {} | {} |\n",
            self.executions,
            self.poll_interval,
            self.read_qps,
            self.measured_qps,
            (self.measured_qps - self.read_qps) / self.read_qps * 100.0,
            yes(self.qps_error() <= 0.05),
            self.seconds,
            self.cpu_cores,
            yes(self.cpu_cores < 1.0),
            self.creates,
            self.create_seconds,
            self.executions,
            yes(self.creates == self.executions),
        )
    }
}

/// User + system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let utime: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf with a constant name.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / tick.max(1.0))
}

fn start(library: &Path, read_qps: f64, workers: usize) -> anyhow::Result<BenchDaemon> {
    let burst = ((read_qps / 10.0).ceil() as u32).max(1);
    BenchDaemon::start(
        "kozmo-bench-async-",
        library,
        REST_LIBRARY,
        workers,
        &[
            ("RUST_LOG", "warn".into()),
            ("KOZMO_PLUGIN_REST_READ_QPS", read_qps.to_string()),
            ("KOZMO_PLUGIN_REST_READ_BURST", burst.to_string()),
            ("KOZMO_PLUGIN_REST_WRITE_QPS", "2000".into()),
            ("KOZMO_PLUGIN_REST_WRITE_BURST", "200".into()),
            ("KOZMO_PLUGIN_REST_POLL_INTERVAL_SECS", "1".into()),
        ],
    )
}

/// A rest task of a job that outlives the run.
fn job_task(id: &str, service: &str) -> Value {
    json!({
        "execution_id": id,
        "type": "rest",
        "inputs": {"base_url": service},
        "custom": {
            "create": {"url": "{{ .Inputs.base_url }}/jobs",
                       "body": "{\"key\": \"{{ .PerRetryUniqueKey }}\", \"duration_ms\": 86400000}",
                       "job_id": "$.id"},
            "status": {"url": "{{ .Inputs.base_url }}/jobs/{{ .JobId }}", "path": "$.status",
                       "running": ["RUNNING"], "succeeded": ["SUCCEEDED"], "failed": ["FAILED", "CANCELLED"]},
            "cancel": {"method": "DELETE", "url": "{{ .Inputs.base_url }}/jobs/{{ .JobId }}"}
        }
    })
}

/// The part.
pub fn measure(
    library: &Path,
    executions: usize,
    read_qps: f64,
    seconds: f64,
    workers: usize,
    pb: &ProgressBar,
) -> anyhow::Result<AsyncPoint> {
    let service = JobService::start();
    let daemon = start(library, read_qps, workers)?;
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
    pb.set_message(format!("async: submitting {executions} rest tasks"));
    let started = Instant::now();
    let ids: Vec<String> = (0..executions).map(|i| format!("a{i:06}")).collect();
    for chunk in ids.chunks(1000) {
        let body = Value::Array(chunk.iter().map(|id| job_task(id, &service.url())).collect());
        agent
            .post(&format!("{}/v1/executions:batch", daemon.base))
            .send_json(body)?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while service.count("POST") < executions {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {executions} jobs created in 10 minutes",
            service.count("POST")
        );
        pb.set_message(format!("async: {}/{executions} jobs created", service.count("POST")));
        std::thread::sleep(Duration::from_millis(200));
    }
    let create_seconds = started.elapsed().as_secs_f64();
    // Let the polls settle into the limiter's pace.
    pb.set_message("async: warming up".to_string());
    std::thread::sleep(Duration::from_secs(5));
    pb.set_message(format!("async: measuring for {seconds:.0} s"));
    let pid = daemon.child.id();
    let (gets0, cpu0, t0) = (service.count("GET"), cpu_seconds(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (gets1, cpu1, window) = (service.count("GET"), cpu_seconds(pid)?, t0.elapsed().as_secs_f64());
    let creates = service.count("POST");
    drop(daemon);
    Ok(AsyncPoint {
        executions,
        read_qps,
        poll_interval: 1.0,
        seconds: window,
        measured_qps: (gets1 - gets0) as f64 / window,
        cpu_cores: (cpu1 - cpu0) / window,
        creates,
        create_seconds,
    })
}
