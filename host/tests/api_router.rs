//! The API's router against an in-memory service, through the CLI's
//! client: status codes and bodies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use kozmo_api::types::{Event, Execution, PluginBody};
use kozmo_api::*;
use kozmo_host::client::{Client, ClientError, SseItem};

#[derive(Default)]
struct Fake {
    /// id → (the submitted body, the execution).
    executions: Mutex<BTreeMap<String, (Value, Execution)>>,
}

fn queued(id: &str) -> Execution {
    Execution {
        id: id.into(),
        phase: "Queued".into(),
        task_type: "echo".into(),
        attempt: 0,
        system_failures: 0,
        generated_name: format!("{id}-n0-0"),
        plugin_phase: "PhaseUndefined".into(),
        plugin_phase_version: 0,
        error: None,
        last_handler_error: None,
        consecutive_handler_errors: 0,
        abort_requested: None,
        plugin_id: None,
        waiting: None,
        created_at: "2026-12-01T00:00:00.000Z".into(),
        updated_at: "2026-12-01T00:00:00.000Z".into(),
        attempt_started_at: "2026-12-01T00:00:00.000Z".into(),
    }
}

impl ExecutionService for Fake {
    fn submit(&self, id: Option<String>, spec: Value) -> Result<Submitted, ServiceError> {
        if spec.get("type").and_then(Value::as_str) == Some("nobody") {
            return Err(ServiceError::Unprocessable("no plugin for task type nobody".into()));
        }
        if let Some(n) = spec.get("inputs").and_then(|i| i.get("n")) {
            if !n.is_i64() {
                return Err(ServiceError::BadRequest {
                    detail: "invalid type".into(),
                    path: Some("inputs.n".into()),
                });
            }
        }
        let mut all = self.executions.lock().unwrap();
        let id = id.unwrap_or_else(|| format!("ex-{}", all.len() + 1));
        if let Some((body, existing)) = all.get(&id) {
            return if *body == spec {
                Ok(Submitted {
                    id: id.clone(),
                    created: false,
                    execution: existing.clone(),
                })
            } else {
                Err(ServiceError::Conflict(format!(
                    "execution {id} exists with another body"
                )))
            };
        }
        let e = queued(&id);
        all.insert(id.clone(), (spec, e.clone()));
        Ok(Submitted {
            id,
            created: true,
            execution: e,
        })
    }
    fn get(&self, id: &str) -> Result<Execution, ServiceError> {
        self.executions
            .lock()
            .unwrap()
            .get(id)
            .map(|(_, e)| e.clone())
            .ok_or_else(|| ServiceError::NotFound(format!("no execution {id}")))
    }
    fn list(&self, _phase: Option<&str>, limit: usize, after: Option<&str>) -> Result<Vec<Execution>, ServiceError> {
        let all = self.executions.lock().unwrap();
        Ok(all
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .map(|(_, (_, e))| e.clone())
            .collect())
    }
    fn events(&self, id: &str) -> Result<Vec<Event>, ServiceError> {
        self.get(id).map(|e| {
            vec![Event {
                seq: 1,
                execution_id: e.id,
                kind: "submitted".into(),
                attempt: 0,
                phase: "Queued".into(),
                version: 0,
                occurred_at_ms: 0,
                reported_at_ms: 0,
                body: json!({}),
            }]
        })
    }
    fn outputs(&self, id: &str) -> Result<Value, ServiceError> {
        self.get(id).map(|_| Value::Null)
    }
    fn abort(&self, id: &str, reason: &str) -> Result<Execution, ServiceError> {
        let mut all = self.executions.lock().unwrap();
        let (_, e) = all.get_mut(id).ok_or_else(|| ServiceError::NotFound(id.into()))?;
        e.phase = "Aborted".into();
        e.abort_requested = Some(reason.into());
        Ok(e.clone())
    }
    fn plugins(&self) -> Vec<PluginBody> {
        vec![PluginBody {
            id: "echo".into(),
            task_types: vec!["echo".into()],
            is_default: true,
            file: "/x/libecho.so".into(),
            interface_version: "1.0.0".into(),
            abi: "1.0".into(),
            isolated: false,
        }]
    }
    fn metrics_text(&self) -> String {
        "# TYPE kozmo_rounds counter\nkozmo_rounds_total 3\n# EOF\n".into()
    }
    fn health(&self) -> Health {
        Health::Ok
    }
}

/// Starts the router on a free loopback port in a background runtime.
fn start(options: ApiOptions) -> Client {
    let (tx, rx) = std::sync::mpsc::channel();
    let token = options.token.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener, Arc::new(Fake::default()), options, std::future::pending())
                .await
                .unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    Client::new(&format!("http://{addr}"), token)
}

fn api_err(r: Result<(u16, Value), ClientError>) -> (u16, String, String) {
    match r {
        Err(ClientError::Api { status, kind, detail }) => (status, kind, detail),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn submit_then_resubmit_is_idempotent_and_a_different_body_conflicts() {
    let c = start(ApiOptions::default());
    let body = json!({"execution_id": "job-1", "type": "echo", "inputs": {"n": 1}});
    let (status, v) = c.post("/v1/executions", &body).unwrap();
    assert_eq!((status, v["id"].as_str()), (201, Some("job-1")));
    let (status, v) = c.post("/v1/executions", &body).unwrap();
    assert_eq!((status, v["id"].as_str()), (200, Some("job-1")));
    let other = json!({"execution_id": "job-1", "type": "echo", "inputs": {"n": 2}});
    let (status, kind, _) = api_err(c.post("/v1/executions", &other));
    assert_eq!((status, kind.as_str()), (409, "conflict"));
    let (status, v) = c.get("/v1/executions/job-1").unwrap();
    assert_eq!((status, v["phase"].as_str()), (200, Some("Queued")));
}

#[test]
fn error_statuses_carry_json_bodies() {
    let c = start(ApiOptions {
        max_body_bytes: 200,
        ..Default::default()
    });
    let (s, kind, detail) = api_err(c.post_raw("/v1/executions", b"{not json"));
    assert_eq!((s, kind.as_str()), (400, "bad_request"));
    assert!(detail.contains("not valid JSON"), "{detail}");
    let (s, _, _) = api_err(c.post_raw("/v1/executions", b"[1,2]"));
    assert_eq!(s, 400);
    let (s, _, detail) = api_err(c.post("/v1/executions", &json!({"execution_id": 5, "type": "echo"})));
    assert_eq!(s, 400);
    assert!(detail.contains("`execution_id`"), "{detail}");
    let r = c.post("/v1/executions", &json!({"type": "echo", "inputs": {"n": "x"}}));
    match r {
        Err(ClientError::Api { status: 400, .. }) => {}
        other => panic!("{other:?}"),
    }
    let big = json!({"type": "echo", "inputs": {"s": "x".repeat(500)}});
    let (s, kind, _) = api_err(c.post("/v1/executions", &big));
    assert_eq!((s, kind.as_str()), (413, "payload_too_large"));
    let (s, kind, _) = api_err(c.post("/v1/executions", &json!({"type": "nobody"})));
    assert_eq!((s, kind.as_str()), (422, "unprocessable"));
    let (s, kind, _) = api_err(c.get("/v1/executions/missing"));
    assert_eq!((s, kind.as_str()), (404, "not_found"));
    let (s, _, _) = api_err(c.get("/nowhere"));
    assert_eq!(s, 404);
    let (s, _, detail) = api_err(c.get("/v1/executions?limit=0"));
    assert_eq!(s, 400);
    assert!(detail.contains("limit"), "{detail}");
}

#[test]
fn the_bad_field_path_is_reported() {
    let c = start(ApiOptions::default());
    let resp = c.post("/v1/executions", &json!({"type": "echo", "inputs": {"n": "x"}}));
    let ClientError::Api { status, detail, .. } = resp.unwrap_err() else {
        panic!()
    };
    assert_eq!(status, 400);
    assert_eq!(detail, "invalid type");
    let raw =
        ureq::post(&format!("{}/v1/executions", c.base())).send_json(json!({"type": "echo", "inputs": {"n": "x"}}));
    let Err(ureq::Error::Status(400, resp)) = raw else {
        panic!("{raw:?}")
    };
    let body: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(body["path"], "inputs.n");
}

#[test]
fn list_pages_and_abort() {
    let c = start(ApiOptions::default());
    for i in 0..3 {
        c.post(
            "/v1/executions",
            &json!({"execution_id": format!("e{i}"), "type": "echo"}),
        )
        .unwrap();
    }
    let (_, page) = c.get("/v1/executions?limit=2").unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "e1");
    let (_, page) = c.get("/v1/executions?limit=2&after=e1").unwrap();
    assert_eq!(page["items"][0]["id"], "e2");
    assert!(page["next"].is_null());
    let (_, v) = c.post("/v1/executions/e0/abort", &json!({"reason": "enough"})).unwrap();
    assert_eq!(
        (v["phase"].as_str(), v["abort_requested"].as_str()),
        (Some("Aborted"), Some("enough"))
    );
    let (_, ev) = c.get("/v1/executions/e0/events").unwrap();
    assert_eq!(ev["items"].as_array().unwrap().len(), 1);
    let (_, out) = c.get("/v1/executions/e0/outputs").unwrap();
    assert!(out["outputs"].is_null());
    let (_, p) = c.get("/v1/plugins").unwrap();
    assert_eq!(p[0]["id"], "echo");
    assert_eq!(c.get("/healthz").unwrap().1["status"], "ok");
    assert!(c.get_text("/metrics").unwrap().contains("kozmo_rounds_total 3"));
}

#[test]
fn a_token_is_required_when_configured() {
    let c = start(ApiOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    });
    assert_eq!(c.get("/healthz").unwrap().0, 200);
    let anonymous = Client::new(c.base(), None);
    let (s, kind, _) = api_err(anonymous.get("/v1/executions"));
    assert_eq!((s, kind.as_str()), (401, "unauthorized"));
    let wrong = Client::new(c.base(), Some("nope".into()));
    assert_eq!(api_err(wrong.get("/healthz")).0, 401);
    // The watches too, before any stream starts.
    c.post("/v1/executions", &json!({"execution_id": "t", "type": "echo"}))
        .unwrap();
    let within = std::time::Duration::from_secs(10);
    for path in ["/v1/executions/t/watch", "/v1/executions/watch"] {
        let refused = anonymous.watch(path, None, within).unwrap_err();
        assert!(
            matches!(refused, ClientError::Api { status: 401, .. }),
            "{path}: {refused:?}"
        );
    }
    assert!(c.watch("/v1/executions/t/watch", None, within).unwrap().is_some());
}

#[test]
fn the_openapi_document_is_served() {
    let c = start(ApiOptions::default());
    let (status, doc) = c.get("/v1/openapi.json").unwrap();
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/executions:batch"]["post"].is_object(), "{doc}");
}

#[test]
fn watches_are_bounded_and_a_resumed_one_sends_only_what_changed() {
    let c = start(ApiOptions {
        watch: WatchOptions {
            max_watchers: 1,
            poll: std::time::Duration::from_millis(50),
            ..WatchOptions::default()
        },
        ..Default::default()
    });
    c.post("/v1/executions", &json!({"execution_id": "w", "type": "echo"}))
        .unwrap();
    let within = std::time::Duration::from_secs(60);
    let mut first = c.watch("/v1/executions/w/watch", None, within).unwrap().unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let SseItem::Message(m) = first.next().unwrap().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(
        got.iter().map(|m| m.event.as_str()).collect::<Vec<_>>(),
        ["event", "execution"]
    );
    // The one slot is taken: a second watch is refused, not queued.
    let refused = c.watch("/v1/executions/w/watch", None, within).unwrap_err();
    assert!(matches!(refused, ClientError::Api { status: 503, .. }), "{refused:?}");
    // A watch that left gives its slot back.
    drop(first);
    let last = got[1].id.clone().unwrap();
    c.post("/v1/executions/w/abort", &json!({})).unwrap();
    let start = std::time::Instant::now();
    let mut resumed = loop {
        match c.watch("/v1/executions/w/watch", Some(&last), within) {
            Ok(stream) => break stream.unwrap(),
            Err(ClientError::Api { status: 503, .. }) => {
                assert!(start.elapsed() < within, "the slot never came back");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    // Resumed after the status: the event is not sent again, the end is.
    let next = loop {
        if let SseItem::Message(m) = resumed.next().unwrap().unwrap() {
            break m;
        }
    };
    assert_eq!(next.event, "end", "{next:?}");
    assert!(next.data.contains("\"Aborted\""), "{next:?}");
    assert!(resumed.next().is_none());
    let end = next.id.unwrap();
    let start = std::time::Instant::now();
    loop {
        match c.watch("/v1/executions/w/watch", Some(&end), within) {
            Ok(None) => break,
            Err(ClientError::Api { status: 503, .. }) if start.elapsed() < within => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => panic!("after the end: 204, got {other:?}"),
        }
    }
    // The Fake cannot list every execution's events: a 503, not a hang.
    let (status, kind, _) = match c.watch("/v1/executions/watch", None, within) {
        Err(ClientError::Api { status, kind, detail }) => (status, kind, detail),
        other => panic!("{other:?}"),
    };
    assert_eq!((status, kind.as_str()), (503, "unavailable"));
}
