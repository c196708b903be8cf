//! The `io-uring` reactor: monoio on Linux io_uring, one thread per worker.
//!
//! Like `per-core`, each worker owns its listeners (`SO_REUSEPORT`) and its
//! connections, but sockets are driven by io_uring completions instead of
//! epoll readiness: accept, read and write are submitted to the ring and
//! complete without a readiness round trip. Streams reach the server through
//! monoio-compat's tokio-style adaptor.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use monoio_compat::TcpStreamCompat;

use super::{
    ConnectionInfo, Connections, DatagramHandler, Early, Listener, Options, StreamServer, Udp,
    datagram, upkeep,
};
use crate::shutdown::Shutdown;

/// Ring entries per worker.
const RING_ENTRIES: u32 = 1024;

/// Whether this kernel lets us create a ring with the operations monoio
/// needs; the error names the cause (seccomp, `kernel.io_uring_disabled`,
/// an old kernel).
pub(super) fn availability() -> Result<(), String> {
    if std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    {
        return Err("disabled by MONOIO_FORCE_LEGACY_DRIVER".into());
    }
    if let Err(error) = ::io_uring::IoUring::new(2) {
        let hint = match error.raw_os_error() {
            Some(1) => " (forbidden: sysctl kernel.io_uring_disabled, or a seccomp sandbox)",
            Some(38) => " (the kernel has no io_uring)",
            _ => "",
        };
        return Err(format!("io_uring_setup failed: {error}{hint}"));
    }
    if !monoio::utils::detect_uring() {
        return Err("the kernel lacks io_uring operations monoio needs".into());
    }
    Ok(())
}

/// How each worker's ring is set up. `COOP_TASKRUN`: a completion does not
/// interrupt the worker while it runs in user space; the kernel finishes it
/// at the worker's next system call, which comes soon (every answer is a
/// `send`). `SINGLE_ISSUER`: only the worker that made the ring submits to
/// it (cross-thread wake-ups go through monoio's eventfd), so the kernel
/// skips its locking. Together: keep-alive responses per server CPU-second
/// up by half on the 2-core test machine (docs/benchmarks.md). Kernels
/// before 6.0 refuse the flags; they get a plain ring.
fn ring_builder() -> ::io_uring::Builder {
    let tuned = tuned_ring();
    if tuned.build(2).is_ok() {
        tuned
    } else {
        ::io_uring::IoUring::builder()
    }
}

fn tuned_ring() -> ::io_uring::Builder {
    let mut tuned = ::io_uring::IoUring::builder();
    tuned.setup_coop_taskrun().setup_single_issuer();
    tuned
}

pub(super) fn serve<Srv: StreamServer>(
    options: &Options,
    groups: Vec<Vec<Listener>>,
    mut udp: Udp,
    open: Connections,
    server: Arc<Srv>,
    shutdown: Shutdown,
) -> io::Result<()> {
    availability().map_err(io::Error::other)?;
    let mut workers = Vec::with_capacity(groups.len());
    for (index, listeners) in groups.into_iter().enumerate() {
        let sockets = udp.of_worker(index);
        let handler = udp.handler.clone();
        let (server, open, shutdown, options) = (
            server.clone(),
            open.clone(),
            shutdown.clone(),
            options.clone(),
        );
        let worker = thread::Builder::new()
            .name(format!("shoal-uring-{index}"))
            .spawn(move || -> io::Result<()> {
                let mut runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(RING_ENTRIES)
                    .uring_builder(ring_builder())
                    .enable_timer()
                    .build()?;
                runtime.block_on(worker(
                    listeners,
                    (sockets, handler),
                    options,
                    server,
                    open,
                    shutdown,
                ))
            })?;
        workers.push(worker);
    }
    super::join_workers(workers)
}

async fn worker<Srv: StreamServer>(
    listeners: Vec<Listener>,
    (sockets, handler): (Vec<std::net::UdpSocket>, Arc<dyn DatagramHandler>),
    options: Options,
    server: Arc<Srv>,
    open: Connections,
    shutdown: Shutdown,
) -> io::Result<()> {
    if upkeep::registered() {
        monoio::spawn(upkeep::tick_monoio());
    }
    let mut udp_loops = Vec::new();
    for socket in sockets {
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        udp_loops.push(monoio::spawn(datagram::serve_monoio(
            socket,
            handler,
            datagram::Coalesce::new(options.udp_nap),
            shutdown,
        )));
    }
    let mut accept_loops = Vec::new();
    for listener in listeners {
        accept_loops.push(monoio::spawn(accept_loop(
            TcpListener::from_std(listener.socket)?,
            listener.index,
            listener.tls,
            server.clone(),
            open.clone(),
            shutdown.clone(),
        )));
    }
    for accept_loop in accept_loops {
        accept_loop.await;
    }
    for udp_loop in udp_loops {
        udp_loop.await?;
    }
    let deadline = Instant::now() + options.shutdown_grace;
    while open.count() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn accept_loop<Srv: StreamServer>(
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
                tracing::warn!(%error, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
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
        // As on the other reactors: the listener defers accepts until the
        // request has arrived, so the server can usually answer right here.
        let socket = DontWait(stream.as_raw_fd());
        let mut recv = |buf: &mut [u8]| socket.recv(buf);
        let mut send = |buf: &[u8], last: bool| socket.send(buf, last);
        let early = Early {
            recv: &mut recv,
            send: &mut send,
        };
        let Some(conn) = server.accepted(info, Some(early)) else {
            close_now(stream);
            continue;
        };
        let (server, shutdown) = (server.clone(), shutdown.clone());
        monoio::spawn(async move {
            let stream = TcpStreamCompat::new(stream);
            server.serve_local(conn, stream, &shutdown).await;
            drop(guard);
        });
    }
}

/// Closes a connection answered at accept time with `close(2)` here and
/// now. Dropped, monoio would close it through the ring: the close's
/// completion then woke the worker once more per connection (1.8
/// `io_uring_enter` and 0.8 context switches per connection, against 1.0
/// and 0.5 for a direct close), and the answer sent with `MSG_MORE` waited
/// for that close to leave with its FIN.
fn close_now(stream: monoio::net::TcpStream) {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    // No operation of the ring ever held this stream (the answer went by
    // plain `recv`/`send` on its descriptor), so it is ours alone.
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up monoio's ownership of `fd`, which is
    // open; the `OwnedFd` closes it once, when dropped here.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// `recv` and `send` that never wait, on a socket that may be blocking:
/// io_uring needs no `O_NONBLOCK`, so monoio does not set it, and a plain
/// read could stall the whole worker.
struct DontWait(RawFd);

impl DontWait {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
        // call, and the descriptor is the caller's open stream.
        let n = unsafe {
            libc::recv(
                self.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// `last`: see [`Early`].
    fn send(&self, buf: &[u8], last: bool) -> io::Result<usize> {
        let more = if last { super::LAST_SEND_FLAGS } else { 0 };
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the
        // call, and the descriptor is the caller's open stream.
        let n = unsafe {
            libc::send(
                self.0,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | more,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workers' rings get the tuned flags wherever the kernel takes
    /// them, and a working ring where it does not.
    #[test]
    fn rings_are_tuned_where_the_kernel_allows() {
        if availability().is_err() {
            return;
        }
        let ring: ::io_uring::IoUring = ring_builder().build(8).expect("a ring");
        let kernel_takes_them = tuned_ring().build(8).is_ok();
        assert_eq!(ring.params().is_setup_single_issuer(), kernel_takes_them);
    }
}
