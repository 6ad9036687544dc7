//! A success and its catalog entry are one commit: they land together or
//! not at all, so no crash or failed write can leave one without the other.
//!
//! The store below refuses the first write that carries a success: the
//! first commit moving an execution to Succeeded and the first separate
//! catalog write, as a disk that is full for a moment (or a daemon dying at
//! that write) would. The engine retries the failed commit; a catalog entry
//! written by a call of its own (before this fix: `catalog_put` while
//! finishing the step) was lost, and the next run of the same task called
//! the plugin again instead of hitting the catalog.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_engine::model::ExecPhase;
use kozmo_engine::resources::{ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::store::Store;
use kozmo_engine::{Engine, EngineHandle};
use kozmo_store_sqlite::SqliteStore;
use serde_json::json;
use support::faulty_store::{FaultyStore, Write};
use support::spec;

fn cacheable() -> serde_json::Value {
    json!({
        "metadata": {"discoverable": true, "cache_version": "1"},
        "interface": {"outputs": {"x": {"type": "integer"}}},
        "inputs": {"x": 7},
        "custom": {"rounds": [{"phase": "Success", "echo_inputs": true}]}
    })
}

fn engine(data: &std::path::Path, store: Arc<dyn Store>) -> EngineHandle {
    Engine::start(
        support::test_config(data),
        store,
        Arc::new(support::Resolver(support::scripted())),
        ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>,
    )
    .unwrap()
}

fn wait_terminal(engine: &EngineHandle, id: &str) -> ExecPhase {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let phase = engine.get(id).unwrap().phase;
        if phase.is_terminal() {
            return phase;
        }
        assert!(Instant::now() < deadline, "{id} stuck in {phase:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_success_and_its_catalog_entry_land_together() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    {
        // Refuses the first write of a success and the first catalog write.
        let success_refused = Arc::new(AtomicBool::new(false));
        let catalog_refused = AtomicBool::new(false);
        let refused = success_refused.clone();
        let succeeds = |p: &ExecPhase| *p == ExecPhase::Succeeded;
        let store = Arc::new(FaultyStore::new(
            Box::new(SqliteStore::open_in(&db).unwrap()),
            move |w| match w {
                Write::Commit(batch) => {
                    batch.iter().any(|c| succeeds(&c.state.phase)) && !refused.swap(true, Ordering::SeqCst)
                }
                Write::TxnCommit(phases) => phases.iter().any(succeeds) && !refused.swap(true, Ordering::SeqCst),
                Write::CatalogPut => !catalog_refused.swap(true, Ordering::SeqCst),
                Write::Sync => false,
            },
        ));
        let first = engine(&dir.path().join("first"), store);
        first.submit(Some("first".into()), spec(cacheable())).unwrap();
        assert_eq!(wait_terminal(&first, "first"), ExecPhase::Succeeded);
        assert!(
            success_refused.load(Ordering::SeqCst),
            "the first success commit was refused and retried"
        );
        first.shutdown(Duration::from_secs(5));
    }
    // A later daemon on the same file: the same task is a catalog hit.
    let second = engine(&dir.path().join("second"), Arc::new(SqliteStore::open_in(&db).unwrap()));
    second.submit(Some("second".into()), spec(cacheable())).unwrap();
    assert_eq!(wait_terminal(&second, "second"), ExecPhase::Succeeded);
    let events = second.events("second").unwrap();
    assert_eq!(
        events[0].event.body["cache_status"], "CACHE_HIT",
        "the entry landed with the success: {:?}",
        events[0].event.body
    );
    assert_eq!(
        second.outputs("second").unwrap().unwrap()["x"],
        kozmo_interface::Literal::Integer(7)
    );
    second.shutdown(Duration::from_secs(5));
}
