//! Retention: a daemon that runs for months does not fill its disk.
//!
//! Terminal executions (Succeeded, Failed, Aborted) are kept for `keep`
//! after they finished (default 7 days; per-phase overrides), and at most
//! `max_executions` of them; active executions are never touched. The
//! [`pruner`] removes the others in small batches in the background, and
//! `POST /v1/prune` (`kozmo prune`) runs a pass on demand.

pub mod duration;
pub mod pruner;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::ExecPhase;
use crate::store::PruneSelect;

/// The `[retention]` section of `kozmo.toml` (`KOZMO_RETENTION_*`,
/// `--retention-*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long a terminal execution is kept after it finished: `7d`,
    /// `12h`, `90s`, … or `forever`.
    pub keep: String,
    /// Overrides `keep` for Succeeded executions.
    pub keep_succeeded: Option<String>,
    /// Overrides `keep` for Failed executions (keep failures longer).
    pub keep_failed: Option<String>,
    /// Overrides `keep` for Aborted executions.
    pub keep_aborted: Option<String>,
    /// Keep at most this many terminal executions (the most recently
    /// finished), whatever their age; none: no count limit.
    pub max_executions: Option<u64>,
    /// Time between background passes (`forever`: no background pruning,
    /// only `kozmo prune`).
    pub interval: String,
    /// Executions deleted per store transaction.
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: "7d".into(),
            keep_succeeded: None,
            keep_failed: None,
            keep_aborted: None,
            max_executions: None,
            interval: "60s".into(),
            batch: DEFAULT_BATCH,
        }
    }
}

/// Executions a pass selects at a time by default (the committer spreads
/// their deletes over its group commits, a slice at a time).
/// Measured with `kozmo bench --only retention` (200k executions at the
/// full rate the store takes, `max_executions = 20k`): with 100 the pruner
/// fell behind and the file grew with the load; with 600 or 1000 it levels
/// off at 60 MB; larger batches make the commits they ride in longer.
pub const DEFAULT_BATCH: usize = 600;

/// The settings, checked and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Per terminal phase: how long it is kept (`None`: by age forever).
    pub keep: Vec<(ExecPhase, Option<Duration>)>,
    /// At most this many terminal executions.
    pub max_executions: Option<u64>,
    /// Between background passes (`None`: no background pruning).
    pub interval: Option<Duration>,
    /// Executions per transaction.
    pub batch: usize,
}

impl RetentionConfig {
    /// Parses and checks the settings; errors name the key and say what to write.
    pub fn policy(&self) -> Result<Policy, String> {
        let d = |key: &str, v: &str| duration::parse(v).map_err(|e| format!("retention.{key}: {e}"));
        let keep = d("keep", &self.keep)?;
        let mut per_phase = Vec::new();
        for (phase, key, v) in [
            (ExecPhase::Succeeded, "keep_succeeded", &self.keep_succeeded),
            (ExecPhase::Failed, "keep_failed", &self.keep_failed),
            (ExecPhase::Aborted, "keep_aborted", &self.keep_aborted),
        ] {
            let k = match v {
                Some(v) => d(key, v)?,
                None => keep,
            };
            per_phase.push((phase, k));
        }
        let interval = d("interval", &self.interval)?;
        if interval.is_some_and(|i| i < Duration::from_millis(100)) {
            return Err(format!(
                "retention.interval: {:?} is too short; give at least 100ms (\"1s\"), or \"forever\" for no background pruning",
                self.interval
            ));
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err(format!(
                "retention.batch must be between 1 and 10000 executions per transaction, got {}",
                self.batch
            ));
        }
        Ok(Policy {
            keep: per_phase,
            max_executions: self.max_executions,
            interval,
            batch: self.batch,
        })
    }
}

impl Policy {
    /// What is past retention at `now_ms`, one batch at a time;
    /// `older_than` (from `kozmo prune --older-than`) replaces every
    /// phase's keep time.
    pub fn select(&self, now_ms: i64, older_than: Option<Duration>) -> PruneSelect {
        let before = |d: Duration| now_ms.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64);
        PruneSelect {
            before_ms: self
                .keep
                .iter()
                .filter_map(|(p, k)| older_than.or(*k).map(|d| (*p, before(d))))
                .collect(),
            keep_at_most: self.max_executions,
            limit: self.batch,
            after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_a_week_and_overrides_apply_per_phase() {
        let p = RetentionConfig::default().policy().unwrap();
        let week = Duration::from_secs(7 * 86_400);
        assert!(p.keep.iter().all(|(_, k)| *k == Some(week)));
        assert_eq!(p.interval, Some(Duration::from_secs(60)));
        let c = RetentionConfig {
            keep_failed: Some("30d".into()),
            keep_aborted: Some("forever".into()),
            max_executions: Some(10),
            ..Default::default()
        };
        let sel = c.policy().unwrap().select(100 * 86_400_000, None);
        assert_eq!(sel.cutoff(ExecPhase::Succeeded), Some(93 * 86_400_000));
        assert_eq!(sel.cutoff(ExecPhase::Failed), Some(70 * 86_400_000));
        assert_eq!(sel.cutoff(ExecPhase::Aborted), None, "kept forever by age");
        assert_eq!(sel.keep_at_most, Some(10));
        let sel = c.policy().unwrap().select(1000, Some(Duration::from_millis(10)));
        assert_eq!(
            sel.cutoff(ExecPhase::Aborted),
            Some(990),
            "--older-than applies to every phase"
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = RetentionConfig {
            keep_failed: Some("a month".into()),
            ..Default::default()
        };
        assert!(bad.policy().unwrap_err().starts_with("retention.keep_failed"));
        let bad = RetentionConfig {
            batch: 0,
            ..Default::default()
        };
        assert!(bad.policy().unwrap_err().contains("retention.batch"));
        let bad = RetentionConfig {
            interval: "1ms".into(),
            ..Default::default()
        };
        assert!(bad.policy().unwrap_err().contains("retention.interval"));
    }
}
