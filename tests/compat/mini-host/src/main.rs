//! A minimal host built against the simulated next minor (ABI 1.1): for
//! each library on the command line, one JSON line with what it saw.

mod layout_snapshot;

use abi_stable::library::lib_header_from_path;
use kozmo_interface::ffi::v1::PluginModule_Ref;
use kozmo_interface::host::open_library;
use kozmo_interface::serde_json::{self, json, Value};
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{load_plugin, Literal};

fn literal_text(l: &Literal) -> Value {
    match l {
        Literal::String(s) => json!(s),
        other => json!(format!("{other:?}")),
    }
}

fn visit(path: &str) -> Value {
    let lib = match open_library(std::path::Path::new(path)) {
        Ok(lib) => lib,
        Err(e) => return json!({"file": path, "error": e.to_string()}),
    };
    // The root-module field 1.1 appended, through its Option accessor.
    // SAFETY: open_library has just checked this library's layout.
    let module = unsafe { lib_header_from_path(std::path::Path::new(path)).unwrap().init_root_module_with_unchecked_layout::<PluginModule_Ref>() }.unwrap();
    let mut entries = Vec::new();
    for entry in &lib.entries {
        let plugin = load_plugin(&TestSetupContext::new(), entry).expect("the loader runs");
        let ctx = TestTaskContext::new().with_input("greeting", Literal::String("hi".into()));
        let handled = plugin.handle(&ctx);
        let outputs: Value = ctx
            .outputs()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), literal_text(v))).collect::<serde_json::Map<_, _>>().into())
            .unwrap_or(Value::Null);
        entries.push(json!({
            "id": entry.id,
            "phase": handled.as_ref().map(|t| t.info().phase().to_string()).unwrap_or_else(|e| format!("error: {e}")),
            "outputs": outputs,
            "plugin_method": plugin.simulated_plugin_method(),
        }));
    }
    json!({
        "file": path,
        "abi": lib.abi.to_string(),
        "warning": lib.newer_warning(),
        "root_field": module.simulated_field(),
        "entries": entries,
    })
}


/// `--check-layout FILE`: this interface's v1 layout against the released
/// snapshot in FILE, as `{"breaking": [...], "appended": [...]}`.
fn check_layout(released: &str) -> Value {
    use abi_stable::StableAbi;
    let text = std::fs::read_to_string(released).expect("the released snapshot");
    let released = layout_snapshot::parse(&text);
    let now = layout_snapshot::snapshot(<PluginModule_Ref as StableAbi>::LAYOUT);
    json!({
        "breaking": layout_snapshot::breaking_changes(&released, &now),
        "appended": layout_snapshot::appended(&released, &now),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, file] = args.as_slice() {
        if flag == "--check-layout" {
            println!("{}", check_layout(file));
            return;
        }
    }
    for path in args {
        println!("{}", visit(&path));
    }
}
