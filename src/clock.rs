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

/// The kernel's coarse monotonic clock in nanoseconds: it advances once per
/// scheduler tick (1-4 ms) and is read from the vDSO without touching the
/// TSC, several times cheaper than `Instant::now`. For deadlines measured in
/// seconds, read on every request.
pub fn monotonic_coarse_nanos() -> u64 {
    coarse(libc::CLOCK_MONOTONIC_COARSE)
}

/// Whole seconds since the Unix epoch from the kernel's coarse real-time
/// clock (see [`monotonic_coarse_nanos`]).
pub fn unix_coarse_secs() -> u64 {
    coarse(libc::CLOCK_REALTIME_COARSE) / 1_000_000_000
}

fn coarse(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids are Linux's.
    let ok = unsafe { libc::clock_gettime(clock, &mut ts) } == 0;
    if !ok {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}
