//! Turning panics into errors on either side of the boundary.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::RResult;

use super::FfiError;
use crate::{PluginError, Result};

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning an error or a panic into an [`FfiError`]; `what` names
/// the call in the panic message.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, FfiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(payload) => {
            RResult::RErr(PluginError::panic(format!("panic in {what}: {}", panic_message(&*payload))).into())
        }
    }
}

/// Runs `f`; on a panic logs it and returns `fallback()`. For calls that
/// have no error channel.
pub(crate) fn guard_or<T>(what: &str, fallback: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            log::error!("panic in {what}: {}", panic_message(&*payload));
            fallback()
        }
    }
}
