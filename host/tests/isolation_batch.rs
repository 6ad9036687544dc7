//! Batches of isolated calls: several `handle` calls in one batch frame
//! each keep their own context and their own result, and a child that dies
//! during a batch fails every call of it still in flight with
//! `PluginProcessDied`; in the engine those rounds run again alone, so
//! only the cause fails, and no round is lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_engine::model::{ExecPhase, ExecutionSpec};
use kozmo_engine::resources::{ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::store::MemoryStore;
use kozmo_engine::BatchHandler;
use kozmo_engine::{Engine, EngineConfig};
use kozmo_host::isolation::plugin::{isolated_core, OnlyPlugin, DIED_CODE};
use kozmo_host::isolation::IsolationConfig;
use kozmo_host::loader::{self, LoaderConfig, LoaderServices};
use kozmo_interface::testing::TestTaskContext;
use kozmo_interface::{Literal, Phase, Plugin, TaskExecutionContext};

fn hostile_library() -> PathBuf {
    kozmo_testkit::build_plugins(&["kozmo-fixture-hostile"]).remove(0)
}

/// The hostile plugin, isolated (quick restarts).
fn isolated_hostile(lib: &Path) -> Arc<dyn Plugin> {
    let config = LoaderConfig {
        plugins_dir: lib.parent().unwrap().to_path_buf(),
        isolation: IsolationConfig {
            plugins: vec!["hostile".into()],
            host_exe: Some(env!("CARGO_BIN_EXE_kozmo").into()),
            restart_backoff: Duration::from_millis(20),
            max_restart_backoff: Duration::from_millis(100),
            ..IsolationConfig::default()
        },
        ..LoaderConfig::default()
    };
    let loaded = loader::check_files(&[lib.to_path_buf()], &config, &LoaderServices::offline("in tests"))
        .unwrap_or_else(|r| panic!("{r}"));
    loaded.get("hostile").expect("hostile loaded").plugin.clone()
}

fn ctx(action: &str, n: i64) -> TestTaskContext {
    TestTaskContext::new()
        .with_input("do", Literal::String(action.into()))
        .with_input("n", Literal::Integer(n))
}

#[test]
fn each_call_of_a_batch_has_its_own_context_and_a_panic_fails_only_its_own() {
    let plugin = isolated_hostile(&hostile_library());
    let batch = isolated_core(&*plugin).expect("an isolated plugin batches");
    let ctxs: Vec<TestTaskContext> = (0..6).map(|n| ctx(if n == 3 { "panic" } else { "ok" }, n)).collect();
    let dyns: Vec<&dyn TaskExecutionContext> = ctxs.iter().map(|c| c as &dyn TaskExecutionContext).collect();
    let out = batch.handle_batch(&dyns);
    let results = out.results;
    assert_eq!((results.len(), out.answered), (6, 6));
    for (n, (r, c)) in results.iter().zip(&ctxs).enumerate() {
        if n == 3 {
            let e = r.as_ref().expect_err("the panicking call fails");
            assert!(e.is_panic(), "{e}");
            assert!(c.outputs().is_none());
            continue;
        }
        let t = r.as_ref().unwrap_or_else(|e| panic!("call {n}: {e}"));
        assert_eq!(t.info().phase(), Phase::SUCCESS, "call {n}");
        // Its services (inputs read, outputs written) reached its own context.
        let outputs = c.outputs().expect("outputs written");
        assert_eq!(outputs["n"], Literal::Integer(n as i64), "call {n}");
    }
    // The same child serves the next batch: a panic does not kill it.
    let pid = plugin_pid(&*plugin);
    let again = batch.handle_batch(&dyns[..2]).results;
    assert!(again.iter().all(|r| r.is_ok()));
    assert_eq!(plugin_pid(&*plugin), pid);
}

fn plugin_pid(plugin: &dyn Plugin) -> Option<u32> {
    isolated_core(plugin).unwrap().supervisor().pid()
}

#[test]
fn a_child_that_dies_during_a_batch_fails_every_call_still_in_flight() {
    let plugin = isolated_hostile(&hostile_library());
    let batch = isolated_core(&*plugin).unwrap();
    let ctxs: Vec<TestTaskContext> = (0..6).map(|n| ctx(if n == 2 { "segfault" } else { "ok" }, n)).collect();
    let dyns: Vec<&dyn TaskExecutionContext> = ctxs.iter().map(|c| c as &dyn TaskExecutionContext).collect();
    let out = batch.handle_batch(&dyns);
    let results = out.results;
    assert_eq!(results.len(), 6);
    assert!(out.answered <= 2, "answered {}", out.answered);
    let died = |r: &kozmo_interface::Result<kozmo_interface::Transition>| {
        r.as_ref().is_ok_and(|t| {
            let info = t.info();
            info.phase() == Phase::RETRYABLE_FAILURE
                && info.err().is_some_and(|e| {
                    e.code == DIED_CODE
                        && e.message.contains("process died during handle of")
                        && e.message.contains("killed by signal 11")
                })
        })
    };
    // The calls before the crash may have been answered before it (their
    // answers are held back at most a millisecond); the crash and every
    // call after it fail alike.
    for (n, r) in results.iter().enumerate() {
        let ok = r.as_ref().is_ok_and(|t| t.info().phase() == Phase::SUCCESS);
        assert!(died(r) || (n < 2 && ok), "call {n}: {r:?}");
    }
    // The child is restarted and serves the next batch.
    let start = Instant::now();
    loop {
        let again = batch.handle_batch(&dyns[..2]).results;
        if again
            .iter()
            .all(|r| r.as_ref().is_ok_and(|t| t.info().phase() == Phase::SUCCESS))
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not restarted: {again:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn in_the_engine_a_crash_in_a_batch_fails_only_its_cause_and_loses_no_round() {
    let plugin = isolated_hostile(&hostile_library());
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        workers: 1,
        resync_interval: Duration::from_millis(5),
        max_resync_interval: Duration::from_millis(20),
        ..EngineConfig::default()
    };
    let resources = ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>;
    let engine = Engine::start(
        cfg,
        Arc::new(MemoryStore::new()),
        Arc::new(OnlyPlugin(plugin)),
        resources,
    )
    .unwrap();
    let spec = |action: &str, n: usize| -> ExecutionSpec {
        serde_json::from_value(serde_json::json!({
            "template": {"type": "hostile", "id": {"project": "b", "domain": "t", "name": "x", "version": "1"}},
            "inputs": {"do": action, "n": n, "ms": 300}
        }))
        .unwrap()
    };
    // The one worker sleeps in a call while the others are queued, so it
    // takes them in one batch, the crash among them.
    engine.submit(Some("first".into()), spec("sleep", 0)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let items: Vec<_> = (0..60)
        .map(|n| {
            (
                Some(format!("e{n:02}")),
                spec(if n == 20 { "segfault" } else { "ok" }, n),
            )
        })
        .collect();
    for r in engine.submit_batch(items) {
        r.unwrap();
    }
    let start = Instant::now();
    let views = loop {
        let views: Vec<_> = (0..60).map(|n| engine.get(&format!("e{n:02}")).unwrap()).collect();
        if views.iter().all(|v| v.phase.is_terminal()) {
            break views;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "not all terminal: {views:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for (n, v) in views.iter().enumerate() {
        let events = serde_json::to_string(&engine.events(&v.id).unwrap()).unwrap();
        if n == 20 {
            assert_eq!(v.phase, ExecPhase::Failed, "{v:?}");
            assert!(events.contains(DIED_CODE), "{events}");
            continue;
        }
        // Not retried: its round ran again alone, in the same attempt.
        assert_eq!(
            (v.phase, v.attempt, v.system_failures),
            (ExecPhase::Succeeded, 0, 0),
            "{v:?}"
        );
        assert!(!events.contains(DIED_CODE), "{n}: {events}");
        let outputs = engine.outputs(&v.id).unwrap().expect("outputs");
        assert_eq!(outputs["n"], Literal::Integer(n as i64));
    }
    engine.shutdown(Duration::from_secs(10));
}
