//! One address family's peers in one swarm, in one allocation.
//!
//! A [`PeerList`] is a single pointer to a block holding a small header
//! ([`Head`]: lengths, the seeder count, the snatch count, the index of a
//! large list, the swarm's IPv6 list) followed by the peers themselves. The
//! peers are partitioned so that seeders come first (`peers[..seeders]`)
//! and leechers after: both counts are exact by construction, a seeder is
//! sent leechers only by sampling the second range, and random sampling is
//! an index computation. A new leecher, the peer a swarm gains most often,
//! is appended; a new seeder or a peer changing roles or leaving costs a
//! couple of swaps. Capacity grows by at least an eighth at a time (not
//! doubling), to as many records as fill the block the allocator hands out
//! for that (its size classes round up anyway).
//!
//! A peer is stored as its compact wire form (address then port, network
//! order: N = 6 bytes for IPv4, 18 for IPv6), its peer id (I = 20 bytes, or
//! none in compact-only mode) and a 2-byte stamp (last announce, and whether
//! it has counted as a completed download): 28 bytes for an IPv4 peer with
//! its id, 8 without. The response encoder copies addresses out as they are.
//!
//! Identity: an announce refers to an existing entry when it comes from the
//! same IP with the same peer id (the client changed its port) or with the
//! same port (the client restarted with a new peer id). A peer id alone is
//! not enough, or anyone could replace or stop someone else's entry by
//! copying their id. Without peer ids (compact-only) the (IP, port) pair is
//! the identity. Small lists are scanned; lists that grow past `INDEX_FROM`
//! peers get an [`Index`], so the cost stays flat in swarm size even when
//! many peers share one IP (NAT, or an attacker).

use std::alloc::{self, Layout};
use std::hash::{BuildHasher, Hasher as _};
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::block;
use super::index::{Index, Table};
use crate::protocol::{InfoHash, PeerId};

/// Build the index when a list grows past this many peers.
const INDEX_FROM: usize = 32;
/// Positions moved into an index's next tables per insert and per removal
/// while it changes size: a 64th of the list's growth, so the move is done
/// well before the current tables fill; fewer per removal, so an expiry
/// step that removes thousands does not do a whole move at once.
/// (Tests move two at a time, so moves span many operations.)
const MIGRATE_PER_INSERT: usize = if cfg!(test) { 2 } else { 64 };
const MIGRATE_PER_REMOVAL: usize = if cfg!(test) { 1 } else { 8 };

/// Drop the index again when a list shrinks below this (hysteresis, so a list
/// hovering around the threshold does not rebuild it on every announce).
const INDEX_UNTIL: usize = 16;

/// Peers a list holds at most: its length shares a word with its capacity
/// class. Far past any real swarm; a list that full refuses new peers like
/// a swarm at its peer cap.
const MAX_LEN: usize = (1 << 24) - 1;

/// Capacity classes a list moves through (see `PeerList::CAPS`); enough to
/// reach `MAX_LEN` growing by an eighth.
const CLASSES: usize = 256;

/// The capacity of each class for a list whose block has a `head`-byte
/// header and `peer`-byte records. Each class holds at least an eighth
/// more (at least one more) than the one before, and as many as fit in the
/// block the allocator really hands out for that: the rounding is paid
/// for either way, and filled the list moves to a larger block later.
const fn capacities(head: usize, peer: usize) -> [u32; CLASSES] {
    let mut caps = [0u32; CLASSES];
    let mut class = 1;
    while class < CLASSES {
        let before = caps[class - 1] as usize;
        let want = before + if before / 8 > 1 { before / 8 } else { 1 };
        let fits = (block::allocated_size(head + want * peer) - head) / peer;
        caps[class] = if fits < MAX_LEN { fits } else { MAX_LEN } as u32;
        class += 1;
    }
    caps
}

/// The stamp bit that says an entry has counted as a completed download;
/// the other 15 bits are the time of its last announce (see [`Clock`]).
const COMPLETED: u16 = 0x8000;
const STAMP_MASK: u16 = 0x7FFF;

/// Turns the store's coarse clock into 15-bit stamps. A stamp counts in
/// units of `unit` seconds, chosen so that the stamps wrap no sooner than
/// four peer TTLs: peers are swept every TTL/4 at most (and at least every
/// minute), so an age read from two stamps is never wrapped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    unit: u32,
    /// The peer TTL in units, rounded up.
    ttl: u16,
}

impl Clock {
    pub fn new(peer_ttl: u32) -> Self {
        let unit = (u64::from(peer_ttl) * 4)
            .div_ceil(u64::from(STAMP_MASK) + 1)
            .max(1) as u32;
        Clock {
            unit,
            ttl: peer_ttl.div_ceil(unit).min(u32::from(STAMP_MASK) / 4) as u16,
        }
    }

    pub fn stamp(&self, now: u32) -> u16 {
        (now / self.unit) as u16 & STAMP_MASK
    }

    /// Whether a peer stamped `stamp` is past the TTL at `now`.
    pub fn is_stale(&self, stamp: u16, now: u16) -> bool {
        now.wrapping_sub(stamp) & STAMP_MASK > self.ttl
    }
}

/// One peer's entry: 28 bytes for an IPv4 peer with its id (I = 20), 8
/// without (I = 0); 40 and 20 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Peer<const N: usize, const I: usize> {
    /// Compact wire form: address bytes then big-endian port.
    pub addr: [u8; N],
    id: [u8; I],
    stamp: [u8; 2],
}

impl<const N: usize, const I: usize> Peer<N, I> {
    fn new(addr: [u8; N], id: &PeerId, stamp: u16, completed: bool) -> Self {
        let mut peer = Peer {
            addr,
            id: [0; I],
            stamp: [0; 2],
        };
        peer.id.copy_from_slice(&id.0[..I]);
        peer.set_stamp(stamp, completed);
        peer
    }

    fn bits(&self) -> u16 {
        u16::from_le_bytes(self.stamp)
    }

    fn set_stamp(&mut self, stamp: u16, completed: bool) {
        let flag = if completed { COMPLETED } else { 0 };
        self.stamp = (stamp & STAMP_MASK | flag).to_le_bytes();
    }

    /// The time stamp of the last announce.
    pub fn stamp(&self) -> u16 {
        self.bits() & STAMP_MASK
    }

    /// This entry has already counted as a completed download.
    pub fn completed(&self) -> bool {
        self.bits() & COMPLETED != 0
    }

    fn has_id(&self, id: &PeerId) -> bool {
        self.id[..] == id.0[..I]
    }

    /// The peer id, when the store keeps them.
    pub fn id(&self) -> Option<PeerId> {
        let mut id = [0; 20];
        (I == 20).then(|| {
            id.copy_from_slice(&self.id[..]);
            PeerId(id)
        })
    }
}

/// The header of a list's block. A swarm's IPv4 list is the swarm: its
/// header also carries the info hash, the snatch count and the IPv6 list
/// (unused in the IPv6 list's own header). 40 bytes: with most swarms
/// holding a few peers, the header is a good part of what a torrent costs.
#[repr(C)]
struct Head<const I: usize> {
    /// The index and the IPv6 list, for the lists that have either.
    more: Option<Box<More<I>>>,
    /// The torrent. The map of swarms holds only pointers to headers (8
    /// bytes a slot instead of 32), and compares hashes here.
    hash: InfoHash,
    /// The length (low 24 bits) and the capacity class (high 8 bits).
    len_class: u32,
    /// `peers[..seeders]` are seeders, the rest leechers.
    seeders: u32,
    /// Completed downloads ever seen for the torrent (saturating).
    downloaded: u32,
}

/// What only some lists have, kept out of the header of all the others.
#[derive(Default)]
struct More<const I: usize> {
    /// Present only for large lists.
    index: Option<Box<Index>>,
    /// A swarm's IPv6 peers.
    v6: Option<PeerList<18, I>>,
}

/// What an announce did to a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upsert {
    /// Where the announcing peer now is.
    pub index: usize,
    /// This announce counts as a completed download.
    pub completed_now: bool,
}

/// A list of peers: one pointer to a block of header and peers (see the
/// module doc).
pub(crate) struct PeerList<const N: usize, const I: usize> {
    block: NonNull<Head<I>>,
    _owns: PhantomData<(Head<I>, Peer<N, I>)>,
}

// SAFETY: a PeerList owns its block exclusively, like a Box of its header
// and a Vec of its peers, whose parts are all Send and Sync.
unsafe impl<const N: usize, const I: usize> Send for PeerList<N, I> {}
unsafe impl<const N: usize, const I: usize> Sync for PeerList<N, I> {}

impl<const N: usize, const I: usize> std::fmt::Debug for PeerList<N, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerList")
            .field("len", &self.len())
            .field("leechers", &self.leechers())
            .finish_non_exhaustive()
    }
}

fn same_ip<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    a[..N - 2] == b[..N - 2]
}

impl<const N: usize, const I: usize> Default for PeerList<N, I> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<const N: usize, const I: usize> Drop for PeerList<N, I> {
    fn drop(&mut self) {
        let layout = Self::layout(self.capacity());
        // SAFETY: the block was allocated with this layout (cap is kept in
        // step with every reallocation), its header is initialized, and the
        // peers are plain bytes with nothing to drop.
        unsafe {
            std::ptr::drop_in_place(self.block.as_ptr());
            block::free(self.block.as_ptr().cast(), layout);
        }
    }
}

impl<const N: usize, const I: usize> PeerList<N, I> {
    /// Where the peers start in the block.
    const PEERS_AT: usize = std::mem::size_of::<Head<I>>();

    /// The capacity of each class (see [`capacities`]).
    const CAPS: [u32; CLASSES] = capacities(Self::PEERS_AT, std::mem::size_of::<Peer<N, I>>());

    /// The smallest class that holds `len` peers.
    fn class_for(len: usize) -> usize {
        Self::CAPS
            .partition_point(|&cap| (cap as usize) < len)
            .min(CLASSES - 1)
    }

    fn class(&self) -> usize {
        (self.head().len_class >> 24) as usize
    }

    /// How many peers the block has room for.
    pub fn capacity(&self) -> usize {
        Self::CAPS[self.class()] as usize
    }

    fn set_len(&mut self, len: usize) {
        let head = self.head_mut();
        head.len_class = head.len_class & !0xFF_FFFF | len as u32;
    }

    fn layout(cap: usize) -> Layout {
        let size = Self::PEERS_AT + cap * std::mem::size_of::<Peer<N, I>>();
        match Layout::from_size_align(size, std::mem::align_of::<Head<I>>()) {
            Ok(layout) => layout,
            // Capacities are bounded by the peer cap, far below isize::MAX.
            Err(_) => alloc::handle_alloc_error(Layout::new::<Head<I>>()),
        }
    }

    /// A list with room for at least `cap` peers (at most `MAX_LEN`).
    pub fn with_capacity(cap: usize) -> Self {
        let class = Self::class_for(cap);
        let layout = Self::layout(Self::CAPS[class] as usize);
        // SAFETY: the layout has a non-zero size (the header).
        let raw = unsafe { block::allocate(layout) }.cast::<Head<I>>();
        let Some(block) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: freshly allocated, aligned for Head, large enough.
        unsafe {
            block.as_ptr().write(Head {
                more: None,
                hash: InfoHash([0; 20]),
                len_class: (class as u32) << 24,
                seeders: 0,
                downloaded: 0,
            });
        }
        PeerList {
            block,
            _owns: PhantomData,
        }
    }

    fn head(&self) -> &Head<I> {
        // SAFETY: the header is initialized for the block's whole life.
        unsafe { self.block.as_ref() }
    }

    fn head_mut(&mut self) -> &mut Head<I> {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { self.block.as_mut() }
    }

    fn peers_ptr(&self) -> *mut Peer<N, I> {
        // SAFETY: PEERS_AT is within the block (it is the header's size).
        unsafe { self.block.as_ptr().cast::<u8>().add(Self::PEERS_AT).cast() }
    }

    pub fn peers(&self) -> &[Peer<N, I>] {
        // SAFETY: the first `len` records are initialized; Peer has
        // alignment 1.
        unsafe { std::slice::from_raw_parts(self.peers_ptr(), self.len()) }
    }

    fn peers_mut(&mut self) -> &mut [Peer<N, I>] {
        // SAFETY: as in `peers`, exclusive through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.peers_ptr(), self.len()) }
    }

    /// The peers and the index, borrowed together (they do not overlap:
    /// the peers follow the header).
    fn parts(&mut self) -> (&[Peer<N, I>], Option<&mut Index>) {
        let len = self.len();
        let peers = self.peers_ptr();
        // SAFETY: the header and the peers are disjoint parts of the block.
        unsafe {
            let head = &mut *self.block.as_ptr();
            let index = head
                .more
                .as_deref_mut()
                .and_then(|more| more.index.as_deref_mut());
            (std::slice::from_raw_parts(peers, len), index)
        }
    }

    fn index(&self) -> Option<&Index> {
        self.head().more.as_deref()?.index.as_deref()
    }

    fn index_mut(&mut self) -> Option<&mut Index> {
        self.head_mut().more.as_deref_mut()?.index.as_deref_mut()
    }

    /// Sets or drops the index, keeping `More` only while it holds anything.
    fn set_index(&mut self, index: Option<Box<Index>>) {
        let more = &mut self.head_mut().more;
        match (more.as_deref_mut(), index) {
            (Some(more), index) => more.index = index,
            (None, None) => return,
            (None, index) => {
                *more = Some(Box::new(More { index, v6: None }));
                return;
            }
        }
        self.tidy_more();
    }

    fn tidy_more(&mut self) {
        let more = &mut self.head_mut().more;
        if more
            .as_ref()
            .is_some_and(|m| m.index.is_none() && m.v6.is_none())
        {
            *more = None;
        }
    }

    /// Moves the block to capacity class `class` (which holds `len`).
    fn set_class(&mut self, class: usize) {
        let old = Self::layout(self.capacity());
        let new = Self::layout(Self::CAPS[class] as usize);
        // SAFETY: the block was allocated with `old`; `new` has the same
        // alignment and a non-zero size; only the first `len <= cap`
        // records are read afterwards.
        let raw = unsafe { block::resize(self.block.as_ptr().cast(), old, new.size()) };
        let Some(block) = NonNull::new(raw.cast::<Head<I>>()) else {
            alloc::handle_alloc_error(new)
        };
        self.block = block;
        let len = self.len() as u32;
        self.head_mut().len_class = (class as u32) << 24 | len;
    }

    /// Appends a peer; the list holds fewer than `MAX_LEN`.
    fn push(&mut self, peer: Peer<N, I>) {
        let len = self.len();
        if len == self.capacity() {
            self.set_class(self.class() + 1);
        }
        // SAFETY: len < capacity after growing (the classes reach MAX_LEN,
        // and callers stop below it), so the slot is within the block.
        unsafe { self.peers_ptr().add(len).write(peer) };
        self.set_len(len + 1);
    }

    fn pop(&mut self) {
        let len = self.len() - 1;
        self.set_len(len);
        let cap = self.capacity();
        // Give memory back once a list has shrunk to under half its room.
        if cap > 4 && len < cap / 2 {
            self.set_class(Self::class_for(len + len / 8));
        }
    }

    pub fn len(&self) -> usize {
        (self.head().len_class & 0xFF_FFFF) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn seeders(&self) -> usize {
        self.head().seeders as usize
    }

    pub fn leechers(&self) -> usize {
        self.len() - self.seeders()
    }

    /// The snatch count kept in a swarm's header.
    pub fn downloaded(&self) -> u64 {
        u64::from(self.head().downloaded)
    }

    pub fn set_downloaded(&mut self, downloaded: u64) {
        self.head_mut().downloaded = downloaded.min(u64::from(u32::MAX)) as u32;
    }

    /// The info hash kept in a swarm's header.
    pub fn hash(&self) -> &InfoHash {
        &self.head().hash
    }

    pub fn set_hash(&mut self, hash: InfoHash) {
        self.head_mut().hash = hash;
    }

    /// The IPv6 list kept in a swarm's header.
    pub fn v6(&self) -> Option<&PeerList<18, I>> {
        self.head().more.as_deref()?.v6.as_ref()
    }

    pub fn v6_mut(&mut self) -> Option<&mut PeerList<18, I>> {
        self.head_mut().more.as_deref_mut()?.v6.as_mut()
    }

    /// The IPv6 list, made empty if the swarm has none yet.
    pub fn v6_or_new(&mut self) -> &mut PeerList<18, I> {
        let more = self.head_mut().more.get_or_insert_with(Box::default);
        more.v6.get_or_insert_with(PeerList::default)
    }

    /// Frees the IPv6 list once it is empty.
    pub fn tidy_v6(&mut self) {
        if let Some(more) = self.head_mut().more.as_deref_mut()
            && more.v6.as_ref().is_some_and(|v6| v6.is_empty())
        {
            more.v6 = None;
            self.tidy_more();
        }
    }

    /// Whether the list has built its index; for tests.
    #[cfg(test)]
    pub fn is_indexed(&self) -> bool {
        self.index().is_some()
    }

    /// The entries on the same IP as `addr` with the same peer id, and with
    /// the same port but another id (without ids: the entry at `addr`).
    fn lookup(&self, addr: &[u8; N], id: &PeerId) -> (Option<usize>, Option<usize>) {
        let peers = self.peers();
        match self.index() {
            Some(index) if I == 0 => {
                let by_port = index.by_addr.find(addr_hash(&index.hasher, addr), |p| {
                    peers[p as usize].addr == *addr
                });
                (None, by_port.map(|p| p as usize))
            }
            Some(index) => {
                let by_id = index
                    .by_id
                    .find(id_hash(index, addr, id), |p| {
                        let peer = &peers[p as usize];
                        peer.has_id(id) && same_ip(&peer.addr, addr)
                    })
                    .map(|p| p as usize);
                let by_port = index
                    .by_addr
                    .find(addr_hash(&index.hasher, addr), |p| {
                        peers[p as usize].addr == *addr
                    })
                    .map(|p| p as usize)
                    .filter(|&p| !peers[p].has_id(id));
                (by_id, by_port)
            }
            None if I == 0 => (None, peers.iter().position(|p| p.addr == *addr)),
            None => {
                let (mut by_id, mut by_port) = (None, None);
                for (i, peer) in peers.iter().enumerate() {
                    if !same_ip(&peer.addr, addr) {
                        continue;
                    }
                    if peer.has_id(id) {
                        by_id = Some(i);
                    } else if peer.addr == *addr {
                        by_port = Some(i);
                    }
                }
                (by_id, by_port)
            }
        }
    }

    /// The entry an announce from `addr` with `id` refers to (see the module
    /// doc). If one entry matches by id and another by port, the one that
    /// matches by port is stale (its port now belongs to this peer) and is
    /// removed.
    pub fn find(&mut self, addr: &[u8; N], id: &PeerId) -> Option<usize> {
        match self.lookup(addr, id) {
            (Some(_), Some(stale)) => {
                self.remove_at(stale);
                // The removal moved entries around; look the peer up again.
                self.lookup(addr, id).0
            }
            (found, None) | (None, found) => found,
        }
    }

    /// Adds or refreshes the announcing peer and returns where it now is.
    /// `completed` is an `event=completed` announce; it counts as a download
    /// once per entry, and only with nothing left to download.
    /// When the peer is new and `room` is false, nothing changes and `None`
    /// is returned (the swarm is at its peer cap).
    pub fn upsert_if_room(
        &mut self,
        addr: [u8; N],
        id: &PeerId,
        seeder: bool,
        completed: bool,
        stamp: u16,
        room: bool,
    ) -> Option<Upsert> {
        let completes = completed && seeder;
        let found = self.find(&addr, id);
        if found.is_none() && !(room && self.len() < MAX_LEN) {
            return None;
        }
        Some(match found {
            Some(i) => {
                let peer = self.peers()[i];
                let rekeyed = peer.addr != addr || !peer.has_id(id);
                if rekeyed {
                    self.unindex(i);
                }
                let completed_now = completes && !peer.completed();
                let entry = &mut self.peers_mut()[i];
                entry.addr = addr;
                entry.id.copy_from_slice(&id.0[..I]);
                entry.set_stamp(stamp, peer.completed() || completed_now);
                if rekeyed {
                    self.reindex(i);
                }
                Upsert {
                    index: self.set_role(i, seeder),
                    completed_now,
                }
            }
            None => Upsert {
                index: self.insert(Peer::new(addr, id, stamp, completes), seeder),
                completed_now: completes,
            },
        })
    }

    /// `upsert_if_room` with room: for tests.
    #[cfg(test)]
    pub fn upsert(
        &mut self,
        addr: [u8; N],
        id: PeerId,
        seeder: bool,
        completed: bool,
        stamp: u16,
    ) -> Upsert {
        match self.upsert_if_room(addr, &id, seeder, completed, stamp, true) {
            Some(upsert) => upsert,
            None => unreachable!("there is always room"),
        }
    }

    /// Removes the entry an announce from `addr` with `id` refers to.
    pub fn remove(&mut self, addr: &[u8; N], id: &PeerId) -> bool {
        match self.find(addr, id) {
            Some(i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// Removes every peer that is stale by `clock` at stamp `now`; returns
    /// how many.
    pub fn expire(&mut self, clock: &Clock, now: u16) -> usize {
        self.expire_some(clock, now, usize::MAX, usize::MAX).0
    }

    /// Removes the stale peers among positions `..end` (clamped to the
    /// list), visiting at most `budget` positions from the top down. Returns
    /// how many were removed and where to resume (the next `end`; 0 once the
    /// walk is done). Between two calls the list may change: a stale peer
    /// moved above the resume point is left for the next sweep.
    pub fn expire_some(
        &mut self,
        clock: &Clock,
        now: u16,
        end: usize,
        budget: usize,
    ) -> (usize, usize) {
        let before = self.len();
        let end = end.min(before);
        let stop = end.saturating_sub(budget);
        // Backwards: a removal only moves already-visited entries into `i`.
        for i in (stop..end).rev() {
            if i < self.len() && clock.is_stale(self.peers()[i].stamp(), now) {
                self.remove_at(i);
            }
        }
        (before - self.len(), stop)
    }

    /// Appends up to `want` randomly chosen peers to `addrs` (and their ids to
    /// `ids`, if given and kept), never the one at `exclude`. A seeder
    /// (`for_seeder`) is sent leechers only. Returns how many were added.
    pub fn sample(
        &self,
        for_seeder: bool,
        exclude: Option<usize>,
        want: usize,
        addrs: &mut Vec<[u8; N]>,
        mut ids: Option<&mut Vec<PeerId>>,
    ) -> usize {
        // The candidates: every peer, or for a seeder the leechers.
        let first = if for_seeder { self.seeders() } else { 0 };
        let peers = &self.peers()[first..];
        let n = peers.len();
        let exclude = exclude
            .and_then(|e| e.checked_sub(first))
            .filter(|&e| e < n);
        let available = n - usize::from(exclude.is_some());
        if want == 0 || available == 0 {
            return 0;
        }
        // Whole runs of entries are copied at once: the loop per peer that
        // checked the exclusion and the vectors' room each time cost more
        // than the copy.
        let mut emit = |run: &[Peer<N, I>]| {
            addrs.extend(run.iter().map(|peer| peer.addr));
            if let Some(ids) = ids.as_deref_mut() {
                ids.extend(run.iter().filter_map(Peer::id));
            }
        };
        let mut left = want.min(available);
        // A window of consecutive entries from a random start, wrapping
        // around: a fresh selection each time, read sequentially from memory
        // (a strided sample of a large swarm touches a cache line per peer
        // and cost 2.5x more at 100k peers). Entries move on every
        // removal and role change, so windows do not keep fixed neighbours.
        // Everyone is sent when the swarm has no more than asked for.
        let start = if want >= available {
            0
        } else {
            fastrand::usize(0..n)
        };
        for (mut from, to) in [(start, n), (0, start)] {
            if let Some(skip) = exclude.filter(|&e| from <= e && e < to) {
                let run = (skip - from).min(left);
                emit(&peers[from..from + run]);
                left -= run;
                from = skip + 1;
            }
            let run = (to - from).min(left);
            emit(&peers[from..from + run]);
            left -= run;
            if left == 0 {
                break;
            }
        }
        want.min(available) - left
    }

    fn insert(&mut self, peer: Peer<N, I>, seeder: bool) -> usize {
        let at = self.len();
        let build = self.index().is_none() && at + 1 > INDEX_FROM;
        if let Some(index) = self.index_mut() {
            match &index.next {
                // Shrinking, and grown back past the smaller tables: stop.
                Some(next) if at + 1 > next.max_len => index.next = None,
                None if index.wants_resize(at + 1) => index.start_growth(at + 1),
                _ => {}
            }
            if index.next.is_some() && at + 1 > index.max_len {
                // The move must be done before the tables overflow (only
                // small tables get here: larger ones start 1/32 early).
                self.migrate(usize::MAX);
            }
        }
        // A leecher goes at the end; a seeder where the leechers begin, the
        // first leecher moving to the end. Placed there at once, not pushed
        // and swapped: a swap re-hashes and re-finds both entries.
        let place = if seeder { self.seeders() } else { at };
        if place == at {
            self.push(peer);
        } else {
            let moved = self.peers()[place];
            self.push(moved);
            self.peers_mut()[place] = peer;
            self.relocate(place, at);
        }
        if seeder {
            self.head_mut().seeders += 1;
        }
        if build {
            self.build_index();
        } else {
            self.reindex(place);
            self.migrate(MIGRATE_PER_INSERT);
        }
        place
    }

    /// Moves up to `budget` more positions (all of them, for small tables:
    /// see `Index::moves_in_steps`) into the index's next tables, and makes
    /// them the index's once all are in.
    fn migrate(&mut self, budget: usize) {
        let len = self.len();
        let (peers, Some(index)) = self.parts() else {
            return;
        };
        let budget = if index.moves_in_steps() {
            budget
        } else {
            usize::MAX
        };
        let Some(next) = index.next.as_deref_mut() else {
            return;
        };
        let end = len.min(next.done.saturating_add(budget));
        for (at, peer) in peers.iter().enumerate().take(end).skip(next.done) {
            put(&index.hasher, &mut next.by_addr, &mut next.by_id, peer, at);
        }
        next.done = end;
        if end == len {
            index.finish_growth();
        }
    }

    /// Tells the index that the entry now at `to` was at `from`.
    fn relocate(&mut self, from: usize, to: usize) {
        let (peers, Some(index)) = self.parts() else {
            return;
        };
        let peer = &peers[to];
        let hasher = &index.hasher;
        let addr = addr_hash(hasher, &peer.addr);
        let key = if I > 0 {
            key_hash(hasher, &peer.addr, &peer.id)
        } else {
            0
        };
        let (from32, to32) = (from as u32, to as u32);
        index.by_addr.relocate(addr, from32, to32);
        if I > 0 {
            index.by_id.relocate(key, from32, to32);
        }
        if let Some(next) = index.next.as_deref_mut() {
            match (from < next.done, to < next.done) {
                (true, true) => {
                    next.by_addr.relocate(addr, from32, to32);
                    if I > 0 {
                        next.by_id.relocate(key, from32, to32);
                    }
                }
                (true, false) => take(
                    hasher,
                    &mut next.by_addr,
                    &mut next.by_id,
                    peers,
                    peer,
                    from,
                ),
                (false, true) => put(hasher, &mut next.by_addr, &mut next.by_id, peer, to),
                (false, false) => {}
            }
        }
    }

    /// Moves the peer at `i` into the seeder or leecher range; returns its
    /// new position.
    fn set_role(&mut self, i: usize, seeder: bool) -> usize {
        let seeders = self.seeders();
        let is_seeder = i < seeders;
        if seeder == is_seeder {
            i
        } else if seeder {
            // The first leecher position becomes the last seeder position.
            self.swap(i, seeders);
            self.head_mut().seeders += 1;
            seeders
        } else {
            self.swap(i, seeders - 1);
            self.head_mut().seeders -= 1;
            seeders - 1
        }
    }

    fn remove_at(&mut self, i: usize) {
        let last = self.len() - 1;
        let seeders = self.seeders();
        if i < seeders {
            // Fill the hole with the last seeder, and that seeder's slot
            // with the last leecher, keeping the partition.
            self.swap(i, seeders - 1);
            self.swap(seeders - 1, last);
            self.head_mut().seeders -= 1;
        } else {
            self.swap(i, last);
        }
        self.unindex(last);
        self.pop();
        let len = self.len();
        if len < INDEX_UNTIL {
            self.set_index(None);
            return;
        }
        let Some(index) = self.index_mut() else {
            return;
        };
        if let Some(next) = index.next.as_deref_mut() {
            next.done = next.done.min(len);
        } else if len * 4 < index.max_len && index.wants_resize(len) {
            index.start_growth(len);
        } else {
            return;
        }
        self.migrate(MIGRATE_PER_REMOVAL);
    }

    /// Takes position `at` out of the index (before its key changes or
    /// it goes).
    fn unindex(&mut self, at: usize) {
        let (peers, Some(index)) = self.parts() else {
            return;
        };
        let peer = &peers[at];
        take(
            &index.hasher,
            &mut index.by_addr,
            &mut index.by_id,
            peers,
            peer,
            at,
        );
        if let Some(next) = index.next.as_deref_mut().filter(|next| at < next.done) {
            take(
                &index.hasher,
                &mut next.by_addr,
                &mut next.by_id,
                peers,
                peer,
                at,
            );
        }
    }

    /// Puts position `at` into the index under its current key.
    fn reindex(&mut self, at: usize) {
        let (peers, Some(index)) = self.parts() else {
            return;
        };
        let peer = &peers[at];
        put(
            &index.hasher,
            &mut index.by_addr,
            &mut index.by_id,
            peer,
            at,
        );
        if let Some(next) = index.next.as_deref_mut().filter(|next| at < next.done) {
            put(&index.hasher, &mut next.by_addr, &mut next.by_id, peer, at);
        }
    }

    /// Swaps two entries, keeping the index true.
    fn swap(&mut self, i: usize, j: usize) {
        if i == j {
            return;
        }
        self.peers_mut().swap(i, j);
        let (peers, Some(index)) = self.parts() else {
            return;
        };
        // After the swap, the peer that was at i is at j and the other way
        // round.
        let (was_i, was_j) = (&peers[j], &peers[i]);
        let (i32_, j32) = (i as u32, j as u32);
        let hasher = &index.hasher;
        let (hi, hj) = (
            addr_hash(hasher, &was_i.addr),
            addr_hash(hasher, &was_j.addr),
        );
        index.by_addr.swap(hi, i32_, hj, j32);
        let (ki, kj) = if I > 0 {
            let ki = key_hash(hasher, &was_i.addr, &was_i.id);
            let kj = key_hash(hasher, &was_j.addr, &was_j.id);
            index.by_id.swap(ki, i32_, kj, j32);
            (ki, kj)
        } else {
            (0, 0)
        };
        let Some(next) = index.next.as_deref_mut() else {
            return;
        };
        match (i < next.done, j < next.done) {
            (true, true) => {
                next.by_addr.swap(hi, i32_, hj, j32);
                if I > 0 {
                    next.by_id.swap(ki, i32_, kj, j32);
                }
            }
            // Only the lower position is in the next tables: it now holds
            // the other peer.
            (true, false) => {
                take(hasher, &mut next.by_addr, &mut next.by_id, peers, was_i, i);
                put(hasher, &mut next.by_addr, &mut next.by_id, was_j, i);
            }
            (false, true) => {
                take(hasher, &mut next.by_addr, &mut next.by_id, peers, was_j, j);
                put(hasher, &mut next.by_addr, &mut next.by_id, was_i, j);
            }
            (false, false) => {}
        }
    }

    fn build_index(&mut self) {
        let mut index = Index::for_len(self.len(), I > 0);
        for (at, peer) in self.peers().iter().enumerate() {
            index
                .by_addr
                .insert(addr_hash(&index.hasher, &peer.addr), at as u32);
            if I > 0 {
                let hash = key_hash(&index.hasher, &peer.addr, &peer.id);
                index.by_id.insert(hash, at as u32);
            }
        }
        self.set_index(Some(Box::new(index)));
    }

    /// Checks every invariant; for tests.
    #[cfg(test)]
    pub fn check(&self) {
        assert!(self.seeders() <= self.len() && self.len() <= self.capacity());
        assert!(self.len() <= MAX_LEN);
        if let Some(more) = self.head().more.as_deref() {
            assert!(more.index.is_some() || more.v6.is_some(), "empty More kept");
        }
        if let Some(index) = self.index() {
            assert!(self.len() <= index.max_len);
            for (at, peer) in self.peers().iter().enumerate() {
                let found = index
                    .by_addr
                    .find(addr_hash(&index.hasher, &peer.addr), |p| p as usize == at);
                assert!(found.is_some(), "by_addr misses {at}");
                if I > 0 {
                    let found = index
                        .by_id
                        .find(key_hash(&index.hasher, &peer.addr, &peer.id), |p| {
                            p as usize == at
                        });
                    assert!(found.is_some(), "by_id misses {at}");
                }
            }
            if let Some(next) = &index.next {
                // The next tables hold exactly the positions moved so far.
                assert!(next.done <= self.len() && self.len() <= next.max_len);
                for (at, peer) in self.peers().iter().enumerate() {
                    let hash = addr_hash(&index.hasher, &peer.addr);
                    let found = next.by_addr.find(hash, |p| p as usize == at);
                    assert_eq!(found.is_some(), at < next.done, "next by_addr at {at}");
                    if I > 0 {
                        let hash = key_hash(&index.hasher, &peer.addr, &peer.id);
                        let found = next.by_id.find(hash, |p| p as usize == at);
                        assert_eq!(found.is_some(), at < next.done, "next by_id at {at}");
                    }
                }
            }
        }
    }
}

/// The by-id key hash of an announce from `addr` with `id`: the same value
/// as a stored peer's `(ip, id)` hash.
fn id_hash<const N: usize>(index: &Index, addr: &[u8; N], id: &PeerId) -> u64 {
    key_hash(&index.hasher, addr, &id.0)
}

/// Enters `peer`, at position `at`, in one generation of the index's tables.
fn put<const N: usize, const I: usize>(
    hasher: &ahash::RandomState,
    by_addr: &mut Table,
    by_id: &mut Table,
    peer: &Peer<N, I>,
    at: usize,
) {
    by_addr.insert(addr_hash(hasher, &peer.addr), at as u32);
    if I > 0 {
        by_id.insert(key_hash(hasher, &peer.addr, &peer.id), at as u32);
    }
}

/// Takes `peer`'s entry for position `at` out of one generation of the
/// index's tables; the other entries are found under the keys of the
/// positions they hold in `peers`.
fn take<const N: usize, const I: usize>(
    hasher: &ahash::RandomState,
    by_addr: &mut Table,
    by_id: &mut Table,
    peers: &[Peer<N, I>],
    peer: &Peer<N, I>,
    at: usize,
) {
    let addr_at = |p: u32| addr_hash(hasher, &peers[p as usize].addr);
    by_addr.remove(addr_hash(hasher, &peer.addr), at as u32, addr_at);
    if I > 0 {
        let key_at = |p: u32| {
            let peer = &peers[p as usize];
            key_hash(hasher, &peer.addr, &peer.id)
        };
        by_id.remove(key_hash(hasher, &peer.addr, &peer.id), at as u32, key_at);
    }
}

/// The index's hash of an address and port. The bytes go to the hasher as
/// whole words, one multiply each: hashed as a slice they cost a length
/// prefix and a loop, and the index hashes on every announce, move and
/// removal. The key stays the hasher's random one.
fn addr_hash<const N: usize>(hasher: &ahash::RandomState, addr: &[u8; N]) -> u64 {
    let mut state = hasher.build_hasher();
    write_words(&mut state, addr);
    state.finish()
}

/// The index's hash of an address (without the port) and a peer id.
fn key_hash<const N: usize>(hasher: &ahash::RandomState, addr: &[u8; N], id: &[u8]) -> u64 {
    let mut state = hasher.build_hasher();
    write_words(&mut state, &addr[..N - 2]);
    write_words(&mut state, id);
    state.finish()
}

/// Feeds `bytes` to `state` as little-endian words, the last one padded
/// with zeros (each table's keys all have one length, so padding cannot
/// make two keys alike).
fn write_words(state: &mut impl std::hash::Hasher, bytes: &[u8]) {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        state.write_u64(word.try_into().map_or(0, u64::from_le_bytes));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0; 8];
        last[..rest.len()].copy_from_slice(rest);
        state.write_u64(u64::from_le_bytes(last));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: u8, port: u16) -> [u8; 6] {
        let p = port.to_be_bytes();
        [10, 0, 0, ip, p[0], p[1]]
    }

    fn id(n: u8) -> PeerId {
        PeerId([n; 20])
    }

    #[test]
    fn entries_are_28_bytes_with_ids_and_8_without() {
        assert_eq!(std::mem::size_of::<Peer<6, 20>>(), 28);
        assert_eq!(std::mem::size_of::<Peer<6, 0>>(), 8);
        assert_eq!(std::mem::size_of::<Peer<18, 20>>(), 40);
        assert_eq!(std::mem::size_of::<Head<20>>(), 40);
        assert_eq!(std::mem::size_of::<Head<0>>(), 40);
        assert_eq!(std::mem::size_of::<PeerList<6, 20>>(), 8);
        assert_eq!(std::mem::size_of::<Option<PeerList<6, 20>>>(), 8);
    }

    #[test]
    fn stamps_wrap_no_sooner_than_four_ttls() {
        let clock = Clock::new(2700);
        assert_eq!(clock.unit, 1);
        let seen = clock.stamp(40_000);
        assert!(!clock.is_stale(seen, clock.stamp(42_700)));
        assert!(clock.is_stale(seen, clock.stamp(42_701)));
        // Past the 15-bit wrap (32,768 s) the age still reads right.
        let seen = clock.stamp(32_000);
        assert!(!clock.is_stale(seen, clock.stamp(34_000)));
        assert!(clock.is_stale(seen, clock.stamp(35_000)));
        // A day-long TTL counts in coarser units.
        let clock = Clock::new(86_400);
        assert!(clock.unit > 1);
        assert!(!clock.is_stale(clock.stamp(0), clock.stamp(86_000)));
        assert!(clock.is_stale(clock.stamp(0), clock.stamp(86_400 + clock.unit * 2)));
    }

    #[test]
    fn capacity_grows_by_an_eighth_and_shrinks_back() {
        type List = PeerList<6, 20>;
        let mut list = List::default();
        let spread = |i: u16| [10, 1, (i >> 8) as u8, i as u8, 0, 1];
        // What the block for an eighth more than `len` holds, rounded up
        // to the allocator's size class.
        let most = |len: usize| {
            let size = List::layout(len + (len / 8).max(1)).size();
            (block::allocated_size(size) - List::PEERS_AT) / 28
        };
        let mut blocks = std::collections::HashSet::new();
        for i in 0..1000u16 {
            list.upsert(spread(i), id(1), false, false, 0);
            let (len, cap) = (list.len(), list.capacity());
            assert!(len <= cap && cap <= most(len), "capacity {cap} at {len}");
            // Every byte of the block the allocator hands out is used.
            let size = List::layout(cap).size();
            assert!(
                block::allocated_size(size) - size < 28,
                "room left at {cap}"
            );
            blocks.insert(cap);
        }
        // Growing by an eighth and more, 1,000 peers take a few dozen
        // blocks, not a thousand.
        assert!(blocks.len() < 50, "{} capacities", blocks.len());
        for i in 0..900u16 {
            assert!(list.remove(&spread(i), &id(1)));
        }
        assert_eq!(list.len(), 100);
        let cap = list.capacity();
        assert!(cap <= most(100), "cap {cap} after shrinking to 100");
        list.check();
    }

    #[test]
    fn capacity_classes_rise_to_the_longest_list() {
        fn rise<const N: usize, const I: usize>() {
            let caps = PeerList::<N, I>::CAPS;
            assert_eq!(caps[0], 0);
            assert!(
                caps.windows(2)
                    .all(|w| w[0] < w[1] || w[1] as usize == MAX_LEN)
            );
            assert_eq!(caps[CLASSES - 1] as usize, MAX_LEN);
        }
        rise::<6, 20>();
        rise::<6, 0>();
        rise::<18, 20>();
        rise::<18, 0>();
    }

    #[test]
    fn a_list_at_its_longest_refuses_new_peers_only() {
        let mut list = PeerList::<6, 0>::with_capacity(MAX_LEN);
        for i in 0..MAX_LEN as u32 {
            let [_, b, c, d] = i.to_be_bytes();
            list.push(Peer::new([10, b, c, d, 0, 1], &id(0), 0, false));
        }
        list.head_mut().seeders = MAX_LEN as u32;
        assert_eq!(list.len(), MAX_LEN);
        let new = list.upsert_if_room([11, 0, 0, 1, 0, 1], &id(0), true, false, 1, true);
        assert_eq!(new, None);
        let known = list.upsert_if_room([10, 0, 0, 7, 0, 1], &id(0), true, false, 1, true);
        assert!(known.is_some());
        assert_eq!(list.len(), MAX_LEN);
    }

    #[test]
    fn a_new_leecher_is_appended_and_moves_no_one() {
        // Indexed (past INDEX_FROM), half seeders: a new leecher takes the
        // next position and every peer already there stays where it was.
        let mut list = PeerList::<6, 20>::default();
        for k in 0..40u8 {
            list.upsert(addr(k, 1), id(k), k % 2 == 0, false, 0);
        }
        assert!(list.is_indexed());
        let before: Vec<_> = list.peers().to_vec();
        let up = list.upsert(addr(200, 1), id(200), false, false, 0);
        assert_eq!(up.index, 40);
        assert_eq!(&list.peers()[..40], &before[..]);
        assert_eq!((list.seeders(), list.leechers()), (20, 21));
        // A new seeder goes where the leechers begin.
        let up = list.upsert(addr(201, 1), id(201), true, false, 0);
        assert_eq!(up.index, 20);
        assert_eq!((list.seeders(), list.leechers()), (21, 21));
        list.check();
    }

    #[test]
    fn roles_partition_and_counts_stay_exact() {
        let mut list = PeerList::<6, 20>::default();
        list.upsert(addr(1, 1), id(1), false, false, 0);
        list.upsert(addr(2, 1), id(2), true, false, 0);
        list.upsert(addr(3, 1), id(3), false, false, 0);
        assert_eq!((list.leechers(), list.seeders()), (2, 1));
        // Leecher 1 finishes.
        list.upsert(addr(1, 1), id(1), true, true, 1);
        assert_eq!((list.leechers(), list.seeders()), (1, 2));
        assert!(list.peers()[2..].iter().all(|p| p.id() == Some(id(3))));
        assert!(list.remove(&addr(3, 1), &id(3)));
        assert_eq!((list.leechers(), list.seeders()), (0, 2));
        list.check();
    }

    #[test]
    fn same_ip_new_port_or_new_id_replaces_the_entry() {
        let mut list = PeerList::<6, 20>::default();
        list.upsert(addr(1, 1000), id(1), false, false, 0);
        // Same id, new port: the port moves.
        list.upsert(addr(1, 2000), id(1), false, false, 0);
        assert_eq!(list.len(), 1);
        assert_eq!(list.peers()[0].addr, addr(1, 2000));
        // Same port, new id: the client restarted.
        list.upsert(addr(1, 2000), id(2), false, false, 0);
        assert_eq!(list.len(), 1);
        assert_eq!(list.peers()[0].id(), Some(id(2)));
        // New port and new id from the same IP: a second client.
        list.upsert(addr(1, 3000), id(3), false, false, 0);
        assert_eq!(list.len(), 2);
        // Same id from another IP is another peer, not a takeover.
        list.upsert(addr(9, 3000), id(3), false, false, 0);
        assert_eq!(list.len(), 3);
        // Peer 2 moves to peer 3's port: peer 3's entry is stale and goes.
        list.upsert(addr(1, 3000), id(2), false, false, 0);
        assert_eq!(list.len(), 2);
        list.check();
    }

    #[test]
    fn without_ids_the_address_and_port_are_the_peer() {
        let mut list = PeerList::<6, 0>::default();
        list.upsert(addr(1, 1000), id(1), false, false, 0);
        // Same address and port, another id: the same entry.
        list.upsert(addr(1, 1000), id(2), true, false, 0);
        assert_eq!((list.len(), list.seeders()), (1, 1));
        // Same id, another port: another peer (nothing ties them).
        list.upsert(addr(1, 2000), id(2), false, false, 0);
        assert_eq!(list.len(), 2);
        assert_eq!(list.peers()[0].id(), None);
        // Indexed, the same holds.
        for port in 0..100u16 {
            list.upsert(addr(2, port), id(1), port % 2 == 0, false, 0);
        }
        assert!(list.is_indexed());
        assert_eq!(list.len(), 102);
        list.upsert(addr(2, 7), id(9), false, false, 0);
        assert_eq!(list.len(), 102);
        assert!(list.remove(&addr(2, 7), &id(42)));
        assert!(!list.remove(&addr(2, 7), &id(42)));
        assert_eq!(list.len(), 101);
        list.check();
    }

    #[test]
    fn completion_counts_once_per_entry_and_only_as_seeder() {
        let mut list = PeerList::<6, 20>::default();
        assert!(!list.upsert(addr(1, 1), id(1), false, true, 0).completed_now);
        assert!(list.upsert(addr(1, 1), id(1), true, true, 0).completed_now);
        assert!(!list.upsert(addr(1, 1), id(1), true, true, 0).completed_now);
        // Starting as a seeder is not a download.
        assert!(!list.upsert(addr(2, 1), id(2), true, false, 0).completed_now);
    }

    #[test]
    fn many_peers_behind_one_ip_are_indexed_by_port_and_id() {
        let mut list = PeerList::<6, 20>::default();
        for n in 0..500u16 {
            let mut peer_id = [0u8; 20];
            peer_id[..2].copy_from_slice(&n.to_be_bytes());
            list.upsert(addr(1, 1000 + n), PeerId(peer_id), n % 2 == 0, false, 0);
        }
        assert!(list.is_indexed());
        assert_eq!(list.len(), 500);
        let mut peer_id = [0u8; 20];
        peer_id[..2].copy_from_slice(&7u16.to_be_bytes());
        // Same IP, peer 7's id, new port: found by id, port moves.
        let at = list
            .upsert(addr(1, 9999), PeerId(peer_id), false, false, 1)
            .index;
        assert_eq!(list.peers()[at].addr, addr(1, 9999));
        assert_eq!(list.len(), 500);
        // Peer 7 takes peer 8's port: peer 8's entry is stale and goes.
        list.upsert(addr(1, 1008), PeerId(peer_id), false, false, 1);
        assert_eq!(list.len(), 499);
        list.check();
    }

    #[test]
    fn large_lists_use_wide_index_slots() {
        let mut list = PeerList::<6, 20>::default();
        for n in 0..20_000u32 {
            let [_, _, c, d] = n.to_be_bytes();
            let a = [10, c, d, 1, 0x1A, 0xE1];
            list.upsert(a, id(d), n % 3 == 0, false, 0);
        }
        assert_eq!(list.len(), 20_000);
        list.check();
        for n in (0..20_000u32).step_by(2) {
            let [_, _, c, d] = n.to_be_bytes();
            assert!(list.remove(&[10, c, d, 1, 0x1A, 0xE1], &id(d)));
        }
        assert_eq!(list.len(), 10_000);
        list.check();
    }

    /// Outgrowing the index (and shrinking far below it) moves to tables of
    /// the new size a few positions per operation: a list never rebuilds a
    /// large index at once, with lookups right all along.
    #[test]
    fn the_index_changes_size_a_few_positions_at_a_time() {
        let mut list = PeerList::<6, 20>::default();
        let key = |n: u32| {
            let [_, b, c, d] = n.to_be_bytes();
            ([10, b, c, d, 0x1A, 0xE1], PeerId([d; 20]))
        };
        let (mut spans, mut moving_for) = (Vec::new(), 0);
        for n in 0..20_000u32 {
            let before = list.index().and_then(|i| i.next.as_ref().map(|g| g.done));
            let (a, i) = key(n);
            list.upsert(a, i, n % 3 == 0, false, 0);
            let index = list.index();
            match index.and_then(|i| i.next.as_deref()) {
                Some(next) => {
                    moving_for += 1;
                    let moved = next.done - before.unwrap_or(0);
                    assert!(
                        moved <= MIGRATE_PER_INSERT,
                        "{moved} positions moved by one insert"
                    );
                }
                None if moving_for > 0 => {
                    spans.push(moving_for);
                    moving_for = 0;
                }
                None => {}
            }
            if n % 997 == 0 {
                list.check();
            }
        }
        // Every move from 8k peers up lasted many inserts.
        assert!(spans.iter().filter(|&&s| s > 100).count() >= 2, "{spans:?}");
        list.check();
        // Shrinking: removals move the index too.
        let mut shrinking = false;
        for n in (0..20_000u32).filter(|n| n % 8 != 0) {
            let (a, i) = key(n);
            assert!(list.remove(&a, &i));
            shrinking |= list.index().is_some_and(|i| i.next.is_some());
            if n % 997 == 0 {
                list.check();
            }
        }
        assert!(shrinking);
        assert_eq!(list.len(), 2_500);
        list.check();
        for n in (0..20_000u32).step_by(8) {
            let (a, i) = key(n);
            assert_eq!(list.find(&a, &i).map(|p| list.peers()[p].addr), Some(a));
        }
    }

    #[test]
    fn expire_removes_exactly_the_stale() {
        let clock = Clock::new(1);
        let mut list = PeerList::<6, 20>::default();
        for i in 0..100u8 {
            list.upsert(addr(i, 1), id(i), i % 3 == 0, false, u16::from(i % 2));
        }
        assert!(list.is_indexed());
        assert_eq!(list.expire(&clock, 2), 50);
        assert!(list.peers().iter().all(|p| p.stamp() == 1));
        assert_eq!(list.leechers() + list.seeders(), 50);
        list.check();
        assert_eq!(list.expire(&clock, 3), 50);
        assert!(list.is_empty() && !list.is_indexed());
    }

    #[test]
    fn expiry_in_steps_removes_the_same_peers() {
        let clock = Clock::new(1);
        let mut list = PeerList::<6, 20>::default();
        for i in 0..200u8 {
            list.upsert(addr(i, 1), id(i), i % 3 == 0, false, u16::from(i % 2));
        }
        let (mut removed, mut end) = (0, usize::MAX);
        let mut steps = 0;
        loop {
            let (r, next) = list.expire_some(&clock, 2, end, 16);
            removed += r;
            steps += 1;
            list.check();
            if next == 0 {
                break;
            }
            end = next;
        }
        assert_eq!(removed, 100);
        assert_eq!(steps, 200 / 16 + 1);
        assert!(list.peers().iter().all(|p| p.stamp() == 1));
    }

    #[test]
    fn sample_excludes_self_and_sends_seeders_leechers_only() {
        let mut list = PeerList::<6, 20>::default();
        for i in 0..10u8 {
            list.upsert(addr(i, 1), id(i), i >= 5, false, 0);
        }
        let me = list.upsert(addr(7, 1), id(7), true, false, 0).index;
        let mut out = Vec::new();
        assert_eq!(list.sample(true, Some(me), 50, &mut out, None), 5);
        assert!(out.iter().all(|a| a[3] < 5), "seeder got a seeder: {out:?}");
        out.clear();
        let me = list.upsert(addr(2, 1), id(2), false, false, 0).index;
        assert_eq!(list.sample(false, Some(me), 50, &mut out, None), 9);
        assert!(!out.contains(&addr(2, 1)));
        out.clear();
        let mut ids = Vec::new();
        assert_eq!(list.sample(false, Some(me), 4, &mut out, Some(&mut ids)), 4);
        assert!(!out.contains(&addr(2, 1)));
        for (a, i) in out.iter().zip(&ids) {
            assert_eq!(id(a[3]), *i);
        }
        let mut unique = out.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4, "sample repeats a peer");
    }

    #[test]
    fn samples_vary() {
        let mut list = PeerList::<6, 20>::default();
        for i in 0..200u8 {
            list.upsert(addr(i, 1), id(i), false, false, 0);
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut out = Vec::new();
            list.sample(false, None, 10, &mut out, None);
            seen.extend(out);
        }
        // 20 draws of 10 from 200: a fixed "first N" would see only 10.
        assert!(seen.len() > 60, "only {} distinct peers", seen.len());
    }

    proptest::proptest! {
        /// Any sequence of announces, stops and expiries keeps the partition,
        /// the index and the counts consistent with a simple model.
        #[test]
        fn behaves_like_a_model(ops in proptest::collection::vec((0u8..5, 0u8..6, 0u8..3, 0u8..6, proptest::bool::ANY), 1..400)) {
            let mut list = PeerList::<6, 20>::default();
            // Model: (ip, port, id, seeder), one per (ip,id) and per (ip,port).
            let mut model: Vec<(u8, u16, u8, bool)> = Vec::new();
            for (op, ip, port, idn, seeder) in ops {
                let port = u16::from(port);
                match op {
                    0 | 1 => {
                        list.upsert(addr(ip, port), id(idn), seeder, false, 0);
                        let by_id = model.iter().position(|m| m.0 == ip && m.2 == idn);
                        let by_port = model.iter().position(|m| m.0 == ip && m.1 == port && m.2 != idn);
                        if let (Some(_), Some(j)) = (by_id, by_port) {
                            model.remove(j);
                        }
                        let found = model.iter().position(|m| m.0 == ip && (m.2 == idn || m.1 == port));
                        match found {
                            Some(k) => model[k] = (ip, port, idn, seeder),
                            None => model.push((ip, port, idn, seeder)),
                        }
                    }
                    2 => {
                        list.remove(&addr(ip, port), &id(idn));
                        let by_id = model.iter().position(|m| m.0 == ip && m.2 == idn);
                        let by_port = model.iter().position(|m| m.0 == ip && m.1 == port && m.2 != idn);
                        match (by_id, by_port) {
                            (Some(i), Some(j)) => { model.remove(j); let i = model.iter().position(|m| m.0 == ip && m.2 == idn).unwrap_or(i); model.remove(i); }
                            (Some(i), None) | (None, Some(i)) => { model.remove(i); }
                            (None, None) => {}
                        }
                    }
                    3 => {
                        // Extra peers on other IPs push the list over the
                        // index threshold, so later operations run indexed.
                        for k in 0..40u8 { list.upsert(addr(100 + k, 1), id(100 + k), k % 2 == 0, false, 0); }
                    }
                    _ => {
                        for k in 0..40u8 { list.remove(&addr(100 + k, 1), &id(100 + k)); }
                    }
                }
                list.check();
                let seeders = list.seeders();
                let mut got: Vec<(u8, u16, u8, bool)> = list.peers().iter().enumerate().filter(|(_, p)| p.addr[3] < 100).map(|(i, p)| {
                    (p.addr[3], u16::from_be_bytes([p.addr[4], p.addr[5]]), p.id().map_or(0, |id| id.0[0]), i < seeders)
                }).collect();
                got.sort();
                let mut want = model.clone();
                want.sort();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
