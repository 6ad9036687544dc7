//! The engine with the real loader and the bundled plugins, wired in the
//! daemon's start-up order: resource-manager builder and late enqueue owner
//! first, plugins loaded from a directory (quotas registered through the
//! loader's proxy), the manager built once, the engine started, the owner
//! bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_engine::model::{ExecPhase, ExecutionSpec, ExecutionView};
use kozmo_engine::resources::{InMemoryResources, ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::secrets::HostSecrets;
use kozmo_engine::store::Store;
use kozmo_engine::{Engine, EngineConfig, EngineHandle, LateEnqueueOwner, SubmitOutcome};
use kozmo_host::loader::{load_directory, LoaderConfig, LoaderServices};
use kozmo_host::metrics::Metrics;
use kozmo_interface::Literal;
use kozmo_store_sqlite::SqliteStore;
use serde_json::json;

struct Daemon {
    _dir: tempfile::TempDir,
    engine: EngineHandle,
    resources: Arc<InMemoryResources>,
}

fn daemon() -> Daemon {
    let libs = kozmo_testkit::build_plugins(&["kozmo-plugin-echo", "kozmo-plugin-shell", "kozmo-plugin-sleep-quota"]);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for lib in &libs {
        std::fs::copy(lib, plugins.join(lib.file_name().unwrap())).unwrap();
    }
    let builder = Arc::new(ResourceManagerBuilder::new());
    let owner = Arc::new(LateEnqueueOwner::new());
    let services = LoaderServices::for_engine(
        &builder,
        &owner,
        Arc::new(HostSecrets::from_process_env(None)),
        Metrics::new("kozmo"),
    );
    let mut cfg = LoaderConfig::new(&plugins);
    cfg.default_for_task_types.clear();
    let loaded = load_directory(&cfg, &services).unwrap_or_else(|r| panic!("load failed: {r:?}"));
    assert_eq!(builder.quotas()["inmemoryresourcemanager:sleep-quota:slots"], 2);
    let resources = builder.build();
    let data = dir.path().join("data-dir");
    let engine = Engine::start(
        EngineConfig {
            data_dir: data.clone(),
            workers: 2,
            resync_interval: Duration::from_millis(20),
            max_resync_interval: Duration::from_millis(100),
            ..EngineConfig::default()
        },
        Arc::new(SqliteStore::open_in(&data).unwrap()) as Arc<dyn Store>,
        Arc::new(loaded),
        resources.clone() as Arc<dyn ResourceBackend>,
    )
    .unwrap();
    owner.bind(&engine);
    Daemon {
        _dir: dir,
        engine,
        resources,
    }
}

fn task(path: &str) -> ExecutionSpec {
    let text = std::fs::read_to_string(kozmo_testkit::workspace_root().join(path)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let inputs = v.as_object_mut().unwrap().remove("inputs").unwrap_or(json!({}));
    serde_json::from_value(
        json!({"template": v, "inputs": inputs, "metadata": {"project": "demo", "domain": "development"}}),
    )
    .unwrap()
}

fn wait(engine: &EngineHandle, id: &str, timeout: Duration) -> ExecutionView {
    let deadline = Instant::now() + timeout;
    loop {
        let v = engine.get(id).unwrap();
        if v.phase.is_terminal() {
            return v;
        }
        assert!(Instant::now() < deadline, "{v:#?}\n{:#?}", engine.events(id).unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bundled_plugins_run_through_the_engine_and_the_quota_holds() {
    let d = daemon();
    let mut nap = task("examples/sleep-quota.json");
    nap.inputs.insert("seconds".into(), Literal::Float(0.2));
    // From the first submission: the first naps start while the later
    // ones are submitted (each submission waits for its commit).
    let start = Instant::now();
    let ids: Vec<String> = (0..5)
        .map(
            |i| match d.engine.submit(Some(format!("nap-{i}")), nap.clone()).unwrap() {
                SubmitOutcome::Created(id) => id,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    // At most 2 slots are ever held.
    let ns = "inmemoryresourcemanager:sleep-quota:slots";
    let mut max_in_use = 0;
    while ids.iter().any(|id| !d.engine.get(id).unwrap().phase.is_terminal()) {
        max_in_use = max_in_use.max(d.resources.in_use(ns));
        assert!(start.elapsed() < Duration::from_secs(30), "naps did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!((1..=2).contains(&max_in_use), "{max_in_use}");
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "5 naps of 0.2 s in 2 slots"
    );
    for id in &ids {
        let v = wait(&d.engine, id, Duration::from_secs(1));
        assert_eq!(v.phase, ExecPhase::Succeeded, "{v:#?}");
        let out = d.engine.outputs(id).unwrap().unwrap();
        assert!(out.contains_key("slept_seconds"));
    }
    assert_eq!(d.resources.in_use(ns), 0);
    assert_eq!(
        d.engine.stats().leaked_tokens_released_total,
        0,
        "sleep-quota releases in finalize"
    );

    let hello = match d.engine.submit(None, task("examples/shell-hello.json")).unwrap() {
        SubmitOutcome::Created(id) => id,
        other => panic!("{other:?}"),
    };
    let v = wait(&d.engine, &hello, Duration::from_secs(30));
    assert_eq!(v.phase, ExecPhase::Succeeded, "{v:#?}");
    let out = d.engine.outputs(&hello).unwrap().unwrap();
    match &out["stdout"] {
        Literal::String(s) => assert!(s.starts_with("hello, world, from kozmo's shell plugin"), "{s}"),
        other => panic!("{other:?}"),
    }

    let fail = d
        .engine
        .submit(Some("fail".into()), task("examples/shell-fail.json"))
        .unwrap();
    assert_eq!(fail, SubmitOutcome::Created("fail".into()));
    assert_eq!(
        wait(&d.engine, "fail", Duration::from_secs(30)).phase,
        ExecPhase::Failed
    );
}

#[test]
fn executions_of_one_task_share_its_template_but_each_sees_its_own_inputs() {
    let d = daemon();
    // Same template and metadata (one shared parsed copy), other inputs.
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let mut echo = task("examples/echo.json");
            echo.inputs.insert("count".into(), Literal::Integer(i));
            match d.engine.submit(Some(format!("echo-{i}")), echo).unwrap() {
                SubmitOutcome::Created(id) => id,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(wait(&d.engine, id, Duration::from_secs(10)).phase, ExecPhase::Succeeded);
        let out = d.engine.outputs(id).unwrap().unwrap();
        assert_eq!(out["count"], Literal::Integer(i as i64), "{id}: {out:?}");
        assert_eq!(out["greeting"], Literal::String("hello, kozmo".into()));
    }
    // Resubmitting one of them is idempotent (the spec JSON it is compared
    // with is joined from the same two parts).
    let mut again = task("examples/echo.json");
    again.inputs.insert("count".into(), Literal::Integer(1));
    assert_eq!(
        d.engine.submit(Some("echo-1".into()), again).unwrap(),
        SubmitOutcome::Existing("echo-1".into())
    );
}
