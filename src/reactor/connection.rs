//! Driving one HTTP/1.1 connection, whatever the runtime: the optional TLS
//! handshake, the one-request fast path, hyper, the deadlines, and the
//! connection counts.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::rt::Timer;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::deadline::{self, Limits, Phase, Timed};
use super::one_shot::{self, Rewind};
use super::tls::TlsConfig;
use super::{Handler, ResponseBody};
use crate::shutdown::Shutdown;

/// How far a connection got before its task started (see [`answer_now`]).
pub(super) enum Start {
    /// Nothing read yet.
    Fresh,
    /// These bytes were read and are not a request the fast path takes:
    /// hyper gets them first.
    Read(BytesMut),
    /// The request was answered; this is the response, still to write.
    Write(one_shot::Encoded),
}

/// Serves requests on `stream` until the client closes, an error ends the
/// connection, it overstays a deadline (`serving.limits`, measured on `timer`), or
/// shutdown asks it to finish its current request. With `tls`, the TLS
/// handshake comes first and must finish within the request timeout.
pub(super) async fn serve<St, S>(
    serving: &Serving,
    stream: St,
    tls: Option<&TlsConfig>,
    start: Start,
    service: S,
    shutdown: &Shutdown,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Handler,
{
    if let Some(tls) = tls {
        // Boxed: the TLS and hyper states are large; kept out of this
        // future, a one-request connection's task stays small.
        return Box::pin(serve_tls(serving, stream, tls, service, shutdown, timer)).await;
    }
    let phase = Phase::new();
    let mut stream = Timed::new(stream, phase.clone());
    let first = match start {
        Start::Fresh if serving.one_shot => {
            let mut first = BytesMut::with_capacity(one_shot::FIRST_READ);
            let read = tokio::select! {
                biased;
                read = read_some(&mut stream, &mut first) => read,
                () = deadline::watchdog(phase.clone(), serving.limits, timer) => return,
                () = shutdown.wait() => return,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
            match one_shot::parse(&first) {
                Some(request) => {
                    let (method, version) = (request.method().clone(), request.version());
                    let answer = one_shot::encode(&method, version, service.handle(request));
                    return write_answer(&mut stream, answer, phase, serving, timer).await;
                }
                None => first,
            }
        }
        Start::Fresh => BytesMut::new(),
        Start::Read(first) => {
            phase.begin_request();
            first
        }
        Start::Write(answer) => {
            phase.begin_request();
            return write_answer(&mut stream, answer, phase, serving, timer).await;
        }
    };
    let stream = Rewind::new(first.freeze(), stream);
    // Boxed: hyper's connection state is large, and keeping it out of this
    // future keeps the fast path's task small to spawn and move.
    Box::pin(serve_http(serving, stream, phase, service, shutdown, timer)).await;
}

/// Writes a fast-path answer within the request deadline.
async fn write_answer<St: AsyncWrite + Unpin>(
    stream: &mut St,
    answer: one_shot::Encoded,
    phase: Arc<Phase>,
    serving: &Serving,
    timer: &impl Timer,
) {
    tokio::select! {
        biased;
        result = one_shot::write(stream, answer) => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = deadline::watchdog(phase, serving.limits, timer) => {
            tracing::debug!("connection closed: response not taken in time");
        }
    }
}

/// Answers a just-accepted plain connection on the spot when it can: with
/// `TCP_DEFER_ACCEPT` on the listener its request has usually arrived by the
/// time the connection is accepted, and
/// then reading it, answering and writing the answer with non-blocking
/// calls needs no task, no timer and no wake-up. `None`: done (answered, or
/// the client is gone), drop the stream. Otherwise how far it got, for
/// [`serve`] to carry on from.
pub(super) fn answer_now<S: Handler>(stream: &tokio::net::TcpStream, service: &S) -> Option<Start> {
    use std::io::{ErrorKind, Read, Write};
    let socket = socket2::SockRef::from(stream);
    // Accepted sockets are non-blocking (tokio's own), so these calls never
    // wait; a request not there yet is left to the task.
    let mut buf = [0u8; one_shot::FIRST_READ];
    let n = match (&*socket).read(&mut buf) {
        Ok(0) => return None,
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            return Some(Start::Fresh);
        }
        Err(_) => return None,
    };
    let Some(request) = one_shot::parse(&buf[..n]) else {
        return Some(Start::Read(BytesMut::from(&buf[..n])));
    };
    let (method, version) = (request.method().clone(), request.version());
    match one_shot::encode(&method, version, service.handle(request)) {
        one_shot::Encoded::Whole(mut bytes) => match (&*socket).write(&bytes) {
            Ok(written) if written == bytes.len() => None,
            Ok(written) => {
                bytes.drain(..written);
                Some(Start::Write(one_shot::Encoded::Whole(bytes)))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                Some(Start::Write(one_shot::Encoded::Whole(bytes)))
            }
            Err(_) => None,
        },
        streamed => Some(Start::Write(streamed)),
    }
}

/// The TLS handshake, then hyper over the encrypted stream.
async fn serve_tls<St, S>(
    serving: &Serving,
    stream: St,
    tls: &TlsConfig,
    service: S,
    shutdown: &Shutdown,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Handler,
{
    let handshake = tls.acceptor().accept(stream);
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "TLS handshake failed");
                return;
            }
        },
        () = timer.sleep(serving.limits.request) => {
            tracing::debug!("connection closed: TLS handshake timeout");
            return;
        }
        () = shutdown.wait() => return,
    };
    let phase = Phase::new();
    let stream = Timed::new(stream, phase.clone());
    serve_http(serving, stream, phase, service, shutdown, timer).await;
}

/// Reads what is available (at least one byte, or EOF) into `buf`, retrying
/// interrupted reads.
async fn read_some<St: AsyncRead + Unpin>(
    stream: &mut St,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    loop {
        match stream.read_buf(buf).await {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// hyper's HTTP/1.1 state machine over `stream` (already wrapped in the
/// phase-reporting [`Timed`]), until close, a deadline or shutdown.
async fn serve_http<St, S>(
    serving: &Serving,
    stream: St,
    phase: Arc<Phase>,
    service: S,
    shutdown: &Shutdown,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Handler,
{
    let io = TokioIo::new(stream);
    let mut connection = pin!(serving.http1.serve_connection(io, HyperService(service)));
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = deadline::watchdog(phase, serving.limits, timer) => {
            tracing::debug!("connection closed: request or idle timeout");
            Ok(())
        }
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

/// How every connection of a reactor is served.
pub(super) struct Serving {
    /// hyper's HTTP/1.1 settings.
    pub http1: http1::Builder,
    pub limits: Limits,
    /// Whether a plain connection's `Connection: close` request may take
    /// the fast path.
    pub one_shot: bool,
}

impl Serving {
    pub fn new(options: &super::Options) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .max_buf_size(options.max_request_bytes)
            .keep_alive(true);
        Self {
            http1,
            limits: options.limits(),
            one_shot: options.one_shot,
        }
    }
}

/// A [`Handler`] as a hyper service: the request body is dropped unread.
struct HyperService<S>(S);

impl<S: Handler> hyper::service::Service<Request<Incoming>> for HyperService<S> {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        ready(Ok(self.0.handle(request.map(|_| ()))))
    }
}

/// Connection counts shared by every worker of a reactor: the open count
/// enforces the cap (`max_connections`) and lets shutdown wait for
/// connections to drain; all three are reported in the tracker's metrics.
#[derive(Clone)]
pub struct Connections(Arc<Counts>);

struct Counts {
    max: usize,
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// Held by each connection task; decrements the open count when dropped.
pub(super) struct OpenGuard(Connections);

impl Connections {
    /// Counts of a reactor that keeps at most `max` connections open.
    pub(super) fn new(max: usize) -> Self {
        Self(Arc::new(Counts {
            max,
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }))
    }

    /// Counts a just-accepted connection: a guard to hold while serving it,
    /// or `None` (counted as refused) when the cap is reached and it must be
    /// closed at once, leaving the open ones untouched.
    pub(super) fn admit(&self) -> Option<OpenGuard> {
        if self.count() >= self.0.max {
            self.0.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.0.accepted.fetch_add(1, Ordering::Relaxed);
        self.0.open.fetch_add(1, Ordering::Relaxed);
        Some(OpenGuard(self.clone()))
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.0.open.load(Ordering::Relaxed)
    }

    /// Connections accepted and served since start.
    pub fn accepted(&self) -> u64 {
        self.0.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed on accept (over `max_connections`) since start.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
