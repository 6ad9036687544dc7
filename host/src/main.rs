//! `kozmo`: the Kozmo daemon and its command-line clients.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kozmo_host::cli::Cli::parse();
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
