//! The `tokio` reactor: one multi-threaded, work-stealing tokio runtime.
//! Its accept loop is shared with the `per-core` reactor.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::{SocketAddr, TcpListener, TcpStream};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{
    ConnectionInfo, Connections, Early, Listener, Options, StreamServer, Udp, datagram, upkeep,
};
use crate::shutdown::Shutdown;

/// The reactor's multi-thread runtime, its workers named `shoal-worker`.
pub(super) fn runtime(options: &Options) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .thread_name("shoal-worker")
        .on_thread_park(upkeep::maybe_run)
        .enable_io()
        .enable_time()
        .build()
}

pub(super) fn serve<Srv: StreamServer>(
    runtime: tokio::runtime::Runtime,
    options: &Options,
    groups: Vec<Vec<Listener>>,
    mut udp: Udp,
    open: Connections,
    server: Arc<Srv>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let grace = options.shutdown_grace;
    let options = options.clone();
    runtime.block_on(async move {
        if upkeep::registered() {
            // One ticker a worker: when they fire together, the idle workers
            // are woken to share them.
            for _ in 0..options.workers {
                tokio::spawn(upkeep::tick_tokio());
            }
        }
        // Each worker's UDP sockets get a task; the runtime spreads them.
        let mut udp_loops = Vec::new();
        for worker in 0..options.workers {
            for socket in udp.of_worker(worker) {
                let (handler, shutdown) = (udp.handler.clone(), shutdown.clone());
                udp_loops.push(tokio::spawn(datagram::serve_tokio(
                    socket,
                    handler,
                    udp.coalesce,
                    shutdown,
                )));
            }
        }
        let mut accept_loops = Vec::new();
        for listener in groups.into_iter().flatten() {
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

/// Accepts connections on `listener` (a non-blocking socket) until
/// shutdown, each served on its own task of the current runtime (unless the
/// server answers it at accept time).
///
/// Sockets are accepted raw and registered with the runtime only when they
/// need a task: one answered and closed at accept time (most connections of
/// a one-request client) then costs accept, read, write and close, not also
/// the registration and deregistration (two `epoll_ctl` calls).
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
    // SAFETY: the `AsyncFd` owns the listener, whose descriptor stays open
    // and the same until the `AsyncFd` is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
    let listener = match registered {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, %local, "listener could not join the runtime");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => return,
            accepted = listener.async_io(Interest::READABLE, accept_nonblocking) => accepted,
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
            use std::io::{Read, Write};
            let mut recv = |buf: &mut [u8]| (&stream).read(buf);
            let mut send = |buf: &[u8], last: bool| {
                if last {
                    // socket2 adds MSG_NOSIGNAL: a gone client is an error,
                    // not a SIGPIPE.
                    socket2::SockRef::from(&stream).send_with_flags(buf, super::LAST_SEND_FLAGS)
                } else {
                    (&stream).write(buf)
                }
            };
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
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, %remote, "connection could not join the runtime");
                continue;
            }
        };
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tokio::spawn(async move {
            server.serve(conn, stream, &shutdown).await;
            drop(guard);
        });
    }
}

/// Accepts one connection as a non-blocking socket (`WouldBlock` when none
/// is waiting).
fn accept_nonblocking(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let socket = socket2::SockRef::from(listener);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: `accept4` writes at most `len` bytes of address into the
        // storage `try_init` hands over, and sets `len` to what it wrote.
        let (fd, addr) = unsafe {
            socket2::SockAddr::try_init(|storage, len| {
                let fd = libc::accept4(
                    socket.as_raw_fd(),
                    storage.cast(),
                    len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                );
                if fd < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(fd)
                }
            })?
        };
        // SAFETY: `fd` is a new socket this function owns from here on.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let remote = addr
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a socket with no IP address"))?;
        Ok((stream, remote))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let (socket, addr) = socket.accept()?;
        socket.set_nonblocking(true)?;
        let remote = addr
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a socket with no IP address"))?;
        Ok((socket.into(), remote))
    }
}
