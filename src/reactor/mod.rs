//! The reactor: runtimes, listeners, sockets and connection tasks.
//!
//! Like Twisted's reactor, one event-loop design drives all socket I/O and
//! the operator picks which at start-up (`--reactor`). A reactor is given the
//! addresses to listen on (TCP and UDP), a [`StreamServer`] for accepted
//! connections, a [`DatagramHandler`] for datagrams, and a [`Shutdown`]. It
//! binds, accepts, counts and schedules, and on shutdown stops accepting and
//! lets open connections finish. It knows neither HTTP nor BitTorrent: what
//! a connection or a datagram says is the server's business.
//!
//! - [`Kind::Tokio`]: one multi-threaded work-stealing tokio runtime.
//! - [`Kind::PerCore`]: one single-threaded tokio runtime per worker, each
//!   with its own `SO_REUSEPORT` listener: a connection lives on one thread.
//! - [`Kind::IoUring`]: monoio on Linux io_uring, one thread per worker, also
//!   with `SO_REUSEPORT` listeners.
//!
//! A listener can be marked TLS; the stream server sees it in
//! [`ConnectionInfo::tls`] and runs the handshake itself.

mod connections;
mod datagram;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod io_uring;
#[cfg(target_os = "linux")]
mod mmsg;
mod per_core;
mod tokio_rt;
mod upkeep;

pub use upkeep::set_worker_upkeep;

pub use connections::Connections;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::shutdown::Shutdown;

/// The socket I/O runtimes shoal can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// tokio's multi-threaded, work-stealing runtime (mio underneath).
    Tokio,
    /// One current-thread tokio runtime per worker, `SO_REUSEPORT` listeners.
    PerCore,
    /// monoio on io_uring, one thread per worker, `SO_REUSEPORT` listeners.
    IoUring,
}

/// What the operator asked for: a reactor by name, or the best usable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Named(Kind),
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Tokio, Kind::PerCore, Kind::IoUring];
    pub const DEFAULT: Kind = Kind::Tokio;
    /// Preference order of `--reactor auto`, best first (from the
    /// measurements in docs/reactors.md: per-core led or tied in both modes
    /// in two runs, io-uring was last in both).
    pub const AUTO_ORDER: [Kind; 3] = [Kind::PerCore, Kind::Tokio, Kind::IoUring];

    /// The name `--reactor` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tokio => "tokio",
            Kind::PerCore => "per-core",
            Kind::IoUring => "io-uring",
        }
    }

    /// The OS I/O interface underneath, as an operator knows it.
    pub fn poller(self) -> &'static str {
        match self {
            Kind::Tokio | Kind::PerCore => mio_poller(),
            Kind::IoUring => "io_uring",
        }
    }

    /// One line on how it works, for `--list-reactors`.
    pub fn summary(self) -> &'static str {
        match self {
            Kind::Tokio => "tokio multi-thread runtime, work stealing across workers",
            Kind::PerCore => {
                "one single-threaded tokio runtime per worker, SO_REUSEPORT listener each"
            }
            Kind::IoUring => "monoio thread per worker on io_uring, SO_REUSEPORT listener each",
        }
    }

    /// `Ok` when this reactor is compiled in and usable on this machine,
    /// otherwise why not.
    pub fn availability(self) -> Result<(), String> {
        match self {
            Kind::Tokio => Ok(()),
            Kind::PerCore => {
                if cfg!(unix) {
                    Ok(())
                } else {
                    Err("needs SO_REUSEPORT (Unix only)".into())
                }
            }
            Kind::IoUring => io_uring_availability(),
        }
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
fn io_uring_availability() -> Result<(), String> {
    io_uring::availability()
}

#[cfg(not(all(target_os = "linux", feature = "io-uring")))]
fn io_uring_availability() -> Result<(), String> {
    if cfg!(target_os = "linux") {
        Err("not compiled in (build with the `io-uring` cargo feature)".into())
    } else {
        Err("io_uring is Linux only".into())
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

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Choice {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        if name == "auto" {
            return Ok(Choice::Auto);
        }
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .map(Choice::Named)
            .ok_or_else(|| {
                format!(
                    "unknown reactor {name:?}: choose auto, {} (see --list-reactors)",
                    Kind::ALL.map(Kind::name).join(", ")
                )
            })
    }
}

impl Choice {
    /// The reactor to run: the named one if usable, or the best usable one
    /// for `auto`. The error names the cause and the alternatives.
    pub fn resolve(self) -> Result<Kind, String> {
        match self {
            Choice::Named(kind) => kind.availability().map(|()| kind).map_err(|why| {
                let others: Vec<&str> = Kind::ALL
                    .into_iter()
                    .filter(|k| *k != kind && k.availability().is_ok())
                    .map(Kind::name)
                    .collect();
                format!(
                    "reactor {kind} cannot run here: {why}; use --reactor {} or --reactor auto",
                    others.join(" or --reactor ")
                )
            }),
            Choice::Auto => Ok(Kind::AUTO_ORDER
                .into_iter()
                .find(|k| k.availability().is_ok())
                .unwrap_or(Kind::Tokio)),
        }
    }
}

/// The `--list-reactors` table.
pub fn list() -> String {
    let mut out = String::from("REACTOR   STATUS\n");
    for kind in Kind::ALL {
        let status = match kind.availability() {
            Ok(()) => "usable".to_owned(),
            Err(why) => format!("unusable: {why}"),
        };
        let default = if kind == Kind::DEFAULT {
            " (default)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<9} {status}{default}\n          {} ({})\n",
            kind.name(),
            kind.summary(),
            kind.poller()
        ));
    }
    let auto = Choice::Auto
        .resolve()
        .map_or_else(|e| e, |k| k.name().to_owned());
    out.push_str(&format!("auto      picks {auto} on this machine\n"));
    out
}

/// How a reactor runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    /// Worker threads.
    pub workers: usize,
    /// Open connections at most; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Open connections get this long to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// How long a UDP loop naps after a small batch under load, to gather a
    /// bigger one (zero: never); see [`datagram::Coalesce`].
    pub udp_nap: Duration,
}

impl Options {
    /// The human description used at start-up and in stats, e.g.
    /// `per-core (epoll), 2 workers`.
    pub fn describe(&self) -> String {
        let poller = match self.kind {
            Kind::Tokio => format!("multi-thread, {}", self.kind.poller()),
            Kind::PerCore => self.kind.poller().to_owned(),
            Kind::IoUring => format!("monoio, {}", self.kind.poller()),
        };
        format!("{} ({poller}), {} workers", self.kind, self.workers)
    }
}

/// An answer to a datagram that is not ready yet: its bytes (empty: no
/// answer), sent to the datagram's source when they come.
pub type Later = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>>;

/// What answers datagrams: the reactor receives each one on a bound UDP
/// socket and sends back what the handler wrote into `out` (nothing: no
/// answer), or, when the handler returns a [`Later`], what that gives once
/// it is ready. It is called on the worker that received the datagram.
pub trait DatagramHandler: Send + Sync + 'static {
    fn handle(&self, datagram: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> Option<Later>;
}

/// Who is on each end of an accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// Whether the connection came in on an HTTPS listener.
    pub tls: bool,
    /// Which listener accepted it: its position in the addresses given to
    /// [`Bound::bind`], plain ones first, then the HTTPS ones.
    pub listener: usize,
}

/// Non-blocking access to a just-accepted socket: `recv` and `send` never
/// wait (they return `WouldBlock` instead), so a server can answer a
/// request that is already there without a task, a timer or a wake-up.
///
/// `send`'s second argument says the bytes are the last the connection
/// sends: the server closes the socket right after. They are then held in
/// the kernel for that close (`MSG_MORE` on Linux) and leave in one segment
/// with the FIN, instead of a data segment and a FIN segment that the
/// client acknowledges one by one: on a connection per request that is
/// two of its packets fewer.
pub struct Early<'a> {
    pub recv: &'a mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    pub send: &'a mut dyn FnMut(&[u8], bool) -> io::Result<usize>,
}

/// The `send` flags for bytes that are the last on their connection (see
/// [`Early`]): held until the close, which sends them with the FIN.
#[cfg(target_os = "linux")]
pub(crate) const LAST_SEND_FLAGS: libc::c_int = libc::MSG_MORE;
#[cfg(not(target_os = "linux"))]
pub(crate) const LAST_SEND_FLAGS: libc::c_int = 0;

/// What runs on accepted connections. The reactor accepts, counts and
/// schedules them; what they speak is the server's business.
pub trait StreamServer: Send + Sync + 'static {
    /// What a connection carries from [`StreamServer::accepted`] to its task.
    type Conn: Send + 'static;

    /// Called in the accept loop for each admitted connection; `early` (where
    /// the listener defers accepts until data arrives) may answer at once.
    /// `None`: the connection is done, close it.
    fn accepted(&self, info: ConnectionInfo, early: Option<Early<'_>>) -> Option<Self::Conn>;

    /// Serves the rest of a connection on a tokio runtime.
    fn serve<St>(
        &self,
        conn: Self::Conn,
        stream: St,
        shutdown: &Shutdown,
    ) -> impl Future<Output = ()> + Send
    where
        St: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Serves the rest of a connection on a thread-local runtime (monoio),
    /// whose streams are not `Send`.
    fn serve_local<St>(
        &self,
        conn: Self::Conn,
        stream: St,
        shutdown: &Shutdown,
    ) -> impl Future<Output = ()>
    where
        St: AsyncRead + AsyncWrite + Unpin + 'static;
}

/// One listening socket and whether it speaks TLS.
pub(crate) struct Listener {
    pub socket: TcpListener,
    pub tls: bool,
    /// See [`ConnectionInfo::listener`].
    pub index: usize,
}

/// Listening sockets, bound and ready to serve.
pub struct Bound {
    options: Options,
    /// One group per thread that accepts: a single group shared by the tokio
    /// reactor's workers, or one group per worker with `SO_REUSEPORT`.
    groups: Vec<Vec<Listener>>,
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    /// One group of UDP sockets per worker (`SO_REUSEPORT` copies, so the
    /// kernel spreads clients over the workers on every reactor).
    udp: Vec<Vec<std::net::UdpSocket>>,
    udp_addrs: Vec<SocketAddr>,
    connections: Connections,
    /// The tokio runtimes the workers will serve on, once built for
    /// [`Bound::runtime_handles`].
    runtimes: Vec<tokio::runtime::Runtime>,
}

impl Bound {
    /// Binds every address, plain HTTP on `addrs` and HTTPS on `tls_addrs`
    /// (once per worker for the thread-per-core reactors). An address with
    /// port 0 gets the same ephemeral port on every worker.
    pub fn bind(
        options: Options,
        addrs: &[SocketAddr],
        tls_addrs: &[SocketAddr],
    ) -> Result<Self, BindError> {
        let shared_nothing = matches!(options.kind, Kind::PerCore | Kind::IoUring);
        let copies = if shared_nothing { options.workers } else { 1 };
        let mut groups: Vec<Vec<Listener>> = (0..copies).map(|_| Vec::new()).collect();
        let mut bound = [Vec::new(), Vec::new()];
        let mut index = 0;
        for (tls, addrs) in [(false, addrs), (true, tls_addrs)] {
            for &addr in addrs {
                let mut target = addr;
                for group in &mut groups {
                    let socket = bind(target, shared_nothing)
                        .map_err(|source| BindError { addr, source })?;
                    // Later copies take the port the first one got.
                    target = socket
                        .local_addr()
                        .map_err(|source| BindError { addr, source })?;
                    group.push(Listener { socket, tls, index });
                }
                bound[usize::from(tls)].push(target);
                index += 1;
            }
        }
        let [addrs, tls_addrs] = bound;
        let connections = Connections::new(options.max_connections);
        Ok(Self {
            udp: (0..options.workers).map(|_| Vec::new()).collect(),
            options,
            groups,
            addrs,
            tls_addrs,
            udp_addrs: Vec::new(),
            connections,
            runtimes: Vec::new(),
        })
    }

    /// The tokio runtimes the workers will serve on (built now, so other
    /// asynchronous work can share them instead of waking a thread of its
    /// own for every request): the `tokio` reactor's one multi-thread
    /// runtime, or one current-thread runtime per `per-core` worker (its
    /// tasks run once the worker serves); none for `io-uring`, whose
    /// workers run monoio.
    pub fn runtime_handles(&mut self) -> io::Result<Vec<tokio::runtime::Handle>> {
        if self.runtimes.is_empty() {
            self.runtimes = match self.options.kind {
                Kind::Tokio => vec![tokio_rt::runtime(&self.options)?],
                Kind::PerCore => (0..self.options.workers)
                    .map(|_| per_core::runtime())
                    .collect::<io::Result<_>>()?,
                Kind::IoUring => Vec::new(),
            };
        }
        Ok(self
            .runtimes
            .iter()
            .map(|runtime| runtime.handle().clone())
            .collect())
    }

    /// Binds a UDP socket per worker on each of `addrs`; port 0 gets one
    /// ephemeral port for all of them.
    pub fn bind_udp(&mut self, addrs: &[SocketAddr]) -> Result<(), BindError> {
        for &addr in addrs {
            let mut target = addr;
            for group in &mut self.udp {
                let socket =
                    datagram::bind(target, true).map_err(|source| BindError { addr, source })?;
                target = socket
                    .local_addr()
                    .map_err(|source| BindError { addr, source })?;
                group.push(socket);
            }
            self.udp_addrs.push(target);
        }
        Ok(())
    }

    /// The UDP addresses bound (ephemeral ports resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The plain HTTP addresses actually bound (ephemeral ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The HTTPS addresses actually bound.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The reactor's connection counts, live while it serves.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Serves until `shutdown` triggers and the open connections have
    /// finished (or the grace period ends): connections through `server`,
    /// datagrams on the UDP sockets through `datagrams`. Blocks the calling
    /// thread.
    pub fn serve<Srv: StreamServer>(
        self,
        server: Srv,
        datagrams: Option<Arc<dyn DatagramHandler>>,
        shutdown: Shutdown,
    ) -> io::Result<()> {
        let Bound {
            options,
            groups,
            connections,
            udp,
            runtimes,
            ..
        } = self;
        let server = Arc::new(server);
        let udp = match datagrams {
            Some(handler) => Udp {
                sockets: udp,
                handler,
                coalesce: datagram::Coalesce::new(options.udp_nap),
            },
            None if udp.iter().all(Vec::is_empty) => Udp::none(),
            None => return Err(io::Error::other("UDP sockets need a datagram handler")),
        };
        let open = connections;
        match options.kind {
            Kind::Tokio => {
                let runtime = match runtimes.into_iter().next() {
                    Some(runtime) => runtime,
                    None => tokio_rt::runtime(&options)?,
                };
                tokio_rt::serve(runtime, &options, groups, udp, open, server, shutdown)
            }
            Kind::PerCore => {
                per_core::serve(runtimes, &options, groups, udp, open, server, shutdown)
            }
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Kind::IoUring => io_uring::serve(&options, groups, udp, open, server, shutdown),
            #[cfg(not(all(target_os = "linux", feature = "io-uring")))]
            Kind::IoUring => Err(io::Error::other(
                io_uring_availability().err().unwrap_or_default(),
            )),
        }
    }
}

/// The UDP sockets of each worker and what answers their datagrams.
pub(crate) struct Udp {
    pub sockets: Vec<Vec<std::net::UdpSocket>>,
    pub handler: Arc<dyn DatagramHandler>,
    pub coalesce: datagram::Coalesce,
}

impl Udp {
    fn none() -> Self {
        struct Nothing;
        impl DatagramHandler for Nothing {
            fn handle(&self, _: &[u8], _: SocketAddr, _: &mut Vec<u8>) -> Option<Later> {
                None
            }
        }
        Self {
            sockets: Vec::new(),
            handler: Arc::new(Nothing),
            coalesce: datagram::Coalesce::new(Duration::ZERO),
        }
    }

    /// The sockets of worker `index` (none when UDP is off).
    pub fn of_worker(&mut self, index: usize) -> Vec<std::net::UdpSocket> {
        self.sockets
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

/// Whether accepted sockets need `TCP_NODELAY` set one by one: not on Linux,
/// where they inherit it from the listener. (Responses are written in one
/// `writev`, so Nagle would only add delay.)
pub(crate) const SET_NODELAY_ON_ACCEPT: bool =
    !cfg!(any(target_os = "linux", target_os = "android"));

/// Waits for every worker thread of a thread-per-core reactor; the error of
/// any that failed (or panicked) is the result.
fn join_workers(workers: Vec<std::thread::JoinHandle<io::Result<()>>>) -> io::Result<()> {
    let mut result = Ok(());
    for worker in workers {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => result = Err(error),
            Err(_) => result = Err(io::Error::other("a reactor worker panicked")),
        }
    }
    result
}

/// An address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source} (in use, or not an address of this host?)")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// Binds a listening TCP socket. IPv6 sockets are IPv6-only, so that
/// `0.0.0.0:P` and `[::]:P` can both be bound, as the default does.
fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, which
    // saves a setsockopt per connection (see `SET_NODELAY_ON_ACCEPT`).
    socket.set_tcp_nodelay(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    defer_accept(&socket);
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Seconds the kernel holds a new connection until its first bytes arrive
/// (`TCP_DEFER_ACCEPT`). HTTP (and TLS) clients speak first, so a
/// connection is accepted with its request already readable and can be
/// answered on the spot (see [`Early`]) instead of after another readiness
/// event. The request follows the handshake within
/// microseconds, so one second is plenty; a client that sends nothing is
/// accepted after it and meets the usual timeouts.
#[cfg(target_os = "linux")]
const DEFER_ACCEPT_SECS: libc::c_int = 1;

#[cfg(target_os = "linux")]
fn defer_accept(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int that lives
    // through the call with its exact size; setsockopt reads nothing else.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // Only an optimisation: without it connections are served all the same.
    if result != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "TCP_DEFER_ACCEPT not set");
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_accept(_socket: &Socket) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(kind: Kind, workers: usize) -> Bound {
        let options = Options {
            kind,
            workers,
            max_connections: 16,
            shutdown_grace: Duration::from_millis(10),
            udp_nap: Duration::ZERO,
        };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Bound::bind(options, &[loopback], &[]).expect("bind loopback")
    }

    #[test]
    fn work_given_the_tokio_runtime_runs_on_the_reactors_workers() {
        let mut tokio = bound(Kind::Tokio, 1);
        let handles = tokio.runtime_handles().unwrap();
        assert_eq!(handles.len(), 1);
        let name = handles[0].block_on(async {
            tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap()
        });
        assert_eq!(name.as_deref(), Some("shoal-worker"));
        // Asked twice, it is the same runtime, the one `serve` will use.
        let again = tokio.runtime_handles().unwrap();
        assert_eq!(handles[0].id(), again[0].id());
    }

    #[test]
    fn per_core_workers_have_a_runtime_each_and_io_uring_none() {
        let handles = bound(Kind::PerCore, 2).runtime_handles().unwrap();
        assert_eq!(handles.len(), 2);
        assert_ne!(handles[0].id(), handles[1].id());
        let flavor = handles[0].runtime_flavor();
        assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
        if Kind::IoUring.availability().is_ok() {
            assert!(
                bound(Kind::IoUring, 2)
                    .runtime_handles()
                    .unwrap()
                    .is_empty()
            );
        }
    }
}
