//! Shared by the engine tests: the scripted fixture plugin loaded as a real
//! library, an engine on a real SQLite file in a temporary directory, and
//! helpers to submit scripts and wait for outcomes.
#![allow(dead_code)]

pub mod faulty_store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kozmo_engine::model::{event_kind, EventRecord, ExecPhase, ExecutionSpec, ExecutionView};
use kozmo_engine::resources::{InMemoryResources, ResourceBackend, ResourceManagerBuilder};
use kozmo_engine::store::Store;
use kozmo_engine::{Engine, EngineConfig, EngineHandle, PluginResolver};
use kozmo_interface::testing::TestSetupContext;
use kozmo_interface::{Plugin, ResourceNamespace, ResourceRegistrar};
use kozmo_store_sqlite::SqliteStore;
use serde_json::{json, Value};

/// The scripted plugin, loaded once per test process through the ABI.
pub fn scripted() -> Arc<dyn Plugin> {
    static P: OnceLock<Arc<dyn Plugin>> = OnceLock::new();
    P.get_or_init(|| {
        let path = kozmo_testkit::build_plugins(&["kozmo-fixture-scripted"]).remove(0);
        let lib = kozmo_interface::host::open_library(&path).expect("open scripted");
        let entry = lib.entries.into_iter().next().expect("one entry");
        let p = kozmo_interface::load_plugin(&TestSetupContext::new(), &entry).expect("load scripted");
        Arc::from(p)
    })
    .clone()
}

/// Resolves `scripted` only.
pub struct Resolver(pub Arc<dyn Plugin>);

impl PluginResolver for Resolver {
    fn resolve(&self, task_type: &str) -> Result<Arc<dyn Plugin>, String> {
        if task_type == "scripted" {
            Ok(self.0.clone())
        } else {
            Err(format!(
                "no plugin registered for task type [{task_type}] and no default plugin"
            ))
        }
    }
}

/// Fast test settings.
pub fn test_config(dir: &Path) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        workers: 2,
        resync_interval: Duration::from_millis(5),
        max_resync_interval: Duration::from_millis(40),
        ..EngineConfig::default()
    }
}

/// An engine over a SQLite file in a temporary directory.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub engine: EngineHandle,
    pub store: Arc<SqliteStore>,
    pub resources: Arc<InMemoryResources>,
}

impl Harness {
    /// Default test settings, no quotas.
    pub fn new() -> Self {
        Self::with(|_| {}, &[])
    }

    /// Settings tweaked by `f`, quotas `(namespace, quota)` registered for
    /// the `scripted` plugin.
    pub fn with(f: impl FnOnce(&mut EngineConfig), quotas: &[(&str, i64)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        f(&mut cfg);
        let (engine, store, resources) = start(cfg, quotas);
        Harness {
            dir,
            engine,
            store,
            resources,
        }
    }

    /// [`Harness::with`], the engine's resource backend being
    /// `wrap(manager)`; `resources` is the wrapped manager.
    pub fn with_backend(
        f: impl FnOnce(&mut EngineConfig),
        quotas: &[(&str, i64)],
        wrap: impl FnOnce(Arc<InMemoryResources>) -> Arc<dyn ResourceBackend>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        f(&mut cfg);
        let (engine, store, resources) = start_wrapped(cfg, quotas, wrap);
        Harness {
            dir,
            engine,
            store,
            resources,
        }
    }

    /// Restarts on the same directory (after a shutdown).
    pub fn restart(&mut self, f: impl FnOnce(&mut EngineConfig), quotas: &[(&str, i64)]) {
        let mut cfg = test_config(self.dir.path());
        f(&mut cfg);
        let (engine, store, resources) = start(cfg, quotas);
        self.engine = engine;
        self.store = store;
        self.resources = resources;
    }

    pub fn submit(&self, id: &str, template: Value) -> String {
        let spec = spec(template);
        match self.engine.submit(Some(id.to_string()), spec).unwrap() {
            kozmo_engine::SubmitOutcome::Created(id) => id,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn wait_terminal(&self, id: &str) -> ExecutionView {
        self.wait(id, |v| v.phase.is_terminal())
    }

    pub fn wait(&self, id: &str, f: impl Fn(&ExecutionView) -> bool) -> ExecutionView {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.engine.get(id).unwrap();
            if f(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting on {id}: {v:#?}\nevents: {:#?}",
                    self.engine.events(id).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    /// The plugin calls logged for an execution.
    pub fn calls(&self, id: &str) -> Vec<String> {
        let p = self.dir.path().join("data/executions").join(id).join("calls.log");
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Calls without the handle details: `handle a=0`, `abort a=0`, ...
    pub fn call_kinds(&self, id: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self.calls(id) {
            let short: String = c.split(' ').take(2).collect::<Vec<_>>().join(" ");
            if !short.starts_with("handle") || out.last() != Some(&short) {
                out.push(short);
            }
        }
        out.retain(|c| !c.starts_with("secret") && !c.starts_with("allocate"));
        out
    }

    pub fn events(&self, id: &str) -> Vec<EventRecord> {
        self.engine.events(id).unwrap()
    }

    /// (phase, version) of the task events.
    pub fn task_events(&self, id: &str) -> Vec<(String, u32)> {
        self.events(id)
            .into_iter()
            .filter(|e| e.event.kind == event_kind::TASK)
            .map(|e| (e.event.phase, e.event.version))
            .collect()
    }

    pub fn count_kind(&self, id: &str, kind: &str) -> usize {
        self.events(id).iter().filter(|e| e.event.kind == kind).count()
    }

    pub fn ns(&self, ns: &str) -> String {
        format!("inmemoryresourcemanager:scripted:{ns}")
    }
}

pub fn start(cfg: EngineConfig, quotas: &[(&str, i64)]) -> (EngineHandle, Arc<SqliteStore>, Arc<InMemoryResources>) {
    start_wrapped(cfg, quotas, |r| r)
}

/// [`start`] with the engine given `wrap(manager)` as its resource backend
/// (a test's wrapper around the in-memory manager).
pub fn start_wrapped(
    cfg: EngineConfig,
    quotas: &[(&str, i64)],
    wrap: impl FnOnce(Arc<InMemoryResources>) -> Arc<dyn ResourceBackend>,
) -> (EngineHandle, Arc<SqliteStore>, Arc<InMemoryResources>) {
    let store = Arc::new(SqliteStore::open_in(&cfg.data_dir).unwrap());
    let builder = ResourceManagerBuilder::new();
    for (ns, q) in quotas {
        builder
            .registrar_for("scripted")
            .register_resource_quota(&ResourceNamespace::new(*ns), *q)
            .unwrap();
    }
    let resources = builder.build();
    let engine = Engine::start(
        cfg,
        store.clone() as Arc<dyn Store>,
        Arc::new(Resolver(scripted())),
        wrap(resources.clone()),
    )
    .unwrap();
    (engine, store, resources)
}

/// A spec for the scripted plugin; `template` is merged into a default
/// template (`{"type": "scripted"}`), `inputs` taken from `template.inputs`.
pub fn spec(mut template: Value) -> ExecutionSpec {
    let inputs = template
        .as_object_mut()
        .and_then(|o| o.remove("inputs"))
        .unwrap_or(json!({}));
    let mut t = json!({"type": "scripted", "id": {"project": "p", "domain": "d", "name": "t", "version": "1"}});
    if let (Some(base), Some(extra)) = (t.as_object_mut(), template.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "template": t,
        "inputs": inputs,
        "metadata": {"project": "p", "domain": "d"}
    }))
    .unwrap()
}

/// A template with a custom script of rounds.
pub fn rounds(rounds: Value) -> Value {
    json!({"custom": {"rounds": rounds}})
}

pub fn phase_of(v: &ExecutionView) -> ExecPhase {
    v.phase
}

pub fn data_dir(h: &Harness) -> PathBuf {
    h.dir.path().to_path_buf()
}
