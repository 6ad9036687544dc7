//! The PostgreSQL store against the store contracts of `kozmo-engine`, on a
//! real server started for each test (`kozmo_testkit::postgres`), and what
//! only PostgreSQL has: openers racing to migrate, transactions that fail
//! midway, reopening, a server restart, errors that hide the password.

use kozmo_engine::model::{event_kind, ExecPhase, ExecState, RoundCommit};
use kozmo_engine::store::contract::{new, row};
use kozmo_engine::store::{contract, contract_prune, InsertOutcome, Store};
use kozmo_testkit::postgres::PgServer;

use crate::{PostgresStore, MIGRATIONS};

fn terminal(id: &str) -> RoundCommit {
    let mut done = ExecState::new(2);
    done.phase = ExecPhase::Succeeded;
    RoundCommit {
        events: vec![row(event_kind::TERMINAL)],
        ..RoundCommit::state_only(id, done)
    }
}

#[test]
fn postgres_store_keeps_the_contract_and_survives_reopen() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    {
        let s = PostgresStore::open(&url).unwrap();
        assert_eq!(s.schema_version().unwrap() as usize, MIGRATIONS.len());
        contract::contract(&s);
    }
    let s = PostgresStore::open(&url).unwrap();
    assert_eq!(
        s.schema_version().unwrap() as usize,
        MIGRATIONS.len(),
        "migrations run once"
    );
    assert_eq!(
        pg.psql("kozmo", "SELECT COUNT(*) FROM kozmo_schema_migrations"),
        MIGRATIONS.len().to_string()
    );
    assert_eq!(s.get_execution("a").unwrap().unwrap().state.phase, ExecPhase::Succeeded);
    // A second terminal event for one execution is refused.
    let dup = RoundCommit {
        events: vec![row(event_kind::TERMINAL)],
        ..RoundCommit::state_only("a", s.get_execution("a").unwrap().unwrap().state)
    };
    let e = s.commit(&mut [dup]).unwrap_err();
    assert!(e.0.contains("events_one_terminal"), "{e}");
    assert_eq!(s.events("a").unwrap().len(), 2, "nothing of the refused commit");
}

#[test]
fn postgres_store_prunes_by_the_contract() {
    let pg = PgServer::start();
    contract_prune::contract(&PostgresStore::open(&pg.url("kozmo")).unwrap());
}

#[test]
fn openers_migrating_a_new_database_at_once_apply_each_migration_once() {
    let pg = PgServer::start();
    for round in 0..5 {
        let url = pg.createdb(&format!("race{round}"));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || PostgresStore::open(&url).and_then(|s| s.schema_version()))
            })
            .collect();
        for o in openers {
            assert_eq!(o.join().unwrap().unwrap() as usize, MIGRATIONS.len());
        }
        assert_eq!(
            pg.psql(
                &format!("race{round}"),
                "SELECT string_agg(version::text, ',' ORDER BY version) FROM kozmo_schema_migrations"
            ),
            (1..=MIGRATIONS.len())
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
}

#[test]
fn postgres_write_is_all_or_nothing() {
    let pg = PgServer::start();
    let s = PostgresStore::open(&pg.url("kozmo")).unwrap();
    s.insert_execution(&new("a", "{}")).unwrap();
    s.commit(&mut [terminal("a")]).unwrap();
    // A second terminal event fails the transaction midway: the new
    // execution written before it in the same transaction must not exist.
    assert!(s.write(&[new("b", "{}")], &mut [terminal("a")]).is_err());
    assert!(s.get_execution("b").unwrap().is_none());
    assert_eq!(
        s.write(&[new("b", "{}"), new("a", "{\"x\":1}")], &mut []).unwrap(),
        vec![InsertOutcome::Created, InsertOutcome::Exists { spec_json: "{}".into() }]
    );
    // The failed transaction's connection went back to the pool usable.
    for _ in 0..crate::POOL_SIZE + 2 {
        assert!(s.get_execution("b").unwrap().is_some());
    }
}

#[test]
fn postgres_transactions_apply_as_they_go_and_vanish_when_dropped() {
    let pg = PgServer::start();
    let s = PostgresStore::open(&pg.url("kozmo")).unwrap();
    let mut running = ExecState::new(2);
    running.phase = ExecPhase::Running;
    {
        let mut tx = s.begin().unwrap().expect("PostgreSQL streams its group commits");
        assert_eq!(tx.insert(&new("a", "{}")).unwrap(), InsertOutcome::Created);
        tx.apply(&RoundCommit::state_only("a", running.clone())).unwrap();
        assert!(s.get_execution("a").unwrap().is_none(), "not visible before COMMIT");
        // Dropped without commit: rolled back.
    }
    assert!(s.get_execution("a").unwrap().is_none());
    let mut tx = s.begin().unwrap().unwrap();
    tx.insert(&new("a", "{}")).unwrap();
    tx.apply(&RoundCommit::state_only("a", running.clone())).unwrap();
    tx.commit().unwrap();
    assert_eq!(s.get_execution("a").unwrap().unwrap().state, running);
    assert!(s.commit_cost() > std::time::Duration::ZERO, "the commit was timed");

    // A statement failing midway poisons the transaction: its commit is
    // refused (PostgreSQL would answer ROLLBACK without an error) and
    // nothing of it lands. (Step results are sent in batches: the failure
    // shows at `apply` or at the latest at `commit`.)
    s.commit(&mut [terminal("a")]).unwrap();
    let mut tx = s.begin().unwrap().unwrap();
    tx.insert(&new("c", "{}")).unwrap();
    let _ = tx.apply(&terminal("a"));
    assert!(tx.commit().is_err());
    assert!(s.get_execution("c").unwrap().is_none());
    let mut tx = s.begin().unwrap().unwrap();
    tx.insert(&new("c", "{}")).unwrap();
    let _ = tx.apply(&terminal("a"));
    assert!(tx.insert(&new("c2", "{}")).is_err() || tx.commit().is_err());
    assert!(s.get_execution("c").unwrap().is_none());

    // A failed prune inside the group commit is undone by itself (its
    // savepoint) and the rest of the transaction commits.
    let mut tx = s.begin().unwrap().unwrap();
    tx.insert(&new("d", "{}")).unwrap();
    let (gone, rows) = tx.delete_terminal(&["a".into(), "d".into()]).unwrap();
    assert_eq!((gone, rows.events), (vec!["a".to_string()], 1), "d is active");
    tx.commit().unwrap();
    assert!(s.get_execution("a").unwrap().is_none());
    assert!(s.get_execution("d").unwrap().is_some());
}

#[test]
fn postgres_refuses_a_newer_schema() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    drop(PostgresStore::open(&url).unwrap());
    pg.psql(
        "kozmo",
        "INSERT INTO kozmo_schema_migrations (version, description) VALUES (99, 'from the future')",
    );
    let e = PostgresStore::open(&url).err().unwrap();
    assert!(e.0.contains("newer"), "{e}");
}

#[test]
fn everything_survives_a_server_crash_and_restart() {
    let mut pg = PgServer::start();
    {
        let s = PostgresStore::open(&pg.url("kozmo")).unwrap();
        for i in 0..50 {
            s.insert_execution(&new(&format!("e{i:02}"), "{}")).unwrap();
        }
        s.commit(&mut [terminal("e07")]).unwrap();
    }
    pg.stop(); // immediate: no checkpoint, recovery from the WAL
    pg.run();
    let s = PostgresStore::open(&pg.url("kozmo")).unwrap();
    assert_eq!(s.list_executions(None, 100, None).unwrap().len(), 50);
    assert_eq!(s.load_active().unwrap().len(), 49);
    assert_eq!(s.events("e07").unwrap().len(), 1);
}

#[test]
fn a_store_rides_out_a_server_restart() {
    let mut pg = PgServer::start();
    let s = PostgresStore::open(&pg.url("kozmo")).unwrap();
    s.insert_execution(&new("a", "{}")).unwrap();
    pg.stop();
    assert!(s.get_execution("a").is_err(), "the server is down");
    pg.run();
    // Pooled connections to the old server are found broken and replaced.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match s.get_execution("a") {
            Ok(r) => {
                assert!(r.is_some());
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
    }
    s.insert_execution(&new("b", "{}")).unwrap();
}

#[test]
fn errors_name_the_target_without_its_password() {
    let pg = PgServer::start();
    let secret = pg.password().to_string();
    let refused = format!("postgres://kozmo:{secret}@127.0.0.1:1/kozmo");
    let wrong = format!("postgres://kozmo:{secret}x@127.0.0.1:{}/kozmo", pg.port());
    let no_db = pg.url("nope");
    let bad = format!("postgres://kozmo:{secret}@127.0.0.1:notaport/kozmo");
    for (url, says) in [
        (
            &refused,
            "cannot connect to PostgreSQL at postgres://kozmo:***@127.0.0.1:1/kozmo",
        ),
        (&wrong, "password authentication failed"),
        (&no_db, "does not exist"),
        (&bad, "invalid postgres://kozmo:***@"),
    ] {
        let e = PostgresStore::open(url).err().unwrap().to_string();
        assert!(e.contains(says), "{e}");
        assert!(!e.contains(&secret), "the password leaked: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    let s = PostgresStore::open(&pg.url("kozmo")).unwrap();
    assert!(!s.target().contains(&secret));
}

/// Step results of every shape, several per execution, in one
/// transaction: what the batched statements write must be exactly what
/// the memory store (the reference) keeps, row by row.
#[test]
fn batched_step_results_read_back_as_the_memory_store_keeps_them() {
    use kozmo_engine::model::{ErrorDocument, Finishing, TaskState, TokenRow};
    use kozmo_engine::store::MemoryStore;
    use kozmo_interface::literals::LiteralMap;
    use kozmo_interface::{ErrorKind, ExecutionError, Literal, Phase};

    let pg = PgServer::start();
    let s = PostgresStore::open(&pg.url("kozmo")).unwrap();
    let m = MemoryStore::new();
    let n = crate::pg_txn::FLUSH_AT + 44;
    let ids: Vec<String> = (0..n).map(|i| format!("x{i:04}")).collect();
    let news: Vec<_> = ids.iter().map(|id| new(id, "{\"s\":1}")).collect();
    s.insert_executions(&news).unwrap();
    m.insert_executions(&news).unwrap();
    for id in ids.iter().step_by(5) {
        s.request_abort(id, "stop").unwrap();
        m.request_abort(id, "stop").unwrap();
    }
    let commit = |i: usize, round: u32| {
        let id = &ids[i];
        let mut state = ExecState::new(10 + i as i64);
        state.phase = if round == 1 && i.is_multiple_of(4) {
            ExecPhase::Succeeded
        } else {
            ExecPhase::Running
        };
        state.attempt = round;
        state.handler_errors = (i % 3) as u32;
        if i.is_multiple_of(6) {
            state.error = Some(Box::new(ExecutionError::new("c", format!("m{i}"), ErrorKind::User)));
        }
        if i.is_multiple_of(7) && round == 0 {
            state.phase = ExecPhase::Aborting;
            state.finishing = Some(Box::new(Finishing {
                call_abort: true,
                reason: format!("r{i}"),
                ..Default::default()
            }));
        }
        let mut c = RoundCommit::state_only(id, state.clone());
        c.task = (i.is_multiple_of(2)).then(|| {
            (
                round,
                TaskState {
                    plugin_phase: Phase::RUNNING,
                    plugin_phase_version: i as u32,
                    plugin_state: (!i.is_multiple_of(4)).then(|| vec![i as u8, round as u8, 0, 255]),
                    plugin_state_version: 1,
                    cleanup_on_failure: i.is_multiple_of(3),
                    last_phase_updated_at_ms: 7,
                },
            )
        });
        c.events = vec![row(event_kind::TASK); i % 3];
        if state.phase == ExecPhase::Succeeded {
            c.events.push(row(event_kind::TERMINAL));
        }
        if i.is_multiple_of(3) {
            let mut o = LiteralMap::new();
            o.insert("i".into(), Literal::Integer(i as i64));
            c.outputs = Some((round, o));
        }
        if i.is_multiple_of(17) {
            c.error_document = Some((
                round,
                ErrorDocument {
                    error: ExecutionError::new("e", "m", ErrorKind::System),
                    recoverable: true,
                },
            ));
        }
        if i.is_multiple_of(23) && round == 0 {
            c.tokens_granted = vec![TokenRow {
                namespace: "ns".into(),
                token: format!("t{i}"),
                execution_id: id.clone(),
                attempt: 0,
            }];
        }
        if i.is_multiple_of(46) && round == 1 {
            c.tokens_released = vec![("ns".into(), format!("t{i}"))];
        }
        c.clear_abort = i.is_multiple_of(10);
        c
    };
    // Round 0 for all, then round 1 for all, in one transaction: the
    // second step of an execution sends the first batch before it.
    let mut all: Vec<RoundCommit> = (0..2)
        .flat_map(|r| (0..n).map(move |i| (i, r)))
        .map(|(i, r)| commit(i, r))
        .collect();
    let mut tx = s.begin().unwrap().unwrap();
    for c in &all {
        tx.apply(c).unwrap();
    }
    tx.commit().unwrap();
    m.commit(&mut all).unwrap();
    for id in &ids {
        let (a, b) = (
            s.get_execution(id).unwrap().unwrap(),
            m.get_execution(id).unwrap().unwrap(),
        );
        assert_eq!(a, b, "{id}");
        let events = |st: &dyn Store| -> Vec<_> { st.events(id).unwrap().into_iter().map(|e| e.event).collect() };
        assert_eq!(events(&s), events(&m), "{id}");
        for attempt in 0..2 {
            assert_eq!(s.outputs(id, attempt).unwrap(), m.outputs(id, attempt).unwrap(), "{id}");
            assert_eq!(
                s.error_document(id, attempt).unwrap(),
                m.error_document(id, attempt).unwrap(),
                "{id}"
            );
        }
    }
    assert_eq!(s.tokens().unwrap(), m.tokens().unwrap());
    assert_eq!(s.count_by_phase().unwrap(), m.count_by_phase().unwrap());
    assert_eq!(
        s.list_executions(None, 1000, None).unwrap(),
        m.list_executions(None, 1000, None).unwrap()
    );
}

#[test]
fn inserting_many_reports_each_as_one_by_one_would() {
    use kozmo_engine::store::MemoryStore;
    let pg = PgServer::start();
    let s = PostgresStore::open(&pg.url("kozmo")).unwrap();
    let m = MemoryStore::new();
    let first = [new("a", "{\"a\":1}"), new("b", "{\"b\":1}")];
    let then = [new("c", "{}"), new("a", "{\"a\":2}"), new("d", "{}"), new("b", "{}")];
    let repeated = [new("e", "{\"e\":1}"), new("e", "{\"e\":2}"), new("a", "{}")];
    for batch in [&first[..], &then[..], &repeated[..]] {
        assert_eq!(s.insert_executions(batch).unwrap(), m.insert_executions(batch).unwrap());
    }
    assert_eq!(
        s.insert_executions(&repeated).unwrap(),
        vec![
            InsertOutcome::Exists {
                spec_json: "{\"e\":1}".into()
            },
            InsertOutcome::Exists {
                spec_json: "{\"e\":1}".into()
            },
            InsertOutcome::Exists {
                spec_json: "{\"a\":1}".into()
            },
        ]
    );
    assert_eq!(
        s.list_executions(None, 10, None).unwrap(),
        m.list_executions(None, 10, None).unwrap()
    );
}
