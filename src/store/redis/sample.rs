//! Choosing the peers an announce gets from the candidates drawn beside the
//! announce script (`HRANDFIELD` with repetition: random IPs of the swarm,
//! each with every record at that IP). The rules are the memory store's:
//! own address family first, a seeder gets leechers only, a leecher gets
//! seeders and leechers in proportion, never the announcer, never a peer
//! past its TTL, no peer twice. Done here rather than in the script: in
//! Lua, cutting records into peers cost more than all the rest of an
//! announce.

use crate::protocol::{PeerId, PeerSet};

/// Bytes of one peer record: port (2), last seen (4, big-endian Unix
/// seconds), flags (1), peer id (20). Mirrors `announce.lua`.
pub(super) const RECORD: usize = 27;

/// The candidates of one peer hash: `[ip, records, ip, records, ...]`, an
/// IP possibly more than once.
pub(super) type Drawn = Vec<Vec<u8>>;

/// What the announce script returned about the swarm, after the counts.
pub(super) struct Candidates {
    /// Seconds (Unix) on the master when the script ran.
    pub now: u64,
    /// Peers per hash: IPv4 seeders, IPv4 leechers, IPv6 seeders, IPv6
    /// leechers (the announcer included where it is).
    pub counts: [u64; 4],
    /// Candidates per hash, same order.
    pub drawn: [Drawn; 4],
}

/// Who is asking.
pub(super) struct Announcer<'a> {
    pub ip: &'a [u8],
    pub port: [u8; 2],
    pub seeder: bool,
    pub want: usize,
    pub with_ids: bool,
    pub peer_ttl: u32,
}

/// Which peer hashes to draw from for an announce, and how many distinct
/// IPs from each: `(hash, count)` with hashes numbered as in `Candidates`.
/// With the swarm's counts from an earlier announce (`known`), about what
/// [`choose`] will use (a couple spare, for the announcer and for peers
/// gone since); without them, `want + 1` from every hash that may serve.
pub(super) fn plan(
    known: Option<[u64; 4]>,
    v6: bool,
    seeder: bool,
    want: u64,
) -> Vec<(usize, u64)> {
    let mut draws = Vec::with_capacity(4);
    if want == 0 {
        return draws;
    }
    let (own, other) = if v6 { (2, 0) } else { (0, 2) };
    let Some(counts) = known else {
        for base in [own, other] {
            if !seeder {
                draws.push((base, want + 1));
            }
            draws.push((base + 1, want + 1));
        }
        return draws;
    };
    let mut left = want;
    for base in [own, other] {
        let (s, l) = (counts[base], counts[base + 1]);
        if seeder {
            if l > 0 {
                draws.push((base + 1, left.min(l) + 1));
            }
            left = left.saturating_sub(l);
        } else {
            let others = s + l;
            let Some(share) = (left * s + others / 2).checked_div(others) else {
                continue;
            };
            let from_seeders = share.min(s);
            if from_seeders > 0 {
                draws.push((base, from_seeders + 2));
            }
            if l > 0 {
                draws.push((base + 1, (left - from_seeders).min(l) + 2));
            }
            left = left.saturating_sub(others);
        }
        if left == 0 {
            break;
        }
    }
    draws
}

/// Fills `out` from `candidates` for `me`.
pub(super) fn choose(candidates: &Candidates, me: &Announcer<'_>, out: &mut PeerSet) {
    let v6 = me.ip.len() == 16;
    let cutoff = candidates.now.saturating_sub(u64::from(me.peer_ttl));
    let (own, other) = if v6 { (2, 0) } else { (0, 2) };
    let mut want = me.want;
    for base in [own, other] {
        let (seeders, leechers) = (base, base + 1);
        let mine = base == own;
        let pick = |hash: usize, k: usize, out: &mut PeerSet| {
            take(
                &candidates.drawn[hash],
                k,
                mine.then_some(me),
                cutoff,
                me.with_ids,
                out,
            )
        };
        let got = if me.seeder {
            pick(leechers, want, out)
        } else {
            // The announcer is one of its own family's leechers.
            let s = candidates.counts[seeders];
            let l = candidates.counts[leechers].saturating_sub(u64::from(mine));
            let others = s + l;
            match (want as u64 * s + others / 2).checked_div(others) {
                None => 0,
                Some(share) => {
                    let from_seeders = share.min(s) as usize;
                    let got = pick(leechers, want - from_seeders, out);
                    got + pick(seeders, want - got, out)
                }
            }
        };
        want -= got.min(want);
        if want == 0 {
            break;
        }
    }
}

/// Appends up to `k` peers from `drawn`, starting each IP's records at a
/// random one (so that peers behind one address are as likely as any);
/// skips `me` and records last seen before `cutoff`. How many it took.
fn take(
    drawn: &Drawn,
    k: usize,
    me: Option<&Announcer<'_>>,
    cutoff: u64,
    with_ids: bool,
    out: &mut PeerSet,
) -> usize {
    let mut got = 0;
    let mut seen = hashbrown::HashSet::with_capacity(drawn.len() / 2);
    for pair in drawn.chunks_exact(2) {
        let (ip, value) = (&pair[0], &pair[1]);
        let n = value.len() / RECORD;
        if n == 0 || !seen.insert(&ip[..]) {
            continue;
        }
        let first = fastrand::usize(..n);
        for r in 0..n {
            if got >= k {
                return got;
            }
            let at = (first + r) % n * RECORD;
            let record = &value[at..at + RECORD];
            let port = [record[0], record[1]];
            let seen = u32::from_be_bytes([record[2], record[3], record[4], record[5]]);
            if u64::from(seen) < cutoff || me.is_some_and(|me| me.ip == &ip[..] && me.port == port)
            {
                continue;
            }
            let id = PeerId(record[7..27].try_into().unwrap_or([0; 20]));
            match ip.len() {
                4 => {
                    out.v4.push([ip[0], ip[1], ip[2], ip[3], port[0], port[1]]);
                    if with_ids {
                        out.v4_ids.push(id);
                    }
                }
                16 => {
                    let mut peer = [0u8; 18];
                    peer[..16].copy_from_slice(ip);
                    peer[16..].copy_from_slice(&port);
                    out.v6.push(peer);
                    if with_ids {
                        out.v6_ids.push(id);
                    }
                }
                _ => continue,
            }
            got += 1;
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(port: u16, seen: u32, id: u8) -> Vec<u8> {
        let mut r = port.to_be_bytes().to_vec();
        r.extend_from_slice(&seen.to_be_bytes());
        r.push(b'-');
        r.extend_from_slice(&[id; 20]);
        r
    }

    fn me(ip: &[u8], port: u16, seeder: bool, want: usize) -> Announcer<'_> {
        Announcer {
            ip,
            port: port.to_be_bytes(),
            seeder,
            want,
            with_ids: true,
            peer_ttl: 100,
        }
    }

    #[test]
    fn never_the_announcer_nor_the_expired_and_ids_follow_peers() {
        let ip = vec![10, 0, 0, 1];
        let mut behind_one_ip = record(1000, 1000, 1);
        behind_one_ip.extend(record(2000, 1000, 2)); // the announcer
        behind_one_ip.extend(record(3000, 850, 3)); // past its TTL
        let candidates = Candidates {
            now: 1000,
            counts: [0, 3, 0, 0],
            drawn: [vec![], vec![ip.clone(), behind_one_ip], vec![], vec![]],
        };
        let mut out = PeerSet::default();
        choose(&candidates, &me(&ip, 2000, false, 50), &mut out);
        assert_eq!(out.v4, vec![[10, 0, 0, 1, 0x03, 0xE8]]);
        assert_eq!(out.v4_ids, vec![PeerId([1; 20])]);
    }

    #[test]
    fn seeders_get_leechers_only_and_own_family_comes_first() {
        let v4 = |n: u8| vec![10, 0, 0, n];
        let v6 = |n: u8| [[0x20, 1].as_slice(), &[0; 13], &[n]].concat();
        let candidates = Candidates {
            now: 1000,
            counts: [1, 1, 1, 1],
            drawn: [
                vec![v4(1), record(1, 1000, 1)],
                vec![v4(2), record(2, 1000, 2)],
                vec![v6(3), record(3, 1000, 3)],
                vec![v6(4), record(4, 1000, 4)],
            ],
        };
        let me6 = v6(9);
        let mut out = PeerSet::default();
        choose(&candidates, &me(&me6, 9, true, 50), &mut out);
        assert_eq!(out.v6.len(), 1, "the IPv6 leecher");
        assert_eq!(out.v6[0][15], 4);
        assert_eq!(out.v4, vec![[10, 0, 0, 2, 0, 2]], "then the IPv4 leecher");
        // A leecher wanting one gets it from its own family.
        let mut out = PeerSet::default();
        choose(&candidates, &me(&me6, 9, false, 1), &mut out);
        assert_eq!((out.v6.len(), out.v4.len()), (1, 0));
    }

    #[test]
    fn draws_follow_what_the_swarm_had() {
        // Unknown swarm: everything that may serve, own family first.
        assert_eq!(plan(None, false, true, 50), vec![(1, 51), (3, 51)]);
        assert_eq!(plan(None, true, false, 10).len(), 4);
        // A seeder among 30 IPv4 leechers: those, and no IPv6 draw.
        assert_eq!(
            plan(Some([5, 30, 4, 4]), false, true, 50),
            vec![(1, 31), (3, 5)]
        );
        // A leecher in a big swarm: seeders and leechers in proportion.
        assert_eq!(
            plan(Some([1000, 3000, 0, 0]), false, false, 40),
            vec![(0, 12), (1, 32)]
        );
        assert_eq!(plan(Some([1, 1, 1, 1]), false, false, 0), vec![]);
    }

    #[test]
    fn an_ip_drawn_twice_gives_its_peers_once() {
        let ip = vec![10, 0, 0, 7];
        let value = record(7, 1000, 7);
        let candidates = Candidates {
            now: 1000,
            counts: [0, 1, 0, 0],
            drawn: [
                vec![],
                vec![ip.clone(), value.clone(), ip, value],
                vec![],
                vec![],
            ],
        };
        let mut out = PeerSet::default();
        choose(&candidates, &me(&[10, 0, 0, 1], 1, true, 50), &mut out);
        assert_eq!(out.v4.len(), 1);
    }

    #[test]
    fn a_leecher_gets_seeders_and_leechers_in_proportion() {
        let mut seeders = vec![];
        let mut leechers = vec![];
        for n in 0..40u8 {
            seeders.extend([vec![10, 1, 0, n], record(1, 1000, n)]);
            leechers.extend([vec![10, 2, 0, n], record(2, 1000, n)]);
        }
        let candidates = Candidates {
            now: 1000,
            counts: [40, 41, 0, 0],
            drawn: [seeders, leechers, vec![], vec![]],
        };
        let ip = [10, 3, 0, 0];
        let mut out = PeerSet::default();
        choose(&candidates, &me(&ip, 5, false, 10), &mut out);
        let from_seeders = out.v4.iter().filter(|p| p[1] == 1).count();
        assert_eq!((out.v4.len(), from_seeders), (10, 5));
    }
}
