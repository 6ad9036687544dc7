//! [`Transition`]: what `handle` returns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::PhaseInfo;

/// How the host should apply a transition. `Barrier` is kept for
/// compatibility and behaves like `Ephemeral`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TransitionType {
    /// The normal transition.
    #[default]
    Ephemeral,
    /// Deprecated in the original; accepted and treated like `Ephemeral`
    /// (docs/semantics.md#transitions).
    Barrier,
}

impl TransitionType {
    /// The wire value (0 or 1).
    pub fn as_u8(self) -> u8 {
        match self {
            TransitionType::Ephemeral => 0,
            TransitionType::Barrier => 1,
        }
    }

    /// The inverse of [`TransitionType::as_u8`]; unknown values are `Ephemeral`.
    pub fn from_u8(v: u8) -> Self {
        if v == 1 {
            TransitionType::Barrier
        } else {
            TransitionType::Ephemeral
        }
    }

    /// Every transition type, in wire order (the original's
    /// `TransitionTypeValues`).
    ///
    /// ```
    /// use kozmo_interface::TransitionType;
    ///
    /// assert_eq!(TransitionType::values(), [TransitionType::Ephemeral, TransitionType::Barrier]);
    /// ```
    pub const fn values() -> [TransitionType; 2] {
        [TransitionType::Ephemeral, TransitionType::Barrier]
    }

    /// The constant's name, e.g. `TransitionTypeEphemeral`.
    pub const fn name(self) -> &'static str {
        match self {
            TransitionType::Ephemeral => "TransitionTypeEphemeral",
            TransitionType::Barrier => "TransitionTypeBarrier",
        }
    }
}

/// A string that names no [`TransitionType`] (the original's
/// `TransitionTypeString` error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTransitionTypeError(pub String);

impl fmt::Display for ParseTransitionTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} does not belong to TransitionType values", self.0)
    }
}

impl std::error::Error for ParseTransitionTypeError {}

impl FromStr for TransitionType {
    type Err = ParseTransitionTypeError;

    /// Parses the exact (case-sensitive) constant name, as the original's
    /// `TransitionTypeString` does.
    ///
    /// ```
    /// use kozmo_interface::TransitionType;
    ///
    /// assert_eq!("TransitionTypeBarrier".parse(), Ok(TransitionType::Barrier));
    /// let err = "Barrier".parse::<TransitionType>().unwrap_err();
    /// assert_eq!(err.to_string(), "Barrier does not belong to TransitionType values");
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransitionType::values()
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| ParseTransitionTypeError(s.to_string()))
    }
}

impl fmt::Display for TransitionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A transition type and the phase it leads to.
///
/// ```
/// use kozmo_interface::{PhaseInfo, Transition, TransitionType};
///
/// let t = Transition::new(TransitionType::Barrier, PhaseInfo::undefined());
/// assert_eq!(t.to_string(), "TransitionTypeBarrier,Phase<PhaseUndefined:0 <nil> Reason:>");
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Transition {
    ttype: TransitionType,
    info: PhaseInfo,
}

impl Transition {
    /// The original's `DoTransitionType`.
    pub fn new(ttype: TransitionType, info: PhaseInfo) -> Self {
        Transition { ttype, info }
    }

    /// The original's `DoTransition`: an ephemeral transition.
    pub fn ephemeral(info: PhaseInfo) -> Self {
        Transition::new(TransitionType::Ephemeral, info)
    }

    /// The original's `UnknownTransition`: ephemeral, undefined phase. The host
    /// rejects it as a result of `handle` (docs/semantics.md#handler-errors).
    pub fn unknown() -> Self {
        Transition::default()
    }

    /// The transition type.
    pub fn transition_type(&self) -> TransitionType {
        self.ttype
    }

    /// The phase info.
    pub fn info(&self) -> &PhaseInfo {
        &self.info
    }

    /// Takes the phase info out.
    pub fn into_info(self) -> PhaseInfo {
        self.info
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.ttype, self.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Phase;

    #[test]
    fn every_value_parses_back_from_its_name_and_nothing_else_parses() {
        for t in TransitionType::values() {
            assert_eq!(t.to_string().parse::<TransitionType>(), Ok(t));
            assert_eq!(TransitionType::from_u8(t.as_u8()), t);
        }
        assert_eq!(TransitionType::values().len(), 2);
        for bad in [
            "",
            "Ephemeral",
            "transitiontypeephemeral",
            "TransitionTypeBarrier ",
            "TransitionType",
        ] {
            assert_eq!(
                bad.parse::<TransitionType>(),
                Err(ParseTransitionTypeError(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            "x".parse::<TransitionType>().unwrap_err().to_string(),
            "x does not belong to TransitionType values"
        );
    }

    #[test]
    fn names_and_the_original_example() {
        assert_eq!(TransitionType::Barrier.to_string(), "TransitionTypeBarrier");
        assert_eq!(TransitionType::Ephemeral.to_string(), "TransitionTypeEphemeral");
        let t = Transition::new(TransitionType::Barrier, PhaseInfo::undefined());
        assert_eq!(
            t.to_string(),
            "TransitionTypeBarrier,Phase<PhaseUndefined:0 <nil> Reason:>"
        );
    }

    #[test]
    fn do_transition_is_ephemeral_and_keeps_the_info() {
        let t = Transition::ephemeral(PhaseInfo::undefined());
        assert_eq!(t.transition_type(), TransitionType::Ephemeral);
        assert_eq!(t.info(), &PhaseInfo::undefined());
        assert_eq!(t.info().phase(), Phase::UNDEFINED);
        let s = PhaseInfo::success(None);
        let t = Transition::ephemeral(s.clone());
        assert_eq!((t.transition_type(), t.info()), (TransitionType::Ephemeral, &s));
        assert_eq!(t.info().phase(), Phase::SUCCESS);
        let b = Transition::new(TransitionType::Barrier, PhaseInfo::undefined());
        assert_eq!(b.transition_type(), TransitionType::Barrier);
        assert_eq!(b.info().phase(), Phase::UNDEFINED);
        let b = Transition::new(TransitionType::Barrier, s.clone());
        assert_eq!(
            (b.transition_type(), b.info().phase()),
            (TransitionType::Barrier, Phase::SUCCESS)
        );
        assert_eq!(Transition::unknown(), Transition::ephemeral(PhaseInfo::undefined()));
    }

    #[test]
    fn wire_values() {
        for t in [TransitionType::Ephemeral, TransitionType::Barrier] {
            assert_eq!(TransitionType::from_u8(t.as_u8()), t);
        }
    }
}
