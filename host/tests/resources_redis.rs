//! The real `kozmo serve` with its resource manager on Redis
//! (`KOZMO_RESOURCES` / `--resources`), on a throw-away server
//! (`kozmo_testkit::redis`): two daemons on their own data directories
//! share the sleep-quota plugin's quota of 1, so their four sleeps run one
//! at a time, each woken by the previous one's release (across daemons
//! through Redis pub/sub), and all finish; the password shows nowhere; a bad URL or an
//! unreachable server stops the daemon with one line naming the setting.

use std::time::{Duration, Instant};

use kozmo_testkit::redis::RedisServer;
use serde_json::json;

mod daemon_harness;

use daemon_harness::*;

const NAMESPACE: &str = "redisresourcemanager:sleep-quota:slots";

#[test]
fn two_daemons_sharing_redis_hold_a_quota_of_one_one_at_a_time() {
    let redis = RedisServer::start();
    let url = format!("{}?prefix=itest:", redis.url());
    let password = redis.password().to_string();
    let roots = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let plugins = ["kozmo-plugin-sleep-quota"];
    // One by the variable, one by the flag; both hidden from other
    // processes. A resync of 60 s: a waiter runs again only when a release
    // wakes it, on its own daemon or, through Redis pub/sub, on the other.
    let slow = [
        "--resource-quota",
        "sleep-quota:slots=1",
        "--resync-interval-secs",
        "60",
    ];
    let a = Daemon::start_with_env(roots[0].path(), &plugins, &slow, &[("KOZMO_RESOURCES", &url)]);
    let b = Daemon::start(roots[1].path(), &plugins, &[&slow[..], &["--resources", &url]].concat());
    for d in [&a, &b] {
        let pid = d.child.as_ref().unwrap().id();
        for what in ["cmdline", "environ"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&password),
                "the daemon's {what} shows the Redis password"
            );
        }
    }
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let quota: i64 = redis::cmd("HGET")
        .arg("itest:quotas")
        .arg(NAMESPACE)
        .query(&mut conn)
        .unwrap();
    assert_eq!(quota, 1, "the plugin's quota, with the override, is in Redis");

    let nap = |id: &str| {
        let mut body = read_json(&example("sleep-quota.json"));
        body["execution_id"] = json!(id);
        body["inputs"]["seconds"] = json!(1);
        body
    };
    let start = Instant::now();
    for (d, id) in [(&a, "a1"), (&b, "b1"), (&a, "a2"), (&b, "b2")] {
        d.submit(&nap(id));
    }
    // Watch the slots in Redis until all four are done: never two holders.
    let done = |d: &Daemon, id: &str| {
        let (_, v) = d.client.get(&format!("/v1/executions/{id}")).unwrap();
        matches!(v["phase"].as_str(), Some("Succeeded" | "Failed" | "Aborted"))
    };
    let mut max_held = 0;
    let mut samples = 0;
    while !(done(&a, "a1") && done(&a, "a2") && done(&b, "b1") && done(&b, "b2")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not finished; logs:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        let held: usize = redis::cmd("HLEN")
            .arg(format!("itest:tokens:{NAMESPACE}"))
            .query(&mut conn)
            .unwrap();
        max_held = max_held.max(held);
        samples += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    for (d, id) in [(&a, "a1"), (&a, "a2"), (&b, "b1"), (&b, "b2")] {
        let v = d.wait_terminal(id);
        assert_eq!(v["phase"], "Succeeded", "{id}: {v}; log:\n{}", d.log_text());
    }
    assert_eq!(max_held, 1, "one slot, held ({samples} samples)");
    // Four one-second sleeps, one at a time across both daemons, each
    // started by the previous one's release (no resync within the test).
    assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}: sleeps overlapped");
    assert!(
        elapsed < Duration::from_secs(30),
        "{elapsed:?}: a waiter waited for its resync"
    );
    let held: usize = redis::cmd("HLEN")
        .arg(format!("itest:tokens:{NAMESPACE}"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(held, 0, "every token released");
    for d in [&a, &b] {
        let log = d.log_text();
        assert!(log.contains("resources: Redis at redis://:***@127.0.0.1:"), "{log}");
        assert!(!log.contains(&password), "the log shows the Redis password");
    }
}

#[test]
fn a_bad_or_unreachable_redis_is_one_clear_line_without_the_password() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &["kozmo-plugin-sleep-quota"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (url, expect) in [
        (
            format!("redis://:n0t-th1s@127.0.0.1:{port}/"),
            format!("cannot reach Redis at redis://:***@127.0.0.1:{port}/"),
        ),
        (
            "redis://:n0t-th1s@127.0.0.1:notaport/".to_string(),
            "invalid Redis URL redis://:***@127.0.0.1:notaport/".to_string(),
        ),
        (
            "memcache://:n0t-th1s@127.0.0.1/".to_string(),
            "is not a resource manager kozmo knows".to_string(),
        ),
    ] {
        let out = kozmo()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(root.path().join("data"))
            .arg("--plugins-dir")
            .arg(&plugins)
            .args(["--resources", &url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].contains(&expect) && lines[0].contains("--resources"),
            "{stderr}"
        );
        assert!(!stderr.contains("n0t-th1s"), "{stderr}");
    }
}
