//! The SQLite store against the store contracts of `kozmo-engine`, and what
//! only SQLite has: reopening, all-or-nothing transactions, migrations,
//! retention's row-by-row deletes and the space they give back.

use kozmo_interface::literals::LiteralMap;

use kozmo_engine::model::{event_kind, ExecPhase, ExecState, RoundCommit};
use kozmo_engine::store::contract::{new, row};
use kozmo_engine::store::{contract, contract_prune, CrashVictim, InsertOutcome, MemoryStore, PruneSelect, Store};

use crate::migrations;
use crate::{Durability, SqliteStore};

#[test]
fn processes_opening_a_new_file_at_once_migrate_it_once() {
    // A CLI or test opening the file while the daemon creates it: each
    // re-reads the version under the write lock, none applies a
    // migration twice ("table executions already exists").
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kozmo.db");
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteStore::open(&path, Durability::Normal).map(|s| s.schema_version()))
            })
            .collect();
        for o in openers {
            let version = o.join().unwrap().unwrap().unwrap();
            assert_eq!(version as usize, migrations::MIGRATIONS.len());
        }
    }
}

#[test]
fn sqlite_store_keeps_the_contract_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SqliteStore::open_in(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap() as usize, migrations::MIGRATIONS.len());
        contract::contract(&s);
    }
    let s = SqliteStore::open_in(dir.path()).unwrap();
    assert_eq!(
        s.schema_version().unwrap() as usize,
        migrations::MIGRATIONS.len(),
        "migrations run once"
    );
    assert_eq!(s.get_execution("a").unwrap().unwrap().state.phase, ExecPhase::Succeeded);
    // A second terminal event for one execution is refused.
    let dup = RoundCommit {
        events: vec![row(event_kind::TERMINAL)],
        ..RoundCommit::state_only("a", s.get_execution("a").unwrap().unwrap().state)
    };
    assert!(s.commit(&mut [dup]).is_err());
}

#[test]
fn sqlite_write_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open_in(dir.path()).unwrap();
    s.insert_execution(&new("a", "{}")).unwrap();
    let terminal = || RoundCommit {
        events: vec![row(event_kind::TERMINAL)],
        ..RoundCommit::state_only("a", ExecState::new(2))
    };
    s.commit(&mut [terminal()]).unwrap();
    // A second terminal event is refused: the new execution written in
    // the same transaction must not exist afterwards.
    assert!(s.write(&[new("b", "{}")], &mut [terminal()]).is_err());
    assert!(s.get_execution("b").unwrap().is_none());
    assert_eq!(
        s.write(&[new("b", "{}"), new("a", "{\"x\":1}")], &mut []).unwrap(),
        vec![InsertOutcome::Created, InsertOutcome::Exists { spec_json: "{}".into() }]
    );
}

#[test]
fn sqlite_transactions_apply_as_they_go_and_vanish_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open_in(dir.path()).unwrap();
    let mut running = ExecState::new(2);
    running.phase = ExecPhase::Running;
    {
        let mut tx = s.begin().unwrap().expect("SQLite streams its group commits");
        assert_eq!(tx.insert(&new("a", "{}")).unwrap(), InsertOutcome::Created);
        tx.apply(&RoundCommit::state_only("a", running.clone())).unwrap();
        // Dropped without commit: rolled back.
    }
    assert!(s.get_execution("a").unwrap().is_none());
    let mut tx = s.begin().unwrap().unwrap();
    tx.insert(&new("a", "{}")).unwrap();
    tx.apply(&RoundCommit::state_only("a", running.clone())).unwrap();
    tx.commit().unwrap();
    assert_eq!(s.get_execution("a").unwrap().unwrap().state, running);
    assert!(s.commit_cost() > std::time::Duration::ZERO, "the sync was timed");
    assert!(
        MemoryStore::new().begin().unwrap().is_none(),
        "the memory store takes batches"
    );
}

#[test]
fn sqlite_moves_specs_of_a_version_1_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kozmo.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(migrations::MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO executions VALUES ('old', 1, '{\"s\":1}', 't', 1, 'Running', 0, 0, 1, 1, NULL, NULL, \
             0, NULL, NULL)",
            [],
        )
        .unwrap();
    }
    let s = SqliteStore::open_in(dir.path()).unwrap();
    assert_eq!(s.schema_version().unwrap() as usize, migrations::MIGRATIONS.len());
    let rec = s.get_execution("old").unwrap().unwrap();
    assert_eq!(rec.spec_json, "{\"s\":1}");
    assert_eq!(rec.plugin_id, None, "older rows are not bound: routed by task type");
    assert_eq!(rec.state.phase, ExecPhase::Running);
    assert_eq!(s.load_active().unwrap().len(), 1);
}

#[test]
fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open_in(dir.path()).unwrap());
    let c = rusqlite::Connection::open(dir.path().join("kozmo.db")).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = SqliteStore::open_in(dir.path()).err().unwrap();
    assert!(e.0.contains("newer"), "{e}");
}

#[test]
fn sqlite_store_prunes_by_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract_prune::contract(&SqliteStore::open_in(dir.path()).unwrap());
}

fn count(c: &rusqlite::Connection, table: &str, id: &str) -> i64 {
    c.query_row(
        &format!("SELECT COUNT(*) FROM {table} WHERE execution_id = ?1"),
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn sqlite_deletes_every_owned_row_and_gives_the_pages_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open_in(dir.path()).unwrap();
    let big = "x".repeat(4000);
    let n = 300;
    for i in 0..n {
        let id = format!("e{i:04}");
        let mut ne = contract_prune::new(&id, i);
        ne.spec_json = format!("{{\"pad\":\"{big}\"}}");
        s.insert_execution(&ne).unwrap();
        contract_prune::finish(&s, &id, ExecPhase::Succeeded, 10 + i);
    }
    s.count_crashes(
        &[CrashVictim {
            execution_id: "e0000".into(),
            call: "handle".into(),
        }],
        1,
    )
    .unwrap();
    let c = rusqlite::Connection::open(dir.path().join("kozmo.db")).unwrap();
    let tables = [
        "execution_specs",
        "task_states",
        "events",
        "outputs",
        "error_documents",
        "plugin_crashes",
    ];
    assert_eq!(count(&c, "plugin_crashes", "e0000"), 1);
    c.execute("INSERT INTO catalog VALUES ('ancient', '{}', -1)", [])
        .unwrap();
    s.catalog_put("fresh", &LiteralMap::new()).unwrap();
    let pages = |c: &rusqlite::Connection| -> i64 { c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap() };
    let before = pages(&c);
    let mut removed = Vec::new();
    loop {
        let cands = s
            .prune_candidates(&PruneSelect {
                keep_at_most: Some(10),
                limit: 50,
                ..Default::default()
            })
            .unwrap();
        if cands.is_empty() {
            break;
        }
        let ids: Vec<String> = cands.into_iter().map(|c| c.id).collect();
        removed.extend(s.delete_executions(&ids).unwrap().0);
    }
    assert_eq!(removed.len() as i64, n - 10);
    for id in &removed {
        let e: i64 = c
            .query_row("SELECT COUNT(*) FROM executions WHERE id = ?1", [id], |r| r.get(0))
            .unwrap();
        assert_eq!(e, 0, "{id}");
        for t in tables {
            assert_eq!(count(&c, t, id), 0, "{t} of {id}");
        }
    }
    for i in n - 10..n {
        let id = format!("e{i:04}");
        assert_eq!(count(&c, "events", &id), 3, "kept: {id}");
        assert_eq!(count(&c, "execution_specs", &id), 1, "kept: {id}");
    }
    assert_eq!(s.prune_catalog(10).unwrap(), 1, "written before every execution left");
    assert!(s.catalog_get("ancient").unwrap().is_none());
    assert!(s.catalog_get("fresh").unwrap().is_some());
    let mut reclaimed = 0;
    loop {
        let b = s.reclaim_space(64).unwrap();
        if b == 0 {
            break;
        }
        reclaimed += b;
    }
    assert!(reclaimed > 1_000_000, "about 4 KB per pruned spec: {reclaimed}");
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    assert_eq!(free, 0);
    assert!(pages(&c) < before / 2, "{} pages of {before}", pages(&c));
}

#[test]
fn a_version_4_database_moves_to_incremental_auto_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kozmo.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        for sql in &migrations::MIGRATIONS[..4] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 4).unwrap();
        c.execute(
            "INSERT INTO executions VALUES ('old', 1, 't', 1, 'Succeeded', 0, 0, 1, 1, NULL, NULL, 0, NULL, NULL, 'p')",
            [],
        )
        .unwrap();
        c.execute("INSERT INTO execution_specs VALUES ('old', '{}')", [])
            .unwrap();
        let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 0, "SQLite's default: none");
    }
    let s = SqliteStore::open_in(dir.path()).unwrap();
    assert_eq!(s.schema_version().unwrap() as usize, migrations::MIGRATIONS.len());
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, 2, "INCREMENTAL after the migration's VACUUM");
    assert_eq!(
        s.get_execution("old").unwrap().unwrap().state.phase,
        ExecPhase::Succeeded
    );
    assert_eq!(s.oldest_terminal().unwrap(), Some(1));
    drop(s);
    let fresh = tempfile::tempdir().unwrap();
    drop(SqliteStore::open_in(fresh.path()).unwrap());
    let c = rusqlite::Connection::open(fresh.path().join("kozmo.db")).unwrap();
    let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, 2, "a new database too");
}

/// A delete interrupted between tables (its statements are not wrapped in
/// a savepoint) leaves the execution row, deleted last: the execution is
/// still selected, spec or not, and the next delete removes the rest.
#[test]
fn an_execution_left_half_deleted_is_selected_again_and_finished() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open_in(dir.path()).unwrap();
    for (i, id) in ["half", "whole"].iter().enumerate() {
        s.insert_execution(&contract_prune::new(id, i as i64)).unwrap();
        contract_prune::finish(&s, id, ExecPhase::Succeeded, 10 + i as i64);
    }
    let c = rusqlite::Connection::open(dir.path().join("kozmo.db")).unwrap();
    // What a delete that failed after its first tables leaves.
    c.execute("DELETE FROM execution_specs WHERE execution_id = 'half'", [])
        .unwrap();
    c.execute("DELETE FROM task_states WHERE execution_id = 'half'", [])
        .unwrap();
    let sel = PruneSelect {
        keep_at_most: Some(0),
        limit: 10,
        ..Default::default()
    };
    let cands = s.prune_candidates(&sel).unwrap();
    let ids: Vec<&str> = cands.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["half", "whole"]);
    assert_eq!(cands[0].spec_json, "{}", "no spec left: an empty one");
    let ids: Vec<String> = cands.into_iter().map(|c| c.id).collect();
    let (gone, rows) = s.delete_executions(&ids).unwrap();
    assert_eq!(gone, ids);
    assert_eq!(
        (rows.executions, rows.specs, rows.task_states, rows.events),
        (2, 1, 1, 6)
    );
    for t in ["execution_specs", "task_states", "events", "outputs"] {
        assert_eq!(count(&c, t, "half"), 0, "{t}");
    }
    assert!(s.prune_candidates(&sel).unwrap().is_empty());
}

/// Retention deleting the newest events must not let later events take
/// their seqs, not even after a restart (a watcher resuming from one of
/// them would skip the new ones): the floor is stored with the delete.
#[test]
fn event_seqs_deleted_by_retention_are_not_handed_out_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let handed_out = {
        let s = SqliteStore::open_in(dir.path()).unwrap();
        s.insert_execution(&contract_prune::new("first", 0)).unwrap();
        contract_prune::finish(&s, "first", ExecPhase::Succeeded, 10);
        let handed_out = s.last_event_seq().unwrap();
        assert_eq!(s.delete_executions(&["first".into()]).unwrap().0, ["first"]);
        assert_eq!(s.last_event_seq().unwrap(), 0, "no event left");
        handed_out
    };
    let s = SqliteStore::open_in(dir.path()).unwrap();
    s.insert_execution(&contract_prune::new("second", 1)).unwrap();
    contract_prune::finish(&s, "second", ExecPhase::Succeeded, 20);
    let seqs: Vec<i64> = s.events("second").unwrap().iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=3).map(|i| handed_out + i).collect();
    assert_eq!(seqs, expected, "numbered on from the deleted ones, in order");
    // Events appended outside a step follow them.
    s.append_events("second", &[row(event_kind::TASK)]).unwrap();
    assert_eq!(s.last_event_seq().unwrap(), handed_out + 4);
}
