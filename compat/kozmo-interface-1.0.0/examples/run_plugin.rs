//! Opens a plugin library the way the daemon does and runs one task
//! through it with in-memory host services, printing every round.
//!
//! ```text
//! cargo run -p kozmo-interface --example run_plugin -- LIBRARY TASK.json
//! ```
//!
//! `TASK.json` holds `{"type": "<task type>", "inputs": {...}}`; the task
//! type picks the entry (or the library's default entry).

use std::path::PathBuf;
use std::process::ExitCode;

use kozmo_interface::host::open_library;
use kozmo_interface::task::TaskFile;
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{load_plugin, serde_json};

fn run(library: PathBuf, task: PathBuf) -> Result<bool, String> {
    let file = TaskFile::read(&task)?;
    let lib = open_library(&library).map_err(|e| format!("{}: {e}", library.display()))?;
    let task_type = &file.template.task_type;
    let entry = lib
        .entries
        .iter()
        .find(|e| e.registered_task_types.contains(task_type))
        .or_else(|| lib.entries.iter().find(|e| e.is_default))
        .ok_or_else(|| format!("no plugin in {} handles task type {task_type:?}", library.display()))?;
    let plugin = load_plugin(&TestSetupContext::new(), entry).map_err(|e| format!("loading {}: {e}", entry.id))?;
    println!("loaded plugin {} from {}", plugin.id(), library.display());

    let mut ctx = TestTaskContext::new().with_template(file.template);
    ctx.inputs = file.inputs;
    for round in 1..=100 {
        let t = plugin.handle(&ctx).map_err(|e| format!("round {round}: {e}"))?;
        ctx.next_round();
        println!("round {round}: {}", t.info());
        if t.info().phase().is_terminal() {
            plugin.finalize(&ctx).map_err(|e| format!("finalize: {e}"))?;
            let outputs = serde_json::to_string_pretty(&ctx.outputs().unwrap_or_default()).unwrap_or_default();
            println!("outputs: {outputs}");
            return Ok(t.info().phase().is_success());
        }
    }
    Err("no terminal phase after 100 rounds".into())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(library), Some(task)) = (args.next(), args.next()) else {
        eprintln!("usage: run_plugin LIBRARY TASK.json");
        return ExitCode::from(2);
    };
    match run(library, task) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
