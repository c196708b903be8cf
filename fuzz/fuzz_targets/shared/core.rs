//! The tracker core every request-level fuzz target drives: one small,
//! capped store and metrics, claimed addresses honoured so that code runs.

use std::sync::Arc;

use shoal::clock::Clock;
use shoal::metrics::{BuildInfo, Metrics};
use shoal::protocol::AnnounceOptions;
use shoal::store::{Store, StoreConfig};
use shoal::tracker::{Core, Rules};

pub fn core() -> Arc<Core> {
    let store = Arc::new(Store::new(StoreConfig {
        peer_ttl: 60,
        max_torrents: 10_000,
        max_peers_per_torrent: 1_000,
    }));
    let metrics = Arc::new(Metrics::new(BuildInfo {
        version: "fuzz",
        reactor: "none",
        reactor_detail: String::new(),
        workers: 1,
    }));
    let rules = Rules {
        announce: AnnounceOptions {
            accept_ip_param: true,
            ..AnnounceOptions::default()
        },
        interval: 1800,
        min_interval: 900,
        max_scrape_hashes: 100,
    };
    Arc::new(Core::new(store, Clock::new(), metrics, rules))
}
