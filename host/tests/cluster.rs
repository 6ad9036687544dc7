//! Three real `kozmo serve` daemons on one PostgreSQL store and one Redis
//! resource manager, both throw-away servers started here
//! (`kozmo_testkit::{postgres, redis}`): 3,000 executions (echo, and
//! sleep-quota with a quota of 2 across the cluster) submitted to all
//! three; one node SIGKILLed mid-run, another SIGSTOPped past its lease and
//! SIGCONTed. Every execution ends once, with exactly one terminal event;
//! no node commits for an execution after another claimed it (every event
//! records its node and fencing generation, checked in the store); the
//! quota, sampled in Redis throughout, is never exceeded and nothing stays
//! held. Then an execution submitted to one node is aborted through
//! another: its plugin's abort and finalize run once, on the owner. And a
//! token taken for an execution after it ended (what a node resumed past
//! its lease can do before its commit is refused) is released by a node;
//! one of a running execution is kept until its own Finalize.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_testkit::postgres::PgServer;
use kozmo_testkit::redis::RedisServer;
use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

const NAMESPACE: &str = "redisresourcemanager:sleep-quota:slots";
const TOTAL: usize = 3000;
/// Every `SLEEP_EVERY`th execution sleeps 0.2 s under the quota of 2.
const SLEEP_EVERY: usize = 50;
const LEASE_SECS: &str = "2";

fn body(i: usize) -> Value {
    if i.is_multiple_of(SLEEP_EVERY) {
        let mut b = read_json(&example("sleep-quota.json"));
        b["execution_id"] = json!(format!("s{i:04}"));
        b["inputs"]["seconds"] = json!(0.2);
        // The example's 1 m timeout counts from the attempt's start (here,
        // submission): on a loaded machine the last sleeps wait longer
        // than that for the quota (15 of 60 timed out in one CI run).
        b["metadata"]["timeout"] = json!("10m");
        b
    } else {
        let mut b = read_json(&example("echo.json"));
        b["execution_id"] = json!(format!("e{i:04}"));
        b
    }
}

/// Submits `range` in batches of 100, round-robin over `nodes`.
fn submit(nodes: &[&Daemon], range: std::ops::Range<usize>) {
    let ids: Vec<usize> = range.collect();
    for (k, chunk) in ids.chunks(100).enumerate() {
        let items: Vec<Value> = chunk.iter().map(|i| body(*i)).collect();
        let d = nodes[k % nodes.len()];
        let (status, answer) = d.client.post("/v1/executions:batch", &Value::Array(items)).unwrap();
        assert_eq!(status, 200, "{answer}");
        for item in answer["items"].as_array().unwrap() {
            assert!(matches!(item["status"].as_u64(), Some(201 | 200)), "{item}");
        }
    }
}

fn int(pg: &PgServer, sql: &str) -> i64 {
    pg.psql("kozmo", sql)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn three_nodes_finish_every_execution_once_through_a_kill_and_a_pause() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let store = pg.url("kozmo");
    let resources = format!("{}?prefix=ctest:", redis.url());
    let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let plugins = [
        "kozmo-plugin-echo",
        "kozmo-plugin-sleep-quota",
        "kozmo-fixture-scripted",
    ];
    let mut nodes: Vec<Daemon> = (0..3)
        .map(|i| {
            let id = format!("n{i}");
            let args = [
                "--node-id",
                &id,
                "--lease-secs",
                LEASE_SECS,
                "--resource-quota",
                "sleep-quota:slots=2",
                "--resync-interval-secs",
                "0.5",
            ];
            Daemon::start_with_env(
                roots[i].path(),
                &plugins,
                &args,
                &[("KOZMO_STORE", &store), ("KOZMO_RESOURCES", &resources)],
            )
        })
        .collect();

    // Sample the cluster-wide quota in Redis until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let max_held = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_held) = (stop.clone(), max_held.clone());
        let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::Acquire) {
                let held: usize = redis::cmd("HLEN")
                    .arg(format!("ctest:tokens:{NAMESPACE}"))
                    .query(&mut conn)
                    .unwrap();
                max_held.fetch_max(held, Ordering::AcqRel);
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        })
    };

    let start = Instant::now();
    submit(&[&nodes[0], &nodes[1], &nodes[2]], 0..TOTAL / 2);
    // n1 dies holding executions (its sleeps wait for the quota).
    let held_by_n1 = int(
        &pg,
        "SELECT COUNT(*) FROM executions WHERE owner = 'n1' AND phase NOT IN ('Succeeded', 'Failed', 'Aborted')",
    );
    nodes[1].signal("KILL");
    submit(&[&nodes[0], &nodes[2]], TOTAL / 2..TOTAL);
    // n2 pauses past its lease: n0 claims what it holds; when n2 goes on,
    // whatever step it had under way is refused.
    let n2 = nodes[2].child.as_ref().unwrap().id().to_string();
    let held_by_n2 = int(
        &pg,
        "SELECT COUNT(*) FROM executions WHERE owner = 'n2' AND phase NOT IN ('Succeeded', 'Failed', 'Aborted')",
    );
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &n2])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_secs(4));
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &n2])
        .status()
        .unwrap()
        .success());

    loop {
        let done = int(
            &pg,
            "SELECT COUNT(*) FROM executions WHERE phase IN ('Succeeded', 'Failed', 'Aborted')",
        );
        if done == TOTAL as i64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "{done} of {TOTAL} ended; logs:\nn0:\n{}\nn2:\n{}",
            nodes[0].log_text(),
            nodes[2].log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Release);
    let samples = sampler.join().unwrap();

    // Every execution ended once, Succeeded, with exactly one terminal event.
    assert_eq!(int(&pg, "SELECT COUNT(*) FROM executions"), TOTAL as i64);
    assert_eq!(
        int(&pg, "SELECT COUNT(*) FROM executions WHERE phase = 'Succeeded'"),
        TOTAL as i64,
        "{}\n{}",
        pg.psql("kozmo", "SELECT phase, COUNT(*) FROM executions GROUP BY phase"),
        pg.psql(
            "kozmo",
            "SELECT id, owner, attempt, system_failures, error FROM executions \
             WHERE phase <> 'Succeeded' ORDER BY id LIMIT 20"
        )
    );
    assert_eq!(
        int(&pg, "SELECT COUNT(*) FROM events WHERE kind = 'terminal'"),
        TOTAL as i64
    );
    assert_eq!(
        int(
            &pg,
            "SELECT COUNT(DISTINCT execution_id) FROM events WHERE kind = 'terminal'"
        ),
        TOTAL as i64
    );
    // No step of an execution committed under a generation older than one
    // already written: a node that lost an execution never wrote again.
    let stale = int(
        &pg,
        "SELECT COUNT(*) FROM (SELECT lease_generation, MAX(lease_generation) OVER (PARTITION BY execution_id \
         ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before FROM events \
         WHERE lease_generation IS NOT NULL) x WHERE lease_generation < before",
    );
    assert_eq!(stale, 0, "events committed after their node lost the execution");
    // One writer per generation.
    let shared = int(
        &pg,
        "SELECT COUNT(*) FROM (SELECT execution_id, lease_generation FROM events \
         WHERE lease_generation IS NOT NULL GROUP BY 1, 2 HAVING COUNT(DISTINCT node_id) > 1) x",
    );
    assert_eq!(shared, 0, "two nodes wrote under one generation");
    assert_eq!(
        int(
            &pg,
            "SELECT COUNT(*) FROM events WHERE node_id IS NULL AND kind <> 'slow_call'"
        ),
        0,
        "every step's events name their node"
    );
    let moved = int(
        &pg,
        "SELECT COUNT(*) FROM (SELECT execution_id FROM events GROUP BY 1 HAVING COUNT(DISTINCT node_id) > 1) x",
    );
    assert!(held_by_n1 > 0, "n1 held nothing when killed");
    assert!(moved > 0, "no execution changed node");

    // The quota held across the cluster, and nothing stays held.
    let max_held = max_held.load(Ordering::Acquire);
    assert!(max_held <= 2, "{max_held} slots held at once (quota 2)");
    assert!(max_held >= 1, "the sampler saw no slot held ({samples} samples)");
    // A step n2 had under way when paused may have taken a token after
    // the execution ended on n0: a node releases it within a lease period.
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let mut hlen = || -> usize {
        redis::cmd("HLEN")
            .arg(format!("ctest:tokens:{NAMESPACE}"))
            .query(&mut conn)
            .unwrap()
    };
    let drained = Instant::now();
    let mut left = hlen();
    while left > 0 && drained.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        left = hlen();
    }
    if left > 0 {
        let held: Vec<String> = redis::cmd("HGETALL")
            .arg(format!("ctest:tokens:{NAMESPACE}"))
            .query(&mut conn)
            .unwrap();
        let lines: Vec<String> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                let text = d.log_text();
                let mine: Vec<String> = text
                    .lines()
                    .filter(|l| {
                        held.iter()
                            .skip(1)
                            .step_by(2)
                            .any(|v| l.contains(v.split(':').next_back().unwrap()))
                    })
                    .map(|l| format!("n{i}: {l}"))
                    .collect();
                mine
            })
            .collect();
        panic!(
            "tokens left held: {held:?}\nwhat the nodes logged of them:\n{}",
            lines.join("\n")
        );
    }

    // The nodes as the API shows them: n1 dead, the others alive.
    let (status, list) = nodes[0].client.get("/v1/nodes").unwrap();
    assert_eq!(status, 200, "{list}");
    let alive: Vec<(String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_string(),
                n["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(alive, [("n0".into(), true), ("n1".into(), false), ("n2".into(), true)]);
    assert_eq!(list[0]["this_node"], true);
    assert!(list[0]["plugins"].to_string().contains("sleep-quota"), "{list}");
    let out = nodes[0].cli(&["nodes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(),
        [("n0*", "yes"), ("n1", "no"), ("n2", "yes")],
        "{text}"
    );

    let fenced: usize = nodes
        .iter()
        .map(|d| d.log_text().matches("another node holds it now").count())
        .sum();
    eprintln!(
        "{TOTAL} executions in {elapsed:?}: n1 held {held_by_n1} unfinished when killed, n2 {held_by_n2} when \
         paused; {moved} changed node; {fenced} steps refused by fencing; at most {max_held} slots held \
         ({samples} samples)"
    );

    // An execution submitted to n0 is aborted through n2.
    let mut task = json!({
        "type": "scripted",
        "id": {"project": "p", "domain": "d", "name": "forever", "version": "1"},
        "execution_id": "abort-me",
        "custom": {"rounds": [{"phase": "Running", "version": 1}]}
    });
    task["metadata"] = json!({"retries": 0});
    nodes[0].submit(&task);
    nodes[0].wait_phase("abort-me", |p| p == "Running", Duration::from_secs(30));
    assert_eq!(
        pg.psql("kozmo", "SELECT owner FROM executions WHERE id = 'abort-me'"),
        "n0"
    );
    let (status, v) = nodes[2]
        .client
        .post("/v1/executions/abort-me/abort", &json!({"reason": "through n2"}))
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let v = nodes[2].wait_terminal("abort-me");
    assert_eq!(v["phase"], "Aborted", "{v}");
    let calls = std::fs::read_to_string(nodes[0].data.join("data/executions/abort-me/calls.log")).unwrap();
    let count = |what: &str| calls.lines().filter(|l| l.starts_with(what)).count();
    assert_eq!((count("abort "), count("finalize ")), (1, 1), "{calls}");
    assert!(
        !nodes[2].data.join("data/executions/abort-me/calls.log").exists(),
        "n2 ran no call of it"
    );
    drop(nodes.remove(1));
}

#[test]
fn a_node_without_the_plugin_accepts_the_task_for_one_that_has_it() {
    let pg = PgServer::start();
    let store = pg.url("kozmo");
    let roots = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let env = [("KOZMO_STORE", store.as_str())];
    // No default plugin on either (echo would take every task type).
    let scripted_only = Daemon::start_with_env(roots[0].path(), &["kozmo-fixture-scripted"], &["--node-id", "a"], &env);
    let both = Daemon::start_with_env(
        roots[1].path(),
        &["kozmo-fixture-scripted", "kozmo-plugin-sleep-quota"],
        &["--node-id", "b"],
        &env,
    );
    // a learns b's task types at its next heartbeat.
    let mut nap = read_json(&example("sleep-quota.json"));
    nap["inputs"]["seconds"] = json!(0.1);
    let start = Instant::now();
    let id = loop {
        nap["execution_id"] = json!("nap");
        let (status, v) = scripted_only.client.post_any("/v1/executions", &nap).unwrap();
        if status == 201 {
            break v["id"].as_str().unwrap().to_string();
        }
        assert_eq!(status, 422, "{v}");
        assert!(start.elapsed() < Duration::from_secs(10), "a never accepted it: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let v = scripted_only.wait_terminal(&id);
    assert_eq!(v["phase"], "Succeeded", "{v}");
    assert_eq!(
        pg.psql(
            "kozmo",
            "SELECT string_agg(DISTINCT node_id, ',') FROM events WHERE execution_id = 'nap'"
        ),
        "b"
    );
    // A task type no node serves is still refused.
    let mut bad = read_json(&example("echo.json"));
    bad["type"] = json!("nobody-serves-this");
    let (status, v) = scripted_only.client.post_any("/v1/executions", &bad).unwrap();
    assert_eq!(status, 422, "{v}");
    drop(both);
}

#[test]
fn nodes_sharing_a_data_store_read_the_files_another_wrote() {
    let pg = PgServer::start();
    let store = pg.url("kozmo");
    let roots = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let shared = tempfile::tempdir().unwrap();
    let shared_dir = shared.path().to_str().unwrap();
    let env = [("KOZMO_STORE", store.as_str())];
    let a = Daemon::start_with_env(
        roots[0].path(),
        &["kozmo-plugin-shell"],
        &["--node-id", "a", "--data-store", shared_dir],
        &env,
    );
    let b = Daemon::start_with_env(
        roots[1].path(),
        &["kozmo-plugin-shell"],
        &["--node-id", "b", "--data-store", shared_dir],
        &env,
    );
    let mut task = read_json(&example("shell-hello.json"));
    task["execution_id"] = json!("hello");
    a.submit(&task);
    assert_eq!(a.wait_terminal("hello")["phase"], "Succeeded");
    // b reads the task's stdout, which a's shell plugin wrote.
    let url = format!(
        "{}/v1/executions/hello/file?path=raw/hello-n0-0/stdout",
        b.client.base()
    );
    let text = ureq::get(&url).call().unwrap().into_string().unwrap();
    assert!(text.starts_with("hello, world, from kozmo's shell plugin"), "{text}");
    assert!(shared.path().join("raw/hello-n0-0/stdout").is_file());
    assert!(
        !roots[0].path().join("data/data/raw").exists(),
        "nothing in a's own data dir"
    );
}

/// A node paused past its lease may go on with its round after the
/// execution's new owner finished it: the plugin's allocate reaches Redis,
/// the step's commit is refused, and nobody would release that token.
/// Here such late allocations are made directly: the one of an ended
/// execution is released within a few lease periods; the one of an active
/// execution stays until that execution's own Finalize releases it; the
/// one of an execution the store does not know (another cluster's on the
/// same prefix) stays.
#[test]
fn a_token_taken_after_its_execution_ended_is_released_and_others_are_kept() {
    use kozmo_engine::resources::{Allocation, ResourceBackend, TokenOwner};
    use kozmo_resources_redis::{RedisResources, REDIS_MANAGER_ID};

    let pg = PgServer::start();
    let redis = RedisServer::start();
    let store = pg.url("kozmo");
    let resources = format!("{}?prefix=stray:", redis.url());
    let root = tempfile::tempdir().unwrap();
    let node = Daemon::start_with_env(
        root.path(),
        &["kozmo-plugin-sleep-quota", "kozmo-fixture-scripted"],
        &[
            "--node-id",
            "n0",
            "--lease-secs",
            LEASE_SECS,
            "--resource-quota",
            "sleep-quota:slots=3",
        ],
        &[("KOZMO_STORE", &store), ("KOZMO_RESOURCES", &resources)],
    );
    let mut nap = read_json(&example("sleep-quota.json"));
    nap["execution_id"] = json!("ended");
    nap["inputs"]["seconds"] = json!(0.1);
    node.submit(&nap);
    assert_eq!(node.wait_terminal("ended")["phase"], "Succeeded");
    let forever = json!({
        "type": "scripted",
        "id": {"project": "p", "domain": "d", "name": "forever", "version": "1"},
        "execution_id": "active",
        "metadata": {"retries": 0},
        "custom": {"rounds": [{"phase": "Running", "version": 1}]}
    });
    node.submit(&forever);
    node.wait_phase("active", |p| p == "Running", Duration::from_secs(30));

    // The late allocations, as a fenced node's plugin would make them.
    let late = RedisResources::open(&resources, REDIS_MANAGER_ID, &Default::default()).unwrap();
    // "elsewhere" is in no store of this cluster: another cluster's, on the
    // same Redis prefix, which the sweep must leave alone.
    for id in ["ended", "active", "elsewhere"] {
        let owner = TokenOwner {
            execution_id: id.into(),
            attempt: 0,
        };
        let got = late
            .allocate(NAMESPACE, &format!("ex:p:d:{id}-late"), &[], &owner)
            .unwrap();
        assert_eq!(got, Allocation::Granted { new: true }, "{id}");
    }
    let holders = || -> Vec<String> {
        ["ended", "active", "elsewhere"]
            .iter()
            .flat_map(|id| late.held_by(id))
            .map(|t| t.1)
            .collect::<Vec<String>>()
    };
    let start = Instant::now();
    while holders().len() > 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the ended execution's token is still held: {:?}",
            holders()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(holders(), ["ex:p:d:active-late", "ex:p:d:elsewhere-late"]);
    assert!(
        node.log_text()
            .contains("execution ended has ended but still held resource token"),
        "{}",
        node.log_text()
    );
    // Two more lease periods: the active execution keeps its token.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(holders(), ["ex:p:d:active-late", "ex:p:d:elsewhere-late"]);

    // Its own Finalize releases it.
    let (status, v) = node
        .client
        .post("/v1/executions/active/abort", &json!({"reason": "done"}))
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(node.wait_terminal("active")["phase"], "Aborted");
    assert_eq!(holders(), ["ex:p:d:elsewhere-late"]);
    assert_eq!(late.in_use(NAMESPACE), 1);
}
