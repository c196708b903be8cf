//! A loop of the store: its Redis connections and one task per request, on
//! a runtime the front ends serve on (the `tokio` reactor's, or one
//! `per-core` worker's: the workers then read Redis's answers themselves,
//! with no thread to wake and switch to per request), else on a store
//! thread with a runtime of its own. Requests arrive on a bounded queue;
//! each is answered through its oneshot within the deadline. Many requests
//! share a few multiplexed connections (one per master for a cluster), so
//! concurrent announces are pipelined on the wire.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    ClientTlsConfig, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Script,
    TlsCertificates, Value,
};
use tokio::sync::mpsc;

use super::commands::{Commands, Piped};
use super::direct::{self, Direct};
use super::sample::{self, Announcer, Candidates, Hints};
use super::{AnnounceArgs, Job, RedisOptions, SwarmKeys, summary};
use crate::metrics::{Metrics, StoreError, StoreRoute};
use crate::protocol::{InfoHash, PeerSet, SwarmCounts};
use crate::store::{Refusal, Summary};

/// The announce script, loaded once per master and run by its SHA1
/// (`EVALSHA`; `redis::Script` loads it again after `NOSCRIPT`, e.g. on a
/// promoted replica).
const ANNOUNCE: &str = include_str!("announce.lua");

/// How long to wait between attempts to reach Redis at start.
const RECONNECT: Duration = Duration::from_millis(500);

/// The TLS files of `options` read: the authorities to trust and the
/// client certificate with its key (PEM). `None` when none is given: the
/// built-in public roots, no client certificate.
pub(super) fn certificates(options: &RedisOptions) -> anyhow::Result<Option<TlsCertificates>> {
    if options.tls_ca_file.is_none() && options.tls_client.is_none() {
        return Ok(None);
    }
    let read = |setting: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {setting} {}", path.display()))
    };
    let root_cert = match &options.tls_ca_file {
        Some(path) => {
            let pem = read("redis_tls_ca_file", path)?;
            // The client would take a file without one as an empty list
            // and fail every handshake later: say so now.
            use rustls_pki_types::{CertificateDer, pem::PemObject};
            let certificates = CertificateDer::pem_slice_iter(&pem).filter(Result::is_ok);
            anyhow::ensure!(
                certificates.count() > 0,
                "redis_tls_ca_file {} holds no PEM certificate",
                path.display()
            );
            Some(pem)
        }
        None => None,
    };
    let client_tls = match &options.tls_client {
        Some((cert, key)) => Some(ClientTlsConfig {
            client_cert: read("redis_tls_cert_file", cert)?,
            client_key: read("redis_tls_key_file", key)?,
        }),
        None => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The seed addresses, with the password from the file and the TLS files
/// applied.
pub(super) fn seeds(options: &RedisOptions) -> anyhow::Result<Vec<ConnectionInfo>> {
    anyhow::ensure!(
        !options.urls.is_empty(),
        "--store redis needs at least one --redis-url, e.g. redis://127.0.0.1:6379"
    );
    let tls = certificates(options)?;
    let password = match &options.password_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read redis_password_file {}", path.display()))?;
            Some(text.lines().next().unwrap_or_default().to_owned())
        }
    };
    options
        .urls
        .iter()
        .map(|url| {
            // The URL may hold a password: never echo it back.
            let info = url.as_str().into_connection_info().map_err(|_| {
                anyhow::anyhow!(
                    "invalid redis_url {}: expected redis://HOST:PORT or rediss://HOST:PORT",
                    redact(url)
                )
            })?;
            let info = match &password {
                Some(password) => {
                    let redis = info.redis_settings().clone().set_password(password);
                    info.set_redis_settings(redis)
                }
                None => info,
            };
            let Some(tls) = &tls else {
                return Ok(info);
            };
            // The certificates travel in the address: every connection
            // made from this seed (or from its kind, to another node)
            // uses them.
            let client = redis::Client::build_with_tls(info, tls.clone()).map_err(|error| {
                anyhow::anyhow!(
                    "the Redis TLS files cannot be used for {}: {error}",
                    redact(url)
                )
            })?;
            Ok(client.get_connection_info().clone())
        })
        .collect()
}

/// `host:port` of a seed, for logs: never its password.
pub(super) fn describe(info: &ConnectionInfo) -> String {
    info.addr().to_string()
}

/// A URL with whatever sits between `//` and `@` (the credentials) hidden.
fn redact(url: &str) -> String {
    match (url.find("//"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}//***{}", &url[..start], &url[at..]),
        _ => url.to_owned(),
    }
}

/// What one of the store's loops is given.
pub(super) struct Loop {
    /// Its share of the connections and of the requests in flight.
    pub options: RedisOptions,
    pub seeds: Vec<ConnectionInfo>,
    pub queue: mpsc::Receiver<Job>,
    /// Where the totals for the stats pages go: one loop gathers them.
    pub summary: Option<Arc<Mutex<Option<Summary>>>>,
    pub metrics: Arc<Metrics>,
    /// The list counts of recent swarms, shared by every loop.
    pub hints: Arc<Mutex<Hints>>,
}

/// Starts a loop of the store on `runtime`, or on a thread of its own.
pub(super) fn spawn(given: Loop, runtime: Option<tokio::runtime::Handle>) -> anyhow::Result<()> {
    if let Some(runtime) = runtime {
        runtime.spawn(serve(given));
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the Redis store's runtime")?;
    std::thread::Builder::new()
        .name("redis-store".into())
        .spawn(move || runtime.block_on(serve(given)))
        .context("cannot start the Redis store thread")?;
    Ok(())
}

/// A connection to one Redis or to a whole cluster.
#[derive(Clone)]
enum Connection {
    Cluster(ClusterConnection),
    Single(ConnectionManager),
    /// One master of a cluster, reached directly (see [`Direct`]).
    Master(direct::Link),
}

impl Connection {
    /// Sends `pipe` to the master of `route` (a cluster) or to the one
    /// server, and returns its replies, or the first command's error. The
    /// cluster client is handed the route rather than asked to find it:
    /// that would read every command's keys and copy the pipeline.
    async fn send(
        &mut self,
        build: &mut (dyn FnMut(&mut dyn Commands) + Send),
        route: Route,
    ) -> redis::RedisResult<Vec<Value>> {
        let replies = match self {
            Connection::Cluster(c) => {
                let pipe = Piped::build(build);
                let (count, to) = (pipe.len(), SingleNodeRoutingInfo::SpecificNode(route));
                c.route_pipeline(pipe, 0, count, to).await?
            }
            Connection::Single(c) => {
                let pipe = Piped::build(build);
                c.req_packed_commands(&pipe, 0, pipe.len()).await?
            }
            Connection::Master(c) => c.commands(build).await?,
        };
        if let Some(error) = replies.iter().find_map(|reply| match reply {
            Value::ServerError(error) => Some(error.clone()),
            _ => None,
        }) {
            return Err(error.into());
        }
        Ok(replies)
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Cluster(c) => c.req_packed_command(cmd),
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Master(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Master(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Cluster(c) => c.get_db(),
            Connection::Single(c) => c.get_db(),
            Connection::Master(c) => c.get_db(),
        }
    }
}

/// What every request task shares.
struct Shared {
    options: RedisOptions,
    script: Script,
    metrics: Arc<Metrics>,
    /// The list counts of recent swarms, to plan the window reads.
    hints: Arc<Mutex<Hints>>,
    /// A cluster's masters, reached without the cluster client's routing.
    direct: OnceLock<Arc<Direct>>,
}

async fn serve(given: Loop) {
    let Loop {
        options,
        seeds,
        mut queue,
        summary,
        metrics,
        hints,
    } = given;
    let shared = Arc::new(Shared {
        script: Script::new(ANNOUNCE),
        options,
        metrics,
        hints,
        direct: OnceLock::new(),
    });
    // Until Redis answers, requests are refused at once (nothing is queued
    // for a store that may never come).
    let mut attempts = 0u32;
    let (connections, cluster, direct) = loop {
        match connect(&shared.options, &seeds).await {
            Ok(connected) => break connected,
            Err(error) => {
                // Said once, then every minute or so: not twice a second.
                if attempts.is_multiple_of(120) {
                    tracing::warn!(
                        "Redis store not reachable ({error}); requests get \"tracker storage \
                         unavailable\" until it is, retrying every {} ms",
                        RECONNECT.as_millis()
                    );
                }
                attempts += 1;
                let retry = tokio::time::sleep(RECONNECT);
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        () = &mut retry => break,
                        job = queue.recv() => match job {
                            Some(job) => refuse(job, &shared.metrics, StoreError::Connection),
                            None => return,
                        },
                    }
                }
            }
        }
    };
    tracing::info!(
        cluster,
        connections = connections.len(),
        "connected to the Redis store"
    );
    if let Some(direct) = direct {
        let _ = shared.direct.set(direct);
    }
    if let Some(summary) = summary
        && !shared.options.stats_interval.is_zero()
    {
        tokio::spawn(summary::gather(
            shared.options.clone(),
            seeds.clone(),
            cluster,
            summary,
        ));
    }
    let next = AtomicUsize::new(0);
    let seeds = Arc::new(seeds);
    // The queue bounds the requests waiting for this thread, these permits
    // the ones running (each to `max_in_flight`): past them, "busy" at once.
    let running = Arc::new(tokio::sync::Semaphore::new(
        shared.options.max_in_flight.max(1),
    ));
    while let Some(job) = queue.recv().await {
        let mut started = Vec::new();
        let mut take = |job: Job| {
            if let Job::Purge { keep, reply } = job {
                let (shared, seeds) = (shared.clone(), seeds.clone());
                tokio::spawn(async move {
                    let purged = summary::purge(&shared.options, &seeds, cluster, &*keep).await;
                    let _ = reply.send(purged.map_err(|error| {
                        tracing::error!("purge of torrents no longer allowed failed: {error}");
                        Refusal::Unavailable
                    }));
                });
                return;
            }
            let Ok(permit) = running.clone().try_acquire_owned() else {
                refuse(job, &shared.metrics, StoreError::Busy);
                return;
            };
            let at = next.fetch_add(1, Ordering::Relaxed) % connections.len();
            let (connection, shared) = (connections[at].clone(), shared.clone());
            started.push(Box::pin(async move {
                run(job, connection, shared).await;
                drop(permit);
            }));
        };
        take(job);
        // Let the tasks ready now hand in their requests too, then start
        // them all here (the first poll sends the commands) before each goes
        // on in a task of its own: the commands reach a connection's writer
        // in one batch, one write. Spawned at once, on the multi-thread
        // runtime each request woke the writer, which tokio runs next, and
        // went out alone: 2.4 announces per Redis read against 5.4.
        tokio::task::yield_now().await;
        while let Ok(job) = queue.try_recv() {
            take(job);
        }
        for mut request in started {
            let first = std::future::poll_fn(|cx| Poll::Ready(request.as_mut().poll(cx))).await;
            if first.is_pending() {
                tokio::spawn(request);
            }
        }
    }
}

/// Opens the connections: to the cluster when the first reachable seed is
/// part of one, else to that one server.
async fn connect(
    options: &RedisOptions,
    seeds: &[ConnectionInfo],
) -> redis::RedisResult<(Vec<Connection>, bool, Option<Arc<Direct>>)> {
    let deadline = options.connect_timeout;
    let client = redis::Client::open(seeds[0].clone())?;
    let mut probe = tokio::time::timeout(deadline, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| timed_out("connect"))??;
    let info: redis::RedisResult<String> = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut probe)
        .await;
    let cluster = info.is_ok_and(|info| info.contains("cluster_state"));
    let count = options.connections.max(1);
    let mut connections = Vec::with_capacity(count);
    // No response timeout of the client's own: every request these
    // connections carry runs under its job's deadline (`run`), and a second
    // timer per request would only cost (a timer entry set and cleared).
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(deadline))
        .set_response_timeout(None)
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(200));
    if cluster {
        let mut builder = ClusterClientBuilder::new(seeds.to_vec());
        // The cluster client reaches the nodes it discovers with these, not
        // with the seeds' own.
        match certificates(options) {
            Ok(Some(tls)) => builder = builder.certs(tls),
            Ok(None) => {}
            Err(error) => {
                let error = std::io::Error::other(format!("{error:#}"));
                return Err(redis::RedisError::from(error));
            }
        }
        let client = builder
            .connection_timeout(deadline)
            .response_timeout(options.timeout)
            // The client's defaults retry for minutes: the request's own
            // deadline is what counts, so retry briefly and give up.
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(200)
            .build()?;
        for _ in 0..count {
            let connection = tokio::time::timeout(deadline * 2, client.get_async_connection())
                .await
                .map_err(|_| timed_out("connect to the cluster"))??;
            connections.push(Connection::Cluster(connection));
        }
        let direct = match connections.first() {
            Some(Connection::Cluster(first)) => {
                let mut first = first.clone();
                Some(Direct::start(&mut first, seeds[0].clone(), config, deadline, count).await)
            }
            _ => None,
        };
        return Ok((connections, true, direct));
    }
    for _ in 0..count {
        let manager = tokio::time::timeout(
            deadline * 2,
            client.get_connection_manager_with_config(config.clone()),
        )
        .await
        .map_err(|_| timed_out("connect"))??;
        connections.push(Connection::Single(manager));
    }
    Ok((connections, false, None))
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what}: timed out"),
    ))
}

/// Answers a job "unavailable" without asking Redis.
fn refuse(job: Job, metrics: &Metrics, why: StoreError) {
    metrics.store_error(why);
    match job {
        Job::Announce { reply, .. } => drop(reply.send(Err(Refusal::Unavailable))),
        Job::Scrape { reply, .. } => drop(reply.send(Err(Refusal::Unavailable))),
        Job::Purge { reply, .. } => drop(reply.send(Err(Refusal::Unavailable))),
    }
}

/// Runs one job within the deadline and answers it.
async fn run(job: Job, mut connection: Connection, shared: Arc<Shared>) {
    let started = Instant::now();
    let metrics = &shared.metrics;
    let deadline = shared.options.timeout;
    let _in_flight = metrics.store_begin();
    let outcome = match job {
        Job::Announce { args, reply } => {
            let call = announce(&shared, &mut connection, &args);
            let result = tokio::time::timeout(deadline, call).await;
            let (answer, outcome) = settle(result);
            let _ = reply.send(answer);
            outcome
        }
        Job::Scrape { hashes, reply } => {
            let call = scrape(&shared.options, &connection, &hashes);
            let result = tokio::time::timeout(deadline, call).await;
            let (answer, outcome) = settle(result);
            let _ = reply.send(answer);
            outcome
        }
        Job::Purge { reply, .. } => {
            let _ = reply.send(Err(Refusal::Unavailable));
            None
        }
    };
    match outcome {
        None => metrics.store_latency(started.elapsed()),
        Some(error) => metrics.store_error(error),
    }
}

/// A request's answer and, if it failed, how.
type Settled<T> = (Result<T, Refusal>, Option<StoreError>);

fn settle<T>(
    result: Result<redis::RedisResult<Result<T, Refusal>>, tokio::time::error::Elapsed>,
) -> Settled<T> {
    match result {
        Ok(Ok(answer)) => (answer, None),
        Ok(Err(error)) => {
            tracing::debug!(%error, "Redis store request failed");
            let kind = if error.is_timeout() {
                StoreError::Timeout
            } else if error.is_io_error()
                || error.is_connection_dropped()
                || error.kind() == redis::ErrorKind::ClusterConnectionNotFound
            {
                StoreError::Connection
            } else {
                StoreError::Redis
            };
            (Err(Refusal::Unavailable), Some(kind))
        }
        Err(_) => (Err(Refusal::Unavailable), Some(StoreError::Timeout)),
    }
}

/// One announce, one round trip: the announce script (`EVALSHA`) does the
/// swarm's side and returns the counts and the snatch count; the windows of
/// records the peers are chosen from (`sample`: the lists read whole in one
/// `MGET`, parts by `GETRANGE`) are plain reads pipelined
/// right behind it, planned from the counts this node
/// saw last (the script returns the windows itself for a swarm the node has
/// no counts of). A master that does not know the script (`NOSCRIPT`:
/// restarted, or a promoted replica) gets it loaded, and the call runs
/// again.
async fn announce(
    shared: &Shared,
    connection: &mut Connection,
    args: &AnnounceArgs,
) -> redis::RedisResult<Result<(SwarmCounts, PeerSet), Refusal>> {
    let options = &shared.options;
    let mut keys = SwarmKeys::new(&options.key_prefix, &args.hash);
    let (v6, ip): (bool, Vec<u8>) = match args.ip {
        IpAddr::V4(ip) => (false, ip.octets().to_vec()),
        IpAddr::V6(ip) => (true, ip.octets().to_vec()),
    };
    let port = args.port.to_be_bytes();
    let want = if args.stopped { 0 } else { args.numwant };
    let random = fastrand::u32(..);
    let now = crate::metrics::unix_now();
    let hint = shared
        .hints
        .lock()
        .ok()
        .and_then(|h| h.get(&args.hash, now));
    let reads = hint.and_then(|hint| {
        let (seeder, want, random) = (args.seeder, u64::from(want), u64::from(random));
        sample::plan(hint.counts, hint.fresh, v6, seeder, want, random)
    });
    // Every key of the swarm is in one slot: its route is known here, so
    // the cluster client need not find it command by command.
    let slot = direct::slot_of(keys.with("m").as_bytes());
    let route = Route::new(slot, SlotAddr::Master);
    // Packed once: a `NOSCRIPT` retry sends the same bytes.
    let numwant = if reads.is_some() { 0 } else { want };
    let packed = pack_announce(args, v6, &ip, numwant, options, now, random);
    let mut build = |out: &mut dyn Commands| {
        script_commands(shared, &mut keys, &packed, reads.as_deref(), out);
    };
    let master = shared.direct.get().and_then(|direct| direct.master(slot));
    let metrics = &shared.metrics;
    let replies = match (master, &*connection) {
        (Some(master), Connection::Cluster(cluster)) => {
            let mut master = Connection::Master(master);
            match exchange(shared, &mut master, &mut build, route).await {
                Ok(replies) => {
                    metrics.store_route(StoreRoute::Direct);
                    replies
                }
                Err(error) if misrouted(&error) => {
                    // A redirect (resharding, failover) or a lost
                    // connection: the cluster client finds the way. Should
                    // the script have run already, running it again is
                    // harmless: the peer is found and refreshed, and a
                    // completion counts once per peer.
                    tracing::debug!(%error, slot, "direct to the master failed");
                    metrics.store_route(StoreRoute::Rerouted);
                    if let Some(direct) = shared.direct.get() {
                        direct.forget(slot, cluster);
                    }
                    exchange(shared, connection, &mut build, route).await?
                }
                Err(error) => {
                    metrics.store_route(StoreRoute::Direct);
                    return Err(error);
                }
            }
        }
        _ => {
            metrics.store_route(StoreRoute::Client);
            exchange(shared, connection, &mut build, route).await?
        }
    };
    let mut replies = replies.into_iter();
    let script: Vec<u8> = match replies.next() {
        Some(value) => redis::from_redis_value(value)?,
        None => return Err(unexpected("announce reply")),
    };
    // The lists read whole, in one `MGET`.
    let with_whole = reads.iter().flatten().any(|read| read.whole);
    let mut whole = if with_whole {
        let Some(value) = replies.next() else {
            return Err(unexpected("window reads"));
        };
        redis::from_redis_value::<Vec<Option<Vec<u8>>>>(value)?.into_iter()
    } else {
        Vec::new().into_iter()
    };
    let Some(reply) = ScriptReply::parse(&script) else {
        return Err(unexpected("announce reply"));
    };
    match reply.status {
        1 => return Ok(Err(Refusal::SwarmFull)),
        2 => return Ok(Err(Refusal::AddressFull)),
        _ => {}
    }
    let counts = reply.counts;
    if let Ok(mut hints) = shared.hints.lock() {
        hints.put(&args.hash, counts, now);
    }
    let windows = match &reads {
        Some(reads) => {
            // In the order planned: a whole list from the `MGET` (a list
            // gone since is nil there), a part from its `GETRANGE`.
            let mut read = Vec::with_capacity(reads.len());
            for planned in reads {
                let bytes = if planned.whole {
                    whole.next().map(Option::unwrap_or_default)
                } else {
                    replies
                        .next()
                        .map(redis::from_redis_value::<Vec<u8>>)
                        .transpose()?
                };
                read.push(bytes.ok_or_else(|| unexpected("window reads"))?);
            }
            if whole.next().is_some() || replies.next().is_some() {
                return Err(unexpected("window reads"));
            }
            sample::assemble(reads, read, counts)
        }
        None => reply.windows.map(<[u8]>::to_vec),
    };
    let candidates = Candidates {
        now: reply.now,
        counts,
        windows,
    };
    let mut peers = PeerSet::default();
    let me = Announcer {
        ip: &ip,
        port,
        seeder: args.seeder,
        want: args.numwant as usize,
        with_ids: args.with_ids,
        peer_ttl: options.peer_ttl,
    };
    if !args.stopped {
        sample::choose(&candidates, &me, &mut peers);
    }
    let counts = SwarmCounts {
        complete: u32::try_from(counts[0] + counts[2]).unwrap_or(u32::MAX),
        incomplete: u32::try_from(counts[1] + counts[3]).unwrap_or(u32::MAX),
        downloaded: reply.downloaded,
    };
    Ok(Ok((counts, peers)))
}

/// Whether a request sent straight to a master should go through the
/// cluster client instead: the slot moved or is moving, the master is
/// failing over, loading or now a replica, or the connection failed. An
/// error of the script itself (or Redis out of memory) would be the same on
/// any route.
fn misrouted(error: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{
        Ask, BusyLoading, ClusterDown, MasterDown, Moved, ReadOnly, TryAgain,
    };
    match error.kind() {
        redis::ErrorKind::Server(kind) => matches!(
            kind,
            Moved | Ask | TryAgain | ClusterDown | MasterDown | ReadOnly | BusyLoading
        ),
        // I/O, a dropped connection, a timeout: the cluster client
        // reconnects, or finds the slot's new master.
        _ => true,
    }
}

/// Sends the announce's pipeline on `connection`; a master that does not
/// know the script (`NOSCRIPT`: restarted, or a promoted replica) gets it
/// loaded, and the pipeline is sent again.
async fn exchange(
    shared: &Shared,
    connection: &mut Connection,
    build: &mut (dyn FnMut(&mut dyn Commands) + Send),
    route: Route,
) -> redis::RedisResult<Vec<Value>> {
    match connection.send(build, route).await {
        Err(error)
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            shared
                .script
                .prepare_invoke()
                .load_async(connection)
                .await?;
            connection.send(build, route).await
        }
        other => other,
    }
}

/// The announce's commands: the script with its `packed` argument
/// ([`pack_announce`]), then the plain reads behind it (see [`announce`]).
fn script_commands(
    shared: &Shared,
    keys: &mut SwarmKeys,
    packed: &[u8],
    reads: Option<&[sample::Read]>,
    out: &mut dyn Commands,
) {
    const LISTS: [&str; 4] = ["4s", "4l", "6s", "6l"];
    // One key: the script names the swarm's other keys from it (see its
    // head).
    out.command(5);
    out.arg(b"EVALSHA");
    out.arg(shared.script.get_hash().as_bytes());
    out.arg(b"1");
    out.arg(keys.with("m").as_bytes());
    out.arg(packed);
    // The lists read whole come in one `MGET`: each command costs Redis
    // its parsing, lookup and slot check whatever it reads.
    let reads = reads.unwrap_or_default();
    let whole = reads.iter().filter(|read| read.whole).count();
    if whole > 0 {
        out.command(1 + whole);
        out.arg(b"MGET");
        for read in reads.iter().filter(|read| read.whole) {
            out.arg(keys.with(LISTS[read.list]).as_bytes());
        }
    }
    for read in reads.iter().filter(|read| !read.whole) {
        let (first, last) = read.bytes();
        out.command(4);
        out.arg(b"GETRANGE");
        out.arg(keys.with(LISTS[read.list]).as_bytes());
        out.arg_number(first);
        out.arg_number(last);
    }
}

/// The announce script's one argument (see the head of `announce.lua`):
/// the flags, numbers and identity of the announce packed big-endian.
fn pack_announce(
    args: &AnnounceArgs,
    v6: bool,
    ip: &[u8],
    numwant: u32,
    options: &RedisOptions,
    now: u64,
    random: u32,
) -> Vec<u8> {
    let bit = |on: bool, value: u8| if on { value } else { 0 };
    let mut packed = Vec::with_capacity(59);
    packed.push(
        b'0' + bit(args.stopped, 1) + bit(v6, 2) + bit(args.seeder, 4) + bit(args.completed, 8),
    );
    // Unix seconds fit a u32 until 2106; a cap past 4 billion peers is none.
    let now = u32::try_from(now).unwrap_or(u32::MAX);
    let most = u32::try_from(options.max_peers_per_torrent).unwrap_or(u32::MAX);
    for number in [numwant, options.peer_ttl, most, now, random] {
        packed.extend_from_slice(&number.to_be_bytes());
    }
    packed.extend_from_slice(&args.port.to_be_bytes());
    packed.extend_from_slice(&args.peer_id);
    packed.extend_from_slice(ip);
    packed
}

/// What the announce script returns, read from its one string (see the
/// head of `announce.lua`).
struct ScriptReply<'a> {
    /// 0 done, 1 the swarm is full, 2 the address holds too many peers.
    status: u8,
    now: u64,
    counts: [u64; 4],
    /// The swarm's snatch count.
    downloaded: u64,
    /// Empty unless the script was asked for them.
    windows: [&'a [u8]; 4],
}

impl<'a> ScriptReply<'a> {
    /// Bytes of the head: the status (`u8`), now and the four counts
    /// (`u32`), the snatch count (`f64`: Lua's one kind of number).
    const HEAD: usize = 29;
    /// Where the windows start, after the head and their four lengths.
    const WINDOWS: usize = Self::HEAD + 16;

    /// The head; then, with windows, four lengths and the windows. `None`
    /// if the bytes are not that.
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let u32_at = |at: usize| -> Option<u64> {
            let word: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            Some(u64::from(u32::from_be_bytes(word)))
        };
        let status = *bytes.first()?;
        let now = u32_at(1)?;
        let counts = [u32_at(5)?, u32_at(9)?, u32_at(13)?, u32_at(17)?];
        let downloaded = f64::from_be_bytes(bytes.get(21..29)?.try_into().ok()?);
        // A count of completions: whole, and not negative.
        if !(downloaded >= 0.0 && downloaded.fract() == 0.0 && downloaded < 2f64.powi(64)) {
            return None;
        }
        let downloaded = downloaded as u64;
        let mut windows: [&[u8]; 4] = [&[]; 4];
        if bytes.len() > Self::HEAD {
            let mut at = Self::WINDOWS;
            for (i, window) in windows.iter_mut().enumerate() {
                let length = usize::try_from(u32_at(Self::HEAD + 4 * i)?).ok()?;
                *window = bytes.get(at..at.checked_add(length)?)?;
                at += length;
            }
            if at != bytes.len() {
                return None;
            }
        }
        Some(Self {
            status,
            now,
            counts,
            downloaded,
            windows,
        })
    }
}

fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        what.to_owned(),
    ))
}

/// The counts of each hash: per hash one pipelined `HGET` of the packed
/// state and `GET` of the snatch count (one slot, one round trip), all
/// hashes at once.
async fn scrape(
    options: &RedisOptions,
    connection: &Connection,
    hashes: &[InfoHash],
) -> redis::RedisResult<Result<Vec<(InfoHash, SwarmCounts)>, Refusal>> {
    let reads = hashes.iter().map(|hash| {
        let mut connection = connection.clone();
        let keys = SwarmKeys::new(&options.key_prefix, hash);
        async move {
            let mut pipe = redis::pipe();
            pipe.cmd("HGET")
                .arg(keys.key("m"))
                .arg("s")
                .cmd("GET")
                .arg(keys.key("d"));
            let (state, downloaded): (Option<Vec<u8>>, Option<u64>) =
                pipe.query_async(&mut connection).await?;
            let [s4, l4, s6, l6] = peer_counts(state.as_deref());
            redis::RedisResult::Ok((
                *hash,
                SwarmCounts {
                    complete: (s4 + s6) as u32,
                    incomplete: (l4 + l6) as u32,
                    downloaded: downloaded.unwrap_or(0),
                },
            ))
        }
    });
    let answers = join_all(reads).await;
    answers
        .into_iter()
        .collect::<redis::RedisResult<Vec<_>>>()
        .map(Ok)
}

/// The peer counts (IPv4 seeders, leechers, IPv6 seeders, leechers) in a
/// swarm's packed state field (see `announce.lua`); zeros without one.
pub(super) fn peer_counts(state: Option<&[u8]>) -> [u64; 4] {
    let mut counts = [0; 4];
    if let Some(state) = state.filter(|s| s.len() >= 16) {
        for (i, count) in counts.iter_mut().enumerate() {
            let bytes = [
                state[4 * i],
                state[4 * i + 1],
                state[4 * i + 2],
                state[4 * i + 3],
            ];
            *count = u64::from(u32::from_be_bytes(bytes));
        }
    }
    counts
}

/// Awaits every future at once, answers in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut pending = handles;
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, future) in outputs.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => *slot = Some(output),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redact("redis://:secret@host:6379"), "redis://***@host:6379");
        assert_eq!(redact("rediss://user:pw@h:1/0"), "rediss://***@h:1/0");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        let options = RedisOptions::for_tests(&["redis://:secret@127.0.0.1:7000"]);
        let seeds = seeds(&options).unwrap();
        assert!(!describe(&seeds[0]).contains("secret"));
        let bad = RedisOptions {
            urls: vec!["http://:secret@x".into()],
            ..options
        };
        let error = seeds_error(&bad);
        assert!(error.contains("invalid redis_url"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn only_routing_and_connection_errors_leave_the_direct_route() {
        use redis::{ErrorKind, RedisError, ServerErrorKind};
        let server = |kind: ServerErrorKind| RedisError::from((ErrorKind::Server(kind), "test"));
        assert!(misrouted(&server(ServerErrorKind::Moved)));
        assert!(misrouted(&server(ServerErrorKind::Ask)));
        assert!(misrouted(&server(ServerErrorKind::ClusterDown)));
        assert!(misrouted(&server(ServerErrorKind::ReadOnly)));
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(misrouted(&RedisError::from(broken)));
        assert!(misrouted(&timed_out("test")));
        // The script's own failure, or Redis out of memory: the same on
        // any route, so the client gets the failure reason at once.
        assert!(!misrouted(&server(ServerErrorKind::ResponseError)));
        assert!(!misrouted(&server(ServerErrorKind::NoScript)));
    }

    /// The script's one argument has the layout `announce.lua` unpacks
    /// (`>BI4I4I4I4I4c2c20` and the IP): 47 bytes for IPv4, 59 for IPv6.
    #[test]
    fn the_announce_is_packed_as_the_script_reads_it() {
        let options = RedisOptions {
            peer_ttl: 2700,
            max_peers_per_torrent: 5_000_000_000,
            ..RedisOptions::for_tests(&[])
        };
        let args = AnnounceArgs {
            hash: InfoHash([7; 20]),
            stopped: false,
            ip: IpAddr::from([10, 0, 0, 1]),
            port: 6881,
            peer_id: *b"-XX0001-abcdefghijkl",
            seeder: true,
            completed: false,
            numwant: 50,
            with_ids: false,
        };
        let packed = pack_announce(&args, false, &[10, 0, 0, 1], 50, &options, 1_800_000_000, 9);
        assert_eq!(packed.len(), 47);
        // A seeder: "0" + 4.
        assert_eq!(packed[0], b'4');
        let word = |at: usize| u32::from_be_bytes(packed[at..at + 4].try_into().unwrap());
        // numwant, TTL, most peers (saturated), now, random.
        assert_eq!(
            [word(1), word(5), word(9), word(13), word(17)],
            [50, 2700, u32::MAX, 1_800_000_000, 9]
        );
        assert_eq!(&packed[21..23], &6881u16.to_be_bytes());
        assert_eq!(&packed[23..43], b"-XX0001-abcdefghijkl");
        assert_eq!(&packed[43..], &[10, 0, 0, 1]);
        let stopped = AnnounceArgs {
            stopped: true,
            seeder: false,
            completed: true,
            ..args
        };
        let packed = pack_announce(&stopped, true, &[1; 16], 0, &options, 1, 0);
        // Stopped, IPv6 and event=completed: "0" + 1 + 2 + 8.
        assert_eq!((packed.len(), packed[0]), (59, b';'));
        assert_eq!(&packed[43..], &[1; 16]);
    }

    #[test]
    fn the_script_reply_is_read_with_and_without_windows() {
        let with_snatches = |status: u8, snatches: f64| {
            let mut bytes = vec![status];
            for n in [1_700_000_000u32, 3, 5, 0, 2] {
                bytes.extend_from_slice(&n.to_be_bytes());
            }
            bytes.extend_from_slice(&snatches.to_be_bytes());
            bytes
        };
        let head = |status: u8| with_snatches(status, 41.0);
        let plain = head(0);
        let reply = ScriptReply::parse(&plain).unwrap();
        assert_eq!((reply.status, reply.now), (0, 1_700_000_000));
        assert_eq!(reply.counts, [3, 5, 0, 2]);
        assert_eq!(reply.downloaded, 41);
        // A snatch count that is no count: refused.
        for odd in [-1.0, 0.5, f64::NAN, f64::INFINITY, 1e30] {
            assert!(
                ScriptReply::parse(&with_snatches(0, odd)).is_none(),
                "{odd}"
            );
        }
        assert_eq!(reply.windows, [&[] as &[u8]; 4]);
        assert_eq!(ScriptReply::parse(&head(2)).unwrap().status, 2);

        let mut windowed = head(0);
        for length in [2u32, 0, 3, 1] {
            windowed.extend_from_slice(&length.to_be_bytes());
        }
        windowed.extend_from_slice(b"aabbbc");
        let reply = ScriptReply::parse(&windowed).unwrap();
        assert_eq!(reply.windows, [&b"aa"[..], b"", b"bbb", b"c"]);

        // Short, or lengths that do not add up: refused, never a panic.
        assert!(ScriptReply::parse(&plain[..28]).is_none());
        assert!(ScriptReply::parse(&windowed[..windowed.len() - 1]).is_none());
        let mut long = windowed.clone();
        long.push(b'x');
        assert!(ScriptReply::parse(&long).is_none());
        let mut huge = head(0);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 12]);
        assert!(ScriptReply::parse(&huge).is_none());
    }

    fn seeds_error(options: &RedisOptions) -> String {
        match seeds(options) {
            Ok(_) => String::from("accepted"),
            Err(error) => error.to_string(),
        }
    }
}
