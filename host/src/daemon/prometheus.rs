//! The engine's statistics in Prometheus/OpenMetrics text.

use std::fmt::Write;

use kozmo_engine::EngineStats;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name}_total {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Text lines for every engine statistic (without the final `# EOF`).
pub fn engine_metrics_text(s: &EngineStats) -> String {
    let mut out = String::new();
    counter(&mut out, "kozmo_rounds", "Plugin handle rounds run.", s.rounds_total);
    counter(
        &mut out,
        "kozmo_plugin_errors",
        "Handler errors: plugin errors, panics and invalid transitions.",
        s.handler_errors_total,
    );
    counter(
        &mut out,
        "kozmo_plugin_panics",
        "Plugin calls that panicked.",
        s.panics_total,
    );
    counter(
        &mut out,
        "kozmo_commits",
        "Step results committed to the store.",
        s.commits_total,
    );
    counter(
        &mut out,
        "kozmo_commit_batches",
        "Store transactions (group commits).",
        s.commit_batches_total,
    );
    counter(
        &mut out,
        "kozmo_leaked_tokens_released",
        "Resource tokens the host released after Finalize.",
        s.leaked_tokens_released_total,
    );
    gauge(
        &mut out,
        "kozmo_queue_depth",
        "Executions queued for a step.",
        s.queue_depth as u64,
    );
    gauge(
        &mut out,
        "kozmo_steps_in_flight",
        "Steps running now.",
        s.in_flight as u64,
    );
    gauge(
        &mut out,
        "kozmo_active_executions",
        "Executions not yet terminal.",
        s.active as u64,
    );
    family(&mut out, "kozmo_executions", "gauge", "Executions by phase.");
    for (phase, n) in &s.executions_by_phase {
        let _ = writeln!(out, "kozmo_executions{{phase=\"{phase}\"}} {n}");
    }
    family(
        &mut out,
        "kozmo_store_errors",
        "counter",
        "Failed store writes by kind: full (disk or size limit), read_only, other.",
    );
    for (kind, n) in &s.store_errors_total {
        let _ = writeln!(out, "kozmo_store_errors_total{{kind=\"{kind}\"}} {n}");
    }
    gauge(
        &mut out,
        "kozmo_store_degraded",
        "1 while store writes fail (see /healthz for the reason), else 0.",
        u64::from(s.store_degraded.is_some()),
    );
    family(
        &mut out,
        "kozmo_round_latency_seconds",
        "histogram",
        "Latency of one engine step.",
    );
    let mut cumulative = 0;
    for (bound, n) in &s.step_latency_buckets {
        cumulative += n;
        let le = if bound.is_infinite() {
            "+Inf".to_string()
        } else {
            bound.to_string()
        };
        let _ = writeln!(out, "kozmo_round_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "kozmo_round_latency_seconds_sum {}", s.step_latency_sum_seconds);
    let _ = writeln!(out, "kozmo_round_latency_seconds_count {cumulative}");
    out
}
