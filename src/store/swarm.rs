//! One torrent's swarm: its IPv4 and IPv6 peers and its snatch count.

use std::net::IpAddr;

use super::peers::PeerList;
use crate::protocol::{AnnounceRequest, Event, PeerSet, SwarmCounts};

#[derive(Debug, Default)]
pub(crate) struct Swarm {
    v4: PeerList<6>,
    v6: PeerList<18>,
    /// Completed downloads ever seen for this torrent.
    pub downloaded: u64,
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

impl Swarm {
    pub fn with_downloaded(downloaded: u64) -> Self {
        Self {
            downloaded,
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn peer_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn counts(&self) -> SwarmCounts {
        SwarmCounts {
            complete: (self.v4.seeders() + self.v6.seeders()) as u32,
            incomplete: (self.v4.leechers() + self.v6.leechers()) as u32,
            downloaded: self.downloaded,
        }
    }

    /// Records the announce of a peer at `ip` (canonical: no IPv4-mapped
    /// IPv6) and fills `out` with peers for it, own address family first.
    pub fn announce(
        &mut self,
        req: &AnnounceRequest,
        ip: IpAddr,
        now: u32,
        out: &mut PeerSet,
    ) -> SwarmCounts {
        let seeder = req.is_seeder();
        let completed = req.event == Event::Completed;
        let want = req.numwant as usize;
        let with_ids = !req.compact && !req.no_peer_id;
        let port = req.port.get();
        let (ids4, ids6) = if with_ids {
            (Some(&mut out.v4_ids), Some(&mut out.v6_ids))
        } else {
            (None, None)
        };
        let upsert = match ip {
            IpAddr::V4(ip) => {
                let up = self.v4.upsert(
                    compact_v4(ip.octets(), port),
                    req.peer_id,
                    seeder,
                    completed,
                    now,
                );
                let got = self
                    .v4
                    .sample(seeder, Some(up.index), want, &mut out.v4, ids4);
                self.v6.sample(seeder, None, want - got, &mut out.v6, ids6);
                up
            }
            IpAddr::V6(ip) => {
                let up = self.v6.upsert(
                    compact_v6(ip.octets(), port),
                    req.peer_id,
                    seeder,
                    completed,
                    now,
                );
                let got = self
                    .v6
                    .sample(seeder, Some(up.index), want, &mut out.v6, ids6);
                self.v4.sample(seeder, None, want - got, &mut out.v4, ids4);
                up
            }
        };
        if upsert.completed_now {
            self.downloaded += 1;
        }
        self.counts()
    }

    /// Removes the peer an `event=stopped` announce refers to.
    pub fn stop(&mut self, req: &AnnounceRequest, ip: IpAddr) -> bool {
        let port = req.port.get();
        match ip {
            IpAddr::V4(ip) => self.v4.remove(&compact_v4(ip.octets(), port), &req.peer_id),
            IpAddr::V6(ip) => self.v6.remove(&compact_v6(ip.octets(), port), &req.peer_id),
        }
    }

    /// Removes peers last seen before `deadline`; returns how many.
    pub fn expire(&mut self, deadline: u32) -> usize {
        self.v4.expire(deadline) + self.v6.expire(deadline)
    }
}
