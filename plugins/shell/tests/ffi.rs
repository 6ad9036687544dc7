//! The shell plugin built as a real shared library, opened the way the
//! daemon opens it, and driven through the ABI.

use std::time::{Duration, Instant};

use kozmo_interface::host::open_library;
use kozmo_interface::task::{Container, TaskTemplate};
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{load_plugin, ErrorKind, Literal, Phase, PhaseInfo, Plugin};

fn shell_plugin() -> Box<dyn Plugin> {
    let path = kozmo_testkit::build_plugins(&["kozmo-plugin-shell"]).remove(0);
    let lib = open_library(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    assert_eq!(lib.entries.len(), 1);
    let entry = &lib.entries[0];
    assert_eq!((entry.id.as_str(), entry.is_default), ("shell", false));
    assert_eq!(entry.registered_task_types, ["shell"]);
    load_plugin(&TestSetupContext::new(), entry).unwrap()
}

fn run(plugin: &dyn Plugin, ctx: &TestTaskContext) -> PhaseInfo {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = plugin.handle(ctx).unwrap().into_info();
        ctx.next_round();
        if info.phase().is_terminal() {
            return info;
        }
        assert!(Instant::now() < deadline, "{info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn task(raw: &std::path::Path, args: &[&str]) -> TestTaskContext {
    TestTaskContext::new()
        .with_template(TaskTemplate {
            task_type: "shell".into(),
            container: Some(Container {
                command: vec!["sh".into(), "-c".into()],
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Container::default()
            }),
            ..TaskTemplate::default()
        })
        .with_raw_output_prefix(&raw.to_string_lossy())
}

#[test]
fn success_and_failure_through_the_abi() {
    let plugin = shell_plugin();
    let raw = tempfile::tempdir().unwrap();

    let ok = task(raw.path(), &["echo \"n={{ .Inputs.n }}\""]).with_input("n", Literal::Integer(7));
    let first = plugin.handle(&ok).unwrap().into_info();
    assert_eq!((first.phase(), first.version()), (Phase::RUNNING, 1));
    assert_eq!(first.info().unwrap().logs.len(), 2);
    ok.next_round();
    let end = run(&*plugin, &ok);
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    let outputs = ok.outputs().unwrap();
    assert_eq!(outputs["stdout"], Literal::String("n=7".into()));
    assert_eq!(outputs["exit_code"], Literal::Integer(0));
    assert_eq!(ok.blob(&format!("{}/stdout", raw.path().display())).unwrap(), b"n=7\n");
    plugin.finalize(&ok).unwrap();

    let raw2 = tempfile::tempdir().unwrap();
    let bad = task(raw2.path(), &["echo nope >&2; exit 5"]);
    let end = run(&*plugin, &bad);
    assert_eq!(end.phase(), Phase::RETRYABLE_FAILURE);
    let err = end.err().unwrap();
    assert_eq!((err.code.as_str(), err.kind), ("NonZeroExit", ErrorKind::User));
    assert!(
        err.message.contains("status 5") && err.message.contains("nope"),
        "{}",
        err.message
    );
}

#[test]
fn abort_through_the_abi_stops_a_running_command() {
    let plugin = shell_plugin();
    let raw = tempfile::tempdir().unwrap();
    let ctx = task(raw.path(), &["sleep 30"]);
    assert_eq!(plugin.handle(&ctx).unwrap().info().phase(), Phase::RUNNING);
    ctx.next_round();
    plugin.abort(&ctx).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = plugin.handle(&ctx).unwrap().into_info();
        if info.phase().is_terminal() {
            assert!(info.phase().is_failure(), "{info}");
            break;
        }
        assert!(Instant::now() < deadline, "still {info} after abort");
        std::thread::sleep(Duration::from_millis(20));
    }
    plugin.finalize(&ctx).unwrap();
}
