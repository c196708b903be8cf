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
//! get an index from IP to positions so the cost stays flat in swarm size.

use std::collections::HashMap;

use smallvec::SmallVec;

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

type IpIndex<const N: usize> = HashMap<[u8; N], SmallVec<[u32; 2]>, ahash::RandomState>;

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
    /// IP (port bytes zeroed) to positions; present only for large lists.
    index: Option<Box<IpIndex<N>>>,
}

fn ip_key<const N: usize>(addr: &[u8; N]) -> [u8; N] {
    let mut key = *addr;
    key[N - 2] = 0;
    key[N - 1] = 0;
    key
}

fn same_ip<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    a[..N - 2] == b[..N - 2]
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A random step coprime with `n`, so that `start + i * step (mod n)` visits
/// `n` distinct positions: a cheap random sample without replacement.
fn coprime_step(n: usize) -> usize {
    if n <= 2 {
        return 1;
    }
    for _ in 0..8 {
        let step = fastrand::usize(1..n);
        if gcd(step, n) == 1 {
            return step;
        }
    }
    1
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

    /// Calls `f` with the position of every peer on the same IP as `addr`.
    fn each_same_ip(&self, addr: &[u8; N], mut f: impl FnMut(usize)) {
        match &self.index {
            Some(index) => {
                if let Some(positions) = index.get(&ip_key(addr)) {
                    positions.iter().for_each(|&i| f(i as usize));
                }
            }
            None => (0..self.peers.len())
                .filter(|&i| same_ip(&self.peers[i].addr, addr))
                .for_each(f),
        }
    }

    /// The entry an announce from `addr` with `id` refers to (see the module
    /// doc). If one entry matches by id and another by port, the one that
    /// matches by port is stale (its port now belongs to this peer) and is
    /// removed.
    pub fn find(&mut self, addr: &[u8; N], id: &PeerId) -> Option<usize> {
        let (mut by_id, mut by_port) = (None, None);
        self.each_same_ip(addr, |i| {
            let peer = &self.peers[i];
            if peer.id == *id {
                by_id = Some(i);
            } else if peer.addr == *addr {
                by_port = Some(i);
            }
        });
        match (by_id, by_port) {
            (Some(_), Some(stale)) => {
                self.remove_at(stale);
                // The removal moved entries around; look the peer up again.
                let mut again = None;
                self.each_same_ip(addr, |i| {
                    if self.peers[i].id == *id {
                        again = Some(i);
                    }
                });
                again
            }
            (found, None) | (None, found) => found,
        }
    }

    /// Adds or refreshes the announcing peer and returns where it now is.
    /// `completed` is an `event=completed` announce; it counts as a download
    /// once per entry, and only with nothing left to download.
    pub fn upsert(
        &mut self,
        addr: [u8; N],
        id: PeerId,
        seeder: bool,
        completed: bool,
        now: u32,
    ) -> Upsert {
        let completes = completed && seeder;
        match self.find(&addr, &id) {
            Some(i) => {
                let peer = &mut self.peers[i];
                peer.addr = addr; // same IP: the index key does not change
                peer.id = id;
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
        let step = coprime_step(n);
        let mut pos = fastrand::usize(0..n);
        let mut taken = 0;
        while taken < want {
            if Some(pos) != exclude {
                emit(&self.peers[pos]);
                taken += 1;
            }
            pos = (pos + step) % n;
        }
        taken
    }

    fn insert(&mut self, peer: Peer<N>, seeder: bool) -> usize {
        let at = self.peers.len();
        self.peers.push(peer);
        match &mut self.index {
            Some(index) => index
                .entry(ip_key(&self.peers[at].addr))
                .or_default()
                .push(at as u32),
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
            let key = ip_key(&self.peers[last].addr);
            if let Some(positions) = index.get_mut(&key) {
                positions.retain(|p| *p as usize != last);
                if positions.is_empty() {
                    index.remove(&key);
                }
            }
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
            // Each moved peer's position list swaps the old position for the
            // new one. If both share an IP the list holds both and the two
            // replacements leave it holding both again.
            for (now_at, was_at) in [(i, j), (j, i)] {
                if let Some(positions) = index.get_mut(&ip_key(&self.peers[now_at].addr))
                    && let Some(p) = positions.iter_mut().find(|p| **p as usize == was_at)
                {
                    *p = now_at as u32;
                }
            }
        }
    }

    fn build_index(&mut self) {
        let mut index =
            IpIndex::<N>::with_capacity_and_hasher(self.peers.len() * 2, ahash::RandomState::new());
        for (i, peer) in self.peers.iter().enumerate() {
            index.entry(ip_key(&peer.addr)).or_default().push(i as u32);
        }
        self.index = Some(Box::new(index));
    }

    /// Checks every invariant; for tests.
    #[cfg(test)]
    pub fn check(&self) {
        assert!(self.leechers <= self.peers.len());
        if let Some(index) = &self.index {
            let total: usize = index.values().map(|v| v.len()).sum();
            assert_eq!(total, self.peers.len(), "index size");
            for (key, positions) in index.iter() {
                for &p in positions {
                    assert_eq!(ip_key(&self.peers[p as usize].addr), *key, "index entry");
                }
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
        fn behaves_like_a_model(ops in proptest::collection::vec((0u8..4, 0u8..6, 0u8..3, 0u8..6, proptest::bool::ANY), 1..400)) {
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
                    _ => {
                        // Many extra peers on other IPs push the list over the
                        // index threshold and back.
                        for k in 0..40u8 { list.upsert(addr(100 + k, 1), id(100 + k), k % 2 == 0, false, 0); }
                        for k in 0..40u8 { list.remove(&addr(100 + k, 1), &id(100 + k)); }
                    }
                }
                list.check();
                let mut got: Vec<(u8, u16, u8, bool)> = list.peers().iter().enumerate().map(|(i, p)| {
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
