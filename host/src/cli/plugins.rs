//! `kozmo plugins list|check` (to be filled by the loader work).

use std::process::ExitCode;

use clap::Subcommand;

/// `kozmo plugins ...`
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {}

/// Runs a `plugins` subcommand.
pub fn run(cmd: PluginsCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
