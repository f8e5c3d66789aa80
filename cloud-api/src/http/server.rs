//! The accept loop: what a connection may cost. Every connection gets a header read timeout
//! (which also closes connections that send nothing, and idle keep-alive connections), open
//! connections are capped, HTTP/2 without TLS (h2c) is spoken only when configured, and the
//! caller's address is handed to the handlers (`ConnectInfo`). A graceful shutdown stops
//! accepting and lets requests in flight finish, for a bounded time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use super::config::HttpConfig;

/// How long requests in flight may take to finish after shutdown began.
const DRAIN: Duration = Duration::from_secs(30);
/// The first bytes of an HTTP/2 connection without TLS.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `router` on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    raise_open_files_limit(limits.max_connections);
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    let (h1, h2) = (Arc::new(h1), Arc::new(h2));
    let h2c = limits.h2c;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            });
        let (h1, h2, watcher) = (h1.clone(), h2.clone(), graceful.watcher());
        tokio::spawn(async move {
            let ended = if h2c && speaks_h2(&stream, header_timeout).await {
                let conn = h2.serve_connection(TokioIo::new(stream), service);
                watcher.watch(conn).await.map_err(|e| e.to_string())
            } else {
                let conn = h1.serve_connection(TokioIo::new(stream), service);
                watcher.watch(conn).await.map_err(|e| e.to_string())
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    info!("HTTP: no longer accepting; waiting for requests in flight");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {DRAIN:?}; closing them");
    }
    Ok(())
}

/// Whether the client opens with HTTP/2's preface (h2c), judged from its first bytes as they
/// arrive; a client that says nothing within `timeout` is served as HTTP/1, whose header read
/// timeout then closes it.
async fn speaks_h2(stream: &TcpStream, timeout: Duration) -> bool {
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await.unwrap_or(0);
            if n == 0 || buf[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, sniff).await.unwrap_or(false)
}

/// Each connection is an open file: the soft limit is raised to the hard one (systemd's
/// default soft limit is 1,024), and a cap above what the process may open is said at start.
fn raise_open_files_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if (limit as usize) < max_connections + 256 => warn!(
            limit,
            max_connections,
            "the open-files limit is below http.max_connections: raise LimitNOFILE"
        ),
        Ok(limit) => debug!(limit, "open-files limit"),
        Err(e) => warn!(error = %e, "the open-files limit could not be read"),
    }
}
