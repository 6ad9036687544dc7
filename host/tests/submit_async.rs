//! `EngineHandle::submit_async`, what `POST /v1/executions` awaits: many
//! submissions in flight at once, each answered with its own outcome; a
//! submission whose future is dropped still runs; none after shutdown.

mod support;

use std::time::{Duration, Instant};

use kozmo_engine::model::{ExecPhase, ExecutionSpec};
use kozmo_engine::store::Store;
use kozmo_engine::{EngineError, SubmitOutcome};
use serde_json::json;
use support::{spec, Harness};

/// Concurrent submissions.
const CLIENTS: usize = 64;

fn succeeds(n: usize) -> ExecutionSpec {
    spec(json!({"inputs": {"n": n}, "custom": {"rounds": [{"phase": "Success"}]}}))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What submission `i` sends: id and spec.
fn submission(i: usize) -> (Option<String>, ExecutionSpec) {
    match i % 6 {
        0 => (Some(format!("new-{i}")), succeeds(i)),
        // Submitted before: the same spec again, or another one.
        1 => (Some(format!("pre-{i}")), succeeds(i)),
        2 => (Some(format!("pre-{i}")), succeeds(i + 1000)),
        3 => (
            Some(format!("nobody-{i}")),
            spec(json!({"type": format!("nobody-{i}")})),
        ),
        4 => (Some(format!("../bad-{i}")), succeeds(i)),
        _ => (None, succeeds(i)),
    }
}

#[test]
fn concurrent_awaited_submissions_each_get_their_own_answer() {
    let h = Harness::new();
    for i in (0..CLIENTS).filter(|i| matches!(i % 6, 1 | 2)) {
        h.engine.submit(Some(format!("pre-{i}")), succeeds(i)).unwrap();
    }
    let answers = runtime().block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (id, spec) = submission(i);
                tokio::spawn(h.engine.submit_async(id, spec))
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    });
    let mut created = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        match (i % 6, answer) {
            (0 | 5, Ok((SubmitOutcome::Created(id), Some(view)))) => {
                if i % 6 == 0 {
                    assert_eq!(id, format!("new-{i}"));
                }
                assert_eq!(view.id, id);
                assert_eq!(view.phase, ExecPhase::Queued, "{view:?}");
                created.push(id);
            }
            (1, Ok((SubmitOutcome::Existing(id), None))) => assert_eq!(id, format!("pre-{i}")),
            (2, Err(EngineError::Conflict(m))) => {
                assert_eq!(m, format!("execution [pre-{i}] exists with a different spec"))
            }
            (3, Err(EngineError::NoPlugin(m))) => assert!(m.contains(&format!("[nobody-{i}]")), "{m}"),
            (4, Err(EngineError::Invalid(m))) => assert!(m.contains("bad-"), "{m}"),
            (_, other) => panic!("submission {i} got {other:?}"),
        }
    }
    let ids: std::collections::BTreeSet<&String> = created.iter().collect();
    assert_eq!(ids.len(), created.len(), "generated ids are distinct");
    for id in &created {
        assert_eq!(h.wait_terminal(id).phase, ExecPhase::Succeeded, "{id}");
    }
    // The conflicting spec did not replace the first one; the refused
    // submissions left nothing behind.
    for i in 0..CLIENTS {
        match i % 6 {
            2 => {
                let rec = h.store.get_execution(&format!("pre-{i}")).unwrap().unwrap();
                let first = format!("\"n\":{{\"integer\":{i}}}");
                assert!(rec.spec_json.contains(&first), "{}", rec.spec_json);
            }
            3 => assert!(h.store.get_execution(&format!("nobody-{i}")).unwrap().is_none()),
            _ => {}
        }
    }
}

/// Waits until `id` is in the store.
fn wait_written(h: &Harness, id: &str) {
    let start = Instant::now();
    while h.store.get_execution(id).unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(20), "{id} never written");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_submission_dropped_before_its_answer_still_runs() {
    let h = Harness::new();
    // Dropped at once: the committer's answer activates it.
    drop(h.engine.submit_async(Some("dropped-early".into()), succeeds(1)));
    wait_written(&h, "dropped-early");
    assert_eq!(h.wait_terminal("dropped-early").phase, ExecPhase::Succeeded);
    // Dropped once durable, never polled.
    let pending = h.engine.submit_async(Some("dropped-late".into()), succeeds(2));
    wait_written(&h, "dropped-late");
    drop(pending);
    assert_eq!(h.wait_terminal("dropped-late").phase, ExecPhase::Succeeded);
}

#[test]
fn no_submission_is_accepted_after_shutdown() {
    let h = Harness::new();
    h.engine.shutdown(Duration::from_secs(5));
    let answer = runtime().block_on(h.engine.submit_async(Some("late".into()), succeeds(1)));
    assert_eq!(answer.unwrap_err(), EngineError::ShuttingDown);
    assert!(h.store.get_execution("late").unwrap().is_none());
}
