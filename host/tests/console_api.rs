//! The endpoints behind the console, against the real daemon: an
//! execution's files are served from its own data-store directories only
//! (no `..`, no absolute path, no symbolic link a task made, no other
//! execution's files), size-capped; why an execution waits; the quotas; the
//! console's files need no token, the API does.

mod daemon_harness;

use daemon_harness::Daemon;
use serde_json::{json, Value};

fn shell(id: &str, script: &str) -> Value {
    json!({
        "type": "shell",
        "execution_id": id,
        "metadata": {"retries": 0, "timeout": "1m"},
        "container": {"command": ["sh", "-c", script]},
    })
}

fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String, Option<String>) {
    let mut req = ureq::get(&format!("{base}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => {
            let size = r.header("x-file-size").map(str::to_string);
            (r.status(), r.into_string().unwrap(), size)
        }
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap(), None),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[test]
fn files_are_served_from_the_executions_own_directories_only() {
    let root = tempfile::tempdir().unwrap();
    // The shell plugin isolated: its files are the same, and the plugins
    // list says where it runs.
    let d = Daemon::start(root.path(), &["kozmo-plugin-shell"], &["--isolate", "shell"]);
    let base = d.client.base().to_string();
    let (_, plugins, _) = get(&base, "/v1/plugins", None);
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    assert_eq!(plugins[0]["isolated"], true, "{plugins}");
    let secret = root.path().join("outside.txt");
    std::fs::write(&secret, "not for the console").unwrap();
    // The task links its working directory to a file outside and prints a lot.
    let script = format!(
        "ln -s {} escape; ln -s / rootdir; mkfifo pipe; head -c 3000000 /dev/zero | tr '\\0' x; echo",
        secret.display()
    );
    d.submit(&shell("files-1", &script));
    d.submit(&shell("files-2", "echo other"));
    assert_eq!(d.wait_terminal("files-1")["phase"], "Succeeded");
    d.wait_terminal("files-2");

    let (status, body, _) = get(&base, "/v1/executions/files-1/files", None);
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let paths: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"raw/files-1-n0-0/stdout"), "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("raw/files-1-n0-0/") || p.starts_with("executions/files-1/")),
        "{paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.ends_with("escape") || p.ends_with("rootdir") || p.ends_with("pipe")),
        "links and FIFOs are not listed: {paths:?}"
    );

    // 1 MiB at most per read; the rest from an offset.
    let (status, text, size) = get(&base, "/v1/executions/files-1/file?path=raw/files-1-n0-0/stdout", None);
    assert_eq!(status, 200);
    assert_eq!(text.len(), 1024 * 1024);
    assert_eq!(size.as_deref(), Some("3000001"));
    let (_, tail, _) = get(
        &base,
        "/v1/executions/files-1/file?path=raw/files-1-n0-0/stdout&offset=2999990&limit=100",
        None,
    );
    assert_eq!(tail, "xxxxxxxxxx\n");

    for (path, want) in [
        ("raw/files-1-n0-0/shell/escape", 404),
        ("raw/files-1-n0-0/shell/rootdir/etc/passwd", 404),
        ("raw/files-1-n0-0/shell/pipe", 404),
        ("raw/files-1-n0-0/shell", 404),
        ("raw/files-2-n0-0/stdout", 404),
        ("raw/files-1-n0-0", 404),
        ("kozmo.db", 404),
        ("raw/files-1-n0-0/../files-2-n0-0/stdout", 400),
        ("../kozmo.db", 400),
        ("/etc/passwd", 400),
        ("", 400),
    ] {
        let (status, body, _) = get(&base, &format!("/v1/executions/files-1/file?path={path}"), None);
        assert_eq!(status, want, "{path}: {body}");
        assert!(
            !body.contains("not for the console") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
    let (status, _, _) = get(&base, "/v1/executions/nope/file?path=raw/nope-n0-0/stdout", None);
    assert_eq!(status, 404);
    let (status, _, _) = get(&base, "/v1/executions/files-1/file?path=x&limit=0", None);
    assert_eq!(status, 400);

    // A finished execution does not wait.
    let (_, wait, _) = get(&base, "/v1/executions/files-2/wait", None);
    let wait: Value = serde_json::from_str(&wait).unwrap();
    assert_eq!(wait["kind"], "finished", "{wait}");
    assert_eq!(wait["waiting"], false);
}

#[test]
fn quotas_and_waits_over_http_and_the_token_covers_the_api_not_the_page() {
    let root = tempfile::tempdir().unwrap();
    let token = "console-api-token-77";
    let d = Daemon::start_with_env(
        root.path(),
        &["kozmo-plugin-sleep-quota"],
        &["--api-token", token],
        &[("KOZMO_SECRET_SLEEP_QUOTA", "1")],
    );
    let base = d.client.base().to_string();
    let (status, page, _) = get(&base, "/", None);
    assert_eq!(status, 200);
    assert!(page.contains("/console/app.js") && !page.contains(token));
    assert_eq!(get(&base, "/console/app.js", None).0, 200);
    assert_eq!(get(&base, "/console/nope.js", None).0, 404);
    assert_eq!(get(&base, "/v1/quotas", None).0, 401);

    for id in ["q-1", "q-2", "q-3"] {
        d.submit(&json!({"type": "sleep-quota", "execution_id": id, "inputs": {"seconds": 60}}));
    }
    let start = std::time::Instant::now();
    let quota = loop {
        let (_, body, _) = get(&base, "/v1/quotas", Some(token));
        let q: Value = serde_json::from_str(&body).unwrap();
        let ns = q["items"][0].clone();
        if ns["waiting"] == 2 && ns["in_use"] == 1 {
            break ns;
        }
        assert!(start.elapsed().as_secs() < 30, "{q}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(quota["quota"], 1);
    assert_eq!(quota["members_known"], true);
    let holder = quota["holders"][0].as_str().unwrap().to_string();
    let waiters: Vec<String> = serde_json::from_value(quota["waiters"].clone()).unwrap();
    assert_eq!(waiters.len(), 2);
    for (place, id) in waiters.iter().enumerate() {
        let (_, body, _) = get(&base, &format!("/v1/executions/{id}/wait"), Some(token));
        let w: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(w["kind"], "resources", "{w}");
        assert_eq!(w["reason"], "quota for sleep-quota slots exhausted; waiting", "{w}");
        let r = &w["resources"][0];
        assert!(r["namespace"].as_str().unwrap().ends_with(":sleep-quota:slots"), "{w}");
        assert_eq!((r["in_use"].clone(), r["quota"].clone()), (json!(1), json!(1)), "{w}");
        assert_eq!(r["position"], place as u64 + 1, "in order of submission: {w}");
        assert_eq!(r["holders"], json!([holder]), "{w}");
    }
    let (_, body, _) = get(&base, &format!("/v1/executions/{holder}/wait"), Some(token));
    let w: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (w["kind"].clone(), w["waiting"].clone()),
        (json!("running"), json!(false)),
        "{w}"
    );
    let (_, plugins, _) = get(&base, "/v1/plugins", Some(token));
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    assert_eq!(plugins[0]["isolated"], false, "{plugins}");
}

#[test]
fn an_execution_whose_plugin_is_not_loaded_says_so() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(root.path(), &["kozmo-plugin-shell", "kozmo-plugin-sleep-quota"], &[]);
    d.submit(&json!({"type": "sleep-quota", "execution_id": "orphan", "inputs": {"seconds": 600}}));
    d.wait_phase_where(
        "orphan",
        |v| v["plugin_phase"] == "PhaseRunning",
        std::time::Duration::from_secs(30),
    );
    assert!(d.signal("TERM").success());
    std::fs::remove_file(d.plugins.join("libkozmo_plugin_sleep_quota.so")).unwrap();
    d.restart();
    let base = d.client.base().to_string();
    let (status, body, _) = get(&base, "/v1/executions/orphan/wait", None);
    assert_eq!(status, 200, "{body}");
    let w: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(w["kind"], "plugin_not_loaded", "{w}");
    assert_eq!(w["waiting"], true, "{w}");
    assert_eq!(w["reason"], "plugin \"sleep-quota\" is not loaded", "{w}");
}
