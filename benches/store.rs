//! Store costs: one announce into swarms of growing size (it should stay
//! flat), and scrapes of 1 and 100 hashes.
//!
//! `cargo bench --bench store`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use shoal::protocol::{AnnounceOptions, AnnounceRequest, InfoHash, PeerSet};
use shoal::store::{MemoryStore as Store, StoreConfig};

fn request(hash: [u8; 20], peer: u32, left: u64) -> AnnounceRequest {
    let q = format!(
        "info_hash={}&peer_id=-XX0001-{peer:012}&port={}&uploaded=0&downloaded=0&left={left}&numwant=50",
        hash.iter().map(|b| format!("%{b:02X}")).collect::<String>(),
        1 + peer % 60_000,
    );
    AnnounceRequest::parse(q.as_bytes(), &AnnounceOptions::default()).expect("valid")
}

fn ip(peer: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + peer))
}

/// A store holding one torrent with `size` peers, a quarter of them seeders.
fn swarm_of(size: u32) -> (Store, [u8; 20]) {
    let store = Store::new(StoreConfig::unlimited(3600));
    let hash = [7u8; 20];
    let mut out = PeerSet::default();
    for peer in 0..size {
        let left = if peer % 4 == 0 { 0 } else { 1 };
        out.clear();
        let _ = store.announce(&request(hash, peer, left), ip(peer), 0, &mut out);
    }
    (store, hash)
}

fn announce(c: &mut Criterion) {
    let mut group = c.benchmark_group("announce into swarm");
    for size in [1u32, 10, 100, 1_000, 10_000, 100_000] {
        let (store, hash) = swarm_of(size);
        // A leecher re-announcing: the common case.
        let req = request(hash, size / 2 + 1, 1);
        let addr = ip(size / 2 + 1);
        let mut out = PeerSet::default();
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                out.clear();
                let _ = black_box(store.announce(black_box(&req), addr, 1, &mut out));
            })
        });
    }
    group.finish();
}

fn scrape(c: &mut Criterion) {
    let store = Store::new(StoreConfig::unlimited(3600));
    let mut out = PeerSet::default();
    let hashes: Vec<InfoHash> = (0..100u32)
        .map(|i| {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.to_be_bytes());
            out.clear();
            let _ = store.announce(&request(h, i, 1), ip(i), 0, &mut out);
            InfoHash(h)
        })
        .collect();
    let mut files = Vec::with_capacity(100);
    for n in [1usize, 100] {
        c.bench_function(&format!("scrape {n} hashes"), |b| {
            b.iter(|| {
                files.clear();
                store.scrape(black_box(&hashes[..n]), &mut files);
            })
        });
    }
}

criterion_group!(benches, announce, scrape);
criterion_main!(benches);
