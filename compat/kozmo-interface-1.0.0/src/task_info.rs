//! [`TaskInfo`] and what it carries: logs, external resources, reasons.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::Phase;

/// A link to a task's logs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskLog {
    /// Display name, e.g. `stdout`.
    pub name: String,
    /// Where the log is (URL or data-store reference).
    pub uri: String,
    /// Format of the messages (`json`, `csv`, or empty for unknown).
    pub message_format: String,
    /// How long the link stays valid.
    pub ttl: Option<Duration>,
}

/// One external resource a task drives (e.g. one job of an array).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExternalResource {
    /// The backend's identifier.
    pub external_id: String,
    /// Cache status as a name (`CACHE_HIT`, `CACHE_MISS`, ...), empty if none.
    pub cache_status: String,
    /// Index of the resource, stable across retries.
    pub index: u32,
    /// Its logs.
    pub logs: Vec<TaskLog>,
    /// Its retry attempt.
    pub retry_attempt: u32,
    /// Its phase.
    pub phase: Phase,
    /// Free-form details.
    pub custom_info: serde_json::Value,
}

/// An extra reason with its own time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReasonInfo {
    /// The reason text.
    pub reason: String,
    /// When it happened.
    pub occurred_at: Option<SystemTime>,
}

/// What a plugin knows about a task beyond its phase.
///
/// `Display` prints `Info<@{occurred_at}>` with an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskInfo {
    /// Links to logs.
    pub logs: Vec<TaskLog>,
    /// When the reported state happened (constructors fill "now" if unset).
    pub occurred_at: Option<SystemTime>,
    /// When the backend reported it; kept separate from `occurred_at`.
    pub reported_at: Option<SystemTime>,
    /// Free-form details (JSON).
    pub custom_info: serde_json::Value,
    /// Sub-resources the task drives.
    pub external_resources: Vec<ExternalResource>,
    /// Reasons beyond the phase's own.
    pub additional_reasons: Vec<ReasonInfo>,
}

impl TaskInfo {
    /// A `TaskInfo` holding only an occurrence time.
    pub fn at(t: SystemTime) -> Self {
        TaskInfo {
            occurred_at: Some(t),
            ..TaskInfo::default()
        }
    }

    /// Whether everything but the two times is empty.
    pub fn is_only_times(&self) -> bool {
        self.logs.is_empty()
            && self.custom_info.is_null()
            && self.external_resources.is_empty()
            && self.additional_reasons.is_empty()
    }
}

/// Formats a time as RFC 3339 in UTC with nanoseconds, trailing zeros of
/// the fraction removed (Go's `RFC3339Nano`): `1900-01-01T01:01:01.000000001Z`,
/// whole seconds without a fraction.
pub fn format_rfc3339_nanos(t: impl Into<chrono::DateTime<chrono::Utc>>) -> String {
    use chrono::Timelike;
    let t: chrono::DateTime<chrono::Utc> = t.into();
    // `%S` prints 60 during a leap second; the fraction is then beyond 1e9.
    let nanos = t.nanosecond() % 1_000_000_000;
    let head = t.format("%Y-%m-%dT%H:%M:%S");
    if nanos == 0 {
        format!("{head}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{head}.{}Z", frac.trim_end_matches('0'))
    }
}

impl fmt::Display for TaskInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.occurred_at {
            Some(t) => write!(f, "Info<@{}>", format_rfc3339_nanos(t)),
            None => f.write_str("Info<@>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_trims_trailing_zeros() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 + 3_661);
        assert_eq!(format_rfc3339_nanos(base), "1970-01-02T01:01:01Z");
        assert_eq!(
            format_rfc3339_nanos(base + Duration::from_nanos(1)),
            "1970-01-02T01:01:01.000000001Z"
        );
        assert_eq!(
            format_rfc3339_nanos(base + Duration::from_millis(100)),
            "1970-01-02T01:01:01.1Z"
        );
    }

    #[test]
    fn display_shows_the_occurrence_time() {
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(TaskInfo::at(t).to_string(), "Info<@1970-01-01T00:00:00Z>");
        assert_eq!(TaskInfo::default().to_string(), "Info<@>");
    }

    #[test]
    fn json_is_tolerant_of_missing_and_extra_fields() {
        let info: TaskInfo = serde_json::from_str(r#"{"logs":[{"uri":"u"}],"future":1}"#).unwrap();
        assert_eq!(info.logs[0].uri, "u");
        assert!(info.occurred_at.is_none());
    }
}
