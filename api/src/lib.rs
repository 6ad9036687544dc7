//! The Kozmo HTTP JSON API under `/v1` (axum on tokio), plus `/healthz`
//! and `/metrics`. Handlers call an [`ExecutionService`] on blocking
//! threads (a single submission: awaited, [`ExecutionService::submit_async`]); every request and response body is a type of [`types`], and
//! `/v1/openapi.json` is generated from them. The web console (static
//! files, `console`) is served at `/`.
//!
//! This crate knows nothing of the engine: the daemon implements
//! [`ExecutionService`] over it and converts between its views and these.

mod console;
mod error;
mod handlers;
mod inspect;
mod json_errors;
mod openapi;
mod prune;
mod server;
mod service;
pub mod types;
mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use openapi::document_json as openapi_json;
pub use server::ConnectionLimits;
pub use service::{
    split_batch_item, BatchAccepted, ExecutionService, Health, ItemError, ServiceError, SubmitFuture, Submitted,
};
pub use watch::{message as watch_message, WatchOptions, MIN_GAP as WATCH_MIN_GAP};

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Bearer token every request must carry (`None` = open, loopback only).
    pub token: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most items in one `POST /v1/executions:batch`.
    pub max_batch_items: usize,
    /// Largest accepted batch body, in bytes.
    pub max_batch_bytes: usize,
    /// Time a client has to send a request's body once its headers came.
    pub body_timeout: Duration,
    /// Open connections and the header deadline.
    pub connections: ConnectionLimits,
    /// The watch endpoints' limits.
    pub watch: WatchOptions,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            token: None,
            max_body_bytes: 1024 * 1024,
            max_batch_items: 1000,
            max_batch_bytes: 64 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            connections: ConnectionLimits {
                max_connections: 1000,
                header_timeout: Duration::from_secs(10),
            },
            watch: WatchOptions::default(),
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) service: Arc<dyn ExecutionService>,
    pub(crate) options: Arc<ApiOptions>,
    /// Open watches (at most `options.watch.max_watchers`).
    pub(crate) watchers: Arc<tokio::sync::Semaphore>,
    /// True once the server is shutting down: watches end.
    pub(crate) closing: tokio::sync::watch::Receiver<bool>,
}

/// Runs before any handler, so before any body is read: a request without
/// the token costs its headers only.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.options.token {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// The router with every route.
pub fn router(service: Arc<dyn ExecutionService>, options: ApiOptions) -> Router {
    // No sender: this router's watches end with their clients only.
    let (_, closed) = tokio::sync::watch::channel(false);
    router_closing(service, options, closed)
}

/// The router, whose watches end once `closing` turns true.
fn router_closing(
    service: Arc<dyn ExecutionService>,
    options: ApiOptions,
    closing: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let state = AppState {
        service,
        watchers: Arc::new(tokio::sync::Semaphore::new(options.watch.max_watchers)),
        options: Arc::new(options),
        closing,
    };
    Router::new()
        .route("/v1/executions", post(handlers::submit).get(handlers::list))
        .route("/v1/executions/watch", get(watch::watch_all))
        .route("/v1/executions/{id}/watch", get(watch::watch_one))
        .route("/v1/executions:batch", post(handlers::submit_batch))
        .route("/v1/executions/{id}", get(handlers::get_one))
        .route("/v1/executions/{id}/events", get(handlers::events))
        .route("/v1/executions/{id}/outputs", get(handlers::outputs))
        .route("/v1/executions/{id}/abort", post(handlers::abort))
        .route("/v1/executions/{id}/wait", get(inspect::wait))
        .route("/v1/executions/{id}/files", get(inspect::files))
        .route("/v1/executions/{id}/file", get(inspect::file))
        .route("/v1/quotas", get(inspect::quotas))
        .route("/v1/plugins", get(handlers::plugins))
        .route("/v1/nodes", get(handlers::nodes))
        .route("/v1/openapi.json", get(handlers::openapi))
        .route("/v1/prune", post(prune::prune))
        .route("/healthz", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .layer(axum::middleware::from_fn(json_errors::every_error_in_json))
        .layer(axum::extract::DefaultBodyLimit::disable())
        // The console's static files: no token (the page asks for it).
        .merge(console::routes())
        .with_state(state)
}

/// Whether an address is loopback (`127.0.0.0/8`, `::1`).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Serves the API on `listener` until `shutdown` completes, within the
/// options' connection limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<dyn ExecutionService>,
    options: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = options.connections;
    // Watches never end on their own: they end when shutdown starts, so
    // the drain does not wait for them.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = closing.send(true);
    };
    server::serve_connections(listener, router_closing(service, options, closed), limits, shutdown).await
}
