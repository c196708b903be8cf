//! Black-box tests of the HTTP layer: routing, methods, headers, keep-alive.

#[macro_use]
mod common;

use common::{Announce, Tracker, get, id, memory_only, parse_one, parse_response, raw};

fn unknown_paths_get_404_with_a_bencoded_reason() {
    let tracker = Tracker::start(&[]);
    for target in [
        "/",
        "/announce/extra",
        "/ANNOUNCE",
        "/favicon.ico",
        "/scrape.php",
    ] {
        let response = get(tracker.v4, target);
        assert_eq!(response.status, 404, "{target}");
        assert_eq!(response.header("content-type"), Some("text/plain"));
        assert_eq!(
            response.failure().as_deref(),
            Some("not found: this tracker answers /announce and /scrape")
        );
    }
}

fn methods_other_than_get_and_head_get_405() {
    let tracker = Tracker::start(&[]);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let request = format!(
            "{method} /announce HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let response = parse_response(&raw(tracker.v4, request.as_bytes()));
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"));
        assert_eq!(
            response.failure().as_deref(),
            Some("method not allowed: use GET")
        );
    }
}

fn head_gets_the_headers_without_a_body() {
    let tracker = Tracker::start(&[]);
    let target = Announce::new(id(1), 1).target();
    let request = format!("HEAD {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let bytes = raw(tracker.v4, request.as_bytes());
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "HEAD response has a body: {text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain")
    );
}

fn keep_alive_serves_many_requests_on_one_connection() {
    let tracker = Tracker::start(&[]);
    let mut request = Vec::new();
    for peer in 1..=5u8 {
        let target = Announce::new(id(2), peer).target();
        let connection = if peer == 5 { "close" } else { "keep-alive" };
        request.extend_from_slice(
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\n\r\n")
                .as_bytes(),
        );
    }
    let bytes = raw(tracker.v4, &request);
    let mut rest = &bytes[..];
    for peer in 1..=5i64 {
        let (response, tail) = parse_one(rest);
        rest = tail;
        assert_eq!(response.status, 200);
        // Answers arrive in order: the n-th announce sees n leechers.
        assert_eq!(response.dict().int("incomplete"), peer);
    }
    assert!(rest.is_empty());
}

fn http_1_0_is_answered() {
    let tracker = Tracker::start(&[]);
    let target = Announce::new(id(3), 1).target();
    let bytes = raw(
        tracker.v4,
        format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes(),
    );
    let response = parse_response(&bytes);
    assert_eq!(response.status, 200);
    assert_eq!(response.dict().int("incomplete"), 1);
}

fn announce_and_scrape_paths_are_configurable_and_root_redirects() {
    let tracker = Tracker::start(&[
        "--announce-path",
        "/announce.php",
        "--scrape-path",
        "/scrape.php",
        "--root-redirect",
        "https://tracker.example/about",
    ]);
    let target = Announce::new(id(7), 1)
        .target()
        .replacen("/announce", "/announce.php", 1);
    let response = get(tracker.v4, &target);
    assert_eq!(response.dict().int("incomplete"), 1);
    let scrape = get(
        tracker.v4,
        &format!("/scrape.php?info_hash={}", common::escape(&id(7))),
    );
    assert_eq!(
        scrape
            .dict()
            .dict("files")
            .dict_bytes(&id(7))
            .int("incomplete"),
        1
    );
    let old = get(tracker.v4, &Announce::new(id(7), 2).target());
    assert_eq!(old.status, 404);
    assert_eq!(
        old.failure().as_deref(),
        Some("not found: this tracker answers /announce.php and /scrape.php")
    );
    let root = get(tracker.v4, "/");
    assert_eq!(root.status, 302);
    assert_eq!(
        root.header("location"),
        Some("https://tracker.example/about")
    );
    assert!(
        tracker.log().contains("/announce.php (reactor:"),
        "{}",
        tracker.log()
    );
    // Without a redirect, / is a 404 like any unknown path.
    drop(tracker);
    let tracker = Tracker::start(&[]);
    assert_eq!(get(tracker.v4, "/").status, 404);
}

/// GET and HEAD requests are answered by the reactor's fast path unless
/// something keeps them out (a `Content-Length` header sends them to hyper):
/// both must give the same status, headers and body, closing the connection
/// or keeping it alive.
fn the_fast_path_answers_exactly_like_hyper() {
    // An interval under 20 s has no jitter, so answers are repeatable.
    let tracker = Tracker::start(&["--interval", "19", "--min-interval", "10"]);
    let announce = Announce::new(id(1), 1).target();
    tracker.announce(&Announce::new(id(1), 1));
    let targets = [
        ("GET", announce.as_str()),
        ("HEAD", announce.as_str()),
        ("GET", "/announce?info_hash=short"),
        (
            "GET",
            "/scrape?info_hash=%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01",
        ),
        ("GET", "/nowhere"),
        ("GET", "/scrape"),
    ];
    let last = "GET /scrape HTTP/1.1\r\nConnection: close\r\n\r\n";
    for (method, target) in targets {
        let head = format!("{method} {target} HTTP/1.1\r\nHost: t\r\n");
        let fast = raw(
            tracker.v4,
            format!("{head}Connection: close\r\n\r\n").as_bytes(),
        );
        let hyper = raw(
            tracker.v4,
            format!("{head}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(comparable(&fast), comparable(&hyper), "{method} {target}");
        let text = String::from_utf8_lossy(&fast);
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        assert!(text.contains(" GMT\r\n"), "{text}");

        // Kept alive, then one more request that closes.
        let fast = raw(tracker.v4, format!("{head}\r\n{last}").as_bytes());
        let hyper = raw(
            tracker.v4,
            format!("{head}Content-Length: 0\r\n\r\n{last}").as_bytes(),
        );
        let (fast_first, fast_last) = split_first(&fast, method == "HEAD");
        let (hyper_first, hyper_last) = split_first(&hyper, method == "HEAD");
        assert_eq!(comparable(fast_first), comparable(hyper_first));
        for first in [fast_first, hyper_first] {
            let text = String::from_utf8_lossy(first).to_ascii_lowercase();
            assert!(!text.contains("\r\nconnection:"), "{text}");
        }
        assert_eq!(comparable(fast_last), comparable(hyper_last));
    }
}

/// The first response in `bytes` and what follows it.
fn split_first(bytes: &[u8], head_only: bool) -> (&[u8], &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length: usize = head
        .split("\r\n")
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |n| n.parse().expect("a length"));
    let length = if head_only { 0 } else { length };
    bytes.split_at(end + length)
}

/// A connection that starts on the fast path and then sends what only
/// hyper takes (a POST) moves to hyper for good, answers in order.
fn a_connection_moves_to_hyper_midway_and_keeps_its_order() {
    let tracker = Tracker::start(&[]);
    let mut request = Vec::new();
    for (method, peer, extra) in [
        ("GET", 1, ""),
        ("GET", 2, ""),
        ("POST", 3, "Content-Length: 3\r\n"),
        ("GET", 4, ""),
        ("GET", 5, "Connection: close\r\n"),
    ] {
        let target = Announce::new(id(4), peer).target();
        request.extend_from_slice(
            format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes(),
        );
        if method == "POST" {
            request.extend_from_slice(b"abc");
        }
    }
    let bytes = raw(tracker.v4, &request);
    let mut rest = &bytes[..];
    let (mut seen, mut announced) = (Vec::new(), 0);
    for _ in 0..5 {
        let (response, tail) = parse_one(rest);
        rest = tail;
        seen.push(response.status);
        if response.status == 200 {
            // Each announce sees every earlier one.
            announced += 1;
            assert_eq!(response.dict().int("incomplete"), announced);
        }
    }
    assert_eq!(seen, [200, 200, 405, 200, 200]);
    assert!(rest.is_empty());
}

/// Status line, headers (sorted, lower-case, without `date` and
/// `connection`) and everything after the head of a whole response.
fn comparable(bytes: &[u8]) -> (String, Vec<String>, Vec<u8>) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let mut headers: Vec<String> = lines
        .map(str::to_ascii_lowercase)
        .filter(|l| !l.starts_with("date:") && !l.starts_with("connection:"))
        .collect();
    headers.sort();
    (status, headers, bytes[end + 4..].to_vec())
}

/// With `Connection: close`, the answer and the FIN leave in one segment
/// (held by `MSG_MORE` until the close): the client's kernel counts the
/// SYN-ACK, the ACK of its request and the answer carrying the FIN, where
/// an answer and a FIN sent apart make one segment more.
fn a_closing_answer_leaves_with_its_fin() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    if memory_only("an answer on the spot at accept") {
        // The Redis store answers from the connection's task, later.
        return;
    }
    let tracker = Tracker::start(&[]);
    let target = Announce::new(id(7), 1).target();
    for _ in 0..3 {
        let mut stream = std::net::TcpStream::connect(tracker.v4).expect("connect");
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).expect("read to the FIN");
        let response = parse_response(&bytes);
        assert_eq!(response.status, 200);
        assert!(response.dict().int("interval") > 0);
        // SAFETY: a valid socket, and a pointer to a zeroed `tcp_info` with
        // its size; the kernel writes at most that many bytes.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let got = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        assert_eq!(got, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        assert!(
            info.tcpi_segs_in <= 3,
            "{} segments received for one closing answer: the answer and the FIN went apart",
            info.tcpi_segs_in
        );
    }
}

/// A client that sends its keep-alive requests and closes its sending side,
/// reading slowly through a small receive buffer, still gets every answer:
/// the end of its input ends the connection only after the answers.
fn a_client_that_stops_sending_still_gets_every_answer() {
    use std::io::{Read, Write};
    const REQUESTS: usize = 300;
    let tracker = Tracker::start(&[]);
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    // Set before connecting, so the window the server sees stays small.
    socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    socket
        .connect_timeout(&tracker.v4.into(), common::TIMEOUT)
        .expect("connect");
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        for n in 0..REQUESTS {
            let target = Announce::new(id(9), (n % 200) as u8 + 1)
                .port(20_000 + n as u16)
                .target();
            let request = format!("GET {target}&numwant=0 HTTP/1.1\r\nHost: t\r\n\r\n");
            writer.write_all(request.as_bytes()).expect("send");
        }
        writer
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
    });
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            // A signal to this test process (a child tracker exiting).
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => panic!("read after {} bytes: {error}", bytes.len()),
        }
        // Slower than the server writes: its answers wait on this reader.
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    sender.join().expect("sender");
    let mut rest = &bytes[..];
    let mut answers = 0;
    while !rest.is_empty() {
        let (response, tail) = parse_one(rest);
        assert_eq!(response.status, 200);
        rest = tail;
        answers += 1;
    }
    assert_eq!(
        answers, REQUESTS,
        "answers lost at the end of the connection"
    );
}

reactor_tests!(
    a_client_that_stops_sending_still_gets_every_answer,
    the_fast_path_answers_exactly_like_hyper,
    a_connection_moves_to_hyper_midway_and_keeps_its_order,
    unknown_paths_get_404_with_a_bencoded_reason,
    methods_other_than_get_and_head_get_405,
    head_gets_the_headers_without_a_body,
    keep_alive_serves_many_requests_on_one_connection,
    http_1_0_is_answered,
    announce_and_scrape_paths_are_configurable_and_root_redirects,
    a_closing_answer_leaves_with_its_fin,
);
