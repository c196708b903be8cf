//! The common request, answered without hyper.
//!
//! Nearly everything a tracker is asked is a short GET with no body: an
//! announce or a scrape, alone on its connection (`Connection: close`) or
//! one after another on a kept-alive one. For those, hyper's generality
//! (dispatcher, body channels, its own buffers and state machine) costs more
//! than the announce itself. So a connection starts in a [`Session`]: what is
//! read is parsed with httparse, and each complete, well-formed GET or HEAD
//! head without a body is answered by the handler and its response encoded
//! into one output buffer, pipelined requests in order. The first thing that
//! is not such a request (another method, a body, an upgrade, an unknown
//! `Connection` option, too many headers, a malformed head) hands the
//! connection to hyper for good, with the unanswered bytes replayed in front
//! of the stream ([`Rewind`]), so those error answers stay hyper's. An
//! over-long head is answered here (431, with the handler's body: a tracker
//! route gets a failure reason a client can show) and the connection closed
//! after the rest of the request is drained ([`Next::Linger`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either};
use hyper::body::Body;
use hyper::{Method, Response, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{Handler, Headers, Reply, RequestHead, ResponseBody};

/// Bytes asked for per read. Announces are a few hundred bytes.
pub(super) const READ_SIZE: usize = 2048;

/// Most headers parsed here; more go to hyper.
const MAX_HEADERS: usize = 32;

/// Output kept between responses at most; a larger buffer (after a burst of
/// pipelined answers) is given back once written.
const KEEP_OUTPUT: usize = 16 * 1024;

/// What [`parse`] made of the front of a connection's input.
pub(super) enum Parsed<'a, R> {
    /// A request the fast path takes: what the caller made of it, its
    /// first `length` bytes, and whether the connection closes after it.
    Take {
        answer: R,
        length: usize,
        close: bool,
    },
    /// A head not complete yet: read more.
    Partial,
    /// A head longer than the limit; the path of its target when the bytes
    /// read show all of it.
    TooLarge(Option<&'a str>),
    /// Not for the fast path: hyper takes the connection from here.
    Hyper,
}

/// Parses the request at the front of `bytes` and, if the fast path takes
/// it, hands its head to `answer` (with its version and whether the
/// connection closes after it). Taken are complete GET and HEAD heads of at
/// most `max_head` bytes, HTTP/1.0 or 1.1, with an origin-form target of
/// plain URI characters, no body and no `Connection` option but `close` and
/// `keep-alive`. As with hyper, HTTP/1.0 closes (hyper keeps it alive only
/// for a response that asks to) and any `close` wins over `keep-alive`.
pub(super) fn parse<'a, R>(
    bytes: &'a [u8],
    max_head: usize,
    answer: impl FnOnce(&RequestHead<'_>, Version, bool) -> R,
) -> Parsed<'a, R> {
    // Left uninitialised: httparse writes the ones it finds, and zeroing
    // 32 headers (1 KiB) per request cost more than the request line.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match parsed.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(length)) if length <= max_head => length,
        Ok(httparse::Status::Partial) if bytes.len() < max_head => return Parsed::Partial,
        Ok(_) => return Parsed::TooLarge(target_path(bytes)),
        Err(_) => return Parsed::Hyper,
    };
    match take(&parsed) {
        Some((head, version, close)) => Parsed::Take {
            answer: answer(&head, version, close),
            length,
            close,
        },
        None => Parsed::Hyper,
    }
}

/// The path of the request target at the front of `bytes` (`GET /path?...`),
/// if its end (`?` or a space) has been read and it is plain ASCII.
fn target_path(bytes: &[u8]) -> Option<&str> {
    let start = memchr::memchr(b' ', bytes)? + 1;
    let rest = &bytes[start..];
    let end = memchr::memchr2(b'?', b' ', rest)?;
    let path = std::str::from_utf8(&rest[..end]).ok()?;
    (path.starts_with('/') && path.is_ascii()).then_some(path)
}

static GET: Method = Method::GET;
static HEAD: Method = Method::HEAD;

/// The head of a complete request, its version and whether it closes, or
/// `None` when it is hyper's.
fn take<'a>(parsed: &'a httparse::Request<'_, 'a>) -> Option<(RequestHead<'a>, Version, bool)> {
    let method = match parsed.method? {
        "GET" => &GET,
        "HEAD" => &HEAD,
        _ => return None,
    };
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let target = parsed.path?;
    // Anything hyper's URI parser might see differently (a fragment, a
    // byte it refuses, an absolute form) is hyper's.
    if !target.starts_with('/') || !plain_target(target.as_bytes()) {
        return None;
    }
    let (path, query) = match memchr::memchr(b'?', target.as_bytes()) {
        Some(at) => (&target[..at], &target[at + 1..]),
        None => (target, ""),
    };
    let mut close = version == Version::HTTP_10;
    for h in parsed.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return None;
        }
        if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    // Upgrade and friends: hyper knows what to do.
                    return None;
                }
            }
        }
    }
    let head = RequestHead {
        method,
        path,
        query: query.as_bytes(),
        headers: Headers::parsed(parsed.headers),
    };
    Some((head, version, close))
}

/// Whether the fast path takes every byte of `target` as it is: ASCII
/// except `"`, `#`, `<`, `>` and `` ` ``, the bytes hyper's URI parser
/// refuses or reads as a fragment in a path or a query. (Controls, space and
/// DEL never get here: httparse refuses them in a target.) An announce's
/// target runs to 200 bytes and more: it is checked 16 bytes at a time in
/// one pass (a table lookup per byte cost five times as much, and three
/// whole-slice searches, one per group of bytes, twice as much).
fn plain_target(target: &[u8]) -> bool {
    let mut chunks = target.chunks_exact(16);
    let mut flagged = false;
    for chunk in &mut chunks {
        flagged |= lanes::any_unplain(chunk);
    }
    let tail = chunks.remainder();
    if flagged {
        return false;
    }
    match target.len() {
        // The last 16 bytes, overlapping what was checked already.
        16.. if !tail.is_empty() => !lanes::any_unplain(&target[target.len() - 16..]),
        _ => tail.iter().all(|&b| plain_byte(b)),
    }
}

/// One byte of [`plain_target`]'s rule.
fn plain_byte(b: u8) -> bool {
    b.is_ascii() && !matches!(b, b'"' | b'#' | b'<' | b'>' | b'`')
}

/// [`plain_target`]'s rule for 16 bytes at once.
mod lanes {
    /// Whether any of the 16 bytes of `chunk` breaks the rule.
    #[cfg(target_arch = "x86_64")]
    pub fn any_unplain(chunk: &[u8]) -> bool {
        // SAFETY: SSE2 is part of the x86_64 baseline: every CPU this
        // binary runs on has it.
        unsafe { any_unplain_sse2(chunk) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse2")]
    fn any_unplain_sse2(chunk: &[u8]) -> bool {
        use std::arch::x86_64::*;
        let word = |at: usize| {
            chunk
                .get(at..at + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, i64::from_le_bytes)
        };
        let v = _mm_set_epi64x(word(8), word(0));
        // `"` and `#` differ only in bit 0, `<` and `>` only in bit 1.
        let quote_hash = _mm_cmpeq_epi8(
            _mm_and_si128(v, _mm_set1_epi8(0xfe_u8 as i8)),
            _mm_set1_epi8(b'"' as i8),
        );
        let angles = _mm_cmpeq_epi8(
            _mm_and_si128(v, _mm_set1_epi8(0xfd_u8 as i8)),
            _mm_set1_epi8(b'<' as i8),
        );
        let backtick = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'`' as i8));
        let refused = _mm_or_si128(_mm_or_si128(quote_hash, angles), backtick);
        // The high bit of each byte: set for non-ASCII bytes and in the
        // lanes where a refused byte matched.
        _mm_movemask_epi8(_mm_or_si128(v, refused)) != 0
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn any_unplain(chunk: &[u8]) -> bool {
        !chunk.iter().all(|&b| super::plain_byte(b))
    }
}

/// What a [`Session`] does once its output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Read more: the input holds no complete request.
    Read,
    /// Answer more from the input (after a streamed response).
    Answer,
    /// Close the connection.
    Close,
    /// Hand the connection and the unanswered input to hyper.
    Hyper,
    /// Close once the output is written and what the client still sends
    /// is drained (closing with unread input would reset the connection
    /// and could lose the answer on its way).
    Linger,
    /// Await the [`Deferred`] answer, then answer more from the input.
    Await,
}

/// A response the handler will give later, and how to encode it then.
pub(super) struct Deferred {
    pub future: std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>>,
    head_only: bool,
    close: bool,
}

/// What the fast path did with a request it took.
enum Taken {
    /// Encoded into the output; a streamed body follows, if any.
    Encoded(Option<Streamed>),
    Later(Box<Deferred>),
}

/// A response body still to stream after the output (the full scrape).
pub(super) struct Streamed {
    body: UnsyncBoxBody<Bytes, Infallible>,
    /// Chunked (HTTP/1.1) or delimited by the close (HTTP/1.0).
    chunked: bool,
    head_only: bool,
}

/// The fast path's state of one connection.
pub(super) struct Session {
    /// Bytes read and not answered yet.
    pub input: BytesMut,
    /// Responses encoded and not written yet.
    pub output: Vec<u8>,
    /// Written after `output`. Boxed: rare, and the session stays small.
    pub streamed: Option<Box<Streamed>>,
    /// The answer to await before anything else is answered.
    pub deferred: Option<Box<Deferred>>,
    pub next: Next,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            input: BytesMut::new(),
            output: Vec::new(),
            streamed: None,
            deferred: None,
            next: Next::Read,
        }
    }
}

impl Session {
    /// Whether nothing has been read or answered yet.
    pub fn is_fresh(&self) -> bool {
        self.input.is_empty() && self.output.is_empty() && self.next == Next::Read
    }

    /// Whether output is waiting to be written.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty() || self.streamed.is_some()
    }

    /// Answers the complete requests at the front of the input, in order.
    pub fn answer(&mut self, service: &impl Handler, max_head: usize) {
        let mut input = std::mem::take(&mut self.input);
        let used = self.answer_from(&input, service, max_head);
        input.advance(used);
        self.input = input;
    }

    /// Answers the complete requests at the front of `input` (the session's
    /// own, or bytes read elsewhere) and returns how many bytes they took.
    /// Stops at a request that closes the connection, a streamed response,
    /// an incomplete head, or one that is hyper's; `next` says which.
    pub fn answer_from(&mut self, input: &[u8], service: &impl Handler, max_head: usize) -> usize {
        let mut used = 0;
        loop {
            if used == input.len() {
                // Nothing more was sent: no need to ask the parser.
                self.next = Next::Read;
                return used;
            }
            let output = &mut self.output;
            let parsed = parse(&input[used..], max_head, |head, version, close| {
                let head_only = *head.method == Method::HEAD;
                match service.handle(head) {
                    Reply::Now(response) => {
                        Taken::Encoded(encode(output, head_only, version, close, response))
                    }
                    Reply::Plain(body) => {
                        encode_plain(output, head_only, close, &body);
                        Taken::Encoded(None)
                    }
                    Reply::Later(future) => Taken::Later(Box::new(Deferred {
                        future,
                        head_only,
                        close,
                    })),
                }
            });
            match parsed {
                Parsed::Take {
                    answer: Taken::Later(deferred),
                    length,
                    ..
                } => {
                    used += length;
                    self.deferred = Some(deferred);
                    self.next = Next::Await;
                    return used;
                }
                Parsed::Take {
                    answer: Taken::Encoded(answer),
                    length,
                    close,
                } => {
                    used += length;
                    if let Some(streamed) = answer {
                        // Without chunks, only the close ends the body.
                        self.next = if close || !(streamed.chunked || streamed.head_only) {
                            Next::Close
                        } else {
                            Next::Answer
                        };
                        self.streamed = Some(Box::new(streamed));
                        return used;
                    }
                    if close {
                        self.next = Next::Close;
                        return used;
                    }
                }
                Parsed::Partial => {
                    self.next = Next::Read;
                    return used;
                }
                Parsed::Hyper => {
                    self.next = Next::Hyper;
                    return used;
                }
                Parsed::TooLarge(path) => {
                    // A HEAD request gets the head of the answer only.
                    let head_only = input[used..].starts_with(b"HEAD ");
                    encode(
                        output,
                        head_only,
                        Version::HTTP_11,
                        true,
                        service.too_large(path),
                    );
                    self.next = Next::Linger;
                    return input.len();
                }
            }
        }
    }

    /// Encodes the awaited body of `deferred` into the output, as a
    /// [`Reply::Plain`]; the session then answers more, or closes if that
    /// request asked to.
    pub fn settle(&mut self, deferred: Deferred, body: Vec<u8>) {
        let Deferred {
            head_only, close, ..
        } = deferred;
        encode_plain(&mut self.output, head_only, close, &body);
        self.next = if close { Next::Close } else { Next::Answer };
    }

    /// Writes the output and any streamed body after it.
    pub async fn write<W>(&mut self, stream: &mut W) -> io::Result<()>
    where
        W: AsyncWrite + Unpin,
    {
        if !self.output.is_empty() {
            stream.write_all(&self.output).await?;
            self.output.clear();
            if self.output.capacity() > KEEP_OUTPUT {
                self.output = Vec::new();
            }
        }
        if let Some(streamed) = self.streamed.take() {
            // Boxed: its state should not weigh on every connection's future.
            Box::pin(stream_body(stream, *streamed)).await?;
        }
        stream.flush().await
    }
}

/// Appends `response` to a request made with `method` in `version` to
/// `out`, head and body (if whole); a streamed body is returned, to follow.
fn encode(
    out: &mut Vec<u8>,
    head_only: bool,
    version: Version,
    close: bool,
    response: Response<ResponseBody>,
) -> Option<Streamed> {
    let (parts, body) = response.into_parts();
    out.reserve(512);
    if parts.status == hyper::StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        let reason = parts.status.canonical_reason().unwrap_or("Unknown");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    http_date(out);
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
            None
        }
        Either::Right(body) => {
            // A HEAD answer has no body to frame: neither length nor
            // chunking is announced, as hyper does.
            let chunked = version == Version::HTTP_11 && !head_only;
            if chunked {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            out.extend_from_slice(b"\r\n");
            Some(Streamed {
                body,
                chunked,
                head_only,
            })
        }
    }
}

/// Writes a streamed body as it comes (its head is already written).
async fn stream_body<W>(stream: &mut W, streamed: Streamed) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let Streamed {
        mut body,
        chunked,
        head_only,
    } = streamed;
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

/// Appends a [`Reply::Plain`] answer: the same bytes [`encode`] writes for
/// its response.
fn encode_plain(out: &mut Vec<u8>, head_only: bool, close: bool, body: &[u8]) {
    out.reserve(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    http_date(out);
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Appends the `date` header, formatted once per second per thread.
fn http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{Duration, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    // The coarse clock: a second's resolution is all the header has.
    let second = crate::clock::unix_coarse_secs();
    CACHE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
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

    /// What the fast path saw of a request it took.
    #[derive(Debug, PartialEq)]
    struct Seen {
        method: Method,
        path: String,
        query: String,
        version: Version,
        close: bool,
        forwarded: Vec<String>,
    }

    fn seen(head: &RequestHead<'_>, version: Version, close: bool) -> Seen {
        Seen {
            method: head.method.clone(),
            path: head.path.to_owned(),
            query: String::from_utf8_lossy(head.query).into_owned(),
            version,
            close,
            forwarded: head
                .headers
                .get_all("x-forwarded-for")
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
        }
    }

    /// What the fast path saw, if it took the whole of `raw` as one request.
    fn taken(raw: &str) -> Option<Seen> {
        match parse(raw.as_bytes(), 8192, seen) {
            Parsed::Take { answer, length, .. } if length == raw.len() => Some(answer),
            _ => None,
        }
    }

    fn closes(raw: &str) -> Option<bool> {
        taken(raw).map(|seen| seen.close)
    }

    fn hyper(raw: &str) -> bool {
        matches!(parse(raw.as_bytes(), 8192, seen), Parsed::Hyper)
    }

    #[test]
    fn takes_complete_get_and_head_and_knows_when_to_close() {
        assert_eq!(
            closes("GET /announce?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            Some(true)
        );
        assert_eq!(closes("GET / HTTP/1.1\r\nHost: t\r\n\r\n"), Some(false));
        assert_eq!(
            closes("HEAD /scrape HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"),
            Some(false)
        );
        // Any close wins, in one line or another, as with hyper.
        assert_eq!(
            closes("GET / HTTP/1.1\r\nConnection: close, keep-alive\r\n\r\n"),
            Some(true)
        );
        assert_eq!(
            closes("GET / HTTP/1.1\r\nConnection: close\r\nConnection: Keep-Alive\r\n\r\n"),
            Some(true)
        );
        // HTTP/1.0 closes: hyper keeps it alive only if the response asks.
        assert_eq!(closes("GET / HTTP/1.0\r\n\r\n"), Some(true));
        assert_eq!(
            closes("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            Some(true)
        );
    }

    #[test]
    fn leaves_to_hyper_what_it_does_not_take() {
        assert!(hyper(
            "GET / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(hyper(
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(hyper("POST / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(hyper("GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n"));
        // Targets hyper's URI parser might read differently.
        for target in [
            "/a#fragment",
            "http://t/announce",
            "*",
            "/a?b=\"c\"",
            "/a?b=<c>",
            "/a`b",
            "/\u{e9}",
        ] {
            assert!(hyper(&format!("GET {target} HTTP/1.1\r\n\r\n")), "{target}");
        }
        // Malformed: hyper answers 400.
        assert!(hyper("GET /\0 HTTP/1.1\r\n\r\n"));
        assert!(hyper("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        assert!(hyper(&format!("GET / HTTP/1.1\r\n{many}\r\n")));
        // Every byte: taken only where hyper's URI parser reads the target
        // the same way, in a path and in a query; httparse refuses the
        // bytes `plain_target` does not look for.
        for b in 0..=255u8 {
            let visible = (0x21..=0x7e).contains(&b);
            let target = [b'/', b'a', b, b'?', b'q', b, b'q'];
            if !visible && b < 0x80 {
                let mut request = b"GET ".to_vec();
                request.extend_from_slice(&target);
                request.extend_from_slice(b" HTTP/1.1\r\n\r\n");
                let parsed = parse(&request, 8192, seen);
                assert!(matches!(parsed, Parsed::Hyper), "{b:#x}");
                continue;
            }
            let plain = visible && !b"\"#<>`".contains(&b);
            assert_eq!(plain_target(&target), plain, "{b:#x}");
            if plain {
                let text = std::str::from_utf8(&target).unwrap();
                let uri: hyper::Uri = text.parse().unwrap();
                // As `take` splits it.
                let (path, query) = text.split_once('?').unwrap();
                assert_eq!((uri.path(), uri.query()), (path, Some(query)), "{b:#x}");
            }
        }
        // Incomplete: read more.
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: t\r\n", 8192, seen),
            Parsed::Partial
        ));
    }

    #[test]
    fn keeps_method_target_version_and_headers() {
        let seen = taken(
            "GET /announce?info_hash=%41&b=(x),y;z:@!$'*+~ HTTP/1.0\r\nX-Forwarded-For: 192.0.2.1\r\n\
              x-forwarded-for: 192.0.2.2\r\nHost: t\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            seen,
            Seen {
                method: Method::GET,
                path: "/announce".into(),
                query: "info_hash=%41&b=(x),y;z:@!$'*+~".into(),
                version: Version::HTTP_10,
                close: true,
                forwarded: vec!["192.0.2.1".into(), "192.0.2.2".into()],
            }
        );
        // Brackets, braces and bars pass hyper's URI parser unchanged.
        let seen = taken("GET /a[0]|{x}?b={}&c=^\\ HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            (seen.path.as_str(), seen.query.as_str()),
            ("/a[0]|{x}", "b={}&c=^\\")
        );
        let seen = taken("HEAD /scrape HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((seen.method, seen.query.as_str()), (Method::HEAD, ""));
    }

    /// Answers with the request's path as the body.
    struct Echo;

    impl Handler for Echo {
        fn handle(&self, request: &RequestHead<'_>) -> Reply {
            let body = Bytes::copy_from_slice(request.path.as_bytes());
            Reply::Now(Response::new(Either::Left(http_body_util::Full::new(body))))
        }
    }

    /// The bodies of the responses in `output`, in order.
    fn bodies(output: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(output);
        text.split("HTTP/1.1 200 OK\r\n")
            .skip(1)
            .map(|response| response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn answers_pipelined_requests_in_order_and_stops_where_it_must() {
        let mut session = Session::default();
        session
            .input
            .extend_from_slice(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTT");
        session.answer(&Echo, 8192);
        assert_eq!(bodies(&session.output), ["/a", "/b"]);
        assert_eq!(session.next, Next::Read);
        assert_eq!(&session.input[..], b"GET /c HTT");

        session.output.clear();
        session.input.extend_from_slice(
            b"P/1.1\r\nConnection: close\r\n\r\nGET /after-close HTTP/1.1\r\n\r\n",
        );
        session.answer(&Echo, 8192);
        assert_eq!(bodies(&session.output), ["/c"]);
        assert_eq!(session.next, Next::Close);

        // A POST after an answered GET: hyper gets the POST, unanswered.
        let mut session = Session::default();
        session
            .input
            .extend_from_slice(b"GET /a HTTP/1.1\r\n\r\nPOST /p HTTP/1.1\r\n\r\n");
        session.answer(&Echo, 8192);
        assert_eq!(bodies(&session.output), ["/a"]);
        assert_eq!(session.next, Next::Hyper);
        assert_eq!(&session.input[..], b"POST /p HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_plain_reply_is_written_as_its_response_would_be() {
        let body = b"d8:intervali1800e5:peers6:abcdefe".to_vec();
        for head_only in [false, true] {
            for close in [false, true] {
                let mut plain = Vec::new();
                encode_plain(&mut plain, head_only, close, &body);
                let mut full = Vec::new();
                let response = super::super::plain_response(body.clone());
                let streamed = encode(&mut full, head_only, Version::HTTP_11, close, response);
                assert!(streamed.is_none());
                // The date may tick between the two encodings.
                let strip = |bytes: &[u8]| {
                    String::from_utf8_lossy(bytes)
                        .lines()
                        .filter(|line| !line.starts_with("date: "))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                assert_eq!(strip(&plain), strip(&full));
                assert!(String::from_utf8_lossy(&plain).contains("\r\ndate: "));
            }
        }
    }

    #[test]
    fn over_long_heads_get_the_handlers_431_and_linger() {
        let long = format!("GET /announce?{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        // Complete, or incomplete and already as long as allowed: answered
        // here, not handed on nor read further.
        for input in [long.as_bytes(), &long.as_bytes()[..8192]] {
            let mut session = Session::default();
            session.input.extend_from_slice(input);
            session.answer(&Echo, 8192);
            assert_eq!(session.next, Next::Linger);
            let output = String::from_utf8_lossy(&session.output);
            assert!(
                output.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
                "{output}"
            );
            assert!(output.contains("connection: close\r\n"), "{output}");
            assert!(session.input.is_empty());
        }
        // The handler's answer; a HEAD request gets its head only.
        struct Reason;
        impl Handler for Reason {
            fn handle(&self, _: &RequestHead<'_>) -> Reply {
                Reply::Now(Response::new(Either::Left(http_body_util::Full::new(
                    Bytes::new(),
                ))))
            }
            fn too_large(&self, path: Option<&str>) -> Response<ResponseBody> {
                let body = format!("too large at {}", path.unwrap_or("?"));
                Response::new(Either::Left(http_body_util::Full::new(Bytes::from(body))))
            }
        }
        for (method, body) in [("GET", "too large at /announce"), ("HEAD", "")] {
            let mut session = Session::default();
            let long = format!("{method} /announce?{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
            session.input.extend_from_slice(long.as_bytes());
            session.answer(&Reason, 8192);
            let output = String::from_utf8_lossy(&session.output);
            assert!(output.contains("content-length: 22\r\n"), "{output}");
            assert!(output.ends_with(&format!("\r\n\r\n{body}")), "{output}");
        }
        // The handler is told the path when its end has been read.
        assert_eq!(target_path(b"GET /announce?info_hash="), Some("/announce"));
        assert_eq!(target_path(b"GET /scrape HTTP/1.1"), Some("/scrape"));
        assert_eq!(target_path(b"GET /announ"), None);
        assert_eq!(target_path(b"GET \xff? HTTP/1.1"), None);
    }

    proptest::proptest! {
        /// The 16-bytes-at-a-time check agrees with the rule byte by byte,
        /// wherever in a target of any length the odd byte sits.
        #[test]
        fn target_check_agrees_with_the_byte_rule(
            mut bytes in proptest::collection::vec(b'a'..=b'z', 0..300),
            odd in proptest::num::u8::ANY,
            at in proptest::num::usize::ANY,
        ) {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = odd;
            }
            let expected = bytes.iter().all(|&b| plain_byte(b));
            proptest::prop_assert_eq!(plain_target(&bytes), expected);
            proptest::prop_assert_eq!(expected, bytes.is_ascii() && !bytes.iter().any(|b| b"\"#<>`".contains(b)));
        }
    }

    proptest::proptest! {
        /// Hostile input: never a panic; whatever is taken is a GET or HEAD
        /// head, whole, with no body, a target hyper's URI parser reads the
        /// same way, and closes when it asks to.
        #[test]
        fn arbitrary_input_is_taken_only_when_safe(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            prefix in proptest::sample::select(vec![
                "", "GET / HTTP/1.1\r\n", "GET /a?b HTTP/1.0\r\n", "GET /a",
                "HEAD / HTTP/1.1\r\nConnection: close\r\n",
            ]),
        ) {
            let mut input = prefix.as_bytes().to_vec();
            input.extend_from_slice(&bytes);
            let check = |head: &RequestHead<'_>, version: Version, close: bool| {
                let target = if head.query.is_empty() {
                    head.path.to_owned()
                } else {
                    format!("{}?{}", head.path, String::from_utf8_lossy(head.query))
                };
                let uri: Option<hyper::Uri> = target.parse().ok();
                let same = uri.as_ref().is_some_and(|uri| {
                    uri.path() == head.path && uri.query().unwrap_or("").as_bytes() == head.query
                });
                let asks_close = version == Version::HTTP_10
                    || head.headers.get_all("connection").any(|v| {
                        v.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                    });
                let body = head.headers.get_all("content-length").next().is_some()
                    || head.headers.get_all("transfer-encoding").next().is_some();
                (head.method.clone(), same, close == asks_close, body)
            };
            if let Parsed::Take { answer, length, .. } = parse(&input, 8192, check) {
                let (method, same, close_right, body) = answer;
                proptest::prop_assert!(matches!(method, Method::GET | Method::HEAD));
                proptest::prop_assert!(same, "hyper would read the target differently");
                proptest::prop_assert!(close_right);
                proptest::prop_assert!(!body);
                let head = &input[..length];
                proptest::prop_assert!(head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n"));
            }
        }
    }
}
