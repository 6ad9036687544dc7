//! Plugins built as real shared libraries, opened the way the daemon opens
//! them, driven through the ABI with in-memory host contexts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use abi_stable::library::lib_header_from_path;
use kozmo_interface::ffi::v1::PluginModule_Ref;
use kozmo_interface::host::{open_library, OpenedLibrary};
use kozmo_interface::literals::{Literal, LiteralMap};
use kozmo_interface::task::TaskTemplate;
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{load_plugin, ErrorKind, Phase, PluginEntry, PluginStateReaderExt};

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

fn probe_context() -> TestTaskContext {
    let mut ctx = TestTaskContext::new()
        .with_input("n", Literal::Integer(3))
        .with_input("s", Literal::String("x".into()))
        .with_secret("task-secret", "t0ps3cret")
        .with_quota("probe-quota", 1)
        .with_state(2, kozmo_interface::state::encode(&(7u32, "prior".to_string())).unwrap())
        .with_template(TaskTemplate {
            custom: kozmo_interface::serde_json::json!({"mode": "probe"}),
            ..Default::default()
        });
    ctx.template.id.name = "probe-task".into();
    ctx.max_dataset_size_bytes = 12345;
    ctx.paths[5] = "mem://raw/prev/_checkpoints".into();
    let m = &mut ctx.metadata;
    m.owner_id.namespace = "proj-dev".into();
    m.owner_id.name = "exec-1".into();
    m.task_execution_id.id.retry_attempt = 2;
    m.task_execution_id.id.task_id.name = "probe-task".into();
    m.owner_reference.name = "exec-1-owner".into();
    m.overrides.config.insert("k".into(), "v".into());
    m.overrides.resources.limits.insert("cpu".into(), "2".into());
    m.overrides.extended_resources.gpu_accelerator = "a100".into();
    m.labels.insert("team".into(), "core".into());
    m.max_attempts = 4;
    m.annotations.insert("note".into(), "yes".into());
    m.service_account = "runner".into();
    m.security_context.run_as = "uid-1000".into();
    m.interruptible = true;
    m.platform_resources.requests.insert("memory".into(), "1Gi".into());
    m.interruptible_failure_threshold = -1;
    m.environment_variables.insert("A".into(), "1".into());
    ctx
}

#[test]
fn every_context_service_crosses_the_boundary_intact() {
    let lib = open("kozmo-fixture-probe");
    let setup = TestSetupContext::new().with_secret("setup-secret", "s3tup");
    let plugin = load_plugin(&setup, entry(&lib, "probe")).unwrap();
    assert_eq!(plugin.id(), "probe");
    assert!(plugin.properties().disable_node_level_caching);
    assert_eq!(plugin.properties().generated_name_max_length, Some(12));

    // SetupContext services, seen from the host side.
    assert_eq!(setup.quotas(), vec![("probe-quota".to_string(), 7)]);
    assert_eq!(setup.enqueued().len(), 1);
    assert_eq!(setup.enqueued()[0].to_string(), "probe-ns/probe-owner");
    assert_eq!(*setup.metric("loads").unwrap().value.lock().unwrap(), 2.0);
    assert_eq!(*setup.metric("sub_level").unwrap().value.lock().unwrap(), 2.5);
    assert_eq!(*setup.metric("sizes").unwrap().observations.lock().unwrap(), vec![4.0]);

    let ctx = probe_context();
    let t = plugin.handle(&ctx).unwrap();

    // The transition, with a rich TaskInfo.
    let info = t.info();
    assert_eq!(
        (info.phase(), info.version(), info.reason()),
        (Phase::INITIALIZING, 9, "probing")
    );
    let ti = info.info().unwrap();
    assert_eq!(ti.logs[0].name, "probe log");
    assert_eq!(ti.logs[0].ttl, Some(std::time::Duration::from_secs(60)));
    assert_eq!(ti.custom_info["probe"], true);
    assert_eq!(ti.external_resources[0].external_id, "ext-1");
    assert_eq!(ti.external_resources[0].phase, Phase::RUNNING);
    assert_eq!(ti.additional_reasons[0].reason, "extra");
    let at = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123);
    assert_eq!(ti.occurred_at, Some(at));
    assert_eq!(ti.reported_at, Some(at + std::time::Duration::from_secs(1)));

    // What the plugin saw, accessor by accessor.
    let out = ctx.outputs().expect("probe writes outputs");
    let want: BTreeMap<&str, Literal> = BTreeMap::from([
        ("setup.owner_kind", Literal::from("Execution")),
        ("setup.secret", Literal::from("s3tup")),
        ("rm.id", Literal::from("testresourcemanager")),
        ("rm.first", Literal::from("Granted")),
        ("rm.second", Literal::from("Exhausted")),
        ("secret", Literal::from("t0ps3cret")),
        ("secret.missing", Literal::from("SecretNotFound")),
        ("max_dataset_size_bytes", Literal::Integer(12345)),
        ("ds.head", Literal::Integer(10)),
        ("ds.read", Literal::from("blob-bytes")),
        ("ds.head_deleted", Literal::Boolean(true)),
        ("state.version", Literal::Integer(2)),
        ("state.prior", Literal::from("Some((7, \"prior\"))")),
        ("task.name", Literal::from("probe-task")),
        ("task.custom", Literal::from(r#"{"mode":"probe"}"#)),
        ("task.path", Literal::from("mem://task.json")),
        ("in.prefix", Literal::from("mem://inputs")),
        ("in.path", Literal::from("mem://inputs/inputs.json")),
        ("in.values", Literal::Map(ctx.inputs.clone())),
        ("md.owner_id", Literal::from("proj-dev/exec-1")),
        ("md.generated_name", Literal::from("test-exec-n0-0")),
        ("md.generated_name_with", Literal::from("test-exec-n0-0000000")),
        ("md.retry_attempt", Literal::Integer(2)),
        ("md.task_id_name", Literal::from("probe-task")),
        ("md.unique_node_id", Literal::from("n0")),
        ("md.namespace", Literal::from("test-namespace")),
        ("md.owner_reference", Literal::from("exec-1-owner")),
        ("md.overrides.config", Literal::from(r#"{"k": "v"}"#)),
        ("md.overrides.resources", Literal::from(r#"{"cpu": "2"}"#)),
        ("md.overrides.gpu", Literal::from("a100")),
        ("md.labels", Literal::from(r#"{"team": "core"}"#)),
        ("md.max_attempts", Literal::Integer(4)),
        ("md.annotations", Literal::from(r#"{"note": "yes"}"#)),
        ("md.service_account", Literal::from("runner")),
        ("md.run_as", Literal::from("uid-1000")),
        ("md.interruptible", Literal::Boolean(true)),
        ("md.platform_resources", Literal::from(r#"{"memory": "1Gi"}"#)),
        ("md.threshold", Literal::Integer(-1)),
        ("md.env", Literal::from(r#"{"A": "1"}"#)),
        ("out.prefix", Literal::from("mem://outputs")),
        ("out.raw", Literal::from("mem://raw/test-exec-n0-0")),
        ("out.checkpoint", Literal::from("mem://raw/test-exec-n0-0/_checkpoints")),
        ("out.previous_checkpoint", Literal::from("mem://raw/prev/_checkpoints")),
        ("catalog.hit", Literal::Boolean(true)),
    ]);
    for (k, v) in &want {
        assert_eq!(out.get(*k), Some(v), "output {k}");
    }
    assert_eq!(out.len(), want.len(), "unexpected outputs: {out:?}");

    // Side effects recorded by the host services.
    assert_eq!(ctx.signal_count(), 2);
    assert_eq!(ctx.blob("mem://probe/blob").unwrap(), b"blob-bytes");
    assert!(ctx.blob("mem://probe/other").is_none());
    let (err, recoverable) = ctx.error_document().unwrap();
    assert_eq!(
        (err.code.as_str(), err.kind, recoverable),
        ("ProbeError", ErrorKind::System, true)
    );
    ctx.next_round();
    assert_eq!(ctx.get::<(u32, String)>().unwrap(), (3, Some((42, "next".to_string()))));
    assert_eq!(ctx.catalog_entries().len(), 1);
    assert_eq!(ctx.catalog_entries()[0].0.cache_version, "v1");
    let events = ctx.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].phase(), events[0].version(), events[0].reason()),
        (Phase::QUEUED, 7, "probe event")
    );

    // abort resets state; finalize releases the token it still holds.
    assert_eq!(
        ctx.granted("probe-quota").len(),
        0,
        "tok-1 was released, tok-2 was never granted"
    );
    plugin.abort(&ctx).unwrap();
    assert_eq!(ctx.pending_state(), Some((0, None)));
    plugin.finalize(&ctx).unwrap();
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
