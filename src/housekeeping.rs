//! Background chores on one plain thread, so they run under any reactor:
//! ticking the coarse clock every second, sweeping expired peers a few times
//! per TTL, writing the state file every snapshot interval, and sampling
//! the request totals for the stats page.
//!
//! A sweep is paced: it sleeps twice as long as each step took, so it uses
//! at most a third of a core. When millions of peers go stale together (the
//! first minute of a loaded tracker, or after an outage) an unpaced sweep
//! took a whole core for a second and more, and on a machine the workers
//! keep busy every announce queued behind it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::metrics::{self, Metrics};
use crate::state;
use crate::store::Store;

pub(crate) struct Housekeeping {
    /// Dropping this ends the thread.
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Housekeeping {
    /// Ends the thread and waits for it.
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Starts the thread. `snapshots` is the state file and the seconds between
/// snapshots, if the counts are kept.
pub(crate) fn start(
    store: Arc<Store>,
    clock: Clock,
    metrics: Arc<Metrics>,
    peer_ttl: u32,
    snapshots: Option<(PathBuf, u64)>,
) -> std::io::Result<Housekeeping> {
    let (stop, stopped) = mpsc::channel::<()>();
    let sweep_every = (peer_ttl / 4).clamp(1, 60);
    // The first sample is taken here, not on the new thread: the history is
    // then never empty once the listeners serve, however late the thread runs.
    metrics.sample();
    let thread = thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            let mut last_sweep = 0;
            let mut last_snapshot = 0;
            let mut last_sample = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(1))
            {
                let now = clock.tick();
                // Every SAMPLE_EVERY seconds on the dot, none skipped when a
                // sweep or a snapshot ran past a second.
                let sample = u64::from(now) / metrics::SAMPLE_EVERY;
                if sample != last_sample {
                    last_sample = sample;
                    metrics.sample();
                }
                if now - last_sweep >= sweep_every {
                    last_sweep = now;
                    let mut pace = Pace::new(&clock);
                    let expired = store
                        .memory()
                        .map(|m| m.expire_paced(now, &mut || pace.pause()))
                        .unwrap_or_default();
                    metrics.peers_expired(expired.peers);
                    if expired.peers > 0 {
                        tracing::debug!(
                            peers = expired.peers,
                            torrents = expired.torrents,
                            "expired"
                        );
                    }
                }
                if let Some((path, every)) = &snapshots
                    && u64::from(now - last_snapshot) >= *every
                {
                    last_snapshot = now;
                    let started = Instant::now();
                    let counts = store.memory().map(|m| m.downloads()).unwrap_or_default();
                    match state::save(path, &counts) {
                        Ok(()) => {
                            let took = started.elapsed();
                            metrics.snapshot_written(took);
                            tracing::debug!(
                                torrents = counts.len(),
                                took_ms = took.as_millis() as u64,
                                "state snapshot written"
                            );
                        }
                        // Keep serving; the next snapshot tries again.
                        Err(error) => {
                            metrics.snapshot_failed();
                            tracing::error!("{error}");
                        }
                    }
                }
            }
        })?;
    Ok(Housekeeping { stop, thread })
}

/// Paces a sweep: each pause sleeps twice as long as the step before it
/// took (a third of a core at most), and keeps the clock ticking meanwhile.
struct Pace<'a> {
    clock: &'a Clock,
    step_began: Instant,
}

impl<'a> Pace<'a> {
    /// Sleeps shorter than this are skipped: a sleep costs about as much.
    const SHORTEST: Duration = Duration::from_micros(100);

    fn new(clock: &'a Clock) -> Self {
        Self {
            clock,
            step_began: Instant::now(),
        }
    }

    fn pause(&mut self) {
        let rest = self.step_began.elapsed() * 2;
        if rest >= Self::SHORTEST {
            thread::sleep(rest);
        }
        self.clock.tick();
        self.step_began = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pause rests twice as long as the step before it took.
    #[test]
    fn a_pause_rests_twice_the_step() {
        let clock = Clock::new();
        let mut pace = Pace::new(&clock);
        let step = Duration::from_millis(20);
        pace.step_began = Instant::now() - step;
        let began = Instant::now();
        pace.pause();
        let rested = began.elapsed();
        assert!(rested >= step * 2, "rested {rested:?}");
        // The next step is timed from the end of the pause.
        assert!(pace.step_began >= began + step * 2);
    }
}
