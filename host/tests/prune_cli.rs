//! `kozmo prune` against the real daemon: a dry run reports and removes
//! nothing, a real one removes and reports, the metrics count it, a daemon
//! with `--retention-max-executions` prunes by itself in the background,
//! and bad input is refused with what to write.

mod daemon_harness;

use std::time::{Duration, Instant};

use daemon_harness::*;
use serde_json::Value;

fn echo() -> Value {
    read_json(&example("echo.json"))
}

fn count(d: &Daemon) -> usize {
    let (_, v) = d.client.get("/v1/executions?limit=1000").unwrap();
    v["items"].as_array().map_or(0, Vec::len)
}

/// Whether the API answers 404 for `id`.
fn gone(d: &Daemon, id: &str) -> bool {
    matches!(
        d.client.get(&format!("/v1/executions/{id}")),
        Err(kozmo_host::client::ClientError::Api { status: 404, .. })
    )
}

fn json_out(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn kozmo_prune_reports_then_removes_and_the_metrics_count_it() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        root.path(),
        &["kozmo-plugin-echo"],
        &["--retention-interval", "forever"],
    );
    let ids: Vec<String> = (0..3).map(|_| d.submit(&echo())).collect();
    for id in &ids {
        d.wait_terminal(id);
    }
    assert_eq!(count(&d), 3);

    let dry = json_out(&d.cli(&["prune", "--older-than", "0s", "--dry-run", "-o", "json"]));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["executions"], 3, "{dry}");
    assert_eq!(count(&d), 3, "a dry run removes nothing");

    let kept = json_out(&d.cli(&["prune", "-o", "json"]));
    assert_eq!(kept["executions"], 0, "the default keeps a week: {kept}");

    let text = d.cli(&["prune", "--older-than", "0s"]);
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("removed 3 terminal executions"), "{text}");
    assert!(text.contains("no terminal execution kept"), "{text}");
    assert_eq!(count(&d), 0);
    assert!(gone(&d, &ids[0]));

    let metrics = d.client.get_text("/metrics").unwrap();
    assert!(
        metrics.contains("kozmo_retention_executions_pruned_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("kozmo_retention_bytes_reclaimed_total"), "{metrics}");
    assert!(metrics.contains("kozmo_retention_oldest_kept_age_seconds"), "{metrics}");

    let bad = d.cli(&["prune", "--older-than", "7 days"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--older-than") && err.contains("unknown unit"), "{err}");
    match d.client.post("/v1/prune", &serde_json::json!({"older_than": 7})) {
        Err(kozmo_host::client::ClientError::Api {
            status: 400, detail, ..
        }) => {
            assert!(detail.contains("older_than"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_background_pruner_keeps_at_most_max_executions() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        root.path(),
        &["kozmo-plugin-echo"],
        &["--retention-max-executions", "2", "--retention-interval", "0.2s"],
    );
    let ids: Vec<String> = (0..6).map(|_| d.submit(&echo())).collect();
    let start = Instant::now();
    let settled = |id: &String| {
        gone(&d, id)
            || matches!(
                d.client.get(&format!("/v1/executions/{id}")).map(|(_, v)| v["phase"].clone()),
                Ok(Value::String(p)) if matches!(p.as_str(), "Succeeded" | "Failed" | "Aborted")
            )
    };
    while count(&d) > 2 || !ids.iter().all(settled) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still {} executions; log:\n{}",
            count(&d),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(&d), 2);
    let (_, last) = d.client.get(&format!("/v1/executions/{}", ids[5])).unwrap();
    assert_eq!(last["phase"], "Succeeded", "the newest stays: {last}");
}

#[test]
fn bad_retention_settings_stop_the_daemon_with_the_key() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::new(
        root.path(),
        &["kozmo-plugin-echo"],
        &["--retention-keep", "a week"],
        &[],
    );
    let status = d.try_start().expect_err("must not start");
    assert_eq!(status.code(), Some(2));
    let log = d.log_text();
    assert!(log.contains("retention.keep") && log.contains("unknown unit"), "{log}");
}
