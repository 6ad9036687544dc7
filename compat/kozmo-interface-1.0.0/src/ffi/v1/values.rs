//! FFI-safe mirrors of the value types, with conversions both ways.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::std_types::{RBox, ROption, RResult, RStr, RString, RVec};
use abi_stable::{RMut, StableAbi};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{
    ErrorKind, ExecutionError, ExternalResource, Phase, PhaseInfo, PluginError, PluginProperties, ReasonInfo, Result,
    TaskInfo, TaskLog, Transition, TransitionType,
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

impl FfiTime {
    /// The Unix epoch.
    pub const EPOCH: FfiTime = FfiTime { secs: 0, nanos: 0 };
}

impl From<SystemTime> for FfiTime {
    #[inline]
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
    #[inline]
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

/// The non-time parts of a [`TaskInfo`], borrowed, for JSON: same field
/// names as `TaskInfo`, so the host decodes them as a `TaskInfo` (its
/// serde is tolerant of the missing times) without the plugin cloning
/// anything.
#[derive(Serialize)]
struct TaskInfoRest<'a> {
    logs: &'a [TaskLog],
    custom_info: &'a serde_json::Value,
    external_resources: &'a [ExternalResource],
    additional_reasons: &'a [ReasonInfo],
}

impl<'a> TaskInfoRest<'a> {
    /// The rest of `info`, or `None` when everything but the times is empty
    /// (the common case: nothing is serialised or allocated then).
    fn of(info: &'a TaskInfo) -> Option<Self> {
        // Exhaustive on purpose: a new `TaskInfo` field must be carried here.
        let TaskInfo {
            logs,
            occurred_at: _,
            reported_at: _,
            custom_info,
            external_resources,
            additional_reasons,
        } = info;
        if logs.is_empty() && custom_info.is_null() && external_resources.is_empty() && additional_reasons.is_empty() {
            return None;
        }
        Some(TaskInfoRest {
            logs,
            custom_info,
            external_resources,
            additional_reasons,
        })
    }
}

/// The parts of a [`PhaseInfo`] that most results do not have: a reason, a
/// failure's error, and the non-time parts of its [`TaskInfo`] as JSON.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiPhaseRare {
    /// Reason (may be empty).
    pub reason: RString,
    /// Error of a failure.
    pub err: ROption<FfiExecError>,
    /// `TaskInfo` without its times as JSON, empty when there is none (only
    /// meaningful with [`FfiPhaseInfo::HAS_INFO`]).
    pub info_rest_json: RVec<u8>,
}

/// [`PhaseInfo`] across the boundary: a small fixed record (phase, version,
/// flags, the two [`TaskInfo`] times) that needs no allocation, plus one
/// optional box for the rare parts ([`FfiPhaseRare`]), present only when
/// one of them is not empty.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiPhaseInfo {
    /// Phase value.
    pub phase: i8,
    /// `HAS_INFO | OCCURRED_AT | REPORTED_AT | CLEANUP_ON_FAILURE`; other
    /// bits are ignored.
    pub flags: u8,
    /// Phase version.
    pub version: u32,
    /// `info.occurred_at`, valid with [`FfiPhaseInfo::OCCURRED_AT`].
    pub occurred_at: FfiTime,
    /// `info.reported_at`, valid with [`FfiPhaseInfo::REPORTED_AT`].
    pub reported_at: FfiTime,
    /// Reason, error, the rest of the task info; `RNone` when all are empty.
    pub rare: ROption<RBox<FfiPhaseRare>>,
}

impl FfiPhaseInfo {
    /// The phase info has a [`TaskInfo`].
    pub const HAS_INFO: u8 = 1;
    /// `info.occurred_at` is set.
    pub const OCCURRED_AT: u8 = 2;
    /// `info.reported_at` is set.
    pub const REPORTED_AT: u8 = 4;
    /// [`PhaseInfo::cleanup_on_failure`].
    pub const CLEANUP_ON_FAILURE: u8 = 8;

    /// The undefined phase info (what a host puts in an out-record before a call).
    pub const UNDEFINED: FfiPhaseInfo = FfiPhaseInfo {
        phase: 0,
        flags: 0,
        version: 0,
        occurred_at: FfiTime::EPOCH,
        reported_at: FfiTime::EPOCH,
        rare: ROption::RNone,
    };

    #[inline]
    fn flag(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }

    /// The task info's times, when there is a task info.
    #[inline]
    fn times(&self) -> Option<(Option<SystemTime>, Option<SystemTime>)> {
        self.flag(FfiPhaseInfo::HAS_INFO).then(|| {
            (
                self.flag(FfiPhaseInfo::OCCURRED_AT).then(|| self.occurred_at.into()),
                self.flag(FfiPhaseInfo::REPORTED_AT).then(|| self.reported_at.into()),
            )
        })
    }

    /// The plain value when there are no rare parts (the common case):
    /// built in one go, with no decoding and no allocation.
    #[inline]
    fn to_plain_without_rare(&self) -> PhaseInfo {
        PhaseInfo::from_parts(
            Phase(self.phase),
            self.version,
            String::new(),
            self.times().map(|(occurred_at, reported_at)| TaskInfo {
                occurred_at,
                reported_at,
                ..TaskInfo::default()
            }),
            None,
            self.flag(FfiPhaseInfo::CLEANUP_ON_FAILURE),
        )
    }
}

impl From<&PhaseInfo> for FfiPhaseInfo {
    #[inline]
    fn from(p: &PhaseInfo) -> Self {
        let mut flags = if p.cleanup_on_failure() {
            FfiPhaseInfo::CLEANUP_ON_FAILURE
        } else {
            0
        };
        let (mut occurred_at, mut reported_at) = (FfiTime::EPOCH, FfiTime::EPOCH);
        // An `Option` rather than an empty `RVec`: dropping an unused `RVec`
        // is a call through its vtable.
        let mut info_rest_json = None;
        if let Some(info) = p.info() {
            flags |= FfiPhaseInfo::HAS_INFO;
            if let Some(t) = info.occurred_at {
                flags |= FfiPhaseInfo::OCCURRED_AT;
                occurred_at = t.into();
            }
            if let Some(t) = info.reported_at {
                flags |= FfiPhaseInfo::REPORTED_AT;
                reported_at = t.into();
            }
            info_rest_json = TaskInfoRest::of(info).map(|rest| to_json(&rest));
        }
        let rare = if p.reason().is_empty() && p.err().is_none() && info_rest_json.is_none() {
            ROption::RNone
        } else {
            ROption::RSome(RBox::new(FfiPhaseRare {
                reason: p.reason().into(),
                err: p.err().map(FfiExecError::from).into(),
                info_rest_json: info_rest_json.unwrap_or_default(),
            }))
        };
        FfiPhaseInfo {
            phase: p.phase().0,
            flags,
            version: p.version(),
            occurred_at,
            reported_at,
            rare,
        }
    }
}

impl TryFrom<FfiPhaseInfo> for PhaseInfo {
    type Error = PluginError;

    #[inline]
    fn try_from(f: FfiPhaseInfo) -> Result<Self> {
        if f.rare.is_none() {
            return Ok(f.to_plain_without_rare());
        }
        with_rare_parts(f)
    }
}

/// [`PhaseInfo::try_from`] when there are rare parts: decodes the JSON.
#[inline(never)]
fn with_rare_parts(f: FfiPhaseInfo) -> Result<PhaseInfo> {
    let times = f.times();
    let cleanup = f.flag(FfiPhaseInfo::CLEANUP_ON_FAILURE);
    let (reason, err, rest) = match f.rare.into_option() {
        None => (String::new(), None, RVec::new()),
        Some(rare) => {
            let rare = RBox::into_inner(rare);
            (
                rare.reason.into_string(),
                rare.err.into_option().map(ExecutionError::from),
                rare.info_rest_json,
            )
        }
    };
    let info = match times {
        None => None,
        Some((occurred_at, reported_at)) => {
            let mut info: TaskInfo = if rest.is_empty() {
                TaskInfo::default()
            } else {
                from_json(&rest)?
            };
            info.occurred_at = occurred_at;
            info.reported_at = reported_at;
            Some(info)
        }
    };
    Ok(PhaseInfo::from_parts(
        Phase(f.phase),
        f.version,
        reason,
        info,
        err,
        cleanup,
    ))
}

/// [`Transition`] across the boundary. `handle` writes it into a record the
/// host provides, so it is neither returned by value nor copied on the way.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiTransition {
    /// [`TransitionType::as_u8`].
    pub ttype: u8,
    /// The phase info.
    pub info: FfiPhaseInfo,
}

impl FfiTransition {
    /// An undefined transition: the host's out-record before a call.
    pub const UNDEFINED: FfiTransition = FfiTransition {
        ttype: 0,
        info: FfiPhaseInfo::UNDEFINED,
    };
}

impl From<&Transition> for FfiTransition {
    #[inline]
    fn from(t: &Transition) -> Self {
        FfiTransition {
            ttype: t.transition_type().as_u8(),
            info: t.info().into(),
        }
    }
}

impl TryFrom<FfiTransition> for Transition {
    type Error = PluginError;

    #[inline]
    fn try_from(f: FfiTransition) -> Result<Self> {
        let ttype = TransitionType::from_u8(f.ttype);
        if f.info.rare.is_none() {
            // Built straight into the caller's result: no copy of a
            // `Result<PhaseInfo>` on the way.
            return Ok(Transition::new(ttype, f.info.to_plain_without_rare()));
        }
        Ok(Transition::new(ttype, with_rare_parts(f.info)?))
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

/// Where the host writes a string the plugin asked for: the plugin's own
/// `String` and the plugin's function that fills it. The string is
/// allocated once, by the plugin's allocator, at its size: no `RString`
/// that the plugin would have to copy again (its buffer belongs to the
/// host's allocator) and no growth through `RString`'s vtable.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiStrSink<'a> {
    target: RMut<'a, ()>,
    set: unsafe extern "C" fn(RMut<'_, ()>, RStr<'_>),
}

impl<'a> FfiStrSink<'a> {
    /// Plugin side: a sink that fills `target`.
    #[inline]
    pub fn new(target: &'a mut String) -> Self {
        FfiStrSink {
            // SAFETY: erasing the type; `set_string` is the only user and
            // casts it back to `String`.
            target: unsafe { RMut::new(target).transmute::<()>() },
            set: set_string,
        }
    }

    /// Host side: hands `value` over (the plugin copies it).
    #[inline]
    pub fn set(self, value: &str) {
        // SAFETY: `target` and `set` were paired by `FfiStrSink::new` (the
        // fields are private).
        unsafe { (self.set)(self.target, value.into()) }
    }
}

/// Runs in the plugin: `target` is the `String` given to [`FfiStrSink::new`].
unsafe extern "C" fn set_string(target: RMut<'_, ()>, value: RStr<'_>) {
    // SAFETY: see `FfiStrSink::new`.
    let target = unsafe { target.transmute_into_mut::<String>() };
    // Allocated at its size in one go (no growth path).
    *target = String::from(value.as_str());
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
    fn the_common_result_needs_no_box_and_no_json() {
        let running = FfiPhaseInfo::from(&PhaseInfo::running(2, None));
        assert!(running.rare.is_none());
        assert_eq!(running.flags, FfiPhaseInfo::HAS_INFO | FfiPhaseInfo::OCCURRED_AT);
        let undefined = FfiPhaseInfo::from(&PhaseInfo::undefined());
        assert!(undefined.rare.is_none());
        assert_eq!(undefined.flags, 0);
        assert_eq!(PhaseInfo::try_from(undefined).unwrap(), PhaseInfo::undefined());
    }

    #[test]
    fn every_rare_part_round_trips_alone() {
        let t = UNIX_EPOCH + Duration::new(3, 4);
        let mut infos = vec![
            TaskInfo {
                reported_at: Some(t),
                ..TaskInfo::default()
            },
            TaskInfo {
                custom_info: serde_json::json!(["x"]),
                ..TaskInfo::default()
            },
            TaskInfo {
                logs: vec![TaskLog::default()],
                ..TaskInfo::default()
            },
        ];
        infos.push(TaskInfo {
            external_resources: vec![crate::ExternalResource {
                external_id: "e".into(),
                phase: Phase::RUNNING,
                ..Default::default()
            }],
            ..TaskInfo::at(t)
        });
        infos.push(TaskInfo {
            additional_reasons: vec![crate::ReasonInfo {
                reason: "r".into(),
                occurred_at: Some(t),
            }],
            ..TaskInfo::default()
        });
        for info in infos {
            let p = PhaseInfo::from_parts(Phase::QUEUED, 4, String::new(), Some(info), None, false);
            assert_eq!(PhaseInfo::try_from(FfiPhaseInfo::from(&p)).unwrap(), p);
        }
        let p = PhaseInfo::from_parts(Phase(42), 1, "why".into(), None, None, true);
        assert_eq!(PhaseInfo::try_from(FfiPhaseInfo::from(&p)).unwrap(), p);
        let p = PhaseInfo::failed(Phase::PERMANENT_FAILURE, None, None);
        assert_eq!(PhaseInfo::try_from(FfiPhaseInfo::from(&p)).unwrap(), p);
    }

    #[test]
    fn a_string_sink_fills_the_plugins_string() {
        let mut s = String::from("old");
        FfiStrSink::new(&mut s).set("mem://outputs/é");
        assert_eq!(s, "mem://outputs/é");
        let mut empty = String::new();
        FfiStrSink::new(&mut empty).set("");
        assert_eq!(empty, "");
    }

    #[test]
    fn errors_round_trip() {
        let e = PluginError::user("c", "m").retryable(true);
        assert_eq!(PluginError::from(FfiError::from(e.clone())), e);
    }
}
