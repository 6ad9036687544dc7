//! Command-line interface: one module per subcommand group.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod plugins;

/// Kozmo: a native plugin system for task execution.
#[derive(Debug, Parser)]
#[command(name = "kozmo", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and validate plugin libraries.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
}

/// Sets up env_logger: `RUST_LOG` if set, else warn/info/debug/trace by `-v` count.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).try_init();
}

/// Runs a parsed command line; the exit code says how it went.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugins(cmd) => plugins::run(cmd),
    }
}
