//! Real client traffic: the requests aria2 and libtorrent sent to a logging
//! listener (see fixtures/capture.py), parsed and replayed against shoal.

#[macro_use]
mod common;

use std::path::Path;

use shoal::protocol::{AnnounceOptions, AnnounceRequest, Event, InfoHash};

use common::{Tracker, exchange, get};

/// The info hash of the torrent both captures are about.
const CAPTURED_HASH: [u8; 20] = [
    0xbb, 0xcb, 0x21, 0xae, 0xd1, 0x2d, 0x56, 0xb5, 0xe8, 0x50, 0x73, 0x3b, 0x10, 0x91, 0x46, 0xd1,
    0x33, 0x83, 0x55, 0xb4,
];

/// Every captured request as it went over the wire (request line and
/// headers, CRLF line ends restored).
fn captured_requests() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/clients");
    let mut requests = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for block in text.split("----\n").filter(|b| b.starts_with("GET ")) {
            let request = block.trim_end().replace('\n', "\r\n") + "\r\n\r\n";
            requests.push((name.clone(), request));
        }
    }
    assert!(requests.len() >= 10, "fixtures missing");
    requests
}

fn query_of(request: &str) -> &str {
    let target = request.split(' ').nth(1).unwrap();
    target.split_once('?').map_or("", |(_, q)| q)
}

#[test]
fn captured_announces_parse_to_what_the_clients_meant() {
    let mut events = Vec::new();
    for (file, request) in captured_requests() {
        let query = query_of(&request);
        let parsed = AnnounceRequest::parse(query.as_bytes(), &AnnounceOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {e}: {query}"));
        assert_eq!(parsed.info_hash, InfoHash(CAPTURED_HASH), "{file}");
        assert!(parsed.compact && parsed.no_peer_id, "{file}");
        let client = &parsed.peer_id.0[..3];
        assert!(
            client == b"A2-" || client == b"-LT",
            "{file}: {:?}",
            parsed.peer_id
        );
        if parsed.event == Event::Completed {
            assert_eq!(parsed.left, 0, "{file}");
            assert_eq!(parsed.downloaded, 1_000_000, "{file}");
        }
        events.push(parsed.event);
    }
    for event in [
        Event::Started,
        Event::Completed,
        Event::Stopped,
        Event::None,
    ] {
        assert!(events.contains(&event), "no {event:?} in the captures");
    }
}

fn captured_sessions_replay_to_the_right_counts() {
    let tracker = Tracker::start(&[]);
    let mut replayed = 0;
    for (file, request) in captured_requests() {
        let response = exchange(tracker.v4, request.as_bytes());
        assert_eq!(response.status, 200, "{file}");
        let dict = response.dict();
        assert_eq!(dict.failure(), None, "{file}: {request}");
        replayed += 1;
    }
    assert!(replayed >= 10);
    // Each capture is a whole session: both clients stopped at the end, and
    // each completed download counted once.
    let target = format!("/scrape?info_hash={}", common::escape(&CAPTURED_HASH));
    let files = get(tracker.v4, &target).dict().dict("files");
    let file = files.dict_bytes(&CAPTURED_HASH);
    assert_eq!(
        (
            file.int("complete"),
            file.int("incomplete"),
            file.int("downloaded")
        ),
        (0, 0, 2)
    );
}

reactor_tests!(captured_sessions_replay_to_the_right_counts,);
