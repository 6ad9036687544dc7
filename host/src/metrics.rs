//! Prometheus metrics: one shared [`prometheus_client`] registry, scopes
//! that prefix names (`<scope>_<name>`), and the [`MetricsScope`] plugins
//! register their metrics through. `/metrics` encodes the registry with
//! [`Metrics::encode`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use kozmo_interface::metrics::MetricSink;
use kozmo_interface::{Counter, Gauge, Histogram, MetricsScope, PluginError, Result};
use prometheus_client::metrics::counter::Counter as PCounter;
use prometheus_client::metrics::gauge::Gauge as PGauge;
use prometheus_client::metrics::histogram::Histogram as PHistogram;
use prometheus_client::registry::Registry;

/// Prometheus' default histogram buckets (seconds).
pub const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
struct Shared {
    registry: Registry,
    names: BTreeSet<String>,
}

/// A metrics scope over the daemon's shared registry. Cloning is cheap;
/// clones and sub-scopes register into the same registry.
#[derive(Clone)]
pub struct Metrics {
    shared: Arc<Mutex<Shared>>,
    prefix: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("prefix", &self.prefix).finish()
    }
}

/// Turns anything into a valid Prometheus name part (`[a-zA-Z0-9_:]`, not
/// starting with a digit): other characters become `_`.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

impl Metrics {
    /// A new registry whose root scope is `prefix` (e.g. `kozmo`; empty =
    /// no prefix).
    pub fn new(prefix: &str) -> Metrics {
        Metrics {
            shared: Arc::new(Mutex::new(Shared::default())),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                sanitize(prefix)
            },
        }
    }

    /// The scope `<prefix>_<name>` (name sanitised), sharing the registry.
    pub fn sub(&self, name: &str) -> Metrics {
        Metrics {
            shared: self.shared.clone(),
            prefix: self.full(&sanitize(name)),
        }
    }

    /// The scope's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Adds a collector whose metrics are encoded at each scrape, in the
    /// same exposition (the engine's statistics).
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.lock().registry.register_collector(collector);
    }

    /// The whole registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.lock().registry);
        out
    }

    /// Every metric name registered so far (without the `_total` suffix
    /// Prometheus adds to counters).
    pub fn names(&self) -> Vec<String> {
        self.lock().names.iter().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        kozmo_engine::sync::lock(&self.shared)
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}_{name}", self.prefix)
        }
    }

    fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) -> Result<()> {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if !valid {
            return Err(PluginError::system(
                "InvalidMetricName",
                format!("metric name {name:?} is not a valid Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
            ));
        }
        let full = self.full(name);
        let mut shared = self.lock();
        if !shared.names.insert(full.clone()) {
            return Err(PluginError::system(
                "DuplicateMetric",
                format!("metric {full} is already registered"),
            ));
        }
        shared.registry.register(full, help, metric);
        Ok(())
    }
}

struct CounterSink(PCounter<f64, std::sync::atomic::AtomicU64>);

impl MetricSink for CounterSink {
    fn add(&self, value: f64) {
        if value >= 0.0 {
            self.0.inc_by(value);
        }
    }
    fn set(&self, _value: f64) {}
    fn observe(&self, value: f64) {
        self.add(value);
    }
}

struct GaugeSink(PGauge<f64, std::sync::atomic::AtomicU64>);

impl MetricSink for GaugeSink {
    fn add(&self, value: f64) {
        self.0.inc_by(value);
    }
    fn set(&self, value: f64) {
        self.0.set(value);
    }
    fn observe(&self, value: f64) {
        self.0.set(value);
    }
}

struct HistogramSink(PHistogram);

impl MetricSink for HistogramSink {
    fn add(&self, value: f64) {
        self.0.observe(value);
    }
    fn set(&self, value: f64) {
        self.0.observe(value);
    }
    fn observe(&self, value: f64) {
        self.0.observe(value);
    }
}

impl MetricsScope for Metrics {
    fn counter(&self, name: &str, help: &str) -> Result<Counter> {
        let c = PCounter::<f64, std::sync::atomic::AtomicU64>::default();
        self.register(name, help, c.clone())?;
        Ok(Counter::from_sink(Arc::new(CounterSink(c))))
    }

    fn gauge(&self, name: &str, help: &str) -> Result<Gauge> {
        let g = PGauge::<f64, std::sync::atomic::AtomicU64>::default();
        self.register(name, help, g.clone())?;
        Ok(Gauge::from_sink(Arc::new(GaugeSink(g))))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram> {
        let buckets = if buckets.is_empty() {
            &DEFAULT_BUCKETS[..]
        } else {
            buckets
        };
        let h = PHistogram::new(buckets.iter().copied());
        self.register(name, help, h.clone())?;
        Ok(Histogram::from_sink(Arc::new(HistogramSink(h))))
    }

    fn sub_scope(&self, name: &str) -> Box<dyn MetricsScope + '_> {
        Box::new(self.sub(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_share_one_registry_and_encode() {
        let root = Metrics::new("kozmo");
        let plugin = root.sub("sleep-quota");
        let c = plugin.counter("runs", "Runs.").unwrap();
        c.inc_by(3);
        plugin.sub_scope("inner").gauge("depth", "Depth.").unwrap().set(2.5);
        plugin.histogram("secs", "Seconds.", &[]).unwrap().observe(0.2);
        let text = root.encode();
        assert!(text.contains("kozmo_sleep_quota_runs_total 3"), "{text}");
        assert!(text.contains("kozmo_sleep_quota_inner_depth 2.5"), "{text}");
        assert!(text.contains("kozmo_sleep_quota_secs_count 1"), "{text}");
        assert_eq!(
            root.names(),
            [
                "kozmo_sleep_quota_inner_depth",
                "kozmo_sleep_quota_runs",
                "kozmo_sleep_quota_secs"
            ]
        );
    }

    #[test]
    fn duplicate_and_invalid_names_are_errors() {
        let root = Metrics::new("kozmo");
        root.counter("x", "X.").unwrap();
        assert_eq!(root.counter("x", "X.").unwrap_err().code, "DuplicateMetric");
        assert_eq!(root.gauge("bad name", "B.").unwrap_err().code, "InvalidMetricName");
    }
}
