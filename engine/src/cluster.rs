//! The engine's side of several daemons on one store
//! ([`crate::store::Cluster`]): the node thread renews this node's lease,
//! hands abort requests made through other nodes to the executions this
//! node holds, drops the ones another node took over, and claims the ones
//! nobody holds, and once a lease period releases the tokens of ended
//! executions (`stray_tokens`). Commits refused by the store's fencing
//! check are dropped by the committer ([`Engine::drop_lost`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::NodeRow;
use crate::sync::lock;
use crate::{Active, Engine, Next};

/// Executions claimed per query; a full batch is followed by another at once.
const CLAIM_BATCH: usize = 256;

/// The task types live other nodes serve, as of the last heartbeat.
#[derive(Debug, Default)]
pub(crate) struct ServedElsewhere {
    types: HashSet<String>,
    /// A live node has a default plugin (it takes every task type).
    any: bool,
}

impl ServedElsewhere {
    /// Whether a live other node serves `task_type`.
    pub(crate) fn serves(&self, task_type: &str) -> bool {
        self.any || self.types.contains(task_type)
    }

    /// From the nodes' rows (their `plugins_json`: `[{"task_types": […], "default": bool}]`).
    fn of(nodes: &[NodeRow], me: &str) -> Self {
        #[derive(serde::Deserialize)]
        struct P {
            #[serde(default)]
            task_types: Vec<String>,
            #[serde(default)]
            default: bool,
        }
        let mut s = ServedElsewhere::default();
        for n in nodes.iter().filter(|n| n.alive && n.node_id != me) {
            for p in serde_json::from_str::<Vec<P>>(&n.info.plugins_json).unwrap_or_default() {
                s.any |= p.default;
                s.types.extend(p.task_types);
            }
        }
        s
    }
}

impl Engine {
    /// The node thread (only with a store several daemons share): a
    /// heartbeat and a claim every quarter lease (at most every second),
    /// until the engine stops.
    pub(crate) fn node_loop(self: Arc<Self>) {
        let Some(cluster) = self.store.cluster() else { return };
        let tick = (cluster.lease() / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let no_crashes = HashMap::new();
        let mut swept = Instant::now();
        while !self.sched.is_stopping() {
            if swept.elapsed() >= cluster.lease() {
                self.release_stray_tokens(cluster);
                swept = Instant::now();
            }
            match cluster.heartbeat(&self.cfg.node) {
                Ok(beat) => {
                    self.lose(&beat.lost);
                    for (id, reason) in &beat.aborts {
                        self.abort_requested(id, reason);
                    }
                }
                Err(e) => log::warn!("node {}: heartbeat failed (retrying): {e}", cluster.node_id()),
            }
            match cluster.nodes() {
                Ok(nodes) => *lock(&self.served_elsewhere) = ServedElsewhere::of(&nodes, cluster.node_id()),
                Err(e) => log::warn!(
                    "node {}: reading the other nodes failed (retrying): {e}",
                    cluster.node_id()
                ),
            }
            while !self.sched.is_stopping() {
                match cluster.claim(CLAIM_BATCH) {
                    Ok(claimed) => {
                        let n = claimed.len();
                        if n > 0 {
                            log::info!("node {}: claimed {n} executions no live node held", cluster.node_id());
                        }
                        for rec in claimed {
                            self.adopt(rec, &no_crashes);
                        }
                        if n < CLAIM_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        log::warn!("node {}: claiming executions failed (retrying): {e}", cluster.node_id());
                        break;
                    }
                }
            }
            std::thread::sleep(tick);
        }
    }

    /// Another node holds these executions now: each is dropped when a
    /// worker next takes it (at once if it waits; after its step if one
    /// runs, whose commit the store then refuses).
    fn lose(&self, ids: &[String]) {
        let mut untracked = Vec::new();
        for id in ids {
            let tracked = self
                .sched
                .with_job(id, |_, shared| shared.lost.store(true, Ordering::Release));
            if tracked.is_some() {
                log::warn!("execution {id}: another node took it over (this node's lease ran out); dropped here");
                self.sched.enqueue(id);
            } else {
                lock(&self.unbound).remove(id);
                untracked.push(id.clone());
            }
        }
        if let (Some(c), false) = (self.store.cluster(), untracked.is_empty()) {
            c.forget(&untracked);
        }
    }

    /// Drops an execution another node holds now (its job is out: taken by
    /// a worker, or back from a refused commit).
    pub(crate) fn drop_lost(&self, a: Box<Active>) {
        let id = a.record.id.clone();
        self.sched.done(a, Next::Done);
        if let Some(c) = self.store.cluster() {
            c.forget(std::slice::from_ref(&id));
        }
    }

    /// An abort requested through another node for an execution this
    /// node holds: as [`crate::EngineHandle::abort`] does locally.
    fn abort_requested(&self, id: &str, reason: &str) {
        let fresh = self.sched.with_job(id, |a, shared| match a {
            Some(a) if a.record.abort_requested.is_none() => {
                a.record.abort_requested = Some(reason.to_string());
                true
            }
            Some(_) => false,
            None => {
                let mut pending = lock(&shared.abort);
                let fresh = pending.is_none();
                pending.get_or_insert_with(|| reason.to_string());
                fresh
            }
        });
        if fresh == Some(true) {
            self.sched.enqueue(id);
        }
    }
}
