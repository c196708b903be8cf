//! The UDP tracker (BEP 15 + BEP 41), black-box: raw datagrams to the real
//! binary over 127.0.0.1 and ::1, on every reactor.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::udp::{Answer, PROTOCOL_ID, UdpAnnounce, UdpClient};
use common::{Announce, Tracker, get, id};

fn ports6(peers: &[Vec<u8>]) -> Vec<u16> {
    let mut ports: Vec<u16> = peers
        .iter()
        .map(|p| u16::from_be_bytes([p[p.len() - 2], p[p.len() - 1]]))
        .collect();
    ports.sort_unstable();
    ports
}

fn announced(answer: &Answer) -> (u32, u32, u32, Vec<Vec<u8>>) {
    match answer {
        Answer::Announce {
            interval,
            leechers,
            seeders,
            peers,
            ..
        } => (*interval, *leechers, *seeders, peers.clone()),
        other => panic!("not an announce answer: {other:?}"),
    }
}

fn connect_announce_and_scrape_over_ipv4_and_ipv6() {
    let tracker = Tracker::start(&[]);
    for addr in [tracker.v4, tracker.v6] {
        let client = UdpClient::new(addr);
        let hash = id(if addr.is_ipv4() { 1 } else { 2 });
        let (interval, leechers, seeders, peers) =
            announced(&client.announce(&UdpAnnounce::new(hash, 1)));
        // Counts include the announcer; it is never in its own list.
        assert!((1800..=1890).contains(&interval), "{interval}");
        assert_eq!((leechers, seeders), (1, 0));
        assert!(peers.is_empty());
        client.announce(&UdpAnnounce::new(hash, 2).seeder());
        let (_, leechers, seeders, peers) = announced(&client.announce(&UdpAnnounce::new(hash, 3)));
        assert_eq!((leechers, seeders), (2, 1));
        // 6-byte peers over IPv4, 18-byte ones over IPv6 (BEP 15).
        let size = if addr.is_ipv4() { 6 } else { 18 };
        assert!(peers.iter().all(|p| p.len() == size), "{peers:?}");
        assert_eq!(ports6(&peers), [6001, 6002]);
        let loopback: &[u8] = if addr.is_ipv4() {
            &[127, 0, 0, 1]
        } else {
            &std::net::Ipv6Addr::LOCALHOST.octets()
        };
        assert!(peers.iter().all(|p| &p[..size - 2] == loopback));
        // Scrape: (seeders, completed, leechers) per hash in request order,
        // zeros for unknown ones.
        let files = client.scrape(&[id(99), hash, id(98)]);
        assert_eq!(files, [(0, 0, 0), (1, 0, 2), (0, 0, 0)]);
    }
}

fn events_mean_what_they_mean_over_http() {
    let tracker = Tracker::start(&[]);
    let client = UdpClient::new(tracker.v4);
    let hash = id(5);
    client.announce(&UdpAnnounce::new(hash, 1));
    client.announce(&UdpAnnounce::new(hash, 2));
    // Seeders are sent leechers only.
    client.announce(&UdpAnnounce::new(hash, 9).seeder());
    let (_, _, _, peers) = announced(&client.announce(&UdpAnnounce::new(hash, 8).seeder()));
    assert_eq!(ports6(&peers), [6001, 6002]);
    // Completed counts once per peer.
    for _ in 0..2 {
        client.announce(&UdpAnnounce::new(hash, 1).seeder().event(1));
    }
    assert_eq!(client.scrape(&[hash]), [(3, 1, 1)]);
    // Stopped removes the peer.
    client.announce(&UdpAnnounce::new(hash, 2).event(3));
    assert_eq!(client.scrape(&[hash]), [(3, 1, 0)]);
    // An unknown event is an error, with the transaction id echoed.
    let answer = client.announce(&UdpAnnounce::new(hash, 4).event(4));
    assert_eq!(answer.error(), Some("invalid event"));
}

fn num_want_defaults_and_is_capped() {
    let tracker = Tracker::start(&["--default-numwant", "3", "--max-numwant", "5"]);
    let client = UdpClient::new(tracker.v4);
    let hash = id(6);
    for peer in 1..=10 {
        client.announce(&UdpAnnounce::new(hash, peer));
    }
    let count = |n| {
        announced(&client.announce(&UdpAnnounce::new(hash, 20).num_want(n)))
            .3
            .len()
    };
    assert_eq!((count(-1), count(1), count(100), count(0)), (3, 1, 5, 0));
}

fn a_peer_is_seen_across_transports() {
    let tracker = Tracker::start(&[]);
    let hash = id(7);
    let client = UdpClient::new(tracker.v4);
    client.announce(&UdpAnnounce::new(hash, 1));
    // HTTP sees the UDP peer (and counts it)...
    let dict = tracker.announce(&Announce::new(hash, 2).seeder());
    assert_eq!(
        dict.peers4().iter().map(|p| p.1).collect::<Vec<_>>(),
        [6001]
    );
    assert_eq!((dict.int("complete"), dict.int("incomplete")), (1, 1));
    // ...and UDP the HTTP one.
    let (_, leechers, seeders, peers) = announced(&client.announce(&UdpAnnounce::new(hash, 3)));
    assert_eq!((leechers, seeders), (2, 1));
    assert!(ports6(&peers).contains(&10_002), "{peers:?}");
    // Scrapes agree.
    let udp = client.scrape(&[hash]);
    let (complete, incomplete, downloaded) = tracker.counts(hash);
    assert_eq!(
        udp,
        [(complete as u32, downloaded as u32, incomplete as u32)]
    );
    // A completion over HTTP shows in a UDP scrape.
    tracker.announce(&Announce::new(hash, 3).seeder().event("completed"));
    assert_eq!(client.scrape(&[hash]), [(2, 1, 1)]);
}

fn connection_ids_are_bound_to_the_client_and_unguessable() {
    let tracker = Tracker::start(&[]);
    let client = UdpClient::new(tracker.v4);
    let announce = UdpAnnounce::new(id(8), 1);
    // No connect at all, or a made-up id.
    for guess in [0u64, PROTOCOL_ID, 0x1234_5678_9abc_def0] {
        let answer = client.ask(&announce.bytes(guess, 5));
        assert_eq!(
            answer,
            Answer::Error {
                transaction_id: 5,
                message: "invalid connection id".into()
            }
        );
    }
    // An id issued to another socket (another port) is not this one's.
    let other = UdpClient::new(tracker.v4);
    let foreign = other.connect();
    assert!(client.ask(&announce.bytes(foreign, 5)).error().is_some());
    let mine = client.connect();
    assert!(client.ask(&announce.bytes(mine, 5)).error().is_none());
    // Nothing was stored for the refused announces.
    assert_eq!(client.scrape(&[id(8)]), [(0, 0, 1)]);
}

fn no_answer_is_larger_than_an_unverified_request() {
    let tracker = Tracker::start(&[]);
    let client = UdpClient::new(tracker.v4);
    // A connect is answered with as many bytes as it has: 16.
    let mut connect = PROTOCOL_ID.to_be_bytes().to_vec();
    connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(client.exchange(&connect).map(|a| a.len()), Some(16));
    // Unknown action in 16 bytes: the error would be 22 bytes: dropped.
    let mut unknown = 7u64.to_be_bytes().to_vec();
    unknown.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1]);
    assert_eq!(client.exchange(&unknown), None);
    // The same padded to 30 bytes is told why.
    unknown.resize(30, 0);
    let answer = client.exchange(&unknown).expect("an error");
    assert!(answer.len() <= 30);
    assert_eq!(
        Answer::decode(&answer, false).error(),
        Some("unknown action")
    );
    // A scrape of one hash with a forged id (36 bytes) gets the 29-byte
    // error; garbage too short to carry a transaction id gets nothing.
    let forged = UdpClient::scrape_bytes(42, &[id(1)]);
    assert_eq!(client.exchange(&forged).map(|a| a.len()), Some(29));
    assert_eq!(client.exchange(&[1, 2, 3]), None);
    // Every refusal is counted by reason and outcome.
    let text = String::from_utf8(get(tracker.v4, "/metrics").body).unwrap();
    for line in [
        "shoal_udp_bad_datagrams_total{reason=\"unknown_action\",outcome=\"dropped\"} 1",
        "shoal_udp_bad_datagrams_total{reason=\"unknown_action\",outcome=\"error\"} 1",
        "shoal_udp_bad_datagrams_total{reason=\"bad_connection_id\",outcome=\"error\"} 1",
        "shoal_udp_bad_datagrams_total{reason=\"too_short\",outcome=\"dropped\"} 1",
        "shoal_udp_requests_total{action=\"connect\",result=\"ok\",family=\"ipv4\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

fn malformed_datagrams_get_errors_and_never_stop_the_tracker() {
    let tracker = Tracker::start(&[]);
    let client = UdpClient::new(tracker.v4);
    let id_ = client.connect();
    let announce = UdpAnnounce::new(id(9), 1).bytes(id_, 3);
    let mut cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        // Truncated announce: a connection id, action and transaction id,
        // then too little.
        (announce[..60].to_vec(), Some("packet too short")),
        // Ragged scrape.
        (
            UdpClient::scrape_bytes(id_, &[id(1), id(2)])[..50].to_vec(),
            Some("scrape length is not 16 + 20 x info hashes"),
        ),
        // Port 0.
        (
            {
                let mut a = announce.clone();
                a[96..98].copy_from_slice(&[0, 0]);
                a
            },
            Some("invalid port: 0"),
        ),
        // BEP 41 option running past the end, and an unknown option.
        (
            [announce.clone(), vec![2, 50, b'/']].concat(),
            Some("malformed options (BEP 41)"),
        ),
        (
            [announce.clone(), vec![7]].concat(),
            Some("malformed options (BEP 41)"),
        ),
        // Connect with the wrong protocol id.
        ([vec![0u8; 8], vec![0, 0, 0, 0, 0, 0, 0, 1]].concat(), None),
        // Oversized: dropped.
        (vec![0u8; 4000], None),
    ];
    cases.push((Vec::new(), None));
    for (datagram, expected) in cases {
        match client.exchange(&datagram) {
            Some(answer) => {
                assert!(answer.len() <= datagram.len().max(16));
                assert_eq!(
                    Answer::decode(&answer, false).error(),
                    expected,
                    "{datagram:?}"
                );
            }
            None => assert_eq!(expected, None, "no answer to {datagram:?}"),
        }
    }
    // Still serving, over UDP and HTTP.
    let (_, leechers, _, _) = announced(&client.announce(&UdpAnnounce::new(id(9), 1)));
    assert_eq!(leechers, 1);
    assert_eq!(tracker.announce(&Announce::new(id(9), 2)).failure(), None);
}

fn scrape_answers_at_least_74_hashes_in_order() {
    let tracker = Tracker::start(&["--max-scrape-hashes", "10"]);
    let client = UdpClient::new(tracker.v4);
    client.announce(&UdpAnnounce::new(id(200), 1));
    let mut hashes: Vec<[u8; 20]> = (0..90u8).map(|i| [i; 20]).collect();
    hashes[73] = id(200);
    hashes[80] = id(200);
    let files = client.scrape(&hashes);
    // BEP 15's 74 fit in a packet, even under a lower HTTP cap; beyond the
    // cap (74 here) hashes are not answered.
    assert_eq!(files.len(), 74);
    assert_eq!(files[73], (0, 0, 1));
    assert!(files[..73].iter().all(|f| *f == (0, 0, 0)));
}

fn the_ip_field_counts_only_when_allowed() {
    for (args, expected) in [
        (&[][..], [127, 0, 0, 1]),
        (&["--allow-ip-param"][..], [10, 1, 2, 3]),
    ] {
        let tracker = Tracker::start(args);
        let client = UdpClient::new(tracker.v4);
        let mut claimed = UdpAnnounce::new(id(10), 1);
        claimed.ip = [10, 1, 2, 3];
        client.announce(&claimed);
        let (_, _, _, peers) = announced(&client.announce(&UdpAnnounce::new(id(10), 2)));
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0][..4], expected);
    }
}

fn access_list_and_swarm_caps_apply_as_over_http() {
    let dir = std::env::temp_dir().join(format!("shoal-udp-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join(format!("{}.txt", common::run_name()));
    std::fs::write(&list, format!("{}\n", hex(&id(11)))).unwrap();
    let tracker = Tracker::start(&[
        "--access-list",
        list.to_str().unwrap(),
        "--max-peers-per-torrent",
        "1",
    ]);
    let client = UdpClient::new(tracker.v4);
    assert_eq!(
        client.announce(&UdpAnnounce::new(id(12), 1)).error(),
        Some("torrent not allowed on this tracker")
    );
    assert_eq!(client.announce(&UdpAnnounce::new(id(11), 1)).error(), None);
    assert_eq!(
        client.announce(&UdpAnnounce::new(id(11), 2)).error(),
        Some("this torrent's swarm is full: try again later")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn private_mode_reads_the_passkey_from_url_data() {
    let dir = std::env::temp_dir().join(format!("shoal-udp-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join(format!("{}.txt", common::run_name()));
    std::fs::write(&keys, "opensesame\n").unwrap();
    let tracker = Tracker::start(&[
        "--passkeys",
        keys.to_str().unwrap(),
        "--announce-path",
        "/a.php",
    ]);
    let client = UdpClient::new(tracker.v4);
    let hash = id(13);
    let error = |announce: UdpAnnounce| client.announce(&announce).error().map(str::to_owned);
    assert_eq!(
        error(UdpAnnounce::new(hash, 1)).as_deref(),
        Some("this tracker is private: use the announce URL with your passkey")
    );
    assert_eq!(
        error(UdpAnnounce::new(hash, 1).url("/a.php/wrong")).as_deref(),
        Some("unknown passkey")
    );
    assert_eq!(
        error(UdpAnnounce::new(hash, 1).url("/announce/opensesame")).as_deref(),
        Some("unknown path: this tracker announces at /a.php")
    );
    assert_eq!(
        error(UdpAnnounce::new(hash, 1).url("/a.php/opensesame")),
        None
    );
    // The key split over two URLData options, with a query after it.
    let mut split = UdpAnnounce::new(hash, 2);
    split.options = [
        &[1, 2, 8][..],
        b"/a.php/o",
        &[2, 13],
        b"pensesame?x=1",
        &[0],
    ]
    .concat();
    assert_eq!(error(split), None);
    // A UDP scrape cannot carry a passkey: refused; over HTTP with the key
    // the two peers are there.
    let id_ = client.connect();
    assert_eq!(
        client.ask(&UdpClient::scrape_bytes(id_, &[hash])).error(),
        Some("this tracker is private: scrape over HTTP with your passkey")
    );
    assert_eq!(tracker.counts_at("/scrape/opensesame", hash), (0, 2, 0));
}

fn udp_listen_follows_http_or_its_own_setting() {
    // Off.
    let tracker = Tracker::start(&["--udp-listen", "none"]);
    let client = UdpClient::new(tracker.v4);
    let mut connect = PROTOCOL_ID.to_be_bytes().to_vec();
    connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(client.exchange(&connect), None);
    // By now a UDP listener would have been named.
    assert!(!tracker.log().contains("udp://"), "{}", tracker.log());
    // Its own addresses, named at start-up with the reactor.
    let tracker = Tracker::start(&["--udp-listen", "127.0.0.1:0"]);
    let addr: SocketAddr = tracker.logged_addr("listening on udp://");
    assert_ne!(addr.port(), tracker.v4.port());
    assert!(
        tracker.log().contains(&format!(
            "listening on udp://{addr}/announce (reactor: {} (",
            common::reactor()
        )),
        "{}",
        tracker.log()
    );
    UdpClient::new(addr).connect();
    // By default: wherever HTTP listens, same port.
    let tracker = Tracker::start(&[]);
    for addr in [tracker.v4, tracker.v6] {
        let line = format!("listening on udp://{addr}/announce");
        common::wait_until(&line, || tracker.log().contains(&line));
    }
}

fn udp_requests_are_counted_by_action_result_and_family() {
    let tracker = Tracker::start(&[]);
    let v4 = UdpClient::new(tracker.v4);
    let v6 = UdpClient::new(tracker.v6);
    v4.announce(&UdpAnnounce::new(id(14), 1));
    v6.announce(&UdpAnnounce::new(id(14), 2));
    v6.announce(&UdpAnnounce::new(id(14), 3).event(9));
    v4.scrape(&[id(14)]);
    let text = String::from_utf8(get(tracker.v4, "/metrics").body).unwrap();
    let samples: HashMap<&str, &str> = text
        .lines()
        .filter(|l| l.starts_with("shoal_udp_requests_total{"))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    let series = |labels: &str| samples[format!("shoal_udp_requests_total{{{labels}}}").as_str()];
    assert_eq!(
        series("action=\"connect\",result=\"ok\",family=\"ipv4\""),
        "2"
    );
    assert_eq!(
        series("action=\"connect\",result=\"ok\",family=\"ipv6\""),
        "2"
    );
    assert_eq!(
        series("action=\"announce\",result=\"ok\",family=\"ipv4\""),
        "1"
    );
    assert_eq!(
        series("action=\"announce\",result=\"ok\",family=\"ipv6\""),
        "1"
    );
    assert_eq!(
        series("action=\"scrape\",result=\"ok\",family=\"ipv4\""),
        "1"
    );
    assert!(
        text.contains("shoal_udp_bad_datagrams_total{reason=\"bad_event\",outcome=\"error\"} 1")
    );
    // The HTTP series do not count UDP requests.
    assert!(text.contains("shoal_announces_total{result=\"ok\",family=\"ipv4\"} 0"));
    // /stats.json shows UDP beside HTTP.
    let stats: serde_json::Value =
        serde_json::from_slice(&get(tracker.v4, "/stats.json").body).expect("stats.json is JSON");
    let requests = &stats["requests"];
    assert_eq!(requests["announces"], 2);
    assert_eq!(requests["http"]["announces"], 0);
    assert_eq!(requests["udp"]["announces"], 2);
    assert_eq!(requests["udp"]["connects"], 4);
    assert_eq!(requests["udp"]["scrapes"], 1);
    assert_eq!(requests["udp"]["bad_datagrams"], 1);
}

reactor_tests!(
    connect_announce_and_scrape_over_ipv4_and_ipv6,
    events_mean_what_they_mean_over_http,
    num_want_defaults_and_is_capped,
    a_peer_is_seen_across_transports,
    connection_ids_are_bound_to_the_client_and_unguessable,
    no_answer_is_larger_than_an_unverified_request,
    malformed_datagrams_get_errors_and_never_stop_the_tracker,
    scrape_answers_at_least_74_hashes_in_order,
    the_ip_field_counts_only_when_allowed,
    access_list_and_swarm_caps_apply_as_over_http,
    private_mode_reads_the_passkey_from_url_data,
    udp_listen_follows_http_or_its_own_setting,
    udp_requests_are_counted_by_action_result_and_family,
);
