//! Shared helpers for the black-box tests: start the real `shoal` binary on
//! ephemeral loopback ports and speak raw HTTP/1.1 bytes to it.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, percent_encode};
use serde_bencode::value::Value;

pub mod redis;
pub mod udp;

pub const TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    /// The reactor trackers started on this test thread run on.
    static REACTOR: std::cell::Cell<&'static str> = const { std::cell::Cell::new("tokio") };
    /// The store trackers started on this test thread use: "memory", or
    /// "redis" (the shared cluster of [`redis::shared`]).
    static STORE: std::cell::Cell<&'static str> = const { std::cell::Cell::new("memory") };
}

/// A name for this test's run, unique among the runs of one test in this
/// process (`tokio`, `redis-tokio`, ...): for its temporary files, as every
/// run of a test goes on at once.
pub fn run_name() -> String {
    match store() {
        "memory" => reactor().to_owned(),
        other => format!("{other}-{}", reactor()),
    }
}

/// The store the current test runs against.
pub fn store() -> &'static str {
    STORE.with(|s| s.get())
}

/// For a test of what only the memory store has (the state file, the full
/// scrape, the torrent cap, totals walked on demand): whether to skip it
/// because this run is on Redis; says so.
pub fn memory_only(what: &str) -> bool {
    let skip = store() != "memory";
    if skip {
        eprintln!("not on the {} store: {what} is the memory store's", store());
    }
    skip
}

/// Waits until the store-wide totals (`/metrics` gauges, `/stats.json`)
/// include what was announced so far: at once with the memory store (its
/// totals are walked on demand, cached a second), after the next periodic
/// walk (`--redis-stats-interval 1` in the tests) with Redis.
pub fn let_totals_settle() {
    let wait = if store() == "memory" { 0 } else { 2200 };
    std::thread::sleep(Duration::from_millis(wait));
}

/// Runs `test` on `reactor` with every tracker using the shared Redis
/// cluster (skipped with a note where Redis is not installed, except in CI).
pub fn on_redis(reactor: &'static str, test: fn()) {
    if !redis::available() {
        return;
    }
    redis::shared();
    STORE.with(|s| s.set("redis"));
    on_reactor(reactor, test);
}

/// The reactor the current test runs against.
pub fn reactor() -> &'static str {
    REACTOR.with(|r| r.get())
}

/// Runs `test` with every tracker it starts on `reactor`. A reactor this
/// machine cannot run is skipped with a note, except in CI where it fails.
pub fn on_reactor(reactor: &'static str, test: fn()) {
    let kind = match reactor.parse::<shoal::reactor::Choice>() {
        Ok(shoal::reactor::Choice::Named(kind)) => kind,
        other => panic!("not a reactor: {reactor} ({other:?})"),
    };
    if let Err(why) = kind.availability() {
        assert!(
            std::env::var_os("CI").is_none(),
            "reactor {reactor} unusable in CI: {why}"
        );
        eprintln!("skipping on reactor {reactor}: {why}");
        return;
    }
    REACTOR.with(|r| r.set(reactor));
    test();
}

/// Declares each listed test function once per reactor, as
/// `tokio::name`, `per_core::name` and `io_uring::name`, and once per
/// reactor on the Redis store, as `redis::tokio::name` and so on: the
/// black-box suite is written once and runs against every reactor and both
/// store backends.
#[allow(unused_macros)] // tests/redis_cluster.rs runs on one reactor
macro_rules! reactor_tests {
    ($($test:ident),* $(,)?) => {
        mod tokio {
            $( #[test] fn $test() { crate::common::on_reactor("tokio", super::$test) } )*
        }
        mod per_core {
            $( #[test] fn $test() { crate::common::on_reactor("per-core", super::$test) } )*
        }
        mod io_uring {
            $( #[test] fn $test() { crate::common::on_reactor("io-uring", super::$test) } )*
        }
        mod redis {
            mod tokio {
                $( #[test] fn $test() { crate::common::on_redis("tokio", super::super::$test) } )*
            }
            mod per_core {
                $( #[test] fn $test() { crate::common::on_redis("per-core", super::super::$test) } )*
            }
            mod io_uring {
                $( #[test] fn $test() { crate::common::on_redis("io-uring", super::super::$test) } )*
            }
        }
    };
}

/// A running `shoal` process, killed when dropped.
pub struct Tracker {
    child: Child,
    pub v4: SocketAddr,
    pub v6: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Tracker {
    /// Starts shoal on 127.0.0.1:0 and [::1]:0, on this test's reactor
    /// (see [`on_reactor`]), with extra arguments.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
        command
            .args(["--listen", "127.0.0.1:0", "--listen", "[::1]:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !args.contains(&"--workers") {
            command.args(["--workers", "2"]);
        }
        if !args.contains(&"--reactor") {
            command.args(["--reactor", reactor()]);
        }
        if store() == "redis" && !args.contains(&"--store") {
            // A key prefix of its own: tests share the cluster, not swarms.
            let prefix = format!("t{}:", fastrand::u64(..));
            command
                .args(["--store", "redis", "--redis-url", redis::shared()])
                .args(["--redis-key-prefix", &prefix, "--redis-stats-interval", "1"]);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start shoal");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    // Logged before the address is announced, so a test that
                    // has the address also has the line.
                    let mut log = log_writer.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(addr) = rest.split('/').next()
                {
                    let _ = tx.send(addr.parse::<SocketAddr>().expect("listen address"));
                }
            }
        });
        let mut addrs = Vec::new();
        while addrs.len() < 2 {
            match rx.recv_timeout(TIMEOUT) {
                Ok(addr) => addrs.push(addr),
                Err(_) => {
                    let _ = child.kill();
                    panic!("shoal did not start: {}", log.lock().unwrap());
                }
            }
        }
        let v4 = *addrs
            .iter()
            .find(|a| a.is_ipv4())
            .expect("an IPv4 listener");
        let v6 = *addrs
            .iter()
            .find(|a| a.is_ipv6())
            .expect("an IPv6 listener");
        Tracker { child, v4, v6, log }
    }

    /// Runs shoal with `args` where it must refuse to start; what it said.
    pub fn start_expecting_failure(args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal");
        assert!(!output.status.success(), "shoal started with {args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// The address in the first log line containing `prefix` followed by
    /// `ADDR/` (for example `"metrics on http://"`), waiting for it.
    pub fn logged_addr(&self, prefix: &str) -> SocketAddr {
        let mut found = None;
        wait_until(&format!("a log line with {prefix:?}"), || {
            found = self
                .log()
                .split(prefix)
                .nth(1)
                .and_then(|rest| rest.split('/').next().and_then(|a| a.parse().ok()));
            found.is_some()
        });
        found.unwrap()
    }

    /// Everything shoal has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal and waits (bounded) for the process to exit.
    /// Sends `signal` (e.g. `"HUP"`) to shoal.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "shoal did not exit after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn announce(&self, announce: &Announce) -> Dict {
        let response = get(self.v4, &announce.target());
        assert_eq!(response.status, 200, "{response:?}");
        response.dict()
    }

    pub fn announce_v6(&self, announce: &Announce) -> Dict {
        let response = get(self.v6, &announce.target());
        assert_eq!(response.status, 200, "{response:?}");
        response.dict()
    }

    pub fn scrape(&self, hashes: &[[u8; 20]]) -> Dict {
        self.scrape_at("/scrape", hashes)
    }

    /// A scrape at `path` (`/scrape/<passkey>` in private mode).
    pub fn scrape_at(&self, path: &str, hashes: &[[u8; 20]]) -> Dict {
        let query: Vec<String> = hashes
            .iter()
            .map(|h| format!("info_hash={}", escape(h)))
            .collect();
        get(self.v4, &format!("{path}?{}", query.join("&"))).dict()
    }

    /// The (complete, incomplete, downloaded) counts of one torrent.
    pub fn counts(&self, hash: [u8; 20]) -> (i64, i64, i64) {
        self.counts_at("/scrape", hash)
    }

    /// The counts of one torrent, scraped at `path`.
    pub fn counts_at(&self, path: &str, hash: [u8; 20]) -> (i64, i64, i64) {
        let dict = self.scrape_at(path, &[hash]);
        let files = dict.dict("files");
        let file = files.dict_bytes(&hash);
        (
            file.int("complete"),
            file.int("incomplete"),
            file.int("downloaded"),
        )
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the tracker said.
        if std::thread::panicking() {
            eprintln!("--- shoal's log ---\n{}--- end of log ---", self.log());
        }
    }
}

/// Polls `done` every 50 ms until it holds; fails the test with `what` after
/// TIMEOUT.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Percent-encodes every byte that is not alphanumeric.
pub fn escape(bytes: &[u8]) -> String {
    percent_encode(bytes, NON_ALPHANUMERIC).to_string()
}

/// A 20-byte id made of one repeated byte.
pub fn id(byte: u8) -> [u8; 20] {
    [byte; 20]
}

/// An announce query builder with sensible defaults.
#[derive(Clone)]
pub struct Announce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub left: u64,
    pub event: Option<&'static str>,
    pub extra: Vec<(String, String)>,
}

impl Announce {
    pub fn new(info_hash: [u8; 20], peer: u8) -> Self {
        Self {
            info_hash,
            peer_id: id(peer),
            port: 10_000 + u16::from(peer),
            left: 1000,
            event: None,
            extra: Vec::new(),
        }
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn peer_id(mut self, peer_id: [u8; 20]) -> Self {
        self.peer_id = peer_id;
        self
    }

    pub fn seeder(mut self) -> Self {
        self.left = 0;
        self
    }

    pub fn event(mut self, event: &'static str) -> Self {
        self.event = Some(event);
        self
    }

    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    pub fn target(&self) -> String {
        let mut target = format!(
            "/announce?info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left={}",
            escape(&self.info_hash),
            escape(&self.peer_id),
            self.port,
            self.left
        );
        if let Some(event) = self.event {
            target.push_str(&format!("&event={event}"));
        }
        for (key, value) in &self.extra {
            target.push_str(&format!("&{key}={value}"));
        }
        target
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn dict(&self) -> Dict {
        Dict::decode(&self.body)
    }

    pub fn failure(&self) -> Option<String> {
        self.dict().failure()
    }
}

/// Sends a GET with `Connection: close` and reads the whole response.
pub fn get(addr: SocketAddr, target: &str) -> HttpResponse {
    let request = format!("GET {target} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n");
    parse_response(&raw(addr, request.as_bytes()))
}

/// Sends raw bytes and reads until the server closes (bounded by TIMEOUT).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response
}

/// Parses one response from the front of `bytes`; returns it and the rest.
pub fn parse_one(bytes: &[u8]) -> (HttpResponse, &[u8]) {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..head_end]).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let rest = &bytes[head_end + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let (body, rest) = dechunk(rest);
        return (
            HttpResponse {
                status,
                headers,
                body,
            },
            rest,
        );
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(rest.len(), |(_, v)| v.parse().unwrap());
    let response = HttpResponse {
        status,
        headers,
        body: rest[..length].to_vec(),
    };
    (response, &rest[length..])
}

/// Sends one request and reads exactly one response, whether or not the
/// server keeps the connection open afterwards.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).expect("write");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if bytes.len() >= head_end + 4 + length {
                return parse_response(&bytes);
            }
        }
        let n = match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other.expect("read response"),
        };
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..n]);
    }
}

/// Decodes a chunked body from the front of `bytes`; returns it and the rest.
fn dechunk(mut bytes: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut body = Vec::new();
    loop {
        let line_end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&bytes[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            // No trailers are sent: the final CRLF ends the body.
            return (body, &bytes[2..]);
        }
        body.extend_from_slice(&bytes[..size]);
        assert_eq!(&bytes[size..size + 2], b"\r\n", "chunk ends with CRLF");
        bytes = &bytes[size + 2..];
    }
}

pub fn parse_response(bytes: &[u8]) -> HttpResponse {
    parse_one(bytes).0
}

/// A decoded bencoded dictionary, with accessors that panic with context.
#[derive(Debug, Clone)]
pub struct Dict(pub BTreeMap<Vec<u8>, Value>);

impl Dict {
    pub fn decode(bytes: &[u8]) -> Self {
        match serde_bencode::from_bytes::<Value>(bytes) {
            Ok(Value::Dict(map)) => Dict(map.into_iter().collect()),
            other => panic!(
                "not a bencoded dict: {:?} ({other:?})",
                String::from_utf8_lossy(bytes)
            ),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key.as_bytes())
    }

    fn get(&self, key: &[u8]) -> &Value {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no key {:?} in {self:?}", String::from_utf8_lossy(key)))
    }

    pub fn int(&self, key: &str) -> i64 {
        match self.get(key.as_bytes()) {
            Value::Int(i) => *i,
            other => panic!("{key} is not an int: {other:?}"),
        }
    }

    pub fn bytes(&self, key: &str) -> Vec<u8> {
        match self.get(key.as_bytes()) {
            Value::Bytes(b) => b.clone(),
            other => panic!("{key} is not a byte string: {other:?}"),
        }
    }

    pub fn list(&self, key: &str) -> Vec<Value> {
        match self.get(key.as_bytes()) {
            Value::List(l) => l.clone(),
            other => panic!("{key} is not a list: {other:?}"),
        }
    }

    pub fn dict(&self, key: &str) -> Dict {
        self.dict_bytes(key.as_bytes())
    }

    pub fn dict_bytes(&self, key: &[u8]) -> Dict {
        match self.get(key) {
            Value::Dict(d) => Dict(d.clone().into_iter().collect()),
            other => panic!("not a dict: {other:?}"),
        }
    }

    pub fn failure(&self) -> Option<String> {
        self.0.get(&b"failure reason"[..]).map(|v| match v {
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("failure reason is not a string: {other:?}"),
        })
    }

    /// Compact IPv4 peers as (ip bytes, port).
    pub fn peers4(&self) -> Vec<([u8; 4], u16)> {
        let raw = self.bytes("peers");
        assert_eq!(raw.len() % 6, 0, "peers length {}", raw.len());
        raw.chunks(6)
            .map(|c| ([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]])))
            .collect()
    }

    /// Compact IPv6 peers as (ip bytes, port); empty when `peers6` is absent.
    pub fn peers6(&self) -> Vec<([u8; 16], u16)> {
        if !self.has("peers6") {
            return Vec::new();
        }
        let raw = self.bytes("peers6");
        assert_eq!(raw.len() % 18, 0, "peers6 length {}", raw.len());
        raw.chunks(18)
            .map(|c| {
                (
                    c[..16].try_into().unwrap(),
                    u16::from_be_bytes([c[16], c[17]]),
                )
            })
            .collect()
    }

    /// Ports of all compact peers of both families.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.peers4().into_iter().map(|p| p.1).collect();
        ports.extend(self.peers6().into_iter().map(|p| p.1));
        ports.sort_unstable();
        ports
    }
}
