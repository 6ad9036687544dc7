//! `kozmo plugins new NAME`: writes a plugin crate that builds, tests and
//! loads as it is — a small real plugin on the author's kit
//! (`kozmo_interface::kit`, `kozmo_interface::testing`), a README saying
//! how to build, test, check and install it, and a task file to submit.

use std::fmt;
use std::path::{Path, PathBuf};

/// The longest plugin name accepted.
pub const MAX_NAME_LEN: usize = 50;

/// Why a name cannot be a plugin name, or `Ok`.
///
/// A name is the plugin id, its task type and (as `kozmo-plugin-NAME`)
/// the crate's name: lower-case ASCII letters, digits and single `-`
/// between them, starting with a letter, at most [`MAX_NAME_LEN`].
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = format!(
        "a plugin name is 1 to {MAX_NAME_LEN} lower-case ASCII letters, digits and dashes, starting with a letter, \
         with no dash at the end nor two in a row (e.g. `demo`, `batch-job2`): it becomes the plugin id, its task \
         type and the crate `kozmo-plugin-NAME`"
    );
    let bad = |why: &str| Err(format!("invalid plugin name {name:?}: {why}; {allowed}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("it has {} characters", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return bad(&format!("{c:?} is not allowed"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("it does not start with a letter");
    }
    if name.ends_with('-') || name.contains("--") {
        return bad("a dash must stand between two letters or digits");
    }
    Ok(())
}

/// `batch-job2` → `BatchJob2`.
fn camel(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The interface source this binary was built from, if it is still there:
/// `<repository>/interface` next to `host/`.
pub fn default_interface() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("interface");
    is_interface(&dir).then_some(dir)
}

/// Whether `dir` holds the `kozmo-interface` crate.
pub fn is_interface(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .map(|t| t.lines().any(|l| l.trim() == "name = \"kozmo-interface\""))
        .unwrap_or(false)
}

/// What went wrong, for the user.
#[derive(Debug)]
pub struct ScaffoldError(pub String);

impl fmt::Display for ScaffoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScaffoldError {}

/// The files of a new plugin crate, by path relative to its directory.
pub fn files(name: &str, interface: &Path) -> Vec<(&'static str, String)> {
    let ty = camel(name);
    let lib = name.replace('-', "_");
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{Type}}", &ty)
            .replace("{{lib}}", &lib)
            .replace("{{interface}}", &interface.display().to_string())
            .replace("{{dll_prefix}}", std::env::consts::DLL_PREFIX)
            .replace("{{dll_suffix}}", std::env::consts::DLL_SUFFIX)
    };
    vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("README.md", fill(README)),
        ("task.json", fill(TASK_JSON)),
        (".gitignore", "/target\n".to_string()),
    ]
}

/// Writes the crate for `name` into `dir` (which must not exist) against
/// the interface source `interface`; returns the files written.
pub fn write(name: &str, dir: &Path, interface: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name).map_err(ScaffoldError)?;
    if !is_interface(interface) {
        return Err(ScaffoldError(format!(
            "{} does not hold the kozmo-interface crate (no Cargo.toml naming it); pass --interface with the \
             interface/ directory of a Kozmo checkout",
            interface.display()
        )));
    }
    let interface = std::path::absolute(interface)
        .map_err(|e| ScaffoldError(format!("cannot make {} absolute: {e}", interface.display())))?;
    if dir.exists() || dir.is_symlink() {
        return Err(ScaffoldError(format!(
            "{} already exists; refusing to write into it (choose another --dir, or remove it)",
            dir.display()
        )));
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| ScaffoldError(format!("cannot create {}: {e}", parent.display())))?;
    }
    // create_dir, not create_dir_all: fails if someone created it meanwhile.
    std::fs::create_dir(dir).map_err(|e| ScaffoldError(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (rel, text) in files(name, &interface) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ScaffoldError(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(|e| ScaffoldError(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

const CARGO_TOML: &str = r#"[package]
name = "kozmo-plugin-{{name}}"
version = "0.1.0"
edition = "2021"
publish = false
description = "The {{name}} Kozmo plugin"

[lib]
name = "kozmo_plugin_{{lib}}"
# cdylib: the library the daemon loads; rlib: what `cargo test` links.
crate-type = ["cdylib", "rlib"]

[dependencies]
# kozmo-interface is not on crates.io: this is the source `kozmo plugins new`
# used (its --interface). Point it at the interface/ directory of the Kozmo
# checkout whose daemon will load the plugin (or at the same release).
kozmo-interface = { path = "{{interface}}" }
log = "0.4"
serde = { version = "1", features = ["derive"] }

# Keep the default `panic = "unwind"`: the daemon refuses libraries built
# with `panic = "abort"`.

# A crate of its own, not part of an enclosing workspace.
[workspace]
"#;

const TASK_JSON: &str = r#"{
  "type": "{{name}}",
  "id": {"project": "demo", "domain": "development", "name": "{{name}}-example", "version": "1"},
  "interface": {"outputs": {"greeting": {"type": "string"}}},
  "inputs": {"name": "kozmo"}
}
"#;

const README: &str = r#"# kozmo-plugin-{{name}}

A Kozmo task plugin made by `kozmo plugins new {{name}}`:
plugin id `{{name}}`, task type `{{name}}`. It greets: input `name` (a
string, default `world`) becomes the output `greeting` (`hello, <name>`),
also written to `greeting.txt` in the attempt's raw output directory. It
holds one of `QUOTA` slots while it runs (its loader registers the quota), so
at most `QUOTA` tasks of this type run at once; the others wait
(WaitingForResources) until `finalize` gives a slot back. Change
`src/lib.rs` to do your work; the structure (allocate, keep state, report
phases, release in `finalize`) is the one most plugins need.

## Build

```sh
cargo build            # target/debug/{{dll_prefix}}kozmo_plugin_{{lib}}{{dll_suffix}}
cargo build --release  # target/release/{{dll_prefix}}kozmo_plugin_{{lib}}{{dll_suffix}}
```

`kozmo-interface` is not on crates.io: `Cargo.toml` depends on it by path,
on the source `kozmo plugins new` was given (`--interface`, by default the
`interface/` directory of the Kozmo checkout the `kozmo` binary was built
from). Build against the interface of the daemon that will load the plugin
(or an older 1.x: a plugin built against ABI 1.x loads in every daemon
speaking 1.y, y >= x).

## Test

```sh
cargo test
```

The tests in `src/lib.rs` use `kozmo_interface::testing`: `drive` runs the
plugin's rounds the way the daemon does (a delay between rounds, at once
after a signal, `finalize` after a terminal phase, `abort` + `finalize`
when asked) and captures its logs; `TestSetupContext::task_context` gives
task contexts that share the quota the loader registered.

## Check

```sh
kozmo plugins check target/debug/{{dll_prefix}}kozmo_plugin_{{lib}}{{dll_suffix}}
```

runs every check the daemon makes (file, symbols, ABI, entries, loader) and
prints `ok: {{name}}: task types [{{name}}], ...` or one line per problem
(exit 1). Put it in your CI.

## Install

Copy the library into the daemon's plugin directory (`--plugins-dir`,
`KOZMO_PLUGIN_DIR`, `plugins_dir` in `kozmo.toml`) and restart the daemon;
the directory and the file must not be writable by group or others:

```sh
install -m 644 target/release/{{dll_prefix}}kozmo_plugin_{{lib}}{{dll_suffix}} /path/to/plugins/
kozmo plugins list --dir /path/to/plugins
kozmo submit task.json --wait
```

To upgrade, replace the file (an atomic rename, as `install` does) and
restart the daemon: libraries are never unloaded.

## Rules the daemon relies on

* `handle` must not block: start work, report `Running`, look again in a
  later round (or signal the execution with `ctx.task_refresh_indicator()`
  when something finishes).
* `handle`, `abort` and `finalize` may run more than once for the same
  round: make them idempotent. State kept with `plugin_state_writer().put`
  is what survives between rounds and daemon restarts.
* The raw output prefix is an absolute path in the daemon (a `file://` URL
  in `TestTaskContext`): use `ctx.raw_output_dir()` (kit) or
  `kozmo_interface::io::local_dir`, never `Path::new(prefix)`.
* `log::info!` and friends reach the daemon's log.
"#;

const LIB_RS: &str = r#"//! The `{{name}}` Kozmo plugin (task type `{{name}}`).
//!
//! Input `name` (a string, default `world`); output `greeting`
//! (`hello, <name>`), also written to `greeting.txt` in the attempt's raw
//! output directory when the data store is local (it is in the daemon).
//!
//! Rounds:
//!
//! 1. No state yet: take a slot of [`NAMESPACE`] (its quota, [`QUOTA`], is
//!    registered by the loader; the token is the attempt's generated name).
//!    No free slot: report WaitingForResources and keep no state; the
//!    daemon runs the round again when a slot frees. Granted: keep
//!    [`State`] and report Running.
//! 2. With state: write the greeting, record the output, report Success.
//!
//! `finalize` (which the daemon always runs last, after success, failure
//! or abort) releases the slot; `abort` has nothing of its own to stop.

use kozmo_interface::kit::{now_ms, TaskContextExt};
use kozmo_interface::{
    Literal, LiteralMap, PhaseInfo, Plugin, PluginEntry, PluginError, PluginLoader,
    PluginStateReaderExt, PluginStateWriterExt, ResourceNamespace, Result, TaskExecutionContext,
    Transition,
};
use serde::{Deserialize, Serialize};

/// The resource namespace of the slots (the daemon prefixes it with the
/// plugin's id, so it is this plugin's own).
pub const NAMESPACE: &str = "slots";

/// How many tasks of this type run at once.
pub const QUOTA: i64 = 4;

/// The version of [`State`] (bump it when the struct changes).
pub const STATE_VERSION: u8 = 1;

/// What the plugin remembers between rounds (and daemon restarts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// When the slot was granted, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

/// The plugin.
pub struct {{Type}}Plugin;

impl Plugin for {{Type}}Plugin {
    fn id(&self) -> &str {
        "{{name}}"
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let (_, state) = ctx.plugin_state_reader().get::<State>()?;
        let Some(state) = state else {
            let slots = ResourceNamespace::new(NAMESPACE);
            if let Some(waiting) = ctx.allocate(&slots, "waiting for a free {{name}} slot")? {
                return Ok(Transition::ephemeral(waiting));
            }
            ctx.plugin_state_writer().put(
                STATE_VERSION,
                &State {
                    started_at_ms: now_ms(),
                },
            )?;
            log::info!("{{name}}: {} got a slot", ctx.generated_name());
            return Ok(Transition::ephemeral(PhaseInfo::running(0, None)));
        };

        let inputs = ctx.input_reader().get()?;
        let who = match inputs.get("name") {
            None => "world".to_string(),
            Some(Literal::String(s)) => s.clone(),
            Some(other) => {
                let message = format!("input name must be a string, got {}", other.to_json());
                return Ok(Transition::ephemeral(PhaseInfo::failure(
                    "BadInput", message, None,
                )));
            }
        };
        let greeting = format!("hello, {who}");
        if let Some(dir) = ctx.raw_output_dir() {
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join("greeting.txt"), &greeting))
                .map_err(|e| {
                    PluginError::system(
                        "WriteFailed",
                        format!("cannot write in {}: {e}", dir.display()),
                    )
                })?;
        }
        let outputs =
            LiteralMap::from([("greeting".to_string(), Literal::String(greeting.clone()))]);
        ctx.output_writer().put_outputs(outputs)?;
        let waited = now_ms().saturating_sub(state.started_at_ms);
        log::info!(
            "{{name}}: {} says {greeting:?} ({waited} ms after its slot)",
            ctx.generated_name()
        );
        Ok(Transition::ephemeral(PhaseInfo::success(None)))
    }

    fn abort(&self, _ctx: &dyn TaskExecutionContext) -> Result<()> {
        // Nothing runs outside the daemon; finalize (always next) releases the slot.
        Ok(())
    }

    fn finalize(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        // Releasing a slot not held is fine: finalize may run more than once.
        ctx.release(&ResourceNamespace::new(NAMESPACE))
    }
}

/// The entry the daemon loads: id and task type `{{name}}`.
pub fn entry() -> PluginEntry {
    PluginEntry {
        id: "{{name}}".into(),
        registered_task_types: vec!["{{name}}".into()],
        load_plugin: PluginLoader::new(|setup| {
            setup
                .resource_registrar()
                .register_resource_quota(&ResourceNamespace::new(NAMESPACE), QUOTA)?;
            Ok(Box::new({{Type}}Plugin))
        }),
        is_default: false,
    }
}

kozmo_interface::export_plugins![entry()];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kozmo_interface::testing::{drive, Driver, Outcome, TestSetupContext};
    use kozmo_interface::{load_plugin, Phase};

    use super::*;

    #[test]
    fn greets_and_releases_its_slot() {
        let setup = TestSetupContext::new();
        let plugin = load_plugin(&setup, &entry()).unwrap();
        assert_eq!(setup.quotas(), [(NAMESPACE.to_string(), QUOTA)]);
        let ctx = setup
            .task_context()
            .with_input("name", Literal::String("kozmo".into()));

        let run = drive(&*plugin, &ctx).unwrap();

        assert_eq!(run.phases(), [Phase::RUNNING, Phase::SUCCESS]);
        assert_eq!(
            ctx.outputs().unwrap()["greeting"],
            Literal::String("hello, kozmo".into())
        );
        let file = ctx.raw_output_dir().unwrap().join("greeting.txt");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "hello, kozmo");
        assert!(run.logged("says \"hello, kozmo\""), "{}", run.log_text());
        assert!(
            setup.resources().held(NAMESPACE).is_empty(),
            "finalize released the slot"
        );
    }

    #[test]
    fn a_task_waits_while_every_slot_is_taken() {
        let setup = TestSetupContext::new();
        let plugin = load_plugin(&setup, &entry()).unwrap();
        let holders: Vec<_> = (0..QUOTA).map(|_| setup.task_context()).collect();
        for ctx in &holders {
            assert_eq!(plugin.handle(ctx).unwrap().info().phase(), Phase::RUNNING);
            ctx.next_round();
        }
        let late = setup.task_context();
        assert_eq!(
            plugin.handle(&late).unwrap().info().phase(),
            Phase::WAITING_FOR_RESOURCES
        );

        plugin.finalize(&holders[0]).unwrap();
        let run = drive(&*plugin, &late).unwrap();
        assert_eq!(run.phase(), Phase::SUCCESS, "{run:?}");
    }

    #[test]
    fn an_abort_releases_the_slot() {
        let setup = TestSetupContext::new();
        let plugin = load_plugin(&setup, &entry()).unwrap();
        let ctx = setup.task_context();
        let run = Driver::new()
            .delay(Duration::from_millis(1))
            .abort_when(|info| info.phase() == Phase::RUNNING)
            .run(&*plugin, &ctx)
            .unwrap();
        assert_eq!(run.outcome, Outcome::Aborted);
        assert!(run.aborted && run.finalized);
        assert!(setup.resources().held(NAMESPACE).is_empty());
    }

    #[test]
    fn a_name_that_is_not_a_string_fails_the_task() {
        let setup = TestSetupContext::new();
        let plugin = load_plugin(&setup, &entry()).unwrap();
        let ctx = setup.task_context().with_input("name", Literal::Integer(7));
        let run = drive(&*plugin, &ctx).unwrap();
        assert_eq!(run.phase(), Phase::PERMANENT_FAILURE);
        assert_eq!(run.last().unwrap().err().unwrap().code, "BadInput");
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["demo", "a", "batch-job2", "x1-y2-z3"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Demo", "'D' is not allowed"),
            ("my_plugin", "'_' is not allowed"),
            ("2fast", "start with a letter"),
            ("-x", "start with a letter"),
            ("x-", "dash"),
            ("a--b", "dash"),
            ("ünï", "not allowed"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains(why) && e.contains("lower-case ASCII letters"), "{bad}: {e}");
        }
        assert!(check_name(&"a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
        assert_eq!(camel("batch-job2"), "BatchJob2");
        assert_eq!(camel("demo"), "Demo");
    }

    #[test]
    fn the_interface_of_this_checkout_is_found() {
        let dir = default_interface().expect("built from the repository");
        assert!(dir.join("src/lib.rs").exists());
    }

    #[test]
    fn an_existing_directory_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let interface = default_interface().unwrap();
        let e = write("demo", tmp.path(), &interface).unwrap_err();
        assert!(e.0.contains("already exists"), "{e}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        let e = write("demo", &tmp.path().join("x"), tmp.path()).unwrap_err();
        assert!(e.0.contains("does not hold the kozmo-interface crate"), "{e}");
        assert!(!tmp.path().join("x").exists());
    }
}
