//! `kozmo serve`: run the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::daemon;

/// Flags of `kozmo serve`; each overrides the file and its `KOZMO_*` variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML; see examples/kozmo.toml).
    #[arg(long, env = "KOZMO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store and data store).
    #[arg(long, env = "KOZMO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store: a PostgreSQL URL (postgres://user:password@host:5432/db)
    /// or `sqlite`; default: the SQLite file kozmo.db in the data directory.
    /// The daemon hides the flag and the variable from other processes (it
    /// re-executes itself without them), as it does the API token.
    #[arg(long, env = "KOZMO_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// The resource manager: a Redis URL (redis://:password@host:6379/0,
    /// `?prefix=` for a key prefix of its own) shared by the daemons of a
    /// cluster, or `memory`; default: in memory. Hidden from other
    /// processes like --store.
    #[arg(long, env = "KOZMO_RESOURCES", hide_env_values = true)]
    pub resources: Option<String>,
    /// The data store's directory (task files, logs, raw outputs; default:
    /// `data` in the data directory). Daemons sharing a PostgreSQL store can
    /// share one (a network file system mounted at the same path on every
    /// node): a node that takes an execution over reads what another wrote.
    #[arg(long, env = "KOZMO_DATA_STORE")]
    pub data_store: Option<PathBuf>,
    /// This daemon's id among the daemons sharing a PostgreSQL store
    /// (default: the host name and a hash of the data directory). Two
    /// daemons with one id on one database: the second refuses to start.
    #[arg(long, env = "KOZMO_NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds a node's lease holds without a heartbeat (PostgreSQL store;
    /// default 10): a node silent this long (dead, paused, cut off) loses
    /// its executions to the other nodes, which resume them from their last
    /// committed step.
    #[arg(long, env = "KOZMO_LEASE_SECS")]
    pub lease_secs: Option<f64>,
    /// Plugin directory.
    #[arg(long, env = "KOZMO_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Listen address (non-loopback addresses need an API token).
    #[arg(long, env = "KOZMO_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// API token required as `Authorization: Bearer <token>`. Prefer
    /// --api-token-file: the daemon hides the flag and the variable from
    /// other processes by re-executing itself without them, but the
    /// process that started it (a shell history, a unit file) still has them.
    #[arg(long, env = "KOZMO_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// File holding the API token (its first line; mode 0600 owned by the
    /// daemon's user). The preferred way to give the token.
    #[arg(long, env = "KOZMO_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Worker threads for plugin calls (0 = number of cores).
    #[arg(long, env = "KOZMO_WORKERS")]
    pub workers: Option<usize>,
    /// Seconds every worker may spend inside plugin calls before a spare worker starts.
    #[arg(long, env = "KOZMO_STALL_AFTER_SECS")]
    pub stall_after_secs: Option<f64>,
    /// Most workers, spares for slow plugin calls included.
    #[arg(long, env = "KOZMO_MAX_WORKERS")]
    pub max_workers: Option<usize>,
    /// Seconds before an execution whose last round changed nothing is looked
    /// at again (default 5). A safety net for plugins that never signal: a
    /// plugin's signal (the bundled shell and sleep-quota plugins send one when
    /// their command or sleep ends), a released quota token or an abort runs
    /// the next round at once and resets the wait. A round that changed
    /// something is followed at once. The wait doubles after each round that
    /// changed nothing, up to the larger of this value and 5 s.
    #[arg(long, env = "KOZMO_RESYNC_INTERVAL_SECS")]
    pub resync_interval_secs: Option<f64>,
    /// Directory of secret files.
    #[arg(long, env = "KOZMO_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "KOZMO_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Consecutive handler errors before an attempt fails with RoundFailures.
    #[arg(long, env = "KOZMO_MAX_ROUND_FAILURES")]
    pub max_round_failures: Option<u32>,
    /// Fail an execution with PluginCrashed once the daemon died this many
    /// times in a row inside its plugin calls (0 = never; default 2).
    #[arg(long, env = "KOZMO_CRASH_LOOP_LIMIT")]
    pub crash_loop_limit: Option<u32>,
    /// Seconds a plugin call may run before it is reported in logs, events
    /// and the execution's status (default 60).
    #[arg(long, env = "KOZMO_CALL_WARN_AFTER_SECS")]
    pub call_warn_after_secs: Option<f64>,
    /// Seconds SIGTERM waits for running steps (default 30).
    #[arg(long, env = "KOZMO_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<f64>,
    /// Enable only these plugin ids (repeat or comma-separate; default: all).
    #[arg(long = "enable-plugin", env = "KOZMO_ENABLED_PLUGINS", value_delimiter = ',')]
    pub enabled_plugins: Vec<String>,
    /// Pick the plugin for a task type several plugins register: TYPE=PLUGIN
    /// (repeat or comma-separate).
    #[arg(long = "default-for", env = "KOZMO_DEFAULT_FOR_TASK_TYPES", value_delimiter = ',', value_parser = key_value::<String>)]
    pub default_for_task_types: Vec<(String, String)>,
    /// Override a plugin's quota: PLUGIN:NAMESPACE=N (repeat or comma-separate).
    #[arg(long = "resource-quota", env = "KOZMO_RESOURCE_QUOTAS", value_delimiter = ',', value_parser = key_value::<i64>)]
    pub resource_quotas: Vec<(String, i64)>,
    /// Load the valid plugins and warn about invalid ones instead of refusing to start.
    #[arg(long, env = "KOZMO_SKIP_INVALID_PLUGINS")]
    pub skip_invalid_plugins: bool,
    /// Accept a plugin directory writable by group/others or owned by another user.
    #[arg(long, env = "KOZMO_ALLOW_INSECURE_PLUGIN_DIR")]
    pub allow_insecure_plugin_dir: bool,
    /// Run this plugin in a supervised child process of its own (repeat or
    /// comma-separate; `*` = every plugin). A crash, exit or stuck call
    /// there fails only that plugin's calls; the process is restarted.
    #[arg(long = "isolate", value_name = "ID", env = "KOZMO_ISOLATE", value_delimiter = ',')]
    pub isolate: Vec<String>,
    /// Address-space limit (RLIMIT_AS) of each isolated plugin's process, in MiB (default: none).
    #[arg(long, env = "KOZMO_ISOLATE_MEMORY_MB")]
    pub isolate_memory_mb: Option<u64>,
    /// Seconds an isolated plugin's call may take before its process is
    /// killed and restarted [default: 60].
    #[arg(long, env = "KOZMO_ISOLATE_CALL_TIMEOUT_SECS")]
    pub isolate_call_timeout_secs: Option<f64>,
    /// Seconds before a dead isolated plugin's process is restarted, doubled
    /// after each failed restart up to 30 [default: 0.5].
    #[arg(long, env = "KOZMO_ISOLATE_RESTART_BACKOFF_SECS")]
    pub isolate_restart_backoff_secs: Option<f64>,
    /// Seconds a client has to send a request's headers (and how long an idle
    /// keep-alive connection stays open); slower clients are cut off [default: 10].
    #[arg(long, env = "KOZMO_HTTP_HEADER_TIMEOUT_SECS")]
    pub http_header_timeout_secs: Option<f64>,
    /// Seconds a client has to send a request's body after its headers [default: 30].
    #[arg(long, env = "KOZMO_HTTP_BODY_TIMEOUT_SECS")]
    pub http_body_timeout_secs: Option<f64>,
    /// Most HTTP connections open at once; one more is closed at once
    /// [default: 1000, lowered to fit the open-file limit].
    #[arg(long, env = "KOZMO_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Most items in one batch submission (`POST /v1/executions:batch`) [default: 1000].
    #[arg(long, env = "KOZMO_MAX_BATCH_ITEMS")]
    pub max_batch_items: Option<usize>,
    /// Largest accepted batch body, in bytes [default: 64 MiB].
    #[arg(long, env = "KOZMO_MAX_BATCH_BYTES")]
    pub max_batch_bytes: Option<usize>,
    /// Retention of terminal executions.
    #[command(flatten)]
    pub retention: super::retention::RetentionArgs,
}

/// Parses `KEY=VALUE`.
fn key_value<T: std::str::FromStr>(s: &str) -> Result<(String, T), String>
where
    T::Err: std::fmt::Display,
{
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    let v = v.trim().parse::<T>().map_err(|e| format!("bad value in {s:?}: {e}"))?;
    Ok((k.trim().to_string(), v))
}

/// Runs `kozmo serve`; exit 0 after a clean shutdown, 2 for bad configuration or plugins.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match daemon::load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = args.$field { config.$field = v; } )* };
    }
    set!(
        data_dir,
        plugins_dir,
        listen,
        workers,
        stall_after_secs,
        max_workers,
        resync_interval_secs,
        max_body_bytes,
        max_round_failures,
        isolate_call_timeout_secs,
        isolate_restart_backoff_secs
    );
    set!(crash_loop_limit, call_warn_after_secs, shutdown_grace_secs);
    set!(http_header_timeout_secs, http_body_timeout_secs, http_max_connections);
    set!(max_batch_items, max_batch_bytes, lease_secs);
    if args.node_id.is_some() {
        config.node_id = args.node_id;
    }
    if args.data_store.is_some() {
        config.data_store = args.data_store;
    }
    // Like the token, taken out of the environment and arguments at start.
    if let Some(store) = args.store.or_else(crate::startup_secrets::store) {
        config.store = Some(crate::config::StoreSetting(store));
    }
    if let Some(resources) = args.resources.or_else(crate::startup_secrets::resources) {
        config.resources = Some(crate::config::StoreSetting(resources));
    }
    if args.isolate_memory_mb.is_some() {
        config.isolate_memory_mb = args.isolate_memory_mb;
    }
    if !args.isolate.is_empty() {
        config.isolate = args.isolate;
    }
    // The flag and the variable were taken out of this process's
    // environment and arguments at start (crate::startup_secrets).
    let token = args.api_token.or_else(crate::startup_secrets::api_token);
    match (token, args.api_token_file) {
        (Some(_), Some(_)) => {
            eprintln!("error: both an API token (--api-token or KOZMO_API_TOKEN) and --api-token-file (KOZMO_API_TOKEN_FILE) are set: give only one");
            return Ok(ExitCode::from(2));
        }
        (Some(t), None) => (config.api_token, config.api_token_file) = (Some(t), None),
        (None, Some(f)) => (config.api_token, config.api_token_file) = (None, Some(f)),
        (None, None) => {}
    }
    if let Some(file) = config.api_token_file.take() {
        if config.api_token.is_some() {
            eprintln!("error: the configuration sets both api_token and api_token_file: give only one");
            return Ok(ExitCode::from(2));
        }
        match crate::startup_secrets::read_token_file(&file) {
            Ok(t) => config.api_token = Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    // Plugin settings reach plugins (in this process or isolated) as
    // KOZMO_PLUGIN_<ID>_<KEY>; set before any thread starts. A variable
    // already set wins over the file.
    for (name, value) in crate::startup_secrets::plugin_setting_vars(&config.plugins.settings) {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
        }
    }
    if args.secrets_dir.is_some() {
        config.secrets_dir = args.secrets_dir;
    }
    if !args.enabled_plugins.is_empty() {
        config.plugins.enabled = args.enabled_plugins;
    }
    config
        .plugins
        .default_for_task_types
        .extend(args.default_for_task_types);
    config.resource_quotas.extend(args.resource_quotas);
    config.plugins.skip_invalid |= args.skip_invalid_plugins;
    config.plugins.allow_insecure_dir |= args.allow_insecure_plugin_dir;
    args.retention.apply(&mut config.retention);
    match daemon::run(config) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {}", e.message);
            Ok(ExitCode::from(e.code))
        }
    }
}
