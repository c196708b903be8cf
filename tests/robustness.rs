//! Hostile and broken clients: every case is answered or closed cleanly, and
//! the tracker keeps serving everyone else. Runs against every reactor.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Announce, Tracker, exchange, id, parse_one, raw};

/// The tracker still answers a normal announce.
fn still_serving(tracker: &Tracker) {
    let dict = tracker.announce(&Announce::new(id(200), 200));
    assert_eq!(dict.failure(), None);
}

/// The status code of a raw response, or `None` when the server closed
/// without answering.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn oversize_request_heads_get_431() {
    let tracker = Tracker::start(&[]);
    // Over the default limit of 16 KiB, in a header or in the request line.
    let big_header = format!(
        "GET /announce HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(17_000)
    );
    let long_line = format!(
        "GET /announce?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "x=1&".repeat(5000)
    );
    for request in [big_header, long_line] {
        let bytes = raw(tracker.v4, request.as_bytes());
        assert_eq!(
            status_of(&bytes),
            Some(431),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        // A BitTorrent client is told why, in a body it can read.
        let (response, _) = parse_one(&bytes);
        assert_eq!(
            response.failure().as_deref(),
            Some("request too large: at most 16384 bytes of request line and headers")
        );
    }
    // Off the tracker routes: the bare status.
    let other = format!("GET /x HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(17_000));
    let bytes = raw(tracker.v4, other.as_bytes());
    assert_eq!(status_of(&bytes), Some(431));
    assert!(parse_one(&bytes).0.body.is_empty());
    // The limit is the operator's.
    let small = Tracker::start(&["--max-request-bytes", "8192"]);
    let request = format!("GET /scrape?{} HTTP/1.1\r\n\r\n", "x=1&".repeat(2100));
    let bytes = raw(small.v4, request.as_bytes());
    assert_eq!(
        parse_one(&bytes).0.failure().as_deref(),
        Some("request too large: at most 8192 bytes of request line and headers")
    );
    still_serving(&tracker);
}

fn garbage_nul_bytes_and_http09_are_refused_cleanly() {
    let tracker = Tracker::start(&[]);
    let mut garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    garbage.extend_from_slice(b"\r\n\r\n");
    let cases: Vec<Vec<u8>> = vec![
        garbage,
        b"GET /announce\0?info_hash=x HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"GET /announce\r\n\r\n".to_vec(),
        b"\r\n\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /announce HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n".to_vec(),
    ];
    for request in cases {
        let bytes = raw(tracker.v4, &request);
        // Either a 4xx answer or a clean close: never a 200, never a hang
        // (raw() is bounded by a read timeout).
        match status_of(&bytes) {
            None => assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes)),
            Some(code) => assert!((400..500).contains(&code), "{code} for {request:?}"),
        }
    }
    still_serving(&tracker);
}

fn http_1_0_without_host_is_answered() {
    let tracker = Tracker::start(&[]);
    let target = Announce::new(id(3), 1).target();
    let response = exchange(
        tracker.v6,
        format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes(),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.dict().int("incomplete"), 1);
}

/// One `read`, retried when a signal interrupts it.
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.unwrap(),
        }
    }
}

/// Waits (bounded) for the server to close `stream`; returns how long it took.
fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return start.elapsed(),
            Ok(_) => {} // e.g. a 408 before the close
        }
        assert!(
            start.elapsed() < limit,
            "connection not closed within {limit:?}"
        );
    }
}

fn slow_request_heads_are_cut_off() {
    let tracker = Tracker::start(&["--header-timeout", "1", "--idle-timeout", "30"]);
    let mut slow = TcpStream::connect(tracker.v4).unwrap();
    slow.write_all(b"GET /announce?info_hash=").unwrap();
    let took = wait_closed(&mut slow, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(500),
        "closed too early: {took:?}"
    );
    // Trickling more bytes does not buy more time: the limit runs from the
    // request's first byte.
    let mut trickle = TcpStream::connect(tracker.v4).unwrap();
    trickle.write_all(b"G").unwrap();
    let writer = {
        let mut trickle = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            for byte in b"ET /announce?info_hash=aaaaaaaaaaaaaaaaaaaa"
                .iter()
                .cycle()
                .take(40)
            {
                if trickle.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let took = wait_closed(&mut trickle, Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(3),
        "trickling kept it open {took:?}"
    );
    let _ = writer.join();
    still_serving(&tracker);
}

fn idle_keep_alive_connections_are_closed_and_busy_ones_kept() {
    let tracker = Tracker::start(&["--idle-timeout", "1", "--header-timeout", "10"]);
    let request = |stream: &mut TcpStream, peer: u8| {
        let target = Announce::new(id(4), peer).target();
        stream
            .write_all(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        while !bytes.ends_with(b"e") {
            let n = read_some(stream, &mut buf);
            assert!(n > 0, "closed while busy");
            bytes.extend_from_slice(&buf[..n]);
        }
        assert_eq!(parse_one(&bytes).0.status, 200);
    };
    // A connection that keeps asking stays open well past the idle limit.
    let mut busy = TcpStream::connect(tracker.v4).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..8 {
        request(&mut busy, 1);
        std::thread::sleep(Duration::from_millis(400));
    }
    // Then falls silent and is closed.
    let took = wait_closed(&mut busy, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );
    // A connection that never says anything is closed too.
    let mut silent = TcpStream::connect(tracker.v4).unwrap();
    wait_closed(&mut silent, Duration::from_secs(5));
}

fn connections_over_the_cap_are_closed_and_the_rest_served() {
    let tracker = Tracker::start(&["--max-connections", "2"]);
    let open = |addr: SocketAddr, peer: u8| {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let target = Announce::new(id(5), peer).target();
        stream
            .write_all(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = read_some(&mut stream, &mut buf);
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        stream
    };
    let mut first = open(tracker.v4, 1);
    let _second = open(tracker.v4, 2);
    let mut third = TcpStream::connect(tracker.v4).unwrap();
    wait_closed(&mut third, Duration::from_secs(5));
    // The open connections are untouched.
    let target = Announce::new(id(5), 1).target();
    first
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = read_some(&mut first, &mut buf);
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

fn pipelined_announces_are_all_answered_in_order() {
    let tracker = Tracker::start(&[]);
    let hash = id(6);
    let mut request = Vec::new();
    for peer in 0..100u8 {
        let target = Announce::new(hash, peer)
            .port(20_000 + u16::from(peer))
            .target();
        request.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: t\r\n").as_bytes());
        if peer == 99 {
            request.extend_from_slice(b"Connection: close\r\n");
        }
        request.extend_from_slice(b"\r\n");
    }
    let bytes = raw(tracker.v4, &request);
    let mut rest = &bytes[..];
    for peer in 0..100i64 {
        let (response, tail) = parse_one(rest);
        rest = tail;
        assert_eq!(response.status, 200);
        assert_eq!(response.dict().int("incomplete"), peer + 1, "out of order");
    }
    assert_eq!(tracker.counts(hash), (0, 100, 0));
}

fn floods_past_the_caps_are_refused_and_memory_stays_bounded() {
    let tracker = Tracker::start(&["--max-torrents", "5", "--max-peers-per-torrent", "3"]);
    for torrent in 0..5u8 {
        assert_eq!(
            tracker.announce(&Announce::new(id(torrent), 1)).failure(),
            None
        );
    }
    // The torrent cap is the memory store's (Redis's maxmemory bounds a
    // shared store); the swarm cap is both stores'.
    let torrent_cap = common::store() == "memory";
    for torrent in (5..50u8).filter(|_| torrent_cap) {
        assert_eq!(
            tracker
                .announce(&Announce::new(id(torrent), 1))
                .failure()
                .as_deref(),
            Some("tracker is full: it takes no new torrents now, try again later")
        );
        assert_eq!(tracker.counts(id(torrent)), (0, 0, 0));
    }
    for peer in 2..=3u8 {
        assert_eq!(
            tracker.announce(&Announce::new(id(0), peer)).failure(),
            None
        );
    }
    for peer in 4..40u8 {
        assert_eq!(
            tracker
                .announce(&Announce::new(id(0), peer))
                .failure()
                .as_deref(),
            Some("this torrent's swarm is full: try again later")
        );
    }
    assert_eq!(tracker.counts(id(0)), (0, 3, 0));
    // Members of a full swarm and torrents already held go on.
    let member = tracker.announce(&Announce::new(id(0), 2).seeder());
    assert_eq!(member.int("complete"), 1);
    if !torrent_cap {
        return;
    }
    // A torrent that empties frees its slot.
    tracker.announce(&Announce::new(id(4), 1).event("stopped"));
    assert_eq!(tracker.announce(&Announce::new(id(60), 1)).failure(), None);
}

reactor_tests!(
    oversize_request_heads_get_431,
    garbage_nul_bytes_and_http09_are_refused_cleanly,
    http_1_0_without_host_is_answered,
    slow_request_heads_are_cut_off,
    idle_keep_alive_connections_are_closed_and_busy_ones_kept,
    connections_over_the_cap_are_closed_and_the_rest_served,
    pipelined_announces_are_all_answered_in_order,
    floods_past_the_caps_are_refused_and_memory_stays_bounded,
);
