//! The daemon's configuration: `kozmo.toml`, overridden by `KOZMO_*`
//! environment variables, overridden by command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7460";

/// Everything `kozmo serve` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store (`kozmo.db`) and the data store (`data/`) live.
    pub data_dir: PathBuf,
    /// The plugin directory.
    pub plugins_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// API token; required when `listen` is not loopback.
    pub api_token: Option<String>,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("kozmo-data"),
            plugins_dir: PathBuf::from("plugins"),
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            api_token: None,
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

    /// Refuses settings that cannot work, with what to do.
    pub fn validate(&self) -> anyhow::Result<()> {
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
            [resource_quotas]
            "sleep-quota:slots" = 3
            [plugins]
            enabled = ["echo"]
            default_for_task_types = { python = "shell" }
            "#,
        )
        .unwrap();
        assert_eq!(c.workers, 4);
        assert_eq!(c.plugins.default_for_task_types["python"], "shell");
        assert_eq!(c.resource_quotas["sleep-quota:slots"], 3);
        c.validate().unwrap();
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
