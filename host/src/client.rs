//! A small blocking client of the daemon's HTTP API (used by the CLI
//! commands and by tests).

use std::time::Duration;

use serde_json::Value;

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
