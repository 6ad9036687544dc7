//! `kozmo bench`: measures the engine, the store and the loader in one run
//! and writes BENCHMARKS.md and the throughput plot (the measurements live
//! in [`crate::bench`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench::engine::{self, StoreKind};
use crate::bench::report::{self, Machine, Results, NOTES_MARKER};
use crate::bench::{http, isolated, load, sqlite_raw, wakeups};

/// Options of `kozmo bench`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
What each figure measures (goals from the benchmark issue):

  P1  handle of the same no-op plugin natively and through its .so, and a
      context accessor returning a string: ffi/native ratio (goal <= 1.5x).
      Read from criterion's last `cargo bench -p kozmo-interface --bench
      ffi_call` (target/criterion); run that first.
  P2  engine rounds/s, in-memory store, native no-op plugin, at each
      --in-flight size (goal >= 500,000). All executions are submitted and
      parked first (two rounds each, then waiting on a 1 h resync timer),
      then woken together; the clock runs until the last is Succeeded.
      Each size runs --repeat times; the table shows the median.
  P3  durable completions/s: --durable-executions submitted in batches of
      --batch on SQLite (WAL, synchronous=FULL), clock from the first submit
      to the last Succeeded row. Then the same rows, read back from that
      database, are written with plain rusqlite into a fresh file with the
      same schema and settings, --batch executions per pair of transactions.
      Ratio engine/raw (goal >= 0.5). Runs --repeat times; the table shows
      the run of median ratio.
  P6  resident memory per in-flight execution: VmRSS before and after
      parking --memory-executions on SQLite (one task, each execution with
      an input of its own), divided (goal <= 1 KiB). Runs first, on a
      fresh heap.
  Latency  submit -> Succeeded row, one execution at a time (light load),
      p50/p99, on SQLite and on the in-memory store.
  P5  load + check (symbol check, dlopen, ABI checks, entries, loader) of
      fresh copies of every plugin library in --plugins-dir (default: the
      directory of this binary, e.g. target/release after `cargo build
      --release` of the plugins), and load_directory over --load-copies
      copies of one library (goal: 50 in <= 1 s).
  Retention  a sustained load of --retention-executions short executions
      on SQLite with max_executions = --retention-keep: the database file's
      size over time (it should level off), and the step commit p99 while
      prune passes run against the p99 without pruning (goal <= 1.5x), at
      the full rate and at half of it; each load --retention-pairs times
      without and with retention, the median ratio judged.
      `--only retention` runs just this part.
  P4  one no-op handle through the noop fixture isolated in a child
      process (kozmo __plugin-host), against a raw pipe round trip of the
      same frame bytes (call + answer) through `cat`, sequential, same run:
      isolated / raw (goal <= 2x). Then engine rounds/s with the
      noop fixture isolated (goal >= 100,000), next to the same library
      loaded in the daemon: --isolated-in-flight executions on the
      in-memory store, each re-evaluated by a 1 ms resync timer. Both need
      libkozmo_fixture_noop.so in --plugins-dir (`cargo build --release -p
      kozmo-fixture-noop`).
  http  the daemon's HTTP API (router, service, accept loop) on a temporary
      SQLite data dir, over loopback: --http-executions echo-like
      completions/s with 1, 16 and 64 keep-alive connections (ids in the
      order sent, as in-process) and through the batch endpoint (1000 per
      request), each / the in-process durable rate measured in the same
      part (goals: >= 0.5 at 64 connections, >= 0.8 for the batch
      endpoint); 64 connections with an id range each / 64 in-process
      threads submitting one at a time with the same ids (no goal: the
      store's cost of that key layout); submit -> Succeeded p50 at 1
      connection / in-process (goal <= 1.3x, --latency-samples each).
  shell  the real daemon (this binary's `serve`, default configuration,
      resync 5 s) with the shell plugin of --plugins-dir: --shell-tasks
      `sh -c true` tasks in one batch request, to the last Succeeded,
      against `seq N | xargs -P<workers> -n1 sh -c true` run before and after
      (their mean)
      (goal >= 0.5); then one task at a time, submit -> Succeeded p50
      (goal <= 20 ms; the plugin signals when its command ends). Needs
      libkozmo_plugin_shell.so (`cargo build --release -p
      kozmo-plugin-shell`).
  postgres  durable completions/s of the engine on the PostgreSQL store
      (joined as a cluster node), --postgres-executions in batches of
      --batch, against raw batched COPY of the same rows into copies of the
      same tables on the same server, --batch executions per transaction
      (goal engine/raw >= 0.5); then two nodes on one database, half the
      submissions each, against one (report only). The server is
      --postgres (or KOZMO_BENCH_POSTGRES), else a throw-away cluster from
      the installed PostgreSQL (`pg_config --bindir`). Each run works in a
      schema of its own, dropped at the end.
  signal  a native plugin whose own thread signals its execution 3 ms
      after each round, on SQLite with a 1 h resync: signal() -> start of
      the next handle, p50/p99 (goal p50 <= 1 ms).

Results go to --output (hand-written notes after the marker line of an
existing file are kept) and the P2 plot to --plot (SVG). With --only, just
the named parts run and the table is printed; files are written only when
--output / --plot are given.")]
pub struct BenchArgs {
    /// Markdown file to write [default: BENCHMARKS.md; none with --only].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// SVG plot of P2 rounds/s against executions in flight [default: docs/bench-throughput.svg; none with --only].
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Run only these parts, comma-separated: p2, p3, p4, p5, p6, latency, http, retention, shell, signal,
    /// postgres, async [default: all].
    #[arg(long, value_delimiter = ',', value_parser = ["p2", "p3", "p4", "p5", "p6", "latency", "http", "retention", "shell", "signal", "postgres", "async"])]
    pub only: Vec<String>,
    /// Smoke run: tiny sizes for every measurement (figures meaningless).
    #[arg(long)]
    pub quick: bool,
    /// P2: executions in flight, comma-separated [default: 1000,10000,100000; quick: 100,1000].
    #[arg(long, value_delimiter = ',')]
    pub in_flight: Vec<usize>,
    /// P2: handle rounds per size; each execution runs budget/size rounds (at least 3) [default: 1000000:
    /// 10 rounds each at 100k in flight, so waking them is not most of the window].
    #[arg(long)]
    pub rounds_budget: Option<u64>,
    /// P2 and P3: runs per measurement; the table shows their median [default: 3; quick: 1].
    #[arg(long)]
    pub repeat: Option<usize>,
    /// P6: executions parked [default: 100000].
    #[arg(long)]
    pub memory_executions: Option<usize>,
    /// P3: executions completed durably [default: 50000].
    #[arg(long)]
    pub durable_executions: Option<usize>,
    /// P3: executions per submission batch and per raw transaction pair.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Latency samples per store [default: 1000].
    #[arg(long)]
    pub latency_samples: Option<usize>,
    /// P5: directory of plugin libraries [default: the directory of this binary].
    #[arg(long)]
    pub plugins_dir: Option<PathBuf>,
    /// P5: copies of one library loaded as a directory [default: 50; quick: 5].
    #[arg(long)]
    pub load_copies: Option<usize>,
    /// P1: criterion's output directory [default: target/criterion next to this binary's directory].
    #[arg(long)]
    pub criterion_dir: Option<PathBuf>,
    /// P4: sequential isolated calls timed (and raw round trips) [default: 20000; quick: 200].
    #[arg(long)]
    pub round_trips: Option<u64>,
    /// P4: executions in flight for the isolated rounds/s [default: 1000; quick: 100].
    #[arg(long)]
    pub isolated_in_flight: Option<usize>,
    /// http: executions per throughput figure [default: 20000; quick: 300].
    #[arg(long)]
    pub http_executions: Option<usize>,
    /// Retention: executions run [default: 200000; quick: 2000].
    #[arg(long)]
    pub retention_executions: Option<usize>,
    /// Retention: terminal executions kept (max_executions) [default: 20000; quick: 200].
    #[arg(long)]
    pub retention_keep: Option<usize>,
    /// Retention: executions the pruner selects per round [default: the daemon's, 600].
    #[arg(long)]
    pub retention_batch: Option<usize>,
    /// Retention: milliseconds between prune passes [default: 1000; quick: 100].
    #[arg(long)]
    pub retention_interval_ms: Option<u64>,
    /// Retention: runs of each load without and with retention; the verdict is the median ratio
    /// [default: 3; quick: 1].
    #[arg(long)]
    pub retention_pairs: Option<usize>,
    /// shell: tasks through the daemon and through xargs [default: 1000; quick: 50].
    #[arg(long)]
    pub shell_tasks: Option<usize>,
    /// shell and signal: one-at-a-time samples [default: 200 shell tasks, 1000 signals; quick: 5, 20].
    #[arg(long)]
    pub wakeup_samples: Option<usize>,
    /// postgres: the database to measure on (postgres://user:password@host/db; the run creates and drops
    /// schemas of its own) [default: a throw-away local cluster].
    #[arg(long, env = "KOZMO_BENCH_POSTGRES", hide_env_values = true)]
    pub postgres: Option<String>,
    /// postgres: executions per run [default: 20000; quick: 500].
    #[arg(long)]
    pub postgres_executions: Option<usize>,
    /// async: rest tasks polling a local job service [default: 10000; quick: 200].
    #[arg(long)]
    pub async_executions: Option<usize>,
    /// async: the rest plugin's read limit, polls a second [default: 500; quick: 50].
    #[arg(long)]
    pub async_read_qps: Option<f64>,
    /// async: the measuring window, seconds [default: 30; quick: 5].
    #[arg(long)]
    pub async_seconds: Option<f64>,
    /// Engine worker threads (0: number of cores).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

struct Sizes {
    in_flight: Vec<usize>,
    rounds_budget: u64,
    repeat: usize,
    memory: usize,
    durable: usize,
    latency: usize,
    copies: usize,
    per_library: usize,
    round_trips: u64,
    isolated_in_flight: usize,
    isolated_seconds: f64,
    http_executions: usize,
}

impl BenchArgs {
    fn sizes(&self) -> Sizes {
        let q = self.quick;
        Sizes {
            in_flight: if !self.in_flight.is_empty() {
                self.in_flight.clone()
            } else if q {
                vec![100, 1000]
            } else {
                vec![1000, 10_000, 100_000]
            },
            rounds_budget: self.rounds_budget.unwrap_or(if q { 3000 } else { 1_000_000 }),
            repeat: self.repeat.unwrap_or(if q { 1 } else { 3 }).max(1),
            memory: self.memory_executions.unwrap_or(if q { 1000 } else { 100_000 }),
            durable: self.durable_executions.unwrap_or(if q { 200 } else { 50_000 }),
            latency: self.latency_samples.unwrap_or(if q { 10 } else { 1000 }),
            copies: self.load_copies.unwrap_or(if q { 5 } else { 50 }),
            per_library: if q { 1 } else { 5 },
            round_trips: self.round_trips.unwrap_or(if q { 200 } else { 20_000 }),
            isolated_in_flight: self.isolated_in_flight.unwrap_or(if q { 100 } else { 1000 }),
            isolated_seconds: if q { 0.3 } else { 3.0 },
            http_executions: self.http_executions.unwrap_or(if q { 300 } else { 20_000 }),
        }
    }
}

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

fn default_criterion_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("criterion");
    }
    // target/<profile>/kozmo → target/criterion
    exe_dir()
        .and_then(|d| d.parent().map(|t| t.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Where `plot` is, seen from the directory of `output` (for the Markdown link).
fn relative_link(output: &Path, plot: &Path) -> String {
    let base = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (base.canonicalize(), plot.canonicalize()) {
        (Ok(b), Ok(p)) => p.strip_prefix(&b).map_or(p.clone(), Path::to_path_buf),
        _ => plot.to_path_buf(),
    }
    .display()
    .to_string()
}

impl BenchArgs {
    /// Whether `part` runs (every part unless `--only` names others).
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }

    /// Where the Markdown and the plot go (none by default with `--only`).
    fn files(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        if self.only.is_empty() {
            (
                Some(self.output.clone().unwrap_or_else(|| "BENCHMARKS.md".into())),
                Some(self.plot.clone().unwrap_or_else(|| "docs/bench-throughput.svg".into())),
            )
        } else {
            (self.output.clone(), self.plot.clone())
        }
    }
}

/// Runs the measurements, prints the table, writes the files.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let sizes = args.sizes();
    let workers = if args.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        args.workers
    };
    let phases = u64::from(args.runs("p6"))
        + if args.runs("p2") {
            sizes.in_flight.len() as u64
        } else {
            0
        }
        + 2 * u64::from(args.runs("p3"))
        + 2 * u64::from(args.runs("latency"))
        + u64::from(args.runs("p5"))
        + 2 * u64::from(args.runs("p4"))
        + u64::from(args.runs("http"))
        + u64::from(args.runs("retention"))
        + u64::from(args.runs("shell"))
        + u64::from(args.runs("signal"))
        + u64::from(args.runs("postgres"))
        + u64::from(args.runs("async"));
    let pb = ProgressBar::new(phases);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}")
            .expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(120));

    // P6 first: on a fresh heap, freed memory would hide the growth.
    let mut memory = None;
    if args.runs("p6") {
        memory = engine::memory(StoreKind::SqliteFull, sizes.memory, workers, &pb)?;
        pb.inc(1);
    }

    let mut throughput = Vec::new();
    let p2_sizes = if args.runs("p2") { &sizes.in_flight[..] } else { &[] };
    for &n in p2_sizes {
        let rounds = (sizes.rounds_budget / n.max(1) as u64).clamp(3, 100_000) as u32;
        // The machine is shared: the median of a few runs, with their spread.
        let mut runs = Vec::new();
        for _ in 0..sizes.repeat {
            runs.push(engine::throughput(n, rounds - 1, workers, &pb)?);
        }
        runs.sort_by(|a, b| a.rounds_per_second().total_cmp(&b.rounds_per_second()));
        let all: Vec<f64> = runs.iter().map(|r| r.rounds_per_second()).collect();
        let mut median = runs.swap_remove(runs.len() / 2);
        median.repetitions = all;
        throughput.push(median);
        pb.inc(1);
    }

    let (mut durable, mut raw, mut p3_ratios) = (None, None, Vec::new());
    if args.runs("p3") {
        // Each run pairs the engine with the raw reference on the same
        // rows, back to back; the table shows the pair of median ratio.
        let mut pairs = Vec::new();
        for _ in 0..sizes.repeat {
            let (d, b) = engine::durable(sizes.durable, args.batch, workers, &pb)?;
            pb.set_message("P3 raw SQLite inserts");
            let r = sqlite_raw::replay(&b.dir.path().join("kozmo.db"), &b.dir.path().join("raw.db"), args.batch)?;
            drop(b);
            pairs.push((d.per_second() / r.per_second(), d, r));
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        p3_ratios = pairs.iter().map(|p| p.0).collect();
        let (_, d, r) = pairs.swap_remove(pairs.len() / 2);
        (durable, raw) = (Some(d), Some(r));
        pb.inc(2);
    }

    let mut latency = Vec::new();
    if args.runs("latency") {
        for kind in [StoreKind::SqliteFull, StoreKind::Memory] {
            latency.push(engine::latency(kind, sizes.latency, workers, &pb)?);
            pb.inc(1);
        }
    }

    let plugins_dir = args.plugins_dir.clone().or_else(exe_dir);
    let load = match &plugins_dir {
        _ if !args.runs("p5") => Err("not run (--only)".to_string()),
        None => Err("no plugin directory (pass --plugins-dir)".to_string()),
        Some(d) => match load::measure(d, sizes.per_library, sizes.copies, &pb)? {
            Some(p) => Ok(p),
            None => Err(format!(
                "no plugin library in {} (build them with `cargo build --release -p kozmo-plugin-echo ...` \
                 or pass --plugins-dir)",
                d.display()
            )),
        },
    };
    if args.runs("p5") {
        pb.inc(1);
    }

    let noop = plugins_dir.as_deref().and_then(isolated::noop_library);
    let (round_trip, isolated_rounds) = match &noop {
        _ if !args.runs("p4") => (Err("not run (--only)".to_string()), Err("not run (--only)".to_string())),
        None => {
            let why = format!(
                "no {} in the plugin directory (`cargo build --release -p kozmo-fixture-noop`, or pass --plugins-dir)",
                isolated::NOOP_LIBRARY
            );
            (Err(why.clone()), Err(why))
        }
        Some(lib) => {
            pb.set_message("P4 isolated round trips");
            let rt = isolated::round_trip(lib, sizes.round_trips).map_err(|e| format!("{e:#}"));
            pb.inc(1);
            pb.set_message("P4 isolated engine rounds");
            let rounds = isolated::rounds(lib, sizes.isolated_in_flight, sizes.isolated_seconds, workers)
                .map_err(|e| format!("{e:#}"));
            pb.inc(1);
            (rt, rounds)
        }
    };
    let http = if args.runs("http") {
        let h = http::measure(sizes.http_executions, sizes.latency, workers, &pb).map_err(|e| format!("{e:#}"));
        pb.inc(1);
        h
    } else {
        Err("not run (--only)".to_string())
    };
    let retention = if args.runs("retention") {
        pb.set_message("retention");
        let q = args.quick;
        let size = crate::bench::retention::RunSize {
            total: args.retention_executions.unwrap_or(if q { 2000 } else { 200_000 }),
            keep: args.retention_keep.unwrap_or(if q { 200 } else { 20_000 }),
            batch: args.retention_batch.unwrap_or(kozmo_engine::retention::DEFAULT_BATCH),
            interval: Duration::from_millis(args.retention_interval_ms.unwrap_or(if q { 100 } else { 1000 })),
            workers,
            pairs: args.retention_pairs.unwrap_or(if q { 1 } else { 3 }),
        };
        let r = crate::bench::retention::RetentionRun::measure(size, &pb)?;
        pb.inc(1);
        Some(r)
    } else {
        None
    };
    let q = args.quick;
    let shell = args.runs("shell").then(|| {
        let shell = match plugins_dir.as_deref().and_then(wakeups::shell_library) {
            None => Err(format!(
                "no {} in the plugin directory (`cargo build --release -p kozmo-plugin-shell`, or pass --plugins-dir)",
                wakeups::SHELL_LIBRARY
            )),
            Some(lib) => wakeups::shell(
                &lib,
                args.shell_tasks.unwrap_or(if q { 50 } else { 1000 }),
                args.wakeup_samples.unwrap_or(if q { 5 } else { 200 }),
                workers,
                &pb,
            )
            .map_err(|e| format!("{e:#}")),
        };
        pb.inc(1);
        shell
    });
    let signal = args.runs("signal").then(|| {
        let signal = wakeups::signal(args.wakeup_samples.unwrap_or(if q { 20 } else { 1000 }), workers, &pb)
            .map_err(|e| format!("{e:#}"));
        pb.inc(1);
        signal
    });
    let postgres = args.runs("postgres").then(|| {
        let p = crate::bench::postgres::measure(
            args.postgres.as_deref(),
            args.postgres_executions.unwrap_or(if q { 500 } else { 20_000 }),
            args.batch,
            &pb,
        )
        .map_err(|e| format!("{e:#}"));
        pb.inc(1);
        p
    });
    let async_md = args.runs("async").then(|| {
        let r = match plugins_dir.as_deref().and_then(crate::bench::async_api::rest_library) {
            None => Err(format!(
                "no {} in the plugin directory (`cargo build --release -p kozmo-plugin-rest`, or pass --plugins-dir)",
                crate::bench::async_api::REST_LIBRARY
            )),
            Some(lib) => crate::bench::async_api::measure(
                &lib,
                args.async_executions.unwrap_or(if q { 200 } else { 10_000 }),
                args.async_read_qps.unwrap_or(if q { 50.0 } else { 500.0 }),
                args.async_seconds.unwrap_or(if q { 5.0 } else { 30.0 }),
                workers,
                &pb,
            )
            .map_err(|e| format!("{e:#}")),
        };
        pb.inc(1);
        match r {
            Ok(p) => p.markdown(),
            Err(e) => format!("not measured: {e}\n"),
        }
    });
    let postgres_md = postgres.map(|p| match p {
        Ok(p) => p.markdown(),
        Err(e) => format!("not measured: {e}\n"),
    });
    let wakeups_md = (shell.is_some() || signal.is_some()).then(|| wakeups::markdown(shell.as_ref(), signal.as_ref()));
    pb.finish_and_clear();
    let separate = ["retention", "shell", "signal", "postgres", "async"];
    if !args.only.is_empty() && args.only.iter().all(|p| separate.contains(&p.as_str())) {
        if let Some(r) = &retention {
            print!("{}", r.markdown());
        }
        if let Some(p) = &postgres_md {
            print!("{p}");
        }
        if let Some(w) = &wakeups_md {
            print!("{w}");
        }
        if let Some(a) = &async_md {
            print!("{a}");
        }
        return Ok(ExitCode::SUCCESS);
    }

    let criterion_dir = args.criterion_dir.clone().unwrap_or_else(default_criterion_dir);
    let results = Results {
        machine: Machine::detect(),
        calls: report::read_call_costs(&criterion_dir),
        helpers: report::read_helper_costs(&criterion_dir),
        criterion_dir,
        throughput,
        durable,
        raw,
        p3_ratios,
        memory,
        latency,
        load,
        round_trip,
        isolated_rounds,
        http,
        workers,
    };
    print!("{}", results.text_table());
    if let Some(r) = &retention {
        print!("\n{}", r.markdown());
    }
    if let Some(w) = &wakeups_md {
        print!("\n{w}");
    }
    if let Some(p) = &postgres_md {
        print!("\n{p}");
    }
    if let Some(a) = &async_md {
        print!("\n{a}");
    }

    let (output, plot) = args.files();
    let plot_ok = match &plot {
        None => false,
        Some(plot) => match results.plot(plot) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("kozmo bench: plot {}: {e}", plot.display());
                false
            }
        },
    };
    let Some(output) = output else {
        return Ok(ExitCode::SUCCESS);
    };
    let notes = std::fs::read_to_string(&output).ok().and_then(|s| {
        s.split_once(NOTES_MARKER)
            .map(|(_, rest)| rest.trim_start_matches('\n').to_string())
    });
    let command = std::iter::once("kozmo".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let link = plot
        .as_ref()
        .filter(|_| plot_ok)
        .map(|plot| relative_link(&output, plot));
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut md = results.markdown(&command, link.as_deref(), notes.as_deref());
    if let Some(r) = &retention {
        md = md.replacen(
            NOTES_MARKER,
            &format!("## Retention\n\n{}\n{NOTES_MARKER}", r.markdown()),
            1,
        );
    }
    if let Some(w) = &wakeups_md {
        md = md.replacen(
            NOTES_MARKER,
            &format!("## Wake-ups: shell tasks and signals\n\n{w}\n{NOTES_MARKER}"),
            1,
        );
    }
    if let Some(p) = &postgres_md {
        md = md.replacen(NOTES_MARKER, &format!("## PostgreSQL store\n\n{p}\n{NOTES_MARKER}"), 1);
    }
    if let Some(a) = &async_md {
        md = md.replacen(
            NOTES_MARKER,
            &format!("## Asynchronous plugins (rest)\n\n{a}\n{NOTES_MARKER}"),
            1,
        );
    }
    std::fs::write(&output, md)?;
    eprintln!("kozmo bench: wrote {}", output.display());
    Ok(ExitCode::SUCCESS)
}
