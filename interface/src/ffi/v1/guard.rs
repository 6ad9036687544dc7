//! Turning panics into errors on either side of the boundary.

use std::any::Any;
use std::cell::RefCell;
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

thread_local! {
    /// Where the last panic on this thread happened (set by the hook the
    /// export glue installs in the plugin).
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the plugin's panic hook: instead of printing to the daemon's
/// stderr, it remembers the location for the error and logs at debug level.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        log::debug!("plugin panicked: {info}");
        PANIC_LOCATION.with(|p| *p.borrow_mut() = location);
    }));
}

fn take_panic_location() -> Option<String> {
    PANIC_LOCATION.with(|p| p.borrow_mut().take())
}

/// Runs `f`, turning an error or a panic into an [`FfiError`]; `what` names
/// the call in the panic message (with the panic's location when known).
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, FfiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(payload) => {
            let at = take_panic_location().map(|l| format!(" at {l}")).unwrap_or_default();
            let message = format!("panic in {what}{at}: {}", panic_message(&*payload));
            RResult::RErr(PluginError::panic(message).into())
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
