//! Command-line interface: one module per subcommand group.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod executions;
pub mod plugins;
pub mod prune;
pub mod retention;
pub mod serve;
pub mod submit_many;

/// Kozmo: a native plugin system for task execution.
#[derive(Debug, Parser)]
#[command(name = "kozmo", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Where the daemon is (for the client commands).
    #[command(flatten)]
    pub server: executions::ServerArgs,
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
    /// Measure the engine, the store and the loader; write BENCHMARKS.md and a plot.
    Bench(Box<bench::BenchArgs>),
    /// Run the daemon: load the plugin directory, resume every unfinished
    /// execution from the store, serve the HTTP API until SIGTERM/SIGINT.
    Serve(Box<serve::ServeArgs>),
    /// Submit a task file (or `-` for stdin) to the daemon.
    Submit(executions::SubmitArgs),
    /// Show one execution.
    Get {
        /// Execution id, sent percent-encoded (write `-- ID` for an id that
        /// starts with `-`).
        id: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: executions::Format,
    },
    /// List executions, oldest first.
    List {
        /// Only executions in this phase (e.g. Running, Succeeded, Failed).
        #[arg(long)]
        phase: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: executions::Format,
    },
    /// Show an execution's events, in order.
    Events {
        /// Execution id, sent percent-encoded (write `-- ID` for an id that
        /// starts with `-`).
        id: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: executions::Format,
    },
    /// Show an execution's outputs (JSON).
    Outputs {
        /// Execution id, sent percent-encoded (write `-- ID` for an id that
        /// starts with `-`).
        id: String,
    },
    /// Remove terminal executions past retention now (the daemon's
    /// `retention` settings, or `--older-than`), with every row and data
    /// store file they own; report what was removed.
    Prune(prune::PruneArgs),
    /// Internal: the child process that hosts an isolated plugin library
    /// (started by the daemon, never by hand).
    #[command(name = "__plugin-host", hide = true)]
    PluginHost(crate::isolation::child::ChildArgs),
    /// Internal: open plugin libraries one by one in this short-lived
    /// process (the load probe of `serve` and `plugins`), announcing each.
    #[command(name = "__probe-libraries", hide = true)]
    ProbeLibraries {
        /// Library files.
        files: Vec<std::path::PathBuf>,
    },
    /// Abort an execution (its plugin's abort and finalize run).
    Abort {
        /// Execution id, sent percent-encoded (write `-- ID` for an id that
        /// starts with `-`).
        id: String,
        /// Why (recorded in the execution's events).
        #[arg(long, default_value = "aborted from the command line")]
        reason: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: executions::Format,
    },
}

impl Cli {
    /// Whether this process logs to stderr itself (a plugin host forwards
    /// its records to the daemon instead).
    pub fn logs_to_stderr(&self) -> bool {
        !matches!(self.command, Command::PluginHost(_))
    }
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
        Command::Bench(args) => bench::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Submit(args) => executions::submit(args, cli.server),
        Command::Get { id, output } => executions::get(&id, output, cli.server),
        Command::List { phase, limit, output } => executions::list(phase, limit, output, cli.server),
        Command::Events { id, output } => executions::events(&id, output, cli.server),
        Command::Outputs { id } => executions::outputs(&id, cli.server),
        Command::Abort { id, reason, output } => executions::abort(&id, &reason, output, cli.server),
        Command::Prune(args) => prune::run(args, cli.server),
        Command::PluginHost(args) => Ok(crate::isolation::child::run(args)),
        Command::ProbeLibraries { files } => Ok(crate::loader::probe::child_main(&files)),
    }
}
