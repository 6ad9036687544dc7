//! Against a real server (`kozmo_testkit::redis::RedisServer`, one per
//! test): the engine's resource contract, quotas under concurrent
//! allocators on two backends ("nodes"), wake-ups across nodes, tokens
//! outliving their node, the key layout and prefixes, errors without the
//! password.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kozmo_engine::resources::{contract, Allocation, ResourceBackend, ScopeConstraint, TokenOwner};
use kozmo_testkit::redis::RedisServer;

use super::*;

fn owner(id: &str) -> TokenOwner {
    TokenOwner {
        execution_id: id.into(),
        attempt: 0,
    }
}

fn ns(name: &str) -> String {
    format!("{REDIS_MANAGER_ID}:plug:{name}")
}

fn open(server: &RedisServer, prefix: &str, quotas: &[(&str, i64)]) -> RedisResources {
    let quotas: BTreeMap<String, i64> = quotas.iter().map(|(n, q)| (ns(n), *q)).collect();
    RedisResources::open(&format!("{}?prefix={prefix}", server.url()), REDIS_MANAGER_ID, &quotas).unwrap()
}

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

#[test]
fn keeps_the_resource_contract() {
    let server = RedisServer::start();
    let n = AtomicUsize::new(0);
    let url = server.url();
    contract::run(REDIS_MANAGER_ID, &|quotas| {
        // A fresh prefix per backend: each check starts from an empty state.
        let prefix = format!("contract{}:", n.fetch_add(1, Ordering::Relaxed));
        Arc::new(RedisResources::open(&format!("{url}?prefix={prefix}"), REDIS_MANAGER_ID, &quotas).unwrap())
    });
}

/// Eight threads on two backends (two "nodes") allocate and release in one
/// namespace of quota 3, with a project cap of 2 on half of them: never
/// more than 3 holders at once (nor 2 of the capped project), checked both
/// by the holders themselves and by Redis.
#[test]
fn two_nodes_hammering_one_namespace_never_exceed_the_quota() {
    let server = RedisServer::start();
    let nodes: Vec<Arc<RedisResources>> = (0..2)
        .map(|_| Arc::new(open(&server, "hammer:", &[("q", 3)])))
        .collect();
    let holders = Arc::new(AtomicUsize::new(0));
    let capped = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(AtomicUsize::new(0));
    let q = ns("q");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let node = nodes[t % 2].clone();
            let (holders, capped, max_seen, grants, q) = (
                holders.clone(),
                capped.clone(),
                max_seen.clone(),
                grants.clone(),
                q.clone(),
            );
            std::thread::spawn(move || {
                let project = if t < 4 { "capped" } else { "free" };
                let constraints = if t < 4 {
                    vec![ScopeConstraint {
                        prefix: "ex:capped:".into(),
                        value: 2,
                    }]
                } else {
                    Vec::new()
                };
                let deadline = Instant::now() + Duration::from_secs(3);
                let mut i = 0;
                while Instant::now() < deadline {
                    i += 1;
                    let exec = format!("e{t}-{i}");
                    let token = format!("ex:{project}:dev:{exec}-t");
                    match node.allocate(&q, &token, &constraints, &owner(&exec)).unwrap() {
                        Allocation::Granted { new } => {
                            assert!(new);
                            let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                            max_seen.fetch_max(now, Ordering::SeqCst);
                            assert!(now <= 3, "{now} holders of a quota of 3");
                            if t < 4 {
                                let c = capped.fetch_add(1, Ordering::SeqCst) + 1;
                                assert!(c <= 2, "{c} holders in a project capped at 2");
                            }
                            assert!(node.in_use(&q) <= 3);
                            grants.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_micros(200));
                            if t < 4 {
                                capped.fetch_sub(1, Ordering::SeqCst);
                            }
                            holders.fetch_sub(1, Ordering::SeqCst);
                            assert!(node.release(&q, &token).unwrap());
                        }
                        Allocation::Exhausted => {}
                        Allocation::Never(m) => panic!("{m}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(grants.load(Ordering::SeqCst) > 20, "the test did allocate");
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        3,
        "the quota was reached (so it was tested)"
    );
    assert_eq!(nodes[0].in_use(&q), 0);
}

#[test]
fn a_release_on_one_node_wakes_the_waiters_of_another() {
    let server = RedisServer::start();
    let a = open(&server, "wake:", &[("q", 1)]);
    let b = open(&server, "wake:", &[("q", 1)]);
    let woken_a = Arc::new(Mutex::new(Vec::<String>::new()));
    let woken_b = Arc::new(Mutex::new(Vec::<String>::new()));
    let (wa, wb) = (woken_a.clone(), woken_b.clone());
    a.set_release_listener(Box::new(move |id| wa.lock().unwrap().push(id.into())));
    b.set_release_listener(Box::new(move |id| wb.lock().unwrap().push(id.into())));
    let q = ns("q");
    // Let b's subscriber subscribe before the release.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        a.allocate(&q, "ex:p:dev:x-t", &[], &owner("x")).unwrap(),
        Allocation::Granted { new: true }
    );
    assert_eq!(
        b.allocate(&q, "ex:p:dev:y-t", &[], &owner("y")).unwrap(),
        Allocation::Exhausted
    );
    assert!(a.release(&q, "ex:p:dev:x-t").unwrap());
    assert_eq!(
        *woken_a.lock().unwrap(),
        vec!["y".to_string()],
        "the releasing node at once"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while woken_b.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        *woken_b.lock().unwrap(),
        vec!["y".to_string()],
        "the other node through pub/sub"
    );
    // The releasing node does not wake its own waiters twice.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(woken_a.lock().unwrap().len(), 1);
}

#[test]
fn tokens_outlive_their_node_and_its_successor_releases_them() {
    let server = RedisServer::start();
    let q = ns("q");
    let a = open(&server, "loss:", &[("q", 1)]);
    let three = TokenOwner {
        execution_id: "x".into(),
        attempt: 3,
    };
    assert_eq!(
        a.allocate(&q, "ex:p:dev:x-t", &[], &three).unwrap(),
        Allocation::Granted { new: true }
    );
    drop(a); // node lost
    let b = open(&server, "loss:", &[("q", 1)]);
    assert_eq!(b.held_by("x"), vec![(q.clone(), "ex:p:dev:x-t".to_string(), 3)]);
    assert_eq!(
        b.allocate(&q, "ex:p:dev:z-t", &[], &owner("z")).unwrap(),
        Allocation::Exhausted,
        "the quota still counts the lost node's token"
    );
    // The new owner re-runs the round: the same token is granted, not new.
    assert_eq!(
        b.allocate(&q, "ex:p:dev:x-t", &[], &three).unwrap(),
        Allocation::Granted { new: false }
    );
    // Its Finalize releases what held_by lists.
    for (ns, tok, _) in b.held_by("x") {
        assert!(b.release(&ns, &tok).unwrap());
    }
    assert_eq!(b.in_use(&q), 0);
}

#[test]
fn keys_follow_the_documented_layout_and_prefixes_separate_clusters() {
    let server = RedisServer::start();
    let q = ns("q");
    let one = open(&server, "one:", &[("q", 1)]);
    let two = open(&server, "two:", &[("q", 1)]);
    assert_eq!(one.prefix(), "one:");
    assert_eq!(
        one.allocate(&q, "ex:p:dev:x-t", &[], &owner("x")).unwrap(),
        Allocation::Granted { new: true }
    );
    assert_eq!(
        two.allocate(&q, "ex:p:dev:y-t", &[], &owner("y")).unwrap(),
        Allocation::Granted { new: true },
        "another prefix, another cluster's quota"
    );
    one.allocate(&q, "ex:p:dev:w-t", &[], &owner("w")).unwrap();
    let mut c = raw(&server);
    let quotas: BTreeMap<String, i64> = redis::cmd("HGETALL").arg("one:quotas").query(&mut c).unwrap();
    assert_eq!(quotas, BTreeMap::from([(q.clone(), 1)]));
    let tokens: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("one:tokens:{q}"))
        .query(&mut c)
        .unwrap();
    assert_eq!(
        tokens,
        BTreeMap::from([("ex:p:dev:x-t".to_string(), "0:x".to_string())])
    );
    let exec: BTreeMap<String, u32> = redis::cmd("HGETALL").arg("one:exec:x").query(&mut c).unwrap();
    assert_eq!(exec, BTreeMap::from([(format!("{}:{q}ex:p:dev:x-t", q.len()), 0)]));
    let waiters: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("one:waiters:{q}"))
        .query(&mut c)
        .unwrap();
    assert_eq!(waiters, vec!["w".to_string()]);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.sort();
    assert!(
        keys.iter().all(|k| k.starts_with("one:") || k.starts_with("two:")),
        "{keys:?}"
    );
    // The default prefix.
    let d = RedisResources::open(&server.url(), REDIS_MANAGER_ID, &BTreeMap::new()).unwrap();
    assert_eq!(d.prefix(), DEFAULT_PREFIX);
}

#[test]
fn errors_name_the_server_without_its_password() {
    let server = RedisServer::start();
    let secret = server.password().to_string();
    let none = BTreeMap::new();
    let wrong = format!("redis://:wrong-{secret}@127.0.0.1:{}/", server.port());
    let e = RedisResources::open(&wrong, REDIS_MANAGER_ID, &none).err().unwrap();
    assert!(e.starts_with("cannot reach Redis at redis://:***@127.0.0.1:"), "{e}");
    assert!(!e.contains(&secret), "the password leaked: {e}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("redis://:{secret}@127.0.0.1:{port}/");
    let e = RedisResources::open(&down, REDIS_MANAGER_ID, &none).err().unwrap();
    assert!(
        e.starts_with(&format!("cannot reach Redis at redis://:***@127.0.0.1:{port}/")),
        "{e}"
    );
    assert!(!e.contains(&secret), "{e}");
    for bad in [
        format!("redis://:{secret}@127.0.0.1:notaport/"),
        format!("redis://:{secret}@127.0.0.1/?prefix=a%20b"),
        format!("rediss://:{secret}@127.0.0.1/"),
    ] {
        let e = RedisResources::open(&bad, REDIS_MANAGER_ID, &none).err().unwrap();
        assert!(e.starts_with("invalid Redis URL"), "{e}");
        assert!(!e.contains(&secret), "{e}");
    }
}

#[test]
fn redact_and_field_parsing() {
    assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
    assert_eq!(redact("redis://u:p@ss@h/"), "redis://u:***@h/");
    assert_eq!(redact("redis://h:6379/"), "redis://h:6379/");
    assert!(is_redis_url(" REDIS://h") && !is_redis_url("postgres://h"));
    assert_eq!(split_field("3:a:bex:1"), Some(("a:b".to_string(), "ex:1".to_string())));
    assert_eq!(split_field("9:short"), None);
    assert_eq!(
        split_prefix("redis://h/?prefix=x:&db=1").unwrap(),
        ("redis://h/?db=1".to_string(), "x:".to_string())
    );
}

#[test]
fn a_server_that_went_away_is_an_error_not_an_empty_answer() {
    let mut server = RedisServer::start();
    let secret = server.password().to_string();
    let q = ns("q");
    let m = open(&server, "gone:", &[("q", 1)]);
    assert_eq!(
        m.allocate(&q, "ex:p:dev:x-t", &[], &owner("x")).unwrap(),
        Allocation::Granted { new: true }
    );
    assert_eq!(m.try_held_by("x").unwrap().len(), 1);
    server.stop();
    // The engine retries a finishing step whose leftover tokens it cannot
    // list, rather than finishing with them held.
    let errors = [
        m.try_held_by("x").unwrap_err(),
        m.allocate(&q, "ex:p:dev:y-t", &[], &owner("y")).unwrap_err(),
        m.release(&q, "ex:p:dev:x-t").unwrap_err(),
    ];
    for e in errors {
        assert!(e.contains("Redis at redis://:***@127.0.0.1:"), "{e}");
        assert!(!e.contains(&secret), "{e}");
    }
    assert!(m.held_by("x").is_empty(), "logged, nothing listed");
}

fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// The subscriber keeps one connection (its read timeouts do not make it
/// reconnect), and ends with its backend.
#[test]
fn the_subscriber_keeps_its_connection_and_ends_with_the_backend() {
    let server = RedisServer::start();
    let mut c = raw(&server);
    let m = open(&server, "sub:", &[("q", 1)]);
    std::thread::sleep(Duration::from_millis(500));
    let subscribers = || {
        let mut c = raw(&server);
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("sub:released")
            .query::<(String, u64)>(&mut c)
            .unwrap();
        n
    };
    let before = info_field(&mut c, "stats", "total_connections_received");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        info_field(&mut c, "stats", "total_connections_received"),
        before,
        "no reconnection while idle"
    );
    assert_eq!(subscribers(), 1);
    drop(m);
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribers() != 0 {
        assert!(Instant::now() < deadline, "the subscriber outlived its backend");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// EVALSHA falls back to EVAL when the server forgot the scripts (a
/// restart, `SCRIPT FLUSH`, a failover to a replica without them).
#[test]
fn scripts_run_again_after_the_server_forgot_them() {
    let server = RedisServer::start();
    let q = ns("q");
    let m = open(&server, "flush:", &[("q", 1)]);
    assert_eq!(
        m.allocate(&q, "ex:p:dev:x-t", &[], &owner("x")).unwrap(),
        Allocation::Granted { new: true }
    );
    let mut c = raw(&server);
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    assert_eq!(
        m.allocate(&q, "ex:p:dev:y-t", &[], &owner("y")).unwrap(),
        Allocation::Exhausted
    );
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    assert!(m.release(&q, "ex:p:dev:x-t").unwrap());
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    m.restore(&[kozmo_engine::model::TokenRow {
        namespace: q.clone(),
        token: "ex:p:dev:z-t".into(),
        execution_id: "z".into(),
        attempt: 0,
    }]);
    assert_eq!(m.held_by("z").len(), 1);
}
