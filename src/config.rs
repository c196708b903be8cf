//! Configuration: defaults, the TOML file, `SHOAL_*` environment variables
//! and the command line, merged in that order (later wins).
//!
//! [`Config`] is the one place each default is named. `--print-config` prints
//! it as commented TOML that `--config` reads back unchanged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Everything an operator can set. Each field is also a TOML key, a CLI
/// option (`--key-with-dashes`) and an environment variable (`SHOAL_KEY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to accept HTTP on.
    pub listen: Vec<SocketAddr>,
    /// Seconds clients are asked to wait between announces.
    pub interval: u32,
    /// Seconds clients must wait at least between announces (capped at
    /// `interval`).
    pub min_interval: u32,
    /// Seconds after its last announce that a peer is forgotten.
    /// Unset: interval x 1.5.
    pub peer_ttl: Option<u32>,
    /// Peers sent when a client does not say how many it wants.
    pub default_numwant: u32,
    /// Most peers sent in one response, whatever the client asks.
    pub max_numwant: u32,
    /// Most info hashes answered in one scrape.
    pub max_scrape_hashes: usize,
    /// Honour the `ip`/`ipv4`/`ipv6` parameters.
    pub allow_ip_param: bool,
    /// Torrents with peers held at most; announces for new ones are refused.
    pub max_torrents: usize,
    /// Peers per torrent at most; new peers beyond it are refused.
    pub max_peers_per_torrent: usize,
    /// Open connections at most; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes, at least 8192.
    pub max_request_bytes: usize,
    /// Seconds a request may take from its first byte to its response (a
    /// slow request head is cut off).
    pub header_timeout: u64,
    /// Seconds an idle keep-alive connection stays open.
    pub idle_timeout: u64,
    /// Sent as `tracker id` in announce responses when set.
    pub tracker_id: Option<String>,
    /// Path of the announce route.
    pub announce_path: String,
    /// Path of the scrape route.
    pub scrape_path: String,
    /// Where `GET /` redirects, if anywhere.
    pub root_redirect: Option<String>,
    /// Networks (CIDR) of reverse proxies whose client-address header is
    /// believed; empty: the socket address is always the client's.
    pub trusted_proxies: Vec<String>,
    /// The header trusted proxies report the client in: X-Forwarded-For,
    /// X-Real-IP or Forwarded.
    pub client_ip_header: String,
    /// Private mode: file of passkeys (one per line, optional expiry in Unix
    /// seconds); clients announce to /announce/<passkey>. Unset: public.
    pub passkeys: Option<std::path::PathBuf>,
    /// File of hex info hashes for access control; unset: every torrent.
    pub access_list: Option<std::path::PathBuf>,
    /// `allow`: only listed torrents; `deny`: all but listed torrents.
    pub access_mode: crate::access::Mode,
    /// File the snatch counts are kept in across restarts; unset: none.
    pub state_file: Option<std::path::PathBuf>,
    /// Seconds between state file snapshots (one is also written at shutdown).
    pub snapshot_interval: u64,
    /// Start with empty counts when the state file is corrupt, instead of
    /// refusing to start.
    pub ignore_bad_state: bool,
    /// The socket I/O runtime: tokio, per-core, io-uring or auto.
    pub reactor: String,
    /// Worker threads of the reactor. Unset: one per CPU core.
    pub workers: Option<usize>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    pub log_level: String,
    /// Log line format: `human` or `json` (one JSON object per line).
    pub log_format: String,
    /// Networks (CIDR) that may read /metrics, /stats and /stats.json.
    pub stats_allow: Vec<String>,
    /// Addresses that serve only /metrics, /stats and /stats.json; empty:
    /// the tracker's listeners serve them too.
    pub metrics_listen: Vec<SocketAddr>,
    /// Answer a scrape without info_hash with every torrent.
    pub full_scrape: bool,
    /// Seconds between two full scrapes from one client address (0: no limit).
    pub full_scrape_interval: u32,
    /// Addresses to accept HTTPS on (needs tls_cert and tls_key).
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for the HTTPS listeners.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the HTTPS listeners.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![
                SocketAddr::from(([0, 0, 0, 0], 6969)),
                SocketAddr::from(([0u16; 8], 6969)),
            ],
            interval: 1800,
            min_interval: 900,
            peer_ttl: None,
            default_numwant: 50,
            max_numwant: 200,
            max_scrape_hashes: 100,
            allow_ip_param: false,
            max_torrents: 10_000_000,
            max_peers_per_torrent: 1_000_000,
            max_connections: 50_000,
            max_request_bytes: 8192,
            header_timeout: 10,
            idle_timeout: 30,
            tracker_id: None,
            announce_path: "/announce".into(),
            scrape_path: "/scrape".into(),
            root_redirect: None,
            trusted_proxies: Vec::new(),
            client_ip_header: "X-Forwarded-For".into(),
            passkeys: None,
            access_list: None,
            access_mode: crate::access::Mode::Allow,
            state_file: None,
            snapshot_interval: 300,
            ignore_bad_state: false,
            reactor: crate::reactor::Kind::DEFAULT.name().into(),
            workers: None,
            log_level: "info".into(),
            log_format: "human".into(),
            stats_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            metrics_listen: Vec::new(),
            full_scrape: false,
            full_scrape_interval: 60,
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Comment lines for `--print-config`, one entry per key, in print order.
/// A test checks that this list and [`Config`]'s keys are the same set.
const KEY_DOCS: &[(&str, &str, Option<&str>)] = &[
    (
        "listen",
        "Addresses to accept HTTP on; IPv6 listeners are IPv6-only.",
        None,
    ),
    (
        "interval",
        "Seconds clients are asked to wait between announces (a little random\n\
         jitter is added so that clients drift apart).",
        None,
    ),
    (
        "min_interval",
        "Seconds clients must wait at least between announces (capped at interval).",
        None,
    ),
    (
        "peer_ttl",
        "Seconds after its last announce that a peer is forgotten.\n\
         Default: interval x 1.5.",
        Some("2700"),
    ),
    (
        "default_numwant",
        "Peers sent when a client gives no usable numwant.",
        None,
    ),
    (
        "max_numwant",
        "Most peers sent in one response, whatever numwant asks.",
        None,
    ),
    (
        "max_scrape_hashes",
        "Most info hashes answered in one scrape; the rest get a warning.",
        None,
    ),
    (
        "allow_ip_param",
        "Honour the ip/ipv4/ipv6 announce parameters. Off by default: they let\n\
         anyone point a swarm at a third party (BEP 7).",
        None,
    ),
    (
        "max_torrents",
        "Torrents with peers held at most. An announce that would create one more\n\
         gets the failure reason \"tracker is full\"; torrents already held go on.",
        None,
    ),
    (
        "max_peers_per_torrent",
        "Peers one torrent holds at most. A new peer beyond it gets the failure\n\
         reason \"this torrent's swarm is full\"; peers already in keep announcing.",
        None,
    ),
    (
        "max_connections",
        "Open connections at most; a connection beyond it is closed as soon as it\n\
         is accepted, without touching the open ones.",
        None,
    ),
    (
        "max_request_bytes",
        "Largest request head (request line and headers), in bytes; a larger one\n\
         gets 431 and the connection is closed. At least 8192.",
        None,
    ),
    (
        "header_timeout",
        "Seconds a request may take from its first byte to its response: a client\n\
         that sends its request head slowly (slowloris) is cut off.",
        None,
    ),
    (
        "idle_timeout",
        "Seconds a keep-alive connection may stay silent after a response (or after\n\
         connecting) before it is closed.",
        None,
    ),
    (
        "tracker_id",
        "Sent as `tracker id` in every announce response when set.",
        Some("\"shoal-1\""),
    ),
    (
        "trusted_proxies",
        "Networks (CIDR) of reverse proxies in front of shoal. Only on connections\n\
         from these is client_ip_header believed, and then its rightmost address\n\
         outside these networks is the client. Empty: the socket address is used.",
        None,
    ),
    (
        "client_ip_header",
        "The header trusted proxies report the client in: X-Forwarded-For,\n\
         X-Real-IP or Forwarded (RFC 7239).",
        None,
    ),
    (
        "passkeys",
        "Private mode (BEP 27): a file of passkeys, one per line, each optionally\n\
         followed by an expiry in Unix seconds. Clients announce to\n\
         /announce/<passkey> and scrape /scrape/<passkey>; the file is re-read on\n\
         SIGHUP. Unset: a public tracker.",
        Some("\"/etc/shoal/passkeys.txt\""),
    ),
    (
        "access_list",
        "File of info hashes (40 hex digits a line, # comments) for access control;\n\
         re-read on SIGHUP, when peers of torrents no longer allowed are dropped.\n\
         Unset: every torrent is served.",
        Some("\"/etc/shoal/torrents.txt\""),
    ),
    (
        "access_mode",
        "allow: serve only the listed torrents; deny: serve all but the listed ones.",
        None,
    ),
    (
        "state_file",
        "File the per-torrent snatch counts (downloaded) are kept in across restarts:\n\
         written atomically every snapshot_interval seconds and at shutdown, read at\n\
         start. Unset: counts live in memory only.",
        Some("\"/var/lib/shoal/state.bin\""),
    ),
    (
        "snapshot_interval",
        "Seconds between state file snapshots.",
        None,
    ),
    (
        "ignore_bad_state",
        "Start with empty counts when the state file is corrupt, instead of refusing\n\
         to start (the bad file is kept as STATE_FILE.bad).",
        None,
    ),
    (
        "reactor",
        "The socket I/O runtime: tokio (multi-thread, work stealing), per-core\n\
         (a single-threaded runtime per worker), io-uring (Linux), or auto (the\n\
         best usable one). `shoal --list-reactors` says which can run here.",
        None,
    ),
    (
        "announce_path",
        "Path of the announce route (e.g. /announce.php for clients of an old\n\
         tracker); in private mode clients add /<passkey>.",
        None,
    ),
    (
        "scrape_path",
        "Path of the scrape route (BEP 48 clients derive it from the announce URL by\n\
         replacing the last \"announce\" with \"scrape\").",
        None,
    ),
    (
        "root_redirect",
        "Where GET / redirects (302), e.g. the tracker's web page. Unset: 404.",
        Some("\"https://tracker.example/\""),
    ),
    (
        "stats_allow",
        "Networks (CIDR) whose clients may read /metrics (Prometheus), /stats.json\n\
         and the /stats page; others get 403. Behind trusted_proxies, the client\n\
         address is the one the proxy reports. [\"0.0.0.0/0\", \"::/0\"] opens them to all.",
        None,
    ),
    (
        "metrics_listen",
        "Addresses that serve only /metrics, /stats and /stats.json (e.g. an\n\
         internal interface). Empty: the tracker's own listeners serve them; set:\n\
         only these do.",
        Some("[\"127.0.0.1:9100\"]"),
    ),
    (
        "full_scrape",
        "Answer a scrape without info_hash with the counts of every torrent with\n\
         peers (streamed, gzip-compressed when the client accepts gzip). Off: such\n\
         a scrape gets a failure reason.",
        None,
    ),
    (
        "full_scrape_interval",
        "Seconds a client address (an IPv6 client: its /64) must wait between two\n\
         full scrapes; sooner ones get 429 and a failure reason. 0: no limit.",
        None,
    ),
    (
        "tls_listen",
        "Addresses to accept HTTPS on, with tls_cert and tls_key. Both files are\n\
         re-read on SIGHUP; new connections then get the new certificate.",
        Some("[\"0.0.0.0:443\", \"[::]:443\"]"),
    ),
    (
        "tls_cert",
        "PEM file with the certificate chain for tls_listen, leaf first.",
        Some("\"/etc/shoal/cert.pem\""),
    ),
    (
        "tls_key",
        "PEM file with the private key (PKCS#8, PKCS#1 or SEC1) for tls_listen.",
        Some("\"/etc/shoal/key.pem\""),
    ),
    (
        "workers",
        "Worker threads of the reactor. Default: one per CPU core.",
        Some("2"),
    ),
    (
        "log_level",
        "Log filter: error, warn, info, debug, trace, or a tracing directive\n\
         such as \"shoal=debug\".",
        None,
    ),
    (
        "log_format",
        "Log line format: human, or json (one object per line, for log shippers).\n\
         Logs go to standard error: one line per start, listener, reload, stop and\n\
         error; requests are logged only at debug level.",
        None,
    ),
];

impl Config {
    /// Reads a TOML file; unknown keys are errors, missing keys take defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| {
            format!(
                "invalid config file {} (see `shoal --print-config` for every key)",
                path.display()
            )
        })
    }

    /// Seconds a silent peer is kept.
    pub fn effective_peer_ttl(&self) -> u32 {
        self.peer_ttl
            .unwrap_or_else(|| self.interval.saturating_add(self.interval / 2))
    }

    /// The `min interval` sent: never more than `interval`.
    pub fn effective_min_interval(&self) -> u32 {
        self.min_interval.min(self.interval)
    }

    /// Worker threads to run.
    pub fn effective_workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// The reactor the operator asked for (not yet checked for usability).
    pub fn reactor_choice(&self) -> anyhow::Result<crate::reactor::Choice> {
        self.reactor.parse().map_err(anyhow::Error::msg)
    }

    /// The reverse-proxy policy, if any proxies are trusted.
    pub fn proxy(&self) -> anyhow::Result<Option<crate::http::client_addr::ProxyConfig>> {
        if self.trusted_proxies.is_empty() {
            return Ok(None);
        }
        let trusted = self
            .trusted_proxies
            .iter()
            .map(|net| net.parse())
            .collect::<Result<_, String>>()
            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
        let header = self.client_ip_header.parse().map_err(anyhow::Error::msg)?;
        Ok(Some(crate::http::client_addr::ProxyConfig {
            trusted,
            header,
        }))
    }

    /// Refuses settings that cannot work, saying which and why.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.listen.is_empty(), "listen: give at least one address");
        anyhow::ensure!(self.interval > 0, "interval must be at least 1 second");
        anyhow::ensure!(
            self.effective_peer_ttl() > 0,
            "peer_ttl must be at least 1 second"
        );
        anyhow::ensure!(
            self.max_scrape_hashes > 0,
            "max_scrape_hashes must be at least 1"
        );
        anyhow::ensure!(self.workers != Some(0), "workers must be at least 1");
        anyhow::ensure!(
            self.max_request_bytes >= 8192,
            "max_request_bytes must be at least 8192 (hyper's smallest buffer)"
        );
        anyhow::ensure!(
            self.header_timeout > 0 && self.idle_timeout > 0,
            "header_timeout and idle_timeout must be at least 1 second"
        );
        anyhow::ensure!(
            self.max_torrents > 0 && self.max_peers_per_torrent > 0 && self.max_connections > 0,
            "max_torrents, max_peers_per_torrent and max_connections must be at least 1"
        );
        self.reactor_choice()?;
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "human" | "json"),
            "log_format must be human or json, not {:?}",
            self.log_format
        );
        self.proxy()?;
        anyhow::ensure!(
            self.snapshot_interval > 0,
            "snapshot_interval must be at least 1 second"
        );
        for (key, path) in [
            ("announce_path", &self.announce_path),
            ("scrape_path", &self.scrape_path),
        ] {
            anyhow::ensure!(
                path.starts_with('/') && path.len() > 1 && !path.contains(['?', '#', ' ']),
                "{key} must be a path such as /announce, not {path:?}"
            );
        }
        anyhow::ensure!(
            !self.announce_path.starts_with(self.scrape_path.as_str())
                && !self.scrape_path.starts_with(self.announce_path.as_str()),
            "announce_path and scrape_path must not be prefixes of each other"
        );
        if let Some(url) = &self.root_redirect {
            anyhow::ensure!(
                hyper::header::HeaderValue::from_str(url).is_ok(),
                "root_redirect is not a valid URL: {url:?}"
            );
        }
        if let Some(id) = &self.tracker_id {
            anyhow::ensure!(
                !id.is_empty() && id.len() <= 100,
                "tracker_id must be 1 to 100 bytes"
            );
        }
        self.stats_allow()?;
        match (&self.tls_cert, &self.tls_key, self.tls_listen.is_empty()) {
            (Some(_), Some(_), false) | (None, None, true) => {}
            (_, _, false) => anyhow::bail!(
                "tls_listen needs both tls_cert and tls_key (PEM files of the certificate chain \
                 and its private key)"
            ),
            (_, _, true) => anyhow::bail!(
                "tls_cert and tls_key are used only with tls_listen: give the HTTPS \
                 addresses, e.g. --tls-listen 0.0.0.0:443"
            ),
        }
        let mut seen = std::collections::HashSet::new();
        for addr in self
            .listen
            .iter()
            .chain(&self.tls_listen)
            .chain(&self.metrics_listen)
        {
            anyhow::ensure!(
                addr.port() == 0 || seen.insert(*addr),
                "{addr} is given twice among listen, tls_listen and metrics_listen"
            );
        }
        Ok(())
    }

    /// The networks that may read the statistics.
    pub fn stats_allow(&self) -> anyhow::Result<Vec<crate::http::client_addr::Cidr>> {
        self.stats_allow
            .iter()
            .map(|net| net.parse())
            .collect::<Result<_, String>>()
            .map_err(|e| anyhow::anyhow!("stats_allow: {e}"))
    }

    /// The configuration as commented TOML that [`Config::from_file`] reads
    /// back to the same value. Unset optional keys are shown commented out.
    pub fn to_commented_toml(&self) -> String {
        let table = toml::Table::try_from(self).unwrap_or_default();
        let mut out = String::from(
            "# shoal configuration. Every key is optional; shown are the values in effect.\n\
             # Each key is also a command-line option (--key-name) and an environment\n\
             # variable (SHOAL_KEY_NAME); the command line wins over the environment,\n\
             # which wins over this file.\n",
        );
        for (key, doc, example) in KEY_DOCS {
            out.push('\n');
            for line in doc.lines() {
                out.push_str("# ");
                out.push_str(line.trim());
                out.push('\n');
            }
            match (table.get(*key), example) {
                (Some(value), _) => {
                    let mut one = toml::Table::new();
                    one.insert((*key).to_owned(), value.clone());
                    out.push_str(&toml::to_string(&one).unwrap_or_default());
                }
                (None, Some(example)) => out.push_str(&format!("# {key} = {example}\n")),
                (None, None) => {}
            }
        }
        out
    }
}

/// shoal, a BitTorrent tracker (BEP 3 announce, BEP 48 scrape) over HTTP.
#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "shoal: a fast, strict BitTorrent tracker over HTTP",
    long_about = "shoal: a fast, strict BitTorrent tracker over HTTP.\n\n\
        Clients announce to http://HOST:PORT/announce and scrape http://HOST:PORT/scrape. \
        Peers live in memory; nothing needs installing or initialising.\n\n\
        Settings come from, in increasing precedence: built-in defaults, the --config \
        file (TOML), SHOAL_* environment variables, and the command line. \
        `shoal --print-config > shoal.toml` writes every key with its default and meaning.",
    after_help = "Examples:\n  \
        shoal                                   listen on 0.0.0.0:6969 and [::]:6969\n  \
        shoal --listen 127.0.0.1:8080           one local listener\n  \
        shoal --print-config > shoal.toml       write a config file to edit\n  \
        shoal --config shoal.toml               run with it\n  \
        shoal --list-reactors                   which socket runtimes can run here\n  \
        shoal --reactor per-core --workers 4    a single-threaded runtime per core\n  \
        shoal --metrics-listen 127.0.0.1:9100   Prometheus /metrics and /stats there only\n  \
        shoal --tls-listen [::]:443 --tls-cert c.pem --tls-key k.pem   HTTPS too\n  \
        SHOAL_INTERVAL=900 shoal                settings from the environment",
    next_line_help = false
)]
pub struct Cli {
    /// Read settings from this TOML file (see --print-config).
    #[arg(long, short = 'c', env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as commented TOML and exit.
    #[arg(long)]
    pub print_config: bool,

    /// List the reactors, whether each can run here, and exit.
    #[arg(long)]
    pub list_reactors: bool,

    /// Accept HTTP on ADDR (repeat for more; the environment takes a comma
    /// list). [default: 0.0.0.0:6969 and [::]:6969]
    #[arg(
        long,
        short = 'l',
        env = "SHOAL_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<SocketAddr>,

    /// Seconds clients wait between announces. [default: 1800]
    #[arg(long, env = "SHOAL_INTERVAL", value_name = "SECS")]
    pub interval: Option<u32>,

    /// Seconds clients must wait at least between announces. [default: 900]
    #[arg(long, env = "SHOAL_MIN_INTERVAL", value_name = "SECS")]
    pub min_interval: Option<u32>,

    /// Seconds until a silent peer is forgotten. [default: interval x 1.5]
    #[arg(long, env = "SHOAL_PEER_TTL", value_name = "SECS")]
    pub peer_ttl: Option<u32>,

    /// Peers sent when a client gives no numwant. [default: 50]
    #[arg(long, env = "SHOAL_DEFAULT_NUMWANT", value_name = "N")]
    pub default_numwant: Option<u32>,

    /// Most peers sent in one response. [default: 200]
    #[arg(long, env = "SHOAL_MAX_NUMWANT", value_name = "N")]
    pub max_numwant: Option<u32>,

    /// Most info hashes answered in one scrape. [default: 100]
    #[arg(long, env = "SHOAL_MAX_SCRAPE_HASHES", value_name = "N")]
    pub max_scrape_hashes: Option<usize>,

    /// Honour the ip/ipv4/ipv6 announce parameters (lets clients claim any
    /// address: only behind a trusted front end). [default: false]
    #[arg(
        long,
        env = "SHOAL_ALLOW_IP_PARAM",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_ip_param: Option<bool>,

    /// Torrents held at most; new ones are refused beyond. [default: 10000000]
    #[arg(long, env = "SHOAL_MAX_TORRENTS", value_name = "N")]
    pub max_torrents: Option<usize>,

    /// Peers per torrent at most; new peers are refused beyond. [default: 1000000]
    #[arg(long, env = "SHOAL_MAX_PEERS_PER_TORRENT", value_name = "N")]
    pub max_peers_per_torrent: Option<usize>,

    /// Open connections at most; more are closed on accept. [default: 50000]
    #[arg(long, env = "SHOAL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Largest request head in bytes (431 beyond). [default: 8192]
    #[arg(long, env = "SHOAL_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Seconds from a request's first byte to its response (slowloris). [default: 10]
    #[arg(long, env = "SHOAL_HEADER_TIMEOUT", value_name = "SECS")]
    pub header_timeout: Option<u64>,

    /// Seconds an idle keep-alive connection stays open. [default: 30]
    #[arg(long, env = "SHOAL_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<u64>,

    /// Send this as `tracker id` in announce responses.
    #[arg(long, env = "SHOAL_TRACKER_ID", value_name = "ID")]
    pub tracker_id: Option<String>,

    /// Believe the client-address header on connections from CIDR (a
    /// reverse proxy); repeat, or give the environment a comma list.
    #[arg(
        long,
        env = "SHOAL_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<String>,

    /// Header trusted proxies put the client in: X-Forwarded-For, X-Real-IP
    /// or Forwarded. [default: X-Forwarded-For]
    #[arg(long, env = "SHOAL_CLIENT_IP_HEADER", value_name = "NAME")]
    pub client_ip_header: Option<String>,

    /// Private mode: passkeys from FILE, used as /announce/<passkey>; SIGHUP re-reads it.
    #[arg(long, env = "SHOAL_PASSKEYS", value_name = "FILE")]
    pub passkeys: Option<std::path::PathBuf>,

    /// Serve only (or all but) the info hashes listed in FILE; SIGHUP re-reads it.
    #[arg(long, env = "SHOAL_ACCESS_LIST", value_name = "FILE")]
    pub access_list: Option<std::path::PathBuf>,

    /// allow: only the listed torrents; deny: all but them. [default: allow]
    #[arg(long, env = "SHOAL_ACCESS_MODE", value_name = "MODE", value_parser = ["allow", "deny"])]
    pub access_mode: Option<String>,

    /// Keep snatch counts in FILE across restarts (written atomically).
    #[arg(long, env = "SHOAL_STATE_FILE", value_name = "FILE")]
    pub state_file: Option<std::path::PathBuf>,

    /// Seconds between state file snapshots. [default: 300]
    #[arg(long, env = "SHOAL_SNAPSHOT_INTERVAL", value_name = "SECS")]
    pub snapshot_interval: Option<u64>,

    /// Start empty when the state file is corrupt instead of refusing to start.
    #[arg(
        long,
        env = "SHOAL_IGNORE_BAD_STATE",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub ignore_bad_state: Option<bool>,

    /// Socket I/O runtime: tokio, per-core, io-uring, or auto (the best
    /// usable one; see --list-reactors). [default: tokio]
    #[arg(long, env = "SHOAL_REACTOR", value_name = "NAME")]
    pub reactor: Option<String>,

    /// Path of the announce route. [default: /announce]
    #[arg(long, env = "SHOAL_ANNOUNCE_PATH", value_name = "PATH")]
    pub announce_path: Option<String>,

    /// Path of the scrape route. [default: /scrape]
    #[arg(long, env = "SHOAL_SCRAPE_PATH", value_name = "PATH")]
    pub scrape_path: Option<String>,

    /// Redirect GET / to URL (302).
    #[arg(long, env = "SHOAL_ROOT_REDIRECT", value_name = "URL")]
    pub root_redirect: Option<String>,

    /// Reactor worker threads. [default: one per CPU core]
    #[arg(long, env = "SHOAL_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Log filter: error, warn, info, debug, trace, or a directive such as
    /// shoal=debug. [default: info]
    #[arg(long, env = "SHOAL_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log line format: human or json. [default: human]
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_name = "FORMAT", value_parser = ["human", "json"])]
    pub log_format: Option<String>,

    /// Let clients in CIDR read /metrics, /stats and /stats.json; repeat, or
    /// give the environment a comma list. [default: 127.0.0.0/8, ::1/128]
    #[arg(
        long,
        env = "SHOAL_STATS_ALLOW",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub stats_allow: Vec<String>,

    /// Serve /metrics, /stats and /stats.json only on ADDR (repeatable).
    #[arg(
        long,
        env = "SHOAL_METRICS_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub metrics_listen: Vec<SocketAddr>,

    /// Answer scrapes without info_hash with every torrent. [default: false]
    #[arg(
        long,
        env = "SHOAL_FULL_SCRAPE",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub full_scrape: Option<bool>,

    /// Seconds between full scrapes from one address (0: no limit). [default: 60]
    #[arg(long, env = "SHOAL_FULL_SCRAPE_INTERVAL", value_name = "SECS")]
    pub full_scrape_interval: Option<u32>,

    /// Accept HTTPS on ADDR (repeatable; needs --tls-cert and --tls-key).
    #[arg(
        long,
        env = "SHOAL_TLS_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub tls_listen: Vec<SocketAddr>,

    /// PEM certificate chain for --tls-listen (re-read on SIGHUP).
    #[arg(long, env = "SHOAL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-listen (re-read on SIGHUP).
    #[arg(long, env = "SHOAL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl Cli {
    /// Builds the configuration: defaults, then the file, then what clap
    /// gathered from the environment and the command line.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.listen = self.listen;
        }
        macro_rules! apply {
            ($($field:ident),*) => {$(
                if let Some(value) = self.$field {
                    config.$field = value;
                }
            )*};
        }
        apply!(
            interval,
            min_interval,
            default_numwant,
            max_numwant,
            max_scrape_hashes,
            allow_ip_param,
            max_torrents,
            max_peers_per_torrent,
            max_connections,
            max_request_bytes,
            header_timeout,
            idle_timeout,
            snapshot_interval,
            ignore_bad_state,
            reactor,
            client_ip_header,
            announce_path,
            scrape_path,
            log_level,
            log_format,
            full_scrape,
            full_scrape_interval
        );
        for (given, key) in [
            (self.metrics_listen, &mut config.metrics_listen),
            (self.tls_listen, &mut config.tls_listen),
        ] {
            if !given.is_empty() {
                *key = given;
            }
        }
        if !self.stats_allow.is_empty() {
            config.stats_allow = self.stats_allow;
        }
        if self.tls_cert.is_some() {
            config.tls_cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            config.tls_key = self.tls_key;
        }
        if !self.trusted_proxy.is_empty() {
            config.trusted_proxies = self.trusted_proxy;
        }
        if self.state_file.is_some() {
            config.state_file = self.state_file;
        }
        if self.access_list.is_some() {
            config.access_list = self.access_list;
        }
        if self.passkeys.is_some() {
            config.passkeys = self.passkeys;
        }
        if self.root_redirect.is_some() {
            config.root_redirect = self.root_redirect;
        }
        if let Some(mode) = self.access_mode {
            config.access_mode = mode.parse().map_err(anyhow::Error::msg)?;
        }
        if self.peer_ttl.is_some() {
            config.peer_ttl = self.peer_ttl;
        }
        if self.tracker_id.is_some() {
            config.tracker_id = self.tracker_id;
        }
        if self.workers.is_some() {
            config.workers = self.workers;
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_config_reads_back_to_the_same_value() {
        let defaults = Config::default();
        let printed = defaults.to_commented_toml();
        let parsed: Config = toml::from_str(&printed).unwrap();
        assert_eq!(parsed, defaults);

        let custom = Config {
            peer_ttl: Some(60),
            tracker_id: Some("t".into()),
            workers: Some(3),
            interval: 100,
            ..Config::default()
        };
        let parsed: Config = toml::from_str(&custom.to_commented_toml()).unwrap();
        assert_eq!(parsed, custom);
    }

    #[test]
    fn every_key_is_documented_once() {
        let full = Config {
            peer_ttl: Some(1),
            tracker_id: Some("x".into()),
            workers: Some(1),
            state_file: Some("/tmp/state.bin".into()),
            access_list: Some("/tmp/list.txt".into()),
            passkeys: Some("/tmp/keys.txt".into()),
            root_redirect: Some("https://x/".into()),
            tls_cert: Some("/tmp/cert.pem".into()),
            tls_key: Some("/tmp/key.pem".into()),
            ..Config::default()
        };
        let table = toml::Table::try_from(&full).unwrap();
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut documented: Vec<&str> = KEY_DOCS.iter().map(|(k, _, _)| *k).collect();
        keys.sort_unstable();
        documented.sort_unstable();
        assert_eq!(keys, documented);
        // Every commented-out example is itself valid for its key.
        for (key, _, example) in KEY_DOCS {
            if let Some(example) = example {
                let one: Config = toml::from_str(&format!("{key} = {example}")).unwrap();
                assert_ne!(one, Config::default(), "{key}");
            }
        }
    }

    #[test]
    fn command_line_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("shoal-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("shoal.toml");
        std::fs::write(&file, "interval = 600\nmax_numwant = 80\n").unwrap();
        let cli = Cli::try_parse_from([
            "shoal",
            "--config",
            file.to_str().unwrap(),
            "--interval",
            "700",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!((config.interval, config.max_numwant), (700, 80));
        std::fs::write(&file, "intervall = 600\n").unwrap();
        let cli = Cli::try_parse_from(["shoal", "--config", file.to_str().unwrap()]).unwrap();
        let error = format!("{:#}", cli.into_config().unwrap_err());
        assert!(error.contains("unknown field `intervall`"), "{error}");
    }

    #[test]
    fn invalid_settings_are_refused_with_the_reason() {
        let config = Config {
            listen: vec![],
            ..Config::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("listen"), "{error}");
        let config = Config {
            workers: Some(0),
            ..Config::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("workers"), "{error}");
        let config = Config {
            min_interval: 10,
            interval: 5,
            ..Config::default()
        };
        assert_eq!(config.effective_min_interval(), 5);
        assert_eq!(Config::default().effective_peer_ttl(), 2700);
    }
}
