//! The Kozmo daemon as a library: plugin loading, the engine, the store, the
//! API. The `kozmo` binary (`main.rs`) is a thin CLI over it.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod loader;
pub mod metrics;
