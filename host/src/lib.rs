//! The Kozmo daemon as a library: plugin loading, the engine, the store, the
//! API. The `kozmo` binary (`main.rs`) is a thin CLI over it.

pub mod cli;
pub mod loader;
pub mod metrics;
