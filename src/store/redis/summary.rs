//! Walks over every swarm on every master, a `SCAN` batch at a time (so
//! Redis is never held for long): the totals for the stats pages, gathered
//! now and then without a hot global key (one read per swarm per
//! `stats_interval` per node), and the purge of torrents an access list no
//! longer allows (on reload only).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use redis::ConnectionInfo;
use redis::aio::MultiplexedConnection;

use super::{RedisOptions, hash_of_key};
use crate::protocol::{InfoHash, SwarmCounts};
use crate::store::Summary;

/// Swarms listed in `Summary::top`.
const TOP: usize = 10;

/// Keys asked of `SCAN` per batch.
const BATCH: usize = 500;

/// Gathers the totals every `stats_interval`, for ever.
pub(super) async fn gather(
    options: RedisOptions,
    seeds: Vec<ConnectionInfo>,
    cluster: bool,
    out: Arc<Mutex<Option<Summary>>>,
) {
    let mut tick = tokio::time::interval(options.stats_interval);
    loop {
        tick.tick().await;
        let walk = walk(&options, &seeds, cluster);
        match tokio::time::timeout(options.stats_interval, walk).await {
            Ok(Ok(summary)) => {
                if let Ok(mut out) = out.lock() {
                    *out = Some(summary);
                }
            }
            Ok(Err(error)) => tracing::debug!(%error, "Redis store totals not gathered"),
            Err(_) => tracing::debug!("Redis store totals: walk took too long"),
        }
    }
}

/// One walk over every master.
async fn walk(
    options: &RedisOptions,
    seeds: &[ConnectionInfo],
    cluster: bool,
) -> redis::RedisResult<Summary> {
    let masters = masters_of(options, seeds, cluster).await?;
    let mut summary = Summary::default();
    let mut largest = BinaryHeap::new();
    let mut top_counts = HashMap::new();
    for master in masters {
        let client = redis::Client::open(master)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let found = (&mut summary, &mut largest, &mut top_counts);
        walk_one(options, &mut connection, found).await?;
    }
    let mut top: Vec<_> = largest.into_iter().map(|Reverse(entry)| entry).collect();
    top.sort_unstable_by(|a, b| b.cmp(a));
    summary.top = top
        .into_iter()
        .filter_map(|(_, hash)| Some((hash, *top_counts.get(&hash)?)))
        .collect();
    Ok(summary)
}

/// The largest swarms so far (a min-heap by peers), with their counts.
type Largest = BinaryHeap<Reverse<(u64, InfoHash)>>;

async fn walk_one(
    options: &RedisOptions,
    connection: &mut MultiplexedConnection,
    (summary, largest, top_counts): (
        &mut Summary,
        &mut Largest,
        &mut HashMap<InfoHash, SwarmCounts>,
    ),
) -> redis::RedisResult<()> {
    let pattern = format!("{}{{*}}*m", glob_escape(&options.key_prefix));
    let mut cursor = 0u64;
    loop {
        let (next, keys) = scan(connection, cursor, &pattern).await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("HGET").arg(key).arg("s");
                let mut snatches = key.clone();
                if let Some(last) = snatches.last_mut() {
                    *last = b'd';
                }
                pipe.cmd("GET").arg(snatches);
            }
            let values: Vec<redis::Value> = pipe.query_async(connection).await?;
            for (key, pair) in keys.iter().zip(values.chunks_exact(2)) {
                let state: Option<Vec<u8>> = redis::from_redis_value_ref(&pair[0])?;
                let downloaded: Option<u64> = redis::from_redis_value_ref(&pair[1])?;
                let [s4, l4, s6, l6] = super::thread::peer_counts(state.as_deref());
                if s4 + l4 + s6 + l6 == 0 {
                    continue;
                }
                summary.torrents += 1;
                summary.seeders[0] += s4;
                summary.seeders[1] += s6;
                summary.leechers[0] += l4;
                summary.leechers[1] += l6;
                let downloaded = downloaded.unwrap_or(0);
                summary.downloads += downloaded;
                if let Some(hash) = hash_of_key(key) {
                    let counts = SwarmCounts {
                        complete: (s4 + s6) as u32,
                        incomplete: (l4 + l6) as u32,
                        downloaded,
                    };
                    largest.push(Reverse((s4 + l4 + s6 + l6, hash)));
                    top_counts.insert(hash, counts);
                    if largest.len() > TOP
                        && let Some(Reverse((_, gone))) = largest.pop()
                    {
                        top_counts.remove(&gone);
                    }
                }
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Deletes the peers of every swarm `keep` refuses (their snatch counts
/// stay); how many swarms that was.
pub(super) async fn purge(
    options: &RedisOptions,
    seeds: &[ConnectionInfo],
    cluster: bool,
    keep: &(dyn Fn(&InfoHash) -> bool + Send + Sync),
) -> redis::RedisResult<usize> {
    let masters = masters_of(options, seeds, cluster).await?;
    let pattern = format!("{}{{*}}*m", glob_escape(&options.key_prefix));
    let mut purged = 0;
    for master in masters {
        let client = redis::Client::open(master)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let mut cursor = 0u64;
        loop {
            let (next, keys) = scan(&mut connection, cursor, &pattern).await?;
            for key in keys {
                let Some(hash) = hash_of_key(&key) else {
                    continue;
                };
                if keep(&hash) {
                    continue;
                }
                let base = &key[..key.len() - 1];
                let mut del = redis::cmd("DEL");
                for suffix in [&b"m"[..], b"4s", b"4l", b"6s", b"6l"] {
                    del.arg([base, suffix].concat());
                }
                let _: () = del.query_async(&mut connection).await?;
                purged += 1;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(purged)
}

/// One `SCAN` batch of the swarms' state keys from `cursor`: the next
/// cursor (0: done) and the keys.
async fn scan(
    connection: &mut MultiplexedConnection,
    cursor: u64,
    pattern: &str,
) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(BATCH)
        .query_async(connection)
        .await
}

/// The servers holding swarms: every master of the cluster, or the one
/// server.
async fn masters_of(
    options: &RedisOptions,
    seeds: &[ConnectionInfo],
    cluster: bool,
) -> redis::RedisResult<Vec<ConnectionInfo>> {
    if cluster {
        masters(options, &seeds[0]).await
    } else {
        Ok(vec![seeds[0].clone()])
    }
}

/// The masters of the cluster `seed` belongs to (from `CLUSTER NODES`).
async fn masters(
    options: &RedisOptions,
    seed: &ConnectionInfo,
) -> redis::RedisResult<Vec<ConnectionInfo>> {
    let client = redis::Client::open(seed.clone())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut connection)
        .await?;
    let mut masters = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        // host:port@bus-port: reached as the seed is (TLS and its
        // certificates, password).
        let addr = addr.split('@').next().unwrap_or_default();
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse() else {
            continue;
        };
        let Some(addr) = super::direct::same_kind(seed, host.to_owned(), port) else {
            continue;
        };
        masters.push(seed.clone().set_addr(addr));
    }
    let _ = options;
    Ok(masters)
}

/// `text` with Redis's glob characters escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
