//! UDP sockets: binding one `SO_REUSEPORT` socket per worker for each
//! address, and the receive-answer-send loops that hand each datagram to a
//! [`DatagramHandler`]. What a datagram means is the handler's business.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::pin;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use super::{DatagramHandler, Later};
use crate::shutdown::Shutdown;

/// Receive buffer per loop (without `recvmmsg`): the largest datagram IPv4
/// can carry, so that a long one is seen whole (and refused by length).
#[cfg(any(not(target_os = "linux"), feature = "io-uring"))]
const RECV_BUF: usize = 65_536;
/// Socket receive buffer asked of the kernel (it caps it at
/// `net.core.rmem_max`): room for bursts while a worker is busy.
const SO_RCVBUF: usize = 4 << 20;
/// Datagrams answered per readiness event before yielding to other tasks
/// (where there is no `recvmmsg`).
#[cfg(not(target_os = "linux"))]
const PER_WAKE: usize = 64;

/// Binds a UDP socket; IPv6 ones are IPv6-only, as the TCP listeners.
pub(super) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    // Only a hint: a smaller buffer works, it just drops sooner.
    let _ = socket.set_recv_buffer_size(SO_RCVBUF);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Has `handler` answer the first `n` datagrams of `received` into
/// `answers`; an answer that comes later goes to `later`.
#[cfg(target_os = "linux")]
fn answer_batch(
    received: &super::mmsg::RecvBatch,
    n: usize,
    handler: &dyn DatagramHandler,
    answers: &mut super::mmsg::SendBatch,
    later: &mut impl FnMut(Later, SocketAddr),
) {
    for i in 0..n {
        if let Some((datagram, from)) = received.datagram(i) {
            if let Some(answer) = handler.handle(datagram, from, &mut answers.bytes) {
                later(answer, from);
            }
            answers.push(from);
        }
    }
}

/// Awaits an answer that comes later (a shared store's), then sends it to
/// `to` from its own task with non-blocking sends; a full send buffer is
/// waited out with 1 ms naps, for 100 ms at most.
async fn send_later<F: std::future::Future>(
    answer: Later,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    sleep: impl Fn(std::time::Duration) -> F,
) {
    let bytes = answer.await;
    if bytes.is_empty() {
        return;
    }
    for _ in 0..100 {
        match socket.send_to(&bytes, to) {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(error) => {
                tracing::debug!(%error, "UDP send failed");
                return;
            }
        }
    }
}

/// Sends every answer of `answers` with non-blocking `sendmmsg`. A full
/// socket buffer is rare: it is waited out with 1 ms naps on the runtime's
/// `sleep`, for 100 ms at most, then the rest is dropped.
#[cfg(target_os = "linux")]
async fn send_all<F: std::future::Future>(
    answers: &mut super::mmsg::SendBatch,
    fd: std::os::fd::RawFd,
    sleep: impl Fn(std::time::Duration) -> F,
) {
    let mut tries = 0;
    while let Err(error) = answers.send(fd) {
        tries += 1;
        if tries > 100 {
            tracing::debug!(%error, "UDP answers dropped: the send buffer stays full");
            return;
        }
        sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Serves `socket` on the current tokio runtime until shutdown: waits for
/// readiness, then takes what is queued in batches (`recvmmsg`), answers
/// each datagram and sends the answers in one `sendmmsg`. The socket is
/// registered for reading only: as writable too, every datagram sent would
/// wake epoll when the kernel frees it. A full send buffer is rare and is
/// waited out with short sleeps.
#[cfg(target_os = "linux")]
pub(super) async fn serve_tokio(
    socket: UdpSocket,
    handler: Arc<dyn DatagramHandler>,
    shutdown: Shutdown,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::mmsg::{BATCH, RecvBatch, SendBatch};

    // Later answers are sent from their own tasks, on a second descriptor.
    let sender = Arc::new(socket.try_clone()?);
    let mut later = |answer, to| {
        tokio::spawn(send_later(answer, sender.clone(), to, tokio::time::sleep));
    };
    // SAFETY: the AsyncFd owns the std socket, whose descriptor stays open
    // and the same until the AsyncFd is dropped.
    let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(|error| error.into_parts().1)?;
    let fd = socket.get_ref().as_raw_fd();
    let mut received = RecvBatch::new();
    let mut answers = SendBatch::new();
    let mut stopping = pin!(shutdown.wait());
    loop {
        let mut ready = tokio::select! {
            biased;
            () = &mut stopping => return Ok(()),
            ready = socket.readable() => ready?,
        };
        // A few batches per wake-up, then let other tasks run.
        for _ in 0..4 {
            let n = match ready.try_io(|_| received.recv(fd)) {
                Ok(Ok(n)) => n,
                // Would block: readiness is cleared, wait for more.
                Err(_) => break,
                // ICMP errors of earlier sends surface here: not fatal.
                Ok(Err(error)) => {
                    tracing::debug!(%error, "UDP receive failed");
                    continue;
                }
            };
            answers.clear();
            answer_batch(&received, n, &*handler, &mut answers, &mut later);
            send_all(&mut answers, fd, tokio::time::sleep).await;
            if n < BATCH {
                break;
            }
        }
    }
}

/// Serves `socket` on the current tokio runtime until shutdown: waits for
/// readiness, then answers what is queued without waiting again.
#[cfg(not(target_os = "linux"))]
pub(super) async fn serve_tokio(
    socket: UdpSocket,
    handler: Arc<dyn DatagramHandler>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let sender = Arc::new(socket.try_clone()?);
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::with_capacity(4096);
    let mut stopping = pin!(shutdown.wait());
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => return Ok(()),
            ready = socket.readable() => ready?,
        }
        for _ in 0..PER_WAKE {
            let (n, from) = match socket.try_recv_from(&mut buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors of earlier sends surface here: not fatal.
                Err(error) => {
                    tracing::debug!(%error, "UDP receive failed");
                    continue;
                }
            };
            out.clear();
            if let Some(answer) = handler.handle(&buf[..n], from, &mut out) {
                let sender = sender.clone();
                tokio::spawn(send_later(answer, sender, from, tokio::time::sleep));
            }
            if out.is_empty() {
                continue;
            }
            match socket.try_send_to(&out, from) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = socket.send_to(&out, from).await {
                        tracing::debug!(%error, "UDP send failed");
                    }
                }
                Err(error) => tracing::debug!(%error, "UDP send failed"),
            }
        }
    }
}

/// Serves `socket` on the current monoio (io_uring) runtime until shutdown.
/// A receive on the ring waits for the first datagram; what else is queued
/// by then is taken with non-blocking `recvmmsg` and all the answers go out
/// in one non-blocking `sendmmsg`, as on the other reactors.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(super) async fn serve_monoio(
    socket: UdpSocket,
    handler: Arc<dyn DatagramHandler>,
    shutdown: Shutdown,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    use super::mmsg::{BATCH, RecvBatch, SendBatch};

    let fd = socket.as_raw_fd();
    // Later answers are sent from their own tasks, on a second descriptor.
    let sender = Arc::new(socket.try_clone()?);
    let mut later = |answer, to| {
        monoio::spawn(send_later(answer, sender.clone(), to, monoio::time::sleep));
    };
    let socket = monoio::net::udp::UdpSocket::from_std(socket)?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut received = RecvBatch::new();
    let mut answers = SendBatch::new();
    let mut stopping = pin!(shutdown.wait());
    loop {
        let (first, back) = tokio::select! {
            biased;
            () = &mut stopping => return Ok(()),
            first = socket.recv_from(buf) => first,
        };
        buf = back;
        answers.clear();
        match first {
            Ok((n, from)) => {
                if let Some(answer) = handler.handle(&buf[..n], from, &mut answers.bytes) {
                    later(answer, from);
                }
                answers.push(from);
            }
            Err(error) => tracing::debug!(%error, "UDP receive failed"),
        }
        // What else is queued, without waiting.
        for _ in 0..4 {
            let Ok(n) = received.recv(fd) else { break };
            answer_batch(&received, n, &*handler, &mut answers, &mut later);
            if n < BATCH {
                break;
            }
        }
        send_all(&mut answers, fd, monoio::time::sleep).await;
    }
}
