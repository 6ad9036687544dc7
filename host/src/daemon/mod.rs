//! `kozmo serve`: wires the store, the resource manager, the plugin loader,
//! the engine and the HTTP API together, and shuts them down in order.

mod fd_limit;
mod inspect;
mod prometheus;
mod prune;
mod service;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use service::{parse_spec, DaemonService};

use crate::config::{Config, ResourcesChoice, StoreChoice};
use crate::loader::{self, LoaderConfig, LoaderServices};
use crate::metrics::Metrics;
use kozmo_api as api;
use kozmo_engine::resources::{InMemoryResources, ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::retention::pruner::Retention;
use kozmo_engine::store::{NodeInfo, Store};
use kozmo_engine::{Engine, EngineConfig, EngineHandle, LateEnqueueOwner};
use kozmo_resources_redis::{RedisResources, REDIS_MANAGER_ID};
use kozmo_store_postgres::{NodeSpec, PostgresStore};
use kozmo_store_sqlite::SqliteStore;

/// Why the daemon did not start; exit code 2 (configuration, plugins) or 1.
#[derive(Debug)]
pub struct StartError {
    /// The process exit code.
    pub code: u8,
    /// What went wrong, one problem per line.
    pub message: String,
}

impl StartError {
    fn config(e: impl std::fmt::Display) -> Self {
        StartError {
            code: 2,
            message: e.to_string(),
        }
    }
}

/// A started daemon: engine running, plugins loaded, not yet serving HTTP.
pub struct Daemon {
    /// The engine.
    pub engine: EngineHandle,
    /// The API service.
    pub service: Arc<DaemonService>,
    /// The configuration in force.
    pub config: Config,
    /// Retention (the background pruner).
    pub retention: Arc<Retention>,
}

fn quotas_with_overrides(builder: &ResourceManagerBuilder, config: &Config) -> std::collections::BTreeMap<String, i64> {
    let mut quotas = builder.quotas();
    for (ns, q) in &config.resource_quotas {
        let full = format!("{}:{ns}", builder.id());
        log::info!("resource quota {full} = {q} (from the configuration)");
        quotas.insert(full, *q);
    }
    quotas
}

/// Opens the store the configuration names (the host only picks it: the
/// SQL lives in the store crates).
/// The opened store, and the PostgreSQL one again when it is that (it
/// joins the cluster once the plugins it serves are known).
type OpenedStore = (Arc<dyn Store>, Option<Arc<PostgresStore>>);

fn open_store(config: &Config) -> Result<OpenedStore, StartError> {
    let choice = config.store_choice().map_err(StartError::config)?;
    let opened: Result<OpenedStore, _> = match &choice {
        StoreChoice::Sqlite(dir) => SqliteStore::open_in(dir).map(|s| (Arc::new(s) as Arc<dyn Store>, None)),
        StoreChoice::Postgres(url) => PostgresStore::open(url).map(|s| {
            let s = Arc::new(s);
            (s.clone() as Arc<dyn Store>, Some(s))
        }),
    };
    let store = opened.map_err(|e| {
        StartError::config(match &choice {
            StoreChoice::Sqlite(dir) => format!("cannot open the store in {}: {e}", dir.display()),
            // One line; the store's error names the server with the
            // password hidden.
            StoreChoice::Postgres(_) if e.0.starts_with("invalid ") => format!(
                "cannot open the store: {}; fix the URL in store (kozmo.toml, KOZMO_STORE or --store)",
                e.0
            ),
            StoreChoice::Postgres(_) => format!(
                "cannot open the store: {}; check that the server is up and reachable and the user, password \
                 and database in store (kozmo.toml, KOZMO_STORE or --store)",
                e.0
            ),
        })
    })?;
    log::info!("store: {}", choice.describe());
    Ok(store)
}

/// What this node tells the others (several daemons on one store).
fn node_info(config: &Config, plugins: &loader::LoadedPlugins) -> NodeInfo {
    let list: Vec<serde_json::Value> = plugins
        .infos()
        .iter()
        .map(|p| serde_json::json!({ "id": p.id, "task_types": p.task_types, "default": p.is_default }))
        .collect();
    NodeInfo {
        plugins_json: serde_json::Value::Array(list).to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        address: Some(config.listen.to_string()),
    }
}

/// Joins the daemons on the PostgreSQL database as this node, serving the
/// task types of the loaded plugins (all, with a default plugin).
fn join_cluster(
    pg: &PostgresStore,
    config: &Config,
    plugins: &loader::LoadedPlugins,
    node: &NodeInfo,
) -> Result<(), StartError> {
    let task_types = match plugins.default_plugin() {
        Some(_) => None,
        None => Some(plugins.routes().into_keys().collect()),
    };
    let spec = NodeSpec {
        node_id: config.node_id(),
        lease: Duration::from_secs_f64(config.lease_secs),
        task_types,
    };
    let id = spec.node_id.clone();
    pg.join_cluster(spec, node)
        .map_err(|e| StartError::config(format!("cannot join the daemons on the store: {}", e.0)))?;
    log::info!(
        "node {id}: joined the daemons on {} (lease {}s)",
        pg.target(),
        config.lease_secs
    );
    Ok(())
}

/// Builds the resource manager the configuration names, with the quotas
/// the plugins registered (and the configuration's overrides).
fn open_resources(
    choice: &ResourcesChoice,
    builder: &ResourceManagerBuilder,
    config: &Config,
) -> Result<Arc<dyn ResourceBackend>, StartError> {
    let quotas = quotas_with_overrides(builder, config);
    let opened: Arc<dyn ResourceBackend> = match choice {
        ResourcesChoice::InMemory => Arc::new(InMemoryResources::new(builder.id(), quotas)),
        // One line; the error names the server with the password hidden.
        ResourcesChoice::Redis(url) => Arc::new(RedisResources::open(url, builder.id(), &quotas).map_err(|e| {
            StartError::config(format!(
                "cannot open the resource manager: {e}; check the URL in resources (kozmo.toml, KOZMO_RESOURCES \
                 or --resources) and that the server is up and reachable"
            ))
        })?),
    };
    log::info!("resources: {}", choice.describe());
    Ok(opened)
}

/// Opens the store, loads the plugins and starts the engine.
pub fn start(config: Config) -> Result<Daemon, StartError> {
    config.validate().map_err(StartError::config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))
        .map_err(StartError::config)?;
    let resources_choice = config.resources_choice().map_err(StartError::config)?;
    let (store, postgres) = open_store(&config)?;

    // The manager's id is the first segment of every namespace plugins
    // register, so it is chosen before they load.
    let builder = Arc::new(match resources_choice {
        ResourcesChoice::InMemory => ResourceManagerBuilder::new(),
        ResourcesChoice::Redis(_) => ResourceManagerBuilder::with_id(REDIS_MANAGER_ID),
    });
    let enqueue = Arc::new(LateEnqueueOwner::new());
    let metrics = Metrics::new("kozmo");
    let secrets = Arc::new(crate::startup_secrets::host_secrets(config.secrets_dir.clone()));
    let services = LoaderServices::for_engine(&builder, &enqueue, secrets.clone(), metrics.sub("plugin"));
    let loader_config = LoaderConfig {
        plugins_dir: config.plugins_dir.clone(),
        enabled_plugins: config.plugins.enabled.clone(),
        default_for_task_types: config.plugins.default_for_task_types.clone(),
        skip_invalid_plugins: config.plugins.skip_invalid,
        allow_insecure_plugin_dir: config.plugins.allow_insecure_dir,
        isolation: config.isolation(),
        probe_program: None,
    }
    .probing_with_current_exe();
    let plugins = loader::load_directory(&loader_config, &services).map_err(|report| StartError {
        code: 2,
        message: format!(
            "the plugin directory {} has problems:\n{report}",
            config.plugins_dir.display()
        ),
    })?;
    for w in plugins.warnings() {
        log::warn!("{w}");
    }
    let infos = plugins.infos();
    for p in &infos {
        log::info!("plugin {} ({}) handles {:?}", p.id, p.file.display(), p.task_types);
    }
    let resources = open_resources(&resources_choice, &builder, &config)?;
    let node_info = node_info(&config, &plugins);
    if let Some(pg) = &postgres {
        join_cluster(pg, &config, &plugins, &node_info)?;
    }

    let engine_config = EngineConfig {
        data_dir: config.data_dir.clone(),
        workers: config.effective_workers(),
        resync_interval: Duration::from_secs_f64(config.resync_interval_secs),
        max_round_failures: config.max_round_failures,
        stall_after: Duration::from_secs_f64(config.stall_after_secs),
        max_workers: config.max_workers,
        crash_loop_limit: config.crash_loop_limit,
        call_warn_after: Duration::from_secs_f64(config.call_warn_after_secs),
        secrets: (*secrets).clone(),
        node: node_info.clone(),
        ..EngineConfig::default()
    };
    let engine = Engine::start(engine_config, store, Arc::new(plugins), resources).map_err(|e| StartError {
        code: 1,
        message: format!("the engine did not start: {e}"),
    })?;
    enqueue.bind(&engine);
    let policy = config.retention.policy().map_err(StartError::config)?;
    let retention = Retention::start(engine.clone(), policy, Some(&metrics.sub("retention")));
    let service = Arc::new(DaemonService::new(engine.clone(), infos, metrics).with_isolation(&config.isolation()));
    let _ = service
        .node
        .set((config.node_id(), node_info, kozmo_engine::model::now_ms()));
    service.set_retention(retention.clone());
    Ok(Daemon {
        engine,
        service,
        config,
        retention,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
        _ = int.recv() => log::info!("SIGINT: shutting down"),
    }
}

/// Runs the daemon until SIGTERM/SIGINT: serve HTTP, then stop the engine
/// (running steps finish or stay persisted for the next start).
pub fn run(config: Config) -> Result<(), StartError> {
    // Refuse a bad configuration (e.g. an open address without a token)
    // before anything listens.
    config.validate().map_err(StartError::config)?;
    let listen = config.listen;
    let std_listener = std::net::TcpListener::bind(listen).map_err(|e| StartError {
        code: 2,
        message: format!("cannot listen on {listen}: {e} (set listen / KOZMO_LISTEN / --listen)"),
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| StartError::config(format!("listener: {e}")))?;
    let daemon = start(config)?;
    let mut options = daemon.config.api_options();
    options.connections.max_connections = fd_limit::connections_within_fd_limit(options.connections.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| StartError {
            code: 1,
            message: format!("cannot start the HTTP runtime: {e}"),
        })?;
    let local = std_listener.local_addr().ok();
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        log::info!(
            "kozmo serving on http://{} (data in {})",
            local.map(|a| a.to_string()).unwrap_or_default(),
            daemon.config.data_dir.display()
        );
        println!(
            "kozmo: listening on http://{}",
            local.map(|a| a.to_string()).unwrap_or_default()
        );
        api::serve(listener, daemon.service.clone(), options, shutdown_signal()).await
    });
    log::info!("HTTP stopped; stopping the engine");
    daemon.retention.stop();
    daemon
        .engine
        .shutdown(Duration::from_secs_f64(daemon.config.shutdown_grace_secs));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result.map_err(|e| StartError {
        code: 1,
        message: format!("HTTP server failed: {e}"),
    })
}

/// Reads the configuration file if given, else defaults.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::from_file(p),
        None => Ok(Config::default()),
    }
}
