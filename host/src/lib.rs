//! The Kozmo daemon as a library: plugin loading, the engine, the store, the
//! API. The `kozmo` binary (`main.rs`) is a thin CLI over it.

pub mod api;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod datastore;
pub mod engine;
pub mod isolation;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod resources;
pub mod retention;
pub mod secrets;
pub mod startup_secrets;
pub mod store;
mod sync;
