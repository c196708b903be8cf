//! Driving one HTTP/1.1 connection, whatever the runtime: the optional TLS
//! handshake, the fast path's [`Session`], hyper once the fast path hands
//! over, and the deadlines.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::pin;
use std::sync::Arc;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::rt::Timer;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::deadline::{self, Limits, Phase, Timed};
use super::fast_path::{self, Next, Rewind, Session};
use super::on_wake::OnWake;
use super::tls::TlsConfig;
use super::{Handler, Headers, Reply, RequestHead, ResponseBody};
use crate::shutdown::Shutdown;

/// Serves requests on `stream` until the client closes, an error ends the
/// connection, it overstays a deadline (`serving.limits`, measured on
/// `timer`), or shutdown asks it to finish its current request. `session`
/// is what [`answer_now`] did before (or a fresh one). With `tls`, the TLS
/// handshake comes first and must finish within the request timeout.
pub(super) async fn serve<St, S>(
    serving: &Serving,
    stream: St,
    tls: Option<&TlsConfig>,
    session: Session,
    service: S,
    shutdown: &Shutdown,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Handler,
{
    if let Some(tls) = tls {
        // Boxed: the TLS state is large; kept out of this future, a plain
        // connection's task stays small.
        return Box::pin(serve_tls(serving, stream, tls, service, shutdown, timer)).await;
    }
    let phase = Phase::new();
    if !session.is_fresh() {
        // A request was read before the stream was wrapped.
        phase.begin_request();
    }
    let stream = Timed::new(stream, phase.clone());
    serve_session(serving, stream, phase, session, service, shutdown, timer).await;
}

/// The fast path over `stream` (already wrapped in the phase-reporting
/// [`Timed`]): write what the session has answered, read, answer, until the
/// connection closes or the session hands it to hyper.
async fn serve_session<St, S>(
    serving: &Serving,
    mut stream: St,
    phase: Arc<Phase>,
    mut session: Session,
    service: S,
    shutdown: &Shutdown,
    timer: &impl Timer,
) where
    St: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Handler,
{
    if serving.fast_path {
        // Made once per connection, not per read: arming a timer per request
        // would cost more than the request. Polled only when they were woken
        // (`OnWake`), not each time a read comes in.
        let watchdog = pin!(deadline::watchdog(phase.clone(), serving.limits, timer));
        let mut watchdog = OnWake::new(watchdog);
        let stopping = pin!(shutdown.wait());
        let mut stopping = OnWake::new(stopping);
        loop {
            if session.has_output() {
                let written = tokio::select! {
                    biased;
                    written = session.write(&mut stream) => written,
                    () = &mut watchdog => {
                        tracing::debug!("connection closed: response not taken in time");
                        return;
                    }
                };
                if let Err(error) = written {
                    tracing::debug!(%error, "connection ended with an error");
                    return;
                }
                if !session.input.is_empty() {
                    // Part of the next request came with the last one: its
                    // time runs from now, not from the write's idle.
                    phase.begin_request();
                }
            }
            match session.next {
                Next::Read => {}
                Next::Answer => {
                    session.answer(&service, serving.max_head);
                    continue;
                }
                Next::Await => {
                    let Some(mut deferred) = session.deferred.take() else {
                        return;
                    };
                    let body = tokio::select! {
                        biased;
                        body = &mut deferred.future => body,
                        () = &mut watchdog => {
                            tracing::debug!("connection closed: answer not ready in time");
                            return;
                        }
                    };
                    session.settle(*deferred, body);
                    continue;
                }
                Next::Close => return,
                Next::Linger => return linger(&mut stream, timer).await,
                Next::Hyper => break,
            }
            // Shutdown lets the request in hand finish, then closes: checked
            // here too, as a busy client's reads would always win the race.
            if shutdown.is_triggered() {
                return;
            }
            session.input.reserve(fast_path::READ_SIZE);
            let read = tokio::select! {
                biased;
                read = read_some(&mut stream, &mut session.input) => read,
                () = &mut watchdog => {
                    tracing::debug!("connection closed: request or idle timeout");
                    return;
                }
                () = &mut stopping => return,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
            session.answer(&service, serving.max_head);
        }
    }
    let stream = Rewind::new(session.input.freeze(), stream);
    // Boxed: hyper's connection state is large, and keeping it out of this
    // future keeps the fast path's task small to spawn and move.
    Box::pin(serve_http(serving, stream, phase, service, shutdown, timer)).await;
}

/// Answers a just-accepted plain connection on the spot when it can: with
/// `TCP_DEFER_ACCEPT` on the listener its request has usually arrived by the
/// time the connection is accepted, and then reading it, answering and
/// writing the answer with non-blocking calls needs no task, no timer and no
/// wake-up. `recv` and `send` are the socket's, and must not wait: a
/// request not there yet is left to the task, and so is what the socket
/// does not take of the answer. `None`: done (answered and closed, or the
/// client is gone), drop the stream. Otherwise the session for [`serve`] to
/// carry on with. `send`'s flag marks the answer after which the connection
/// closes, so it can leave with the FIN (see [`crate::reactor::Early`]).
pub(super) fn answer_now<S: Handler>(
    recv: &mut dyn FnMut(&mut [u8]) -> std::io::Result<usize>,
    send: &mut dyn FnMut(&[u8], bool) -> std::io::Result<usize>,
    service: &S,
    serving: &Serving,
) -> Option<Session> {
    use std::io::ErrorKind;
    let mut session = Session::default();
    let mut buf = [0u8; fast_path::READ_SIZE];
    let n = match recv(&mut buf) {
        Ok(0) => return None,
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            return Some(session);
        }
        Err(_) => return None,
    };
    let used = session.answer_from(&buf[..n], service, serving.max_head);
    if session.next != Next::Close && used < n {
        session.input = BytesMut::from(&buf[used..n]);
    }
    if !session.output.is_empty() {
        // The last answer of a closing connection leaves with the FIN.
        match send(&session.output, session.next == Next::Close) {
            Ok(written) => drop(session.output.drain(..written)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => return None,
        }
    }
    if session.next == Next::Close && !session.has_output() {
        return None;
    }
    Some(session)
}

/// The TLS handshake, then the fast path over the encrypted stream.
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
    let session = Session::default();
    serve_session(serving, stream, phase, session, service, shutdown, timer).await;
}

/// Most bytes read and thrown away by [`linger`], and for how long.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Ends the sending side, then reads and discards what the client still
/// sends (bounded in bytes and time) before the stream is dropped: closing
/// a socket with unread input resets the connection, and the reset can
/// overtake the answer just written.
async fn linger<St: AsyncRead + AsyncWrite + Unpin>(stream: &mut St, timer: &impl Timer) {
    use tokio::io::AsyncWriteExt;
    let drain = async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut scratch = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    tokio::select! {
        () = drain => {}
        () = timer.sleep(LINGER_TIME) => {}
    }
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
    /// Longest request head, for the fast path as for hyper.
    pub max_head: usize,
    /// Whether connections start on the fast path (see `fast_path`).
    pub fast_path: bool,
}

impl Serving {
    pub fn new(options: &super::DriverOptions) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .max_buf_size(options.max_request_bytes)
            .keep_alive(true);
        Self {
            http1,
            limits: Limits {
                request: options.request_timeout,
                idle: options.idle_timeout,
            },
            max_head: options.max_request_bytes,
            fast_path: options.fast_path,
        }
    }
}

/// A [`Handler`] as a hyper service: the request body is dropped unread.
struct HyperService<S>(S);

/// A [`Reply`] as hyper's response future.
enum Replying {
    Now(Ready<Result<Response<ResponseBody>, Infallible>>),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>>),
}

impl std::future::Future for Replying {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Replying::Now(ready) => std::pin::Pin::new(ready).poll(cx),
            Replying::Later(later) => later
                .as_mut()
                .poll(cx)
                .map(|body| Ok(super::plain_response(body))),
        }
    }
}

impl<S: Handler> hyper::service::Service<Request<Incoming>> for HyperService<S> {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Replying;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let uri = request.uri();
        let head = RequestHead {
            method: request.method(),
            path: uri.path(),
            query: uri.query().unwrap_or("").as_bytes(),
            headers: Headers::from_map(request.headers()),
        };
        match self.0.handle(&head) {
            Reply::Now(response) => Replying::Now(ready(Ok(response))),
            Reply::Plain(body) => Replying::Now(ready(Ok(super::plain_response(body)))),
            Reply::Later(later) => Replying::Later(later),
        }
    }
}
