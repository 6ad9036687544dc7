//! The daemon's side of a child's control connection: its log records go
//! to the daemon's logger under target `plugin::<id>`, and the long-lived
//! handles the plugin holds (refresh signals, metrics, the enqueue owner)
//! are looked up in [`Handles`], which outlive any one child process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use kozmo_interface::metadata::NamespacedName;
use kozmo_interface::metrics::MetricSink;
use kozmo_interface::{EnqueueOwner, MetricsScope, Result, SignalAsync};
use kozmo_isolation_protocol::{read_frame, Frame, LogRecord, MetricKind, MetricOp, ProtocolError};

use super::supervisor::Generation;
use super::wire;
use kozmo_engine::sync::lock;

/// Longest line of a child's stdout/stderr kept as one log record.
const MAX_LINE: u64 = 16 << 10;

/// The daemon's objects behind the handles a plugin holds.
pub struct Handles {
    target: Mutex<String>,
    enqueue: Mutex<Arc<dyn EnqueueOwner>>,
    signals: Mutex<Signals>,
    metrics: Mutex<Metrics>,
}

#[derive(Default)]
struct Signals {
    by_handle: HashMap<u64, Arc<dyn SignalAsync>>,
    by_execution: HashMap<String, u64>,
    next: u64,
}

#[derive(Default)]
struct Metrics {
    sinks: Vec<Arc<dyn MetricSink>>,
    by_name: HashMap<String, u64>,
}

impl Handles {
    /// Handles of the plugins `label` hosts.
    pub fn new(label: &str, enqueue: Arc<dyn EnqueueOwner>) -> Self {
        Handles {
            target: Mutex::new(format!("plugin::{label}")),
            enqueue: Mutex::new(enqueue),
            signals: Mutex::default(),
            metrics: Mutex::default(),
        }
    }

    /// The log target of the plugin's records: `plugin::<id>`.
    pub fn target(&self) -> String {
        lock(&self.target).clone()
    }

    /// Names the plugins once the child said which they are.
    pub fn set_label(&self, label: &str) {
        *lock(&self.target) = format!("plugin::{label}");
    }

    /// The enqueue owner the loader's setup context gave (the plugin's
    /// enqueue calls go to it).
    pub fn set_enqueue_owner(&self, owner: Arc<dyn EnqueueOwner>) {
        *lock(&self.enqueue) = owner;
    }

    /// The handle of `execution`'s refresh indicator (one per execution,
    /// kept until its finalize).
    pub fn signal_handle(&self, execution: &str, signal: Arc<dyn SignalAsync>) -> u64 {
        let mut s = lock(&self.signals);
        if let Some(&h) = s.by_execution.get(execution) {
            s.by_handle.insert(h, signal);
            return h;
        }
        s.next += 1;
        let h = s.next;
        s.by_handle.insert(h, signal);
        s.by_execution.insert(execution.to_string(), h);
        h
    }

    /// Drops `execution`'s refresh indicator (after its finalize).
    pub fn forget(&self, execution: &str) {
        let mut s = lock(&self.signals);
        if let Some(h) = s.by_execution.remove(execution) {
            s.by_handle.remove(&h);
        }
    }

    /// Registers a metric in `scope` (below `path`), or finds the one a
    /// previous process of the same plugin registered.
    pub fn metric(&self, scope: &dyn MetricsScope, metric: &MetricSpec<'_>) -> Result<u64> {
        let key = format!("{:?}:{}:{}", metric.kind, metric.path.join("/"), metric.name);
        let mut m = lock(&self.metrics);
        if let Some(&h) = m.by_name.get(&key) {
            return Ok(h);
        }
        let sink = register(scope, metric.path, metric)?;
        let h = m.sinks.len() as u64;
        m.sinks.push(sink);
        m.by_name.insert(key, h);
        Ok(h)
    }

    fn metric_op(&self, handle: u64, op: MetricOp, value: f64) {
        let sink = lock(&self.metrics).sinks.get(handle as usize).cloned();
        match sink {
            Some(s) => match op {
                MetricOp::Add => s.add(value),
                MetricOp::Set => s.set(value),
                MetricOp::Observe => s.observe(value),
            },
            None => log::debug!(target: &self.target(), "unknown metric handle {handle}"),
        }
    }

    fn signal(&self, handle: u64) {
        let signal = lock(&self.signals).by_handle.get(&handle).cloned();
        if let Some(s) = signal {
            s.signal();
        }
    }

    fn enqueue(&self, owner_json: &str) -> Result<()> {
        let owner: NamespacedName = wire::parse(owner_json, "enqueue owner")?;
        let enqueue = lock(&self.enqueue).clone();
        enqueue.enqueue(&owner)
    }

    /// Logs `record` under this plugin's target.
    pub fn log(&self, r: &LogRecord) {
        let level = log::Level::iter()
            .nth(usize::from(r.level.clamp(1, 5)) - 1)
            .unwrap_or(log::Level::Warn);
        self.log_line(level, &r.target, &r.message);
    }

    /// Logs one line of the child's (or its plugin's) output.
    pub fn log_line(&self, level: log::Level, origin: &str, message: &str) {
        let target = self.target();
        let meta = log::Metadata::builder().level(level).target(&target).build();
        if level <= log::max_level() && log::logger().enabled(&meta) {
            log::logger().log(
                &log::Record::builder()
                    .metadata(meta)
                    .args(format_args!("{origin}: {message}"))
                    .build(),
            );
        }
    }
}

/// A metric a plugin registers.
pub struct MetricSpec<'a> {
    /// Which kind.
    pub kind: MetricKind,
    /// The sub-scopes below the plugin's scope.
    pub path: &'a [String],
    /// Its name in the innermost scope.
    pub name: &'a str,
    /// Its help text.
    pub help: &'a str,
    /// Histogram buckets (empty = defaults).
    pub buckets: &'a [f64],
}

/// Registers `m` in the sub-scope `path` of `scope`.
fn register(scope: &dyn MetricsScope, path: &[String], m: &MetricSpec<'_>) -> Result<Arc<dyn MetricSink>> {
    if let Some((first, rest)) = path.split_first() {
        return register(&*scope.sub_scope(first), rest, m);
    }
    Ok(match m.kind {
        MetricKind::Counter => scope.counter(m.name, m.help)?.into_sink(),
        MetricKind::Gauge => scope.gauge(m.name, m.help)?.into_sink(),
        MetricKind::Histogram => scope.histogram(m.name, m.help, m.buckets)?.into_sink(),
    })
}

/// Reads `gen`'s control connection until it closes; a frame that has no
/// business there kills the child.
pub fn serve_control(gen: Arc<Generation>, mut reader: UnixStream, handles: Arc<Handles>) {
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut reader, &mut buf) {
            Ok(Frame::Log(r)) => handles.log(&r),
            Ok(Frame::Signal { handle }) => handles.signal(handle),
            Ok(Frame::Metric { handle, op, value }) => handles.metric_op(handle, op, value),
            Ok(Frame::Enqueue { id, owner_json }) => {
                let result = handles.enqueue(&owner_json).map_err(|e| wire::to_wire(&e));
                gen.send_control(&Frame::Enqueued { id, result });
            }
            Ok(other) => {
                gen.kill(format!(
                    "killed: it sent a {} frame on its control connection",
                    other.name()
                ));
                return;
            }
            Err(ProtocolError::Closed | ProtocolError::Io(_)) => return,
            Err(e) => {
                gen.kill(format!("killed: its control connection carried a bad frame ({e})"));
                return;
            }
        }
    }
}

/// Forwards a child's stdout or stderr, line by line, to the logger; the
/// last line is kept in `last` (it often says why the child died).
pub fn forward_output(
    stream: impl Read,
    origin: &'static str,
    level: log::Level,
    handles: &Handles,
    last: Option<&LastWords>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if text.is_empty() {
                    continue;
                }
                handles.log_line(level, origin, text);
                if let Some(last) = last {
                    last.push(text);
                }
            }
        }
    }
}

/// What a child last wrote to stderr: it often says why it died.
#[derive(Default)]
pub struct LastWords(Mutex<Words>);

#[derive(Default)]
struct Words {
    /// The last line that was not a backtrace note.
    last: Option<String>,
    /// The allocation failure reported, if any (a backtrace may follow it).
    out_of_memory: Option<String>,
}

impl LastWords {
    fn push(&self, line: &str) {
        let mut w = lock(&self.0);
        if line.contains("memory allocation of") {
            w.out_of_memory = Some(line.to_string());
        }
        if !line.starts_with("note: ") {
            w.last = Some(line.to_string());
        }
    }

    /// The line that explains the end best: an allocation failure if one
    /// was reported, else the last line.
    pub fn get(&self) -> Option<String> {
        let w = lock(&self.0);
        w.out_of_memory.clone().or_else(|| w.last.clone())
    }
}
