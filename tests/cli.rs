//! The command line: help, config file, environment, start-up line, signals.

#[macro_use]
mod common;

use std::process::Command;

use common::{Announce, Tracker, id};

fn shoal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .expect("run shoal")
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn help_teaches_options_environment_and_examples() {
    let output = shoal(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--listen <ADDR>",
        "--config <FILE>",
        "--print-config",
        "--interval <SECS>",
        "--max-numwant <N>",
        "--peer-ttl <SECS>",
        "--log-level <LEVEL>",
        "[env: SHOAL_INTERVAL]",
        "[env: SHOAL_LISTEN]",
        "[default: 1800]",
        "[default: 0.0.0.0:6969, [::]:6969]",
        "Listeners:",
        "Limits:",
        "Examples:",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn configuration_doc_is_generated() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--print-config-docs")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        doc,
        String::from_utf8(output.stdout).unwrap(),
        "docs/configuration.md is stale: regenerate it (see the page)"
    );
}

#[test]
fn configuration_doc_matches_print_config() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let block = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in docs/configuration.md");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--print-config")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        block,
        String::from_utf8(output.stdout).unwrap(),
        "docs/configuration.md is stale: regenerate it (see the page)"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut tracker = Tracker::start(&["--log-format", "json"]);
    tracker.signal_and_wait("TERM");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = tracker.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        assert!(
            line.starts_with("{\"timestamp\":\"") && line.ends_with('}'),
            "{line}"
        );
        assert!(line.contains("\"level\":\"INFO\""), "{line}");
    }
    assert!(
        log.contains("\"message\":\"listening on http://127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains("\"message\":\"stopped\""), "{log}");
}

#[test]
fn requests_are_logged_at_debug_level_only() {
    let quiet = Tracker::start(&[]);
    quiet.announce(&common::Announce::new(common::id(1), 1));
    let debug = Tracker::start(&["--log-level", "debug"]);
    debug.announce(&common::Announce::new(common::id(1), 1));
    common::get(debug.v4, "/nowhere");
    common::wait_until("two request lines", || {
        debug.log().matches(" request ").count() >= 2
    });
    let log = debug.log();
    assert!(log.contains("route=\"announce\" status=200"), "{log}");
    assert!(log.contains("route=\"other\" status=404"), "{log}");
    // Never the query (or a path, which may hold a passkey).
    assert!(
        !log.contains("info_hash") && !log.contains("/nowhere"),
        "{log}"
    );
    assert!(!quiet.log().contains(" request "), "{}", quiet.log());
}

#[test]
fn print_config_round_trips_through_config() {
    let output = shoal(&["--print-config", "--interval", "77", "--peer-ttl", "99"]);
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("\ninterval = 77\n"), "{printed}");
    assert!(printed.contains("\npeer_ttl = 99\n"), "{printed}");
    assert!(
        printed.contains("# Seconds clients are asked to wait"),
        "{printed}"
    );
    let path = temp_file("printed.toml", &printed);
    let again = shoal(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), printed);
}

fn config_file_environment_and_flags_stack_in_that_order() {
    let path = temp_file(
        "stack.toml",
        "interval = 600\nmin_interval = 42\nmax_numwant = 3\n",
    );
    let tracker = Tracker::start_with_env(
        &["--config", path.to_str().unwrap(), "--max-numwant", "2"],
        &[("SHOAL_INTERVAL", "300"), ("SHOAL_MAX_NUMWANT", "1")],
    );
    for peer in 1..=4 {
        tracker.announce(&Announce::new(id(1), peer));
    }
    let dict = tracker.announce(&Announce::new(id(1), 5));
    // File: min_interval; environment beats file: interval; flag beats both.
    assert_eq!(dict.int("min interval"), 42);
    assert!((300..=315).contains(&dict.int("interval")));
    assert_eq!(dict.peers4().len(), 2);
}

#[test]
fn a_bad_config_file_names_the_problem() {
    let path = temp_file("bad.toml", "intervall = 5\n");
    let output = shoal(&["--config", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `intervall`"), "{stderr}");
    assert!(stderr.contains("--print-config"), "{stderr}");
    let output = shoal(&["--config", "/nonexistent/shoal.toml"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
}

fn start_up_names_each_listener_and_the_reactor() {
    let tracker = Tracker::start(&[]);
    let log = tracker.log();
    for addr in [tracker.v4, tracker.v6] {
        let line = format!(
            "listening on http://{addr}/announce (reactor: {} (",
            common::reactor()
        );
        assert!(log.contains(&line), "{log}");
    }
    let poller = if common::reactor() == "io-uring" {
        "io_uring"
    } else {
        "epoll"
    };
    if cfg!(target_os = "linux") {
        assert!(log.contains(&format!("{poller}), 2 workers)")), "{log}");
    }
}

#[test]
fn list_reactors_says_which_can_run_and_marks_the_default() {
    let output = shoal(&["--list-reactors"]);
    assert!(output.status.success());
    let list = String::from_utf8(output.stdout).unwrap();
    assert!(list.contains("tokio     usable (default)"), "{list}");
    assert!(list.contains("per-core  usable"), "{list}");
    assert!(list.contains("io-uring  "), "{list}");
    assert!(list.contains("auto      picks "), "{list}");

    let forced = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--list-reactors")
        .env("MONOIO_FORCE_LEGACY_DRIVER", "1")
        .output()
        .unwrap();
    let list = String::from_utf8(forced.stdout).unwrap();
    assert!(
        list.contains("io-uring  unusable: disabled by MONOIO_FORCE_LEGACY_DRIVER"),
        "{list}"
    );
}

#[test]
fn an_unusable_reactor_fails_with_the_cause_and_auto_falls_back() {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["--reactor", "io-uring", "--listen", "127.0.0.1:0"])
        .env("MONOIO_FORCE_LEGACY_DRIVER", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("reactor io-uring cannot run here: disabled by MONOIO_FORCE_LEGACY_DRIVER"),
        "{stderr}"
    );
    assert!(stderr.contains("--reactor auto"), "{stderr}");

    let tracker = Tracker::start_with_env(
        &["--reactor", "auto"],
        &[("MONOIO_FORCE_LEGACY_DRIVER", "1")],
    );
    assert!(
        !tracker.log().contains("reactor: io-uring"),
        "{}",
        tracker.log()
    );
    let dict = tracker.announce(&Announce::new(id(1), 1));
    assert_eq!(dict.int("incomplete"), 1);

    let output = shoal(&["--reactor", "epoll"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown reactor \"epoll\": choose auto, tokio, per-core, io-uring"),
        "{stderr}"
    );
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let tracker = Tracker::start(&[]);
    let busy = tracker.v4.to_string();
    let output = shoal(&["--listen", &busy]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {busy}")),
        "{stderr}"
    );
}

fn sigterm_and_sigint_stop_gracefully() {
    for signal in ["TERM", "INT"] {
        let mut tracker = Tracker::start(&[]);
        tracker.announce(&Announce::new(id(1), 1));
        let status = tracker.signal_and_wait(signal);
        assert!(status.success(), "SIG{signal}: {status:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let log = tracker.log();
        assert!(log.contains("shutting down"), "{log}");
        assert!(log.contains("stopped"), "{log}");
    }
}

reactor_tests!(
    config_file_environment_and_flags_stack_in_that_order,
    start_up_names_each_listener_and_the_reactor,
    sigterm_and_sigint_stop_gracefully,
);
