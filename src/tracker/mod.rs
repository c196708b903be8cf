//! The tracker core: the rules every transport shares.
//!
//! [`Core`] owns what an announce or a scrape means whatever carried it:
//! the access list, the passkey check, the store call, the interval and
//! `min interval` sent, the scrape cap, and the outcome counted in metrics.
//! It takes typed requests ([`AnnounceRequest`], info hashes) and the
//! client's address and returns typed answers or a typed [`Refusal`]. The
//! HTTP and UDP front ends parse and encode; this module knows neither, nor
//! any socket.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::access::AccessList;
use crate::clock::Clock;
use crate::metrics::{Failure, Family, Metrics, Request, Transport};
use crate::passkeys::{PasskeyError, Passkeys};
use crate::protocol::{AnnounceOptions, AnnounceRequest, InfoHash, PeerSet, SwarmCounts};
use crate::store::{self, Store};

/// The rules an operator sets for every transport.
#[derive(Debug, Clone)]
pub struct Rules {
    /// numwant's default and cap, and whether a claimed address counts.
    pub announce: AnnounceOptions,
    /// Seconds clients are asked to wait between announces.
    pub interval: u32,
    /// Seconds clients must wait at least between announces.
    pub min_interval: u32,
    /// Most distinct info hashes answered in one scrape.
    pub max_scrape_hashes: usize,
}

/// Why the core refused a request. Its text is the failure reason (HTTP)
/// or the error message (UDP).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("torrent not allowed on this tracker")]
    NotAllowed,
    #[error("{0}")]
    Store(crate::store::Refusal),
    #[error("this tracker is private: use the announce URL with your passkey")]
    NoPasskey,
    #[error("{0}")]
    Passkey(PasskeyError),
}

impl Refusal {
    /// The metric label of the refusal.
    pub fn failure(&self) -> Failure {
        match self {
            Refusal::NotAllowed => Failure::TorrentNotAllowed,
            Refusal::Store(crate::store::Refusal::TrackerFull) => Failure::TrackerFull,
            Refusal::Store(crate::store::Refusal::SwarmFull) => Failure::SwarmFull,
            Refusal::Store(crate::store::Refusal::Unavailable) => Failure::StoreUnavailable,
            Refusal::Store(crate::store::Refusal::AddressFull) => Failure::AddressFull,
            Refusal::NoPasskey => Failure::NoPasskey,
            Refusal::Passkey(_) => Failure::BadPasskey,
        }
    }
}

/// What an announce gets back besides the peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The swarm's counts, the announcer included.
    pub counts: SwarmCounts,
    /// The interval to send, with its jitter.
    pub interval: u32,
    pub min_interval: u32,
}

/// An answer now, or a future one: the memory store answers on the calling
/// thread; a shared store answers later, and the front end awaits it.
pub enum Answer<Now, Later> {
    Now(Now),
    Later(Pin<Box<dyn Future<Output = Later> + Send>>),
}

/// What an announce gets: at once (the peers in the caller's set), or
/// later with a set of its own.
pub type Announcing = Answer<Result<Announced, Refusal>, Result<(Announced, PeerSet), Refusal>>;

/// What a scrape gets: at once (appended to the caller's list), or later.
pub type Scraping = Answer<(), Result<Vec<(InfoHash, SwarmCounts)>, Refusal>>;

/// The tracker's shared state and rules, one per process, behind every
/// front end.
pub struct Core {
    store: Arc<Store>,
    clock: Clock,
    metrics: Arc<Metrics>,
    rules: Rules,
    access: Option<Arc<AccessList>>,
    passkeys: Option<Arc<Passkeys>>,
}

impl Core {
    pub fn new(store: Arc<Store>, clock: Clock, metrics: Arc<Metrics>, rules: Rules) -> Self {
        Self {
            store,
            clock,
            metrics,
            rules,
            access: None,
            passkeys: None,
        }
    }

    /// Serves only the torrents `list` allows.
    pub fn with_access_list(mut self, list: Arc<AccessList>) -> Self {
        self.access = Some(list);
        self
    }

    /// Private mode: every request must carry one of `keys`.
    pub fn with_passkeys(mut self, keys: Arc<Passkeys>) -> Self {
        self.passkeys = Some(keys);
        self
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether requests must carry a passkey.
    pub fn is_private(&self) -> bool {
        self.passkeys.is_some()
    }

    /// In private mode, whether `key` (from the request's path) is valid;
    /// in public mode every request passes and a key means nothing.
    pub fn check_passkey(&self, key: Option<&[u8]>) -> Result<(), Refusal> {
        match (&self.passkeys, key) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(Refusal::NoPasskey),
            (Some(keys), Some(key)) => keys.check(key).map_err(Refusal::Passkey),
        }
    }

    /// Whether the access list (if any) lets `hash` through.
    pub fn allowed(&self, hash: &InfoHash) -> bool {
        self.access.as_ref().is_none_or(|list| list.allows(hash))
    }

    /// Records `request` from `client` (at `peer_ip`, its own address unless
    /// the transport lets it claim another) in its swarm and samples peers
    /// for it: into `peers` when the store answers at once.
    pub fn announce(
        &self,
        request: &AnnounceRequest,
        peer_ip: IpAddr,
        peers: &mut PeerSet,
    ) -> Announcing {
        peers.clear();
        if !self.allowed(&request.info_hash) {
            return Answer::Now(Err(Refusal::NotAllowed));
        }
        let (interval, min_interval) = (self.jittered_interval(), self.rules.min_interval);
        let announced = move |counts| Announced {
            counts,
            interval,
            min_interval,
        };
        match self
            .store
            .announce(request, peer_ip, self.clock.now(), peers)
        {
            store::Announce::Done(result) => {
                Answer::Now(result.map(announced).map_err(Refusal::Store))
            }
            store::Announce::Pending(pending) => Answer::Later(Box::pin(async move {
                let (counts, peers) = pending.await.map_err(Refusal::Store)?;
                Ok((announced(counts), peers))
            })),
        }
    }

    /// The configured interval plus up to 5% random jitter, so that clients
    /// started together drift apart instead of announcing in waves.
    fn jittered_interval(&self) -> u32 {
        let interval = self.rules.interval;
        interval.saturating_add(fastrand::u32(0..=interval / 20))
    }

    /// The counts of each of `hashes`, in order (appended to `out` when the
    /// store answers at once); a torrent the access list refuses looks
    /// unknown (zeros).
    pub fn scrape(&self, hashes: &[InfoHash], out: &mut Vec<(InfoHash, SwarmCounts)>) -> Scraping {
        let start = out.len();
        match self.store.scrape(hashes, out) {
            store::Scrape::Done => {
                self.hide_refused(&mut out[start..]);
                Answer::Now(())
            }
            store::Scrape::Pending(pending) => {
                let access = self.access.clone();
                Answer::Later(Box::pin(async move {
                    let mut files = pending.await.map_err(Refusal::Store)?;
                    if let Some(list) = access {
                        hide(&list, &mut files);
                    }
                    Ok(files)
                }))
            }
        }
    }

    fn hide_refused(&self, files: &mut [(InfoHash, SwarmCounts)]) {
        if let Some(list) = &self.access {
            hide(list, files);
        }
    }

    /// Counts one answered request of `transport`: its kind, the client's
    /// address family and, if refused, why.
    pub fn count(
        &self,
        transport: Transport,
        request: Request,
        client: IpAddr,
        failure: Option<Failure>,
    ) {
        self.metrics
            .request(transport, request, Family::of(client), failure);
    }
}

/// Zeros the counts of the torrents `list` refuses.
fn hide(list: &AccessList, files: &mut [(InfoHash, SwarmCounts)]) {
    for (hash, counts) in files {
        if !list.allows(hash) {
            *counts = SwarmCounts::default();
        }
    }
}
