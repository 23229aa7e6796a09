//! The HTTP/1.1 metrics endpoint: `GET /metrics` answers with [`render`]'s
//! text, anything else with 404 or 405. hyper speaks the protocol; this file
//! adds the bounds that keep a client from holding the daemon's resources.
//!
//! Bounds (also in `docs/metrics.md`):
//! - at most [`MAX_CONNECTIONS`] connections at once; one more is closed as
//!   soon as it is accepted, before anything is read from it;
//! - a request head (request line and headers) must arrive whole within
//!   [`HEADER_READ_TIMEOUT`] of the server starting to wait for it, on a new
//!   connection and after every response on a kept-alive one; so that is also
//!   the longest a kept-alive connection may sit idle;
//! - a request head is at most [`MAX_REQUEST_HEAD_BYTES`] (larger: 431);
//! - request bodies are never read (hyper closes the connection after the
//!   response rather than read one);
//! - a connection lives at most [`MAX_CONNECTION_LIFETIME`], however busy:
//!   then the response in progress gets [`SHUTDOWN_GRACE`] to finish and the
//!   connection is closed. This bounds a client that sends requests but never
//!   reads the responses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE as CONTENT_TYPE_HEADER, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{CONTENT_TYPE, MetricsSnapshot, render};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a request head may take to arrive, counted from when the server
/// starts waiting for it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The read buffer of a connection, hence the largest request head.
/// (hyper's smallest allowed buffer is 8 KiB.)
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// How long a connection may stay open, however busy.
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// On shutdown or at the end of a connection's lifetime, how long the
/// response in progress gets to finish before the connection is dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// After a failed accept (say, out of file descriptors), how long to wait
/// before the next, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Produces the snapshot one scrape reports.
pub type SnapshotFn = Arc<dyn Fn() -> MetricsSnapshot + Send + Sync>;

/// The limits [`serve_http`] applies; tests shrink them.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    max_connections: usize,
    header_read_timeout: Duration,
    connection_lifetime: Duration,
}

impl Bounds {
    const DEFAULT: Bounds = Bounds {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        connection_lifetime: MAX_CONNECTION_LIFETIME,
    };
}

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled, then
/// stops accepting, lets each response in progress finish (at most
/// [`SHUTDOWN_GRACE`]), closes every connection and returns.
///
/// `snapshot` is called once per scrape on a blocking thread
/// (`spawn_blocking`), rendering included, so it may take the registry's
/// locks and wait for them without stalling the runtime; at most
/// [`MAX_CONNECTIONS`] calls run at once.
pub async fn serve_http(listener: TcpListener, snapshot: SnapshotFn, shutdown: CancellationToken) {
    serve_with(listener, snapshot, shutdown, Bounds::DEFAULT).await;
}

async fn serve_with(
    listener: TcpListener,
    snapshot: SnapshotFn,
    shutdown: CancellationToken,
    bounds: Bounds,
) {
    let permits = Arc::new(Semaphore::new(bounds.max_connections));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics: accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: {} connections open, closing a new one", bounds.max_connections);
            drop(stream);
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            permit,
            snapshot.clone(),
            shutdown.clone(),
            bounds,
        ));
    }
    connections.close();
    connections.wait().await;
}

/// Serves one connection; `_permit` is its slot among the
/// [`MAX_CONNECTIONS`], given back when this returns.
async fn serve_connection(
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    snapshot: SnapshotFn,
    shutdown: CancellationToken,
    bounds: Bounds,
) {
    let service = service_fn(move |request| respond(request, snapshot.clone()));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => return log_end(ended),
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(bounds.connection_lifetime) => {}
    }
    // Close after the response in progress, if it comes within the grace;
    // past that the connection is dropped.
    connection.as_mut().graceful_shutdown();
    if let Ok(ended) = tokio::time::timeout(SHUTDOWN_GRACE, connection).await {
        log_end(ended);
    }
}

fn log_end(ended: hyper::Result<()>) {
    if let Err(error) = ended {
        // A client that goes away or times out is no news.
        tracing::debug!(%error, "metrics: connection ended");
    }
}

async fn respond(
    request: Request<Incoming>,
    snapshot: SnapshotFn,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    if request.method() != Method::GET {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return Ok(response);
    }
    match tokio::task::spawn_blocking(move || render(&snapshot())).await {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
            Ok(response)
        }
        Err(error) => {
            tracing::error!(%error, "metrics: taking the snapshot failed");
            Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the snapshot failed\n",
            ))
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE_HEADER,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
