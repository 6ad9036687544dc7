//! Every host service crosses the isolation boundary intact: the probe
//! fixture (which calls each setup and task-context service and reports
//! what it saw) run in the daemon and isolated, each with its own copy of
//! the same in-memory contexts, leaves the same traces.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_host::isolation::open::open_isolated;
use kozmo_host::isolation::IsolationConfig;
use kozmo_host::loader::LoaderServices;
use kozmo_interface::host::OpenedLibrary;
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{Literal, Plugin, Result, Transition};

fn probe() -> PathBuf {
    kozmo_testkit::build_plugins(&["kozmo-fixture-probe"]).remove(0)
}

fn isolated(lib: &Path) -> OpenedLibrary {
    let cfg = IsolationConfig {
        plugins: vec!["*".into()],
        host_exe: Some(env!("CARGO_BIN_EXE_kozmo").into()),
        ..IsolationConfig::default()
    };
    open_isolated(lib, lib, &cfg, &LoaderServices::offline("in tests"))
        .expect("isolated")
        .unwrap_or_else(|p| panic!("{}", p.message))
}

/// What one run of the probe left behind.
#[derive(Debug, PartialEq)]
struct Traces {
    transition: Transition,
    outputs: Option<kozmo_interface::LiteralMap>,
    error_document: Option<(kozmo_interface::ExecutionError, bool)>,
    events: Vec<kozmo_interface::PhaseInfo>,
    state_after_handle: Option<(u8, Option<Vec<u8>>)>,
    blob: Option<Vec<u8>>,
    catalog: usize,
    granted_after_finalize: Vec<String>,
    state_after_abort: Option<(u8, Option<Vec<u8>>)>,
    signals: u64,
    quotas: Vec<(String, i64)>,
    enqueued: Vec<String>,
    metrics: (f64, f64, Vec<f64>),
}

/// Waits for what crosses asynchronously (signals, metric updates) to land.
fn settle(done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(lib: OpenedLibrary) -> Result<Traces> {
    let setup = TestSetupContext::new().with_secret("setup-secret", "s3cret");
    let entry = lib.entries.into_iter().next().expect("one entry");
    let plugin: Arc<dyn Plugin> = Arc::from(kozmo_interface::load_plugin(&setup, &entry)?);
    assert_eq!(plugin.properties().generated_name_max_length, Some(12));
    let ctx = TestTaskContext::new()
        // The same prefix in both runs (the default is a directory per context).
        .with_raw_output_prefix("mem://raw/test-exec-n0-0")
        .with_secret("task-secret", "t0p")
        .with_input("x", Literal::Integer(5))
        .with_state(1, kozmo_interface::state::encode(&(7u32, "prior".to_string()))?);
    let transition = plugin.handle(&ctx)?;
    let state_after_handle = ctx.pending_state();
    plugin.finalize(&ctx)?;
    plugin.abort(&ctx)?;
    let metric = |name: &str| setup.metric(name).map(|m| *m.value.lock().unwrap());
    settle(|| ctx.signal_count() == 2 && metric("sub_level") == Some(2.5));
    Ok(Traces {
        transition,
        outputs: ctx.outputs(),
        error_document: ctx.error_document(),
        events: ctx.events(),
        state_after_handle,
        blob: ctx.blob("mem://probe/blob"),
        catalog: ctx.catalog_entries().len(),
        granted_after_finalize: ctx.granted("probe-quota").into_iter().collect(),
        state_after_abort: ctx.pending_state(),
        signals: ctx.signal_count(),
        quotas: setup.quotas(),
        enqueued: setup.enqueued().iter().map(|o| o.to_string()).collect(),
        metrics: (
            metric("loads").unwrap_or(-1.0),
            metric("sub_level").unwrap_or(-1.0),
            setup
                .metric("sizes")
                .map(|m| m.observations.lock().unwrap().clone())
                .unwrap_or_default(),
        ),
    })
}

#[test]
fn every_service_gives_the_same_result_isolated_as_in_the_daemon() {
    let lib = probe();
    let native = run(kozmo_interface::host::open_library(&lib).unwrap()).unwrap();
    let isolated = run(isolated(&lib)).unwrap();
    assert_eq!(isolated, native);
    // And the probe saw what it should (not merely the same wrong thing).
    let outputs = native.outputs.as_ref().unwrap();
    assert_eq!(outputs["secret"], Literal::String("t0p".into()));
    assert_eq!(outputs["setup.secret"], Literal::String("s3cret".into()));
    assert_eq!(outputs["secret.missing"], Literal::String("SecretNotFound".into()));
    assert_eq!(outputs["ds.read"], Literal::String("blob-bytes".into()));
    assert_eq!(outputs["catalog.hit"], Literal::Boolean(true));
    assert_eq!(native.signals, 2);
    assert_eq!(native.metrics, (2.0, 2.5, vec![4.0]));
    assert_eq!(native.enqueued, ["probe-ns/probe-owner"]);
}

#[test]
fn a_library_whose_plugins_are_not_isolated_is_left_to_the_daemon() {
    let lib = probe();
    let cfg = IsolationConfig {
        plugins: vec!["someone-else".into()],
        host_exe: Some(env!("CARGO_BIN_EXE_kozmo").into()),
        ..IsolationConfig::default()
    };
    assert!(open_isolated(&lib, &lib, &cfg, &LoaderServices::offline("in tests")).is_none());
    assert!(open_isolated(&lib, &lib, &IsolationConfig::default(), &LoaderServices::offline("t")).is_none());
}
