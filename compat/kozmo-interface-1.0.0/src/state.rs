//! Plugin state: bytes a plugin keeps between rounds, with typed helpers.
//!
//! The typed helpers encode with bincode 2 (serde); the codec lives only in
//! this module so it can be swapped.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{PluginError, Result};

/// Reads the state persisted by earlier rounds.
pub trait PluginStateReader {
    /// The version given to the last `put` (0 if none).
    fn state_version(&self) -> u8;
    /// The version and the bytes (`None` if no state). May be called any
    /// number of times.
    fn get_bytes(&self) -> Result<(u8, Option<Vec<u8>>)>;
}

/// Records the state for later rounds. Only the last call of a round counts;
/// it becomes visible from the next round on.
pub trait PluginStateWriter {
    /// Records new state bytes with a version.
    fn put_bytes(&self, version: u8, bytes: Vec<u8>) -> Result<()>;
    /// Clears the state: the next round sees no state and version 0.
    fn reset(&self) -> Result<()>;
}

/// Typed reads on any [`PluginStateReader`].
///
/// ```
/// use kozmo_interface::{PluginStateReader, PluginStateReaderExt, Result};
///
/// struct Saved(Vec<u8>);
/// impl PluginStateReader for Saved {
///     fn state_version(&self) -> u8 { 1 }
///     fn get_bytes(&self) -> Result<(u8, Option<Vec<u8>>)> { Ok((1, Some(self.0.clone()))) }
/// }
///
/// let bytes = kozmo_interface::state::encode(&(7u32, "pid".to_string())).unwrap();
/// let (version, value) = Saved(bytes).get::<(u32, String)>().unwrap();
/// assert_eq!((version, value), (1, Some((7, "pid".to_string()))));
/// ```
pub trait PluginStateReaderExt: PluginStateReader {
    /// Decodes the state into `T`.
    fn get<T: DeserializeOwned>(&self) -> Result<(u8, Option<T>)> {
        let (version, bytes) = self.get_bytes()?;
        match bytes {
            None => Ok((version, None)),
            Some(b) => decode(&b).map(|v| (version, Some(v))),
        }
    }
}

impl<R: PluginStateReader + ?Sized> PluginStateReaderExt for R {}

/// Typed writes on any [`PluginStateWriter`].
pub trait PluginStateWriterExt: PluginStateWriter {
    /// Encodes `value` and records it with `version`.
    fn put<T: Serialize>(&self, version: u8, value: &T) -> Result<()> {
        self.put_bytes(version, encode(value)?)
    }
}

impl<W: PluginStateWriter + ?Sized> PluginStateWriterExt for W {}

/// Encodes a value with the plugin-state codec.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| PluginError::system("StateEncode", format!("cannot encode plugin state: {e}")))
}

/// Decodes a value encoded by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| PluginError::system("StateDecode", format!("cannot decode plugin state: {e}")))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde::Deserialize;

    use super::*;

    #[derive(Default)]
    struct Cell(RefCell<(u8, Option<Vec<u8>>)>);

    impl PluginStateReader for Cell {
        fn state_version(&self) -> u8 {
            self.0.borrow().0
        }
        fn get_bytes(&self) -> Result<(u8, Option<Vec<u8>>)> {
            Ok(self.0.borrow().clone())
        }
    }

    impl PluginStateWriter for Cell {
        fn put_bytes(&self, version: u8, bytes: Vec<u8>) -> Result<()> {
            *self.0.borrow_mut() = (version, Some(bytes));
            Ok(())
        }
        fn reset(&self) -> Result<()> {
            *self.0.borrow_mut() = (0, None);
            Ok(())
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        pid: u32,
        path: String,
    }

    #[test]
    fn typed_put_then_get_round_trips_and_reset_clears() {
        let c = Cell::default();
        assert_eq!(c.get::<S>().unwrap(), (0, None));
        let s = S {
            pid: 42,
            path: "/x".into(),
        };
        c.put(3, &s).unwrap();
        assert_eq!(
            c.get::<S>().unwrap(),
            (
                3,
                Some(S {
                    pid: 42,
                    path: "/x".into()
                })
            )
        );
        assert_eq!(c.get::<S>().unwrap().0, 3, "get works any number of times");
        c.reset().unwrap();
        assert_eq!(c.get::<S>().unwrap(), (0, None));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = decode::<S>(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.code, "StateDecode");
    }
}
