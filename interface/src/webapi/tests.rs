//! The adapters against a scripted in-memory "remote service".

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::resource_manager::ResourceManager;
use crate::testing::TestTaskContext;
use crate::{
    AllocationStatus, ErrorKind, Literal, LiteralMap, Phase, Plugin, PluginError, PluginStateReaderExt,
    ResourceConstraintsSpec, ResourceNamespace, Result, TaskExecutionContext, TaskInfo,
};

/// What the fake service answers, in order; the last answer repeats.
#[derive(Default)]
struct Script {
    gets: VecDeque<std::result::Result<&'static str, &'static str>>,
    deletes: VecDeque<std::result::Result<(), &'static str>>,
    create_resource: Option<&'static str>,
    calls: Vec<String>,
}

struct Fake {
    config: AsyncConfig,
    script: Arc<Mutex<Script>>,
    quota: Option<&'static str>,
}

impl AsyncPlugin for Fake {
    type Metadata = String;
    type Resource = String;
    fn id(&self) -> &str {
        "fake"
    }
    fn config(&self) -> &AsyncConfig {
        &self.config
    }
    fn resource_requirements(&self, _: &dyn TaskExecutionContext) -> Result<Option<ResourceRequirements>> {
        Ok(self.quota.map(ResourceRequirements::new))
    }
    fn create(&self, ctx: &dyn TaskExecutionContext) -> Result<Created<String, String>> {
        let mut s = self.script.lock().unwrap();
        let name = ctx.task_execution_metadata().task_execution_id().generated_name();
        s.calls.push(format!("create {name}"));
        let id = format!("job-{name}");
        Ok(match s.create_resource {
            Some(r) => Created::with_resource(id, r.to_string()),
            None => Created::new(id),
        })
    }
    fn get(&self, _: &dyn TaskExecutionContext, job: &String) -> Result<String> {
        let mut s = self.script.lock().unwrap();
        s.calls.push(format!("get {job}"));
        let next = if s.gets.len() > 1 {
            s.gets.pop_front()
        } else {
            s.gets.front().copied()
        };
        match next.unwrap_or(Ok("RUNNING")) {
            Ok(v) => Ok(v.to_string()),
            Err(e) => Err(PluginError::system("Unavailable", e)),
        }
    }
    fn delete(&self, _: &dyn TaskExecutionContext, job: &String) -> Result<()> {
        let mut s = self.script.lock().unwrap();
        s.calls.push(format!("delete {job}"));
        match s.deletes.pop_front().unwrap_or(Ok(())) {
            Ok(()) => Ok(()),
            Err("gone") => Err(PluginError::user(NOT_FOUND, "no such job")),
            Err("refused") => Err(PluginError::user("Refused", "cannot cancel")),
            Err(e) => Err(PluginError::system("Unavailable", e).retryable(true)),
        }
    }
    fn status(&self, ctx: &dyn TaskExecutionContext, _: &String, r: &String) -> Result<PhaseInfo> {
        Ok(match r.as_str() {
            "SUCCEEDED" => {
                ctx.output_writer()
                    .put_outputs(LiteralMap::from([("x".to_string(), Literal::Integer(1))]))?;
                PhaseInfo::success(None)
            }
            "FAILED" => PhaseInfo::failure("RemoteFailed", "the job failed", None),
            other => PhaseInfo::running(
                0,
                Some(TaskInfo {
                    custom_info: serde_json::json!({ "status": other }),
                    ..TaskInfo::default()
                }),
            ),
        })
    }
}

fn fast() -> AsyncConfig {
    AsyncConfig {
        poll_interval: Duration::from_millis(1),
        delete_backoff: Duration::from_millis(1),
        delete_backoff_max: Duration::from_millis(4),
        ..AsyncConfig::default()
    }
}

fn adapter(config: AsyncConfig, script: Script) -> (AsyncAdapter<Fake>, Arc<Mutex<Script>>) {
    let script = Arc::new(Mutex::new(script));
    let fake = Fake {
        config,
        script: script.clone(),
        quota: None,
    };
    (AsyncAdapter::new(fake).unwrap(), script)
}

/// One round, then its state becomes the persisted one.
fn round(p: &dyn Plugin, ctx: &TestTaskContext) -> PhaseInfo {
    std::thread::sleep(Duration::from_millis(3));
    let t = p.handle(ctx).unwrap();
    ctx.next_round();
    t.into_info()
}

fn state(ctx: &TestTaskContext) -> AsyncState {
    ctx.plugin_state_reader().get::<AsyncState>().unwrap().1.unwrap()
}

fn calls(s: &Arc<Mutex<Script>>) -> Vec<String> {
    s.lock().unwrap().calls.clone()
}

#[test]
fn async_create_poll_succeed_with_outputs() {
    let script = Script {
        gets: VecDeque::from([Ok("PENDING"), Ok("SUCCEEDED")]),
        ..Script::default()
    };
    let (p, s) = adapter(fast(), script);
    let ctx = TestTaskContext::new();
    let first = round(&p, &ctx);
    assert_eq!(first.phase(), Phase::QUEUED);
    assert_eq!(state(&ctx).metadata::<String>().unwrap().unwrap(), "job-test-exec-n0-0");
    assert_eq!(state(&ctx).phase, AsyncPhase::Created);
    assert_eq!(round(&p, &ctx).phase(), Phase::RUNNING);
    let last = round(&p, &ctx);
    assert!(last.phase().is_success());
    assert_eq!(ctx.outputs().unwrap()["x"], Literal::Integer(1));
    assert_eq!(
        calls(&s),
        [
            "create test-exec-n0-0",
            "get job-test-exec-n0-0",
            "get job-test-exec-n0-0"
        ]
    );
}

#[test]
fn async_fast_job_finishes_in_the_create_round() {
    let script = Script {
        create_resource: Some("SUCCEEDED"),
        ..Script::default()
    };
    let (p, s) = adapter(fast(), script);
    let ctx = TestTaskContext::new();
    assert!(round(&p, &ctx).phase().is_success());
    assert_eq!(calls(&s), ["create test-exec-n0-0"]);
    assert_eq!(state(&ctx).phase, AsyncPhase::Done);
    p.abort(&ctx).unwrap();
    assert_eq!(calls(&s), ["create test-exec-n0-0"], "a finished job is not deleted");
}

#[test]
fn async_remote_failure_is_a_failure() {
    let script = Script {
        gets: VecDeque::from([Ok("FAILED")]),
        ..Script::default()
    };
    let (p, _) = adapter(fast(), script);
    let ctx = TestTaskContext::new();
    round(&p, &ctx);
    let info = round(&p, &ctx);
    assert_eq!(info.phase(), Phase::PERMANENT_FAILURE);
    assert_eq!(info.err().unwrap().code, "RemoteFailed");
}

#[test]
fn async_no_poll_before_the_poll_time_and_no_state_write() {
    let config = AsyncConfig {
        poll_interval: Duration::from_secs(3600),
        ..AsyncConfig::default()
    };
    let (p, s) = adapter(config, Script::default());
    let ctx = TestTaskContext::new();
    let first = round(&p, &ctx);
    for _ in 0..5 {
        let again = round(&p, &ctx);
        assert_eq!((again.phase(), again.version()), (first.phase(), first.version()));
        assert!(
            ctx.pending_state().is_none(),
            "a round that did not poll writes nothing"
        );
    }
    assert_eq!(calls(&s).len(), 1, "only create: {:?}", calls(&s));
    assert_eq!(p.driver.wake.pending(), 1, "one wake-up for the poll");
}

#[test]
fn async_get_errors_below_the_budget_show_and_reset() {
    let script = Script {
        gets: VecDeque::from([Err("down"), Err("down"), Err("down"), Err("down"), Ok("SUCCEEDED")]),
        ..Script::default()
    };
    let (p, _) = adapter(fast(), script);
    let ctx = TestTaskContext::new();
    let created = round(&p, &ctx);
    let mut last_version = created.version();
    for n in 1..=4 {
        let info = round(&p, &ctx);
        assert_eq!(info.phase(), Phase::QUEUED);
        assert_eq!(
            info.reason(),
            format!("polling the remote job failed ({n}/5): Unavailable: down")
        );
        assert_eq!(info.version(), last_version + 1, "a changed reason is a new version");
        last_version = info.version();
        assert_eq!(state(&ctx).sync_failures, n);
    }
    assert!(round(&p, &ctx).phase().is_success());
    assert_eq!(state(&ctx).sync_failures, 0);
}

#[test]
fn async_get_errors_over_the_budget_fail_as_system_with_cleanup() {
    let script = Script {
        gets: VecDeque::from([Err("down")]),
        ..Script::default()
    };
    let (p, _) = adapter(fast(), script);
    let ctx = TestTaskContext::new();
    round(&p, &ctx);
    for _ in 1..5 {
        assert_eq!(round(&p, &ctx).phase(), Phase::QUEUED);
    }
    let info = round(&p, &ctx);
    assert_eq!(info.phase(), Phase::RETRYABLE_FAILURE);
    let err = info.err().unwrap();
    assert_eq!((err.code.as_str(), err.kind), ("SyncFailures", ErrorKind::System));
    assert!(info.cleanup_on_failure());
}

#[test]
fn async_changed_custom_info_is_a_new_version_same_is_not() {
    let script = Script {
        gets: VecDeque::from([Ok("10%"), Ok("10%"), Ok("50%"), Ok("50%")]),
        ..Script::default()
    };
    let (p, _) = adapter(fast(), script);
    let ctx = TestTaskContext::new();
    round(&p, &ctx);
    let a = round(&p, &ctx);
    let b = round(&p, &ctx);
    let c = round(&p, &ctx);
    let d = round(&p, &ctx);
    assert_eq!(a.phase(), Phase::RUNNING);
    assert_eq!(a.version(), b.version());
    assert_eq!(c.version(), b.version() + 1);
    assert_eq!(d.version(), c.version());
}

#[test]
fn async_abort_retries_delete_with_backoff_until_it_succeeds() {
    let script = Script {
        deletes: VecDeque::from([Err("boom"), Err("boom")]),
        ..Script::default()
    };
    let (p, s) = adapter(fast(), script);
    let ctx = TestTaskContext::new();
    round(&p, &ctx);
    let e1 = p.abort(&ctx).unwrap_err();
    assert!(
        e1.retryable && e1.message.starts_with("cancelling remote job: delete failed (try 1)"),
        "{e1}"
    );
    std::thread::sleep(Duration::from_millis(10));
    let e2 = p.abort(&ctx).unwrap_err();
    assert!(e2.message.contains("try 2"), "{e2}");
    // Within the backoff: no delete.
    let e3 = p.abort(&ctx).unwrap_err();
    assert!(e3.message.contains("next try in"), "{e3}");
    std::thread::sleep(Duration::from_millis(10));
    p.abort(&ctx).unwrap();
    let deletes = calls(&s).iter().filter(|c| c.starts_with("delete")).count();
    assert_eq!(deletes, 3);
}

#[test]
fn async_abort_tolerates_not_found_and_nothing_created() {
    let script = Script {
        deletes: VecDeque::from([Err("gone")]),
        ..Script::default()
    };
    let (p, s) = adapter(fast(), script);
    let fresh = TestTaskContext::new();
    p.abort(&fresh).unwrap();
    assert!(calls(&s).is_empty(), "nothing created, nothing deleted");
    round(&p, &fresh);
    p.abort(&fresh).unwrap();
}

#[test]
fn async_quota_waits_with_a_reason_and_releases_in_finalize() {
    let script = Arc::new(Mutex::new(Script::default()));
    let p = AsyncAdapter::new(Fake {
        config: fast(),
        script: script.clone(),
        quota: Some("jobs"),
    })
    .unwrap();
    let a = TestTaskContext::new().with_quota("jobs", 1);
    round(&p, &a);
    assert!(a.granted("jobs").contains("test-exec-n0-0"));
    // A second execution sharing the manager waits.
    struct Shared(Mutex<Option<AllocationStatus>>);
    impl ResourceManager for Shared {
        fn id(&self) -> String {
            "shared".into()
        }
        fn allocate_resource(
            &self,
            _: &ResourceNamespace,
            _: &str,
            _: &ResourceConstraintsSpec,
        ) -> Result<AllocationStatus> {
            Ok(self.0.lock().unwrap().unwrap())
        }
        fn release_resource(&self, _: &ResourceNamespace, _: &str) -> Result<()> {
            Ok(())
        }
    }
    let m = Arc::new(Shared(Mutex::new(Some(AllocationStatus::NAMESPACE_QUOTA_EXCEEDED))));
    let b = TestTaskContext::new()
        .with_generated_name("b-n0-0")
        .with_resource_manager(m.clone());
    let w = round(&p, &b);
    assert_eq!(w.phase(), Phase::WAITING_FOR_RESOURCES);
    assert_eq!(
        w.reason(),
        "waiting for a quota token in jobs: the namespace's quota is exceeded"
    );
    assert!(state(&b).token_requested_at_ms.is_some());
    *m.0.lock().unwrap() = Some(AllocationStatus::EXHAUSTED);
    let w2 = round(&p, &b);
    assert_eq!(w2.reason(), "waiting for a quota token in jobs: its quota is used up");
    assert_eq!(w2.version(), w.version() + 1);
    *m.0.lock().unwrap() = Some(AllocationStatus::UNDEFINED);
    assert_eq!(p.handle(&b).unwrap_err().code, "AllocationUndefined");
    *m.0.lock().unwrap() = Some(AllocationStatus::GRANTED);
    assert_eq!(round(&p, &b).phase(), Phase::QUEUED);
    assert_eq!(calls(&script).len(), 2, "two creates: {:?}", calls(&script));
    p.finalize(&a).unwrap();
    assert!(a.granted("jobs").is_empty());
}

#[test]
fn async_write_limit_holds_creates_back() {
    let config = AsyncConfig {
        write: RateLimit::new(1.0, 1),
        ..fast()
    };
    let (p, s) = adapter(config, Script::default());
    let a = TestTaskContext::new().with_generated_name("a-n0-0");
    let b = TestTaskContext::new().with_generated_name("b-n0-0");
    assert_eq!(round(&p, &a).reason(), "remote job created");
    let w = round(&p, &b);
    assert_eq!(w.reason(), WAITING_FOR_WRITE_SLOT);
    assert_eq!(calls(&s), ["create a-n0-0"]);
    // The refused execution is woken at its slot (about a second later).
    std::thread::sleep(Duration::from_millis(1100));
    assert!(b.signal_count() >= 1);
    assert_eq!(round(&p, &b).reason(), "remote job created");
}

#[test]
fn async_sync_plugin_do_is_called_under_the_write_limit() {
    struct Once(AsyncConfig, Arc<Mutex<u32>>);
    impl SyncPlugin for Once {
        fn id(&self) -> &str {
            "once"
        }
        fn config(&self) -> &AsyncConfig {
            &self.0
        }
        fn r#do(&self, _: &dyn TaskExecutionContext) -> Result<PhaseInfo> {
            *self.1.lock().unwrap() += 1;
            Ok(PhaseInfo::success(None))
        }
    }
    let n = Arc::new(Mutex::new(0));
    let config = AsyncConfig {
        write: RateLimit::new(0.5, 1),
        ..AsyncConfig::default()
    };
    let p = SyncAdapter::new(Once(config, n.clone())).unwrap();
    assert!(p.handle(&TestTaskContext::new()).unwrap().info().phase().is_success());
    let other = TestTaskContext::new().with_generated_name("other");
    assert_eq!(p.handle(&other).unwrap().info().reason(), WAITING_FOR_WRITE_SLOT);
    assert_eq!(*n.lock().unwrap(), 1);
}

#[test]
fn async_abort_of_a_finished_job_deletes_nothing_and_a_refusal_is_plain() {
    let script = Script {
        gets: VecDeque::from([Ok("FAILED")]),
        deletes: VecDeque::from([Err("refused")]),
        ..Script::default()
    };
    let (p, s) = adapter(fast(), script);
    let done = TestTaskContext::new();
    round(&p, &done);
    assert!(round(&p, &done).phase().is_failure());
    p.abort(&done).unwrap();
    assert!(!calls(&s).iter().any(|c| c.starts_with("delete")), "{:?}", calls(&s));
    let running = TestTaskContext::new().with_generated_name("r-n0-0");
    round(&p, &running);
    let e = p.abort(&running).unwrap_err();
    assert_eq!(
        e.code, "Refused",
        "not a cancelling error: the engine gives up at its limit"
    );
}

#[test]
fn async_sync_failures_over_the_budget_still_delete() {
    let script = Script {
        gets: VecDeque::from([Err("down")]),
        ..Script::default()
    };
    let config = AsyncConfig {
        max_sync_failures: 1,
        ..fast()
    };
    let (p, s) = adapter(config, script);
    let ctx = TestTaskContext::new();
    round(&p, &ctx);
    assert_eq!(round(&p, &ctx).err().unwrap().code, "SyncFailures");
    p.abort(&ctx).unwrap();
    assert!(calls(&s).iter().any(|c| c.starts_with("delete")), "{:?}", calls(&s));
}
