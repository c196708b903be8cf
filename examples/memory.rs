//! Resident memory of the store: fills it with PEERS peers spread over
//! TORRENTS torrents (uniformly, a quarter seeders, distinct IPv4 addresses)
//! and reports RSS growth per peer and per torrent.
//!
//! `cargo run --release --example memory -- [PEERS] [TORRENTS]`

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;

use shoal::protocol::{AnnounceRequest, Event, InfoHash, PeerId, PeerSet};
use shoal::store::{MemoryStore as Store, StoreConfig};

/// The allocator the `shoal` binary uses, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: u32 = args.next().map_or(1_000_000, |a| a.parse().expect("PEERS"));
    let torrents: u32 = args
        .next()
        .map_or(100_000, |a| a.parse().expect("TORRENTS"));
    let store = Store::new(StoreConfig::unlimited(3600));
    let mut out = PeerSet::default();
    let before = rss_bytes();
    for i in 0..peers {
        let torrent = i % torrents;
        let mut hash = [0u8; 20];
        hash[..4].copy_from_slice(&torrent.to_be_bytes());
        hash[4..8].copy_from_slice(&torrent.wrapping_mul(2_654_435_761).to_be_bytes());
        let mut id = [b'-'; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let request = AnnounceRequest {
            info_hash: InfoHash(hash),
            peer_id: PeerId(id),
            port: NonZeroU16::new(6881).expect("non-zero"),
            uploaded: 0,
            downloaded: 0,
            left: if i % 4 == 0 { 0 } else { 1 },
            event: Event::Started,
            numwant: 0,
            compact: true,
            no_peer_id: true,
            ip: None,
            ipv4: None,
            ipv6: None,
        };
        out.clear();
        let _ = store.announce(
            &request,
            IpAddr::V4(Ipv4Addr::from(0x0B00_0000 + i)),
            0,
            &mut out,
        );
    }
    let grown = rss_bytes().saturating_sub(before);
    // The target: at most 64 bytes per peer and 200 per torrent.
    let budget = 64 * u64::from(peers) + 200 * u64::from(torrents);
    println!(
        "{peers} peers over {torrents} torrents: RSS grew {:.1} MiB = {:.1} bytes per peer; \
         budget (64 B/peer + 200 B/torrent) {:.1} MiB, used {:.0}%",
        grown as f64 / (1 << 20) as f64,
        grown as f64 / f64::from(peers),
        budget as f64 / (1 << 20) as f64,
        100.0 * grown as f64 / budget as f64,
    );
    println!(
        "torrents in store: {}, peers: {}",
        store.torrents(),
        store.peers()
    );
}
