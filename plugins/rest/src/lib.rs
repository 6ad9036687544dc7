//! The `rest` plugin: drives any HTTP job service described in the task, on
//! the asynchronous plugin adapter (`kozmo_interface::webapi`).
//!
//! Task type `rest` (plugin id `rest`). The task's `custom` describes the
//! job API ([`config::RawConfig`]):
//!
//! ```json
//! {"type": "rest",
//!  "inputs": {"n": 3},
//!  "custom": {
//!    "create":  {"method": "POST", "url": "http://127.0.0.1:8080/jobs",
//!                "body": "{\"key\": \"{{ .PerRetryUniqueKey }}\", \"n\": {{ .Inputs.n }}}",
//!                "job_id": "$.id"},
//!    "status":  {"url": "http://127.0.0.1:8080/jobs/{{ .JobId }}", "path": "$.status",
//!                "running": ["PENDING", "RUNNING"], "succeeded": ["SUCCEEDED"],
//!                "failed": ["FAILED"], "message": "$.error"},
//!    "outputs": {"result": "$.result"},
//!    "cancel":  {"method": "DELETE", "url": "http://127.0.0.1:8080/jobs/{{ .JobId }}"},
//!    "headers": {"Authorization": "Bearer {{ .Secrets.JOBS_TOKEN }}"}}}
//! ```
//!
//! * URL, body and header values are templates: every placeholder of
//!   Kozmo's argument templates (`{{ .Inputs.n }}`, `{{ .PerRetryUniqueKey }}`,
//!   …; string inputs are inserted without quotes), plus `{{ .JobId }}`
//!   (status and cancel URLs; percent-encoded) and `{{ .Secrets.NAME }}`
//!   (headers only: the secret NAME from the daemon's secret manager; never
//!   logged or shown).
//! * `create` must be idempotent on the service's side: send
//!   `{{ .PerRetryUniqueKey }}` as the idempotency key (create can run again
//!   after a daemon crash before its round was committed).
//! * Status values not listed in `running`, `succeeded` or `failed` count as
//!   running (the reason says so). If the create answer already holds a
//!   terminal status (at `status.path`), the task ends in that round.
//! * Outputs: on success, each output's JSON path is read from the final
//!   status answer (plain JSON becomes a literal); a missing one fails the
//!   task (`OutputNotFound`).
//! * HTTP: a 4xx answer to create fails the task (`CreateRejected`), a 5xx or
//!   a connection error is retried; a failed status request counts against
//!   the failure budget; a 404 or 410 to cancel means already gone.
//!
//! Plugin settings (`[plugins.settings.rest]`, or `KOZMO_PLUGIN_REST_*`):
//! the adapter's (`read_qps`, `read_burst`, `write_qps`, `write_burst`,
//! `poll_interval_secs`, `max_sync_failures`, `delete_backoff_secs`,
//! `delete_backoff_max_secs`) and `quota`: at most that many rest jobs at
//! once (namespace [`QUOTA_NAMESPACE`]).

#![deny(missing_docs)]

pub mod config;

use std::sync::LazyLock;
use std::time::Duration;

use kozmo_interface::serde_json::{json, Value};
use kozmo_interface::template::{render, Parameters};
use kozmo_interface::webapi::{
    setting_var, AsyncAdapter, AsyncConfig, AsyncPlugin, Created, Quota, ResourceRequirements, NOT_FOUND,
};
use kozmo_interface::{
    Literal, LiteralMap, PhaseInfo, PluginEntry, PluginError, PluginLoader, Result, TaskExecutionContext, TaskInfo,
};
use regex::Regex;
use serde::{Deserialize, Serialize};

use config::{bad, RequestSpec, RestConfig};

/// The plugin id and task type.
pub const ID: &str = "rest";

/// The quota namespace when the `quota` setting is given.
pub const QUOTA_NAMESPACE: &str = "jobs";

/// Request timeout when the task gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What identifies a remote job (persisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestJob {
    /// The id the service gave it.
    pub id: String,
}

static JOB_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\{\{[\t\n\f\r ]*[.$]JobId[\t\n\f\r ]*\}\}").expect("valid regex"));
static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\{\{[\t\n\f\r ]*[.$]Secrets\.([A-Za-z0-9_.-]+)[\t\n\f\r ]*\}\}").expect("valid regex")
});

/// Percent-encodes all but RFC 3986's unreserved characters.
///
/// ```
/// assert_eq!(kozmo_plugin_rest::encode("a b/c"), "a%20b%2Fc");
/// ```
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A JSON value as the string a status list is compared with.
///
/// ```
/// use kozmo_interface::serde_json::json;
/// assert_eq!(kozmo_plugin_rest::as_text(&json!("DONE")), "DONE");
/// assert_eq!(kozmo_plugin_rest::as_text(&json!(3)), "3");
/// ```
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where a status value puts the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Listed in `running`.
    Running,
    /// Listed in `succeeded`.
    Succeeded,
    /// Listed in `failed`.
    Failed,
    /// Not listed: treated as running.
    Unknown,
}

/// A request ready to send (headers hold secrets: never logged).
struct Prepared {
    method: String,
    url: String,
    body: Option<String>,
    headers: Vec<(String, String)>,
}

/// The `rest` plugin (see the crate docs).
pub struct Rest {
    config: AsyncConfig,
    agent: ureq::Agent,
    quota: bool,
}

fn http_error(what: &str, e: ureq::Error) -> PluginError {
    match e {
        ureq::Error::Status(code, resp) => {
            let body: String = resp.into_string().unwrap_or_default().chars().take(200).collect();
            // A 4xx other than a timeout or "too many requests" will not
            // change by trying again.
            let retryable = !(400..500).contains(&code) || code == 408 || code == 429;
            PluginError::system("HttpStatus", format!("{what}: HTTP {code}: {body}")).retryable(retryable)
        }
        ureq::Error::Transport(t) => PluginError::system("HttpTransport", format!("{what}: {t}")).retryable(true),
    }
}

impl Rest {
    /// The plugin with `config` and, if `quota`, a token per task in
    /// [`QUOTA_NAMESPACE`].
    ///
    /// ```
    /// let rest = kozmo_plugin_rest::Rest::new(Default::default(), false);
    /// # let _ = rest;
    /// ```
    pub fn new(config: AsyncConfig, quota: bool) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .max_idle_connections_per_host(64)
            .build();
        Rest { config, agent, quota }
    }

    fn task_config(&self, ctx: &dyn TaskExecutionContext) -> Result<RestConfig> {
        RestConfig::from_custom(&ctx.task_reader().read()?.custom)
    }

    /// Renders `template` for this attempt (and `{{ .JobId }}`).
    fn render(
        &self,
        ctx: &dyn TaskExecutionContext,
        at: &str,
        template: &str,
        job: Option<&RestJob>,
    ) -> Result<String> {
        let with_id = match job {
            Some(j) => JOB_ID.replace_all(template, encode(&j.id).as_str()).into_owned(),
            None => template.to_string(),
        };
        let params = Parameters {
            task_exec_metadata: ctx.task_execution_metadata(),
            inputs: Some(ctx.input_reader()),
            output_path: Some(ctx.output_writer()),
            task: Some(ctx.task_reader()),
        };
        let mut out = render(&[with_id], &params).map_err(|e| bad(at, e.message, "fix the template"))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Sends a prepared request; the answer's JSON (`null` for an empty
    /// body, a string for a body that is not JSON).
    fn send(&self, cfg: &RestConfig, at: &str, p: Prepared) -> std::result::Result<Value, (Option<u16>, PluginError)> {
        self.send_raw(cfg, p).map_err(|e| {
            let code = match &*e {
                ureq::Error::Status(c, _) => Some(*c),
                _ => None,
            };
            (code, http_error(&format!("{at} request"), *e))
        })
    }

    fn send_raw(&self, cfg: &RestConfig, p: Prepared) -> std::result::Result<Value, Box<ureq::Error>> {
        let timeout = cfg
            .raw
            .timeout_secs
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_TIMEOUT);
        let mut req = self.agent.request(&p.method, &p.url).timeout(timeout);
        for (k, v) in &p.headers {
            req = req.set(k, v);
        }
        let resp = match p.body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b)
                .map_err(Box::new)?,
            None => req.call().map_err(Box::new)?,
        };
        let text = resp.into_string().map_err(|e| Box::new(ureq::Error::from(e)))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(kozmo_interface::serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn prepare(
        &self,
        ctx: &dyn TaskExecutionContext,
        cfg: &RestConfig,
        at: &str,
        spec: &RequestSpec,
        default_method: &str,
        job: Option<&RestJob>,
    ) -> Result<Prepared> {
        let method = spec
            .method
            .clone()
            .unwrap_or_else(|| default_method.to_string())
            .to_uppercase();
        let url = self.render(ctx, &format!("{at}.url"), &spec.url, job)?;
        config::check_url(at, &url)?;
        let body = spec
            .body
            .as_deref()
            .map(|b| self.render(ctx, &format!("{at}.body"), b, job))
            .transpose()?;
        let mut headers = Vec::new();
        for (name, value) in &cfg.raw.headers {
            let mut missing = None;
            let with_secrets =
                SECRET.replace_all(value, |c: &regex::Captures<'_>| match ctx.secret_manager().get(&c[1]) {
                    Ok(v) => v,
                    Err(_) => {
                        missing = Some(c[1].to_string());
                        String::new()
                    }
                });
            if let Some(key) = missing {
                return Err(bad(
                    &format!("headers.{name}"),
                    format_args!("secret {key} is not known to the daemon"),
                    "give it to the daemon (KOZMO_SECRET_<KEY> or the secrets directory)",
                ));
            }
            let v = self.render(ctx, &format!("headers.{name}"), &with_secrets, job)?;
            headers.push((name.clone(), v));
        }
        Ok(Prepared {
            method,
            url,
            body,
            headers,
        })
    }

    fn verdict(cfg: &RestConfig, status: &str) -> Verdict {
        let s = &cfg.raw.status;
        if s.succeeded.iter().any(|v| v == status) {
            Verdict::Succeeded
        } else if s.failed.iter().any(|v| v == status) {
            Verdict::Failed
        } else if s.running.iter().any(|v| v == status) {
            Verdict::Running
        } else {
            Verdict::Unknown
        }
    }
}

impl Rest {
    /// Prepares and sends a request: a template or secret error is a USER
    /// error (not retryable, no status); an HTTP error carries its status.
    fn request(
        &self,
        ctx: &dyn TaskExecutionContext,
        cfg: &RestConfig,
        at: &str,
        spec: &RequestSpec,
        default_method: &str,
        job: Option<&RestJob>,
    ) -> std::result::Result<Value, (Option<u16>, PluginError)> {
        let prepared = self
            .prepare(ctx, cfg, at, spec, default_method, job)
            .map_err(|e| (None, e))?;
        self.send(cfg, at, prepared)
    }
}

impl AsyncPlugin for Rest {
    type Metadata = RestJob;
    type Resource = Value;

    fn id(&self) -> &str {
        ID
    }

    fn config(&self) -> &AsyncConfig {
        &self.config
    }

    fn resource_requirements(&self, _ctx: &dyn TaskExecutionContext) -> Result<Option<ResourceRequirements>> {
        Ok(self.quota.then(|| ResourceRequirements::new(QUOTA_NAMESPACE)))
    }

    fn create(&self, ctx: &dyn TaskExecutionContext) -> Result<Created<RestJob, Value>> {
        let cfg = self.task_config(ctx)?;
        let answer = match self.request(ctx, &cfg, "create", &cfg.raw.create.request, "POST", None) {
            Ok(v) => v,
            Err((Some(code), e)) if (400..500).contains(&code) && code != 429 => {
                return Err(PluginError::user("CreateRejected", e.message))
            }
            Err((_, e)) => return Err(e),
        };
        let id = cfg.job_id.query(&answer).first().map(as_text).ok_or_else(|| {
            PluginError::system(
                "NoJobId",
                format!(
                    "the create answer has no job id at {} (custom.create.job_id); fix the path",
                    cfg.raw.create.job_id
                ),
            )
        })?;
        let job = RestJob { id };
        log::info!(
            "rest: {}: created job {}",
            ctx.task_execution_metadata().task_execution_id().generated_name(),
            job.id
        );
        let terminal = cfg
            .status
            .query(&answer)
            .first()
            .map(|s| matches!(Self::verdict(&cfg, &as_text(s)), Verdict::Succeeded | Verdict::Failed))
            .unwrap_or(false);
        Ok(if terminal {
            Created::with_resource(job, answer)
        } else {
            Created::new(job)
        })
    }

    fn get(&self, ctx: &dyn TaskExecutionContext, job: &RestJob) -> Result<Value> {
        let cfg = self.task_config(ctx)?;
        self.request(ctx, &cfg, "status", &cfg.raw.status.request, "GET", Some(job))
            .map_err(|(_, e)| e)
    }

    fn delete(&self, ctx: &dyn TaskExecutionContext, job: &RestJob) -> Result<()> {
        let cfg = self.task_config(ctx)?;
        let Some(cancel) = &cfg.raw.cancel else {
            log::warn!("rest: no cancel request configured; job {} is left running", job.id);
            return Ok(());
        };
        match self.request(ctx, &cfg, "cancel", cancel, "DELETE", Some(job)) {
            Ok(_) => Ok(()),
            Err((Some(404 | 410), e)) => Err(PluginError::user(NOT_FOUND, e.message)),
            Err((_, e)) => Err(e),
        }
    }

    fn status(&self, ctx: &dyn TaskExecutionContext, job: &RestJob, answer: &Value) -> Result<PhaseInfo> {
        let cfg = self.task_config(ctx)?;
        let Some(status) = cfg.status.query(answer).first().map(as_text) else {
            return Err(PluginError::system(
                "NoStatus",
                format!(
                    "the status answer of job {} has nothing at {} (custom.status.path)",
                    job.id, cfg.raw.status.path
                ),
            ));
        };
        let info = TaskInfo {
            custom_info: json!({ "job_id": job.id, "status": status }),
            ..TaskInfo::default()
        };
        Ok(match Self::verdict(&cfg, &status) {
            Verdict::Succeeded => {
                let mut outputs = LiteralMap::new();
                for (name, path) in &cfg.outputs {
                    let Some(v) = path.query(answer).first() else {
                        return Ok(PhaseInfo::failure(
                            "OutputNotFound",
                            format!(
                                "output {name}: the final answer of job {} has nothing at {}",
                                job.id, cfg.raw.outputs[name]
                            ),
                            Some(info),
                        ));
                    };
                    let lit = Literal::from_json(v.clone()).unwrap_or_else(|_| Literal::String(v.to_string()));
                    outputs.insert(name.clone(), lit);
                }
                if !outputs.is_empty() {
                    ctx.output_writer().put_outputs(outputs)?;
                }
                PhaseInfo::success(Some(info))
            }
            Verdict::Failed => {
                let message = cfg
                    .message
                    .as_ref()
                    .and_then(|m| m.query(answer).first().map(as_text))
                    .unwrap_or_else(|| format!("the remote job {} ended with status {status}", job.id));
                PhaseInfo::failure("RemoteJobFailed", message, Some(info))
            }
            Verdict::Running => PhaseInfo::running(0, Some(info)),
            Verdict::Unknown => PhaseInfo::running(0, Some(info)).with_reason(&format!(
                "status {status:?} is not listed in custom.status (running, succeeded, failed); treated as running"
            )),
        })
    }
}

/// Loads the plugin: the adapter's settings and the `quota` setting.
pub fn load(setup: &dyn kozmo_interface::SetupContext) -> Result<AsyncAdapter<Rest>> {
    let mut config = AsyncConfig::default().with_settings(ID)?;
    let var = setting_var(ID, "quota");
    let quota = match std::env::var(&var) {
        Ok(v) => {
            let n: i64 = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                PluginError::user("BadAsyncConfig", format!("{var}: {v:?} is not a positive integer"))
            })?;
            config.quotas.push(Quota::new(QUOTA_NAMESPACE, n));
            true
        }
        Err(_) => false,
    };
    AsyncAdapter::load(Rest::new(config, quota), setup)
}

/// The entry: id `rest`, task type `rest`.
pub fn entry() -> PluginEntry {
    PluginEntry {
        id: ID.into(),
        registered_task_types: vec![ID.into()],
        load_plugin: PluginLoader::new(|setup| Ok(Box::new(load(setup)?))),
        is_default: false,
    }
}

kozmo_interface::export_plugins![entry()];
