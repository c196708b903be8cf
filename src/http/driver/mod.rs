//! The HTTP/1.1 connection driver: everything between an accepted stream
//! and a [`Handler`], whatever the reactor.
//!
//! [`Driver`] is the reactor's [`StreamServer`] for HTTP: per connection it
//! runs the optional TLS handshake (`tls`), answers plain GET and HEAD
//! requests on its own fast path (`fast_path`, at accept time when the
//! request is already there), hands anything else to hyper for good, and
//! enforces the request and idle deadlines (`deadline`, `on_wake`). It
//! knows HTTP but not BitTorrent: the handler is opaque to it.

mod connection;
mod deadline;
pub(crate) mod fast_path;
mod on_wake;
mod tls;

pub use tls::{TlsConfig, TlsError};

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{Either, Full};
use hyper::{HeaderMap, Method, Response};
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::reactor::{ConnectionInfo, Early, StreamServer};
use crate::shutdown::Shutdown;
use connection::Serving;
use fast_path::Session;

/// How HTTP connections are served.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// A request must be answered within this time of its first byte, so a
    /// client sending its request head slowly (slowloris) is cut off.
    pub request_timeout: Duration,
    /// A keep-alive connection silent this long after a response (or after
    /// connecting) is closed.
    pub idle_timeout: Duration,
    /// Largest request head; 431 beyond it (minimum 8192, hyper's smallest
    /// buffer).
    pub max_request_bytes: usize,
    /// Certificate for the HTTPS listeners, if any.
    pub tls: Option<Arc<TlsConfig>>,
    /// Answer plain GET and HEAD requests without hyper (see `fast_path`).
    /// Off only to measure hyper alone.
    pub fast_path: bool,
}

/// The HTTP server the reactor runs on each accepted connection: a
/// [`Handler`] made per connection by `make_service`.
pub struct Driver<M> {
    serving: Serving,
    tls: Option<Arc<TlsConfig>>,
    make_service: M,
}

impl<M> Driver<M> {
    pub fn new(options: &DriverOptions, make_service: M) -> Self {
        Self {
            serving: Serving::new(options),
            tls: options.tls.clone(),
            make_service,
        }
    }

    /// Serves the rest of `conn` on `stream`, its deadlines on `timer`.
    async fn drive<S: Handler, St>(
        &self,
        conn: Conn<S>,
        stream: St,
        shutdown: &Shutdown,
        timer: impl hyper::rt::Timer,
    ) where
        St: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let tls = if conn.tls { self.tls.as_deref() } else { None };
        connection::serve(
            &self.serving,
            stream,
            tls,
            conn.session,
            conn.service,
            shutdown,
            &timer,
        )
        .await;
    }
}

/// One connection between accept and its task: the fast path's state so
/// far, its handler, and whether it speaks TLS.
pub struct Conn<S> {
    session: Session,
    service: S,
    tls: bool,
}

impl<M, S> StreamServer for Driver<M>
where
    M: Fn(ConnectionInfo) -> S + Send + Sync + 'static,
    S: Handler,
{
    type Conn = Conn<S>;

    fn accepted(&self, info: ConnectionInfo, early: Option<Early<'_>>) -> Option<Self::Conn> {
        if info.tls && self.tls.is_none() {
            tracing::debug!("HTTPS connection without a certificate: closed");
            return None;
        }
        let service = (self.make_service)(info);
        let session = match early {
            Some(early) if !info.tls && self.serving.fast_path => {
                connection::answer_now(early.recv, early.send, &service, &self.serving)?
            }
            _ => Session::default(),
        };
        Some(Conn {
            session,
            service,
            tls: info.tls,
        })
    }

    fn serve<St>(
        &self,
        conn: Self::Conn,
        stream: St,
        shutdown: &Shutdown,
    ) -> impl Future<Output = ()> + Send
    where
        St: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.drive(conn, stream, shutdown, TokioTimer::new())
    }

    fn serve_local<St>(
        &self,
        conn: Self::Conn,
        stream: St,
        shutdown: &Shutdown,
    ) -> impl Future<Output = ()>
    where
        St: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        let timer = monoio_compat::hyper::MonoioTimer;
        #[cfg(not(all(target_os = "linux", feature = "io-uring")))]
        let timer = TokioTimer::new();
        self.drive(conn, stream, shutdown, timer)
    }
}

/// A response body: all in one piece (every tracker response), or streamed
/// in chunks the service produces as the connection drains them.
pub type ResponseBody = Either<Full<Bytes>, UnsyncBoxBody<Bytes, Infallible>>;

/// A handler's answer to one request: a response now, or one to await
/// (a shared store answers later). Requests after it on the same
/// connection wait for it, so responses keep their order.
pub enum Reply {
    Now(Response<ResponseBody>),
    /// `200 OK`, `content-type: text/plain`, this body: every tracker
    /// answer, refusals included. The fast path writes it out without
    /// building a response and its header map.
    Plain(Vec<u8>),
    /// A [`Reply::Plain`] body not ready yet (the Redis store's answers).
    Later(std::pin::Pin<Box<dyn Future<Output = Vec<u8>> + Send>>),
}

/// The response [`Reply::Plain`] stands for.
pub fn plain_response(body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// What answers the requests of one connection. It is given each request's
/// head (a request body is never read: no route takes one) and answers at
/// once or with a future; the driver writes the response, directly on its
/// fast path or through hyper.
pub trait Handler: Send + 'static {
    fn handle(&self, request: &RequestHead<'_>) -> Reply;

    /// The answer (status 431) to a request head over the size limit, whose
    /// target has `path` when it could be read. By default an empty one.
    fn too_large(&self, path: Option<&str>) -> Response<ResponseBody> {
        let _ = path;
        let mut response = Response::new(ResponseBody::Left(Default::default()));
        *response.status_mut() = hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        response
    }
}

/// What a [`Handler`] sees of a request: its head, borrowed from wherever
/// the driver parsed it (its own read buffer on the fast path, or hyper's
/// request), so that nothing is copied or allocated to hand it over.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// The path of an origin-form target (`/announce`), without the query.
    pub path: &'a str,
    /// The raw query, without `?`; empty when there is none.
    pub query: &'a [u8],
    pub headers: Headers<'a>,
}

/// A request's header fields, as hyper's map or as the fast path parsed
/// them.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a>(HeaderSource<'a>);

#[derive(Debug, Clone, Copy)]
enum HeaderSource<'a> {
    Map(&'a HeaderMap),
    Parsed(&'a [httparse::Header<'a>]),
}

impl<'a> Headers<'a> {
    pub fn from_map(map: &'a HeaderMap) -> Self {
        Self(HeaderSource::Map(map))
    }

    fn parsed(headers: &'a [httparse::Header<'a>]) -> Self {
        Self(HeaderSource::Parsed(headers))
    }

    /// The values of every field named `name` (lower-case), in order.
    pub fn get_all(self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (map, parsed) = match self.0 {
            HeaderSource::Map(map) => (Some(map.get_all(name).iter()), None),
            HeaderSource::Parsed(headers) => (None, Some(headers.iter())),
        };
        let from_map = map.into_iter().flatten().map(|v| v.as_bytes());
        let from_parsed = parsed
            .into_iter()
            .flatten()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value);
        from_map.chain(from_parsed)
    }
}

/// A header value as text, when it is all visible ASCII (tabs and spaces
/// allowed), as hyper's `HeaderValue::to_str` takes it.
pub fn header_text(value: &[u8]) -> Option<&str> {
    let visible = value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}
