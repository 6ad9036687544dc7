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
    // nothing of it lands.
    s.commit(&mut [terminal("a")]).unwrap();
    let mut tx = s.begin().unwrap().unwrap();
    tx.insert(&new("c", "{}")).unwrap();
    assert!(tx.apply(&terminal("a")).is_err());
    assert!(tx.commit().is_err());
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
