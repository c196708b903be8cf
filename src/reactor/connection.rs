//! Driving one HTTP/1.1 connection, whatever the runtime: the optional TLS
//! handshake, hyper, the deadlines, and the connection counts.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hyper::rt::Timer;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::ConnectionService;
use super::deadline::{self, Limits, Phase, Timed};
use super::tls::TlsConfig;
use crate::shutdown::Shutdown;

/// Serves requests on `stream` until the client closes, an error ends the
/// connection, it overstays a deadline (`limits`, measured on `timer`), or
/// shutdown asks it to finish its current request. With `tls`, the TLS
/// handshake comes first and must finish within the request timeout.
pub(super) async fn serve<St, S>(
    builder: &http1::Builder,
    stream: St,
    tls: Option<&TlsConfig>,
    service: S,
    shutdown: &Shutdown,
    limits: Limits,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: ConnectionService,
{
    let Some(tls) = tls else {
        return serve_http(builder, stream, service, shutdown, limits, timer).await;
    };
    let handshake = tls.acceptor().accept(stream);
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "TLS handshake failed");
                return;
            }
        },
        () = timer.sleep(limits.request) => {
            tracing::debug!("connection closed: TLS handshake timeout");
            return;
        }
        () = shutdown.wait() => return,
    };
    serve_http(builder, stream, service, shutdown, limits, timer).await;
}

async fn serve_http<St, S>(
    builder: &http1::Builder,
    stream: St,
    service: S,
    shutdown: &Shutdown,
    limits: Limits,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: ConnectionService,
{
    let phase = Phase::new();
    let io = TokioIo::new(Timed::new(stream, phase.clone()));
    let mut connection = pin!(builder.serve_connection(io, service));
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = deadline::watchdog(phase, limits, timer) => {
            tracing::debug!("connection closed: request or idle timeout");
            Ok(())
        }
        () = shutdown.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Client errors (bad requests, resets, timeouts) are routine on a
        // public tracker: debug level, never info.
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Connection counts shared by every worker of a reactor: the open count
/// enforces the cap (`max_connections`) and lets shutdown wait for
/// connections to drain; all three are reported in the tracker's metrics.
#[derive(Clone)]
pub struct Connections(Arc<Counts>);

struct Counts {
    max: usize,
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// Held by each connection task; decrements the open count when dropped.
pub(super) struct OpenGuard(Connections);

impl Connections {
    /// Counts of a reactor that keeps at most `max` connections open.
    pub(super) fn new(max: usize) -> Self {
        Self(Arc::new(Counts {
            max,
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }))
    }

    /// Counts a just-accepted connection: a guard to hold while serving it,
    /// or `None` (counted as refused) when the cap is reached and it must be
    /// closed at once, leaving the open ones untouched.
    pub(super) fn admit(&self) -> Option<OpenGuard> {
        if self.count() >= self.0.max {
            self.0.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.0.accepted.fetch_add(1, Ordering::Relaxed);
        self.0.open.fetch_add(1, Ordering::Relaxed);
        Some(OpenGuard(self.clone()))
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.0.open.load(Ordering::Relaxed)
    }

    /// Connections accepted and served since start.
    pub fn accepted(&self) -> u64 {
        self.0.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed on accept (over `max_connections`) since start.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
