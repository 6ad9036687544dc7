//! Retention's store contract: what every [`Store`] prunes and keeps
//! ([`contract`]: ages per phase, the count limit, active executions never),
//! with the helpers that build its executions. Test code, like
//! [`super::contract`].

use kozmo_interface::literals::LiteralMap;
use kozmo_interface::{ErrorKind, ExecutionError, Literal};

use super::contract::row;
use super::*;
use crate::model::{event_kind, ExecState, TaskState};

/// A new execution `id` created at `at` (ms).
pub fn new(id: &str, at: i64) -> NewExecution {
    NewExecution {
        id: id.into(),
        client_id: true,
        spec_json: format!("{{\"id\":\"{id}\"}}"),
        task_type: "t".into(),
        created_at_ms: at,
        state: ExecState::new(at),
        plugin_id: Some("p".into()),
    }
}

/// Moves `id` to `phase` at `at` with a task state, outputs, an error
/// document and events (a terminal one if `phase` is terminal).
pub fn finish(s: &dyn Store, id: &str, phase: ExecPhase, at: i64) {
    let mut state = ExecState::new(at);
    state.phase = phase;
    let mut outputs = LiteralMap::new();
    outputs.insert("x".into(), Literal::Integer(1));
    let mut events = vec![row(event_kind::TASK), row(event_kind::TASK)];
    if phase.is_terminal() {
        events.push(row(event_kind::TERMINAL));
    }
    s.commit(&mut [RoundCommit {
        task: Some((0, TaskState::default())),
        events,
        outputs: Some((0, outputs)),
        error_document: Some((
            0,
            ErrorDocument {
                error: ExecutionError::new("e", "m", ErrorKind::User),
                recoverable: false,
            },
        )),
        ..RoundCommit::state_only(id, state)
    }])
    .unwrap();
}

/// What every store does: ages per phase, the count limit, active never.
pub fn contract(s: &dyn Store) {
    for (i, (id, phase, at)) in [
        ("old-ok", ExecPhase::Succeeded, 100),
        ("old-failed", ExecPhase::Failed, 110),
        ("old-running", ExecPhase::Running, 120),
        ("new-ok", ExecPhase::Succeeded, 1000),
        ("new-aborted", ExecPhase::Aborted, 1010),
    ]
    .into_iter()
    .enumerate()
    {
        s.insert_execution(&new(id, i as i64)).unwrap();
        finish(s, id, phase, at);
    }
    s.catalog_put("cached", &LiteralMap::new()).unwrap();
    let by_age = PruneSelect {
        before_ms: vec![(ExecPhase::Succeeded, 500), (ExecPhase::Failed, 50)],
        keep_at_most: None,
        limit: 10,
        after: None,
    };
    let ids = |c: Vec<PruneCandidate>| c.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.prune_candidates(&by_age).unwrap()),
        vec!["old-ok"],
        "failures kept longer; the running one never"
    );
    let by_count = PruneSelect {
        keep_at_most: Some(2),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(s.prune_candidates(&by_count).unwrap()),
        vec!["old-ok", "old-failed"],
        "the two most recently finished stay"
    );
    assert_eq!(
        ids(s
            .prune_candidates(&PruneSelect {
                limit: 1,
                ..by_count.clone()
            })
            .unwrap()),
        vec!["old-ok"],
        "a batch at a time"
    );
    let past_old_ok = Some((100, "old-ok".to_string()));
    assert_eq!(
        ids(s
            .prune_candidates(&PruneSelect {
                after: past_old_ok.clone(),
                ..by_count.clone()
            })
            .unwrap()),
        vec!["old-failed"],
        "the next batch starts past the one sent"
    );
    assert!(
        s.prune_candidates(&PruneSelect {
            after: past_old_ok,
            ..by_age.clone()
        })
        .unwrap()
        .is_empty(),
        "by age too"
    );
    let keeping = |n: u64| {
        ids(s
            .prune_candidates(&PruneSelect {
                keep_at_most: Some(n),
                limit: 10,
                ..Default::default()
            })
            .unwrap())
    };
    assert_eq!(keeping(3), vec!["old-ok"], "the oldest kept is the third newest");
    assert_eq!(
        keeping(0),
        vec!["old-ok", "old-failed", "new-ok", "new-aborted"],
        "keep none: every terminal one, oldest first"
    );
    assert!(s
        .prune_candidates(&PruneSelect {
            keep_at_most: Some(4),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .is_empty());
    assert_eq!(s.oldest_terminal().unwrap(), Some(100));
    let (gone, rows) = s
        .delete_executions(&["old-ok".into(), "old-running".into(), "nope".into()])
        .unwrap();
    assert_eq!(gone, vec!["old-ok"], "an active execution is never deleted");
    assert_eq!(
        (
            rows.executions,
            rows.specs,
            rows.task_states,
            rows.events,
            rows.outputs,
            rows.error_documents
        ),
        (1, 1, 1, 3, 1, 1)
    );
    assert!(s.get_execution("old-ok").unwrap().is_none());
    assert!(s.events("old-ok").unwrap().is_empty());
    assert_eq!(s.outputs("old-ok", 0).unwrap(), None);
    assert_eq!(s.error_document("old-ok", 0).unwrap(), None);
    assert_eq!(
        s.get_execution("old-running").unwrap().unwrap().state.phase,
        ExecPhase::Running
    );
    assert_eq!(s.events("new-ok").unwrap().len(), 3, "the others keep everything");
    assert_eq!(s.oldest_terminal().unwrap(), Some(110));
    assert_eq!(s.count_by_phase().unwrap().get(&ExecPhase::Succeeded), Some(&1));
    assert_eq!(
        s.list_executions(None, 10, None).unwrap().len(),
        4,
        "listing no longer shows it"
    );
    // The catalog entry was written after every execution was created:
    // someone still stored may have written it.
    assert_eq!(s.prune_catalog(10).unwrap(), 0);
    assert!(s.catalog_get("cached").unwrap().is_some());
    let handed_out = s.last_event_seq().unwrap();
    // "new-ok" sorts between these two and was not asked for: a store
    // deleting by ranges of ids must leave it whole.
    let around: Vec<String> = ["old-failed", "new-aborted"].map(String::from).to_vec();
    let (mut gone, rows) = s.delete_executions(&around).unwrap();
    gone.sort();
    assert_eq!(gone, vec!["new-aborted", "old-failed"]);
    assert_eq!((rows.executions, rows.events, rows.outputs), (2, 6, 2));
    assert_eq!(s.events("new-ok").unwrap().len(), 3, "the one between keeps its events");
    assert!(s.outputs("new-ok", 0).unwrap().is_some(), "and its outputs");
    assert!(s.get_execution("new-ok").unwrap().is_some());
    assert_eq!(s.delete_executions(&["new-ok".into()]).unwrap().0.len(), 1);
    assert_eq!(s.oldest_terminal().unwrap(), None);
    assert_eq!(
        s.prune_catalog(10).unwrap(),
        0,
        "the running execution was created before the entry"
    );
    // An id pruned can be submitted again: it is a new execution.
    assert_eq!(s.insert_execution(&new("old-ok", 5)).unwrap(), InsertOutcome::Created);
    // The newest events were pruned: the next ones still come after every
    // event ever handed out (a watcher resuming from one would skip them).
    finish(s, "old-ok", ExecPhase::Succeeded, 2000);
    let seqs: Vec<i64> = s.events("old-ok").unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 3, "two task events and the terminal one");
    assert!(
        seqs.iter().all(|&q| q > handed_out),
        "event seqs {seqs:?} reuse ones handed out before the prune (up to {handed_out})"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_prunes_by_the_contract() {
        super::contract(&super::MemoryStore::new());
    }
}
