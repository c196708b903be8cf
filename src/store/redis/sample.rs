//! Choosing the peers an announce gets from the windows the announce script
//! returned: for each peer list, consecutive records from a random slot.
//! The rules are the memory store's: own address family first, a seeder
//! gets leechers only, a leecher gets seeders and leechers in proportion,
//! never the announcer, never a peer past its TTL. Done here rather than in
//! the script: in Lua, cutting records into peers cost more than all the
//! rest of an announce; one bulk string per list is cheap to send and to
//! read.

use crate::protocol::{InfoHash, PeerId, PeerSet};

/// Bytes of one record in a list of IPv4 peers: IP (4), port (2), last seen
/// (4, big-endian Unix seconds), flag (1), peer id (20). Mirrors
/// `announce.lua`.
pub(super) const RECORD4: usize = 31;
/// The same for IPv6 peers (a 16-byte IP).
pub(super) const RECORD6: usize = 43;

/// What the announce script returned about the swarm, after the counts.
pub(super) struct Candidates {
    /// Seconds (Unix) on the master when the script ran.
    pub now: u64,
    /// Peers per list: IPv4 seeders, IPv4 leechers, IPv6 seeders, IPv6
    /// leechers (the announcer included where it is).
    pub counts: [u64; 4],
    /// A window of records per list, same order.
    pub windows: [Vec<u8>; 4],
}

/// Records read past the share each list is asked for: one for the
/// announcer, the others for peers gone but not yet trimmed and for a list
/// that changed since its count was last seen.
const SPARE: u64 = 3;

/// Bytes of one record of list `list` (0..4: IPv4 seeders, leechers, IPv6
/// seeders, leechers).
pub(super) fn record_size(list: usize) -> usize {
    if list < 2 { RECORD4 } else { RECORD6 }
}

/// One native `GETRANGE` of slots `from..to` of one list, sent in the same
/// pipeline right after the announce script. Reading windows this way costs
/// Redis a fraction of what the script's own `GETRANGE`s cost (a string
/// handed through Lua is copied twice).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Read {
    pub list: usize,
    pub from: u64,
    pub to: u64,
    /// The list held fewer records than the window when last seen, a
    /// moment ago, so the whole string is read: by one `MGET` with the
    /// other whole lists, one command for Redis instead of one each.
    pub whole: bool,
}

impl Read {
    /// The byte range, inclusive, as `GETRANGE` takes it.
    pub fn bytes(&self) -> (u64, u64) {
        let size = record_size(self.list) as u64;
        (self.from * size, self.to * size - 1)
    }
}

/// Plans the window reads of an announce from the list counts this node saw
/// last for the swarm (`hint`: other announces may have changed them since;
/// `assemble` cuts the windows to the counts the script returns). The same
/// shares as the script's own windows: own family first, a seeder reads
/// leechers only, a leecher seeders and leechers in proportion. `None` when
/// the hint says the announcer's family is empty: the script then chooses
/// the windows itself, from what is there now. `fresh`: the hint is at most
/// a second old. Only then is a small list read whole ([`Read::whole`]):
/// an `MGET` returns all of a string, and a list seen small long ago may be
/// huge now, where a `GETRANGE` reads no more than the window.
pub(super) fn plan(
    hint: [u64; 4],
    fresh: bool,
    v6: bool,
    seeder: bool,
    want: u64,
    random: u64,
) -> Option<Vec<Read>> {
    let (own, other) = if v6 { (2, 0) } else { (0, 2) };
    if want == 0 {
        return Some(Vec::new());
    }
    if hint[own] + hint[own + 1] == 0 {
        return None;
    }
    let mut reads = Vec::with_capacity(4);
    let mut window = |list: usize, k: u64| {
        let n = hint[list];
        if n == 0 {
            // Empty when last seen: not worth a command; the next announce
            // sees whoever joined since.
            return;
        }
        if k >= n {
            // The whole list, and room for the peers that joined since
            // (bytes past the end of a string cost nothing).
            reads.push(Read {
                list,
                from: 0,
                to: k,
                whole: fresh,
            });
            return;
        }
        let from = random % n;
        let to = from + k;
        if to <= n {
            reads.push(Read {
                list,
                from,
                to,
                whole: false,
            });
        } else {
            reads.push(Read {
                list,
                from,
                to: n,
                whole: false,
            });
            reads.push(Read {
                list,
                from: 0,
                to: to - n,
                whole: false,
            });
        }
    };
    let mut left = want;
    for base in [own, other] {
        if left == 0 {
            break;
        }
        let (s, l) = (hint[base], hint[base + 1]);
        if seeder {
            window(base + 1, left + SPARE);
            left = left.saturating_sub(l);
        } else if left >= s + l {
            window(base, left + SPARE);
            window(base + 1, left + SPARE);
            left -= s + l;
        } else {
            let share = (left * s + (s + l) / 2) / (s + l);
            window(base, share + SPARE);
            window(base + 1, left - share + SPARE);
            left = 0;
        }
    }
    Some(reads)
}

/// The windows from the replies to `reads`, each cut to the list's count as
/// the script left it: bytes past it are left over from removed peers.
pub(super) fn assemble(reads: &[Read], replies: Vec<Vec<u8>>, counts: [u64; 4]) -> [Vec<u8>; 4] {
    let mut windows: [Vec<u8>; 4] = Default::default();
    for (read, bytes) in reads.iter().zip(replies) {
        let live = read.to.min(counts[read.list]).saturating_sub(read.from);
        let size = record_size(read.list);
        let keep = usize::try_from(live)
            .unwrap_or(usize::MAX)
            .saturating_mul(size)
            .min(bytes.len() / size * size);
        let window = &mut windows[read.list];
        if window.is_empty() {
            let mut bytes = bytes;
            bytes.truncate(keep);
            *window = bytes;
        } else {
            window.extend_from_slice(&bytes[..keep]);
        }
    }
    windows
}

/// The list counts of the swarms this node announced to lately, for `plan`:
/// a fixed table indexed by the info hash (a newer swarm takes the place of
/// an older one), so its memory is bounded and nothing is ever swept.
pub(super) struct Hints {
    slots: Vec<([u8; 20], [u32; 4], u32)>,
}

/// Swarms the hint table holds (2^16 entries, about 2.6 MB).
const HINTS: usize = 1 << 16;

/// What the table knows of a swarm.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) struct Hint {
    pub counts: [u64; 4],
    /// Seen at most a second ago.
    pub fresh: bool,
}

impl Hints {
    pub fn new() -> Self {
        Hints {
            slots: vec![([0; 20], [0; 4], 0); HINTS],
        }
    }

    fn slot(hash: &InfoHash) -> usize {
        usize::from(u16::from_le_bytes([hash.0[0], hash.0[1]])) % HINTS
    }

    /// The counts last seen, `now` in Unix seconds.
    pub fn get(&self, hash: &InfoHash, now: u64) -> Option<Hint> {
        let (key, counts, seen) = &self.slots[Self::slot(hash)];
        (key == &hash.0 && counts.iter().any(|&c| c > 0)).then(|| Hint {
            counts: counts.map(u64::from),
            fresh: now.saturating_sub(u64::from(*seen)) <= 1,
        })
    }

    pub fn put(&mut self, hash: &InfoHash, counts: [u64; 4], now: u64) {
        let clamp = |c: u64| u32::try_from(c).unwrap_or(u32::MAX);
        self.slots[Self::slot(hash)] = (hash.0, counts.map(clamp), clamp(now));
    }
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

/// Fills `out` from `candidates` for `me`.
pub(super) fn choose(candidates: &Candidates, me: &Announcer<'_>, out: &mut PeerSet) {
    let v6 = me.ip.len() == 16;
    let cutoff = candidates.now.saturating_sub(u64::from(me.peer_ttl));
    let (own, other) = if v6 { (2, 0) } else { (0, 2) };
    let mut want = me.want;
    for base in [own, other] {
        let (seeders, leechers) = (base, base + 1);
        let mine = base == own;
        let pick = |list: usize, k: usize, out: &mut PeerSet| {
            let record = if list < 2 { RECORD4 } else { RECORD6 };
            let window = &candidates.windows[list];
            take(
                window,
                record,
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

/// Appends up to `k` peers from `window` (records of `size` bytes), skipping
/// `me` and records last seen before `cutoff`. How many it took.
fn take(
    window: &[u8],
    size: usize,
    k: usize,
    me: Option<&Announcer<'_>>,
    cutoff: u64,
    with_ids: bool,
    out: &mut PeerSet,
) -> usize {
    let iplen = size - 27;
    // Room for all it may take at once: growing by pushes reallocated
    // several times per announce.
    let room = k.min(window.len() / size);
    if iplen == 4 {
        out.v4.reserve(room);
    } else {
        out.v6.reserve(room);
    }
    let mut got = 0;
    for record in window.chunks_exact(size) {
        if got >= k {
            break;
        }
        let (ip, rest) = record.split_at(iplen);
        let port = [rest[0], rest[1]];
        let seen = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
        // The port first: it rules out nearly every record without
        // comparing addresses.
        if u64::from(seen) < cutoff || me.is_some_and(|me| me.port == port && me.ip == ip) {
            continue;
        }
        let id = || PeerId(rest[7..27].try_into().unwrap_or([0; 20]));
        if let Ok(ip) = <[u8; 4]>::try_from(ip) {
            out.v4.push([ip[0], ip[1], ip[2], ip[3], port[0], port[1]]);
            if with_ids {
                out.v4_ids.push(id());
            }
        } else {
            let mut peer = [0u8; 18];
            peer[..16].copy_from_slice(ip);
            peer[16..].copy_from_slice(&port);
            out.v6.push(peer);
            if with_ids {
                out.v6_ids.push(id());
            }
        }
        got += 1;
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ip: &[u8], port: u16, seen: u32, id: u8) -> Vec<u8> {
        let mut r = ip.to_vec();
        r.extend_from_slice(&port.to_be_bytes());
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
    fn records_have_the_scripts_sizes() {
        assert_eq!(record(&[0; 4], 1, 1, 1).len(), RECORD4);
        assert_eq!(record(&[0; 16], 1, 1, 1).len(), RECORD6);
    }

    #[test]
    fn never_the_announcer_nor_the_expired_and_ids_follow_peers() {
        let ip = [10, 0, 0, 1];
        let mut leechers = record(&ip, 1000, 1000, 1);
        leechers.extend(record(&ip, 2000, 1000, 2)); // the announcer
        leechers.extend(record(&ip, 3000, 850, 3)); // past its TTL
        let candidates = Candidates {
            now: 1000,
            counts: [0, 3, 0, 0],
            windows: [vec![], leechers, vec![], vec![]],
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
            windows: [
                record(&v4(1), 1, 1000, 1),
                record(&v4(2), 2, 1000, 2),
                record(&v6(3), 3, 1000, 3),
                record(&v6(4), 4, 1000, 4),
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
    fn a_leecher_gets_seeders_and_leechers_in_proportion() {
        let mut seeders = vec![];
        let mut leechers = vec![];
        for n in 0..40u8 {
            seeders.extend(record(&[10, 1, 0, n], 1, 1000, n));
            leechers.extend(record(&[10, 2, 0, n], 2, 1000, n));
        }
        let candidates = Candidates {
            now: 1000,
            counts: [40, 41, 0, 0],
            windows: [seeders, leechers, vec![], vec![]],
        };
        let ip = [10, 3, 0, 0];
        let mut out = PeerSet::default();
        choose(&candidates, &me(&ip, 5, false, 10), &mut out);
        let from_seeders = out.v4.iter().filter(|p| p[1] == 1).count();
        assert_eq!((out.v4.len(), from_seeders), (10, 5));
    }

    #[test]
    fn a_short_or_ragged_window_gives_what_it_holds() {
        // A window cut short (a list emptied between two reads) is read
        // whole records at a time: never a panic, never half a peer.
        let mut window = record(&[10, 0, 0, 5], 5, 1000, 5);
        window.extend_from_slice(&[1, 2, 3]);
        let candidates = Candidates {
            now: 1000,
            counts: [0, 9, 0, 0],
            windows: [vec![], window, vec![], vec![]],
        };
        let mut out = PeerSet::default();
        choose(&candidates, &me(&[10, 0, 0, 1], 1, true, 50), &mut out);
        assert_eq!(out.v4, vec![[10, 0, 0, 5, 0, 5]]);
    }

    #[test]
    fn reads_follow_the_shares_and_wrap_at_the_lists_end() {
        // A leecher wanting 10 of 40 seeders and 41 leechers: half from
        // each, three spare, from the random slot.
        assert_eq!(
            plan([40, 41, 0, 0], true, false, false, 10, 7),
            Some(vec![
                Read {
                    list: 0,
                    from: 7,
                    to: 15,
                    whole: false,
                },
                Read {
                    list: 1,
                    from: 7,
                    to: 15,
                    whole: false,
                },
            ])
        );
        // A seeder reads leechers only; past the end it wraps to slot 0.
        assert_eq!(
            plan([3, 10, 0, 0], true, false, true, 5, 25),
            Some(vec![
                Read {
                    list: 1,
                    from: 5,
                    to: 10,
                    whole: false,
                },
                Read {
                    list: 1,
                    from: 0,
                    to: 3,
                    whole: false,
                }
            ])
        );
        // A list smaller than the window is read whole, with room to grow.
        assert_eq!(
            plan([0, 0, 0, 4], true, true, true, 50, 1),
            Some(vec![Read {
                list: 3,
                from: 0,
                to: 53,
                whole: true,
            }])
        );
        // The same from a stale hint: a GETRANGE, bounded by the window,
        // since the list may have grown since.
        assert_eq!(
            plan([0, 0, 0, 4], false, true, true, 50, 1),
            Some(vec![Read {
                list: 3,
                from: 0,
                to: 53,
                whole: false,
            }])
        );
        // Nothing wanted, nothing read; own family empty: the script picks.
        assert_eq!(plan([5, 5, 0, 0], true, false, false, 0, 1), Some(vec![]));
        assert_eq!(plan([0, 0, 5, 5], true, false, false, 10, 1), None);
        assert_eq!(
            Read {
                list: 2,
                from: 2,
                to: 4,
                whole: false,
            }
            .bytes(),
            (86, 171)
        );
    }

    #[test]
    fn windows_are_cut_to_the_counts_the_script_left() {
        let rec = |n: u8| record(&[10, 0, 0, n], u16::from(n), 1000, n);
        // Slots 5..10 and 0..3 read, but the list now holds 7: slots 7..10
        // are left over from peers that left.
        let tail: Vec<u8> = (5..10).flat_map(rec).collect();
        let head: Vec<u8> = (0..3).flat_map(rec).collect();
        let reads = [
            Read {
                list: 1,
                from: 5,
                to: 10,
                whole: false,
            },
            Read {
                list: 1,
                from: 0,
                to: 3,
                whole: false,
            },
        ];
        let windows = assemble(&reads, vec![tail, head], [0, 7, 0, 0]);
        let ports: Vec<u8> = windows[1].chunks(RECORD4).map(|r| r[5]).collect();
        assert_eq!(ports, vec![5, 6, 0, 1, 2]);
        // A reply shorter than asked (the list shrank) or ragged is taken
        // whole records at a time.
        let mut short = rec(0);
        short.extend_from_slice(&[1, 2]);
        let windows = assemble(
            &[Read {
                list: 1,
                from: 0,
                to: 9,
                whole: false,
            }],
            vec![short],
            [0, 9, 0, 0],
        );
        assert_eq!(windows[1].len(), RECORD4);
    }

    #[test]
    fn hints_remember_a_swarm_until_another_takes_its_place() {
        let mut hints = Hints::new();
        let a = InfoHash([1; 20]);
        let mut b = InfoHash([1; 20]);
        b.0[19] = 2; // the same table slot as `a`
        assert_eq!(hints.get(&a, 100), None);
        hints.put(&a, [1, 2, 3, 4], 100);
        let fresh = Hint {
            counts: [1, 2, 3, 4],
            fresh: true,
        };
        assert_eq!(hints.get(&a, 101), Some(fresh));
        assert_eq!(hints.get(&b, 101), None);
        hints.put(&b, [5, 0, 0, 0], 101);
        assert_eq!(hints.get(&a, 101), None);
        hints.put(&a, [0, 0, 0, 0], 101);
        assert_eq!(hints.get(&a, 101), None, "an empty swarm is no hint");
        hints.put(&a, [7, 0, 0, 0], 200);
        assert_eq!(
            hints.get(&a, 202),
            Some(Hint {
                counts: [7, 0, 0, 0],
                fresh: false
            }),
            "two seconds on, a hint is stale"
        );
    }
}
