//! The `--retention-*` flags of `kozmo serve` (each overrides
//! `[retention]` in the file and its `KOZMO_RETENTION_*` variable).

use clap::Args;

use kozmo_engine::retention::RetentionConfig;

/// Retention flags.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Keep terminal executions this long after they finished, then remove
    /// them with their rows and data store files (`7d`, `12h`, `90s`,
    /// `forever`) [default: 7d]. Active executions are never removed.
    #[arg(long, value_name = "DURATION", env = "KOZMO_RETENTION_KEEP")]
    pub retention_keep: Option<String>,
    /// Keep Failed executions this long instead (e.g. `30d`).
    #[arg(long, value_name = "DURATION", env = "KOZMO_RETENTION_KEEP_FAILED")]
    pub retention_keep_failed: Option<String>,
    /// Keep at most this many terminal executions (the most recently finished).
    #[arg(long, value_name = "N", env = "KOZMO_RETENTION_MAX_EXECUTIONS")]
    pub retention_max_executions: Option<u64>,
    /// Time between background prune passes (`forever`: only `kozmo prune`) [default: 60s].
    #[arg(long, value_name = "DURATION", env = "KOZMO_RETENTION_INTERVAL")]
    pub retention_interval: Option<String>,
}

impl RetentionArgs {
    /// Applies the flags given over `c`.
    pub fn apply(self, c: &mut RetentionConfig) {
        if let Some(v) = self.retention_keep {
            c.keep = v;
        }
        if self.retention_keep_failed.is_some() {
            c.keep_failed = self.retention_keep_failed;
        }
        if self.retention_max_executions.is_some() {
            c.max_executions = self.retention_max_executions;
        }
        if let Some(v) = self.retention_interval {
            c.interval = v;
        }
    }
}
