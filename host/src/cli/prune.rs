//! `kozmo prune`: ask the running daemon for a retention pass now.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::executions::{Format, ServerArgs};

/// `kozmo prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Where the daemon is.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Remove terminal executions that finished longer ago than this (`7d`,
    /// `12h`, `30m`, `90s`), instead of the daemon's `retention.keep*`
    /// settings; `retention.max_executions` still applies. Active
    /// executions are never removed.
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

/// Runs `kozmo prune` against the daemon.
pub fn run(args: PruneArgs) -> anyhow::Result<ExitCode> {
    let server = args.server.clone();
    if let Some(d) = &args.older_than {
        if let Err(e) = kozmo_engine::retention::duration::parse(d) {
            eprintln!("error: --older-than: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    let body = serde_json::json!({ "older_than": args.older_than, "dry_run": args.dry_run });
    let (_, v) = server.client().post("/v1/prune", &body)?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Format::Text => print!("{}", text(&v)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The report as a few lines of text.
fn text(v: &Value) -> String {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let dry = v.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
    let mut out = format!(
        "{} {} terminal executions ({} data store directories, {} bytes of files{})\n",
        if dry { "would remove" } else { "removed" },
        n("executions"),
        n("blob_dirs"),
        n("blob_bytes"),
        if dry {
            String::new()
        } else {
            format!("; {} database bytes given back", n("db_bytes_reclaimed"))
        }
    );
    if let Some(rows) = v.get("rows").and_then(Value::as_object).filter(|_| !dry) {
        let parts: Vec<String> = rows
            .iter()
            .map(|(k, c)| format!("{k} {}", c.as_u64().unwrap_or(0)))
            .collect();
        out.push_str(&format!("rows: {}\n", parts.join(", ")));
    }
    let at = |k: &str| v.get(k).and_then(Value::as_i64).map(kozmo_engine::model::rfc3339_ms);
    if let (Some(a), Some(b)) = (at("oldest_removed_ms"), at("newest_removed_ms")) {
        out.push_str(&format!("finished between {a} and {b}\n"));
    }
    match at("oldest_kept_ms") {
        Some(k) => out.push_str(&format!("oldest kept finished at {k}\n")),
        None => out.push_str("no terminal execution kept\n"),
    }
    out
}
