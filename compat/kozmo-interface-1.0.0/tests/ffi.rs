//! Plugins built as real shared libraries, opened the way the daemon opens
//! them, driven through the ABI with in-memory host contexts.

mod probe_checks;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use abi_stable::library::lib_header_from_path;
use kozmo_interface::ffi::v1::PluginModule_Ref;
use kozmo_interface::host::{open_library, OpenedLibrary};
use kozmo_interface::literals::{Literal, LiteralMap};
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{load_plugin, ErrorKind, Phase, PluginEntry};

/// Records every log record the host receives.
struct Capture(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((r.level(), r.target().to_string(), r.args().to_string()));
    }
    fn flush(&self) {}
}

fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("only this test binary sets the logger");
        log::set_max_level(log::LevelFilter::Trace);
        c
    })
}

fn library(package: &str) -> PathBuf {
    kozmo_testkit::build_plugins(&[package]).remove(0)
}

fn open(package: &str) -> OpenedLibrary {
    logs();
    open_library(&library(package)).unwrap_or_else(|e| panic!("opening {package}: {e}"))
}

fn entry<'a>(lib: &'a OpenedLibrary, id: &str) -> &'a PluginEntry {
    lib.entries
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no entry {id}"))
}

#[test]
fn echo_opens_with_abi_stable_and_handles_through_the_abi() {
    // abi_stable's own per-file loading, as the design requires.
    let path = library("kozmo-plugin-echo");
    let module = lib_header_from_path(&path)
        .and_then(|h| h.init_root_module::<PluginModule_Ref>())
        .expect("echo is a valid root module");
    assert_eq!(module.abi_epoch(), 1);
    assert_eq!(module.interface_version().as_str(), "1.0.0");
    assert!(module.panic_unwind());

    let lib = open("kozmo-plugin-echo");
    assert_eq!(lib.interface_version, "1.0.0");
    assert_eq!(lib.entries.len(), 1);
    let e = entry(&lib, "echo");
    assert!(e.is_default);
    assert_eq!(e.registered_task_types, vec!["echo".to_string()]);

    let plugin = load_plugin(&TestSetupContext::new(), e).unwrap();
    assert_eq!(plugin.id(), "echo");
    let ctx = TestTaskContext::new()
        .with_input("greeting", Literal::String("hello".into()))
        .with_input(
            "list",
            Literal::Collection(vec![Literal::Integer(1), Literal::Float(2.5)]),
        );
    let t = plugin.handle(&ctx).unwrap();
    assert_eq!(t.info().phase(), Phase::SUCCESS);
    assert!(t.info().info().unwrap().occurred_at.is_some());
    assert_eq!(ctx.outputs().unwrap(), ctx.inputs);
    plugin.abort(&ctx).unwrap();
    plugin.finalize(&ctx).unwrap();
}

#[test]
fn plugin_logs_reach_the_host_logger() {
    let lib = open("kozmo-plugin-echo");
    let plugin = load_plugin(&TestSetupContext::new(), entry(&lib, "echo")).unwrap();
    plugin.handle(&TestTaskContext::new()).unwrap();
    let records = logs().0.lock().unwrap().clone();
    assert!(
        records.iter().any(|(level, target, msg)| *level == log::Level::Info
            && target == "kozmo_plugin_echo"
            && msg == "echo: test-exec-n0-0 returns 0 input(s) as outputs"),
        "records: {records:?}"
    );
}

#[test]
fn every_context_service_crosses_the_boundary_intact() {
    probe_checks::check_probe(&open("kozmo-fixture-probe"));
}

#[test]
fn the_probes_log_line_from_its_loader_arrives() {
    let lib = open("kozmo-fixture-probe");
    let setup = TestSetupContext::new().with_secret("setup-secret", "s");
    load_plugin(&setup, entry(&lib, "probe")).unwrap();
    let records = logs().0.lock().unwrap().clone();
    assert!(records
        .iter()
        .any(|(l, t, m)| *l == log::Level::Info && t == "kozmo_fixture_probe" && m == "probe loaded"));
}

#[test]
fn panics_in_every_call_come_back_as_errors() {
    let lib = open("kozmo-fixture-panicky");
    let setup = TestSetupContext::new();

    let err = load_plugin(&setup, entry(&lib, "panicky-loader"))
        .err()
        .expect("loader panics");
    assert!(err.is_panic(), "{err:?}");
    assert!(err.message.contains("loader exploded"), "{}", err.message);

    let err = load_plugin(&setup, entry(&lib, "failing-loader"))
        .err()
        .expect("loader fails");
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        ("BackendDown", "cannot reach the backend")
    );
    assert_eq!(err.kind, ErrorKind::System);

    let plugin = load_plugin(&setup, entry(&lib, "panicky")).unwrap();
    let ctx = TestTaskContext::new();
    let e = plugin.handle(&ctx).unwrap_err();
    assert!(e.is_panic() && e.message.contains("handle exploded"), "{e:?}");
    assert!(
        e.message.contains("tests/fixtures/panicky/src/lib.rs:"),
        "the location is reported: {e:?}"
    );
    let e = plugin.abort(&ctx).unwrap_err();
    assert!(e.is_panic() && e.message.contains("abort exploded"), "{e:?}");
    let e = plugin.finalize(&ctx).unwrap_err();
    assert!(e.is_panic() && e.message.contains("finalize exploded"), "{e:?}");
    // Still alive, and the plugin still answers.
    assert!(plugin.handle(&ctx).unwrap_err().is_panic());
}

#[test]
fn outputs_written_through_the_abi_keep_every_literal_kind() {
    let lib = open("kozmo-plugin-echo");
    let plugin = load_plugin(&TestSetupContext::new(), entry(&lib, "echo")).unwrap();
    let inputs: LiteralMap = kozmo_interface::serde_json::from_str(
        r#"{"i": {"integer": -4}, "f": {"float": 0.1}, "b": {"boolean": false},
            "d": {"datetime": "1900-01-01T01:01:01.000000001Z"}, "u": {"duration": {"seconds": 10, "nanos": 5}},
            "blob": {"blob": {"uri": "file:///x", "format": "csv"}}, "sch": {"schema": {"uri": "s3://s"}},
            "bin": {"binary": {"tag": "msgpack", "value": "gqFhAQ=="}}, "none": "none",
            "m": {"map": {"k": {"collection": [1, 2]}}}}"#,
    )
    .unwrap();
    let mut ctx = TestTaskContext::new();
    ctx.inputs = inputs.clone();
    plugin.handle(&ctx).unwrap();
    assert_eq!(ctx.outputs().unwrap(), inputs);
}
