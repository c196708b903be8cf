//! Driving one HTTP/1.1 connection, whatever the runtime.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::server::conn::http1;

use super::ConnectionService;
use crate::shutdown::Shutdown;

/// Serves requests on `io` until the client closes, an error or timeout ends
/// the connection, or shutdown asks it to finish its current request.
pub(super) async fn serve<I, S>(builder: &http1::Builder, io: I, service: S, shutdown: &Shutdown)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: ConnectionService,
{
    let mut connection = pin!(builder.serve_connection(io, service));
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
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
