//! The engine's settings.

use super::*;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Data directory: the lock, the plugin call record, and (unless
    /// `data_store` names another) the data store in `<data_dir>/data`.
    pub data_dir: PathBuf,
    /// The data store's root directory, if not `<data_dir>/data`: a
    /// directory several daemons share (a network file system mounted at
    /// the same path on every node), so a node that takes an execution over
    /// reads the files another wrote.
    pub data_store: Option<PathBuf>,
    /// Worker threads running plugin calls (default: number of cores).
    pub workers: usize,
    /// First resync delay of an execution that reported no change.
    pub resync_interval: Duration,
    /// Largest resync delay (the delay doubles per unchanged round).
    pub max_resync_interval: Duration,
    /// Consecutive handler errors before the attempt fails with `RoundFailures`.
    pub max_round_failures: u32,
    /// `TooManyPluginPhaseVersions` limit (strictly greater fails).
    pub max_plugin_phase_versions: u32,
    /// SYSTEM failures retried (default 3; docs/semantics.md#retries).
    pub system_retry_budget: u32,
    /// What [`kozmo_interface::TaskExecutionContext::secrets`] reads
    /// (default: this process's `KOZMO_SECRET_<KEY>` variables when the
    /// configuration is made, no secrets directory).
    pub secrets: HostSecrets,
    /// Most writes (step results and new executions) in one transaction.
    pub max_batch: usize,
    /// When every worker has been inside one step this long (slow or stuck
    /// plugin calls), a spare worker is started so other executions go on.
    pub stall_after: Duration,
    /// Upper bound of the pool, spares included.
    pub max_workers: usize,
    /// An execution that was inside a plugin call at this many consecutive
    /// unclean stops of the daemon is failed with `PluginCrashed` at the
    /// next start (default 2; 0 = never).
    pub crash_loop_limit: u32,
    /// A plugin call running this long is reported: a warning and an event,
    /// and the execution's status says so (default 60 s).
    pub call_warn_after: Duration,
    /// What this node tells the others at each heartbeat (a store several
    /// daemons share; ignored otherwise).
    pub node: crate::store::NodeInfo,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: PathBuf::from("kozmo-data"),
            data_store: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            resync_interval: Duration::from_secs(1),
            // Plugins that do not signal (most poll a process or a service)
            // are noticed at most this late; 10k such executions cost
            // ~2k rounds/s, far below what the engine does.
            max_resync_interval: Duration::from_secs(5),
            max_round_failures: 10,
            max_plugin_phase_versions: 100_000,
            system_retry_budget: 3,
            secrets: HostSecrets::from_process_env(None),
            max_batch: 4096,
            stall_after: Duration::from_secs(5),
            max_workers: 64,
            crash_loop_limit: 2,
            call_warn_after: Duration::from_secs(60),
            node: crate::store::NodeInfo::default(),
        }
    }
}
