//! Opens a plugin library the way the daemon does and runs one task
//! through it with in-memory host services, the way the daemon drives it:
//! a round, then a pause (or the next round at once when the round changed
//! something or the plugin signalled), until a terminal phase; then
//! `finalize`. Prints every round as it happens and the plugin's logs.
//!
//! ```text
//! cargo run -p kozmo-interface --example run_plugin -- LIBRARY TASK.json \
//!     [--delay-ms 200] [--abort-after-ms N] [--timeout-secs 60]
//! ```
//!
//! `TASK.json` is a task file (`{"type": "<task type>", "inputs": {...}}`,
//! as `kozmo submit` takes); the task type picks the entry (or the
//! library's default entry). Each run gets a generated name of its own, so
//! a plugin naming files or remote jobs after it never meets an earlier
//! run's. `--abort-after-ms` aborts the task after that long (`abort`, then
//! `finalize`, as `kozmo abort` would). The loader's quotas apply (the
//! task allocates against them); secrets are unavailable, as in
//! `kozmo plugins check`.
//!
//! Exit status: 0 success, 1 failure or abort, 2 usage or loading errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kozmo_interface::host::open_library;
use kozmo_interface::kit::TaskContextExt;
use kozmo_interface::task::TaskFile;
use kozmo_interface::testing::{install_log_capture, DriveError, Driver, Outcome, TestSetupContext};
use kozmo_interface::{load_plugin, serde_json};

struct Options {
    library: PathBuf,
    task: PathBuf,
    delay: Duration,
    abort_after: Option<Duration>,
    timeout: Duration,
}

const USAGE: &str =
    "usage: run_plugin LIBRARY TASK.json [--delay-ms N (200)] [--abort-after-ms N] [--timeout-secs N (60)]";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut positional = Vec::new();
    let mut delay = Duration::from_millis(200);
    let mut abort_after = None;
    let mut timeout = Duration::from_secs(60);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: {v:?} is not a whole number"))
        };
        match arg.as_str() {
            "--delay-ms" => delay = Duration::from_millis(number("--delay-ms")?),
            "--abort-after-ms" => abort_after = Some(Duration::from_millis(number("--abort-after-ms")?)),
            "--timeout-secs" => timeout = Duration::from_secs(number("--timeout-secs")?),
            "-h" | "--help" => return Err(String::new()),
            a if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [library, task] =
        <[PathBuf; 2]>::try_from(positional).map_err(|_| "expected LIBRARY and TASK.json".to_string())?;
    Ok(Options {
        library,
        task,
        delay,
        abort_after,
        timeout,
    })
}

fn run(o: Options) -> Result<bool, String> {
    let file = TaskFile::read(&o.task)?;
    // Before opening: the library takes the log level in force now.
    install_log_capture();
    let lib = open_library(&o.library).map_err(|e| format!("{}: {e}", o.library.display()))?;
    let task_type = &file.template.task_type;
    let entry = lib
        .entries
        .iter()
        .find(|e| e.registered_task_types.contains(task_type))
        .or_else(|| lib.entries.iter().find(|e| e.is_default))
        .ok_or_else(|| format!("no plugin in {} handles task type {task_type:?}", o.library.display()))?;
    let setup = TestSetupContext::new();
    let plugin = load_plugin(&setup, entry).map_err(|e| format!("loading {}: {e}", entry.id))?;
    println!("loaded plugin {} from {}", plugin.id(), o.library.display());
    for (namespace, quota) in setup.quotas() {
        println!("  its loader registered a quota of {quota} in {namespace}");
    }

    // A fresh generated name per run, and the loader's quotas.
    let ctx = setup.task_context().with_task_file(file);
    println!(
        "running {} (raw output: {})",
        ctx.generated_name(),
        ctx.raw_output_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
    let mut driver = Driver::new()
        .delay(o.delay)
        .timeout(o.timeout)
        .on_round(|n, answer| match answer {
            Ok(info) => println!("round {n}: {info}"),
            Err(e) => println!("round {n}: handler error (the round is tried again): {e}"),
        });
    if let Some(after) = o.abort_after {
        driver = driver.abort_after(after);
    }
    let result = driver.run(&*plugin, &ctx);
    let run = match &result {
        Ok(run) => run,
        Err(e) => e.run(),
    };
    if !run.logs.is_empty() {
        println!("plugin logs:");
        for record in &run.logs {
            println!("  {record}");
        }
    }
    let run = result.map_err(|e| match e {
        DriveError::Timeout(..) => format!("{e}; it was aborted and finalized"),
        e => e.to_string(),
    })?;
    match &run.outcome {
        Outcome::Aborted => println!("aborted after {:?}: abort and finalize ran", run.elapsed),
        Outcome::RoundFailures(e) => println!(
            "failed: {} consecutive handler errors, last: {e}",
            run.handler_errors.len()
        ),
        Outcome::Terminal(info) => {
            println!("{} after {:?}; finalize ran", info.phase(), run.elapsed);
            if let Some(outputs) = ctx.outputs() {
                let outputs = serde_json::to_string_pretty(&outputs).unwrap_or_default();
                println!("outputs: {outputs}");
            }
        }
    }
    Ok(run.phase().is_success())
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
