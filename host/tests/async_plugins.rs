//! Asynchronous (web-API) plugins through the real daemon: the bundled
//! `rest` plugin (on `kozmo_interface::webapi`) against a local job service
//! (`kozmo_testkit::job_service`), asserting on executions, events and the
//! service's request log.

use std::time::Duration;

use kozmo_testkit::job_service::JobService;
use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

const PLUGINS: [&str; 1] = ["kozmo-plugin-rest"];

/// Polls every 0.2 s, delete backoff from 0.2 s.
const FAST: [(&str, &str); 3] = [
    ("KOZMO_PLUGIN_REST_POLL_INTERVAL_SECS", "0.2"),
    ("KOZMO_PLUGIN_REST_DELETE_BACKOFF_SECS", "0.2"),
    ("KOZMO_PLUGIN_REST_DELETE_BACKOFF_MAX_SECS", "0.4"),
];

fn daemon(root: &std::path::Path, extra_env: &[(&str, &str)]) -> Daemon {
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.extend_from_slice(extra_env);
    Daemon::start_with_env(root, &PLUGINS, &[], &env)
}

/// A `rest` task on `svc`: a job of `duration_ms` ending with `outcome`.
fn task(svc: &JobService, duration_ms: u64, outcome: &str) -> Value {
    let mut t: Value = read_json(&example("rest-job.json"));
    t["inputs"] = json!({ "base_url": svc.url(), "n": 42, "duration_ms": duration_ms });
    t["metadata"]["retries"] = json!(0);
    t["custom"]["create"]["body"] = json!(format!(
        "{{\"key\": \"{{{{ .PerRetryUniqueKey }}}}\", \"duration_ms\": {{{{ .Inputs.duration_ms }}}}, \"result\": {{{{ .Inputs.n }}}}, \"outcome\": \"{outcome}\", \"error\": \"disk full on the remote side\"}}"
    ));
    t
}

fn events(d: &Daemon, id: &str) -> Vec<Value> {
    let (_, v) = d.client.get(&format!("/v1/executions/{id}/events")).unwrap();
    v["items"].as_array().unwrap().clone()
}

fn outputs(d: &Daemon, id: &str) -> Value {
    d.client.get(&format!("/v1/executions/{id}/outputs")).unwrap().1
}

fn texts(events: &[Value]) -> String {
    events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_remote_job_succeeds_with_its_outputs_and_is_polled_not_hammered() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    // Rounds run at the harness's 0.2 s resync; polls only every 0.6 s.
    let d = daemon(root.path(), &[("KOZMO_PLUGIN_REST_POLL_INTERVAL_SECS", "0.6")]);
    let id = d.submit(&task(&svc, 1500, "succeeded"));
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Succeeded", "{v}");
    let out = outputs(&d, &id);
    assert!(out.to_string().contains("42"), "{out}");
    assert_eq!(svc.count("POST"), 1);
    // A 1.5 s job polled every 0.6 s: 3 polls (+1 of tolerance), although
    // the execution's rounds run about every 0.2 s (rounds between polls
    // call nothing).
    let gets = svc.count("GET");
    assert!((1..=4).contains(&gets), "{gets} polls: {:?}", svc.requests());
    let ev = texts(&events(&d, &id));
    assert!(ev.contains("PhaseRunning"), "{ev}");
}

#[test]
fn a_remote_failure_fails_the_execution_with_the_remote_message() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[]);
    let id = d.submit(&task(&svc, 300, "failed"));
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Failed", "{v}");
    let err = v["error"].to_string();
    assert!(err.contains("RemoteJobFailed"), "{v}");
    assert!(err.contains("disk full on the remote side"), "{v}");
}

#[test]
fn a_fast_job_is_finished_by_create_without_a_poll() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[]);
    let id = d.submit(&task(&svc, 0, "succeeded"));
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Succeeded", "{v}\n{}", texts(&events(&d, &id)));
    assert!(outputs(&d, &id).to_string().contains("42"));
    assert_eq!((svc.count("POST"), svc.count("GET")), (1, 0), "{:?}", svc.requests());
}

#[test]
fn get_errors_below_the_budget_show_and_the_job_still_succeeds() {
    let svc = JobService::start();
    svc.fail_next("GET", 4, 503);
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[]);
    let id = d.submit(&task(&svc, 500, "succeeded"));
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Succeeded", "{v}");
    assert_eq!(v["attempt"], 0, "no retry: {v}");
    let ev = texts(&events(&d, &id));
    for n in 1..=4 {
        assert!(
            ev.contains(&format!("polling the remote job failed ({n}/5)")),
            "each changed reason is an event (same phase): {ev}"
        );
    }
    assert_eq!(svc.count("POST"), 1);
}

#[test]
fn get_errors_over_the_budget_are_a_system_failure_and_the_job_is_deleted() {
    let svc = JobService::start();
    svc.fail_next("GET", 10_000, 500);
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[]);
    let id = d.submit(&task(&svc, 60_000, "succeeded"));
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Failed", "{v}");
    assert!(v["error"].to_string().contains("SyncFailures"), "{v}");
    assert_eq!(v["system_failures"], 3, "retried on the system budget: {v}");
    // Four attempts, each created its own job (new generated name) and
    // deleted it on the way out (the failure asks for cleanup).
    assert_eq!(svc.count("POST"), 4, "{:?}", svc.requests());
    let jobs = svc.jobs();
    assert_eq!(jobs.len(), 4);
    assert!(jobs.iter().all(|j| j.cancelled), "{jobs:?}");
}

#[test]
fn abort_retries_a_failing_delete_until_the_job_is_deleted() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[]);
    let id = d.submit(&task(&svc, 60_000, "succeeded"));
    d.wait_phase_where(&id, |v| v["plugin_phase"] == "PhaseRunning", Duration::from_secs(30));
    svc.fail_next("DELETE", 2, 500);
    let out = d.cli(&["abort", &id, "--reason", "no longer needed"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Aborted", "{v}");
    assert_eq!(svc.count("DELETE"), 3, "{:?}", svc.requests());
    let jobs = svc.jobs();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].cancelled, "the remote job is deleted in the end");
    let ev = texts(&events(&d, &id));
    assert!(ev.contains("cancelling remote job: delete failed (try 1)"), "{ev}");
    assert!(ev.contains("cancelling remote job: delete failed (try 2)"), "{ev}");
}

#[test]
fn a_quota_of_one_makes_the_second_job_wait_with_a_reason() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[("KOZMO_PLUGIN_REST_QUOTA", "1")]);
    let a = d.submit(&task(&svc, 1500, "succeeded"));
    d.wait_phase_where(&a, |v| v["plugin_phase"] == "PhaseRunning", Duration::from_secs(30));
    let b = d.submit(&task(&svc, 200, "succeeded"));
    let waiting = d.wait_phase_where(
        &b,
        |v| v["plugin_phase"] == "PhaseWaitingForResources",
        Duration::from_secs(30),
    );
    assert_eq!(
        svc.count("POST"),
        1,
        "b is not created while a holds the token: {waiting}"
    );
    assert_eq!(d.wait_terminal(&a)["phase"], "Succeeded");
    assert_eq!(d.wait_terminal(&b)["phase"], "Succeeded");
    assert_eq!(svc.count("POST"), 2);
    let ev = texts(&events(&d, &b));
    assert!(
        ev.contains("waiting for a quota token in jobs: its quota is used up"),
        "{ev}"
    );
}

#[test]
fn the_write_rate_limit_holds_creates_back() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let d = daemon(
        root.path(),
        &[
            ("KOZMO_PLUGIN_REST_WRITE_QPS", "4"),
            ("KOZMO_PLUGIN_REST_WRITE_BURST", "1"),
        ],
    );
    let ids: Vec<String> = (0..10).map(|_| d.submit(&task(&svc, 0, "succeeded"))).collect();
    for id in &ids {
        assert_eq!(d.wait_terminal(id)["phase"], "Succeeded");
    }
    let posts: Vec<Duration> = svc
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.at)
        .collect();
    assert_eq!(posts.len(), 10);
    // 4 a second, burst 1: 10 creates take at least 9/4 s (10 % tolerance),
    // and no 1 s window holds more than 4 + 1 (+1 tolerance).
    let span = posts[9] - posts[0];
    assert!(span >= Duration::from_millis(2025), "10 creates in {span:?}");
    for (i, t) in posts.iter().enumerate() {
        let in_window = posts[i..].iter().filter(|u| **u - *t < Duration::from_secs(1)).count();
        assert!(in_window <= 6, "{in_window} creates within 1 s from {t:?}: {posts:?}");
    }
}

#[test]
fn a_daemon_killed_mid_poll_resumes_polling_the_same_job() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let mut d = daemon(root.path(), &[]);
    let id = d.submit(&task(&svc, 3000, "succeeded"));
    d.wait_phase_where(&id, |v| v["plugin_phase"] == "PhaseRunning", Duration::from_secs(30));
    while svc.count("GET") < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal("KILL");
    let killed_at = svc.uptime();
    d.restart();
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Succeeded", "{v}");
    assert_eq!(v["attempt"], 0, "{v}");
    assert_eq!(svc.count("POST"), 1, "no second create: {:?}", svc.requests());
    let after: Vec<_> = svc.requests().into_iter().filter(|r| r.at > killed_at).collect();
    assert!(
        !after.is_empty() && after.iter().all(|r| r.method == "GET" && r.path == "/jobs/job-1"),
        "{after:?}"
    );
    assert!(outputs(&d, &id).to_string().contains("42"));
}

#[test]
fn the_example_runs_through_submit_wait() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[]);
    let mut t: Value = read_json(&example("rest-job.json"));
    t["inputs"]["base_url"] = json!(svc.url());
    let file = root.path().join("rest-job.json");
    std::fs::write(&file, t.to_string()).unwrap();
    let out = d.cli(&["submit", file.to_str().unwrap(), "--wait", "-o", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Succeeded (PhaseSuccess"), "{stderr}");
    let outputs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(outputs.to_string().contains("42"), "{outputs}");
}

#[test]
fn a_bad_config_fails_permanently_saying_what_and_where() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[]);
    let mut t = task(&svc, 0, "succeeded");
    t["custom"]["create"]["job_id"] = json!("$..[");
    let id = d.submit(&t);
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Failed", "{v}");
    let err = v["error"].to_string();
    assert!(
        err.contains("BadRestConfig") && err.contains("custom.create.job_id"),
        "{v}"
    );
    assert_eq!(svc.count("POST"), 0);
}

#[test]
fn the_rest_plugin_isolated_polls_and_aborts_the_same_way() {
    let svc = JobService::start();
    let root = tempfile::tempdir().unwrap();
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.push(("KOZMO_PLUGIN_REST_POLL_INTERVAL_SECS", "0.6"));
    let d = Daemon::start_with_env(root.path(), &PLUGINS, &["--isolate", "rest"], &env);
    let ok = d.submit(&task(&svc, 1500, "succeeded"));
    assert_eq!(d.wait_terminal(&ok)["phase"], "Succeeded");
    assert!(outputs(&d, &ok).to_string().contains("42"));
    let gets = svc.count("GET");
    assert!((1..=4).contains(&gets), "{gets} polls: {:?}", svc.requests());
    let long = d.submit(&task(&svc, 60_000, "succeeded"));
    d.wait_phase_where(&long, |v| v["plugin_phase"] == "PhaseRunning", Duration::from_secs(30));
    svc.fail_next("DELETE", 1, 503);
    assert!(d.cli(&["abort", &long]).status.success());
    assert_eq!(d.wait_terminal(&long)["phase"], "Aborted");
    assert_eq!(svc.count("DELETE"), 2);
    assert!(svc.jobs().iter().any(|j| j.cancelled));
}

#[test]
fn a_secret_header_reaches_the_service_and_nothing_else() {
    const SECRET: &str = "s3cr3t-jobs-token";
    let svc = JobService::start();
    svc.fail_next("GET", 2, 500);
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), &[("KOZMO_SECRET_JOBS_TOKEN", SECRET)]);
    let mut t = task(&svc, 500, "succeeded");
    t["custom"]["headers"] = json!({ "Authorization": "Bearer {{ .Secrets.JOBS_TOKEN }}" });
    let id = d.submit(&t);
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Succeeded", "{v}");
    let requests = svc.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {SECRET}"))),
        "{requests:?}"
    );
    let seen = format!(
        "{v}\n{}\n{}\n{}",
        texts(&events(&d, &id)),
        outputs(&d, &id),
        d.log_text()
    );
    assert!(!seen.contains(SECRET), "the secret leaked:\n{seen}");
    // A secret the daemon does not have: the error names the key, not a value.
    let mut t = task(&svc, 0, "succeeded");
    t["custom"]["headers"] = json!({ "X-Token": "{{ .Secrets.NOT_GIVEN }}" });
    let id = d.submit(&t);
    let v = d.wait_terminal(&id);
    assert_eq!(v["phase"], "Failed", "{v}");
    let err = v["error"].to_string();
    assert!(
        err.contains("custom.headers.X-Token") && err.contains("secret NOT_GIVEN"),
        "{v}"
    );
}
