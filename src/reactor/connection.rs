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

/// Serves requests on `stream` until the client closes, an error ends the
/// connection, it overstays a deadline (`serving.limits`, measured on `timer`), or
/// shutdown asks it to finish its current request. With `tls`, the TLS
/// handshake comes first and must finish within the request timeout.
pub(super) async fn serve<St, S>(
    serving: &Serving,
    stream: St,
    tls: Option<&TlsConfig>,
    service: S,
    shutdown: &Shutdown,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Handler,
{
    match tls {
        None if serving.one_shot => serve_plain(serving, stream, service, shutdown, timer).await,
        // Boxed: the hyper and TLS states are large; kept out of this future,
        // a one-request connection's task stays small to spawn and free.
        None => {
            let phase = Phase::new();
            let stream = Timed::new(stream, phase.clone());
            Box::pin(serve_http(serving, stream, phase, service, shutdown, timer)).await;
        }
        Some(tls) => Box::pin(serve_tls(serving, stream, tls, service, shutdown, timer)).await,
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

/// A plain connection: its first request may take the fast path
/// ([`one_shot`]); otherwise hyper serves it, the bytes read replayed.
async fn serve_plain<St, S>(
    serving: &Serving,
    stream: St,
    service: S,
    shutdown: &Shutdown,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Handler,
{
    let phase = Phase::new();
    let mut stream = Timed::new(stream, phase.clone());
    let mut first = BytesMut::with_capacity(one_shot::FIRST_READ);
    let read = tokio::select! {
        biased;
        read = read_some(&mut stream, &mut first) => read,
        () = deadline::watchdog(phase.clone(), serving.limits, timer) => return,
        () = shutdown.wait() => return,
    };
    match read {
        Ok(0) | Err(_) => return,
        Ok(_) => {}
    }
    if let Some(request) = one_shot::parse(&first) {
        let (method, version) = (request.method().clone(), request.version());
        let response = service.handle(request);
        tokio::select! {
            biased;
            result = one_shot::respond(&mut stream, &method, version, response) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            () = deadline::watchdog(phase, serving.limits, timer) => {
                tracing::debug!("connection closed: response not taken in time");
            }
        }
        return;
    }
    let stream = Rewind::new(first.freeze(), stream);
    // Boxed: hyper's connection state is large, and keeping it out of this
    // future keeps the fast path's task small to spawn and move.
    Box::pin(serve_http(serving, stream, phase, service, shutdown, timer)).await;
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
