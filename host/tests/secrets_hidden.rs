//! Secrets and the API token given to `kozmo serve` are out of reach of
//! the commands shell tasks run: a task that reads every `/proc/*/environ`
//! and `/proc/*/cmdline` it can finds neither (whether the token came from
//! the environment or the command line, with the shell plugin in the daemon
//! or in an isolated child); with `run_as` a task cannot read `kozmo.db`;
//! and a loader's error about a bad secret does not quote it.

mod daemon_harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use daemon_harness::{kozmo, plugin_dir, Daemon};
use kozmo_host::client::{Client, ClientError};
use serde_json::{json, Value};

const SCAN: &str = r#"
# $1: the daemon's pid, $2: a file of patterns, $3: kozmo.db
read=""
found=""
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
    if content=$(tr '\000' '\n' < "$f" 2>/dev/null); then
        read="$read $f"
        if printf '%s\n' "$content" | grep -q -F -f "$2"; then found="$found $f"; fi
    fi
done
echo "read:$read "
echo "found:$found"
if cat "$3" > /dev/null 2>&1; then echo "db: readable"; else echo "db: denied"; fi
"#;

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A value no process on the machine has by chance.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{nanos:x}-{}", std::process::id())
}

/// Runs the scan as a shell task of `d` and returns its standard output.
fn scan(d: &Daemon, root: &Path, id: &str, patterns: &[&str]) -> String {
    let script = root.join("scan.sh");
    std::fs::write(&script, SCAN).unwrap();
    let pattern_file = root.join("patterns");
    std::fs::write(&pattern_file, patterns.join("\n") + "\n").unwrap();
    let daemon_pid = d.child.as_ref().unwrap().id().to_string();
    let db = d.data.join("kozmo.db");
    d.submit(&json!({
        "execution_id": id, "type": "shell",
        "interface": {"outputs": {"stdout": {"type": "string"}}},
        "container": {"command": ["sh", script.to_str().unwrap(), &daemon_pid, pattern_file.to_str().unwrap(), db.to_str().unwrap()]},
    }));
    let v = d.wait_terminal(id);
    assert_eq!(v["phase"], "Succeeded", "{v}; log:\n{}", d.log_text());
    let (_, out): (_, Value) = d.client.get(&format!("/v1/executions/{id}/outputs")).unwrap();
    out["outputs"]["stdout"]["string"].as_str().unwrap().to_string()
}

fn assert_hidden(extra: &[&str], token_in_env: bool) {
    let root = tempfile::tempdir().unwrap();
    let secret = unique("hunter2");
    let token = unique("s3cr3t-tok");
    let mut env = vec![("KOZMO_SECRET_DBPASS", secret.as_str())];
    let mut args: Vec<&str> = extra.to_vec();
    if token_in_env {
        env.push(("KOZMO_API_TOKEN", token.as_str()));
    } else {
        args.extend(["--api-token", token.as_str()]);
    }
    let d = Daemon::start_with_env(root.path(), &["kozmo-plugin-shell"], &args, &env);
    // The token is in force...
    let anonymous = Client::new(d.client.base(), None);
    let err = anonymous.get("/v1/executions").unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 401, .. }), "{err}");
    // ...and nowhere a task can read it.
    let out = scan(&d, root.path(), "scan-1", &[&secret, &token]);
    let pid = d.child.as_ref().unwrap().id();
    assert!(
        out.contains("\nfound:\n"),
        "secret or token found by a task ({extra:?}):\n{out}"
    );
    assert!(
        out.contains(&format!(" /proc/{pid}/cmdline ")),
        "the task did not read the daemon's cmdline:\n{out}"
    );
    if is_root() {
        // Root reads every environ: the daemon's was scanned too.
        assert!(
            out.contains(&format!(" /proc/{pid}/environ ")),
            "the task did not read the daemon's environ:\n{out}"
        );
    }
    assert!(out.contains("db: readable"), "same uid: the test's control case\n{out}");
    let log = d.log_text();
    assert!(
        !log.contains(&secret) && !log.contains(&token),
        "a secret in the log:\n{log}"
    );
}

#[test]
fn a_task_finds_no_secret_and_no_env_token_in_any_proc_file() {
    assert_hidden(&[], true);
}

#[test]
fn a_task_finds_no_token_given_on_the_command_line() {
    assert_hidden(&[], false);
}

#[test]
fn an_isolated_shell_plugin_leaks_nothing_either() {
    assert_hidden(&["--isolate", "shell"], true);
}

#[test]
fn a_token_file_is_read_and_a_conflicting_flag_refused() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("token");
    std::fs::write(&file, "file-t0k3n\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(
        root.path(),
        &["kozmo-plugin-shell"],
        &["--api-token-file", file.to_str().unwrap()],
    );
    let authed = Client::new(d.client.base(), Some("file-t0k3n".into()));
    assert_eq!(authed.get("/v1/executions").unwrap().0, 200);
    let err = Client::new(d.client.base(), None).get("/v1/executions").unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 401, .. }), "{err}");
    drop(d);

    let out = kozmo()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.path().join("data2"))
        .arg("--plugins-dir")
        .arg(root.path().join("plugins"))
        .arg("--api-token-file")
        .arg(&file)
        .env("KOZMO_API_TOKEN", "other")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("give only one"), "{stderr}");
    assert!(!stderr.contains("other") && !stderr.contains("file-t0k3n"), "{stderr}");
}

#[test]
fn a_bad_secret_fails_the_load_without_quoting_it() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), &["kozmo-plugin-sleep-quota"]);
    let value = unique("hunter2");
    let out = kozmo()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.path().join("data"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .env("KOZMO_SECRET_SLEEP_QUOTA", &value)
        .env_remove("KOZMO_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The re-executed daemon still has the secret (the load fails on it)...
    assert!(all.contains("BadQuota") || all.contains("SLEEP_QUOTA"), "{all}");
    // ...and says what is wrong without quoting it.
    assert!(!all.contains(&value), "{all}");
}

#[test]
fn with_run_as_a_task_cannot_read_the_daemons_store() {
    if !is_root() {
        eprintln!("skipped: run_as needs a daemon that may switch users (run the suite as root, as CI does)");
        return;
    }
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    assert!(nobody.status.success(), "user nobody is missing");
    let nobody_uid = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = root.path().join("kozmo.toml");
    std::fs::write(&config, "[plugins.settings.shell]\nrun_as = \"nobody\"\n").unwrap();
    let d = Daemon::start(
        root.path(),
        &["kozmo-plugin-shell"],
        &["--config", config.to_str().unwrap()],
    );
    let db = d.data.join("kozmo.db");
    assert!(db.exists());
    d.submit(&json!({
        "execution_id": "as-nobody", "type": "shell",
        "interface": {"outputs": {"stdout": {"type": "string"}}},
        "container": {"command": ["sh", "-c",
            "id -u; if cat \"$1\" > /dev/null 2>&1; then echo db-readable; else echo db-denied; fi; echo mine > own-file && cat own-file",
            "sh", db.to_str().unwrap()]},
    }));
    let v = d.wait_terminal("as-nobody");
    assert_eq!(v["phase"], "Succeeded", "{v}; log:\n{}", d.log_text());
    let (_, out): (_, Value) = d.client.get("/v1/executions/as-nobody/outputs").unwrap();
    let stdout = out["outputs"]["stdout"]["string"].as_str().unwrap();
    assert_eq!(
        stdout,
        format!("{nobody_uid}\ndb-denied\nmine"),
        "log:\n{}",
        d.log_text()
    );
}
