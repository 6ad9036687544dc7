//! The task's `custom` configuration: the remote job API, checked once with
//! errors that say what is wrong, where, and what to write instead.

use std::collections::BTreeMap;

use kozmo_interface::serde_json::{self, Value};
use kozmo_interface::PluginError;
use serde::Deserialize;
use serde_json_path::JsonPath;

/// One request: method and URL template (plus a body template for create).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// HTTP method (default `POST` for create, `GET` for status, `DELETE`
    /// for cancel).
    #[serde(default)]
    pub method: Option<String>,
    /// URL template.
    pub url: String,
    /// Body template (create only); sent as `application/json`.
    #[serde(default)]
    pub body: Option<String>,
}

/// `create` in the task's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSpec {
    /// The request.
    #[serde(flatten)]
    pub request: RequestSpec,
    /// JSON path of the job id in the answer.
    pub job_id: String,
}

/// `status` in the task's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    /// The request.
    #[serde(flatten)]
    pub request: RequestSpec,
    /// JSON path of the status value in the answer (also looked up in the
    /// create answer: a job finished at once ends in that round).
    pub path: String,
    /// Status values meaning the job is running (or queued).
    #[serde(default)]
    pub running: Vec<String>,
    /// Values meaning it succeeded.
    pub succeeded: Vec<String>,
    /// Values meaning it failed.
    pub failed: Vec<String>,
    /// JSON path of an error message shown when the job failed.
    #[serde(default)]
    pub message: Option<String>,
}

/// The whole `custom` object of a `rest` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How to create the job.
    pub create: CreateSpec,
    /// How to read its status.
    pub status: StatusSpec,
    /// How to cancel it (none: abort only forgets it).
    #[serde(default)]
    pub cancel: Option<RequestSpec>,
    /// Outputs: name → JSON path in the final status answer.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Headers of every request (templates; `{{ .Secrets.NAME }}` is the
    /// secret NAME).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeout of one request, seconds (default 30).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

/// A checked configuration: paths parsed.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// As written.
    pub raw: RawConfig,
    /// `create.job_id`.
    pub job_id: JsonPath,
    /// `status.path`.
    pub status: JsonPath,
    /// `status.message`.
    pub message: Option<JsonPath>,
    /// `outputs`, parsed.
    pub outputs: Vec<(String, JsonPath)>,
}

/// A USER, non-retryable `BadRestConfig` error: what, where, what to do.
pub fn bad(at: &str, what: impl std::fmt::Display, fix: &str) -> PluginError {
    PluginError::user("BadRestConfig", format!("rest task config, custom.{at}: {what}; {fix}"))
}

fn path(at: &str, p: &str) -> Result<JsonPath, PluginError> {
    JsonPath::parse(p).map_err(|e| {
        bad(
            at,
            format_args!("{p:?} is not a JSON path ({e})"),
            "write an RFC 9535 path such as \"$.id\" or \"$.job.state\"",
        )
    })
}

/// Checks a rendered URL (the template may start with a placeholder).
pub fn check_url(at: &str, url: &str) -> Result<(), PluginError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    Err(bad(
        &format!("{at}.url"),
        format_args!("renders to {url:?}, which is not an http(s) URL"),
        "make it render to a full URL, e.g. \"http://jobs.example:8080/jobs/{{ .JobId }}\"",
    ))
}

fn check_request(at: &str, r: &RequestSpec) -> Result<(), PluginError> {
    if !(r.url.starts_with("http://") || r.url.starts_with("https://") || r.url.starts_with("{{")) {
        return Err(bad(
            &format!("{at}.url"),
            format_args!("{:?} is not an http(s) URL", r.url),
            "write the full URL, e.g. \"http://jobs.example:8080/jobs/{{ .JobId }}\"",
        ));
    }
    if let Some(m) = &r.method {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(bad(
                &format!("{at}.method"),
                format_args!("{m:?} is not an HTTP method"),
                "write GET, POST, PUT, PATCH or DELETE",
            ));
        }
    }
    Ok(())
}

impl RestConfig {
    /// Reads and checks the task's `custom` value.
    ///
    /// ```
    /// use kozmo_interface::serde_json::json;
    /// use kozmo_plugin_rest::config::RestConfig;
    ///
    /// let e = RestConfig::from_custom(&json!({})).unwrap_err();
    /// assert!(e.message.contains("custom.create"), "{e}");
    /// let ok = RestConfig::from_custom(&json!({
    ///     "create": {"url": "http://127.0.0.1:1/jobs", "job_id": "$.id"},
    ///     "status": {"url": "http://127.0.0.1:1/jobs/{{ .JobId }}", "path": "$.state",
    ///                "succeeded": ["DONE"], "failed": ["ERROR"]}
    /// })).unwrap();
    /// assert_eq!(ok.raw.create.request.url, "http://127.0.0.1:1/jobs");
    /// ```
    pub fn from_custom(custom: &Value) -> Result<RestConfig, PluginError> {
        if custom.is_null() || custom.as_object().is_some_and(|o| o.is_empty()) {
            return Err(bad(
                "create",
                "missing: the task has no custom config",
                "describe the job API in the task's \"custom\": create, status (and cancel, outputs, headers); see docs/async-plugins.md",
            ));
        }
        let raw: RawConfig = serde_json::from_value(custom.clone()).map_err(|e| {
            let msg = e.to_string();
            let at = if msg.contains("create") {
                "create"
            } else if msg.contains("status") || msg.contains("succeeded") || msg.contains("failed") {
                "status"
            } else {
                "(top level)"
            };
            bad(
                at,
                msg,
                "keys are create{method,url,body,job_id}, status{method,url,path,running,succeeded,failed,message}, cancel{method,url}, outputs{name: path}, headers{name: value}, timeout_secs",
            )
        })?;
        check_request("create", &raw.create.request)?;
        check_request("status", &raw.status.request)?;
        if let Some(c) = &raw.cancel {
            check_request("cancel", c)?;
        }
        if raw.status.succeeded.is_empty() {
            return Err(bad(
                "status.succeeded",
                "empty",
                "list the status values that mean the job succeeded, e.g. [\"SUCCEEDED\"]",
            ));
        }
        if let Some(t) = raw.timeout_secs {
            if !(t.is_finite() && t > 0.0) {
                return Err(bad("timeout_secs", format_args!("{t}"), "give a number of seconds > 0"));
            }
        }
        Ok(RestConfig {
            job_id: path("create.job_id", &raw.create.job_id)?,
            status: path("status.path", &raw.status.path)?,
            message: raw
                .status
                .message
                .as_deref()
                .map(|m| path("status.message", m))
                .transpose()?,
            outputs: raw
                .outputs
                .iter()
                .map(|(k, p)| Ok((k.clone(), path(&format!("outputs.{k}"), p)?)))
                .collect::<Result<_, PluginError>>()?,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kozmo_interface::serde_json::json;

    fn base() -> Value {
        json!({
            "create": {"url": "http://127.0.0.1:1/jobs", "job_id": "$.id"},
            "status": {"url": "http://127.0.0.1:1/jobs/{{ .JobId }}", "path": "$.status",
                       "succeeded": ["DONE"], "failed": ["ERROR"]}
        })
    }

    fn error(mutate: impl FnOnce(&mut Value)) -> String {
        let mut v = base();
        mutate(&mut v);
        let e = RestConfig::from_custom(&v).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.kind, e.retryable),
            ("BadRestConfig", kozmo_interface::ErrorKind::User, false)
        );
        e.message
    }

    #[test]
    fn bad_configs_say_what_where_and_what_to_do() {
        let m = error(|v| v["create"]["job_id"] = json!("$..["));
        assert!(m.contains("custom.create.job_id") && m.contains("RFC 9535"), "{m}");
        let m = error(|v| v["status"]["succeeded"] = json!([]));
        assert!(
            m.contains("custom.status.succeeded") && m.contains("list the status values"),
            "{m}"
        );
        let m = error(|v| v["create"]["method"] = json!("PO ST"));
        assert!(m.contains("custom.create.method") && m.contains("GET, POST"), "{m}");
        let m = error(|v| v["status"]["url"] = json!("ftp://x"));
        assert!(m.contains("custom.status.url"), "{m}");
        let m = error(|v| v["cancle"] = json!({}));
        assert!(m.contains("unknown field `cancle`") && m.contains("keys are"), "{m}");
        let m = error(|v| v["outputs"] = json!({"x": "nope"}));
        assert!(m.contains("custom.outputs.x"), "{m}");
        let m = error(|v| v["timeout_secs"] = json!(-1));
        assert!(m.contains("custom.timeout_secs"), "{m}");
        let m = error(|v| *v = json!(null));
        assert!(m.contains("no custom config"), "{m}");
    }

    #[test]
    fn a_rendered_url_must_be_http() {
        assert!(check_url("create", "http://a/b").is_ok());
        let e = check_url("create", "/jobs").unwrap_err();
        assert!(
            e.message.contains("custom.create.url") && e.message.contains("\"/jobs\""),
            "{e}"
        );
    }
}
