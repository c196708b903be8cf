//! Configuration: every setting declared once, in [`Config`] below.
//!
//! Each declaration (doc comment, key, type, default, value placeholder)
//! gives the TOML key, the `--flag`, the `SHOAL_*` variable, the line in
//! `--print-config`, the `--help` entry with the real default, and the row
//! of `docs/configuration.md`; [`declare`] says how and why a macro.
//! Settings merge in this order, later winning: defaults, the `--config`
//! file, the environment, the command line. [`Config::validate`] then
//! refuses combinations that cannot work, naming the key.
//!
//! Adding a setting: one entry in the right group below, then use the field.

pub mod declare;
mod load;
pub mod render;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use declare::{Setting, Settings};
pub use load::{Cli, command, from_file, merge};

crate::settings! {
    /// Everything an operator can set.
    pub struct Config;

    group "Listeners" {
        /// Addresses to accept HTTP on; IPv6 listeners are IPv6-only.
        listen: Vec<SocketAddr> = vec![
            SocketAddr::from(([0, 0, 0, 0], 6969)),
            SocketAddr::from(([0u16; 8], 6969)),
        ], "ADDR" [short = Some('l')];
        /// Addresses to answer UDP tracker requests (BEP 15) on. Empty: wherever HTTP
        /// listens (each listen address, same port), so udp://HOST:6969/announce
        /// works out of the box; "none": no UDP.
        udp_listen: Vec<String> = Vec::new(), "ADDR"
            [example = Some("[\"0.0.0.0:6969\", \"[::]:6969\"]")];
        /// Addresses to accept HTTPS on, with tls_cert and tls_key. Both files are
        /// re-read on SIGHUP; new connections then get the new certificate.
        tls_listen: Vec<SocketAddr> = Vec::new(), "ADDR"
            [example = Some("[\"0.0.0.0:443\", \"[::]:443\"]")];
        /// PEM file with the certificate chain for tls_listen, leaf first.
        tls_cert: Option<PathBuf> = None, "FILE" [example = Some("\"/etc/shoal/cert.pem\"")];
        /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1) for tls_listen.
        tls_key: Option<PathBuf> = None, "FILE" [example = Some("\"/etc/shoal/key.pem\"")];
        /// Addresses that serve only /metrics, /stats and /stats.json (e.g. an
        /// internal interface). Empty: the tracker's own listeners serve them; set:
        /// only these do.
        metrics_listen: Vec<SocketAddr> = Vec::new(), "ADDR"
            [example = Some("[\"127.0.0.1:9100\"]")];
    }

    group "Protocol" {
        /// Seconds clients are asked to wait between announces (a little random
        /// jitter is added so that clients drift apart).
        interval: u32 = 1800, "SECS";
        /// Seconds clients must wait at least between announces (capped at interval).
        min_interval: u32 = 900, "SECS";
        /// Seconds after its last announce that a peer is forgotten.
        /// Default: interval x 1.5.
        peer_ttl: Option<u32> = None, "SECS" [example = Some("2700")];
        /// Peers sent when a client gives no usable numwant.
        default_numwant: u32 = 50, "N";
        /// Most peers sent in one response, whatever numwant asks.
        max_numwant: u32 = 200, "N";
        /// Most info hashes answered in one scrape; the rest get a warning.
        max_scrape_hashes: usize = 100, "N";
        /// Honour the ip/ipv4/ipv6 announce parameters. Off by default: they let
        /// anyone point a swarm at a third party (BEP 7).
        allow_ip_param: bool = false, "BOOL";
        /// Sent as `tracker id` in every announce response when set.
        tracker_id: Option<String> = None, "ID" [example = Some("\"shoal-1\"")];
        /// Path of the announce route (e.g. /announce.php for clients of an old
        /// tracker); in private mode clients add /<passkey>.
        announce_path: String = "/announce".into(), "PATH";
        /// Path of the scrape route (BEP 48 clients derive it from the announce URL by
        /// replacing the last "announce" with "scrape").
        scrape_path: String = "/scrape".into(), "PATH";
        /// Where GET / redirects (302), e.g. the tracker's web page. Unset: 404.
        root_redirect: Option<String> = None, "URL"
            [example = Some("\"https://tracker.example/\"")];
        /// Answer a scrape without info_hash with the counts of every torrent with
        /// peers (streamed, gzip-compressed when the client accepts gzip). Off: such
        /// a scrape gets a failure reason.
        full_scrape: bool = false, "BOOL";
        /// Seconds a client address (an IPv6 client: its /64) must wait between two
        /// full scrapes; sooner ones get 429 and a failure reason. 0: no limit.
        full_scrape_interval: u32 = 60, "SECS";
    }

    group "Limits" {
        /// Torrents with peers held at most. An announce that would create one more
        /// gets the failure reason "tracker is full"; torrents already held go on.
        max_torrents: usize = 10_000_000, "N";
        /// Peers one torrent holds at most. A new peer beyond it gets the failure
        /// reason "this torrent's swarm is full"; peers already in keep announcing.
        max_peers_per_torrent: usize = 1_000_000, "N";
        /// Open connections at most; a connection beyond it is closed as soon as it
        /// is accepted, without touching the open ones.
        max_connections: usize = 50_000, "N";
        /// Largest request head (request line and headers), in bytes; a larger one
        /// gets 431 (with a failure reason on the tracker routes) and the connection
        /// is closed. At least 8192. The default fits a scrape of 150 info hashes.
        max_request_bytes: usize = 16 * 1024, "BYTES";
        /// Seconds a request may take from its first byte to its response: a client
        /// that sends its request head slowly (slowloris) is cut off.
        header_timeout: u64 = 10, "SECS";
        /// Seconds a keep-alive connection may stay silent after a response (or after
        /// connecting) before it is closed.
        idle_timeout: u64 = 30, "SECS";
    }

    group "Security" {
        /// Networks (CIDR) of reverse proxies in front of shoal. Only on connections
        /// from these is client_ip_header believed, and then its rightmost address
        /// outside these networks is the client. Empty: the socket address is used.
        trusted_proxies: Vec<String> = Vec::new(), "CIDR" [alias = Some("trusted-proxy")];
        /// The header trusted proxies report the client in: X-Forwarded-For,
        /// X-Real-IP or Forwarded (RFC 7239).
        client_ip_header: String = "X-Forwarded-For".into(), "NAME";
        /// Private mode (BEP 27): a file of passkeys, one per line, each optionally
        /// followed by an expiry in Unix seconds. Clients announce to
        /// /announce/<passkey> and scrape /scrape/<passkey>; the file is re-read on
        /// SIGHUP. Unset: a public tracker.
        passkeys: Option<PathBuf> = None, "FILE"
            [example = Some("\"/etc/shoal/passkeys.txt\"")];
        /// File of info hashes (40 hex digits a line, # comments) for access control;
        /// re-read on SIGHUP, when peers of torrents no longer allowed are dropped.
        /// Unset: every torrent is served.
        access_list: Option<PathBuf> = None, "FILE"
            [example = Some("\"/etc/shoal/torrents.txt\"")];
        /// allow: serve only the listed torrents; deny: serve all but the listed ones.
        access_mode: crate::access::Mode = crate::access::Mode::Allow, "MODE"
            [choices = Some(&["allow", "deny"])];
        /// Networks (CIDR) whose clients may read /metrics (Prometheus), /stats.json
        /// and the /stats page; others get 403. Behind trusted_proxies, the client
        /// address is the one the proxy reports. ["0.0.0.0/0", "::/0"] opens them to all.
        stats_allow: Vec<String> = vec!["127.0.0.0/8".into(), "::1/128".into()], "CIDR";
    }

    group "Store" {
        /// Where swarms live: memory (this process, nothing to install) or redis (a
        /// Redis server or Redis Cluster shared by any number of shoal nodes; see
        /// docs/scaling.md).
        store: String = "memory".into(), "BACKEND" [choices = Some(&["memory", "redis"])];
        /// Memory store: keep no peer ids, only what compact answers need (8 bytes an
        /// IPv4 peer instead of 28). A peer is then its IP and port, and compact=0
        /// answers carry no peer ids (as if the client sent no_peer_id=1).
        compact_only: bool = false, "BOOL";
        /// Redis seed URLs for --store redis: redis://HOST:PORT, or rediss:// for TLS;
        /// a password may be given as redis://:PASSWORD@HOST:PORT (never logged). Any
        /// node of a cluster will do: the cluster is found from it.
        redis_url: Vec<String> = Vec::new(), "URL"
            [example = Some("[\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]")];
        /// File whose first line is the Redis password (instead of putting it in the URL).
        redis_password_file: Option<PathBuf> = None, "FILE"
            [example = Some("\"/etc/shoal/redis-password\"")];
        /// PEM file of the certificate authorities to trust for rediss:// (a private
        /// CA, as a self-hosted Redis has) instead of the built-in public roots.
        redis_tls_ca_file: Option<PathBuf> = None, "FILE"
            [example = Some("\"/etc/shoal/redis-ca.crt\"")];
        /// PEM file of the client certificate shoal shows Redis over rediss:// (Redis
        /// asks for one unless its tls-auth-clients is no); with redis_tls_key_file.
        redis_tls_cert_file: Option<PathBuf> = None, "FILE"
            [example = Some("\"/etc/shoal/redis-client.crt\"")];
        /// PEM file of that client certificate's private key.
        redis_tls_key_file: Option<PathBuf> = None, "FILE"
            [example = Some("\"/etc/shoal/redis-client.key\"")];
        /// Put before every Redis key, so several trackers can share one cluster.
        redis_key_prefix: String = "shoal:".into(), "PREFIX";
        /// Milliseconds a request to Redis may take, retries included; past it the
        /// client gets the failure reason "tracker storage unavailable, try again later".
        redis_timeout_ms: u64 = 1000, "MS";
        /// Milliseconds to open a connection to a Redis node.
        redis_connect_timeout_ms: u64 = 1000, "MS";
        /// Multiplexed Redis connections (each to every master) requests are spread over;
        /// with `per-core`, shared out among the workers (at least one each). One carries
        /// the most requests per Redis read: Redis is single-threaded, so more add no
        /// parallelism, only smaller batches.
        redis_connections: usize = 1, "N";
        /// Requests waiting for Redis at most (with `per-core`, shared out among the
        /// workers); beyond it requests are refused at once (failure reason) instead of
        /// queueing without bound.
        redis_max_in_flight: usize = 16_384, "N";
        /// Seconds between the totals each node gathers from Redis for /stats and
        /// /metrics (one read per swarm). 0: never (the totals show as unknown).
        redis_stats_interval: u64 = 60, "SECS";
    }

    group "Persistence" {
        /// File the per-torrent snatch counts (downloaded) are kept in across restarts:
        /// written atomically every snapshot_interval seconds and at shutdown, read at
        /// start. Unset: counts live in memory only.
        state_file: Option<PathBuf> = None, "FILE"
            [example = Some("\"/var/lib/shoal/state.bin\"")];
        /// Seconds between state file snapshots.
        snapshot_interval: u64 = 300, "SECS";
        /// Start with empty counts when the state file is corrupt, instead of refusing
        /// to start (the bad file is kept as STATE_FILE.bad).
        ignore_bad_state: bool = false, "BOOL";
    }

    group "Operations" {
        /// The socket I/O runtime: tokio (multi-thread, work stealing), per-core
        /// (a single-threaded runtime per worker), io-uring (Linux), or auto (the
        /// best usable one). `shoal --list-reactors` says which can run here.
        reactor: String = crate::reactor::Kind::DEFAULT.name().into(), "NAME";
        /// Worker threads of the reactor. Default: one per CPU core.
        workers: Option<usize> = None, "N" [example = Some("2")];
        /// Microseconds a UDP worker naps when datagrams come in a few at a time
        /// under load, so that the next read takes a bigger batch: fewer system calls
        /// a request (less CPU under load) for at most this much more latency, plus
        /// the kernel's timer slack (50 µs by default). A lone datagram is answered
        /// at once. 0: never nap. At most 1000.
        udp_coalesce_us: u64 = 50, "MICROS";
        /// Log filter: error, warn, info, debug, trace, or a tracing directive
        /// such as "shoal=debug".
        log_level: String = "info".into(), "LEVEL";
        /// Log line format: human, or json (one object per line, for log shippers).
        /// Logs go to standard error: one line per start, listener, reload, stop and
        /// error; requests are logged only at debug level.
        log_format: String = "human".into(), "FORMAT" [choices = Some(&["human", "json"])];
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors, missing keys take defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        from_file(path)
    }

    /// The configuration as commented TOML that [`Config::from_file`] reads
    /// back to the same value. Unset optional keys are shown commented out.
    pub fn to_commented_toml(&self) -> String {
        render::commented_toml(self)
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

    /// Where UDP listens, given the addresses HTTP got (`listen`, ports
    /// resolved): those by default, none for `none`, or the ones given.
    pub fn udp_addrs(&self, http: &[SocketAddr]) -> anyhow::Result<Vec<SocketAddr>> {
        match self.udp_listen.as_slice() {
            [] => Ok(http.to_vec()),
            [none] if none == "none" => Ok(Vec::new()),
            given => given
                .iter()
                .map(|addr| {
                    addr.parse().map_err(|_| {
                        anyhow::anyhow!(
                            "udp_listen: {addr:?} is not an address such as 0.0.0.0:6969 \
                             (or give none alone to turn UDP off)"
                        )
                    })
                })
                .collect(),
        }
    }

    /// Refuses settings that cannot work, saying which and why.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.udp_addrs(&[])?;
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
            self.udp_coalesce_us <= 1000,
            "udp_coalesce_us must be at most 1000 (1 ms), not {}: a longer nap holds \
             every other request of the worker",
            self.udp_coalesce_us
        );
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
        match self.store.as_str() {
            "memory" => {}
            "redis" => {
                anyhow::ensure!(
                    !self.redis_url.is_empty(),
                    "store redis needs redis_url, e.g. --redis-url redis://127.0.0.1:6379"
                );
                anyhow::ensure!(
                    !self.full_scrape,
                    "full_scrape works with the memory store only: with store redis a \
                     scrape must name its info hashes"
                );
                anyhow::ensure!(
                    !self.compact_only,
                    "compact_only works with the memory store only: the Redis store \
                     keeps peer ids"
                );
                anyhow::ensure!(
                    self.redis_timeout_ms > 0 && self.redis_connect_timeout_ms > 0,
                    "redis_timeout_ms and redis_connect_timeout_ms must be at least 1"
                );
                anyhow::ensure!(
                    self.redis_connections > 0 && self.redis_max_in_flight > 0,
                    "redis_connections and redis_max_in_flight must be at least 1"
                );
                anyhow::ensure!(
                    self.redis_tls_cert_file.is_some() == self.redis_tls_key_file.is_some(),
                    "redis_tls_cert_file and redis_tls_key_file go together (the client \
                     certificate and its private key, PEM)"
                );
                let tls_files =
                    self.redis_tls_ca_file.is_some() || self.redis_tls_cert_file.is_some();
                anyhow::ensure!(
                    !tls_files
                        || self
                            .redis_url
                            .iter()
                            .all(|url| url.starts_with("rediss://")),
                    "redis_tls_ca_file, redis_tls_cert_file and redis_tls_key_file are for TLS: \
                     give rediss://HOST:PORT URLs"
                );
            }
            other => anyhow::bail!("store must be memory or redis, not {other:?}"),
        }
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
}
