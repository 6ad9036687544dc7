//! [`Phase`]: where a task is in its plugin's state machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The phase version a plugin reports when it has nothing finer to say.
pub const DEFAULT_PHASE_VERSION: u32 = 0;

/// The error code plugins conventionally use for errors they return from
/// `handle` (as opposed to failures they report through a [`crate::PhaseInfo`]).
pub const SYSTEM_ERROR_CODE: &str = "SystemError";

/// The phase of a task as its plugin reports it.
///
/// A transparent `i8` so that values outside the known range survive a round
/// trip (and print as `Phase(11)`), exactly like the Go original.
///
/// ```
/// use kozmo_interface::Phase;
///
/// assert_eq!(Phase::RUNNING.to_string(), "PhaseRunning");
/// assert!(Phase::SUCCESS.is_terminal());
/// assert_eq!("PhaseQueued".parse::<Phase>(), Ok(Phase::QUEUED));
/// assert_eq!(Phase(11).to_string(), "Phase(11)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[repr(transparent)]
#[serde(transparent)]
pub struct Phase(pub i8);

impl Phase {
    /// 0: nothing known yet (the zero value).
    pub const UNDEFINED: Phase = Phase(0);
    /// 1: the task cannot start yet.
    pub const NOT_READY: Phase = Phase(1);
    /// 2: the task waits for a resource quota.
    pub const WAITING_FOR_RESOURCES: Phase = Phase(2);
    /// 3: accepted by the backend, not started.
    pub const QUEUED: Phase = Phase(3);
    /// 4: starting.
    pub const INITIALIZING: Phase = Phase(4);
    /// 5: running.
    pub const RUNNING: Phase = Phase(5);
    /// 6: finished successfully (terminal).
    pub const SUCCESS: Phase = Phase(6);
    /// 7: failed, may be retried (terminal for the attempt).
    pub const RETRYABLE_FAILURE: Phase = Phase(7);
    /// 8: failed for good (terminal).
    pub const PERMANENT_FAILURE: Phase = Phase(8);
    /// 9: waiting for a cache reservation.
    pub const WAITING_FOR_CACHE: Phase = Phase(9);
    /// 10: aborted (terminal).
    pub const ABORTED: Phase = Phase(10);

    /// Every phase, in numeric order (the original's `Phases`).
    pub const ALL: [Phase; 11] = [
        Phase::UNDEFINED,
        Phase::NOT_READY,
        Phase::WAITING_FOR_RESOURCES,
        Phase::QUEUED,
        Phase::INITIALIZING,
        Phase::RUNNING,
        Phase::SUCCESS,
        Phase::RETRYABLE_FAILURE,
        Phase::PERMANENT_FAILURE,
        Phase::WAITING_FOR_CACHE,
        Phase::ABORTED,
    ];

    const NAMES: [&'static str; 11] = [
        "PhaseUndefined",
        "PhaseNotReady",
        "PhaseWaitingForResources",
        "PhaseQueued",
        "PhaseInitializing",
        "PhaseRunning",
        "PhaseSuccess",
        "PhaseRetryableFailure",
        "PhasePermanentFailure",
        "PhaseWaitingForCache",
        "PhaseAborted",
    ];

    /// Success, a failure or aborted.
    pub fn is_terminal(self) -> bool {
        self.is_failure() || self.is_success() || self.is_aborted()
    }

    /// Only [`Phase::WAITING_FOR_RESOURCES`].
    pub fn is_waiting_for_resources(self) -> bool {
        self == Phase::WAITING_FOR_RESOURCES
    }

    /// [`Phase::RETRYABLE_FAILURE`] or [`Phase::PERMANENT_FAILURE`].
    pub fn is_failure(self) -> bool {
        self == Phase::RETRYABLE_FAILURE || self == Phase::PERMANENT_FAILURE
    }

    /// Only [`Phase::SUCCESS`].
    pub fn is_success(self) -> bool {
        self == Phase::SUCCESS
    }

    /// Only [`Phase::ABORTED`].
    pub fn is_aborted(self) -> bool {
        self == Phase::ABORTED
    }

    /// Whether the value is one of the 11 known phases.
    pub fn is_a_phase(self) -> bool {
        (0..=10).contains(&self.0)
    }

    /// The constant's name, or `None` outside the known range.
    pub fn name(self) -> Option<&'static str> {
        usize::try_from(self.0).ok().and_then(|i| Self::NAMES.get(i).copied())
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Phase({})", self.0),
        }
    }
}

/// The error of parsing a name that is not a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePhaseError(pub String);

impl fmt::Display for ParsePhaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} does not belong to Phase values", self.0)
    }
}

impl std::error::Error for ParsePhaseError {}

impl FromStr for Phase {
    type Err = ParsePhaseError;

    /// Parses the exact (case-sensitive) constant name, e.g. `PhaseRunning`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .iter()
            .copied()
            .find(|p| p.name() == Some(s))
            .ok_or_else(|| ParsePhaseError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of docs/semantics.md#phases: value, name, terminal, failure,
    /// success, aborted, waiting.
    const TABLE: [(i8, &str, bool, bool, bool, bool, bool); 11] = [
        (0, "PhaseUndefined", false, false, false, false, false),
        (1, "PhaseNotReady", false, false, false, false, false),
        (2, "PhaseWaitingForResources", false, false, false, false, true),
        (3, "PhaseQueued", false, false, false, false, false),
        (4, "PhaseInitializing", false, false, false, false, false),
        (5, "PhaseRunning", false, false, false, false, false),
        (6, "PhaseSuccess", true, false, true, false, false),
        (7, "PhaseRetryableFailure", true, true, false, false, false),
        (8, "PhasePermanentFailure", true, true, false, false, false),
        (9, "PhaseWaitingForCache", false, false, false, false, false),
        (10, "PhaseAborted", true, false, false, true, false),
    ];

    #[test]
    fn every_row_of_the_phase_table() {
        for (value, name, terminal, failure, success, aborted, waiting) in TABLE {
            let p = Phase(value);
            assert_eq!(p.to_string(), name);
            assert_eq!(name.parse::<Phase>().unwrap(), p);
            assert_eq!(p.is_terminal(), terminal, "{name}");
            assert_eq!(p.is_failure(), failure, "{name}");
            assert_eq!(p.is_success(), success, "{name}");
            assert_eq!(p.is_aborted(), aborted, "{name}");
            assert_eq!(p.is_waiting_for_resources(), waiting, "{name}");
            assert!(p.is_a_phase());
            assert_eq!(Phase::ALL[value as usize], p);
        }
    }

    #[test]
    fn out_of_range_values_print_their_number() {
        assert_eq!(Phase(11).to_string(), "Phase(11)");
        assert_eq!(Phase(-1).to_string(), "Phase(-1)");
        assert!(!Phase(11).is_a_phase());
        assert!(!Phase(-1).is_terminal());
    }

    #[test]
    fn parsing_is_exact_and_case_sensitive() {
        let err = "phaserunning".parse::<Phase>().unwrap_err();
        assert_eq!(err.to_string(), "phaserunning does not belong to Phase values");
        assert!("Running".parse::<Phase>().is_err());
    }

    #[test]
    fn constants() {
        assert_eq!(DEFAULT_PHASE_VERSION, 0);
        assert_eq!(SYSTEM_ERROR_CODE, "SystemError");
        assert_eq!(Phase::default(), Phase::UNDEFINED);
    }
}
