//! The ABI compatibility suite: plugins built against the released 1.0.0
//! interface (`compat/kozmo-interface-1.0.0/`) run in this host, and a
//! simulated next minor (ABI 1.1, generated from `interface/` by appending
//! one host service, one plugin method and one root-module field at the
//! `kozmo-abi-append` markers) shows all four pairs:
//!
//! | plugin \ host | this host (1.0)                         | next host (1.1)              |
//! |---------------|-----------------------------------------|------------------------------|
//! | 1.0           | runs (loader + engine, every value)     | runs; new method/field absent |
//! | 1.1           | loads with a warning; new service says it needs 1.1 | uses the new service, method, field |

#[path = "../../interface/tests/probe_checks/mod.rs"]
mod probe_checks;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kozmo_engine::model::{ExecPhase, ExecutionSpec, ExecutionView};
use kozmo_engine::resources::{ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::secrets::HostSecrets;
use kozmo_engine::store::Store;
use kozmo_engine::{Engine, EngineConfig, EngineHandle, LateEnqueueOwner, SubmitOutcome};
use kozmo_host::loader::{load_directory, LoaderConfig, LoaderServices};
use kozmo_host::metrics::Metrics;
use kozmo_interface::host::open_library;
use kozmo_interface::Literal;
use kozmo_store_sqlite::SqliteStore;
use kozmo_testkit::compat::{
    build_against, released_interface, simulated_interface, Append, CopyDir, ForeignCrate, Replace,
};
use serde_json::{json, Value};

/// Echo and the probe, built against the released 1.0.0 interface.
fn released_plugins() -> &'static [PathBuf] {
    static LIBS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    LIBS.get_or_init(|| {
        build_against(
            "released-1.0",
            &released_interface(),
            &[
                ForeignCrate::plugin("compat-echo-1-0", "plugins/echo"),
                ForeignCrate::plugin("compat-probe-1-0", "tests/fixtures/probe"),
            ],
        )
    })
}

const SERVICE: &str = "task_context.simulated_host_service";

/// The simulated next minor: what a maintainer appends for 1.1.
const NEXT_MINOR: &[Append] = &[
    Append {
        file: "src/ffi/v1/context.rs",
        marker: "task-context",
        code: "    /// Simulated 1.1 host service.
    fn simulated_host_service(&self, text: RStr<'_>) -> RResult<RString, FfiError> {
        let _ = text;
        RResult::RErr(crate::abi::needs_newer_host(\"task_context.simulated_host_service\", crate::abi::AbiVersion::new(1, 1)).into())
    }
",
    },
    Append {
        file: "src/ffi/v1/context.rs",
        marker: "host-task-context",
        code: "    fn simulated_host_service(&self, text: RStr<'_>) -> RResult<RString, FfiError> {
        guard(\"task_context.simulated_host_service\", || self.0.simulated_host_service(text.as_str()).map(RString::from))
    }
",
    },
    Append {
        file: "src/ffi/v1/context.rs",
        marker: "plugin-task-context",
        code: "    fn simulated_host_service(&self, text: &str) -> Result<String> {
        plain(self.ffi.simulated_host_service(text.into())).map(Into::into)
    }
",
    },
    Append {
        file: "src/context.rs",
        marker: "task-execution-context",
        code: "    /// Simulated 1.1 host service.
    fn simulated_host_service(&self, text: &str) -> Result<String> {
        let _ = text;
        Err(crate::abi::needs_newer_host(\"task_context.simulated_host_service\", crate::abi::AbiVersion::new(1, 1)))
    }
",
    },
    Append {
        file: "src/testing/mod.rs",
        marker: "test-task-context",
        code: "    fn simulated_host_service(&self, text: &str) -> crate::Result<String> {
        Ok(format!(\"host 1.1 answered {text}\"))
    }
",
    },
    Append {
        file: "src/ffi/v1/plugin.rs",
        marker: "ffi-plugin",
        code: "    /// Simulated 1.1 plugin method.
    fn simulated_plugin_method(&self) -> abi_stable::std_types::ROption<RString> {
        abi_stable::std_types::ROption::RNone
    }
",
    },
    Append {
        file: "src/ffi/v1/plugin.rs",
        marker: "plugin-glue",
        code: "    fn simulated_plugin_method(&self) -> abi_stable::std_types::ROption<RString> {
        self.0.simulated_plugin_method().map(RString::from).into()
    }
",
    },
    Append {
        file: "src/ffi/v1/plugin.rs",
        marker: "hosted-plugin",
        code: "    fn simulated_plugin_method(&self) -> Option<String> {
        self.inner.simulated_plugin_method().into_option().map(Into::into)
    }
",
    },
    Append {
        file: "src/plugin.rs",
        marker: "plugin-trait",
        code: "    /// Simulated 1.1 plugin method.
    fn simulated_plugin_method(&self) -> Option<String> {
        None
    }
",
    },
    Append {
        file: "src/ffi/v1/module.rs",
        marker: "root-module",
        code: "    /// Simulated 1.1 field.
    pub simulated_field: u32,
",
    },
    Append {
        file: "src/ffi/v1/module.rs",
        marker: "root-module-value",
        code: "        simulated_field: 11,
",
    },
];

const NEXT_VERSION: &[Replace] = &[
    Replace {
        file: "src/ffi/v1/module.rs",
        from: "pub const ABI_MINOR: u32 = 0;",
        to: "pub const ABI_MINOR: u32 = 1;",
    },
    Replace {
        file: "src/ffi/v1/module.rs",
        from: "pub const ABI_VERSION_STRING: &str = \"1.0.0\";",
        to: "pub const ABI_VERSION_STRING: &str = \"1.1.0\";",
    },
    Replace {
        file: "Cargo.toml",
        from: "version = \"1.0.0\"",
        to: "version = \"1.1.0\"",
    },
];

/// The next-minor plugin and the next-minor mini host, built against the
/// simulated 1.1 interface: `[plugin, host]`.
fn next_minor() -> &'static [PathBuf] {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let interface = simulated_interface("interface-1.1", &[], NEXT_MINOR, NEXT_VERSION);
        build_against(
            "next-1.1",
            &interface,
            &[
                ForeignCrate::plugin("compat-next-plugin-1-1", "tests/compat/next-plugin"),
                ForeignCrate::program(
                    "compat-mini-host-1-1",
                    "tests/compat/mini-host",
                    &["abi_stable = \"=0.11.3\""],
                )
                .with_source("interface/tests/layout_snapshot/mod.rs", "layout_snapshot.rs"),
            ],
        )
    })
}

/// The simulated epoch 2: `ffi/v1` kept, a copy `ffi/v2` made
/// incompatible (two fields of `FfiTime` swapped), new plugins built for
/// it, the header at 2.0, and its arm at the dispatch point.
const EPOCH_TWO_COPIES: &[CopyDir] = &[CopyDir {
    from: "src/ffi/v1",
    to: "src/ffi/v2",
}];

const EPOCH_TWO_DISPATCH: &[Append] = &[Append {
    file: "src/host.rs",
    marker: "epoch-dispatch",
    code: "        2 => ffi::v2::open(path, header, abi),\n",
}];

const EPOCH_TWO: &[Replace] = &[
    Replace {
        file: "src/ffi/mod.rs",
        from: "pub mod v1;",
        to: "pub mod v1;\npub mod v2;",
    },
    Replace {
        file: "src/ffi/mod.rs",
        from: "pub use v1 as current;",
        to: "pub use v2 as current;",
    },
    Replace {
        file: "src/ffi/v2/module.rs",
        from: "pub const ABI_EPOCH: u32 = 1;",
        to: "pub const ABI_EPOCH: u32 = 2;",
    },
    Replace {
        file: "src/ffi/v2/module.rs",
        from: "pub const ABI_VERSION_STRING: &str = \"1.0.0\";",
        to: "pub const ABI_VERSION_STRING: &str = \"2.0.0\";",
    },
    Replace {
        file: "src/ffi/v2/values.rs",
        from: "    /// Seconds (negative before 1970).\n    pub secs: i64,\n    /// Nanoseconds, `0..1e9`.\n    pub nanos: u32,",
        to: "    /// Nanoseconds, `0..1e9`.\n    pub nanos: u32,\n    /// Seconds (negative before 1970).\n    pub secs: i64,",
    },
    Replace {
        file: "Cargo.toml",
        from: "version = \"1.0.0\"",
        to: "version = \"2.0.0\"",
    },
];

/// Echo built for the simulated epoch 2, and the epoch-2 host: `[echo, host]`.
fn epoch_two() -> &'static [PathBuf] {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let interface = simulated_interface("interface-2.0", EPOCH_TWO_COPIES, EPOCH_TWO_DISPATCH, EPOCH_TWO);
        build_against(
            "epoch-2.0",
            &interface,
            &[
                ForeignCrate::plugin("compat-echo-2-0", "plugins/echo"),
                ForeignCrate::program("compat-epoch-host-2-0", "tests/compat/epoch-host", &[]),
            ],
        )
    })
}

fn plugin_dir(root: &Path, libs: &[&Path]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for lib in libs {
        let to = dir.join(lib.file_name().unwrap());
        std::fs::copy(lib, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

/// This host's loader and engine on a SQLite file, over `libs`.
struct Host {
    _dir: tempfile::TempDir,
    engine: EngineHandle,
    warnings: Vec<String>,
}

fn host(libs: &[&Path]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), libs);
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("setup-secret"), "s3tup").unwrap();
    std::fs::write(secrets.join("task-secret"), "t0ps3cret").unwrap();
    let builder = Arc::new(ResourceManagerBuilder::new());
    let owner = Arc::new(LateEnqueueOwner::new());
    let services = LoaderServices::for_engine(
        &builder,
        &owner,
        Arc::new(HostSecrets::from_process_env(Some(secrets.clone()))),
        Metrics::new("kozmo"),
    );
    let loaded =
        load_directory(&LoaderConfig::new(&plugins), &services).unwrap_or_else(|r| panic!("load failed:\n{r}"));
    let warnings = loaded
        .warnings()
        .iter()
        .map(|w| format!("warning[{}]: {}", w.kind, w.message))
        .collect();
    let data = dir.path().join("data");
    let engine = Engine::start(
        EngineConfig {
            data_dir: data.clone(),
            workers: 2,
            resync_interval: Duration::from_millis(20),
            max_resync_interval: Duration::from_millis(100),
            secrets: kozmo_engine::secrets::HostSecrets::from_process_env(Some(secrets)),
            ..EngineConfig::default()
        },
        Arc::new(SqliteStore::open_in(&data).unwrap()) as Arc<dyn Store>,
        Arc::new(loaded),
        builder.build() as Arc<dyn ResourceBackend>,
    )
    .unwrap();
    owner.bind(&engine);
    Host {
        _dir: dir,
        engine,
        warnings,
    }
}

fn spec(task_type: &str, inputs: Value) -> ExecutionSpec {
    serde_json::from_value(json!({
        "template": {"type": task_type, "id": {"project": "compat", "domain": "test", "name": task_type, "version": "1"}},
        "inputs": inputs,
        "metadata": {"project": "compat", "domain": "test"},
    }))
    .unwrap()
}

fn submit(engine: &EngineHandle, id: &str, spec: ExecutionSpec) -> String {
    match engine.submit(Some(id.to_string()), spec).unwrap() {
        SubmitOutcome::Created(id) => id,
        other => panic!("{other:?}"),
    }
}

fn wait_until(engine: &EngineHandle, id: &str, done: impl Fn(&ExecutionView) -> bool) -> ExecutionView {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = engine.get(id).unwrap();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{v:#?}\n{:#?}", engine.events(id).unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn output(engine: &EngineHandle, id: &str, name: &str) -> Literal {
    let outputs = engine
        .outputs(id)
        .unwrap()
        .unwrap_or_else(|| panic!("{id} has no outputs"));
    outputs
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{id} has no output {name}: {outputs:?}"))
}

#[test]
fn the_released_probe_sees_every_context_value_intact_through_this_hosts_loader() {
    let lib = open_library(&released_plugins()[1]).expect("the released probe opens");
    assert_eq!(lib.abi.to_string(), "1.0");
    assert_eq!(lib.interface_version, "1.0.0");
    assert_eq!(lib.newer_warning(), None);
    probe_checks::check_probe(&lib);
}

#[test]
fn released_plugins_run_in_this_hosts_loader_and_engine() {
    let libs = released_plugins();
    let h = host(&[&libs[0], &libs[1]]);
    assert!(h.warnings.is_empty(), "{:?}", h.warnings);

    let echo = submit(
        &h.engine,
        "compat-echo",
        spec("echo", json!({"greeting": "hello", "n": 3})),
    );
    let v = wait_until(&h.engine, &echo, |v| v.phase.is_terminal());
    assert_eq!(v.phase, ExecPhase::Succeeded, "{v:#?}");
    assert_eq!(output(&h.engine, &echo, "greeting"), Literal::String("hello".into()));
    assert_eq!(output(&h.engine, &echo, "n"), Literal::Integer(3));

    // The probe calls every context service in each round and reports
    // Initializing v9: it must run rounds without a single handler error.
    let probe = submit(&h.engine, "compat-probe", spec("probe", json!({"n": 1})));
    let v = wait_until(&h.engine, &probe, |v| v.plugin_phase_version == 9);
    assert!(v.last_handler_error.is_none(), "{v:#?}");
    h.engine.abort(&probe, "compat suite done").unwrap();
    let v = wait_until(&h.engine, &probe, |v| v.phase.is_terminal());
    assert_eq!(v.phase, ExecPhase::Aborted, "{v:#?}");
}

#[test]
fn plugins_check_shows_the_abi_of_released_and_newer_plugins() {
    let released = &released_plugins()[0];
    let next = &next_minor()[0];
    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(["plugins", "check"])
        .arg(released)
        .arg(next)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: echo: task types [echo], default,") && stdout.contains("kozmo-interface 1.0.0, ABI 1.0"),
        "{stdout}"
    );
    assert!(stdout.contains("kozmo-interface 1.1.0, ABI 1.1"), "{stdout}");
    let warning = format!(
        "warning[newer-abi]: {}: built against kozmo ABI 1.1, this host speaks 1.0: host services added after 1.0 are unavailable",
        next.display()
    );
    assert!(stdout.contains(&warning), "{stdout}");
}

#[test]
fn a_next_minor_plugin_runs_here_and_the_missing_service_names_the_minor_it_needs() {
    let next = &next_minor()[0];
    let h = host(&[next]);
    assert_eq!(h.warnings.len(), 1, "{:?}", h.warnings);
    assert!(
        h.warnings[0].contains("built against kozmo ABI 1.1, this host speaks 1.0"),
        "{:?}",
        h.warnings
    );

    let id = submit(&h.engine, "next-here", spec("next", json!({"greeting": "hi"})));
    let v = wait_until(&h.engine, &id, |v| v.phase.is_terminal());
    assert_eq!(v.phase, ExecPhase::Succeeded, "{v:#?}");
    assert_eq!(output(&h.engine, &id, "greeting"), Literal::String("hi".into()));
    assert_eq!(output(&h.engine, &id, "host_abi"), Literal::String("1.0".into()));
    let answer = output(&h.engine, &id, "host_service");
    let want = format!(
        "error NeedsNewerHost: {SERVICE} needs a daemon speaking kozmo ABI 1.1 or newer (this daemon speaks ABI 1.0); upgrade the daemon"
    );
    assert_eq!(answer, Literal::String(want));
}

fn json_lines(program: &Path, libs: &[&Path]) -> Vec<Value> {
    let out = Command::new(program).args(libs).output().unwrap();
    json_output(out)
}

fn json_output(out: std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_next_minor_host_runs_released_plugins_and_gives_new_plugins_the_new_features() {
    let released = &released_plugins()[0];
    let next = &next_minor()[0];
    let current = &kozmo_testkit::build_plugins(&["kozmo-plugin-echo"])[0];
    let seen = json_lines(&next_minor()[1], &[released, next, current]);
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Old plugin, new host: loads and runs; the method and the field it
    // predates read as absent.
    for old in [&seen[0], &seen[2]] {
        assert_eq!(old["abi"], "1.0", "{old}");
        assert_eq!(old["warning"], Value::Null, "{old}");
        assert_eq!(old["root_field"], Value::Null, "{old}");
        let e = &old["entries"][0];
        assert_eq!(
            (e["id"].as_str(), e["phase"].as_str()),
            (Some("echo"), Some("PhaseSuccess")),
            "{old}"
        );
        assert_eq!(e["outputs"]["greeting"], "hi", "{old}");
        assert_eq!(e["plugin_method"], Value::Null, "{old}");
    }

    // New plugin, new host: the new service, method and field all work.
    let new = &seen[1];
    assert_eq!(new["abi"], "1.1", "{new}");
    assert_eq!(new["warning"], Value::Null, "{new}");
    assert_eq!(new["root_field"], 11, "{new}");
    let e = &new["entries"][0];
    assert_eq!(e["phase"], "PhaseSuccess", "{new}");
    assert_eq!(e["outputs"]["host_service"], "host 1.1 answered ping", "{new}");
    assert_eq!(e["outputs"]["host_abi"], "1.1", "{new}");
    assert_eq!(e["plugin_method"], "plugin 1.1 answered", "{new}");
}

#[test]
fn an_epoch_2_host_keeps_loading_epoch_1_plugins_next_to_epoch_2_ones() {
    let released = &released_plugins()[0];
    let current = &kozmo_testkit::build_plugins(&["kozmo-plugin-echo"])[0];
    let [echo2, host2] = epoch_two() else { unreachable!() };
    let seen = json_lines(host2, &[released, current, echo2]);
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (lib, abi) in seen.iter().zip(["1.0", "1.0", "2.0"]) {
        assert_eq!(lib["error"], Value::Null, "{lib}");
        assert_eq!(lib["abi"], abi, "{lib}");
        assert_eq!(lib["host_abi"], "2.0", "{lib}");
        let e = &lib["entries"][0];
        assert_eq!(
            (e["phase"].as_str(), e["echoed"].as_bool()),
            (Some("PhaseSuccess"), Some(true)),
            "{lib}"
        );
    }
}

#[test]
fn this_host_refuses_an_epoch_2_plugin_naming_the_epoch() {
    let echo2 = &epoch_two()[0];
    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(["plugins", "check"])
        .arg(echo2)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("error[epoch-mismatch]") && stdout.contains("epoch 2"),
        "{stdout}"
    );
}

#[test]
fn the_released_layout_snapshot_accepts_the_simulated_minor_as_a_pure_append() {
    let released = kozmo_testkit::workspace_root().join("interface/abi/v1.0.layout");
    let out = Command::new(&next_minor()[1])
        .arg("--check-layout")
        .arg(&released)
        .output()
        .unwrap();
    let report = json_output(out).remove(0);
    assert_eq!(report["breaking"], json!([]), "{report:#}");
    let appended = report["appended"].to_string();
    for what in ["simulated_field", "simulated_host_service", "simulated_plugin_method"] {
        assert!(appended.contains(what), "{what} missing from {appended}");
    }
}
