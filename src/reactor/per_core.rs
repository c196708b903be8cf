//! The `per-core` reactor: one single-threaded tokio runtime per worker.
//!
//! Each worker thread owns its runtime and its own `SO_REUSEPORT` listener
//! for every address; the kernel spreads new connections across them, and a
//! connection is accepted, served and closed on one thread with no work
//! stealing and no cross-thread wake-ups. Only the store is shared.

use std::io;
use std::sync::Arc;
use std::thread;

use super::tokio_rt::{accept_loop, drain};
use super::{Connections, Listener, Options, StreamServer, Udp, datagram, upkeep};
use crate::shutdown::Shutdown;

/// One worker's current-thread runtime.
pub(super) fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .on_thread_park(upkeep::maybe_run)
        .enable_io()
        .enable_time()
        .build()
}

/// Serves each group of listeners on its own thread, driving the runtime
/// of the same index (built here for a group that has none yet).
pub(super) fn serve<Srv: StreamServer>(
    runtimes: Vec<tokio::runtime::Runtime>,
    options: &Options,
    groups: Vec<Vec<Listener>>,
    mut udp: Udp,
    open: Connections,
    server: Arc<Srv>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let grace = options.shutdown_grace;
    let mut workers = Vec::with_capacity(groups.len());
    let mut runtimes = runtimes.into_iter();
    for (index, listeners) in groups.into_iter().enumerate() {
        let runtime = match runtimes.next() {
            Some(runtime) => runtime,
            None => runtime()?,
        };
        let (sockets, handler) = (udp.of_worker(index), udp.handler.clone());
        let coalesce = udp.coalesce;
        let (server, open, shutdown) = (server.clone(), open.clone(), shutdown.clone());
        let worker = thread::Builder::new()
            .name(format!("shoal-core-{index}"))
            .spawn(move || -> io::Result<()> {
                runtime.block_on(async move {
                    if upkeep::registered() {
                        tokio::spawn(upkeep::tick_tokio());
                    }
                    let mut udp_loops = Vec::new();
                    for socket in sockets {
                        let (handler, shutdown) = (handler.clone(), shutdown.clone());
                        udp_loops.push(tokio::spawn(datagram::serve_tokio(
                            socket, handler, coalesce, shutdown,
                        )));
                    }
                    let mut accept_loops = Vec::new();
                    for listener in listeners {
                        accept_loops.push(tokio::spawn(accept_loop(
                            listener.socket,
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
                    // Connections of this thread run on this runtime, so it
                    // must keep running until they are done.
                    drain(&open, grace).await;
                    Ok(())
                })
            })?;
        workers.push(worker);
    }
    super::join_workers(workers)
}
