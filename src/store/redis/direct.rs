//! A cluster's masters reached directly: the slot map (`CLUSTER SLOTS`) and
//! multiplexed connections of our own to each master, so an announce goes
//! straight to the connection of its swarm's master. The cluster client
//! would route it through a task of its own first: a channel, a task, a
//! routing step and a second oneshot per request: about a sixth of a
//! node's instructions per announce.
//!
//! A master is reached by a [`Wire`] of our own (plain TCP) or, over TLS,
//! by the client's connection manager.
//!
//! The map is a shortcut, never the authority: a request that fails on it
//! (a redirect after resharding or a failover, a lost connection) goes
//! through the cluster client, which follows redirects and reconnects;
//! its slot is then left to the cluster client until the map has been read
//! again (at most once a second).

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisFuture, Value};

use super::commands::{Commands, Piped};
use super::wire::Wire;

/// Hash slots of a Redis Cluster.
pub(super) const SLOTS: usize = 16384;
/// A slot no connection of ours serves.
const NONE: u16 = u16::MAX;
/// Least time between two reads of the slot map.
const REFRESH: Duration = Duration::from_secs(1);

/// The shortcut to the masters of one loop of the store.
pub(super) struct Direct {
    map: Mutex<Arc<Map>>,
    /// A slot was forgotten since the map was last read.
    dirty: AtomicBool,
    /// A task is reading the map again.
    refreshing: AtomicBool,
    /// Picks one of a master's connections.
    next: AtomicUsize,
    /// The seed's settings (TLS, user, password) for every master.
    seed: ConnectionInfo,
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
    /// Connections to open to each master.
    per_master: usize,
}

/// Which master serves each slot, and the connections to each.
struct Map {
    owner: Box<[AtomicU16]>,
    masters: Vec<Master>,
}

struct Master {
    addr: ConnectionAddr,
    connections: Vec<Link>,
}

/// One connection to a master.
#[derive(Clone)]
pub(super) enum Link {
    /// Plain TCP: our own pipelined connection.
    Wire(Wire),
    /// TLS: the client's.
    Managed(ConnectionManager),
}

impl Link {
    /// Sends the commands `build` writes and returns their replies.
    pub async fn commands(
        &mut self,
        build: &mut (dyn FnMut(&mut dyn Commands) + Send),
    ) -> redis::RedisResult<Vec<Value>> {
        match self {
            Link::Wire(wire) => wire.commands(build).await,
            Link::Managed(c) => {
                let pipe = Piped::build(build);
                c.req_packed_commands(&pipe, 0, pipe.len()).await
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Wire(c) => c.req_packed_command(cmd),
            Link::Managed(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Wire(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Managed(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Wire(c) => c.get_db(),
            Link::Managed(c) => c.get_db(),
        }
    }
}

impl Map {
    fn empty() -> Self {
        Self {
            owner: (0..SLOTS).map(|_| AtomicU16::new(NONE)).collect(),
            masters: Vec::new(),
        }
    }
}

impl Direct {
    /// Reads the slot map through `cluster` and connects to its masters;
    /// slots it could not reach are left to the cluster client.
    pub async fn start(
        cluster: &mut ClusterConnection,
        seed: ConnectionInfo,
        config: ConnectionManagerConfig,
        connect_timeout: Duration,
        per_master: usize,
    ) -> Arc<Self> {
        let direct = Arc::new(Self {
            map: Mutex::new(Arc::new(Map::empty())),
            dirty: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            seed,
            config,
            connect_timeout,
            per_master: per_master.max(1),
        });
        direct.reload(cluster).await;
        direct
    }

    /// A connection to the master of `slot`, if the map knows one.
    pub fn master(&self, slot: u16) -> Option<Link> {
        let map = self.map.lock().ok()?.clone();
        let at = map.owner.get(usize::from(slot))?.load(Ordering::Relaxed);
        let master = map.masters.get(usize::from(at))?;
        let pick = self.next.fetch_add(1, Ordering::Relaxed) % master.connections.len();
        master.connections.get(pick).cloned()
    }

    /// A request to `slot` failed on the map: the slot goes through the
    /// cluster client until the map has been read again.
    pub fn forget(self: &Arc<Self>, slot: u16, cluster: &ClusterConnection) {
        if let Ok(map) = self.map.lock()
            && let Some(owner) = map.owner.get(usize::from(slot))
        {
            owner.store(NONE, Ordering::Relaxed);
        }
        self.dirty.store(true, Ordering::Release);
        if !self.refreshing.swap(true, Ordering::AcqRel) {
            let (direct, cluster) = (self.clone(), cluster.clone());
            tokio::spawn(direct.refresh(cluster));
        }
    }

    /// Reads the map while slots are being forgotten, once a second.
    async fn refresh(self: Arc<Self>, mut cluster: ClusterConnection) {
        loop {
            self.dirty.store(false, Ordering::Release);
            self.reload(&mut cluster).await;
            tokio::time::sleep(REFRESH).await;
            if self.dirty.load(Ordering::Acquire) {
                continue;
            }
            self.refreshing.store(false, Ordering::Release);
            // A slot forgotten between the check and the store above.
            if !self.dirty.load(Ordering::Acquire) || self.refreshing.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// Reads `CLUSTER SLOTS` and swaps in the new map, keeping the
    /// connections to masters it already knew.
    async fn reload(&self, cluster: &mut ClusterConnection) {
        let reply = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(cluster)
            .await;
        let ranges = match reply {
            Ok(reply) => slot_ranges(&reply),
            Err(error) => {
                tracing::debug!(%error, "cannot read the cluster's slot map");
                return;
            }
        };
        let old = match self.map.lock() {
            Ok(map) => map.clone(),
            Err(_) => return,
        };
        let map = Map::empty();
        let mut masters: Vec<Master> = Vec::new();
        for (first, last, host, port) in ranges {
            let Some(addr) = self.addr(host, port) else {
                continue;
            };
            let at = match masters.iter().position(|m| m.addr == addr) {
                Some(at) => at,
                None => {
                    let kept = old.masters.iter().find(|m| m.addr == addr);
                    let connections = match kept {
                        Some(master) => master.connections.clone(),
                        None => match self.connect(&addr).await {
                            Some(connections) => connections,
                            None => continue,
                        },
                    };
                    masters.push(Master { addr, connections });
                    masters.len() - 1
                }
            };
            let Ok(at) = u16::try_from(at) else { continue };
            for slot in first..=last.min(SLOTS as u16 - 1) {
                map.owner[usize::from(slot)].store(at, Ordering::Relaxed);
            }
        }
        let map = Map {
            owner: map.owner,
            masters,
        };
        if let Ok(mut current) = self.map.lock() {
            *current = Arc::new(map);
        }
    }

    /// The seed's address kind (TLS or not) with another host and port.
    fn addr(&self, host: String, port: u16) -> Option<ConnectionAddr> {
        same_kind(&self.seed, host, port)
    }

    async fn connect(&self, addr: &ConnectionAddr) -> Option<Vec<Link>> {
        if let ConnectionAddr::Tcp(host, port) = addr {
            let settings = self.seed.redis_settings();
            let auth = settings
                .password()
                .map(|password| (settings.username().map(str::to_owned), password.to_owned()));
            let mut connections = Vec::with_capacity(self.per_master);
            for _ in 0..self.per_master {
                let (host, auth) = (host.clone(), auth.clone());
                match Wire::connect(host, *port, auth, self.connect_timeout).await {
                    Ok(wire) => connections.push(Link::Wire(wire)),
                    Err(error) => {
                        tracing::debug!(%error, %addr, "cannot connect to a master directly");
                        return None;
                    }
                }
            }
            return Some(connections);
        }
        let info = self.seed.clone().set_addr(addr.clone());
        let client = redis::Client::open(info).ok()?;
        let mut connections = Vec::with_capacity(self.per_master);
        for _ in 0..self.per_master {
            let opening = client.get_connection_manager_with_config(self.config.clone());
            match tokio::time::timeout(self.connect_timeout * 2, opening).await {
                Ok(Ok(connection)) => connections.push(Link::Managed(connection)),
                Ok(Err(error)) => {
                    tracing::debug!(%error, %addr, "cannot connect to a master directly");
                    return None;
                }
                Err(_) => return None,
            }
        }
        Some(connections)
    }
}

/// The address kind of `seed` (plain, or TLS with its trusted authorities
/// and client certificate) at another host and port: how another node of
/// the seed's cluster is reached. `None` for a kind that has no host (a
/// Unix socket): the cluster client's way only.
pub(super) fn same_kind(seed: &ConnectionInfo, host: String, port: u16) -> Option<ConnectionAddr> {
    if host.is_empty() || host == "?" {
        return None;
    }
    match seed.addr() {
        ConnectionAddr::Tcp(..) => Some(ConnectionAddr::Tcp(host, port)),
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => Some(ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        }),
        _ => None,
    }
}

/// `(first slot, last slot, host, port)` of each master in a `CLUSTER
/// SLOTS` reply; anything not of that shape is skipped.
fn slot_ranges(reply: &Value) -> Vec<(u16, u16, String, u16)> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let int = |value: &Value| match value {
                Value::Int(n) => u16::try_from(*n).ok(),
                _ => None,
            };
            let (first, last) = (int(fields.first()?)?, int(fields.get(1)?)?);
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
                Value::SimpleString(text) => text.clone(),
                _ => return None,
            };
            Some((first, last, host, int(master.get(1)?)?))
        })
        .collect()
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the bytes
/// between the first `{` and the next `}`, when not empty), else of the
/// whole key, modulo 16384: Redis Cluster's rule.
pub(super) fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0).
fn crc16(bytes: &[u8]) -> u16 {
    const TABLE: [u16; 256] = {
        let mut table = [0u16; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = (i as u16) << 8;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::{Route, SlotAddr};

    #[test]
    fn slots_are_redis_clusters() {
        // The check value of CRC16/XMODEM, and Redis's own examples.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot_of(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
        // The cluster client's own computation agrees, key after key.
        for n in 0..2000u32 {
            let key = format!("p{n}:{{{:040x}}}m", u128::from(n) * 0x9E37_79B9);
            let ours = Route::new(slot_of(key.as_bytes()), SlotAddr::Master);
            assert_eq!(ours, Route::with_key(&key, SlotAddr::Master), "{key}");
        }
    }

    #[test]
    fn the_slot_map_is_read_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 7001),
            ]),
            // Not of the shape: skipped, never a panic.
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Int(-1), Value::Int(3), node("h", 1)]),
            Value::Int(3),
        ]);
        assert_eq!(
            slot_ranges(&reply),
            vec![
                (0, 5460, "127.0.0.1".to_owned(), 7000),
                (5461, 16383, "10.0.0.2".to_owned(), 7001)
            ]
        );
        assert!(slot_ranges(&Value::Nil).is_empty());
    }
}
