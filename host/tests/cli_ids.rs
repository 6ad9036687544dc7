//! Execution ids through the real `kozmo` CLI against a real daemon: every
//! command that takes an id sends it percent-encoded, so an id names that
//! execution and nothing else, and `--` lets an id start with `-`.

use serde_json::Value;

mod daemon_harness;

use daemon_harness::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ids_are_percent_encoded_and_dash_ids_work_after_double_dash() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);
    let echo = example("echo.json");
    let echo = echo.to_str().unwrap();

    // A path in an id is not a way to reach another endpoint: each command
    // asks for the execution of that id and says it does not exist.
    let sneaky = "../../v1/plugins";
    for args in [
        vec!["get", sneaky],
        vec!["get", sneaky, "-o", "json"],
        vec!["events", sneaky],
        vec!["outputs", sneaky],
        vec!["abort", sneaky],
    ] {
        let out = d.cli(&args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout} {stderr}");
        assert!(
            stderr.contains("404 not_found") && stderr.contains(sneaky),
            "{args:?}: a not-found error naming the id: {stderr}"
        );
        assert!(
            !stdout.contains("echo") && !stderr.contains("kozmo-plugin-echo"),
            "{args:?}: the plugin list is not printed: {stdout}"
        );
    }
    for sneaky in ["x?limit=1", "x#frag", "x%2Fy", "a b"] {
        let out = d.cli(&["get", sneaky]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{sneaky}: {stderr}");
        assert!(stderr.contains("404 not_found"), "{sneaky}: {stderr}");
    }

    // `.` and `..` cannot be put into a URL path at all; no id is either.
    for dots in [".", ".."] {
        let out = d.cli(&["get", dots]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{dots}: {stderr}");
        assert!(
            stderr.contains(&format!("[{dots}] is not an execution id")) && stderr.contains("[A-Za-z0-9._-]"),
            "{dots}: {stderr}"
        );
    }

    // An id starting with `-` is a valid id; `--` lets every command take it.
    let out = d.cli(&["submit", echo, "--id=-rf", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cli(&["get", "-o", "json", "--", "-rf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "-rf", "{v}");
    assert_eq!(v["phase"], "Succeeded", "{v}");
    let out = d.cli(&["events", "--", "-rf"]);
    assert!(text(&out.stdout).contains("PhaseSuccess"), "{}", text(&out.stderr));
    let out = d.cli(&["outputs", "--", "-rf"]);
    let outputs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(outputs["greeting"].is_object(), "{outputs}");
    let out = d.cli(&["abort", "--reason", "late", "--", "-rf"]);
    // Aborting a finished execution is answered for this id: it exists.
    assert!(!text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    // Without `--` clap says how to pass it.
    let out = d.cli(&["get", "-rf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unexpected argument") && text(&out.stderr).contains("use '-- -r"),
        "{}",
        text(&out.stderr)
    );
}
