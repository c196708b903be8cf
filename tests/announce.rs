//! Black-box tests of `GET /announce` against the real binary.

#[macro_use]
mod common;

use common::{Announce, Tracker, escape, get, id};

const LOCALHOST4: [u8; 4] = [127, 0, 0, 1];

fn first_announce_gets_counts_interval_and_no_peers() {
    let tracker = Tracker::start(&[]);
    let response = get(tracker.v4, &Announce::new(id(1), 1).target());
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    let dict = response.dict();
    assert_eq!(dict.failure(), None);
    assert_eq!((dict.int("complete"), dict.int("incomplete")), (0, 1));
    assert_eq!(dict.int("downloaded"), 0);
    // Default interval 1800 plus at most 5% jitter.
    let interval = dict.int("interval");
    assert!((1800..=1890).contains(&interval), "interval {interval}");
    assert_eq!(dict.int("min interval"), 900);
    assert_eq!(dict.bytes("peers"), b"");
    assert!(!dict.has("peers6"));
    assert_eq!(dict.bytes("external ip"), LOCALHOST4);
}

fn peers_see_each_other_but_never_themselves() {
    let tracker = Tracker::start(&[]);
    let hash = id(2);
    tracker.announce(&Announce::new(hash, 1).port(7001));
    let second = tracker.announce(&Announce::new(hash, 2).port(7002));
    assert_eq!(second.peers4(), vec![(LOCALHOST4, 7001)]);
    assert_eq!((second.int("complete"), second.int("incomplete")), (0, 2));
    let first_again = tracker.announce(&Announce::new(hash, 1).port(7001));
    assert_eq!(first_again.peers4(), vec![(LOCALHOST4, 7002)]);
}

fn seeders_get_leechers_only() {
    let tracker = Tracker::start(&[]);
    let hash = id(3);
    tracker.announce(&Announce::new(hash, 1).seeder());
    tracker.announce(&Announce::new(hash, 2).seeder());
    tracker.announce(&Announce::new(hash, 3));
    tracker.announce(&Announce::new(hash, 4));
    let seeder = tracker.announce(&Announce::new(hash, 1).seeder());
    let mut ports = seeder.ports();
    ports.sort_unstable();
    assert_eq!(ports, vec![10_003, 10_004]);
    assert_eq!((seeder.int("complete"), seeder.int("incomplete")), (2, 2));
    let leecher = tracker.announce(&Announce::new(hash, 3));
    assert_eq!(leecher.ports(), vec![10_001, 10_002, 10_004]);
}

fn leechers_get_a_random_selection() {
    let tracker = Tracker::start(&[]);
    let hash = id(4);
    for peer in 1..=60 {
        tracker.announce(&Announce::new(hash, peer));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut selections = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let dict = tracker.announce(&Announce::new(hash, 61).param("numwant", "10"));
        let ports = dict.ports();
        assert_eq!(ports.len(), 10);
        assert!(!ports.contains(&10_061), "got itself");
        seen.extend(ports.iter().copied());
        selections.insert(ports);
    }
    assert!(selections.len() > 1, "the same peers every time");
    assert!(
        seen.len() > 20,
        "only {} distinct peers in 10 draws",
        seen.len()
    );
}

fn numwant_default_cap_zero_and_malformed() {
    let tracker = Tracker::start(&["--max-numwant", "70"]);
    let hash = id(5);
    for peer in 1..=80 {
        tracker.announce(&Announce::new(hash, peer));
    }
    let count = |numwant: Option<&str>| {
        let mut announce = Announce::new(hash, 81);
        if let Some(n) = numwant {
            announce = announce.param("numwant", n);
        }
        tracker.announce(&announce).peers4().len()
    };
    assert_eq!(count(None), 50);
    assert_eq!(count(Some("5")), 5);
    assert_eq!(count(Some("0")), 0);
    assert_eq!(count(Some("1000")), 70);
    assert_eq!(count(Some("-3")), 50);
    assert_eq!(count(Some("lots")), 50);
}

fn non_compact_lists_dictionaries_and_no_peer_id_drops_ids() {
    let tracker = Tracker::start(&[]);
    let hash = id(6);
    tracker.announce(&Announce::new(hash, 1).port(7001));
    let dict = tracker.announce(&Announce::new(hash, 2).param("compact", "0"));
    let peers = dict.list("peers");
    assert_eq!(peers.len(), 1);
    let peer = common::Dict(match &peers[0] {
        serde_bencode::value::Value::Dict(d) => d.clone().into_iter().collect(),
        other => panic!("{other:?}"),
    });
    assert_eq!(peer.bytes("ip"), b"127.0.0.1");
    assert_eq!(peer.int("port"), 7001);
    assert_eq!(peer.bytes("peer id"), id(1));
    let dict = tracker.announce(
        &Announce::new(hash, 2)
            .param("compact", "0")
            .param("no_peer_id", "1"),
    );
    let peers = dict.list("peers");
    match &peers[0] {
        serde_bencode::value::Value::Dict(d) => {
            assert!(!d.contains_key(&b"peer id"[..]));
            assert!(d.contains_key(&b"ip"[..]));
        }
        other => panic!("{other:?}"),
    }
}

fn compact_only_keeps_no_ids_and_a_peer_is_its_address_and_port() {
    if common::memory_only("compact-only mode") {
        return;
    }
    let tracker = Tracker::start(&["--compact-only"]);
    let hash = id(30);
    tracker.announce(&Announce::new(hash, 1).port(7001));
    // compact=0 lists dictionaries, without peer ids: none are kept.
    let dict = tracker.announce(&Announce::new(hash, 2).port(7002).param("compact", "0"));
    let peers = dict.list("peers");
    assert_eq!(peers.len(), 1);
    match &peers[0] {
        serde_bencode::value::Value::Dict(d) => {
            assert!(!d.contains_key(&b"peer id"[..]), "{d:?}");
            let peer = common::Dict(d.clone().into_iter().collect());
            assert_eq!(peer.int("port"), 7001);
        }
        other => panic!("{other:?}"),
    }
    // Same address and port, another peer id: the same peer.
    tracker.announce(&Announce::new(hash, 3).port(7001).seeder());
    assert_eq!(tracker.counts(hash), (1, 1, 0));
    // Same peer id, another port: another peer.
    tracker.announce(&Announce::new(hash, 3).port(7003));
    assert_eq!(tracker.counts(hash), (1, 2, 0));
    // A stop from an address and port removes the peer there.
    tracker.announce(&Announce::new(hash, 9).port(7003).event("stopped"));
    assert_eq!(tracker.counts(hash), (1, 1, 0));
    let compact = tracker.announce(&Announce::new(hash, 2).port(7002));
    assert_eq!(compact.peers4(), vec![(LOCALHOST4, 7001)]);
}

fn ipv6_peers_travel_in_peers6() {
    let tracker = Tracker::start(&[]);
    let hash = id(7);
    let v6 = tracker.announce_v6(&Announce::new(hash, 1).port(7001));
    let mut localhost6 = [0u8; 16];
    localhost6[15] = 1;
    assert_eq!(v6.bytes("external ip"), localhost6);
    tracker.announce(&Announce::new(hash, 2).port(7002));
    // An IPv4 client sees the IPv6 peer in peers6, and vice versa.
    let v4 = tracker.announce(&Announce::new(hash, 3).port(7003));
    assert_eq!(v4.peers6(), vec![(localhost6, 7001)]);
    assert_eq!(v4.peers4(), vec![(LOCALHOST4, 7002)]);
    let v6 = tracker.announce_v6(&Announce::new(hash, 1).port(7001));
    assert_eq!(v6.peers6(), vec![]);
    let mut ports: Vec<u16> = v6.peers4().into_iter().map(|p| p.1).collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![7002, 7003]);
    assert_eq!(v6.int("incomplete"), 3);
    // Non-compact lists IPv6 peers with their textual address.
    let list = tracker.announce(&Announce::new(hash, 3).port(7003).param("compact", "0"));
    let text = format!("{:?}", list.list("peers"));
    assert!(text.contains("[58, 58, 49]"), "no ::1 in {text}"); // b"::1"
}

fn reannounce_replaces_rather_than_duplicates() {
    let tracker = Tracker::start(&[]);
    let hash = id(8);
    tracker.announce(&Announce::new(hash, 1).port(7001));
    // Same IP and peer id, new port: the entry moves.
    tracker.announce(&Announce::new(hash, 1).port(7002));
    assert_eq!(tracker.counts(hash), (0, 1, 0));
    let view = tracker.announce(&Announce::new(hash, 9).port(7009));
    assert_eq!(view.peers4(), vec![(LOCALHOST4, 7002)]);
    // Same IP and port, new peer id: the client restarted.
    tracker.announce(&Announce::new(hash, 2).port(7002));
    assert_eq!(tracker.counts(hash), (0, 2, 0));
    // New port and new peer id from the same IP: another client.
    tracker.announce(&Announce::new(hash, 3).port(7003));
    assert_eq!(tracker.counts(hash), (0, 3, 0));
}

fn stopped_removes_the_peer_and_creates_nothing() {
    let tracker = Tracker::start(&[]);
    let hash = id(9);
    tracker.announce(&Announce::new(hash, 1));
    tracker.announce(&Announce::new(hash, 2).seeder());
    let stopped = tracker.announce(&Announce::new(hash, 1).event("stopped"));
    assert_eq!((stopped.int("complete"), stopped.int("incomplete")), (1, 0));
    assert_eq!(stopped.bytes("peers"), b"");
    assert_eq!(tracker.counts(hash), (1, 0, 0));
    let unknown = tracker.announce(&Announce::new(id(10), 1).event("stopped"));
    assert_eq!((unknown.int("complete"), unknown.int("incomplete")), (0, 0));
    assert_eq!(tracker.counts(id(10)), (0, 0, 0));
}

fn downloaded_counts_each_completion_once() {
    let tracker = Tracker::start(&[]);
    let hash = id(11);
    tracker.announce(&Announce::new(hash, 1).event("started"));
    let done = tracker.announce(&Announce::new(hash, 1).seeder().event("completed"));
    assert_eq!(done.int("downloaded"), 1);
    assert_eq!((done.int("complete"), done.int("incomplete")), (1, 0));
    // Repeating the event does not count again.
    tracker.announce(&Announce::new(hash, 1).seeder().event("completed"));
    // A peer that starts as a seeder is not a download.
    tracker.announce(&Announce::new(hash, 2).seeder().event("started"));
    // `completed` with bytes left is not a download either.
    tracker.announce(&Announce::new(hash, 3).event("completed"));
    assert_eq!(tracker.counts(hash), (2, 1, 1));
    tracker.announce(&Announce::new(hash, 3).seeder().event("completed"));
    assert_eq!(tracker.counts(hash), (3, 0, 2));
}

fn every_malformed_announce_gets_a_failure_reason() {
    let tracker = Tracker::start(&[]);
    let hash = escape(&id(12));
    let peer = escape(&id(1));
    let base = |skip: &str| {
        [
            ("info_hash", hash.as_str()),
            ("peer_id", peer.as_str()),
            ("port", "6881"),
            ("uploaded", "0"),
            ("downloaded", "0"),
            ("left", "0"),
        ]
        .iter()
        .filter(|(k, _)| *k != skip)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
    };
    let mut cases: Vec<(String, String)> = Vec::new();
    for name in [
        "info_hash",
        "peer_id",
        "port",
        "uploaded",
        "downloaded",
        "left",
    ] {
        cases.push((base(name), format!("missing parameter: {name}")));
    }
    let bad_escape =
        "has an invalid percent-escape (expected % followed by two hex digits)".to_owned();
    let with = |extra: &str| format!("{}&{extra}", base(""));
    let wrong_value = |name: &str, value: &str| format!("{}&{name}={value}", base(name));
    cases.extend([
        (
            wrong_value("info_hash", &"a".repeat(19)),
            "info_hash must be exactly 20 bytes".into(),
        ),
        (
            wrong_value("info_hash", &"a".repeat(21)),
            "info_hash must be exactly 20 bytes".into(),
        ),
        (
            wrong_value("peer_id", "short"),
            "peer_id must be exactly 20 bytes".into(),
        ),
        (
            wrong_value("info_hash", &format!("%G1{}", "a".repeat(19))),
            format!("info_hash {bad_escape}"),
        ),
        (
            wrong_value("peer_id", &format!("{}%", "a".repeat(19))),
            format!("peer_id {bad_escape}"),
        ),
        (
            with(&format!("info_hash={hash}")),
            "info_hash is given more than once".into(),
        ),
        (
            wrong_value("port", "0"),
            "port must be between 1 and 65535".into(),
        ),
        (
            wrong_value("port", "65536"),
            "port must be between 1 and 65535".into(),
        ),
        (
            wrong_value("port", "http"),
            "port must be an unsigned decimal number".into(),
        ),
        (
            wrong_value("uploaded", "-1"),
            "uploaded must be an unsigned decimal number".into(),
        ),
        (
            wrong_value("downloaded", "1e3"),
            "downloaded must be an unsigned decimal number".into(),
        ),
        (
            wrong_value("left", "99999999999999999999"),
            "left must be an unsigned decimal number".into(),
        ),
        (
            with("event=paused"),
            "event must be started, completed, stopped, empty or absent".into(),
        ),
        (with("compact=yes"), "compact must be 0 or 1".into()),
        (
            with(&format!("key={}", "k".repeat(101))),
            "key is longer than 100 bytes".into(),
        ),
        (
            with(&"x=1&".repeat(70)),
            "too many query parameters (at most 64)".into(),
        ),
        (String::new(), "missing parameter: info_hash".into()),
    ]);
    for (query, reason) in cases {
        let response = get(tracker.v4, &format!("/announce?{query}"));
        assert_eq!(response.status, 200, "{query}");
        assert_eq!(response.header("content-type"), Some("text/plain"));
        assert_eq!(
            response.failure().as_deref(),
            Some(reason.as_str()),
            "{query}"
        );
    }
    // Nothing above created a torrent.
    assert_eq!(tracker.counts(id(12)), (0, 0, 0));
}

fn escapes_are_bytes_and_plus_is_literal() {
    let tracker = Tracker::start(&[]);
    // 0x2B is '+': a literal '+' and %2B name the same torrent; %2a = %2A.
    let mut hash = [b'+'; 20];
    hash[0] = b'*';
    let literal = format!("*{}", "+".repeat(19));
    let upper = format!("%2A{}", "%2B".repeat(19));
    let lower = format!("%2a{}", "%2b".repeat(19));
    for (peer, form) in [(1u8, &literal), (2, &upper), (3, &lower)] {
        let target = format!(
            "/announce?info_hash={form}&peer_id={}&port={}&uploaded=0&downloaded=0&left=1",
            escape(&id(peer)),
            7000 + u16::from(peer)
        );
        let dict = get(tracker.v4, &target).dict();
        assert_eq!(dict.failure(), None);
        assert_eq!(dict.int("incomplete"), i64::from(peer));
    }
    assert_eq!(tracker.counts(hash), (0, 3, 0));
}

fn unknown_parameters_are_ignored() {
    let tracker = Tracker::start(&[]);
    let dict = tracker.announce(
        &Announce::new(id(13), 1)
            .param("supportcrypto", "1")
            .param("corrupt", "0")
            .param("redundant", "0")
            .param("weird%FF", "%00"),
    );
    assert_eq!(dict.failure(), None);
    assert_eq!(dict.int("incomplete"), 1);
}

fn ip_parameter_is_ignored_unless_enabled() {
    let hash = id(14);
    let tracker = Tracker::start(&[]);
    tracker.announce(&Announce::new(hash, 1).param("ip", "10.1.2.3"));
    let view = tracker.announce(&Announce::new(hash, 2));
    assert_eq!(view.peers4()[0].0, LOCALHOST4);
    drop(tracker);

    let tracker = Tracker::start(&["--allow-ip-param"]);
    tracker.announce(&Announce::new(hash, 1).param("ip", "10.1.2.3"));
    let view = tracker.announce(&Announce::new(hash, 2));
    assert_eq!(view.peers4()[0].0, [10, 1, 2, 3]);
    // external ip stays the socket's address.
    assert_eq!(view.bytes("external ip"), LOCALHOST4);
    let bad = get(
        tracker.v4,
        &Announce::new(hash, 3).param("ip", "example.org").target(),
    );
    assert_eq!(bad.failure().as_deref(), Some("ip is not an IP address"));
}

fn tracker_id_is_sent_when_configured() {
    let tracker = Tracker::start(&[]);
    assert!(
        !tracker
            .announce(&Announce::new(id(15), 1))
            .has("tracker id")
    );
    drop(tracker);
    let tracker = Tracker::start(&["--tracker-id", "shoal-test"]);
    let dict = tracker.announce(&Announce::new(id(15), 1).param("trackerid", "old"));
    assert_eq!(dict.bytes("tracker id"), b"shoal-test");
}

fn silent_peers_expire_and_the_snatch_count_stays() {
    let tracker = Tracker::start(&["--peer-ttl", "1"]);
    let hash = id(16);
    tracker.announce(&Announce::new(hash, 1));
    tracker.announce(&Announce::new(hash, 1).seeder().event("completed"));
    tracker.announce(&Announce::new(hash, 2));
    assert_eq!(tracker.counts(hash), (1, 1, 1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tracker.counts(hash) != (0, 0, 1) {
        assert!(std::time::Instant::now() < deadline, "peers never expired");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The torrent comes back with its count.
    let dict = tracker.announce(&Announce::new(hash, 3));
    assert_eq!(dict.int("downloaded"), 1);
    assert_eq!(dict.int("incomplete"), 1);
}

fn ipv4_mapped_addresses_are_ipv4_peers() {
    // Listeners are IPv6-only, so mapped addresses reach the store only
    // through a claimed `ip`; they must be folded to IPv4 all the same.
    let tracker = Tracker::start(&["--allow-ip-param"]);
    let hash = id(17);
    tracker.announce_v6(&Announce::new(hash, 1).param("ip", "%3A%3Affff%3A10.9.8.7"));
    let view = tracker.announce(&Announce::new(hash, 2));
    assert_eq!(view.peers4(), vec![([10, 9, 8, 7], 10_001)]);
    assert!(view.peers6().is_empty());
}

reactor_tests!(
    first_announce_gets_counts_interval_and_no_peers,
    compact_only_keeps_no_ids_and_a_peer_is_its_address_and_port,
    peers_see_each_other_but_never_themselves,
    seeders_get_leechers_only,
    leechers_get_a_random_selection,
    numwant_default_cap_zero_and_malformed,
    non_compact_lists_dictionaries_and_no_peer_id_drops_ids,
    ipv6_peers_travel_in_peers6,
    reannounce_replaces_rather_than_duplicates,
    stopped_removes_the_peer_and_creates_nothing,
    downloaded_counts_each_completion_once,
    every_malformed_announce_gets_a_failure_reason,
    escapes_are_bytes_and_plus_is_literal,
    unknown_parameters_are_ignored,
    ip_parameter_is_ignored_unless_enabled,
    tracker_id_is_sent_when_configured,
    silent_peers_expire_and_the_snatch_count_stays,
    ipv4_mapped_addresses_are_ipv4_peers,
);
