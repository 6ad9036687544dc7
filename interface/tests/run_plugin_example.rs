//! `examples/run_plugin.rs` against real libraries: it waits between rounds
//! (and runs at once after the plugin's signal), shows the plugin's logs,
//! gives every run a generated name of its own, and aborts on request.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The example, built into the plugin target directory (`cargo test` holds
/// the main one's lock).
fn example() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_example).clone()
}

fn build_example() -> PathBuf {
    let dir = kozmo_testkit::plugin_target_dir().join("default");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(kozmo_testkit::workspace_root())
        .args(["build", "--quiet", "-p", "kozmo-interface", "--example", "run_plugin"])
        .env("CARGO_TARGET_DIR", &dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir.join("debug/examples/run_plugin")
}

fn run(args: &[&str]) -> (Output, String, Duration) {
    let program = example();
    let start = Instant::now();
    let out = Command::new(program).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text, start.elapsed())
}

fn task_file(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn it_waits_between_rounds_wakes_on_signals_shows_logs_and_names_each_run_afresh() {
    let [lib] = <[PathBuf; 1]>::try_from(kozmo_testkit::build_plugins(&["kozmo-plugin-sleep-quota"])).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let task = task_file(
        tmp.path(),
        "nap.json",
        r#"{"type": "sleep-quota", "inputs": {"seconds": 0.5}}"#,
    );
    // A 30 s resync: only the plugin's alarm signal ends the sleep in time.
    let args = [lib.to_str().unwrap(), task.as_str(), "--delay-ms", "30000"];
    let (out, first, took) = run(&args);
    assert_eq!(out.status.code(), Some(0), "{first}");
    assert!(took < Duration::from_secs(20), "{took:?}: {first}");
    assert!(took >= Duration::from_millis(500), "the sleep is not skipped: {took:?}");
    let rounds = first.lines().filter(|l| l.starts_with("round ")).count();
    assert!(rounds < 10, "rounds are not run back to back: {first}");
    assert!(
        first.contains("plugin logs:") && first.contains("got a slot"),
        "{first}"
    );
    assert!(first.contains("slept_seconds"), "{first}");

    let name = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix("running ")
                    .map(|r| r.split(' ').next().unwrap().to_string())
            })
            .expect("the run names its generated name")
    };
    let (_, second, _) = run(&args);
    assert_ne!(name(&first), name(&second), "a fresh generated name per run");
}

#[test]
fn it_aborts_on_request_and_finalizes() {
    let [lib] = <[PathBuf; 1]>::try_from(kozmo_testkit::build_plugins(&["kozmo-plugin-shell"])).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let task = task_file(
        tmp.path(),
        "sleep.json",
        r#"{"type": "shell", "container": {"command": ["sleep", "60"]}}"#,
    );
    let (out, text, took) = run(&[
        lib.to_str().unwrap(),
        task.as_str(),
        "--delay-ms",
        "20",
        "--abort-after-ms",
        "200",
    ]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("aborted after") && text.contains("abort and finalize ran"),
        "{text}"
    );
    assert!(
        text.contains("aborting process group"),
        "the plugin's abort log is shown: {text}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}
