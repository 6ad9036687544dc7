//! The step decisions called directly: no engine, store or plugin behind
//! them, only the step input.

use std::sync::Arc;
use std::time::Duration;

use kozmo_interface::{ErrorKind, ExecutionError, Literal, LiteralMap, Phase, PhaseInfo, PluginError, Transition};

use super::answer::{
    answer_info, apply_phase, cache_hit, cap_versions, is_observed, round_applied, round_failed, Answer, HandlerError,
    Limits,
};
use super::finish::{failed_try, finished, Finished};
use super::{client_abort, StepOutcome};
use crate::context::RoundWrites;
use crate::events::EventSource;
use crate::model::{event_kind, ExecPhase, ExecState, TaskState};
use crate::scheduler::Next;

const NOW: i64 = 1_000;

fn outputs() -> LiteralMap {
    LiteralMap::from([("o".to_string(), Literal::from(7i64))])
}

fn running(attempt: u32) -> ExecState {
    let mut s = ExecState::new(10);
    s.phase = ExecPhase::Running;
    s.attempt = attempt;
    s
}

fn kinds(out: &StepOutcome) -> Vec<&'static str> {
    out.commit.events.iter().map(|e| e.kind).collect()
}

fn nothing_held() -> Finished {
    Finished {
        events: Vec::new(),
        granted: Vec::new(),
        released: Vec::new(),
        catalog: Some(("key".to_string(), outputs())),
    }
}

const LIMITS: Limits = Limits {
    system_retry_budget: 3,
    max_attempts: 2,
    timeout: None,
    max_round_failures: 2,
    max_plugin_phase_versions: 5,
};

#[test]
fn a_catalog_hit_passed_in_ends_succeeded_with_its_outputs() {
    let (task_type, plugin_id, name): (Arc<str>, Arc<str>, Arc<str>) = ("t".into(), "p".into(), "n".into());
    let src = EventSource {
        attempt: 1,
        task_type: &task_type,
        plugin_id: &plugin_id,
        generated_name: &name,
        round_start_ms: NOW,
        now_ms: NOW,
    };
    let out = cache_hit("e", running(1), outputs(), &src);
    let c = &out.commit;
    assert_eq!(c.execution_id, "e");
    assert_eq!(c.state.phase, ExecPhase::Succeeded);
    assert_eq!(c.state.attempt, 1);
    assert_eq!(c.state.updated_at_ms, NOW);
    assert_eq!(c.state.finishing, None);
    assert_eq!(c.state.error, None);
    assert_eq!(c.outputs, Some((1, outputs())));
    let task = c.task.as_ref().expect("the task state is written");
    assert_eq!(task.0, 1);
    assert_eq!(task.1.plugin_phase, Phase::SUCCESS);
    assert_eq!(task.1.last_phase_updated_at_ms, NOW);
    assert_eq!(out.task, task.1);
    assert_eq!(kinds(&out), [event_kind::TASK, event_kind::TERMINAL]);
    assert_eq!(c.events[1].phase, "Succeeded");
    assert!(c.clear_abort);
    // The hit is read by the caller: the step writes no catalog entry.
    assert_eq!(c.catalog, None);
    assert_eq!(out.next, Next::Done);
    assert!(out.persist);
}

#[test]
fn a_success_puts_its_catalog_entry_in_the_terminal_commit() {
    let mut state = running(0);
    state.succeed();
    assert_eq!(state.phase, ExecPhase::Succeeding);
    let out = finished("e", state, TaskState::default(), nothing_held(), NOW);
    let c = &out.commit;
    assert_eq!(c.state.phase, ExecPhase::Succeeded);
    assert_eq!(c.state.updated_at_ms, 10, "finished leaves the time to its caller");
    assert_eq!(c.catalog, Some(("key".to_string(), outputs())));
    assert_eq!(c.task, None);
    assert_eq!(kinds(&out), [event_kind::TERMINAL]);
    assert!(c.clear_abort);
    assert_eq!(out.next, Next::Done);
}

#[test]
fn a_retry_starts_the_next_attempt_without_a_catalog_entry() {
    let mut state = running(0);
    state.retry("flaky".into(), ExecutionError::new("E", "flaky", ErrorKind::User));
    let out = finished("e", state, TaskState::default(), nothing_held(), NOW);
    let c = &out.commit;
    assert_eq!(c.state.phase, ExecPhase::Running);
    assert_eq!(c.state.attempt, 1);
    assert_eq!(c.state.attempt_started_at_ms, NOW);
    assert_eq!(c.state.finishing, None);
    assert_eq!(c.catalog, None);
    let fresh = TaskState {
        last_phase_updated_at_ms: NOW,
        ..TaskState::default()
    };
    assert_eq!(c.task, Some((1, fresh.clone())));
    assert_eq!(out.task, fresh);
    assert_eq!(kinds(&out), [event_kind::RETRY]);
    assert!(!c.clear_abort);
    assert_eq!(out.next, Next::Now);
}

#[test]
fn an_abort_ends_aborted_with_its_error_and_an_aborted_task() {
    let mut state = running(0);
    let err = ExecutionError::new("Aborted", "stop", ErrorKind::User);
    state.abort(true, "stop".into(), err.clone());
    let task = TaskState {
        plugin_phase: Phase::RUNNING,
        plugin_phase_version: 3,
        ..TaskState::default()
    };
    let out = finished("e", state, task, nothing_held(), NOW);
    let c = &out.commit;
    assert_eq!(c.state.phase, ExecPhase::Aborted);
    assert_eq!(c.state.error.as_deref(), Some(&err));
    assert_eq!(c.catalog, None);
    let (attempt, written) = c.task.clone().expect("the aborted task state is written");
    assert_eq!(
        (attempt, written.plugin_phase, written.plugin_phase_version),
        (0, Phase::ABORTED, 0)
    );
    assert_eq!(kinds(&out), [event_kind::TERMINAL]);
    assert_eq!(out.next, Next::Done);
}

#[test]
fn a_client_abort_starts_aborting_and_clears_the_request() {
    let out = client_abort("e", running(0), &TaskState::default(), "user said so", NOW);
    let c = &out.commit;
    assert_eq!(c.state.phase, ExecPhase::Aborting);
    assert_eq!(c.state.updated_at_ms, NOW);
    let f = c.state.finishing.as_ref().expect("finishing work");
    assert!(f.call_abort);
    assert_eq!(f.reason, "user said so");
    assert!(c.clear_abort);
    assert!(c.events.is_empty());
    assert_eq!(out.next, Next::Now);
}

#[test]
fn plugin_phases_move_the_execution() {
    let task = TaskState::default();

    let mut s = running(0);
    assert_eq!(
        apply_phase(&mut s, &PhaseInfo::success(None), &task, false, NOW, &LIMITS),
        Next::Now
    );
    assert_eq!(s.phase, ExecPhase::Succeeding);
    assert_eq!(s.finishing.as_deref(), Some(&Default::default()));

    let mut s = running(0);
    let polled = apply_phase(&mut s, &PhaseInfo::running(1, None), &task, true, NOW, &LIMITS);
    assert_eq!((polled, s.phase), (Next::Resync, ExecPhase::Running));

    let retry = PhaseInfo::retryable_failure("E", "again", None);
    let mut s = running(0);
    assert_eq!(apply_phase(&mut s, &retry, &task, false, NOW, &LIMITS), Next::Now);
    assert_eq!(s.phase, ExecPhase::Retrying);
    let mut s = running(1);
    apply_phase(&mut s, &retry, &task, false, NOW, &LIMITS);
    assert_eq!(s.phase, ExecPhase::Failing, "the last attempt fails");

    let mut s = running(0);
    apply_phase(&mut s, &PhaseInfo::failure("E", "no", None), &task, false, NOW, &LIMITS);
    assert_eq!(s.phase, ExecPhase::Failing);

    let timed = Limits {
        timeout: Some(Duration::from_millis(5)),
        ..LIMITS
    };
    let mut s = running(0);
    apply_phase(&mut s, &PhaseInfo::running(1, None), &task, true, NOW, &timed);
    assert_eq!(s.phase, ExecPhase::Retrying);
    let error = s.finishing.and_then(|f| f.error).expect("the timeout error");
    assert_eq!(error.code, "TimeoutExpired");
}

#[test]
fn an_answer_is_a_phase_info_or_the_handler_error_it_is() {
    let ok = answer_info(Ok(Transition::ephemeral(PhaseInfo::running(1, None))), None, "p");
    assert_eq!(ok.map(|i| i.phase()), Ok(Phase::RUNNING));

    let never = "quota [q] is 0".to_string();
    let info = answer_info(Ok(Transition::ephemeral(PhaseInfo::success(None))), Some(&never), "p").unwrap();
    assert_eq!(info.phase(), Phase::PERMANENT_FAILURE);
    assert_eq!(info.err().map(|e| e.code.as_str()), Some("ResourceNeverAvailable"));

    let err = answer_info(Err(PluginError::new("E", "boom")), None, "p").unwrap_err();
    assert!(err.message.starts_with("failed to execute handle for plugin [p]: "));
    assert!(!err.panic);
}

#[test]
fn a_new_version_past_the_cap_fails_permanently() {
    let persisted = TaskState {
        plugin_phase: Phase::RUNNING,
        plugin_phase_version: 5,
        ..TaskState::default()
    };
    let mut info = PhaseInfo::running(6, None);
    let post_process = cap_versions(&mut info, &persisted, false, &LIMITS, "p");
    assert!(!post_process);
    assert_eq!(info.phase(), Phase::PERMANENT_FAILURE);
    assert_eq!(info.err().map(|e| e.code.as_str()), Some("TooManyPluginPhaseVersions"));

    let mut info = PhaseInfo::running(5, None);
    assert!(is_observed(&info, &persisted));
    let post_process = cap_versions(&mut info, &persisted, true, &LIMITS, "p");
    assert_eq!((info.phase(), info.version(), post_process), (Phase::RUNNING, 5, false));
}

#[test]
fn a_polling_round_that_changes_nothing_is_not_written() {
    let old = running(0);
    let persisted = TaskState {
        plugin_phase: Phase::RUNNING,
        plugin_phase_version: 2,
        last_phase_updated_at_ms: 5,
        ..TaskState::default()
    };
    let answer = Answer {
        old: &old,
        persisted: &persisted,
        info: &PhaseInfo::running(2, None),
        observed: true,
        writes: RoundWrites::default(),
        events: Vec::new(),
    };
    let out = round_applied("e", old.clone(), answer, NOW, &LIMITS);
    assert!(!out.persist);
    assert_eq!(out.next, Next::Resync);
    assert_eq!(out.commit.state, old, "the state keeps its time");
    assert_eq!(out.task, persisted);
}

#[test]
fn a_new_success_writes_its_outputs_and_starts_succeeding() {
    let old = running(0);
    let persisted = TaskState::default();
    let writes = RoundWrites {
        outputs: Some(outputs()),
        ..RoundWrites::default()
    };
    let answer = Answer {
        old: &old,
        persisted: &persisted,
        info: &PhaseInfo::success(None),
        observed: false,
        writes,
        events: Vec::new(),
    };
    let out = round_applied("e", old.clone(), answer, NOW, &LIMITS);
    let c = &out.commit;
    assert!(out.persist);
    assert_eq!(out.next, Next::Now);
    assert_eq!(c.state.phase, ExecPhase::Succeeding);
    assert_eq!(c.state.updated_at_ms, NOW);
    assert_eq!(c.outputs, Some((0, outputs())));
    assert_eq!(
        c.task.as_ref().map(|t| (t.0, t.1.plugin_phase)),
        Some((0, Phase::SUCCESS))
    );
    assert_eq!(out.task.last_phase_updated_at_ms, NOW);
    assert_eq!(c.catalog, None, "the entry is written when the execution ends");
}

#[test]
fn failed_rounds_in_a_row_become_a_system_failure() {
    let error = HandlerError {
        message: "boom".into(),
        panic: true,
    };
    let persisted = TaskState {
        plugin_phase: Phase::RUNNING,
        ..TaskState::default()
    };
    let fail = |state| round_failed("e", state, &persisted, &error, RoundWrites::default(), NOW, &LIMITS);
    let first = fail(running(0));
    assert_eq!(first.next, Next::Resync);
    assert_eq!(first.commit.state.phase, ExecPhase::Running);
    assert_eq!(first.commit.state.handler_errors, 1);
    let record = first.commit.state.last_handler_error.as_deref().expect("recorded");
    assert_eq!(
        (record.message.as_str(), record.panic, record.at_ms),
        ("boom", true, NOW)
    );
    assert_eq!(kinds(&first), [event_kind::HANDLER_ERROR]);

    let second = fail(first.commit.state);
    assert_eq!(second.next, Next::Now);
    assert_eq!(second.commit.state.phase, ExecPhase::Retrying);
    assert_eq!(second.commit.state.system_failures, 1);
    assert_eq!(second.commit.events.len(), 2);
    assert_eq!(second.task, persisted);
}

#[test]
fn a_failed_finishing_try_is_recorded_and_tried_again_until_the_limit() {
    let mut state = running(0);
    state.fail(true, ExecutionError::new("E", "no", ErrorKind::User));
    let mut f = *state.finishing.clone().expect("finishing work");
    let error = HandlerError {
        message: "failed to finalize plugin [p]: boom".into(),
        panic: false,
    };
    let mut events = Vec::new();
    assert!(failed_try(&mut state, &mut f, &error, &mut events, NOW, &LIMITS, false));
    assert_eq!(f.failures, 1);
    let record = state.last_handler_error.as_deref().expect("recorded");
    assert_eq!((record.message.as_str(), record.at_ms), (error.message.as_str(), NOW));
    assert!(
        !failed_try(&mut state, &mut f, &error, &mut events, NOW, &LIMITS, false),
        "gives up at the limit"
    );
    assert_eq!(f.failures, 2);
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [event_kind::HANDLER_ERROR; 2]
    );
    assert_eq!(state.phase, ExecPhase::Failing, "the phase is left to the caller");
}

#[test]
fn an_abort_still_cancelling_a_remote_job_is_tried_again_past_the_limit() {
    let mut state = running(0);
    state.abort(
        true,
        "stop".into(),
        ExecutionError::new("Aborted", "stop", ErrorKind::User),
    );
    let mut f = *state.finishing.clone().expect("finishing work");
    let error = HandlerError {
        message: "failed to abort plugin [p]: cancelling remote job: delete failed (try 1)".into(),
        panic: false,
    };
    let mut events = Vec::new();
    for _ in 0..3 * LIMITS.max_round_failures {
        assert!(failed_try(&mut state, &mut f, &error, &mut events, NOW, &LIMITS, true));
    }
    assert_eq!(
        f.failures,
        3 * LIMITS.max_round_failures,
        "every try is counted and shown"
    );
    assert_eq!(
        state.last_handler_error.as_deref().map(|r| r.message.as_str()),
        Some(error.message.as_str())
    );
    assert!(
        !failed_try(&mut state, &mut f, &error, &mut events, NOW, &LIMITS, false),
        "any other error still gives up at the limit"
    );
}
