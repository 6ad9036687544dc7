//! Metrics plugins register at load time; they appear on the daemon's
//! `/metrics`.

use std::sync::Arc;

use crate::Result;

/// What a metric does with values; the host implements it.
pub trait MetricSink: Send + Sync {
    /// Adds to a counter or gauge.
    fn add(&self, value: f64);
    /// Sets a gauge.
    fn set(&self, value: f64);
    /// Records one observation of a histogram.
    fn observe(&self, value: f64);
}

macro_rules! metric_handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Arc<dyn MetricSink>);

        impl $name {
            /// Wraps a sink (for hosts).
            pub fn from_sink(sink: Arc<dyn MetricSink>) -> Self {
                $name(sink)
            }

            /// The sink behind the handle (for hosts).
            pub fn into_sink(self) -> Arc<dyn MetricSink> {
                self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}

metric_handle!(
    /// A monotonically increasing count.
    Counter
);
metric_handle!(
    /// A value that goes up and down.
    Gauge
);
metric_handle!(
    /// A distribution of observations in buckets.
    Histogram
);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.add(1.0);
    }
    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.add(n as f64);
    }
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.set(v);
    }
    /// Adds `v` (may be negative).
    pub fn add(&self, v: f64) {
        self.0.add(v);
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, v: f64) {
        self.0.observe(v);
    }
}

/// A scope of metric names; the host gives each plugin its own.
pub trait MetricsScope {
    /// Registers a counter named `<scope>_<name>`.
    fn counter(&self, name: &str, help: &str) -> Result<Counter>;
    /// Registers a gauge.
    fn gauge(&self, name: &str, help: &str) -> Result<Gauge>;
    /// Registers a histogram with the given bucket bounds (empty = defaults).
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram>;
    /// A nested scope `<scope>_<name>`.
    fn sub_scope(&self, name: &str) -> Box<dyn MetricsScope + '_>;
}

/// A nested scope over a parent scope: names become `<prefix>_<name>`.
/// `sub_scope` implementations can simply return one.
pub struct PrefixedScope<'a> {
    parent: &'a dyn MetricsScope,
    prefix: String,
}

impl<'a> PrefixedScope<'a> {
    /// A scope that registers `<prefix>_<name>` in `parent`.
    pub fn new(parent: &'a dyn MetricsScope, prefix: &str) -> Self {
        PrefixedScope {
            parent,
            prefix: prefix.to_string(),
        }
    }

    fn full(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }
}

impl MetricsScope for PrefixedScope<'_> {
    fn counter(&self, name: &str, help: &str) -> Result<Counter> {
        self.parent.counter(&self.full(name), help)
    }
    fn gauge(&self, name: &str, help: &str) -> Result<Gauge> {
        self.parent.gauge(&self.full(name), help)
    }
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram> {
        self.parent.histogram(&self.full(name), help, buckets)
    }
    fn sub_scope(&self, name: &str) -> Box<dyn MetricsScope + '_> {
        Box::new(PrefixedScope::new(self.parent, &self.full(name)))
    }
}
