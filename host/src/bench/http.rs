//! The `http` part: the daemon's HTTP API (the real router, service and
//! accept loop, on a temporary SQLite data dir) driven over loopback by
//! in-process clients, against the same engine driven in-process in the same
//! run:
//!
//! * completions/s with 1, 16 and 64 keep-alive connections, each posting
//!   single submissions, from the first request to the last Succeeded row,
//!   against the in-process durable rate (P3's measurement, smaller). The
//!   ids are given in the order the requests are sent (one counter shared
//!   by the connections), as the in-process run submits them;
//! * the same at 64 connections with a range of ids per connection (64
//!   streams of ids far apart: each group commit dirties a B-tree leaf per
//!   stream and per table), against 64 in-process threads submitting one
//!   at a time with the same ids: the store's cost of that key layout,
//!   which HTTP does not change;
//! * submit → Succeeded p50 at 1 connection against the same in-process;
//! * completions/s through `POST /v1/executions:batch` (1000 per request,
//!   a few connections) against the in-process rate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::{json, Value};

use super::engine::{self, BenchEngine, BenchPlugin, StoreKind};
use crate::daemon::DaemonService;
use crate::metrics::Metrics;
use kozmo_api::{self as api, ApiOptions, ExecutionService};

/// How the clients number their executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// In the order the requests are sent: one counter shared by the
    /// connections (concurrent inserts land next to each other).
    Arrival,
    /// A contiguous range per connection (as many insert points as
    /// connections).
    PerConnection,
}

/// One HTTP throughput measurement.
#[derive(Debug, Clone)]
pub struct HttpRate {
    /// Keep-alive connections.
    pub connections: usize,
    /// How the ids were given.
    pub ids: Ids,
    /// Executions per request (1: `POST /v1/executions`; more: the batch endpoint).
    pub per_request: usize,
    /// Executions completed.
    pub executions: usize,
    /// From the first request to the last Succeeded row.
    pub seconds: f64,
    /// CPU time of this process (server, engine and clients) over the
    /// same span, if the platform tells: on a shared machine, less
    /// sensitive to the other load than `seconds`.
    pub cpu_seconds: Option<f64>,
}

impl HttpRate {
    /// Completions per second.
    pub fn per_second(&self) -> f64 {
        self.executions as f64 / self.seconds
    }

    /// CPU time per completion, seconds.
    pub fn cpu_each(&self) -> Option<f64> {
        self.cpu_seconds.map(|c| c / self.executions as f64)
    }
}

/// Everything the `http` part measured.
#[derive(Debug, Clone)]
pub struct HttpResults {
    /// Single submissions at each connection count.
    pub single: Vec<HttpRate>,
    /// The batch endpoint.
    pub batch: HttpRate,
    /// 64 connections, single submissions, an id range each.
    pub ranged: HttpRate,
    /// 64 in-process threads submitting one at a time with the same ids:
    /// completions/s.
    pub ranged_engine_per_second: f64,
    /// The in-process durable completions/s of the same run.
    pub engine_per_second: f64,
    /// Submit → Succeeded p50 over HTTP at 1 connection, seconds.
    pub http_p50: f64,
    /// The same in-process, seconds.
    pub engine_p50: f64,
}

impl HttpResults {
    /// The single-submission rate at `connections` / the in-process rate.
    pub fn ratio_at(&self, connections: usize) -> Option<f64> {
        self.single
            .iter()
            .find(|r| r.connections == connections)
            .map(|r| r.per_second() / self.engine_per_second)
    }
}

/// The API of a bench engine on a loopback port, served on a thread of its
/// own until dropped.
struct Served {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    fn start(b: &BenchEngine) -> anyhow::Result<Served> {
        let service: Arc<dyn ExecutionService> =
            Arc::new(DaemonService::new(b.engine.clone(), Vec::new(), Metrics::new("kozmo")));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let base = format!("http://{}", std_listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("a listener");
                let options = ApiOptions {
                    max_batch_items: 10_000,
                    ..ApiOptions::default()
                };
                let _ = api::serve(listener, service, options, async {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        Ok(Served {
            base,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .max_idle_connections_per_host(1)
        .build()
}

fn task(i: usize) -> Value {
    json!({"type": "bench-noop", "execution_id": format!("h{i:08}")})
}

/// The first and one-past-last id a connection or thread `c` of `of` takes
/// with [`Ids::PerConnection`].
fn range(c: usize, of: usize, executions: usize) -> (usize, usize) {
    let per = executions.div_ceil(of);
    let first = (c * per).min(executions);
    (first, (first + per).min(executions))
}

/// The next id a client takes: from the shared counter, or the next of its
/// range (`next` is its position in it); `None` when done.
fn next_id(ids: Ids, shared: &AtomicUsize, next: &mut usize, last: usize, executions: usize) -> Option<usize> {
    let i = match ids {
        Ids::Arrival => shared.fetch_add(1, Ordering::Relaxed),
        Ids::PerConnection => {
            *next += 1;
            *next - 1
        }
    };
    let end = if ids == Ids::Arrival { executions } else { last };
    (i < end).then_some(i)
}

/// `executions` over `connections` keep-alive connections, `per_request`
/// per request (a contiguous range per connection for batches; single
/// submissions numbered as `ids` says), timed to the last Succeeded row.
fn rate(
    connections: usize,
    per_request: usize,
    ids: Ids,
    executions: usize,
    workers: usize,
    pb: &ProgressBar,
) -> anyhow::Result<HttpRate> {
    let what = format!("http: {executions} over {connections} connection(s), {per_request} per request");
    pb.set_message(what.clone());
    let b = BenchEngine::start(StoreKind::SqliteFull, BenchPlugin::new(0, true), workers)?;
    let served = Served::start(&b)?;
    let shared = Arc::new(AtomicUsize::new(0));
    let cpu = cpu_seconds();
    let start = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let base = served.base.clone();
            let shared = shared.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let agent = agent();
                let (first, last) = range(c, connections, executions);
                if per_request == 1 {
                    let mut next = first;
                    while let Some(i) = next_id(ids, &shared, &mut next, last, executions) {
                        agent.post(&format!("{base}/v1/executions")).send_json(task(i))?;
                    }
                    return Ok(());
                }
                for chunk in (first..last).step_by(per_request) {
                    let items: Vec<Value> = (chunk..(chunk + per_request).min(last)).map(task).collect();
                    agent
                        .post(&format!("{base}/v1/executions:batch"))
                        .send_json(Value::Array(items))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    b.wait_succeeded(executions, pb, &what)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu.zip(cpu_seconds()).map(|(a, b)| b - a);
    drop(served);
    b.shutdown();
    Ok(HttpRate {
        connections,
        ids,
        per_request,
        executions,
        seconds,
        cpu_seconds,
    })
}

/// `executions` submitted one at a time by `threads` in-process threads
/// (`EngineHandle::submit`, no HTTP), numbered as `ids` says, timed to the
/// last Succeeded row: completions/s.
fn in_process_singles(
    threads: usize,
    ids: Ids,
    executions: usize,
    workers: usize,
    pb: &ProgressBar,
) -> anyhow::Result<f64> {
    let what = format!("http: {executions} in-process over {threads} threads, one at a time");
    pb.set_message(what.clone());
    let b = BenchEngine::start(StoreKind::SqliteFull, BenchPlugin::new(0, true), workers)?;
    let shared = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|c| {
            let handle = b.engine.clone();
            let shared = shared.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let (first, last) = range(c, threads, executions);
                let mut next = first;
                while let Some(i) = next_id(ids, &shared, &mut next, last, executions) {
                    handle
                        .submit(Some(format!("h{i:08}")), engine::bench_spec())
                        .map_err(|e| anyhow::anyhow!("submit: {e}"))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in handles {
        t.join()
            .map_err(|_| anyhow::anyhow!("a submitting thread panicked"))??;
    }
    b.wait_succeeded(executions, pb, &what)?;
    let seconds = start.elapsed().as_secs_f64();
    b.shutdown();
    Ok(executions as f64 / seconds)
}

/// User + system CPU time of this process so far (`/proc/self/stat`), if
/// the platform has it.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// Submit → Succeeded at 1 connection, one execution at a time: p50, seconds.
fn http_latency(samples: usize, workers: usize, pb: &ProgressBar) -> anyhow::Result<f64> {
    let b = BenchEngine::start(StoreKind::SqliteFull, BenchPlugin::new(0, true), workers)?;
    let served = Served::start(&b)?;
    let agent = agent();
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        agent
            .post(&format!("{}/v1/executions", served.base))
            .send_json(task(i))?;
        let id = format!("h{i:08}");
        loop {
            let rec = b.store.get_execution(&id)?;
            if rec.is_some_and(|r| r.state.phase.is_terminal()) {
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        v.push(start.elapsed().as_secs_f64());
        if i % 10 == 0 {
            pb.set_message(format!("http latency: {i}/{samples}"));
        }
    }
    drop(served);
    b.shutdown();
    v.sort_by(f64::total_cmp);
    Ok(super::quantile(&v, 0.5))
}

/// Runs the `http` part: `executions` per throughput figure, `samples` for
/// the latency pair.
pub fn measure(executions: usize, samples: usize, workers: usize, pb: &ProgressBar) -> anyhow::Result<HttpResults> {
    pb.set_message("http: in-process reference");
    let (reference, b) = engine::durable(executions, 512, workers, pb)?;
    drop(b);
    let engine_p50 = engine::latency(StoreKind::SqliteFull, samples, workers, pb)?.p50;
    let http_p50 = http_latency(samples, workers, pb)?;
    let mut single = Vec::new();
    for connections in [1, 16, 64] {
        // One connection is latency-bound: fewer executions keep it short.
        let n = if connections == 1 {
            (executions / 10).max(100)
        } else {
            executions
        };
        single.push(rate(connections, 1, Ids::Arrival, n, workers, pb)?);
    }
    let batch = rate(4, 1000, Ids::PerConnection, executions, workers, pb)?;
    // Last, so the goal rows run as they always did (these write several
    // times the pages).
    let ranged = rate(64, 1, Ids::PerConnection, executions, workers, pb)?;
    let ranged_engine_per_second = in_process_singles(64, Ids::PerConnection, executions, workers, pb)?;
    Ok(HttpResults {
        single,
        ranged,
        ranged_engine_per_second,
        batch,
        engine_per_second: reference.per_second(),
        http_p50,
        engine_p50,
    })
}
