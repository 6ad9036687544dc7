//! Process isolation: a plugin library loaded by a supervised child process
//! (`kozmo __plugin-host`) instead of the daemon, so a crash, an exit, an
//! exhausted memory cap or a stuck call in it fails only its own calls.
//!
//! To the engine an isolated plugin is just another `Arc<dyn Plugin>`
//! ([`plugin::IsolatedPlugin`]); every call and every host service the
//! plugin calls back crosses a Unix socket in the frames of
//! `kozmo-isolation-protocol`. The loader opens a library through
//! [`open::open_isolated`] when the configuration isolates one of its
//! plugins; every other check stays the loader's.
//!
//! | module | holds |
//! |---|---|
//! | [`conn`] | framed connection with a deadline; descriptor passing |
//! | [`spawn`] | the child's command line, environment, limits, death signal; how it ended |
//! | [`supervisor`] | one child per library: generations, restarts with backoff, call connections |
//! | [`control`] | the daemon's side of the control connection: logs, signals, metrics, enqueue |
//! | [`serve`] | host services answered for the child during a call |
//! | [`plugin`] | [`plugin::IsolatedPlugin`]: the `Plugin` the engine calls |
//! | [`open`] | the loader's branch point |
//! | [`child`] | the child process itself |

use std::time::Duration;

pub mod child;
pub mod conn;
pub mod control;
pub mod open;
pub mod plugin;
pub mod serve;
pub mod spawn;
pub mod supervisor;
pub(crate) mod wire;

/// Which plugins run in a child process, and the limits of those children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationConfig {
    /// Plugin ids to isolate; `*` isolates every plugin. Empty = none.
    pub plugins: Vec<String>,
    /// The child's address-space limit (RLIMIT_AS), in MiB; `None` = unlimited.
    pub memory_mb: Option<u64>,
    /// Longest a call (loader, handle, abort, finalize) may take before the
    /// child is killed and restarted.
    pub call_timeout: Duration,
    /// The first wait before restarting a dead child; doubled after each
    /// failed restart up to [`IsolationConfig::max_restart_backoff`], reset by
    /// a successful call.
    pub restart_backoff: Duration,
    /// The longest wait between restarts.
    pub max_restart_backoff: Duration,
    /// The `kozmo` executable children run (`None` = this process's own
    /// executable; tests and benchmarks that are not `kozmo` set it).
    pub host_exe: Option<std::path::PathBuf>,
}

/// Default [`IsolationConfig::call_timeout`], in seconds.
pub const DEFAULT_CALL_TIMEOUT_SECS: f64 = 60.0;
/// Default [`IsolationConfig::restart_backoff`], in seconds.
pub const DEFAULT_RESTART_BACKOFF_SECS: f64 = 0.5;

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            plugins: Vec::new(),
            memory_mb: None,
            call_timeout: Duration::from_secs_f64(DEFAULT_CALL_TIMEOUT_SECS),
            restart_backoff: Duration::from_secs_f64(DEFAULT_RESTART_BACKOFF_SECS),
            max_restart_backoff: Duration::from_secs(30),
            host_exe: None,
        }
    }
}

impl IsolationConfig {
    /// Whether any plugin is isolated.
    pub fn is_active(&self) -> bool {
        !self.plugins.is_empty()
    }

    /// Whether plugin `id` is isolated.
    pub fn covers(&self, id: &str) -> bool {
        self.plugins.iter().any(|p| p == "*" || p == id)
    }

    /// Whether every plugin is isolated.
    pub fn covers_all(&self) -> bool {
        self.plugins.iter().any(|p| p == "*")
    }
}
