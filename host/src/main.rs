//! `kozmo`: the Kozmo daemon and its command-line clients.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kozmo_host::cli::Cli::parse();
    if matches!(cli.command, kozmo_host::cli::Command::Serve(_)) {
        // Before any thread starts: may re-execute this process without the
        // secrets in its environment and arguments (see startup_secrets).
        if let Err(e) = kozmo_host::startup_secrets::protect_serve() {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    use kozmo_host::cli::Command;
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Bench(_) | Command::PluginHost(_) | Command::ProbeLibraries { .. }
    ) {
        // A client whose output is piped into `head` ends quietly once the
        // reader is gone, like other Unix tools (Rust ignores SIGPIPE, so
        // its next print would panic). The daemon and its helper processes
        // keep ignoring it: for them a closed pipe is an error to handle.
        // SAFETY: before any thread starts; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if cli.logs_to_stderr() {
        kozmo_host::cli::init_logging(cli.verbose);
    }
    match kozmo_host::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
