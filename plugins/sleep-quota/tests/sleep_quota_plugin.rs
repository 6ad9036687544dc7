//! The sleep-quota plugin driven through the in-memory test contexts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_interface::literals::LiteralDuration;
use kozmo_interface::task::{TaskFile, TaskTemplate};
use kozmo_interface::testing::{drive, Driver, Outcome, TestSetupContext, TestTaskContext};
use kozmo_interface::{
    load_plugin, serde_json, AllocationStatus, ErrorKind, Literal, Phase, PhaseInfo, Plugin, PluginStateReaderExt,
    ResourceConstraintsSpec, ResourceManager, ResourceNamespace, Result, TaskExecutionContext,
};
use kozmo_plugin_sleep_quota::{
    entry, requested_seconds, SleepQuota, SleepState, DEFAULT_QUOTA, NAMESPACE, STATE_VERSION, WAITING_REASON,
};

fn load(setup: &TestSetupContext) -> Box<dyn Plugin> {
    load_plugin(setup, &entry()).unwrap()
}

fn task(name: &str, seconds: Literal) -> TestTaskContext {
    configure(TestTaskContext::new().with_generated_name(name), seconds)
}

fn configure(ctx: TestTaskContext, seconds: Literal) -> TestTaskContext {
    ctx.with_template(TaskTemplate {
        task_type: "sleep-quota".into(),
        ..TaskTemplate::default()
    })
    .with_input("seconds", seconds)
}

fn round(plugin: &dyn Plugin, ctx: &TestTaskContext) -> PhaseInfo {
    let info = plugin.handle(ctx).unwrap().into_info();
    ctx.next_round();
    info
}

/// Answers every allocation with one status.
struct FixedStatus(AllocationStatus);

impl ResourceManager for FixedStatus {
    fn id(&self) -> String {
        "fixed".into()
    }
    fn allocate_resource(
        &self,
        _: &ResourceNamespace,
        _: &str,
        _: &ResourceConstraintsSpec,
    ) -> Result<AllocationStatus> {
        Ok(self.0)
    }
    fn release_resource(&self, _: &ResourceNamespace, _: &str) -> Result<()> {
        Ok(())
    }
}

#[test]
fn the_loader_registers_the_default_quota_and_the_counter() {
    let setup = TestSetupContext::new();
    let plugin = load(&setup);
    assert_eq!(plugin.id(), "sleep-quota");
    assert_eq!(setup.quotas(), [(NAMESPACE.to_string(), DEFAULT_QUOTA)]);
    assert_eq!(DEFAULT_QUOTA, 2);
    let counter = setup.metric("sleeps_completed").expect("counter registered");
    assert_eq!(*counter.value.lock().unwrap(), 0.0);
    let e = entry();
    assert_eq!(
        (e.id.as_str(), e.registered_task_types.as_slice(), e.is_default),
        ("sleep-quota", &["sleep-quota".to_string()][..], false)
    );
}

#[test]
fn the_quota_comes_from_the_secret_when_present() {
    let setup = TestSetupContext::new().with_secret("SLEEP_QUOTA", " 5\n");
    let plugin = SleepQuota::load(&setup).unwrap();
    assert_eq!(plugin.quota(), 5);
    assert_eq!(setup.quotas(), [(NAMESPACE.to_string(), 5)]);
    for bad in ["0", "-1", "two", "", "hunter2"] {
        let setup = TestSetupContext::new().with_secret("SLEEP_QUOTA", bad);
        let err = load_plugin(&setup, &entry()).err().expect(bad);
        assert_eq!(err.code, "BadQuota", "{bad}");
        assert!(err.message.contains("SLEEP_QUOTA"), "{}", err.message);
        if !bad.is_empty() {
            assert!(!err.message.contains(bad), "the secret's value leaks: {}", err.message);
        }
        assert!(setup.quotas().is_empty(), "nothing registered for {bad:?}");
    }
}

#[test]
fn a_granted_task_sleeps_across_rounds_then_succeeds() {
    let setup = TestSetupContext::new();
    let plugin = load(&setup);
    let ctx = task("sleeper-1", Literal::Float(0.3)).with_quota(NAMESPACE, 1);
    let started = Instant::now();

    let first = round(&*plugin, &ctx);
    assert_eq!((first.phase(), first.version()), (Phase::QUEUED, 0));
    assert!(first.reason().contains("slot acquired"), "{first}");
    assert_eq!(ctx.granted(NAMESPACE), BTreeSet::from(["sleeper-1".to_string()]));
    let (version, state) = ctx.plugin_state_reader().get::<SleepState>().unwrap();
    assert_eq!(version, STATE_VERSION);
    assert_eq!(state.unwrap().seconds, 0.3);

    let mut running_rounds = 0;
    let end = loop {
        let info = round(&*plugin, &ctx);
        if info.phase().is_terminal() {
            break info;
        }
        assert_eq!((info.phase(), info.version()), (Phase::RUNNING, 0), "{info}");
        assert_eq!(ctx.pending_state(), None, "no state change while sleeping");
        running_rounds += 1;
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(running_rounds >= 2, "the sleep spans rounds ({running_rounds})");
    assert_eq!(end.phase(), Phase::SUCCESS);
    let Literal::Float(slept) = ctx.outputs().unwrap()["slept_seconds"] else {
        panic!("slept_seconds is a float");
    };
    assert!((0.3..10.0).contains(&slept), "{slept}");
    assert_eq!(*setup.metric("sleeps_completed").unwrap().value.lock().unwrap(), 1.0);
    assert_eq!(ctx.granted(NAMESPACE).len(), 1, "held until finalize");

    plugin.finalize(&ctx).unwrap();
    assert!(ctx.granted(NAMESPACE).is_empty());
    plugin.finalize(&ctx).unwrap(); // idempotent
}

#[test]
fn a_sleeping_task_signals_once_when_its_time_is_up() {
    // The daemon would run the succeeding round at that signal instead of
    // at its next resync; resync rounds in between set no second alarm.
    let setup = TestSetupContext::new();
    let plugin = load(&setup);
    let ctx = task("sleeper-alarm", Literal::Float(0.3)).with_quota(NAMESPACE, 1);
    let started = Instant::now();
    assert_eq!(round(&*plugin, &ctx).phase(), Phase::QUEUED);
    for _ in 0..3 {
        assert_eq!(round(&*plugin, &ctx).phase(), Phase::RUNNING);
    }
    assert_eq!(ctx.signal_count(), 0, "no signal before the time is up");
    while ctx.signal_count() == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no signal within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        round(&*plugin, &ctx).phase(),
        Phase::SUCCESS,
        "the signalled round finds the time up"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ctx.signal_count(), 1, "one alarm for the three Running rounds");
}

#[test]
fn with_quota_one_the_second_task_waits_until_the_first_is_finalized() {
    // The quota the loader registers (from the secret) is the one both
    // task contexts of this setup compete for.
    let setup = TestSetupContext::new().with_secret("SLEEP_QUOTA", "1");
    let plugin = load(&setup);
    let slots = setup.resources();
    assert_eq!(slots.quota(NAMESPACE), Some(1));
    let a = configure(setup.task_context().with_generated_name("task-a"), Literal::Integer(0));
    let b = configure(setup.task_context().with_generated_name("task-b"), Literal::Integer(0));

    assert_eq!(round(&*plugin, &a).phase(), Phase::QUEUED);
    for _ in 0..3 {
        let waiting = round(&*plugin, &b);
        assert_eq!((waiting.phase(), waiting.version()), (Phase::WAITING_FOR_RESOURCES, 0));
        assert_eq!(waiting.reason(), WAITING_REASON);
        assert_eq!(
            b.plugin_state_reader().get_bytes().unwrap(),
            (0, None),
            "no state while waiting"
        );
    }
    assert_eq!(slots.held(NAMESPACE), BTreeSet::from(["task-a".to_string()]));

    // A finishes, but holds its slot until finalize.
    assert_eq!(round(&*plugin, &a).phase(), Phase::SUCCESS);
    assert_eq!(round(&*plugin, &b).phase(), Phase::WAITING_FOR_RESOURCES);
    plugin.finalize(&a).unwrap();
    assert!(slots.held(NAMESPACE).is_empty());

    assert_eq!(round(&*plugin, &b).phase(), Phase::QUEUED);
    assert_eq!(slots.held(NAMESPACE), BTreeSet::from(["task-b".to_string()]));
    assert_eq!(round(&*plugin, &b).phase(), Phase::SUCCESS);
    plugin.abort(&b).unwrap();
    plugin.finalize(&b).unwrap();
    assert!(slots.held(NAMESPACE).is_empty());
}

#[test]
fn driven_like_the_daemon_a_sleep_ends_at_its_alarm_not_at_the_resync() {
    let setup = TestSetupContext::new();
    let plugin = load(&setup);
    let ctx = configure(setup.task_context(), Literal::Float(0.3));
    // A resync of 10 s: only the plugin's alarm signal can end the run in time.
    let run = Driver::new()
        .delay(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .run(&*plugin, &ctx)
        .unwrap();
    let phases = run.phases();
    assert_eq!(phases.first(), Some(&Phase::QUEUED), "{run:?}");
    assert_eq!(phases.last(), Some(&Phase::SUCCESS), "{run:?}");
    assert!(
        phases[1..phases.len() - 1].iter().all(|p| *p == Phase::RUNNING),
        "{run:?}"
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    assert!(run.finalized && !run.aborted);
    assert!(run.logged("got a slot"), "{}", run.log_text());
    assert!(
        setup.resources().held(NAMESPACE).is_empty(),
        "finalize released the slot"
    );
}

#[test]
fn an_aborted_sleep_releases_its_slot_for_the_next_task() {
    let setup = TestSetupContext::new().with_secret("SLEEP_QUOTA", "1");
    let plugin = load(&setup);
    let long = configure(setup.task_context(), Literal::Integer(3600));
    let next = configure(setup.task_context(), Literal::Integer(0));
    let run = Driver::new()
        .delay(Duration::from_millis(1))
        .abort_when(|info| info.phase() == Phase::RUNNING)
        .run(&*plugin, &long)
        .unwrap();
    assert_eq!(run.outcome, Outcome::Aborted);
    assert!(run.aborted && run.finalized);
    let run = drive(&*plugin, &next).unwrap();
    assert_eq!(run.phase(), Phase::SUCCESS, "{run:?}");
    assert!(!run.phases().contains(&Phase::WAITING_FOR_RESOURCES), "{run:?}");
}

#[test]
fn namespace_quota_exceeded_also_waits_and_undefined_is_an_error() {
    let plugin = load(&TestSetupContext::new());
    let exceeded = task("t", Literal::Integer(1))
        .with_resource_manager(Arc::new(FixedStatus(AllocationStatus::NAMESPACE_QUOTA_EXCEEDED)));
    let info = round(&*plugin, &exceeded);
    assert_eq!(info.phase(), Phase::WAITING_FOR_RESOURCES);
    let undefined =
        task("t", Literal::Integer(1)).with_resource_manager(Arc::new(FixedStatus(AllocationStatus::UNDEFINED)));
    let err = plugin.handle(&undefined).unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.kind),
        ("AllocationUndefined", ErrorKind::System)
    );
}

#[test]
fn bad_input_fails_permanently_without_taking_a_slot() {
    let plugin = load(&TestSetupContext::new());
    for bad in [
        Literal::Float(-1.0),
        Literal::String("soon".into()),
        Literal::Float(f64::NAN),
    ] {
        let ctx = task("bad", bad.clone()).with_quota(NAMESPACE, 1);
        let info = round(&*plugin, &ctx);
        assert_eq!(info.phase(), Phase::PERMANENT_FAILURE, "{bad:?}");
        let err = info.err().unwrap();
        assert_eq!((err.code.as_str(), err.kind), ("BadInput", ErrorKind::User));
        assert!(ctx.granted(NAMESPACE).is_empty());
    }
}

#[test]
fn seconds_come_from_inputs_then_custom_then_the_default() {
    let none = kozmo_interface::LiteralMap::new();
    let null = serde_json::Value::Null;
    assert_eq!(requested_seconds(&none, &null), Ok(1.0));
    assert_eq!(requested_seconds(&none, &serde_json::json!({"seconds": 2.5})), Ok(2.5));
    assert!(requested_seconds(&none, &serde_json::json!({"seconds": "2"})).is_err());
    let inputs = |l: Literal| kozmo_interface::LiteralMap::from([("seconds".to_string(), l)]);
    let custom = serde_json::json!({"seconds": 9});
    assert_eq!(requested_seconds(&inputs(Literal::Integer(3)), &custom), Ok(3.0));
    assert_eq!(requested_seconds(&inputs(Literal::Float(0.25)), &custom), Ok(0.25));
    let d = LiteralDuration {
        seconds: 1,
        nanos: 500_000_000,
    };
    assert_eq!(requested_seconds(&inputs(Literal::Duration(d)), &custom), Ok(1.5));
    assert!(requested_seconds(&inputs(Literal::Integer(-2)), &custom).is_err());
}

#[test]
fn a_zero_second_sleep_finishes_on_the_round_after_the_grant() {
    let plugin = load(&TestSetupContext::new());
    let mut ctx = task("quick", Literal::Integer(0));
    ctx.inputs.clear();
    ctx.template.custom = serde_json::json!({"seconds": 0});
    assert_eq!(round(&*plugin, &ctx).phase(), Phase::QUEUED);
    assert_eq!(round(&*plugin, &ctx).phase(), Phase::SUCCESS);
    assert!(matches!(ctx.outputs().unwrap()["slept_seconds"], Literal::Float(s) if s >= 0.0));
}

#[test]
fn finalize_without_a_slot_is_harmless() {
    let plugin = load(&TestSetupContext::new());
    let ctx = task("never-ran", Literal::Integer(1));
    plugin.abort(&ctx).unwrap();
    plugin.finalize(&ctx).unwrap();
    assert!(ctx.granted(NAMESPACE).is_empty());
}

#[test]
fn the_example_task_file_parses_and_asks_for_two_seconds() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sleep-quota.json");
    let file = TaskFile::read(&path).unwrap();
    assert_eq!(file.template.task_type, "sleep-quota");
    assert!(file.template.interface.outputs.contains_key("slept_seconds"));
    assert_eq!(requested_seconds(&file.inputs, &file.template.custom), Ok(2.0));
}
