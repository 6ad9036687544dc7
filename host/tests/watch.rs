//! The watch API (Server-Sent Events) and the commands built on it
//! (`kozmo watch`, `kozmo submit --wait`) against the real daemon with the
//! bundled plugins: phases followed, resumed with `Last-Event-ID` with
//! nothing missed or doubled, a daemon restart ridden out, exit codes.
//! Tasks wait for a gate file the test creates, so no assertion depends on
//! timing.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use kozmo_host::client::{Client, ClientError, SseItem, SseMessage, SseStream};
use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

const PLUGINS: [&str; 2] = ["kozmo-plugin-echo", "kozmo-plugin-shell"];

/// A shell task that starts, then waits for `gate` to exist, then prints.
fn gated(id: &str, gate: &Path) -> Value {
    json!({
        "execution_id": id, "type": "shell",
        "interface": {"outputs": {"stdout": {"type": "string"}}},
        "container": {"command": ["sh", "-c", "while [ ! -e \"$1\" ]; do sleep 0.05; done; echo opened", "sh",
                                  gate.to_str().unwrap()]},
    })
}

fn open(c: &Client, path: &str, last: Option<&str>) -> Option<SseStream> {
    c.watch(path, last, Duration::from_secs(120)).unwrap()
}

/// Messages of `stream` until `stop` says so (keep-alives skipped).
fn read_until(stream: &mut SseStream, stop: impl Fn(&SseMessage) -> bool) -> Vec<SseMessage> {
    let mut got = Vec::new();
    for item in stream.by_ref() {
        if let SseItem::Message(m) = item.unwrap() {
            let done = stop(&m);
            got.push(m);
            if done {
                return got;
            }
        }
    }
    got
}

fn data(m: &SseMessage) -> Value {
    serde_json::from_str(&m.data).unwrap()
}

fn seqs(messages: &[SseMessage], name: &str) -> Vec<i64> {
    messages
        .iter()
        .filter(|m| m.event == name)
        .map(|m| data(m)["seq"].as_i64().unwrap())
        .collect()
}

fn stored_seqs(d: &Daemon, id: &str) -> Vec<i64> {
    let (_, page) = d.client.get(&format!("/v1/executions/{id}/events")).unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

#[test]
fn a_watch_follows_the_phases_and_resumes_after_a_disconnect_missing_nothing_doubling_nothing() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &PLUGINS, &[]);
    let gate = root.path().join("gate");
    d.submit(&gated("w-1", &gate));
    let path = "/v1/executions/w-1/watch";

    // First connection: until the task runs.
    let mut first = open(&d.client, path, None).expect("a stream");
    let before = read_until(&mut first, |m| {
        m.event == "execution" && data(m)["plugin_phase"] == "PhaseRunning"
    });
    drop(first);
    assert_eq!(before.last().unwrap().event, "execution");
    let last_id = before.last().unwrap().id.clone().expect("every message has an id");

    // While nobody watches, the task ends.
    std::fs::write(&gate, "").unwrap();
    assert_eq!(d.wait_terminal("w-1")["phase"], "Succeeded");

    // Second connection, resumed: what was missed, then the end.
    let mut second = open(&d.client, path, Some(&last_id)).expect("a stream");
    let after = read_until(&mut second, |m| m.event == "end");
    assert!(second.next().is_none(), "the stream ends after `end`");
    let end = after.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(data(end)["phase"], "Succeeded");

    // Every event exactly once, in order, across both connections.
    let mut seen = seqs(&before, "event");
    seen.extend(seqs(&after, "event"));
    assert_eq!(seen, stored_seqs(&d, "w-1"), "before: {before:?}\nafter: {after:?}");
    // No status twice in a row, and none repeated across the reconnection.
    let statuses: Vec<Value> = before
        .iter()
        .chain(&after)
        .filter(|m| m.event != "event")
        .map(|m| {
            let v = data(m);
            json!([v["phase"], v["plugin_phase"], v["plugin_phase_version"]])
        })
        .collect();
    for pair in statuses.windows(2) {
        assert_ne!(pair[0], pair[1], "{statuses:?}");
    }
    // Ids are unique and their event seqs never go back.
    let ids: Vec<String> = before.iter().chain(&after).map(|m| m.id.clone().unwrap()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids);

    // Coming back after the end: nothing more (204), not the end again.
    let end_id = end.id.clone().unwrap();
    assert!(open(&d.client, path, Some(&end_id)).is_none());
    // A fresh watch of an ended execution: its history, then its end.
    let mut fresh = open(&d.client, path, None).expect("a stream");
    let all = read_until(&mut fresh, |m| m.event == "end");
    assert_eq!(seqs(&all, "event"), stored_seqs(&d, "w-1"));
    assert_eq!(all.last().unwrap().event, "end");

    // Errors are answered before any stream.
    let err = d
        .client
        .watch("/v1/executions/nope/watch", None, Duration::from_secs(5));
    assert!(matches!(err, Err(ClientError::Api { status: 404, .. })), "{err:?}");
    let err = d.client.watch(path, Some("not-a-cursor"), Duration::from_secs(5));
    assert!(matches!(err, Err(ClientError::Api { status: 400, .. })), "{err:?}");
    let err = d
        .client
        .post("/v1/executions", &json!({"execution_id": "watch", "type": "echo"}));
    assert!(matches!(err, Err(ClientError::Api { status: 400, .. })), "{err:?}");
}

#[test]
fn the_watch_of_every_execution_resumes_by_seq_and_filters_by_phase() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &PLUGINS, &[]);
    let path = "/v1/executions/watch";
    let mut first = open(&d.client, path, None).expect("a stream");
    let ready = read_until(&mut first, |m| m.event == "ready");
    let start = data(&ready[0])["seq"].as_i64().unwrap();
    assert_eq!(ready[0].id.as_deref(), Some(start.to_string().as_str()));

    let gate = root.path().join("gate");
    d.submit(&gated("all-1", &gate));
    d.submit(&json!({"execution_id": "all-2", "type": "echo", "inputs": {"x": 1}}));
    // Until all-2 ended; then disconnect and let all-1 end unwatched.
    let before = read_until(&mut first, |m| {
        m.event == "change" && data(m)["event"]["execution_id"] == "all-2" && data(m)["event"]["kind"] == "terminal"
    });
    drop(first);
    std::fs::write(&gate, "").unwrap();
    d.wait_terminal("all-1");
    let last = before.last().unwrap().id.clone().unwrap();
    let mut second = open(&d.client, path, Some(&last)).expect("a stream");
    let after = read_until(&mut second, |m| {
        m.event == "change" && data(m)["event"]["execution_id"] == "all-1" && data(m)["event"]["kind"] == "terminal"
    });
    drop(second);
    assert!(after.iter().all(|m| m.event == "change"), "no second `ready` on resume");

    let mut seen: Vec<i64> = before
        .iter()
        .chain(&after)
        .filter(|m| m.event == "change")
        .map(|m| {
            let v = data(m);
            assert_eq!(v["event"]["seq"].as_i64().unwrap().to_string(), m.id.clone().unwrap());
            assert_eq!(v["execution"]["id"], v["event"]["execution_id"]);
            v["event"]["seq"].as_i64().unwrap()
        })
        .collect();
    let mut stored: Vec<i64> = stored_seqs(&d, "all-1");
    stored.extend(stored_seqs(&d, "all-2"));
    stored.sort_unstable();
    stored.retain(|s| *s > start);
    let sorted = {
        let mut s = seen.clone();
        s.sort_unstable();
        s
    };
    assert_eq!(seen, sorted, "in seq order");
    seen.dedup();
    assert_eq!(seen, stored, "every event once: {before:?} {after:?}");

    // Filtered: only changes of executions in that phase when sent.
    let mut filtered = open(&d.client, &format!("{path}?phase=Succeeded&after={start}"), None).expect("a stream");
    let got = read_until(&mut filtered, |m| {
        m.event == "change" && data(m)["event"]["execution_id"] == "all-1" && data(m)["event"]["kind"] == "terminal"
    });
    assert!(!got.is_empty());
    for m in &got {
        assert_eq!(data(m)["execution"]["phase"], "Succeeded", "{m:?}");
    }
    let err = d
        .client
        .watch(&format!("{path}?phase=Nope"), None, Duration::from_secs(5));
    assert!(matches!(err, Err(ClientError::Api { status: 400, .. })), "{err:?}");
}

/// `kozmo ARGS` against the daemon, running in the background.
fn spawn_cli(d: &Daemon, args: &[&str]) -> Child {
    kozmo()
        .args(args)
        .env("KOZMO_SERVER", d.client.base())
        .env_remove("KOZMO_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until execution `id` (submitted by a command in the background)
/// exists and its command runs.
fn wait_running(d: &Daemon, id: &str) {
    let start = std::time::Instant::now();
    loop {
        if let Ok((_, v)) = d.client.get(&format!("/v1/executions/{id}")) {
            if v["plugin_phase"] == "PhaseRunning" {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{id} never ran: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn submit_wait_rides_out_a_graceful_restart_and_prints_each_event_once() {
    let root = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(root.path(), &PLUGINS, &["--listen", &listen]);
    let gate = root.path().join("gate");
    let task = root.path().join("task.json");
    std::fs::write(&task, gated("restart-1", &gate).to_string()).unwrap();
    let waiting = spawn_cli(&d, &["submit", task.to_str().unwrap(), "--wait", "-o", "json"]);
    wait_running(&d, "restart-1");
    // SIGTERM: the watch is ended by the daemon, which stops; the command
    // goes on (the shell plugin leaves it running).
    assert!(d.signal("TERM").success());
    d.restart();
    std::fs::write(&gate, "").unwrap();
    let out = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\nlog:\n{}", d.log_text());
    assert!(
        stderr.contains("lost the daemon") && stderr.contains("the daemon answers again"),
        "{stderr}"
    );
    let outputs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outputs["stdout"], json!({"string": "opened"}), "{outputs}");
    // Each event printed once although the watch was opened twice.
    let running = stderr
        .lines()
        .filter(|l| l.contains(" task ") && l.contains("PhaseRunning v1"))
        .count();
    assert_eq!(running, 1, "{stderr}");
    let ends = stderr
        .lines()
        .filter(|l| l.contains(" terminal ") && l.contains("Succeeded"))
        .count();
    assert_eq!(ends, 1, "{stderr}");
}

#[test]
fn watch_exit_codes_success_failure_abort_and_giving_up() {
    let root = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(root.path(), &PLUGINS, &["--listen", &listen]);
    // 0: succeeded; the phases and events are on stdout.
    let ok = d.submit(&json!({"type": "echo", "inputs": {"x": 1}}));
    let out = d.cli(&["watch", &ok]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Succeeded (PhaseSuccess v0)"), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains(" terminal ")), "{stdout}");
    // -o json: one JSON object per line, the last one the end.
    let out = d.cli(&["watch", &ok, "-o", "json"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["message"], "end");
    assert_eq!(lines.last().unwrap()["data"]["phase"], "Succeeded");

    // 1: failed.
    let failed = d.submit(&read_json(&example("shell-fail.json")));
    let out = d.cli(&["watch", &failed]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NonZeroExit"));

    // 1: aborted while watched; one abort code everywhere.
    let gate = root.path().join("never");
    let aborted = d.submit(&gated("to-abort", &gate));
    let watching = spawn_cli(&d, &["watch", &aborted]);
    d.wait_phase_where(
        &aborted,
        |v| v["plugin_phase"] == "PhaseRunning",
        Duration::from_secs(30),
    );
    assert!(d.cli(&["abort", &aborted, "--reason", "enough"]).status.success());
    let out = watching.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("Aborted"), "{stdout}");
    let (_, v) = d.client.get(&format!("/v1/executions/{aborted}")).unwrap();
    assert_eq!(v["error"]["code"], "Aborted", "{v}");
    let (_, events) = d.client.get(&format!("/v1/executions/{aborted}/events")).unwrap();
    let codes: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["body"]["error"]["code"].as_str())
        .collect();
    assert!(codes.contains(&"Aborted"), "{events}");
    assert!(codes.iter().all(|c| c.contains("Aborted")), "one abort code: {codes:?}");
    // Its outputs: none, said why, exit 1.
    let out = d.cli(&["outputs", &aborted]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no outputs: it ended Aborted"), "{stderr}");

    // 3: the wait's own deadline.
    let gate = root.path().join("later");
    let slow = d.submit(&gated("slow-1", &gate));
    let out = d.cli(&["watch", &slow, "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gave up"));
    // 3: the daemon gone for longer than --retry-for.
    let waiting = spawn_cli(&d, &["watch", &slow, "--retry-for", "1"]);
    d.wait_phase_where(&slow, |v| v["plugin_phase"] == "PhaseRunning", Duration::from_secs(30));
    let _ = d.signal("KILL");
    let out = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("lost the daemon") && stderr.contains("gave up"),
        "{stderr}"
    );
    std::fs::write(&gate, "").unwrap();
}

#[test]
fn events_print_as_a_table_or_json_lines() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &PLUGINS, &[]);
    let id = d.submit(&read_json(&example("shell-fail.json")));
    d.wait_terminal(&id);
    let out = d.cli(&["events", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    for column in ["SEQ", "TIME", "ATTEMPT", "KIND", "PHASE", "VERSION", "DETAIL"] {
        assert!(header.contains(column), "{header}");
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(
        rows.len(),
        stored_seqs(&d, &id).len(),
        "a row per event, a line each: {text}"
    );
    // Columns line up: each row's kind starts where the header's KIND does.
    let kind_at = header.find("KIND").unwrap();
    for row in &rows {
        let kind = &row[kind_at..];
        assert!(
            kind.starts_with("task") || kind.starts_with("terminal") || kind.starts_with("retry"),
            "{row}"
        );
    }
    assert!(rows.last().unwrap().contains("NonZeroExit"), "{text}");
    let out = d.cli(&["events", &id, "-o", "json"]);
    let json_lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json_lines.len(), rows.len());
    assert!(json_lines.iter().all(|e| e["execution_id"] == id.as_str()));
}

#[test]
fn a_watch_that_cannot_start_before_its_deadline_gives_up_with_3() {
    // Nothing listens: the wait retries until --retry-for, then exits 3.
    let out = kozmo()
        .args(["watch", "x", "--retry-for", "1", "--server"])
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .env_remove("KOZMO_API_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("gave up"), "{stderr}");
}
