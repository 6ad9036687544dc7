//! Several daemons on one database ([`kozmo_engine::store::Cluster`]).
//!
//! * A node joins ([`PostgresStore::join_cluster`]) under its id: a session
//!   advisory lock on the id (a second daemon with the same id refuses to
//!   start) and a row in `kozmo_nodes` with its lease, renewed by its
//!   heartbeat. Leases are compared on the server's clock (`kozmo_now_ms()`).
//! * An execution belongs to `executions.owner` under `lease_generation`.
//!   A submission is owned by the node it arrived at if that node serves
//!   its task type (else by nobody). A node claims, with
//!   `FOR UPDATE SKIP LOCKED`, active executions of the task types it
//!   serves that nobody owns or whose owner's lease ran out, adding one to
//!   their generation.
//! * Fencing: every step commit updates the execution's row only where
//!   `owner` is this node, the generation is the one it claimed with, and
//!   this node's lease still holds — in the commit's own transaction, so a
//!   claim either waits for it or comes after. A commit with a row that
//!   fails it is refused: rows held by another node are reported through
//!   `take_fenced` (the engine drops those executions); a lease that only
//!   ran out makes the commit fail until the heartbeat takes it again.
//!   Every event records the node and generation that wrote it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::pg::{describe, err, get, PostgresStore, TERMINAL_SQL};
use kozmo_engine::model::ExecutionRecord;
use kozmo_engine::store::{Beat, Cluster, NodeInfo, NodeRow, StoreError, StoreResult};
use kozmo_engine::sync::lock;

/// How long [`PostgresStore::join_cluster`] tries for the node id's lock
/// (a daemon killed a moment ago holds it until the server sees its
/// connection close).
pub const NODE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Who this node is.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node id (unique among the daemons on the database).
    pub node_id: String,
    /// How long its lease holds without a heartbeat.
    pub lease: Duration,
    /// The task types it serves; `None`: all (a default plugin).
    pub task_types: Option<Vec<String>>,
}

/// A node's state in its store.
pub(crate) struct PgCluster {
    pub(crate) spec: NodeSpec,
    /// The connection holding the node id's advisory lock.
    _lock: Mutex<Client>,
    /// Executions this node holds: id -> generation; `LOST` until the
    /// engine forgets it.
    held: Mutex<HashMap<String, i64>>,
    /// Executions a refused commit found held by another node.
    fenced: Mutex<Vec<String>>,
    /// The next claim also takes executions owned by this node that it
    /// does not hold (at start: those of its previous run; after its lease
    /// ran out: any it dropped that nobody took).
    reclaim_own: AtomicBool,
}

/// The generation of a held execution another node took.
const LOST: i64 = -1;

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl PgCluster {
    /// The generation this node holds `id` under (`None`: not held or lost).
    pub(crate) fn generation(&self, id: &str) -> Option<i64> {
        lock(&self.held).get(id).copied().filter(|g| *g != LOST)
    }

    /// Whether this node serves `task_type`.
    pub(crate) fn serves(&self, task_type: &str) -> bool {
        self.spec
            .task_types
            .as_ref()
            .is_none_or(|t| t.iter().any(|x| x == task_type))
    }

    /// New executions this node owns (generation 1 from their insert).
    pub(crate) fn hold_new(&self, ids: impl IntoIterator<Item = String>) {
        lock(&self.held).extend(ids.into_iter().map(|id| (id, 1)));
    }

    /// Executions that ended: no longer held.
    pub(crate) fn ended(&self, ids: &[String]) {
        let mut held = lock(&self.held);
        for id in ids {
            held.remove(id);
        }
    }

    /// A refused commit found these held by another node.
    pub(crate) fn fence(&self, ids: Vec<String>) {
        let mut held = lock(&self.held);
        for id in &ids {
            if let Some(g) = held.get_mut(id) {
                *g = LOST;
            }
        }
        lock(&self.fenced).extend(ids);
    }
}

impl PostgresStore {
    /// Joins the daemons on this database as node `spec.node_id`: takes
    /// the node id's advisory lock (refuses if another daemon runs under
    /// that id), writes the node's row with a fresh lease, and from then on
    /// inserts, claims and commits as a node ([`Cluster`]). Call once,
    /// before the engine starts.
    pub fn join_cluster(&self, spec: NodeSpec, info: &NodeInfo) -> StoreResult<()> {
        let mut c = self.config().connect(NoTls).map_err(|e| {
            StoreError(format!(
                "cannot connect to PostgreSQL at {}: {}",
                self.target(),
                describe(&e)
            ))
        })?;
        let deadline = Instant::now() + NODE_LOCK_WAIT;
        let got = loop {
            let got: bool = c
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended('kozmo.node:' || $1, 0))",
                    &[&spec.node_id],
                )
                .and_then(|r| r.try_get(0))
                .map_err(err)?;
            if got || Instant::now() >= deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !got {
            return Err(StoreError(format!(
                "another kozmo daemon runs as node {} on the database at {}: stop it, or give this one another \
                 node id (--node-id, KOZMO_NODE_ID or node_id in kozmo.toml)",
                spec.node_id,
                self.target()
            )));
        }
        c.execute(
            "INSERT INTO kozmo_nodes (node_id, started_at, heartbeat_at, lease_until, info) \
             VALUES ($1, kozmo_now_ms(), kozmo_now_ms(), kozmo_now_ms() + $2, $3) \
             ON CONFLICT (node_id) DO UPDATE SET started_at = EXCLUDED.started_at, \
             heartbeat_at = EXCLUDED.heartbeat_at, lease_until = EXCLUDED.lease_until, info = EXCLUDED.info",
            &[&spec.node_id, &ms(spec.lease), &info_json(info)],
        )
        .map_err(err)?;
        let joined = PgCluster {
            spec,
            _lock: Mutex::new(c),
            held: Mutex::new(HashMap::new()),
            fenced: Mutex::new(Vec::new()),
            reclaim_own: AtomicBool::new(true),
        };
        self.set_cluster(joined)
    }

    fn node(&self) -> StoreResult<&PgCluster> {
        self.pg_cluster()
            .ok_or_else(|| StoreError("this store has not joined a cluster".into()))
    }

    /// Claims (see [`Cluster::claim`]); `limit` `None`: all there are.
    pub(crate) fn claim_up_to(&self, limit: Option<usize>) -> StoreResult<Vec<ExecutionRecord>> {
        let node = self.node()?;
        let own = node.reclaim_own.swap(false, Ordering::AcqRel);
        let held: Vec<String> = if own {
            lock(&node.held).keys().cloned().collect()
        } else {
            Vec::new()
        };
        let limit = limit.map_or(i64::MAX, |l| l.min(i64::MAX as usize) as i64);
        let sql = format!(
            "WITH c AS (SELECT e.id FROM executions e WHERE NOT e.{TERMINAL_SQL} \
             AND ($2::text[] IS NULL OR e.task_type = ANY($2)) \
             AND (e.owner IS NULL \
                  OR ($3 AND e.owner = $1 AND NOT (e.id = ANY($4))) \
                  OR (e.owner <> $1 AND NOT EXISTS (SELECT 1 FROM kozmo_nodes n \
                      WHERE n.node_id = e.owner AND n.lease_until > kozmo_now_ms()))) \
             ORDER BY e.created_at, e.id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             UPDATE executions e SET owner = $1, lease_generation = e.lease_generation + 1 \
             FROM c WHERE e.id = c.id RETURNING e.id, e.lease_generation"
        );
        let mut conn = self.conn()?;
        let rows = conn.query(&sql, &[&node.spec.node_id, &node.spec.task_types, &own, &held, &limit]);
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                node.reclaim_own.fetch_or(own, Ordering::AcqRel);
                return Err(e);
            }
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut claimed = Vec::with_capacity(rows.len());
        {
            let mut h = lock(&node.held);
            for r in &rows {
                let id: String = get(r, 0)?;
                h.insert(id.clone(), get(r, 1)?);
                claimed.push(id);
            }
        }
        drop(conn);
        self.records_of(&claimed)
    }
}

/// The node's self-description as stored.
fn info_json(info: &NodeInfo) -> String {
    let plugins: serde_json::Value = serde_json::from_str(&info.plugins_json).unwrap_or(serde_json::Value::Null);
    serde_json::json!({ "plugins": plugins, "version": info.version, "address": info.address }).to_string()
}

fn info_from_json(text: &str) -> NodeInfo {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    NodeInfo {
        plugins_json: v.get("plugins").map(|p| p.to_string()).unwrap_or_else(|| "null".into()),
        version: v
            .get("version")
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string(),
        address: v.get("address").and_then(|x| x.as_str()).map(str::to_string),
    }
}

impl Cluster for PostgresStore {
    fn node_id(&self) -> &str {
        self.pg_cluster().map_or("", |n| n.spec.node_id.as_str())
    }

    fn lease(&self) -> Duration {
        self.pg_cluster().map_or(Duration::from_secs(10), |n| n.spec.lease)
    }

    fn heartbeat(&self, info: &NodeInfo) -> StoreResult<Beat> {
        let node = self.node()?;
        let me = &node.spec.node_id;
        let mut conn = self.conn()?;
        // The lease as it was (ran out?) and renewed, in one statement.
        let row = conn.query_opt(
            "WITH old AS (SELECT lease_until FROM kozmo_nodes WHERE node_id = $1 FOR UPDATE) \
             UPDATE kozmo_nodes n SET heartbeat_at = kozmo_now_ms(), lease_until = kozmo_now_ms() + $2, info = $3 \
             FROM old WHERE n.node_id = $1 RETURNING old.lease_until > kozmo_now_ms()",
            &[me, &ms(node.spec.lease), &info_json(info)],
        )?;
        let held_on = match row {
            Some(r) => get::<bool>(&r, 0)?,
            None => {
                conn.execute(
                    "INSERT INTO kozmo_nodes (node_id, started_at, heartbeat_at, lease_until, info) \
                     VALUES ($1, kozmo_now_ms(), kozmo_now_ms(), kozmo_now_ms() + $2, $3) \
                     ON CONFLICT (node_id) DO NOTHING",
                    &[me, &ms(node.spec.lease), &info_json(info)],
                )?;
                false
            }
        };
        let mut beat = Beat::default();
        if !held_on {
            // The lease ran out: others may have claimed some of ours.
            let (ids, gens): (Vec<String>, Vec<i64>) = lock(&node.held)
                .iter()
                .filter(|(_, g)| **g != LOST)
                .map(|(id, g)| (id.clone(), *g))
                .unzip();
            if !ids.is_empty() {
                let rows = conn.query(
                    "SELECT h.id FROM unnest($1::text[], $2::bigint[]) AS h(id, gen) \
                     LEFT JOIN executions e ON e.id = h.id \
                     WHERE e.id IS NULL OR e.owner IS DISTINCT FROM $3 OR e.lease_generation <> h.gen",
                    &[&ids, &gens, me],
                )?;
                let mut held = lock(&node.held);
                for r in &rows {
                    let id: String = get(r, 0)?;
                    if let Some(g) = held.get_mut(&id) {
                        *g = LOST;
                    }
                    beat.lost.push(id);
                }
            }
            node.reclaim_own.store(true, Ordering::Release);
            log::warn!(
                "node {me}: its lease had run out (a pause or a lost connection); {} of its executions went to other \
                 nodes",
                beat.lost.len()
            );
        }
        let sql = format!(
            "SELECT id, abort_requested FROM executions WHERE owner = $1 AND abort_requested IS NOT NULL \
             AND NOT {TERMINAL_SQL}"
        );
        for r in conn.query(&sql, &[me])? {
            let id: String = get(&r, 0)?;
            if node.generation(&id).is_some() {
                beat.aborts.push((id, get(&r, 1)?));
            }
        }
        Ok(beat)
    }

    fn claim(&self, limit: usize) -> StoreResult<Vec<ExecutionRecord>> {
        self.claim_up_to(Some(limit))
    }

    fn ended_of(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT id FROM executions WHERE id = ANY($1) AND {TERMINAL_SQL}");
        let rows = self.conn()?.query(&sql, &[&ids])?;
        rows.iter().map(|r| get(r, 0)).collect()
    }

    fn take_fenced(&self) -> Vec<String> {
        self.pg_cluster()
            .map(|n| std::mem::take(&mut *lock(&n.fenced)))
            .unwrap_or_default()
    }

    fn forget(&self, ids: &[String]) {
        if let Some(n) = self.pg_cluster() {
            n.ended(ids);
        }
    }

    fn leave(&self) -> StoreResult<()> {
        let node = self.node()?;
        // Only what this node still holds under its generation.
        let (ids, gens): (Vec<String>, Vec<i64>) = lock(&node.held)
            .iter()
            .filter(|(_, g)| **g != LOST)
            .map(|(id, g)| (id.clone(), *g))
            .unzip();
        let mut conn = self.conn()?;
        conn.execute(
            "UPDATE executions e SET owner = NULL FROM unnest($1::text[], $2::bigint[]) AS h(id, gen) \
             WHERE e.id = h.id AND e.owner = $3 AND e.lease_generation = h.gen",
            &[&ids, &gens, &node.spec.node_id],
        )?;
        conn.execute(
            "UPDATE kozmo_nodes SET lease_until = kozmo_now_ms() WHERE node_id = $1",
            &[&node.spec.node_id],
        )?;
        lock(&node.held).clear();
        Ok(())
    }

    fn nodes(&self) -> StoreResult<Vec<NodeRow>> {
        let sql = format!(
            "SELECT n.node_id, n.started_at, n.heartbeat_at, n.lease_until, n.lease_until > kozmo_now_ms(), n.info, \
             (SELECT COUNT(*) FROM executions e WHERE e.owner = n.node_id AND NOT e.{TERMINAL_SQL}) \
             FROM kozmo_nodes n ORDER BY n.node_id"
        );
        self.conn()?
            .query(&sql, &[])?
            .iter()
            .map(|r| {
                Ok(NodeRow {
                    node_id: get(r, 0)?,
                    started_at_ms: get(r, 1)?,
                    heartbeat_at_ms: get(r, 2)?,
                    lease_until_ms: get(r, 3)?,
                    alive: get(r, 4)?,
                    info: info_from_json(&get::<String>(r, 5)?),
                    executions: get::<i64>(r, 6)?.max(0) as u64,
                })
            })
            .collect()
    }
}

/// The ids among `ids` whose rows this node no longer holds under the
/// generation it claimed them with (for a refused commit).
pub(crate) fn not_held(conn: &mut crate::pg::Conn, node: &PgCluster, ids: &[String]) -> StoreResult<Vec<String>> {
    let (ids, gens): (Vec<String>, Vec<i64>) = ids
        .iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .map(|id| (id.clone(), node.generation(id).unwrap_or(LOST)))
        .unzip();
    let rows = conn.query(
        "SELECT h.id FROM unnest($1::text[], $2::bigint[]) AS h(id, gen) LEFT JOIN executions e ON e.id = h.id \
         WHERE e.id IS NULL OR e.owner IS DISTINCT FROM $3 OR e.lease_generation <> h.gen",
        &[&ids, &gens, &node.spec.node_id],
    )?;
    rows.iter().map(|r| get(r, 0)).collect()
}
