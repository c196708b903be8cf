//! The HTTP face of the tracker: the handler that routes requests.
//!
//! [`Tracker`] turns one request (method, target, headers, client address)
//! into a response: it routes `/announce` and `/scrape`, calls the
//! [`protocol`] parsers, asks the tracker [`Core`] (access list, passkeys,
//! store, counts), and encodes the answer with its headers. The operator routes
//! (`/metrics`, `/stats`) are in [`admin`], full scrape in [`full_scrape`].
//! [`TrackerService`] wraps it all as the per-connection [`Handler`] that any
//! reactor drives. This layer knows nothing of how peers are stored or of
//! which runtime runs it.
//!
//! [`protocol`]: crate::protocol

pub mod admin;
pub mod client_addr;
pub mod driver;
pub mod full_scrape;
mod routes;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Either};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::metrics::{Failure, Family, Metrics, Transport};
use crate::protocol::{PeerSet, encode_failure};
use crate::reactor::ConnectionInfo;
use crate::tracker::Answer;
use crate::tracker::Core;
use admin::{Admin, AdminRoute};
use driver::{Handler, Headers, Reply, RequestHead, ResponseBody};

/// The response type every route produces.
pub type HttpResponse = Response<ResponseBody>;

/// What the HTTP layer needs from the configuration (the rules shared
/// with UDP are the core's).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Sent as `tracker id` in every announce response when set.
    pub tracker_id: Option<Vec<u8>>,
    /// Reverse proxies whose client-address header is believed.
    pub proxy: Option<client_addr::ProxyConfig>,
    /// Path of the announce route, e.g. `/announce` or `/announce.php`.
    pub announce_path: String,
    /// Path of the scrape route.
    pub scrape_path: String,
    /// Where `GET /` redirects (302), if anywhere.
    pub root_redirect: Option<String>,
    /// Largest request head, named in the failure reason of a larger one.
    pub max_request_bytes: usize,
}

/// The shared request handler: the tracker core, the HTTP settings and the
/// operator routes.
pub struct Tracker {
    core: Arc<Core>,
    config: HttpConfig,
    metrics: Arc<Metrics>,
    admin: Option<Admin>,
    /// Listeners (by index, see `ConnectionInfo::listener`) that serve only
    /// the operator routes; empty: every listener serves everything.
    admin_listeners: std::ops::Range<usize>,
    full_scrape: Option<full_scrape::RateLimit>,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Tracker and operator routes.
    All,
    /// Only the operator routes (a `metrics_listen` listener).
    Admin,
    /// Only the tracker routes (the others, when `metrics_listen` is set).
    Tracker,
}

thread_local! {
    /// Peer buffers reused by every announce on this thread.
    static PEERS: RefCell<PeerSet> = RefCell::new(PeerSet::default());
}

impl Tracker {
    pub fn new(core: Arc<Core>, config: HttpConfig) -> Self {
        Self {
            metrics: core.metrics().clone(),
            core,
            config,
            admin: None,
            admin_listeners: 0..0,
            full_scrape: None,
        }
    }

    /// Serves `/metrics`, `/stats.json` and `/stats` (to the networks
    /// `admin` allows); with `listeners`, only on those and nowhere else.
    pub fn with_admin(mut self, admin: Admin, listeners: std::ops::Range<usize>) -> Self {
        self.admin = Some(admin);
        self.admin_listeners = listeners;
        self
    }

    /// Answers scrapes without `info_hash` with every torrent, one per
    /// client address per `limit`'s interval.
    pub fn with_full_scrape(mut self, limit: full_scrape::RateLimit) -> Self {
        self.full_scrape = Some(limit);
        self
    }

    /// The routes a connection accepted by listener `index` may use.
    pub fn surface(&self, index: usize) -> Surface {
        if self.admin_listeners.is_empty() {
            Surface::All
        } else if self.admin_listeners.contains(&index) {
            Surface::Admin
        } else {
            Surface::Tracker
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The route `path` leads to, as a name safe to log.
    fn route_name(&self, path: &str) -> &'static str {
        if let Some(route) = AdminRoute::of(path) {
            return match route {
                AdminRoute::Metrics => "metrics",
                AdminRoute::StatsJson => "stats.json",
                AdminRoute::StatsPage => "stats",
            };
        }
        match self.route(path) {
            Routing::To(Route::Announce, _) => "announce",
            Routing::To(Route::Scrape, _) => "scrape",
            Routing::Answer(..) => "other",
        }
    }

    /// Answers one request from `client` (a canonical address: an IPv4-mapped
    /// IPv6 address must already be folded to IPv4) that came in on a
    /// listener serving `surface`.
    pub fn handle(&self, head: &RequestHead<'_>, client: IpAddr, surface: Surface) -> Reply {
        if surface != Surface::Tracker
            && let (Some(admin), Some(route)) = (&self.admin, AdminRoute::of(head.path))
        {
            return Reply::Now(
                self.only_get(head.method)
                    .unwrap_or_else(|| admin.handle(route, client)),
            );
        }
        if surface == Surface::Admin {
            self.metrics.failure(Failure::NotFound);
            return Reply::Now(failure(
                StatusCode::NOT_FOUND,
                "not found: this listener serves /metrics, /stats and /stats.json",
            ));
        }
        let (route, passkey) = match self.route(head.path) {
            Routing::To(route, passkey) => (route, passkey),
            Routing::Answer(response, refusal) => {
                if let Some(refusal) = refusal {
                    self.metrics.failure(refusal);
                }
                return Reply::Now(response);
            }
        };
        if let Some(response) = self.only_get(head.method) {
            return Reply::Now(response);
        }
        if let Err(refused) = self.core.check_passkey(passkey.map(str::as_bytes)) {
            self.core.count(
                Transport::Http,
                route.into(),
                client,
                Some(refused.failure()),
            );
            return Reply::Now(failure(StatusCode::OK, &refused.to_string()));
        }
        let answer = match route {
            Route::Announce => {
                PEERS.with_borrow_mut(|peers| self.announce(head.query, client, peers))
            }
            Route::Scrape => match self.scrape(head.query) {
                Err(crate::protocol::Error::FullScrapeDisabled) if self.full_scrape.is_some() => {
                    return Reply::Now(self.full_scrape(client, head.headers));
                }
                Err(error) => Answer::Now(Err(refusal(&error))),
                Ok(answer) => answer,
            },
        };
        match answer {
            Answer::Now(answer) => {
                Reply::Plain(count_and_answer(&self.core, route, client, answer))
            }
            Answer::Later(later) => {
                let core = self.core.clone();
                Reply::Later(Box::pin(async move {
                    count_and_answer(&core, route, client, later.await)
                }))
            }
        }
    }

    /// 405 for anything but GET and HEAD.
    fn only_get(&self, method: &Method) -> Option<HttpResponse> {
        if method == Method::GET || method == Method::HEAD {
            return None;
        }
        self.metrics.failure(Failure::MethodNotAllowed);
        let mut response = failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        Some(response)
    }

    /// A scrape without `info_hash`, when enabled: every torrent, streamed,
    /// gzip-compressed if the client takes it, rate-limited per address.
    fn full_scrape(&self, client: IpAddr, headers: Headers<'_>) -> HttpResponse {
        use crate::metrics::Request as Kind;
        let family = Family::of(client);
        let Some(limit) = &self.full_scrape else {
            return failure(StatusCode::OK, "full scrape is disabled");
        };
        if let Err(wait) = limit.admit(client, self.core.clock().now()) {
            self.metrics.request(
                Transport::Http,
                Kind::FullScrape,
                family,
                Some(Failure::FullScrapeLimited),
            );
            let reason = format!(
                "full scrape rate limit: one per {} seconds per address; try again in {wait} seconds",
                limit.interval()
            );
            let mut response = failure(StatusCode::TOO_MANY_REQUESTS, &reason);
            if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        self.metrics
            .request(Transport::Http, Kind::FullScrape, family, None);
        let gzip = full_scrape::accepts_gzip(headers);
        let body = full_scrape::FullScrapeBody::new(self.core.store().clone(), gzip);
        let mut response = Response::new(Either::Right(body.boxed_unsync()));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    }
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Announce,
    Scrape,
}

impl From<Route> for crate::metrics::Request {
    fn from(route: Route) -> Self {
        match route {
            Route::Announce => crate::metrics::Request::Announce,
            Route::Scrape => crate::metrics::Request::Scrape,
        }
    }
}

/// Counts a tracker route's outcome and makes its body (a `200 OK`
/// either way).
fn count_and_answer(
    core: &Core,
    route: Route,
    client: IpAddr,
    answer: Result<Vec<u8>, Refused>,
) -> Vec<u8> {
    let refused = answer.as_ref().err().map(|f| f.0);
    core.count(Transport::Http, route.into(), client, refused);
    answer.unwrap_or_else(|f| f.1)
}

/// A refused tracker request: the metric label and the bencoded reason.
pub(crate) struct Refused(Failure, Vec<u8>);

/// The refusal for a protocol error.
fn refusal(error: &crate::protocol::Error) -> Refused {
    use crate::protocol::Error as E;
    let kind = match error {
        E::Missing(_) => Failure::MissingParameter,
        E::Duplicate(_) => Failure::DuplicateParameter,
        E::BadEscape(_) => Failure::BadEscape,
        E::WrongLength(_) => Failure::WrongLength,
        E::NotANumber(_) => Failure::NotANumber,
        E::BadPort => Failure::BadPort,
        E::BadEvent => Failure::BadEvent,
        E::BadCompact => Failure::BadCompact,
        E::TooLong(..) => Failure::TooLong,
        E::BadIp(_) => Failure::BadIp,
        E::TooManyParameters(_) => Failure::TooManyParameters,
        E::FullScrapeDisabled => Failure::FullScrapeDisabled,
    };
    Refused(kind, encode_failure(&error.to_string()))
}

/// Where a path leads: a route (with the passkey in it, in private mode), or
/// straight to an answer (and the refusal to count, if it is one).
enum Routing<'p> {
    To(Route, Option<&'p str>),
    Answer(HttpResponse, Option<Failure>),
}

impl Tracker {
    /// Which route `path` is, and the passkey in it in private mode; or the
    /// response for a path that is neither (404, the root redirect, or the
    /// private-mode reminder).
    fn route<'p>(&self, path: &'p str) -> Routing<'p> {
        let config = &self.config;
        if path == "/"
            && let Some(url) = &config.root_redirect
            && let Ok(location) = HeaderValue::from_str(url)
        {
            let mut response = with_status(StatusCode::FOUND, Vec::new());
            response.headers_mut().insert(header::LOCATION, location);
            return Routing::Answer(response, None);
        }
        let not_found = || {
            let (announce, scrape) = (&config.announce_path, &config.scrape_path);
            let reason = if self.core.is_private() {
                format!(
                    "not found: this tracker answers {announce}/<passkey> and {scrape}/<passkey>"
                )
            } else {
                format!("not found: this tracker answers {announce} and {scrape}")
            };
            Routing::Answer(
                failure(StatusCode::NOT_FOUND, &reason),
                Some(Failure::NotFound),
            )
        };
        let (route, rest) = if let Some(rest) = path.strip_prefix(config.announce_path.as_str()) {
            (Route::Announce, rest)
        } else if let Some(rest) = path.strip_prefix(config.scrape_path.as_str()) {
            (Route::Scrape, rest)
        } else {
            return not_found();
        };
        match (self.core.is_private(), rest) {
            (false, "") => Routing::To(route, None),
            (true, "") => {
                let refused = crate::tracker::Refusal::NoPasskey;
                Routing::Answer(
                    failure(StatusCode::OK, &refused.to_string()),
                    Some(refused.failure()),
                )
            }
            (true, rest) => match rest.strip_prefix('/') {
                Some(key) if !key.is_empty() => Routing::To(route, Some(key)),
                _ => not_found(),
            },
            (false, _) => not_found(),
        }
    }
}

/// A bencoded `failure reason` with `status`, `text/plain` like every
/// tracker response (clients read `failure reason` from a 200 response;
/// BEP 3 defines no other signal).
fn failure(status: StatusCode, reason: &str) -> HttpResponse {
    with_status(status, encode_failure(reason))
}

fn with_status(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut response = driver::plain_response(body);
    *response.status_mut() = status;
    response
}

/// The address a peer is recorded under: the socket's, with IPv4-mapped
/// IPv6 (`::ffff:a.b.c.d`) folded to IPv4 so one host is one peer.
pub fn canonical(addr: SocketAddr) -> IpAddr {
    addr.ip().to_canonical()
}

/// One connection's service: the shared [`Tracker`], who is on the other
/// end, and which routes its listener serves.
#[derive(Clone)]
pub struct TrackerService {
    tracker: Arc<Tracker>,
    client: IpAddr,
    surface: Surface,
}

impl TrackerService {
    pub fn new(tracker: Arc<Tracker>, connection: ConnectionInfo) -> Self {
        let surface = tracker.surface(connection.listener);
        Self {
            tracker,
            client: canonical(connection.remote),
            surface,
        }
    }
}

impl Handler for TrackerService {
    fn handle(&self, head: &RequestHead<'_>) -> Reply {
        let started = Instant::now();
        let tracker = &self.tracker;
        let client = match &tracker.config.proxy {
            None => self.client,
            Some(proxy) => match proxy.client(self.client, head.headers) {
                Ok(client) => client,
                Err(reason) => {
                    tracker.metrics.failure(Failure::ProxyHeader);
                    return Reply::Now(failure(StatusCode::OK, &reason));
                }
            },
        };
        let reply = tracker.handle(head, client, self.surface);
        let status = match &reply {
            Reply::Plain(_) => 200,
            Reply::Now(response) => response.status().as_u16(),
            Reply::Later(_) => 0,
        };
        match reply {
            Reply::Plain(_) | Reply::Now(_) => {
                let took = started.elapsed();
                tracker.metrics.latency(took);
                // One line per request at debug level only: at info it
                // would cost throughput. The route is named, never the path
                // (it may hold a passkey) or the query.
                tracing::debug!(
                    %client,
                    method = %head.method,
                    route = tracker.route_name(head.path),
                    status,
                    micros = took.as_micros() as u64,
                    "request"
                );
                reply
            }
            Reply::Later(later) => {
                let metrics = tracker.metrics.clone();
                let (method, route) = (head.method.clone(), tracker.route_name(head.path));
                Reply::Later(Box::pin(async move {
                    let body = later.await;
                    let took = started.elapsed();
                    metrics.latency(took);
                    tracing::debug!(
                        %client,
                        %method,
                        route,
                        status = 200,
                        micros = took.as_micros() as u64,
                        "request"
                    );
                    body
                }))
            }
        }
    }

    /// An over-long head on a tracker route gets a failure reason a client
    /// can show; elsewhere the bare 431.
    fn too_large(&self, path: Option<&str>) -> HttpResponse {
        let tracker = &self.tracker;
        let route = path.map(|path| tracker.route(path));
        if self.surface == Surface::Admin || !matches!(route, Some(Routing::To(..))) {
            return with_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Vec::new());
        }
        tracker.metrics.failure(Failure::RequestTooLarge);
        failure(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!(
                "request too large: at most {} bytes of request line and headers",
                tracker.config.max_request_bytes
            ),
        )
    }
}
