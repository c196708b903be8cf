//! The operator routes: `GET /metrics` (Prometheus text), `GET /stats.json`
//! and `GET /stats` (a self-contained HTML page that reads the JSON).
//!
//! They are served only to clients in the configured networks
//! (`stats_allow`, loopback by default) and, when `metrics_listen` is set,
//! only on that listener. Store-wide figures walk every torrent, so they are
//! computed at most once a second however often the routes are polled.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use super::client_addr::Cidr;
use super::{HttpResponse, with_status};
use crate::metrics::{Failure, Gauges, Metrics, Request, Sample, Transport, unix_now};
use crate::reactor::Connections;
use crate::store::{Store, Summary};

/// Torrents listed on the stats page.
pub const TOP_TORRENTS: usize = 10;

/// How long a store summary is reused.
const SUMMARY_TTL: Duration = Duration::from_secs(1);

/// The stats page: static, self-contained (inline style and script, no
/// external resource), filled in from `stats.json` by its own script.
const STATS_PAGE: &str = include_str!("stats.html");

/// What the page may load: nothing but itself and `stats.json`.
const STATS_PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One operator route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    Metrics,
    StatsJson,
    StatsPage,
}

impl AdminRoute {
    pub fn of(path: &str) -> Option<Self> {
        match path {
            "/metrics" => Some(AdminRoute::Metrics),
            "/stats.json" => Some(AdminRoute::StatsJson),
            "/stats" => Some(AdminRoute::StatsPage),
            _ => None,
        }
    }
}

/// The operator routes' state.
pub struct Admin {
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    connections: Connections,
    allow: Vec<Cidr>,
    full_scrape: bool,
    summary: Mutex<Option<(Instant, Arc<Summary>)>>,
}

impl Admin {
    pub fn new(
        metrics: Arc<Metrics>,
        store: Arc<Store>,
        connections: Connections,
        allow: Vec<Cidr>,
        full_scrape: bool,
    ) -> Self {
        Self {
            metrics,
            store,
            connections,
            allow,
            full_scrape,
            summary: Mutex::new(None),
        }
    }

    /// Answers `route` for `client`, or 403 when it is outside the allowed
    /// networks.
    pub fn handle(&self, route: AdminRoute, client: IpAddr) -> HttpResponse {
        if !self.allow.iter().any(|net| net.contains(client)) {
            self.metrics.failure(Failure::Forbidden);
            let mut response = with_status(
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: {client} is not in stats_allow; add its network to \
                     stats_allow to see the tracker's statistics\n"
                )
                .into_bytes(),
            );
            set(&mut response, header::CACHE_CONTROL, "no-store");
            return response;
        }
        let (body, content_type) = match route {
            AdminRoute::Metrics => (
                self.metrics.render_prometheus(&self.gauges()).into_bytes(),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            AdminRoute::StatsJson => (self.stats_json().into_bytes(), "application/json"),
            AdminRoute::StatsPage => (STATS_PAGE.as_bytes().to_vec(), "text/html; charset=utf-8"),
        };
        let mut response = with_status(StatusCode::OK, body);
        set(&mut response, header::CONTENT_TYPE, content_type);
        set(&mut response, header::CACHE_CONTROL, "no-store");
        if route == AdminRoute::StatsPage {
            set(
                &mut response,
                header::CONTENT_SECURITY_POLICY,
                STATS_PAGE_CSP,
            );
            set(&mut response, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        }
        response
    }

    /// The store summary, recomputed at most once per [`SUMMARY_TTL`].
    fn summary(&self) -> Arc<Summary> {
        let Ok(mut cached) = self.summary.lock() else {
            return Arc::new(self.store.summary(TOP_TORRENTS).unwrap_or_default());
        };
        if let Some((at, summary)) = cached.as_ref()
            && at.elapsed() < SUMMARY_TTL
        {
            return summary.clone();
        }
        // A shared store's totals are its latest periodic aggregate; zeros
        // (and `store.totals_known: false`) before the first.
        let summary = Arc::new(self.store.summary(TOP_TORRENTS).unwrap_or_default());
        *cached = Some((Instant::now(), summary.clone()));
        summary
    }

    fn gauges(&self) -> Gauges {
        let summary = self.summary();
        Gauges {
            torrents: summary.torrents as u64,
            seeders: summary.seeders,
            leechers: summary.leechers,
            downloads: summary.downloads,
            connections_open: self.connections.count() as u64,
            connections_accepted: self.connections.accepted(),
            connections_refused: self.connections.refused(),
        }
    }

    /// `GET /stats.json`.
    fn stats_json(&self) -> String {
        let summary = self.summary();
        let totals = self.metrics.totals();
        let now = Sample {
            at: unix_now(),
            announces: totals.of(Request::Announce),
            scrapes: totals.of(Request::Scrape) + totals.of(Request::FullScrape),
        };
        let history = self.metrics.history();
        let uptime = self.metrics.uptime().as_secs_f64();
        let (announce_rate, scrape_rate) = rates(&history, now, uptime);
        let build = self.metrics.build();
        let failures: u64 = totals.failures.iter().sum();
        let peers = |family: usize| summary.seeders[family] + summary.leechers[family];
        let top: Vec<serde_json::Value> = summary
            .top
            .iter()
            .map(|(hash, counts)| {
                serde_json::json!({
                    "info_hash": format!("{hash:?}"),
                    "seeders": counts.complete,
                    "leechers": counts.incomplete,
                    "downloads": counts.downloaded,
                })
            })
            .collect();
        let history: Vec<serde_json::Value> = history
            .iter()
            .map(|s| serde_json::json!([s.at, s.announces, s.scrapes]))
            .collect();
        serde_json::json!({
            "version": build.version,
            "reactor": build.reactor,
            "reactor_detail": build.reactor_detail,
            "workers": build.workers,
            "store": {
                "backend": self.store.backend(),
                "totals_known": self.store.memory().is_some() || self.store.summary(0).is_some(),
            },
            "uptime_seconds": uptime.floor(),
            "torrents": summary.torrents,
            "peers": { "ipv4": peers(0), "ipv6": peers(1), "total": peers(0) + peers(1) },
            "seeders": summary.seeders[0] + summary.seeders[1],
            "leechers": summary.leechers[0] + summary.leechers[1],
            "downloads": summary.downloads,
            "requests": {
                "announces": now.announces,
                "scrapes": now.scrapes,
                "failures": failures,
                "http": {
                    "announces": totals.of_transport(Transport::Http, Request::Announce),
                    "scrapes": totals.of_transport(Transport::Http, Request::Scrape)
                        + totals.of_transport(Transport::Http, Request::FullScrape),
                },
                "udp": {
                    "connects": totals.of_transport(Transport::Udp, Request::Connect),
                    "announces": totals.of_transport(Transport::Udp, Request::Announce),
                    "scrapes": totals.of_transport(Transport::Udp, Request::Scrape),
                    "bad_datagrams": totals.udp_problems.iter().flatten().sum::<u64>(),
                },
            },
            "requests_per_second": {
                "announces": round2(announce_rate),
                "scrapes": round2(scrape_rate),
            },
            "connections": {
                "open": self.connections.count(),
                "accepted": self.connections.accepted(),
            },
            "full_scrape": self.full_scrape,
            "history_columns": ["unix_seconds", "announces", "scrapes"],
            "history": history,
            "top_torrents": top,
        })
        .to_string()
    }
}

fn set(response: &mut HttpResponse, name: header::HeaderName, value: &'static str) {
    response
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Announces and scrapes per second over about the last minute: from the
/// newest sample at least a minute old (or the oldest one) to `now`; before
/// the first sample, the average since start.
fn rates(history: &[Sample], now: Sample, uptime: f64) -> (f64, f64) {
    let base = history
        .iter()
        .rev()
        .find(|s| now.at.saturating_sub(s.at) >= 60)
        .or_else(|| history.first())
        .filter(|s| now.at > s.at);
    match base {
        Some(base) => {
            let seconds = (now.at - base.at) as f64;
            (
                now.announces.saturating_sub(base.announces) as f64 / seconds,
                now.scrapes.saturating_sub(base.scrapes) as f64 / seconds,
            )
        }
        None if uptime > 0.0 => (now.announces as f64 / uptime, now.scrapes as f64 / uptime),
        None => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, announces: u64) -> Sample {
        Sample {
            at,
            announces,
            scrapes: announces / 10,
        }
    }

    #[test]
    fn rates_use_the_sample_a_minute_back() {
        let history: Vec<Sample> = (0..30).map(|i| sample(1000 + i * 5, i * 500)).collect();
        // Now: t=1150, 15,000 announces; the sample at t=1090 has 9,000.
        let (announces, scrapes) = rates(&history, sample(1150, 15_000), 150.0);
        assert_eq!(announces, 100.0);
        assert_eq!(scrapes, 10.0);
    }

    #[test]
    fn rates_before_a_minute_of_history_and_before_any() {
        let history = [sample(1000, 0), sample(1005, 50)];
        assert_eq!(rates(&history, sample(1010, 200), 10.0).0, 20.0);
        assert_eq!(rates(&[], sample(1010, 200), 4.0).0, 50.0);
        assert_eq!(rates(&[], sample(1010, 0), 0.0).0, 0.0);
    }

    #[test]
    fn admin_paths_are_exact() {
        assert_eq!(AdminRoute::of("/metrics"), Some(AdminRoute::Metrics));
        assert_eq!(AdminRoute::of("/stats"), Some(AdminRoute::StatsPage));
        assert_eq!(AdminRoute::of("/stats.json"), Some(AdminRoute::StatsJson));
        assert_eq!(AdminRoute::of("/stats/"), None);
        assert_eq!(AdminRoute::of("/metricsx"), None);
    }
}
