//! The `tokio` reactor: one multi-threaded, work-stealing tokio runtime.
//! Its accept loop is shared with the `per-core` reactor.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::{ConnectionInfo, Connections, Early, Listener, Options, StreamServer, Udp, datagram};
use crate::shutdown::Shutdown;

pub(super) fn serve<Srv: StreamServer>(
    options: &Options,
    groups: Vec<Vec<Listener>>,
    mut udp: Udp,
    open: Connections,
    server: Arc<Srv>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .thread_name("shoal-worker")
        .enable_io()
        .enable_time()
        .build()?;
    let grace = options.shutdown_grace;
    let options = options.clone();
    runtime.block_on(async move {
        // Each worker's UDP sockets get a task; the runtime spreads them.
        let mut udp_loops = Vec::new();
        for worker in 0..options.workers {
            for socket in udp.of_worker(worker) {
                let (handler, shutdown) = (udp.handler.clone(), shutdown.clone());
                udp_loops.push(tokio::spawn(datagram::serve_tokio(
                    socket, handler, shutdown,
                )));
            }
        }
        let mut accept_loops = Vec::new();
        for listener in groups.into_iter().flatten() {
            accept_loops.push(tokio::spawn(accept_loop(
                TcpListener::from_std(listener.socket)?,
                listener.index,
                listener.tls,
                server.clone(),
                open.clone(),
                shutdown.clone(),
            )));
        }
        for accept_loop in accept_loops {
            let _ = accept_loop.await;
        }
        for udp_loop in udp_loops {
            udp_loop.await.map_err(io::Error::other)??;
        }
        drain(&open, grace).await;
        Ok(())
    })
}

/// Waits until the open connections have finished or `grace` has passed.
pub(super) async fn drain(open: &Connections, grace: Duration) {
    let deadline = Instant::now() + grace;
    while open.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Accepts connections until shutdown, each served on its own task of the
/// current runtime (unless the server answers it at accept time).
pub(super) async fn accept_loop<Srv: StreamServer>(
    listener: TcpListener,
    index: usize,
    tls: bool,
    server: Arc<Srv>,
    open: Connections,
    shutdown: Shutdown,
) {
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
        let Some(guard) = open.admit() else {
            tracing::debug!(%remote, "connection refused: max_connections reached");
            continue;
        };
        let info = ConnectionInfo {
            remote,
            local,
            tls,
            listener: index,
        };
        // Only where the listener defers accepts until data arrives (Linux):
        // elsewhere the first read would nearly always come too early.
        let conn = if cfg!(target_os = "linux") {
            // tokio's accepted sockets are non-blocking.
            use std::io::{Read, Write};
            let socket = socket2::SockRef::from(&stream);
            let mut recv = |buf: &mut [u8]| (&*socket).read(buf);
            let mut send = |buf: &[u8]| (&*socket).write(buf);
            let early = Early {
                recv: &mut recv,
                send: &mut send,
            };
            server.accepted(info, Some(early))
        } else {
            server.accepted(info, None)
        };
        let Some(conn) = conn else {
            continue;
        };
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tokio::spawn(async move {
            server.serve(conn, stream, &shutdown).await;
            drop(guard);
        });
    }
}
