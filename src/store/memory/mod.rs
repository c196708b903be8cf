//! The in-memory store (the embedded default): every torrent's peers and
//! counts in this process, shared by all workers.
//!
//! A [`SwarmMap`] from [`InfoHash`] to [`Swarm`], sharded so that announces
//! for different torrents rarely contend; each operation locks one shard for
//! the few hundred nanoseconds it takes and never across an `.await` (the
//! store is synchronous and knows nothing of HTTP or of the runtime).
//!
//! Torrents whose last peer leaves are dropped from the map; their snatch count
//! (`downloaded`) moves to a small side map of retired counts and comes back if
//! the torrent is announced again. Lock order is always swarms, then retired.
//!
//! Time is a coarse clock in whole seconds passed in by the caller
//! ([`crate::clock`]), so tests control it and the hot path makes no syscall.

mod block;
mod index;
mod map;
mod peers;
mod swarm;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use hashbrown::hash_table::Entry;

use super::{Expired, Refusal, StoreConfig, Summary};
use crate::protocol::{AnnounceRequest, Event, InfoHash, PeerSet, SwarmCounts};
use map::SwarmMap;
use peers::Clock;
use swarm::Swarm;

type Hasher = ahash::RandomState;

/// Shards in the torrent map. An expiry sweep (and a stats walk) holds one
/// shard's lock at a time, so a shard's share of the peers bounds how long an
/// announce can wait on a sweep: with 1,024 shards, 10M peers make about
/// 10,000 a shard (about a millisecond of sweeping at most). Empty shards
/// cost 128 bytes each.
const SHARDS: usize = 1024;

/// Peers an expiry sweep visits under one hold of a shard's lock when it
/// walks a large swarm (about half a millisecond at most): a swarm of 200,000
/// peers swept at once held its shard, and so one announce in ten of a
/// popular torrent mix, for tens of milliseconds (benches/soak.sh).
const SWEEP_STEP: usize = 4096;

/// Shards an expiry sweep goes through between two of its pauses (see
/// [`MemoryStore::expire_paced`]): 64 pauses a sweep.
const SHARDS_PER_PAUSE: usize = 16;

/// The store: the torrents' swarms, with peer ids kept (the default) or
/// not (`compact_only`: 8 bytes an IPv4 peer instead of 28).
pub struct MemoryStore {
    swarms: Swarms,
}

enum Swarms {
    WithIds(Held<20>),
    CompactOnly(Held<0>),
}

/// Runs `$body` with `$held` bound to the store's swarms, whichever kind.
macro_rules! held {
    ($self:ident, $held:ident => $body:expr) => {
        match &$self.swarms {
            Swarms::WithIds($held) => $body,
            Swarms::CompactOnly($held) => $body,
        }
    };
}

impl MemoryStore {
    pub fn new(config: StoreConfig) -> Self {
        let swarms = if config.compact_only {
            Swarms::CompactOnly(Held::new(config))
        } else {
            Swarms::WithIds(Held::new(config))
        };
        Self { swarms }
    }

    /// Records an announce from `ip` at coarse time `now` and fills `out`
    /// with peers for the client. `ip` must be canonical (IPv4-mapped IPv6
    /// folded to IPv4). Returns the swarm's counts, announcing peer included,
    /// or why the announce was refused (a limit is reached).
    pub fn announce(
        &self,
        req: &AnnounceRequest,
        ip: IpAddr,
        now: u32,
        out: &mut PeerSet,
    ) -> Result<SwarmCounts, Refusal> {
        held!(self, h => h.announce(req, ip, now, out))
    }

    /// The counts of one torrent; zeros for an unknown one.
    pub fn counts(&self, hash: &InfoHash) -> SwarmCounts {
        held!(self, h => h.counts(hash))
    }

    /// Appends the counts of each hash, in the given order, to `out`.
    pub fn scrape(&self, hashes: &[InfoHash], out: &mut Vec<(InfoHash, SwarmCounts)>) {
        out.extend(hashes.iter().map(|hash| (*hash, self.counts(hash))));
    }

    /// Forgets peers not seen for the peer TTL as of `now`, and drops the
    /// torrents that leaves empty (keeping their snatch counts).
    pub fn expire(&self, now: u32) -> Expired {
        self.expire_paced(now, &mut || {})
    }

    /// [`expire`](Self::expire), calling `pause` after every few shards and
    /// every step through a large swarm, with no lock held: the caller can
    /// spread a sweep over time there, so that a mass expiry (millions of
    /// peers gone stale together) does not take a core from the workers
    /// all at once.
    pub fn expire_paced(&self, now: u32, pause: &mut dyn FnMut()) -> Expired {
        held!(self, h => h.expire(now, pause))
    }

    /// Every non-zero snatch count, held or retired, sorted by hash: what
    /// the state file keeps. Locks one shard at a time.
    pub fn downloads(&self) -> Vec<(InfoHash, u64)> {
        held!(self, h => h.downloads())
    }

    /// Takes snatch counts back from a state file (at start, before any
    /// announce: a torrent already held keeps the larger count).
    pub fn restore(&self, counts: &[(InfoHash, u64)]) {
        held!(self, h => h.restore(counts))
    }

    /// Drops the peers of every torrent `keep` says no to (their snatch
    /// counts are kept); returns how many torrents were purged.
    pub fn purge(&self, keep: impl Fn(&InfoHash) -> bool) -> usize {
        held!(self, h => h.purge(keep))
    }

    /// Totals over every torrent and the `top` torrents with the most
    /// peers. Walks every shard (one read lock at a time): for stats, not
    /// the hot path.
    pub fn summary(&self, top: usize) -> Summary {
        held!(self, h => h.summary(top))
    }

    /// Appends the counts of every torrent with peers whose info hash's
    /// first two bytes (big-endian) fall in `prefixes`, sorted by hash: one
    /// slice of a full scrape, so that the whole list is never held at once.
    pub fn scrape_prefixes(
        &self,
        prefixes: std::ops::Range<u32>,
        out: &mut Vec<(InfoHash, SwarmCounts)>,
    ) {
        held!(self, h => h.scrape_prefixes(prefixes, out))
    }

    /// Torrents that currently have peers.
    pub fn torrents(&self) -> usize {
        held!(self, h => h.torrent_count.load(Ordering::Relaxed))
    }

    /// Peers across all torrents (walks every shard: for stats, not the hot path).
    pub fn peers(&self) -> usize {
        held!(self, h => {
            let mut peers = 0;
            h.swarms.for_each(|swarm| peers += swarm.peer_count());
            peers
        })
    }
}

/// The swarms of a store keeping `I` bytes of peer id per peer.
struct Held<const I: usize> {
    swarms: SwarmMap<I>,
    /// Snatch counts of torrents that currently have no peers.
    retired: DashMap<InfoHash, u64, Hasher>,
    /// Entries in `swarms`, kept beside the map because `DashMap::len`
    /// locks every shard.
    torrent_count: AtomicUsize,
    config: StoreConfig,
    clock: Clock,
}

impl<const I: usize> Held<I> {
    fn new(config: StoreConfig) -> Self {
        Self {
            swarms: SwarmMap::new(SHARDS),
            retired: DashMap::with_hasher_and_shard_amount(Hasher::new(), SHARDS),
            torrent_count: AtomicUsize::new(0),
            clock: Clock::new(config.peer_ttl),
            config,
        }
    }

    fn announce(
        &self,
        req: &AnnounceRequest,
        ip: IpAddr,
        now: u32,
        out: &mut PeerSet,
    ) -> Result<SwarmCounts, Refusal> {
        if req.event == Event::Stopped {
            return Ok(self.stop(req, ip));
        }
        let max_peers = self.config.max_peers_per_torrent;
        self.swarms.entry(&req.info_hash, |entry| match entry {
            Entry::Occupied(mut entry) => {
                entry
                    .get_mut()
                    .announce(req, ip, &self.clock, now, max_peers, out)
            }
            Entry::Vacant(entry) => {
                if self.torrent_count.load(Ordering::Relaxed) >= self.config.max_torrents {
                    return Err(Refusal::TrackerFull);
                }
                let downloaded = self.retired.remove(&req.info_hash).map_or(0, |(_, d)| d);
                let mut swarm = Swarm::new(req.info_hash, downloaded);
                let result = swarm.announce(req, ip, &self.clock, now, max_peers, out);
                if result.is_ok() {
                    entry.insert(swarm);
                    self.torrent_count.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.retire(req.info_hash, downloaded);
                }
                result
            }
        })
    }

    /// `event=stopped`: removes the peer; creates nothing for an unknown torrent.
    fn stop(&self, req: &AnnounceRequest, ip: IpAddr) -> SwarmCounts {
        self.swarms.entry(&req.info_hash, |entry| match entry {
            Entry::Occupied(mut entry) => {
                entry.get_mut().stop(req, ip);
                let counts = entry.get().counts();
                if entry.get().is_empty() {
                    let (swarm, _) = entry.remove();
                    self.torrent_count.fetch_sub(1, Ordering::Relaxed);
                    self.retire(req.info_hash, swarm.downloaded());
                }
                counts
            }
            Entry::Vacant(_) => SwarmCounts {
                downloaded: self.retired_downloads(&req.info_hash),
                ..SwarmCounts::default()
            },
        })
    }

    fn retire(&self, hash: InfoHash, downloaded: u64) {
        if downloaded > 0 {
            self.retired.insert(hash, downloaded);
        }
    }

    fn retired_downloads(&self, hash: &InfoHash) -> u64 {
        self.retired.get(hash).map_or(0, |d| *d)
    }

    /// The counts of one torrent; zeros for an unknown one.
    fn counts(&self, hash: &InfoHash) -> SwarmCounts {
        let counts = self.swarms.get(hash, |swarm| swarm.map(Swarm::counts));
        counts.unwrap_or_else(|| SwarmCounts {
            downloaded: self.retired_downloads(hash),
            ..SwarmCounts::default()
        })
    }

    /// Forgets peers not seen for the peer TTL as of `now`, and drops the
    /// torrents that leaves empty (keeping their snatch counts).
    fn expire(&self, now: u32, pause: &mut dyn FnMut()) -> Expired {
        let mut expired = Expired::default();
        // Swarms too large to sweep under one hold of their shard's lock are
        // swept after, in steps, the lock let go between them.
        let mut large = Vec::new();
        for shard in 0..self.swarms.shards() {
            self.swarms.retain_in(shard, |swarm| {
                if swarm.peer_count() > SWEEP_STEP {
                    large.push(*swarm.hash());
                    return true;
                }
                expired.peers += swarm.expire(&self.clock, now);
                if swarm.is_empty() {
                    expired.torrents += 1;
                    self.torrent_count.fetch_sub(1, Ordering::Relaxed);
                    self.retire(*swarm.hash(), swarm.downloaded());
                    false
                } else {
                    true
                }
            });
            if (shard + 1) % SHARDS_PER_PAUSE == 0 {
                pause();
            }
        }
        for hash in large {
            let mut cursor = [usize::MAX; 2];
            while let Some((removed, done)) = self.swarms.get_mut(&hash, |swarm| {
                swarm.expire_some(&self.clock, now, &mut cursor, SWEEP_STEP)
            }) {
                expired.peers += removed;
                if done {
                    break;
                }
                // Let the announces waiting on this shard go first.
                std::thread::yield_now();
                pause();
            }
            if let Some(swarm) = self.swarms.remove_if(&hash, Swarm::is_empty) {
                expired.torrents += 1;
                self.torrent_count.fetch_sub(1, Ordering::Relaxed);
                self.retire(hash, swarm.downloaded());
            }
        }
        expired
    }

    /// Every non-zero snatch count, held or retired, sorted by hash: what
    /// the state file keeps. Locks one shard at a time.
    fn downloads(&self) -> Vec<(InfoHash, u64)> {
        let mut counts: Vec<(InfoHash, u64)> = Vec::new();
        self.swarms.for_each(|swarm| {
            if swarm.downloaded() > 0 {
                counts.push((*swarm.hash(), swarm.downloaded()));
            }
        });
        counts.extend(self.retired.iter().map(|r| (*r.key(), *r.value())));
        counts.sort_unstable();
        counts
    }

    /// Takes snatch counts back from a state file (at start, before any
    /// announce: a torrent already held keeps the larger count).
    fn restore(&self, counts: &[(InfoHash, u64)]) {
        for &(hash, downloaded) in counts {
            let held = self.swarms.get_mut(&hash, |swarm| {
                let most = swarm.downloaded().max(downloaded);
                swarm.set_downloaded(most);
            });
            if held.is_none() {
                self.retire(hash, downloaded);
            }
        }
    }

    /// Drops the peers of every torrent `keep` says no to (their snatch
    /// counts are kept); returns how many torrents were purged.
    fn purge(&self, keep: impl Fn(&InfoHash) -> bool) -> usize {
        let mut purged = 0;
        self.swarms.retain(|swarm| {
            if keep(swarm.hash()) {
                return true;
            }
            purged += 1;
            self.torrent_count.fetch_sub(1, Ordering::Relaxed);
            self.retire(*swarm.hash(), swarm.downloaded());
            false
        });
        purged
    }

    /// Totals over every torrent and the `top` torrents with the most
    /// peers. Walks every shard (one read lock at a time): for stats, not
    /// the hot path.
    fn summary(&self, top: usize) -> Summary {
        let mut summary = Summary::default();
        // A min-heap of the largest swarms so far.
        let mut largest = BinaryHeap::with_capacity(top + 1);
        self.swarms.for_each(|swarm| {
            summary.torrents += 1;
            let by_family = swarm.family_counts();
            for (family, (seeders, leechers)) in by_family.into_iter().enumerate() {
                summary.seeders[family] += seeders as u64;
                summary.leechers[family] += leechers as u64;
            }
            summary.downloads += swarm.downloaded();
            if top > 0 {
                let peers = swarm.peer_count();
                largest.push(Reverse((peers, *swarm.hash())));
                if largest.len() > top {
                    largest.pop();
                }
            }
        });
        let mut top: Vec<_> = largest.into_iter().map(|Reverse(entry)| entry).collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        summary.top = top
            .into_iter()
            .map(|(_, hash)| (hash, self.counts(&hash)))
            .collect();
        summary
    }

    /// Appends the counts of every torrent with peers whose info hash's
    /// first two bytes (big-endian) fall in `prefixes`, sorted by hash: one
    /// slice of a full scrape, so that the whole list is never held at once.
    fn scrape_prefixes(
        &self,
        prefixes: std::ops::Range<u32>,
        out: &mut Vec<(InfoHash, SwarmCounts)>,
    ) {
        let start = out.len();
        self.swarms.for_each(|swarm| {
            let hash = swarm.hash();
            let prefix = u32::from(u16::from_be_bytes([hash.0[0], hash.0[1]]));
            if prefixes.contains(&prefix) {
                out.push((*hash, swarm.counts()));
            }
        });
        out[start..].sort_unstable_by_key(|(hash, _)| *hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AnnounceOptions;

    fn req(hash: u8, peer: u8, port: u16, left: u64, event: &str) -> AnnounceRequest {
        let q = format!(
            "info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}&event={event}",
            format!("%{hash:02X}").repeat(20),
            format!("%{peer:02X}").repeat(20),
        );
        AnnounceRequest::parse(q.as_bytes(), &AnnounceOptions::default()).unwrap()
    }

    fn store(ttl: u32) -> MemoryStore {
        MemoryStore::new(StoreConfig::unlimited(ttl))
    }

    /// `Store::announce` for tests that expect no refusal.
    trait Announce {
        fn ok(&self, req: &AnnounceRequest, ip: IpAddr, now: u32, out: &mut PeerSet)
        -> SwarmCounts;
    }

    impl Announce for MemoryStore {
        fn ok(
            &self,
            req: &AnnounceRequest,
            ip: IpAddr,
            now: u32,
            out: &mut PeerSet,
        ) -> SwarmCounts {
            self.announce(req, ip, now, out).unwrap()
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const C: IpAddr = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);

    #[test]
    fn summary_totals_families_and_ranks_the_largest_swarms() {
        let s = store(60);
        let mut out = PeerSet::default();
        // Torrent 1: a v4 seeder, a v4 leecher and a v6 leecher; torrent 2:
        // one v6 seeder who completed; torrent 3: one v4 leecher.
        s.ok(&req(1, 1, 1000, 0, ""), A, 0, &mut out);
        s.ok(&req(1, 2, 1000, 5, ""), B, 0, &mut out);
        s.ok(&req(1, 3, 1000, 5, ""), C, 0, &mut out);
        s.ok(&req(2, 3, 1000, 0, "completed"), C, 0, &mut out);
        s.ok(&req(3, 1, 1000, 5, ""), A, 0, &mut out);
        let summary = s.summary(2);
        assert_eq!(summary.torrents, 3);
        assert_eq!(summary.seeders, [1, 1]);
        assert_eq!(summary.leechers, [2, 1]);
        assert_eq!(summary.downloads, 1);
        let top: Vec<(u8, u32, u32)> = summary
            .top
            .iter()
            .map(|(h, c)| (h.0[0], c.complete, c.incomplete))
            .collect();
        assert_eq!(top[0], (1, 1, 2));
        assert_eq!(top.len(), 2);
        assert!(top[1].0 == 2 || top[1].0 == 3, "{top:?}");
        assert!(s.summary(0).top.is_empty());
    }

    #[test]
    fn prefix_slices_partition_the_torrents_in_hash_order() {
        let s = store(60);
        let mut out = PeerSet::default();
        for hash in [0x80, 0x01, 0xFF, 0x7F, 0x00] {
            s.ok(&req(hash, 1, 1000, 5, ""), A, 0, &mut out);
        }
        let mut all = Vec::new();
        for start in (0..0x1_0000u32).step_by(0x4000) {
            s.scrape_prefixes(start..start + 0x4000, &mut all);
        }
        let firsts: Vec<u8> = all.iter().map(|(h, _)| h.0[0]).collect();
        assert_eq!(firsts, [0x00, 0x01, 0x7F, 0x80, 0xFF]);
        let mut low = Vec::new();
        s.scrape_prefixes(0..0x0101, &mut low);
        assert_eq!(low.len(), 1, "0x0000.. only; 0x0101.. is outside");
    }

    #[test]
    fn counts_include_the_announcer_and_peers_exclude_it() {
        let s = store(60);
        let mut out = PeerSet::default();
        let c = s.ok(&req(1, 1, 1000, 5, "started"), A, 0, &mut out);
        assert_eq!((c.complete, c.incomplete), (0, 1));
        assert!(out.is_empty());
        out.clear();
        let c = s.ok(&req(1, 2, 2000, 0, "started"), B, 0, &mut out);
        assert_eq!((c.complete, c.incomplete), (1, 1));
        assert_eq!(out.v4, vec![[10, 0, 0, 1, 0x03, 0xE8]]);
    }

    #[test]
    fn both_families_are_served_own_family_first() {
        let s = store(60);
        let mut out = PeerSet::default();
        s.ok(&req(1, 1, 1000, 5, ""), A, 0, &mut out);
        s.ok(&req(1, 3, 3000, 5, ""), C, 0, &mut out);
        out.clear();
        s.ok(&req(1, 2, 2000, 5, ""), B, 0, &mut out);
        assert_eq!((out.v4.len(), out.v6.len()), (1, 1));
        out.clear();
        let mut one = req(1, 2, 2000, 5, "");
        one.numwant = 1;
        s.ok(&one, B, 0, &mut out);
        assert_eq!((out.v4.len(), out.v6.len()), (1, 0));
    }

    #[test]
    fn stop_removes_and_unknown_stop_creates_nothing() {
        let s = store(60);
        let mut out = PeerSet::default();
        let c = s.ok(&req(9, 1, 1000, 5, "stopped"), A, 0, &mut out);
        assert_eq!(c, SwarmCounts::default());
        assert_eq!(s.torrents(), 0);
        s.ok(&req(1, 1, 1000, 5, "started"), A, 0, &mut out);
        assert_eq!(s.torrents(), 1);
        let c = s.ok(&req(1, 1, 1000, 5, "stopped"), A, 0, &mut out);
        assert_eq!((c.complete, c.incomplete), (0, 0));
        assert_eq!(s.torrents(), 0);
    }

    #[test]
    fn a_stranger_cannot_stop_someone_elses_peer() {
        let s = store(60);
        let mut out = PeerSet::default();
        s.ok(&req(1, 1, 1000, 5, "started"), A, 0, &mut out);
        // Same peer id and port, other IP.
        s.ok(&req(1, 1, 1000, 5, "stopped"), B, 0, &mut out);
        assert_eq!(s.counts(&InfoHash([1; 20])).incomplete, 1);
    }

    #[test]
    fn downloads_survive_the_torrent_being_dropped() {
        let s = store(10);
        let mut out = PeerSet::default();
        s.ok(&req(1, 1, 1000, 5, "started"), A, 0, &mut out);
        s.ok(&req(1, 1, 1000, 0, "completed"), A, 1, &mut out);
        s.ok(&req(1, 1, 1000, 0, "completed"), A, 2, &mut out);
        assert_eq!(s.counts(&InfoHash([1; 20])).downloaded, 1);
        assert_eq!(s.expire(12), Expired::default());
        assert_eq!(
            s.expire(13),
            Expired {
                peers: 1,
                torrents: 1
            }
        );
        assert_eq!(s.torrents(), 0);
        assert_eq!(
            s.counts(&InfoHash([1; 20])),
            SwarmCounts {
                complete: 0,
                incomplete: 0,
                downloaded: 1
            }
        );
        // The torrent comes back with its count.
        let c = s.ok(&req(1, 2, 1000, 5, "started"), B, 20, &mut out);
        assert_eq!((c.incomplete, c.downloaded), (1, 1));
        s.ok(&req(1, 2, 1000, 0, "completed"), B, 20, &mut out);
        assert_eq!(s.counts(&InfoHash([1; 20])).downloaded, 2);
    }

    /// Announces `peers` distinct leechers into torrent `hash`, peer `n`
    /// from its own address at time `when(n)`.
    fn fill(s: &MemoryStore, hash: u8, peers: u32, when: impl Fn(u32) -> u32) {
        let mut out = PeerSet::default();
        for n in 0..peers {
            let [_, b, c, d] = n.to_be_bytes();
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, b, c, d));
            let mut r = req(hash, 1, 1000, 5, "");
            r.peer_id.0[..4].copy_from_slice(&n.to_be_bytes());
            s.ok(&r, ip, when(n), &mut out);
        }
    }

    #[test]
    fn large_swarms_expire_in_steps_like_small_ones() {
        let s = store(10);
        let mut out = PeerSet::default();
        let peers = SWEEP_STEP as u32 * 2 + 100;
        // Every other peer is seen again later and stays.
        fill(&s, 1, peers, |n| if n % 2 == 0 { 0 } else { 5 });
        s.ok(&req(2, 1, 1000, 5, ""), A, 0, &mut out);
        let expired = s.expire(12);
        assert_eq!(expired.peers, (peers / 2 + 1) as usize);
        assert_eq!(expired.torrents, 1);
        assert_eq!(s.counts(&InfoHash([1; 20])).incomplete, peers / 2);
        assert_eq!(s.expire(16).torrents, 1);
        assert_eq!(s.torrents(), 0);
    }

    #[test]
    fn a_paced_sweep_pauses_between_shards_and_large_swarm_steps() {
        let s = store(10);
        let mut out = PeerSet::default();
        // One swarm large enough to be swept in three steps, and small ones.
        let peers = SWEEP_STEP as u32 * 2 + 10;
        fill(&s, 1, peers, |_| 0);
        for hash in 2..50 {
            s.ok(&req(hash, 1, 1000, 5, ""), A, 0, &mut out);
        }
        let mut pauses = 0;
        let expired = s.expire_paced(20, &mut || pauses += 1);
        assert_eq!(expired.peers, peers as usize + 48);
        assert_eq!(expired.torrents, 49);
        // A pause after every SHARDS_PER_PAUSE shards, and after each step
        // through the large swarm that leaves it unfinished: its 8,202
        // positions take three steps of 4,096, and a fourth finds no IPv6
        // list and ends the walk.
        assert_eq!(pauses, SHARDS / SHARDS_PER_PAUSE + 3);
        assert_eq!(s.torrents(), 0);
    }

    #[test]
    fn limits_refuse_new_torrents_and_new_peers_only() {
        let s = MemoryStore::new(StoreConfig {
            peer_ttl: 60,
            max_torrents: 2,
            max_peers_per_torrent: 2,
            compact_only: false,
        });
        let mut out = PeerSet::default();
        s.ok(&req(1, 1, 1000, 5, ""), A, 0, &mut out);
        s.ok(&req(2, 1, 1000, 5, ""), A, 0, &mut out);
        assert_eq!(
            s.announce(&req(3, 1, 1000, 5, ""), A, 0, &mut out),
            Err(Refusal::TrackerFull)
        );
        assert_eq!(s.torrents(), 2);
        s.ok(&req(1, 2, 1000, 5, ""), B, 0, &mut out);
        assert_eq!(
            s.announce(&req(1, 3, 1000, 5, ""), C, 0, &mut out),
            Err(Refusal::SwarmFull)
        );
        // Peers already in the swarm keep announcing.
        assert_eq!(s.ok(&req(1, 2, 1000, 0, ""), B, 1, &mut out).complete, 1);
        // A freed torrent slot can be taken again.
        s.ok(&req(2, 1, 1000, 5, "stopped"), A, 1, &mut out);
        s.ok(&req(3, 1, 1000, 5, ""), A, 1, &mut out);
        assert_eq!(s.torrents(), 2);
    }

    #[test]
    fn downloads_and_restore_round_trip() {
        let s = store(60);
        let mut out = PeerSet::default();
        s.ok(&req(1, 1, 1000, 0, "completed"), A, 0, &mut out);
        s.ok(&req(2, 1, 1000, 0, "completed"), A, 0, &mut out);
        s.ok(&req(2, 1, 1000, 0, "stopped"), A, 0, &mut out);
        let counts = s.downloads();
        assert_eq!(counts, vec![(InfoHash([1; 20]), 1), (InfoHash([2; 20]), 1)]);
        let fresh = store(60);
        fresh.restore(&counts);
        assert_eq!(fresh.counts(&InfoHash([2; 20])).downloaded, 1);
        assert_eq!(fresh.downloads(), counts);
    }

    #[test]
    fn scrape_answers_in_order_with_zeros_for_unknown() {
        let s = store(60);
        let mut out = PeerSet::default();
        s.ok(&req(2, 1, 1000, 0, ""), A, 0, &mut out);
        let mut files = Vec::new();
        s.scrape(&[InfoHash([1; 20]), InfoHash([2; 20])], &mut files);
        assert_eq!(files[0], (InfoHash([1; 20]), SwarmCounts::default()));
        assert_eq!(files[1].1.complete, 1);
    }
}
