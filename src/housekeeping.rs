//! Background chores on one plain thread, so they run under any reactor:
//! ticking the coarse clock every second, sweeping expired peers a few times
//! per TTL, writing the state file every snapshot interval, and sampling
//! the request totals for the stats page.

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
    let thread = thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            let mut last_sweep = 0;
            let mut last_snapshot = 0;
            metrics.sample();
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(1))
            {
                let now = clock.tick();
                if u64::from(now) % metrics::SAMPLE_EVERY == 0 {
                    metrics.sample();
                }
                if now - last_sweep >= sweep_every {
                    last_sweep = now;
                    let expired = store.memory().map(|m| m.expire(now)).unwrap_or_default();
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
