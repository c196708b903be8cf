//! Worker upkeep: a function the binary registers, which every worker
//! thread runs about twice a second while it works and within a second or
//! so of going idle.
//!
//! The binary uses it to let its allocator collect each worker's heap. A
//! block one worker allocated and another freed (a swarm grown on the other
//! worker) is taken back, and its page given up once empty, only when the
//! owning thread collects; an idle worker never does by itself, so after a
//! burst of growth the pages it owns stay resident (about 2.5 bytes a peer
//! at 1M peers over 100k torrents, docs/benchmarks.md). What the function
//! does is none of the reactor's business.
//!
//! It runs where a tokio worker parks (rate-limited per thread), and from a
//! ticker task on each worker, which also wakes an idle worker so that it
//! parks again.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

use crate::clock;

/// How often a thread runs the upkeep at most, and how often tickers wake.
const EVERY: Duration = Duration::from_millis(500);

static UPKEEP: OnceLock<fn()> = OnceLock::new();

thread_local! {
    /// When this thread last ran the upkeep (coarse monotonic nanoseconds).
    static LAST: Cell<u64> = const { Cell::new(0) };
}

/// Registers what every worker thread runs now and then (once per process;
/// later calls change nothing and return false). Call it before serving.
pub fn set_worker_upkeep(upkeep: fn()) -> bool {
    UPKEEP.set(upkeep).is_ok()
}

/// Whether an upkeep is registered (no ticker is needed without one).
pub(super) fn registered() -> bool {
    UPKEEP.get().is_some()
}

/// Runs the upkeep on this thread unless it ran in the last [`EVERY`]:
/// cheap enough for every park (a thread-local and a coarse clock read).
pub(super) fn maybe_run() {
    let Some(upkeep) = UPKEEP.get() else {
        return;
    };
    let now = clock::monotonic_coarse_nanos();
    let due = LAST.with(|last| {
        let due = now.saturating_sub(last.get()) >= EVERY.as_nanos() as u64;
        if due {
            last.set(now);
        }
        due
    });
    if due {
        upkeep();
    }
}

/// A ticker for a tokio runtime: runs the upkeep where it is polled, and
/// wakes a worker every [`EVERY`] so that an idle one parks again.
pub(super) async fn tick_tokio() {
    loop {
        tokio::time::sleep(EVERY).await;
        maybe_run();
    }
}

/// The same on a monoio worker, which has no park hook: the ticker alone.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(super) async fn tick_monoio() {
    loop {
        monoio::time::sleep(EVERY).await;
        maybe_run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Runs on this thread (other tests' workers may run it too).
        static RUNS: Cell<usize> = const { Cell::new(0) };
    }

    fn runs() -> usize {
        RUNS.with(Cell::get)
    }

    /// The upkeep runs at most once per period on a thread, however often
    /// the thread parks, and again once the period has passed.
    #[test]
    fn upkeep_is_rate_limited_per_thread() {
        assert!(set_worker_upkeep(|| RUNS.with(|r| r.set(r.get() + 1))));
        assert!(
            !set_worker_upkeep(|| {}),
            "a second upkeep replaced the first"
        );
        std::thread::spawn(|| {
            for _ in 0..1000 {
                maybe_run();
            }
            assert_eq!(runs(), 1);
            std::thread::sleep(EVERY + Duration::from_millis(50));
            maybe_run();
            assert_eq!(runs(), 2);
        })
        .join()
        .unwrap();
        // Another thread keeps its own time: it runs at once.
        let other = std::thread::spawn(|| {
            maybe_run();
            runs()
        });
        assert_eq!(other.join().unwrap(), 1);
    }
}
