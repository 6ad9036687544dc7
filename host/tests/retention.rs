//! Retention through the engine with the real loader, the bundled echo and
//! shell plugins and a real SQLite file: pruned executions are gone from
//! every table and from the data store; active and recent ones stay
//! untouched; pruning during a load of submissions loses nothing and
//! doubles nothing.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_engine::model::{now_ms, ExecPhase, ExecutionSpec};
use kozmo_engine::resources::{ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::retention::pruner::Retention;
use kozmo_engine::retention::RetentionConfig;
use kozmo_engine::secrets::HostSecrets;
use kozmo_engine::store::{PruneSelect, Store};
use kozmo_engine::{Engine, EngineConfig, EngineHandle, LateEnqueueOwner, SubmitOutcome};
use kozmo_host::loader::{load_directory, LoaderConfig, LoaderServices};
use kozmo_host::metrics::Metrics;
use kozmo_store_sqlite::SqliteStore;
use serde_json::json;

struct Daemon {
    dir: tempfile::TempDir,
    engine: EngineHandle,
}

impl Daemon {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data-dir")
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data().join("kozmo.db")).unwrap()
    }
}

fn daemon() -> Daemon {
    let libs = kozmo_testkit::build_plugins(&["kozmo-plugin-echo", "kozmo-plugin-shell"]);
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
    let loaded = load_directory(&LoaderConfig::new(&plugins), &services).unwrap_or_else(|r| panic!("{r:?}"));
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
        builder.build() as Arc<dyn ResourceBackend>,
    )
    .unwrap();
    owner.bind(&engine);
    Daemon { dir, engine }
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

fn submit(engine: &EngineHandle, spec: ExecutionSpec) -> String {
    match engine.submit(None, spec).unwrap() {
        SubmitOutcome::Created(id) => id,
        other => panic!("{other:?}"),
    }
}

fn wait_terminal(engine: &EngineHandle, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in ids {
        while !engine.get(id).unwrap().phase.is_terminal() {
            assert!(Instant::now() < deadline, "{id} did not finish: {:#?}", engine.get(id));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Rows per owned table of `id`.
fn rows(c: &rusqlite::Connection, id: &str) -> BTreeMap<&'static str, i64> {
    let mut m = BTreeMap::new();
    let e: i64 = c
        .query_row("SELECT COUNT(*) FROM executions WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    m.insert("executions", e);
    for t in [
        "execution_specs",
        "task_states",
        "events",
        "outputs",
        "error_documents",
        "plugin_crashes",
        "resource_tokens",
    ] {
        let n: i64 = c
            .query_row(
                &format!("SELECT COUNT(*) FROM {t} WHERE execution_id = ?1"),
                [id],
                |r| r.get(0),
            )
            .unwrap();
        m.insert(t, n);
    }
    m
}

/// Every file and directory under `dir` whose path mentions one of the
/// data store locations of `d`'s execution `id`.
fn blobs(d: &Daemon, id: &str) -> Vec<PathBuf> {
    let cand = d
        .engine
        .prune_candidates(&PruneSelect {
            keep_at_most: Some(0),
            limit: 100_000,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .find(|c| c.id == id);
    match cand {
        Some(c) => d.engine.blob_dirs(&c),
        None => Vec::new(),
    }
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn pruned_executions_leave_no_row_and_no_file_and_the_others_stay() {
    let d = daemon();
    let old: Vec<String> = vec![
        submit(&d.engine, task("examples/shell-hello.json")),
        submit(&d.engine, task("examples/shell-fail.json")),
        submit(&d.engine, task("examples/echo.json")),
    ];
    wait_terminal(&d.engine, &old);
    assert_eq!(d.engine.get(&old[1]).unwrap().phase, ExecPhase::Failed);
    std::thread::sleep(Duration::from_millis(300));
    let cutoff = now_ms();
    std::thread::sleep(Duration::from_millis(300));
    let recent = vec![
        submit(&d.engine, task("examples/shell-hello.json")),
        submit(&d.engine, task("examples/echo.json")),
    ];
    wait_terminal(&d.engine, &recent);
    let mut sleepy = task("examples/shell-sleep.json");
    sleepy
        .inputs
        .insert("seconds".into(), kozmo_interface::Literal::Integer(60));
    let active = submit(&d.engine, sleepy);
    let started = Instant::now();
    while d.engine.get(&active).unwrap().phase != ExecPhase::Running {
        assert!(started.elapsed() < Duration::from_secs(60), "the sleeper never ran");
        std::thread::sleep(Duration::from_millis(10));
    }

    let c = d.db();
    let before: BTreeMap<String, BTreeMap<&str, i64>> = old
        .iter()
        .chain(&recent)
        .chain(std::iter::once(&active))
        .map(|id| (id.clone(), rows(&c, id)))
        .collect();
    let old_blobs: Vec<PathBuf> = old.iter().flat_map(|id| blobs(&d, id)).collect();
    let recent_blobs: Vec<PathBuf> = recent.iter().flat_map(|id| blobs(&d, id)).collect();
    for id in &old {
        let b = &before[id];
        assert!(
            b["execution_specs"] == 1 && b["task_states"] >= 1 && b["events"] >= 2,
            "{id}: {b:?}"
        );
    }
    assert_eq!(
        old.iter().map(|id| before[id]["outputs"]).sum::<i64>(),
        2,
        "the two that succeeded have outputs"
    );
    assert!(
        old_blobs.iter().any(|p| p.to_string_lossy().contains("/raw/")),
        "shell tasks leave raw output directories: {old_blobs:?}"
    );
    assert!(
        old_blobs.iter().any(|p| files_under(p) > 0),
        "and files in them: {old_blobs:?}"
    );
    assert!(
        old_blobs.iter().any(|p| std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name() == "shell")),
        "the shell plugin's working directory is there: {old_blobs:?}"
    );

    let retention = Retention::start(
        d.engine.clone(),
        RetentionConfig {
            interval: "forever".into(),
            ..Default::default()
        }
        .policy()
        .unwrap(),
        None,
    );
    let dry = retention
        .run_pass(Some(Duration::from_millis((now_ms() - cutoff) as u64)), true)
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.executions, 3, "{dry:?}");
    assert!(dry.blob_bytes > 0);
    assert_eq!(rows(&c, &old[0]), before[&old[0]], "a dry run removes nothing");

    let report = retention
        .run_pass(Some(Duration::from_millis((now_ms() - cutoff) as u64)), false)
        .unwrap();
    assert_eq!(report.executions, 3, "{report:?}");
    let mut ids = report.ids.clone();
    ids.sort();
    let mut want = old.clone();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(report.rows.executions, 3);
    assert_eq!(
        report.rows.events as i64,
        old.iter().map(|id| before[id]["events"]).sum::<i64>(),
        "{report:?}"
    );
    assert_eq!(report.blob_dirs as usize, old_blobs.len());
    assert_eq!(report.blob_bytes, dry.blob_bytes);
    assert!(report.oldest_kept_ms.is_some_and(|t| t >= cutoff), "{report:?}");
    for id in &old {
        assert!(rows(&c, id).values().all(|n| *n == 0), "{id}: {:?}", rows(&c, id));
        assert!(d.engine.get(id).is_err(), "{id} is gone from the API too");
    }
    for p in &old_blobs {
        assert!(!p.exists(), "{} is gone", p.display());
    }
    for id in recent.iter().chain(std::iter::once(&active)) {
        assert_eq!(rows(&c, id), before[id], "{id} untouched");
    }
    for p in &recent_blobs {
        assert!(p.exists(), "{} stays", p.display());
    }
    let orphans: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM events WHERE execution_id NOT IN (SELECT id FROM executions)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);

    // Everything terminal, however recent, with a zero age: the sleeper stays.
    let all = retention.run_pass(Some(Duration::ZERO), false).unwrap();
    assert_eq!(all.executions, 2, "{all:?}");
    assert_eq!(rows(&c, &active), before[&active], "active: never touched");
    assert_eq!(d.engine.get(&active).unwrap().phase, ExecPhase::Running);
    d.engine.abort(&active, "test over").unwrap();
    wait_terminal(&d.engine, std::slice::from_ref(&active));
    retention.stop();
    d.engine.shutdown(Duration::from_secs(10));
}

#[test]
fn pruning_during_a_load_of_submissions_loses_nothing_and_doubles_nothing() {
    let d = daemon();
    let echo = task("examples/echo.json");
    let retention = Retention::start(
        d.engine.clone(),
        RetentionConfig {
            keep: "0s".into(),
            interval: "forever".into(),
            batch: 25,
            ..Default::default()
        }
        .policy()
        .unwrap(),
        None,
    );
    let done = Arc::new(AtomicBool::new(false));
    let pruned = Arc::new(AtomicU64::new(0));
    let pruner = {
        let (r, done, pruned) = (retention.clone(), done.clone(), pruned.clone());
        std::thread::spawn(move || {
            let mut passes = 0;
            while !done.load(Ordering::SeqCst) || passes == 0 {
                let rep = r.run_pass(None, false).unwrap();
                pruned.fetch_add(rep.executions, Ordering::SeqCst);
                passes += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            passes
        })
    };
    let submitters: Vec<_> = (0..4)
        .map(|t| {
            let (engine, echo) = (d.engine.clone(), echo.clone());
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for b in 0..15 {
                    let batch: Vec<(Option<String>, ExecutionSpec)> = (0..20)
                        .map(|i| {
                            let mut s = echo.clone();
                            s.inputs.insert(
                                "count".into(),
                                kozmo_interface::Literal::Integer((t * 1000 + b * 20 + i) as i64),
                            );
                            (None, s)
                        })
                        .collect();
                    for r in engine.submit_batch(batch) {
                        match r.unwrap() {
                            SubmitOutcome::Created(id) => ids.push(id),
                            other => panic!("{other:?}"),
                        }
                    }
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = submitters.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "every submission got its own id");
    // Everything finishes (a pruned execution was terminal: the store
    // deletes only terminal rows).
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.engine.stats().active > 0 {
        assert!(Instant::now() < deadline, "{:?}", d.engine.stats().executions_by_phase);
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    let passes = pruner.join().unwrap();
    assert!(passes >= 1);
    let rep = retention.run_pass(None, false).unwrap();
    pruned.fetch_add(rep.executions, Ordering::SeqCst);
    let c = d.db();
    let left: i64 = c
        .query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "keep = 0s: every terminal execution went");
    assert_eq!(
        pruned.load(Ordering::SeqCst),
        ids.len() as u64,
        "each execution was pruned exactly once, none was lost before"
    );
    for t in ["events", "task_states", "outputs", "execution_specs", "error_documents"] {
        let n: i64 = c
            .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{t}: nothing written after its execution was pruned");
    }
    retention.stop();
    d.engine.shutdown(Duration::from_secs(10));
}

#[test]
fn pruning_during_a_load_keeps_the_newest_with_one_terminal_event_each() {
    let d = daemon();
    let echo = task("examples/echo.json");
    let retention = Retention::start(
        d.engine.clone(),
        RetentionConfig {
            keep: "forever".into(),
            max_executions: Some(50),
            interval: "forever".into(),
            batch: 10,
            ..Default::default()
        }
        .policy()
        .unwrap(),
        None,
    );
    let done = Arc::new(AtomicBool::new(false));
    let pruner = {
        let (r, done) = (retention.clone(), done.clone());
        std::thread::spawn(move || {
            let mut total = 0;
            while !done.load(Ordering::SeqCst) {
                total += r.run_pass(None, false).unwrap().executions;
                std::thread::sleep(Duration::from_millis(5));
            }
            total
        })
    };
    let mut ids = Vec::new();
    for b in 0..20 {
        let batch: Vec<(Option<String>, ExecutionSpec)> = (0..20)
            .map(|i| (Some(format!("load-{b:02}-{i:02}")), echo.clone()))
            .collect();
        for r in d.engine.submit_batch(batch) {
            match r.unwrap() {
                SubmitOutcome::Created(id) => ids.push(id),
                other => panic!("{other:?}"),
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.engine.stats().active > 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    let mut pruned = pruner.join().unwrap();
    pruned += retention.run_pass(None, false).unwrap().executions;
    let c = d.db();
    let left: i64 = c
        .query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 50, "at most 50 kept");
    assert_eq!(pruned + left as u64, ids.len() as u64, "nothing lost, nothing twice");
    let per_exec: Vec<(String, i64)> = {
        let mut st = c
            .prepare(
                "SELECT e.id, (SELECT COUNT(*) FROM events v WHERE v.execution_id = e.id AND v.kind = 'terminal') \
                 FROM executions e",
            )
            .unwrap();
        let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        r.collect::<rusqlite::Result<_>>().unwrap()
    };
    assert_eq!(per_exec.len(), 50);
    for (id, n) in &per_exec {
        assert_eq!(*n, 1, "{id}: exactly one terminal event");
        assert_eq!(d.engine.get(id).unwrap().phase, ExecPhase::Succeeded);
    }
    let orphans: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM events WHERE execution_id NOT IN (SELECT id FROM executions)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "no event of a pruned execution was written after it");
    // Resubmitting a pruned id makes a new execution (its id was forgotten).
    let pruned_id = ids.iter().find(|id| d.engine.get(id).is_err()).unwrap().clone();
    assert!(matches!(
        d.engine.submit(Some(pruned_id), echo).unwrap(),
        SubmitOutcome::Created(_)
    ));
    retention.stop();
    d.engine.shutdown(Duration::from_secs(10));
}

#[test]
fn a_background_pass_keeps_the_pages_it_freed_and_the_next_idle_pass_gives_them_back() {
    let d = daemon();
    let echo = task("examples/echo.json");
    let policy = |max| {
        RetentionConfig {
            keep: "forever".into(),
            max_executions: Some(max),
            interval: "forever".into(),
            batch: 100,
            ..Default::default()
        }
        .policy()
        .unwrap()
    };
    let batch: Vec<(Option<String>, ExecutionSpec)> = (0..600)
        .map(|i| (Some(format!("space-{i:03}")), echo.clone()))
        .collect();
    let ids: Vec<String> = d
        .engine
        .submit_batch(batch)
        .into_iter()
        .map(|r| match r.unwrap() {
            SubmitOutcome::Created(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    wait_terminal(&d.engine, &ids);
    let free = || d.engine.store_space().unwrap().free_bytes;
    // The database file itself: the pages given back leave it at the next
    // checkpoint (the daemon's checkpointer runs every 50 ms).
    let file = || std::fs::metadata(d.data().join("kozmo.db")).unwrap().len();
    assert_eq!(free(), 0, "nothing deleted yet");

    // Under load (a pass that deletes), the pages it freed stay for the
    // executions that will fill them again.
    let retention = Retention::start(d.engine.clone(), policy(100), None);
    let first = retention.background_pass().unwrap();
    assert_eq!(first.executions, 500, "{first:?}");
    assert_eq!(first.db_bytes_reclaimed, 0, "{first:?}");
    let kept = free();
    assert!(kept > 0, "the deletes freed pages");

    // The next pass finds nothing to delete: the load is over, they go back.
    let second = retention.background_pass().unwrap();
    assert_eq!(second.executions, 0, "{second:?}");
    assert_eq!(second.db_bytes_reclaimed, kept, "{second:?}");
    assert_eq!(free(), 0);
    retention.stop();

    // `kozmo prune` (a requested pass) gives back everything it freed at once.
    let before = file();
    let requested = Retention::start(d.engine.clone(), policy(10), None);
    let r = requested.run_pass(None, false).unwrap();
    assert_eq!(r.executions, 90, "{r:?}");
    assert!(r.db_bytes_reclaimed > 0, "{r:?}");
    assert_eq!(free(), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while file() >= before {
        assert!(
            Instant::now() < deadline,
            "the file did not shrink: {before} -> {}",
            file()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    requested.stop();
    d.engine.shutdown(Duration::from_secs(10));
}
