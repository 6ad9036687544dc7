//! The `shell` plugin (to be written).
