//! The child's side of the control connection: one writer shared by every
//! thread, and the long-lived handles that use it (log records, refresh
//! signals, metric sinks, the enqueue owner) from any thread at any time.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use kozmo_interface::metadata::NamespacedName;
use kozmo_interface::metrics::MetricSink;
use kozmo_interface::{EnqueueOwner, PluginError, Result, SignalAsync};
use kozmo_isolation_protocol::{write_frame, Frame, LogRecord, MetricOp, WireError};

use crate::isolation::wire;
use kozmo_engine::sync::lock;

/// How long an enqueue waits for the daemon's answer.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// The control connection's writer and the enqueue requests in flight.
pub struct Control {
    writer: Mutex<(UnixStream, Vec<u8>)>,
    pending: Mutex<HashMap<u64, mpsc::Sender<std::result::Result<(), WireError>>>>,
    next: AtomicU64,
}

impl Control {
    /// Writes to `stream` (a clone of the control socket).
    pub fn new(stream: UnixStream) -> Self {
        Control {
            writer: Mutex::new((stream, Vec::new())),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Sends one frame; false if the daemon is gone.
    pub fn send(&self, frame: &Frame) -> bool {
        let mut w = lock(&self.writer);
        let (stream, buf) = &mut *w;
        write_frame(stream, frame, buf).is_ok()
    }

    /// Hands the daemon's answer to the waiting enqueue.
    pub fn deliver(&self, id: u64, result: std::result::Result<(), WireError>) {
        if let Some(tx) = lock(&self.pending).remove(&id) {
            let _ = tx.send(result);
        }
    }

    fn enqueue(&self, owner: &NamespacedName) -> Result<()> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        lock(&self.pending).insert(id, tx);
        let sent = self.send(&Frame::Enqueue {
            id,
            owner_json: wire::json(owner)?,
        });
        let answer = if sent {
            rx.recv_timeout(ENQUEUE_TIMEOUT).ok()
        } else {
            None
        };
        lock(&self.pending).remove(&id);
        match answer {
            Some(r) => r.map_err(wire::from_wire),
            None => Err(
                PluginError::system("IsolationLink", "the daemon did not answer an enqueue request").retryable(true),
            ),
        }
    }
}

/// The loader's enqueue owner.
pub struct ChildEnqueue(pub Arc<Control>);

impl EnqueueOwner for ChildEnqueue {
    fn enqueue(&self, owner: &NamespacedName) -> Result<()> {
        self.0.enqueue(owner)
    }
}

/// A task's refresh indicator.
pub struct ChildSignal {
    /// The daemon's handle.
    pub handle: u64,
    /// Where to send it.
    pub control: Arc<Control>,
}

impl SignalAsync for ChildSignal {
    fn signal(&self) {
        self.control.send(&Frame::Signal { handle: self.handle });
    }
}

/// A registered metric.
pub struct ChildSink {
    /// The daemon's handle.
    pub handle: u64,
    /// Where to send it.
    pub control: Arc<Control>,
}

impl ChildSink {
    fn op(&self, op: MetricOp, value: f64) {
        self.control.send(&Frame::Metric {
            handle: self.handle,
            op,
            value,
        });
    }
}

impl MetricSink for ChildSink {
    fn add(&self, value: f64) {
        self.op(MetricOp::Add, value);
    }
    fn set(&self, value: f64) {
        self.op(MetricOp::Set, value);
    }
    fn observe(&self, value: f64) {
        self.op(MetricOp::Observe, value);
    }
}

/// Forwards the child's log records (the plugin's included: the library
/// forwards them to this process's logger) to the daemon.
pub struct ChildLogger {
    control: Arc<Control>,
    level: log::LevelFilter,
}

impl ChildLogger {
    /// Installs the logger at `level` (the daemon's own maximum).
    pub fn install(control: Arc<Control>, level: log::LevelFilter) {
        if log::set_boxed_logger(Box::new(ChildLogger { control, level })).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for ChildLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.control.send(&Frame::Log(LogRecord {
                level: record.level() as usize as u8,
                target: record.target().to_string(),
                message: record.args().to_string(),
            }));
        }
    }
    fn flush(&self) {}
}
