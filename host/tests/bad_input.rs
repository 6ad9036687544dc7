//! Bad input against the real daemon: each request a black-box probe found
//! answered wrongly gets the right status and a JSON body naming the field,
//! and the daemon stays healthy; slow and half-open clients are cut off while
//! normal requests go on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

/// One raw HTTP/1.1 exchange (`Connection: close`): status, headers
/// (lower-case names), body as JSON (`Value::Null` if it is not JSON).
fn exchange(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn addr(d: &Daemon) -> String {
    d.client.base().trim_start_matches("http://").to_string()
}

fn assert_healthy(d: &Daemon) {
    let (status, _, body) = exchange(&addr(d), "GET", "/healthz", b"");
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "{body}");
    let id = d.submit(&json!({"type": "echo", "inputs": {"x": 1}}));
    assert_eq!(d.wait_terminal(&id)["phase"], "Succeeded");
}

#[test]
fn each_bad_task_is_a_400_naming_its_field_and_the_daemon_stays_healthy() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo", "kozmo-plugin-shell"], &[]);
    let a = addr(&d);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"type": "echo", "metadata": {"timeout": 1e20}}),
            "metadata.timeout",
        ),
        (
            json!({"type": "echo", "metadata": {"timeout": "1e20s"}}),
            "metadata.timeout",
        ),
        (
            json!({"type": "echo", "metadata": {"timeout": "99999999999999999h"}}),
            "metadata.timeout",
        ),
        (
            json!({"type": "echo", "metadata": {"timeout": "9223372036854775807ms"}}),
            "metadata.timeout",
        ),
        (json!({"type": "ec\u{0}ho"}), "type"),
        (json!({"type": "e".repeat(100_000)}), "type"),
        (json!({"type": "echo", "metadata": []}), "metadata"),
        (json!({"type": "echo", "metadata": {"retriez": 3}}), "metadata.retriez"),
        (
            json!({"type": "shell", "container": {"command": ["true"]},
            "execution": {"node_id": "../../../../../../../escaped"}}),
            "execution.node_id",
        ),
        (json!({"type": "echo", "execution_id": 5}), "execution_id"),
    ];
    for (body, field) in &cases {
        let (status, _, answer) = exchange(&a, "POST", "/v1/executions", body.to_string().as_bytes());
        assert_eq!(status, 400, "{body:.200}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{answer}");
        assert_eq!(answer["path"].as_str(), Some(*field), "{body:.200}: {answer}");
        assert!(answer["detail"].as_str().unwrap().len() < 1000, "{answer:.300}");
    }
    let (_, _, typo) = exchange(
        &a,
        "POST",
        "/v1/executions",
        json!({"type": "echo", "metadata": {"retriez": 3}})
            .to_string()
            .as_bytes(),
    );
    assert!(typo["detail"].as_str().unwrap().contains("metadata.retries"), "{typo}");
    // Nothing was created, and nothing escaped the data dir.
    let (_, _, list) = exchange(&a, "GET", "/v1/executions", b"");
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    assert!(!root.path().join("escaped-0").exists());
    assert_healthy(&d);
}

#[test]
fn every_error_answer_is_json_with_the_status_it_says() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);
    let a = addr(&d);
    let id = d.submit(&json!({"type": "echo"}));
    d.wait_terminal(&id);
    let cases: Vec<(&str, String, &[u8], u16, &str)> = vec![
        ("DELETE", "/v1/executions".into(), b"", 405, "method_not_allowed"),
        ("PUT", format!("/v1/executions/{id}"), b"{}", 405, "method_not_allowed"),
        ("GET", "/v1/executions/%ff".into(), b"", 400, "bad_request"),
        ("GET", "/v2/nothing".into(), b"", 404, "not_found"),
        ("GET", "/v1/executions/no-such-id".into(), b"", 404, "not_found"),
        ("POST", format!("/v1/executions/{id}/abort"), b"[1]", 400, "bad_request"),
        (
            "POST",
            format!("/v1/executions/{id}/abort"),
            br#"{"reason": "x", "force": true}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("/v1/executions/{id}/abort"),
            b"{not json",
            400,
            "bad_request",
        ),
        ("GET", "/v1/executions?limit=0".into(), b"", 400, "bad_request"),
        ("GET", "/v1/executions?limt=5".into(), b"", 400, "bad_request"),
        ("POST", "/v1/executions".into(), b"[]", 400, "bad_request"),
        // An optional body may be empty, but a blank one is not JSON.
        ("POST", "/v1/prune".into(), b" ", 400, "bad_request"),
        ("POST", format!("/v1/executions/{id}/abort"), b"\n", 400, "bad_request"),
    ];
    for (method, path, body, want, kind) in cases {
        let (status, headers, answer) = exchange(&a, method, &path, body);
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert_eq!(answer["error"], kind, "{method} {path}: {answer}");
        assert!(!answer["detail"].as_str().unwrap_or_default().is_empty(), "{answer}");
        if want == 405 {
            assert!(headers.iter().any(|(k, _)| k == "allow"), "{headers:?}");
        }
    }
    assert_healthy(&d);
}

/// Opens `n` connections that send half a request head (or nothing) and stall.
fn stall(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                s.write_all(b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Le")
                    .unwrap();
            }
            s
        })
        .collect()
}

/// Whether the daemon closed the connection (EOF or reset) by `deadline`.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 answer before the close is fine
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn half_open_clients_are_cut_off_while_normal_requests_go_on() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        root.path(),
        &["kozmo-plugin-echo"],
        &["--http-header-timeout-secs", "2", "--http-body-timeout-secs", "2"],
    );
    let a = addr(&d);
    let started = Instant::now();
    let mut stalled = stall(&a, 500);
    // Meanwhile a normal request is served at once.
    assert_healthy(&d);
    // A body that never comes is cut off too (after the token check, which is off here).
    let mut slow_body = TcpStream::connect(&a).unwrap();
    slow_body
        .write_all(b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    // Every stalled connection is closed within the header timeout (with
    // generous slack for a loaded machine), none is left open.
    let deadline = started + Duration::from_secs(30);
    let open = stalled
        .iter_mut()
        .map(|s| closed_by(s, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(open, 0, "{open} of 500 stalled connections still open after 30 s");
    let mut answer = String::new();
    slow_body.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = slow_body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    let log = d.log_text();
    assert!(log.contains("cut off") && log.contains("slow client"), "{log}");
    assert_healthy(&d);
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_the_daemon_recovers() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        root.path(),
        &["kozmo-plugin-echo"],
        &["--http-max-connections", "20", "--http-header-timeout-secs", "3"],
    );
    let a = addr(&d);
    let mut held = stall(&a, 20);
    // Give the daemon time to accept the 20 (the accept loop is asynchronous).
    std::thread::sleep(Duration::from_millis(500));
    let mut extra = TcpStream::connect(&a).unwrap();
    extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        closed_by(&mut extra, Instant::now() + Duration::from_secs(10)),
        "over the cap but served"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    assert!(held.iter_mut().all(|s| closed_by(s, deadline)));
    assert!(d.log_text().contains("http_max_connections"), "{}", d.log_text());
    assert_healthy(&d);
}

#[test]
fn the_token_is_checked_before_any_body_is_read() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &["--api-token", "t0k3n-for-test"]);
    let mut s = TcpStream::connect(addr(&d)).unwrap();
    // Headers of a huge body that never comes: the answer must not wait
    // for it (the body deadline is 30 s; the read below gives up at 10).
    s.write_all(b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).expect("an answer before the body");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("unauthorized"), "{answer}");
}
