//! The shared store on Redis (one server or a Redis Cluster): any number of
//! tracker nodes serve the same swarms.
//!
//! Each swarm lives in one hash slot (its keys share the hash tag of the
//! info hash in hex: raw bytes could hold `}`), so an announce is one
//! round trip: one call of the server-side script `announce.lua` (trim
//! when due, upsert, count a completion once, return the counts and a
//! window of records from each peer list the announcer may get), from
//! which `sample` chooses by the memory store's rules. A scrape reads each
//! swarm's counts with one pipelined pair of reads, the hashes
//! concurrently.
//!
//! Callers never block on Redis: [`RedisStore`] hands each request to a
//! loop of the store (`thread`: on the `tokio` reactor's runtime, on the
//! runtime of each `per-core` worker, or on a thread of its own beside
//! `io-uring`), which owns the connections and answers through a
//! [`Pending`] within the deadline, or with [`Refusal::Unavailable`].
//! Nothing here falls back to memory: that would split swarms and counts
//! between nodes.

mod commands;
mod direct;
mod sample;
mod summary;
mod thread;
mod wire;

use std::cell::Cell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Pending, Refusal, Summary};
use crate::metrics::{Metrics, StoreError};
use crate::protocol::{AnnounceRequest, Event, InfoHash, PeerSet, SwarmCounts};
use sample::Hints;

/// How the Redis store connects and behaves; the defaults are the
/// settings' (see [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Seed URLs (`redis://` or `rediss://`); a cluster is found from any
    /// of them.
    pub urls: Vec<String>,
    /// A file whose first line is the password, when it is not in the URL.
    pub password_file: Option<PathBuf>,
    /// TLS (`rediss://`): the certificate authorities to trust (PEM), when
    /// not the built-in public roots.
    pub tls_ca_file: Option<PathBuf>,
    /// TLS: the client certificate and its key (PEM), for a Redis that asks
    /// for one.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Put before every key, so several trackers can share one cluster.
    pub key_prefix: String,
    /// Most time a request may take, queue and retries included; past it
    /// the client gets "tracker storage unavailable".
    pub timeout: Duration,
    /// Most time to open a connection.
    pub connect_timeout: Duration,
    /// Multiplexed connections (each to every master) requests are spread
    /// over.
    pub connections: usize,
    /// Most requests waiting for Redis at once; more are refused at once.
    pub max_in_flight: usize,
    /// Seconds between the totals gathered for the stats pages (0: never).
    pub stats_interval: Duration,
    /// Seconds after its last announce that a peer is forgotten.
    pub peer_ttl: u32,
    /// Peers one torrent holds at most (0: no cap).
    pub max_peers_per_torrent: usize,
}

#[cfg(test)]
impl RedisOptions {
    /// Options for unit tests: `urls`, one connection, second-long
    /// timeouts, no summaries, a 60-second peer TTL, no cap.
    pub(super) fn for_tests(urls: &[&str]) -> Self {
        Self {
            urls: urls.iter().map(|url| (*url).to_owned()).collect(),
            password_file: None,
            tls_ca_file: None,
            tls_client: None,
            key_prefix: String::new(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            connections: 1,
            max_in_flight: 1,
            stats_interval: Duration::ZERO,
            peer_ttl: 60,
            max_peers_per_torrent: 0,
        }
    }
}

/// One request for the store thread, with where its answer goes.
enum Job {
    Announce {
        args: AnnounceArgs,
        reply: oneshot::Sender<Result<(SwarmCounts, PeerSet), Refusal>>,
    },
    Scrape {
        hashes: Vec<InfoHash>,
        reply: oneshot::Sender<Result<Vec<(InfoHash, SwarmCounts)>, Refusal>>,
    },
    /// Drop the peers of every swarm `keep` refuses; answers how many.
    Purge {
        keep: Keep,
        reply: oneshot::Sender<Result<usize, Refusal>>,
    },
}

/// Which torrents a purge keeps.
pub type Keep = Arc<dyn Fn(&InfoHash) -> bool + Send + Sync>;

/// What the announce script is told.
struct AnnounceArgs {
    hash: InfoHash,
    stopped: bool,
    ip: IpAddr,
    port: u16,
    peer_id: [u8; 20],
    seeder: bool,
    completed: bool,
    numwant: u32,
    with_ids: bool,
}

/// The handle every front-end thread holds: the queues to the store's
/// loops.
pub struct RedisStore {
    /// One per loop: with a `per-core` reactor each worker has a loop on
    /// its own runtime, else there is one.
    loops: Vec<Queue>,
    /// Tells this store from another in the threads' memory of their loop.
    id: usize,
    summary: Arc<Mutex<Option<Summary>>>,
    metrics: Arc<Metrics>,
    /// Where it connects, for the start-up log (no password).
    described: String,
}

/// The way into one of the store's loops.
struct Queue {
    /// The runtime the loop runs on; `None`: a thread of its own.
    runtime: Option<tokio::runtime::Id>,
    jobs: mpsc::Sender<Job>,
}

/// Numbers the stores of this process, for [`RedisStore::id`].
static STORES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The store (by id) and the index of the loop this thread hands its
    /// requests to, found on its first request.
    static LOOP: Cell<(usize, usize)> = const { Cell::new((usize::MAX, 0)) };
}

impl RedisStore {
    /// Checks the options and starts the store's loops: one on each of
    /// `runtimes` (the runtimes the front ends serve on, so their workers
    /// read Redis's answers themselves), or one on a thread of its own when
    /// there are none. The connections and requests in flight the options
    /// allow are shared out among the loops. Redis need not be up yet:
    /// until it is, requests are answered "unavailable" and the loops keep
    /// trying to connect.
    pub fn start(
        options: RedisOptions,
        metrics: Arc<Metrics>,
        runtimes: Vec<tokio::runtime::Handle>,
    ) -> anyhow::Result<Self> {
        let seeds = thread::seeds(&options)?;
        let described = seeds
            .iter()
            .map(thread::describe)
            .collect::<Vec<_>>()
            .join(", ");
        let summary = Arc::new(Mutex::new(None));
        let hints = Arc::new(Mutex::new(Hints::new()));
        let places: Vec<Option<tokio::runtime::Handle>> = if runtimes.is_empty() {
            vec![None]
        } else {
            runtimes.into_iter().map(Some).collect()
        };
        let share = |total: usize| (total / places.len()).max(1);
        let mut loops = Vec::with_capacity(places.len());
        for (index, runtime) in places.iter().enumerate() {
            let options = RedisOptions {
                connections: share(options.connections),
                max_in_flight: share(options.max_in_flight),
                ..options.clone()
            };
            let (jobs, queue) = mpsc::channel(options.max_in_flight);
            let given = thread::Loop {
                options,
                seeds: seeds.clone(),
                queue,
                summary: (index == 0).then(|| summary.clone()),
                metrics: metrics.clone(),
                hints: hints.clone(),
            };
            thread::spawn(given, runtime.clone())?;
            loops.push(Queue {
                runtime: runtime.as_ref().map(tokio::runtime::Handle::id),
                jobs,
            });
        }
        metrics.set_store_backend("redis");
        Ok(Self {
            loops,
            id: STORES.fetch_add(1, Ordering::Relaxed),
            summary,
            metrics,
            described,
        })
    }

    /// The queue of the loop on this thread's runtime (the first loop for a
    /// thread on none of them), remembered by the thread.
    fn jobs(&self) -> &mpsc::Sender<Job> {
        if self.loops.len() == 1 {
            return &self.loops[0].jobs;
        }
        let (store, mut index) = LOOP.get();
        if store != self.id {
            let here = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
            index = self
                .loops
                .iter()
                .position(|queue| queue.runtime.is_some() && queue.runtime == here)
                .unwrap_or(0);
            LOOP.set((self.id, index));
        }
        &self.loops[index].jobs
    }

    /// The servers it was given, for the start-up log.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Queues one announce from `ip` (canonical).
    pub fn announce(
        &self,
        request: &AnnounceRequest,
        ip: IpAddr,
    ) -> Pending<(SwarmCounts, PeerSet)> {
        let (reply, answer) = oneshot::channel();
        let args = AnnounceArgs {
            hash: request.info_hash,
            stopped: request.event == Event::Stopped,
            ip,
            port: request.port.get(),
            peer_id: request.peer_id.0,
            seeder: request.is_seeder(),
            completed: request.event == Event::Completed,
            numwant: request.numwant,
            with_ids: !request.compact && !request.no_peer_id,
        };
        self.submit(Job::Announce { args, reply }, answer)
    }

    /// Queues one scrape of `hashes`.
    pub fn scrape(&self, hashes: &[InfoHash]) -> Pending<Vec<(InfoHash, SwarmCounts)>> {
        let (reply, answer) = oneshot::channel();
        let hashes = hashes.to_vec();
        self.submit(Job::Scrape { hashes, reply }, answer)
    }

    fn submit<T>(&self, job: Job, answer: oneshot::Receiver<Result<T, Refusal>>) -> Pending<T> {
        match self.jobs().try_send(job) {
            Ok(()) => Pending::waiting(answer),
            Err(_) => {
                // Queue full (Redis is slower than the load) or the thread
                // is gone: refuse at once rather than queue without bound.
                self.metrics.store_error(StoreError::Busy);
                Pending::failed(Refusal::Unavailable)
            }
        }
    }

    /// Drops the peers of every swarm `keep` refuses, walking every master
    /// (for an access list reload: not the hot path). Blocks until done:
    /// call it from a plain thread, not a reactor's.
    pub fn purge(&self, keep: Keep) -> Result<usize, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.jobs()
            .try_send(Job::Purge { keep, reply })
            .map_err(|_| Refusal::Unavailable)?;
        answer.blocking_recv().unwrap_or(Err(Refusal::Unavailable))
    }

    /// The latest totals gathered from every master, if any yet.
    pub fn summary(&self) -> Option<Summary> {
        self.summary.lock().ok().and_then(|s| s.clone())
    }
}

/// The keys of one swarm: `<prefix>{<first 4 bytes in hex>}<last 16 bytes in
/// hex>` then a suffix. The braces are the hash tag, so every key of a swarm
/// is in one slot. The tag is a quarter of the hash, not all of it: Redis
/// computes CRC16 over the tag for every key of every command, a script's
/// included (6% of its CPU with the whole hash as the tag), and 32 bits of
/// an info hash already spread swarms evenly over 16,384 slots.
pub(crate) struct SwarmKeys {
    base: String,
    /// The base and the last suffix asked for by [`SwarmKeys::with`].
    scratch: String,
}

impl SwarmKeys {
    pub fn new(prefix: &str, hash: &InfoHash) -> Self {
        let mut base = String::with_capacity(prefix.len() + 42);
        base.push_str(prefix);
        base.push('{');
        for (i, byte) in hash.0.into_iter().enumerate() {
            if i == TAG_BYTES {
                base.push('}');
            }
            base.push(char::from(HEX[usize::from(byte >> 4)]));
            base.push(char::from(HEX[usize::from(byte & 15)]));
        }
        let mut scratch = String::with_capacity(base.len() + 2);
        scratch.push_str(&base);
        Self { base, scratch }
    }

    /// The key with `suffix` (see [`SwarmKeys::key`]), borrowed: nothing is
    /// allocated per key, for commands that copy their arguments anyway.
    pub fn with(&mut self, suffix: &str) -> &str {
        self.scratch.truncate(self.base.len());
        self.scratch.push_str(suffix);
        &self.scratch
    }

    /// `m`: counts and trim state, and where each IP's peers are in the
    /// lists; `4s 4l 6s 6l`: the peer records by family and role; `d`: the
    /// snatch count.
    pub fn key(&self, suffix: &str) -> String {
        let mut key = String::with_capacity(self.base.len() + suffix.len());
        key.push_str(&self.base);
        key.push_str(suffix);
        key
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How many of the info hash's bytes are the keys' hash tag.
const TAG_BYTES: usize = 4;

/// The hex info hash in a key made by [`SwarmKeys`], back as bytes.
pub(crate) fn hash_of_key(key: &[u8]) -> Option<InfoHash> {
    let open = memchr::memchr(b'{', key)?;
    let close = open + 1 + 2 * TAG_BYTES;
    if key.get(close) != Some(&b'}') {
        return None;
    }
    let tag = key.get(open + 1..close)?;
    let rest = key.get(close + 1..close + 1 + 2 * (20 - TAG_BYTES))?;
    let mut hash = [0u8; 20];
    for (i, pair) in tag.chunks_exact(2).chain(rest.chunks_exact(2)).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        hash[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(InfoHash(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::BuildInfo;

    /// A request made on a loop's runtime goes to that loop's queue; one
    /// made on any other thread goes to the first loop's.
    #[test]
    fn each_runtime_hands_its_requests_to_its_own_loop() {
        // Two current-thread runtimes, as `per-core` gives two workers.
        let runtimes: Vec<tokio::runtime::Runtime> = (0..2)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            })
            .collect();
        let options = RedisOptions {
            connect_timeout: Duration::from_millis(100),
            connections: 2,
            max_in_flight: 8,
            // Nothing listens there: the loops keep trying to connect,
            // which is all this test needs of them.
            ..RedisOptions::for_tests(&["redis://127.0.0.1:1"])
        };
        let metrics = Arc::new(Metrics::new(BuildInfo {
            version: "test",
            reactor: "per-core",
            reactor_detail: "per-core, 2 workers".into(),
            workers: 2,
        }));
        let handles = runtimes.iter().map(|r| r.handle().clone()).collect();
        let store = RedisStore::start(options, metrics, handles).unwrap();
        let loop_of = |jobs: &mpsc::Sender<Job>| {
            store
                .loops
                .iter()
                .position(|queue| queue.jobs.same_channel(jobs))
                .unwrap()
        };
        // Each worker on a thread of its own, as in the reactor (a thread
        // remembers its loop).
        std::thread::scope(|scope| {
            for (i, runtime) in runtimes.iter().enumerate() {
                let (store, loop_of) = (&store, &loop_of);
                scope.spawn(move || {
                    for _ in 0..2 {
                        let jobs = runtime.block_on(async { store.jobs() });
                        assert_eq!(loop_of(jobs), i);
                    }
                });
            }
            scope.spawn(|| assert_eq!(loop_of(store.jobs()), 0));
        });
    }

    #[test]
    fn every_key_of_a_swarm_has_the_hex_hash_as_its_tag() {
        // A hash starting with `}` would give an empty tag if raw bytes
        // were used: the hex form never holds a brace.
        let mut bytes = [0xABu8; 20];
        bytes[0] = b'}';
        let hash = InfoHash(bytes);
        let keys = SwarmKeys::new("shoal:", &hash);
        let meta = keys.key("m");
        assert_eq!(meta, format!("shoal:{{7dababab}}{}m", "ab".repeat(16)));
        assert_eq!(hash_of_key(meta.as_bytes()), Some(hash));
        assert_eq!(hash_of_key(keys.key("4s").as_bytes()), Some(hash));
        assert_eq!(hash_of_key(b"shoal:{zz}m"), None);
        // The whole hash in the braces (a layout never written) is refused.
        let whole = format!("shoal:{{7d{}}}m", "ab".repeat(19));
        assert_eq!(hash_of_key(whole.as_bytes()), None);
    }

    /// The tag is part of the hash, so swarms must still spread evenly over
    /// the cluster's slots: a tag of too few bytes would pile them up.
    #[test]
    fn swarms_spread_evenly_over_the_slots() {
        const SWARMS: usize = 16384 * 16;
        let mut per_slot = vec![0u32; 16384];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..SWARMS {
            let mut hash = [0u8; 20];
            for chunk in hash.chunks_mut(8) {
                // splitmix64: info hashes are SHA-1 digests, as good as random.
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
            }
            let key = SwarmKeys::new("shoal:", &InfoHash(hash)).key("m");
            per_slot[usize::from(super::direct::slot_of(key.as_bytes()))] += 1;
        }
        // 16 a slot on average; a Poisson spread keeps every slot within
        // 0..48 with overwhelming odds.
        let (least, most) = (
            per_slot.iter().min().copied().unwrap_or(0),
            per_slot.iter().max().copied().unwrap_or(0),
        );
        assert!(
            least >= 1 && most <= 48,
            "slots hold {least}..{most} swarms"
        );
    }
}
