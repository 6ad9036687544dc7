//! Several daemons on one database, at the store: the node id's lock,
//! claims of executions nobody holds, fencing of a node that lost its
//! lease, abort requests across nodes, a clean leave.

use std::time::{Duration, Instant};

use kozmo_engine::model::{event_kind, ExecPhase, ExecState, RoundCommit};
use kozmo_engine::store::contract::{new, row};
use kozmo_engine::store::{Cluster, NodeInfo, Store};
use kozmo_testkit::postgres::PgServer;

use crate::{NodeSpec, PostgresStore, NODE_LOCK_WAIT};

fn node(url: &str, id: &str, lease_ms: u64, types: Option<&[&str]>) -> PostgresStore {
    let s = PostgresStore::open(url).unwrap();
    let spec = NodeSpec {
        node_id: id.into(),
        lease: Duration::from_millis(lease_ms),
        task_types: types.map(|t| t.iter().map(|x| x.to_string()).collect()),
    };
    let info = NodeInfo {
        plugins_json: r#"[{"id":"p","task_types":["t"]}]"#.into(),
        version: "test".into(),
        address: None,
    };
    s.join_cluster(spec, &info).unwrap();
    s
}

fn running(id: &str) -> RoundCommit {
    let mut st = ExecState::new(1);
    st.phase = ExecPhase::Running;
    RoundCommit {
        events: vec![row(event_kind::TASK)],
        ..RoundCommit::state_only(id, st)
    }
}

fn done(id: &str) -> RoundCommit {
    let mut st = ExecState::new(1);
    st.phase = ExecPhase::Succeeded;
    RoundCommit {
        events: vec![row(event_kind::TERMINAL)],
        ..RoundCommit::state_only(id, st)
    }
}

fn ids(recs: Vec<kozmo_engine::model::ExecutionRecord>) -> Vec<String> {
    let mut v: Vec<String> = recs.into_iter().map(|r| r.id).collect();
    v.sort();
    v
}

#[test]
fn a_node_id_runs_once_per_database() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    let _first = node(&url, "n1", 10_000, None);
    let second = PostgresStore::open(&url).unwrap();
    let started = Instant::now();
    let spec = NodeSpec {
        node_id: "n1".into(),
        lease: Duration::from_secs(10),
        task_types: None,
    };
    let e = second.join_cluster(spec, &NodeInfo::default()).unwrap_err();
    assert!(
        e.0.contains("another kozmo daemon runs as node n1 on the database at postgres://kozmo:***@"),
        "{e}"
    );
    assert!(!e.0.contains(pg.password()), "{e}");
    assert!(started.elapsed() >= NODE_LOCK_WAIT, "it waited for a killed one to go");
    // Another id joins.
    let _n2 = node(&url, "n2", 10_000, None);
    let names: Vec<String> = _n2.nodes().unwrap().into_iter().map(|n| n.node_id).collect();
    assert_eq!(names, ["n1", "n2"]);
}

#[test]
fn a_node_that_lost_its_lease_cannot_commit_and_the_new_owner_goes_on() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    let a = node(&url, "a", 1_000, None);
    let b = node(&url, "b", 60_000, None);
    a.insert_execution(&new("x", "{}")).unwrap();
    a.commit(&mut [running("x")]).unwrap();
    assert!(b.claim(10).unwrap().is_empty(), "a's lease holds: x is a's");
    assert_eq!(b.nodes().unwrap()[0].executions, 1);

    // a falls silent past its lease: b claims x under generation 2.
    std::thread::sleep(Duration::from_millis(1_300));
    assert_eq!(ids(b.claim(10).unwrap()), ["x"]);
    // a's heartbeat takes its lease again and finds x gone.
    let beat = a.heartbeat(&NodeInfo::default()).unwrap();
    assert_eq!(beat.lost, ["x"]);
    // A step a ran meanwhile is refused, and named for the engine to drop.
    let e = a.commit(&mut [running("x")]).unwrap_err();
    assert!(e.0.contains("held by another node"), "{e}");
    assert_eq!(a.take_fenced(), ["x"]);
    assert!(a.take_fenced().is_empty(), "taken once");
    a.forget(&["x".to_string()]);
    // What a node asks before releasing tokens nobody else would: which
    // executions ended (not those it does not know).
    let asked = ["x", "y", "gone"].map(String::from);
    let ended = |s: &PostgresStore| {
        let mut v = s.ended_of(&asked).unwrap();
        v.sort();
        v
    };
    assert!(ended(&a).is_empty(), "x still runs; y and gone have no rows");
    a.insert_execution(&new("y", "{}")).unwrap();
    b.commit(&mut [done("x")]).unwrap();
    assert_eq!(ended(&a), ["x"]);
    assert!(a.ended_of(&[]).unwrap().is_empty());

    // Every event says who wrote it: a under 1, then b under 2, never a again.
    let writers = pg.psql(
        "kozmo",
        "SELECT string_agg(node_id || ':' || lease_generation, ' ' ORDER BY seq) FROM events WHERE execution_id = 'x'",
    );
    assert_eq!(writers, "a:1 b:2");
}

#[test]
fn a_lease_that_ran_out_unclaimed_waits_for_the_heartbeat() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    let a = node(&url, "a", 1_000, None);
    a.insert_execution(&new("x", "{}")).unwrap();
    std::thread::sleep(Duration::from_millis(1_300));
    let e = a.commit(&mut [running("x")]).unwrap_err();
    assert!(e.0.contains("lease ran out"), "{e}");
    assert!(a.take_fenced().is_empty(), "nobody else holds x");
    let beat = a.heartbeat(&NodeInfo::default()).unwrap();
    assert!(beat.lost.is_empty());
    a.commit(&mut [running("x")]).unwrap();
}

#[test]
fn claims_follow_task_types_leaves_and_aborts_reach_the_owner() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    let a = node(&url, "a", 60_000, Some(&["t"]));
    let other = node(&url, "other", 60_000, Some(&["u"]));
    // A submission to a node without the plugin is nobody's until one with
    // it claims it.
    other.insert_execution(&new("y", "{}")).unwrap();
    assert!(other.claim(10).unwrap().is_empty(), "other does not serve t");
    assert_eq!(ids(a.claim(10).unwrap()), ["y"]);
    // An abort through another node reaches the owner's heartbeat.
    assert!(other.request_abort("y", "stop it").unwrap());
    let beat = a.heartbeat(&NodeInfo::default()).unwrap();
    assert_eq!(beat.aborts, [("y".to_string(), "stop it".to_string())]);
    // A clean stop gives y back at once.
    a.leave().unwrap();
    let b = node(&url, "b", 60_000, None);
    assert_eq!(ids(b.claim(10).unwrap()), ["y"]);
    let alive: Vec<(String, bool)> = b.nodes().unwrap().into_iter().map(|n| (n.node_id, n.alive)).collect();
    assert_eq!(alive, [("a".into(), false), ("b".into(), true), ("other".into(), true)]);
}

#[test]
fn a_restarted_node_starts_with_its_own_executions() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    {
        let a = node(&url, "a", 60_000, None);
        a.insert_execution(&new("x", "{}")).unwrap();
        a.insert_execution(&new("z", "{}")).unwrap();
        a.commit(&mut [done("z")]).unwrap();
        // Killed: no leave.
    }
    let a = node(&url, "a", 60_000, None);
    assert_eq!(ids(a.load_active().unwrap()), ["x"]);
    a.commit(&mut [running("x")]).unwrap();
    assert_eq!(
        pg.psql("kozmo", "SELECT lease_generation FROM executions WHERE id = 'x'"),
        "2"
    );
}
