//! Connection counts: the open count that enforces `max_connections` and
//! lets shutdown wait for connections to drain, and the totals reported in
//! metrics. Whatever protocol runs on a connection, the reactor counts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
pub(crate) struct OpenGuard(Connections);

impl Connections {
    /// Counts of a reactor that keeps at most `max` connections open.
    pub(crate) fn new(max: usize) -> Self {
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
    pub(crate) fn admit(&self) -> Option<OpenGuard> {
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
