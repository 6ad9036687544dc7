//! The `sleep-quota` plugin (to be written).
