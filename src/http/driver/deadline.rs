//! Per-connection deadlines: how long a client may stay silent between
//! requests (idle keep-alive) and how long one request may take from its
//! first byte to its response (slow request heads, slowloris).
//!
//! [`Timed`] wraps a stream and records the phase the connection is in: a
//! read that brings bytes while idle starts a request; a write (the
//! response) makes it idle again. [`watchdog`] sleeps on the runtime's hyper
//! timer until the current phase's deadline and returns once it has passed
//! without the phase changing; the connection is then dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock::monotonic_coarse_nanos;

/// The two limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From a request's first byte to its response.
    pub request: Duration,
    /// From a response (or the connection's start) to the next request's
    /// first byte.
    pub idle: Duration,
}

/// The phase a connection is in, shared by the stream and the watchdog.
#[derive(Debug)]
pub(super) struct Phase {
    /// When the phase began, on the coarse monotonic clock (nanoseconds):
    /// read twice per request, so the cheap clock; its few milliseconds of
    /// lag do not matter to limits counted in seconds.
    since: AtomicU64,
    in_request: AtomicBool,
}

impl Phase {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            since: AtomicU64::new(monotonic_coarse_nanos()),
            in_request: AtomicBool::new(false),
        })
    }

    fn enter(&self, in_request: bool) {
        self.since
            .store(monotonic_coarse_nanos(), Ordering::Relaxed);
        self.in_request.store(in_request, Ordering::Relaxed);
    }

    /// Marks a request as started by bytes read before the stream was
    /// wrapped (its deadline runs from now).
    pub fn begin_request(&self) {
        self.enter(true);
    }

    /// When the current phase runs out (coarse clock nanoseconds), and a
    /// token that changes with it.
    fn deadline(&self, limits: Limits) -> (u64, u64, bool) {
        let since = self.since.load(Ordering::Relaxed);
        let in_request = self.in_request.load(Ordering::Relaxed);
        let limit = if in_request {
            limits.request
        } else {
            limits.idle
        };
        let limit = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        (since.saturating_add(limit), since, in_request)
    }
}

/// A stream that reports request starts and responses to its [`Phase`].
pub(super) struct Timed<S> {
    inner: S,
    phase: Arc<Phase>,
}

impl<S> Timed<S> {
    pub fn new(inner: S, phase: Arc<Phase>) -> Self {
        Self { inner, phase }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let phase = &self.phase;
            if !phase.in_request.load(Ordering::Relaxed) {
                phase.enter(true);
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.enter(false);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.enter(false);
        }
        result
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

/// Completes once the connection has stayed in one phase past its limit.
///
/// It wakes at the phase's deadline or one request limit from now, whichever
/// is sooner. A request that starts while it sleeps has its deadline one
/// request limit after it started, so never before that wake-up: no deadline
/// is missed, and a busy connection re-arms its timer once per request limit
/// rather than once per request.
pub(super) async fn watchdog(phase: Arc<Phase>, limits: Limits, timer: &impl hyper::rt::Timer) {
    loop {
        let (deadline, since, in_request) = phase.deadline(limits);
        let now = monotonic_coarse_nanos();
        if now >= deadline {
            return;
        }
        let wait = Duration::from_nanos(deadline - now).min(limits.request);
        timer.sleep_until(Instant::now() + wait).await;
        let (_, since_now, in_request_now) = phase.deadline(limits);
        // The coarse clock may trail the timer by a tick: then the loop
        // sleeps that tick more.
        if since_now == since
            && in_request_now == in_request
            && monotonic_coarse_nanos() >= deadline
        {
            return;
        }
    }
}
