//! The daemon's configuration: `kozmo.toml`, overridden by `KOZMO_*`
//! environment variables, overridden by command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::isolation::IsolationConfig;

/// The smallest accepted `isolate_memory_mb`.
pub const MIN_ISOLATE_MEMORY_MB: u64 = 64;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7460";

/// Everything `kozmo serve` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store (`kozmo.db`, unless `store` names another) and the
    /// data store (`data/`) live.
    pub data_dir: PathBuf,
    /// The store: unset (or `"sqlite"`) for the SQLite file
    /// `<data_dir>/kozmo.db`, or a PostgreSQL database
    /// (`postgres://user:password@host:5432/db`).
    pub store: Option<StoreSetting>,
    /// The resource manager: unset (or `"memory"`) for the in-memory one
    /// (its tokens persisted with the executions in the store), or a Redis
    /// server shared by every daemon of a cluster
    /// (`redis://:password@host:6379/0?prefix=kozmo:`). A secret like
    /// `store`: its `Debug` hides the password.
    pub resources: Option<StoreSetting>,
    /// The data store's directory (task files, logs, raw outputs) if not
    /// `<data_dir>/data`: with several daemons, a directory they share (a
    /// network file system mounted at the same path on every node).
    pub data_store: Option<PathBuf>,
    /// This daemon's node id among the daemons sharing a PostgreSQL store
    /// (default: the host name and a hash of the data directory).
    pub node_id: Option<String>,
    /// Seconds a node's lease holds without a heartbeat (PostgreSQL store):
    /// a node silent this long loses its executions to the others.
    pub lease_secs: f64,
    /// The plugin directory.
    pub plugins_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// API token; required when `listen` is not loopback.
    pub api_token: Option<String>,
    /// File holding the API token (one line; preferred over `api_token`,
    /// the flag or the variable, which other processes may see).
    pub api_token_file: Option<PathBuf>,
    /// Blocking workers for plugin calls (0 = number of cores).
    pub workers: usize,
    /// Seconds every worker may spend inside plugin calls before a spare
    /// worker is started (slow plugins never stall the others).
    pub stall_after_secs: f64,
    /// Most workers, spares included.
    pub max_workers: usize,
    /// Seconds between re-evaluations of an execution that has not signalled.
    pub resync_interval_secs: f64,
    /// Directory of secret files (`<dir>/<KEY>`); `KOZMO_SECRET_<KEY>` env vars work too.
    pub secrets_dir: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Consecutive handler errors before an attempt fails with `RoundFailures`.
    pub max_round_failures: u32,
    /// Crash-loop protection: an execution that was inside a plugin call at
    /// this many consecutive unclean stops is failed with `PluginCrashed`
    /// at the next start (0 = never).
    pub crash_loop_limit: u32,
    /// Seconds a plugin call may run before it is reported (warning, event,
    /// the execution's status).
    pub call_warn_after_secs: f64,
    /// Seconds SIGTERM waits for running steps before leaving them behind.
    pub shutdown_grace_secs: f64,
    /// Quotas per resource namespace (`<plugin id>:<namespace>`), overriding
    /// what plugins register.
    pub resource_quotas: BTreeMap<String, i64>,
    /// Plugin loading.
    pub plugins: PluginsConfig,
    /// How long terminal executions are kept (`[retention]`).
    pub retention: kozmo_engine::retention::RetentionConfig,
    /// Plugin ids to run in a supervised child process each (`*` = all).
    pub isolate: Vec<String>,
    /// Address-space limit (RLIMIT_AS) of each isolated plugin's process, in MiB.
    pub isolate_memory_mb: Option<u64>,
    /// Seconds an isolated plugin's call may take before its process is killed and restarted.
    pub isolate_call_timeout_secs: f64,
    /// Seconds before a dead isolated plugin's process is restarted (doubled per failed restart, up to 30).
    pub isolate_restart_backoff_secs: f64,
    /// Seconds a client has to send a request's headers; also how long an
    /// idle keep-alive connection stays open.
    pub http_header_timeout_secs: f64,
    /// Seconds a client has to send a request's body after its headers.
    pub http_body_timeout_secs: f64,
    /// Most HTTP connections open at once; more are closed at once.
    pub http_max_connections: usize,
    /// Most items in one `POST /v1/executions:batch`.
    pub max_batch_items: usize,
    /// Largest accepted batch body, in bytes.
    pub max_batch_bytes: usize,
}

/// The `store` (or `resources`) setting as given. Its `Debug` hides a URL's password, so
/// printing a [`Config`] never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoreSetting(pub String);

impl std::fmt::Debug for StoreSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", kozmo_store_postgres::redact(&self.0))
    }
}

/// Which store the daemon opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The SQLite file `kozmo.db` in this directory (the default).
    Sqlite(PathBuf),
    /// A PostgreSQL database; the URL as given (with its password: never
    /// print it, use [`StoreChoice::describe`]).
    Postgres(String),
}

impl StoreChoice {
    /// What to call the store in logs and errors (no password).
    pub fn describe(&self) -> String {
        match self {
            StoreChoice::Sqlite(dir) => format!("SQLite in {}", dir.join("kozmo.db").display()),
            StoreChoice::Postgres(url) => format!("PostgreSQL at {}", kozmo_store_postgres::redact(url)),
        }
    }
}

/// Which resource manager the daemon builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourcesChoice {
    /// The in-memory manager (the default).
    InMemory,
    /// The manager on Redis; the URL as given (with its password: never
    /// print it, use [`ResourcesChoice::describe`]).
    Redis(String),
}

impl ResourcesChoice {
    /// What to call the manager in logs and errors (no password).
    pub fn describe(&self) -> String {
        match self {
            ResourcesChoice::InMemory => "in memory".to_string(),
            ResourcesChoice::Redis(url) => format!("Redis at {}", kozmo_resources_redis::redact(url)),
        }
    }
}

/// `[plugins]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Plugin ids to enable (empty = all).
    pub enabled: Vec<String>,
    /// Task type → plugin id, for types several plugins claim.
    pub default_for_task_types: BTreeMap<String, String>,
    /// Load the valid plugins and warn about the others (default: refuse to start).
    pub skip_invalid: bool,
    /// Accept a plugin directory writable by group/others or owned by another user.
    pub allow_insecure_dir: bool,
    /// Plugin settings: `[plugins.settings.<id>] key = "value"`, given to
    /// the plugin as the variable `KOZMO_PLUGIN_<ID>_<KEY>` (upper case,
    /// other than `[A-Z0-9]` → `_`), e.g. the shell plugin's `run_as`.
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("kozmo-data"),
            store: None,
            resources: None,
            data_store: None,
            node_id: None,
            lease_secs: 10.0,
            plugins_dir: PathBuf::from("plugins"),
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            api_token: None,
            api_token_file: None,
            workers: 0,
            stall_after_secs: 5.0,
            max_workers: 64,
            resync_interval_secs: 5.0,
            secrets_dir: None,
            max_body_bytes: 1024 * 1024,
            max_round_failures: 10,
            crash_loop_limit: 2,
            call_warn_after_secs: 60.0,
            shutdown_grace_secs: 30.0,
            resource_quotas: BTreeMap::new(),
            plugins: PluginsConfig::default(),
            retention: kozmo_engine::retention::RetentionConfig::default(),
            isolate: Vec::new(),
            isolate_memory_mb: None,
            isolate_call_timeout_secs: crate::isolation::DEFAULT_CALL_TIMEOUT_SECS,
            isolate_restart_backoff_secs: crate::isolation::DEFAULT_RESTART_BACKOFF_SECS,
            http_header_timeout_secs: 10.0,
            http_body_timeout_secs: 30.0,
            http_max_connections: 1000,
            max_batch_items: 1000,
            max_batch_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads a TOML file; errors name the file and the bad key.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// The worker count in force.
    pub fn effective_workers(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            self.workers
        }
    }

    /// The API's options in force (the token is the configured one).
    pub fn api_options(&self) -> kozmo_api::ApiOptions {
        kozmo_api::ApiOptions {
            token: self.api_token.clone().filter(|t| !t.is_empty()),
            max_body_bytes: self.max_body_bytes,
            max_batch_items: self.max_batch_items,
            max_batch_bytes: self.max_batch_bytes,
            body_timeout: Duration::from_secs_f64(self.http_body_timeout_secs),
            connections: kozmo_api::ConnectionLimits {
                max_connections: self.http_max_connections,
                header_timeout: Duration::from_secs_f64(self.http_header_timeout_secs),
            },
            watch: kozmo_api::WatchOptions::default(),
        }
    }

    /// The isolation settings in force.
    pub fn isolation(&self) -> IsolationConfig {
        IsolationConfig {
            plugins: self.isolate.clone(),
            memory_mb: self.isolate_memory_mb,
            call_timeout: Duration::from_secs_f64(self.isolate_call_timeout_secs),
            restart_backoff: Duration::from_secs_f64(self.isolate_restart_backoff_secs),
            ..IsolationConfig::default()
        }
    }

    /// The store the daemon opens, or why `store` names none.
    pub fn store_choice(&self) -> anyhow::Result<StoreChoice> {
        match self.store.as_ref().map(|s| s.0.trim()) {
            None | Some("") => Ok(StoreChoice::Sqlite(self.data_dir.clone())),
            Some(s) if s.eq_ignore_ascii_case("sqlite") => Ok(StoreChoice::Sqlite(self.data_dir.clone())),
            Some(s) if kozmo_store_postgres::is_postgres_url(s) => Ok(StoreChoice::Postgres(s.to_string())),
            Some(s) => anyhow::bail!(
                "store = {:?} is not a store kozmo knows (set by store in kozmo.toml, KOZMO_STORE or --store): \
                 give a postgres://user:password@host:5432/database URL, or leave it unset for the SQLite file \
                 in data_dir",
                kozmo_store_postgres::redact(s)
            ),
        }
    }

    /// The resource manager the daemon builds, or why `resources` names none.
    pub fn resources_choice(&self) -> anyhow::Result<ResourcesChoice> {
        match self.resources.as_ref().map(|s| s.0.trim()) {
            None | Some("") => Ok(ResourcesChoice::InMemory),
            Some(s) if s.eq_ignore_ascii_case("memory") => Ok(ResourcesChoice::InMemory),
            Some(s) if kozmo_resources_redis::is_redis_url(s) => Ok(ResourcesChoice::Redis(s.to_string())),
            Some(s) => anyhow::bail!(
                "resources = {:?} is not a resource manager kozmo knows (set by resources in kozmo.toml, \
                 KOZMO_RESOURCES or --resources): give a redis://:password@host:6379/0 URL, or leave it unset \
                 for the in-memory manager",
                kozmo_store_postgres::redact(s)
            ),
        }
    }

    /// This daemon's node id: `node_id`, or the host name and a hash of
    /// the data directory's absolute path (stable across restarts, distinct
    /// for two daemons on one host).
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "kozmo".into());
        let dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let hash = dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("{host}-{:08x}", hash as u32)
    }

    /// Refuses settings that cannot work, with what to do.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.store_choice()?;
        self.resources_choice()?;
        if let Some(id) = &self.node_id {
            let ok = !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
            if !ok {
                anyhow::bail!(
                    "node_id {id:?} is not a valid node id (--node-id, KOZMO_NODE_ID or node_id in kozmo.toml): use                      1 to 128 letters, digits, '.', '_', ':' or '-'"
                );
            }
        }
        if !(self.lease_secs >= 1.0 && self.lease_secs <= 3600.0) {
            anyhow::bail!(
                "lease_secs must be between 1 and 3600 seconds (--lease-secs, KOZMO_LEASE_SECS or lease_secs in                  kozmo.toml), got {}",
                self.lease_secs
            );
        }
        if !self.listen.ip().is_loopback() && self.api_token.as_deref().is_none_or(str::is_empty) {
            anyhow::bail!(
                "listen address {} is not loopback and no API token is set: set api_token (or KOZMO_API_TOKEN) \
                 or listen on 127.0.0.1",
                self.listen
            );
        }
        if !(self.resync_interval_secs > 0.0 && self.resync_interval_secs.is_finite()) {
            anyhow::bail!(
                "resync_interval_secs must be a positive number of seconds, got {}",
                self.resync_interval_secs
            );
        }
        if !(self.stall_after_secs > 0.0 && self.stall_after_secs.is_finite()) {
            anyhow::bail!(
                "stall_after_secs must be a positive number of seconds, got {}",
                self.stall_after_secs
            );
        }
        for (name, v) in [
            ("call_warn_after_secs", self.call_warn_after_secs),
            ("shutdown_grace_secs", self.shutdown_grace_secs),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                anyhow::bail!("{name} must be a number of seconds (0 or more), got {v}");
            }
        }
        if self.max_workers < self.effective_workers() {
            anyhow::bail!(
                "max_workers ({}) must be at least the number of workers ({})",
                self.max_workers,
                self.effective_workers()
            );
        }
        for (key, v) in [
            ("isolate_call_timeout_secs", self.isolate_call_timeout_secs),
            ("isolate_restart_backoff_secs", self.isolate_restart_backoff_secs),
        ] {
            if !(v > 0.0 && v.is_finite() && v < 1e9) {
                anyhow::bail!("{key} must be a positive number of seconds, got {v}");
            }
        }
        if let Some(mb) = self.isolate_memory_mb {
            if mb < MIN_ISOLATE_MEMORY_MB {
                anyhow::bail!(
                    "isolate_memory_mb must be at least {MIN_ISOLATE_MEMORY_MB} (the plugin process itself needs that much address space), got {mb}"
                );
            }
        }
        if let Some(bad) = self.isolate.iter().find(|id| id.trim().is_empty()) {
            anyhow::bail!("isolate lists an empty plugin id ({bad:?}); give plugin ids or \"*\"");
        }
        for (key, v) in [
            ("http_header_timeout_secs", self.http_header_timeout_secs),
            ("http_body_timeout_secs", self.http_body_timeout_secs),
        ] {
            if !(v > 0.0 && v.is_finite() && v <= 3600.0) {
                anyhow::bail!("{key} must be a number of seconds above 0 and at most 3600, got {v}");
            }
        }
        if self.http_max_connections == 0 {
            anyhow::bail!("http_max_connections must be at least 1");
        }
        if !(1..=100_000).contains(&self.max_batch_items) {
            anyhow::bail!("max_batch_items must be from 1 to 100000, got {}", self.max_batch_items);
        }
        if self.max_batch_bytes < self.max_body_bytes {
            anyhow::bail!(
                "max_batch_bytes ({}) must be at least max_body_bytes ({})",
                self.max_batch_bytes,
                self.max_body_bytes
            );
        }
        self.retention.policy().map_err(anyhow::Error::msg)?;
        if self.max_body_bytes < 1024 {
            anyhow::bail!("max_body_bytes must be at least 1024, got {}", self.max_body_bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let c: Config = toml::from_str(
            r#"
            data_dir = "/var/lib/kozmo"
            plugins_dir = "/usr/lib/kozmo/plugins"
            listen = "0.0.0.0:8080"
            api_token = "t"
            workers = 4
            resync_interval_secs = 2.5
            max_body_bytes = 4096
            api_token_file = "/etc/kozmo/token"
            [resource_quotas]
            "sleep-quota:slots" = 3
            [plugins]
            enabled = ["echo"]
            default_for_task_types = { python = "shell" }
            [plugins.settings.shell]
            run_as = "nobody"
            "#,
        )
        .unwrap();
        assert_eq!(c.workers, 4);
        assert_eq!(c.plugins.settings["shell"]["run_as"], "nobody");
        assert_eq!(c.api_token_file.as_deref(), Some(Path::new("/etc/kozmo/token")));
        assert_eq!(c.plugins.default_for_task_types["python"], "shell");
        assert_eq!(c.resource_quotas["sleep-quota:slots"], 3);
        c.validate().unwrap();
    }

    #[test]
    fn isolation_keys_parse_and_bad_values_are_refused() {
        let c: Config = toml::from_str(
            r#"
            isolate = ["hostile", "shell"]
            isolate_memory_mb = 512
            isolate_call_timeout_secs = 2.5
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let iso = c.isolation();
        assert!(iso.covers("hostile") && !iso.covers("echo") && !iso.covers_all());
        assert_eq!(iso.memory_mb, Some(512));
        assert_eq!(iso.call_timeout, Duration::from_millis(2500));
        let all = Config {
            isolate: vec!["*".into()],
            ..Default::default()
        };
        assert!(all.isolation().covers("anything"));
        let small = Config {
            isolate_memory_mb: Some(8),
            ..Default::default()
        };
        assert!(small.validate().unwrap_err().to_string().contains("isolate_memory_mb"));
        let never = Config {
            isolate_call_timeout_secs: 0.0,
            ..Default::default()
        };
        assert!(never
            .validate()
            .unwrap_err()
            .to_string()
            .contains("isolate_call_timeout_secs"));
    }

    #[test]
    fn the_example_file_parses_and_keeps_the_defaults() {
        let c: Config = toml::from_str(include_str!("../../examples/kozmo.toml")).unwrap();
        let d = Config::default();
        assert_eq!(
            (c.crash_loop_limit, c.call_warn_after_secs, c.shutdown_grace_secs),
            (d.crash_loop_limit, d.call_warn_after_secs, d.shutdown_grace_secs)
        );
    }

    #[test]
    fn the_resources_are_in_memory_unless_a_redis_url_is_given() {
        let d = Config::default();
        assert_eq!(d.resources_choice().unwrap(), ResourcesChoice::InMemory);
        let c: Config = toml::from_str("resources = \"redis://:hunter2@cache:6379/0?prefix=a:\"").unwrap();
        assert_eq!(
            c.resources_choice().unwrap(),
            ResourcesChoice::Redis("redis://:hunter2@cache:6379/0?prefix=a:".into())
        );
        assert_eq!(
            c.resources_choice().unwrap().describe(),
            "Redis at redis://:***@cache:6379/0?prefix=a:"
        );
        assert!(!format!("{c:?}").contains("hunter2"), "Debug hides the password");
        let c: Config = toml::from_str("resources = \"memory\"").unwrap();
        assert_eq!(c.resources_choice().unwrap(), ResourcesChoice::InMemory);
        let c = Config {
            resources: Some(StoreSetting("memcached://k:hunter2@cache/".into())),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("KOZMO_RESOURCES") && e.contains("redis://"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_store_is_sqlite_unless_a_postgres_url_is_given() {
        let d = Config::default();
        assert_eq!(d.store_choice().unwrap(), StoreChoice::Sqlite(d.data_dir.clone()));
        let c: Config = toml::from_str("store = \"postgres://k:hunter2@db:5432/kozmo\"").unwrap();
        assert_eq!(
            c.store_choice().unwrap(),
            StoreChoice::Postgres("postgres://k:hunter2@db:5432/kozmo".into())
        );
        assert_eq!(
            c.store_choice().unwrap().describe(),
            "PostgreSQL at postgres://k:***@db:5432/kozmo"
        );
        assert!(!format!("{c:?}").contains("hunter2"), "Debug hides the password");
        let c: Config = toml::from_str("store = \"sqlite\"").unwrap();
        assert_eq!(c.store_choice().unwrap(), StoreChoice::Sqlite(c.data_dir.clone()));
        let bad = Config {
            store: Some(StoreSetting("mysql://k:hunter2@db/kozmo".into())),
            ..Default::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("KOZMO_STORE") && e.contains("postgres://"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = toml::from_str::<Config>("listn = \"x\"").unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn non_loopback_without_token_is_refused() {
        let c = Config {
            listen: "0.0.0.0:1".parse().unwrap(),
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("not loopback"), "{err}");
        Config::default().validate().unwrap();
    }
}
