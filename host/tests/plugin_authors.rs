//! What a plugin author meets: `kozmo plugins new` writes a crate whose own
//! tests pass, whose library `kozmo plugins check` accepts and a real
//! daemon loads and runs; and the raw output prefix a plugin gets is an
//! absolute path even when the daemon's data directory was given as a
//! relative one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

mod daemon_harness;

use daemon_harness::*;

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `cargo ARGS --offline` in `dir`, into a target directory shared by every
/// run (so abi_stable and friends compile once), pinned to the workspace's
/// dependency versions.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo)
        .current_dir(dir)
        .args(args)
        .arg("--offline")
        .env("CARGO_TARGET_DIR", scaffold_target())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs")
}

fn scaffold_target() -> PathBuf {
    kozmo_testkit::plugin_target_dir().join("scaffold")
}

#[test]
fn plugins_new_writes_a_crate_that_tests_builds_checks_and_runs_in_the_daemon() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo");

    // The scaffold.
    let out = kozmo()
        .args(["plugins", "new", "demo", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for f in ["Cargo.toml", "src/lib.rs", "README.md", "task.json", ".gitignore"] {
        assert!(dir.join(f).is_file(), "{f} written: {}", text(&out));
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"crate-type = ["cdylib", "rlib"]"#), "{manifest}");
    let interface = kozmo_testkit::workspace_root().join("interface");
    assert!(
        manifest.contains(&format!("kozmo-interface = {{ path = \"{}\" }}", interface.display())),
        "{manifest}"
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for needle in [
        "cargo build",
        "cargo test",
        "kozmo plugins check",
        "--plugins-dir",
        "--interface",
    ] {
        assert!(readme.contains(needle), "README mentions {needle}:\n{readme}");
    }

    // Its own tests pass, as written. (The workspace's lock file only pins
    // the dependency versions already downloaded, for --offline.)
    std::fs::copy(
        kozmo_testkit::workspace_root().join("Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    let out = cargo(&dir, &["test"]);
    assert!(out.status.success(), "cargo test in the new crate: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test result: ok. 4 passed"), "{}", text(&out));

    let out = cargo(&dir, &["build"]);
    assert!(out.status.success(), "cargo build in the new crate: {}", text(&out));
    let lib = scaffold_target()
        .join("debug")
        .join(kozmo_testkit::library_file_name("kozmo-plugin-demo"));
    assert!(lib.is_file(), "{} built", lib.display());

    // `kozmo plugins check` accepts it as it is.
    let out = kozmo().args(["plugins", "check"]).arg(&lib).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: demo: task types [demo]"),
        "{}",
        text(&out)
    );

    // A real daemon loads it and runs its task file to Succeeded.
    let daemon_root = root.path().join("daemon");
    std::fs::create_dir(&daemon_root).unwrap();
    let mut d = Daemon::new(&daemon_root, &[], &[], &[]);
    let installed = d.plugins.join(lib.file_name().unwrap());
    std::fs::copy(&lib, &installed).unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart();
    let task = read_json(&dir.join("task.json"));
    let id = d.submit(&task);
    let status = d.wait_terminal(&id);
    assert_eq!(status["phase"], "Succeeded", "{status}; log:\n{}", d.log_text());
    let (_, outputs) = d.client.get(&format!("/v1/executions/{id}/outputs")).unwrap();
    assert_eq!(
        outputs["outputs"]["greeting"],
        json!({"string": "hello, kozmo"}),
        "{outputs}"
    );
    let log = d.log_text();
    assert!(
        log.contains("says \"hello, kozmo\""),
        "the plugin's log reaches the daemon's:\n{log}"
    );
    let greeting = std::fs::read_dir(d.data.join("data/raw"))
        .unwrap()
        .map(|e| e.unwrap().path().join("greeting.txt"))
        .find(|p| p.is_file())
        .expect("greeting.txt in the attempt's raw output directory");
    assert_eq!(std::fs::read_to_string(greeting).unwrap(), "hello, kozmo");
}

#[test]
fn plugins_new_refuses_bad_names_existing_directories_and_a_missing_interface() {
    let root = tempfile::tempdir().unwrap();
    for bad in ["Demo", "my_plugin", "2fast", "a--b", "x-"] {
        let out = kozmo()
            .args(["plugins", "new", bad, "--dir"])
            .arg(root.path().join("x"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("invalid plugin name \"{bad}\"")) && err.contains("lower-case ASCII letters"),
            "{bad}: {err}"
        );
        assert!(!root.path().join("x").exists());
    }

    let existing = root.path().join("taken");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep.txt"), "mine").unwrap();
    let out = kozmo()
        .args(["plugins", "new", "demo", "--dir"])
        .arg(&existing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_dir(&existing).unwrap().count(),
        1,
        "nothing written into it"
    );

    let out = kozmo()
        .args(["plugins", "new", "demo", "--dir"])
        .arg(root.path().join("y"))
        .arg("--interface")
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not hold the kozmo-interface crate"),
        "{}",
        text(&out)
    );

    let out = kozmo().args(["plugins", "new", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--interface") && help.contains("not on crates.io"),
        "{help}"
    );
}

#[test]
fn a_relative_data_dir_still_gives_plugins_an_absolute_raw_output_prefix() {
    // `kozmo serve --data-dir data`: the prefix a plugin gets must not be
    // `data/data/raw/...` (relative to whatever directory it runs in).
    let cwd = std::env::current_dir().unwrap();
    let root = tempfile::tempdir_in(&cwd).unwrap();
    let mut d = Daemon::new(root.path(), &["kozmo-plugin-shell"], &[], &[]);
    d.data = root.path().strip_prefix(&cwd).unwrap().join("data");
    assert!(d.data.is_relative());
    d.restart();
    let id = d.submit(&json!({
        "type": "shell",
        "container": {"command": ["echo"], "args": ["{{ .RawOutputDataPrefix }}"]}
    }));
    let status = d.wait_phase(
        &id,
        |p| matches!(p, "Succeeded" | "Failed" | "Aborted"),
        Duration::from_secs(60),
    );
    assert_eq!(status["phase"], "Succeeded", "{status}");
    let (_, outputs) = d.client.get(&format!("/v1/executions/{id}/outputs")).unwrap();
    let prefix = PathBuf::from(outputs["outputs"]["stdout"]["string"].as_str().expect("stdout output"));
    assert!(prefix.is_absolute(), "{}", prefix.display());
    assert_eq!(
        kozmo_interface::io::local_dir(prefix.to_str().unwrap()),
        Some(prefix.clone())
    );
    assert!(
        prefix.starts_with(cwd.join(&d.data).join("data/raw")),
        "{}",
        prefix.display()
    );
    assert!(prefix.join("shell/stdout").is_file(), "the command ran in it");
}
