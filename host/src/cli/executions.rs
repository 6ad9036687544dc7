//! Clients of the daemon's API: `kozmo submit|get|list|events|outputs|abort`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::client::{encode_segment, execution_path, Client, ClientError};
use kozmo_engine::model::ExecPhase;

/// Where the daemon is: the options of the client commands (and only of
/// them: `serve`, `bench` and `plugins` do not take them).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The daemon's base URL.
    #[arg(long, env = "KOZMO_SERVER", default_value = "http://127.0.0.1:7460")]
    pub server: String,
    /// API token (sent as `Authorization: Bearer`).
    #[arg(long, env = "KOZMO_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.server, self.token.clone())
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// The API's JSON.
    Json,
}

/// `kozmo submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Where the daemon is.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Task file (JSON: task template fields plus `inputs`), or `-` for stdin.
    #[arg(required_unless_present = "many")]
    pub file: Option<PathBuf>,
    /// Submit many tasks: a JSON Lines file (one task body per line, each
    /// may hold its own `execution_id`), or `-` for stdin, sent in batches
    /// of --batch-size; prints one id per accepted line.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["file", "id", "wait"])]
    pub many: Option<PathBuf>,
    /// Lines per request with --many (at most the daemon's max_batch_items).
    #[arg(long, default_value_t = 1000, requires = "many")]
    pub batch_size: usize,
    /// Execution id (default: the daemon makes one). Resubmitting the same id
    /// and file is harmless; another file under the same id is refused (409).
    #[arg(long)]
    pub id: Option<String>,
    /// Follow the execution (as `kozmo watch` does, progress on stderr)
    /// until it ends, then print its outputs; exit 0 on success, 1 on
    /// failure or abort, 3 when the wait gave up. Rides out a daemon
    /// restart (see --retry-for).
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit 3).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// With --wait: while the daemon cannot be reached (a restart), keep
    /// trying this many seconds before giving up (exit 3).
    #[arg(long, default_value_t = 120, requires = "wait")]
    pub retry_for: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

/// Whether an execution phase (as the API writes it) never changes again.
pub fn is_terminal(phase: &str) -> bool {
    phase.parse::<ExecPhase>().is_ok_and(ExecPhase::is_terminal)
}

fn read_task(file: &PathBuf) -> anyhow::Result<Value> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the task from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read task file {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("task file {} is not valid JSON", file.display()))
}

pub(crate) fn show(v: &Value, format: Format) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Format::Text => print_text(v),
    }
}

fn print_text(v: &Value) {
    match v.as_object() {
        Some(obj) => {
            for (k, val) in obj {
                match val {
                    Value::String(s) => println!("{k}: {s}"),
                    Value::Null => {}
                    other => println!("{k}: {other}"),
                }
            }
        }
        None => println!("{v}"),
    }
}

/// Runs `kozmo submit`.
pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let server = args.server.clone();
    if let Some(many) = &args.many {
        return super::submit_many::submit_many(&server.client(), many, args.batch_size);
    }
    let file = args.file.clone().unwrap_or_else(|| PathBuf::from("-"));
    let mut body = read_task(&file)?;
    if let Some(id) = &args.id {
        body["execution_id"] = Value::String(id.clone());
    }
    let client = server.client();
    let (status, execution) = client.post("/v1/executions", &body)?;
    let id = execution["id"].as_str().unwrap_or_default().to_string();
    if status == 200 {
        eprintln!("execution {id} already exists with the same task; not submitted again");
    }
    if !args.wait {
        match args.output {
            Format::Json => show(&execution, Format::Json),
            Format::Text => println!("{id}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    super::watch::follow(
        &client,
        &id,
        &super::watch::Follow {
            timeout: Duration::from_secs(args.timeout),
            retry_for: Duration::from_secs(args.retry_for),
            format: args.output,
            outputs_at_end: true,
        },
    )
}

/// An execution's phase, plugin phase and version, attempt: `Running (PhaseRunning v1)`.
pub(crate) fn describe(v: &Value) -> String {
    let mut s = v["phase"].as_str().unwrap_or("?").to_string();
    if let Some(p) = v["plugin_phase"].as_str() {
        s.push_str(&format!(" ({p} v{})", v["plugin_phase_version"].as_u64().unwrap_or(0)));
    }
    if let Some(a) = v["attempt"].as_u64() {
        if a > 0 {
            s.push_str(&format!(" attempt {a}"));
        }
    }
    s
}

/// Names the execution in an error of a request about it (the daemon's
/// "no such execution" does not say which).
fn about<T>(id: &str, result: Result<T, ClientError>) -> anyhow::Result<T> {
    result.with_context(|| format!("execution [{id}]"))
}

/// Runs `kozmo get`.
pub fn get(id: &str, format: Format, server: ServerArgs) -> anyhow::Result<ExitCode> {
    let (_, v) = about(id, server.client().get(&execution_path(id, "")?))?;
    show(&v, format);
    Ok(ExitCode::SUCCESS)
}

/// Runs `kozmo list`.
/// `kozmo nodes`: the daemons sharing the store.
pub fn nodes(format: Format, server: ServerArgs) -> anyhow::Result<ExitCode> {
    let (_, list) = server.client().get("/v1/nodes")?;
    match format {
        Format::Json => show(&list, Format::Json),
        Format::Text => {
            println!(
                "{:<24} {:<6} {:>10} {:<26} {:<22} PLUGINS",
                "NODE", "ALIVE", "EXECUTIONS", "LAST HEARTBEAT", "ADDRESS"
            );
            for n in list.as_array().into_iter().flatten() {
                let plugins: Vec<&str> = n["plugins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["id"].as_str())
                    .collect();
                let mark = if n["this_node"] == true { "*" } else { "" };
                println!(
                    "{:<24} {:<6} {:>10} {:<26} {:<22} {}",
                    format!("{}{mark}", n["node_id"].as_str().unwrap_or("")),
                    if n["alive"] == true { "yes" } else { "no" },
                    n["executions"].as_u64().unwrap_or(0),
                    n["last_heartbeat"].as_str().unwrap_or(""),
                    n["address"].as_str().unwrap_or(""),
                    plugins.join(",")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(phase: Option<String>, limit: usize, format: Format, server: ServerArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/v1/executions?limit={limit}");
    if let Some(p) = phase {
        path.push_str(&format!("&phase={}", encode_segment(&p)));
    }
    let (_, page) = server.client().get(&path)?;
    match format {
        Format::Json => show(&page, Format::Json),
        Format::Text => {
            println!("{:<36} {:<12} {:<28} {:>7}", "ID", "PHASE", "PLUGIN PHASE", "ATTEMPT");
            for e in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<36} {:<12} {:<28} {:>7}",
                    e["id"].as_str().unwrap_or(""),
                    e["phase"].as_str().unwrap_or(""),
                    e["plugin_phase"].as_str().unwrap_or(""),
                    e["attempt"].as_u64().unwrap_or(0)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `kozmo events`: a table (text), or one JSON line per event.
pub fn events(id: &str, format: Format, server: ServerArgs) -> anyhow::Result<ExitCode> {
    let (_, page) = about(id, server.client().get(&execution_path(id, "/events")?))?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    match format {
        Format::Json => {
            for e in &items {
                println!("{e}");
            }
        }
        Format::Text => print!("{}", events_table(&items)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Events as a table: a header, then a row per event, columns as wide as
/// their widest cell (the last, DETAIL, as it comes).
fn events_table(items: &[Value]) -> String {
    let header = ["SEQ", "TIME", "ATTEMPT", "KIND", "PHASE", "VERSION", "DETAIL"].map(String::from);
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|e| {
            [
                e["seq"].as_i64().unwrap_or_default().to_string(),
                event_time(e),
                e["attempt"].as_u64().unwrap_or_default().to_string(),
                e["kind"].as_str().unwrap_or("?").to_string(),
                e["phase"].as_str().unwrap_or("?").to_string(),
                e["version"].as_u64().unwrap_or_default().to_string(),
                event_detail(e),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let right = matches!(i, 0 | 2 | 5);
            match (i, right) {
                (6, _) => line.push_str(cell),
                (_, true) => line.push_str(&format!("{cell:>w$}  ", w = widths[i])),
                (_, false) => line.push_str(&format!("{cell:<w$}  ", w = widths[i])),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// When an event happened (RFC 3339, milliseconds).
fn event_time(e: &Value) -> String {
    kozmo_engine::model::rfc3339_ms(e["occurred_at_ms"].as_i64().unwrap_or_default())
}

/// What an event says beyond its phase: the first reason, the error, the
/// next attempt.
fn event_detail(e: &Value) -> String {
    let body = &e["body"];
    let mut parts = Vec::new();
    if let Some(reason) = body["reasons"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(|r| r["reason"].as_str().or(r.as_str()))
        .filter(|r| !r.is_empty())
    {
        parts.push(reason.to_string());
    }
    if let (Some(code), Some(message)) = (body["error"]["code"].as_str(), body["error"]["message"].as_str()) {
        parts.push(format!("{code}: {message}"));
    }
    if let Some(next) = body["next_attempt"].as_u64() {
        parts.push(format!("(next attempt {next})"));
    }
    // One line per event: a multi-line message (a command's stderr) is
    // joined with " | ".
    parts
        .join("  ")
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One event as a line of text: when, attempt, kind, phase and version,
/// then what it says (the first reason, the error, the next attempt).
pub(crate) fn event_line(e: &Value) -> String {
    let mut line = format!(
        "{}  attempt {}  {:<9} {} v{}",
        event_time(e),
        e["attempt"].as_u64().unwrap_or_default(),
        e["kind"].as_str().unwrap_or("?"),
        e["phase"].as_str().unwrap_or("?"),
        e["version"].as_u64().unwrap_or_default(),
    );
    let detail = event_detail(e);
    if !detail.is_empty() {
        line.push_str("  ");
        line.push_str(&detail);
    }
    line
}

/// Runs `kozmo outputs`.
pub fn outputs(id: &str, server: ServerArgs) -> anyhow::Result<ExitCode> {
    let client = server.client();
    let (_, v) = about(id, client.get(&execution_path(id, "/outputs")?))?;
    if !v["outputs"].is_null() {
        show(&v["outputs"], Format::Json);
        return Ok(ExitCode::SUCCESS);
    }
    // No outputs (yet, or ever): say why instead of printing `null`.
    let (_, e) = about(id, client.get(&execution_path(id, "")?))?;
    eprintln!("{}", no_outputs_reason(id, &e));
    Ok(ExitCode::from(1))
}

/// Why execution `id` (as the API shows it: `execution`) has no outputs.
fn no_outputs_reason(id: &str, execution: &Value) -> String {
    let phase = execution["phase"].as_str().unwrap_or("in an unknown phase");
    let error = match (
        execution["error"]["code"].as_str(),
        execution["error"]["message"].as_str(),
    ) {
        (Some(code), Some(message)) => format!(": {code}: {message}"),
        _ => String::new(),
    };
    match phase {
        "Failed" | "Aborted" => format!("execution [{id}] has no outputs: it ended {phase}{error}"),
        "Succeeded" => format!("execution [{id}] has no outputs: it Succeeded without any"),
        _ => format!(
            "execution [{id}] has no outputs yet: it is {phase}; outputs appear once it has Succeeded \
             (`kozmo get {id}` shows where it is)"
        ),
    }
}

/// Runs `kozmo abort`.
pub fn abort(id: &str, reason: &str, format: Format, server: ServerArgs) -> anyhow::Result<ExitCode> {
    let body = serde_json::json!({ "reason": reason });
    let (_, v) = about(id, server.client().post(&execution_path(id, "/abort")?, &body))?;
    show(&v, format);
    Ok(ExitCode::SUCCESS)
}
