//! Retention's store contract, on both stores, and the SQLite specifics
//! (every owned table emptied for the pruned ids, space given back, the
//! migration to version 5).

use kozmo_interface::literals::LiteralMap;
use kozmo_interface::{ErrorKind, ExecutionError, Literal};

use super::*;
use crate::model::{event_kind, EventBody, EventRow, ExecState, TaskState};

fn new(id: &str, at: i64) -> NewExecution {
    NewExecution {
        id: id.into(),
        client_id: true,
        spec_json: format!("{{\"id\":\"{id}\"}}"),
        task_type: "t".into(),
        created_at_ms: at,
        state: ExecState::new(at),
        plugin_id: Some("p".into()),
    }
}

fn row(kind: &'static str) -> EventRow {
    EventRow {
        kind,
        attempt: 0,
        phase: "PhaseRunning".into(),
        version: 1,
        occurred_at_ms: 2,
        reported_at_ms: 3,
        body: EventBody::Text(r#"{"k":1}"#.into()),
    }
}

/// Moves `id` to `phase` at `at` with a task state, outputs, an error
/// document and events (a terminal one if `phase` is terminal).
fn finish(s: &dyn Store, id: &str, phase: ExecPhase, at: i64) {
    let mut state = ExecState::new(at);
    state.phase = phase;
    let mut outputs = LiteralMap::new();
    outputs.insert("x".into(), Literal::Integer(1));
    let mut events = vec![row(event_kind::TASK), row(event_kind::TASK)];
    if phase.is_terminal() {
        events.push(row(event_kind::TERMINAL));
    }
    s.commit(&mut [RoundCommit {
        task: Some((0, TaskState::default())),
        events,
        outputs: Some((0, outputs)),
        error_document: Some((
            0,
            ErrorDocument {
                error: ExecutionError::new("e", "m", ErrorKind::User),
                recoverable: false,
            },
        )),
        ..RoundCommit::state_only(id, state)
    }])
    .unwrap();
}

/// What every store does: ages per phase, the count limit, active never.
fn contract(s: &dyn Store) {
    for (i, (id, phase, at)) in [
        ("old-ok", ExecPhase::Succeeded, 100),
        ("old-failed", ExecPhase::Failed, 110),
        ("old-running", ExecPhase::Running, 120),
        ("new-ok", ExecPhase::Succeeded, 1000),
        ("new-aborted", ExecPhase::Aborted, 1010),
    ]
    .into_iter()
    .enumerate()
    {
        s.insert_execution(&new(id, i as i64)).unwrap();
        finish(s, id, phase, at);
    }
    s.catalog_put("cached", &LiteralMap::new()).unwrap();
    let by_age = PruneSelect {
        before_ms: vec![(ExecPhase::Succeeded, 500), (ExecPhase::Failed, 50)],
        keep_at_most: None,
        limit: 10,
    };
    let ids = |c: Vec<PruneCandidate>| c.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.prune_candidates(&by_age).unwrap()),
        vec!["old-ok"],
        "failures kept longer; the running one never"
    );
    let by_count = PruneSelect {
        keep_at_most: Some(2),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(s.prune_candidates(&by_count).unwrap()),
        vec!["old-ok", "old-failed"],
        "the two most recently finished stay"
    );
    assert_eq!(
        ids(s
            .prune_candidates(&PruneSelect {
                limit: 1,
                ..by_count.clone()
            })
            .unwrap()),
        vec!["old-ok"],
        "a batch at a time"
    );
    let keeping = |n: u64| {
        ids(s
            .prune_candidates(&PruneSelect {
                keep_at_most: Some(n),
                limit: 10,
                ..Default::default()
            })
            .unwrap())
    };
    assert_eq!(keeping(3), vec!["old-ok"], "the oldest kept is the third newest");
    assert_eq!(
        keeping(0),
        vec!["old-ok", "old-failed", "new-ok", "new-aborted"],
        "keep none: every terminal one, oldest first"
    );
    assert!(s
        .prune_candidates(&PruneSelect {
            keep_at_most: Some(4),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .is_empty());
    assert_eq!(s.oldest_terminal().unwrap(), Some(100));
    let (gone, rows) = s
        .delete_executions(&["old-ok".into(), "old-running".into(), "nope".into()])
        .unwrap();
    assert_eq!(gone, vec!["old-ok"], "an active execution is never deleted");
    assert_eq!(
        (
            rows.executions,
            rows.specs,
            rows.task_states,
            rows.events,
            rows.outputs,
            rows.error_documents
        ),
        (1, 1, 1, 3, 1, 1)
    );
    assert!(s.get_execution("old-ok").unwrap().is_none());
    assert!(s.events("old-ok").unwrap().is_empty());
    assert_eq!(s.outputs("old-ok", 0).unwrap(), None);
    assert_eq!(s.error_document("old-ok", 0).unwrap(), None);
    assert_eq!(
        s.get_execution("old-running").unwrap().unwrap().state.phase,
        ExecPhase::Running
    );
    assert_eq!(s.events("new-ok").unwrap().len(), 3, "the others keep everything");
    assert_eq!(s.oldest_terminal().unwrap(), Some(110));
    assert_eq!(s.count_by_phase().unwrap().get(&ExecPhase::Succeeded), Some(&1));
    assert_eq!(
        s.list_executions(None, 10, None).unwrap().len(),
        4,
        "listing no longer shows it"
    );
    // The catalog entry was written after every execution was created:
    // someone still stored may have written it.
    assert_eq!(s.prune_catalog(10).unwrap(), 0);
    assert!(s.catalog_get("cached").unwrap().is_some());
    let rest: Vec<String> = ["old-failed", "new-ok", "new-aborted"].map(String::from).to_vec();
    assert_eq!(s.delete_executions(&rest).unwrap().0.len(), 3);
    assert_eq!(s.oldest_terminal().unwrap(), None);
    assert_eq!(
        s.prune_catalog(10).unwrap(),
        0,
        "the running execution was created before the entry"
    );
    // An id pruned can be submitted again: it is a new execution.
    assert_eq!(s.insert_execution(&new("old-ok", 5)).unwrap(), InsertOutcome::Created);
}

#[test]
fn memory_store_prunes_by_the_contract() {
    contract(&MemoryStore::new());
}

#[test]
fn sqlite_store_prunes_by_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&SqliteStore::open_in(dir.path()).unwrap());
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
        let mut ne = new(&id, i);
        ne.spec_json = format!("{{\"pad\":\"{big}\"}}");
        s.insert_execution(&ne).unwrap();
        finish(&s, &id, ExecPhase::Succeeded, 10 + i);
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
    assert_eq!(s.schema_version().unwrap(), 5);
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
