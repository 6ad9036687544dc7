//! Process isolation in the real daemon: hostile plugins (segfault, abort,
//! exit(0), a huge allocation under a memory cap, an endless loop past the
//! call deadline, a crash while loading) run isolated next to echo tasks.
//! The daemon lives, the hostile task fails with the cause after its
//! retries, the echo tasks succeed, the child is restarted, and no child
//! outlives the daemon.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

const HOSTILE: [&str; 2] = ["kozmo-plugin-echo", "kozmo-fixture-hostile"];

fn hostile(action: &str) -> Value {
    json!({
        "type": "hostile",
        "id": {"project": "iso", "domain": "test", "name": action, "version": "1"},
        "inputs": {"do": action, "gib": 4}
    })
}

fn echo(n: usize) -> Value {
    json!({
        "type": "echo",
        "id": {"project": "iso", "domain": "test", "name": "echo", "version": "1"},
        "inputs": {"n": n}
    })
}

/// The pids of every plugin process the daemon started, in order (from
/// its `plugin process N started` log lines).
fn child_pids(log: &str) -> Vec<i32> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("plugin process ").nth(1)?;
            let (pid, tail) = rest.split_once(' ')?;
            tail.starts_with("started").then(|| pid.parse().ok())?
        })
        .collect()
}

/// Waits until none of `pids` is a live process.
fn assert_all_gone(pids: &[i32]) {
    let start = Instant::now();
    while pids.iter().any(|&p| pid_alive(p)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "plugin processes outlived the daemon: {:?}",
            pids.iter().filter(|&&p| pid_alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hostile_plugins_fail_only_their_own_task_and_their_process_is_restarted() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        root.path(),
        &HOSTILE,
        &[
            "--isolate",
            "hostile",
            "--isolate-memory-mb",
            "256",
            "--isolate-call-timeout-secs",
            "1",
            "--isolate-restart-backoff-secs",
            "0.05",
            "--api-token",
            "tok-not-for-plugins",
        ],
    );
    let cases = [
        ("segfault", "killed by signal 11 (SIGSEGV)"),
        ("abort", "killed by signal 6 (SIGABRT)"),
        ("exit0", "exited with status 0"),
        (
            "alloc",
            "killed by signal 6 (SIGABRT); out of memory under isolate_memory_mb = 256",
        ),
        ("loop", "was killed after the call deadline of 1s passed"),
    ];
    let mut echoes = Vec::new();
    for (action, cause) in cases {
        let id = d.submit(&hostile(action));
        echoes.extend((0..3).map(|n| d.submit(&echo(n))));
        let v = d.wait_terminal(&id);
        assert_eq!(v["phase"], "Failed", "{action}: {v}");
        let error = v["error"].to_string();
        let expected = format!("plugin \\\"hostile\\\" process died during handle of {id}: {cause}");
        assert!(error.contains(&expected), "{action}: {error} lacks {expected}");
        assert!(
            error.contains("RetriesExhausted|PluginProcessDied"),
            "{action}: {error}"
        );
        assert_eq!(v["attempt"], 3, "{action}: the system retry budget was used: {v}");
    }
    for id in &echoes {
        assert_eq!(d.wait_terminal(id)["phase"], "Succeeded", "{id}");
    }
    // A call stuck in the plugin is killed at its deadline, so an abort
    // of its execution completes.
    let stuck = d.submit(&json!({
        "type": "hostile",
        "id": {"project": "iso", "domain": "test", "name": "sleep", "version": "1"},
        "inputs": {"do": "sleep", "ms": 600_000}
    }));
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    d.client
        .post(&format!("/v1/executions/{stuck}/abort"), &json!({"reason": "stuck"}))
        .unwrap();
    assert_eq!(d.wait_terminal(&stuck)["phase"], "Aborted");
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "aborted long before the call would end"
    );

    // The last child is healthy and serves the plugin again.
    let ok = d.submit(&hostile("ok"));
    assert_eq!(d.wait_terminal(&ok)["phase"], "Succeeded");

    let log = d.log_text();
    let pids = child_pids(&log);
    let distinct: BTreeSet<_> = pids.iter().collect();
    assert!(distinct.len() >= 5 * 4, "one child per attempt at least: {pids:?}");
    assert!(log.contains("plugin process restarted"), "{log}");
    assert!(
        log.contains("plugin::hostile] kozmo_fixture_hostile: hostile handle: segfault"),
        "the plugin's log records reach the daemon's log tagged with its id"
    );
    let current = *pids.last().unwrap();
    match std::fs::read(format!("/proc/{current}/environ")) {
        Ok(environ) => {
            let environ = String::from_utf8_lossy(&environ);
            assert!(environ.contains("PATH="), "{environ}");
            assert!(
                !environ.contains("KOZMO_SECRET_") && !environ.contains("tok-not-for-plugins"),
                "the child sees no secret: {environ}"
            );
        }
        // Not root: the child is non-dumpable, its environ closed to other processes.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
        Err(e) => panic!("the current child runs: {e}"),
    }

    assert!(d.signal("TERM").success());
    assert_all_gone(&pids);
}

#[test]
fn a_library_that_crashes_while_loading_isolated_is_a_one_line_load_crash() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &["kozmo-plugin-echo", "kozmo-fixture-loadcrash"]);
    let file = plugins.join("libkozmo_fixture_loadcrash.so");
    let line = format!("error[load-crash]: {}: crashed while loading (SIGSEGV)", file.display());

    let serve = |extra: &[&str]| {
        kozmo()
            .args(["serve", "--listen", "127.0.0.1:0", "--isolate", "*", "--data-dir"])
            .arg(root.path().join("data"))
            .arg("--plugins-dir")
            .arg(&plugins)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = serve(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&line), "{stderr}");

    let list = kozmo()
        .args(["plugins", "list", "--isolate", "*", "--dir"])
        .arg(&plugins)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert_eq!(list.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&line), "{stdout}");

    // Skipped, the daemon runs the rest, isolated too: echo, and shell
    // (a process started from the child, its files in the data store).
    let mut d = Daemon::start(
        root.path(),
        &["kozmo-plugin-echo", "kozmo-plugin-shell", "kozmo-fixture-loadcrash"],
        &["--isolate", "*", "--skip-invalid-plugins"],
    );
    let id = d.submit(&echo(1));
    assert_eq!(d.wait_terminal(&id)["phase"], "Succeeded");
    let shell = d.submit(&read_json(&example("shell-hello.json")));
    let v = d.wait_terminal(&shell);
    assert_eq!(v["phase"], "Succeeded", "{v}");
    let (_, outputs) = d.client.get(&format!("/v1/executions/{shell}/outputs")).unwrap();
    assert!(outputs.to_string().contains("hello"), "{outputs}");
    let log = d.log_text();
    assert!(
        log.contains(&format!("{}: crashed while loading (SIGSEGV)", file.display())),
        "{log}"
    );
    let pids = child_pids(&log);
    assert!(!pids.is_empty(), "echo ran in a child: {log}");
    assert!(d.signal("TERM").success());
    assert_all_gone(&pids);
}

#[test]
fn plugins_list_shows_which_plugins_are_isolated_from_flags_env_and_config() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &HOSTILE);
    let isolated = |out: &std::process::Output| -> Vec<(String, String)> {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        stdout
            .lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols[0].to_string(), cols[3].to_string())
            })
            .collect()
    };
    let list = || {
        let mut c = kozmo();
        c.args(["plugins", "list", "--dir"])
            .arg(&plugins)
            .env_remove("KOZMO_ISOLATE")
            .env_remove("KOZMO_CONFIG");
        c
    };
    let by_flag = list().args(["--isolate", "hostile"]).output().unwrap();
    assert_eq!(
        isolated(&by_flag),
        [("hostile".into(), "yes".into()), ("echo".into(), "no".into())]
    );
    let by_env = list().env("KOZMO_ISOLATE", "echo,hostile").output().unwrap();
    assert!(isolated(&by_env).iter().all(|(_, iso)| iso == "yes"));
    let config = root.path().join("kozmo.toml");
    std::fs::write(&config, "isolate = [\"echo\"]\n").unwrap();
    let by_file = list().arg("--config").arg(&config).output().unwrap();
    assert_eq!(
        isolated(&by_file),
        [("hostile".into(), "no".into()), ("echo".into(), "yes".into())]
    );
    let none = list().output().unwrap();
    assert!(isolated(&none).iter().all(|(_, iso)| iso == "no"));
}
