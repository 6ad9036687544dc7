//! Several daemons on one store: what a store shared by nodes offers the
//! engine ([`Cluster`], reached through [`super::Store::cluster`]).
//!
//! Each node has an id and a lease on itself, renewed by its heartbeat. An
//! execution belongs to one node (`owner`) under a fencing generation that
//! goes up every time a node claims it. A node claims executions nobody
//! holds: new ones whose plugin the submitting node lacks, ones released by
//! a node that stopped cleanly, and ones of a node whose lease ran out.
//! Every step commit checks, in its own transaction, that this node still
//! holds the execution under the generation it claimed it with and that
//! its lease has not run out; a commit that fails the check is refused (the
//! store names the executions in [`Cluster::take_fenced`]) and the engine
//! drops them: a paused or partitioned node never commits for an execution
//! after losing it.

use std::time::Duration;

use crate::model::ExecutionRecord;

use super::StoreResult;

/// What a node tells the others about itself at each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The plugins it has loaded, as JSON (`[{"id":…,"task_types":[…]}]`).
    pub plugins_json: String,
    /// The daemon's version.
    pub version: String,
    /// The HTTP address it listens on, if known.
    pub address: Option<String>,
}

/// A node as the store knows it ([`Cluster::nodes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// The node id.
    pub node_id: String,
    /// When it started (ms since the epoch, the store's clock).
    pub started_at_ms: i64,
    /// Its last heartbeat (ms, the store's clock).
    pub heartbeat_at_ms: i64,
    /// Until when its lease holds (ms, the store's clock).
    pub lease_until_ms: i64,
    /// Whether the lease still held when the store answered.
    pub alive: bool,
    /// Active executions it holds.
    pub executions: u64,
    /// What it said about itself.
    pub info: NodeInfo,
}

/// What a heartbeat found ([`Cluster::heartbeat`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Beat {
    /// Executions this node held that another node claimed meanwhile (its
    /// lease had run out): the engine drops them without a further step.
    pub lost: Vec<String>,
    /// Abort requests (id, reason) for executions this node holds, made
    /// through any node.
    pub aborts: Vec<(String, String)>,
}

/// The cluster side of a store shared by several daemons.
pub trait Cluster: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// How long a lease holds without a heartbeat.
    fn lease(&self) -> Duration;
    /// Renews this node's lease (taking it again if it had run out),
    /// records `info`, and reports executions lost meanwhile and abort
    /// requests for the ones it holds.
    fn heartbeat(&self, info: &NodeInfo) -> StoreResult<Beat>;
    /// Claims up to `limit` active executions that no live node holds and
    /// whose task type this node serves, each under a new fencing
    /// generation; they come with their task state, as
    /// [`super::Store::load_active`] gives them.
    fn claim(&self, limit: usize) -> StoreResult<Vec<ExecutionRecord>>;
    /// The executions a refused commit found held by another node (or
    /// under a lease that ran out), taken once: the engine drops them.
    fn take_fenced(&self) -> Vec<String>;
    /// The engine no longer tracks `ids` (dropped after a loss): they may
    /// be claimed again.
    fn forget(&self, ids: &[String]);
    /// A clean stop: gives every held execution back (others may claim
    /// them at once) and ends this node's lease.
    fn leave(&self) -> StoreResult<()>;
    /// Every node that has a row, live or not.
    fn nodes(&self) -> StoreResult<Vec<NodeRow>>;
    /// Those of `ids` the store shows ended (terminal). An id it does not
    /// hold is not among them: it may belong to another cluster sharing
    /// the resource manager.
    fn ended_of(&self, ids: &[String]) -> StoreResult<Vec<String>>;
}
