//! The one-request connection, answered without hyper.
//!
//! Most BitTorrent clients open a connection, send one announce with
//! `Connection: close` and wait for the tracker to close. For them, setting
//! up hyper's connection machinery (buffers, dispatcher, state machine) costs
//! more than the announce itself. So a connection's first read is parsed
//! here: when it holds exactly one complete, well-formed GET or HEAD request
//! that asks to close, the handler answers it, the response is written in
//! one piece and the connection is closed. Anything else (keep-alive, a
//! partial or malformed head, a body, pipelining, a long head) goes to
//! hyper unchanged, with the bytes already read replayed in front of the
//! stream ([`Rewind`]), so every error answer and limit stays hyper's.

use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either};
use hyper::body::Body;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::ResponseBody;

/// Bytes read for the first request. Announces are a few hundred bytes; a
/// longer head is left to hyper.
pub(super) const FIRST_READ: usize = 2048;

/// Most headers parsed here; more go to hyper.
const MAX_HEADERS: usize = 32;

/// The request in `bytes`, if it is one the fast path may answer: exactly
/// one complete GET or HEAD head with no body, HTTP/1.0 or 1.1, asking the
/// server to close. `None` means "let hyper do it".
pub(super) fn parse(bytes: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        _ => return None,
    };
    // Anything after the head (a body, a pipelined request) is hyper's.
    if length != bytes.len() {
        return None;
    }
    let method = match parsed.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let uri = Uri::from_str(parsed.path?).ok()?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    let mut close = version == Version::HTTP_10;
    let map = request.headers_mut();
    map.reserve(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            return None;
        }
        if name == header::CONNECTION {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                } else {
                    // Upgrade and friends: hyper knows what to do.
                    return None;
                }
            }
        }
        map.append(name, value);
    }
    close.then_some(request)
}

/// A response ready to write: head and body in one buffer, or a head and a
/// body still to stream.
pub(super) enum Encoded {
    Whole(Vec<u8>),
    Streamed {
        head: Vec<u8>,
        body: UnsyncBoxBody<Bytes, Infallible>,
        /// Chunked (HTTP/1.1) or delimited by the close (HTTP/1.0).
        chunked: bool,
        head_only: bool,
    },
}

/// Encodes `response` to a request made with `method` in `version`: a body
/// in one buffer goes with the head; a streamed one is left to [`write`].
pub(super) fn encode(
    method: &Method,
    version: Version,
    response: Response<ResponseBody>,
) -> Encoded {
    let (parts, body) = response.into_parts();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n");
    http_date(&mut out);
    let head_only = method == Method::HEAD;
    match body {
        Either::Left(mut whole) => {
            // A `Full` body yields its one buffer on the first poll.
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let bytes = match Pin::new(&mut whole).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
                _ => Bytes::new(),
            };
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            if !head_only {
                out.extend_from_slice(&bytes);
            }
            Encoded::Whole(out)
        }
        Either::Right(body) => {
            let chunked = version == Version::HTTP_11;
            if chunked {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            out.extend_from_slice(b"\r\n");
            Encoded::Streamed {
                head: out,
                body,
                chunked,
                head_only,
            }
        }
    }
}

/// Writes an encoded response (the stream is closed when dropped after).
pub(super) async fn write<W>(stream: &mut W, encoded: Encoded) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    match encoded {
        Encoded::Whole(bytes) => stream.write_all(&bytes).await?,
        // Boxed: rare (full scrape), and its state should not weigh on
        // every connection's future.
        Encoded::Streamed {
            head,
            body,
            chunked,
            head_only,
        } => Box::pin(stream_body(stream, head, body, chunked, head_only)).await?,
    }
    // Dropping the stream then closes it: every byte of the request was
    // read, so the close is a clean FIN after the response.
    stream.flush().await
}

/// Writes the head, then the streamed body as it comes.
async fn stream_body<W>(
    stream: &mut W,
    head: Vec<u8>,
    mut body: UnsyncBoxBody<Bytes, Infallible>,
    chunked: bool,
    head_only: bool,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    stream.write_all(&head).await?;
    if head_only {
        return Ok(());
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_or_else(|e| match e {}, |f| f.into_data()) else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            stream.write_all(size.as_bytes()).await?;
            stream.write_all(&data).await?;
            stream.write_all(b"\r\n").await?;
        } else {
            stream.write_all(&data).await?;
        }
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// Appends the `date` header, formatted once per second per thread.
fn http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// A stream that first yields bytes already read from it.
pub(super) struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_single_complete_get_or_head_that_closes() {
        let take = |raw: &str| parse(raw.as_bytes()).is_some();
        assert!(take(
            "GET /announce?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ));
        assert!(take(
            "HEAD /scrape HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n"
        ));
        assert!(take("GET / HTTP/1.0\r\n\r\n"));
        // Keep-alive is hyper's.
        assert!(!take("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert!(!take("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        // Partial, pipelined, with a body, another method, an upgrade.
        assert!(!take("GET / HTTP/1.1\r\nConnection: close\r\n"));
        assert!(!take(
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        ));
        assert!(!take(
            "GET / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!take("POST / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!take(
            "GET / HTTP/1.1\r\nConnection: close, upgrade\r\n\r\n"
        ));
        // Malformed: hyper answers 400.
        assert!(!take("GET /\0 HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!take(
            "GET / HTTP/1.1\r\nBad Name: x\r\nConnection: close\r\n\r\n"
        ));
    }

    proptest::proptest! {
        /// Hostile first reads: never a panic, and whatever is taken is a
        /// GET or HEAD that asks to close.
        #[test]
        fn arbitrary_first_reads_are_taken_only_when_safe(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            prefix in proptest::sample::select(vec![
                "", "GET / HTTP/1.1\r\n", "GET /a?b HTTP/1.0\r\n",
                "HEAD / HTTP/1.1\r\nConnection: close\r\n",
            ]),
        ) {
            let mut input = prefix.as_bytes().to_vec();
            input.extend_from_slice(&bytes);
            if let Some(request) = parse(&input) {
                proptest::prop_assert!(matches!(*request.method(), Method::GET | Method::HEAD));
                let close = request.version() == Version::HTTP_10
                    || request.headers().get_all(header::CONNECTION).iter().any(|v| {
                        v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                    });
                proptest::prop_assert!(close);
                proptest::prop_assert!(input.ends_with(b"\r\n\r\n") || input.ends_with(b"\n\n"));
            }
        }
    }

    #[test]
    fn keeps_method_target_version_and_headers() {
        let request = parse(
            b"GET /announce?info_hash=%41 HTTP/1.0\r\nX-Forwarded-For: 192.0.2.1\r\n\
              X-Forwarded-For: 192.0.2.2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/announce");
        assert_eq!(request.uri().query(), Some("info_hash=%41"));
        assert_eq!(request.version(), Version::HTTP_10);
        let forwarded: Vec<_> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .collect();
        assert_eq!(forwarded, ["192.0.2.1", "192.0.2.2"]);
    }
}
