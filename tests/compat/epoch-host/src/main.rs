//! A minimal host built against the simulated epoch 2: for each library on
//! the command line, one JSON line saying which ABI it speaks and how one
//! `handle` went, through whichever epoch module the library needs.

use kozmo_interface::host::open_library;
use kozmo_interface::serde_json::{self, json, Value};
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{load_plugin, Literal};

fn visit(path: &str) -> Value {
    let lib = match open_library(std::path::Path::new(path)) {
        Ok(lib) => lib,
        Err(e) => return json!({"file": path, "error": e.to_string()}),
    };
    let entries: Vec<Value> = lib
        .entries
        .iter()
        .map(|entry| {
            let plugin = load_plugin(&TestSetupContext::new(), entry).expect("the loader runs");
            let ctx = TestTaskContext::new().with_input("greeting", Literal::String("hi".into()));
            let phase = match plugin.handle(&ctx) {
                Ok(t) => t.info().phase().to_string(),
                Err(e) => format!("error: {e}"),
            };
            let echoed = ctx.outputs().is_some_and(|o| o == ctx.inputs);
            json!({"id": entry.id, "phase": phase, "echoed": echoed})
        })
        .collect();
    json!({"file": path, "abi": lib.abi.to_string(), "host_abi": kozmo_interface::abi::ABI_VERSION.to_string(), "entries": entries})
}

fn main() {
    for path in std::env::args().skip(1) {
        println!("{}", serde_json::to_string(&visit(&path)).expect("JSON"));
    }
}
