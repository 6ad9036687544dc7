//! Conversions between interface values and their wire form.

use kozmo_interface::{ErrorKind, PluginError};
use kozmo_isolation_protocol::WireError;
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
