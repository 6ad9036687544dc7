//! The contract every [`Store`] keeps, as functions a store's tests call
//! (built for this crate's tests and with the `contract` feature):
//! [`contract`] writes and reads back everything a step commits. The
//! helpers build the rows it uses.
//!
//! These functions assert: they are test code, not part of the daemon.

#![allow(clippy::missing_panics_doc)]

use kozmo_interface::{ErrorKind, ExecutionError, Literal, Phase};

use super::*;
use crate::model::{event_kind, ErrorDocument, EventRow, ExecState, NewEvent, TaskState};

/// A new execution `id` with the spec text `spec`, bound to plugin `p`.
pub fn new(id: &str, spec: &str) -> NewExecution {
    NewExecution {
        id: id.into(),
        client_id: true,
        spec_json: spec.into(),
        task_type: "t".into(),
        created_at_ms: 1,
        state: ExecState::new(1),
        plugin_id: Some("p".into()),
    }
}

/// The event [`row`] of `kind` reads back as.
pub fn event(kind: &str) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        attempt: 0,
        phase: "PhaseRunning".into(),
        version: 1,
        occurred_at_ms: 2,
        reported_at_ms: 3,
        body: serde_json::json!({"k": 1}),
    }
}

/// An event row of `kind`.
pub fn row(kind: &'static str) -> EventRow {
    EventRow {
        kind,
        attempt: 0,
        phase: "PhaseRunning".into(),
        version: 1,
        occurred_at_ms: 2,
        reported_at_ms: 3,
        body: crate::model::EventBody::Text(r#"{"k":1}"#.into()),
    }
}

/// The contract every store keeps.
pub fn contract(s: &dyn Store) {
    assert_eq!(s.insert_execution(&new("a", "{}")).unwrap(), InsertOutcome::Created);
    assert_eq!(
        s.insert_executions(&[new("b", "{}"), new("a", "{\"x\":1}")]).unwrap(),
        vec![InsertOutcome::Created, InsertOutcome::Exists { spec_json: "{}".into() }]
    );
    let mut state = ExecState::new(5);
    state.phase = ExecPhase::Running;
    state.error = Some(Box::new(ExecutionError::new("c", "m", ErrorKind::System)));
    let task = TaskState {
        plugin_phase: Phase::RUNNING,
        plugin_phase_version: 3,
        plugin_state: Some(vec![1, 2, 3]),
        plugin_state_version: 2,
        cleanup_on_failure: true,
        last_phase_updated_at_ms: 9,
    };
    let mut outputs = LiteralMap::new();
    outputs.insert("x".into(), Literal::Integer(1));
    let token = TokenRow {
        namespace: "ns".into(),
        token: "tok".into(),
        execution_id: "a".into(),
        attempt: 0,
    };
    assert!(s.request_abort("a", "why").unwrap());
    assert!(!s.request_abort("zzz", "why").unwrap());
    s.commit(&mut [RoundCommit {
        task: Some((0, task.clone())),
        events: vec![row(event_kind::TASK), row(event_kind::TERMINAL)],
        outputs: Some((0, outputs.clone())),
        error_document: Some((
            0,
            ErrorDocument {
                error: ExecutionError::new("e", "m", ErrorKind::User),
                recoverable: true,
            },
        )),
        tokens_granted: vec![token.clone()],
        catalog: Some(("in-commit".into(), outputs.clone())),
        ..RoundCommit::state_only("a", state.clone())
    }])
    .unwrap();
    let rec = s.get_execution("a").unwrap().unwrap();
    assert_eq!(rec.state, state);
    assert_eq!(rec.task, task);
    assert_eq!(
        rec.abort_requested.as_deref(),
        Some("why"),
        "a commit keeps the abort request"
    );
    let ev = s.events("a").unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].event, event(event_kind::TASK));
    assert!(ev[0].seq < ev[1].seq);
    assert_eq!(s.outputs("a", 0).unwrap(), Some(outputs.clone()));
    assert_eq!(s.outputs("a", 1).unwrap(), None);
    assert!(s.error_document("a", 0).unwrap().unwrap().recoverable);
    assert_eq!(s.tokens().unwrap(), vec![token]);
    let mut done = state.clone();
    done.phase = ExecPhase::Succeeded;
    s.commit(&mut [RoundCommit {
        tokens_released: vec![("ns".into(), "tok".into())],
        clear_abort: true,
        ..RoundCommit::state_only("a", done)
    }])
    .unwrap();
    assert!(s.tokens().unwrap().is_empty());
    assert_eq!(s.get_execution("a").unwrap().unwrap().abort_requested, None);
    assert_eq!(s.load_active().unwrap().len(), 1, "only b is active");
    assert_eq!(
        s.list_executions(Some(ExecPhase::Succeeded), 10, None).unwrap().len(),
        1
    );
    let page = s.list_executions(None, 10, Some("a")).unwrap();
    assert_eq!(page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(s.count_by_phase().unwrap()[&ExecPhase::Queued], 1);
    s.catalog_put("k", &outputs).unwrap();
    assert_eq!(s.catalog_get("k").unwrap(), Some(outputs));
    assert_eq!(s.catalog_get("other").unwrap(), None);
    assert_eq!(
        s.catalog_get("in-commit").unwrap(),
        s.catalog_get("k").unwrap(),
        "a commit writes its catalog entry"
    );
    assert_eq!(
        s.get_execution("b").unwrap().unwrap().plugin_id.as_deref(),
        Some("p"),
        "the plugin chosen at submission is kept"
    );
    s.append_events("b", &[row(event_kind::SLOW_CALL)]).unwrap();
    assert_eq!(s.events("b").unwrap().last().unwrap().event.kind, event_kind::SLOW_CALL);
    // What the watch API reads: the events after a seq, of one execution
    // or of all, in seq order; the last seq.
    let all = s.events_after(None, 0, 100).unwrap();
    let ids: Vec<&str> = all.iter().map(|e| e.execution_id.as_str()).collect();
    assert_eq!(ids, ["a", "a", "b"]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all[..2], s.events("a").unwrap()[..]);
    assert_eq!(s.last_event_seq().unwrap(), all[2].seq);
    assert_eq!(s.events_after(None, all[0].seq, 100).unwrap(), all[1..]);
    assert_eq!(s.events_after(None, 0, 1).unwrap(), all[..1]);
    assert_eq!(s.events_after(Some("a"), all[0].seq, 100).unwrap(), all[1..2]);
    assert!(s.events_after(Some("a"), all[2].seq, 100).unwrap().is_empty());
    assert!(s.events_after(Some("zzz"), 0, 100).unwrap().is_empty());
    let victim = |id: &str| CrashVictim {
        execution_id: id.into(),
        call: "handle".into(),
    };
    assert_eq!(s.count_crashes(&[victim("b"), victim("c")], 1).unwrap(), vec![1, 1]);
    assert_eq!(s.count_crashes(&[victim("b")], 2).unwrap(), vec![2], "consecutive");
    assert_eq!(
        s.count_crashes(&[victim("c")], 3).unwrap(),
        vec![1],
        "c was not in a call at the second crash: it starts over"
    );
    assert_eq!(s.count_crashes(&[], 4).unwrap(), Vec::<u32>::new());
    assert_eq!(
        s.count_crashes(&[victim("b")], 5).unwrap(),
        vec![1],
        "b starts over too"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_keeps_the_contract() {
        super::contract(&super::MemoryStore::new());
    }
}
