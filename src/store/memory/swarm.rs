//! One torrent's swarm: its IPv4 and IPv6 peers and its snatch count.
//!
//! A swarm is one pointer: its IPv4 list's block, whose header also holds
//! the info hash, the snatch count and, once the torrent has an IPv6 peer,
//! the IPv6 list (see [`super::peers`]). The map's slot for a torrent is
//! then this pointer alone, and a torrent with one peer costs one small
//! allocation besides.

use std::net::IpAddr;

use super::Refusal;
use super::peers::{Clock, PeerList};
use crate::protocol::{AnnounceRequest, Event, InfoHash, PeerSet, SwarmCounts};

/// `I` is the bytes of peer id kept per peer: 20, or 0 in compact-only mode.
#[derive(Debug, Default)]
pub(crate) struct Swarm<const I: usize> {
    v4: PeerList<6, I>,
}

fn compact_v4(ip: [u8; 4], port: u16) -> [u8; 6] {
    let p = port.to_be_bytes();
    [ip[0], ip[1], ip[2], ip[3], p[0], p[1]]
}

fn compact_v6(ip: [u8; 16], port: u16) -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..16].copy_from_slice(&ip);
    out[16..].copy_from_slice(&port.to_be_bytes());
    out
}

impl<const I: usize> Swarm<I> {
    pub fn new(hash: InfoHash, downloaded: u64) -> Self {
        // Room for the first peer: most torrents have one or two.
        let mut v4 = PeerList::with_capacity(1);
        v4.set_hash(hash);
        v4.set_downloaded(downloaded);
        Self { v4 }
    }

    /// The torrent this is the swarm of.
    pub fn hash(&self) -> &InfoHash {
        self.v4.hash()
    }

    /// Completed downloads ever seen for this torrent.
    pub fn downloaded(&self) -> u64 {
        self.v4.downloaded()
    }

    pub fn set_downloaded(&mut self, downloaded: u64) {
        self.v4.set_downloaded(downloaded);
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v4.v6().is_none()
    }

    pub fn peer_count(&self) -> usize {
        self.v4.len() + self.v4.v6().map_or(0, |v6| v6.len())
    }

    /// `(seeders, leechers)` of the IPv4 and the IPv6 peers.
    pub fn family_counts(&self) -> [(usize, usize); 2] {
        let v6 = self
            .v4
            .v6()
            .map_or((0, 0), |v6| (v6.seeders(), v6.leechers()));
        [(self.v4.seeders(), self.v4.leechers()), v6]
    }

    pub fn counts(&self) -> SwarmCounts {
        let [(seeders4, leechers4), (seeders6, leechers6)] = self.family_counts();
        SwarmCounts {
            complete: (seeders4 + seeders6) as u32,
            incomplete: (leechers4 + leechers6) as u32,
            downloaded: self.downloaded(),
        }
    }

    fn tidy_v6(&mut self) {
        self.v4.tidy_v6();
    }

    /// Records the announce of a peer at `ip` (canonical: no IPv4-mapped
    /// IPv6) at coarse time `now` and fills `out` with peers for it, own
    /// address family first.
    pub fn announce(
        &mut self,
        req: &AnnounceRequest,
        ip: IpAddr,
        clock: &Clock,
        now: u32,
        max_peers: usize,
        out: &mut PeerSet,
    ) -> Result<SwarmCounts, Refusal> {
        let room = self.peer_count() < max_peers;
        let seeder = req.is_seeder();
        let completed = req.event == Event::Completed;
        let want = req.numwant as usize;
        let with_ids = !req.compact && !req.no_peer_id;
        let port = req.port.get();
        let stamp = clock.stamp(now);
        let (ids4, ids6) = if with_ids {
            (Some(&mut out.v4_ids), Some(&mut out.v6_ids))
        } else {
            (None, None)
        };
        let upsert = match ip {
            IpAddr::V4(ip) => {
                let addr = compact_v4(ip.octets(), port);
                let up = self
                    .v4
                    .upsert_if_room(addr, &req.peer_id, seeder, completed, stamp, room)
                    .ok_or(Refusal::SwarmFull)?;
                let got = self
                    .v4
                    .sample(seeder, Some(up.index), want, &mut out.v4, ids4);
                if let Some(v6) = self.v4.v6() {
                    v6.sample(seeder, None, want - got, &mut out.v6, ids6);
                }
                up
            }
            IpAddr::V6(ip) => {
                let addr = compact_v6(ip.octets(), port);
                let v6 = self.v4.v6_or_new();
                let up = v6.upsert_if_room(addr, &req.peer_id, seeder, completed, stamp, room);
                let Some(up) = up else {
                    self.tidy_v6();
                    return Err(Refusal::SwarmFull);
                };
                let got = v6.sample(seeder, Some(up.index), want, &mut out.v6, ids6);
                self.v4.sample(seeder, None, want - got, &mut out.v4, ids4);
                up
            }
        };
        if upsert.completed_now {
            self.set_downloaded(self.downloaded().saturating_add(1));
        }
        Ok(self.counts())
    }

    /// Removes the peer an `event=stopped` announce refers to.
    pub fn stop(&mut self, req: &AnnounceRequest, ip: IpAddr) -> bool {
        let port = req.port.get();
        let removed = match ip {
            IpAddr::V4(ip) => self.v4.remove(&compact_v4(ip.octets(), port), &req.peer_id),
            IpAddr::V6(ip) => self
                .v4
                .v6_mut()
                .is_some_and(|v6| v6.remove(&compact_v6(ip.octets(), port), &req.peer_id)),
        };
        self.tidy_v6();
        removed
    }

    /// Removes stale peers visiting at most `budget` positions, resuming at
    /// `cursor` (`[IPv4, IPv6]` positions to walk down from; start with
    /// `usize::MAX` for both). Returns how many were removed and whether the
    /// walk is done.
    pub fn expire_some(
        &mut self,
        clock: &Clock,
        now: u32,
        cursor: &mut [usize; 2],
        budget: usize,
    ) -> (usize, bool) {
        let now = clock.stamp(now);
        let removed = if cursor[0] > 0 {
            let (removed, next) = self.v4.expire_some(clock, now, cursor[0], budget);
            cursor[0] = next;
            removed
        } else {
            match self.v4.v6_mut() {
                Some(v6) if cursor[1] > 0 => {
                    let (removed, next) = v6.expire_some(clock, now, cursor[1], budget);
                    cursor[1] = next;
                    removed
                }
                _ => {
                    cursor[1] = 0;
                    0
                }
            }
        };
        self.tidy_v6();
        (removed, *cursor == [0, 0])
    }

    /// Removes peers that are stale at coarse time `now`; returns how many.
    pub fn expire(&mut self, clock: &Clock, now: u32) -> usize {
        let now = clock.stamp(now);
        let expired =
            self.v4.expire(clock, now) + self.v4.v6_mut().map_or(0, |v6| v6.expire(clock, now));
        self.tidy_v6();
        expired
    }
}
