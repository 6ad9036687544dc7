//! The API's request and response bodies, owned by the API: what clients
//! send and read, with the OpenAPI schema generated from them
//! (`/v1/openapi.json`). The service maps the engine's types onto these.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// An execution's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum PhaseName {
    /// Submitted, no round yet.
    Queued,
    /// Rounds running.
    Running,
    /// Finishing a success (finalize).
    Succeeding,
    /// Finishing a failure (finalize).
    Failing,
    /// Between attempts.
    Retrying,
    /// Finishing an abort (abort, finalize).
    Aborting,
    /// Ended well.
    Succeeded,
    /// Ended badly.
    Failed,
    /// Ended by an abort.
    Aborted,
}

impl PhaseName {
    /// The name as the API writes it.
    pub fn as_str(self) -> &'static str {
        PHASES[self as usize]
    }
}

/// Phases an execution goes through, as the API writes them.
pub const PHASES: [&str; 9] = [
    "Queued",
    "Running",
    "Succeeding",
    "Failing",
    "Retrying",
    "Aborting",
    "Succeeded",
    "Failed",
    "Aborted",
];

/// An error an execution ended with (`code`, `message`, whose fault).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionErrorBody {
    /// Short machine-readable code (`NonZeroExit`, `TimeoutExpired`, ...).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// `USER`, `SYSTEM` or `UNKNOWN`.
    pub kind: String,
}

/// The last handler error (plugin error, panic, invalid transition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HandlerErrorBody {
    /// What went wrong.
    pub message: String,
    /// Whether the plugin panicked.
    pub panic: bool,
    /// The attempt it happened in.
    pub attempt: u32,
    /// When (RFC 3339).
    pub at: String,
}

/// One execution's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Execution {
    /// The execution's id.
    pub id: String,
    /// Its phase (one of [`PHASES`]).
    #[schema(value_type = PhaseName)]
    pub phase: String,
    /// The task type.
    pub task_type: String,
    /// The current attempt, from 0.
    pub attempt: u32,
    /// SYSTEM failures so far.
    pub system_failures: u32,
    /// The generated name of the current attempt.
    pub generated_name: String,
    /// The plugin phase of the current attempt (`PhaseRunning`, ...).
    pub plugin_phase: String,
    /// Its version.
    pub plugin_phase_version: u32,
    /// The error a failed or aborted execution ended with.
    pub error: Option<ExecutionErrorBody>,
    /// The last handler error.
    pub last_handler_error: Option<HandlerErrorBody>,
    /// Consecutive handler errors in the current attempt.
    pub consecutive_handler_errors: u32,
    /// A client's abort request not yet carried out.
    pub abort_requested: Option<String>,
    /// The plugin the execution is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_id: Option<String>,
    /// Why a non-terminal execution is not progressing right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// When it was submitted (RFC 3339).
    pub created_at: String,
    /// When its state last changed (RFC 3339).
    pub updated_at: String,
    /// When its current attempt started (RFC 3339).
    pub attempt_started_at: String,
}

/// A page of executions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionPage {
    /// The executions, ordered by id.
    pub items: Vec<Execution>,
    /// The `after` of the next page; `null` on the last page.
    pub next: Option<String>,
}

/// `GET /v1/executions` parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only executions in this phase.
    pub phase: Option<PhaseName>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Executions with ids after this one.
    pub after: Option<String>,
}

/// One event of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Global sequence number (increasing).
    pub seq: i64,
    /// The execution.
    pub execution_id: String,
    /// What happened (`submitted`, `task`, `phase`, `terminal`, ...).
    pub kind: String,
    /// The attempt.
    pub attempt: u32,
    /// Phase name (the plugin's for task events, the execution's otherwise).
    pub phase: String,
    /// Phase version.
    pub version: u32,
    /// When it happened (unix ms).
    pub occurred_at_ms: i64,
    /// When the daemon recorded it (unix ms).
    pub reported_at_ms: i64,
    /// The event's details.
    #[schema(value_type = Object)]
    pub body: Value,
}

/// An execution's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// In order.
    pub items: Vec<Event>,
}

/// An execution's outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Outputs {
    /// Literals by name; `null` until the execution succeeded.
    #[schema(value_type = Option<Object>)]
    pub outputs: Value,
}

/// `POST /v1/executions/{id}/abort` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortRequest {
    /// Why (default: "aborted by the API").
    pub reason: Option<String>,
}

/// `POST /v1/prune` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Prune terminal executions last updated longer ago than this (`7d`,
    /// `12h`, `30m`, `90s`), replacing the configured keep times for this
    /// pass; `max_executions` still applies.
    pub older_than: Option<String>,
    /// Only report what would be removed.
    pub dry_run: Option<bool>,
}

/// `POST /v1/prune` answer: what one retention pass removed (or, dry,
/// would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneReport {
    /// Nothing was removed: this is what would be.
    pub dry_run: bool,
    /// Executions removed.
    pub executions: u64,
    /// Rows removed per table (dry run: not counted).
    pub rows: PrunedRows,
    /// Data store directories removed (inputs, outputs, raw outputs).
    pub blob_dirs: u64,
    /// Bytes of the files in them.
    pub blob_bytes: u64,
    /// Bytes the database file gave back to the file system.
    pub db_bytes_reclaimed: u64,
    /// Earliest last update among the removed executions (ms since the epoch).
    pub oldest_removed_ms: Option<i64>,
    /// Latest last update among them.
    pub newest_removed_ms: Option<i64>,
    /// Last update of the oldest terminal execution kept.
    pub oldest_kept_ms: Option<i64>,
    /// Store transactions that deleted executions.
    pub batches: u64,
    /// How long the pass took.
    pub elapsed_ms: u64,
    /// The first removed ids (at most 100).
    pub ids: Vec<String>,
}

/// Rows a prune removed, per table of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrunedRows {
    /// Executions.
    pub executions: u64,
    /// Execution specs no kept execution shares.
    pub specs: u64,
    /// Task states.
    pub task_states: u64,
    /// Events.
    pub events: u64,
    /// Outputs.
    pub outputs: u64,
    /// Error documents.
    pub error_documents: u64,
    /// Plugin crash records.
    pub plugin_crashes: u64,
    /// Resource tokens left over.
    pub resource_tokens: u64,
    /// Catalog entries no kept execution can have written.
    pub catalog: u64,
}

/// A loaded plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PluginBody {
    /// Its id.
    pub id: String,
    /// The task types it registers.
    pub task_types: Vec<String>,
    /// Whether it takes task types nobody registered.
    pub is_default: bool,
    /// Its library file.
    pub file: String,
    /// The `kozmo-interface` version it was built with.
    pub interface_version: String,
    /// The ABI version (epoch.minor) it was built for.
    pub abi: String,
    /// Whether it runs in a child process of its own (`--isolate`): when
    /// isolation names it or another plugin of its library.
    #[serde(default)]
    pub isolated: bool,
}

/// A daemon among those sharing a store (`GET /v1/nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeBody {
    /// The node id (`--node-id`).
    pub node_id: String,
    /// Whether this is the daemon that answered.
    pub this_node: bool,
    /// Whether its lease holds (it sent a heartbeat within `lease_secs`).
    pub alive: bool,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its last heartbeat (RFC 3339).
    pub last_heartbeat: String,
    /// Until when its lease holds (RFC 3339).
    pub lease_until: String,
    /// The active executions it holds.
    pub executions: u64,
    /// The plugins it has loaded.
    pub plugins: Vec<NodePlugin>,
    /// Its version.
    pub version: String,
    /// The address it listens on, as it was configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A plugin a node has loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodePlugin {
    /// Its id.
    pub id: String,
    /// The task types it registers.
    pub task_types: Vec<String>,
}

/// `/healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `ok` or `degraded`.
    pub status: String,
    /// Short kind of the problem when degraded (`storage_full`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Since when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// A bad item of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemErrorBody {
    /// Index in the request's array.
    pub index: usize,
    /// JSON path of the bad field inside the item.
    pub path: Option<String>,
    /// What is wrong.
    pub detail: String,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Short kind: `bad_request`, `not_found`, `conflict`, `storage_full`, ...
    pub error: String,
    /// What is wrong and what to do.
    pub detail: String,
    /// JSON path of the bad field (400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Every bad item of a batch (400 of the batch endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ItemErrorBody>>,
}

/// One item's result in a batch answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchItemResult {
    /// Index in the request's array.
    pub index: usize,
    /// 201 created, 200 existed with the same body, else the item's error status.
    pub status: u16,
    /// The execution's id (201, 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The error kind (other statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What is wrong (other statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A batch answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One per item, in order.
    pub items: Vec<BatchItemResult>,
    /// How many were created.
    pub created: usize,
}

/// A task body: the task-file form of `examples/` (the template's fields at
/// the top level, `inputs`, `execution` for the execution metadata), or the
/// nested form `{template, inputs, metadata}`; plus an optional
/// `execution_id`. Fields not listed here are refused (400 naming them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    /// The task type; routes the task to a plugin.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._-]+$")]
    pub task_type: String,
    /// The execution's id (default: one is made).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub execution_id: Option<String>,
    /// The nested form: the task template (then `metadata` is the
    /// execution metadata and the template's fields are not at the top).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub template: Value,
    /// The task's identifier: project, domain, name, version.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub id: Value,
    /// Declared inputs and outputs.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub interface: Value,
    /// Input literals by name.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Task metadata: retries, timeout, interruptible, discoverable, cache_version.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Execution metadata: project, domain, node_id, labels, ...
    #[serde(default)]
    #[schema(value_type = Object)]
    pub execution: Value,
    /// Plugin-specific configuration (any JSON).
    #[serde(default)]
    pub custom: Value,
    /// A command: command, args, env; null or left out for none.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub container: Value,
}

/// Why an execution is not progressing right now
/// (`GET /v1/executions/{id}/wait`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WaitBody {
    /// The execution.
    pub id: String,
    /// Its phase.
    #[schema(value_type = PhaseName)]
    pub phase: String,
    /// Whether it waits for something (not running rounds, not finished).
    pub waiting: bool,
    /// What it waits for: `resources`, `plugin_not_loaded`, `plugin_call`,
    /// `abort_pending`, `queued`; `running` and `finished` when it does
    /// not wait.
    pub kind: String,
    /// Why, in one line (the plugin's reason for a resource wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The resource namespaces it waits for a token of.
    pub resources: Vec<ResourceWait>,
}

/// One namespace an execution waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceWait {
    /// Fully qualified namespace (`<manager>:<plugin>:<name>`).
    pub namespace: String,
    /// Tokens it can grant at once.
    pub quota: i64,
    /// Tokens granted now.
    pub in_use: u64,
    /// Executions waiting for it.
    pub waiting: u64,
    /// The execution's place among them, from 1, in order of submission
    /// (a freed token goes to the first waiter whose round asks again);
    /// `null` when the resource manager cannot list its waiters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Executions holding its tokens (at most 100; empty when unknown).
    pub holders: Vec<String>,
}

/// A resource namespace (`GET /v1/quotas`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaBody {
    /// Fully qualified namespace (`<manager>:<plugin>:<name>`).
    pub namespace: String,
    /// Tokens it can grant at once.
    pub quota: i64,
    /// Tokens granted now.
    pub in_use: u64,
    /// Executions waiting for a token.
    pub waiting: u64,
    /// Executions holding a token (at most 100).
    pub holders: Vec<String>,
    /// Executions waiting, in order of submission (at most 100).
    pub waiters: Vec<String>,
    /// Whether the resource manager lists holders and waiters (the
    /// in-memory one does; Redis: counts only).
    pub members_known: bool,
}

/// Every resource namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaList {
    /// Sorted by namespace.
    pub items: Vec<QuotaBody>,
}

/// A file an execution's plugin wrote in the data store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    /// Its path under the data store's root (`raw/<generated name>/stdout`):
    /// the `path` of `GET /v1/executions/{id}/file`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification (unix ms).
    pub modified_ms: i64,
}

/// The files of an execution (`GET /v1/executions/{id}/files`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    /// Sorted by path.
    pub items: Vec<FileEntry>,
    /// Whether more files exist than listed.
    pub truncated: bool,
}

/// `GET /v1/executions/{id}/file` parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The file's path under the data store's root, as
    /// `GET /v1/executions/{id}/files` lists it.
    #[param(min_length = 1, max_length = 1024)]
    pub path: String,
    /// First byte to return (default 0).
    #[param(minimum = 0)]
    pub offset: Option<u64>,
    /// Most bytes to return, 1 to 1048576 (default 1048576).
    #[param(minimum = 1, maximum = 1048576)]
    pub limit: Option<u32>,
}

/// A part of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileChunk {
    /// The bytes from `offset`.
    pub data: Vec<u8>,
    /// Where they start.
    pub offset: u64,
    /// The file's size.
    pub size: u64,
}
