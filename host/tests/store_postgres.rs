//! The real `kozmo serve` on a PostgreSQL store (`KOZMO_STORE`), on a
//! throw-away cluster (`kozmo_testkit::postgres`): an echo task succeeds,
//! a SIGKILL while tasks are being submitted loses none that was
//! acknowledged and finishes each exactly once after the restart, and the
//! database password shows nowhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kozmo_testkit::postgres::PgServer;
use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

fn echo(id: &str) -> Value {
    json!({
        "execution_id": id,
        "type": "echo",
        "interface": {"outputs": {"greeting": {"type": "string"}}},
        "inputs": {"greeting": format!("hello {id}")},
    })
}

#[test]
fn a_daemon_on_postgres_finishes_every_acknowledged_execution_once_through_sigkill() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    let password = pg.password().to_string();
    let root = tempfile::tempdir().unwrap();
    // A fixed port, so the restarted daemon is found where the first was.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut d = Daemon::start_with_env(
        root.path(),
        &["kozmo-plugin-echo"],
        &["--listen", &listen],
        &[("KOZMO_STORE", &url)],
    );
    let pid = d.child.as_ref().unwrap().id();
    for what in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&password),
            "the daemon's {what} shows the store's password"
        );
    }

    let id = d.submit(&echo("first"));
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Succeeded", "{v}; log:\n{}", d.log_text());
    let (_, out) = d.client.get("/v1/executions/first/outputs").unwrap();
    assert_eq!(out["outputs"]["greeting"], json!({"string": "hello first"}), "{out}");
    assert!(
        !d.data.join("kozmo.db").exists(),
        "no SQLite file when the store is PostgreSQL"
    );
    assert_eq!(
        pg.psql("kozmo", "SELECT phase FROM executions WHERE id = 'first'"),
        "Succeeded"
    );

    // Submissions from four client threads; the daemon is killed under them.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let submitters: Vec<_> = (0..4)
        .map(|t| {
            let (client, acked, stop) = (d.client.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = format!("k{t}-{i:04}");
                    match client.post("/v1/executions", &echo(&id)) {
                        Ok((status, v)) if (200..300).contains(&status) => {
                            assert_eq!(v["id"], id.as_str());
                            acked.lock().unwrap().push(id);
                        }
                        // The daemon is gone: what was not answered is unknown.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    while acked.lock().unwrap().len() < 100 {
        assert!(start.elapsed() < Duration::from_secs(60), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = d.signal("KILL");
    assert_eq!(status.code(), None, "killed by the signal");
    stop.store(true, Ordering::Relaxed);
    for s in submitters {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let unfinished = pg.psql(
        "kozmo",
        "SELECT COUNT(*) FROM executions WHERE phase NOT IN ('Succeeded', 'Failed', 'Aborted')",
    );
    d.restart();
    for id in &acked {
        let v = d.wait_terminal(id);
        assert_eq!(v["phase"], "Succeeded", "{v}; log:\n{}", d.log_text());
        let (_, events) = d.client.get(&format!("/v1/executions/{id}/events")).unwrap();
        let terminal = events["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{events}"))
            .iter()
            .filter(|e| e["kind"] == "terminal")
            .count();
        assert_eq!(terminal, 1, "{id}: {events}");
    }
    // Exactly one terminal event per finished execution, in the database
    // itself, for the acknowledged ones and any submitted but unanswered.
    assert_eq!(
        pg.psql(
            "kozmo",
            "SELECT COUNT(*) FROM executions e WHERE phase = 'Succeeded' AND \
             (SELECT COUNT(*) FROM events v WHERE v.execution_id = e.id AND v.kind = 'terminal') <> 1"
        ),
        "0"
    );
    // Submitting an acknowledged one again is the same execution.
    let again = &acked[0];
    let (status, v) = d.client.post("/v1/executions", &echo(again)).unwrap();
    assert!((200..300).contains(&status), "{status} {v}");
    assert_eq!(
        pg.psql(
            "kozmo",
            &format!("SELECT COUNT(*) FROM events WHERE execution_id = '{again}'")
        ),
        d.client.get(&format!("/v1/executions/{again}/events")).unwrap().1["items"]
            .as_array()
            .unwrap()
            .len()
            .to_string()
    );

    // The password shows in no answer and no log line.
    for path in ["/v1/executions", "/v1/plugins", "/healthz", "/metrics"] {
        let (_, v) = d.client.get(path).unwrap_or((0, Value::Null));
        assert!(!v.to_string().contains(&password), "{path}: {v}");
    }
    let log = d.log_text();
    assert!(
        log.contains("store: PostgreSQL at postgres://kozmo:***@127.0.0.1"),
        "{log}"
    );
    assert!(!log.contains(&password), "the log shows the password:\n{log}");
    eprintln!(
        "{} acknowledged before SIGKILL ({unfinished} stored unfinished at the kill), all Succeeded once after \
         the restart",
        acked.len()
    );
}

#[test]
fn a_second_daemon_with_the_same_node_id_is_refused() {
    let pg = PgServer::start();
    let url = pg.url("kozmo");
    let root = tempfile::tempdir().unwrap();
    let _first = Daemon::start_with_env(
        &root.path().join("first"),
        &["kozmo-plugin-echo"],
        &[],
        &[("KOZMO_STORE", &url), ("KOZMO_NODE_ID", "n1")],
    );
    let other = root.path().join("second");
    let plugins = plugin_dir(&other, &["kozmo-plugin-echo"]);
    let out = kozmo()
        .args(["serve", "--listen", "127.0.0.1:0", "--node-id", "n1", "--data-dir"])
        .arg(other.join("data"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .env("KOZMO_STORE", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("another kozmo daemon runs as node n1 on the database"),
        "{stderr}"
    );
    assert!(!stderr.contains(pg.password()), "{stderr}");
}

#[test]
fn an_unreachable_store_is_one_clear_line_without_the_password() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &["kozmo-plugin-echo"]);
    let out = kozmo()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.path().join("data"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .args(["--store", "postgres://kozmo:n0t-th1s@127.0.0.1:1/kozmo"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(
        line.contains("cannot open the store")
            && line.contains("postgres://kozmo:***@127.0.0.1:1/kozmo")
            && line.contains("--store"),
        "{stderr}"
    );
    assert!(!stderr.contains("n0t-th1s"), "{stderr}");
}

/// Seconds for `n` echo executions, submitted in batches of 1000, to all
/// reach Succeeded on daemon `d`.
fn time_echo_executions(d: &Daemon, n: usize) -> f64 {
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"type": "echo", "inputs": {"i": i}, "execution_id": format!("t{i:06}")}))
            .collect();
        let (status, answer) = d.client.post("/v1/executions:batch", &Value::Array(items)).unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    loop {
        let metrics = d.client.get_text("/metrics").unwrap();
        let done = metrics
            .lines()
            .find_map(|l| l.strip_prefix("kozmo_executions{phase=\"Succeeded\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if done as usize >= n {
            return start.elapsed().as_secs_f64();
        }
        assert!(start.elapsed() < Duration::from_secs(600), "{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A rough figure, not a check: `cargo test -p kozmo-host --release --test
/// store_postgres -- --ignored --nocapture`. Echo executions per second
/// end to end (batch submission → Succeeded) on SQLite and on PostgreSQL
/// (a local server with its default, durable settings).
#[test]
#[ignore = "a measurement; run by hand"]
fn echo_throughput_on_sqlite_and_postgres() {
    let n: usize = std::env::var("KOZMO_BENCH_EXECUTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let pg = PgServer::start();
    for (name, env) in [("SQLite", None), ("PostgreSQL", Some(pg.url("kozmo")))] {
        let root = tempfile::tempdir().unwrap();
        let env: Vec<(&str, &str)> = env.iter().map(|u| ("KOZMO_STORE", u.as_str())).collect();
        let d = Daemon::start_with_env(root.path(), &["kozmo-plugin-echo"], &[], &env);
        let secs = time_echo_executions(&d, n);
        eprintln!("{name}: {n} echo executions in {secs:.2} s = {:.0}/s", n as f64 / secs);
    }
}
