//! Several shoal nodes over one Redis Cluster (`--store redis`): swarms,
//! counts and snatch counts are shared; a node may die without loss; a
//! master that stops gives failure reasons quickly while the other masters'
//! swarms keep working, and serves again once it is back. Each test starts
//! its own three-master cluster on loopback (Debian's `redis-server`).

mod common;

use std::time::{Duration, Instant};

use common::redis::{Cluster, Single, available};
use common::udp::{Answer, UdpAnnounce, UdpClient};
use common::{Announce, Tracker, get, id};

const LOCALHOST4: [u8; 4] = [127, 0, 0, 1];
const UNAVAILABLE: &str = "tracker storage unavailable, try again later";

/// A shoal node on `cluster`, with `prefix` for its keys and `extra` args.
fn node(cluster: &Cluster, prefix: &str, extra: &[&str]) -> Tracker {
    let url = cluster.url();
    let mut args = vec!["--store", "redis", "--redis-url", &url];
    args.extend(["--redis-key-prefix", prefix, "--redis-stats-interval", "1"]);
    args.extend(extra);
    Tracker::start(&args)
}

/// An info hash whose swarm lives on master `master` of `cluster`.
fn hash_on(cluster: &Cluster, prefix: &str, master: usize) -> [u8; 20] {
    (0u8..=255)
        .map(|n| {
            let mut hash = id(n);
            hash[19] = 0x5A;
            hash
        })
        .find(|hash| cluster.master_of(&meta_key(prefix, hash)) == master)
        .expect("a hash on every master")
}

fn meta_key(prefix: &str, hash: &[u8; 20]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{{{}}}{}m", &hex[..8], &hex[8..])
}

#[test]
fn a_peer_announced_on_one_node_is_returned_by_the_other() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let (one, two) = (node(&cluster, "n:", &[]), node(&cluster, "n:", &[]));
    let hash = id(1);
    one.announce(&Announce::new(hash, 1).port(7001));
    let second = two.announce(&Announce::new(hash, 2).port(7002).seeder());
    assert_eq!(second.peers4(), vec![(LOCALHOST4, 7001)]);
    assert_eq!((second.int("complete"), second.int("incomplete")), (1, 1));
    // The counts agree, whichever node is asked.
    assert_eq!(one.counts(hash), (1, 1, 0));
    assert_eq!(two.counts(hash), (1, 1, 0));
    // And over UDP: a UDP client of node two gets both HTTP peers.
    let udp = UdpClient::new(two.v4);
    let answer = udp.announce(&UdpAnnounce::new(hash, 3));
    let Answer::Announce { peers, .. } = answer else {
        panic!("{answer:?}");
    };
    let mut ports: Vec<u16> = peers
        .iter()
        .map(|p| u16::from_be_bytes([p[4], p[5]]))
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![7001, 7002]);
    // A node of another tracker (another key prefix) sees nothing of it.
    let other = node(&cluster, "other:", &[]);
    assert_eq!(other.counts(hash), (0, 0, 0));
}

#[test]
fn downloaded_counts_once_across_nodes_and_survives_a_node_killed() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let one = node(&cluster, "d:", &[]);
    let two = node(&cluster, "d:", &[]);
    let hash = id(2);
    one.announce(&Announce::new(hash, 1));
    one.announce(&Announce::new(hash, 1).seeder().event("completed"));
    // The same peer's completion again, through the other node.
    let again = two.announce(&Announce::new(hash, 1).seeder().event("completed"));
    assert_eq!(again.int("downloaded"), 1);
    two.announce(&Announce::new(hash, 2).seeder().event("completed"));
    assert_eq!(one.counts(hash), (2, 0, 2));
    // A node dies at once: nothing it confirmed is lost.
    let mut one = one;
    one.signal_and_wait("KILL");
    assert_eq!(two.counts(hash), (2, 0, 2));
    let fresh = node(&cluster, "d:", &[]);
    assert_eq!(fresh.counts(hash), (2, 0, 2));
    // Snatch counts never expire; the swarm's keys do.
    let key = meta_key("d:", &hash);
    let master = cluster.master_of(&key);
    let ttl: i64 = cluster.command(master, &["TTL", &key]).parse().unwrap();
    assert!(ttl > 0, "swarm key TTL {ttl}");
    let snatches = key.trim_end_matches('m').to_owned() + "d";
    assert_eq!(cluster.command(master, &["TTL", &snatches]), "-1");
}

/// The swarm's state keeps a copy of the snatch count, so that announces
/// need not read it: the copy is taken from the snatch count's own key when
/// the state is made again, and a state of the layout before it (56 bytes,
/// no copy) is read and rewritten.
#[test]
fn the_snatch_count_outlives_the_swarms_keys_and_an_old_state_is_rewritten() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let one = node(&cluster, "o:", &[]);
    let hash = id(4);
    one.announce(&Announce::new(hash, 1).seeder().event("completed"));
    let second = one.announce(&Announce::new(hash, 2).seeder().event("completed"));
    assert_eq!(second.int("downloaded"), 2);
    let key = meta_key("o:", &hash);
    let master = cluster.master_of(&key);
    let state_len = || cluster.command(master, &["HSTRLEN", &key, "s"]);
    assert_eq!(state_len(), "64");
    // The layout before: the copy (bytes 24..32) taken out.
    let strip = "local s = redis.call('HGET', KEYS[1], 's') \
        redis.call('HSET', KEYS[1], 's', string.sub(s, 1, 24) .. string.sub(s, 33)) return #s";
    assert_eq!(cluster.command(master, &["EVAL", strip, "1", &key]), "64");
    assert_eq!(state_len(), "56");
    let third = one.announce(&Announce::new(hash, 3));
    assert_eq!(third.int("downloaded"), 2);
    assert_eq!((third.int("complete"), third.int("incomplete")), (2, 1));
    assert_eq!(third.peers4().len(), 2, "the old state's peers are found");
    assert_eq!(state_len(), "64", "rewritten in the new layout");
    // The swarm's keys go (as by their expiry); its snatch count stays, and
    // the next state made takes it again.
    let base = key.trim_end_matches('m').to_owned();
    let lists = ["m", "4s", "4l", "6s", "6l"].map(|suffix| format!("{base}{suffix}"));
    let mut del = vec!["DEL"];
    del.extend(lists.iter().map(String::as_str));
    assert_eq!(cluster.command(master, &del), "3");
    let fourth = one.announce(&Announce::new(hash, 4));
    assert_eq!(fourth.int("downloaded"), 2);
    assert_eq!((fourth.int("complete"), fourth.int("incomplete")), (0, 1));
    assert_eq!(one.counts(hash), (0, 1, 2));
}

/// The script takes one argument, the announce packed as the node packs it
/// (47 bytes for IPv4, 59 for IPv6); anything else is refused before a
/// key is written.
#[test]
fn the_script_refuses_a_malformed_announce_and_writes_nothing() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let key = meta_key("x:", &id(4));
    let master = cluster.master_of(&key);
    let base = key.trim_end_matches('m').to_owned();
    let keys: Vec<String> = ["m", "4s", "4l", "6s", "6l", "d"]
        .iter()
        .map(|suffix| format!("{base}{suffix}"))
        .collect();
    let script = include_str!("../src/store/redis/announce.lua");
    let call = |arg: &str| {
        let mut args = vec!["EVAL", script, "6"];
        args.extend(keys.iter().map(String::as_str));
        args.push(arg);
        cluster.command(master, &args)
    };
    let zeros = |n: usize| "0".repeat(n);
    let malformed = [
        String::new(),
        "0".into(),
        format!("@{}", zeros(46)), // flags past "?": no such flags
        format!("/{}", zeros(46)), // flags before "0"
        format!("2{}", zeros(46)), // IPv6 with an IPv4 address's length
        format!("0{}", zeros(58)), // IPv4 with an IPv6 address's length
        format!("0{}", zeros(47)), // a byte too many
    ];
    for arg in &malformed {
        let reply = call(arg);
        assert!(reply.contains("malformed arguments"), "{arg:?}: {reply}");
    }
    let exists = || {
        let mut args = vec!["EXISTS"];
        args.extend(keys.iter().map(String::as_str));
        cluster.command(master, &args)
    };
    assert_eq!(exists(), "0");
    // The same bytes in the right shape are an announce (its numbers are
    // the digits' codes), and it writes the swarm.
    let reply = call(&format!("0{}", zeros(46)));
    assert!(!reply.starts_with('-'), "{reply}");
    assert_ne!(exists(), "0");
}

/// One Redis server (not a cluster), a connection to it, and the keys of
/// swarm `{k}` under `prefix` in the script's order: the index first, the
/// one key the node gives the script (it names the others from it).
fn single_swarm(prefix: &str) -> (Single, redis::Connection, Vec<String>) {
    let single = Single::start();
    let client = redis::Client::open(single.url()).expect("client");
    let connection = client.get_connection().expect("connection");
    let keys = ["m", "4s", "4l", "6s", "6l", "d"]
        .iter()
        .map(|suffix| format!("{prefix}{{k}}{suffix}"))
        .collect();
    (single, connection, keys)
}

/// A new peer that joins an empty list on the script's fast path schedules
/// that list's first trim step a quarter TTL from now, as the full path
/// does (not at once: its one record cannot expire before a TTL), and
/// leaves the rest of the state as it was. The state is written by hand: a
/// swarm whose peers have all gone, no trim step due, its lists' own due
/// times 7 to 10 and resume points 11 to 14.
#[test]
fn a_new_peer_on_the_fast_path_schedules_its_new_lists_first_trim_step() {
    if !available() {
        return;
    }
    let (_single, mut connection, keys) = single_swarm("f:");
    let now: u32 = 1_800_000_000;
    let be =
        |numbers: &[u32]| -> Vec<u8> { numbers.iter().flat_map(|n| n.to_be_bytes()).collect() };
    let mut state = be(&[0, 0, 0, 0, now + 10_000, u32::MAX]);
    state.extend(5f64.to_be_bytes());
    state.extend(be(&[7, 8, 9, 10, 11, 12, 13, 14]));
    let () = redis::cmd("HSET")
        .arg(&keys[0])
        .arg("s")
        .arg(&state)
        .query(&mut connection)
        .expect("HSET");
    // A new IPv4 leecher (list 2), numwant 0: flags "0", numwant, TTL,
    // most peers, now, random, port, peer id, IP.
    let mut packed = vec![b'0'];
    packed.extend(be(&[0, 2700, 0, now, 0]));
    packed.extend(6881u16.to_be_bytes());
    packed.extend(b"-XX0001-abcdefghijkl");
    packed.extend([10, 0, 0, 1]);
    let reply: Vec<u8> = redis::cmd("EVAL")
        .arg(include_str!("../src/store/redis/announce.lua"))
        .arg(1)
        .arg(&keys[0])
        .arg(&packed)
        .query(&mut connection)
        .expect("EVAL");
    // Status 0, now, the counts, the snatch count.
    let mut expected = vec![0];
    expected.extend(be(&[now, 0, 1, 0, 0]));
    expected.extend(5f64.to_be_bytes());
    assert_eq!(reply, expected);
    let after: Vec<u8> = redis::cmd("HGET")
        .arg(&keys[0])
        .arg("s")
        .query(&mut connection)
        .expect("HGET");
    // TTL 2700: the first step 675 s from now, in the head and as the
    // leechers' own due time.
    let first = now + 675;
    let mut wanted = be(&[0, 1, 0, 0, now + 10_000, first]);
    wanted.extend_from_slice(&state[24..32]);
    wanted.extend(be(&[7, first, 9, 10, 11, 12, 13, 14]));
    assert_eq!(
        after, wanted,
        "the leechers' first trim step; the rest unchanged"
    );
    let record: Vec<u8> = redis::cmd("GET")
        .arg(&keys[2])
        .query(&mut connection)
        .expect("GET");
    assert_eq!(&record[..6], &[10, 0, 0, 1, 0x1a, 0xe1]);
    // The new list expires with the swarm's other keys.
    let expiry: i64 = redis::cmd("EXPIRETIME")
        .arg(&keys[2])
        .query(&mut connection)
        .expect("EXPIRETIME");
    assert_eq!(expiry, i64::from(now) + 10_000);
}

/// The bytes a list's string holds once the script writes it whole with
/// `n` records (the rule of `room` in announce.lua): the whole records that
/// fit jemalloc's size class of the string.
fn room(n: usize, size: usize) -> usize {
    let bytes = n * size;
    if bytes >= 32768 {
        return bytes;
    }
    let need = bytes + if bytes < 256 { 4 } else { 6 };
    let mut step = 16;
    while step * 8 < need {
        step *= 2;
    }
    let class = need.div_ceil(step) * step;
    (class - if class <= 256 { 4 } else { 6 }) / size * size
}

/// A list grows into the room its memory holds anyway: a new peer whose
/// record fits is written by one SETRANGE, and the string is rewritten
/// whole (GET, SET) only when the room is full, with the room of its
/// new count, zeros past the records. Removals leave the room; when many
/// bytes are left over, they are given back down to the room of the count.
#[test]
fn a_list_grows_into_the_room_of_its_allocation_and_gives_back_its_leftovers() {
    if !available() {
        return;
    }
    let (_single, mut connection, keys) = single_swarm("g:");
    let script = redis::Script::new(include_str!("../src/store/redis/announce.lua"));
    let now = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("u32 seconds");
    // An IPv4 leecher at 10.0.(n / 256).(n % 256), numwant 0; flag "1": a
    // stop.
    let announce = |connection: &mut redis::Connection, n: u16, flags: u8| {
        let mut packed = vec![flags];
        for number in [0, 2700, 0, now, 0] {
            packed.extend(u32::to_be_bytes(number));
        }
        packed.extend(6881u16.to_be_bytes());
        packed.extend(format!("-XX0001-{n:012}").as_bytes());
        packed.extend([10, 0, (n >> 8) as u8, n as u8]);
        let reply: Vec<u8> = script
            .key(&keys[0])
            .arg(packed)
            .invoke(connection)
            .expect("EVALSHA");
        assert_eq!(reply[0], 0, "status of peer {n}");
    };
    let stats = |connection: &mut redis::Connection, command: &str| -> u64 {
        let text: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(connection)
            .expect("INFO");
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let list = |connection: &mut redis::Connection| -> Vec<u8> {
        redis::cmd("GET")
            .arg(&keys[2])
            .query(connection)
            .expect("GET")
    };
    const SIZE: usize = 31;
    let peers: u16 = 400;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut connection)
        .expect("RESETSTAT");
    let mut rewrites = 0;
    for n in 0..peers {
        let count = usize::from(n);
        announce(&mut connection, n, b'0');
        if count == 0 {
            // A new swarm, on the full path: its new list's first trim step
            // is a quarter TTL away (2700 / 4), not due at once.
            let state: Vec<u8> = redis::cmd("HGET")
                .arg(&keys[0])
                .arg("s")
                .query(&mut connection)
                .expect("HGET");
            let u32_at = |at: usize| {
                u32::from_be_bytes([state[at], state[at + 1], state[at + 2], state[at + 3]])
            };
            assert_eq!(
                (u32_at(20), u32_at(36)),
                (now + 675, now + 675),
                "next step, the leechers' step"
            );
        }
        if count == 0 || room(count, SIZE) < (count + 1) * SIZE {
            rewrites += 1;
        }
        let bytes = list(&mut connection);
        assert_eq!(
            bytes.len(),
            room(count + 1, SIZE),
            "length at {} peers",
            count + 1
        );
        assert!(
            bytes[(count + 1) * SIZE..].iter().all(|&b| b == 0),
            "zeros past the records"
        );
        assert_eq!(
            &bytes[count * SIZE..count * SIZE + 4],
            &[10, 0, (n >> 8) as u8, n as u8]
        );
    }
    // Only the inserts that did not fit rewrote the string.
    assert_eq!(stats(&mut connection, "set"), rewrites);
    assert_eq!(
        stats(&mut connection, "setrange"),
        u64::from(peers) - rewrites
    );
    assert!(rewrites < u64::from(peers) / 4, "{rewrites} rewrites");
    // Every peer but the first 16 stops, the last first (no record moves):
    // the string keeps its length until the leftovers are many (looked at
    // every 16th removal), then holds the room of its count.
    let mut length = room(usize::from(peers), SIZE);
    let mut given_back = 0;
    for n in (16..peers).rev() {
        announce(&mut connection, n, b'1');
        let count = usize::from(n);
        if count % 16 == 0 && length > 2 * count * SIZE + 4096 {
            length = room(count, SIZE);
            given_back += 1;
        }
        let bytes = list(&mut connection);
        assert_eq!(bytes.len(), length, "length at {count} peers");
        // A vacated slot keeps its record with its last-seen time zeroed.
        assert!(
            bytes[count * SIZE..]
                .chunks(SIZE)
                .all(|record| record.len() == SIZE && record[6..10] == [0; 4]),
            "past {count}: whole records, read as long expired"
        );
    }
    assert!(given_back > 0);
    let bytes = list(&mut connection);
    for (n, record) in bytes.chunks_exact(SIZE).take(16).enumerate() {
        assert_eq!(&record[..4], &[10, 0, 0, n as u8], "record {n}");
    }
}

#[test]
fn peers_expire_without_a_sweep() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let one = node(&cluster, "e:", &["--peer-ttl", "2"]);
    let two = node(&cluster, "e:", &["--peer-ttl", "2"]);
    let hash = id(3);
    one.announce(&Announce::new(hash, 1).port(7001));
    std::thread::sleep(Duration::from_millis(3200));
    let later = two.announce(&Announce::new(hash, 2).port(7002));
    assert_eq!(later.peers4(), vec![], "the silent peer is gone");
    assert_eq!((later.int("complete"), later.int("incomplete")), (0, 1));
    assert_eq!(one.counts(hash), (0, 1, 0));
}

/// On every reactor (each reaches the masters from its own slot map).
#[test]
fn a_stopped_master_fails_fast_while_other_masters_serve_and_it_comes_back() {
    if !available() {
        return;
    }
    for reactor in ["tokio", "per-core", "io-uring"] {
        common::on_reactor(reactor, stopped_master);
    }
}

fn stopped_master() {
    let mut cluster = Cluster::start(3);
    let tracker = node(&cluster, "f:", &[]);
    let down = hash_on(&cluster, "f:", 0);
    let up = hash_on(&cluster, "f:", 1);
    tracker.announce(&Announce::new(down, 1).seeder().event("completed"));
    tracker.announce(&Announce::new(up, 1));
    cluster.kill(0);
    fails_fast_while_others_serve(&tracker, down, up, 3);
    // Over UDP the same failure, as a BEP 15 error.
    let udp = UdpClient::new(tracker.v4);
    let answer = udp.announce(&UdpAnnounce::new(down, 3));
    assert_eq!(answer.error(), Some(UNAVAILABLE));
    // Counted by kind.
    let metrics = get(tracker.v4, "/metrics").text();
    assert!(
        metrics.contains("shoal_failures_total{reason=\"store_unavailable\"}"),
        "{metrics}"
    );
    // The master comes back (from its own files): no restart of shoal.
    cluster.restart(0);
    common::wait_until("the master serves again", || {
        get(tracker.v4, &Announce::new(down, 2).target())
            .failure()
            .is_none()
    });
    let back = tracker.announce(&Announce::new(down, 4));
    assert_eq!(back.int("downloaded"), 1, "the snatch count survived");
    // And the node's own connections to it are made again: its announces
    // go straight to it, not through the cluster client.
    common::wait_until("announces go straight to the master again", || {
        let before = routes(&tracker).0;
        tracker.announce(&Announce::new(down, 5));
        routes(&tracker).0 > before
    });
}

/// `rounds` times: an announce to `down` (its master out of order) gets
/// the failure reason within 2 s, and one to `up` (on a healthy master,
/// its one peer announced before) is answered.
fn fails_fast_while_others_serve(tracker: &Tracker, down: [u8; 20], up: [u8; 20], rounds: usize) {
    for _ in 0..rounds {
        let started = Instant::now();
        let response = get(tracker.v4, &Announce::new(down, 2).target());
        let took = started.elapsed();
        assert_eq!(response.failure().as_deref(), Some(UNAVAILABLE));
        assert!(
            took < Duration::from_secs(2),
            "failure reason after {took:?}"
        );
        let fine = tracker.announce(&Announce::new(up, 2));
        assert_eq!(fine.peers4().len(), 1);
    }
}

#[test]
fn a_hung_master_fails_fast_while_other_masters_serve_and_it_comes_back() {
    if !available() {
        return;
    }
    for reactor in ["tokio", "per-core", "io-uring"] {
        common::on_reactor(reactor, hung_master);
    }
}

/// A master that stops answering, its connections open (no error to see):
/// only the request's own deadline ends the wait.
fn hung_master() {
    let cluster = Cluster::start(3);
    let tracker = node(&cluster, "h:", &[]);
    let hung = hash_on(&cluster, "h:", 0);
    let up = hash_on(&cluster, "h:", 1);
    tracker.announce(&Announce::new(hung, 1));
    tracker.announce(&Announce::new(up, 1));
    cluster.pause(0);
    fails_fast_while_others_serve(&tracker, hung, up, 2);
    let metrics = get(tracker.v4, "/metrics").text();
    assert!(
        metrics.contains("shoal_store_errors_total{backend=\"redis\",kind=\"timeout\"}"),
        "{metrics}"
    );
    // It wakes up: the same connections serve again, no restart.
    cluster.resume(0);
    common::wait_until("the master answers again", || {
        get(tracker.v4, &Announce::new(hung, 2).target())
            .failure()
            .is_none()
    });
    let back = tracker.announce(&Announce::new(hung, 3));
    assert_eq!(back.peers4().len(), 2, "the swarm is whole");
}

#[test]
fn unreachable_redis_gives_failure_reasons_within_two_seconds() {
    if !available() {
        return;
    }
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let tracker = Tracker::start(&["--store", "redis", "--redis-url", &url]);
    let started = Instant::now();
    let response = get(tracker.v4, &Announce::new(id(5), 1).target());
    assert_eq!(response.failure().as_deref(), Some(UNAVAILABLE));
    assert!(started.elapsed() < Duration::from_secs(2));
    let scrape = get(
        tracker.v4,
        &format!("/scrape?info_hash={}", common::escape(&id(5))),
    );
    assert_eq!(scrape.failure().as_deref(), Some(UNAVAILABLE));
    let metrics = get(tracker.v4, "/metrics").text();
    assert!(
        metrics.contains("shoal_store_errors_total{backend=\"redis\",kind=\"connection\"}"),
        "{metrics}"
    );
}

#[test]
fn a_single_redis_works_too_and_stats_show_the_backend() {
    if !available() {
        return;
    }
    let server = common::redis::Single::start();
    let url = server.url();
    let tracker = Tracker::start(&[
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--redis-stats-interval",
        "1",
    ]);
    let hash = id(6);
    tracker.announce(&Announce::new(hash, 1).port(7001));
    let second = tracker.announce(&Announce::new(hash, 2).port(7002));
    assert_eq!(second.peers4(), vec![(LOCALHOST4, 7001)]);
    common::wait_until("the totals are gathered", || {
        let stats = get(tracker.v4, "/stats.json").text();
        stats.contains("\"backend\":\"redis\"") && stats.contains("\"torrents\":1")
    });
}

#[test]
fn state_file_and_full_scrape_are_the_memory_stores() {
    if !available() {
        return;
    }
    let server = common::redis::Single::start();
    let url = server.url();
    let state = std::env::temp_dir().join(format!("shoal-redis-state-{}", std::process::id()));
    let state = state.to_str().unwrap();
    let tracker = Tracker::start(&[
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--state-file",
        state,
    ]);
    assert!(
        tracker
            .log()
            .contains("state_file is for the memory store only"),
        "{}",
        tracker.log()
    );
    let refused = Tracker::start_expecting_failure(&[
        "--store",
        "redis",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--full-scrape",
    ]);
    assert!(
        refused.contains("full_scrape works with the memory store only"),
        "{refused}"
    );
    let refused = Tracker::start_expecting_failure(&[
        "--store",
        "redis",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--compact-only",
    ]);
    assert!(
        refused.contains("compact_only works with the memory store only"),
        "{refused}"
    );
    let missing = Tracker::start_expecting_failure(&["--store", "redis"]);
    assert!(missing.contains("store redis needs redis_url"), "{missing}");
    let leaked = Tracker::start_expecting_failure(&[
        "--store",
        "redis",
        "--redis-url",
        "http://:hunter2@127.0.0.1:1",
    ]);
    assert!(leaked.contains("invalid redis_url"), "{leaked}");
    assert!(!leaked.contains("hunter2"), "{leaked}");
}

#[test]
fn one_address_holds_at_most_128_peers_of_a_swarm() {
    if !available() {
        return;
    }
    let server = common::redis::Single::start();
    let url = server.url();
    let tracker = Tracker::start(&["--store", "redis", "--redis-url", &url]);
    let hash = id(7);
    for peer in 0..128u16 {
        let mut announce = Announce::new(hash, 1).port(20_000 + peer);
        announce.peer_id[..2].copy_from_slice(&peer.to_be_bytes());
        assert_eq!(tracker.announce(&announce).failure(), None, "peer {peer}");
    }
    let one_more = Announce::new(hash, 2).port(30_000);
    assert_eq!(
        tracker.announce(&one_more).failure().as_deref(),
        Some("too many peers from your address in this swarm: try again later")
    );
    // Peers already in go on; another address is welcome.
    let mut known = Announce::new(hash, 1).port(20_005);
    known.peer_id[..2].copy_from_slice(&5u16.to_be_bytes());
    assert_eq!(tracker.announce(&known).failure(), None);
    let other = tracker.announce_v6(&Announce::new(hash, 3));
    assert_eq!(other.failure(), None);
    assert_eq!(other.int("incomplete"), 129);
}

#[test]
fn the_password_comes_from_a_file_or_the_url_and_is_never_logged() {
    if !available() {
        return;
    }
    let secret = "s3cret-pass";
    let server = common::redis::Single::start_with(&["--requirepass", secret]);
    let file = std::env::temp_dir().join(format!("shoal-redis-pw-{}", std::process::id()));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let url = server.url();
    let from_file = Tracker::start(&[
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--redis-password-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(from_file.announce(&Announce::new(id(8), 1)).failure(), None);
    let in_url = url.replace("redis://", &format!("redis://:{secret}@"));
    let from_url = Tracker::start(&["--store", "redis", "--redis-url", &in_url]);
    assert_eq!(from_url.announce(&Announce::new(id(8), 2)).failure(), None);
    assert_eq!(from_url.counts(id(8)), (0, 2, 0));
    // A wrong password: failure reasons, not a crash.
    let wrong = url.replace("redis://", "redis://:wrong@");
    let refused = Tracker::start(&["--store", "redis", "--redis-url", &wrong]);
    let response = get(refused.v4, &Announce::new(id(8), 3).target());
    assert_eq!(response.failure().as_deref(), Some(UNAVAILABLE));
    for tracker in [&from_file, &from_url, &refused] {
        assert!(!tracker.log().contains(secret), "{}", tracker.log());
    }
    let _ = std::fs::remove_file(&file);
}

/// A small deterministic random sequence (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn a_swarm_stays_consistent_through_joins_moves_port_changes_and_stops() {
    // The script keeps each list dense (a leaving peer's slot takes the
    // list's last record) and an index from IP to slots. Any slip there
    // shows as a lost, doubled or stale peer: after every announce of a
    // random sequence, the answer must match a model of the swarm exactly.
    // 40 peers behind 6 addresses: most announces share an address with
    // other peers, so the script's full path runs.
    if !available() {
        return;
    }
    let server = common::redis::Single::start();
    let url = server.url();
    let tracker = Tracker::start(&["--store", "redis", "--redis-url", &url, "--allow-ip-param"]);
    follow_a_random_swarm(&tracker, id(9), 40, 6, 600, 7);
}

#[test]
fn a_swarm_of_peers_at_their_own_addresses_stays_consistent() {
    // Each of 120 peers at an address of its own: a new peer then takes
    // the script's fast insert (no table, no closure), a re-announce its
    // fast refresh, and lists grow past the size written whole; stops,
    // moves and completions still go through the full path in between.
    if !available() {
        return;
    }
    let server = common::redis::Single::start();
    let url = server.url();
    let tracker = Tracker::start(&["--store", "redis", "--redis-url", &url, "--allow-ip-param"]);
    // The first seeder of a swarm of leechers starts its list in the fast
    // insert: that list expires with the swarm too.
    let first = id(12);
    let at = |n: u8| Announce::new(first, n).param("ip", &format!("10.2.0.{n}"));
    tracker.announce(&at(1));
    tracker.announce(&at(2));
    assert_eq!(tracker.announce(&at(3).seeder()).int("complete"), 1);
    let seeders = meta_key("shoal:", &first).trim_end_matches('m').to_owned() + "4s";
    let ttl: i64 = server.command(&["TTL", &seeders]).parse().unwrap();
    assert!(ttl > 0, "{seeders}: TTL {ttl}");

    let hash = id(11);
    follow_a_random_swarm(&tracker, hash, 120, 120, 900, 3);
    // Every key of the swarm expires with it (a list created by the fast
    // insert too); the snatch count alone never does.
    let index = meta_key("shoal:", &hash);
    let stem = index.trim_end_matches('m');
    for key in [index.clone(), format!("{stem}4s"), format!("{stem}4l")] {
        let ttl: i64 = server.command(&["TTL", &key]).parse().unwrap();
        assert!(ttl > 0, "{key}: TTL {ttl}");
    }
    assert_eq!(server.command(&["TTL", &format!("{stem}d")]), "-1");
}

/// Announces `steps` random events of `peers` peers spread over
/// `addresses` addresses to one swarm and checks every answer against a
/// model of the swarm: counts, `downloaded`, and the peers returned.
fn follow_a_random_swarm(
    tracker: &Tracker,
    hash: [u8; 20],
    peers: u64,
    addresses: u8,
    steps: usize,
    seed: u64,
) {
    // Peer p: (ip, port, seeder, completed).
    let mut model: std::collections::BTreeMap<u8, ([u8; 4], u16, bool, bool)> = Default::default();
    let mut ports: Vec<u16> = (0..peers as u16).map(|p| 6000 + p).collect();
    let mut downloaded = 0;
    let mut random = Lcg(seed);
    for step in 0..steps {
        let p = random.below(peers) as u8;
        let ip = [10, 0, 0, 1 + p % addresses];
        let roll = random.below(10);
        if roll == 0 {
            // A new port, same peer id: the same peer.
            ports[usize::from(p)] += 100;
        }
        let port = ports[usize::from(p)];
        // Odd steps want a few peers: the node reads a window from a
        // random slot, wrapping at the list's end.
        let numwant = if step % 2 == 0 { 200 } else { 4 };
        let mut announce = Announce::new(hash, p)
            .port(port)
            .param("ip", &format!("10.0.0.{}", ip[3]))
            .param("numwant", &numwant.to_string());
        let seeder = roll >= 6;
        if seeder {
            announce = announce.seeder();
        }
        if roll == 1 {
            announce = announce.event("stopped");
            model.remove(&p);
        } else {
            let mut completed = model.get(&p).is_some_and(|m| m.3);
            if seeder && roll == 9 {
                announce = announce.event("completed");
                if !completed {
                    downloaded += 1;
                    completed = true;
                }
            }
            model.insert(p, (ip, port, seeder, completed));
        }
        let answer = tracker.announce(&announce);
        assert_eq!(answer.failure(), None, "step {step}");
        let seeders = model.values().filter(|m| m.2).count() as i64;
        let leechers = model.len() as i64 - seeders;
        assert_eq!(
            (answer.int("complete"), answer.int("incomplete")),
            (seeders, leechers),
            "counts at step {step}"
        );
        assert_eq!(answer.int("downloaded"), downloaded, "step {step}");
        if roll == 1 {
            continue;
        }
        let mut got = answer.peers4();
        got.sort_unstable();
        let mut want: Vec<_> = model
            .iter()
            .filter(|(q, m)| **q != p && (!seeder || !m.2))
            .map(|(_, m)| (m.0, m.1))
            .collect();
        want.sort_unstable();
        if numwant == 200 {
            assert_eq!(got, want, "peers at step {step}");
        } else {
            let mut distinct = got.clone();
            distinct.dedup();
            assert_eq!(distinct, got, "no peer twice at step {step}");
            assert!(
                got.iter().all(|g| want.contains(g)),
                "only live peers at step {step}"
            );
            assert_eq!(
                got.len(),
                want.len().min(4),
                "as many as wanted at step {step}"
            );
        }
    }
}

#[test]
fn expired_peers_are_trimmed_and_the_live_ones_are_found_again() {
    // Trim steps remove expired peers from the middle of a list; each
    // removal moves another record. Live peers re-announcing afterwards
    // must be found where they now are, not added twice.
    if !available() {
        return;
    }
    let server = common::redis::Single::start();
    let url = server.url();
    let tracker = Tracker::start(&[
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--allow-ip-param",
        "--peer-ttl",
        "2",
    ]);
    let hash = id(10);
    let peer = |n: u8, numwant: &str| {
        Announce::new(hash, n)
            .param("ip", &format!("10.1.{}.{}", n / 50, n))
            .param("numwant", numwant)
    };
    // 150 that will go silent, interleaved with 90 that stay.
    let stays = |n: u8| n % 8 < 3;
    for n in 0..240u8 {
        tracker.announce(&peer(n, "0"));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        for n in (0..240u8).filter(|n| stays(*n)) {
            tracker.announce(&peer(n, "0"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let live = (0..240u8).filter(|n| stays(*n)).count() as i64;
    let answer = tracker.announce(&peer(0, "500"));
    assert_eq!(
        answer.int("incomplete"),
        live,
        "only the live peers are counted"
    );
    let mut got: Vec<u8> = answer.peers4().iter().map(|(ip, _)| ip[3]).collect();
    got.sort_unstable();
    let want: Vec<u8> = (1..240u8).filter(|n| stays(*n)).collect();
    assert_eq!(got, want);
}

/// On every reactor: announces go straight to the masters of the node's
/// slot map, and through the cluster client when the map is wrong.
#[test]
fn a_swarm_moved_to_another_master_is_followed_and_its_script_reloaded() {
    if !available() {
        return;
    }
    for reactor in ["tokio", "per-core", "io-uring"] {
        common::on_reactor(reactor, swarm_moved);
    }
}

fn swarm_moved() {
    let cluster = Cluster::start(3);
    // One worker: each loop of the store keeps a slot map of its own.
    let tracker = node(&cluster, "mv:", &["--workers", "1"]);
    let hash = hash_on(&cluster, "mv:", 0);
    tracker.announce(
        &Announce::new(hash, 1)
            .port(7001)
            .seeder()
            .event("completed"),
    );
    assert_eq!(routes(&tracker), (1, 0, 0));
    // The swarm's slot moves to master 1, keys and all, as resharding
    // does: the node's slot map now sends it to the wrong master.
    let key = meta_key("mv:", &hash);
    let (slot, to, port) = begin_move(&cluster, &key);
    // An array reply comes back as RESP text: the keys are its lines
    // without a `*` or `$` head.
    let reply = cluster.command(0, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
    let keys: Vec<&str> = reply
        .lines()
        .filter(|line| !line.starts_with(['*', '$']))
        .collect();
    assert!(keys.len() >= 3, "the swarm's keys: {reply}");
    for moving in keys {
        let moved = cluster.command(0, &["MIGRATE", "127.0.0.1", &port, moving, "0", "5000"]);
        assert_eq!(moved, "OK", "{moving}");
    }
    for i in 0..3 {
        cluster.command(i, &["CLUSTER", "SETSLOT", &slot, "NODE", &to]);
    }
    assert_eq!(cluster.master_of(&key), 1);
    let second = tracker.announce(&Announce::new(hash, 2).port(7002));
    assert_eq!(second.peers4(), vec![(LOCALHOST4, 7001)]);
    assert_eq!((second.int("complete"), second.int("incomplete")), (1, 1));
    assert_eq!(second.int("downloaded"), 1);
    // Redirected, then sent through the cluster client.
    assert_eq!(routes(&tracker), (1, 0, 1));
    // Once the node has read the slot map again, the new master is asked
    // directly; it forgets the script (as a restarted master does) and is
    // given it again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cluster.command(1, &["SCRIPT", "FLUSH"]), "OK");
    let third = tracker.announce(&Announce::new(hash, 3).port(7003));
    let mut ports: Vec<u16> = third.peers4().iter().map(|p| p.1).collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![7001, 7002]);
    assert_eq!((third.int("complete"), third.int("incomplete")), (1, 2));
    assert_eq!(third.int("downloaded"), 1);
    assert_eq!(routes(&tracker), (2, 0, 1));
}

/// A reshard moves a slot's keys one by one. While a swarm is half moved
/// (its index still here, a list already on the new master), its
/// announces fail, and fail before they write anything: the swarm's keys
/// stay consistent, and once the move is done the swarm serves again.
#[test]
fn a_swarm_half_moved_by_a_reshard_fails_its_announces_before_any_write() {
    if !available() {
        return;
    }
    let cluster = Cluster::start(3);
    let tracker = node(&cluster, "hm:", &["--workers", "1"]);
    let hash = hash_on(&cluster, "hm:", 0);
    tracker.announce(&Announce::new(hash, 1).port(7001));
    tracker.announce(&Announce::new(hash, 2).port(7002));
    tracker.announce(&Announce::new(hash, 3).port(7003).seeder());
    // No trim step is due below: a new list's first is a quarter TTL away.
    let key = meta_key("hm:", &hash);
    let list = |suffix: &str| format!("{}{suffix}", &key[..key.len() - 1]);
    let (slot, to, port) = begin_move(&cluster, &key);
    // The seeders' list moves first; the index and the leechers stay.
    let moved = cluster.command(
        0,
        &["MIGRATE", "127.0.0.1", &port, &list("4s"), "0", "5000"],
    );
    assert_eq!(moved, "OK");
    let client = redis::Client::open(cluster.urls()[0].as_str()).expect("client");
    let mut connection = client.get_connection().expect("connection");
    // The index's fields and values, and the leechers' list, as bytes.
    type Here = (Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);
    let mut here = || -> Here {
        let index = redis::cmd("HGETALL")
            .arg(&key)
            .query(&mut connection)
            .expect("HGETALL");
        let leechers = redis::cmd("GET")
            .arg(list("4l"))
            .query(&mut connection)
            .expect("GET");
        (index, leechers)
    };
    let before = here();
    assert_eq!(
        before.0.len(),
        2,
        "the state and one address: {:?}",
        before.0
    );
    // A leecher turns seeder: the full path would move its record out of
    // the leechers' list (here) into the seeders' (moved).
    let response = get(
        tracker.v4,
        &Announce::new(hash, 1).port(7001).seeder().target(),
    );
    assert_eq!(response.failure().as_deref(), Some(UNAVAILABLE));
    assert_eq!(here(), before, "nothing written");
    // The seeder again: the fast path's one write is to its moved list.
    let response = get(
        tracker.v4,
        &Announce::new(hash, 3).port(7003).seeder().target(),
    );
    assert_eq!(response.failure().as_deref(), Some(UNAVAILABLE));
    assert_eq!(here(), before, "nothing written");
    // The rest of the swarm moves, and it serves again, whole.
    for suffix in ["m", "4l", "d"] {
        let exists = cluster.command(0, &["EXISTS", &list(suffix)]);
        if exists.trim() == "1" {
            let moved = cluster.command(
                0,
                &["MIGRATE", "127.0.0.1", &port, &list(suffix), "0", "5000"],
            );
            assert_eq!(moved, "OK", "{suffix}");
        }
    }
    for i in 0..3 {
        cluster.command(i, &["CLUSTER", "SETSLOT", &slot, "NODE", &to]);
    }
    let after = tracker.announce(&Announce::new(hash, 1).port(7001).seeder());
    assert_eq!((after.int("complete"), after.int("incomplete")), (2, 1));
    assert_eq!(after.peers4(), vec![(LOCALHOST4, 7002)]);
}

/// Starts moving `key`'s slot from master 0 to master 1, as a reshard
/// does (IMPORTING on 1, MIGRATING on 0; the keys are still to be
/// migrated): the slot, master 1's id and its port.
fn begin_move(cluster: &Cluster, key: &str) -> (String, String, String) {
    let slot = cluster.command(0, &["CLUSTER", "KEYSLOT", key]);
    let from = cluster.command(0, &["CLUSTER", "MYID"]);
    let to = cluster.command(1, &["CLUSTER", "MYID"]);
    cluster.command(1, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from]);
    cluster.command(0, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to]);
    (slot, to, cluster.ports[1].to_string())
}

/// Announces sent to the store so far, by route: (direct, client, rerouted).
fn routes(tracker: &Tracker) -> (u64, u64, u64) {
    let metrics = get(tracker.v4, "/metrics").text();
    let count = |route: &str| -> u64 {
        let series = format!("shoal_store_routes_total{{backend=\"redis\",route=\"{route}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    };
    (count("direct"), count("client"), count("rerouted"))
}
