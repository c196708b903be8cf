//! One address family's peers in one swarm.
//!
//! Peers live in a single dense `Vec`, partitioned so that leechers come first
//! (`peers[..leechers]`) and seeders after. That keeps both counts exact by
//! construction, lets a seeder be sent leechers only by sampling the first
//! range, and makes random sampling an index computation. Moving a peer
//! between roles or removing it is a couple of swaps.
//!
//! Each peer is stored as its compact wire form (`[u8; N]`: address then port,
//! network order: N = 6 for IPv4, 18 for IPv6), so an IPv4 peer costs IPv4
//! bytes and the response encoder copies peers out as they are.
//!
//! Identity: an announce refers to an existing entry when it comes from the
//! same IP with the same peer id (the client changed its port) or with the same
//! port (the client restarted with a new peer id). A peer id alone is not
//! enough, or anyone could replace or stop someone else's entry by copying
//! their id. Small lists are scanned; lists that grow past `INDEX_FROM` peers
//! get an [`Index`] by (IP, port) and by (IP, peer id), so the cost stays flat
//! in swarm size even when many peers share one IP (NAT, or an attacker).

use hashbrown::HashTable;

use crate::protocol::PeerId;

/// Build the IP index when a list grows past this many peers.
const INDEX_FROM: usize = 32;
/// Drop the index again when a list shrinks below this (hysteresis, so a list
/// hovering around the threshold does not rebuild it on every announce).
const INDEX_UNTIL: usize = 16;

/// One peer's entry: 32 bytes for IPv4, 44 for IPv6.
#[derive(Debug, Clone)]
pub(crate) struct Peer<const N: usize> {
    /// Compact wire form: address bytes then big-endian port.
    pub addr: [u8; N],
    pub id: PeerId,
    /// Coarse clock seconds of the last announce.
    pub last_seen: u32,
    /// This entry has already counted as a completed download.
    pub completed: bool,
}

/// Positions of a large list's peers, findable by (IP, port) and by
/// (IP, peer id). The tables hold bare `u32` positions and read keys from the
/// peers themselves, so the index costs about 12 bytes per peer.
#[derive(Debug)]
struct Index {
    hasher: ahash::RandomState,
    by_addr: HashTable<u32>,
    by_id: HashTable<u32>,
}

/// A position no peer has, used while two entries trade places.
const MOVING: u32 = u32::MAX;

impl Index {
    fn addr_hash<const N: usize>(&self, addr: &[u8; N]) -> u64 {
        self.hasher.hash_one(addr)
    }

    fn id_hash<const N: usize>(&self, addr: &[u8; N], id: &PeerId) -> u64 {
        self.hasher.hash_one((&addr[..N - 2], &id.0))
    }

    fn insert<const N: usize>(&mut self, peers: &[Peer<N>], at: usize) {
        let peer = &peers[at];
        let (ha, hi) = (
            self.addr_hash(&peer.addr),
            self.id_hash(&peer.addr, &peer.id),
        );
        let hasher = &self.hasher;
        self.by_addr
            .insert_unique(ha, at as u32, |&p| hasher.hash_one(peers[p as usize].addr));
        self.by_id.insert_unique(hi, at as u32, |&p| {
            let peer = &peers[p as usize];
            hasher.hash_one((&peer.addr[..N - 2], &peer.id.0))
        });
    }

    /// Removes position `at`, whose peer is `peer`.
    fn remove<const N: usize>(&mut self, peer: &Peer<N>, at: usize) {
        let (ha, hi) = (
            self.addr_hash(&peer.addr),
            self.id_hash(&peer.addr, &peer.id),
        );
        if let Ok(entry) = self.by_addr.find_entry(ha, |&p| p as usize == at) {
            entry.remove();
        }
        if let Ok(entry) = self.by_id.find_entry(hi, |&p| p as usize == at) {
            entry.remove();
        }
    }

    /// Changes the recorded position of `peer` from `from` to `to`.
    fn relocate<const N: usize>(&mut self, peer: &Peer<N>, from: u32, to: u32) {
        let (ha, hi) = (
            self.addr_hash(&peer.addr),
            self.id_hash(&peer.addr, &peer.id),
        );
        if let Some(p) = self.by_addr.find_mut(ha, |&p| p == from) {
            *p = to;
        }
        if let Some(p) = self.by_id.find_mut(hi, |&p| p == from) {
            *p = to;
        }
    }
}

/// What an announce did to a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upsert {
    /// Where the announcing peer now is.
    pub index: usize,
    /// This announce counts as a completed download.
    pub completed_now: bool,
}

#[derive(Debug, Default)]
pub(crate) struct PeerList<const N: usize> {
    peers: Vec<Peer<N>>,
    /// `peers[..leechers]` are leechers, the rest seeders.
    leechers: usize,
    /// Present only for large lists.
    index: Option<Box<Index>>,
}

fn same_ip<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    a[..N - 2] == b[..N - 2]
}

impl<const N: usize> PeerList<N> {
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn leechers(&self) -> usize {
        self.leechers
    }

    pub fn seeders(&self) -> usize {
        self.peers.len() - self.leechers
    }

    #[cfg(test)]
    pub fn peers(&self) -> &[Peer<N>] {
        &self.peers
    }

    #[cfg(test)]
    pub fn is_indexed(&self) -> bool {
        self.index.is_some()
    }

    /// The entries on the same IP as `addr` with the same peer id, and with
    /// the same port but another id.
    fn lookup(&self, addr: &[u8; N], id: &PeerId) -> (Option<usize>, Option<usize>) {
        let peers = &self.peers;
        match &self.index {
            Some(index) => {
                let by_id = index
                    .by_id
                    .find(index.id_hash(addr, id), |&p| {
                        let peer = &peers[p as usize];
                        peer.id == *id && same_ip(&peer.addr, addr)
                    })
                    .map(|&p| p as usize);
                let by_port = index
                    .by_addr
                    .find(index.addr_hash(addr), |&p| peers[p as usize].addr == *addr)
                    .map(|&p| p as usize)
                    .filter(|&p| peers[p].id != *id);
                (by_id, by_port)
            }
            None => {
                let (mut by_id, mut by_port) = (None, None);
                for (i, peer) in peers.iter().enumerate() {
                    if !same_ip(&peer.addr, addr) {
                        continue;
                    }
                    if peer.id == *id {
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
        id: PeerId,
        seeder: bool,
        completed: bool,
        now: u32,
        room: bool,
    ) -> Option<Upsert> {
        let completes = completed && seeder;
        let found = self.find(&addr, &id);
        if found.is_none() && !room {
            return None;
        }
        Some(match found {
            Some(i) => {
                let rekeyed = self.peers[i].addr != addr || self.peers[i].id != id;
                if rekeyed && let Some(index) = &mut self.index {
                    index.remove(&self.peers[i], i);
                }
                let peer = &mut self.peers[i];
                peer.addr = addr;
                peer.id = id;
                if rekeyed && let Some(index) = &mut self.index {
                    index.insert(&self.peers, i);
                }
                let peer = &mut self.peers[i];
                peer.last_seen = now;
                let completed_now = completes && !peer.completed;
                peer.completed |= completed_now;
                Upsert {
                    index: self.set_role(i, seeder),
                    completed_now,
                }
            }
            None => Upsert {
                index: self.insert(
                    Peer {
                        addr,
                        id,
                        last_seen: now,
                        completed: completes,
                    },
                    seeder,
                ),
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
        now: u32,
    ) -> Upsert {
        match self.upsert_if_room(addr, id, seeder, completed, now, true) {
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

    /// Removes every peer last seen before `deadline`; returns how many.
    pub fn expire(&mut self, deadline: u32) -> usize {
        let before = self.peers.len();
        // Backwards: a removal only moves already-visited entries into `i`.
        for i in (0..self.peers.len()).rev() {
            if self.peers[i].last_seen < deadline {
                self.remove_at(i);
            }
        }
        before - self.peers.len()
    }

    /// Appends up to `want` randomly chosen peers to `addrs` (and their ids to
    /// `ids`, if given), never the one at `exclude`. A seeder (`for_seeder`)
    /// is sent leechers only. Returns how many were added.
    pub fn sample(
        &self,
        for_seeder: bool,
        exclude: Option<usize>,
        want: usize,
        addrs: &mut Vec<[u8; N]>,
        mut ids: Option<&mut Vec<PeerId>>,
    ) -> usize {
        let n = if for_seeder {
            self.leechers
        } else {
            self.peers.len()
        };
        let excluded = exclude.is_some_and(|e| e < n);
        let available = n - usize::from(excluded);
        let mut emit = |peer: &Peer<N>| {
            addrs.push(peer.addr);
            if let Some(ids) = ids.as_deref_mut() {
                ids.push(peer.id);
            }
        };
        if want == 0 || available == 0 {
            return 0;
        }
        if want >= available {
            (0..n)
                .filter(|&i| Some(i) != exclude)
                .for_each(|i| emit(&self.peers[i]));
            return available;
        }
        // A window of consecutive entries from a random start, wrapping
        // around: a fresh selection each time, read sequentially from memory
        // (a strided sample of a large swarm touches a cache line per peer
        // and cost 2.5x more at 100k peers). Entries move on every
        // removal and role change, so windows do not keep fixed neighbours.
        let mut pos = fastrand::usize(0..n);
        let mut taken = 0;
        while taken < want {
            if Some(pos) != exclude {
                emit(&self.peers[pos]);
                taken += 1;
            }
            pos += 1;
            if pos == n {
                pos = 0;
            }
        }
        taken
    }

    fn insert(&mut self, peer: Peer<N>, seeder: bool) -> usize {
        let at = self.peers.len();
        if self.peers.capacity() == 0 {
            // Most torrents have one or two peers: start with room for one
            // instead of the four `Vec` would allocate.
            self.peers.reserve_exact(1);
        }
        self.peers.push(peer);
        match &mut self.index {
            Some(index) => index.insert(&self.peers, at),
            None if self.peers.len() > INDEX_FROM => self.build_index(),
            None => {}
        }
        if seeder {
            at
        } else {
            let first_seeder = self.leechers;
            self.swap(at, first_seeder);
            self.leechers += 1;
            first_seeder
        }
    }

    /// Moves the peer at `i` into the seeder or leecher range; returns its
    /// new position.
    fn set_role(&mut self, i: usize, seeder: bool) -> usize {
        let is_seeder = i >= self.leechers;
        if seeder == is_seeder {
            i
        } else if seeder {
            // Last leecher position becomes the first seeder position.
            self.leechers -= 1;
            self.swap(i, self.leechers);
            self.leechers
        } else {
            self.swap(i, self.leechers);
            self.leechers += 1;
            self.leechers - 1
        }
    }

    fn remove_at(&mut self, i: usize) {
        let last = self.peers.len() - 1;
        if i < self.leechers {
            // Fill the hole with the last leecher, and that leecher's slot
            // with the last seeder, keeping the partition.
            self.swap(i, self.leechers - 1);
            self.swap(self.leechers - 1, last);
            self.leechers -= 1;
        } else {
            self.swap(i, last);
        }
        if let Some(index) = &mut self.index {
            index.remove(&self.peers[last], last);
        }
        self.peers.pop();
        if self.index.is_some() && self.peers.len() < INDEX_UNTIL {
            self.index = None;
        }
        // Give memory back when a swarm that was large has shrunk a lot.
        if self.peers.capacity() > 64 && self.peers.len() < self.peers.capacity() / 4 {
            self.peers.shrink_to(self.peers.len() * 2);
        }
    }

    /// Swaps two entries, keeping the index true.
    fn swap(&mut self, i: usize, j: usize) {
        if i == j {
            return;
        }
        self.peers.swap(i, j);
        if let Some(index) = &mut self.index {
            // Park one entry on a position no peer has, so that no lookup
            // below can confuse the two moving entries.
            let (i32_, j32) = (i as u32, j as u32);
            index.relocate(&self.peers[j], i32_, MOVING);
            index.relocate(&self.peers[i], j32, i32_);
            index.relocate(&self.peers[j], MOVING, j32);
        }
    }

    fn build_index(&mut self) {
        let mut index = Index {
            hasher: ahash::RandomState::new(),
            by_addr: HashTable::with_capacity(self.peers.len() * 2),
            by_id: HashTable::with_capacity(self.peers.len() * 2),
        };
        for at in 0..self.peers.len() {
            index.insert(&self.peers, at);
        }
        self.index = Some(Box::new(index));
    }

    /// Checks every invariant; for tests.
    #[cfg(test)]
    pub fn check(&self) {
        assert!(self.leechers <= self.peers.len());
        if let Some(index) = &self.index {
            assert_eq!(index.by_addr.len(), self.peers.len(), "by_addr size");
            assert_eq!(index.by_id.len(), self.peers.len(), "by_id size");
            for (at, peer) in self.peers.iter().enumerate() {
                let found = index
                    .by_addr
                    .find(index.addr_hash(&peer.addr), |&p| p as usize == at);
                assert!(found.is_some(), "by_addr misses {at}");
                let found = index
                    .by_id
                    .find(index.id_hash(&peer.addr, &peer.id), |&p| p as usize == at);
                assert!(found.is_some(), "by_id misses {at}");
            }
        }
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
    fn roles_partition_and_counts_stay_exact() {
        let mut list = PeerList::<6>::default();
        list.upsert(addr(1, 1), id(1), false, false, 0);
        list.upsert(addr(2, 1), id(2), true, false, 0);
        list.upsert(addr(3, 1), id(3), false, false, 0);
        assert_eq!((list.leechers(), list.seeders()), (2, 1));
        // Leecher 1 finishes.
        list.upsert(addr(1, 1), id(1), true, true, 1);
        assert_eq!((list.leechers(), list.seeders()), (1, 2));
        assert!(list.peers()[..1].iter().all(|p| p.id == id(3)));
        assert!(list.remove(&addr(3, 1), &id(3)));
        assert_eq!((list.leechers(), list.seeders()), (0, 2));
        list.check();
    }

    #[test]
    fn same_ip_new_port_or_new_id_replaces_the_entry() {
        let mut list = PeerList::<6>::default();
        list.upsert(addr(1, 1000), id(1), false, false, 0);
        // Same id, new port: the port moves.
        list.upsert(addr(1, 2000), id(1), false, false, 0);
        assert_eq!(list.len(), 1);
        assert_eq!(list.peers()[0].addr, addr(1, 2000));
        // Same port, new id: the client restarted.
        list.upsert(addr(1, 2000), id(2), false, false, 0);
        assert_eq!(list.len(), 1);
        assert_eq!(list.peers()[0].id, id(2));
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
    fn completion_counts_once_per_entry_and_only_as_seeder() {
        let mut list = PeerList::<6>::default();
        assert!(!list.upsert(addr(1, 1), id(1), false, true, 0).completed_now);
        assert!(list.upsert(addr(1, 1), id(1), true, true, 0).completed_now);
        assert!(!list.upsert(addr(1, 1), id(1), true, true, 0).completed_now);
        // Starting as a seeder is not a download.
        assert!(!list.upsert(addr(2, 1), id(2), true, false, 0).completed_now);
    }

    #[test]
    fn many_peers_behind_one_ip_are_indexed_by_port_and_id() {
        let mut list = PeerList::<6>::default();
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
    fn expire_removes_exactly_the_stale() {
        let mut list = PeerList::<6>::default();
        for i in 0..100u8 {
            list.upsert(addr(i, 1), id(i), i % 3 == 0, false, u32::from(i % 2));
        }
        assert!(list.is_indexed());
        assert_eq!(list.expire(1), 50);
        assert!(list.peers().iter().all(|p| p.last_seen == 1));
        assert_eq!(list.leechers() + list.seeders(), 50);
        list.check();
        assert_eq!(list.expire(2), 50);
        assert!(list.is_empty() && !list.is_indexed());
    }

    #[test]
    fn sample_excludes_self_and_sends_seeders_leechers_only() {
        let mut list = PeerList::<6>::default();
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
        let mut list = PeerList::<6>::default();
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
            let mut list = PeerList::<6>::default();
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
                let mut got: Vec<(u8, u16, u8, bool)> = list.peers().iter().enumerate().filter(|(_, p)| p.addr[3] < 100).map(|(i, p)| {
                    (p.addr[3], u16::from_be_bytes([p.addr[4], p.addr[5]]), p.id.0[0], i >= list.leechers())
                }).collect();
                got.sort();
                let mut want = model.clone();
                want.sort();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
