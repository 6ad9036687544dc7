//! The real `kozmo serve` binary on a free loopback port, with temporary
//! directories and the bundled plugins built as shared libraries, driven
//! through the CLI and raw HTTP.

use std::path::Path;
use std::time::{Duration, Instant};

use kozmo_host::client::{Client, ClientError};
use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

const PLUGINS: [&str; 3] = ["kozmo-plugin-echo", "kozmo-plugin-shell", "kozmo-plugin-sleep-quota"];

#[test]
fn examples_through_the_cli_with_wait_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &PLUGINS, &[]);
    for (file, code) in [
        ("echo.json", 0),
        ("shell-hello.json", 0),
        ("sleep-quota.json", 0),
        ("shell-fail.json", 1),
    ] {
        let out = d.cli(&["submit", example(file).to_str().unwrap(), "--wait", "-o", "json"]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Live phase changes, or (an execution that ended before the
        // watch began) its events: each line names a plugin phase.
        let phase_lines = stderr.lines().filter(|l| l.contains("Phase")).count();
        assert!(phase_lines >= 2, "{file}: phase changes are printed: {stderr}");
        let last = if code == 0 {
            "Succeeded (PhaseSuccess"
        } else {
            "Failed (PhaseRetryableFailure"
        };
        assert!(stderr.contains(last), "{file}: {stderr}");
        if code == 0 {
            let outputs: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                outputs.is_object() && !outputs.as_object().unwrap().is_empty(),
                "{file}: {outputs}"
            );
        } else {
            assert!(stderr.contains("Failed"), "{stderr}");
            assert!(stderr.contains("NonZeroExit"), "{stderr}");
        }
    }
    let out = d.cli(&["list"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        5,
        "header + 4 executions"
    );
    let hello = d.cli(&[
        "submit",
        example("shell-hello.json").to_str().unwrap(),
        "--id",
        "hello-1",
        "--wait",
    ]);
    assert!(hello.status.success());
    let out = d.cli(&["outputs", "hello-1"]);
    let outputs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outputs["exit_code"], json!({"integer": 0}));
    assert!(
        outputs["stdout"]["string"]
            .as_str()
            .unwrap()
            .starts_with("hello, world"),
        "{outputs}"
    );
    let out = d.cli(&["events", "hello-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PhaseSuccess"), "{text}");
    // A table like the other commands print: a header, a row per event.
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("SEQ  TIME"), "{text}");
    for line in lines {
        assert!(!line.trim_start().starts_with('{'), "{text}");
        assert!(line.contains("  20") && line.contains("Z  "), "{line}");
    }
    assert!(
        text.lines()
            .any(|l| l.contains(" terminal ") && l.contains("Succeeded")),
        "{text}"
    );
    // -o json: one JSON line per event.
    let out = d.cli(&["events", "hello-1", "-o", "json"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty() && lines.iter().all(|e| e["execution_id"] == "hello-1"));
    let out = d.cli(&["get", "hello-1", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "Succeeded");
}

#[test]
fn a_shell_task_finishes_far_below_the_default_resync_in_process_and_isolated() {
    // The daemon's default resync is 5 s; the shell plugin signals when its
    // command ends, so a command of milliseconds is done in milliseconds,
    // whether the plugin runs in the daemon or in its own process.
    for isolate in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let mut extra = vec!["--resync-interval-secs", "5"];
        if isolate {
            extra.extend(["--isolate", "shell"]);
        }
        let d = Daemon::start(root.path(), &PLUGINS, &extra);
        for i in 0..3 {
            let start = Instant::now();
            let out = d.cli(&[
                "submit",
                example("shell-hello.json").to_str().unwrap(),
                "--id",
                &format!("quick-{i}"),
                "--wait",
            ]);
            let took = start.elapsed();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(
                took < Duration::from_secs(2),
                "isolated {isolate}: a shell task of milliseconds took {took:?} (the resync is 5 s)"
            );
        }
    }
}

#[test]
fn idempotent_resubmit_conflict_and_every_4xx() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        root.path(),
        &["kozmo-plugin-shell", "kozmo-plugin-sleep-quota"],
        &["--max-body-bytes", "4096"],
    );
    let c = &d.client;
    let mut body = read_json(&example("sleep-quota.json"));
    body["execution_id"] = json!("nap-1");
    assert_eq!(c.post("/v1/executions", &body).unwrap().0, 201);
    assert_eq!(c.post("/v1/executions", &body).unwrap().0, 200);
    body["inputs"]["seconds"] = json!(1);
    let err = c.post("/v1/executions", &body).unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 409, .. }), "{err}");

    let err = c.post_raw("/v1/executions", b"{\"type\": ").unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 400, .. }), "{err}");
    let bad = json!({"type": "sleep-quota", "metadata": {"retries": "three"}});
    let raw = ureq::post(&format!("{}/v1/executions", c.base())).send_json(bad);
    let Err(ureq::Error::Status(400, resp)) = raw else {
        panic!("{raw:?}")
    };
    let body: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(body["path"], "metadata.retries", "{body}");
    assert_eq!(body["error"], "bad_request");
    let raw = ureq::post(&format!("{}/v1/executions", c.base()))
        .send_json(json!({"execution_id": "../escape", "type": "sleep-quota"}));
    let Err(ureq::Error::Status(400, resp)) = raw else {
        panic!("{raw:?}")
    };
    let body: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(body["path"], "execution_id", "{body}");
    let err = c.get("/v1/executions/nope").unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
    let big = json!({"type": "sleep-quota", "inputs": {"pad": "x".repeat(5000)}});
    let err = c.post("/v1/executions", &big).unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 413, .. }), "{err}");
    let err = c
        .post("/v1/executions", &json!({"type": "nobody-handles-this"}))
        .unwrap_err();
    match err {
        ClientError::Api {
            status: 422, detail, ..
        } => assert!(detail.contains("nobody-handles-this"), "{detail}"),
        other => panic!("{other}"),
    }
    d.wait_terminal("nap-1");
}

#[test]
fn abort_of_a_running_shell_task_kills_its_process() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &PLUGINS, &[]);
    let pidfile = root.path().join("pid");
    let task = json!({
        "execution_id": "long-1", "type": "shell",
        "container": {"command": ["sh", "-c", "echo $$ > \"$1\"; sleep 60", "sh", pidfile.to_str().unwrap()]},
    });
    d.submit(&task);
    let start = Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "task never started: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(pid_alive(pid));
    // No outputs yet: said on stderr with the phase, exit 1 (not `null`, 0).
    let out = d.cli(&["outputs", "long-1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("has no outputs yet: it is Running"), "{stderr}");
    let out = d.cli(&["abort", "long-1", "--reason", "test abort"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = d.wait_terminal("long-1");
    assert_eq!(v["phase"], "Aborted");
    let out = d.cli(&["outputs", "long-1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has no outputs: it ended Aborted") && stderr.contains("test abort"),
        "{stderr}"
    );
    let start = Instant::now();
    while pid_alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "process {pid} survived the abort"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_rounds() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &PLUGINS, &[]);
    let id = d.submit(&read_json(&example("echo.json")));
    d.wait_terminal(&id);
    let text = d.client.get_text("/metrics").unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("valid Prometheus text");
    let rounds = scrape
        .samples
        .iter()
        .find(|s| s.metric == "kozmo_rounds_total")
        .unwrap_or_else(|| panic!("no kozmo_rounds_total in\n{text}"));
    match rounds.value {
        prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Untyped(n) => assert!(n >= 1.0, "{n}"),
        ref other => panic!("{other:?}"),
    }
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric.starts_with("kozmo_round_latency_seconds")));
    assert!(text.contains("kozmo_executions{phase=\"Succeeded\"} 1"), "{text}");
    // One exposition: one `# EOF`, at the end, and every family described once.
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let distinct: std::collections::BTreeSet<&&str> = types.iter().collect();
    assert_eq!(distinct.len(), types.len(), "a family described twice: {text}");
    let sample = |metric: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric)
            .unwrap_or_else(|| panic!("no {metric} in\n{text}"))
    };
    let value = |s: &prometheus_parse::Sample| match s.value {
        prometheus_parse::Value::Counter(n)
        | prometheus_parse::Value::Gauge(n)
        | prometheus_parse::Value::Untyped(n) => n,
        ref other => panic!("{other:?}"),
    };
    // The sleep-quota plugin's namespace: its quota, tokens in use, waiters.
    let quota = sample("kozmo_resource_quota");
    assert!(
        quota.labels.get("namespace").is_some_and(|n| n.contains("sleep")),
        "{:?}",
        quota.labels
    );
    assert!(value(quota) >= 1.0, "{text}");
    assert_eq!(value(sample("kozmo_resource_tokens_in_use")), 0.0);
    assert_eq!(value(sample("kozmo_resource_waiting_executions")), 0.0);
    assert_eq!(value(sample("kozmo_executions_waiting_for_resources")), 0.0);
    // Store commit latency: the submission and the steps were committed.
    let commits: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("kozmo_store_commit_latency_seconds_count "))
        .unwrap_or_else(|| panic!("no store commit latency in\n{text}"))
        .parse()
        .unwrap();
    assert!(commits >= 1.0, "{text}");
    assert!(
        text.contains("kozmo_store_commit_latency_seconds_bucket{le=\"+Inf\"}"),
        "{text}"
    );
    assert!(
        text.contains("kozmo_plugin_sleep_quota_sleeps_completed"),
        "plugin metrics appear: {text}"
    );
    let (_, plugins) = d.client.get("/v1/plugins").unwrap();
    assert_eq!(plugins.as_array().unwrap().len(), 3);
    assert_eq!(d.client.get("/healthz").unwrap().1["status"], "ok");
}

/// 64 clients at once, each with one single submission: new ids, the same
/// body again, another body for a taken id, a bad body, a bad id, no id. Each gets the answer to its own request (status, id, error
/// body), and everything answered 2xx is in the store after a SIGKILL.
#[test]
fn concurrent_single_submissions_get_their_own_answers_and_survive_sigkill() {
    const CLIENTS: usize = 64;
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);
    let echo = |i: usize, id: Option<String>| {
        let mut t = read_json(&example("echo.json"));
        t["inputs"]["count"] = json!(i);
        if let Some(id) = id {
            t["execution_id"] = json!(id);
        }
        t
    };
    for i in (0..CLIENTS).filter(|i| matches!(i % 6, 1 | 2)) {
        d.submit(&echo(i, Some(format!("taken-{i}"))));
    }
    let base = d.client.base().to_string();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let body = match i % 6 {
                0 => echo(i, Some(format!("new-{i}"))),
                1 => echo(i, Some(format!("taken-{i}"))),
                2 => echo(i + 1000, Some(format!("taken-{i}"))),
                3 => json!({"execution_id": format!("bad-{i}"), "type": "echo", "metadata": {"retries": "three"}}),
                4 => echo(i, Some(format!("../escape-{i}"))),
                _ => echo(i, None),
            };
            let url = format!("{base}/v1/executions");
            std::thread::spawn(move || match ureq::post(&url).send_json(body) {
                Ok(resp) => (resp.status(), resp.into_json::<Value>().unwrap()),
                Err(ureq::Error::Status(status, resp)) => (status, resp.into_json::<Value>().unwrap()),
                Err(e) => panic!("client {i}: {e}"),
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (status, body) = client.join().unwrap();
        match i % 6 {
            0 => assert_eq!(
                (status, body["id"].as_str()),
                (201, Some(format!("new-{i}").as_str())),
                "{body}"
            ),
            1 => assert_eq!(
                (status, body["id"].as_str()),
                (200, Some(format!("taken-{i}").as_str())),
                "{body}"
            ),
            2 => {
                assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");
                assert!(
                    body["detail"].as_str().unwrap().contains(&format!("[taken-{i}]")),
                    "{body}"
                );
            }
            3 => {
                assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
                assert_eq!(body["path"], "metadata.retries", "{body}");
            }
            4 => {
                assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
                assert_eq!(body["path"], "execution_id", "{body}");
            }
            _ => assert_eq!(status, 201, "{body}"),
        }
        if (200..300).contains(&status) {
            let id = body["id"].as_str().unwrap().to_string();
            accepted.push((id, i));
        }
    }
    let status = d.signal("KILL");
    assert_eq!(status.code(), None);
    d.restart();
    for (id, i) in &accepted {
        let v = d.wait_terminal(id);
        assert_eq!(v["phase"], "Succeeded", "{id}: {v}");
        let (_, out) = d.client.get(&format!("/v1/executions/{id}/outputs")).unwrap();
        assert_eq!(
            out["outputs"]["count"],
            json!({"integer": i}),
            "{id} ran its own body: {out}"
        );
    }
    for i in (0..CLIENTS).filter(|i| i % 6 == 3) {
        let err = d.client.get(&format!("/v1/executions/bad-{i}")).unwrap_err();
        assert!(matches!(err, ClientError::Api { status: 404, .. }), "bad-{i}: {err}");
    }
    // The conflicting bodies did not replace the first ones.
    for i in (0..CLIENTS).filter(|i| i % 6 == 2) {
        let (_, out) = d.client.get(&format!("/v1/executions/taken-{i}/outputs")).unwrap();
        assert_eq!(out["outputs"]["count"], json!({"integer": i}), "taken-{i}: {out}");
    }
}

#[test]
fn sigterm_exits_zero_and_nothing_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(root.path(), &PLUGINS, &[]);
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut t = read_json(&example("sleep-quota.json"));
        t["execution_id"] = json!(format!("nap-{i}"));
        t["inputs"]["seconds"] = json!(1);
        ids.push(d.submit(&t));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = d.signal("TERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log_text());
    d.restart();
    for id in &ids {
        let v = d.wait_terminal(id);
        assert_eq!(v["phase"], "Succeeded", "{v}");
        let (_, out) = d.client.get(&format!("/v1/executions/{id}/outputs")).unwrap();
        assert!(out["outputs"]["slept_seconds"].is_object(), "{out}");
    }
}

#[test]
fn sigkill_during_a_shell_task_then_restart_finishes_it() {
    let root = tempfile::tempdir().unwrap();
    // A fixed port, so the restarted daemon is found where the first was.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut d = Daemon::start(root.path(), &PLUGINS, &["--listen", &listen]);
    let marker = root.path().join("started");
    let task = root.path().join("survivor.json");
    std::fs::write(
        &task,
        json!({
            "execution_id": "survivor", "type": "shell",
            "interface": {"outputs": {"exit_code": {"type": "integer"}}},
            "container": {"command": ["sh", "-c", "touch \"$1\"; sleep 2; echo done", "sh", marker.to_str().unwrap()]},
        })
        .to_string(),
    )
    .unwrap();
    // A client waiting on it through the crash and the restart.
    let waiting = kozmo()
        .args(["submit", task.to_str().unwrap(), "--wait", "-o", "json"])
        .env("KOZMO_SERVER", d.client.base())
        .env_remove("KOZMO_API_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = d.signal("KILL");
    assert_eq!(status.code(), None);
    // The client notices the daemon is gone before it comes back.
    std::thread::sleep(Duration::from_millis(700));
    d.restart();
    let v = d.wait_terminal("survivor");
    assert_eq!(v["phase"], "Succeeded", "{v}; log:\n{}", d.log_text());
    let (_, out) = d.client.get("/v1/executions/survivor/outputs").unwrap();
    assert_eq!(out["outputs"]["stdout"], json!({"string": "done"}));
    let waited = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "submit --wait survives the restart: {stderr}");
    assert!(
        stderr.contains("lost the daemon") && stderr.contains("the daemon answers again"),
        "{stderr}"
    );
    let outputs: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(outputs["stdout"], json!({"string": "done"}), "{outputs}");
}

#[test]
fn non_loopback_needs_a_token_and_requests_without_it_get_401() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &["kozmo-plugin-echo"]);
    let out = kozmo()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(root.path().join("data"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .env_remove("KOZMO_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let d = Daemon::start(
        root.path(),
        &["kozmo-plugin-echo"],
        &["--listen", "0.0.0.0:0", "--api-token", "t0k3n"],
    );
    let port = d.client.base().rsplit(':').next().unwrap().to_string();
    let authed = Client::new(&format!("http://127.0.0.1:{port}"), Some("t0k3n".into()));
    assert_eq!(authed.get("/v1/executions").unwrap().0, 200);
    let anonymous = Client::new(&format!("http://127.0.0.1:{port}"), None);
    let err = anonymous.get("/v1/executions").unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 401, .. }), "{err}");
}

/// Runs `kozmo serve` over `plugins` (for daemons that refuse to start).
fn serve_until_exit(root: &Path, plugins: &Path) -> std::process::Output {
    kozmo()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.join("data"))
        .arg("--plugins-dir")
        .arg(plugins)
        .output()
        .unwrap()
}

#[test]
fn bad_plugins_refuse_to_start_with_exit_code_2() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &["kozmo-plugin-echo"]);
    std::fs::write(plugins.join("libgarbage.so"), b"not a library").unwrap();
    let out = serve_until_exit(root.path(), &plugins);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("libgarbage.so"));
}

#[test]
fn flags_select_plugins_and_override_quotas() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        root.path(),
        &PLUGINS,
        &[
            "--enable-plugin",
            "shell,sleep-quota",
            "--resource-quota",
            "sleep-quota:slots=1",
        ],
    );
    let ids = d.plugin_ids();
    assert_eq!(ids, ["shell", "sleep-quota"]);
    // Quota 1: the second sleep waits for the first one's slot.
    let mut first = read_json(&example("sleep-quota.json"));
    first["execution_id"] = json!("first");
    first["inputs"]["seconds"] = json!(2);
    let mut second = first.clone();
    second["execution_id"] = json!("second");
    d.submit(&first);
    d.wait_phase("first", |p| p == "Running", Duration::from_secs(20));
    d.submit(&second);
    let v = d.wait_phase("second", |p| p == "Running", Duration::from_secs(20));
    let waiting = |v: &Value| v["plugin_phase"] == "PhaseWaitingForResources";
    let mut saw_waiting = waiting(&v);
    let start = Instant::now();
    while !saw_waiting && start.elapsed() < Duration::from_secs(5) {
        let (_, v) = d.client.get("/v1/executions/second").unwrap();
        saw_waiting = waiting(&v);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_waiting, "the second sleep waited for the quota");
    assert_eq!(d.wait_terminal("first")["phase"], "Succeeded");
    assert_eq!(d.wait_terminal("second")["phase"], "Succeeded");
}

// ---- containment of in-process plugins ----

const HOSTILE: [&str; 2] = ["kozmo-plugin-echo", "kozmo-fixture-hostile"];

impl Daemon {
    /// The kinds of an execution's events, in order.
    fn event_kinds(&self, id: &str) -> Vec<String> {
        let (_, v) = self.client.get(&format!("/v1/executions/{id}/events")).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    }

    fn get(&self, id: &str) -> Value {
        self.client.get(&format!("/v1/executions/{id}")).unwrap().1
    }

    /// The ids `GET /v1/plugins` lists.
    fn plugin_ids(&self) -> Vec<String> {
        let (_, plugins) = self.client.get("/v1/plugins").unwrap();
        plugins
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    }
}

#[test]
fn a_segfaulting_plugin_is_failed_after_the_crash_loop_limit_and_the_rest_goes_on() {
    use std::os::unix::process::ExitStatusExt;
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(root.path(), &HOSTILE, &["--crash-loop-limit", "2"]);
    let before = d.submit(&json!({"execution_id": "echo-before", "type": "echo", "inputs": {"x": 1}}));
    assert_eq!(d.wait_terminal(&before)["phase"], "Succeeded");
    // The daemon dies inside handle: the answer may never come.
    let _ = d.client.post(
        "/v1/executions",
        &json!({"execution_id": "bomb", "type": "hostile", "inputs": {"do": "segfault"}}),
    );
    let first = d.child.take().unwrap().wait().unwrap();
    assert_eq!(first.signal(), Some(libc::SIGSEGV), "{first}");

    let deaths = d.restart_until_stable(Duration::from_secs(2), 3);
    assert_eq!(
        deaths.iter().map(|s| s.signal()).collect::<Vec<_>>(),
        [Some(libc::SIGSEGV)],
        "the first restart resumes the execution and dies again; the second fails it"
    );
    let v = d.wait_terminal("bomb");
    assert_eq!(v["phase"], "Failed", "{v}");
    assert_eq!(v["error"]["code"], "PluginCrashed", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("plugin \"hostile\" crashed the daemon 2 times in a row during handle of execution bomb")
            && message.contains("kozmo serve --isolate hostile"),
        "{message}"
    );
    let kinds = d.event_kinds("bomb");
    assert_eq!(kinds.iter().filter(|k| *k == "plugin_crash").count(), 2, "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("terminal"), "{kinds:?}");

    let after = d.submit(&json!({"execution_id": "echo-after", "type": "echo", "inputs": {"x": 2}}));
    assert_eq!(d.wait_terminal(&after)["phase"], "Succeeded");
    assert_eq!(d.get(&before)["phase"], "Succeeded");
    assert!(d.log_text().contains("crash-loop protection"), "{}", d.log_text());
}

#[test]
fn a_stuck_call_is_visible_sigterm_names_it_and_a_removed_plugins_execution_waits_for_it() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        root.path(),
        &HOSTILE,
        &["--call-warn-after-secs", "0.2", "--shutdown-grace-secs", "0.5"],
    );
    d.submit(&json!({"execution_id": "sleepy", "type": "hostile", "inputs": {"do": "sleep", "ms": 5000}}));
    let v = d.wait_phase_where("sleepy", |v| v["waiting"].is_string(), Duration::from_secs(20));
    let waiting = v["waiting"].as_str().unwrap();
    assert!(waiting.starts_with("plugin call handle in progress for "), "{v}");
    assert_eq!(v["plugin_id"], "hostile");
    let start = Instant::now();
    while !d.event_kinds("sleepy").contains(&"slow_call".to_string()) {
        assert!(start.elapsed() < Duration::from_secs(2), "no slow_call event");
        std::thread::sleep(Duration::from_millis(20));
    }

    // SIGTERM stops waiting after the grace period and names the call.
    let started = Instant::now();
    let status = d.signal("TERM");
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not wait for the 5 s call: {:?}",
        started.elapsed()
    );
    let log = d.log_text();
    assert!(
        log.contains("grace period (500ms) is over with 1 step(s) still running: sleepy (handle for "),
        "{log}"
    );

    // The plugin is gone: the execution waits, visibly, and nothing else runs it.
    let hostile = d
        .plugins
        .join(kozmo_testkit::library_file_name("kozmo-fixture-hostile"));
    let aside = root.path().join("hostile.so.aside");
    std::fs::rename(&hostile, &aside).unwrap();
    d.restart();
    let v = d.get("sleepy");
    assert_eq!(v["waiting"], "plugin \"hostile\" is not loaded", "{v}");
    let out = d.cli(&["get", "sleepy"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("waiting: plugin \"hostile\" is not loaded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let echo = d.submit(&json!({"type": "echo", "inputs": {"x": 1}}));
    assert_eq!(d.wait_terminal(&echo)["phase"], "Succeeded");
    std::thread::sleep(Duration::from_millis(500));
    let v = d.get("sleepy");
    assert!(!is_terminal(&v), "never run under another plugin: {v}");
    assert!(!d.event_kinds("sleepy").contains(&"terminal".to_string()));
    assert_eq!(d.signal("TERM").code(), Some(0));

    // The plugin is back: the execution completes under it.
    std::fs::rename(&aside, &hostile).unwrap();
    d.restart();
    let v = d.wait_terminal("sleepy");
    assert_eq!(v["phase"], "Succeeded", "{v}");
    assert!(v.get("waiting").is_none(), "{v}");
    let (_, out) = d.client.get("/v1/executions/sleepy/outputs").unwrap();
    assert_eq!(out["outputs"]["do"], json!({"string": "sleep"}), "{out}");
}

#[test]
fn a_library_crashing_at_load_stops_serve_with_one_line_unless_skipped() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &["kozmo-plugin-echo", "kozmo-fixture-loadcrash"]);
    let crash = plugins.join(kozmo_testkit::library_file_name("kozmo-fixture-loadcrash"));
    let out = serve_until_exit(root.path(), &plugins);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = format!(
        "error[load-crash]: {}: crashed while loading (SIGSEGV)",
        crash.display()
    );
    assert!(stderr.lines().any(|l| l == line), "{stderr}");

    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &["--skip-invalid-plugins"]);
    let ids = d.plugin_ids();
    assert_eq!(ids, ["echo"]);
    assert!(
        d.log_text().contains("crashed while loading (SIGSEGV)"),
        "{}",
        d.log_text()
    );
}

fn is_terminal(v: &Value) -> bool {
    matches!(v["phase"].as_str(), Some("Succeeded" | "Failed" | "Aborted"))
}
