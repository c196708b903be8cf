//! Access control: allow and deny lists, reloaded on SIGHUP, with the peers
//! of torrents no longer allowed purged. Runs against every reactor.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Announce, Tracker, id, wait_until};

const NOT_ALLOWED: &str = "torrent not allowed on this tracker";

fn hex(hash: [u8; 20]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn list_file(name: &str, hashes: &[[u8; 20]]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shoal-access-{}-{name}-{}",
        std::process::id(),
        common::run_name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("torrents.txt");
    write_list(&path, hashes);
    path
}

fn write_list(path: &std::path::Path, hashes: &[[u8; 20]]) {
    let mut text = String::from("# test list\n");
    for hash in hashes {
        text.push_str(&hex(*hash));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn allow_mode_serves_only_listed_torrents() {
    let path = list_file("allow", &[id(1)]);
    let tracker = Tracker::start(&["--access-list", path.to_str().unwrap()]);
    assert_eq!(tracker.announce(&Announce::new(id(1), 1)).failure(), None);
    assert_eq!(
        tracker
            .announce(&Announce::new(id(2), 1))
            .failure()
            .as_deref(),
        Some(NOT_ALLOWED)
    );
    assert_eq!(tracker.counts(id(2)), (0, 0, 0));
}

fn deny_mode_refuses_listed_torrents() {
    let path = list_file("deny", &[id(1)]);
    let tracker = Tracker::start(&[
        "--access-list",
        path.to_str().unwrap(),
        "--access-mode",
        "deny",
    ]);
    assert_eq!(
        tracker
            .announce(&Announce::new(id(1), 1))
            .failure()
            .as_deref(),
        Some(NOT_ALLOWED)
    );
    assert_eq!(tracker.announce(&Announce::new(id(2), 1)).failure(), None);
}

fn sighup_reloads_and_purges_torrents_no_longer_allowed() {
    let path = list_file("reload", &[id(1)]);
    let tracker = Tracker::start(&["--access-list", path.to_str().unwrap()]);
    tracker.announce(&Announce::new(id(1), 1));
    tracker.announce(&Announce::new(id(1), 2).seeder().event("completed"));
    assert_eq!(tracker.counts(id(1)), (1, 1, 1));
    write_list(&path, &[id(2)]);
    tracker.signal("HUP");
    wait_until("the list reloaded", || {
        tracker
            .announce(&Announce::new(id(2), 1))
            .failure()
            .is_none()
    });
    // The purge follows the reload on the signal thread.
    wait_until("the purge", || tracker.log().contains("1 torrents purged"));
    assert_eq!(
        tracker
            .announce(&Announce::new(id(1), 1))
            .failure()
            .as_deref(),
        Some(NOT_ALLOWED)
    );
    assert_eq!(tracker.counts(id(1)), (0, 0, 0));
    // Allowed again: the peers are gone, the snatch count is not.
    write_list(&path, &[id(1), id(2)]);
    tracker.signal("HUP");
    wait_until("the list reloaded", || {
        tracker
            .announce(&Announce::new(id(1), 3))
            .failure()
            .is_none()
    });
    assert_eq!(tracker.counts(id(1)), (0, 1, 1));
}

fn a_bad_list_stops_the_start_and_a_bad_reload_keeps_the_old_list() {
    let path = list_file("bad", &[id(1)]);
    std::fs::write(&path, "# ok\nnot-a-hash\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["--listen", "127.0.0.1:0", "--reactor", common::reactor()])
        .arg("--access-list")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2: expected a 40-digit hex info hash"),
        "{stderr}"
    );

    write_list(&path, &[id(1)]);
    let tracker = Tracker::start(&["--access-list", path.to_str().unwrap()]);
    std::fs::write(&path, "zzz\n").unwrap();
    tracker.signal("HUP");
    wait_until("the reload error logged", || {
        tracker.log().contains("the previous list stays in force")
    });
    assert_eq!(tracker.announce(&Announce::new(id(1), 1)).failure(), None);
}

reactor_tests!(
    allow_mode_serves_only_listed_torrents,
    deny_mode_refuses_listed_torrents,
    sighup_reloads_and_purges_torrents_no_longer_allowed,
    a_bad_list_stops_the_start_and_a_bad_reload_keeps_the_old_list,
);
