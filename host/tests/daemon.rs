//! The real `kozmo serve` binary on a free loopback port, with temporary
//! directories and the bundled plugins built as shared libraries, driven
//! through the CLI and raw HTTP.

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
        let phase_lines = stderr.lines().filter(|l| l.contains("(Phase")).count();
        assert!(phase_lines >= 2, "{file}: live phase changes are printed: {stderr}");
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("PhaseSuccess"));
    let out = d.cli(&["get", "hello-1", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "Succeeded");
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
    let out = d.cli(&["abort", "long-1", "--reason", "test abort"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = d.wait_terminal("long-1");
    assert_eq!(v["phase"], "Aborted");
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
    assert!(
        text.contains("kozmo_plugin_sleep_quota_sleeps_completed"),
        "plugin metrics appear: {text}"
    );
    let (_, plugins) = d.client.get("/v1/plugins").unwrap();
    assert_eq!(plugins.as_array().unwrap().len(), 3);
    assert_eq!(d.client.get("/healthz").unwrap().1["status"], "ok");
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
    let mut d = Daemon::start(root.path(), &PLUGINS, &[]);
    let marker = root.path().join("started");
    d.submit(&json!({
        "execution_id": "survivor", "type": "shell",
        "interface": {"outputs": {"exit_code": {"type": "integer"}}},
        "container": {"command": ["sh", "-c", "touch \"$1\"; sleep 2; echo done", "sh", marker.to_str().unwrap()]},
    }));
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = d.signal("KILL");
    assert_eq!(status.code(), None);
    d.restart();
    let v = d.wait_terminal("survivor");
    assert_eq!(v["phase"], "Succeeded", "{v}; log:\n{}", d.log_text());
    let (_, out) = d.client.get("/v1/executions/survivor/outputs").unwrap();
    assert_eq!(out["outputs"]["stdout"], json!({"string": "done"}));
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

#[test]
fn bad_plugins_refuse_to_start_with_exit_code_2() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &["kozmo-plugin-echo"]);
    std::fs::write(plugins.join("libgarbage.so"), b"not a library").unwrap();
    let out = kozmo()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.path().join("data"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .output()
        .unwrap();
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
    let (_, plugins) = d.client.get("/v1/plugins").unwrap();
    let ids: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
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
