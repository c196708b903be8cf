//! Private mode (BEP 27): passkeys in the path, expiry, reload on SIGHUP,
//! and keys kept out of the logs. Runs against every reactor.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Announce, Tracker, get, id, wait_until};

const ALICE: &str = "alice-6b1c0d9e2f";
const OLD: &str = "expired-7a8b9c0d1e";
const LATER: &str = "latecomer-1234abcd";

fn keys_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shoal-keys-{}-{name}-{}",
        std::process::id(),
        common::run_name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("passkeys.txt");
    std::fs::write(&path, text).unwrap();
    path
}

fn announce_as(tracker: &Tracker, key: &str, announce: &Announce) -> Option<String> {
    let target = announce
        .target()
        .replacen("/announce", &format!("/announce/{key}"), 1);
    let response = get(tracker.v4, &target);
    assert_eq!(response.status, 200);
    response.failure()
}

fn passkeys_open_the_tracker_and_nothing_else_does() {
    let path = keys_file("basic", &format!("# users\n{ALICE}\n{OLD} 1\n"));
    let tracker = Tracker::start(&["--passkeys", path.to_str().unwrap(), "--log-level", "debug"]);
    assert_eq!(announce_as(&tracker, ALICE, &Announce::new(id(1), 1)), None);
    assert_eq!(
        announce_as(&tracker, "mallory-00000000", &Announce::new(id(1), 2)).as_deref(),
        Some("unknown passkey")
    );
    assert_eq!(
        announce_as(&tracker, OLD, &Announce::new(id(1), 3)).as_deref(),
        Some("passkey expired")
    );
    let plain = get(tracker.v4, &Announce::new(id(1), 4).target());
    assert_eq!(
        plain.failure().as_deref(),
        Some("this tracker is private: use the announce URL with your passkey")
    );
    // Scrape with a key sees the one admitted peer.
    let scrape = get(
        tracker.v4,
        &format!("/scrape/{ALICE}?info_hash={}", common::escape(&id(1))),
    );
    let files = scrape.dict().dict("files");
    assert_eq!(files.dict_bytes(&id(1)).int("incomplete"), 1);
    let scrape = get(
        tracker.v4,
        &format!(
            "/scrape/nope-nope-nope?info_hash={}",
            common::escape(&id(1))
        ),
    );
    assert_eq!(scrape.failure().as_deref(), Some("unknown passkey"));
    // Keys never reach the log, even at debug level.
    let log = tracker.log();
    for key in [ALICE, OLD, "mallory-00000000"] {
        assert!(!log.contains(key), "{key} logged: {log}");
    }
}

fn sighup_reloads_the_passkeys() {
    let path = keys_file("reload", &format!("{ALICE}\n"));
    let tracker = Tracker::start(&["--passkeys", path.to_str().unwrap()]);
    assert_eq!(
        announce_as(&tracker, LATER, &Announce::new(id(2), 1)).as_deref(),
        Some("unknown passkey")
    );
    std::fs::write(&path, format!("{LATER}\n")).unwrap();
    tracker.signal("HUP");
    wait_until("the passkeys reloaded", || {
        announce_as(&tracker, LATER, &Announce::new(id(2), 1)).is_none()
    });
    // The removed key no longer works.
    assert_eq!(
        announce_as(&tracker, ALICE, &Announce::new(id(2), 2)).as_deref(),
        Some("unknown passkey")
    );
}

fn a_bad_passkey_file_stops_the_start_without_showing_keys() {
    let path = keys_file("bad", &format!("{ALICE}\nsecret!!\n"));
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["--listen", "127.0.0.1:0", "--reactor", common::reactor()])
        .arg("--passkeys")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2:"), "{stderr}");
    assert!(
        !stderr.contains("secret") && !stderr.contains(ALICE),
        "{stderr}"
    );
}

reactor_tests!(
    passkeys_open_the_tracker_and_nothing_else_does,
    sighup_reloads_the_passkeys,
    a_bad_passkey_file_stops_the_start_without_showing_keys,
);
