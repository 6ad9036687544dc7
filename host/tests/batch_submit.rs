//! `POST /v1/executions:batch` and `kozmo submit --many` against the real
//! daemon: a thousand executions in one request are durable when answered
//! (a SIGKILL right after the answer loses none), bad items are reported by
//! index and JSON path with nothing submitted, per-item conflicts do not
//! fail the others.

use std::collections::HashSet;
use std::time::Duration;

use kozmo_host::client::ClientError;
use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

fn all_ids(d: &Daemon) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/executions?limit=1000&after={a}"),
            None => "/v1/executions?limit=1000".into(),
        };
        let (_, page) = d.client.get(&path).unwrap();
        for item in page["items"].as_array().unwrap() {
            ids.insert(item["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return ids,
        }
    }
}

#[test]
fn a_thousand_in_one_request_survive_a_kill_right_after_the_answer() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);
    let items: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "echo", "inputs": {"i": i}, "execution_id": format!("batch-{i}")}))
        .collect();
    let (status, answer) = d.client.post("/v1/executions:batch", &Value::Array(items)).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["created"], 1000);
    let results = answer["items"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            (r["index"].as_u64(), r["status"].as_u64()),
            (Some(i as u64), Some(201)),
            "{r}"
        );
        assert_eq!(r["id"], format!("batch-{i}"));
    }
    // SIGKILL at once: every acknowledged execution is in the store.
    d.signal("KILL");
    d.restart();
    let ids = all_ids(&d);
    for i in 0..1000 {
        assert!(ids.contains(&format!("batch-{i}")), "batch-{i} lost after SIGKILL");
    }
    for i in [0, 499, 999] {
        assert_eq!(d.wait_terminal(&format!("batch-{i}"))["phase"], "Succeeded");
    }
}

#[test]
fn bad_items_are_listed_by_index_and_path_and_nothing_is_submitted() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);
    let items = json!([
        {"type": "echo"},
        {"type": "echo", "metadata": {"retriez": 1}},
        [1, 2],
        {"type": "echo", "execution_id": 7},
        {"type": "echo", "execution": {"node_id": "../up"}},
    ]);
    let (status, answer) = d.client.post_any("/v1/executions:batch", &items).unwrap();
    assert_eq!(status, 400, "{answer}");
    let errors = answer["errors"].as_array().unwrap();
    let got: Vec<(u64, Option<&str>)> = errors
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["path"].as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some("metadata.retriez")),
            (2, None),
            (3, Some("execution_id")),
            (4, Some("execution.node_id")),
        ],
        "{answer}"
    );
    assert!(all_ids(&d).is_empty(), "nothing of a refused batch is submitted");

    for (body, why) in [
        (json!([]), "empty"),
        (json!({"type": "echo"}), "not an array"),
        (
            Value::Array(vec![json!({"type": "echo"}); 1001]),
            "over max_batch_items",
        ),
    ] {
        match d.client.post("/v1/executions:batch", &body) {
            Err(ClientError::Api { status: 400, .. }) => {}
            other => panic!("{why}: {other:?}"),
        }
    }
}

#[test]
fn conflicts_are_per_item_and_resubmission_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);
    d.client
        .post(
            "/v1/executions",
            &json!({"type": "echo", "inputs": {"v": 1}, "execution_id": "taken"}),
        )
        .unwrap();
    let items = json!([
        {"type": "echo", "inputs": {"v": 2}, "execution_id": "taken"},
        {"type": "echo", "inputs": {"v": 1}, "execution_id": "fresh"},
    ]);
    let (_, first) = d.client.post("/v1/executions:batch", &items).unwrap();
    assert_eq!(first["items"][0]["status"], 409, "{first}");
    assert_eq!(first["items"][0]["error"], "conflict");
    assert_eq!(first["items"][1]["status"], 201);
    let (_, again) = d.client.post("/v1/executions:batch", &items).unwrap();
    assert_eq!(again["items"][1]["status"], 200, "{again}");
    assert_eq!(again["created"], 0);
    assert_eq!(d.wait_terminal("fresh")["phase"], "Succeeded");
}

#[test]
fn submit_many_sends_a_jsonl_file_in_batches() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);
    let file = root.path().join("tasks.jsonl");
    let mut text = String::new();
    for i in 0..250 {
        text.push_str(&json!({"type": "echo", "inputs": {"i": i}}).to_string());
        text.push('\n');
        if i == 100 {
            text.push('\n'); // blank lines are skipped
        }
    }
    std::fs::write(&file, &text).unwrap();
    let out = d.cli(&["submit", "--many", file.to_str().unwrap(), "--batch-size", "100"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 250);
    assert!(String::from_utf8_lossy(&out.stderr).contains("250 created"));
    d.wait_phase(&ids[249], |p| p == "Succeeded", Duration::from_secs(60));

    // A bad line: named by its line number, exit 2, nothing of its batch sent.
    std::fs::write(&file, "{\"type\": \"echo\"}\n{\"type\": \"echo\", \"metadta\": {}}\n").unwrap();
    let out = d.cli(&["submit", "--many", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: `metadta`"), "{err}");
    assert_eq!(all_ids(&d).len(), 250);
}

#[test]
fn a_single_submission_answers_the_view_a_get_shows() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);
    let body = json!({"type": "echo", "inputs": {"x": 1}, "execution_id": "viewed",
        "execution": {"node_id": "n7"}});
    let (status, answered) = d.client.post("/v1/executions", &body).unwrap();
    assert_eq!(status, 201);
    let (_, got) = d.client.get("/v1/executions/viewed").unwrap();
    for field in [
        "id",
        "task_type",
        "generated_name",
        "created_at",
        "plugin_id",
        "attempt",
    ] {
        assert_eq!(answered[field], got[field], "{field}: {answered} vs {got}");
    }
    assert_eq!(answered["generated_name"], "viewed-n7-0");
    assert_eq!(answered["phase"], "Queued");
    // The same body again: 200 with the stored view.
    let (status, again) = d.client.post("/v1/executions", &body).unwrap();
    assert_eq!((status, again["id"].as_str()), (200, Some("viewed")));
}
