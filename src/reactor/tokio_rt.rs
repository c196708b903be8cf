//! The `tokio` reactor: one multi-threaded, work-stealing tokio runtime.
//! Its accept loop is shared with the `per-core` reactor.

use std::io;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;

use super::connection::{self, OpenConnections};
use super::deadline::Limits;
use super::{ConnectionInfo, ConnectionService, Options};
use crate::shutdown::Shutdown;

pub(super) fn serve<M, S>(
    options: &Options,
    groups: Vec<Vec<StdListener>>,
    make_service: M,
    shutdown: Shutdown,
) -> io::Result<()>
where
    M: Fn(ConnectionInfo) -> S + Send + Sync + 'static,
    S: ConnectionService,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .thread_name("shoal-worker")
        .enable_io()
        .enable_time()
        .build()?;
    let builder = Arc::new(http1_builder(options));
    let make_service = Arc::new(make_service);
    let open = OpenConnections::default();
    let max_connections = options.max_connections;
    let limits = options.limits();
    let grace = options.shutdown_grace;
    runtime.block_on(async move {
        let mut accept_loops = Vec::new();
        for listener in groups.into_iter().flatten() {
            accept_loops.push(tokio::spawn(accept_loop(
                TcpListener::from_std(listener)?,
                builder.clone(),
                make_service.clone(),
                open.clone(),
                max_connections,
                limits,
                shutdown.clone(),
            )));
        }
        for accept_loop in accept_loops {
            let _ = accept_loop.await;
        }
        drain(&open, grace).await;
        Ok(())
    })
}

/// hyper's HTTP/1.1 settings, on tokio's timer.
pub(super) fn http1_builder(options: &Options) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(options.max_request_bytes)
        .keep_alive(true);
    builder
}

/// Waits until the open connections have finished or `grace` has passed.
pub(super) async fn drain(open: &OpenConnections, grace: Duration) {
    let deadline = Instant::now() + grace;
    while open.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Accepts connections until shutdown, each served on its own task of the
/// current runtime.
pub(super) async fn accept_loop<M, S>(
    listener: TcpListener,
    builder: Arc<http1::Builder>,
    make_service: Arc<M>,
    open: OpenConnections,
    max_connections: usize,
    limits: Limits,
    shutdown: Shutdown,
) where
    M: Fn(ConnectionInfo) -> S + Send + Sync + 'static,
    S: ConnectionService,
{
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if super::SET_NODELAY_ON_ACCEPT {
            let _ = stream.set_nodelay(true);
        }
        if open.count() >= max_connections {
            // Over the cap: close at once; open connections are untouched.
            tracing::debug!(%remote, "connection refused: max_connections reached");
            drop(stream);
            continue;
        }
        let service = make_service(ConnectionInfo { remote, local });
        let guard = open.open();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let timer = TokioTimer::new();
            connection::serve(&builder, stream, service, &shutdown, limits, &timer).await;
            drop(guard);
        });
    }
}
