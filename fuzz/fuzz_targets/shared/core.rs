//! The tracker core every request-level fuzz target drives: one small,
//! capped store and metrics, claimed addresses honoured so that code runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use shoal::clock::Clock;
use shoal::metrics::{BuildInfo, Metrics};
use shoal::protocol::AnnounceOptions;
use shoal::store::{MemoryStore as Store, StoreConfig};
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

/// A client address picked by two bits of `selector`: a private IPv4
/// address, IPv4 or IPv6 loopback, or a documentation IPv6 address.
pub fn client(selector: u8) -> IpAddr {
    match selector & 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, selector)),
        1 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        2 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::from(selector),
        )),
    }
}
