//! Retries (the vectors of docs/semantics.md#retries), Abort/Finalize
//! (docs/semantics.md#abort-and-finalize), client aborts, timeouts,
//! resources (docs/semantics.md#resources), catalog, secrets, submission
//! rules and restart, on the real SQLite store through the scripted plugin.

mod support;

use std::time::Duration;

use kozmo_engine::model::{event_kind, ExecPhase};
use kozmo_engine::resources::ResourceBackend;
use kozmo_engine::store::Store;
use kozmo_engine::{EngineError, SubmitOutcome};
use kozmo_interface::{ErrorKind, Literal};
use serde_json::json;
use support::{rounds, spec, Harness};

/// A harness whose resync timer fires only after `after` (no backoff):
/// what a test of wake-ups needs, so only the wake-up can run a round.
fn resync_only_after(after: Duration, quotas: &[(&str, i64)]) -> Harness {
    Harness::with(
        |c| {
            c.resync_interval = after;
            c.max_resync_interval = after;
        },
        quotas,
    )
}

// --- docs/semantics.md#retries vectors -----------------------------------------

#[test]
fn user_retries_two_give_three_attempts_then_retries_exhausted() {
    let h = Harness::new();
    let mut t = rounds(json!([{"phase": "RetryableFailure", "code": "Boom", "message": "bad input"}]));
    t["metadata"] = json!({"retries": 2});
    let id = h.submit("user-retries", t);
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Failed);
    assert_eq!(v.attempt, 2);
    assert_eq!(v.system_failures, 0);
    let err = v.error.unwrap();
    assert_eq!(err.code, "RetriesExhausted|Boom");
    assert_eq!(err.message, "[3/3] currentAttempt done. Last Error: USER::bad input");
    assert_eq!(err.kind, ErrorKind::User);
    // Eligible retries: Abort + Finalize, then the next attempt. The last
    // failure is terminal (persisted RetryableFailure, no cleanup): Finalize only.
    assert_eq!(
        h.call_kinds(&id),
        vec![
            "handle a=0",
            "abort a=0",
            "finalize a=0",
            "handle a=1",
            "abort a=1",
            "finalize a=1",
            "handle a=2",
            "finalize a=2"
        ]
    );
    assert_eq!(h.count_kind(&id, event_kind::RETRY), 2);
    assert_eq!(h.count_kind(&id, event_kind::TERMINAL), 1);
    // A new generated name per attempt.
    assert_eq!(v.generated_name, format!("{id}-n0-2"));
}

#[test]
fn system_retries_give_four_attempts() {
    let h = Harness::new();
    let t = rounds(json!([{"phase": "RetryableFailure", "code": "Lost", "message": "node lost", "kind": "SYSTEM"}]));
    let id = h.submit("system-retries", t);
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Failed);
    assert_eq!(v.attempt, 3);
    assert_eq!(v.system_failures, 3, "the exhausting failure is not counted");
    let err = v.error.unwrap();
    assert_eq!(err.code, "RetriesExhausted|Lost");
    assert_eq!(err.message, "[3/3] currentAttempt done. Last Error: SYSTEM::node lost");
}

#[test]
fn mixed_system_failures_do_not_consume_the_user_budget() {
    let h = Harness::new();
    let t = json!({
        "metadata": {"retries": 1},
        "custom": {
            "rounds": [{"phase": "RetryableFailure", "code": "U", "message": "user"}],
            "attempts": {"0": [{"phase": "RetryableFailure", "code": "S", "message": "sys", "kind": "SYSTEM"}]}
        }
    });
    let id = h.submit("mixed", t);
    let v = h.wait_terminal(&id);
    assert_eq!(v.attempt, 2, "system failure at 0, user failures at 1 and 2");
    assert_eq!(v.system_failures, 1);
    let err = v.error.unwrap();
    assert_eq!(err.code, "RetriesExhausted|U");
    assert_eq!(err.message, "[2/2] currentAttempt done. Last Error: USER::user");
}

#[test]
fn a_retry_starts_from_fresh_state() {
    let h = Harness::new();
    let t = json!({
        "metadata": {"retries": 1},
        "custom": {
            "rounds": [{"phase": "Success"}],
            "attempts": {"0": [
                {"phase": "Running", "version": 1, "put_state": "x", "state_version": 3},
                {"phase": "RetryableFailure"}
            ]}
        }
    });
    let id = h.submit("fresh", t);
    assert_eq!(h.wait_terminal(&id).phase, ExecPhase::Succeeded);
    let calls = h.calls(&id);
    assert!(calls.contains(&"handle a=1 r=0 state=0:none".to_string()), "{calls:?}");
}

// --- docs/semantics.md#abort-and-finalize ---------------------------------------

#[test]
fn permanent_failure_with_cleanup_calls_abort_then_finalize() {
    let h = Harness::new();
    let plain = h.submit("plain", rounds(json!([{"phase": "PermanentFailure"}])));
    let cleanup = h.submit(
        "cleanup",
        rounds(json!([{"phase": "PermanentFailure", "cleanup": true}])),
    );
    let rcleanup = h.submit(
        "retry-cleanup",
        rounds(json!([{"phase": "RetryableFailure", "cleanup": true}])),
    );
    h.wait_terminal(&plain);
    h.wait_terminal(&cleanup);
    h.wait_terminal(&rcleanup);
    assert_eq!(h.call_kinds(&plain), vec!["handle a=0", "finalize a=0"]);
    assert_eq!(h.call_kinds(&cleanup), vec!["handle a=0", "abort a=0", "finalize a=0"]);
    assert_eq!(h.call_kinds(&rcleanup), vec!["handle a=0", "abort a=0", "finalize a=0"]);
}

#[test]
fn the_commit_listener_hears_the_commits_and_events_after_reads_what_they_wrote() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let h = Harness::new();
    let heard = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = heard.clone();
    assert!(h.engine.on_commit(Box::new(move || {
        counter.fetch_add(1, SeqCst);
    })));
    assert!(!h.engine.on_commit(Box::new(|| {})), "one listener only");
    let id = h.submit("heard", rounds(json!([{"phase": "Success"}])));
    h.wait_terminal(&id);
    // The submission and the steps up to the terminal one were committed.
    assert!(heard.load(SeqCst) >= 2, "{}", heard.load(SeqCst));
    let all = h.engine.events_after(None, 0, 100).unwrap();
    assert_eq!(all, h.engine.events(&id).unwrap());
    assert_eq!(h.engine.last_event_seq().unwrap(), all.last().unwrap().seq);
    assert_eq!(h.engine.events_after(Some(&id), all[0].seq, 100).unwrap(), all[1..]);
}

#[test]
fn client_abort_runs_abort_then_finalize_and_ends_aborted_once() {
    let h = Harness::new();
    let id = h.submit("to-abort", rounds(json!([{"phase": "Running", "version": 1}])));
    h.wait(&id, |v| v.plugin_phase == "PhaseRunning");
    let v = h.engine.abort(&id, "user asked").unwrap();
    assert!(!v.phase.is_terminal() || v.phase == ExecPhase::Aborted);
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Aborted);
    assert_eq!(v.error.as_ref().unwrap().message, "user asked");
    // One abort code: the execution's error and its task event agree.
    assert_eq!(v.error.as_ref().unwrap().code, kozmo_engine::model::ABORTED_CODE);
    assert_eq!(v.plugin_phase, "PhaseAborted");
    let kinds = h.call_kinds(&id);
    assert_eq!(
        &kinds[kinds.len() - 2..],
        &["abort a=0".to_string(), "finalize a=0".to_string()]
    );
    assert_eq!(h.count_kind(&id, event_kind::TERMINAL), 1);
    let abort_event = h
        .events(&id)
        .into_iter()
        .rfind(|e| e.event.kind == event_kind::TASK)
        .unwrap();
    assert_eq!(abort_event.event.phase, "PhaseAborted");
    assert_eq!(
        abort_event.event.body["error"]["code"],
        kozmo_engine::model::ABORTED_CODE
    );
    // Aborting a terminal execution changes nothing.
    assert_eq!(h.engine.abort(&id, "again").unwrap().phase, ExecPhase::Aborted);
    assert_eq!(h.count_kind(&id, event_kind::TERMINAL), 1);
}

#[test]
fn aborted_returned_by_handle_is_terminal_without_retry_and_finalize_runs() {
    let h = Harness::new();
    let mut t = rounds(json!([{"phase": "Aborted", "code": "Gone", "message": "cancelled upstream"}]));
    t["metadata"] = json!({"retries": 3});
    let id = h.submit("plugin-aborted", t);
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Aborted);
    assert_eq!(v.attempt, 0);
    assert_eq!(v.error.unwrap().code, "Gone");
    assert_eq!(h.call_kinds(&id), vec!["handle a=0", "finalize a=0"]);
}

#[test]
fn finalize_errors_are_retried_then_given_up_and_the_execution_still_ends() {
    let h = Harness::with(|c| c.max_round_failures = 2, &[]);
    let t = json!({"custom": {"rounds": [{"phase": "Success"}], "finalize": {"panic": "finalize exploded"}}});
    let id = h.submit("finalize-panics", t);
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Succeeded);
    let he = v.last_handler_error.unwrap();
    assert!(he.panic && he.message.contains("finalize exploded"), "{he:?}");
    assert_eq!(h.call_kinds(&id), vec!["handle a=0", "finalize a=0", "finalize a=0"]);
}

#[test]
fn timeout_is_a_user_retryable_failure_timeout_expired() {
    let h = Harness::new();
    let t = json!({"metadata": {"timeout": "50ms"}, "custom": {"rounds": [{"phase": "Running", "version": 1}]}});
    let id = h.submit("timeout", t);
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Failed);
    let err = v.error.unwrap();
    assert_eq!(err.code, "RetriesExhausted|TimeoutExpired");
    assert_eq!(
        err.message,
        "[1/1] currentAttempt done. Last Error: USER::task execution timeout [50ms] expired"
    );
    let kinds = h.call_kinds(&id);
    assert_eq!(
        &kinds[kinds.len() - 2..],
        &["abort a=0".to_string(), "finalize a=0".to_string()]
    );
}

// --- resources ------------------------------------------------------------------

#[test]
fn quota_wait_then_grant_after_release() {
    let h = Harness::with(|_| {}, &[("q", 1)]);
    let holder = json!({"custom": {
        "rounds": [{"allocate": {"namespace": "q", "token": "t"}, "phase": "Running", "version": 1}],
        "finalize": {"release": [{"namespace": "q", "token": "t"}]}
    }});
    let a = h.submit("holder", holder);
    h.wait(&a, |v| v.plugin_phase == "PhaseRunning");
    let waiter = json!({"custom": {
        "rounds": [{"allocate": {"namespace": "q", "token": "t"}, "phase": "Success"}],
        "finalize": {"release": [{"namespace": "q", "token": "t"}]}
    }});
    let b = h.submit("waiter", waiter);
    h.wait(&b, |v| v.plugin_phase == "PhaseWaitingForResources");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.engine.get(&b).unwrap().phase, ExecPhase::Running, "still waiting");
    h.engine.abort(&a, "make room").unwrap();
    assert_eq!(h.wait_terminal(&a).phase, ExecPhase::Aborted);
    assert_eq!(h.wait_terminal(&b).phase, ExecPhase::Succeeded);
    assert!(h.calls(&b).iter().any(|c| c == "allocate t Granted"));
    assert_eq!(h.resources.in_use(&h.ns("q")), 0);
    assert!(h.store.tokens().unwrap().is_empty());
    assert_eq!(h.engine.stats().leaked_tokens_released_total, 0);
}

#[test]
fn a_released_token_wakes_its_waiter_without_the_resync() {
    // Resync 60 s: only the release can start the waiter's next round.
    let h = resync_only_after(Duration::from_secs(60), &[("q", 1)]);
    let holder = json!({"custom": {
        "rounds": [{"allocate": {"namespace": "q", "token": "t"}, "phase": "Running", "version": 1}],
        "finalize": {"release": [{"namespace": "q", "token": "t"}]}
    }});
    let a = h.submit("holder", holder);
    h.wait(&a, |v| v.plugin_phase == "PhaseRunning");
    let b = h.submit(
        "waiter",
        json!({"custom": {"rounds": [{"allocate": {"namespace": "q", "token": "t"}, "phase": "Success"}]}}),
    );
    h.wait(&b, |v| v.plugin_phase == "PhaseWaitingForResources");
    let start = std::time::Instant::now();
    h.engine.abort(&a, "make room").unwrap();
    assert_eq!(h.wait_terminal(&b).phase, ExecPhase::Succeeded);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the waiter waited for the 60 s resync: {:?}",
        start.elapsed()
    );
}

#[test]
fn tokens_left_after_finalize_are_released_by_the_host() {
    let h = Harness::with(|_| {}, &[("q", 5)]);
    let t = json!({"custom": {"rounds": [
        {"allocate": {"namespace": "q", "token": "mine"}, "phase": "Running", "version": 1},
        {"phase": "Success"}
    ]}});
    let id = h.submit("leaky", t);
    h.wait(&id, |v| v.plugin_phase == "PhaseRunning" || v.phase.is_terminal());
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Succeeded);
    assert_eq!(h.resources.in_use(&h.ns("q")), 0);
    assert!(h.store.tokens().unwrap().is_empty());
    assert_eq!(h.engine.stats().leaked_tokens_released_total, 1);
}

/// The in-memory manager, except that listing an execution's tokens fails
/// the first `failures` times (a remote backend whose server is down).
struct HeldByFails {
    inner: std::sync::Arc<kozmo_engine::resources::InMemoryResources>,
    failures: std::sync::atomic::AtomicUsize,
}

impl ResourceBackend for HeldByFails {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn allocate(
        &self,
        namespace: &str,
        token: &str,
        constraints: &[kozmo_engine::resources::ScopeConstraint],
        owner: &kozmo_engine::resources::TokenOwner,
    ) -> Result<kozmo_engine::resources::Allocation, String> {
        self.inner.allocate(namespace, token, constraints, owner)
    }
    fn release(&self, namespace: &str, token: &str) -> Result<bool, String> {
        self.inner.release(namespace, token)
    }
    fn held_by(&self, execution_id: &str) -> Vec<(String, String, u32)> {
        self.inner.held_by(execution_id)
    }
    fn try_held_by(&self, execution_id: &str) -> Result<Vec<(String, String, u32)>, String> {
        use std::sync::atomic::Ordering;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("the server is down".into());
        }
        Ok(self.inner.held_by(execution_id))
    }
    fn restore(&self, tokens: &[kozmo_engine::model::TokenRow]) {
        self.inner.restore(tokens)
    }
    fn set_release_listener(&self, listener: Box<dyn Fn(&str) + Send + Sync>) {
        self.inner.set_release_listener(listener)
    }
    fn in_use(&self, namespace: &str) -> usize {
        self.inner.in_use(namespace)
    }
}

#[test]
fn leftover_tokens_that_cannot_be_listed_fail_the_finishing_try_which_runs_again() {
    let h = Harness::with_backend(
        |c| c.max_round_failures = 5,
        &[("q", 5)],
        |inner| {
            std::sync::Arc::new(HeldByFails {
                inner,
                failures: 2.into(),
            })
        },
    );
    let t = json!({"custom": {"rounds": [
        {"allocate": {"namespace": "q", "token": "mine"}, "phase": "Running", "version": 1},
        {"phase": "Success"}
    ]}});
    let id = h.submit("unlisted", t);
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Succeeded);
    let he = v.last_handler_error.expect("the failed tries are recorded");
    assert!(
        he.message
            .contains("cannot list the execution's resource tokens: the server is down"),
        "{he:?}"
    );
    // Two failed tries, then the third released the leftover token.
    assert_eq!(
        h.call_kinds(&id).iter().filter(|k| k.starts_with("finalize")).count(),
        3
    );
    assert_eq!(h.resources.in_use(&h.ns("q")), 0);
    assert!(h.store.tokens().unwrap().is_empty());
    assert_eq!(h.engine.stats().leaked_tokens_released_total, 1);
}

#[test]
fn granted_tokens_are_persisted_and_survive_a_restart() {
    let mut h = Harness::with(|_| {}, &[("q", 1)]);
    let t = json!({"custom": {"rounds": [
        {"allocate": {"namespace": "q", "token": "t"}, "phase": "Running", "version": 1}
    ]}});
    let id = h.submit("holder", t);
    h.wait(&id, |v| v.plugin_phase == "PhaseRunning");
    let rows = h.store.tokens().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].token, "ex:p:d:holder-t");
    assert_eq!(rows[0].namespace, "inmemoryresourcemanager:scripted:q");
    h.engine.shutdown(Duration::from_secs(5));
    h.restart(|_| {}, &[("q", 1)]);
    assert_eq!(
        h.resources.in_use(&h.ns("q")),
        1,
        "the quota is still taken after the restart"
    );
    let other = h.submit(
        "other",
        json!({"custom": {"rounds": [{"allocate": {"namespace": "q", "token": "t"}, "phase": "Success"}]}}),
    );
    h.wait(&other, |v| v.plugin_phase == "PhaseWaitingForResources");
    h.engine.abort(&id, "done").unwrap();
    assert_eq!(h.wait_terminal(&other).phase, ExecPhase::Succeeded);
}

#[test]
fn a_zero_quota_or_constraint_is_a_permanent_failure_with_a_clear_message() {
    let h = Harness::with(|_| {}, &[("closed", 0), ("open", 5)]);
    let a = h.submit(
        "zero-quota",
        json!({"custom": {"rounds": [{"allocate": {"namespace": "closed", "token": "t"}}]}}),
    );
    let b = h.submit(
        "zero-cap",
        json!({"custom": {"rounds": [{"allocate": {"namespace": "open", "token": "t", "project_cap": 0}}]}}),
    );
    for id in [&a, &b] {
        let v = h.wait_terminal(id);
        assert_eq!(v.phase, ExecPhase::Failed);
        let err = v.error.unwrap();
        assert_eq!(err.code, "ResourceNeverAvailable");
        assert!(err.message.contains("can never be granted"), "{}", err.message);
    }
}

// --- catalog ---------------------------------------------------------------------

#[test]
fn a_catalog_hit_completes_without_calling_the_plugin() {
    let h = Harness::new();
    let t = || {
        json!({
            "metadata": {"discoverable": true, "cache_version": "1"},
            "interface": {"outputs": {"x": {"type": "integer"}}},
            "inputs": {"x": 7},
            "custom": {"rounds": [{"phase": "Success", "echo_inputs": true}]}
        })
    };
    let first = h.submit("first", t());
    assert_eq!(h.wait_terminal(&first).phase, ExecPhase::Succeeded);
    let second = h.submit("second", t());
    let v = h.wait_terminal(&second);
    assert_eq!(v.phase, ExecPhase::Succeeded);
    assert!(h.calls(&second).is_empty(), "no handle, no finalize");
    assert_eq!(h.engine.outputs(&second).unwrap().unwrap()["x"], Literal::Integer(7));
    let ev = h.events(&second);
    assert_eq!(ev[0].event.body["cache_status"], "CACHE_HIT");
    // Other inputs miss.
    let mut other = t();
    other["inputs"] = json!({"x": 8});
    let third = h.submit("third", other);
    h.wait_terminal(&third);
    assert!(!h.calls(&third).is_empty());
}

// --- submission, secrets, restart -----------------------------------------------

#[test]
fn submission_rules() {
    let h = Harness::new();
    let s = spec(rounds(json!([{"phase": "Success"}])));
    assert_eq!(
        h.engine.submit(Some("same".into()), s.clone()).unwrap(),
        SubmitOutcome::Created("same".into())
    );
    assert_eq!(
        h.engine.submit(Some("same".into()), s.clone()).unwrap(),
        SubmitOutcome::Existing("same".into())
    );
    let other = spec(rounds(json!([{"phase": "Running"}])));
    assert!(matches!(
        h.engine.submit(Some("same".into()), other.clone()),
        Err(EngineError::Conflict(_))
    ));
    // A spec stored before defaults were left out of the canonical JSON
    // (every member written) is the same spec.
    let mut state = kozmo_engine::model::ExecState::new(0);
    state.phase = ExecPhase::Succeeded;
    h.store
        .insert_execution(&kozmo_engine::model::NewExecution {
            id: "stored-in-full".into(),
            client_id: true,
            spec_json: serde_json::to_value(&s).unwrap().to_string(),
            task_type: s.template.task_type.clone(),
            created_at_ms: 0,
            state,
            plugin_id: None,
        })
        .unwrap();
    assert_eq!(
        h.engine.submit(Some("stored-in-full".into()), s.clone()).unwrap(),
        SubmitOutcome::Existing("stored-in-full".into())
    );
    assert!(matches!(
        h.engine.submit(Some("stored-in-full".into()), other),
        Err(EngineError::Conflict(_))
    ));
    let mut unknown = s.clone();
    unknown.template.task_type = "nope".into();
    assert!(matches!(h.engine.submit(None, unknown), Err(EngineError::NoPlugin(_))));
    assert!(matches!(
        h.engine.submit(Some("../x".into()), s.clone()),
        Err(EngineError::Invalid(_))
    ));
    let SubmitOutcome::Created(generated) = h.engine.submit(None, s).unwrap() else {
        panic!()
    };
    assert_eq!(h.wait_terminal(&generated).phase, ExecPhase::Succeeded);
    assert!(matches!(h.engine.get("missing"), Err(EngineError::NotFound)));
    let listed = h.engine.list(Some(ExecPhase::Succeeded), 10, None).unwrap();
    assert!(listed.iter().any(|v| v.id == generated));
    let page = h.engine.list(None, 1, None).unwrap();
    assert_eq!(page.len(), 1);
    let next = h.engine.list(None, 10, Some(page[0].id.clone())).unwrap();
    assert!(next.iter().all(|v| v.id > page[0].id));
}

#[test]
fn secrets_come_from_the_environment_and_never_reach_events() {
    std::env::set_var("KOZMO_SECRET_ENGINE_TEST_TOKEN", "s3cr3t-value");
    let h = Harness::new();
    let id = h.submit(
        "secret",
        rounds(json!([{"read_secret": "engine-test-token", "phase": "Success"}])),
    );
    assert_eq!(h.wait_terminal(&id).phase, ExecPhase::Succeeded);
    assert!(h.calls(&id).contains(&"secret engine-test-token len=12".to_string()));
    let missing = h.submit(
        "no-secret",
        rounds(json!([{"read_secret": "absent-key", "phase": "Success"}])),
    );
    let v = h.wait(&missing, |v| v.last_handler_error.is_some());
    assert!(v
        .last_handler_error
        .unwrap()
        .message
        .contains("KOZMO_SECRET_ABSENT_KEY"));
    let all = serde_json::to_string(&h.events(&id)).unwrap();
    assert!(!all.contains("s3cr3t-value"));
}

#[test]
fn a_restart_resumes_running_executions_where_they_were() {
    let mut h = Harness::new();
    let t = rounds(json!([
        {"phase": "Running", "version": 1, "put_state": "kept", "state_version": 1},
        {"phase": "Running", "version": 1}
    ]));
    let id = h.submit("resume", t);
    h.wait(&id, |v| v.plugin_phase == "PhaseRunning");
    h.engine.shutdown(Duration::from_secs(5));
    h.restart(|_| {}, &[]);
    h.wait(&id, |_| h.calls(&id).len() >= 3);
    assert!(h.calls(&id).last().unwrap().ends_with("state=1:\"kept\""));
    h.engine.abort(&id, "enough").unwrap();
    assert_eq!(h.wait_terminal(&id).phase, ExecPhase::Aborted);
    assert_eq!(h.count_kind(&id, event_kind::TERMINAL), 1);
}

#[test]
fn the_signal_requeues_at_once() {
    // Resync 10 s: only the plugin's signal can make the rounds progress.
    let h = resync_only_after(Duration::from_secs(10), &[]);
    let t = rounds(json!([
        {"phase": "Running", "version": 1},
        {"phase": "Running", "version": 1, "signal": true},
        {"phase": "Success"}
    ]));
    let id = h.submit("signalled", t);
    let start = std::time::Instant::now();
    assert_eq!(h.wait_terminal(&id).phase, ExecPhase::Succeeded);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_signal_from_the_plugins_own_thread_runs_the_next_round_without_the_resync() {
    // Resync 60 s. A round that changed something is followed at once; each
    // round that changed nothing (the 2nd, 4th and 6th) is followed only
    // because the plugin's own thread signals 50 ms after a call returned
    // (as a plugin that waits on a child process or a remote job does).
    // Every progress version is recorded as its own event.
    let h = resync_only_after(Duration::from_secs(60), &[]);
    let t = rounds(json!([
        {"phase": "Running", "version": 1, "signal_after_ms": 50},
        {"phase": "Running", "version": 1, "signal_after_ms": 50},
        {"phase": "Running", "version": 2, "signal_after_ms": 50},
        {"phase": "Running", "version": 2, "signal_after_ms": 50},
        {"phase": "Running", "version": 3, "signal_after_ms": 50},
        {"phase": "Running", "version": 3, "signal_after_ms": 50},
        {"phase": "Success"}
    ]));
    let start = std::time::Instant::now();
    let id = h.submit("progressing", t);
    assert_eq!(h.wait_terminal(&id).phase, ExecPhase::Succeeded);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the rounds waited for the 60 s resync: {:?}",
        start.elapsed()
    );
    let running: Vec<u32> = h
        .task_events(&id)
        .into_iter()
        .filter(|(phase, _)| phase == "PhaseRunning")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(running, vec![1, 2, 3], "every intermediate Running version is an event");
    assert_eq!(
        h.calls(&id).iter().filter(|c| c.starts_with("handle")).count(),
        7,
        "each scripted round ran once"
    );
}

#[test]
fn slow_calls_on_every_worker_get_a_spare_worker_so_others_go_on() {
    let h = Harness::with(
        |c| {
            c.workers = 2;
            c.stall_after = Duration::from_millis(300);
        },
        &[],
    );
    let slow: Vec<String> = (0..2)
        .map(|i| {
            h.submit(
                &format!("slow-{i}"),
                rounds(json!([{"sleep_ms": 8000, "phase": "Success"}])),
            )
        })
        .collect();
    for id in &slow {
        h.wait(id, |_| !h.calls(id).is_empty());
    }
    let start = std::time::Instant::now();
    let fast = h.submit(
        "fast",
        rounds(json!([{"phase": "Running", "version": 1}, {"phase": "Success"}])),
    );
    assert_eq!(h.wait_terminal(&fast).phase, ExecPhase::Succeeded);
    assert!(start.elapsed() < Duration::from_secs(6), "{:?}", start.elapsed());
    for id in &slow {
        assert!(
            !h.engine.get(id).unwrap().phase.is_terminal(),
            "{id} is still inside its call"
        );
    }
    for id in &slow {
        assert_eq!(h.wait_terminal(id).phase, ExecPhase::Succeeded);
    }
}

#[test]
fn a_slow_plugin_call_does_not_stall_other_executions() {
    let h = Harness::new(); // 2 workers
    let slow = h.submit("slow", rounds(json!([{"sleep_ms": 6000, "phase": "Success"}])));
    h.wait(&slow, |_| !h.calls(&slow).is_empty());
    let start = std::time::Instant::now();
    let fast = h.submit(
        "fast",
        rounds(json!([
            {"phase": "Queued"},
            {"phase": "Running", "version": 0},
            {"phase": "Running", "version": 1},
            {"phase": "Success"}
        ])),
    );
    assert_eq!(h.wait_terminal(&fast).phase, ExecPhase::Succeeded);
    assert!(start.elapsed() < Duration::from_millis(5000), "{:?}", start.elapsed());
    assert!(
        !h.engine.get(&slow).unwrap().phase.is_terminal(),
        "the slow call is still running"
    );
    assert_eq!(h.wait_terminal(&slow).phase, ExecPhase::Succeeded);
}

#[test]
fn enqueue_owner_bound_after_start_requeues_by_execution_name() {
    use kozmo_engine::LateEnqueueOwner;
    use kozmo_interface::metadata::NamespacedName;
    use kozmo_interface::EnqueueOwner;
    let owner = LateEnqueueOwner::new();
    // Before the engine runs: accepted and ignored.
    owner
        .enqueue(&NamespacedName {
            namespace: "p-d".into(),
            name: "early".into(),
        })
        .unwrap();
    let h = resync_only_after(Duration::from_secs(10), &[]);
    owner.bind(&h.engine);
    let id = h.submit(
        "owned",
        rounds(json!([{"phase": "Running", "version": 1}, {"phase": "Running", "version": 1}, {"phase": "Success"}])),
    );
    // Round 0 (changed) is followed at once by round 1 (no change): then a
    // 10 s resync, unless the owner is enqueued.
    h.wait(&id, |_| h.calls(&id).len() >= 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.calls(&id).len(), 2);
    owner
        .enqueue(&NamespacedName {
            namespace: "p-d".into(),
            name: id.clone(),
        })
        .unwrap();
    let start = std::time::Instant::now();
    assert_eq!(h.wait_terminal(&id).phase, ExecPhase::Succeeded);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_failed_sync_is_tried_again_and_nothing_is_answered_before_it_succeeds() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    use kozmo_engine::resources::ResourceManagerBuilder;
    use kozmo_engine::Engine;
    use kozmo_store_sqlite::SqliteStore;
    use support::faulty_store::{FaultyStore, Write};

    // SQLite at full durability commits a group commit without its sync and
    // leaves the sync to the engine's syncer: the first three syncs fail.
    let dir = tempfile::tempdir().unwrap();
    let inner = Box::new(SqliteStore::open_in(&dir.path().join("db")).unwrap());
    let syncs = Arc::new(AtomicU32::new(0));
    let answered = Arc::new(AtomicBool::new(false));
    let answered_too_early = Arc::new(AtomicBool::new(false));
    let store = {
        let (syncs, answered, early) = (syncs.clone(), answered.clone(), answered_too_early.clone());
        Arc::new(FaultyStore::new(inner, move |w| match w {
            Write::Sync => {
                let refused = syncs.fetch_add(1, Ordering::SeqCst) < 3;
                if refused && answered.load(Ordering::SeqCst) {
                    early.store(true, Ordering::SeqCst);
                }
                refused
            }
            _ => false,
        }))
    };
    let engine = Engine::start(
        support::test_config(dir.path()),
        store.clone() as Arc<dyn Store>,
        Arc::new(support::Resolver(support::scripted())),
        ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>,
    )
    .unwrap();
    let t = rounds(json!([{"phase": "Running", "version": 1}, {"phase": "Success"}]));
    assert!(matches!(
        engine.submit(Some("synced".into()), spec(t)).unwrap(),
        SubmitOutcome::Created(_)
    ));
    answered.store(true, Ordering::SeqCst);
    assert!(
        syncs.load(Ordering::SeqCst) >= 4,
        "the submission was answered after three failed syncs and a good one"
    );
    assert!(
        !answered_too_early.load(Ordering::SeqCst),
        "answered before its sync succeeded"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !engine.get("synced").unwrap().phase.is_terminal() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(engine.get("synced").unwrap().phase, ExecPhase::Succeeded);
    let events = engine.events("synced").unwrap();
    assert_eq!(
        events.iter().filter(|e| e.event.kind == event_kind::TERMINAL).count(),
        1
    );
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn failed_commits_are_retried_without_losing_or_duplicating_effects() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use kozmo_engine::resources::ResourceManagerBuilder;
    use kozmo_engine::store::MemoryStore;
    use kozmo_engine::Engine;
    use kozmo_store_sqlite::SqliteStore;
    use support::faulty_store::{FaultyStore, Write};

    // Every other commit fails (retried in place); then the first 6 fail
    // (the batch is given up, memory reloaded from the store, step redone);
    // then, over SQLite, every other streamed transaction fails at its
    // commit (rolled back, its writes retried as one batch).
    type Pattern = (fn(u32) -> bool, u32, bool);
    let patterns: [Pattern; 3] = [
        (|n| n % 2 == 0, 8, false),
        (|n| n < 6, 9, false),
        (|n| n % 2 == 0, 6, true),
    ];
    for (fails, min_calls, sqlite) in patterns {
        let dir = tempfile::tempdir().unwrap();
        let inner: Box<dyn Store> = match sqlite {
            true => Box::new(SqliteStore::open_in(&dir.path().join("db")).unwrap()),
            false => Box::new(MemoryStore::new()),
        };
        // Batches (`commit`) and, over SQLite, streamed transactions count
        // alike; `fails` picks by that count.
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let store = Arc::new(FaultyStore::new(inner, move |w| match w {
            Write::Commit(_) | Write::TxnCommit(_) => fails(counted.fetch_add(1, Ordering::SeqCst)),
            Write::CatalogPut | Write::Sync => false,
        }));
        let engine = Engine::start(
            support::test_config(dir.path()),
            store.clone() as Arc<dyn Store>,
            Arc::new(support::Resolver(support::scripted())),
            ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>,
        )
        .unwrap();
        let t = rounds(json!([
            {"phase": "Running", "version": 1},
            {"phase": "Running", "version": 2},
            {"phase": "Success"}
        ]));
        engine.submit(Some("flaky".into()), spec(t)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !engine.get("flaky").unwrap().phase.is_terminal() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(engine.get("flaky").unwrap().phase, ExecPhase::Succeeded);
        let events = engine.events("flaky").unwrap();
        let tasks: Vec<_> = events
            .iter()
            .filter(|e| e.event.kind == event_kind::TASK)
            .map(|e| (e.event.phase.as_str(), e.event.version))
            .collect();
        // The lost step's event is gone with it (the fixture's round counter,
        // kept outside the store, may then skip a scripted step); nothing is
        // recorded twice.
        let unique: std::collections::BTreeSet<_> = tasks.iter().collect();
        assert_eq!(unique.len(), tasks.len(), "{tasks:?}");
        assert_eq!(tasks.last(), Some(&("PhaseSuccess", 0)));
        assert_eq!(
            events.iter().filter(|e| e.event.kind == event_kind::TERMINAL).count(),
            1
        );
        assert!(calls.load(Ordering::SeqCst) >= min_calls);
        engine.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn a_second_engine_on_the_same_data_directory_is_refused() {
    use std::sync::Arc;

    use kozmo_engine::resources::ResourceManagerBuilder;
    use kozmo_engine::Engine;
    use kozmo_store_sqlite::SqliteStore;

    let h = Harness::new();
    let second = Engine::start(
        support::test_config(h.dir.path()),
        Arc::new(SqliteStore::open_in(h.dir.path()).unwrap()) as Arc<dyn Store>,
        Arc::new(support::Resolver(support::scripted())),
        ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>,
    );
    match second {
        Err(EngineError::Invalid(m)) => assert!(m.contains("in use by another kozmo engine"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("two engines on one data directory"),
    }
}

#[test]
fn on_the_memory_store_workers_commit_their_own_steps_with_the_same_outcome() {
    use std::sync::Arc;

    use kozmo_engine::resources::ResourceManagerBuilder;
    use kozmo_engine::store::MemoryStore;
    use kozmo_engine::Engine;

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(
        support::test_config(dir.path()),
        Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        Arc::new(support::Resolver(support::scripted())),
        ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>,
    )
    .unwrap();
    // Two attempts (a user retry), rounds with versions, then success.
    let mut t = json!({"custom": {
        "rounds": [{"phase": "Running", "version": 1}, {"phase": "Running", "version": 2}, {"phase": "Success"}],
        "attempts": {"0": [{"phase": "RetryableFailure", "code": "U", "message": "user"}]}
    }});
    t["metadata"] = json!({"retries": 1});
    engine.submit(Some("mem".into()), spec(t)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !engine.get("mem").unwrap().phase.is_terminal() {
        assert!(std::time::Instant::now() < deadline, "the execution never ended");
        std::thread::sleep(Duration::from_millis(2));
    }
    let v = engine.get("mem").unwrap();
    assert_eq!(v.phase, ExecPhase::Succeeded);
    assert_eq!(v.attempt, 1);
    let events = engine.events("mem").unwrap();
    let count = |kind: &str| events.iter().filter(|e| e.event.kind == kind).count();
    assert_eq!(count(event_kind::RETRY), 1);
    assert_eq!(count(event_kind::TERMINAL), 1);
    let tasks: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind == event_kind::TASK && e.event.attempt == 1)
        .map(|e| (e.event.phase.as_str(), e.event.version))
        .collect();
    assert_eq!(
        tasks,
        vec![("PhaseRunning", 1), ("PhaseRunning", 2), ("PhaseSuccess", 0)]
    );
    engine.shutdown(Duration::from_secs(5));
    // Six steps (failed round, Abort+Finalize, three rounds, Finalize),
    // each its own store write made by the worker that ran it; the one
    // other write is the submission (through the committer).
    let s = engine.stats();
    assert_eq!(s.commits_total, 6, "{s:?}");
    assert_eq!(s.commit_batches_total, s.commits_total + 1, "{s:?}");
}
