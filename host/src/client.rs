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
}

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
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
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
