//! shoal: a BitTorrent tracker over HTTP (BEP 3 announce, BEP 48 scrape)
//! and UDP (BEP 15, BEP 41), both front ends over one tracker core.
//!
//! One way down, nothing below imports anything above it:
//!
//! ```text
//! socket -> reactor -> http (driver, routes) | udp -> tracker -> store
//!                      \________ protocol (parse, encode) ________/
//! ```
//!
//! - [`reactor`]: runtimes, listeners, UDP sockets, connection tasks; knows
//!   neither HTTP nor BitTorrent.
//! - [`http`]: the HTTP/1.1 driver ([`http::driver`]), routes, headers,
//!   client address, operator pages; [`udp`]: the BEP 15 front end.
//! - [`tracker`]: the transport-neutral core (access list, passkeys, the
//!   announce and scrape rules, counts).
//! - [`protocol`]: pure parsing and encoding (HTTP queries, bencode, BEP 15).
//! - [`store`]: the sharded swarm store; knows nothing of HTTP or UDP.
//! - [`state`]: the state file that keeps snatch counts across restarts.
//! - [`metrics`]: the tracker's counters and their Prometheus rendering.
//! - [`config`], [`clock`], [`shutdown`]: what every part shares.
//!
//! [`run`] wires them together; `main.rs` only parses the command line.

pub mod access;
pub mod clock;
pub mod config;
mod housekeeping;
pub mod http;
pub mod metrics;
pub mod passkeys;
pub mod protocol;
pub mod reactor;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod tracker;
pub mod udp;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use clock::Clock;
use config::Config;
use http::{HttpConfig, Tracker, TrackerService};
use metrics::{BuildInfo, Metrics};
use protocol::AnnounceOptions;
use shutdown::{Reload, Shutdown};
use store::{MemoryStore, RedisOptions, RedisStore, Store, StoreConfig};
use tracker::{Core, Rules};

/// Runs the tracker until `shutdown` triggers; `reload` (SIGHUP) re-reads
/// the access list, the passkeys and the TLS certificate. Blocks the
/// calling thread.
pub fn run(config: Config, shutdown: Shutdown, reload: Reload) -> anyhow::Result<()> {
    config.validate()?;
    let clock = Clock::new();
    // Bind first: a port in use should stop the start before anything else.
    let kind = config
        .reactor_choice()?
        .resolve()
        .map_err(anyhow::Error::msg)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) if !config.tls_listen.is_empty() => {
            let tls = Arc::new(http::driver::TlsConfig::load(cert, key)?);
            let reloaded = tls.clone();
            reload.subscribe(move || match reloaded.reload() {
                Ok(()) => tracing::info!(
                    "TLS certificate reloaded from {}",
                    reloaded.cert_path().display()
                ),
                Err(error) => tracing::error!("{error}; the previous certificate stays in force"),
            });
            Some(tls)
        }
        _ => None,
    };
    let options = reactor::Options {
        kind,
        workers: config.effective_workers(),
        max_connections: config.max_connections,
        shutdown_grace: Duration::from_secs(5),
        udp_nap: Duration::from_micros(config.udp_coalesce_us),
    };
    let driver_options = http::driver::DriverOptions {
        request_timeout: Duration::from_secs(config.header_timeout),
        idle_timeout: Duration::from_secs(config.idle_timeout),
        max_request_bytes: config.max_request_bytes,
        tls,
        fast_path: true,
    };
    let plain: Vec<_> = config
        .listen
        .iter()
        .chain(&config.metrics_listen)
        .copied()
        .collect();
    let mut bound = reactor::Bound::bind(options, &plain, &config.tls_listen)?;
    let udp_addrs = config.udp_addrs(&bound.local_addrs()[..config.listen.len()])?;
    bound.bind_udp(&udp_addrs)?;
    // The reactor's tokio runtimes, shared with the Redis store's client.
    let runtimes = bound
        .runtime_handles()
        .context("cannot start the reactor's runtimes")?;
    let (tracker_addrs, admin_addrs) = bound.local_addrs().split_at(config.listen.len());
    let described = bound.options().describe();
    let metrics = Arc::new(Metrics::new(BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        reactor: kind.name(),
        reactor_detail: described.clone(),
        workers: bound.options().workers,
    }));

    let store = Arc::new(open_store(&config, &metrics, runtimes)?);
    if let Some(memory) = store.memory()
        && let Some(path) = &config.state_file
    {
        restore_state(memory, path, config.ignore_bad_state)?;
    }
    let access = match &config.access_list {
        Some(path) => Some(Arc::new(access::AccessList::load(
            path,
            config.access_mode,
        )?)),
        None => None,
    };
    if let Some(list) = &access {
        tracing::info!(
            "access list {}: {} torrents ({:?} mode)",
            config
                .access_list
                .as_deref()
                .unwrap_or_else(|| std::path::Path::new(""))
                .display(),
            list.len(),
            list.mode()
        );
        let (list, store) = (list.clone(), store.clone());
        reload.subscribe(move || match list.reload() {
            Ok(count) => {
                let allowed = list.clone();
                match store.purge(Arc::new(move |hash| allowed.allows(hash))) {
                    Ok(purged) => tracing::info!(
                        "access list reloaded: {count} torrents; {purged} torrents purged"
                    ),
                    Err(error) => tracing::error!(
                        "access list reloaded: {count} torrents; the purge failed ({error})"
                    ),
                }
            }
            Err(error) => tracing::error!("{error:#}; the previous list stays in force"),
        });
    }

    let mut core = Core::new(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        Rules {
            announce: AnnounceOptions {
                default_numwant: config.default_numwant,
                max_numwant: config.max_numwant,
                accept_ip_param: config.allow_ip_param,
            },
            interval: config.interval,
            min_interval: config.effective_min_interval(),
            max_scrape_hashes: config.max_scrape_hashes,
        },
    );
    if let Some(list) = access {
        core = core.with_access_list(list);
    }
    if let Some(path) = &config.passkeys {
        let keys = Arc::new(passkeys::Passkeys::load(path)?);
        tracing::info!(
            "private mode: {} passkeys from {}; announce at {}/<passkey>",
            keys.len(),
            path.display(),
            config.announce_path
        );
        let reloaded = keys.clone();
        reload.subscribe(move || match reloaded.reload() {
            Ok(count) => tracing::info!("passkeys reloaded: {count} keys"),
            Err(error) => tracing::error!("{error:#}; the previous keys stay in force"),
        });
        core = core.with_passkeys(keys);
    }
    let core = Arc::new(core);

    let mut tracker = Tracker::new(
        core.clone(),
        HttpConfig {
            tracker_id: config.tracker_id.clone().map(String::into_bytes),
            proxy: config.proxy()?,
            announce_path: config.announce_path.clone(),
            scrape_path: config.scrape_path.clone(),
            root_redirect: config.root_redirect.clone(),
            max_request_bytes: config.max_request_bytes,
        },
    )
    .with_admin(
        http::admin::Admin::new(
            metrics.clone(),
            store.clone(),
            bound.connections(),
            config.stats_allow()?,
            config.full_scrape,
        ),
        config.listen.len()..config.listen.len() + config.metrics_listen.len(),
    );
    if config.full_scrape {
        tracker = tracker.with_full_scrape(http::full_scrape::RateLimit::new(
            config.full_scrape_interval,
        ));
    }
    let tracker = Arc::new(tracker);
    for addr in tracker_addrs {
        tracing::info!(
            "listening on http://{addr}{} (reactor: {described})",
            config.announce_path
        );
    }
    for addr in bound.tls_addrs() {
        tracing::info!(
            "listening on https://{addr}{} (reactor: {described})",
            config.announce_path
        );
    }
    for addr in bound.udp_addrs() {
        tracing::info!(
            "listening on udp://{addr}{} (reactor: {described})",
            config.announce_path
        );
    }
    let datagrams: Option<Arc<dyn reactor::DatagramHandler>> = if udp_addrs.is_empty() {
        None
    } else {
        Some(Arc::new(udp::UdpTracker::new(
            core.clone(),
            udp::ConnectionIds::new()?,
            udp::UdpConfig {
                announce_path: config.announce_path.clone(),
            },
        )))
    };
    for addr in admin_addrs {
        tracing::info!("metrics on http://{addr}/metrics, stats on http://{addr}/stats");
    }

    let snapshots = config
        .state_file
        .clone()
        .map(|path| (path, config.snapshot_interval));
    let housekeeping = housekeeping::start(
        store.clone(),
        clock,
        metrics,
        config.effective_peer_ttl(),
        snapshots,
    )?;
    let http = http::driver::Driver::new(&driver_options, move |conn| {
        TrackerService::new(tracker.clone(), conn)
    });
    let served = bound.serve(http, datagrams, shutdown);
    housekeeping.stop();
    // The last snapshot, after the last announce.
    if let Some(memory) = store.memory()
        && let Some(path) = &config.state_file
    {
        let counts = memory.downloads();
        state::save(path, &counts)?;
        tracing::info!(
            "state saved to {} ({} torrents with downloads)",
            path.display(),
            counts.len()
        );
    }
    served.context("the reactor failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// The store `config.store` names: the in-memory one, or the shared one on
/// Redis (its loops started on `runtimes`, or on a thread of their own, its
/// servers named in the log).
fn open_store(
    config: &Config,
    metrics: &Arc<Metrics>,
    runtimes: Vec<tokio::runtime::Handle>,
) -> anyhow::Result<Store> {
    let peer_ttl = config.effective_peer_ttl();
    if config.store != "redis" {
        return Ok(Store::Memory(MemoryStore::new(StoreConfig {
            peer_ttl,
            max_torrents: config.max_torrents,
            max_peers_per_torrent: config.max_peers_per_torrent,
            compact_only: config.compact_only,
        })));
    }
    if config.state_file.is_some() {
        tracing::warn!(
            "state_file is for the memory store only and is not used with store redis: \
             Redis keeps the snatch counts itself (enable its AOF or RDB persistence)"
        );
    }
    let store = RedisStore::start(
        RedisOptions {
            urls: config.redis_url.clone(),
            password_file: config.redis_password_file.clone(),
            tls_ca_file: config.redis_tls_ca_file.clone(),
            tls_client: config
                .redis_tls_cert_file
                .clone()
                .zip(config.redis_tls_key_file.clone()),
            key_prefix: config.redis_key_prefix.clone(),
            timeout: Duration::from_millis(config.redis_timeout_ms),
            connect_timeout: Duration::from_millis(config.redis_connect_timeout_ms),
            connections: config.redis_connections,
            max_in_flight: config.redis_max_in_flight,
            stats_interval: Duration::from_secs(config.redis_stats_interval),
            peer_ttl,
            max_peers_per_torrent: config.max_peers_per_torrent,
        },
        metrics.clone(),
        runtimes,
    )?;
    tracing::info!(
        "store: redis at {} (keys prefixed {:?}); max_torrents is not enforced there: \
         Redis's maxmemory bounds it",
        store.describe(),
        config.redis_key_prefix
    );
    Ok(Store::Redis(store))
}

/// Loads the state file into the store. A missing file is a first start; a
/// corrupt one stops the start-up unless `ignore_bad` (then it is kept aside
/// as `PATH.bad` and the counts start empty).
fn restore_state(
    store: &MemoryStore,
    path: &std::path::Path,
    ignore_bad: bool,
) -> anyhow::Result<()> {
    match state::load(path) {
        Ok(Some(counts)) => {
            store.restore(&counts);
            tracing::info!(
                "restored download counts of {} torrents from {}",
                counts.len(),
                path.display()
            );
        }
        Ok(None) => tracing::info!("no state file at {} yet: starting empty", path.display()),
        Err(error @ state::StateError::Corrupt { .. }) if ignore_bad => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".bad");
            std::fs::rename(path, &aside)
                .with_context(|| format!("cannot move {} aside", path.display()))?;
            tracing::warn!(
                "{error}; starting with empty counts as asked, the file is kept as {}",
                std::path::Path::new(&aside).display()
            );
        }
        Err(error @ state::StateError::Corrupt { .. }) => {
            return Err(anyhow::anyhow!(
                "{error}. Refusing to start with empty counts: restore a backup, move the \
                 file away, or start with --ignore-bad-state"
            ));
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}
