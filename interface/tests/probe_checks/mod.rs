//! The probe fixture's run, checked value by value: shared by the FFI
//! suite (the probe built from this source) and the compatibility suite
//! (the probe built against the released 1.0.0 interface).

use std::collections::BTreeMap;

use kozmo_interface::host::OpenedLibrary;
use kozmo_interface::literals::Literal;
use kozmo_interface::task::TaskTemplate;
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{load_plugin, ErrorKind, Phase, PluginEntry, PluginStateReaderExt};

fn entry<'a>(lib: &'a OpenedLibrary, id: &str) -> &'a PluginEntry {
    lib.entries
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no entry {id}"))
}

fn probe_context() -> TestTaskContext {
    let ctx = TestTaskContext::new()
        .with_input("n", Literal::Integer(3))
        .with_input("s", Literal::String("x".into()))
        .with_secret("task-secret", "t0ps3cret")
        .with_quota("probe-quota", 1)
        .with_state(2, kozmo_interface::state::encode(&(7u32, "prior".to_string())).unwrap())
        .with_template(TaskTemplate {
            custom: kozmo_interface::serde_json::json!({"mode": "probe"}),
            ..Default::default()
        });
    // Every path distinct from the defaults, so each visibly crosses.
    let mut ctx = ctx
        .with_raw_output_prefix("mem://raw/test-exec-n0-0")
        .with_previous_checkpoint_prefix("mem://raw/prev/_checkpoints")
        .with_max_dataset_size_bytes(12345);
    ctx.template.id.name = "probe-task".into();
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

/// Loads the probe of `lib`, runs one round, abort and finalize with known
/// in-memory services, and asserts every value the probe reports and every
/// side effect it had.
pub fn check_probe(lib: &OpenedLibrary) {
    let setup = TestSetupContext::new().with_secret("setup-secret", "s3tup");
    let plugin = load_plugin(&setup, entry(lib, "probe")).unwrap();
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
