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

/// When a UDP loop naps to gather datagrams.
///
/// Under load, datagrams arrive a few at a time between two reads; reading
/// each little group costs a `recvmmsg` and a `sendmmsg` for two or three
/// datagrams. After such a batch the loop sleeps briefly, so the next read
/// finds a bigger one: fewer system calls and fewer wake-ups per request.
/// A lone datagram is no sign of load, so it never leads to a nap, and a
/// batch that is already big does not need one. The answers of a batch are
/// sent before the nap, so it delays only datagrams that arrive during it.
///
/// The nap blocks the worker thread (`std::thread::sleep`): the runtimes'
/// timers count milliseconds, far too coarse for tens of microseconds. Other
/// tasks of that worker wait out the nap with the datagrams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coalesce {
    nap: std::time::Duration,
}

impl Coalesce {
    /// Batches of fewer datagrams than this, but more than one, are followed
    /// by a nap: at this size the calls' fixed cost is well shared.
    #[cfg(target_os = "linux")]
    const ENOUGH: usize = super::mmsg::BATCH / 4;
    #[cfg(not(target_os = "linux"))]
    const ENOUGH: usize = 8;

    /// Naps of `nap` (zero: never nap).
    pub fn new(nap: std::time::Duration) -> Self {
        Self { nap }
    }

    /// Whether a batch of `n` datagrams, just answered, calls for a nap.
    pub fn after(self, n: usize) -> bool {
        !self.nap.is_zero() && (2..Self::ENOUGH).contains(&n)
    }

    pub fn nap(self) {
        std::thread::sleep(self.nap);
    }
}

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
/// each datagram and sends the answers in one `sendmmsg`; after a small
/// batch under load it naps (see [`Coalesce`]) and reads again. The socket
/// is registered for reading only: as writable too, every datagram sent
/// would wake epoll when the kernel frees it. A full send buffer is rare and
/// is waited out with short sleeps.
#[cfg(target_os = "linux")]
pub(super) async fn serve_tokio(
    socket: UdpSocket,
    handler: Arc<dyn DatagramHandler>,
    coalesce: Coalesce,
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
            if n == BATCH {
                continue;
            }
            if !coalesce.after(n) {
                break;
            }
            coalesce.nap();
        }
    }
}

/// Serves `socket` on the current tokio runtime until shutdown: waits for
/// readiness, then answers what is queued without waiting again.
#[cfg(not(target_os = "linux"))]
pub(super) async fn serve_tokio(
    socket: UdpSocket,
    handler: Arc<dyn DatagramHandler>,
    coalesce: Coalesce,
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
        let mut answered = 0;
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
            answered += 1;
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
        if coalesce.after(answered) {
            coalesce.nap();
        }
    }
}

/// Serves `socket` on the current monoio (io_uring) runtime until shutdown.
/// A receive on the ring waits for the first datagram; what else is queued
/// by then is taken with non-blocking `recvmmsg` and all the answers go out
/// in one non-blocking `sendmmsg`, as on the other reactors. After a small
/// batch under load it naps (see [`Coalesce`]) and reads again before it
/// goes back to the ring.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(super) async fn serve_monoio(
    socket: UdpSocket,
    handler: Arc<dyn DatagramHandler>,
    coalesce: Coalesce,
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
        let mut taken = 1;
        for _ in 0..4 {
            let Ok(n) = received.recv(fd) else { break };
            answer_batch(&received, n, &*handler, &mut answers, &mut later);
            taken += n;
            if n < BATCH {
                break;
            }
        }
        send_all(&mut answers, fd, monoio::time::sleep).await;
        // Under load, a few more batches gathered by naps.
        for _ in 0..4 {
            if !coalesce.after(taken) {
                break;
            }
            coalesce.nap();
            let Ok(n) = received.recv(fd) else { break };
            answers.clear();
            answer_batch(&received, n, &*handler, &mut answers, &mut later);
            send_all(&mut answers, fd, monoio::time::sleep).await;
            taken = n;
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn only_a_small_batch_of_more_than_one_calls_for_a_nap() {
        let coalesce = Coalesce::new(Duration::from_micros(50));
        let napping: Vec<usize> = (0..=super::super::mmsg::BATCH)
            .filter(|&n| coalesce.after(n))
            .collect();
        assert_eq!(napping, (2..Coalesce::ENOUGH).collect::<Vec<_>>());
        let never = Coalesce::new(Duration::ZERO);
        assert!((0..=super::super::mmsg::BATCH).all(|n| !never.after(n)));
    }

    /// Echoes every datagram.
    struct Echo;
    impl DatagramHandler for Echo {
        fn handle(&self, datagram: &[u8], _: SocketAddr, out: &mut Vec<u8>) -> Option<Later> {
            out.extend_from_slice(datagram);
            None
        }
    }

    /// Which loop serves the socket in a test.
    #[derive(Clone, Copy)]
    enum Runtime {
        Tokio,
        #[cfg(feature = "io-uring")]
        Monoio,
    }

    const RUNTIMES: &[Runtime] = &[
        Runtime::Tokio,
        #[cfg(feature = "io-uring")]
        Runtime::Monoio,
    ];

    /// Queues `first` datagrams on a new server socket, then serves it on
    /// its own thread with `runtime`'s loop and naps of `nap`; answers
    /// `first` and then measures how long one more datagram takes to be
    /// answered.
    fn next_answer_after(runtime: Runtime, first: usize, nap: Duration) -> Duration {
        let server = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let to = server.local_addr().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for i in 0..first {
            client.send_to(&[i as u8], to).unwrap();
        }
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let serving = std::thread::spawn(move || -> io::Result<()> {
            let (handler, coalesce) = (Arc::new(Echo), Coalesce::new(nap));
            match runtime {
                Runtime::Tokio => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(serve_tokio(server, handler, coalesce, stop)),
                #[cfg(feature = "io-uring")]
                Runtime::Monoio => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .enable_timer()
                    .build()?
                    .block_on(serve_monoio(server, handler, coalesce, stop)),
            }
        });
        let mut buf = [0u8; 8];
        for _ in 0..first {
            client.recv(&mut buf).unwrap();
        }
        let start = Instant::now();
        client.send_to(b"next", to).unwrap();
        let n = client.recv(&mut buf).unwrap();
        let took = start.elapsed();
        assert_eq!(&buf[..n], b"next");
        shutdown.trigger();
        serving.join().unwrap().unwrap();
        took
    }

    #[test]
    fn a_datagram_that_comes_during_a_nap_waits_for_its_end() {
        let nap = Duration::from_millis(400);
        for &runtime in RUNTIMES {
            // Two datagrams read together: the loop naps after answering them.
            let took = next_answer_after(runtime, 2, nap);
            assert!(
                took >= Duration::from_millis(300),
                "answered after {took:?}"
            );
        }
    }

    #[test]
    fn a_lone_datagram_leads_to_no_nap() {
        let nap = Duration::from_millis(400);
        for &runtime in RUNTIMES {
            let took = next_answer_after(runtime, 1, nap);
            assert!(took < Duration::from_millis(300), "answered after {took:?}");
        }
    }
}
