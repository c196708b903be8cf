//! Parsing and encoding costs, with no I/O and no store.
//!
//! `cargo bench --bench protocol`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};

use shoal::protocol::{
    AnnounceOptions, AnnounceRequest, AnnounceResponse, InfoHash, PeerId, PeerSet, ScrapeRequest,
    ScrapeResponse, SwarmCounts,
};

/// What libtorrent 2.0 sends (captured in fixtures/clients).
const LIBTORRENT: &[u8] = b"info_hash=%bb%cb!%ae%d1-V%b5%e8Ps%3b%10%91F%d13%83U%b4&peer_id=-LT2080-2k*fk4_d7YJd&port=38661&uploaded=0&downloaded=0&left=1000000&corrupt=0&key=BDC05CFF&event=started&numwant=200&compact=1&no_peer_id=1&supportcrypto=1&redundant=0";
/// What aria2 1.36 sends (captured in fixtures/clients).
const ARIA2: &[u8] = b"info_hash=%BB%CB%21%AE%D1-V%B5%E8Ps%3B%10%91F%D13%83U%B4&peer_id=A2-1-36-0-%3A%80%FE69%E8%0B%C8%A0o&uploaded=0&downloaded=0&left=1000000&compact=1&key=%FE69%E8%0B%C8%A0o&numwant=50&no_peer_id=1&port=6986&event=started&supportcrypto=1";

fn parse(c: &mut Criterion) {
    let options = AnnounceOptions::default();
    c.bench_function("parse announce (libtorrent)", |b| {
        b.iter(|| AnnounceRequest::parse(black_box(LIBTORRENT), &options))
    });
    c.bench_function("parse announce (aria2)", |b| {
        b.iter(|| AnnounceRequest::parse(black_box(ARIA2), &options))
    });
    let scrape100: String = (0..100u8)
        .map(|i| format!("info_hash={}", format!("%{i:02X}").repeat(20)))
        .collect::<Vec<_>>()
        .join("&");
    c.bench_function("parse scrape (100 hashes)", |b| {
        b.iter(|| ScrapeRequest::parse(black_box(scrape100.as_bytes()), 100))
    });
}

fn encode(c: &mut Criterion) {
    let mut peers = PeerSet::default();
    for i in 0..50u8 {
        peers.v4.push([10, 0, 0, i, 0x1A, 0xE1]);
        peers.v4_ids.push(PeerId([i; 20]));
    }
    let response = |compact| AnnounceResponse {
        interval: 1800,
        min_interval: 900,
        complete: 40,
        incomplete: 10,
        downloaded: 1234,
        peers: &peers,
        compact,
        no_peer_id: false,
        external_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tracker_id: None,
        warning: None,
    };
    let mut out = Vec::with_capacity(4096);
    c.bench_function("encode announce (50 compact peers)", |b| {
        b.iter(|| {
            out.clear();
            black_box(response(true)).encode(&mut out);
        })
    });
    c.bench_function("encode announce (50 dict peers)", |b| {
        b.iter(|| {
            out.clear();
            black_box(response(false)).encode(&mut out);
        })
    });
    let files: Vec<(InfoHash, SwarmCounts)> = (0..100u8)
        .map(|i| (InfoHash([i; 20]), SwarmCounts::default()))
        .collect();
    c.bench_function("encode scrape (100 files)", |b| {
        b.iter(|| {
            out.clear();
            ScrapeResponse {
                files: black_box(&files),
                warning: None,
            }
            .encode(&mut out);
        })
    });
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
