//! Black-box tests of full scrape (`GET /scrape` without `info_hash`, on
//! with `--full-scrape`): every torrent in canonical order, streamed,
//! gzip-compressed on request, and rate-limited per client address.

#[macro_use]
mod common;

use std::io::Read;

use common::{Announce, Tracker, exchange, get, id};

/// The full-scrape body expected for `(hash, complete, incomplete, downloaded)`
/// entries, given in hash order.
fn expected(files: &[([u8; 20], u32, u32, u32)]) -> Vec<u8> {
    let mut body = b"d5:filesd".to_vec();
    for (hash, complete, incomplete, downloaded) in files {
        body.extend_from_slice(b"20:");
        body.extend_from_slice(hash);
        body.extend_from_slice(
            format!(
                "d8:completei{complete}e10:downloadedi{downloaded}e10:incompletei{incomplete}ee"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(b"ee");
    body
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .expect("a gzip stream");
    plain
}

fn full_scrape_lists_every_torrent_streamed_and_gzipped() {
    if common::memory_only("the full scrape") {
        return;
    }
    let tracker = Tracker::start(&["--full-scrape", "--full-scrape-interval", "0"]);
    tracker.announce(&Announce::new(id(9), 1).seeder().event("completed"));
    tracker.announce(&Announce::new(id(9), 2));
    tracker.announce(&Announce::new(id(3), 1));
    tracker.announce_v6(&Announce::new(id(200), 1).seeder());
    let want = expected(&[(id(3), 0, 1, 0), (id(9), 1, 1, 1), (id(200), 1, 0, 0)]);

    let plain = get(tracker.v4, "/scrape");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("transfer-encoding"), Some("chunked"));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!(plain.body, want, "{}", String::from_utf8_lossy(&plain.body));

    let gzipped = scrape_accepting(tracker.v6, "br, gzip");
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&gzipped.body), want);

    assert_eq!(scrape_accepting(tracker.v4, "gzip;q=0").body, want);
    // A scrape with info hashes is unchanged.
    assert_eq!(tracker.counts(id(9)), (1, 1, 1));
}

/// A full scrape sent with `Accept-Encoding: accept`.
fn scrape_accepting(addr: std::net::SocketAddr, accept: &str) -> common::HttpResponse {
    let request = format!(
        "GET /scrape HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {accept}\r\nConnection: close\r\n\r\n"
    );
    common::parse_response(&common::raw(addr, request.as_bytes()))
}

fn full_scrape_is_limited_per_address() {
    if common::memory_only("the full scrape") {
        return;
    }
    let tracker = Tracker::start(&["--full-scrape", "--full-scrape-interval", "60"]);
    tracker.announce(&Announce::new(id(1), 1));
    assert_eq!(get(tracker.v4, "/scrape").status, 200);
    let again = get(tracker.v4, "/scrape");
    assert_eq!(again.status, 429);
    let wait: u32 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&wait), "{wait}");
    let reason = again.failure().unwrap();
    assert!(
        reason.starts_with("full scrape rate limit: one per 60 seconds per address"),
        "{reason}"
    );
    // Another address is not held back, nor are ordinary scrapes.
    assert_eq!(get(tracker.v6, "/scrape").status, 200);
    assert_eq!(tracker.counts(id(1)), (0, 1, 0));
    let m = String::from_utf8(get(tracker.v4, "/metrics").body).unwrap();
    assert!(m.contains("shoal_failures_total{reason=\"full_scrape_rate_limited\"} 1\n"));
    assert!(m.contains("shoal_full_scrapes_total{result=\"ok\",family=\"ipv4\"} 1\n"));
    assert!(m.contains("shoal_full_scrapes_total{result=\"ok\",family=\"ipv6\"} 1\n"));
}

fn full_scrape_of_an_empty_tracker_and_head() {
    if common::memory_only("the full scrape") {
        return;
    }
    let tracker = Tracker::start(&["--full-scrape", "--full-scrape-interval", "0"]);
    assert_eq!(get(tracker.v4, "/scrape").body, b"d5:filesdee");
    let head = exchange(tracker.v4, b"HEAD /scrape HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

reactor_tests!(
    full_scrape_lists_every_torrent_streamed_and_gzipped,
    full_scrape_is_limited_per_address,
    full_scrape_of_an_empty_tracker_and_head,
);
