//! The accept loop: HTTP/1.1 connections served by hyper with a cap on how
//! many are open at once and a deadline for each request's headers, so slow
//! or half-open clients cannot hold the daemon's file descriptors; graceful
//! shutdown waits for the requests in progress.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long shutdown waits for requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    pub header_timeout: Duration,
}

/// Logs at most one line per interval for a repeated event, with the count.
struct Throttled {
    every: Duration,
    last: std::sync::Mutex<Option<Instant>>,
    count: AtomicU64,
}

impl Throttled {
    fn new(every: Duration) -> Self {
        Throttled {
            every,
            last: std::sync::Mutex::new(None),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(n)` (events since the last line) when a line is due.
    fn hit(&self) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            return None;
        }
        *last = Some(now);
        Some(self.count.swap(0, Ordering::Relaxed))
    }
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let refused = Arc::new(Throttled::new(Duration::from_secs(10)));
    let slow = Arc::new(Throttled::new(Duration::from_secs(10)));
    let accept_errors = Throttled::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    if let Some(n) = accept_errors.hit() {
                        log::error!("accept failed ({n} times lately): {e}");
                    }
                    // Out of descriptors: let connections close before trying again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            if let Some(n) = refused.hit() {
                log::warn!(
                    "closed {n} new connection(s), the last from {peer}: {} connections are open \
                     (setting http_max_connections)",
                    limits.max_connections
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let slow = slow.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                report_connection_error(&e, peer, limits.header_timeout, &slow);
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        log::warn!(
            "requests still running after {} s at shutdown were cut off",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

fn report_connection_error(e: &hyper::Error, peer: SocketAddr, header_timeout: Duration, slow: &Throttled) {
    if e.is_timeout() {
        if let Some(n) = slow.hit() {
            log::warn!(
                "cut off {n} slow client(s), the last {peer}: no complete request headers within {} s \
                 (setting http_header_timeout_secs)",
                header_timeout.as_secs_f64()
            );
        }
    } else if !e.is_incomplete_message() && !e.is_canceled() {
        log::debug!("connection from {peer} ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_lines_carry_the_count_since_the_last() {
        let t = Throttled::new(Duration::from_secs(3600));
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        *t.last.lock().unwrap() = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(t.hit(), Some(3));
    }
}
