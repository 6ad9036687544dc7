//! What the engine answers: [`SubmitOutcome`] and [`EngineError`].

use super::*;

/// What `submit` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmitOutcome {
    /// A new execution with this id (durable).
    Created(String),
    /// The same id and spec were submitted before.
    Existing(String),
}

/// Engine errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// No such execution.
    NotFound,
    /// The id exists with a different spec.
    Conflict(String),
    /// No plugin for the task type.
    NoPlugin(String),
    /// The request is invalid.
    Invalid(String),
    /// The store failed.
    Store(String),
    /// The engine is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::NotFound => f.write_str("execution not found"),
            EngineError::Conflict(m) => write!(f, "conflict: {m}"),
            EngineError::NoPlugin(m) => write!(f, "no plugin: {m}"),
            EngineError::Invalid(m) => write!(f, "invalid request: {m}"),
            EngineError::Store(m) => write!(f, "store error: {m}"),
            EngineError::ShuttingDown => f.write_str("the engine is shutting down"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<crate::store::StoreError> for EngineError {
    fn from(e: crate::store::StoreError) -> Self {
        EngineError::Store(e.0)
    }
}
