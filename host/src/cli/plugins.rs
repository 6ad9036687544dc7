//! `kozmo plugins list|check|new`: what a plugin directory holds, whether
//! given libraries would load (for plugin authors' CI), and a new plugin
//! crate to start from (`scaffold`).

pub mod scaffold;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::isolation::IsolationConfig;
use crate::loader::{self, LoadReport, LoaderConfig, LoaderServices, PluginInfo};

/// `kozmo plugins ...`
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Load a plugin directory the way the daemon does and print a table of
    /// its plugins (id, task types, default, file, interface version).
    ///
    /// Every problem is printed on its own line (`error[KIND]: ...`,
    /// `warning[KIND]: ...`) after the table; the exit code is 1 if any error
    /// remains (0 with --skip-invalid when only single files were
    /// skipped).
    List(ListArgs),
    /// Check plugin libraries without running the daemon: every check the
    /// daemon makes (file, symbols, ABI, entries, loaders, duplicates among
    /// the given files).
    ///
    /// Prints the entries of valid libraries (`ok: ...`) and exits 0; prints
    /// one line per problem (`error[KIND]: ...`) and exits 1 otherwise.
    Check(CheckArgs),
    /// Write a new plugin crate that builds, tests and loads as it is: a
    /// small plugin on the author's kit (a quota slot, state, an output, a
    /// file in its raw output directory), unit tests driving it like the
    /// daemon, a README (build, test, `kozmo plugins check`, where to put the
    /// library) and a task file to submit.
    ///
    /// NAME is the plugin id and task type; the crate is
    /// `kozmo-plugin-NAME`. It depends on `kozmo-interface` by path (it is
    /// not on crates.io): on `--interface`, by default the `interface/`
    /// directory of the Kozmo checkout this `kozmo` was built from; without
    /// one, the command says so and asks for `--interface`.
    ///
    /// Exit 0 when written; 2 for an invalid NAME, an existing directory
    /// (never written into) or no interface source.
    New(NewArgs),
}

/// `kozmo plugins new`
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: 1 to 50 lower-case ASCII letters, digits and
    /// dashes, starting with a letter (e.g. `demo`, `batch-job2`).
    pub name: String,
    /// The crate's directory, created (default: ./NAME); it must not exist.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// The `interface/` directory of a Kozmo checkout (the `kozmo-interface`
    /// crate) the plugin depends on by path (default: the one this binary
    /// was built from, if it is still there).
    #[arg(long, value_name = "PATH")]
    pub interface: Option<PathBuf>,
}

/// Options shared by `list` and `check`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Accept files (and a directory) writable by group/others or owned by
    /// another user.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// `kozmo plugins list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The plugin directory.
    #[arg(long, short, env = "KOZMO_PLUGIN_DIR", default_value = "plugins")]
    pub dir: PathBuf,
    /// Skip libraries with problems (printed as warnings) instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Load only these plugin ids (repeatable; default: all).
    #[arg(long = "enable", value_name = "ID")]
    pub enabled: Vec<String>,
    /// Choose the plugin for a task type several plugins register
    /// (repeatable), as TASK_TYPE=PLUGIN_ID.
    #[arg(long = "default-for", value_name = "TASK_TYPE=PLUGIN_ID", value_parser = parse_pair)]
    pub default_for: Vec<(String, String)>,
    /// Isolate these plugin ids as `kozmo serve --isolate` would (repeatable;
    /// `*` = all): they are loaded by a child process and shown as isolated.
    #[arg(long = "isolate", value_name = "ID", env = "KOZMO_ISOLATE", value_delimiter = ',')]
    pub isolate: Vec<String>,
    /// Read `isolate` and its limits from the daemon's configuration file
    /// (`--isolate` and KOZMO_ISOLATE override its list).
    #[arg(long, env = "KOZMO_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `kozmo plugins check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The library files to check (any name; together they are checked as
    /// one directory would be).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((t, p)) if !t.trim().is_empty() && !p.trim().is_empty() => Ok((t.trim().into(), p.trim().into())),
        _ => Err(format!("expected TASK_TYPE=PLUGIN_ID, got {s:?}")),
    }
}

/// Runs a `plugins` subcommand.
pub fn run(cmd: PluginsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginsCommand::New(args) => Ok(new(args)),
        PluginsCommand::List(args) => {
            let mut daemon_config = match crate::daemon::load_config(args.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(ExitCode::from(2));
                }
            };
            if !args.isolate.is_empty() {
                daemon_config.isolate = args.isolate;
            }
            let config = LoaderConfig {
                plugins_dir: args.dir.clone(),
                enabled_plugins: args.enabled,
                default_for_task_types: args.default_for.into_iter().collect(),
                skip_invalid_plugins: args.skip_invalid,
                allow_insecure_plugin_dir: args.common.allow_insecure,
                isolation: daemon_config.isolation(),
                probe_program: None,
            }
            .probing_with_current_exe();
            let services = LoaderServices::offline("in `kozmo plugins list` (no daemon running)");
            match loader::load_directory(&config, &services) {
                Ok(loaded) => {
                    print!("{}", table(&loaded.infos(), &config.isolation));
                    if loaded.plugins().is_empty() {
                        eprintln!(
                            "note: no plugin library (*{}) in {}",
                            std::env::consts::DLL_SUFFIX,
                            args.dir.display()
                        );
                    }
                    print_problems(&LoadReport {
                        warnings: loaded.warnings().to_vec(),
                        ..Default::default()
                    });
                    Ok(ExitCode::SUCCESS)
                }
                Err(report) => {
                    if !report.loaded.is_empty() {
                        print!("{}", table(&report.loaded, &config.isolation));
                    }
                    print_problems(&report);
                    Ok(ExitCode::from(1))
                }
            }
        }
        PluginsCommand::Check(args) => {
            let config = LoaderConfig {
                plugins_dir: PathBuf::from("(command line)"),
                allow_insecure_plugin_dir: args.common.allow_insecure,
                ..Default::default()
            }
            .probing_with_current_exe();
            let services = LoaderServices::offline("in `kozmo plugins check` (no daemon running)");
            match loader::check_files(&args.files, &config, &services) {
                Ok(loaded) => {
                    for p in loaded.infos() {
                        println!("ok: {}", entry_line(&p));
                    }
                    print_problems(&LoadReport {
                        warnings: loaded.warnings().to_vec(),
                        ..Default::default()
                    });
                    Ok(ExitCode::SUCCESS)
                }
                Err(report) => {
                    print_problems(&report);
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Problems go to stdout, one line each: they are the command's result
/// (stderr carries logs, and panic messages a plugin's own std prints).
fn print_problems(report: &LoadReport) {
    print!("{report}");
}

/// `<id>: task types [a, b], default, <file>, kozmo-interface <v>, ABI <e.m>`.
pub fn entry_line(p: &PluginInfo) -> String {
    format!(
        "{}: task types [{}]{}, {}, kozmo-interface {}, ABI {}",
        p.id,
        p.task_types.join(", "),
        if p.is_default { ", default" } else { "" },
        p.file.display(),
        p.interface_version,
        p.abi
    )
}

/// The `list` table, header included. A plugin is isolated when its
/// library is: when `isolation` names it or another plugin of its file.
pub fn table(plugins: &[PluginInfo], isolation: &IsolationConfig) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "TASK TYPES".to_string(),
        "DEFAULT".to_string(),
        "ISOLATED".to_string(),
        "FILE".to_string(),
        "INTERFACE".to_string(),
        "ABI".to_string(),
    ]];
    let isolated =
        |p: &PluginInfo| isolation.covers_all() || plugins.iter().any(|q| q.file == p.file && isolation.covers(&q.id));
    for p in plugins {
        rows.push([
            p.id.clone(),
            p.task_types.join(","),
            if p.is_default { "yes" } else { "no" }.to_string(),
            if isolated(p) { "yes" } else { "no" }.to_string(),
            p.file.display().to_string(),
            p.interface_version.clone(),
            p.abi.to_string(),
        ]);
    }
    let mut widths = vec![0usize; rows[0].len()];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, &w)) in r.iter().zip(&widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `kozmo plugins new`: the crate, then what to do with it.
fn new(args: NewArgs) -> ExitCode {
    if let Err(e) = scaffold::check_name(&args.name) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let Some(interface) = args.interface.or_else(scaffold::default_interface) else {
        eprintln!(
            "error: cannot find the kozmo-interface source: this kozmo was built from {} and its interface/ \
             directory is gone; pass --interface PATH with the interface/ directory of a Kozmo checkout \
             (kozmo-interface is not on crates.io)",
            env!("CARGO_MANIFEST_DIR")
        );
        return ExitCode::from(2);
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    match scaffold::write(&args.name, &dir, &interface) {
        Ok(files) => {
            for f in &files {
                println!("created {}", f.display());
            }
            let lib = format!(
                "{}kozmo_plugin_{}{}",
                std::env::consts::DLL_PREFIX,
                args.name.replace('-', "_"),
                std::env::consts::DLL_SUFFIX
            );
            println!(
                "\nnext:\n  cd {dir}\n  cargo test\n  cargo build\n  kozmo plugins check target/debug/{lib}\n  \
                 install -m 644 target/debug/{lib} <the daemon's plugins dir>/   (then restart it)\n  \
                 kozmo submit task.json --wait",
                dir = dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
