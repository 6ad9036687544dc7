//! Errors: [`ExecutionError`] (a task failure a plugin reports) and
//! [`PluginError`] (a call that went wrong).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whose fault a failure is; decides which retry budget it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ErrorKind {
    /// Not known; counted like [`ErrorKind::User`] for retries.
    #[default]
    Unknown,
    /// The task's own fault (bad input, failing user code).
    User,
    /// The platform's fault (infrastructure, plugin bug).
    System,
}

impl ErrorKind {
    /// The wire value: 0 unknown, 1 user, 2 system.
    pub fn as_u8(self) -> u8 {
        match self {
            ErrorKind::Unknown => 0,
            ErrorKind::User => 1,
            ErrorKind::System => 2,
        }
    }

    /// The inverse of [`ErrorKind::as_u8`]; unknown values map to `Unknown`.
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => ErrorKind::User,
            2 => ErrorKind::System,
            _ => ErrorKind::Unknown,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Unknown => "UNKNOWN",
            ErrorKind::User => "USER",
            ErrorKind::System => "SYSTEM",
        })
    }
}

/// A task failure as carried by a failed [`crate::PhaseInfo`].
///
/// ```
/// use kozmo_interface::{ErrorKind, ExecutionError};
///
/// let e = ExecutionError::new("OOM", "out of memory", ErrorKind::System);
/// assert_eq!(e.to_string(), r#"code:"OOM" message:"out of memory" kind:SYSTEM"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecutionError {
    /// A short machine-readable code, e.g. `OOMKilled`.
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// Whose fault it is.
    #[serde(default)]
    pub kind: ErrorKind,
}

impl ExecutionError {
    /// Builds an error.
    pub fn new(code: impl Into<String>, message: impl Into<String>, kind: ErrorKind) -> Self {
        ExecutionError {
            code: code.into(),
            message: message.into(),
            kind,
        }
    }

    /// The substitute for a missing error: code `Unknown`, message
    /// `Unknown error message`, kind UNKNOWN.
    pub fn unknown() -> Self {
        ExecutionError::new("Unknown", "Unknown error message", ErrorKind::Unknown)
    }
}

impl fmt::Display for ExecutionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code:{:?} message:{:?} kind:{}", self.code, self.message, self.kind)
    }
}

/// The error of a plugin call or a host service.
///
/// ```
/// use kozmo_interface::PluginError;
///
/// let e = PluginError::system("BackendDown", "the backend did not answer").retryable(true);
/// assert_eq!(e.to_string(), "BackendDown: the backend did not answer");
/// assert!(e.retryable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PluginError {
    /// A short machine-readable code.
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// Whose fault it is.
    pub kind: ErrorKind,
    /// Whether trying again may help.
    pub retryable: bool,
}

/// Code of the error a panic inside a plugin call becomes.
pub const PANIC_ERROR_CODE: &str = "PluginPanic";

impl PluginError {
    /// An error of kind UNKNOWN, not retryable.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError {
            code: code.into(),
            message: message.into(),
            kind: ErrorKind::Unknown,
            retryable: false,
        }
    }

    /// An error of kind USER.
    pub fn user(code: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError::new(code, message).with_kind(ErrorKind::User)
    }

    /// An error of kind SYSTEM.
    pub fn system(code: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError::new(code, message).with_kind(ErrorKind::System)
    }

    /// The error a caught panic becomes (code [`PANIC_ERROR_CODE`], kind SYSTEM).
    pub fn panic(message: impl Into<String>) -> Self {
        PluginError::system(PANIC_ERROR_CODE, message)
    }

    /// Sets the kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets whether trying again may help.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Whether this error is a caught panic.
    pub fn is_panic(&self) -> bool {
        self.code == PANIC_ERROR_CODE
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<std::io::Error> for PluginError {
    fn from(e: std::io::Error) -> Self {
        PluginError::system("IoError", e.to_string())
    }
}

impl From<serde_json::Error> for PluginError {
    fn from(e: serde_json::Error) -> Self {
        PluginError::new("JsonError", e.to_string())
    }
}

/// The result of plugin calls and host services.
pub type Result<T> = std::result::Result<T, PluginError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_u8_and_print_upper_case() {
        for k in [ErrorKind::Unknown, ErrorKind::User, ErrorKind::System] {
            assert_eq!(ErrorKind::from_u8(k.as_u8()), k);
        }
        assert_eq!(ErrorKind::from_u8(9), ErrorKind::Unknown);
        assert_eq!(ErrorKind::User.to_string(), "USER");
        assert_eq!(ErrorKind::System.to_string(), "SYSTEM");
        assert_eq!(ErrorKind::Unknown.to_string(), "UNKNOWN");
    }

    #[test]
    fn execution_error_prints_stably() {
        let e = ExecutionError::new("x", "y", ErrorKind::User);
        assert_eq!(e.to_string(), r#"code:"x" message:"y" kind:USER"#);
        assert_eq!(
            ExecutionError::unknown(),
            ExecutionError::new("Unknown", "Unknown error message", ErrorKind::Unknown)
        );
    }

    #[test]
    fn plugin_error_builders() {
        let e = PluginError::panic("boom");
        assert!(e.is_panic());
        assert_eq!(e.kind, ErrorKind::System);
        assert!(!PluginError::user("c", "m").is_panic());
        assert_eq!(PluginError::user("c", "m").kind, ErrorKind::User);
    }
}
