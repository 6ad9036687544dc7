//! A plugin call that runs past `call_warn_after` (the scripted plugin
//! sleeping inside `handle`): the status says so instead of a silent
//! Queued, an event records it, and an abort is answered at once with
//! "abort pending" and completes as soon as the call returns.

mod support;

use std::time::Duration;

use kozmo_engine::model::{event_kind, ExecPhase};
use serde_json::json;
use support::{rounds, Harness};

#[test]
fn a_slow_call_shows_in_status_and_events_and_an_abort_waits_for_it() {
    let h = Harness::with(|c| c.call_warn_after = Duration::from_millis(100), &[]);
    let id = h.submit(
        "slow",
        rounds(json!([{"phase": "Running", "sleep_ms": 1500}, {"phase": "Running"}])),
    );
    let v = h.wait(&id, |v| v.waiting.is_some());
    let waiting = v.waiting.unwrap();
    assert!(waiting.starts_with("plugin call handle in progress for "), "{waiting}");
    assert_eq!(v.plugin_id.as_deref(), Some("scripted"));

    let v = h.engine.abort(&id, "operator gave up").unwrap();
    assert_eq!(v.abort_requested.as_deref(), Some("operator gave up"));
    let waiting = v.waiting.expect("the abort answer says why it is not done yet");
    assert!(
        waiting.starts_with("abort pending: plugin call handle in progress for "),
        "{waiting}"
    );
    assert!(!v.phase.is_terminal());

    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Aborted, "{v:?}");
    assert_eq!(v.waiting, None);
    assert_eq!(
        h.call_kinds(&id),
        ["handle a=0", "abort a=0", "finalize a=0"],
        "the abort ran once the slow call had returned"
    );
    let slow: Vec<_> = h
        .events(&id)
        .into_iter()
        .filter(|e| e.event.kind == event_kind::SLOW_CALL)
        .collect();
    assert_eq!(slow.len(), 1, "reported once per call");
    assert_eq!(slow[0].event.body["call"], "handle");
    assert!(
        slow[0].event.body["message"]
            .as_str()
            .unwrap()
            .contains("call_warn_after is 100ms"),
        "{:?}",
        slow[0].event.body
    );
}

#[test]
fn a_fast_call_is_never_reported() {
    let h = Harness::with(|c| c.call_warn_after = Duration::from_secs(60), &[]);
    let id = h.submit("fast", rounds(json!([{"phase": "Success"}])));
    let v = h.wait_terminal(&id);
    assert_eq!(v.phase, ExecPhase::Succeeded);
    assert_eq!(h.count_kind(&id, event_kind::SLOW_CALL), 0);
    assert_eq!(v.waiting, None);
}
