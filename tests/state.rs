//! Durable snatch counts: the state file survives restarts, SIGKILL and
//! corruption is reported. Runs against every reactor.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Announce, Tracker, id, wait_until};

fn state_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shoal-state-{}-{name}-{}",
        std::process::id(),
        common::run_name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.bin")
}

/// One completed download of torrent `hash` by peer `peer`.
fn complete(tracker: &Tracker, hash: [u8; 20], peer: u8) {
    tracker.announce(&Announce::new(hash, peer));
    let dict = tracker.announce(&Announce::new(hash, peer).seeder().event("completed"));
    assert_eq!(dict.failure(), None);
}

fn start_with_state(path: &std::path::Path, extra: &[&str]) -> Tracker {
    let mut args = vec!["--state-file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Tracker::start(&args)
}

fn counts_survive_a_graceful_restart() {
    if common::memory_only("the state file") {
        return;
    }
    let path = state_path("graceful");
    let mut tracker = start_with_state(&path, &[]);
    complete(&tracker, id(1), 1);
    complete(&tracker, id(1), 2);
    complete(&tracker, id(2), 1);
    // A torrent whose peers left keeps its count too.
    tracker.announce(&Announce::new(id(2), 1).event("stopped"));
    assert!(tracker.signal_and_wait("TERM").success());
    assert!(
        tracker.log().contains("state saved to"),
        "{}",
        tracker.log()
    );

    let tracker = start_with_state(&path, &[]);
    assert!(
        tracker
            .log()
            .contains("restored download counts of 2 torrents")
    );
    assert_eq!(tracker.counts(id(1)), (0, 0, 2));
    assert_eq!(tracker.counts(id(2)), (0, 0, 1));
}

fn counts_survive_sigkill_after_a_snapshot() {
    if common::memory_only("the state file") {
        return;
    }
    let path = state_path("sigkill");
    let mut tracker = start_with_state(&path, &["--snapshot-interval", "1"]);
    complete(&tracker, id(3), 1);
    // Wait (bounded) until a snapshot holding the count is on disk.
    wait_until("a snapshot with the count", || {
        shoal::state::load(&path)
            .ok()
            .flatten()
            .is_some_and(|counts| !counts.is_empty())
    });
    tracker.signal_and_wait("KILL");
    let tracker = start_with_state(&path, &[]);
    assert_eq!(tracker.counts(id(3)), (0, 0, 1));
}

fn a_corrupt_state_file_stops_the_start_unless_told() {
    if common::memory_only("the state file") {
        return;
    }
    let path = state_path("corrupt");
    std::fs::write(&path, b"SHOALST\0 definitely not a state file").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["--listen", "127.0.0.1:0", "--reactor", common::reactor()])
        .arg("--state-file")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(stderr.contains("--ignore-bad-state"), "{stderr}");

    let tracker = start_with_state(&path, &["--ignore-bad-state"]);
    assert!(
        tracker.log().contains("starting with empty counts"),
        "{}",
        tracker.log()
    );
    assert!(path.with_extension("bin.bad").exists());
    complete(&tracker, id(4), 1);
    assert_eq!(tracker.counts(id(4)), (1, 0, 1));
}

fn repeated_sigkills_under_load_never_leave_an_unstartable_file() {
    if common::memory_only("the state file") {
        return;
    }
    let path = state_path("kill-loop");
    let mut last_seen = 0;
    for round in 0..5u8 {
        let mut tracker = start_with_state(&path, &["--snapshot-interval", "1"]);
        let (seeders, _, downloaded) = tracker.counts(id(5));
        assert_eq!(seeders, 0, "peers do not survive a restart, counts do");
        // Counts only move forward across crashes.
        assert!(
            downloaded >= last_seen,
            "round {round}: {downloaded} < {last_seen}"
        );
        last_seen = downloaded;
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (stop, v4) = (stop.clone(), tracker.v4);
            std::thread::spawn(move || {
                let mut peer = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    peer = peer.wrapping_add(1);
                    let target = Announce::new(id(5), peer)
                        .port(30_000 + u16::from(round) * 256 + u16::from(peer))
                        .seeder()
                        .event("completed")
                        .target();
                    // The server may die mid-request: ignore the outcome.
                    let _ = std::panic::catch_unwind(|| common::get(v4, &target));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300 + 250 * u64::from(round)));
        tracker.signal_and_wait("KILL");
        stop.store(true, Ordering::Relaxed);
        let _ = load.join();
    }
    // The file left by the last kill still starts a tracker.
    let tracker = start_with_state(&path, &[]);
    let downloaded = tracker.counts(id(5)).2;
    assert!(downloaded >= last_seen);
    // Snapshots were taken under load (rounds past one second), so the test
    // exercised real files, not only "no file yet".
    assert!(downloaded > 0, "no snapshot survived any round");
}

reactor_tests!(
    counts_survive_a_graceful_restart,
    counts_survive_sigkill_after_a_snapshot,
    a_corrupt_state_file_stops_the_start_unless_told,
    repeated_sigkills_under_load_never_leave_an_unstartable_file,
);
