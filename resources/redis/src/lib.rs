//! The Kozmo resource manager on Redis (docs/redis.md): a
//! [`ResourceBackend`] whose state lives in one Redis server, so every
//! daemon sharing it enforces the same quotas.
//!
//! * **Atomic**: [`allocate`](ResourceBackend::allocate) and
//!   [`release`](ResourceBackend::release) are each ONE Lua script (EVALSHA,
//!   EVAL when the server does not know it yet), so the check and the grant
//!   cannot interleave with another daemon's: a quota is never exceeded,
//!   whatever the number of allocating threads and nodes.
//! * **The same answers as the in-memory manager**: granted, granted again
//!   (not new) for a held token, exhausted, never (quota or constraint 0),
//!   whole-segment scope matching; checked by `kozmo_engine::resources::contract`.
//! * **Tokens belong to executions, not to daemons**: a token records its
//!   execution and attempt; the daemon that drives the execution next
//!   (after a restart, or another node after node loss) finds them with
//!   `held_by`, and Finalize releases them.
//! * **Wake-ups**: a release wakes the executions waiting on its namespace:
//!   this node's at once through the listener, other nodes' through Redis
//!   pub/sub (channel `<prefix>released`; a node that misses a message,
//!   e.g. while reconnecting, finds the slot at its waiter's next resync).
//!
//! Key layout (prefix `P`, default [`DEFAULT_PREFIX`], set with `?prefix=` in
//! the URL so several Kozmo clusters can share one server):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `Pquotas` | hash | namespace → quota |
//! | `Ptokens:<namespace>` | hash | token → `<attempt>:<execution id>` |
//! | `Pexec:<execution id>` | hash | `<len(namespace)>:<namespace><token>` → attempt |
//! | `Pwaiters:<namespace>` | set | executions told "exhausted" and not granted since |
//! | `Preleased` | channel | `{"node", "waiters"}` after a release that had waiters |
//!
//! The scripts touch keys they compute (`Pexec:…` from a token's owner), so
//! the server must be a single Redis (or a primary with replicas), not a
//! Redis Cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use kozmo_engine::model::TokenRow;
use kozmo_engine::resources::{
    Allocation, NamespaceMembers, NamespaceUsage, ReleaseListener, ResourceBackend, ScopeConstraint, TokenOwner,
};
use redis::{Connection, Script};

/// Id of the manager on Redis (first segment of every namespace).
pub const REDIS_MANAGER_ID: &str = "redisresourcemanager";

/// The key prefix when the URL gives none.
pub const DEFAULT_PREFIX: &str = "kozmo:";

/// How long connecting, and each command, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept for reuse.
const POOL_MAX: usize = 16;

/// Whether `s` names Redis (`redis://`; `rediss://` is refused with a
/// clear error by [`RedisResources::open`]).
pub fn is_redis_url(s: &str) -> bool {
    let lower = s.trim().to_ascii_lowercase();
    lower.starts_with("redis://") || lower.starts_with("rediss://")
}

/// `url` with its password replaced by `***` (for logs and errors).
pub fn redact(url: &str) -> String {
    match password_span(url) {
        Some((start, end)) => format!("{}***{}", &url[..start], &url[end..]),
        None => url.to_string(),
    }
}

/// Byte range of the user-info password of a `scheme://user:pw@host` URL.
fn password_span(url: &str) -> Option<(usize, usize)> {
    let rest_at = url.find("://")? + 3;
    let rest = &url[rest_at..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..auth_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some((rest_at + colon + 1, rest_at + at))
}

const ALLOCATE: &str = r"
-- KEYS: quotas, tokens:<ns>, exec:<id>, waiters:<ns>
-- ARGV: ns, token, execution id, attempt, n, then n (prefix, value) pairs
local quota = redis.call('HGET', KEYS[1], ARGV[1])
if not quota then return {0, ''} end
quota = tonumber(quota)
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return {2, ''} end
if quota <= 0 then return {3, tostring(quota)} end
local n = tonumber(ARGV[5])
for i = 1, n do
  if tonumber(ARGV[5 + 2 * i]) <= 0 then return {4, tostring(i)} end
end
local full = redis.call('HLEN', KEYS[2]) >= quota
if not full and n > 0 then
  local held = redis.call('HKEYS', KEYS[2])
  for i = 1, n do
    local p = ARGV[4 + 2 * i]
    local cap = tonumber(ARGV[5 + 2 * i])
    local count = 0
    for _, t in ipairs(held) do
      if string.sub(t, 1, #p) == p then count = count + 1 end
    end
    if count >= cap then full = true; break end
  end
end
if full then
  redis.call('SADD', KEYS[4], ARGV[3])
  return {5, ''}
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4] .. ':' .. ARGV[3])
redis.call('HSET', KEYS[3], #ARGV[1] .. ':' .. ARGV[1] .. ARGV[2], ARGV[4])
redis.call('SREM', KEYS[4], ARGV[3])
return {1, ''}
";

const RELEASE: &str = r"
-- KEYS: tokens:<ns>, waiters:<ns>, released channel
-- ARGV: ns, token, key prefix, node id
local owner = redis.call('HGET', KEYS[1], ARGV[2])
if not owner then return {'0'} end
redis.call('HDEL', KEYS[1], ARGV[2])
local id = string.sub(owner, string.find(owner, ':', 1, true) + 1)
redis.call('HDEL', ARGV[3] .. 'exec:' .. id, #ARGV[1] .. ':' .. ARGV[1] .. ARGV[2])
local waiters = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
if #waiters > 0 then
  redis.call('PUBLISH', KEYS[3], cjson.encode({node = ARGV[4], waiters = waiters}))
end
local out = {'1'}
for _, w in ipairs(waiters) do out[#out + 1] = w end
return out
";

const RESTORE: &str = r"
-- KEYS: quotas, tokens:<ns>, exec:<id>
-- ARGV: ns, token, execution id, attempt
-- Returns 1 when the namespace had no quota (it gets 0: no new grants).
local created = redis.call('HSETNX', KEYS[1], ARGV[1], 0)
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4] .. ':' .. ARGV[3])
  redis.call('HSET', KEYS[3], #ARGV[1] .. ':' .. ARGV[1] .. ARGV[2], ARGV[4])
end
return created
";

/// What the subscriber thread shares with the backend.
struct Shared {
    node: String,
    listener: OnceLock<ReleaseListener>,
}

/// The resource manager on Redis.
pub struct RedisResources {
    id: String,
    prefix: String,
    /// The URL with its password hidden.
    target: String,
    /// The password, scrubbed from any error text.
    password: Option<String>,
    client: redis::Client,
    pool: Mutex<Vec<Connection>>,
    allocate: Script,
    release: Script,
    restore: Script,
    shared: Arc<Shared>,
}

#[derive(serde::Deserialize)]
struct Released {
    node: String,
    waiters: Vec<String>,
}

impl RedisResources {
    /// Connects to the server `url` names (`redis://[:password@]host[:port][/db][?prefix=P]`),
    /// checks it answers, writes `quotas` (fully qualified namespace →
    /// quota; a namespace another node registered keeps its entry, the
    /// same one gets this node's value) and starts the subscriber that
    /// wakes this node's waiters on other nodes' releases. Errors name the
    /// server with its password hidden, and never carry the password.
    pub fn open(url: &str, id: &str, quotas: &BTreeMap<String, i64>) -> Result<Self, String> {
        let target = redact(url.trim());
        let password = password_span(url.trim()).map(|(s, e)| url.trim()[s..e].to_string());
        let scrub = |msg: String| match &password {
            Some(p) if !p.is_empty() => msg.replace(p.as_str(), "***"),
            _ => msg,
        };
        let (client_url, prefix) =
            split_prefix(url.trim()).map_err(|e| scrub(format!("invalid Redis URL {target}: {e}")))?;
        if client_url.to_ascii_lowercase().starts_with("rediss://") {
            return Err(format!(
                "invalid Redis URL {target}: TLS (rediss://) is not supported yet; use redis://"
            ));
        }
        let client =
            redis::Client::open(client_url.as_str()).map_err(|e| scrub(format!("invalid Redis URL {target}: {e}")))?;
        let backend = RedisResources {
            id: id.to_string(),
            prefix,
            target,
            password: password.filter(|p| !p.is_empty()),
            client,
            pool: Mutex::new(Vec::new()),
            allocate: Script::new(ALLOCATE),
            release: Script::new(RELEASE),
            restore: Script::new(RESTORE),
            shared: Arc::new(Shared {
                node: format!(
                    "{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos()
                ),
                listener: OnceLock::new(),
            }),
        };
        backend
            .with_conn(|c| {
                let mut pipe = redis::pipe();
                pipe.atomic();
                pipe.cmd("PING").ignore();
                for (ns, q) in quotas {
                    pipe.cmd("HSET").arg(backend.key("quotas")).arg(ns).arg(q).ignore();
                }
                pipe.query::<()>(c)
            })
            .map_err(|e| format!("cannot reach Redis at {}: {e}", backend.target))?;
        backend.subscribe();
        Ok(backend)
    }

    /// The key prefix (`?prefix=` in the URL, else [`DEFAULT_PREFIX`]).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The server, password hidden.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn scrub(&self, msg: String) -> String {
        match &self.password {
            Some(p) => msg.replace(p.as_str(), "***"),
            None => msg,
        }
    }

    fn connect(&self) -> redis::RedisResult<Connection> {
        let c = self.client.get_connection_with_timeout(TIMEOUT)?;
        c.set_read_timeout(Some(TIMEOUT))?;
        c.set_write_timeout(Some(TIMEOUT))?;
        Ok(c)
    }

    /// Runs `f` on a pooled connection (a new one if none is idle); a
    /// connection that failed is dropped. Errors are one line without the
    /// password.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| self.scrub(e.to_string()))?,
        };
        match f(&mut conn) {
            Ok(v) => {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                if pool.len() < POOL_MAX {
                    pool.push(conn);
                }
                Ok(v)
            }
            Err(e) => Err(self.scrub(e.to_string())),
        }
    }

    /// [`Self::with_conn`] once more on a fresh connection if the first
    /// failed: for reads only (a script may have run before its answer
    /// was lost).
    fn read<T>(&self, f: impl Fn(&mut Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        self.with_conn(&f).or_else(|_| self.with_conn(&f))
    }

    /// Starts the thread that wakes this node's waiters when another node
    /// releases; it ends (within a second) when the backend is dropped.
    fn subscribe(&self) {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let client = self.client.clone();
        let channel = self.key("released");
        let target = self.target.clone();
        let spawned = std::thread::Builder::new()
            .name("kozmo-redis-released".into())
            .spawn(move || subscriber(client, channel, weak, target));
        if let Err(e) = spawned {
            log::error!("resources: cannot start the Redis subscriber ({e}); waiters of other nodes' releases wake at their resync");
        }
    }

    fn wake(&self, waiters: &[String]) {
        if let Some(l) = self.shared.listener.get() {
            for w in waiters {
                l(w);
            }
        }
    }
}

/// `url` without a `prefix=` query parameter, and that prefix.
fn split_prefix(url: &str) -> Result<(String, String), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), DEFAULT_PREFIX.to_string()));
    };
    let mut prefix = DEFAULT_PREFIX.to_string();
    let mut kept = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("prefix", v)) => {
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
                    return Err(format!(
                        "prefix {v:?}: give letters, digits and - _ . : only (e.g. ?prefix=kozmo-prod:)"
                    ));
                }
                prefix = v.to_string();
            }
            _ => kept.push(kv),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, prefix))
}

fn subscriber(client: redis::Client, channel: String, shared: Weak<Shared>, target: String) {
    let mut warned = false;
    while shared.strong_count() > 0 {
        let conn = client.get_connection_with_timeout(TIMEOUT).and_then(|c| {
            c.set_read_timeout(Some(Duration::from_secs(1)))?;
            Ok(c)
        });
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    log::warn!(
                        "resources: Redis subscriber cannot connect to {target} ({:?}); retrying",
                        e.kind()
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let mut pubsub = conn.as_pubsub();
        if pubsub.subscribe(&channel).is_err() {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        warned = false;
        loop {
            match pubsub.get_message() {
                Ok(msg) => {
                    let Some(shared) = shared.upgrade() else { return };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    let Ok(r) = serde_json::from_str::<Released>(&payload) else {
                        continue;
                    };
                    if r.node == shared.node {
                        continue; // woken at once by the release itself
                    }
                    if let Some(l) = shared.listener.get() {
                        for w in &r.waiters {
                            l(w);
                        }
                    }
                }
                Err(e) if e.is_timeout() => {
                    if shared.strong_count() == 0 {
                        return;
                    }
                }
                Err(_) => break, // reconnect
            }
        }
    }
}

/// `<len(ns)>:<ns><token>` → (ns, token).
fn split_field(field: &str) -> Option<(String, String)> {
    let (len, rest) = field.split_once(':')?;
    let len: usize = len.parse().ok()?;
    (rest.len() >= len && rest.is_char_boundary(len)).then(|| (rest[..len].to_string(), rest[len..].to_string()))
}

impl ResourceBackend for RedisResources {
    fn id(&self) -> &str {
        &self.id
    }

    fn allocate(
        &self,
        namespace: &str,
        token: &str,
        constraints: &[ScopeConstraint],
        owner: &TokenOwner,
    ) -> Result<Allocation, String> {
        let (code, detail): (i64, String) = self
            .with_conn(|c| {
                let mut inv = self.allocate.prepare_invoke();
                inv.key(self.key("quotas"))
                    .key(self.key(&format!("tokens:{namespace}")))
                    .key(self.key(&format!("exec:{}", owner.execution_id)))
                    .key(self.key(&format!("waiters:{namespace}")))
                    .arg(namespace)
                    .arg(token)
                    .arg(&owner.execution_id)
                    .arg(owner.attempt)
                    .arg(constraints.len());
                for sc in constraints {
                    inv.arg(&sc.prefix).arg(sc.value);
                }
                inv.invoke(c)
            })
            .map_err(|e| format!("Redis at {}: allocate [{token}] in [{namespace}]: {e}", self.target))?;
        match code {
            0 => Err(format!("Requested resource [{namespace}] not found")),
            1 => Ok(Allocation::Granted { new: true }),
            2 => Ok(Allocation::Granted { new: false }),
            3 => Ok(Allocation::Never(format!(
                "the quota of resource [{namespace}] is {detail}: token [{token}] can never be granted"
            ))),
            4 => {
                let c = detail
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| constraints.get(i.wrapping_sub(1)))
                    .ok_or_else(|| format!("Redis at {}: unexpected constraint index {detail}", self.target))?;
                Ok(Allocation::Never(format!(
                    "the constraint on [{}] in resource [{namespace}] is {}: token [{token}] can never be granted",
                    c.prefix.trim_end_matches(':'),
                    c.value
                )))
            }
            5 => Ok(Allocation::Exhausted),
            other => Err(format!("Redis at {}: unexpected allocate answer {other}", self.target)),
        }
    }

    fn release(&self, namespace: &str, token: &str) -> Result<bool, String> {
        let answer: Vec<String> = self
            .with_conn(|c| {
                self.release
                    .key(self.key(&format!("tokens:{namespace}")))
                    .key(self.key(&format!("waiters:{namespace}")))
                    .key(self.key("released"))
                    .arg(namespace)
                    .arg(token)
                    .arg(&self.prefix)
                    .arg(&self.shared.node)
                    .invoke(c)
            })
            .map_err(|e| format!("Redis at {}: release [{token}] in [{namespace}]: {e}", self.target))?;
        let held = answer.first().is_some_and(|h| h == "1");
        if held {
            self.wake(&answer[1..]);
        }
        Ok(held)
    }

    fn held_by(&self, execution_id: &str) -> Vec<(String, String, u32)> {
        self.try_held_by(execution_id).unwrap_or_else(|e| {
            log::error!("resources: {e}");
            Vec::new()
        })
    }

    fn try_held_by(&self, execution_id: &str) -> Result<Vec<(String, String, u32)>, String> {
        let key = self.key(&format!("exec:{execution_id}"));
        let all = self
            .read(|c| redis::cmd("HGETALL").arg(&key).query::<BTreeMap<String, u32>>(c))
            .map_err(|e| {
                format!(
                    "cannot read the tokens of execution {execution_id} from Redis at {}: {e}",
                    self.target
                )
            })?;
        Ok(all
            .into_iter()
            .filter_map(|(field, attempt)| split_field(&field).map(|(ns, tok)| (ns, tok, attempt)))
            .collect())
    }

    fn restore(&self, tokens: &[TokenRow]) {
        for t in tokens {
            let created = self.with_conn(|c| {
                self.restore
                    .key(self.key("quotas"))
                    .key(self.key(&format!("tokens:{}", t.namespace)))
                    .key(self.key(&format!("exec:{}", t.execution_id)))
                    .arg(&t.namespace)
                    .arg(&t.token)
                    .arg(&t.execution_id)
                    .arg(t.attempt)
                    .invoke::<i64>(c)
            });
            match created {
                Ok(1) => log::warn!(
                    "resource namespace [{}] of a persisted token is no longer registered; keeping the token",
                    t.namespace
                ),
                Ok(_) => {}
                Err(e) => log::error!(
                    "resources: cannot restore token [{}] in [{}] to Redis at {}: {e}",
                    t.token,
                    t.namespace,
                    self.target
                ),
            }
        }
    }

    fn set_release_listener(&self, listener: Box<dyn Fn(&str) + Send + Sync>) {
        let _ = self.shared.listener.set(listener);
    }

    fn in_use(&self, namespace: &str) -> usize {
        let key = self.key(&format!("tokens:{namespace}"));
        self.read(|c| redis::cmd("HLEN").arg(&key).query::<usize>(c))
            .unwrap_or_else(|e| {
                log::error!("resources: Redis at {}: {e}", self.target);
                0
            })
    }

    fn members(&self) -> Vec<NamespaceMembers> {
        let got = self.read(|c| {
            let quotas: BTreeMap<String, i64> = redis::cmd("HGETALL").arg(self.key("quotas")).query(c)?;
            let mut pipe = redis::pipe();
            for ns in quotas.keys() {
                pipe.cmd("HVALS").arg(self.key(&format!("tokens:{ns}")));
                pipe.cmd("SMEMBERS").arg(self.key(&format!("waiters:{ns}")));
            }
            let lists: Vec<Vec<String>> = if quotas.is_empty() { Vec::new() } else { pipe.query(c)? };
            Ok(quotas
                .into_keys()
                .zip(lists.chunks(2))
                .map(|(namespace, l)| {
                    // A holder's value is `<attempt>:<execution id>`.
                    let mut holders: Vec<String> = l[0]
                        .iter()
                        .map(|v| v.split_once(':').map_or(v.as_str(), |(_, id)| id).to_string())
                        .collect();
                    holders.sort();
                    holders.dedup();
                    let mut waiters = l[1].clone();
                    waiters.sort();
                    NamespaceMembers {
                        namespace,
                        holders,
                        waiters,
                    }
                })
                .collect::<Vec<_>>())
        });
        got.unwrap_or_else(|e| {
            log::error!(
                "resources: cannot read who holds and waits from Redis at {}: {e}",
                self.target
            );
            Vec::new()
        })
    }

    fn usage(&self) -> Vec<NamespaceUsage> {
        let got = self.read(|c| {
            let quotas: BTreeMap<String, i64> = redis::cmd("HGETALL").arg(self.key("quotas")).query(c)?;
            let mut pipe = redis::pipe();
            for ns in quotas.keys() {
                pipe.cmd("HLEN").arg(self.key(&format!("tokens:{ns}")));
                pipe.cmd("SCARD").arg(self.key(&format!("waiters:{ns}")));
            }
            let counts: Vec<usize> = if quotas.is_empty() { Vec::new() } else { pipe.query(c)? };
            Ok(quotas
                .into_iter()
                .zip(counts.chunks(2))
                .map(|((namespace, quota), n)| NamespaceUsage {
                    namespace,
                    quota,
                    in_use: n[0],
                    waiting: n[1],
                })
                .collect::<Vec<_>>())
        });
        got.unwrap_or_else(|e| {
            log::error!("resources: cannot read the usage from Redis at {}: {e}", self.target);
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests;
