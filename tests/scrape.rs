//! Black-box tests of `GET /scrape` (BEP 48).

#[macro_use]
mod common;

use common::{Announce, Tracker, escape, get, id};

fn scrape_reports_each_torrent_sorted_with_zeros_for_unknown() {
    let tracker = Tracker::start(&[]);
    tracker.announce(&Announce::new(id(5), 1).seeder());
    tracker.announce(&Announce::new(id(5), 2));
    tracker.announce(&Announce::new(id(5), 3));
    tracker.announce(&Announce::new(id(2), 1));
    let target = format!(
        "/scrape?info_hash={}&info_hash={}&info_hash={}&info_hash={}",
        escape(&id(5)),
        escape(&id(9)),
        escape(&id(2)),
        escape(&id(5))
    );
    let response = get(tracker.v4, &target);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/plain"));
    // Canonical bencode: keys sorted, the duplicate listed once.
    let mut expected = b"d5:filesd".to_vec();
    for (hash, complete, incomplete) in [(id(2), 0, 1), (id(5), 1, 2), (id(9), 0, 0)] {
        expected.extend_from_slice(b"20:");
        expected.extend_from_slice(&hash);
        expected.extend_from_slice(
            format!("d8:completei{complete}e10:downloadedi0e10:incompletei{incomplete}ee")
                .as_bytes(),
        );
    }
    expected.extend_from_slice(b"ee");
    assert_eq!(
        response.body,
        expected,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

fn scrape_counts_downloads() {
    let tracker = Tracker::start(&[]);
    tracker.announce(&Announce::new(id(1), 1));
    tracker.announce(&Announce::new(id(1), 1).seeder().event("completed"));
    assert_eq!(tracker.counts(id(1)), (1, 0, 1));
}

fn more_hashes_than_the_cap_answers_the_first_with_a_warning() {
    let tracker = Tracker::start(&["--max-scrape-hashes", "3"]);
    let hashes: Vec<[u8; 20]> = [9u8, 1, 7, 3, 5].iter().map(|&b| id(b)).collect();
    let dict = tracker.scrape(&hashes);
    let files = dict.dict("files");
    let mut keys: Vec<Vec<u8>> = files.0.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec![id(1).to_vec(), id(7).to_vec(), id(9).to_vec()]);
    assert_eq!(
        dict.bytes("warning message"),
        b"only the first 3 info hashes were scraped"
    );
    // Exactly the cap: no warning.
    let dict = tracker.scrape(&hashes[..3]);
    assert!(!dict.has("warning message"));
}

fn default_cap_is_one_hundred() {
    let tracker = Tracker::start(&[]);
    let hashes: Vec<[u8; 20]> = (0..101u8).map(id).collect();
    let dict = tracker.scrape(&hashes);
    assert_eq!(dict.dict("files").0.len(), 100);
    assert!(dict.has("warning message"));
}

fn a_scrape_of_150_hashes_fits_the_default_request_limit() {
    let tracker = Tracker::start(&[]);
    // Bytes a client escapes (as most of a real hash's are): ~10 KB of URL.
    let hashes: Vec<[u8; 20]> = (0..150u8)
        .map(|i| {
            std::array::from_fn(|j| match j {
                0 => 0x80 | (i & 0x7f),
                1 => 0x80 | (i >> 7),
                _ => 0x80 | j as u8,
            })
        })
        .collect();
    let target_len: usize = hashes
        .iter()
        .map(|h| "info_hash=&".len() + escape(h).len())
        .sum();
    assert!(target_len > 9_000, "{target_len}");
    let dict = tracker.scrape(&hashes);
    assert_eq!(dict.failure(), None);
    assert_eq!(dict.dict("files").0.len(), 100);
    assert_eq!(
        dict.bytes("warning message"),
        b"only the first 100 info hashes were scraped"
    );
}

fn scrape_without_info_hash_says_full_scrape_is_off() {
    let tracker = Tracker::start(&[]);
    for target in ["/scrape", "/scrape?", "/scrape?foo=bar"] {
        let response = get(tracker.v4, target);
        assert_eq!(response.status, 200);
        assert_eq!(
            response.failure().as_deref(),
            Some("full scrape is disabled: give one or more info_hash")
        );
    }
}

fn malformed_scrape_hashes_are_refused() {
    let tracker = Tracker::start(&[]);
    let response = get(tracker.v6, "/scrape?info_hash=tooshort");
    assert_eq!(
        response.failure().as_deref(),
        Some("info_hash must be exactly 20 bytes")
    );
    let response = get(
        tracker.v6,
        &format!("/scrape?info_hash={}&info_hash=%zz", escape(&id(1))),
    );
    assert_eq!(
        response.failure().as_deref(),
        Some("info_hash has an invalid percent-escape (expected % followed by two hex digits)")
    );
}

reactor_tests!(
    scrape_reports_each_torrent_sorted_with_zeros_for_unknown,
    scrape_counts_downloads,
    more_hashes_than_the_cap_answers_the_first_with_a_warning,
    a_scrape_of_150_hashes_fits_the_default_request_limit,
    default_cap_is_one_hundred,
    scrape_without_info_hash_says_full_scrape_is_off,
    malformed_scrape_hashes_are_refused,
);
