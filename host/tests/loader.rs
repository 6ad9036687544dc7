//! End-to-end tests of the plugin loader: real fixture libraries (built once
//! per run, all in one cargo call), real directories, the real `kozmo`
//! binary. Every failure case asserts the exact problem kind and that the
//! message names the file(s).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use kozmo_host::loader::{
    check_files, load_directory, LoadReport, LoadedPlugins, LoaderConfig, LoaderServices, ProblemKind,
};
use kozmo_host::metrics::Metrics;
use kozmo_interface::metadata::NamespacedName;
use kozmo_interface::{EnqueueOwner, PluginError, ResourceNamespace, ResourceRegistrar, Result, SecretManager};

const PACKAGES: [&str; 12] = [
    "kozmo-plugin-echo",
    "kozmo-fixture-second",
    "kozmo-fixture-echo-dup",
    "kozmo-fixture-default2",
    "kozmo-fixture-claimer",
    "kozmo-fixture-shortname",
    "kozmo-fixture-epoch99",
    "kozmo-fixture-layout",
    "kozmo-fixture-badentry",
    "kozmo-fixture-noroot",
    "kozmo-fixture-panicky",
    "kozmo-fixture-probe",
];

/// Fixture libraries by short name (`echo`, `second`, ..., `abort-echo`).
fn lib(name: &str) -> PathBuf {
    static LIBS: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    let libs = LIBS.get_or_init(|| {
        let mut m: BTreeMap<String, PathBuf> = PACKAGES
            .iter()
            .zip(kozmo_testkit::build_plugins(&PACKAGES))
            .map(|(p, path)| {
                let short = p
                    .trim_start_matches("kozmo-plugin-")
                    .trim_start_matches("kozmo-fixture-");
                (short.to_string(), path)
            })
            .collect();
        let abort = kozmo_testkit::build_plugins_with(&["kozmo-plugin-echo"], Some("-C panic=abort"), "abort");
        m.insert("abort-echo".into(), abort[0].clone());
        // The loader refuses group/world-writable plugins and directories
        // on the way to them; do not let the umask of whoever built the
        // fixtures decide the outcome (up to the workspace, which is the
        // checkout's business).
        let workspace = kozmo_testkit::workspace_root();
        for path in m.values() {
            for p in path
                .ancestors()
                .take_while(|p| p.starts_with(&workspace) && *p != workspace)
            {
                let mode = std::fs::metadata(p).unwrap().permissions().mode();
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & !0o022)).unwrap();
            }
        }
        m
    });
    libs.get(name).unwrap_or_else(|| panic!("no fixture {name}")).clone()
}

fn so(stem: &str) -> String {
    format!("{stem}{}", std::env::consts::DLL_SUFFIX)
}

/// A plugin directory (mode 0755) holding symlinks named `<name>.so` to
/// the given fixtures.
fn dir_with(links: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, fixture) in links {
        std::os::unix::fs::symlink(lib(fixture), dir.path().join(so(name))).unwrap();
    }
    dir
}

/// Writes a non-library file (mode 0644).
fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Copies a fixture into `dir` under `name` (mode 0755).
fn copy_into(dir: &Path, fixture: &str, name: &str) -> PathBuf {
    let dest = dir.join(so(name));
    std::fs::copy(lib(fixture), &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    dest
}

fn load(dir: &Path) -> std::result::Result<LoadedPlugins, LoadReport> {
    load_directory(&LoaderConfig::new(dir), &LoaderServices::offline("in tests"))
}

fn load_with(config: LoaderConfig) -> std::result::Result<LoadedPlugins, LoadReport> {
    load_directory(&config, &LoaderServices::offline("in tests"))
}

/// Asserts the report holds exactly one error, of `kind`, naming `names`;
/// returns its message.
fn only_error(report: &LoadReport, kind: ProblemKind, names: &[&str]) -> String {
    assert_eq!(report.errors.len(), 1, "expected one error, got:\n{report}");
    let e = &report.errors[0];
    assert_eq!(e.kind, kind, "{report}");
    for n in names {
        assert!(e.message.contains(n), "message does not name {n}: {}", e.message);
        assert!(
            e.files.iter().any(|f| f.display().to_string().contains(n)),
            "files {:?} do not include {n}",
            e.files
        );
    }
    assert!(!e.message.contains('\n'), "not one line: {}", e.message);
    assert!(report.is_fatal());
    e.message.clone()
}

fn id_for(loaded: &LoadedPlugins, task_type: &str) -> String {
    loaded.resolve(task_type).unwrap().id().to_string()
}

// ---- valid directories and routing ----

#[test]
fn two_valid_plugins_load_and_route_with_the_default_as_fallback() {
    let dir = dir_with(&[("echo", "echo"), ("second", "second")]);
    let loaded = load(dir.path()).unwrap_or_else(|r| panic!("{r}"));
    assert!(loaded.warnings().is_empty());
    let infos = loaded.infos();
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[0].id, "echo");
    assert!(infos[0].is_default);
    assert_eq!(infos[0].task_types, ["echo"]);
    assert_eq!(infos[0].file, dir.path().join(so("echo")));
    assert_eq!(infos[0].interface_version, kozmo_interface::host::interface_version());
    assert_eq!(infos[1].id, "second");
    assert!(!infos[1].is_default);
    assert_eq!(id_for(&loaded, "echo"), "echo");
    assert_eq!(id_for(&loaded, "second"), "second");
    assert_eq!(id_for(&loaded, "no-such-type"), "echo");
    assert_eq!(loaded.default_plugin().unwrap().info.id, "echo");
    assert_eq!(
        loaded.routes(),
        BTreeMap::from([("echo".into(), "echo".into()), ("second".into(), "second".into())])
    );
}

#[test]
fn without_a_default_an_unknown_task_type_is_an_error_naming_it() {
    let dir = dir_with(&[("second", "second")]);
    let loaded = load(dir.path()).unwrap();
    assert_eq!(id_for(&loaded, "second"), "second");
    let e = loaded.resolve("mystery-type").err().unwrap();
    assert!(e.to_string().contains("[mystery-type]"), "{e}");
}

#[test]
fn an_empty_directory_loads_nothing() {
    let dir = dir_with(&[]);
    std::fs::write(dir.path().join("notes.txt"), "not a library").unwrap();
    let loaded = load(dir.path()).unwrap();
    assert!(loaded.plugins().is_empty());
    assert!(loaded.resolve("echo").is_err());
}

#[test]
fn enabled_plugins_filters_case_insensitively() {
    let dir = dir_with(&[("echo", "echo"), ("second", "second")]);
    let loaded = load_with(LoaderConfig {
        enabled_plugins: vec![" SECOND ".into()],
        ..LoaderConfig::new(dir.path())
    })
    .unwrap();
    assert_eq!(loaded.infos().len(), 1);
    assert!(loaded.default_plugin().is_none());
    assert!(loaded.resolve("echo").is_err());
}

#[test]
fn loaders_get_a_prefixed_registrar_secrets_metrics_and_enqueue() {
    #[derive(Default)]
    struct Rec {
        quotas: Mutex<Vec<(String, i64)>>,
        enqueued: Mutex<Vec<String>>,
    }
    impl ResourceRegistrar for Rec {
        fn register_resource_quota(&self, ns: &ResourceNamespace, quota: i64) -> Result<()> {
            self.quotas.lock().unwrap().push((ns.0.clone(), quota));
            Ok(())
        }
    }
    impl SecretManager for Rec {
        fn get(&self, key: &str) -> Result<String> {
            match key {
                "setup-secret" => Ok("s3cret".into()),
                _ => Err(PluginError::user("SecretNotFound", key)),
            }
        }
    }
    impl EnqueueOwner for Rec {
        fn enqueue(&self, owner: &NamespacedName) -> Result<()> {
            self.enqueued
                .lock()
                .unwrap()
                .push(format!("{}/{}", owner.namespace, owner.name));
            Ok(())
        }
    }
    let rec = Arc::new(Rec::default());
    let metrics = Metrics::new("kozmo");
    let services = LoaderServices {
        resource_manager_id: "inmemoryresourcemanager".into(),
        registrar: rec.clone(),
        secrets: rec.clone(),
        metrics: metrics.clone(),
        enqueue_owner: rec.clone(),
        owner_kind: "Execution".into(),
    };
    let dir = dir_with(&[("probe", "probe")]);
    let loaded = load_directory(&LoaderConfig::new(dir.path()), &services).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(id_for(&loaded, "probe"), "probe");
    assert_eq!(
        *rec.quotas.lock().unwrap(),
        [("inmemoryresourcemanager:probe:probe-quota".to_string(), 7)]
    );
    assert_eq!(*rec.enqueued.lock().unwrap(), ["probe-ns/probe-owner"]);
    let text = metrics.encode();
    assert!(text.contains("kozmo_probe_loads_total 2"), "{text}");
    assert!(text.contains("kozmo_probe_sub_level 2.5"), "{text}");
}

// ---- cross-file rules ----

#[test]
fn the_same_id_in_two_libraries_is_an_error_naming_both() {
    let dir = dir_with(&[("echo", "echo"), ("other", "echo-dup")]);
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::DuplicateId, &[&so("echo"), &so("other")]);
    assert!(m.contains("plugin id echo"), "{m}");
}

#[test]
fn a_library_copied_under_a_second_name_is_a_duplicate() {
    let dir = dir_with(&[("echo", "echo")]);
    copy_into(dir.path(), "echo", "echo-backup");
    let report = load(dir.path()).unwrap_err();
    only_error(&report, ProblemKind::DuplicateId, &[&so("echo"), &so("echo-backup")]);
}

#[test]
fn the_same_library_reached_twice_through_symlinks_is_a_duplicate() {
    let dir = dir_with(&[("a", "second"), ("b", "second")]);
    let report = load(dir.path()).unwrap_err();
    only_error(&report, ProblemKind::DuplicateId, &[&so("a"), &so("b")]);
}

#[test]
fn two_defaults_are_an_error_naming_both() {
    let dir = dir_with(&[("echo", "echo"), ("default2", "default2")]);
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::MultipleDefaults, &[&so("echo"), &so("default2")]);
    assert!(m.contains("are both marked is_default"), "{m}");
}

#[test]
fn a_task_type_claimed_twice_is_an_error_naming_type_and_plugins() {
    let dir = dir_with(&[("second", "second"), ("claimer", "claimer")]);
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::TaskTypeConflict, &[&so("second"), &so("claimer")]);
    assert!(
        m.contains("task type [second]") && m.contains("default_for_task_types"),
        "{m}"
    );
}

#[test]
fn default_for_task_types_resolves_a_claimed_twice_type() {
    let dir = dir_with(&[("second", "second"), ("claimer", "claimer")]);
    let loaded = load_with(LoaderConfig {
        default_for_task_types: BTreeMap::from([("second".into(), "claimer".into())]),
        ..LoaderConfig::new(dir.path())
    })
    .unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(id_for(&loaded, "second"), "claimer");
    assert_eq!(id_for(&loaded, "claimer"), "claimer");
}

#[test]
fn default_for_task_types_must_name_a_plugin_that_registers_the_type() {
    let dir = dir_with(&[("second", "second"), ("claimer", "claimer")]);
    let report = load_with(LoaderConfig {
        default_for_task_types: BTreeMap::from([("second".into(), "nobody".into())]),
        ..LoaderConfig::new(dir.path())
    })
    .unwrap_err();
    assert_eq!(report.errors_of(ProblemKind::Config).len(), 1, "{report}");
    assert!(report.errors_of(ProblemKind::Config)[0].message.contains("[nobody]"));
    assert_eq!(report.errors_of(ProblemKind::TaskTypeConflict).len(), 1, "{report}");
}

// ---- single-file checks ----

#[test]
fn a_loader_returning_an_error_is_reported_with_id_file_and_cause() {
    let dir = dir_with(&[("panicky", "panicky")]);
    let report = load_with(LoaderConfig {
        enabled_plugins: vec!["failing-loader".into()],
        ..LoaderConfig::new(dir.path())
    })
    .unwrap_err();
    let m = only_error(&report, ProblemKind::LoaderError, &[&so("panicky")]);
    assert!(
        m.starts_with(&format!(
            "failed to load plugin failing-loader ({}): ",
            dir.path().join(so("panicky")).display()
        )),
        "{m}"
    );
    assert!(m.contains("cannot reach the backend"), "{m}");
}

#[test]
fn a_panicking_loader_is_reported_not_fatal_to_the_process() {
    let dir = dir_with(&[("panicky", "panicky")]);
    let report = load_with(LoaderConfig {
        enabled_plugins: vec!["panicky-loader".into()],
        ..LoaderConfig::new(dir.path())
    })
    .unwrap_err();
    let m = only_error(&report, ProblemKind::LoaderPanic, &[&so("panicky")]);
    assert!(
        m.contains("failed to load plugin panicky-loader") && m.contains("loader exploded"),
        "{m}"
    );
}

#[test]
fn generated_name_max_length_5_is_refused() {
    let dir = dir_with(&[("shortname", "shortname")]);
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::InvalidProperties, &[&so("shortname")]);
    assert!(m.contains("generated_name_max_length must be at least 8, got 5"), "{m}");
}

#[test]
fn a_cdylib_without_a_root_module_is_refused_before_loading() {
    let dir = dir_with(&[("plain", "noroot")]);
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::NoRootModule, &[&so("plain")]);
    assert!(m.contains("export_plugins!"), "{m}");
    // Refused from its symbol table: never mapped into this process (no
    // other test in this binary opens it).
    if cfg!(target_os = "linux") {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(!maps.contains("libkozmo_fixture_noroot"), "the library was loaded");
    }
}

#[test]
fn random_bytes_named_like_a_library_are_not_a_library() {
    let dir = dir_with(&[]);
    let junk = dir.path().join(so("junk"));
    let bytes: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write_file(&junk, &bytes);
    let report = load(dir.path()).unwrap_err();
    only_error(&report, ProblemKind::NotALibrary, &[&so("junk")]);
}

#[test]
fn a_plugin_built_with_panic_abort_is_refused() {
    let dir = dir_with(&[("echo-abort", "abort-echo")]);
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::PanicAbort, &[&so("echo-abort")]);
    assert!(m.contains("panic = \"unwind\""), "{m}");
}

#[test]
fn an_interface_epoch_mismatch_says_which_versions() {
    let dir = dir_with(&[("epoch99", "epoch99")]);
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::EpochMismatch, &[&so("epoch99")]);
    assert!(m.contains("epoch 99") && m.contains("epoch 1"), "{m}");
    assert!(m.contains("upgrade the daemon to one that loads epoch 99"), "{m}");
}

#[test]
fn a_layout_mismatch_is_one_line_with_abi_stables_error_lines() {
    let dir = dir_with(&[("layout", "layout")]);
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::LayoutMismatch, &[&so("layout")]);
    assert!(m.contains("type layouts differ"), "{m}");
    assert!(m.contains("Error:"), "the summary quotes abi_stable's error lines: {m}");
    assert!(
        m.len() < 2000,
        "the full report stays at debug level ({} chars)",
        m.len()
    );
}

#[test]
fn entries_without_id_or_task_types_are_refused() {
    let dir = dir_with(&[("bad", "badentry")]);
    let report = load(dir.path()).unwrap_err();
    assert_eq!(report.errors.len(), 2, "{report}");
    for e in &report.errors {
        assert_eq!(e.kind, ProblemKind::InvalidEntry);
        assert!(e.message.contains(&so("bad")), "{}", e.message);
    }
    assert!(report.errors[0].message.contains("has no id"));
    assert!(report.errors[1].message.contains("typeless"));
}

// ---- permissions ----

#[test]
fn a_world_writable_directory_is_refused_and_nothing_is_opened() {
    let dir = dir_with(&[("echo", "echo")]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let report = load(dir.path()).unwrap_err();
    let name = dir.path().file_name().unwrap().to_str().unwrap().to_string();
    let m = only_error(&report, ProblemKind::InsecurePermissions, &[&name]);
    assert!(
        m.contains("writable by group and others") && m.contains("allow_insecure_plugin_dir"),
        "{m}"
    );
    assert!(report.loaded.is_empty());
    let loaded = load_with(LoaderConfig {
        allow_insecure_plugin_dir: true,
        ..LoaderConfig::new(dir.path())
    })
    .unwrap();
    assert_eq!(loaded.infos().len(), 1);
}

#[test]
fn a_group_writable_plugin_file_is_refused() {
    let dir = dir_with(&[]);
    let f = copy_into(dir.path(), "second", "second");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o775)).unwrap();
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::InsecurePermissions, &[&so("second")]);
    assert!(m.contains("writable by group"), "{m}");
}

/// A directory `open` (mode `mode`) inside a fresh tempdir.
fn open_dir(t: &tempfile::TempDir, mode: u32) -> PathBuf {
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
    open
}

#[test]
fn a_plugin_directory_inside_a_world_writable_parent_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let open = open_dir(&t, 0o777);
    let plugins = open.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(lib("echo"), plugins.join(so("echo"))).unwrap();
    let report = load(&plugins).unwrap_err();
    let m = only_error(&report, ProblemKind::InsecurePermissions, &["open", "plugins"]);
    for part in [
        "directory",
        "mode 777",
        "owner uid",
        "writable by group and others",
        "not sticky",
        "chmod go-w",
    ] {
        assert!(m.contains(part), "{part}: {m}");
    }
    assert!(report.loaded.is_empty(), "nothing is opened");

    let (code, out, err) = kozmo(&["plugins", "list", "--dir", path_str(&plugins)]);
    assert_ne!(code, 0, "{out}\n{err}");
    let all = format!("{out}{err}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("error[insecure-permissions]: ") && l.contains("mode 777")),
        "{all}"
    );
}

#[test]
fn a_symlink_into_a_subdirectory_of_a_world_writable_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let open = open_dir(&t, 0o777);
    let sub = open.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy_into(&sub, "echo", "echo");
    let dir = dir_with(&[]);
    let link = dir.path().join(so("echo"));
    std::os::unix::fs::symlink(sub.join(so("echo")), &link).unwrap();
    let report = load(dir.path()).unwrap_err();
    let m = only_error(&report, ProblemKind::InsecurePermissions, &[&so("echo"), "open"]);
    assert!(m.contains("mode 777") && m.contains("not sticky"), "{m}");

    // `kozmo plugins check` on the link and on the file itself.
    for file in [&link, &sub.join(so("echo"))] {
        let (code, out, err) = kozmo(&["plugins", "check", path_str(file)]);
        assert_eq!(code, 1, "{out}\n{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert!(
            lines[0].starts_with("error[insecure-permissions]: ") && lines[0].contains(path_str(&open)),
            "{}",
            lines[0]
        );
    }
    // Made safe, the same layout loads.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(load(dir.path()).unwrap_or_else(|r| panic!("{r}")).infos().len(), 1);
}

#[test]
fn a_sticky_world_writable_ancestor_with_our_directory_below_loads() {
    // The usual tempdir layout: /tmp is 1777 and the tempdir in it is ours.
    let t = tempfile::tempdir().unwrap();
    let sticky = open_dir(&t, 0o1777);
    let plugins = sticky.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(lib("echo"), plugins.join(so("echo"))).unwrap();
    let loaded = load(&plugins).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(loaded.infos().len(), 1);
    // But the plugin directory itself may not be sticky and world-writable:
    // anyone could add a library.
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let report = load(&plugins).unwrap_err();
    only_error(&report, ProblemKind::InsecurePermissions, &["plugins"]);
}

// ---- strict and lenient modes ----

fn mixed_dir() -> tempfile::TempDir {
    let dir = dir_with(&[
        ("echo", "echo"),
        ("second", "second"),
        ("plain", "noroot"),
        ("shortname", "shortname"),
    ]);
    write_file(&dir.path().join(so("junk")), b"\x7fELF but not really");
    dir
}

#[test]
fn strict_mode_reports_every_problem_together() {
    let dir = mixed_dir();
    let report = load(dir.path()).unwrap_err();
    let kinds: Vec<ProblemKind> = report.errors.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            ProblemKind::NotALibrary,
            ProblemKind::NoRootModule,
            ProblemKind::InvalidProperties
        ],
        "{report}"
    );
    assert!(report.warnings.is_empty());
    let loaded: Vec<_> = report.loaded.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(loaded, ["echo", "second"]);
}

#[test]
fn skip_invalid_plugins_turns_single_file_problems_into_warnings() {
    let dir = mixed_dir();
    let loaded = load_with(LoaderConfig {
        skip_invalid_plugins: true,
        ..LoaderConfig::new(dir.path())
    })
    .unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(loaded.warnings().len(), 3);
    assert_eq!(id_for(&loaded, "second"), "second");
    assert_eq!(
        id_for(&loaded, "shortname"),
        "echo",
        "the skipped plugin's type falls back to the default"
    );
}

#[test]
fn skip_invalid_plugins_keeps_cross_file_conflicts_fatal() {
    let dir = dir_with(&[("echo", "echo"), ("default2", "default2"), ("plain", "noroot")]);
    let report = load_with(LoaderConfig {
        skip_invalid_plugins: true,
        ..LoaderConfig::new(dir.path())
    })
    .unwrap_err();
    only_error(&report, ProblemKind::MultipleDefaults, &[&so("echo"), &so("default2")]);
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.warnings[0].kind, ProblemKind::NoRootModule);
}

#[test]
fn check_files_applies_the_directory_rules_to_named_files() {
    let report = check_files(
        &[lib("echo"), lib("echo-dup")],
        &LoaderConfig::default(),
        &LoaderServices::offline("in tests"),
    )
    .unwrap_err();
    only_error(
        &report,
        ProblemKind::DuplicateId,
        &[&so("libkozmo_plugin_echo"), &so("libkozmo_fixture_echo_dup")],
    );
    let ok = check_files(
        &[lib("second")],
        &LoaderConfig::default(),
        &LoaderServices::offline("t"),
    )
    .unwrap();
    assert_eq!(ok.infos()[0].id, "second");
}

// ---- the CLI ----

fn kozmo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("KOZMO_PLUGIN_DIR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_check_prints_entries_of_a_valid_plugin_and_exits_0() {
    let echo = lib("echo");
    let (code, out, err) = kozmo(&["plugins", "check", path_str(&echo)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out.trim(),
        format!(
            "ok: echo: task types [echo], default, {}, kozmo-interface {}, ABI {}",
            echo.display(),
            kozmo_interface::host::interface_version(),
            kozmo_interface::abi::ABI_VERSION
        )
    );
    assert_eq!(err, "");
}

#[test]
fn cli_check_prints_one_line_per_problem_and_exits_non_zero() {
    let dir = dir_with(&[]);
    let junk = dir.path().join(so("junk"));
    write_file(&junk, b"random bytes, not a library");
    let cases: Vec<(Vec<PathBuf>, Vec<&str>)> = vec![
        (vec![lib("noroot")], vec!["no-root-module"]),
        (vec![junk.clone()], vec!["not-a-library"]),
        (vec![lib("shortname")], vec!["invalid-properties"]),
        (vec![lib("epoch99")], vec!["epoch-mismatch"]),
        (vec![lib("abort-echo")], vec!["panic-abort"]),
        (vec![lib("badentry")], vec!["invalid-entry", "invalid-entry"]),
        (vec![lib("panicky")], vec!["loader-panic", "loader-error"]),
        (vec![lib("echo"), lib("echo-dup")], vec!["duplicate-id"]),
        (vec![lib("echo"), lib("default2")], vec!["multiple-defaults"]),
        (vec![lib("second"), lib("claimer")], vec!["task-type-conflict"]),
    ];
    for (files, kinds) in cases {
        let mut args = vec!["plugins", "check"];
        args.extend(files.iter().map(|f| path_str(f)));
        let (code, out, err) = kozmo(&args);
        assert_eq!(code, 1, "{files:?}: stdout:\n{out}\nstderr:\n{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), kinds.len(), "{files:?}:\n{out}");
        for (line, kind) in lines.iter().zip(&kinds) {
            assert!(line.starts_with(&format!("error[{kind}]: ")), "{line}");
            let named = files
                .iter()
                .any(|f| line.contains(f.file_name().unwrap().to_str().unwrap()));
            assert!(named, "{line} names none of {files:?}");
        }
    }
}

#[test]
fn cli_list_prints_a_table_and_fails_on_problems() {
    let dir = dir_with(&[("echo", "echo"), ("second", "second")]);
    let (code, out, err) = kozmo(&["plugins", "list", "--dir", path_str(dir.path())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("TASK TYPES") && lines[0].ends_with("INTERFACE  ABI"));
    assert!(
        lines[1].starts_with("echo ") && lines[1].contains(" yes "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("second ") && lines[2].contains(" no "),
        "{}",
        lines[2]
    );
    assert!(lines[1].contains(&so("echo")));
    assert!(
        lines[1].ends_with(&format!(" {}", kozmo_interface::abi::ABI_VERSION)),
        "{}",
        lines[1]
    );

    std::os::unix::fs::symlink(lib("default2"), dir.path().join(so("default2"))).unwrap();
    let (code, out, _err) = kozmo(&["plugins", "list", "--dir", path_str(dir.path())]);
    assert_eq!(code, 1);
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(problems.len(), 1, "{out}");
    assert!(problems[0].starts_with("error[multiple-defaults]: "), "{out}");
}

#[test]
fn cli_help_explains_the_commands() {
    let (code, out, _) = kozmo(&["plugins", "check", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("without running the daemon") && out.contains("exits 1"),
        "{out}"
    );
    let (code, out, _) = kozmo(&["plugins", "list", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--dir") && out.contains("--skip-invalid"), "{out}");
}

#[test]
fn problem_kinds_have_distinct_names() {
    use std::collections::BTreeSet;
    let kinds = [
        ProblemKind::DirectoryUnreadable,
        ProblemKind::InsecurePermissions,
        ProblemKind::Unreadable,
        ProblemKind::NotALibrary,
        ProblemKind::LoadCrash,
        ProblemKind::NoRootModule,
        ProblemKind::AbiHeaderMismatch,
        ProblemKind::InterfaceMismatch,
        ProblemKind::EpochMismatch,
        ProblemKind::LayoutMismatch,
        ProblemKind::PanicAbort,
        ProblemKind::EntriesFailed,
        ProblemKind::InvalidEntry,
        ProblemKind::LoaderError,
        ProblemKind::LoaderPanic,
        ProblemKind::InvalidProperties,
        ProblemKind::PluginIdMismatch,
        ProblemKind::DuplicateId,
        ProblemKind::MultipleDefaults,
        ProblemKind::TaskTypeConflict,
        ProblemKind::Config,
        ProblemKind::Other,
    ];
    let names: BTreeSet<&str> = kinds.iter().map(|k| k.name()).collect();
    assert_eq!(names.len(), kinds.len());
}
