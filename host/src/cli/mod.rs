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
pub mod watch;

/// Kozmo: a native plugin system for task execution.
#[derive(Debug, Parser)]
#[command(name = "kozmo", version = version_text(), about, long_about = None)]
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
        /// Where the daemon is.
        #[command(flatten)]
        server: executions::ServerArgs,
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
        /// Where the daemon is.
        #[command(flatten)]
        server: executions::ServerArgs,
    },
    /// Follow an execution as it runs: its phase changes and events as
    /// they come, until it ends (exit 0 Succeeded, 1 Failed or Aborted, 3
    /// gave up); rides out a daemon restart.
    Watch(watch::WatchArgs),
    /// Show an execution's events, in order: a table (`-o json`: one JSON
    /// line per event).
    Events {
        /// Execution id, sent percent-encoded (write `-- ID` for an id that
        /// starts with `-`).
        id: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: executions::Format,
        /// Where the daemon is.
        #[command(flatten)]
        server: executions::ServerArgs,
    },
    /// Show an execution's outputs (JSON); an execution without outputs
    /// (not Succeeded yet, failed, aborted) is said so on stderr, exit 1.
    Outputs {
        /// Execution id, sent percent-encoded (write `-- ID` for an id that
        /// starts with `-`).
        id: String,
        /// Where the daemon is.
        #[command(flatten)]
        server: executions::ServerArgs,
    },
    /// List the daemons sharing the store (only the one asked, on SQLite):
    /// whether each is alive, its active executions, last heartbeat,
    /// plugins.
    Nodes {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: executions::Format,
        /// Where the daemon is.
        #[command(flatten)]
        server: executions::ServerArgs,
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
    /// Print a shell completion script to standard output, e.g.
    /// `kozmo completions bash > /etc/bash_completion.d/kozmo` or
    /// `kozmo completions zsh > "${fpath[1]}/_kozmo"`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
        /// Where the daemon is.
        #[command(flatten)]
        server: executions::ServerArgs,
    },
}

/// `kozmo --version`: the daemon's (this binary's) version, and what a
/// plugin is built against to load here: the `kozmo-interface` version and
/// the plugin ABI (epoch and minor).
fn version_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let abi = kozmo_interface::abi::ABI_VERSION;
        format!(
            "{} (the daemon; plugins build against kozmo-interface {}, plugin ABI {abi}: epoch {}, minor {})",
            env!("CARGO_PKG_VERSION"),
            kozmo_interface::host::interface_version(),
            abi.epoch,
            abi.minor
        )
    })
}

impl Cli {
    /// Whether this process logs to stderr itself (a plugin host forwards
    /// its records to the daemon instead).
    pub fn logs_to_stderr(&self) -> bool {
        !matches!(self.command, Command::PluginHost(_))
    }
}

/// The command line as completions offer it: without the internal
/// commands (`__plugin-host`, `__probe-libraries`), which some shells'
/// generators list although they are hidden from `--help`.
fn for_completion() -> clap::Command {
    use clap::CommandFactory;
    let full = Cli::command();
    let visible: Vec<clap::Command> = full.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect();
    clap::Command::new("kozmo")
        .args(full.get_arguments().cloned())
        .subcommands(visible)
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
        Command::Submit(args) => executions::submit(args),
        Command::Get { id, output, server } => executions::get(&id, output, server),
        Command::List {
            phase,
            limit,
            output,
            server,
        } => executions::list(phase, limit, output, server),
        Command::Events { id, output, server } => executions::events(&id, output, server),
        Command::Watch(args) => watch::run(args),
        Command::Nodes { output, server } => executions::nodes(output, server),
        Command::Outputs { id, server } => executions::outputs(&id, server),
        Command::Abort {
            id,
            reason,
            output,
            server,
        } => executions::abort(&id, &reason, output, server),
        Command::Prune(args) => prune::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut for_completion(), "kozmo", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::PluginHost(args) => Ok(crate::isolation::child::run(args)),
        Command::ProbeLibraries { files } => Ok(crate::loader::probe::child_main(&files)),
    }
}
