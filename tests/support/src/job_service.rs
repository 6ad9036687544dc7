//! A remote job service for the asynchronous plugins' tests and benchmark:
//! a small HTTP/1.1 server (keep-alive, one thread per connection) on a free
//! 127.0.0.1 port that creates jobs, reports them running, succeeded or
//! failed, injects errors and latency on demand and logs every request.
//!
//! * `POST /jobs` with `{"key": K, "duration_ms": D, "outcome": "succeeded"|"failed",
//!   "result": R, "error": E}`: a job; the same `key` again answers the job
//!   it created (idempotent create). `{"id", "status"}`; a job of
//!   `duration_ms` 0 is `SUCCEEDED`/`FAILED` in that answer already.
//! * `GET /jobs/<id>`: `{"id", "status", "result", "error"}`, status `RUNNING`
//!   until `duration_ms` passed since the create, then `SUCCEEDED` (with
//!   `result`) or `FAILED` (with `error`); `CANCELLED` once deleted.
//! * `DELETE /jobs/<id>`: cancels (200), 404 for an unknown id.
//! * Faults: [`JobService::fail_next`] answers the next n requests of a
//!   method with an error status; [`JobService::set_latency`] delays every
//!   answer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One request the service answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived (since the service started).
    pub at: Duration,
    /// `GET`, `POST`, `DELETE`, …
    pub method: String,
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// Its `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A job as the service holds it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// The client's idempotency key.
    pub key: String,
    /// Whether it was deleted.
    pub cancelled: bool,
    created: Instant,
    duration: Duration,
    outcome: String,
    result: Value,
    error: Value,
}

impl Job {
    fn status(&self) -> &'static str {
        if self.cancelled {
            "CANCELLED"
        } else if self.created.elapsed() < self.duration {
            "RUNNING"
        } else if self.outcome == "failed" {
            "FAILED"
        } else {
            "SUCCEEDED"
        }
    }

    fn view(&self) -> Value {
        let status = self.status();
        let mut v = json!({ "id": self.id, "status": status });
        if status == "SUCCEEDED" {
            v["result"] = self.result.clone();
        }
        if status == "FAILED" {
            v["error"] = self.error.clone();
        }
        v
    }
}

#[derive(Default)]
struct Shared {
    jobs: Mutex<HashMap<String, Job>>,
    by_key: Mutex<HashMap<String, String>>,
    log: Mutex<Vec<Request>>,
    faults: Mutex<Vec<(String, u32, u16)>>,
    latency_ms: AtomicU64,
    next_id: AtomicU64,
}

/// The running service; stopped when dropped.
pub struct JobService {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JobService {
    /// Starts on a free 127.0.0.1 port.
    pub fn start() -> JobService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("job-service".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (shared, stop) = (shared.clone(), stop.clone());
                        let _ = std::thread::Builder::new()
                            .name("job-service-conn".into())
                            .spawn(move || serve(conn, &shared, &stop, started));
                    }
                })
                .unwrap();
        }
        JobService {
            addr,
            shared,
            stop,
            started,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `n` requests with `method` are answered `status` (and do
    /// nothing).
    pub fn fail_next(&self, method: &str, n: u32, status: u16) {
        lock(&self.shared.faults).push((method.to_string(), n, status));
    }

    /// Every answer waits `d` first.
    pub fn set_latency(&self, d: Duration) {
        self.shared.latency_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.log).clone()
    }

    /// Requests with `method` so far.
    pub fn count(&self, method: &str) -> usize {
        lock(&self.shared.log).iter().filter(|r| r.method == method).count()
    }

    /// The jobs created so far.
    pub fn jobs(&self) -> Vec<Job> {
        let mut v: Vec<Job> = lock(&self.shared.jobs).values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// How long the service has been up.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for JobService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, shared: &Shared, stop: &AtomicBool, started: Instant) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = conn.set_nodelay(true);
    let mut out = match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_string(), path.to_string());
        let mut length = 0usize;
        let mut authorization = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("authorization") {
                    authorization = Some(v.trim().to_string());
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let at = started.elapsed();
        let latency = shared.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            std::thread::sleep(Duration::from_millis(latency));
        }
        let (status, answer) = answer(shared, &method, &path, &body);
        lock(&shared.log).push(Request {
            at,
            method,
            path,
            status,
            authorization,
        });
        let text = answer.to_string();
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(shared: &Shared, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    {
        let mut faults = lock(&shared.faults);
        if let Some(f) = faults.iter_mut().find(|f| f.0 == method && f.1 > 0) {
            f.1 -= 1;
            return (f.2, json!({ "error": format!("injected failure {}", f.2) }));
        }
    }
    let id = path.strip_prefix("/jobs/").map(str::to_string);
    match (method, path, id) {
        ("POST", "/jobs", _) => {
            let Ok(req) = serde_json::from_slice::<Value>(body) else {
                return (400, json!({ "error": "the body is not JSON" }));
            };
            let key = req["key"].as_str().unwrap_or_default().to_string();
            if let Some(id) = lock(&shared.by_key).get(&key).filter(|_| !key.is_empty()).cloned() {
                let jobs = lock(&shared.jobs);
                return (200, jobs[&id].view());
            }
            let n = shared.next_id.fetch_add(1, Ordering::SeqCst) + 1;
            let job = Job {
                id: format!("job-{n}"),
                key: key.clone(),
                cancelled: false,
                created: Instant::now(),
                duration: Duration::from_millis(req["duration_ms"].as_u64().unwrap_or(100)),
                outcome: req["outcome"].as_str().unwrap_or("succeeded").to_string(),
                result: req.get("result").cloned().unwrap_or(Value::Null),
                error: req.get("error").cloned().unwrap_or(json!("the job failed")),
            };
            let view = job.view();
            if !key.is_empty() {
                lock(&shared.by_key).insert(key, job.id.clone());
            }
            lock(&shared.jobs).insert(job.id.clone(), job);
            (201, view)
        }
        ("GET", _, Some(id)) => match lock(&shared.jobs).get(&id) {
            Some(j) => (200, j.view()),
            None => (404, json!({ "error": format!("no job {id}") })),
        },
        ("DELETE", _, Some(id)) => match lock(&shared.jobs).get_mut(&id) {
            Some(j) => {
                j.cancelled = true;
                (200, j.view())
            }
            None => (404, json!({ "error": format!("no job {id}") })),
        },
        _ => (404, json!({ "error": format!("no route {method} {path}") })),
    }
}
