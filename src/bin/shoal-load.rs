//! shoal-load: a load generator for HTTP and UDP BitTorrent trackers.
//!
//! It sends realistic tracker traffic to one or more addresses for a fixed
//! time and reports throughput, latency percentiles and errors, and, given
//! the server's PID, the server's CPU seconds, responses per server
//! CPU-second and resident memory. Every response is validated, so a
//! tracker that answers fast with failures does not look fast.
//!
//! Traffic model: torrent popularity follows a Zipf law (a few torrents have
//! most peers, as on real trackers); a quarter of announces come from
//! seeders; events are mostly regular re-announces with some started,
//! completed and stopped; a configurable share of requests are scrapes; IPv4
//! and IPv6 targets are used in turn; connections are kept alive or opened
//! per request. By default every announce comes from a new random peer
//! (the tracker's insert path, its dearest); with `--peers N` a fixed
//! population of N peers, spread over the torrents by the same Zipf law,
//! announces again and again, stops now and then and starts again later, so
//! most announces refresh a peer the tracker holds, as on a live tracker.
//! In UDP mode (BEP 15) each simulated client is one socket
//! that connects once, reuses its connection id (renewed every minute) and
//! keeps a few requests in flight; a reply not back within a second is
//! counted as lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One request after another on each persistent connection.
    KeepAlive,
    /// A new TCP connection for every request, as most clients announce.
    Close,
    /// BEP 15 over UDP: one socket per client, `--in-flight` requests each.
    Udp,
}

/// Load generator for HTTP BitTorrent trackers (loopback targets only).
#[derive(Debug, Parser, Clone)]
#[command(name = "shoal-load", version)]
struct Args {
    /// Tracker address; repeat to spread load (e.g. one IPv4, one IPv6).
    #[arg(long, short = 't', required = true, value_name = "ADDR")]
    target: Vec<SocketAddr>,
    /// Seconds to run (after warm-up).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up traffic not counted in the results.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent connections (UDP: client sockets).
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// UDP: requests each socket keeps in flight.
    #[arg(long, default_value_t = 2)]
    in_flight: usize,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Keep connections alive, or open one per request.
    #[arg(long, value_enum, default_value_t = Mode::KeepAlive)]
    mode: Mode,
    /// Distinct torrents.
    #[arg(long, default_value_t = 10_000)]
    torrents: u32,
    /// Zipf exponent of torrent popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Share of announces from seeders.
    #[arg(long, default_value_t = 0.25)]
    seeders: f64,
    /// Share of requests that are scrapes.
    #[arg(long, default_value_t = 0.0)]
    scrape_share: f64,
    /// Info hashes per scrape.
    #[arg(long, default_value_t = 1)]
    scrape_hashes: u32,
    /// numwant sent with each announce.
    #[arg(long, default_value_t = 50)]
    numwant: u32,
    /// Total requests per second across connections (0 = as fast as possible).
    /// Requests are released on a fixed schedule by a pacing thread and
    /// latency is measured from each one's due time, so a stall counts for
    /// every request it delays (no coordinated omission).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// HTTP: send each announce as from its own IPv4 address, an `ip=`
    /// parameter drawn from 10.0.0.0/8 (the tracker must run with
    /// --allow-ip-param), so peers are spread over addresses as on the
    /// internet instead of all behind the loopback address.
    #[arg(long)]
    distinct_ips: bool,
    /// HTTP: instead of running for --duration, send exactly N announces,
    /// each a new peer (`event=started`, its own `ip=` address counting up
    /// from 10.0.0.0 and its own port within its torrent), torrents taken in
    /// turn, then stop: fills a tracker with N peers over --torrents swarms
    /// for a memory measurement (the tracker needs --allow-ip-param; one
    /// that ignores `ip=` still sees N distinct address and port pairs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    fill: u64,
    /// With --fill: announce the same N peers R times over (after the first
    /// pass each announce refreshes a peer the tracker holds).
    #[arg(long, value_name = "R", default_value_t = 1)]
    repeat: u64,
    /// Announce as a fixed population of N peers (0: every announce a new
    /// random peer). Each peer belongs to one torrent (Zipf, so popular
    /// torrents have big swarms) and has a fixed peer id, port and, with
    /// --distinct-ips, address (10.0.0.0 counting up; without it every peer
    /// is at the loopback address, and peers 64,000 apart share a port, so
    /// the tracker may see them as one). The run starts by
    /// announcing each peer once (`started`; give --warmup the time for it);
    /// then peers are drawn at random: one the tracker holds re-announces
    /// (8% of the time `stopped`, 2% of a leecher's `completed`), one that
    /// stopped starts again. In the steady state about 7% of announces are
    /// new peers; the report says how many were.
    #[arg(long, value_name = "N", default_value_t = 0)]
    peers: u64,
    /// Seed of the random requests: runs with the same seed send the same
    /// sequence (the same peers); give each run its own to send new ones.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The server's PID, to report its CPU time and memory.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print the info hashes the run uses (hex, one per line) and exit: for
    /// trackers that need a whitelist.
    #[arg(long)]
    print_hashes: bool,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// A label for the results (e.g. the server's name).
    #[arg(long, default_value = "")]
    label: String,
}

/// The info hash of torrent `i`: fixed, so runs and whitelists agree.
fn info_hash(i: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5348_4F41_4C21;
    for chunk in h.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    h
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Samples torrent indices with Zipf-distributed popularity.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u32, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / f64::from(k).powf(s);
            cdf.push(total);
        }
        cdf.iter_mut().for_each(|c| *c /= total);
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut fastrand::Rng) -> u32 {
        let u = rng.f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u32
    }
}

/// The `--peers` population: who each peer is and whether the tracker
/// holds it, shared by every connection.
struct Population {
    /// Each peer's torrent.
    torrent: Vec<u32>,
    /// Each peer's state: [`ABSENT`], [`LEECHER`] or [`SEEDER`].
    state: Vec<std::sync::atomic::AtomicU8>,
    /// Peers handed out by the first pass (each peer once, in order).
    first_pass: std::sync::atomic::AtomicU64,
}

const ABSENT: u8 = 0;
const LEECHER: u8 = 1;
const SEEDER: u8 = 2;

impl Population {
    fn new(peers: u64, zipf: &Zipf, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x0050_4545_5253);
        Population {
            torrent: (0..peers).map(|_| zipf.sample(&mut rng)).collect(),
            state: (0..peers).map(|_| ABSENT.into()).collect(),
            first_pass: 0.into(),
        }
    }

    /// The next announce: which peer, its event (BEP 15 code) and whether
    /// it is a seeder. Two connections drawing the same peer at once may
    /// both see it absent; that only makes one extra `started`.
    fn next(&self, seeders: f64, rng: &mut fastrand::Rng) -> (u64, u32, bool) {
        let n = self.state.len() as u64;
        let first = self.first_pass.fetch_add(1, Ordering::Relaxed);
        let peer = if first < n { first } else { rng.u64(0..n) };
        let state = &self.state[peer as usize];
        let (event, next) = match state.load(Ordering::Relaxed) {
            ABSENT => {
                // A peer's role when it starts is fixed by who it is.
                let unit = (peer.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64;
                let seeder = unit / ((1u64 << 53) as f64) < seeders;
                (2, if seeder { SEEDER } else { LEECHER })
            }
            held => match rng.u32(0..100) {
                0..=7 => (3, ABSENT),
                8..=9 if held == LEECHER => (1, SEEDER),
                _ => (0, held),
            },
        };
        state.store(next, Ordering::Relaxed);
        (peer, event, next == SEEDER || event == 1)
    }
}

/// Peer `k` of a `--peers` population: its peer id,
/// port and `--distinct-ips` address.
fn population_peer(k: u64) -> ([u8; 20], u16, [u8; 4]) {
    let mut peer_id = *b"-SL0001-000000000000";
    let digits = format!("{:012}", k % 1_000_000_000_000);
    peer_id[8..].copy_from_slice(digits.as_bytes());
    let port = 1024 + (k % 64_000) as u16;
    (
        peer_id,
        port,
        0x0A00_0000u32.wrapping_add(k as u32).to_be_bytes(),
    )
}

/// What requests a run sends: torrent popularity and, with `--peers`, the
/// population announcing.
struct Model {
    zipf: Zipf,
    population: Option<Population>,
}

/// One announce: its event (BEP 15 code: 0 none, 1 completed, 2 started,
/// 3 stopped), `left`, torrent, peer id, port, `--distinct-ips` address,
/// and whether it is a new peer of the population (`started`).
struct Shape {
    event: u32,
    left: u64,
    torrent: u32,
    peer_id: [u8; 20],
    port: u16,
    ip: [u8; 4],
    new_peer: bool,
}

#[derive(Default, Clone)]
struct Tally {
    ok_announces: u64,
    /// Counted announces that started a `--peers` peer.
    new_peers: u64,
    ok_scrapes: u64,
    failures: u64,
    bad_responses: u64,
    io_errors: u64,
    /// UDP requests whose reply never came (within [`LOST_AFTER`]).
    lost: u64,
    latencies_us: Vec<u32>,
}

/// A UDP reply later than this is counted as lost.
const LOST_AFTER: Duration = Duration::from_secs(1);

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok_announces += other.ok_announces;
        self.new_peers += other.new_peers;
        self.ok_scrapes += other.ok_scrapes;
        self.failures += other.failures;
        self.bad_responses += other.bad_responses;
        self.io_errors += other.io_errors;
        self.lost += other.lost;
        self.latencies_us.extend(other.latencies_us);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Announce,
    Scrape,
}

/// Announces handed out so far by a `--fill` run.
static FILLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The next announce of a `--fill` run, `None` once N are handed out.
fn next_fill_request(args: &Args, host: &str) -> Option<Vec<u8>> {
    let k = FILLED.fetch_add(1, Ordering::Relaxed);
    if k >= args.fill.saturating_mul(args.repeat.max(1)) {
        return None;
    }
    let k = k % args.fill;
    let torrents = u64::from(args.torrents);
    let torrent = (k % torrents) as u32;
    let port = 1024 + (k / torrents) % 64_000;
    let [a, b, c, d] = (0x0A00_0000u32.wrapping_add(k as u32)).to_be_bytes();
    let left = if k.is_multiple_of(4) { 0 } else { 1 };
    let target = format!(
        "/announce?info_hash={}&peer_id=-SL0001-{k:012}&port={port}&uploaded=0&downloaded=0&left={left}&numwant=0&compact=1&event=started&ip={a}.{b}.{c}.{d}",
        escape(&info_hash(torrent)),
    );
    Some(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes())
}

/// Builds one request; returns its bytes, kind and whether it starts a
/// `--peers` peer.
fn next_request(
    args: &Args,
    model: &Model,
    rng: &mut fastrand::Rng,
    host: &str,
) -> (Vec<u8>, Kind, bool) {
    // A client that opens a connection per request says so, as libtorrent
    // does, so the server may close first.
    let connection = match args.mode {
        Mode::Close => "Connection: close\r\n",
        Mode::KeepAlive | Mode::Udp => "",
    };
    if args.scrape_share > 0.0 && rng.f64() < args.scrape_share {
        let mut target = String::from("/scrape?");
        for i in 0..args.scrape_hashes {
            if i > 0 {
                target.push('&');
            }
            target.push_str("info_hash=");
            target.push_str(&escape(&info_hash(model.zipf.sample(rng))));
        }
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{connection}\r\n");
        return (request.into_bytes(), Kind::Scrape, false);
    }
    let shape = announce_shape(args, model, rng);
    let event = match shape.event {
        2 => "&event=started",
        1 => "&event=completed",
        3 => "&event=stopped",
        _ => "",
    };
    let mut target = format!(
        "/announce?info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left={}&numwant={}&compact=1&key={:08X}{event}",
        escape(&info_hash(shape.torrent)),
        escape(&shape.peer_id),
        shape.port,
        shape.left,
        args.numwant,
        rng.u32(..),
    );
    if args.distinct_ips {
        let [a, b, c, d] = shape.ip;
        target.push_str(&format!("&ip={a}.{b}.{c}.{d}"));
    }
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{connection}\r\n");
    (request.into_bytes(), Kind::Announce, shape.new_peer)
}

/// Reads one HTTP response (Content-Length framed) from `stream` into `buf`;
/// returns (status, body range, server closes).
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, std::ops::Range<usize>, bool)> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad status line"))?;
            let lower = head.to_ascii_lowercase();
            let length: usize = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            let closes = lower.contains("connection: close");
            let body = end + 4..end + 4 + length;
            while buf.len() < body.end {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, body, closes));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("response too large"));
        }
    }
}

/// Sends one request on `stream` (connecting first if there is none) and
/// reads the response into `buf`.
async fn exchange(
    stream: &mut Option<TcpStream>,
    target: SocketAddr,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, std::ops::Range<usize>, bool)> {
    let s = match stream.as_mut() {
        Some(s) => s,
        None => {
            let s = TcpStream::connect(target).await?;
            s.set_nodelay(true)?;
            stream.insert(s)
        }
    };
    s.write_all(request).await?;
    read_response(s, buf).await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The schedule of a fixed-rate run. A plain thread releases requests at
/// their due times (sleeping with the OS's microsecond precision, not the
/// runtime's millisecond timer ticks) onto a queue; a free connection takes
/// the oldest due time. If every connection is busy, due requests wait in
/// the queue and that wait is part of their latency.
struct Pacer {
    due: std::sync::Mutex<std::collections::VecDeque<Instant>>,
    ready: tokio::sync::Semaphore,
}

impl Pacer {
    /// Starts releasing `rate` requests per second from `start` until `stop`.
    fn start(rate: f64, start: Instant, stop: Arc<AtomicBool>) -> Arc<Self> {
        let pacer = Arc::new(Pacer {
            due: std::sync::Mutex::new(std::collections::VecDeque::new()),
            ready: tokio::sync::Semaphore::new(0),
        });
        let releaser = pacer.clone();
        let interval = Duration::from_secs_f64(1.0 / rate);
        std::thread::spawn(move || {
            let mut next = start;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if next > now {
                    // Wake at most every 100 us; release all that came due.
                    std::thread::sleep((next - now).max(Duration::from_micros(100)));
                    continue;
                }
                let mut released = 0;
                if let Ok(mut due) = releaser.due.lock() {
                    while next <= now {
                        due.push_back(next);
                        next += interval;
                        released += 1;
                    }
                }
                releaser.ready.add_permits(released);
            }
            releaser.ready.close();
        });
        pacer
    }

    /// The due time of the next request, once one is due; `None` at the end.
    async fn next(&self) -> Option<Instant> {
        self.ready.acquire().await.ok()?.forget();
        self.due.lock().ok()?.pop_front()
    }
}

async fn connection_task(
    args: Arc<Args>,
    model: Arc<Model>,
    index: usize,
    measure_from: Instant,
    stop: Arc<AtomicBool>,
    pacer: Option<Arc<Pacer>>,
) -> Tally {
    let mut rng =
        fastrand::Rng::with_seed(args.seed.wrapping_mul(1_000_003) ^ (index as u64 * 7919 + 1));
    let target = args.target[index % args.target.len()];
    let host = target.to_string();
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        // With a fixed rate, latency runs from when the request was due.
        let due = match &pacer {
            Some(pacer) => match pacer.next().await {
                Some(due) => Some(due),
                None => break,
            },
            None => None,
        };
        let (request, kind, new_peer) = if args.fill > 0 {
            match next_fill_request(&args, &host) {
                Some(request) => (request, Kind::Announce, false),
                None => break,
            }
        } else {
            next_request(&args, &model, &mut rng, &host)
        };
        let began = due.unwrap_or_else(Instant::now);
        let reused = stream.is_some();
        let mut result = exchange(&mut stream, target, &request, &mut buf).await;
        if reused && result.is_err() {
            // The server closed a kept-alive connection (some trackers close
            // after every response without saying so): retry once on a new
            // connection, as HTTP clients do for idempotent requests.
            stream = None;
            result = exchange(&mut stream, target, &request, &mut buf).await;
        }
        let counted = began >= measure_from;
        if counted && new_peer {
            tally.new_peers += 1;
        }
        match result {
            Ok((status, body, closes)) => {
                let body = &buf[body];
                if counted {
                    tally
                        .latencies_us
                        .push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    let valid_shape = body.first() == Some(&b'd') && body.last() == Some(&b'e');
                    if status != 200 || !valid_shape {
                        tally.bad_responses += 1;
                    } else if contains(body, b"14:failure reason") {
                        tally.failures += 1;
                    } else {
                        match kind {
                            Kind::Announce if contains(body, b"8:intervali") => {
                                tally.ok_announces += 1
                            }
                            Kind::Scrape if contains(body, b"5:filesd") => tally.ok_scrapes += 1,
                            _ => tally.bad_responses += 1,
                        }
                    }
                }
                if closes || args.mode == Mode::Close {
                    stream = None;
                }
            }
            Err(_) => {
                if counted {
                    tally.io_errors += 1;
                }
                stream = None;
            }
        }
    }
    tally
}

/// The next announce, by the same model for HTTP and UDP: a `--peers`
/// peer, or a new random one.
fn announce_shape(args: &Args, model: &Model, rng: &mut fastrand::Rng) -> Shape {
    if let Some(population) = &model.population {
        let (peer, event, seeder) = population.next(args.seeders, rng);
        let (peer_id, port, ip) = population_peer(peer);
        return Shape {
            event,
            left: if seeder { 0 } else { 1 },
            torrent: population.torrent[peer as usize],
            peer_id,
            port,
            ip,
            new_peer: event == 2,
        };
    }
    let torrent = model.zipf.sample(rng);
    let seeder = rng.f64() < args.seeders;
    let event = match rng.u32(0..100) {
        0..=7 => 2,
        8..=9 => 1,
        10..=13 => 3,
        _ => 0,
    };
    let left = if seeder || event == 1 {
        0
    } else {
        1 + u64::from(rng.u32(..))
    };
    let mut peer_id = *b"-SL0001-000000000000";
    for b in &mut peer_id[8..] {
        *b = b'a' + rng.u8(0..26);
    }
    let [_, b, c, d] = rng.u32(..).to_be_bytes();
    Shape {
        event,
        left,
        torrent,
        peer_id,
        port: rng.u16(1024..),
        ip: [10, b, c, d],
        new_peer: false,
    }
}

/// One UDP request datagram with `transaction_id`; its kind and, for a
/// scrape, how many hashes it asks for.
fn next_udp_request(
    args: &Args,
    model: &Model,
    rng: &mut fastrand::Rng,
    connection_id: u64,
    transaction_id: u32,
    out: &mut Vec<u8>,
) -> (Kind, usize, bool) {
    out.clear();
    out.extend_from_slice(&connection_id.to_be_bytes());
    if args.scrape_share > 0.0 && rng.f64() < args.scrape_share {
        out.extend_from_slice(&2u32.to_be_bytes());
        out.extend_from_slice(&transaction_id.to_be_bytes());
        for _ in 0..args.scrape_hashes {
            out.extend_from_slice(&info_hash(model.zipf.sample(rng)));
        }
        return (Kind::Scrape, args.scrape_hashes as usize, false);
    }
    let shape = announce_shape(args, model, rng);
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&info_hash(shape.torrent));
    out.extend_from_slice(&shape.peer_id);
    out.extend_from_slice(&0u64.to_be_bytes());
    out.extend_from_slice(&shape.left.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes());
    out.extend_from_slice(&shape.event.to_be_bytes());
    // The source address is the peer's: UDP has no `ip=` to trust.
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&rng.u32(..).to_be_bytes());
    out.extend_from_slice(&(args.numwant as i32).to_be_bytes());
    out.extend_from_slice(&shape.port.to_be_bytes());
    (Kind::Announce, 0, shape.new_peer)
}

const PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// Connects (BEP 15) until answered; the connection id, or `None` at stop.
async fn udp_connect(
    socket: &tokio::net::UdpSocket,
    rng: &mut fastrand::Rng,
    stop: &AtomicBool,
) -> Option<u64> {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let tid = rng.u32(..);
        let mut request = PROTOCOL_ID.to_be_bytes().to_vec();
        request.extend_from_slice(&0u32.to_be_bytes());
        request.extend_from_slice(&tid.to_be_bytes());
        if socket.send(&request).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let deadline = tokio::time::Instant::now() + LOST_AFTER;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            if n == 16 && buf[..4] == [0, 0, 0, 0] && buf[4..8] == tid.to_be_bytes() {
                return Some(u64::from_be_bytes(buf[8..16].try_into().ok()?));
            }
        }
    }
    None
}

/// Whether `reply` is a valid answer of `kind` (a scrape of `hashes`), an
/// error (`Some(false)`), or malformed (`None`).
fn udp_reply_ok(reply: &[u8], kind: Kind, hashes: usize, v6: bool) -> Option<bool> {
    let action = u32::from_be_bytes(reply.get(..4)?.try_into().ok()?);
    let peer = if v6 { 18 } else { 6 };
    match (action, kind) {
        (3, _) => Some(false),
        (1, Kind::Announce) if reply.len() >= 20 && (reply.len() - 20).is_multiple_of(peer) => {
            Some(true)
        }
        (2, Kind::Scrape) if reply.len() == 8 + 12 * hashes => Some(true),
        _ => None,
    }
}

/// One simulated UDP client: a socket, a connection id, `--in-flight`
/// requests outstanding, each reply matched by transaction id.
async fn udp_task(
    args: Arc<Args>,
    model: Arc<Model>,
    index: usize,
    measure_from: Instant,
    stop: Arc<AtomicBool>,
    pacer: Option<Arc<Pacer>>,
) -> Tally {
    let mut rng =
        fastrand::Rng::with_seed(args.seed.wrapping_mul(1_000_003) ^ (index as u64 * 7919 + 1));
    let target = args.target[index % args.target.len()];
    let mut tally = Tally::default();
    let local = if target.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let Ok(socket) = tokio::net::UdpSocket::bind(local).await else {
        tally.io_errors += 1;
        return tally;
    };
    if socket.connect(target).await.is_err() {
        tally.io_errors += 1;
        return tally;
    }
    let Some(mut connection_id) = udp_connect(&socket, &mut rng, &stop).await else {
        return tally;
    };
    let mut connected_at = Instant::now();
    // (transaction id, counted from, kind, scrape hashes)
    let mut pending: std::collections::VecDeque<(u32, Instant, Kind, usize)> = Default::default();
    let mut next_tid = (index as u32) << 16;
    let mut request = Vec::with_capacity(128);
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        // Ids live two minutes at least; renew well before.
        if connected_at.elapsed() > Duration::from_secs(60) && pending.is_empty() {
            match udp_connect(&socket, &mut rng, &stop).await {
                Some(id) => connection_id = id,
                None => break,
            }
            connected_at = Instant::now();
        }
        // Wait for whichever comes first: a reply, the oldest request's
        // deadline, or (with room in the window) the next request's turn.
        let room = pending.len() < args.in_flight.max(1);
        let oldest = pending.front().map(|p| p.1 + LOST_AFTER);
        let deadline = tokio::time::Instant::from_std(oldest.unwrap_or_else(Instant::now));
        let next_due = async {
            match &pacer {
                Some(pacer) => pacer.next().await,
                None => Some(Instant::now()),
            }
        };
        tokio::select! {
            biased;
            received = socket.recv(&mut buf), if oldest.is_some() => match received {
                Ok(n) => udp_reply(&buf[..n], &mut pending, measure_from, target.is_ipv6(), &mut tally),
                Err(_) => tally.io_errors += 1,
            },
            () = tokio::time::sleep_until(deadline), if oldest.is_some() => {
                if let Some((_, began, _, _)) = pending.pop_front()
                    && began >= measure_from
                {
                    tally.lost += 1;
                }
            }
            due = next_due, if room => {
                let Some(due) = due else { break };
                next_tid = next_tid.wrapping_add(1);
                let (kind, hashes, new_peer) = next_udp_request(
                    &args,
                    &model,
                    &mut rng,
                    connection_id,
                    next_tid,
                    &mut request,
                );
                if socket.send(&request).await.is_err() {
                    if due >= measure_from {
                        tally.io_errors += 1;
                    }
                    continue;
                }
                if new_peer && due >= measure_from {
                    tally.new_peers += 1;
                }
                pending.push_back((next_tid, due, kind, hashes));
            }
        }
    }
    tally
}

/// Counts one UDP reply against the request it answers (by transaction id).
fn udp_reply(
    reply: &[u8],
    pending: &mut std::collections::VecDeque<(u32, Instant, Kind, usize)>,
    measure_from: Instant,
    v6: bool,
    tally: &mut Tally,
) {
    let Some(tid) = reply
        .get(4..8)
        .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
    else {
        tally.bad_responses += 1;
        return;
    };
    // None: a reply to a request already counted as lost.
    let Some(at) = pending.iter().position(|p| p.0 == tid) else {
        return;
    };
    let Some((_, began, kind, hashes)) = pending.remove(at) else {
        return;
    };
    if began < measure_from {
        return;
    }
    tally
        .latencies_us
        .push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    match (udp_reply_ok(reply, kind, hashes, v6), kind) {
        (Some(true), Kind::Announce) => tally.ok_announces += 1,
        (Some(true), Kind::Scrape) => tally.ok_scrapes += 1,
        (Some(false), _) => tally.failures += 1,
        (None, _) => tally.bad_responses += 1,
    }
}

/// (CPU seconds, RSS bytes) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    // USER_HZ is 100 on every Linux ABI shoal targets.
    Some((ticks / 100.0, rss_kb * 1024))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for target in &args.target {
        anyhow::ensure!(
            target.ip().is_loopback(),
            "{target} is not a loopback address: shoal-load only loads 127.0.0.0/8 and ::1"
        );
    }
    if args.print_hashes {
        for i in 0..args.torrents {
            let hex: String = info_hash(i).iter().map(|b| format!("{b:02x}")).collect();
            println!("{hex}");
        }
        return Ok(());
    }
    anyhow::ensure!(
        args.torrents > 0 && args.connections > 0,
        "need torrents and connections"
    );
    anyhow::ensure!(
        args.fill == 0 || args.mode != Mode::Udp,
        "--fill sends HTTP announces: use --mode keep-alive or close"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let args = Arc::new(args);
    anyhow::ensure!(
        args.peers == 0 || args.fill == 0,
        "--peers and --fill are two kinds of run: give one"
    );
    anyhow::ensure!(
        !args.distinct_ips || args.peers <= 1 << 24,
        "--distinct-ips gives each peer its own address in 10.0.0.0/8: at most 16777216 --peers"
    );
    let zipf = Zipf::new(args.torrents, args.zipf);
    let population = (args.peers > 0).then(|| Population::new(args.peers, &zipf, args.seed));
    let model = Arc::new(Model { zipf, population });
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let warmup = if args.fill > 0 { 0.0 } else { args.warmup };
    let measure_from = start + Duration::from_secs_f64(warmup);
    let (tally, elapsed, usage) = runtime.block_on(async {
        let pacer = (args.rate > 0.0).then(|| Pacer::start(args.rate, start, stop.clone()));
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| {
                let (args, model, stop, pacer) =
                    (args.clone(), model.clone(), stop.clone(), pacer.clone());
                if args.mode == Mode::Udp {
                    tokio::spawn(udp_task(args, model, i, measure_from, stop, pacer))
                } else {
                    tokio::spawn(connection_task(args, model, i, measure_from, stop, pacer))
                }
            })
            .collect();
        tokio::time::sleep_until(measure_from.into()).await;
        let before = args.server_pid.and_then(process_usage);
        let began = Instant::now();
        let mut tally = Tally::default();
        let mut tasks = tasks;
        if args.fill > 0 {
            // The run ends when every announce is answered.
            for task in tasks.drain(..) {
                if let Ok(t) = task.await {
                    tally.merge(t);
                }
            }
        }
        if args.fill == 0 {
            tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        }
        let after = args.server_pid.and_then(process_usage);
        let elapsed = began.elapsed();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            if let Ok(t) = task.await {
                tally.merge(t);
            }
        }
        let usage = before.zip(after).map(|(b, a)| (a.0 - b.0, a.1));
        (tally, elapsed, usage)
    });
    let mut latencies = tally.latencies_us.clone();
    latencies.sort_unstable();
    let ok = tally.ok_announces + tally.ok_scrapes;
    let seconds = elapsed.as_secs_f64();
    let rps = ok as f64 / seconds;
    let (cpu, rss) = usage.map_or((None, None), |(c, r)| (Some(c), Some(r)));
    let per_cpu = cpu.filter(|c| *c > 0.0).map(|c| ok as f64 / c);
    if args.json {
        println!(
            "{{\"label\":\"{}\",\"mode\":\"{:?}\",\"connections\":{},\"seconds\":{seconds:.2},\"ok\":{ok},\"announces\":{},\"new_peers\":{},\"scrapes\":{},\"failures\":{},\"bad\":{},\"io_errors\":{},\"lost\":{},\"rps\":{rps:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"server_cpu_s\":{},\"per_cpu_s\":{},\"server_rss_bytes\":{}}}",
            args.label,
            args.mode,
            args.connections,
            tally.ok_announces,
            tally.new_peers,
            tally.ok_scrapes,
            tally.failures,
            tally.bad_responses,
            tally.io_errors,
            tally.lost,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
            cpu.map_or("null".into(), |c| format!("{c:.2}")),
            per_cpu.map_or("null".into(), |c| format!("{c:.0}")),
            rss.map_or("null".into(), |r| r.to_string()),
        );
    } else {
        println!(
            "shoal-load {} ({:?}, {} connections, {seconds:.1} s)",
            args.label, args.mode, args.connections
        );
        println!(
            "  ok responses     {ok} ({} announces, {} scrapes)",
            tally.ok_announces, tally.ok_scrapes
        );
        println!(
            "  failures         {} failure reasons, {} bad responses, {} I/O errors, {} lost",
            tally.failures, tally.bad_responses, tally.io_errors, tally.lost
        );
        if args.peers > 0 {
            let sent = (tally.ok_announces + tally.failures).max(1);
            println!(
                "  new peers        {} ({:.1}% of announces; the rest re-announced)",
                tally.new_peers,
                tally.new_peers as f64 * 100.0 / sent as f64
            );
        }
        println!("  throughput       {rps:.0} responses/s");
        println!(
            "  latency ms       p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.90),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
            percentile(&latencies, 1.0)
        );
        if let (Some(cpu), Some(rss)) = (cpu, rss) {
            println!(
                "  server CPU       {cpu:.2} s ({:.0} responses per CPU-second)",
                per_cpu.unwrap_or(0.0)
            );
            println!(
                "  server RSS       {:.1} MiB",
                rss as f64 / (1 << 20) as f64
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first pass announces every peer once, in order; after it, a
    /// peer's events follow its state (never `stopped` or a re-announce from
    /// a peer not held, never `started` from one held), and about one
    /// announce in thirteen is a peer starting again.
    #[test]
    fn population_follows_each_peers_lifecycle() {
        let zipf = Zipf::new(100, 1.0);
        let population = Population::new(1000, &zipf, 7);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut held = vec![false; 1000];
        let mut seeders = 0;
        for k in 0..1000 {
            let (peer, event, seeder) = population.next(0.25, &mut rng);
            assert_eq!((peer, event), (k, 2));
            held[peer as usize] = true;
            seeders += usize::from(seeder);
        }
        assert!((180..320).contains(&seeders), "{seeders} seeders of 1000");
        let (mut started, draws) = (0, 100_000);
        for _ in 0..draws {
            let (peer, event, seeder) = population.next(0.25, &mut rng);
            let was = std::mem::replace(&mut held[peer as usize], event != 3);
            assert_eq!(event == 2, !was, "peer {peer}: event {event}, held {was}");
            if event == 1 {
                assert!(seeder, "a completed peer is a seeder");
            }
            started += usize::from(event == 2);
        }
        let share = started as f64 / f64::from(draws);
        assert!(
            (0.06..0.09).contains(&share),
            "{share} of announces started"
        );
    }

    /// Each peer of a population is a distinct (address, port, peer id).
    #[test]
    fn population_peers_are_distinct() {
        let peers: std::collections::HashSet<_> = (0..70_000).map(population_peer).collect();
        assert_eq!(peers.len(), 70_000);
        let (id, port, ip) = population_peer(65_537);
        assert_eq!(&id, b"-SL0001-000000065537");
        assert_eq!((port, ip), (1024 + 1537, [10, 1, 0, 1]));
    }
}
