//! The state the adapter persists for each attempt of an asynchronous
//! plugin's task (in the plugin state, so a daemon restart loses nothing).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{PluginError, Result};

/// Version of [`AsyncState`] in the plugin state.
pub const ASYNC_STATE_VERSION: u8 = 1;

/// Where an attempt of an asynchronous task is.
///
/// ```
/// use kozmo_interface::webapi::AsyncPhase;
/// assert_eq!(AsyncPhase::default(), AsyncPhase::NotStarted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AsyncPhase {
    /// Nothing created yet (maybe waiting for a quota token or a write slot).
    #[default]
    NotStarted,
    /// The remote resource exists; it is being polled.
    Created,
    /// The remote resource reached a terminal phase.
    Done,
}

/// What the adapter remembers between rounds.
///
/// ```
/// use kozmo_interface::webapi::{AsyncPhase, AsyncState};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Job { id: String }
///
/// let mut s = AsyncState::default();
/// s.set_metadata(&Job { id: "j-1".into() }).unwrap();
/// s.phase = AsyncPhase::Created;
/// let back: Job = s.metadata().unwrap().unwrap();
/// assert_eq!(back, Job { id: "j-1".into() });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AsyncState {
    /// Where the attempt is.
    pub phase: AsyncPhase,
    /// The remote resource's metadata as `create` returned it (JSON).
    pub metadata_json: Option<String>,
    /// Consecutive failed `get` calls.
    pub sync_failures: u32,
    /// When the next `get` is due, in milliseconds since the Unix epoch.
    pub next_poll_at_ms: u64,
    /// When the quota token was first asked for (ms since the epoch).
    pub token_requested_at_ms: Option<u64>,
    /// Whether an abort is cancelling the remote resource.
    pub cancelling: bool,
    /// The plugin phase last reported (its number).
    pub reported_phase: i8,
    /// Its version.
    pub reported_version: u32,
    /// A digest of the reason, logs and custom info last reported: when it
    /// changes within a phase, the version goes up so the change is
    /// published as an event.
    pub reported_digest: u64,
    /// Its reason, reported again by rounds that do not poll.
    pub reported_reason: String,
}

impl AsyncState {
    /// The metadata, typed.
    ///
    /// ```
    /// let s = kozmo_interface::webapi::AsyncState::default();
    /// assert!(s.metadata::<String>().unwrap().is_none());
    /// ```
    pub fn metadata<M: DeserializeOwned>(&self) -> Result<Option<M>> {
        match &self.metadata_json {
            None => Ok(None),
            Some(j) => serde_json::from_str(j).map(Some).map_err(|e| {
                PluginError::system(
                    "BadResourceMetadata",
                    format!("the remote resource's metadata in the plugin state cannot be read: {e}"),
                )
            }),
        }
    }

    /// Stores the metadata.
    ///
    /// ```
    /// let mut s = kozmo_interface::webapi::AsyncState::default();
    /// s.set_metadata(&"job-7").unwrap();
    /// assert_eq!(s.metadata_json.as_deref(), Some("\"job-7\""));
    /// ```
    pub fn set_metadata<M: Serialize>(&mut self, m: &M) -> Result<()> {
        self.metadata_json = Some(serde_json::to_string(m).map_err(|e| {
            PluginError::system(
                "BadResourceMetadata",
                format!("the remote resource's metadata cannot be stored: {e}"),
            )
        })?);
        Ok(())
    }
}
