//! A small blocking client of the daemon's HTTP API (used by the CLI
//! commands and by tests).

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// What is escaped in one URL path segment: everything but RFC 3986's
/// unreserved characters, so `/`, `?`, `#`, `%` and spaces in an id stay
/// inside the segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` as one percent-encoded URL path segment (or query value).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The API path of execution `id` followed by `rest` (`""`, `"/events"`,
/// `"/outputs"`, `"/abort"`), the id percent-encoded so that whatever it
/// holds names that execution and nothing else.
///
/// `Err` for `.`, `..` and the empty id: URL parsers resolve those
/// segments (also when encoded), so they cannot be asked for; no execution
/// has such an id (ids never start with `.`).
pub fn execution_path(id: &str, rest: &str) -> Result<String, ClientError> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(ClientError::BadId {
            id: id.to_string(),
            why: "ids are 1-100 characters of [A-Za-z0-9._-], not starting with '.'".into(),
        });
    }
    Ok(format!("/v1/executions/{}{rest}", encode_segment(id)))
}

/// Where the daemon is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// For watches: no overall deadline, but a read deadline longer than
    /// the daemon's keep-alive interval (a silent connection is dead).
    streaming: ureq::Agent,
}

/// A silent watch connection is given up after this long (the daemon
/// sends a keep-alive comment every 15 s).
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(45);

/// A failed request: the daemon's `{error, detail}` or a transport error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error status.
    #[error("{status} {kind}: {detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `error` field.
        kind: String,
        /// The `detail` field.
        detail: String,
    },
    /// An id that cannot be put into a request at all.
    #[error("[{id}] is not an execution id: {why}")]
    BadId {
        /// The id given.
        id: String,
        /// Why it cannot be asked for.
        why: String,
    },
    /// The daemon could not be reached.
    #[error(
        "cannot reach the kozmo daemon at {base}: {cause} (is `kozmo serve` running? set --server or KOZMO_SERVER)"
    )]
    Transport {
        /// The base URL tried.
        base: String,
        /// Why.
        cause: String,
    },
}

impl Client {
    /// A client of the daemon at `base` (e.g. `http://127.0.0.1:7460`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build();
        let streaming = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(WATCH_READ_TIMEOUT)
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
            streaming,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.authorized(self.agent.request(method, &format!("{}{path}", self.base)))
    }

    fn authorized(&self, req: ureq::Request) -> ureq::Request {
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    fn finish(&self, result: Result<ureq::Response, ureq::Error>) -> Result<(u16, Value), ClientError> {
        match result {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.into_string().unwrap_or_default();
                Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
            }
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                Err(ClientError::Api {
                    status,
                    kind: body["error"].as_str().unwrap_or("error").to_string(),
                    detail: body["detail"].as_str().map(str::to_string).unwrap_or(text),
                })
            }
            Err(e) => Err(ClientError::Transport {
                base: self.base.clone(),
                cause: e.to_string(),
            }),
        }
    }

    /// `GET path` → (status, JSON body).
    pub fn get(&self, path: &str) -> Result<(u16, Value), ClientError> {
        self.finish(self.request("GET", path).call())
    }

    /// `GET path` → the raw text body (for `/metrics`).
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        match self.request("GET", path).call() {
            Ok(resp) => Ok(resp.into_string().unwrap_or_default()),
            Err(e) => self.finish(Err(e)).map(|(_, v)| v.to_string()),
        }
    }

    /// `POST path` with a JSON body → (status, JSON body).
    pub fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), ClientError> {
        self.finish(self.request("POST", path).send_json(body))
    }

    /// `POST path` with raw bytes (for tests of malformed bodies).
    pub fn post_raw(&self, path: &str, body: &[u8]) -> Result<(u16, Value), ClientError> {
        self.finish(
            self.request("POST", path)
                .set("Content-Type", "application/json")
                .send_bytes(body),
        )
    }
}

impl Client {
    /// Opens a Server-Sent Events stream (`GET path`, a watch endpoint),
    /// resuming after `last_event_id` if given; `None` when the daemon
    /// answers 204 (nothing more to send: the client saw the end). The
    /// stream is cut once `within` has passed (a deadline of the caller).
    pub fn watch(
        &self,
        path: &str,
        last_event_id: Option<&str>,
        within: Duration,
    ) -> Result<Option<SseStream>, ClientError> {
        let mut req = self
            .authorized(self.streaming.get(&format!("{}{path}", self.base)))
            .set("Accept", "text/event-stream")
            .timeout(within);
        if let Some(id) = last_event_id {
            req = req.set("Last-Event-ID", id);
        }
        match req.call() {
            Ok(resp) if resp.status() == 204 => Ok(None),
            Ok(resp) => Ok(Some(SseStream {
                lines: std::io::BufReader::new(resp.into_reader()),
                base: self.base.clone(),
                message: SseMessage::default(),
                has_data: false,
            })),
            Err(e) => self.finish(Err(e)).map(|_| None),
        }
    }
}

/// One Server-Sent Events message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseMessage {
    /// Its `event:` name (`message` when it has none).
    pub event: String,
    /// Its `id:`, if it has one.
    pub id: Option<String>,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// What a watch stream yields: a message, or a sign of life (a comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A message.
    Message(SseMessage),
    /// A comment line (the daemon's keep-alive).
    KeepAlive,
}

/// A Server-Sent Events stream ([`Client::watch`]): the messages as they
/// come; `None` once the daemon ended it, a transport error when the
/// connection broke.
pub struct SseStream {
    lines: std::io::BufReader<Box<dyn std::io::Read + Send + Sync + 'static>>,
    base: String,
    /// The message being read (a comment may come between its lines).
    message: SseMessage,
    has_data: bool,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Iterator for SseStream {
    type Item = Result<SseItem, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::BufRead;
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    return Some(Err(ClientError::Transport {
                        base: self.base.clone(),
                        cause: format!("the watch stream broke: {e}"),
                    }))
                }
            }
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                let mut message = std::mem::take(&mut self.message);
                if std::mem::take(&mut self.has_data) {
                    if message.event.is_empty() {
                        message.event = "message".into();
                    }
                    return Some(Ok(SseItem::Message(message)));
                }
                continue;
            }
            if line.starts_with(':') {
                return Some(Ok(SseItem::KeepAlive));
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            let message = &mut self.message;
            match field {
                "event" => message.event = value.to_string(),
                "id" => message.id = Some(value.to_string()),
                "data" => {
                    if self.has_data {
                        message.data.push('\n');
                    }
                    message.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
    }
}

impl Client {
    /// `POST path` with a JSON body → (status, JSON body) whatever the
    /// status; only a transport failure is an error (for answers whose error
    /// bodies carry more than `error`/`detail`, like a batch's `errors`).
    pub fn post_any(&self, path: &str, body: &Value) -> Result<(u16, Value), ClientError> {
        let result = match self.request("POST", path).send_json(body) {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(_, resp)) => Ok(resp),
            Err(e) => Err(e),
        };
        match result {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.into_string().unwrap_or_default();
                Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
            }
            Err(e) => Err(ClientError::Transport {
                base: self.base.clone(),
                cause: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(execution_path("run-1.a_b", "").unwrap(), "/v1/executions/run-1.a_b");
        assert_eq!(
            execution_path("../../v1/plugins", "/events").unwrap(),
            "/v1/executions/..%2F..%2Fv1%2Fplugins/events"
        );
        assert_eq!(
            execution_path("a b?c#d%e", "").unwrap(),
            "/v1/executions/a%20b%3Fc%23d%25e"
        );
        assert_eq!(execution_path("é", "").unwrap(), "/v1/executions/%C3%A9");
        assert_eq!(encode_segment("Running&x=1"), "Running%26x%3D1");
    }

    #[test]
    fn dot_segments_are_refused() {
        for id in ["", ".", ".."] {
            let e = execution_path(id, "/abort").unwrap_err();
            assert!(matches!(e, ClientError::BadId { .. }), "{e}");
            assert!(e.to_string().contains("not an execution id"), "{e}");
        }
    }
}
