//! Longest single announce while one swarm grows to PEERS new peers: the
//! pause an announce holding that swarm's shard lock can cause.
//!
//! `cargo run --release --example stall -- [PEERS]`

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use shoal::protocol::{AnnounceRequest, Event, InfoHash, PeerId, PeerSet};
use shoal::store::{MemoryStore as Store, StoreConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let peers: u32 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().unwrap_or(1_000_000));
    let store = Store::new(StoreConfig::unlimited(3600));
    let mut out = PeerSet::default();
    let mut worst = Duration::ZERO;
    let mut slow = 0u32;
    let mut worst_at = 0;
    let started = Instant::now();
    for i in 0..peers {
        let mut id = [b'-'; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let request = AnnounceRequest {
            info_hash: InfoHash([7; 20]),
            peer_id: PeerId(id),
            port: NonZeroU16::new(6881).unwrap_or(NonZeroU16::MIN),
            uploaded: 0,
            downloaded: 0,
            left: if i % 4 == 0 { 0 } else { 1 },
            event: Event::Started,
            numwant: 50,
            compact: true,
            no_peer_id: true,
            ip: None,
            ipv4: None,
            ipv6: None,
        };
        out.clear();
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let t = Instant::now();
        let _ = store.announce(&request, ip, 0, &mut out);
        let took = t.elapsed();
        if took > Duration::from_micros(200) {
            slow += 1;
            if std::env::var_os("VERBOSE").is_some() {
                println!("  peer {i}: {took:?}");
            }
        }
        if took > worst {
            worst = took;
            worst_at = i;
        }
    }
    println!(
        "{peers} peers into one swarm in {:?}: longest announce {worst:?} (at peer {worst_at}), {slow} over 200 µs",
        started.elapsed()
    );
}
