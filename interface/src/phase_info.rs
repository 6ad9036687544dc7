//! [`PhaseInfo`]: a phase plus what comes with it, and its constructors.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{ErrorKind, ExecutionError, Phase, TaskInfo};

/// A phase with its version, reason, details and (for failures) error.
///
/// Build one with the constructors; every constructor except
/// [`PhaseInfo::undefined`] fills `info.occurred_at` with "now" when it is
/// not set.
///
/// ```
/// use kozmo_interface::{ErrorKind, Phase, PhaseInfo};
///
/// let running = PhaseInfo::running(2, None);
/// assert_eq!((running.phase(), running.version()), (Phase::RUNNING, 2));
///
/// let failed = PhaseInfo::retryable_failure("Timeout", "backend too slow", None);
/// assert_eq!(failed.phase(), Phase::RETRYABLE_FAILURE);
/// assert_eq!(failed.err().unwrap().kind, ErrorKind::User);
/// assert_eq!(failed.reason(), "");
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseInfo {
    phase: Phase,
    version: u32,
    info: Option<TaskInfo>,
    err: Option<ExecutionError>,
    reason: String,
    cleanup_on_failure: bool,
}

fn with_occurrence(info: Option<TaskInfo>) -> TaskInfo {
    let mut info = info.unwrap_or_default();
    if info.occurred_at.is_none() {
        info.occurred_at = Some(SystemTime::now());
    }
    info
}

impl PhaseInfo {
    fn build(
        phase: Phase,
        version: u32,
        err: Option<ExecutionError>,
        info: Option<TaskInfo>,
        cleanup_on_failure: bool,
    ) -> Self {
        PhaseInfo {
            phase,
            version,
            info: Some(with_occurrence(info)),
            err,
            reason: String::new(),
            cleanup_on_failure,
        }
    }

    fn failed_with(phase: Phase, err: ExecutionError, info: Option<TaskInfo>, cleanup: bool) -> Self {
        PhaseInfo::build(phase, 0, Some(err), info, cleanup)
    }

    fn with_reason_set(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The zero value: phase Undefined, version 0, no info, no error.
    pub fn undefined() -> Self {
        PhaseInfo::default()
    }

    /// Builds a PhaseInfo from all of its parts, exactly as given (for hosts
    /// that restore one from storage).
    pub fn from_parts(
        phase: Phase,
        version: u32,
        reason: String,
        info: Option<TaskInfo>,
        err: Option<ExecutionError>,
        cleanup_on_failure: bool,
    ) -> Self {
        PhaseInfo {
            phase,
            version,
            info,
            err,
            reason,
            cleanup_on_failure,
        }
    }

    /// NotReady at time `t`.
    pub fn not_ready(t: SystemTime, version: u32, reason: impl Into<String>) -> Self {
        PhaseInfo::build(Phase::NOT_READY, version, None, Some(TaskInfo::at(t)), false).with_reason_set(reason)
    }

    /// WaitingForResources at time `t` (deprecated form without info).
    #[deprecated(note = "use PhaseInfo::waiting_for_resources_info")]
    pub fn waiting_for_resources(t: SystemTime, version: u32, reason: impl Into<String>) -> Self {
        PhaseInfo::build(
            Phase::WAITING_FOR_RESOURCES,
            version,
            None,
            Some(TaskInfo::at(t)),
            false,
        )
        .with_reason_set(reason)
    }

    /// WaitingForResources with details; `t` is ignored (occurrence comes
    /// from `info`, else now), as in the original (docs/semantics.md#constructors).
    pub fn waiting_for_resources_info(
        _t: SystemTime,
        version: u32,
        reason: impl Into<String>,
        info: Option<TaskInfo>,
    ) -> Self {
        PhaseInfo::build(Phase::WAITING_FOR_RESOURCES, version, None, info, false).with_reason_set(reason)
    }

    /// Queued at time `t`.
    pub fn queued(t: SystemTime, version: u32, reason: impl Into<String>) -> Self {
        PhaseInfo::build(Phase::QUEUED, version, None, Some(TaskInfo::at(t)), false).with_reason_set(reason)
    }

    /// Queued with details.
    pub fn queued_with_task_info(version: u32, reason: impl Into<String>, info: Option<TaskInfo>) -> Self {
        PhaseInfo::build(Phase::QUEUED, version, None, info, false).with_reason_set(reason)
    }

    /// Initializing; `t` is ignored (occurrence comes from `info`, else now).
    pub fn initializing(_t: SystemTime, version: u32, reason: impl Into<String>, info: Option<TaskInfo>) -> Self {
        PhaseInfo::build(Phase::INITIALIZING, version, None, info, false).with_reason_set(reason)
    }

    /// Running.
    pub fn running(version: u32, info: Option<TaskInfo>) -> Self {
        PhaseInfo::build(Phase::RUNNING, version, None, info, false)
    }

    /// Success (version 0).
    pub fn success(info: Option<TaskInfo>) -> Self {
        PhaseInfo::build(Phase::SUCCESS, 0, None, info, false)
    }

    /// WaitingForCache.
    pub fn waiting_for_cache(version: u32, info: Option<TaskInfo>) -> Self {
        PhaseInfo::build(Phase::WAITING_FOR_CACHE, version, None, info, false)
    }

    /// Aborted at time `t` (from the original's newer line).
    pub fn aborted(t: SystemTime, version: u32, reason: impl Into<String>) -> Self {
        PhaseInfo::build(Phase::ABORTED, version, None, Some(TaskInfo::at(t)), false).with_reason_set(reason)
    }

    /// Any phase with an error; a missing error becomes
    /// [`ExecutionError::unknown`], never no error (docs/semantics.md#constructors).
    pub fn failed(phase: Phase, err: Option<ExecutionError>, info: Option<TaskInfo>) -> Self {
        PhaseInfo::failed_with(phase, err.unwrap_or_else(ExecutionError::unknown), info, false)
    }

    /// PermanentFailure, kind USER; `reason` becomes the error message.
    pub fn failure(code: impl Into<String>, reason: impl Into<String>, info: Option<TaskInfo>) -> Self {
        let err = ExecutionError::new(code, reason, ErrorKind::User);
        PhaseInfo::failed_with(Phase::PERMANENT_FAILURE, err, info, false)
    }

    /// PermanentFailure, kind USER, asking for Abort to clean up.
    pub fn failure_with_cleanup(code: impl Into<String>, reason: impl Into<String>, info: Option<TaskInfo>) -> Self {
        let err = ExecutionError::new(code, reason, ErrorKind::User);
        PhaseInfo::failed_with(Phase::PERMANENT_FAILURE, err, info, true)
    }

    /// RetryableFailure, kind USER.
    pub fn retryable_failure(code: impl Into<String>, reason: impl Into<String>, info: Option<TaskInfo>) -> Self {
        let err = ExecutionError::new(code, reason, ErrorKind::User);
        PhaseInfo::failed_with(Phase::RETRYABLE_FAILURE, err, info, false)
    }

    /// RetryableFailure, kind USER, asking for Abort to clean up.
    pub fn retryable_failure_with_cleanup(
        code: impl Into<String>,
        reason: impl Into<String>,
        info: Option<TaskInfo>,
    ) -> Self {
        let err = ExecutionError::new(code, reason, ErrorKind::User);
        PhaseInfo::failed_with(Phase::RETRYABLE_FAILURE, err, info, true)
    }

    /// PermanentFailure, kind SYSTEM.
    pub fn system_failure(code: impl Into<String>, reason: impl Into<String>, info: Option<TaskInfo>) -> Self {
        let err = ExecutionError::new(code, reason, ErrorKind::System);
        PhaseInfo::failed_with(Phase::PERMANENT_FAILURE, err, info, false)
    }

    /// PermanentFailure, kind SYSTEM, asking for Abort to clean up.
    pub fn system_failure_with_cleanup(
        code: impl Into<String>,
        reason: impl Into<String>,
        info: Option<TaskInfo>,
    ) -> Self {
        let err = ExecutionError::new(code, reason, ErrorKind::System);
        PhaseInfo::failed_with(Phase::PERMANENT_FAILURE, err, info, true)
    }

    /// RetryableFailure, kind SYSTEM.
    pub fn system_retryable_failure(
        code: impl Into<String>,
        reason: impl Into<String>,
        info: Option<TaskInfo>,
    ) -> Self {
        let err = ExecutionError::new(code, reason, ErrorKind::System);
        PhaseInfo::failed_with(Phase::RETRYABLE_FAILURE, err, info, false)
    }

    /// RetryableFailure, kind SYSTEM, asking for Abort to clean up.
    pub fn system_retryable_failure_with_cleanup(
        code: impl Into<String>,
        reason: impl Into<String>,
        info: Option<TaskInfo>,
    ) -> Self {
        let err = ExecutionError::new(code, reason, ErrorKind::System);
        PhaseInfo::failed_with(Phase::RETRYABLE_FAILURE, err, info, true)
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The phase version (events are sent only for a new (phase, version)).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The reason (empty for failures: their text is in the error).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The details, `None` only for [`PhaseInfo::undefined`].
    pub fn info(&self) -> Option<&TaskInfo> {
        self.info.as_ref()
    }

    /// The error of a failure.
    pub fn err(&self) -> Option<&ExecutionError> {
        self.err.as_ref()
    }

    /// Whether a failure asked Abort to run for cleanup.
    pub fn cleanup_on_failure(&self) -> bool {
        self.cleanup_on_failure
    }

    /// A copy with another version; keeps the cleanup flag (Kozmo fix).
    pub fn with_version(&self, version: u32) -> Self {
        PhaseInfo {
            version,
            ..self.clone()
        }
    }

    /// Appends a reason, `", "`-separated (the original's newer `WithReason`;
    /// vectors in docs/semantics.md#constructors).
    pub fn with_reason(mut self, reason: &str) -> Self {
        if self.reason.is_empty() {
            self.reason = reason.to_string();
        } else {
            self.reason.push_str(", ");
            self.reason.push_str(reason);
        }
        self
    }

    /// Replaces the details.
    pub fn with_info(mut self, info: Option<TaskInfo>) -> Self {
        self.info = info;
        self
    }
}

impl fmt::Display for PhaseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.err, &self.info) {
            (Some(err), _) => write!(f, "Phase<{}:{} Error:{}>", self.phase, self.version, err),
            (None, Some(info)) => write!(
                f,
                "Phase<{}:{} {} Reason:{}>",
                self.phase, self.version, info, self.reason
            ),
            (None, None) => write!(f, "Phase<{}:{} <nil> Reason:{}>", self.phase, self.version, self.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type Ctor = fn(Option<TaskInfo>) -> PhaseInfo;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)
    }

    fn occurred(p: &PhaseInfo) -> SystemTime {
        p.info().unwrap().occurred_at.unwrap()
    }

    fn assert_now(p: &PhaseInfo, before: SystemTime) {
        let at = occurred(p);
        assert!(at >= before && at <= SystemTime::now(), "{p}");
    }

    #[test]
    fn constructors_with_a_time_use_it() {
        let cases: [(PhaseInfo, Phase); 3] = [
            (PhaseInfo::not_ready(t0(), 3, "r"), Phase::NOT_READY),
            (PhaseInfo::queued(t0(), 3, "r"), Phase::QUEUED),
            (PhaseInfo::aborted(t0(), 3, "r"), Phase::ABORTED),
        ];
        for (p, phase) in cases {
            assert_eq!(p.phase(), phase);
            assert_eq!(p.version(), 3);
            assert_eq!(p.reason(), "r");
            assert!(p.err().is_none());
            assert!(!p.cleanup_on_failure());
            assert_eq!(occurred(&p), t0());
            assert!(p.info().unwrap().is_only_times());
        }
        #[allow(deprecated)]
        let w = PhaseInfo::waiting_for_resources(t0(), 1, "quota");
        assert_eq!(
            (w.phase(), w.version(), w.reason()),
            (Phase::WAITING_FOR_RESOURCES, 1, "quota")
        );
        assert_eq!(occurred(&w), t0());
    }

    #[test]
    fn constructors_with_info_take_its_time_else_now() {
        let with_time = Some(TaskInfo::at(t0()));
        let rows: [(&str, Ctor, Phase, u32, &str); 6] = [
            (
                "wfr",
                |i| PhaseInfo::waiting_for_resources_info(SystemTime::UNIX_EPOCH, 4, "r", i),
                Phase::WAITING_FOR_RESOURCES,
                4,
                "r",
            ),
            (
                "queued",
                |i| PhaseInfo::queued_with_task_info(4, "r", i),
                Phase::QUEUED,
                4,
                "r",
            ),
            (
                "init",
                |i| PhaseInfo::initializing(SystemTime::UNIX_EPOCH, 4, "r", i),
                Phase::INITIALIZING,
                4,
                "r",
            ),
            ("running", |i| PhaseInfo::running(4, i), Phase::RUNNING, 4, ""),
            ("success", PhaseInfo::success, Phase::SUCCESS, 0, ""),
            (
                "cache",
                |i| PhaseInfo::waiting_for_cache(4, i),
                Phase::WAITING_FOR_CACHE,
                4,
                "",
            ),
        ];
        for (name, ctor, phase, version, reason) in rows {
            let p = ctor(with_time.clone());
            assert_eq!((p.phase(), p.version(), p.reason()), (phase, version, reason), "{name}");
            assert!(p.err().is_none(), "{name}");
            assert!(!p.cleanup_on_failure(), "{name}");
            assert_eq!(occurred(&p), t0(), "{name}");
            let before = SystemTime::now();
            let p = ctor(None);
            assert_now(&p, before);
        }
    }

    #[test]
    fn failure_constructors_follow_the_table() {
        let rows: [(Ctor, Phase, ErrorKind, bool); 8] = [
            (
                |i| PhaseInfo::failure("c", "m", i),
                Phase::PERMANENT_FAILURE,
                ErrorKind::User,
                false,
            ),
            (
                |i| PhaseInfo::failure_with_cleanup("c", "m", i),
                Phase::PERMANENT_FAILURE,
                ErrorKind::User,
                true,
            ),
            (
                |i| PhaseInfo::retryable_failure("c", "m", i),
                Phase::RETRYABLE_FAILURE,
                ErrorKind::User,
                false,
            ),
            (
                |i| PhaseInfo::retryable_failure_with_cleanup("c", "m", i),
                Phase::RETRYABLE_FAILURE,
                ErrorKind::User,
                true,
            ),
            (
                |i| PhaseInfo::system_failure("c", "m", i),
                Phase::PERMANENT_FAILURE,
                ErrorKind::System,
                false,
            ),
            (
                |i| PhaseInfo::system_failure_with_cleanup("c", "m", i),
                Phase::PERMANENT_FAILURE,
                ErrorKind::System,
                true,
            ),
            (
                |i| PhaseInfo::system_retryable_failure("c", "m", i),
                Phase::RETRYABLE_FAILURE,
                ErrorKind::System,
                false,
            ),
            (
                |i| PhaseInfo::system_retryable_failure_with_cleanup("c", "m", i),
                Phase::RETRYABLE_FAILURE,
                ErrorKind::System,
                true,
            ),
        ];
        for (i, (ctor, phase, kind, cleanup)) in rows.into_iter().enumerate() {
            let p = ctor(Some(TaskInfo::at(t0())));
            assert_eq!(p.phase(), phase, "row {i}");
            assert_eq!(p.version(), 0, "row {i}");
            assert_eq!(p.reason(), "", "row {i}");
            assert_eq!(p.err(), Some(&ExecutionError::new("c", "m", kind)), "row {i}");
            assert_eq!(p.cleanup_on_failure(), cleanup, "row {i}");
            assert_eq!(occurred(&p), t0(), "row {i}");
            let before = SystemTime::now();
            assert_now(&ctor(None), before);
        }
    }

    #[test]
    fn failed_keeps_any_phase_and_substitutes_a_missing_error() {
        let p = PhaseInfo::failed(Phase::ABORTED, None, None);
        assert_eq!(p.phase(), Phase::ABORTED);
        assert_eq!(p.version(), 0);
        assert_eq!(p.err(), Some(&ExecutionError::unknown()));
        assert!(!p.cleanup_on_failure());
        let e = ExecutionError::new("x", "y", ErrorKind::System);
        let p = PhaseInfo::failed(Phase::RETRYABLE_FAILURE, Some(e.clone()), None);
        assert_eq!(p.err(), Some(&e));
        assert!(p.info().unwrap().occurred_at.is_some());
    }

    #[test]
    fn undefined_is_the_zero_value() {
        let u = PhaseInfo::undefined();
        assert_eq!(u.phase(), Phase::UNDEFINED);
        assert_eq!(u.version(), 0);
        assert!(u.info().is_none());
        assert!(u.err().is_none());
        assert_eq!(u.reason(), "");
        assert!(!u.cleanup_on_failure());
    }

    #[test]
    fn with_version_keeps_everything_else_including_cleanup() {
        let p = PhaseInfo::failure_with_cleanup("c", "m", None);
        let q = p.with_version(7);
        assert_eq!(q.version(), 7);
        assert!(q.cleanup_on_failure());
        assert_eq!((q.phase(), q.err(), q.info()), (p.phase(), p.err(), p.info()));
        let r = PhaseInfo::queued(t0(), 1, "why").with_version(2);
        assert_eq!(r.reason(), "why");
    }

    #[test]
    fn with_reason_appends_like_the_v2_line() {
        let base = PhaseInfo::running(1, None);
        assert_eq!(base.clone().with_reason("new reason").reason(), "new reason");
        let p = PhaseInfo::queued(t0(), 1, "initial reason").with_reason("additional reason");
        assert_eq!(p.reason(), "initial reason, additional reason");
        let p = PhaseInfo::queued(t0(), 1, "first reason, second reason").with_reason("third reason");
        assert_eq!(p.reason(), "first reason, second reason, third reason");
        let p = PhaseInfo::queued(t0(), 1, "existing reason").with_reason("");
        assert_eq!(p.reason(), "existing reason, ");
        let p = PhaseInfo::running(1, None)
            .with_reason("initial")
            .with_reason("additional");
        assert_eq!(
            (p.phase(), p.version(), p.reason()),
            (Phase::RUNNING, 1, "initial, additional")
        );
    }

    #[test]
    fn string_forms() {
        assert_eq!(
            PhaseInfo::undefined().to_string(),
            "Phase<PhaseUndefined:0 <nil> Reason:>"
        );
        let q = PhaseInfo::queued(SystemTime::UNIX_EPOCH, 2, "waiting");
        assert_eq!(
            q.to_string(),
            "Phase<PhaseQueued:2 Info<@1970-01-01T00:00:00Z> Reason:waiting>"
        );
        let f = PhaseInfo::failure("x", "y", None);
        assert_eq!(
            f.to_string(),
            r#"Phase<PhasePermanentFailure:0 Error:code:"x" message:"y" kind:USER>"#
        );
    }

    #[test]
    fn serde_round_trip() {
        let p = PhaseInfo::system_retryable_failure_with_cleanup("c", "m", None);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PhaseInfo>(&json).unwrap(), p);
    }
}
