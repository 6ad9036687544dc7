//! The results: machine facts, P1 from criterion's saved estimates, the
//! table (terminal and Markdown, each figure next to its goal) and the
//! throughput plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::engine::{DurablePoint, LatencyPoint, MemoryPoint, ThroughputPoint};
use super::http::HttpResults;
use super::isolated::{IsolatedRoundsPoint, RoundTripPoint};
use super::load::LoadPoint;
use super::sqlite_raw::RawPoint;

/// Hand-written notes after this line of an existing output file are kept.
pub const NOTES_MARKER: &str = "<!-- kozmo bench: everything below this line is kept across runs -->";

/// The machine and the code measured.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs.
    pub nproc: usize,
    /// CPU model (`model name` of `/proc/cpuinfo`).
    pub model: String,
    /// Memory (`MemTotal` of `/proc/meminfo`), bytes.
    pub memory: Option<u64>,
    /// UTC date and time.
    pub date: String,
    /// `git rev-parse --short HEAD`, if available.
    pub commit: String,
    /// Release or debug build of this binary.
    pub profile: &'static str,
}

impl Machine {
    /// Reads the facts of this machine.
    pub fn detect() -> Self {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
        });
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model,
            memory,
            date: kozmo_engine::model::rfc3339_ms(kozmo_engine::model::now_ms()),
            commit,
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
        }
    }
}

/// P1, as the last `cargo bench -p kozmo-interface --bench ffi_call` left it.
#[derive(Debug, Clone)]
pub struct CallCost {
    /// Benchmark group (`noop_handle`, `accessor_handle`).
    pub group: String,
    /// Mean, ns, natively.
    pub native_ns: f64,
    /// Mean, ns, through the library.
    pub ffi_ns: f64,
}

impl CallCost {
    /// ffi / native.
    pub fn ratio(&self) -> f64 {
        self.ffi_ns / self.native_ns
    }
}

fn criterion_mean(path: &Path) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v.get("mean")?.get("point_estimate")?.as_f64()
}

/// Reads criterion's estimates of the P1 groups under `dir` (`target/criterion`).
pub fn read_call_costs(dir: &Path) -> Vec<CallCost> {
    ["noop_handle", "accessor_handle"]
        .iter()
        .filter_map(|g| {
            Some(CallCost {
                group: g.to_string(),
                native_ns: criterion_mean(&dir.join(g).join("native/new/estimates.json"))?,
                ffi_ns: criterion_mean(&dir.join(g).join("ffi/new/estimates.json"))?,
            })
        })
        .collect()
}

/// The other `ffi_call` benches (state codec, template, names): (name, mean ns).
pub fn read_helper_costs(dir: &Path) -> Vec<(String, f64)> {
    [
        "state_encode",
        "state_decode",
        "generated_name_hashed",
        "template_render_3_args",
    ]
    .iter()
    .filter_map(|g| Some((g.to_string(), criterion_mean(&dir.join(g).join("new/estimates.json"))?)))
    .collect()
}

/// Everything one `kozmo bench` run measured.
#[derive(Debug, Clone)]
pub struct Results {
    /// The machine.
    pub machine: Machine,
    /// Where the P1 estimates were looked for, and what was found.
    pub criterion_dir: PathBuf,
    /// P1.
    pub calls: Vec<CallCost>,
    /// The other `ffi_call` benches: (name, mean ns).
    pub helpers: Vec<(String, f64)>,
    /// P2, by in-flight size.
    pub throughput: Vec<ThroughputPoint>,
    /// P3, engine side.
    pub durable: Option<DurablePoint>,
    /// P3, raw SQLite.
    pub raw: Option<RawPoint>,
    /// P3: the engine/raw ratio of every run, sorted (`durable` and `raw`
    /// are the run of median ratio).
    pub p3_ratios: Vec<f64>,
    /// P6.
    pub memory: Option<MemoryPoint>,
    /// Latency, by store.
    pub latency: Vec<LatencyPoint>,
    /// P5 (`Err`: why not measured).
    pub load: Result<LoadPoint, String>,
    /// P4 (`Err`: why not measured).
    pub round_trip: Result<RoundTripPoint, String>,
    /// Engine rounds/s with the no-op plugin isolated (`Err`: why not measured).
    pub isolated_rounds: Result<IsolatedRoundsPoint, String>,
    /// The `http` part (`Err`: why not measured).
    pub http: Result<HttpResults, String>,
    /// Worker threads of the engine runs.
    pub workers: usize,
}

/// One table row.
#[derive(Debug, Clone)]
pub struct Row {
    /// What is measured.
    pub name: String,
    /// The figure.
    pub figure: String,
    /// The goal ("" if none).
    pub goal: String,
    /// Whether the goal is met (`None`: no goal or not measured).
    pub met: Option<bool>,
}

fn row(name: impl Into<String>, figure: impl Into<String>, goal: &str, met: Option<bool>) -> Row {
    Row {
        name: name.into(),
        figure: figure.into(),
        goal: goal.into(),
        met,
    }
}

/// Thousands separated by `,` (`1234567` → `1,234,567`).
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let groups: Vec<&str> = s
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or(""))
        .collect();
    let out = groups.join(",");
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Seconds in a readable unit.
pub fn duration(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.1} µs", s * 1e6)
    } else {
        format!("{:.1} ns", s * 1e9)
    }
}

/// Row names, in order, every run prints (the test checks them).
pub const ROW_NAMES: [&str; 12] = [
    "P1 no-op handle, ffi / native",
    "P1 string accessor, ffi / native",
    "P2 rounds/s, in-memory store",
    "P3 durable completions/s (SQLite)",
    "P3 raw batched inserts of the same rows",
    "P3 ratio engine / raw",
    "P6 resident memory per in-flight execution",
    "Latency submit → terminal, p50 / p99",
    "P5 load + check, one library",
    "P5 load + check, directory of",
    "P4 no-op handle round trip, isolated / raw pipe",
    "Isolated no-op plugin, engine rounds/s",
];

impl Results {
    /// The table rows, each figure next to its goal.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (name, group) in [(ROW_NAMES[0], "noop_handle"), (ROW_NAMES[1], "accessor_handle")] {
            rows.push(match self.calls.iter().find(|c| c.group == group) {
                Some(c) => row(
                    name,
                    format!("{:.2}× ({:.0} ns vs {:.0} ns)", c.ratio(), c.ffi_ns, c.native_ns),
                    "≤ 1.5×",
                    Some(c.ratio() <= 1.5),
                ),
                None => row(
                    name,
                    format!(
                        "not measured: run `cargo bench -p kozmo-interface --bench ffi_call` (no estimates under {})",
                        self.criterion_dir.display()
                    ),
                    "≤ 1.5×",
                    None,
                ),
            });
        }
        if self.throughput.is_empty() {
            rows.push(row(ROW_NAMES[2], "not measured", "≥ 500,000", None));
        }
        for p in &self.throughput {
            let r = p.rounds_per_second();
            rows.push(row(
                format!("{}, {} in flight", ROW_NAMES[2], thousands(p.in_flight as f64)),
                if p.repetitions.len() > 1 {
                    format!(
                        "{} (median of {} runs, {}–{}; {} rounds in {})",
                        thousands(r),
                        p.repetitions.len(),
                        thousands(p.repetitions[0]),
                        thousands(p.repetitions[p.repetitions.len() - 1]),
                        thousands(p.rounds as f64),
                        duration(p.seconds)
                    )
                } else {
                    format!(
                        "{} ({} rounds in {})",
                        thousands(r),
                        thousands(p.rounds as f64),
                        duration(p.seconds)
                    )
                },
                "≥ 500,000",
                Some(r >= 500_000.0),
            ));
        }
        match &self.durable {
            Some(d) => rows.push(row(
                ROW_NAMES[3],
                format!(
                    "{} ({} executions, batches of {}, {})",
                    thousands(d.per_second()),
                    thousands(d.executions as f64),
                    d.batch,
                    duration(d.seconds)
                ),
                "",
                None,
            )),
            None => rows.push(row(ROW_NAMES[3], "not measured", "", None)),
        }
        match &self.raw {
            Some(r) => rows.push(row(
                ROW_NAMES[4],
                format!(
                    "{} executions/s ({:.1} rows each, {})",
                    thousands(r.per_second()),
                    r.rows_per_execution(),
                    duration(r.seconds)
                ),
                "",
                None,
            )),
            None => rows.push(row(ROW_NAMES[4], "not measured", "", None)),
        }
        match (&self.durable, &self.raw) {
            (Some(d), Some(r)) => {
                let ratio = d.per_second() / r.per_second();
                let figure = match &self.p3_ratios[..] {
                    [first, .., last] => format!(
                        "{ratio:.2} (median of {} runs, {first:.2}–{last:.2})",
                        self.p3_ratios.len()
                    ),
                    _ => format!("{ratio:.2}"),
                };
                rows.push(row(ROW_NAMES[5], figure, "≥ 0.8", Some(ratio >= 0.8)));
            }
            _ => rows.push(row(ROW_NAMES[5], "not measured", "≥ 0.8", None)),
        }
        match &self.memory {
            Some(m) => {
                let b = m.bytes_per_execution();
                rows.push(row(
                    ROW_NAMES[6],
                    format!(
                        "{} bytes ({} parked, {} store{})",
                        thousands(b),
                        thousands(m.executions as f64),
                        m.store.name(),
                        m.trimmed_bytes_per_execution()
                            .map(|t| format!("; {} after malloc_trim", thousands(t)))
                            .unwrap_or_default()
                    ),
                    "≤ 1,024 bytes",
                    Some(b <= 1024.0),
                ));
            }
            None => rows.push(row(ROW_NAMES[6], "not measured", "≤ 1,024 bytes", None)),
        }
        if self.latency.is_empty() {
            rows.push(row(ROW_NAMES[7], "not measured", "", None));
        }
        for l in &self.latency {
            rows.push(row(
                format!("{} ({})", ROW_NAMES[7], l.store.name()),
                format!("{} / {} ({} samples)", duration(l.p50), duration(l.p99), l.samples),
                "",
                None,
            ));
        }
        match &self.load {
            Ok(p) => {
                let mean = p.mean_library_seconds().unwrap_or(f64::NAN);
                rows.push(row(
                    ROW_NAMES[8],
                    format!("{} (mean of {} libraries)", duration(mean), p.libraries.len()),
                    "",
                    None,
                ));
                match p.copies_dir {
                    Some((n, s)) => rows.push(row(
                        format!("{} {n} copies", ROW_NAMES[9]),
                        duration(s),
                        if n == 50 { "≤ 1 s" } else { "≤ 1 s (for 50)" },
                        (n == 50).then_some(s <= 1.0),
                    )),
                    None => rows.push(row(format!("{} copies", ROW_NAMES[9]), "not measured", "≤ 1 s", None)),
                }
                if let Some((n, s)) = p.distinct_dir {
                    rows.push(row(
                        format!("{} {n} distinct libraries", ROW_NAMES[9]),
                        duration(s),
                        "",
                        None,
                    ));
                }
            }
            Err(why) => {
                rows.push(row(ROW_NAMES[8], format!("not measured: {why}"), "", None));
                rows.push(row(
                    format!("{} 50 copies", ROW_NAMES[9]),
                    format!("not measured: {why}"),
                    "≤ 1 s",
                    None,
                ));
            }
        }
        rows.push(match &self.round_trip {
            Ok(p) => row(
                ROW_NAMES[10],
                format!(
                    "{:.2}× ({} vs {}; {} + {} bytes, {} calls)",
                    p.ratio(),
                    duration(p.isolated_ns / 1e9),
                    duration(p.raw_ns / 1e9),
                    p.request_bytes,
                    p.response_bytes,
                    thousands(p.calls as f64)
                ),
                "≤ 2×",
                Some(p.ratio() <= 2.0),
            ),
            Err(why) => row(ROW_NAMES[10], format!("not measured: {why}"), "≤ 2×", None),
        });
        rows.push(match &self.isolated_rounds {
            Ok(p) => row(
                format!("{}, {} in flight", ROW_NAMES[11], thousands(p.in_flight as f64)),
                format!(
                    "{} ({} in the daemon; {} workers, {} windows)",
                    thousands(p.isolated),
                    thousands(p.in_process),
                    p.workers,
                    duration(p.seconds)
                ),
                "≥ 100,000",
                Some(p.isolated >= 100_000.0),
            ),
            Err(why) => row(ROW_NAMES[11], format!("not measured: {why}"), "≥ 100,000", None),
        });
        rows.extend(http_rows(&self.http));
        rows
    }

    /// The table for a terminal.
    pub fn text_table(&self) -> String {
        let rows = self.rows();
        let w0 = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.figure.chars().count()).max().unwrap_or(0).min(70);
        let mut s = String::new();
        for r in &rows {
            let met = match r.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            let _ = writeln!(
                s,
                "{:w0$}  {:w1$}  {:14}  {met}",
                r.name,
                r.figure,
                if r.goal.is_empty() { "-" } else { &r.goal }
            );
        }
        s
    }

    /// BENCHMARKS.md: machine, results table, details; `plot` is the SVG's
    /// path relative to the Markdown file; `notes` the kept hand-written part.
    pub fn markdown(&self, command: &str, plot: Option<&str>, notes: Option<&str>) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `{command}` (see `kozmo bench --help` for what each figure measures).\n"
        );
        let _ = writeln!(s, "| machine | |\n|---|---|");
        let _ = writeln!(s, "| CPUs (nproc) | {} |", m.nproc);
        let _ = writeln!(s, "| model | {} |", m.model);
        let _ = writeln!(
            s,
            "| memory | {} |",
            m.memory.map_or("unknown".into(), |b| format!(
                "{:.1} GiB",
                b as f64 / (1u64 << 30) as f64
            ))
        );
        let _ = writeln!(s, "| date (UTC) | {} |", m.date);
        let _ = writeln!(s, "| git commit | {} |", m.commit);
        let _ = writeln!(s, "| build | {} |", m.profile);
        let _ = writeln!(s, "| engine workers | {} |\n", self.workers);
        let _ = writeln!(s, "| measurement | figure | goal | met |\n|---|---|---|---|");
        for r in self.rows() {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let _ = writeln!(s, "| {} | {} | {} | {met} |", r.name, r.figure, r.goal);
        }
        let _ = writeln!(s);
        if let Some(p) = plot {
            let _ = writeln!(s, "![P2: engine rounds/s against executions in flight]({p})\n");
        }
        let _ = writeln!(s, "## Details\n");
        if !self.throughput.is_empty() {
            let _ = writeln!(
                s,
                "P2 (in-memory store, native no-op plugin; executions parked first, then all woken; the median run):\n\n\
                 | in flight | rounds/execution | rounds | steps committed | store transactions | seconds | rounds/s |\n\
                 |---|---|---|---|---|---|---|"
            );
            for p in &self.throughput {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.3} | {} |",
                    thousands(p.in_flight as f64),
                    p.rounds_per_execution,
                    thousands(p.rounds as f64),
                    thousands(p.steps as f64),
                    thousands(p.batches as f64),
                    p.seconds,
                    thousands(p.rounds_per_second())
                );
            }
            let _ = writeln!(s);
        }
        if let Some(d) = &self.durable {
            let _ = writeln!(
                s,
                "P3: {} executions submitted in batches of {}, each a Success round and a Finalize step: {} steps \
                 and the {} submission batches committed in {} store transactions (group commit: a transaction \
                 takes the submissions and step results queued, and those arriving while steps still run, for \
                 at most one sync's cost).",
                d.executions,
                d.batch,
                d.steps,
                d.executions.div_ceil(d.batch.max(1)),
                d.batches
            );
            if let Some(r) = &self.raw {
                let _ = writeln!(
                    s,
                    "The raw reference wrote the {} rows these executions left in the engine's database \
                     ({:.1} per execution) into a fresh file with the same schema, WAL and `synchronous=FULL`, \
                     {} executions at a time in two transactions (their `executions` and `execution_specs` rows, then \
                     the rest).",
                    r.rows,
                    r.rows_per_execution(),
                    r.batch
                );
            }
            let _ = writeln!(s);
        }
        if let Some(mp) = &self.memory {
            let _ = writeln!(
                s,
                "P6: VmRSS {} MiB with the engine started, {} MiB with {} executions parked \
                 (one task, each execution with an input of its own; every execution tracked by the \
                 engine, waiting on its resync timer).\n",
                mp.rss_before / (1 << 20),
                mp.rss_after / (1 << 20),
                mp.executions
            );
        }
        match &self.load {
            Ok(p) => {
                let _ = writeln!(
                    s,
                    "P5: libraries from `{}` (median of fresh copies each):\n",
                    p.source.display()
                );
                let _ = writeln!(s, "| library | load + check |\n|---|---|");
                for l in &p.libraries {
                    let _ = writeln!(s, "| {} | {} |", l.name, duration(l.seconds));
                }
                if !p.skipped.is_empty() {
                    let _ = writeln!(s, "\nFailed the check (skipped): {}.", p.skipped.join(", "));
                }
                let _ = writeln!(s);
            }
            Err(why) => {
                let _ = writeln!(s, "P5: not measured: {why}.\n");
            }
        }
        if !self.calls.is_empty() {
            let _ = writeln!(
                s,
                "P1: means from criterion's last run of `cargo bench -p kozmo-interface --bench ffi_call` \
                 (read from `{}`). Same run:\n",
                self.criterion_dir.display()
            );
            let _ = writeln!(s, "| bench | mean |\n|---|---|");
            for c in &self.calls {
                let _ = writeln!(s, "| {}/native | {:.1} ns |", c.group, c.native_ns);
                let _ = writeln!(s, "| {}/ffi | {:.1} ns |", c.group, c.ffi_ns);
            }
            for (name, ns) in &self.helpers {
                let _ = writeln!(s, "| {name} | {} |", duration(ns / 1e9));
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "{NOTES_MARKER}\n");
        if let Some(n) = notes {
            s.push_str(n);
        }
        s
    }

    /// Draws P2's rounds/s against executions in flight (log x axis) with the goal.
    pub fn plot(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let pts: Vec<(f64, f64)> = self
            .throughput
            .iter()
            .map(|p| (p.in_flight as f64, p.rounds_per_second()))
            .collect();
        let (xmin, xmax) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
        let (xmin, xmax) = if pts.is_empty() {
            (100.0, 1e5)
        } else {
            (xmin / 2.0, xmax * 2.0)
        };
        let ymax = pts.iter().map(|p| p.1).fold(500_000.0, f64::max) * 1.15;
        let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Kozmo engine rounds/s, in-memory store ({})", self.machine.commit),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..ymax)?;
        chart
            .configure_mesh()
            .x_desc("executions in flight")
            .y_desc("handle rounds/s")
            .x_label_formatter(&|x| thousands(*x))
            .y_label_formatter(&|y| thousands(*y))
            .draw()?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))?
            .label("measured")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart.draw_series(pts.iter().map(|(x, y)| Circle::new((*x, *y), 4, BLUE.filled())))?;
        chart
            .draw_series(LineSeries::new(
                [(xmin, 500_000.0), (xmax, 500_000.0)],
                RED.stroke_width(1),
            ))?
            .label("goal P2: 500,000 rounds/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// `; N µs CPU each` (the process's CPU time per completion), or nothing.
fn cpu_each(r: &super::http::HttpRate) -> String {
    r.cpu_each()
        .map_or(String::new(), |c| format!("; {} CPU each", duration(c)))
}

/// The `http` part's rows: each a ratio against the in-process engine of the same run.
fn http_rows(http: &Result<HttpResults, String>) -> Vec<Row> {
    let h = match http {
        Ok(h) => h,
        Err(why) => {
            return vec![row(
                "HTTP submit → Succeeded / in-process",
                format!("not measured: {why}"),
                "",
                None,
            )]
        }
    };
    let mut rows = Vec::new();
    for r in &h.single {
        let ratio = r.per_second() / h.engine_per_second;
        let (goal, met) = if r.connections == 64 {
            ("≥ 0.5", Some(ratio >= 0.5))
        } else {
            ("", None)
        };
        rows.push(row(
            format!("HTTP completions/s, {} connection(s) / in-process", r.connections),
            format!(
                "{ratio:.2} ({}/s vs {}/s; {} executions{})",
                thousands(r.per_second()),
                thousands(h.engine_per_second),
                thousands(r.executions as f64),
                cpu_each(r)
            ),
            goal,
            met,
        ));
    }
    let r = &h.ranged;
    rows.push(row(
        format!(
            "HTTP completions/s, {} connections, an id range each / in-process, {} threads, same ids",
            r.connections, r.connections
        ),
        format!(
            "{:.2} ({}/s vs {}/s; {:.2} of the in-process batched rate{})",
            r.per_second() / h.ranged_engine_per_second,
            thousands(r.per_second()),
            thousands(h.ranged_engine_per_second),
            r.per_second() / h.engine_per_second,
            cpu_each(r)
        ),
        "",
        None,
    ));
    let p50 = h.http_p50 / h.engine_p50;
    rows.push(row(
        "HTTP submit → Succeeded p50, 1 connection / in-process",
        format!("{p50:.2}× ({} vs {})", duration(h.http_p50), duration(h.engine_p50)),
        "≤ 1.3×",
        Some(p50 <= 1.3),
    ));
    let b = h.batch.per_second() / h.engine_per_second;
    rows.push(row(
        "HTTP batch endpoint completions/s / in-process",
        format!(
            "{b:.2} ({}/s vs {}/s; {} per request, {} connections{})",
            thousands(h.batch.per_second()),
            thousands(h.engine_per_second),
            h.batch.per_request,
            h.batch.connections,
            cpu_each(&h.batch)
        ),
        "≥ 0.8",
        Some(b >= 0.8),
    ));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(duration(2.5), "2.50 s");
        assert_eq!(duration(0.0025), "2.50 ms");
        assert_eq!(duration(0.0000025), "2.5 µs");
        assert_eq!(duration(0.000_000_044), "44.0 ns");
    }
}
