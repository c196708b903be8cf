//! The map of torrents: each swarm found by its info hash, in shards.
//!
//! A slot holds the swarm alone, one pointer: the info hash a swarm is
//! found by lives in its block's header, and a lookup compares it there
//! (hashbrown's 7-bit tag has ruled out nearly every other slot by then,
//! and the block is read next anyway). A map keyed by the hash repeats it
//! in a 32-byte slot; at the table's load that is some 45 bytes a torrent,
//! against 12 here, for a torrent whose ten compact peers take 80.
//!
//! Shards are chosen with a randomly seeded hasher, so a client cannot
//! pick info hashes that all land in one shard, and each has its own lock,
//! held for one operation and never across an `.await`.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::swarm::Swarm;
use crate::protocol::InfoHash;

type Table<const I: usize> = HashTable<Swarm<I>>;

/// One shard, on its own cache lines so that locking one does not slow
/// the workers using its neighbours.
#[repr(align(128))]
struct Shard<const I: usize>(RwLock<Table<I>>);

pub(crate) struct SwarmMap<const I: usize> {
    shards: Box<[Shard<I>]>,
    hasher: ahash::RandomState,
}

impl<const I: usize> SwarmMap<I> {
    /// A map of `shards` shards, rounded up to a power of two.
    pub fn new(shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Self {
            shards: (0..shards)
                .map(|_| Shard(RwLock::new(Table::new())))
                .collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    fn hash(&self, key: &InfoHash) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a hash: bits well away from the low ones (the table's
    /// bucket) and the top seven (hashbrown's tag), so that one shard's
    /// keys still spread over its whole table.
    fn shard(&self, hash: u64) -> &RwLock<Table<I>> {
        &self.shards[(hash >> 40) as usize & (self.shards.len() - 1)].0
    }

    /// Runs `f` on the slot of `key`, occupied or vacant, under its
    /// shard's write lock.
    pub fn entry<R>(&self, key: &InfoHash, f: impl FnOnce(Entry<'_, Swarm<I>>) -> R) -> R {
        let hash = self.hash(key);
        let mut table = write(self.shard(hash));
        let hasher = &self.hasher;
        f(table.entry(
            hash,
            |swarm| swarm.hash() == key,
            |swarm| hasher.hash_one(swarm.hash()),
        ))
    }

    /// Runs `f` on the swarm of `key`, if there is one, under its shard's
    /// read lock.
    pub fn get<R>(&self, key: &InfoHash, f: impl FnOnce(Option<&Swarm<I>>) -> R) -> R {
        let hash = self.hash(key);
        let table = read(self.shard(hash));
        f(table.find(hash, |swarm| swarm.hash() == key))
    }

    /// Runs `f` on the swarm of `key`, if there is one, under its shard's
    /// write lock.
    pub fn get_mut<R>(&self, key: &InfoHash, f: impl FnOnce(&mut Swarm<I>) -> R) -> Option<R> {
        let hash = self.hash(key);
        let mut table = write(self.shard(hash));
        table.find_mut(hash, |swarm| swarm.hash() == key).map(f)
    }

    /// Takes the swarm of `key` out if `remove` says so.
    pub fn remove_if(
        &self,
        key: &InfoHash,
        remove: impl FnOnce(&Swarm<I>) -> bool,
    ) -> Option<Swarm<I>> {
        let hash = self.hash(key);
        let mut table = write(self.shard(hash));
        match table.find_entry(hash, |swarm| swarm.hash() == key) {
            Ok(entry) if remove(entry.get()) => Some(entry.remove().0),
            _ => None,
        }
    }

    /// Keeps the swarms `keep` says yes to, one shard's write lock at a
    /// time.
    pub fn retain(&self, mut keep: impl FnMut(&mut Swarm<I>) -> bool) {
        for shard in 0..self.shards() {
            self.retain_in(shard, &mut keep);
        }
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Keeps the swarms of one shard (`0..shards()`) that `keep` says yes
    /// to, under that shard's write lock.
    pub fn retain_in(&self, shard: usize, keep: impl FnMut(&mut Swarm<I>) -> bool) {
        if let Some(shard) = self.shards.get(shard) {
            write(&shard.0).retain(keep);
        }
    }

    /// Runs `f` on every swarm, one shard's read lock at a time.
    pub fn for_each(&self, mut f: impl FnMut(&Swarm<I>)) {
        for shard in self.shards.iter() {
            read(&shard.0).iter().for_each(&mut f);
        }
    }
}

/// A shard's lock is never held across anything that can panic halfway
/// through a change, so a poisoned one is still whole.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
