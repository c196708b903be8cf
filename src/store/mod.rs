//! The swarm store: the interface the tracker core asks, and its two
//! backends.
//!
//! [`Store`] is either the in-memory store ([`memory`], the embedded
//! default: sharded maps in this process, answered synchronously on the
//! calling thread) or the shared store on Redis ([`redis`], for several
//! tracker nodes serving the same swarms: answered asynchronously, through
//! a [`Pending`] future, by a store thread that owns the connections). Both
//! apply the same rules: who a peer is, seeders get leechers only, the
//! announcer is never in its own list, own address family first, a
//! completion counted once per peer, peers forgotten after the peer TTL.
//! The store knows nothing of HTTP, UDP or bencode.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::protocol::{AnnounceRequest, InfoHash, PeerSet, SwarmCounts};
pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};

/// How the store behaves; see [`crate::config::Config`] for the defaults.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Seconds after its last announce that a peer is forgotten.
    pub peer_ttl: u32,
    /// Torrents with peers the store holds at most; announces that would
    /// create another are refused. Bounds memory under a flood of hashes.
    pub max_torrents: usize,
    /// Peers one torrent holds at most; new peers beyond it are refused
    /// (peers already in the swarm keep announcing).
    pub max_peers_per_torrent: usize,
    /// Keep no peer ids (memory store): a peer is its address and port,
    /// and answers carry no ids.
    pub compact_only: bool,
}

impl StoreConfig {
    /// No limits but the TTL: for tests and benchmarks.
    pub fn unlimited(peer_ttl: u32) -> Self {
        Self {
            peer_ttl,
            max_torrents: usize::MAX,
            max_peers_per_torrent: usize::MAX,
            compact_only: false,
        }
    }
}

/// Why the store turned an announce away; `Display` is the failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("tracker is full: it takes no new torrents now, try again later")]
    TrackerFull,
    #[error("this torrent's swarm is full: try again later")]
    SwarmFull,
    /// The shared store holds at most 128 peers of one IP address in one
    /// swarm (they share one field every announce from that IP reads).
    #[error("too many peers from your address in this swarm: try again later")]
    AddressFull,
    /// The shared store did not answer in time, or failed.
    #[error("tracker storage unavailable, try again later")]
    Unavailable,
}

/// Totals over the whole store, for stats and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Torrents with peers.
    pub torrents: usize,
    /// Seeders and leechers, `[ipv4, ipv6]`.
    pub seeders: [u64; 2],
    pub leechers: [u64; 2],
    /// Completed downloads of the torrents with peers.
    pub downloads: u64,
    /// The torrents with the most peers, largest first.
    pub top: Vec<(InfoHash, SwarmCounts)>,
}

/// What one expiry sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub peers: usize,
    pub torrents: usize,
}

/// The storage backend, chosen at start (`--store`).
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

/// What an announce gets from the store: at once (memory, the peers written
/// into the caller's set), or later (a shared store, the peers in a set of
/// their own).
pub enum Announce {
    Done(Result<SwarmCounts, Refusal>),
    Pending(Pending<(SwarmCounts, PeerSet)>),
}

/// What a scrape gets from the store: at once (appended to the caller's
/// list), or later.
pub enum Scrape {
    Done,
    Pending(Pending<Vec<(InfoHash, SwarmCounts)>>),
}

impl Store {
    /// The backend's name, as `--store` spells it.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// The in-memory store, when that is the backend: the state file, the
    /// expiry sweep and the full scrape work on it alone.
    pub fn memory(&self) -> Option<&MemoryStore> {
        match self {
            Store::Memory(store) => Some(store),
            Store::Redis(_) => None,
        }
    }

    /// Records an announce from `ip` (canonical: IPv4-mapped IPv6 folded to
    /// IPv4) at coarse time `now` and samples peers for it; the memory
    /// store writes them into `out`.
    pub fn announce(
        &self,
        request: &AnnounceRequest,
        ip: IpAddr,
        now: u32,
        out: &mut PeerSet,
    ) -> Announce {
        match self {
            Store::Memory(store) => Announce::Done(store.announce(request, ip, now, out)),
            Store::Redis(store) => Announce::Pending(store.announce(request, ip)),
        }
    }

    /// The counts of each of `hashes`, in order; the memory store appends
    /// them to `out`.
    pub fn scrape(&self, hashes: &[InfoHash], out: &mut Vec<(InfoHash, SwarmCounts)>) -> Scrape {
        match self {
            Store::Memory(store) => {
                store.scrape(hashes, out);
                Scrape::Done
            }
            Store::Redis(store) => Scrape::Pending(store.scrape(hashes)),
        }
    }

    /// Drops the peers of every torrent `keep` refuses (their snatch counts
    /// stay); how many torrents. A shared store is walked: call it from a
    /// plain thread.
    pub fn purge(&self, keep: redis::Keep) -> Result<usize, Refusal> {
        match self {
            Store::Memory(store) => Ok(store.purge(|hash| keep(hash))),
            Store::Redis(store) => store.purge(keep),
        }
    }

    /// Totals for stats: walked now (memory), or the shared store's latest
    /// periodic aggregate (`None` before the first).
    pub fn summary(&self, top: usize) -> Option<Summary> {
        match self {
            Store::Memory(store) => Some(store.summary(top)),
            Store::Redis(store) => store.summary(),
        }
    }
}

/// An answer a store thread will give: resolves to the answer, or to
/// [`Refusal::Unavailable`] if the thread gave none (its deadline passed,
/// the storage failed, or it is gone). It needs no particular runtime, so
/// every reactor can await it.
pub struct Pending<T>(PendingState<T>);

enum PendingState<T> {
    Waiting(tokio::sync::oneshot::Receiver<Result<T, Refusal>>),
    Failed(Refusal),
    Done,
}

impl<T> Pending<T> {
    pub(crate) fn waiting(rx: tokio::sync::oneshot::Receiver<Result<T, Refusal>>) -> Self {
        Self(PendingState::Waiting(rx))
    }

    /// An answer known at once (e.g. the store's queue is full).
    pub(crate) fn failed(refusal: Refusal) -> Self {
        Self(PendingState::Failed(refusal))
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, Refusal>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            PendingState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(answer) => {
                    self.0 = PendingState::Done;
                    Poll::Ready(answer.unwrap_or(Err(Refusal::Unavailable)))
                }
            },
            PendingState::Failed(refusal) => {
                let refusal = *refusal;
                self.0 = PendingState::Done;
                Poll::Ready(Err(refusal))
            }
            PendingState::Done => Poll::Ready(Err(Refusal::Unavailable)),
        }
    }
}
