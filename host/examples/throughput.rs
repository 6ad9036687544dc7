//! Engine throughput: rounds per second with a no-op plugin.
//!
//! ```sh
//! cargo run --release -p kozmo-host --example throughput -- [memory|sqlite|sqlite-normal] [executions] [rounds] [workers]
//! ```
//!
//! The plugin is native (no library boundary) and does nothing but bump its
//! phase version through plugin state for `rounds` rounds, then succeed, so
//! the figure is the engine's own cost: scheduling, contexts, events, state
//! and (for SQLite) group commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kozmo_host::engine::{Engine, EngineConfig, PluginResolver};
use kozmo_host::model::{ExecPhase, ExecutionSpec};
use kozmo_host::resources::{ResourceBackend, ResourceManagerBuilder};
use kozmo_host::store::{Durability, MemoryStore, SqliteStore, Store};
use kozmo_interface::{
    PhaseInfo, Plugin, PluginStateReaderExt, PluginStateWriterExt, Result, TaskExecutionContext, Transition,
};

struct Noop {
    rounds: u32,
}

impl Plugin for Noop {
    fn id(&self) -> &str {
        "noop"
    }
    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let (_, n) = ctx.plugin_state_reader().get::<u32>()?;
        let n = n.unwrap_or(0);
        if n >= self.rounds {
            return Ok(Transition::ephemeral(PhaseInfo::success(None)));
        }
        ctx.plugin_state_writer().put(1, &(n + 1))?;
        Ok(Transition::ephemeral(PhaseInfo::running(n + 1, None)))
    }
    fn abort(&self, _: &dyn TaskExecutionContext) -> Result<()> {
        Ok(())
    }
    fn finalize(&self, _: &dyn TaskExecutionContext) -> Result<()> {
        Ok(())
    }
}

struct One(Arc<dyn Plugin>);

impl PluginResolver for One {
    fn resolve(&self, _: &str) -> std::result::Result<Arc<dyn Plugin>, String> {
        Ok(self.0.clone())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().map_or("memory", String::as_str).to_string();
    let executions: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let rounds: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let workers: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let dir = std::env::temp_dir().join(format!("kozmo-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn Store> = match kind.as_str() {
        "sqlite" => Arc::new(SqliteStore::open(&dir.join("kozmo.db"), Durability::Full).unwrap()),
        "sqlite-normal" => Arc::new(SqliteStore::open(&dir.join("kozmo.db"), Durability::Normal).unwrap()),
        _ => Arc::new(MemoryStore::new()),
    };
    let cfg = EngineConfig {
        data_dir: dir.clone(),
        workers,
        resync_interval: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let resources = ResourceManagerBuilder::new().build() as Arc<dyn ResourceBackend>;
    let engine = Engine::start(cfg, store.clone(), Arc::new(One(Arc::new(Noop { rounds }))), resources).unwrap();
    let spec: ExecutionSpec = serde_json::from_str(r#"{"template": {"type": "noop"}}"#).unwrap();
    let start = Instant::now();
    for chunk in (0..executions).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk.iter().map(|i| (Some(format!("e{i:07}")), spec.clone())).collect();
        for r in engine.submit_batch(batch) {
            r.unwrap();
        }
    }
    let submitted = start.elapsed();
    loop {
        let done = store
            .count_by_phase()
            .unwrap()
            .get(&ExecPhase::Succeeded)
            .copied()
            .unwrap_or(0);
        if done as usize >= executions {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let stats = engine.stats();
    engine.shutdown(Duration::from_secs(5));
    let steps = stats.commits_total;
    println!(
        "store={kind} workers={workers} executions={executions} rounds/execution={} submit={:.2}s total={:.2}s",
        rounds + 1,
        submitted.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "handle rounds={} ({:.0} rounds/s), steps committed={} ({:.0} steps/s), commit batches={} ({:.1} steps/batch)",
        stats.rounds_total,
        stats.rounds_total as f64 / elapsed.as_secs_f64(),
        steps,
        steps as f64 / elapsed.as_secs_f64(),
        stats.commit_batches_total,
        steps as f64 / stats.commit_batches_total.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
