//! A coarse clock: whole seconds since start, read without a syscall.
//!
//! One housekeeping thread calls [`Clock::tick`] every second; announces only
//! read an atomic. The store takes the time as a plain `u32`, so tests can
//! drive it with any value they like.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    seconds: AtomicU32,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                start: Instant::now(),
                seconds: AtomicU32::new(0),
            }),
        }
    }

    /// Seconds since start, as of the last tick.
    pub fn now(&self) -> u32 {
        self.inner.seconds.load(Ordering::Relaxed)
    }

    /// Reads the real clock and publishes it; returns the new time.
    pub fn tick(&self) -> u32 {
        let seconds = u32::try_from(self.inner.start.elapsed().as_secs()).unwrap_or(u32::MAX);
        self.inner.seconds.store(seconds, Ordering::Relaxed);
        seconds
    }
}
