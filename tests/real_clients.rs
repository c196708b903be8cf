//! End to end with real BitTorrent clients from Debian: aria2 and libtorrent
//! (python3-libtorrent) find each other only through shoal (DHT, PEX and LSD
//! off), transfer a file whose bytes must match, and the scrape shows the
//! right counts.
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
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "real clients missing in CI: {missing:?} (apt-get install aria2 python3-libtorrent mktorrent)"
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
        // The same test runs on every reactor at once in this process: the
        // reactor's name keeps their directories apart.
        let dir = std::env::temp_dir().join(format!(
            "shoal-e2e-{}-{name}-{}",
            std::process::id(),
            common::reactor()
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
            .args(["-a", announce, "-l", "18", "-o"])
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
        Client::spawn(
            "aria2c",
            Command::new("aria2c")
                .args([
                    "--enable-dht=false",
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
        Client::spawn(
            "libtorrent",
            Command::new("/usr/bin/python3")
                .arg(LT_CLIENT)
                .arg(mode)
                .arg(&self.torrent)
                .arg(dir)
                .arg("90"),
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
    let deadline = Instant::now() + WAIT;
    loop {
        let got = tracker.counts(hash);
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

reactor_tests!(
    libtorrent_downloads_from_aria2_through_shoal,
    aria2_downloads_from_libtorrent_through_shoal,
);
