//! The `kozmo` binary as a library: the CLI, configuration, plugin loading
//! and isolation, the daemon's wiring of engine, store and API, the HTTP
//! client and the benchmarks. `main.rs` is a thin entry point over it.
//!
//! The engine (`kozmo-engine`), the SQLite store (`kozmo-store-sqlite`) and
//! the HTTP API (`kozmo-api`) are crates of their own; see ARCHITECTURE.md.

pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod isolation;
pub mod loader;
pub mod metrics;
pub mod startup_secrets;
