//! Turning panics into errors on either side of the boundary.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{RBox, RResult};

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

/// The error a panic payload becomes (kept out of the hot path).
#[cold]
#[inline(never)]
fn panic_error(what: &str, payload: Box<dyn Any + Send>) -> PluginError {
    let at = take_panic_location().map(|l| format!(" at {l}")).unwrap_or_default();
    PluginError::panic(format!("panic in {what}{at}: {}", panic_message(&*payload)))
}

/// Runs `f`, turning a panic into a [`PluginError`]; `what` names the call
/// in the panic message (with the panic's location when known).
#[inline]
fn catch<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(panic_error(what, payload)),
    }
}

/// Runs `f`, turning an error or a panic into an [`FfiError`]; `what` names
/// the call in the panic message (with the panic's location when known).
#[inline]
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, FfiError> {
    match catch(what, f) {
        Ok(v) => RResult::ROk(v),
        Err(e) => RResult::RErr(e.into()),
    }
}

/// Like [`guard`] for calls whose result goes through an out-pointer: the
/// status is small (an error, which is rare, is boxed).
#[inline]
pub fn guard_status(what: &str, f: impl FnOnce() -> Result<()>) -> RResult<(), RBox<FfiError>> {
    match catch(what, f) {
        Ok(()) => RResult::ROk(()),
        Err(e) => RResult::RErr(RBox::new(e.into())),
    }
}

/// Runs `f`; on a panic logs it and returns `fallback()`. For calls that
/// have no error channel.
#[inline]
pub(crate) fn guard_or<T>(what: &str, fallback: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            log::error!("panic in {what}: {}", panic_message(&*payload));
            fallback()
        }
    }
}
