//! What the tracker counts about itself, and the Prometheus text rendering.
//!
//! [`Metrics`] owns the event counters (announces and scrapes by result and
//! address family, failures by reason, the request latency histogram, peers
//! expired, state-file snapshots) and a short history of request totals for
//! the stats page's chart. Counters live in cache-line-sized slots, one per
//! thread (modulo [`SLOTS`]), so the hot path never contends on a line with
//! another core; reading sums the slots. Values owned elsewhere (torrents,
//! peers, connections) come in as [`Gauges`] when rendering. This module
//! knows nothing of HTTP or of how peers are stored.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Counter slots; threads beyond this share slots (still correct, atomics).
const SLOTS: usize = 16;

/// Upper bounds of the latency histogram's buckets, in seconds. Handling an
/// announce takes about a microsecond, so the buckets start low.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.1,
];

/// Seconds between samples of the request totals (the stats page's chart).
pub const SAMPLE_EVERY: u64 = 5;
/// Samples kept: ten minutes.
const HISTORY: usize = 120;

/// The address family a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: std::net::IpAddr) -> Self {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

macro_rules! failures {
    ($($variant:ident => $label:literal,)*) => {
        /// Why a request was refused, as a bounded set of metric labels.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Failure {
            $($variant,)*
        }

        impl Failure {
            pub const ALL: &'static [Failure] = &[$(Failure::$variant,)*];

            pub fn label(self) -> &'static str {
                match self {
                    $(Failure::$variant => $label,)*
                }
            }
        }
    };
}

failures! {
    MissingParameter => "missing_parameter",
    DuplicateParameter => "duplicate_parameter",
    BadEscape => "bad_escape",
    WrongLength => "wrong_length",
    NotANumber => "not_a_number",
    BadPort => "bad_port",
    BadEvent => "bad_event",
    BadCompact => "bad_compact",
    TooLong => "too_long",
    BadIp => "bad_ip",
    TooManyParameters => "too_many_parameters",
    FullScrapeDisabled => "full_scrape_disabled",
    FullScrapeLimited => "full_scrape_rate_limited",
    TorrentNotAllowed => "torrent_not_allowed",
    TrackerFull => "tracker_full",
    SwarmFull => "swarm_full",
    BadPasskey => "bad_passkey",
    NoPasskey => "no_passkey",
    ProxyHeader => "proxy_header",
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    Forbidden => "forbidden",
    RequestTooLarge => "request_too_large",
    StoreUnavailable => "store_unavailable",
    AddressFull => "address_full",
}

/// How a request to the shared store failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within the deadline.
    Timeout,
    /// Not connected, the connection broke, or no node holds the slot.
    Connection,
    /// Redis answered with an error.
    Redis,
    /// Too many requests already waiting: refused without asking.
    Busy,
}

impl StoreError {
    pub const ALL: [StoreError; 4] = [
        StoreError::Timeout,
        StoreError::Connection,
        StoreError::Redis,
        StoreError::Busy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Connection => "connection",
            StoreError::Redis => "redis",
            StoreError::Busy => "busy",
        }
    }
}

/// How an announce reached the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRoute {
    /// Straight to its swarm's master, from the node's own slot map.
    Direct,
    /// Through the Redis client's own routing (one server, a multi-thread
    /// runtime, or a slot the map does not know at the moment).
    Client,
    /// Straight to a master first, which failed or redirected it (the slot
    /// moved, a failover, a dropped connection), then through the client.
    Rerouted,
}

impl StoreRoute {
    pub const ALL: [StoreRoute; 3] = [StoreRoute::Direct, StoreRoute::Client, StoreRoute::Rerouted];

    pub fn label(self) -> &'static str {
        match self {
            StoreRoute::Direct => "direct",
            StoreRoute::Client => "client",
            StoreRoute::Rerouted => "rerouted",
        }
    }
}

/// Upper bounds of the shared store's latency buckets, in seconds: a round
/// trip to Redis takes tens to hundreds of microseconds.
pub const STORE_BUCKETS: [f64; 10] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// The shared store's figures (all zero with the memory store).
#[derive(Default)]
struct StoreRecord {
    backend: std::sync::OnceLock<&'static str>,
    latency: [AtomicU64; STORE_BUCKETS.len() + 1],
    latency_nanos: AtomicU64,
    errors: [AtomicU64; StoreError::ALL.len()],
    routes: [AtomicU64; StoreRoute::ALL.len()],
    in_flight: AtomicU64,
}

/// Counts a request to the shared store as in flight until dropped.
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which tracker request a count is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Announce,
    Scrape,
    FullScrape,
    /// A UDP connect (BEP 15).
    Connect,
}

impl Request {
    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            Request::Announce => "announce",
            Request::Scrape => "scrape",
            Request::FullScrape => "full_scrape",
            Request::Connect => "connect",
        }
    }
}

/// Which front end answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Udp,
}

/// `[transport][request][failed][family]`.
type RequestCounts<T> = [[[[T; 2]; 2]; 4]; 2];

macro_rules! udp_problems {
    ($($variant:ident => $label:literal,)*) => {
        /// A UDP datagram that got no regular answer, by cause: a bounded
        /// set of metric labels.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum UdpProblem {
            $($variant,)*
        }

        impl UdpProblem {
            pub const ALL: &'static [UdpProblem] = &[$(UdpProblem::$variant,)*];

            pub fn label(self) -> &'static str {
                match self {
                    $(UdpProblem::$variant => $label,)*
                }
            }
        }
    };
}

udp_problems! {
    TooShort => "too_short",
    TooLong => "too_long",
    UnknownAction => "unknown_action",
    BadProtocolId => "bad_protocol_id",
    BadEvent => "bad_event",
    BadPort => "bad_port",
    BadOptions => "bad_options",
    NoInfoHashes => "no_info_hashes",
    RaggedScrape => "ragged_scrape",
    BadConnectionId => "bad_connection_id",
    WrongPath => "wrong_path",
}

/// One thread's counters, alone on its cache lines.
#[repr(align(128))]
struct Slot {
    requests: RequestCounts<AtomicU64>,
    /// By [`UdpProblem`]: `[problem][answered]`.
    udp_problems: Vec<[AtomicU64; 2]>,
    failures: Vec<AtomicU64>,
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_nanos: AtomicU64,
}

impl Slot {
    fn new() -> Self {
        Self {
            requests: Default::default(),
            udp_problems: UdpProblem::ALL.iter().map(|_| Default::default()).collect(),
            failures: Failure::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            latency: Default::default(),
            latency_nanos: AtomicU64::new(0),
        }
    }
}

fn slot_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    INDEX.with(|i| *i)
}

/// What is known about the running process, for `shoal_build_info`.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: &'static str,
    /// `--reactor` name, e.g. `per-core`.
    pub reactor: &'static str,
    /// The long description, e.g. `per-core (epoll), 2 workers`.
    pub reactor_detail: String,
    pub workers: usize,
}

/// Request totals at one moment, for rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    pub announces: u64,
    pub scrapes: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct SnapshotRecord {
    last: Option<(Instant, Duration)>,
    failures: u64,
}

/// The tracker's own counters.
pub struct Metrics {
    slots: Box<[Slot]>,
    started: Instant,
    build: BuildInfo,
    peers_expired: AtomicU64,
    snapshots: Mutex<SnapshotRecord>,
    history: Mutex<VecDeque<Sample>>,
    store: StoreRecord,
}

/// Values owned by other parts, read when rendering.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub torrents: u64,
    /// `[ipv4, ipv6]`.
    pub seeders: [u64; 2],
    pub leechers: [u64; 2],
    /// Completed downloads of the torrents that have peers.
    pub downloads: u64,
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
}

/// Summed counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub requests: RequestCounts<u64>,
    /// By [`UdpProblem`]: `[problem][answered]`.
    pub udp_problems: Vec<[u64; 2]>,
    pub failures: Vec<u64>,
    pub latency: Vec<u64>,
    pub latency_nanos: u64,
}

impl Totals {
    /// Requests of one kind, any transport, result and family.
    pub fn of(&self, request: Request) -> u64 {
        self.requests
            .iter()
            .map(|t| t[request.index()].iter().flatten().sum::<u64>())
            .sum()
    }

    /// Requests of one kind over one transport, any result and family.
    pub fn of_transport(&self, transport: Transport, request: Request) -> u64 {
        self.requests[transport as usize][request.index()]
            .iter()
            .flatten()
            .sum()
    }
}

impl Metrics {
    pub fn new(build: BuildInfo) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
            started: Instant::now(),
            build,
            peers_expired: AtomicU64::new(0),
            snapshots: Mutex::new(SnapshotRecord::default()),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            store: StoreRecord::default(),
        }
    }

    /// Names the shared store in use; its series are rendered from then on.
    pub fn set_store_backend(&self, backend: &'static str) {
        let _ = self.store.backend.set(backend);
    }

    /// Marks one request to the shared store in flight until the guard drops.
    pub fn store_begin(&self) -> InFlight<'_> {
        self.store.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.store.in_flight)
    }

    /// Records a shared-store request answered in `took`.
    pub fn store_latency(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = STORE_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(STORE_BUCKETS.len());
        self.store.latency[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.store.latency_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts a shared-store request that failed.
    pub fn store_error(&self, error: StoreError) {
        self.store.errors[error as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an announce sent to the shared store by `route`.
    pub fn store_route(&self, route: StoreRoute) {
        self.store.routes[route as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Shared-store requests failed with `error` so far.
    pub fn store_errors(&self, error: StoreError) -> u64 {
        self.store.errors[error as usize].load(Ordering::Relaxed)
    }

    pub fn build(&self) -> &BuildInfo {
        &self.build
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn slot(&self) -> &Slot {
        &self.slots[slot_index()]
    }

    /// Counts one answered tracker request; `failure` says why it was
    /// refused, if it was.
    pub fn request(
        &self,
        transport: Transport,
        request: Request,
        family: Family,
        failure: Option<Failure>,
    ) {
        let slot = self.slot();
        let family = usize::from(family == Family::V6);
        slot.requests[transport as usize][request.index()][usize::from(failure.is_some())][family]
            .fetch_add(1, Ordering::Relaxed);
        if let Some(failure) = failure {
            self.failure(failure);
        }
    }

    /// Counts a refusal (including those outside announce and scrape, such
    /// as an unknown path).
    pub fn failure(&self, failure: Failure) {
        self.slot().failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a UDP datagram with `problem`, and whether it was answered
    /// (with a BEP 15 error) or dropped.
    pub fn udp_problem(&self, problem: UdpProblem, answered: bool) {
        self.slot().udp_problems[problem as usize][usize::from(answered)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a request took to handle.
    pub fn latency(&self, took: Duration) {
        let slot = self.slot();
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        slot.latency[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        slot.latency_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn peers_expired(&self, peers: usize) {
        self.peers_expired
            .fetch_add(peers as u64, Ordering::Relaxed);
    }

    /// Records a state-file snapshot that took `took`.
    pub fn snapshot_written(&self, took: Duration) {
        if let Ok(mut record) = self.snapshots.lock() {
            record.last = Some((Instant::now(), took));
        }
    }

    pub fn snapshot_failed(&self) {
        if let Ok(mut record) = self.snapshots.lock() {
            record.failures += 1;
        }
    }

    /// Seconds since the last snapshot and how long it took, if any.
    pub fn last_snapshot(&self) -> Option<(Duration, Duration)> {
        let record = *self.snapshots.lock().ok()?;
        record.last.map(|(at, took)| (at.elapsed(), took))
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            failures: vec![0; Failure::ALL.len()],
            udp_problems: vec![[0; 2]; UdpProblem::ALL.len()],
            latency: vec![0; LATENCY_BUCKETS.len() + 1],
            ..Totals::default()
        };
        for slot in &*self.slots {
            for (t, transport) in slot.requests.iter().enumerate() {
                for (r, request) in transport.iter().enumerate() {
                    for (f, failed) in request.iter().enumerate() {
                        for (a, count) in failed.iter().enumerate() {
                            totals.requests[t][r][f][a] += count.load(Ordering::Relaxed);
                        }
                    }
                }
            }
            for (total, counts) in totals.udp_problems.iter_mut().zip(&slot.udp_problems) {
                for (t, count) in total.iter_mut().zip(counts) {
                    *t += count.load(Ordering::Relaxed);
                }
            }
            for (total, count) in totals.failures.iter_mut().zip(&slot.failures) {
                *total += count.load(Ordering::Relaxed);
            }
            for (total, count) in totals.latency.iter_mut().zip(&slot.latency) {
                *total += count.load(Ordering::Relaxed);
            }
            totals.latency_nanos += slot.latency_nanos.load(Ordering::Relaxed);
        }
        totals
    }

    /// Appends the current totals to the history (called every
    /// [`SAMPLE_EVERY`] seconds by housekeeping).
    pub fn sample(&self) {
        let totals = self.totals();
        let sample = Sample {
            at: unix_now(),
            announces: totals.of(Request::Announce),
            scrapes: totals.of(Request::Scrape) + totals.of(Request::FullScrape),
        };
        if let Ok(mut history) = self.history.lock() {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(sample);
        }
    }

    /// The samples of the last minutes, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.history
            .lock()
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self, gauges: &Gauges) -> String {
        let totals = self.totals();
        let mut out = String::with_capacity(8192);
        let build = &self.build;
        family(
            &mut out,
            "shoal_build_info",
            "gauge",
            "Version and running reactor; always 1.",
        );
        let _ = writeln!(
            out,
            "shoal_build_info{{version=\"{}\",reactor=\"{}\",workers=\"{}\"}} 1",
            build.version, build.reactor, build.workers
        );
        family(
            &mut out,
            "shoal_uptime_seconds",
            "gauge",
            "Seconds since the tracker started.",
        );
        let _ = writeln!(
            out,
            "shoal_uptime_seconds {:.3}",
            self.uptime().as_secs_f64()
        );
        for (request, name, help) in [
            (
                Request::Announce,
                "shoal_announces_total",
                "Announces answered, by result and client address family.",
            ),
            (
                Request::Scrape,
                "shoal_scrapes_total",
                "Scrapes (with info_hash) answered, by result and client address family.",
            ),
            (
                Request::FullScrape,
                "shoal_full_scrapes_total",
                "Full scrapes (no info_hash) answered, by result and client address family.",
            ),
        ] {
            family(&mut out, name, "counter", help);
            for (f, result) in ["ok", "failure"].into_iter().enumerate() {
                for (a, fam) in [Family::V4, Family::V6].into_iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}{{result=\"{result}\",family=\"{}\"}} {}",
                        fam.label(),
                        totals.requests[Transport::Http as usize][request.index()][f][a]
                    );
                }
            }
        }
        family(
            &mut out,
            "shoal_udp_requests_total",
            "counter",
            "UDP (BEP 15) requests answered, by action, result and client address family.",
        );
        for request in [Request::Connect, Request::Announce, Request::Scrape] {
            for (f, result) in ["ok", "failure"].into_iter().enumerate() {
                for (a, fam) in [Family::V4, Family::V6].into_iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "shoal_udp_requests_total{{action=\"{}\",result=\"{result}\",family=\"{}\"}} {}",
                        request.label(),
                        fam.label(),
                        totals.requests[Transport::Udp as usize][request.index()][f][a]
                    );
                }
            }
        }
        family(
            &mut out,
            "shoal_udp_bad_datagrams_total",
            "counter",
            "UDP datagrams refused, by reason, and whether a BEP 15 error was sent or the \
             datagram dropped (no answer larger than the request goes to an unverified source).",
        );
        for (problem, counts) in UdpProblem::ALL.iter().zip(&totals.udp_problems) {
            for (answered, label) in [(1, "error"), (0, "dropped")] {
                let _ = writeln!(
                    out,
                    "shoal_udp_bad_datagrams_total{{reason=\"{}\",outcome=\"{label}\"}} {}",
                    problem.label(),
                    counts[answered]
                );
            }
        }
        family(
            &mut out,
            "shoal_failures_total",
            "counter",
            "Requests refused, by reason (failure reasons and HTTP errors).",
        );
        for (failure, count) in Failure::ALL.iter().zip(&totals.failures) {
            let _ = writeln!(
                out,
                "shoal_failures_total{{reason=\"{}\"}} {count}",
                failure.label()
            );
        }
        for (name, kind, help, value) in [
            (
                "shoal_connections_open",
                "gauge",
                "Connections open now.",
                gauges.connections_open,
            ),
            (
                "shoal_connections_accepted_total",
                "counter",
                "Connections accepted and served.",
                gauges.connections_accepted,
            ),
            (
                "shoal_connections_refused_total",
                "counter",
                "Connections closed on accept because max_connections was reached.",
                gauges.connections_refused,
            ),
            (
                "shoal_torrents",
                "gauge",
                "Torrents with at least one peer.",
                gauges.torrents,
            ),
            (
                "shoal_downloads",
                "gauge",
                "Completed downloads recorded for the torrents that have peers.",
                gauges.downloads,
            ),
            (
                "shoal_peers_expired_total",
                "counter",
                "Peers forgotten because they stopped announcing.",
                self.peers_expired.load(Ordering::Relaxed),
            ),
        ] {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        for (name, help, values) in [
            (
                "shoal_seeders",
                "Seeders (peers with nothing left), by address family.",
                gauges.seeders,
            ),
            (
                "shoal_leechers",
                "Leechers, by address family.",
                gauges.leechers,
            ),
        ] {
            family(&mut out, name, "gauge", help);
            for (fam, value) in [Family::V4, Family::V6].into_iter().zip(values) {
                let _ = writeln!(out, "{name}{{family=\"{}\"}} {value}", fam.label());
            }
        }
        let name = "shoal_request_duration_seconds";
        family(
            &mut out,
            name,
            "histogram",
            "Time to handle a request, from its parsed head to its response.",
        );
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&totals.latency) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += totals.latency.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {:.9}", totals.latency_nanos as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
        let snapshot = self.snapshots.lock().map(|r| *r).unwrap_or_default();
        if let Some((at, took)) = snapshot.last {
            family(
                &mut out,
                "shoal_snapshot_age_seconds",
                "gauge",
                "Seconds since the state file was last written.",
            );
            let _ = writeln!(
                out,
                "shoal_snapshot_age_seconds {:.3}",
                at.elapsed().as_secs_f64()
            );
            family(
                &mut out,
                "shoal_snapshot_duration_seconds",
                "gauge",
                "How long the last state file snapshot took.",
            );
            let _ = writeln!(
                out,
                "shoal_snapshot_duration_seconds {:.6}",
                took.as_secs_f64()
            );
        }
        family(
            &mut out,
            "shoal_snapshot_failures_total",
            "counter",
            "State file snapshots that could not be written.",
        );
        let _ = writeln!(out, "shoal_snapshot_failures_total {}", snapshot.failures);
        self.render_store(&mut out);
        out
    }

    /// The shared store's series, when there is one.
    fn render_store(&self, out: &mut String) {
        let Some(backend) = self.store.backend.get() else {
            return;
        };
        let store = &self.store;
        let name = "shoal_store_request_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "Round trip of the requests the shared store answered, queue included.",
        );
        let mut cumulative = 0;
        for (bound, count) in STORE_BUCKETS.iter().zip(&store.latency) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{backend=\"{backend}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += store.latency[STORE_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{backend=\"{backend}\",le=\"+Inf\"}} {cumulative}"
        );
        let nanos = store.latency_nanos.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_sum{{backend=\"{backend}\"}} {:.9}",
            nanos as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{backend=\"{backend}\"}} {cumulative}");
        let name = "shoal_store_errors_total";
        family(
            out,
            name,
            "counter",
            "Shared-store requests that failed (the client got a failure reason), by kind.",
        );
        for kind in StoreError::ALL {
            let value = store.errors[kind as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}{{backend=\"{backend}\",kind=\"{}\"}} {value}",
                kind.label()
            );
        }
        let name = "shoal_store_routes_total";
        family(
            out,
            name,
            "counter",
            "Announces sent to the shared store: straight to the swarm's master (direct), \
             through the Redis client's routing (client), or straight first and then, \
             redirected or failed, through the client (rerouted).",
        );
        for route in StoreRoute::ALL {
            let value = store.routes[route as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}{{backend=\"{backend}\",route=\"{}\"}} {value}",
                route.label()
            );
        }
        let name = "shoal_store_in_flight";
        family(
            out,
            name,
            "gauge",
            "Shared-store requests waiting for an answer.",
        );
        let value = store.in_flight.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}{{backend=\"{backend}\"}} {value}");
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(BuildInfo {
            version: "1.2.3",
            reactor: "per-core",
            reactor_detail: "per-core (epoll), 2 workers".into(),
            workers: 2,
        })
    }

    /// The value of the one line that starts with `series ` in `text`.
    fn value(text: &str, series: &str) -> f64 {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{series} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{series} in\n{text}");
        lines[0][series.len() + 1..].parse().unwrap()
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let metrics = std::sync::Arc::new(metrics());
        let threads: Vec<_> = (0..40)
            .map(|i| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let family = if i % 2 == 0 { Family::V4 } else { Family::V6 };
                        metrics.request(Transport::Http, Request::Announce, family, None);
                    }
                    metrics.request(
                        Transport::Http,
                        Request::Scrape,
                        Family::V4,
                        Some(Failure::BadEscape),
                    );
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = metrics.render_prometheus(&Gauges::default());
        let ok4 = r#"shoal_announces_total{result="ok",family="ipv4"}"#;
        let ok6 = r#"shoal_announces_total{result="ok",family="ipv6"}"#;
        assert_eq!(value(&text, ok4), 20_000.0);
        assert_eq!(value(&text, ok6), 20_000.0);
        let failed = r#"shoal_scrapes_total{result="failure",family="ipv4"}"#;
        assert_eq!(value(&text, failed), 40.0);
        assert_eq!(
            value(&text, r#"shoal_failures_total{reason="bad_escape"}"#),
            40.0
        );
        assert_eq!(
            value(&text, r#"shoal_failures_total{reason="not_found"}"#),
            0.0
        );
    }

    #[test]
    fn latency_lands_in_cumulative_buckets() {
        let metrics = metrics();
        metrics.latency(Duration::from_micros(3));
        metrics.latency(Duration::from_micros(700));
        metrics.latency(Duration::from_secs(1));
        let text = metrics.render_prometheus(&Gauges::default());
        let bucket = |le: &str| {
            value(
                &text,
                &format!("shoal_request_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.000005"), 1.0);
        assert_eq!(bucket("0.0005"), 1.0);
        assert_eq!(bucket("0.001"), 2.0);
        assert_eq!(bucket("0.1"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
        assert_eq!(value(&text, "shoal_request_duration_seconds_count"), 3.0);
        let sum = value(&text, "shoal_request_duration_seconds_sum");
        assert!((sum - 1.000703).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn every_family_has_help_and_type_and_build_info_names_the_reactor() {
        let metrics = metrics();
        metrics.snapshot_written(Duration::from_millis(12));
        let text = metrics.render_prometheus(&Gauges {
            seeders: [3, 1],
            ..Gauges::default()
        });
        assert!(text.contains(
            "shoal_build_info{version=\"1.2.3\",reactor=\"per-core\",workers=\"2\"} 1\n"
        ));
        assert_eq!(value(&text, r#"shoal_seeders{family="ipv6"}"#), 1.0);
        assert_eq!(value(&text, "shoal_snapshot_duration_seconds"), 0.012);
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                    .unwrap_or(name);
                assert!(typed.contains(base), "{line} has no # TYPE before it");
            }
        }
    }

    #[test]
    fn history_keeps_the_last_ten_minutes() {
        let metrics = metrics();
        for _ in 0..HISTORY + 5 {
            metrics.request(Transport::Http, Request::Announce, Family::V4, None);
            metrics.sample();
        }
        let history = metrics.history();
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history.last().unwrap().announces, (HISTORY + 5) as u64);
        assert_eq!(history[0].announces, 6);
    }
}
