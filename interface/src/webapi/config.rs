//! Per-plugin configuration of an asynchronous plugin: rate limits, poll
//! interval, failure budget, delete backoff and quotas.

use std::time::Duration;

use crate::{PluginError, ResourceNamespace, Result};

/// A rate limit: `qps` calls a second on average, `burst` at once.
/// A `qps` of 0 disables the limit.
///
/// ```
/// use kozmo_interface::webapi::RateLimit;
/// let l = RateLimit { qps: 30.0, burst: 300 };
/// assert_eq!(l, RateLimit::new(30.0, 300));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Calls a second, on average.
    pub qps: f64,
    /// Calls allowed at once (at least 1 is used).
    pub burst: u32,
}

impl RateLimit {
    /// `qps` a second, `burst` at once.
    ///
    /// ```
    /// assert_eq!(kozmo_interface::webapi::RateLimit::new(2.0, 4).burst, 4);
    /// ```
    pub fn new(qps: f64, burst: u32) -> Self {
        RateLimit { qps, burst }
    }
}

/// A quota the adapter registers at load: `limit` tokens in `namespace`
/// (the host prefixes it with the manager and plugin ids).
///
/// ```
/// use kozmo_interface::webapi::Quota;
/// let q = Quota::new("jobs", 10);
/// assert_eq!(q.namespace.as_str(), "jobs");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The namespace.
    pub namespace: ResourceNamespace,
    /// How many tokens may be held at once.
    pub limit: i64,
}

impl Quota {
    /// `limit` tokens in `namespace`.
    ///
    /// ```
    /// assert_eq!(kozmo_interface::webapi::Quota::new("n", 3).limit, 3);
    /// ```
    pub fn new(namespace: &str, limit: i64) -> Self {
        Quota {
            namespace: ResourceNamespace::new(namespace),
            limit,
        }
    }
}

/// How the adapter drives an [`super::AsyncPlugin`].
///
/// ```
/// use std::time::Duration;
/// use kozmo_interface::webapi::{AsyncConfig, RateLimit, Quota};
///
/// let config = AsyncConfig {
///     read: RateLimit::new(50.0, 100),
///     write: RateLimit::new(5.0, 5),
///     poll_interval: Duration::from_secs(2),
///     quotas: vec![Quota::new("jobs", 100)],
///     ..AsyncConfig::default()
/// };
/// assert_eq!(config.max_sync_failures, 5);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncConfig {
    /// Limit on `get` calls (polls), over all executions of the plugin.
    /// Default 30 a second, burst 300.
    pub read: RateLimit,
    /// Limit on `create` and `delete` calls (and `SyncPlugin::do`), over
    /// all executions of the plugin. Default 10 a second, burst 20.
    pub write: RateLimit,
    /// Time between two polls of one remote resource. Default 5 s.
    pub poll_interval: Duration,
    /// Consecutive failed `get` calls tolerated; the next one fails the
    /// attempt as a retryable SYSTEM failure (`SyncFailures`). Default 5.
    pub max_sync_failures: u32,
    /// First wait before a failed `delete` is tried again; doubled per
    /// failure up to [`AsyncConfig::delete_backoff_max`]. Default 1 s.
    pub delete_backoff: Duration,
    /// Longest wait between two `delete` tries. Default 60 s.
    pub delete_backoff_max: Duration,
    /// Quotas registered at load (see [`super::ResourceRequirements`]).
    pub quotas: Vec<Quota>,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        AsyncConfig {
            read: RateLimit::new(30.0, 300),
            write: RateLimit::new(10.0, 20),
            poll_interval: Duration::from_secs(5),
            max_sync_failures: 5,
            delete_backoff: Duration::from_secs(1),
            delete_backoff_max: Duration::from_secs(60),
            quotas: Vec::new(),
        }
    }
}

/// The variable a plugin setting reaches a plugin as:
/// `KOZMO_PLUGIN_<ID>_<KEY>`, upper case, other characters as `_`.
///
/// ```
/// assert_eq!(kozmo_interface::webapi::setting_var("my-api", "read_qps"), "KOZMO_PLUGIN_MY_API_READ_QPS");
/// ```
pub fn setting_var(plugin_id: &str, key: &str) -> String {
    let up = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("KOZMO_PLUGIN_{}_{}", up(plugin_id), up(key))
}

impl AsyncConfig {
    /// Checks the values; the error says which key is wrong and why.
    ///
    /// ```
    /// use kozmo_interface::webapi::{AsyncConfig, RateLimit};
    /// let bad = AsyncConfig { read: RateLimit::new(f64::NAN, 1), ..AsyncConfig::default() };
    /// assert!(bad.validate().unwrap_err().message.contains("read_qps"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(PluginError::user("BadAsyncConfig", format!("{key}: {why}")));
        for (key, l) in [("read_qps", self.read), ("write_qps", self.write)] {
            if !l.qps.is_finite() || l.qps < 0.0 {
                return bad(key, format!("must be a number >= 0 (0: no limit), got {}", l.qps));
            }
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval_secs", "must be > 0".into());
        }
        if self.delete_backoff.is_zero() || self.delete_backoff > self.delete_backoff_max {
            return bad(
                "delete_backoff_secs",
                "must be > 0 and at most delete_backoff_max_secs".into(),
            );
        }
        for q in &self.quotas {
            if q.limit <= 0 {
                return bad(
                    "quotas",
                    format!("quota of {} must be > 0, got {}", q.namespace, q.limit),
                );
            }
        }
        Ok(())
    }

    /// This configuration with the plugin settings of `plugin_id` applied
    /// (`[plugins.settings.<id>]` in kozmo.toml, or the variables
    /// [`setting_var`] names): `read_qps`, `read_burst`, `write_qps`,
    /// `write_burst`, `poll_interval_secs`, `max_sync_failures`,
    /// `delete_backoff_secs`, `delete_backoff_max_secs`. A value that does
    /// not parse is an error naming the variable.
    ///
    /// ```
    /// use kozmo_interface::webapi::AsyncConfig;
    /// std::env::set_var("KOZMO_PLUGIN_DOC_EXAMPLE_READ_QPS", "7.5");
    /// let c = AsyncConfig::default().with_settings("doc-example").unwrap();
    /// assert_eq!(c.read.qps, 7.5);
    /// std::env::set_var("KOZMO_PLUGIN_DOC_EXAMPLE_READ_BURST", "lots");
    /// let e = AsyncConfig::default().with_settings("doc-example").unwrap_err();
    /// assert!(e.message.contains("KOZMO_PLUGIN_DOC_EXAMPLE_READ_BURST"));
    /// ```
    pub fn with_settings(mut self, plugin_id: &str) -> Result<Self> {
        fn get<T: std::str::FromStr>(plugin_id: &str, key: &str) -> Result<Option<T>> {
            let var = setting_var(plugin_id, key);
            match std::env::var(&var) {
                Ok(v) => v.trim().parse::<T>().map(Some).map_err(|_| {
                    PluginError::user(
                        "BadAsyncConfig",
                        format!("{var} (plugin setting {key}): cannot read {v:?} as a number"),
                    )
                }),
                Err(_) => Ok(None),
            }
        }
        let secs = |v: f64, key: &str| -> Result<Duration> {
            Duration::try_from_secs_f64(v).map_err(|_| {
                PluginError::user(
                    "BadAsyncConfig",
                    format!("{} must be a number of seconds >= 0", setting_var(plugin_id, key)),
                )
            })
        };
        if let Some(v) = get(plugin_id, "read_qps")? {
            self.read.qps = v;
        }
        if let Some(v) = get(plugin_id, "read_burst")? {
            self.read.burst = v;
        }
        if let Some(v) = get(plugin_id, "write_qps")? {
            self.write.qps = v;
        }
        if let Some(v) = get(plugin_id, "write_burst")? {
            self.write.burst = v;
        }
        if let Some(v) = get::<f64>(plugin_id, "poll_interval_secs")? {
            self.poll_interval = secs(v, "poll_interval_secs")?;
        }
        if let Some(v) = get(plugin_id, "max_sync_failures")? {
            self.max_sync_failures = v;
        }
        if let Some(v) = get::<f64>(plugin_id, "delete_backoff_secs")? {
            self.delete_backoff = secs(v, "delete_backoff_secs")?;
        }
        if let Some(v) = get::<f64>(plugin_id, "delete_backoff_max_secs")? {
            self.delete_backoff_max = secs(v, "delete_backoff_max_secs")?;
        }
        self.validate()?;
        Ok(self)
    }
}
