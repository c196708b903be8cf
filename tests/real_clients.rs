//! End to end with real BitTorrent clients from Debian: aria2 and libtorrent
//! (python3-libtorrent) find each other only through shoal (DHT, PEX and LSD
//! off), transfer a file whose bytes must match, and the scrape shows the
//! right counts; over `http://` and over `udp://` (BEP 15) trackers, IPv4
//! and IPv6, public and private.
//!
//! When the clients are missing the test is skipped with a note, unless `CI`
//! is set: in CI a missing client is a failure (`.ci/run` installs them).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Tracker;

const WAIT: Duration = Duration::from_secs(90);
const LT_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_client.py");

/// A client process: interrupted (SIGINT, so it says `stopped`) when asked,
/// killed when dropped.
struct Client {
    name: &'static str,
    child: Child,
}

impl Client {
    fn spawn(name: &'static str, command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Client { name, child }
    }

    /// SIGINT, then wait (bounded) for a clean exit.
    fn interrupt(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not exit after SIGINT", self.name);
    }

    /// Waits (bounded) for the process to exit by itself; true on success.
    fn wait_success(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not finish in {WAIT:?}", self.name);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when every client is installed; otherwise skip, or fail in CI.
fn clients_available() -> bool {
    available(&[])
}

/// True when rtorrent and qbittorrent-nox are installed too.
fn all_clients_available() -> bool {
    available(&[
        ("rtorrent", have("which", &["rtorrent"])),
        ("qbittorrent-nox", have("qbittorrent-nox", &["--version"])),
    ])
}

/// True when the clients every test uses, and `more`, are installed;
/// otherwise skip, or fail in CI.
fn available(more: &[(&'static str, bool)]) -> bool {
    let missing: Vec<&str> = [
        (
            "mktorrent",
            have("mktorrent", &["-h"]) || have("which", &["mktorrent"]),
        ),
        ("aria2c", have("aria2c", &["--version"])),
        (
            "python3-libtorrent",
            have("/usr/bin/python3", &["-c", "import libtorrent"]),
        ),
    ]
    .into_iter()
    .chain(more.iter().copied())
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "real clients missing in CI: {missing:?} (apt-get install aria2 python3-libtorrent \
         mktorrent rtorrent qbittorrent-nox)"
    );
    eprintln!("skipping the real-client test: {missing:?} not installed");
    false
}

struct Scenario {
    dir: PathBuf,
    payload: PathBuf,
    torrent: PathBuf,
    info_hash: [u8; 20],
}

impl Scenario {
    /// A fresh directory with an 8 MiB random file and its .torrent.
    fn new(name: &str, announce: &str) -> Self {
        Self::with_flags(name, announce, &[])
    }

    /// A scenario whose torrent mktorrent makes with extra `flags` (`-p`:
    /// private).
    fn with_flags(name: &str, announce: &str, flags: &[&str]) -> Self {
        // The same test runs on every reactor at once in this process: the
        // reactor's name keeps their directories apart.
        let dir = std::env::temp_dir().join(format!(
            "shoal-e2e-{}-{name}-{}",
            std::process::id(),
            common::run_name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("seed")).unwrap();
        std::fs::create_dir_all(dir.join("leech")).unwrap();
        let payload = dir.join("seed/payload.bin");
        let mut bytes = vec![0u8; 8 << 20];
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
        std::fs::write(&payload, &bytes).unwrap();
        let torrent = dir.join("payload.torrent");
        let status = Command::new("mktorrent")
            .args(["-a", announce, "-l", "18"])
            .args(flags)
            .arg("-o")
            .arg(&torrent)
            .arg(&payload)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "mktorrent failed");
        let info_hash = info_hash_of(&std::fs::read(&torrent).unwrap());
        Scenario {
            dir,
            payload,
            torrent,
            info_hash,
        }
    }

    fn downloaded(&self) -> PathBuf {
        self.dir.join("leech/payload.bin")
    }

    fn download_matches(&self) -> bool {
        std::fs::read(self.downloaded())
            .is_ok_and(|got| got == std::fs::read(&self.payload).unwrap())
    }

    fn aria2(&self, dir: &Path) -> Client {
        self.aria2_with(dir, &["--enable-dht=false"])
    }

    /// aria2 for a `udp://` tracker: its UDP tracker client shares the IPv4
    /// DHT socket, so DHT is on, but with a DHT file of its own and no entry
    /// point it knows no node and finds peers only through the tracker.
    fn aria2_udp(&self, dir: &Path) -> Client {
        let dht = format!("--dht-file-path={}", dir.join("dht.dat").display());
        self.aria2_with(
            dir,
            &["--enable-dht=true", &dht, "--dht-listen-port=27000-27999"],
        )
    }

    fn aria2_with(&self, dir: &Path, dht: &[&str]) -> Client {
        Client::spawn(
            "aria2c",
            Command::new("aria2c")
                .args(dht)
                .args([
                    "--enable-dht6=false",
                    "--bt-enable-lpd=false",
                    "--enable-peer-exchange=false",
                    "--check-integrity=true",
                    "--seed-ratio=0.0",
                    "--listen-port=26881-26999",
                    "--console-log-level=warn",
                    "--summary-interval=0",
                ])
                .arg(format!("--dir={}", dir.display()))
                .arg(&self.torrent),
        )
    }

    fn libtorrent(&self, mode: &str, dir: &Path) -> Client {
        self.libtorrent_on(mode, dir, "127.0.0.1:0")
    }

    /// rtorrent (libtorrent-rakshasa) on its own loopback address `ip`: it
    /// keeps one peer per IP, so it must not share 127.0.0.1. Headless, DHT
    /// and PEX off, UDP trackers on, `completed` sent at once; SIGINT stops
    /// it with `event=stopped`.
    fn rtorrent(&self, dir: &Path, ip: &str) -> Client {
        let session = dir.join(".rtorrent-session");
        std::fs::create_dir_all(&session).unwrap();
        let rc = dir.join(".rtorrent.rc");
        std::fs::write(
            &rc,
            format!(
                "directory.default.set = {dir}\n\
                 session.path.set = {session}\n\
                 network.port_range.set = 28000-28999\n\
                 network.port_random.set = yes\n\
                 network.bind_address.set = {ip}\n\
                 network.local_address.set = {ip}\n\
                 dht.mode.set = disable\n\
                 protocol.pex.set = no\n\
                 trackers.use_udp.set = yes\n\
                 pieces.hash.on_completion.set = no\n\
                 system.daemon.set = true\n\
                 load.start = {torrent}\n",
                dir = dir.display(),
                session = session.display(),
                torrent = self.torrent.display(),
            ),
        )
        .unwrap();
        Client::spawn(
            "rtorrent",
            Command::new("rtorrent")
                .args(["-n", "-o"])
                .arg(format!("import={}", rc.display())),
        )
    }

    /// qBittorrent (libtorrent-rasterbar inside) with a profile of its own:
    /// DHT, PEX, LSD and UPnP off, several connections per IP (every peer is
    /// on loopback). A seeder skips the hash check of the file it has.
    fn qbittorrent(&self, dir: &Path, seed: bool) -> Client {
        let profile = dir.join(".qbittorrent");
        let config = profile.join("qBittorrent/config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("qBittorrent.conf"),
            format!(
                "[LegalNotice]\nAccepted=true\n\n\
                 [BitTorrent]\n\
                 Session\\DHTEnabled=false\n\
                 Session\\PeXEnabled=false\n\
                 Session\\LSDEnabled=false\n\
                 Session\\MultiConnectionsPerIp=true\n\
                 Session\\QueueingSystemEnabled=false\n\
                 Session\\Port={}\n\n\
                 [Preferences]\n\
                 Connection\\UPnP=false\n\
                 WebUI\\LocalHostAuth=false\n",
                fastrand::u16(29_000..30_000)
            ),
        )
        .unwrap();
        let mut command = Command::new("qbittorrent-nox");
        command
            .arg(format!("--profile={}", profile.display()))
            .arg(format!("--webui-port={}", fastrand::u16(30_000..31_000)))
            .arg(format!("--save-path={}", dir.display()));
        if seed {
            command.arg("--skip-hash-check");
        }
        Client::spawn("qbittorrent-nox", command.arg(&self.torrent))
    }

    /// libtorrent listening on `listen` (`[::1]:0` for an IPv6 peer).
    fn libtorrent_on(&self, mode: &str, dir: &Path, listen: &str) -> Client {
        Client::spawn(
            "libtorrent",
            Command::new("/usr/bin/python3")
                .arg(LT_CLIENT)
                .arg(mode)
                .arg(&self.torrent)
                .arg(dir)
                .arg("90")
                .arg(listen),
        )
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SHA-1 of the bencoded `info` value, found by walking the bencode.
fn info_hash_of(torrent: &[u8]) -> [u8; 20] {
    fn skip(b: &[u8], mut i: usize) -> usize {
        match b[i] {
            b'i' => b[i..].iter().position(|&c| c == b'e').unwrap() + i + 1,
            b'l' | b'd' => {
                i += 1;
                while b[i] != b'e' {
                    i = skip(b, i);
                }
                i + 1
            }
            _ => {
                let colon = b[i..].iter().position(|&c| c == b':').unwrap() + i;
                let len: usize = std::str::from_utf8(&b[i..colon]).unwrap().parse().unwrap();
                colon + 1 + len
            }
        }
    }
    let start = torrent.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    let end = skip(torrent, start);
    sha1_smol::Sha1::from(&torrent[start..end]).digest().bytes()
}

/// Polls the scrape until it shows `want` (complete, incomplete, downloaded).
fn wait_for_counts(tracker: &Tracker, hash: [u8; 20], want: (i64, i64, i64), what: &str) {
    wait_for_counts_at(tracker, "/scrape", hash, want, what);
}

/// The same, scraping at `path` (`/scrape/<passkey>` for a private tracker).
fn wait_for_counts_at(
    tracker: &Tracker,
    path: &str,
    hash: [u8; 20],
    want: (i64, i64, i64),
    what: &str,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = tracker.counts_at(path, hash);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: scrape shows {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn libtorrent_downloads_from_aria2_through_shoal() {
    if !clients_available() {
        return;
    }
    let tracker = Tracker::start(&[]);
    let scenario = Scenario::new("lt-from-aria2", &format!("http://{}/announce", tracker.v4));
    let seeder = scenario.aria2(&scenario.dir.join("seed"));
    wait_for_counts(&tracker, scenario.info_hash, (1, 0, 0), "aria2 seeding");
    let mut leecher = scenario.libtorrent("leech", &scenario.dir.join("leech"));
    assert!(
        leecher.wait_success(),
        "libtorrent did not complete the download"
    );
    assert!(scenario.download_matches(), "downloaded file differs");
    // libtorrent announced completed then stopped; aria2 still seeds.
    wait_for_counts(
        &tracker,
        scenario.info_hash,
        (1, 0, 1),
        "after the download",
    );
    seeder.interrupt();
    wait_for_counts(
        &tracker,
        scenario.info_hash,
        (0, 0, 1),
        "after aria2 stopped",
    );
}

fn aria2_downloads_from_libtorrent_through_shoal() {
    if !clients_available() {
        return;
    }
    let tracker = Tracker::start(&[]);
    let scenario = Scenario::new("aria2-from-lt", &format!("http://{}/announce", tracker.v4));
    let seeder = scenario.libtorrent("seed", &scenario.dir.join("seed"));
    wait_for_counts(
        &tracker,
        scenario.info_hash,
        (1, 0, 0),
        "libtorrent seeding",
    );
    let leecher = scenario.aria2(&scenario.dir.join("leech"));
    let deadline = Instant::now() + WAIT;
    while !scenario.download_matches() {
        assert!(Instant::now() < deadline, "aria2 did not download the file");
        std::thread::sleep(Duration::from_millis(200));
    }
    // aria2 announced completed and seeds on: two seeders, one download.
    wait_for_counts(
        &tracker,
        scenario.info_hash,
        (2, 0, 1),
        "after the download",
    );
    leecher.interrupt();
    wait_for_counts(
        &tracker,
        scenario.info_hash,
        (1, 0, 1),
        "after aria2 stopped",
    );
    seeder.interrupt();
    wait_for_counts(
        &tracker,
        scenario.info_hash,
        (0, 0, 1),
        "after libtorrent stopped",
    );
}

/// A leecher downloads from a seeder found only through `tracker`; the
/// scrape (at `scrape`) follows: seeding, after the download, after both
/// stop. `seeder` and `leecher` start the clients in the scenario's
/// directories.
fn swarm(
    tracker: &Tracker,
    scrape: &str,
    scenario: &Scenario,
    seeder: impl FnOnce(&Path) -> Client,
    leecher: impl FnOnce(&Path) -> Client,
) {
    let seeder = seeder(&scenario.dir.join("seed"));
    wait_for_counts_at(tracker, scrape, scenario.info_hash, (1, 0, 0), "seeding");
    let leecher = leecher(&scenario.dir.join("leech"));
    let deadline = Instant::now() + WAIT;
    while !scenario.download_matches() {
        assert!(
            Instant::now() < deadline,
            "{} did not download the file from {}",
            leecher.name,
            seeder.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The leecher announced `completed` (libtorrent then stops; aria2 seeds
    // on until interrupted).
    let deadline = Instant::now() + WAIT;
    loop {
        let (complete, incomplete, downloaded) = tracker.counts_at(scrape, scenario.info_hash);
        if downloaded == 1 && incomplete == 0 && complete >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the download the scrape shows {:?}",
            (complete, incomplete, downloaded)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    leecher.interrupt();
    seeder.interrupt();
    wait_for_counts_at(
        tracker,
        scrape,
        scenario.info_hash,
        (0, 0, 1),
        "after both stopped",
    );
}

fn udp_url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("udp://{addr}{path}")
}

fn libtorrent_downloads_from_aria2_over_udp() {
    if !clients_available() {
        return;
    }
    let tracker = Tracker::start(&[]);
    let scenario = Scenario::new("udp-lt-from-aria2", &udp_url(tracker.v4, "/announce"));
    swarm(
        &tracker,
        "/scrape",
        &scenario,
        |dir| scenario.aria2_udp(dir),
        |dir| scenario.libtorrent("leech", dir),
    );
}

fn aria2_downloads_from_libtorrent_over_udp() {
    if !clients_available() {
        return;
    }
    let tracker = Tracker::start(&[]);
    let scenario = Scenario::new("udp-aria2-from-lt", &udp_url(tracker.v4, "/announce"));
    swarm(
        &tracker,
        "/scrape",
        &scenario,
        |dir| scenario.libtorrent("seed", dir),
        |dir| scenario.aria2_udp(dir),
    );
}

fn libtorrent_swarms_over_udp_on_ipv6() {
    if !clients_available() {
        return;
    }
    let tracker = Tracker::start(&[]);
    let scenario = Scenario::new("udp-lt-v6", &udp_url(tracker.v6, "/announce"));
    swarm(
        &tracker,
        "/scrape",
        &scenario,
        |dir| scenario.libtorrent_on("seed", dir, "[::1]:0"),
        |dir| scenario.libtorrent_on("leech", dir, "[::1]:0"),
    );
}

fn a_private_torrent_swarms_with_the_passkey_in_the_udp_url() {
    if !clients_available() {
        return;
    }
    let keys = std::env::temp_dir().join(format!(
        "shoal-e2e-keys-{}-{}.txt",
        std::process::id(),
        common::run_name()
    ));
    std::fs::write(&keys, "k3y-for-udp-swarm\n").unwrap();
    let tracker = Tracker::start(&["--passkeys", keys.to_str().unwrap()]);
    let url = udp_url(tracker.v4, "/announce/k3y-for-udp-swarm");
    let scenario = Scenario::with_flags("udp-private", &url, &["-p"]);
    let scrape = "/scrape/k3y-for-udp-swarm";
    swarm(
        &tracker,
        scrape,
        &scenario,
        |dir| scenario.libtorrent("seed", dir),
        |dir| scenario.libtorrent("leech", dir),
    );
    // A wrong passkey in the URL gets libtorrent nowhere.
    let wrong = Scenario::with_flags(
        "udp-private-wrong",
        &udp_url(tracker.v4, "/announce/not-a-valid-key"),
        &["-p"],
    );
    let seeder = wrong.libtorrent("seed", &wrong.dir.join("seed"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(tracker.counts_at(scrape, wrong.info_hash), (0, 0, 0));
    seeder.interrupt();
    let _ = std::fs::remove_file(&keys);
}

fn qbittorrent_downloads_from_rtorrent_over_udp() {
    if !all_clients_available() {
        return;
    }
    let tracker = Tracker::start(&[]);
    let scenario = Scenario::new("udp-qb-from-rt", &udp_url(tracker.v4, "/announce"));
    swarm(
        &tracker,
        "/scrape",
        &scenario,
        |dir| scenario.rtorrent(dir, "127.0.0.2"),
        |dir| scenario.qbittorrent(dir, false),
    );
}

fn rtorrent_downloads_from_qbittorrent_over_udp() {
    if !all_clients_available() {
        return;
    }
    let tracker = Tracker::start(&[]);
    let scenario = Scenario::new("udp-rt-from-qb", &udp_url(tracker.v4, "/announce"));
    swarm(
        &tracker,
        "/scrape",
        &scenario,
        |dir| scenario.qbittorrent(dir, true),
        |dir| scenario.rtorrent(dir, "127.0.0.3"),
    );
}

reactor_tests!(
    libtorrent_downloads_from_aria2_through_shoal,
    aria2_downloads_from_libtorrent_through_shoal,
);

/// The UDP swarms, spread over the reactors: each runs at least one.
mod udp {
    #[test]
    fn libtorrent_downloads_from_aria2_tokio() {
        crate::common::on_reactor("tokio", super::libtorrent_downloads_from_aria2_over_udp);
    }

    #[test]
    fn aria2_downloads_from_libtorrent_per_core() {
        crate::common::on_reactor("per-core", super::aria2_downloads_from_libtorrent_over_udp);
    }

    #[test]
    fn libtorrent_over_ipv6_io_uring() {
        crate::common::on_reactor("io-uring", super::libtorrent_swarms_over_udp_on_ipv6);
    }

    #[test]
    fn qbittorrent_downloads_from_rtorrent_per_core() {
        crate::common::on_reactor(
            "per-core",
            super::qbittorrent_downloads_from_rtorrent_over_udp,
        );
    }

    #[test]
    fn rtorrent_downloads_from_qbittorrent_io_uring() {
        crate::common::on_reactor(
            "io-uring",
            super::rtorrent_downloads_from_qbittorrent_over_udp,
        );
    }

    #[test]
    fn private_torrent_tokio() {
        crate::common::on_reactor(
            "tokio",
            super::a_private_torrent_swarms_with_the_passkey_in_the_udp_url,
        );
    }
}
