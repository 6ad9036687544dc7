//! The watch endpoints: Server-Sent Events of one execution
//! (`GET /v1/executions/{id}/watch`) or of every execution
//! (`GET /v1/executions/watch`), resumable with `Last-Event-ID`.
//!
//! Both read the store through the [`ExecutionService`] (events after a
//! sequence number, an execution's status), never an in-memory feed, so a
//! watch sees what any daemon sharing the store wrote. A watch reads again
//! when the service's commit wake-up ([`ExecutionService::commits`]) says
//! this process committed, and at least every [`WatchOptions::poll`]
//! (writes of other daemons); at most one read per [`MIN_GAP`].
//!
//! Message ids are cursors. One execution: `<seq>.<status>`, the `seq` of
//! the last event sent and a fingerprint (16 hex digits) of the last status
//! sent; a client that comes back with it gets the events after `seq` and
//! the status if it differs. Every execution: `<seq>`, the event's. So a
//! reconnecting client misses nothing and gets nothing twice.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::service::{ExecutionService, ServiceError};
use super::types::{ErrorBody, Event, Execution, PhaseName, PHASES};
use super::AppState;

/// Watch settings.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Most watches open at once; one more is a 503.
    pub max_watchers: usize,
    /// A comment line is sent after this long without a message, so
    /// proxies and clients see the connection is alive.
    pub keep_alive: Duration,
    /// Longest time between two reads of the store without a wake-up
    /// (the delay to see what another daemon wrote).
    pub poll: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            max_watchers: 64,
            keep_alive: Duration::from_secs(15),
            poll: Duration::from_secs(1),
        }
    }
}

/// Shortest time between two reads of one watch (wake-ups in between are
/// coalesced): under load, a watch costs at most this many reads a second.
pub const MIN_GAP: Duration = Duration::from_millis(20);

/// Events read at a time.
const BATCH: usize = 500;

/// SSE message names.
pub mod message {
    /// One execution's status changed (data: an `Execution`).
    pub const EXECUTION: &str = "execution";
    /// A new event (data: an `Event`).
    pub const EVENT: &str = "event";
    /// The execution reached its terminal phase (data: its `Execution`);
    /// the stream ends after it.
    pub const END: &str = "end";
    /// The execution was removed (retention) while watched; the stream ends.
    pub const GONE: &str = "gone";
    /// Every execution: the watch starts after this `seq` (data: `{"seq"}`).
    pub const READY: &str = "ready";
    /// Every execution: a new event and its execution's status now.
    pub const CHANGE: &str = "change";
}

/// `GET /v1/executions/watch` parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchAllQuery {
    /// Only changes of executions in this phase (when the change is sent).
    pub phase: Option<PhaseName>,
    /// Start after this event `seq` (as `Last-Event-ID`, which wins);
    /// default: now.
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

/// `GET /v1/executions/{id}/watch` parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchOneQuery {
    /// Resume after this message id (as `Last-Event-ID`, which wins), for
    /// clients that cannot set the header.
    pub last_event_id: Option<String>,
}

/// The data of a `ready` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WatchReady {
    /// The watch sends the events after this one.
    pub seq: i64,
}

/// The data of a `change` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WatchChange {
    /// The new event.
    pub event: Event,
    /// Its execution's status when the message was sent (`null`: removed since).
    pub execution: Option<Execution>,
}

/// Where a watch of one execution is: the last event and status sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Cursor {
    seq: i64,
    status: u64,
}

impl Cursor {
    fn id(self) -> String {
        format!("{}.{:016x}", self.seq, self.status)
    }

    fn parse(text: &str) -> Option<Cursor> {
        let (seq, status) = text.trim().split_once('.')?;
        Some(Cursor {
            seq: seq.parse().ok().filter(|s| *s >= 0)?,
            status: u64::from_str_radix(status, 16).ok().filter(|_| status.len() == 16)?,
        })
    }
}

/// A stable fingerprint (FNV-1a) of what a client sees change in an
/// execution's status: phase, attempt, plugin phase and version, why it
/// waits, a pending abort, its error and last handler error.
fn fingerprint(e: &Execution) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        e.phase.as_str(),
        &e.attempt.to_string(),
        &e.plugin_phase,
        &e.plugin_phase_version.to_string(),
        e.waiting.as_deref().unwrap_or(""),
        e.abort_requested.as_deref().unwrap_or(""),
        e.error.as_ref().map_or("", |e| e.code.as_str()),
        e.last_handler_error.as_ref().map_or("", |h| h.at.as_str()),
    ];
    for part in parts {
        for b in part.bytes().chain([0x1f]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // 0 is the cursor of a client that saw no status yet.
    h.max(1)
}

fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed" | "Aborted")
}

/// A watch slot, or a 503 when every one is taken.
fn take_slot(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    state.watchers.clone().try_acquire_owned().map_err(|_| {
        ApiError::from(ServiceError::Unavailable(format!(
            "{} watches are open, the most this daemon serves at once: retry later",
            state.options.watch.max_watchers
        )))
    })
}

/// Runs `f` on the service on a blocking thread.
async fn call<T: Send + 'static>(
    service: &Arc<dyn ExecutionService>,
    f: impl FnOnce(&dyn ExecutionService) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    let service = service.clone();
    tokio::task::spawn_blocking(move || f(service.as_ref()))
        .await
        .map_err(|e| ServiceError::Internal(format!("watch read failed: {e}")))?
}

fn message(name: &str, id: String, data: &impl Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .id(id)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "null".into()))
}

/// What wakes a watch: a commit of this process, the poll interval, the
/// client leaving, the server closing.
struct Waker {
    commits: Option<tokio::sync::watch::Receiver<u64>>,
    closing: tokio::sync::watch::Receiver<bool>,
    poll: Duration,
    last_read: tokio::time::Instant,
}

impl Waker {
    fn new(state: &AppState) -> Self {
        Waker {
            commits: state.service.commits(),
            closing: state.closing.clone(),
            poll: state.options.watch.poll,
            last_read: tokio::time::Instant::now(),
        }
    }

    /// Waits for a reason to read again; `false` when the watch must end.
    async fn wait(&mut self, tx: &mpsc::Sender<SseEvent>) -> bool {
        if *self.closing.borrow() {
            return false;
        }
        let commit = async {
            match self.commits.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let closing = async {
            // A router without a sender never closes.
            if self.closing.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        };
        let go_on = tokio::select! {
            () = commit => true,
            () = tokio::time::sleep(self.poll) => true,
            () = tx.closed() => false,
            () = closing => false,
        };
        if !go_on {
            return false;
        }
        tokio::time::sleep_until(self.last_read + MIN_GAP).await;
        self.last_read = tokio::time::Instant::now();
        true
    }
}

fn sse(state: &AppState, rx: mpsc::Receiver<SseEvent>) -> Response {
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|m| m.map(Ok::<_, Infallible>)));
    sse_response(state, stream)
}

fn sse_response(
    state: &AppState,
    stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
) -> Response {
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(state.options.watch.keep_alive))
        .into_response();
    // Tell proxies not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    response
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
            .map_err(|_| ApiError::bad_request("the Last-Event-ID header is not text", None)),
    }
}

/// Follow one execution as Server-Sent Events.
///
/// Messages (`event:` name, `data:` one JSON line, `id:` a cursor):
/// `execution` (its status, an `Execution`, sent first and whenever its
/// phase, attempt, plugin phase or version, waiting reason, pending abort
/// or errors change), `event` (each event, an `Event`, in `seq` order,
/// starting with its history), `end` (its terminal status; the stream
/// ends), `gone` (it was removed while watched). Ids are
/// `<seq>.<16 hex digits>`; send the last one back as `Last-Event-ID` (or
/// `?last_event_id=`) to resume: the answer has exactly what was missed,
/// or is a 204 when the client saw the end already. Comment lines keep an
/// idle stream alive. At most `max_watchers` watches are open at once
/// (503 beyond).
#[utoipa::path(get, path = "/v1/executions/{id}/watch", tag = "watch",
    params(
        ("id" = String, Path, description = "the execution's id"),
        ("Last-Event-ID" = Option<String>, Header, description = "the id of the last message received: resume after it"),
        WatchOneQuery,
    ),
    responses(
        (status = 200, description = "a stream of `execution`, `event` and `end` messages", content_type = "text/event-stream", body = String),
        (status = 204, description = "the client saw the execution's end already (the cursor is at its end)"),
        (status = 400, description = "a malformed id or cursor", body = ErrorBody),
        (status = 404, description = "no such execution", body = ErrorBody),
        (status = 503, description = "too many watches open", body = ErrorBody),
    ))]
pub(crate) async fn watch_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WatchOneQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let given = last_event_id(&headers)?.or(q.last_event_id);
    let cursor = match given {
        None => Cursor::default(),
        Some(text) => Cursor::parse(&text).ok_or_else(|| {
            ApiError::bad_request(
                format!("{text:?} is not an id of this watch (`<seq>.<16 hex digits>`, as it sent)"),
                Some("Last-Event-ID".into()),
            )
        })?,
    };
    let slot = take_slot(&state)?;
    // Errors (no such execution) are answered before the stream starts.
    let service = state.service.clone();
    let first = {
        let id = id.clone();
        call(&service, move |s| {
            let execution = s.get(&id)?;
            let events = s.events_after(Some(&id), cursor.seq, BATCH)?;
            Ok((execution, events))
        })
        .await?
    };
    if is_terminal(&first.0.phase) && first.1.is_empty() && fingerprint(&first.0) == cursor.status {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (tx, rx) = mpsc::channel(64);
    let waker = Waker::new(&state);
    tokio::spawn(follow_one(service, id, cursor, first, tx, waker, slot));
    Ok(sse(&state, rx))
}

async fn follow_one(
    service: Arc<dyn ExecutionService>,
    id: String,
    mut cursor: Cursor,
    first: (Execution, Vec<Event>),
    tx: mpsc::Sender<SseEvent>,
    mut waker: Waker,
    _slot: OwnedSemaphorePermit,
) {
    let mut read = Some(first);
    loop {
        let (execution, events) = match read.take() {
            Some(r) => r,
            None => {
                let (of, seq) = (id.clone(), cursor.seq);
                match call(&service, move |s| {
                    // The status first: the events read after it include
                    // every one committed with it (a terminal status's too).
                    let execution = s.get(&of)?;
                    Ok((execution, s.events_after(Some(&of), seq, BATCH)?))
                })
                .await
                {
                    Ok(r) => r,
                    Err(ServiceError::NotFound(_)) => {
                        let gone = serde_json::json!({"id": id, "detail": "the execution was removed"});
                        let _ = tx.send(message(message::GONE, cursor.id(), &gone)).await;
                        return;
                    }
                    Err(e) => {
                        log::warn!("watch of execution {id}: {e:?}; reading again later");
                        if !waker.wait(&tx).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let full = events.len() == BATCH;
        for event in events {
            cursor.seq = event.seq;
            if tx.send(message(message::EVENT, cursor.id(), &event)).await.is_err() {
                return;
            }
        }
        if full {
            // More events wait: read them before the status.
            read = None;
            continue;
        }
        let status = fingerprint(&execution);
        let terminal = is_terminal(&execution.phase);
        if status != cursor.status {
            cursor.status = status;
            let name = if terminal { message::END } else { message::EXECUTION };
            if tx.send(message(name, cursor.id(), &execution)).await.is_err() {
                return;
            }
        }
        if terminal || !waker.wait(&tx).await {
            return;
        }
    }
}

/// Follow every execution as Server-Sent Events.
///
/// A fresh watch first sends `ready` (`{"seq": N}`, id `N`): it goes on
/// with the events after N (read the list after it to have no gap). Then
/// one `change` message per new event of any execution, in `seq` order
/// (`{"event": Event, "execution": its status when sent}`), id the event's
/// `seq`; with `phase`, only those whose execution is in that phase when
/// sent. Resume with `Last-Event-ID` (or `?after=`): the events after it.
/// A phase change that writes no event (an abort request, a new
/// submission before its first round) shows with the execution's next
/// event. Comment lines keep an idle stream alive; the stream ends only
/// when the daemon stops. At most `max_watchers` watches are open at once
/// (503 beyond).
#[utoipa::path(get, path = "/v1/executions/watch", tag = "watch",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "the id (an event `seq`) of the last message received: resume after it"),
        WatchAllQuery,
    ),
    responses(
        (status = 200, description = "a stream of `ready` and `change` messages", content_type = "text/event-stream", body = String),
        (status = 400, description = "a bad parameter or cursor", body = ErrorBody),
        (status = 503, description = "too many watches open", body = ErrorBody),
    ))]
pub(crate) async fn watch_all(
    State(state): State<AppState>,
    Query(q): Query<WatchAllQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let given = match last_event_id(&headers)? {
        Some(text) => Some(text.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
            ApiError::bad_request(
                format!("{text:?} is not an id of this watch (an event seq, as it sent)"),
                Some("Last-Event-ID".into()),
            )
        })?),
        None => match q.after {
            Some(n) if n < 0 => {
                return Err(ApiError::bad_request(
                    format!("`after` must be an event seq (0 or more), got {n}"),
                    Some("after".into()),
                ))
            }
            other => other,
        },
    };
    let slot = take_slot(&state)?;
    let service = state.service.clone();
    let (start, fresh) = match given {
        Some(seq) => (seq, false),
        None => (call(&service, |s| s.last_event_seq()).await?, true),
    };
    let (tx, rx) = mpsc::channel(256);
    if fresh {
        let _ = tx
            .send(message(message::READY, start.to_string(), &WatchReady { seq: start }))
            .await;
    }
    let phase = q.phase.map(|p| PHASES[p as usize]);
    let waker = Waker::new(&state);
    tokio::spawn(follow_all(service, start, phase, tx, waker, slot));
    Ok(sse(&state, rx))
}

/// How long the watch of every execution waits for a missing `seq` before
/// going past it.
const GAP_WAIT: Duration = Duration::from_secs(2);

/// A `seq` missing below ones already readable. Event sequence numbers are
/// taken when a transaction inserts, not when it commits: with several
/// writers (daemons sharing a PostgreSQL store, or a commit outside the
/// group commit) a later number can become readable first. The watch of
/// every execution sends nothing past a missing number until it appears or
/// [`GAP_WAIT`] passed (a rolled-back transaction's numbers never appear;
/// pruning leaves holes too), so a late commit is not skipped.
#[derive(Default)]
struct Gap {
    seen: Option<(i64, std::time::Instant)>,
}

impl Gap {
    /// Whether the watch may go past the missing `missing` now.
    fn passable(&mut self, missing: i64) -> bool {
        match self.seen {
            Some((m, since)) if m == missing => {
                if since.elapsed() >= GAP_WAIT {
                    self.seen = None;
                    true
                } else {
                    false
                }
            }
            _ => {
                self.seen = Some((missing, std::time::Instant::now()));
                false
            }
        }
    }
}

async fn follow_all(
    service: Arc<dyn ExecutionService>,
    mut seq: i64,
    phase: Option<&'static str>,
    tx: mpsc::Sender<SseEvent>,
    mut waker: Waker,
    _slot: OwnedSemaphorePermit,
) {
    let mut gap = Gap::default();
    loop {
        let after = seq;
        let read = call(&service, move |s| {
            let events = s.events_after(None, after, BATCH)?;
            // Each execution's status once per read.
            let mut statuses: HashMap<String, Option<Execution>> = HashMap::new();
            for e in &events {
                if !statuses.contains_key(&e.execution_id) {
                    let status = match s.get(&e.execution_id) {
                        Ok(x) => Some(x),
                        Err(ServiceError::NotFound(_)) => None,
                        Err(other) => return Err(other),
                    };
                    statuses.insert(e.execution_id.clone(), status);
                }
            }
            Ok((events, statuses))
        })
        .await;
        let full = match read {
            Ok((events, statuses)) => {
                let mut full = events.len() == BATCH;
                for event in events {
                    if event.seq > seq + 1 && !gap.passable(seq + 1) {
                        // Held back until the gap fills or is old enough.
                        full = false;
                        break;
                    }
                    seq = event.seq;
                    let execution = statuses.get(&event.execution_id).cloned().flatten();
                    if phase.is_some_and(|p| !matches!(&execution, Some(x) if x.phase == p)) {
                        continue;
                    }
                    let change = WatchChange { event, execution };
                    if tx
                        .send(message(message::CHANGE, seq.to_string(), &change))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                full
            }
            Err(e) => {
                log::warn!("watch of every execution: {e:?}; reading again later");
                false
            }
        };
        if !full && !waker.wait(&tx).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_seq_holds_the_watch_back_until_it_is_old() {
        let mut gap = Gap::default();
        assert!(!gap.passable(5), "first seen: wait");
        assert!(!gap.passable(5), "still young");
        gap.seen = Some((5, std::time::Instant::now() - GAP_WAIT));
        assert!(gap.passable(5), "old enough: go past it");
        assert!(!gap.passable(9), "another gap starts its own wait");
    }

    #[test]
    fn cursors_read_back_what_they_wrote() {
        let c = Cursor {
            seq: 42,
            status: 0xdead_beef,
        };
        assert_eq!(c.id(), "42.00000000deadbeef");
        assert_eq!(Cursor::parse(&c.id()), Some(c));
        for bad in [
            "",
            "42",
            "x.00000000deadbeef",
            "-1.00000000deadbeef",
            "4.beef",
            "4.zz00000000000000",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
