//! FFI-safe mirrors of the value types, with conversions both ways.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::std_types::{ROption, RResult, RString, RVec};
use abi_stable::StableAbi;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{
    ErrorKind, ExecutionError, Phase, PhaseInfo, PluginError, PluginProperties, Result, TaskInfo, Transition,
    TransitionType,
};

/// [`PluginError`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiError {
    /// Code.
    pub code: RString,
    /// Message.
    pub message: RString,
    /// [`ErrorKind::as_u8`].
    pub kind: u8,
    /// Whether trying again may help.
    pub retryable: bool,
}

impl From<PluginError> for FfiError {
    fn from(e: PluginError) -> Self {
        FfiError {
            code: e.code.into(),
            message: e.message.into(),
            kind: e.kind.as_u8(),
            retryable: e.retryable,
        }
    }
}

impl From<FfiError> for PluginError {
    fn from(e: FfiError) -> Self {
        PluginError {
            code: e.code.into(),
            message: e.message.into(),
            kind: ErrorKind::from_u8(e.kind),
            retryable: e.retryable,
        }
    }
}

/// Converts an FFI result into a plain one.
pub(crate) fn plain<T>(r: RResult<T, FfiError>) -> Result<T> {
    r.into_result().map_err(PluginError::from)
}

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiTime {
    /// Seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, `0..1e9`.
    pub nanos: u32,
}

impl From<SystemTime> for FfiTime {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => FfiTime {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (secs, nanos) = if d.subsec_nanos() == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                };
                FfiTime { secs, nanos }
            }
        }
    }
}

impl From<FfiTime> for SystemTime {
    fn from(t: FfiTime) -> Self {
        if t.secs >= 0 {
            UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + Duration::from_nanos(t.nanos as u64)
        }
    }
}

/// [`ExecutionError`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiExecError {
    /// Code.
    pub code: RString,
    /// Message.
    pub message: RString,
    /// [`ErrorKind::as_u8`].
    pub kind: u8,
}

impl From<&ExecutionError> for FfiExecError {
    fn from(e: &ExecutionError) -> Self {
        FfiExecError {
            code: e.code.as_str().into(),
            message: e.message.as_str().into(),
            kind: e.kind.as_u8(),
        }
    }
}

impl From<FfiExecError> for ExecutionError {
    fn from(e: FfiExecError) -> Self {
        ExecutionError::new(e.code, e.message, ErrorKind::from_u8(e.kind))
    }
}

/// [`TaskInfo`] across the boundary: the two times directly, the rest as
/// JSON (empty when there is no rest, the common case).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiTaskInfo {
    /// `occurred_at`.
    pub occurred_at: ROption<FfiTime>,
    /// `reported_at`.
    pub reported_at: ROption<FfiTime>,
    /// The other fields as JSON, or empty.
    pub rest_json: RVec<u8>,
}

impl From<&TaskInfo> for FfiTaskInfo {
    fn from(info: &TaskInfo) -> Self {
        let rest_json = if info.is_only_times() {
            RVec::new()
        } else {
            let rest = TaskInfo {
                occurred_at: None,
                reported_at: None,
                ..info.clone()
            };
            to_json(&rest)
        };
        FfiTaskInfo {
            occurred_at: info.occurred_at.map(FfiTime::from).into(),
            reported_at: info.reported_at.map(FfiTime::from).into(),
            rest_json,
        }
    }
}

impl TryFrom<FfiTaskInfo> for TaskInfo {
    type Error = PluginError;

    fn try_from(f: FfiTaskInfo) -> Result<Self> {
        let mut info: TaskInfo = if f.rest_json.is_empty() {
            TaskInfo::default()
        } else {
            from_json(&f.rest_json)?
        };
        info.occurred_at = f.occurred_at.into_option().map(SystemTime::from);
        info.reported_at = f.reported_at.into_option().map(SystemTime::from);
        Ok(info)
    }
}

/// [`PhaseInfo`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiPhaseInfo {
    /// Phase value.
    pub phase: i8,
    /// Phase version.
    pub version: u32,
    /// Reason.
    pub reason: RString,
    /// Cleanup flag.
    pub cleanup_on_failure: bool,
    /// Error of a failure.
    pub err: ROption<FfiExecError>,
    /// Details.
    pub info: ROption<FfiTaskInfo>,
}

impl From<&PhaseInfo> for FfiPhaseInfo {
    fn from(p: &PhaseInfo) -> Self {
        FfiPhaseInfo {
            phase: p.phase().0,
            version: p.version(),
            reason: p.reason().into(),
            cleanup_on_failure: p.cleanup_on_failure(),
            err: p.err().map(FfiExecError::from).into(),
            info: p.info().map(FfiTaskInfo::from).into(),
        }
    }
}

impl TryFrom<FfiPhaseInfo> for PhaseInfo {
    type Error = PluginError;

    fn try_from(f: FfiPhaseInfo) -> Result<Self> {
        let info = match f.info.into_option() {
            Some(i) => Some(TaskInfo::try_from(i)?),
            None => None,
        };
        Ok(PhaseInfo::from_parts(
            Phase(f.phase),
            f.version,
            f.reason.into(),
            info,
            f.err.into_option().map(ExecutionError::from),
            f.cleanup_on_failure,
        ))
    }
}

/// [`Transition`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiTransition {
    /// [`TransitionType::as_u8`].
    pub ttype: u8,
    /// The phase info.
    pub info: FfiPhaseInfo,
}

impl From<&Transition> for FfiTransition {
    fn from(t: &Transition) -> Self {
        FfiTransition {
            ttype: t.transition_type().as_u8(),
            info: t.info().into(),
        }
    }
}

impl TryFrom<FfiTransition> for Transition {
    type Error = PluginError;

    fn try_from(f: FfiTransition) -> Result<Self> {
        Ok(Transition::new(TransitionType::from_u8(f.ttype), f.info.try_into()?))
    }
}

/// [`PluginProperties`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiProperties {
    /// See [`PluginProperties::disable_node_level_caching`].
    pub disable_node_level_caching: bool,
    /// See [`PluginProperties::generated_name_max_length`].
    pub generated_name_max_length: ROption<u32>,
}

impl From<PluginProperties> for FfiProperties {
    fn from(p: PluginProperties) -> Self {
        FfiProperties {
            disable_node_level_caching: p.disable_node_level_caching,
            generated_name_max_length: p.generated_name_max_length.into(),
        }
    }
}

impl From<FfiProperties> for PluginProperties {
    fn from(p: FfiProperties) -> Self {
        PluginProperties {
            disable_node_level_caching: p.disable_node_level_caching,
            generated_name_max_length: p.generated_name_max_length.into_option(),
        }
    }
}

/// JSON bytes of a value (values that evolve cross as tolerant JSON).
pub(crate) fn to_json<T: Serialize>(v: &T) -> RVec<u8> {
    serde_json::to_vec(v)
        .expect("serialising a plain value to JSON cannot fail")
        .into()
}

/// Decodes JSON bytes made by [`to_json`].
pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        PluginError::system(
            "BadPayload",
            format!("cannot decode value crossing the plugin boundary: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TaskInfo, TaskLog};

    #[test]
    fn times_round_trip_before_and_after_the_epoch() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(5, 7),
            UNIX_EPOCH - Duration::new(5, 7),
            UNIX_EPOCH - Duration::from_secs(2_208_988_800),
        ] {
            assert_eq!(SystemTime::from(FfiTime::from(t)), t);
        }
    }

    #[test]
    fn transitions_round_trip() {
        let mut info = TaskInfo::at(UNIX_EPOCH + Duration::from_secs(9));
        info.logs.push(TaskLog {
            name: "out".into(),
            uri: "file:///x".into(),
            ..Default::default()
        });
        info.custom_info = serde_json::json!({"k": 1});
        info.reported_at = Some(UNIX_EPOCH);
        for p in [
            PhaseInfo::undefined(),
            PhaseInfo::running(3, Some(info.clone())),
            PhaseInfo::retryable_failure_with_cleanup("c", "m", Some(info)),
            PhaseInfo::queued(UNIX_EPOCH, 1, "why"),
        ] {
            let t = Transition::new(TransitionType::Barrier, p);
            let back = Transition::try_from(FfiTransition::from(&t)).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn errors_round_trip() {
        let e = PluginError::user("c", "m").retryable(true);
        assert_eq!(PluginError::from(FfiError::from(e.clone())), e);
    }
}
