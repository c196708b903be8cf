//! Driving one HTTP/1.1 connection, whatever the runtime.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::ConnectionService;
use super::deadline::{self, Limits, Phase, Timed};
use crate::shutdown::Shutdown;

/// Serves requests on `stream` until the client closes, an error ends the
/// connection, it overstays a deadline (`limits`, measured on `timer`), or
/// shutdown asks it to finish its current request.
pub(super) async fn serve<St, S>(
    builder: &http1::Builder,
    stream: St,
    service: S,
    shutdown: &Shutdown,
    limits: Limits,
    timer: &impl hyper::rt::Timer,
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

/// Counts open connections so shutdown can wait for them to drain.
#[derive(Clone, Default)]
pub(super) struct OpenConnections(Arc<AtomicUsize>);

/// Held by each connection task; decrements the count when dropped.
pub(super) struct OpenGuard(Arc<AtomicUsize>);

impl OpenConnections {
    pub fn open(&self) -> OpenGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
