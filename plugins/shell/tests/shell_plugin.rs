//! The shell plugin driven through `TestTaskContext`, with real processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kozmo_interface::task::{Container, TaskFile, TaskTemplate};
use kozmo_interface::testing::TestTaskContext;
use kozmo_interface::{
    serde_json, ErrorKind, Literal, Phase, PhaseInfo, Plugin, PluginStateReaderExt, TaskExecutionContext,
};
use kozmo_plugin_shell::{stdout_value, Shell, ShellState, STATE_VERSION};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn template(command: &[&str], args: &[&str], env: &[(&str, &str)]) -> TaskTemplate {
    TaskTemplate {
        task_type: "shell".into(),
        container: Some(Container {
            command: strings(command),
            args: strings(args),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }),
        ..TaskTemplate::default()
    }
}

/// A context whose raw output prefix is the (absolute) `raw` directory.
fn ctx_in(raw: &Path, template: TaskTemplate) -> TestTaskContext {
    TestTaskContext::new()
        .with_template(template)
        .with_raw_output_prefix(&raw.to_string_lossy())
}

fn raw_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Calls `handle` round after round until a terminal phase (20 s at most).
fn run_to_end(plugin: &Shell, ctx: &TestTaskContext) -> PhaseInfo {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = plugin.handle(ctx).unwrap();
        ctx.next_round();
        let info = t.into_info();
        if info.phase().is_terminal() {
            return info;
        }
        assert_eq!(info.phase(), Phase::RUNNING, "{info}");
        assert!(Instant::now() < deadline, "no terminal phase in time: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state_of(ctx: &TestTaskContext) -> ShellState {
    let (version, state) = ctx.plugin_state_reader().get::<ShellState>().unwrap();
    assert_eq!(version, STATE_VERSION);
    state.expect("state after the first round")
}

/// Processes (not zombies) whose process group is `pgid` (Linux /proc).
#[cfg(target_os = "linux")]
fn live_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(stat) = kozmo_plugin_shell::process::proc_stat(pid) {
            if stat.pgrp == pgid as i32 && !matches!(stat.state, 'Z' | 'X' | 'x') {
                pids.push(pid);
            }
        }
    }
    pids
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn echo_of_a_rendered_input_succeeds_with_exit_code_and_stdout() {
    let raw = raw_dir();
    let ctx = ctx_in(
        raw.path(),
        template(&["echo"], &["hello,", "{{ .Inputs.name }}", "it's", "$HOME"], &[]),
    )
    .with_input("name", Literal::String("kozmo & co".into()));
    let first = Shell::default().handle(&ctx).unwrap().into_info();
    assert_eq!((first.phase(), first.version()), (Phase::RUNNING, 1));
    let names: Vec<&str> = first.info().unwrap().logs.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["stdout", "stderr"]);
    ctx.next_round();

    let end = run_to_end(&Shell::default(), &ctx);
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    let outputs = ctx.outputs().unwrap();
    assert_eq!(outputs["exit_code"], Literal::Integer(0));
    assert_eq!(
        outputs["stdout"],
        Literal::String("hello, kozmo & co it's $HOME".into())
    );

    // Output and error copied to the data store, logs pointing there.
    let raw_ref = raw.path().to_string_lossy().into_owned();
    let stdout_ref = format!("{raw_ref}/stdout");
    let stderr_ref = format!("{raw_ref}/stderr");
    assert_eq!(ctx.blob(&stdout_ref).unwrap(), b"hello, kozmo & co it's $HOME\n");
    assert_eq!(ctx.blob(&stderr_ref).unwrap(), b"");
    let logs = &end.info().unwrap().logs;
    assert_eq!(logs[0].uri, stdout_ref);
    assert_eq!(logs[1].uri, stderr_ref);
    assert_eq!(end.info().unwrap().custom_info["exit_code"], serde_json::json!(0));

    // The working directory is inside the raw output prefix.
    let state = state_of(&ctx);
    assert!(Path::new(&state.work_dir).starts_with(raw.path()), "{}", state.work_dir);
    assert_eq!(state.pgid, state.pid);
}

#[test]
fn non_zero_exit_is_a_retryable_user_failure_with_the_stderr_tail() {
    let raw = raw_dir();
    let ctx = ctx_in(
        raw.path(),
        template(&["sh", "-c"], &["echo first >&2; echo 'it broke' >&2; exit 3"], &[]),
    );
    let end = run_to_end(&Shell::default(), &ctx);
    assert_eq!(end.phase(), Phase::RETRYABLE_FAILURE, "{end}");
    let err = end.err().unwrap();
    assert_eq!(err.code, "NonZeroExit");
    assert_eq!(err.kind, ErrorKind::User);
    assert!(err.message.contains("status 3"), "{}", err.message);
    assert!(err.message.ends_with("first\nit broke"), "{}", err.message);
    assert!(ctx.outputs().is_none());
    let stderr_ref = format!("{}/stderr", raw.path().display());
    assert_eq!(ctx.blob(&stderr_ref).unwrap(), b"first\nit broke\n");
    assert_eq!(end.info().unwrap().logs[1].uri, stderr_ref);
}

#[test]
fn shell_builtins_cannot_escape_the_wrapper() {
    // `exit 4` as the command itself must still record status 4.
    let raw = raw_dir();
    let ctx = ctx_in(raw.path(), template(&["exit"], &["4"], &[]));
    let end = run_to_end(&Shell::default(), &ctx);
    assert_eq!(end.err().map(|e| e.code.as_str()), Some("NonZeroExit"));
    assert!(end.err().unwrap().message.contains("status 4"), "{end}");
}

#[test]
fn a_missing_program_fails_with_status_127() {
    let raw = raw_dir();
    let ctx = ctx_in(raw.path(), template(&["kozmo-no-such-program-xyz"], &[], &[]));
    let end = run_to_end(&Shell::default(), &ctx);
    assert_eq!(end.phase(), Phase::RETRYABLE_FAILURE);
    assert!(end.err().unwrap().message.contains("status 127"), "{end}");
}

#[test]
fn environment_is_the_tasks_not_the_daemons() {
    // cargo sets CARGO_MANIFEST_DIR for test processes; it must not leak.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let raw = raw_dir();
    let ctx = ctx_in(
        raw.path(),
        template(
            &[
                "sh",
                "-c",
                r#"echo "${CARGO_MANIFEST_DIR:-unset} $GREETING $(pwd)"; command -v sh >/dev/null"#,
            ],
            &[],
            &[("GREETING", "hi there")],
        ),
    );
    let end = run_to_end(&Shell::default(), &ctx);
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    let state = state_of(&ctx);
    let cwd = std::fs::canonicalize(&state.work_dir).unwrap();
    assert_eq!(
        ctx.outputs().unwrap()["stdout"],
        Literal::String(format!("unset hi there {}", cwd.display()))
    );
}

#[test]
fn the_end_of_the_command_signals_the_execution_and_the_next_round_has_the_result() {
    // The daemon runs the signalled round at once instead of at its resync:
    // a command of milliseconds completes in milliseconds.
    let raw = raw_dir();
    let ctx = ctx_in(raw.path(), template(&["sh", "-c", "sleep 0.2; echo done"], &[], &[]));
    let first = Shell::default().handle(&ctx).unwrap().into_info();
    assert_eq!(first.phase(), Phase::RUNNING);
    ctx.next_round();
    assert_eq!(ctx.signal_count(), 0, "no signal while the command runs");
    wait_for("the exit signal", Duration::from_secs(10), || ctx.signal_count() > 0);
    let after = Shell::default().handle(&ctx).unwrap().into_info();
    assert_eq!(
        after.phase(),
        Phase::SUCCESS,
        "the signalled round finds the exit status: {after}"
    );
    assert_eq!(ctx.outputs().unwrap()["stdout"], Literal::String("done".into()));
    assert_eq!(ctx.signal_count(), 1, "one signal per command");
}

#[test]
fn handle_does_not_block_and_abort_stops_the_task() {
    let raw = raw_dir();
    let ctx = ctx_in(raw.path(), template(&["sleep"], &["{{ .Inputs.seconds }}"], &[]))
        .with_input("seconds", Literal::Integer(5));
    let started = Instant::now();
    let first = Shell::default().handle(&ctx).unwrap().into_info();
    assert_eq!(first.phase(), Phase::RUNNING);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "handle waited for the command"
    );
    ctx.next_round();
    let second = Shell::default().handle(&ctx).unwrap().into_info();
    assert_eq!(
        (second.phase(), second.version()),
        (Phase::RUNNING, 1),
        "no new event while running"
    );
    assert_eq!(ctx.pending_state(), None, "no new state while running");

    Shell::default().abort(&ctx).unwrap();
    Shell::default().abort(&ctx).unwrap(); // idempotent
    let state = state_of(&ctx);
    wait_for("the wrapper to end", Duration::from_secs(5), || {
        kozmo_plugin_shell::process::leader(state.pid, state.start_ticks) != kozmo_plugin_shell::process::Leader::Alive
    });
    let after = Shell::default().handle(&ctx).unwrap().into_info();
    assert_ne!(after.phase(), Phase::SUCCESS, "{after}");
    assert!(after.phase().is_failure(), "{after}");
    Shell::default().finalize(&ctx).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn abort_kills_the_whole_process_group() {
    let raw = raw_dir();
    let ctx = ctx_in(raw.path(), template(&["sh", "-c", "sleep 30 & sleep 30"], &[], &[]));
    assert_eq!(Shell::default().handle(&ctx).unwrap().info().phase(), Phase::RUNNING);
    ctx.next_round();
    let state = state_of(&ctx);
    // wrapper sh, subshell/inner sh, two sleeps (some shells exec the last command).
    wait_for("both sleeps to start", Duration::from_secs(5), || {
        live_members(state.pgid).len() >= 3
    });
    let members = live_members(state.pgid);
    let begun = Instant::now();
    Shell::default().abort(&ctx).unwrap();
    assert!(begun.elapsed() < Duration::from_secs(2), "abort blocked");
    wait_for("every process of the group to end", Duration::from_secs(5), || {
        live_members(state.pgid).is_empty()
    });
    for pid in members {
        let alive = kozmo_plugin_shell::process::proc_stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'));
        assert!(!alive, "pid {pid} survived the abort");
    }
    let after = Shell::default().handle(&ctx).unwrap().into_info();
    assert_ne!(after.phase(), Phase::SUCCESS);
}

#[cfg(target_os = "linux")]
#[test]
fn abort_escalates_to_sigkill_after_the_grace_period() {
    let raw = raw_dir();
    let mut t = template(&["sh", "-c", "trap '' TERM; sleep 30 & sleep 30"], &[], &[]);
    t.custom = serde_json::json!({"timeout_kill_grace_ms": 1500});
    let ctx = ctx_in(raw.path(), t);
    Shell::default().handle(&ctx).unwrap();
    ctx.next_round();
    let state = state_of(&ctx);
    wait_for("the command to start", Duration::from_secs(5), || {
        live_members(state.pgid).len() >= 3
    });
    Shell::default().abort(&ctx).unwrap();
    assert!(
        !live_members(state.pgid).is_empty(),
        "SIGTERM is ignored: the sleeps must outlive it until the grace period ends"
    );
    wait_for("SIGKILL to end the group", Duration::from_secs(5), || {
        live_members(state.pgid).is_empty()
    });
}

#[test]
fn a_restarted_daemon_finds_the_result_of_a_command_started_before() {
    let raw = raw_dir();
    let t = template(&["sh", "-c", "sleep 0.3; echo survived"], &[], &[]);
    let before = ctx_in(raw.path(), t.clone());
    {
        let plugin: Box<dyn Plugin> = Box::new(Shell::default());
        assert_eq!(plugin.handle(&before).unwrap().info().phase(), Phase::RUNNING);
        before.next_round();
    } // the first plugin instance is gone
    let (version, bytes) = before.plugin_state_reader().get_bytes().unwrap();
    let state = state_of(&before);
    wait_for("the exit code file", Duration::from_secs(10), || {
        Path::new(&state.exit_code_path).exists()
    });

    // A new daemon: new plugin instance, new context restored from the persisted state.
    let after = ctx_in(raw.path(), t).with_state(version, bytes.unwrap());
    let plugin: Box<dyn Plugin> = Box::new(Shell::default());
    let end = plugin.handle(&after).unwrap().into_info();
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    assert_eq!(after.outputs().unwrap()["stdout"], Literal::String("survived".into()));
}

#[test]
fn a_process_killed_from_outside_is_reported_as_vanished() {
    let raw = raw_dir();
    let ctx = ctx_in(raw.path(), template(&["sleep"], &["30"], &[]));
    Shell::default().handle(&ctx).unwrap();
    ctx.next_round();
    let state = state_of(&ctx);
    wait_for("the wrapper's pid file", Duration::from_secs(10), || {
        Path::new(&state.work_dir).join("pid").exists()
    });
    let status = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", state.pgid)])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the wrapper to end", Duration::from_secs(5), || {
        kozmo_plugin_shell::process::leader(state.pid, state.start_ticks) != kozmo_plugin_shell::process::Leader::Alive
    });
    let end = Shell::default().handle(&ctx).unwrap().into_info();
    assert_eq!(end.phase(), Phase::RETRYABLE_FAILURE, "{end}");
    let err = end.err().unwrap();
    assert_eq!((err.code.as_str(), err.kind), ("ProcessVanished", ErrorKind::System));
}

#[test]
fn template_errors_fail_permanently_without_starting_anything() {
    let raw = raw_dir();
    let ctx = ctx_in(raw.path(), template(&["echo"], &["{{ .Inputs.missing }}"], &[]))
        .with_input("other", Literal::Integer(1));
    let info = Shell::default().handle(&ctx).unwrap().into_info();
    assert_eq!(info.phase(), Phase::PERMANENT_FAILURE);
    let err = info.err().unwrap();
    assert_eq!((err.code.as_str(), err.kind), ("TemplateError", ErrorKind::User));
    assert!(
        err.message.contains("requested input is not found [missing]"),
        "{}",
        err.message
    );
    assert_eq!(ctx.pending_state(), None);
    assert_eq!(
        std::fs::read_dir(raw.path()).unwrap().count(),
        0,
        "no working directory"
    );
}

#[test]
fn missing_command_and_bad_config_fail_permanently() {
    let raw = raw_dir();
    let no_container = ctx_in(
        raw.path(),
        TaskTemplate {
            task_type: "shell".into(),
            ..TaskTemplate::default()
        },
    );
    let info = Shell::default().handle(&no_container).unwrap().into_info();
    assert_eq!(
        (info.phase(), info.err().unwrap().code.as_str()),
        (Phase::PERMANENT_FAILURE, "NoCommand")
    );

    let mut t = template(&["true"], &[], &[]);
    t.custom = serde_json::json!({"timeout_kill_grace": 5});
    let info = Shell::default().handle(&ctx_in(raw.path(), t)).unwrap().into_info();
    assert_eq!(
        (info.phase(), info.err().unwrap().code.as_str()),
        (Phase::PERMANENT_FAILURE, "BadConfig")
    );
    assert!(info.err().unwrap().message.contains("timeout_kill_grace"));

    let mut t = template(&["true"], &[], &[]);
    t.custom = serde_json::json!({"timeout_kill_grace_ms": u64::MAX});
    let info = Shell::default().handle(&ctx_in(raw.path(), t)).unwrap().into_info();
    assert_eq!(info.err().unwrap().code, "BadConfig");
    assert!(
        info.err().unwrap().message.contains("at most 600000"),
        "{:?}",
        info.err()
    );

    let info = Shell::default()
        .handle(&ctx_in(raw.path(), template(&["echo", "a\0b"], &[], &[])))
        .unwrap()
        .into_info();
    assert_eq!(info.err().unwrap().code, "BadCommand");
}

#[test]
fn the_default_test_prefix_is_a_local_directory_and_the_command_runs_there() {
    // As in the daemon, whose prefix is an absolute path.
    let ctx = TestTaskContext::new().with_template(template(&["sh", "-c", "pwd"], &[], &[]));
    let run = kozmo_interface::testing::drive(&Shell::default(), &ctx).unwrap();
    assert_eq!(run.phase(), Phase::SUCCESS, "{run:?}");
    let raw = kozmo_interface::io::local_dir(&ctx.output_writer().raw_output_prefix()).expect("a local prefix");
    let state = state_of(&ctx);
    assert_eq!(PathBuf::from(&state.work_dir), raw.join("shell"));
    assert!(run.logged("exited with status 0"), "{}", run.log_text());
    let Literal::String(pwd) = &ctx.outputs().unwrap()["stdout"] else {
        panic!("stdout is a string")
    };
    assert_eq!(
        PathBuf::from(pwd).canonicalize().unwrap(),
        raw.join("shell").canonicalize().unwrap()
    );
}

#[test]
fn abort_and_finalize_before_any_round_do_nothing() {
    let ctx = TestTaskContext::new();
    Shell::default().abort(&ctx).unwrap();
    Shell::default().finalize(&ctx).unwrap();
    assert_eq!(ctx.pending_state(), None, "no state written");
    assert!(ctx.outputs().is_none() && ctx.error_document().is_none());
    assert!(ctx.events().is_empty());
}

#[test]
fn a_non_local_raw_prefix_puts_the_files_in_the_temp_dir() {
    // A data store that is not a local directory (an object store, say).
    let ctx = TestTaskContext::new()
        .with_raw_output_prefix("mem://raw/test-exec-n0-0")
        .with_template(template(&["echo"], &["{{ .RawOutputDataPrefix }}"], &[]));
    let end = run_to_end(&Shell::default(), &ctx);
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    let state = state_of(&ctx);
    let work_dir = PathBuf::from(&state.work_dir);
    assert!(
        work_dir.starts_with(std::env::temp_dir().join("kozmo-shell")),
        "{}",
        state.work_dir
    );
    assert!(work_dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("test-exec-n0-0-"));
    assert_eq!(
        ctx.outputs().unwrap()["stdout"],
        Literal::String("mem://raw/test-exec-n0-0".into())
    );
    assert_eq!(
        ctx.blob("mem://raw/test-exec-n0-0/stdout").unwrap(),
        b"mem://raw/test-exec-n0-0\n"
    );
    let _ = std::fs::remove_dir_all(work_dir);
}

#[test]
fn stdout_value_drops_one_newline_and_truncates_with_a_note() {
    assert_eq!(stdout_value(b"a\n\n", 3, 100), "a\n");
    assert_eq!(stdout_value(b"a\r\n", 3, 100), "a");
    assert_eq!(stdout_value(b"a\r", 2, 100), "a\r");
    assert_eq!(stdout_value(b"", 0, 100), "");
    let big = vec![b'x'; 500];
    let v = stdout_value(&big, 500, 200);
    assert!(v.len() <= 200, "{}", v.len());
    assert!(v.starts_with("xxx"));
    assert!(v.ends_with("truncated to 200 of 500 bytes; see the stdout log]"), "{v}");
    // Cuts on a character boundary.
    let snow = "☃".repeat(100);
    let v = stdout_value(snow.as_bytes(), snow.len() as u64, 120);
    assert!(v.starts_with('☃'));
    // Only the head of a huge file was read: still truncated.
    assert!(stdout_value(b"abc", 10_000, 1_000).contains("of 10000 bytes"));
}

#[test]
fn the_entry_registers_the_shell_task_type() {
    let e = kozmo_plugin_shell::entry();
    assert_eq!(e.id, "shell");
    assert_eq!(e.registered_task_types, ["shell"]);
    assert!(!e.is_default);
    let plugin = kozmo_interface::load_plugin(&kozmo_interface::testing::TestSetupContext::new(), &e).unwrap();
    assert_eq!(plugin.id(), "shell");
}

/// Reads `examples/<name>.json` like the CLI does: a task template plus `inputs`.
fn example(name: &str) -> (TaskTemplate, kozmo_interface::LiteralMap) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/{name}.json"));
    let file = TaskFile::read(&path).unwrap();
    assert_eq!(file.template.task_type, "shell");
    (file.template, file.inputs)
}

fn run_example(name: &str) -> (PhaseInfo, TestTaskContext) {
    let raw = raw_dir();
    let (template, inputs) = example(name);
    let mut ctx = ctx_in(raw.path(), template);
    ctx.inputs = inputs;
    let end = run_to_end(&Shell::default(), &ctx);
    (end, ctx)
}

#[test]
fn the_examples_reach_their_documented_ends() {
    let (end, ctx) = run_example("shell-hello");
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    assert_eq!(
        ctx.outputs().unwrap()["stdout"],
        Literal::String("hello, world, from kozmo's shell plugin (key test_exec_n0_0)".into())
    );

    let (end, _) = run_example("shell-fail");
    assert_eq!(end.phase(), Phase::RETRYABLE_FAILURE, "{end}");
    let err = end.err().unwrap();
    assert_eq!(err.code, "NonZeroExit");
    assert!(
        err.message.contains("error: 41 is not a valid answer"),
        "{}",
        err.message
    );

    // shell-sleep takes a few seconds: check that it starts and renders its input.
    let raw = raw_dir();
    let (template, inputs) = example("shell-sleep");
    let mut ctx = ctx_in(raw.path(), template);
    ctx.inputs = inputs;
    assert_eq!(Shell::default().handle(&ctx).unwrap().info().phase(), Phase::RUNNING);
    ctx.next_round();
    let state = state_of(&ctx);
    wait_for("the first line", Duration::from_secs(5), || {
        std::fs::read_to_string(&state.stdout_path).is_ok_and(|s| s == "started\n")
    });
    Shell::default().abort(&ctx).unwrap();
}

#[test]
fn an_input_templated_into_a_script_runs_as_code_but_a_positional_argument_does_not() {
    let evil = Literal::String("hi; touch pwned".into());
    // UNSAFE: the input becomes part of the script `sh -c` parses.
    let raw = raw_dir();
    let ctx =
        ctx_in(raw.path(), template(&["sh", "-c", "echo {{ .Inputs.x }}"], &[], &[])).with_input("x", evil.clone());
    let end = run_to_end(&Shell::default(), &ctx);
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    let work_dir = PathBuf::from(state_of(&ctx).work_dir);
    assert!(work_dir.join("pwned").exists(), "the templated `touch` ran");
    assert_eq!(ctx.outputs().unwrap()["stdout"], Literal::String("hi".into()));

    // Safe: the input is $1, one word whatever it contains.
    let raw = raw_dir();
    let ctx = ctx_in(
        raw.path(),
        template(&["sh", "-c", "echo \"$1\"", "sh"], &["{{ .Inputs.x }}"], &[]),
    )
    .with_input("x", evil);
    let end = run_to_end(&Shell::default(), &ctx);
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    let work_dir = PathBuf::from(state_of(&ctx).work_dir);
    assert!(!work_dir.join("pwned").exists(), "nothing ran");
    assert_eq!(
        ctx.outputs().unwrap()["stdout"],
        Literal::String("hi; touch pwned".into())
    );
}

#[test]
fn the_work_dir_is_the_same_in_every_round_and_process() {
    let raw = raw_dir();
    let prefix = raw.path().to_string_lossy().into_owned();
    let a = kozmo_plugin_shell::work_dir_for(&prefix, "name-n0-0", "id");
    assert_eq!(a, raw.path().join("shell"));
    assert_eq!(a, kozmo_plugin_shell::work_dir_for(&prefix, "name-n0-0", "id"));
    let b = kozmo_plugin_shell::work_dir_for("mem://raw/x", "name-n0-0", "id-1");
    assert_eq!(b, kozmo_plugin_shell::work_dir_for("mem://raw/x", "name-n0-0", "id-1"));
    assert_ne!(b, kozmo_plugin_shell::work_dir_for("mem://raw/x", "name-n0-0", "id-2"));
}

/// A round whose state was lost (the daemon died before committing it):
/// a fresh context on the same raw output prefix, without plugin state.
#[test]
fn a_lost_round_adopts_the_running_command_instead_of_starting_it_again() {
    let raw = raw_dir();
    let ledger = raw.path().join("ledger");
    let t = template(
        &["sh", "-c", "echo ran >> \"$1\"; sleep 0.5; echo finished", "sh"],
        &[ledger.to_str().unwrap()],
        &[],
    );
    let first = ctx_in(raw.path(), t.clone());
    assert_eq!(Shell::default().handle(&first).unwrap().info().phase(), Phase::RUNNING);
    first.next_round();
    let started = state_of(&first);
    wait_for("the wrapper's pid file", Duration::from_secs(10), || {
        Path::new(&started.work_dir).join("pid").exists()
    });

    let again = ctx_in(raw.path(), t.clone());
    let info = Shell::default().handle(&again).unwrap().into_info();
    assert_eq!(info.phase(), Phase::RUNNING, "{info}");
    again.next_round();
    let adopted = state_of(&again);
    assert_eq!(
        (adopted.pid, adopted.work_dir.as_str()),
        (started.pid, started.work_dir.as_str())
    );
    let end = run_to_end(&Shell::default(), &again);
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    assert_eq!(again.outputs().unwrap()["stdout"], Literal::String("finished".into()));

    // Lost again after the end: the result is adopted, nothing reruns.
    let late = ctx_in(raw.path(), t);
    let end = Shell::default().handle(&late).unwrap().into_info();
    assert_eq!(end.phase(), Phase::SUCCESS, "{end}");
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap(),
        "ran\n",
        "the command ran once"
    );
}

#[test]
fn a_lost_round_whose_wrapper_died_without_a_status_is_not_started_again() {
    let raw = raw_dir();
    let t = template(&["sleep"], &["30"], &[]);
    let first = ctx_in(raw.path(), t.clone());
    Shell::default().handle(&first).unwrap();
    first.next_round();
    let state = state_of(&first);
    wait_for("the wrapper's pid file", Duration::from_secs(10), || {
        Path::new(&state.work_dir).join("pid").exists()
    });
    let status = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", state.pgid)])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the wrapper to end", Duration::from_secs(5), || {
        kozmo_plugin_shell::process::leader(state.pid, state.start_ticks) != kozmo_plugin_shell::process::Leader::Alive
    });
    let again = ctx_in(raw.path(), t);
    let end = Shell::default().handle(&again).unwrap().into_info();
    assert_eq!(end.phase(), Phase::RETRYABLE_FAILURE, "{end}");
    assert_eq!(end.err().unwrap().code, "ProcessVanished");
    again.next_round();
    assert_eq!(state_of(&again).pid, state.pid, "no new process");
}

#[test]
fn a_status_the_wrapper_cannot_write_is_a_handler_error_not_a_silent_running() {
    let raw = raw_dir();
    let ctx = ctx_in(raw.path(), template(&["sleep", "1"], &[], &[]));
    assert_eq!(Shell::default().handle(&ctx).unwrap().info().phase(), Phase::RUNNING);
    ctx.next_round();
    let state = state_of(&ctx);
    // While the command sleeps: every write to exit_code fails with ENOSPC,
    // as on a full disk.
    std::os::unix::fs::symlink("/dev/full", Path::new(&state.work_dir).join("exit_code")).unwrap();
    wait_for("the wrapper to end", Duration::from_secs(10), || {
        kozmo_plugin_shell::process::leader(state.pid, state.start_ticks) != kozmo_plugin_shell::process::Leader::Alive
    });
    let err = match Shell::default().handle(&ctx) {
        Ok(t) => panic!("a handler error expected, got {}", t.into_info()),
        Err(e) => e,
    };
    assert_eq!(err.code, "ShellWriteFailed");
    assert!(
        err.message.contains("exit status") && err.message.contains("disk full"),
        "{}",
        err.message
    );
}
