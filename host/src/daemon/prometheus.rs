//! The engine's statistics as a prometheus-client [`Collector`]: at each
//! scrape it takes one [`EngineStats`] snapshot and encodes it with
//! prometheus-client's own encoder, into the same registry (and so the same
//! exposition) as the plugins' and retention's metrics.

use std::fmt::Error;

use kozmo_engine::{EngineHandle, EngineStats, HistogramSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Encodes the engine's statistics at each scrape.
pub struct EngineCollector {
    engine: EngineHandle,
}

impl EngineCollector {
    /// A collector reading `engine`'s statistics.
    pub fn new(engine: EngineHandle) -> Self {
        EngineCollector { engine }
    }
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCollector").finish_non_exhaustive()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), Error> {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), Error> {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A gauge family with one label.
fn gauges<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<(), Error> {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in values {
        ConstGauge::new(v).encode(family.encode_family(&[(label, l)])?)?;
    }
    Ok(())
}

fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &HistogramSnapshot) -> Result<(), Error> {
    // prometheus-client takes per-bucket counts (it accumulates them) and
    // knows the last bucket by `f64::MAX`.
    let buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(b, n)| (if b.is_infinite() { f64::MAX } else { b }, n))
        .collect();
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<Vec<(String, String)>>(h.sum_seconds, h.count(), &buckets, None)
}

fn encode(s: &EngineStats, mut e: DescriptorEncoder) -> Result<(), Error> {
    let e = &mut e;
    counter(e, "kozmo_rounds", "Plugin handle rounds run.", s.rounds_total)?;
    counter(
        e,
        "kozmo_plugin_errors",
        "Handler errors: plugin errors, panics and invalid transitions.",
        s.handler_errors_total,
    )?;
    counter(e, "kozmo_plugin_panics", "Plugin calls that panicked.", s.panics_total)?;
    counter(
        e,
        "kozmo_commits",
        "Step results committed to the store.",
        s.commits_total,
    )?;
    counter(
        e,
        "kozmo_commit_batches",
        "Store transactions (group commits).",
        s.commit_batches_total,
    )?;
    counter(
        e,
        "kozmo_leaked_tokens_released",
        "Resource tokens the host released after Finalize.",
        s.leaked_tokens_released_total,
    )?;
    gauge(
        e,
        "kozmo_queue_depth",
        "Executions queued for a step.",
        s.queue_depth as i64,
    )?;
    gauge(e, "kozmo_steps_in_flight", "Steps running now.", s.in_flight as i64)?;
    gauge(
        e,
        "kozmo_active_executions",
        "Executions not yet terminal.",
        s.active as i64,
    )?;
    gauges(
        e,
        "kozmo_executions",
        "Executions by phase.",
        "phase",
        s.executions_by_phase.iter().map(|(p, n)| (p.as_str(), *n as i64)),
    )?;
    gauge(
        e,
        "kozmo_executions_waiting_for_resources",
        "Executions told a resource namespace is full and not granted a token since.",
        s.resources.iter().map(|r| r.waiting as i64).sum(),
    )?;
    gauges(
        e,
        "kozmo_resource_quota",
        "Tokens a resource namespace can grant at once.",
        "namespace",
        s.resources.iter().map(|r| (r.namespace.as_str(), r.quota)),
    )?;
    gauges(
        e,
        "kozmo_resource_tokens_in_use",
        "Tokens granted now, per resource namespace.",
        "namespace",
        s.resources.iter().map(|r| (r.namespace.as_str(), r.in_use as i64)),
    )?;
    gauges(
        e,
        "kozmo_resource_waiting_executions",
        "Executions waiting for a token, per resource namespace.",
        "namespace",
        s.resources.iter().map(|r| (r.namespace.as_str(), r.waiting as i64)),
    )?;
    let mut errors = e.encode_descriptor(
        "kozmo_store_errors",
        "Failed store writes by kind: full (disk or size limit), read_only, other.",
        None,
        MetricType::Counter,
    )?;
    for (kind, n) in &s.store_errors_total {
        ConstCounter::new(*n).encode(errors.encode_family(&[("kind", kind.as_str())])?)?;
    }
    gauge(
        e,
        "kozmo_store_degraded",
        "1 while store writes fail (see /healthz for the reason), else 0.",
        i64::from(s.store_degraded.is_some()),
    )?;
    histogram(
        e,
        "kozmo_store_commit_latency_seconds",
        "Latency of one store transaction's commit (its sync), by the committer.",
        &s.commit_latency,
    )?;
    histogram(
        e,
        "kozmo_round_latency_seconds",
        "Latency of one engine step.",
        &s.step_latency,
    )
}

impl Collector for EngineCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), Error> {
        encode(&self.engine.stats(), encoder)
    }
}
