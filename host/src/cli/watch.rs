//! `kozmo watch ID` and `kozmo submit --wait`: follow one execution over
//! the daemon's watch endpoint (`GET /v1/executions/{id}/watch`, Server-Sent
//! Events), printing its phase changes and events as they come, and ride
//! out a daemon that goes away (a restart): reconnect with backoff for a
//! bounded time and resume after the last message received
//! (`Last-Event-ID`), so nothing is missed or printed twice.
//!
//! Exit codes: 0 the execution Succeeded, 1 it Failed or was Aborted (or
//! was removed), 3 the wait gave up (`--timeout`, or the daemon away
//! longer than `--retry-for`); the execution goes on either way.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::executions::{describe, event_line, is_terminal, show, Format, ServerArgs};
use crate::client::{execution_path, Client, ClientError, SseItem, SseMessage};

/// Exit code of a wait that gave up.
pub const GAVE_UP: u8 = 3;

/// Longest pause between two reconnection tries.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// First pause after losing the daemon.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// `kozmo watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Execution id, sent percent-encoded (write `-- ID` for an id that
    /// starts with `-`).
    pub id: String,
    /// Give up after this many seconds (exit 3; the execution goes on).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// While the daemon cannot be reached (a restart), keep trying this
    /// many seconds before giving up (exit 3).
    #[arg(long, default_value_t = 120)]
    pub retry_for: u64,
    /// Output format: text lines, or each message as a JSON line
    /// (`{"message", "id", "data"}`).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
    /// Where the daemon is.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// How a follow prints and ends.
pub struct Follow {
    /// Give up after this long.
    pub timeout: Duration,
    /// Keep reconnecting this long while the daemon is away.
    pub retry_for: Duration,
    /// `watch`: progress as text lines or JSON lines, on stdout.
    /// `submit --wait`: the format of the outputs.
    pub format: Format,
    /// `submit --wait`: progress as text on stderr, the outputs of a
    /// success on stdout (in `format`).
    pub outputs_at_end: bool,
}

/// Runs `kozmo watch`.
pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    follow(
        &client,
        &args.id,
        &Follow {
            timeout: Duration::from_secs(args.timeout),
            retry_for: Duration::from_secs(args.retry_for),
            format: args.output,
            outputs_at_end: false,
        },
    )
}

/// Where progress lines go.
fn progress(f: &Follow, line: &str) {
    if f.outputs_at_end {
        eprintln!("{line}");
    } else {
        println!("{line}");
        let _ = std::io::stdout().flush();
    }
}

/// Follows execution `id` until it ends; the exit code says how.
pub fn follow(client: &Client, id: &str, f: &Follow) -> anyhow::Result<ExitCode> {
    let path = execution_path(id, "/watch")?;
    let start = Instant::now();
    let deadline = start + f.timeout;
    let mut cursor: Option<String> = None;
    let mut lost_since: Option<Instant> = None;
    let mut pause = FIRST_PAUSE;
    let elapsed = || start.elapsed().as_secs_f64();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "gave up waiting for {id} after {}s (it goes on running)",
                f.timeout.as_secs()
            );
            return Ok(ExitCode::from(GAVE_UP));
        }
        let why = match client.watch(&path, cursor.as_deref(), left) {
            Ok(None) => {
                // 204: the end was received already (a resumed watch).
                let (_, v) = client
                    .get(&execution_path(id, "")?)
                    .with_context(|| format!("execution [{id}]"))?;
                return finish(client, id, &v, f);
            }
            Ok(Some(stream)) => {
                if let Some(since) = lost_since.take() {
                    eprintln!(
                        "{:>7.2}s  {id}  the daemon answers again (away {:.1}s)",
                        elapsed(),
                        since.elapsed().as_secs_f64()
                    );
                }
                pause = FIRST_PAUSE;
                let mut why = "the daemon ended the watch".to_string();
                for item in stream {
                    match item {
                        Ok(SseItem::KeepAlive) => {}
                        Ok(SseItem::Message(m)) => {
                            if m.id.is_some() {
                                cursor.clone_from(&m.id);
                            }
                            if let Some(code) = on_message(client, id, &m, f, elapsed())? {
                                return Ok(code);
                            }
                        }
                        Err(e) => {
                            why = e.to_string();
                            break;
                        }
                    }
                }
                why
            }
            Err(e @ ClientError::Transport { .. }) => e.to_string(),
            // Shutting down, or every watch slot taken: try again.
            Err(e @ ClientError::Api { status: 503, .. }) => e.to_string(),
            Err(e) => return Err(e).with_context(|| format!("execution [{id}]")),
        };
        if Instant::now() >= deadline {
            continue;
        }
        let since = *lost_since.get_or_insert_with(|| {
            eprintln!(
                "{:>7.2}s  {id}  lost the daemon ({why}); the execution goes on, asking again",
                elapsed()
            );
            Instant::now()
        });
        if since.elapsed() > f.retry_for {
            eprintln!(
                "gave up waiting for {id}: the daemon has not answered for {}s ({why}; --retry-for {}); the \
                 execution goes on if the daemon does",
                since.elapsed().as_secs(),
                f.retry_for.as_secs()
            );
            return Ok(ExitCode::from(GAVE_UP));
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Prints one message; `Some(code)` once the execution ended.
fn on_message(client: &Client, id: &str, m: &SseMessage, f: &Follow, at: f64) -> anyhow::Result<Option<ExitCode>> {
    let data: Value = serde_json::from_str(&m.data).unwrap_or(Value::String(m.data.clone()));
    let text = f.outputs_at_end || matches!(f.format, Format::Text);
    if !text {
        let line = serde_json::json!({"message": m.event, "id": m.id, "data": data});
        progress(f, &line.to_string());
    }
    match m.event.as_str() {
        kozmo_api::watch_message::EXECUTION | kozmo_api::watch_message::END => {
            if text {
                progress(f, &format!("{at:>7.2}s  {id}  {}", describe(&data)));
                if let Some(e) = data.get("last_handler_error").filter(|e| !e.is_null()) {
                    progress(f, &format!("          handler error: {e}"));
                }
            }
            if m.event == kozmo_api::watch_message::END {
                return finish(client, id, &data, f).map(Some);
            }
        }
        kozmo_api::watch_message::EVENT if text => progress(f, &format!("          {}", event_line(&data))),
        kozmo_api::watch_message::GONE => {
            eprintln!("execution [{id}] was removed while watched (retention)");
            return Ok(Some(ExitCode::from(1)));
        }
        _ => {}
    }
    Ok(None)
}

/// The exit code of an ended execution (`v`, as the API shows it); the
/// outputs of a success for `submit --wait`, the error of a failure.
fn finish(client: &Client, id: &str, v: &Value, f: &Follow) -> anyhow::Result<ExitCode> {
    let phase = v["phase"].as_str().unwrap_or_default();
    if !is_terminal(phase) {
        anyhow::bail!("execution [{id}]: the watch ended while it is {phase}");
    }
    if phase == "Succeeded" {
        if f.outputs_at_end {
            let (_, out) = client
                .get(&execution_path(id, "/outputs")?)
                .with_context(|| format!("execution [{id}]"))?;
            show(&out["outputs"], f.format);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        eprintln!("{id} {phase}: {e}");
    } else {
        eprintln!("{id} {phase}");
    }
    Ok(ExitCode::from(1))
}
