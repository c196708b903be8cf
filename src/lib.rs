//! shoal: an HTTP BitTorrent tracker (BEP 3 announce, BEP 48 scrape).
//!
//! One way down, nothing below imports anything above it:
//!
//! ```text
//! socket -> reactor -> http -> protocol (parse) -> store -> protocol (encode) -> socket
//! ```
//!
//! - [`reactor`]: listeners, runtime and connection tasks; knows no BitTorrent.
//! - [`http`]: routes and headers; knows nothing of how peers are kept.
//! - [`protocol`]: pure parsing and bencoding.
//! - [`store`]: the sharded swarm store; knows nothing of HTTP.
//! - [`config`], [`clock`], [`shutdown`]: what every part shares.
//!
//! [`run`] wires them together; `main.rs` only parses the command line.

pub mod clock;
pub mod config;
pub mod http;
pub mod protocol;
pub mod reactor;
pub mod shutdown;
pub mod store;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::Context;

use clock::Clock;
use config::Config;
use http::{HttpConfig, Tracker, TrackerService};
use protocol::AnnounceOptions;
use shutdown::Shutdown;
use store::{Store, StoreConfig};

/// Runs the tracker until `shutdown` triggers. Blocks the calling thread.
pub fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    config.validate()?;
    let clock = Clock::new();
    let store = Arc::new(Store::new(StoreConfig {
        peer_ttl: config.effective_peer_ttl(),
        max_torrents: config.max_torrents,
        max_peers_per_torrent: config.max_peers_per_torrent,
    }));
    let tracker = Arc::new(Tracker::new(
        store.clone(),
        clock.clone(),
        HttpConfig {
            announce: AnnounceOptions {
                default_numwant: config.default_numwant,
                max_numwant: config.max_numwant,
                accept_ip_param: config.allow_ip_param,
            },
            interval: config.interval,
            min_interval: config.effective_min_interval(),
            max_scrape_hashes: config.max_scrape_hashes,
            tracker_id: config.tracker_id.clone().map(String::into_bytes),
        },
    ));
    let kind = config
        .reactor_choice()?
        .resolve()
        .map_err(anyhow::Error::msg)?;
    let options = reactor::Options {
        kind,
        workers: config.effective_workers(),
        header_read_timeout: Duration::from_secs(config.header_timeout),
        max_request_bytes: config.max_request_bytes,
        max_connections: config.max_connections,
        shutdown_grace: Duration::from_secs(5),
    };
    let bound = reactor::Bound::bind(options, &config.listen)?;
    let described = bound.options().describe();
    for addr in bound.local_addrs() {
        tracing::info!("listening on http://{addr}/announce (reactor: {described})");
    }

    let housekeeping = start_housekeeping(store, clock, config.effective_peer_ttl())?;
    let served = bound.serve(
        move |conn| TrackerService::new(tracker.clone(), conn.remote),
        shutdown,
    );
    drop(housekeeping.stop);
    let _ = housekeeping.thread.join();
    served.context("the reactor failed")?;
    tracing::info!("stopped");
    Ok(())
}

struct Housekeeping {
    /// Dropping this ends the thread.
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

/// Ticks the coarse clock every second and sweeps expired peers a few times
/// per TTL, on a plain thread so that it runs under any reactor.
fn start_housekeeping(
    store: Arc<Store>,
    clock: Clock,
    peer_ttl: u32,
) -> anyhow::Result<Housekeeping> {
    let (stop, stopped) = mpsc::channel::<()>();
    let sweep_every = (peer_ttl / 4).clamp(1, 60);
    let thread = thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            let mut last_sweep = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(1))
            {
                let now = clock.tick();
                if now - last_sweep >= sweep_every {
                    last_sweep = now;
                    let expired = store.expire(now);
                    if expired.peers > 0 {
                        tracing::debug!(
                            peers = expired.peers,
                            torrents = expired.torrents,
                            "expired"
                        );
                    }
                }
            }
        })?;
    Ok(Housekeeping { stop, thread })
}
