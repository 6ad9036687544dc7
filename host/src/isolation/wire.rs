//! Conversions between interface values and their wire form.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kozmo_interface::{ErrorKind, Phase, PhaseInfo, PluginError, TaskInfo, Transition, TransitionType};
use kozmo_isolation_protocol::{PlainTransition, WireError, WireTime};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A `PluginError` as sent.
pub fn to_wire(e: &PluginError) -> WireError {
    WireError {
        code: e.code.clone(),
        message: e.message.clone(),
        kind: e.kind.as_u8(),
        retryable: e.retryable,
    }
}

/// A received error as a `PluginError`.
pub fn from_wire(e: WireError) -> PluginError {
    PluginError {
        code: e.code,
        message: e.message,
        kind: ErrorKind::from_u8(e.kind),
        retryable: e.retryable,
    }
}

/// `value` as JSON text (interface values always serialize).
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, PluginError> {
    serde_json::to_string(value).map_err(|e| {
        PluginError::system(
            "IsolationEncode",
            format!("cannot encode a value for the plugin process: {e}"),
        )
    })
}

/// JSON text from the peer as `T`; what was expected is named in the error.
pub fn parse<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, PluginError> {
    serde_json::from_str(text).map_err(|e| {
        PluginError::system(
            "IsolationDecode",
            format!("malformed {what} on the plugin connection: {e}"),
        )
    })
}

/// `t` without JSON, when its phase info is only scalars (no reason, no
/// error, no task info beyond its two times, no time before the epoch):
/// the common `handle` result. `None`: send it as JSON.
pub fn plain_transition(t: &Transition) -> Option<PlainTransition> {
    let p = t.info();
    if !p.reason().is_empty() || p.err().is_some() {
        return None;
    }
    let times = match p.info() {
        None => None,
        Some(info) if info.is_only_times() => Some((wire_time(info.occurred_at)?, wire_time(info.reported_at)?)),
        Some(_) => return None,
    };
    Some(PlainTransition {
        ttype: t.transition_type().as_u8(),
        phase: p.phase().0,
        version: p.version(),
        cleanup_on_failure: p.cleanup_on_failure(),
        times,
    })
}

/// `Some(None)` for no time, `None` for one the plain form cannot carry.
fn wire_time(t: Option<SystemTime>) -> Option<Option<WireTime>> {
    match t {
        None => Some(None),
        Some(t) => t.duration_since(UNIX_EPOCH).ok().map(|d| {
            Some(WireTime {
                secs: d.as_secs(),
                nanos: d.subsec_nanos(),
            })
        }),
    }
}

/// The transition the child sent as [`PlainTransition`], exactly as its
/// JSON form would have decoded; a time out of range is an error, never a
/// panic (the child is not trusted).
pub fn from_plain(p: PlainTransition) -> Result<Transition, PluginError> {
    let time = |t: Option<WireTime>| -> Result<Option<SystemTime>, PluginError> {
        let Some(t) = t else { return Ok(None) };
        let bad = || {
            PluginError::system(
                "IsolationDecode",
                format!(
                    "malformed transition on the plugin connection: time {}.{:09}s",
                    t.secs, t.nanos
                ),
            )
        };
        if t.nanos >= 1_000_000_000 {
            return Err(bad());
        }
        UNIX_EPOCH
            .checked_add(Duration::new(t.secs, t.nanos))
            .map(Some)
            .ok_or_else(bad)
    };
    let info = match p.times {
        None => None,
        Some((occurred_at, reported_at)) => Some(TaskInfo {
            occurred_at: time(occurred_at)?,
            reported_at: time(reported_at)?,
            ..TaskInfo::default()
        }),
    };
    Ok(Transition::new(
        TransitionType::from_u8(p.ttype),
        PhaseInfo::from_parts(
            Phase(p.phase),
            p.version,
            String::new(),
            info,
            None,
            p.cleanup_on_failure,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use kozmo_interface::ExecutionError;

    use super::*;

    fn through_json(t: &Transition) -> Transition {
        parse(&json(t).unwrap(), "transition").unwrap()
    }

    #[test]
    fn a_plain_transition_decodes_as_its_json_form_does() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let mut both = TaskInfo::at(at);
        both.reported_at = Some(at + Duration::from_nanos(1));
        let cases = [
            Transition::ephemeral(PhaseInfo::running(1, None)),
            Transition::new(
                TransitionType::Barrier,
                PhaseInfo::from_parts(Phase(2), 3, String::new(), Some(both), None, false),
            ),
            Transition::ephemeral(PhaseInfo::from_parts(Phase(42), 9, String::new(), None, None, true)),
            Transition::ephemeral(PhaseInfo::from_parts(
                Phase(-1),
                0,
                String::new(),
                Some(TaskInfo::default()),
                None,
                false,
            )),
        ];
        for t in cases {
            let plain = plain_transition(&t).expect("plain");
            assert_eq!(from_plain(plain).unwrap(), through_json(&t));
            assert_eq!(from_plain(plain).unwrap(), t);
        }
    }

    #[test]
    fn anything_beyond_scalars_takes_the_json_form() {
        let mut custom = TaskInfo::at(SystemTime::now());
        custom.custom_info = serde_json::json!({"k": 1});
        let before_epoch = TaskInfo::at(UNIX_EPOCH - Duration::from_secs(1));
        for t in [
            Transition::ephemeral(PhaseInfo::running(1, Some(custom))),
            Transition::ephemeral(PhaseInfo::running(1, None).with_reason("why")),
            Transition::ephemeral(PhaseInfo::failure("C", "m", None)),
            Transition::ephemeral(PhaseInfo::from_parts(
                Phase(4),
                1,
                String::new(),
                None,
                Some(ExecutionError::new("C", "m", ErrorKind::User)),
                false,
            )),
            Transition::ephemeral(PhaseInfo::running(1, Some(before_epoch))),
        ] {
            assert_eq!(plain_transition(&t), None, "{t:?}");
        }
    }

    #[test]
    fn hostile_plain_times_are_errors() {
        let at = |secs, nanos| PlainTransition {
            ttype: 0,
            phase: 4,
            version: 1,
            cleanup_on_failure: false,
            times: Some((Some(WireTime { secs, nanos }), None)),
        };
        assert!(from_plain(at(1, 1_000_000_000)).is_err());
        assert!(from_plain(at(u64::MAX, 999_999_999)).is_err());
        assert!(from_plain(at(1, 999_999_999)).is_ok());
        // Unknown transition types and phases are carried as JSON carries them.
        let odd = PlainTransition {
            ttype: 200,
            phase: 127,
            version: u32::MAX,
            cleanup_on_failure: true,
            times: None,
        };
        let t = from_plain(odd).unwrap();
        assert_eq!(t.transition_type(), TransitionType::Ephemeral);
        assert_eq!(t.info().phase(), Phase(127));
    }
}
