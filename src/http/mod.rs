//! The HTTP face of the tracker: a hyper service that routes requests.
//!
//! [`Tracker`] turns one request (method, target, client address) into a
//! response: it routes `/announce` and `/scrape`, calls the [`protocol`]
//! parsers, asks the [`Store`], encodes the answer and sets the headers.
//! [`TrackerService`] wraps it as a per-connection hyper service that any
//! reactor can drive. This layer knows nothing of how peers are stored or of
//! which runtime runs it.
//!
//! [`protocol`]: crate::protocol

pub mod client_addr;
mod routes;

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::access::AccessList;
use crate::clock::Clock;
use crate::passkeys::Passkeys;
use crate::protocol::{AnnounceOptions, PeerSet, encode_failure};
use crate::store::Store;

/// The response type every route produces.
pub type HttpResponse = Response<Full<Bytes>>;

/// What the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub announce: AnnounceOptions,
    /// Seconds clients are asked to wait between announces.
    pub interval: u32,
    /// Seconds clients must wait at least between announces.
    pub min_interval: u32,
    /// Most distinct info hashes answered in one scrape.
    pub max_scrape_hashes: usize,
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
}

/// The shared request handler: store, clock and settings.
pub struct Tracker {
    store: Arc<Store>,
    clock: Clock,
    config: HttpConfig,
    access: Option<Arc<AccessList>>,
    passkeys: Option<Arc<Passkeys>>,
}

thread_local! {
    /// Peer buffers reused by every announce on this thread.
    static PEERS: RefCell<PeerSet> = RefCell::new(PeerSet::default());
}

impl Tracker {
    pub fn new(store: Arc<Store>, clock: Clock, config: HttpConfig) -> Self {
        Self {
            store,
            clock,
            config,
            access: None,
            passkeys: None,
        }
    }

    /// Serves only the torrents `list` allows.
    pub fn with_access_list(mut self, list: Arc<AccessList>) -> Self {
        self.access = Some(list);
        self
    }

    /// Private mode: requests must carry one of `keys` in the path.
    pub fn with_passkeys(mut self, keys: Arc<Passkeys>) -> Self {
        self.passkeys = Some(keys);
        self
    }

    /// Whether the access list (if any) lets `hash` through.
    fn allowed(&self, hash: &crate::protocol::InfoHash) -> bool {
        self.access.as_ref().is_none_or(|list| list.allows(hash))
    }

    /// Answers one request from `client` (a canonical address: an IPv4-mapped
    /// IPv6 address must already be folded to IPv4).
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &[u8],
        client: IpAddr,
    ) -> HttpResponse {
        let (route, passkey) = match self.route(path) {
            Routing::To(route, passkey) => (route, passkey),
            Routing::Answer(response) => return response,
        };
        if method != Method::GET && method != Method::HEAD {
            let mut response = failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use GET",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if let (Some(keys), Some(key)) = (&self.passkeys, passkey)
            && let Err(refused) = keys.check(key.as_bytes())
        {
            return failure(StatusCode::OK, &refused.to_string());
        }
        let body = match route {
            Route::Announce => PEERS.with_borrow_mut(|peers| self.announce(query, client, peers)),
            Route::Scrape => self.scrape(query),
        };
        ok(body)
    }
}

enum Route {
    Announce,
    Scrape,
}

/// Where a path leads: a route (with the passkey in it, in private mode), or
/// straight to an answer.
enum Routing<'p> {
    To(Route, Option<&'p str>),
    Answer(HttpResponse),
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
            return Routing::Answer(response);
        }
        let not_found = || {
            let (announce, scrape) = (&config.announce_path, &config.scrape_path);
            let reason = if self.passkeys.is_some() {
                format!(
                    "not found: this tracker answers {announce}/<passkey> and {scrape}/<passkey>"
                )
            } else {
                format!("not found: this tracker answers {announce} and {scrape}")
            };
            failure(StatusCode::NOT_FOUND, &reason)
        };
        let (route, rest) = if let Some(rest) = path.strip_prefix(config.announce_path.as_str()) {
            (Route::Announce, rest)
        } else if let Some(rest) = path.strip_prefix(config.scrape_path.as_str()) {
            (Route::Scrape, rest)
        } else {
            return Routing::Answer(not_found());
        };
        match (&self.passkeys, rest) {
            (None, "") => Routing::To(route, None),
            (Some(_), "") => Routing::Answer(failure(
                StatusCode::OK,
                "this tracker is private: use the announce URL with your passkey",
            )),
            (Some(_), rest) => match rest.strip_prefix('/') {
                Some(key) if !key.is_empty() => Routing::To(route, Some(key)),
                _ => Routing::Answer(not_found()),
            },
            (None, _) => Routing::Answer(not_found()),
        }
    }
}

/// A tracker response: always `text/plain`, also for failures (clients read
/// `failure reason` from a 200 response; BEP 3 defines no other signal).
fn ok(body: Vec<u8>) -> HttpResponse {
    with_status(StatusCode::OK, body)
}

fn failure(status: StatusCode, reason: &str) -> HttpResponse {
    with_status(status, encode_failure(reason))
}

fn with_status(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The address a peer is recorded under: the socket's, with IPv4-mapped
/// IPv6 (`::ffff:a.b.c.d`) folded to IPv4 so one host is one peer.
pub fn canonical(addr: SocketAddr) -> IpAddr {
    addr.ip().to_canonical()
}

/// One connection's service: the shared [`Tracker`] plus who is on the
/// other end.
#[derive(Clone)]
pub struct TrackerService {
    tracker: Arc<Tracker>,
    client: IpAddr,
}

impl TrackerService {
    pub fn new(tracker: Arc<Tracker>, remote: SocketAddr) -> Self {
        Self {
            tracker,
            client: canonical(remote),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for TrackerService {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Ready<Result<HttpResponse, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let client = match &self.tracker.config.proxy {
            None => self.client,
            Some(proxy) => match proxy.client(self.client, request.headers()) {
                Ok(client) => client,
                Err(reason) => return ready(Ok(failure(StatusCode::OK, &reason))),
            },
        };
        let uri = request.uri();
        let query = uri.query().unwrap_or("").as_bytes();
        ready(Ok(self.tracker.handle(
            request.method(),
            uri.path(),
            query,
            client,
        )))
    }
}
