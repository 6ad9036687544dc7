//! The frames and what they carry.

use serde::{Deserialize, Serialize};

/// Bumped whenever a frame changes shape or meaning (3: a
/// [`Frame::NewConnection`] carries two descriptors, not one; 4:
/// [`Outcome::HandledPlain`]); the daemon and its child are the same
/// binary, so a mismatch means a replaced executable.
pub const PROTOCOL_VERSION: u32 = 4;

/// The most calls one [`Frame::Batch`] may carry.
pub const MAX_BATCH_CALLS: usize = 256;

/// One message on a connection (see the crate documentation for which
/// frame may appear where).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Control, child → daemon, first frame: the library opened (or not).
    Hello(Hello),
    /// Control, child → daemon: a log record of the child or the plugin.
    Log(LogRecord),
    /// Control, child → daemon: a refresh indicator was signalled.
    Signal {
        /// The handle the daemon gave for [`Service::RefreshIndicator`].
        handle: u64,
    },
    /// Control, child → daemon: a metric handle was used.
    Metric {
        /// The handle the daemon gave for [`Service::RegisterMetric`].
        handle: u64,
        /// What to do.
        op: MetricOp,
        /// With what.
        value: f64,
    },
    /// Control, child → daemon: the loader's enqueue owner was called.
    Enqueue {
        /// Matches the daemon's [`Frame::Enqueued`].
        id: u64,
        /// The owner (`NamespacedName`) as JSON.
        owner_json: String,
    },
    /// Control, daemon → child: the answer to [`Frame::Enqueue`].
    Enqueued {
        /// The request's id.
        id: u64,
        /// What the owner said.
        result: Result<(), WireError>,
    },
    /// Control, daemon → child: a new call connection. Two descriptors are
    /// attached to this frame's bytes, in this order: the socket the child
    /// reads the connection's frames from, and the socket it writes its
    /// own to (one socket pair per direction).
    NewConnection,
    /// Call, daemon → child: start a call.
    Call(Call),
    /// Call, daemon → child: the answer to the child's last [`Frame::Service`].
    Reply(Result<Value, WireError>),
    /// Call, child → daemon: the plugin calls a host service.
    Service(Service),
    /// Call, child → daemon: the call is over.
    Done(Outcome),
    /// Call, daemon → child: several calls (1 to [`MAX_BATCH_CALLS`]) run
    /// one after the other, each exactly as if it came in its own
    /// [`Frame::Call`]: its services, then its [`Frame::Done`].
    Batch(Vec<Call>),
}

impl Frame {
    /// The frame's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Log(_) => "Log",
            Frame::Signal { .. } => "Signal",
            Frame::Metric { .. } => "Metric",
            Frame::Enqueue { .. } => "Enqueue",
            Frame::Enqueued { .. } => "Enqueued",
            Frame::NewConnection => "NewConnection",
            Frame::Call(_) => "Call",
            Frame::Reply(_) => "Reply",
            Frame::Service(_) => "Service",
            Frame::Done(_) => "Done",
            Frame::Batch(_) => "Batch",
        }
    }
}

/// The child's first frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the child.
    pub protocol: u32,
    /// The child's process id.
    pub pid: u32,
    /// The opened library, or why it could not be opened.
    pub library: Result<Library, OpenFailure>,
}

/// A library the child opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Library {
    /// Its ABI epoch.
    pub abi_epoch: u32,
    /// Its ABI minor.
    pub abi_minor: u32,
    /// The interface version it was built with.
    pub interface_version: String,
    /// Its entries.
    pub entries: Vec<EntryInfo>,
}

/// One plugin entry of the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryInfo {
    /// The plugin id.
    pub id: String,
    /// The task types it registers.
    pub task_types: Vec<String>,
    /// Whether it is the default plugin.
    pub is_default: bool,
}

/// Why the child could not open the library: the loader's problem kind
/// (its kebab-case name) and one-line message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenFailure {
    /// e.g. `layout-mismatch`.
    pub kind: String,
    /// The problem's message.
    pub message: String,
}

/// A log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub level: u8,
    /// The record's own target (the plugin's module path).
    pub target: String,
    /// The formatted message.
    pub message: String,
}

/// What a metric handle does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricOp {
    /// Counter or gauge: add.
    Add,
    /// Gauge: set.
    Set,
    /// Histogram: one observation.
    Observe,
}

/// The kind of metric registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// A call the daemon makes into the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Call {
    /// Run the loader of an entry (`SetupContext` services follow).
    Load {
        /// The entry's id.
        entry: String,
        /// `SetupContext::owner_kind`.
        owner_kind: String,
    },
    /// `Plugin::handle` of a loaded entry.
    Handle {
        /// The entry's id.
        entry: String,
    },
    /// `Plugin::abort`.
    Abort {
        /// The entry's id.
        entry: String,
    },
    /// `Plugin::finalize`.
    Finalize {
        /// The entry's id.
        entry: String,
    },
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The loader ran: the plugin's id and its properties as JSON.
    Loaded(Result<(String, String), WireError>),
    /// `handle` returned: the transition as JSON.
    Handled(Result<String, WireError>),
    /// `abort` or `finalize` returned.
    Finished(Result<(), WireError>),
    /// `handle` returned a transition whose phase info has nothing but
    /// scalars (no reason, no error, no task info beyond its two times):
    /// the common result, sent without JSON. Any other transition is
    /// [`Outcome::Handled`].
    HandledPlain(PlainTransition),
}

/// A transition made of scalars only (see [`Outcome::HandledPlain`]); the
/// daemon checks every value as it would the JSON form's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainTransition {
    /// The transition type (`TransitionType::as_u8`).
    pub ttype: u8,
    /// The phase value.
    pub phase: i8,
    /// The phase version.
    pub version: u32,
    /// `cleanup_on_failure`.
    pub cleanup_on_failure: bool,
    /// `None`: no task info; else its `occurred_at` and `reported_at`.
    pub times: Option<(Option<WireTime>, Option<WireTime>)>,
}

/// A time at or after the Unix epoch (earlier times take the JSON form,
/// which refuses them as it always did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTime {
    /// Whole seconds since the epoch.
    pub secs: u64,
    /// Nanoseconds; the daemon refuses 1e9 or more.
    pub nanos: u32,
}

/// A host service the plugin calls during a call. JSON fields hold the
/// interface's own serde form of the named type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Service {
    /// `ResourceManager::id`.
    ResourceManagerId,
    /// `ResourceManager::allocate_resource`.
    Allocate {
        /// `ResourceNamespace` JSON.
        namespace_json: String,
        /// The token.
        token: String,
        /// `ResourceConstraintsSpec` JSON.
        constraints_json: String,
    },
    /// `ResourceManager::release_resource`.
    Release {
        /// `ResourceNamespace` JSON.
        namespace_json: String,
        /// The token.
        token: String,
    },
    /// `SecretManager::get` (task and setup contexts).
    Secret {
        /// The secret's key.
        key: String,
    },
    /// `task_refresh_indicator`: answered with a handle.
    RefreshIndicator,
    /// `max_dataset_size_bytes`.
    MaxDatasetSize,
    /// `DataStore::read_raw`.
    DataRead {
        /// The reference.
        reference: String,
    },
    /// `DataStore::write_raw`.
    DataWrite {
        /// The reference.
        reference: String,
        /// The object.
        bytes: Vec<u8>,
    },
    /// `DataStore::head`.
    DataHead {
        /// The reference.
        reference: String,
    },
    /// `DataStore::delete`.
    DataDelete {
        /// The reference.
        reference: String,
    },
    /// `PluginStateReader::state_version`.
    StateVersion,
    /// `PluginStateReader::get_bytes`.
    StateGet,
    /// `PluginStateWriter::put_bytes`.
    StatePut {
        /// The state's version.
        version: u8,
        /// The state.
        bytes: Vec<u8>,
    },
    /// `PluginStateWriter::reset`.
    StateReset,
    /// `TaskReader::read`.
    TaskRead,
    /// `TaskReader::path`.
    TaskPath,
    /// `InputReader::input_prefix`.
    InputPrefix,
    /// `InputReader::input_path`.
    InputPath,
    /// `InputReader::get`.
    InputGet,
    /// `task_execution_metadata` (a `MetadataRecord` as JSON).
    Metadata,
    /// `OutputWriter::output_prefix`.
    OutputPrefix,
    /// `OutputWriter::raw_output_prefix`.
    RawOutputPrefix,
    /// `OutputWriter::checkpoint_prefix`.
    CheckpointPrefix,
    /// `OutputWriter::previous_checkpoint_prefix`.
    PreviousCheckpointPrefix,
    /// `OutputWriter::put_outputs`.
    PutOutputs {
        /// `LiteralMap` JSON.
        outputs_json: String,
    },
    /// `OutputWriter::put_error`.
    PutError {
        /// `ExecutionError` JSON.
        error_json: String,
        /// Whether it is recoverable.
        recoverable: bool,
    },
    /// `Catalog::get`.
    CatalogGet {
        /// `CatalogKey` JSON.
        key_json: String,
    },
    /// `Catalog::put`.
    CatalogPut {
        /// `CatalogKey` JSON.
        key_json: String,
        /// `LiteralMap` JSON.
        outputs_json: String,
    },
    /// `EventsRecorder::record_raw`.
    RecordRaw {
        /// `PhaseInfo` JSON.
        info_json: String,
    },
    /// `MetricsScope::counter/gauge/histogram` (setup): answered with a handle.
    RegisterMetric {
        /// Which.
        kind: MetricKind,
        /// The sub-scope path below the plugin's scope.
        scope: Vec<String>,
        /// The name.
        name: String,
        /// The help text.
        help: String,
        /// Histogram buckets (empty = defaults).
        buckets: Vec<f64>,
    },
    /// `ResourceRegistrar::register_resource_quota` (setup).
    RegisterQuota {
        /// `ResourceNamespace` JSON.
        namespace_json: String,
        /// The quota.
        quota: i64,
    },
}

/// A successful service answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Nothing.
    Unit,
    /// A string (or JSON text).
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A number.
    Int(i64),
    /// An optional size.
    Size(Option<u64>),
    /// Plugin state: version and bytes.
    State(u8, Option<Vec<u8>>),
    /// A handle for later control frames.
    Handle(u64),
}

/// A `PluginError` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Its code.
    pub code: String,
    /// Its message.
    pub message: String,
    /// `ErrorKind::as_u8`.
    pub kind: u8,
    /// Whether trying again may help.
    pub retryable: bool,
}
