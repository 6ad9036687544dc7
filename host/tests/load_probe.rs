//! Load probing with the real `kozmo` binary as the probe: a library whose
//! static constructor crashes at `dlopen` (the `loadcrash` fixture) is a
//! one-line `load-crash` problem naming the file, for the loader library,
//! `kozmo plugins check` and `kozmo plugins list`, and the valid libraries
//! next to it still load.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kozmo_host::loader::{check_files, load_directory, LoaderConfig, LoaderServices, ProblemKind};

/// A plugin directory (0755) with copies (0644) of echo and loadcrash.
fn plugin_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let libs = kozmo_testkit::build_plugins(&["kozmo-plugin-echo", "kozmo-fixture-loadcrash"]);
    let copies: Vec<PathBuf> = libs
        .iter()
        .map(|lib| {
            let to = dir.path().join(lib.file_name().unwrap());
            std::fs::copy(lib, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
            to
        })
        .collect();
    (dir, copies[0].clone(), copies[1].clone())
}

fn probing(dir: &Path) -> LoaderConfig {
    LoaderConfig {
        probe_program: Some(PathBuf::from(env!("CARGO_BIN_EXE_kozmo"))),
        ..LoaderConfig::new(dir)
    }
}

fn crash_line(file: &Path) -> String {
    format!("error[load-crash]: {}: crashed while loading (SIGSEGV)", file.display())
}

#[test]
fn a_library_crashing_at_load_is_refused_and_skippable_without_killing_the_loader() {
    let (dir, echo, crash) = plugin_dir();
    let report = load_directory(&probing(dir.path()), &LoaderServices::offline("in tests")).unwrap_err();
    assert_eq!(report.errors.len(), 1, "{report}");
    let e = &report.errors[0];
    assert_eq!(e.kind, ProblemKind::LoadCrash);
    assert_eq!(e.files, vec![crash.clone()]);
    assert_eq!(format!("{report}").trim(), crash_line(&crash));
    assert!(
        report.loaded.iter().any(|p| p.id == "echo"),
        "the probe went on after the crash"
    );

    let skip = LoaderConfig {
        skip_invalid_plugins: true,
        ..probing(dir.path())
    };
    let loaded = load_directory(&skip, &LoaderServices::offline("in tests")).unwrap();
    assert_eq!(
        loaded.infos().iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["echo"]
    );
    assert_eq!(loaded.warnings()[0].kind, ProblemKind::LoadCrash);

    // The crashing file first, then a valid one: a new probe takes the rest.
    let report = check_files(
        &[crash.clone(), echo],
        &probing(dir.path()),
        &LoaderServices::offline("t"),
    )
    .unwrap_err();
    assert_eq!(report.errors.len(), 1, "{report}");
    assert_eq!(report.loaded.len(), 1, "{report}");
}

#[test]
fn plugins_check_and_list_print_the_one_line_error() {
    let (dir, echo, crash) = plugin_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(["plugins", "check"])
        .arg(&crash)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.trim(), crash_line(&crash));

    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(["plugins", "list", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.lines().any(|l| l == crash_line(&crash)), "{stdout}");
    assert!(
        stdout.contains(echo.to_str().unwrap()),
        "the valid library is listed: {stdout}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(["plugins", "list", "--skip-invalid", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l == crash_line(&crash).replacen("error", "warning", 1)),
        "{stdout}"
    );
}
