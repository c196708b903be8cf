//! The position index of a large peer list: finds a peer's position by
//! (IP, port) and by (IP, peer id) in O(1), at about 2.5 bytes per peer and
//! key.
//!
//! Each key has its own open-addressing table (linear probing, deletion by
//! backward shift, so no tombstones). A slot holds a peer's position in the
//! list and, in the bits the position does not need, a tag of the key's
//! hash: a probe compares tags and reads a peer only when its tag matches,
//! so a miss costs no reads of the (cold) peer records. Tables of lists up to
//! [`NARROW_MAX`] peers use 16-bit slots, larger ones 32-bit slots. The
//! table never holds keys: it reads them from the peers through the closures
//! its callers pass, and the list keeps the table true as peers move.

/// Lists up to this many peers use 16-bit slots (13 position bits, 3 tag
/// bits); larger ones 32-bit slots.
pub(crate) const NARROW_MAX: usize = (1 << 13) - 2;

/// Slots per peer a table is built with (load 0.5). Measured against 0.7
/// (and rebuilds at 0.9): 39.6 against 41.0 bytes a peer with 100 peers a
/// swarm, 40.1 against 38.4 with 1,000 (where a table's size falls in its
/// growth cycle decides), and fewer rebuilds, each O(peers) under the lock.
const BUILD_LOAD: (usize, usize) = (2, 1);
/// A table is rebuilt larger once its load would pass 0.875. Linear probing
/// runs long at that load, but a probe compares tags in 2-byte slots (a
/// cache line holds 32) and reads a peer only on a tag match.
const MAX_LOAD: (usize, usize) = (7, 8);

/// A move to larger tables starts when a list is this fraction of its
/// current tables' limit short of it (1/32; a quarter in tests, so their
/// small lists see moves that last many operations).
const GROW_AHEAD: usize = if cfg!(test) { 4 } else { 32 };

/// Tables for this many peers and more change size in steps (all of them
/// in tests, so that their small lists take that path).
const MOVE_IN_STEPS_FROM: usize = if cfg!(test) { 1 } else { NARROW_MAX };

/// Marks an empty slot (all bits set, in both widths).
const EMPTY: u32 = u32::MAX;

/// The slots of a table. Each holds the complement of its value, so that
/// an empty slot (value all ones) is stored as zero and a new table is
/// zeroed memory: for a large table that is fresh pages the kernel hands
/// over as they are first touched, not megabytes written at once with the
/// shard lock held.
#[derive(Debug)]
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Slots {
    fn narrow(size: usize) -> Self {
        Slots::Narrow(vec![0; size].into_boxed_slice())
    }

    fn wide(size: usize) -> Self {
        Slots::Wide(vec![0; size].into_boxed_slice())
    }

    fn len(&self) -> usize {
        match self {
            Slots::Narrow(s) => s.len(),
            Slots::Wide(s) => s.len(),
        }
    }

    #[inline]
    fn get(&self, i: usize) -> u32 {
        match self {
            Slots::Narrow(s) => match !s[i] {
                u16::MAX => EMPTY,
                v => u32::from(v),
            },
            Slots::Wide(s) => !s[i],
        }
    }

    #[inline]
    fn set(&mut self, i: usize, v: u32) {
        match self {
            Slots::Narrow(s) => s[i] = !(v as u16),
            Slots::Wide(s) => s[i] = !v,
        }
    }
}

/// One open-addressing table of positions.
#[derive(Debug)]
pub(crate) struct Table {
    slots: Slots,
    /// Bits of a slot that hold the position; the rest hold the tag.
    pos_bits: u32,
    tag_mask: u32,
}

impl Table {
    /// An empty table for lists of up to `max_len` peers.
    fn with_slots(size: usize, max_len: usize) -> Self {
        // Position values run up to max_len - 1; the all-ones value is
        // reserved so that no full slot reads as empty.
        let pos_bits = usize::BITS - (max_len + 1).leading_zeros();
        let (slots, width) = if max_len <= NARROW_MAX {
            (Slots::narrow(size), 16)
        } else {
            (Slots::wide(size), 32)
        };
        let tag_bits = width - pos_bits.min(width);
        Table {
            slots,
            pos_bits,
            tag_mask: if tag_bits == 0 {
                0
            } else {
                (u32::MAX >> (32 - tag_bits)) << pos_bits
            },
        }
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // Maps the hash onto any table size (not only powers of two).
        (((hash >> 32) * self.slots.len() as u64) >> 32) as usize
    }

    #[inline]
    fn tag(&self, hash: u64) -> u32 {
        (hash as u32).wrapping_shl(self.pos_bits) & self.tag_mask
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// The position whose key has `hash` and for which `is` says yes.
    #[inline]
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let (tag, pos_mask) = (self.tag(hash), !self.tag_mask);
        let mut i = self.home(hash);
        loop {
            let v = self.slots.get(i);
            if v == EMPTY {
                return None;
            }
            if v & self.tag_mask == tag && is(v & pos_mask) {
                return Some(v & pos_mask);
            }
            i = self.next(i);
        }
    }

    /// The slot holding `pos`, whose key has `hash`.
    fn slot_of(&self, hash: u64, pos: u32) -> Option<usize> {
        let pos_mask = !self.tag_mask;
        let mut i = self.home(hash);
        for _ in 0..self.slots.len() {
            let v = self.slots.get(i);
            if v == EMPTY {
                return None;
            }
            if v & pos_mask == pos {
                return Some(i);
            }
            i = self.next(i);
        }
        None
    }

    pub fn insert(&mut self, hash: u64, pos: u32) {
        let mut i = self.home(hash);
        while self.slots.get(i) != EMPTY {
            i = self.next(i);
        }
        self.slots.set(i, self.tag(hash) | pos);
    }

    /// Records that the entry at position `from` (key hash `hash`) moved to
    /// `to`.
    pub fn relocate(&mut self, hash: u64, from: u32, to: u32) {
        if let Some(i) = self.slot_of(hash, from) {
            self.slots.set(i, self.tag(hash) | to);
        }
    }

    /// Records that positions `a` (key hash `hash_a`) and `b` (key hash
    /// `hash_b`) traded places.
    pub fn swap(&mut self, hash_a: u64, a: u32, hash_b: u64, b: u32) {
        let (slot_a, slot_b) = (self.slot_of(hash_a, a), self.slot_of(hash_b, b));
        if let Some(i) = slot_a {
            self.slots.set(i, self.tag(hash_a) | b);
        }
        if let Some(i) = slot_b {
            self.slots.set(i, self.tag(hash_b) | a);
        }
    }

    /// Removes `pos` (key hash `hash`); `hash_at` gives the key hash of any
    /// position still in the table, to shift later entries back.
    pub fn remove(&mut self, hash: u64, pos: u32, hash_at: impl Fn(u32) -> u64) {
        let Some(mut hole) = self.slot_of(hash, pos) else {
            return;
        };
        let pos_mask = !self.tag_mask;
        let mut j = self.next(hole);
        loop {
            let v = self.slots.get(j);
            if v == EMPTY {
                break;
            }
            let home = self.home(hash_at(v & pos_mask));
            // The entry at j may fill the hole if its home is not inside
            // the (cyclic) range (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots.set(hole, v);
                hole = j;
            }
            j = self.next(j);
        }
        self.slots.set(hole, EMPTY);
    }
}

/// Both tables of a list: by (IP, port) and, when the store keeps peer ids,
/// by (IP, peer id).
///
/// A list that outgrows its tables (or shrinks far below them) does not
/// rebuild them at once: that is O(peers) under the shard lock, 40 ms for
/// a swarm of 800k peers. It starts [`Growth`] tables of the new size and
/// moves a few positions into them on each insert and removal, keeping both
/// true meanwhile; lookups use the current tables until the move is done.
#[derive(Debug)]
pub(crate) struct Index {
    pub hasher: ahash::RandomState,
    pub by_addr: Table,
    /// Unused (no slots) when peer ids are not kept.
    pub by_id: Table,
    /// The most peers these tables take (their positions and load).
    pub max_len: usize,
    /// The tables being filled to replace these, if any.
    pub next: Option<Box<Growth>>,
}

/// Tables of a new size being filled: they hold positions `..done` of the
/// list, under the keys those positions have now.
#[derive(Debug)]
pub(crate) struct Growth {
    pub by_addr: Table,
    pub by_id: Table,
    pub max_len: usize,
    pub done: usize,
}

/// Slots per table for `len` peers, and the most peers that size takes.
fn sizes(len: usize) -> (usize, usize) {
    let size = (len * BUILD_LOAD.0 / BUILD_LOAD.1).max(64);
    (size, size * MAX_LOAD.0 / MAX_LOAD.1)
}

impl Index {
    /// An empty index sized for `len` peers, with a by-id table if `ids`.
    pub fn for_len(len: usize, ids: bool) -> Self {
        let (size, max_len) = sizes(len);
        Index {
            hasher: ahash::RandomState::new(),
            by_addr: Table::with_slots(size, max_len),
            by_id: Table::with_slots(if ids { size } else { 0 }, max_len),
            max_len,
            next: None,
        }
    }

    /// Whether an index for `len` peers should move to tables of another
    /// size: nearly full (a few inserts ahead, so the move is done before
    /// these fill up), or far larger than needed.
    pub fn wants_resize(&self, len: usize) -> bool {
        // Small tables are rebuilt when they are full, as they always were.
        let ahead = if self.moves_in_steps() {
            self.max_len / GROW_AHEAD
        } else {
            0
        };
        len > self.max_len - ahead || (len * 4 < self.max_len && self.by_addr.slots.len() > 64)
    }

    /// Whether these tables change size a few positions at a time. Small
    /// ones are rebuilt at once (at most some 8,000 positions): moving them
    /// in steps would gain nothing, and when swarms grow side by side, as
    /// when a tracker fills, thousands of them would hold two generations
    /// of tables at the same time.
    pub fn moves_in_steps(&self) -> bool {
        self.max_len >= MOVE_IN_STEPS_FROM
    }

    /// Starts moving to tables sized for `len` peers.
    pub fn start_growth(&mut self, len: usize) {
        let (size, max_len) = sizes(len);
        let ids = self.by_id.slots.len() > 0;
        self.next = Some(Box::new(Growth {
            by_addr: Table::with_slots(size, max_len),
            by_id: Table::with_slots(if ids { size } else { 0 }, max_len),
            max_len,
            done: 0,
        }));
    }

    /// Replaces the tables with the filled next ones.
    pub fn finish_growth(&mut self) {
        if let Some(next) = self.next.take() {
            let Growth {
                by_addr,
                by_id,
                max_len,
                ..
            } = *next;
            (self.by_addr, self.by_id, self.max_len) = (by_addr, by_id, max_len);
        }
    }

    /// Slots per table, for tests and sizing.
    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.by_addr.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are positions' own numbers, hashed badly on purpose so that
    /// clusters form and wrap around the end of the table.
    fn hash(key: u32) -> u64 {
        u64::from(key % 7) << 61 | u64::from(key)
    }

    fn check(t: &Table, keys: &[Option<u32>]) {
        for (pos, key) in keys.iter().enumerate() {
            let found = key.and_then(|k| t.find(hash(k), |p| p == pos as u32));
            assert_eq!(found.is_some(), key.is_some(), "position {pos}");
        }
    }

    #[test]
    fn insert_find_relocate_remove_keep_every_entry_findable() {
        for max_len in [100, NARROW_MAX + 1] {
            let mut t = Table::with_slots(130, max_len);
            let mut keys: Vec<Option<u32>> = (0..100).map(|k| Some(k * 3)).collect();
            for (pos, k) in keys.iter().enumerate() {
                t.insert(hash(k.unwrap_or(0)), pos as u32);
            }
            check(&t, &keys);
            // Remove every third entry; later entries shift back.
            for pos in (0..100).step_by(3) {
                let k = keys[pos].take().unwrap_or(0);
                let at = |p: u32| hash(keys[p as usize].unwrap_or(u32::MAX));
                t.remove(hash(k), pos as u32, at);
                check(&t, &keys);
            }
            // Positions 1 and 2 trade places.
            let (k1, k2) = (keys[1].unwrap_or(0), keys[2].unwrap_or(0));
            t.swap(hash(k1), 1, hash(k2), 2);
            keys.swap(1, 2);
            check(&t, &keys);
            assert_eq!(t.find(hash(12345), |_| true), None);
        }
    }

    #[test]
    fn tags_use_the_bits_positions_leave() {
        let t = Table::with_slots(128, 100);
        assert_eq!(t.pos_bits, 7);
        assert_eq!(t.tag_mask, 0xFF80);
        let wide = Table::with_slots(20_000, 16_000);
        assert_eq!(wide.pos_bits, 14);
        assert_eq!(wide.tag_mask, 0xFFFF_C000);
    }

    #[test]
    fn resizing_is_asked_for_when_too_full_or_too_empty() {
        let index = Index::for_len(100, true);
        assert_eq!(index.size(), 200);
        assert!(!index.wants_resize(100));
        // A little before the tables are full: the move takes some inserts.
        assert!(!index.wants_resize(index.max_len - index.max_len / GROW_AHEAD));
        assert!(index.wants_resize(index.max_len - index.max_len / GROW_AHEAD + 1));
        assert!(index.wants_resize(20));
    }
}
