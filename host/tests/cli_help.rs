//! What `kozmo --version` and the commands' `--help` say.

use std::process::Command;

fn kozmo(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(args)
        .env_remove("KOZMO_SERVER")
        .env_remove("KOZMO_API_TOKEN")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_version_names_the_plugin_abi_and_interface_a_plugin_builds_against() {
    let (ok, text) = kozmo(&["--version"]);
    assert!(ok, "{text}");
    let abi = kozmo_interface::abi::ABI_VERSION.to_string();
    assert!(text.contains(&format!("plugin ABI {abi}")), "{text}");
    assert!(
        text.contains(&format!(
            "kozmo-interface {}",
            kozmo_interface::host::interface_version()
        )),
        "{text}"
    );
    // The daemon's own version, and the ABI's epoch spelled out.
    assert!(
        text.starts_with(&format!("kozmo {} (the daemon", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let epoch = kozmo_interface::abi::ABI_VERSION.epoch;
    assert!(text.contains(&format!("epoch {epoch}")), "{text}");
}

#[test]
fn client_options_are_listed_by_the_client_commands_only() {
    for cmd in [&["serve"][..], &["bench"], &["plugins", "list"], &["plugins", "check"]] {
        let (ok, help) = kozmo(&[cmd, &["--help"]].concat());
        assert!(ok, "{cmd:?}: {help}");
        assert!(
            !help.contains("--server") && !help.contains("--token "),
            "{cmd:?} does not talk to a daemon: {help}"
        );
    }
    for cmd in ["submit", "get", "list", "events", "watch", "outputs", "abort", "prune"] {
        let (ok, help) = kozmo(&[cmd, "--help"]);
        assert!(ok, "{cmd}: {help}");
        assert!(help.contains("--server") && help.contains("--token"), "{cmd}: {help}");
    }
}

#[test]
fn completions_cover_the_commands_and_leave_out_the_internal_ones() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script) = kozmo(&["completions", shell]);
        assert!(ok, "{shell}: {script}");
        for cmd in ["serve", "submit", "list", "abort", "prune", "plugins", "completions"] {
            assert!(script.contains(cmd), "{shell}: no {cmd} in {script}");
        }
        // bash and zsh spell options `--wait`, fish `-l wait`.
        assert!(
            script.contains("--wait") || script.contains("-l wait"),
            "{shell}: submit's options complete too"
        );
        assert!(
            !script.contains("__plugin-host") && !script.contains("__probe-libraries"),
            "{shell}"
        );
    }
    let (ok, _) = kozmo(&["completions", "tcsh"]);
    assert!(!ok, "an unknown shell is refused");
}

/// `kozmo … | head` ends quietly when the reader goes away: killed by
/// SIGPIPE like other Unix tools, no "failed printing to stdout" panic.
#[test]
fn a_client_whose_reader_is_gone_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the first print.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {stderr}", out.status);
}
