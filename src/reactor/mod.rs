//! The reactor: listeners, runtime and connection tasks.
//!
//! Like Twisted's reactor, one event loop design drives all socket I/O and the
//! operator picks which at start-up. A reactor is given bound listeners, a
//! function that makes a hyper service for each accepted connection, and a
//! [`Shutdown`]; it accepts, serves HTTP/1.1 through hyper's runtime traits,
//! and on shutdown stops accepting and lets open connections finish. It knows
//! nothing of BitTorrent: the service is opaque to it.

mod connection;
mod tokio_rt;

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use socket2::{Domain, Protocol, Socket, Type};

use crate::shutdown::Shutdown;

/// The socket I/O runtimes shoal can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// tokio's multi-threaded, work-stealing runtime (mio underneath).
    Tokio,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tokio => "tokio",
        }
    }

    /// The OS readiness API underneath, as the operator knows it.
    pub fn poller(self) -> &'static str {
        match self {
            Kind::Tokio => mio_poller(),
        }
    }
}

/// What mio uses on this OS.
fn mio_poller() -> &'static str {
    if cfg!(any(
        target_os = "linux",
        target_os = "android",
        target_os = "illumos"
    )) {
        "epoll"
    } else if cfg!(windows) {
        "IOCP"
    } else {
        "kqueue"
    }
}

/// How a reactor runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    /// Worker threads.
    pub workers: usize,
    /// A connection that has not sent a complete request head within this
    /// time is closed (slowloris).
    pub header_read_timeout: Duration,
    /// Open connections get this long to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

impl Options {
    /// The human description used at start-up, e.g.
    /// `tokio multi-thread, epoll, 2 workers`.
    pub fn describe(&self) -> String {
        let flavour = match self.kind {
            Kind::Tokio => "tokio multi-thread",
        };
        format!(
            "{flavour}, {}, {} workers",
            self.kind.poller(),
            self.workers
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who is on each end of an accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// A per-connection HTTP service a reactor can drive.
pub trait ConnectionService:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S> ConnectionService for S where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// Binds a listening TCP socket. IPv6 sockets are IPv6-only, so that
/// `0.0.0.0:P` and `[::]:P` can both be bound, as the default does.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Serves `listeners` until `shutdown` triggers and the open connections have
/// finished (or the grace period ends). Blocks the calling thread.
pub fn serve<M, S>(
    options: &Options,
    listeners: Vec<TcpListener>,
    make_service: M,
    shutdown: Shutdown,
) -> io::Result<()>
where
    M: Fn(ConnectionInfo) -> S + Send + Sync + 'static,
    S: ConnectionService,
{
    match options.kind {
        Kind::Tokio => tokio_rt::serve(options, listeners, make_service, shutdown),
    }
}
