//! The sleep-quota plugin built as a real shared library, opened the way the
//! daemon opens it, and driven through the ABI.

use kozmo_interface::host::open_library;
use kozmo_interface::task::TaskTemplate;
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{load_plugin, Literal, Phase};

#[test]
fn load_allocate_sleep_and_release_through_the_abi() {
    let path = kozmo_testkit::build_plugins(&["kozmo-plugin-sleep-quota"]).remove(0);
    let lib = open_library(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let entry = &lib.entries[0];
    assert_eq!((entry.id.as_str(), entry.is_default), ("sleep-quota", false));

    let setup = TestSetupContext::new().with_secret("SLEEP_QUOTA", "1");
    let plugin = load_plugin(&setup, entry).unwrap();
    assert_eq!(setup.quotas(), [("slots".to_string(), 1)]);

    let bad = TestSetupContext::new().with_secret("SLEEP_QUOTA", "many");
    let err = load_plugin(&bad, entry).err().unwrap();
    assert_eq!(err.code, "BadQuota");

    let ctx = TestTaskContext::new()
        .with_template(TaskTemplate {
            task_type: "sleep-quota".into(),
            ..TaskTemplate::default()
        })
        .with_input("seconds", Literal::Float(0.0))
        .with_quota("slots", 1);
    assert_eq!(plugin.handle(&ctx).unwrap().info().phase(), Phase::QUEUED);
    ctx.next_round();
    assert_eq!(ctx.granted("slots").len(), 1);
    assert_eq!(plugin.handle(&ctx).unwrap().info().phase(), Phase::SUCCESS);
    assert!(matches!(ctx.outputs().unwrap()["slept_seconds"], Literal::Float(_)));
    assert_eq!(*setup.metric("sleeps_completed").unwrap().value.lock().unwrap(), 1.0);
    plugin.finalize(&ctx).unwrap();
    assert!(ctx.granted("slots").is_empty());
}
