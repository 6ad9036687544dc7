//! Resource manager (docs/semantics.md#resources).
//!
//! Start-up order: a [`ResourceManagerBuilder`] is a
//! [`ResourceRegistrar`] while plugins load (the loader hands each plugin a
//! proxy that prefixes `<manager id>:<entry id>:`), then [`build`] is called
//! once and the result is given to the engine. At run time the engine wraps
//! the manager in a per-round [`TaskResources`] proxy that prefixes
//! namespaces with `<manager id>:<plugin id>:` and tokens with
//! `ex:<project>:<domain>:<execution name>-`.
//!
//! [`InMemoryResources`] allocates atomically (one lock), is idempotent for
//! a granted token, counts constraints by whole segments (`ex:proj:`), and
//! answers a request that can never fit (quota or constraint 0) with
//! [`Allocation::Never`], which the engine turns into a permanent failure.
//! Granted tokens are persisted by the engine with the round that took them
//! and restored with [`ResourceBackend::restore`], so quotas survive restarts.
//!
//! Every backend (this one, `kozmo-resources-redis`) runs the `contract`
//! in its tests (built for this crate's tests and with the `contract`
//! feature), so their answers are the same.
//!
//! [`build`]: ResourceManagerBuilder::build

#[cfg(any(test, feature = "contract"))]
pub mod contract;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use kozmo_interface::{
    AllocationStatus, PluginError, ResourceConstraintsSpec, ResourceManager, ResourceNamespace, ResourceRegistrar,
    Result as PResult,
};

use crate::model::TokenRow;
use crate::sync::lock;

/// Id of the in-memory manager (first segment of every namespace).
pub const IN_MEMORY_MANAGER_ID: &str = "inmemoryresourcemanager";

/// Largest quota a plugin may register.
pub const DEFAULT_MAX_QUOTA: i64 = 1_000_000;

/// A cap on tokens whose composed form starts with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeConstraint {
    /// Whole-segment prefix, e.g. `ex:proj:` (ends with `:`).
    pub prefix: String,
    /// Allowed iff fewer tokens with the prefix are held.
    pub value: i64,
}

/// The answer of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    /// Granted; `new` is false when the token already held a slot.
    Granted {
        /// Whether the slot was taken by this call.
        new: bool,
    },
    /// Quota or a constraint is full: wait.
    Exhausted,
    /// Can never be granted (quota or constraint 0): the message says why.
    Never(String),
}

/// Who asks for a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenOwner {
    /// Execution id.
    pub execution_id: String,
    /// Attempt.
    pub attempt: u32,
}

/// Called with an execution id waiting on a namespace when a slot frees.
pub type ReleaseListener = Box<dyn Fn(&str) + Send + Sync>;

/// A resource manager backend: [`InMemoryResources`], or the one on Redis
/// (`kozmo-resources-redis`). Both keep the behaviour of `contract`.
pub trait ResourceBackend: Send + Sync {
    /// The manager's id (first namespace segment).
    fn id(&self) -> &str;
    /// Allocates atomically.
    fn allocate(
        &self,
        namespace: &str,
        token: &str,
        constraints: &[ScopeConstraint],
        owner: &TokenOwner,
    ) -> Result<Allocation, String>;
    /// Releases; `Ok(true)` if the token was held.
    fn release(&self, namespace: &str, token: &str) -> Result<bool, String>;
    /// Tokens an execution holds: (namespace, token, attempt).
    fn held_by(&self, execution_id: &str) -> Vec<(String, String, u32)>;
    /// [`ResourceBackend::held_by`], or why the backend cannot tell (a
    /// remote backend's server is down): the engine then tries the
    /// finishing step again rather than leave the tokens held for ever.
    fn try_held_by(&self, execution_id: &str) -> Result<Vec<(String, String, u32)>, String> {
        Ok(self.held_by(execution_id))
    }
    /// Re-installs persisted grants (at start).
    fn restore(&self, tokens: &[TokenRow]);
    /// Called with the executions waiting on a namespace when a slot frees.
    fn set_release_listener(&self, listener: Box<dyn Fn(&str) + Send + Sync>);
    /// Tokens held in a namespace (for tests and metrics).
    fn in_use(&self, namespace: &str) -> usize;
    /// Every namespace with its quota, tokens in use and executions waiting
    /// (metrics). Default: a backend that reports none.
    fn usage(&self) -> Vec<NamespaceUsage> {
        Vec::new()
    }
    /// Who holds and who waits for tokens, per namespace (what an operator
    /// inspects: the console's quotas page, why an execution waits).
    /// Default: a backend that cannot tell (none listed).
    fn members(&self) -> Vec<NamespaceMembers> {
        Vec::new()
    }
}

/// Who holds and who waits in one resource namespace at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamespaceMembers {
    /// Fully qualified namespace.
    pub namespace: String,
    /// Executions holding a token, sorted.
    pub holders: Vec<String>,
    /// Executions told the namespace was full and not granted since, sorted.
    pub waiters: Vec<String>,
}

/// One resource namespace at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamespaceUsage {
    /// Fully qualified namespace (`<manager>:<plugin entry>:<name>`).
    pub namespace: String,
    /// Tokens it can grant at once.
    pub quota: i64,
    /// Tokens granted now.
    pub in_use: usize,
    /// Executions told it was full and not granted since (they ask again
    /// when a token is released).
    pub waiting: usize,
}

/// Collects quotas while plugins load; a [`ResourceRegistrar`] for fully
/// qualified namespaces.
pub struct ResourceManagerBuilder {
    id: String,
    max_quota: i64,
    quotas: Mutex<BTreeMap<String, i64>>,
    built: OnceLock<Arc<InMemoryResources>>,
}

impl Default for ResourceManagerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceManagerBuilder {
    /// A builder for the in-memory manager.
    pub fn new() -> Self {
        ResourceManagerBuilder {
            id: IN_MEMORY_MANAGER_ID.to_string(),
            max_quota: DEFAULT_MAX_QUOTA,
            quotas: Mutex::new(BTreeMap::new()),
            built: OnceLock::new(),
        }
    }

    /// A builder for another manager (its id is the first segment of
    /// every namespace plugins register), e.g. the one on Redis.
    pub fn with_id(id: &str) -> Self {
        ResourceManagerBuilder {
            id: id.to_string(),
            ..Self::new()
        }
    }

    /// The manager id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A registrar that prefixes `<manager id>:<entry id>:` (what the
    /// loader gives each plugin).
    pub fn registrar_for(&self, entry_id: &str) -> PrefixedRegistrar<'_> {
        PrefixedRegistrar {
            builder: self,
            prefix: format!("{}:{entry_id}", self.id),
        }
    }

    /// Registered quotas so far.
    pub fn quotas(&self) -> BTreeMap<String, i64> {
        lock(&self.quotas).clone()
    }

    /// Builds the manager (once; later calls return the same one).
    pub fn build(&self) -> Arc<InMemoryResources> {
        self.built
            .get_or_init(|| Arc::new(InMemoryResources::new(&self.id, self.quotas())))
            .clone()
    }
}

impl ResourceRegistrar for ResourceManagerBuilder {
    fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> PResult<()> {
        if self.built.get().is_some() {
            return Err(PluginError::system(
                "ResourceManagerBuilt",
                "resource quotas can only be registered while plugins load",
            ));
        }
        if quota < 0 || quota > self.max_quota {
            return Err(PluginError::user(
                "InvalidQuota",
                format!(
                    "Invalid request for resource quota (< 0 || > {}): [{quota}]",
                    self.max_quota
                ),
            ));
        }
        let mut q = lock(&self.quotas);
        if q.contains_key(namespace.as_str()) {
            return Err(PluginError::user(
                "DuplicateNamespace",
                format!("Resource namespace already exists [{namespace}]"),
            ));
        }
        q.insert(namespace.as_str().to_string(), quota);
        Ok(())
    }
}

/// `<manager id>:<entry id>:<ns>` registration proxy.
pub struct PrefixedRegistrar<'a> {
    builder: &'a ResourceManagerBuilder,
    prefix: String,
}

impl ResourceRegistrar for PrefixedRegistrar<'_> {
    fn register_resource_quota(&self, namespace: &ResourceNamespace, quota: i64) -> PResult<()> {
        let ns = ResourceNamespace::new(self.prefix.clone()).create_sub_namespace(namespace);
        self.builder.register_resource_quota(&ns, quota)
    }
}

#[derive(Default)]
struct Pool {
    quota: i64,
    members: BTreeSet<String>,
}

#[derive(Default)]
struct Inner {
    pools: HashMap<String, Pool>,
    owners: HashMap<(String, String), TokenOwner>,
    by_execution: HashMap<String, BTreeSet<(String, String)>>,
    waiters: HashMap<String, HashSet<String>>,
}

/// The in-memory manager.
pub struct InMemoryResources {
    id: String,
    inner: Mutex<Inner>,
    listener: OnceLock<ReleaseListener>,
}

impl InMemoryResources {
    /// A manager with `quotas` (fully qualified namespace → quota).
    pub fn new(id: &str, quotas: BTreeMap<String, i64>) -> Self {
        let pools = quotas
            .into_iter()
            .map(|(ns, quota)| {
                (
                    ns,
                    Pool {
                        quota,
                        members: BTreeSet::new(),
                    },
                )
            })
            .collect();
        InMemoryResources {
            id: id.to_string(),
            inner: Mutex::new(Inner {
                pools,
                ..Inner::default()
            }),
            listener: OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

/// Whole-segment prefix count.
fn count_with_prefix(members: &BTreeSet<String>, prefix: &str) -> i64 {
    members.iter().filter(|m| m.starts_with(prefix)).count() as i64
}

impl ResourceBackend for InMemoryResources {
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
        let mut g = self.lock();
        let pool = g
            .pools
            .get_mut(namespace)
            .ok_or_else(|| format!("Requested resource [{namespace}] not found"))?;
        if pool.members.contains(token) {
            return Ok(Allocation::Granted { new: false });
        }
        if pool.quota <= 0 {
            return Ok(Allocation::Never(format!(
                "the quota of resource [{namespace}] is {}: token [{token}] can never be granted",
                pool.quota
            )));
        }
        if let Some(c) = constraints.iter().find(|c| c.value <= 0) {
            return Ok(Allocation::Never(format!(
                "the constraint on [{}] in resource [{namespace}] is {}: token [{token}] can never be granted",
                c.prefix.trim_end_matches(':'),
                c.value
            )));
        }
        let full = pool.members.len() as i64 >= pool.quota
            || constraints
                .iter()
                .any(|c| count_with_prefix(&pool.members, &c.prefix) >= c.value);
        if full {
            g.waiters
                .entry(namespace.to_string())
                .or_default()
                .insert(owner.execution_id.clone());
            return Ok(Allocation::Exhausted);
        }
        pool.members.insert(token.to_string());
        g.owners
            .insert((namespace.to_string(), token.to_string()), owner.clone());
        g.by_execution
            .entry(owner.execution_id.clone())
            .or_default()
            .insert((namespace.to_string(), token.to_string()));
        if let Some(w) = g.waiters.get_mut(namespace) {
            w.remove(&owner.execution_id);
        }
        Ok(Allocation::Granted { new: true })
    }

    fn release(&self, namespace: &str, token: &str) -> Result<bool, String> {
        let (held, waiters) = {
            let mut g = self.lock();
            let held = g
                .pools
                .get_mut(namespace)
                .map(|p| p.members.remove(token))
                .unwrap_or(false);
            if let Some(owner) = g.owners.remove(&(namespace.to_string(), token.to_string())) {
                if let Some(set) = g.by_execution.get_mut(&owner.execution_id) {
                    set.remove(&(namespace.to_string(), token.to_string()));
                    if set.is_empty() {
                        g.by_execution.remove(&owner.execution_id);
                    }
                }
            }
            let waiters = if held {
                g.waiters.remove(namespace).unwrap_or_default()
            } else {
                HashSet::new()
            };
            (held, waiters)
        };
        if let Some(l) = self.listener.get() {
            for w in waiters {
                l(&w);
            }
        }
        Ok(held)
    }

    fn held_by(&self, execution_id: &str) -> Vec<(String, String, u32)> {
        let g = self.lock();
        g.by_execution
            .get(execution_id)
            .map(|set| {
                set.iter()
                    .map(|(ns, tok)| {
                        let attempt = g.owners.get(&(ns.clone(), tok.clone())).map(|o| o.attempt).unwrap_or(0);
                        (ns.clone(), tok.clone(), attempt)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn restore(&self, tokens: &[TokenRow]) {
        let mut g = self.lock();
        for t in tokens {
            let pool = g.pools.entry(t.namespace.clone()).or_insert_with(|| {
                log::warn!(
                    "resource namespace [{}] of a persisted token is no longer registered; keeping the token",
                    t.namespace
                );
                Pool::default()
            });
            pool.members.insert(t.token.clone());
            g.owners.insert(
                (t.namespace.clone(), t.token.clone()),
                TokenOwner {
                    execution_id: t.execution_id.clone(),
                    attempt: t.attempt,
                },
            );
            g.by_execution
                .entry(t.execution_id.clone())
                .or_default()
                .insert((t.namespace.clone(), t.token.clone()));
        }
    }

    fn set_release_listener(&self, listener: Box<dyn Fn(&str) + Send + Sync>) {
        let _ = self.listener.set(listener);
    }

    fn usage(&self) -> Vec<NamespaceUsage> {
        let g = self.lock();
        let mut all: Vec<NamespaceUsage> = g
            .pools
            .iter()
            .map(|(ns, pool)| NamespaceUsage {
                namespace: ns.clone(),
                quota: pool.quota,
                in_use: pool.members.len(),
                waiting: g.waiters.get(ns).map_or(0, |w| w.len()),
            })
            .collect();
        all.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        all
    }

    fn in_use(&self, namespace: &str) -> usize {
        self.lock().pools.get(namespace).map_or(0, |p| p.members.len())
    }

    fn members(&self) -> Vec<NamespaceMembers> {
        let g = self.lock();
        let mut all: Vec<NamespaceMembers> = g
            .pools
            .keys()
            .map(|ns| {
                let mut holders: Vec<String> = g
                    .owners
                    .iter()
                    .filter(|((n, _), _)| n == ns)
                    .map(|(_, o)| o.execution_id.clone())
                    .collect();
                holders.sort();
                holders.dedup();
                let mut waiters: Vec<String> = g
                    .waiters
                    .get(ns)
                    .map(|w| w.iter().cloned().collect())
                    .unwrap_or_default();
                waiters.sort();
                NamespaceMembers {
                    namespace: ns.clone(),
                    holders,
                    waiters,
                }
            })
            .collect();
        all.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        all
    }
}

/// Token operations one round performed (committed with the round).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenOps {
    /// Newly granted.
    pub granted: Vec<TokenRow>,
    /// Released (namespace, token).
    pub released: Vec<(String, String)>,
    /// Set when a request can never be granted.
    pub never: Option<String>,
}

/// The per-round resource manager a plugin sees: namespace and token
/// prefixes, whole-segment constraint prefixes (docs/semantics.md#resources).
pub struct TaskResources {
    backend: Arc<dyn ResourceBackend>,
    ns_prefix: String,
    token_prefix: String,
    project_prefix: String,
    domain_prefix: String,
    owner: TokenOwner,
    ops: RefCell<TokenOps>,
}

impl TaskResources {
    /// A proxy for one round of `owner`.
    pub fn new(
        backend: Arc<dyn ResourceBackend>,
        plugin_id: &str,
        project: &str,
        domain: &str,
        owner: TokenOwner,
    ) -> Self {
        TaskResources {
            ns_prefix: format!("{}:{plugin_id}", backend.id()),
            token_prefix: format!("ex:{project}:{domain}:{}", owner.execution_id),
            project_prefix: format!("ex:{project}:"),
            domain_prefix: format!("ex:{project}:{domain}:"),
            backend,
            owner,
            ops: RefCell::new(TokenOps::default()),
        }
    }

    /// `<manager id>:<plugin id>:<ns>`.
    pub fn namespace(&self, ns: &ResourceNamespace) -> String {
        format!("{}:{}", self.ns_prefix, ns.as_str())
    }

    /// `ex:<project>:<domain>:<name>-<token>`.
    pub fn token(&self, token: &str) -> String {
        format!("{}-{token}", self.token_prefix)
    }

    /// What this round did.
    pub fn take_ops(&self) -> TokenOps {
        std::mem::take(&mut *self.ops.borrow_mut())
    }
}

impl ResourceManager for TaskResources {
    fn id(&self) -> String {
        self.backend.id().to_string()
    }

    fn allocate_resource(
        &self,
        namespace: &ResourceNamespace,
        token: &str,
        constraints: &ResourceConstraintsSpec,
    ) -> PResult<AllocationStatus> {
        let ns = self.namespace(namespace);
        let tok = self.token(token);
        let mut list = Vec::new();
        if let Some(c) = constraints.project_scope {
            list.push(ScopeConstraint {
                prefix: self.project_prefix.clone(),
                value: c.value,
            });
        }
        if let Some(c) = constraints.namespace_scope {
            list.push(ScopeConstraint {
                prefix: self.domain_prefix.clone(),
                value: c.value,
            });
        }
        match self.backend.allocate(&ns, &tok, &list, &self.owner) {
            Ok(Allocation::Granted { new }) => {
                if new {
                    self.ops.borrow_mut().granted.push(TokenRow {
                        namespace: ns,
                        token: tok,
                        execution_id: self.owner.execution_id.clone(),
                        attempt: self.owner.attempt,
                    });
                }
                Ok(AllocationStatus::GRANTED)
            }
            Ok(Allocation::Exhausted) => Ok(AllocationStatus::EXHAUSTED),
            Ok(Allocation::Never(msg)) => {
                self.ops.borrow_mut().never = Some(msg.clone());
                Err(PluginError::user("ResourceNeverAvailable", msg))
            }
            Err(e) => Err(PluginError::system("ResourceManagerError", e)),
        }
    }

    fn release_resource(&self, namespace: &ResourceNamespace, token: &str) -> PResult<()> {
        let ns = self.namespace(namespace);
        let tok = self.token(token);
        match self.backend.release(&ns, &tok) {
            Ok(true) => {
                let mut ops = self.ops.borrow_mut();
                ops.granted.retain(|t| !(t.namespace == ns && t.token == tok));
                ops.released.push((ns, tok));
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(PluginError::system("ResourceManagerError", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Allocation, scopes, release, restore and wake-ups: the contract
    // (`contract.rs`), which every backend runs.
    #[test]
    fn in_memory_keeps_the_contract() {
        contract::run(IN_MEMORY_MANAGER_ID, &|quotas| {
            Arc::new(InMemoryResources::new(IN_MEMORY_MANAGER_ID, quotas))
        });
    }

    #[test]
    fn members_lists_holders_and_waiters_per_namespace() {
        let rm = InMemoryResources::new(
            "m",
            BTreeMap::from([("m:p:q".to_string(), 1), ("m:p:r".to_string(), 2)]),
        );
        let owner = |id: &str| TokenOwner {
            execution_id: id.into(),
            attempt: 0,
        };
        assert_eq!(
            rm.allocate("m:p:q", "t1", &[], &owner("a")).unwrap(),
            Allocation::Granted { new: true }
        );
        assert_eq!(
            rm.allocate("m:p:q", "t3", &[], &owner("c")).unwrap(),
            Allocation::Exhausted
        );
        assert_eq!(
            rm.allocate("m:p:q", "t2", &[], &owner("b")).unwrap(),
            Allocation::Exhausted
        );
        let m = rm.members();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].namespace, "m:p:q");
        assert_eq!(m[0].holders, ["a"]);
        assert_eq!(m[0].waiters, ["b", "c"]);
        assert_eq!(
            m[1],
            NamespaceMembers {
                namespace: "m:p:r".into(),
                ..NamespaceMembers::default()
            }
        );
        rm.release("m:p:q", "t1").unwrap();
        assert!(rm.members()[0].holders.is_empty() && rm.members()[0].waiters.is_empty());
    }

    #[test]
    fn with_id_names_the_manager_in_every_namespace() {
        let b = ResourceManagerBuilder::with_id("other");
        b.registrar_for("plug")
            .register_resource_quota(&ResourceNamespace::new("q"), 2)
            .unwrap();
        assert_eq!(b.quotas()["other:plug:q"], 2);
        assert_eq!(b.build().id(), "other");
    }

    #[test]
    fn registration_prefixes_and_rejects_duplicates_and_late_calls() {
        let b = ResourceManagerBuilder::new();
        let r = b.registrar_for("plug");
        r.register_resource_quota(&ResourceNamespace::new("q"), 2).unwrap();
        let e = r.register_resource_quota(&ResourceNamespace::new("q"), 2).unwrap_err();
        assert_eq!(
            e.message,
            "Resource namespace already exists [inmemoryresourcemanager:plug:q]"
        );
        assert!(r.register_resource_quota(&ResourceNamespace::new("n"), -1).is_err());
        assert_eq!(b.quotas()["inmemoryresourcemanager:plug:q"], 2);
        b.build();
        assert!(r.register_resource_quota(&ResourceNamespace::new("z"), 1).is_err());
    }
}
